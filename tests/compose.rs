//! docker-compose.yml cannot run here (no Docker engine), so its pieces are
//! tested directly: the Postgres it starts is configured for Electric, the
//! pgbroadcast service's command and health check work with this binary, and
//! everything the Dockerfile copies exists.

mod common;

use common::binary::Launch;
use serde_json::Value;
use tokio::process::Command;

fn compose() -> Value {
    let text = std::fs::read_to_string("docker-compose.yml").unwrap();
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml is valid YAML")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list, got {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn postgres_and_electric_are_set_up_for_logical_replication() {
    let compose = compose();
    let services = &compose["services"];
    let postgres = strings(&services["postgres"]["command"]);
    assert!(
        postgres.contains(&"wal_level=logical".to_owned()),
        "{postgres:?}"
    );
    let electric = &services["electric"];
    assert!(
        electric["image"]
            .as_str()
            .unwrap()
            .starts_with("electricsql/electric")
    );
    assert_eq!(electric["environment"]["ELECTRIC_INSECURE"], "true");
    assert!(
        electric["environment"]["DATABASE_URL"]
            .as_str()
            .unwrap()
            .contains("@postgres:5432/app")
    );
    for service in ["postgres", "electric", "pgbroadcast"] {
        assert!(
            services[service]["healthcheck"]["test"].is_array(),
            "{service} has no health check"
        );
    }
    // pgbroadcast talks to the same database as Electric.
    let url = services["pgbroadcast"]["environment"]["DATABASE_URL"]
        .as_str()
        .unwrap();
    assert!(url.contains("@postgres:5432/app"), "{url}");
}

#[test]
fn everything_the_dockerfile_copies_exists() {
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let mut copied = 0;
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                std::path::Path::new(source).exists(),
                "Dockerfile copies missing {source}"
            );
            copied += 1;
        }
    }
    assert!(copied >= 5, "expected the crate's sources to be copied");
    assert!(dockerfile.contains("ENTRYPOINT [\"pgbroadcast\"]"));
}

/// The compose service's command, run with this binary against a test
/// database (the compose host name `postgres` does not exist here, and the
/// port is left to the OS).
#[tokio::test]
async fn the_pgbroadcast_service_command_and_health_check_work() {
    let compose = compose();
    let service = &compose["services"]["pgbroadcast"];
    let mut args = strings(&service["command"]);
    assert_eq!(args[0], "demo");
    let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
    assert_eq!(args[listen], "0.0.0.0:8080");
    args[listen] = "0.0.0.0:0".into();
    let health = strings(&service["healthcheck"]["test"]);
    let health_path = health
        .iter()
        .find_map(|a| a.strip_prefix("http://127.0.0.1:8080"))
        .expect("health check URL")
        .to_owned();

    let db = common::fresh_db().await;
    // The service's environment as compose gives it, but this database.
    let mut launch = Launch::new(&[]);
    for (name, value) in service["environment"].as_object().unwrap() {
        launch = launch.env(name, value.as_str().unwrap());
    }
    let pgbroadcast = launch
        .args(&args)
        .database(&common::cluster().url(&db.name))
        .spawn();
    let listening = pgbroadcast
        .printed_after("listening on http://0.0.0.0:")
        .await;
    let port = listening.split_whitespace().next().unwrap();
    let url = format!("http://127.0.0.1:{port}{health_path}");
    // Another process: poll its health check as Docker would, bounded.
    tokio::time::timeout(common::PATIENCE, async {
        while reqwest::get(&url).await.map(|r| r.status()).ok() != Some(reqwest::StatusCode::OK) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the health check never passed");
    let orders = tokio::time::timeout(
        common::PATIENCE,
        reqwest::get(format!("http://127.0.0.1:{port}/api/orders")),
    )
    .await
    .unwrap_or_else(|_| panic!("/api/orders did not answer:\n{}", pgbroadcast.log()))
    .unwrap();
    assert_eq!(orders.status(), 200);
}

/// `name:tag` with a version in the tag (digits and dots, or a dated
/// snapshot), never `latest` or a bare major line like `16-alpine`.
fn pinned(image: &str) -> bool {
    let image = image.split('@').next().unwrap();
    let Some((_, tag)) = image.rsplit_once(':') else {
        return false;
    };
    let version = tag.split('-').any(|part| {
        let dotted = part.split('.').count() >= 2
            && part
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let dated = part.len() == 8 && part.bytes().all(|b| b.is_ascii_digit());
        dotted || dated
    });
    version && tag != "latest"
}

#[test]
fn every_image_is_pinned_to_a_version() {
    assert!(pinned("postgres:16.10-alpine3.22"));
    assert!(pinned("debian:bookworm-20260518-slim"));
    assert!(!pinned("postgres:16-alpine"));
    assert!(!pinned("electricsql/electric:latest"));
    assert!(!pinned("rust:1-bookworm"));
    assert!(!pinned("debian:bookworm-slim"));
    let compose = compose();
    for (name, service) in compose["services"].as_object().unwrap() {
        if let Some(image) = service["image"].as_str() {
            assert!(pinned(image), "service {name}: {image} is not pinned");
        }
    }
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let bases: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(bases.len(), 2, "{bases:?}");
    for base in bases {
        assert!(pinned(base), "Dockerfile: {base} is not pinned");
    }
}

/// Electric's compose health check, run against a stand-in for Electric's
/// `/v1/health` that answers `status` with `body`: does it pass?
async fn electric_health_check_passes(status: u16, body: &'static str) -> bool {
    let compose = compose();
    let test = strings(&compose["services"]["electric"]["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD-SHELL");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/health",
        axum::routing::get(move || async move {
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let script = test[1].replace("localhost:3000", &addr.to_string());
    assert_ne!(
        script, test[1],
        "the health check no longer calls localhost:3000"
    );
    // A check that hangs fails the test rather than holding up the suite;
    // given up on, it is killed with all it started (its own process group).
    let mut check = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .process_group(0)
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(check.id().unwrap() as i32);
    let Ok(status) = tokio::time::timeout(common::PATIENCE, check.wait()).await else {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        panic!("the health check did not finish: {script}");
    };
    let status = status.unwrap();
    server.abort();
    status.success()
}

#[tokio::test]
async fn electrics_health_check_waits_until_it_serves() {
    // Starting: 202 in some releases, 200 with another status in others.
    assert!(!electric_health_check_passes(202, r#"{"status":"starting"}"#).await);
    assert!(!electric_health_check_passes(200, r#"{"status":"starting"}"#).await);
    assert!(!electric_health_check_passes(503, r#"{"status":"stopping"}"#).await);
    assert!(electric_health_check_passes(200, r#"{"status":"active"}"#).await);
}
