//! The binary as operators run it: `migrate` is idempotent; `serve` with no
//! DATABASE_URL runs a private Postgres, serves signals from it, and on
//! SIGTERM closes clients with 1001, exits 0 and removes the cluster. Logs
//! are colourless on a pipe, or JSON lines with `--log-format json`.

mod common;

use common::binary::{BIN, Exit, Launch};
use common::{WsClient, brief, connect, write};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn migrate_is_idempotent() {
    let db = common::fresh_db().await;
    let url = common::cluster().url(&db.name);
    let run = || async {
        let exit = Launch::new(&["migrate", "--database-url", &url])
            .env_remove("DATABASE_URL")
            .run()
            .await;
        assert!(exit.status.success(), "{}", exit.log);
        exit.stdout.join("\n")
    };
    assert!(run().await.contains("applied V1__broadcast"));
    assert!(run().await.contains("already up to date"));
    let pg = db.client().await;
    let functions: i64 = pg
        .query_one(
            "select count(*) from pg_proc where pronamespace = 'broadcast'::regnamespace \
             and proname in ('enable', 'disable', 'emit')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(functions, 3);
}

#[tokio::test]
async fn migrate_without_a_database_says_what_is_missing() {
    let exit = Launch::new(&["migrate"])
        .env_remove("DATABASE_URL")
        .run()
        .await;
    assert!(!exit.status.success());
    assert!(exit.log.contains("--database-url"));
}

/// `pgbroadcast <subcommand>` on the embedded default, any free port.
fn embedded(subcommand: &str) -> Launch {
    Launch::new(&[subcommand, "--listen", "127.0.0.1:0"]).env_remove("DATABASE_URL")
}

#[tokio::test]
async fn serve_runs_on_a_private_postgres_and_cleans_up_on_sigterm() {
    // Served once the LISTEN is in effect.
    let served = embedded("serve").serve().await;
    let url = served
        .printed_after("private Postgres (removed on exit):")
        .await;
    let data_dir = served.printed_after("data:").await;
    assert!(std::path::Path::new(&data_dir).is_dir());

    // A person can psql into the printed URL and enable a table.
    let config: tokio_postgres::Config = url.parse().unwrap();
    let mut pg = connect(&config).await;
    pg.batch_execute(
        "create table notes (id int primary key); select broadcast.enable('notes', 'note');",
    )
    .await
    .unwrap();
    let mut client = WsClient::connect(&served.ws_url()).await;
    client.subscribe(&["note"]).await;
    let txid = write(&mut pg, "insert into notes values (1)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("1".into()), txid)
    );
    drop(pg);

    let exit = served.terminate().await;
    match client.next_message().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(exit.status.success(), "{exit:?}");
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} left behind"
    );
}

#[tokio::test]
async fn demo_runs_with_no_arguments_and_says_where_everything_is() {
    let demo = embedded("demo").spawn();
    let listening = demo.printed_after("listening on").await;
    let api = demo.printed_after("REST API:").await;
    let openapi = demo.printed_after("OpenAPI:").await;
    assert!(listening.contains("/ws/broadcast"), "{listening}");

    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(&api)
        .json(&serde_json::json!({"customer": "ada", "items": [{"sku": "tea", "quantity": 1}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["txid"].is_u64(), "{created}");
    assert_eq!(created["data"]["items"][0]["sku"], "tea");
    let doc: serde_json::Value = http
        .get(&openapi)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/api/orders"]["x-sync"]["broadcast"]["channel"],
        "order"
    );

    let exit = demo.terminate().await;
    assert!(exit.status.success(), "{exit:?}");
}

/// Without authentication, a non-loopback address is refused at start —
/// before a private Postgres is made for it — with a message saying why and
/// what to do; with `--insecure` it is served.
#[tokio::test]
async fn a_public_address_needs_authentication_or_insecure() {
    let exit = Launch::new(&["serve", "--listen", "0.0.0.0:0"])
        .env_remove("DATABASE_URL")
        .env_remove("PGBROADCAST_INSECURE")
        .run()
        .await;
    assert!(!exit.status.success(), "{exit:?}");
    for words in [
        "refusing to serve 0.0.0.0:0 without authentication",
        "Configure --jwt-secret, --jwt-public-keys or --jwks-url, or pass --insecure",
    ] {
        assert!(exit.log.contains(words), "{words:?} not in:\n{}", exit.log);
    }
    assert!(
        exit.stdout.is_empty(),
        "something was started first: {:?}\n{}",
        exit.stdout,
        exit.log
    );

    // With --insecure: served on every address, so on loopback too.
    let db = common::fresh_db().await;
    let served = Launch::new(&["serve", "--listen", "0.0.0.0:0", "--insecure"])
        .database(&common::cluster().url(&db.name))
        .serve()
        .await;
    assert!(
        served.has_printed("listening on http://0.0.0.0:"),
        "{:?}",
        served.printed()
    );
    let mut client = WsClient::connect(&served.ws_url()).await;
    assert_eq!(client.welcome["auth"], "none");
    client.subscribe(&["note"]).await;
    let pg = db.client().await;
    common::barrier(&pg, "note").await;
    assert_eq!(client.next().await["event"], "barrier");
    let exit = served.terminate().await;
    assert!(exit.status.success(), "{exit:?}");
}

/// `pgbroadcast <before> migrate --database-url <url> <after>` with `env`,
/// logging at `info`, in text unless told otherwise.
async fn migrate(before: &[&str], url: &str, after: &[&str], env: &[(&str, &str)]) -> Exit {
    Launch::new(before)
        .args(["migrate", "--database-url", url])
        .args(after)
        .env_remove("DATABASE_URL")
        .env_remove("PGBROADCAST_LOG_FORMAT")
        // Colour must be off because stderr is a pipe, not because of NO_COLOR.
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .envs(env)
        .run()
        .await
}

/// `migrate` against a fresh database, with `args` and `env`: its exit and stderr.
async fn migrate_logs(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let db = common::fresh_db().await;
    let exit = migrate(args, &common::cluster().url(&db.name), &[], env).await;
    (exit.status, exit.log)
}

/// A `migrate` that fails (connection refused), with `before` and `after`
/// the subcommand and `env`: its stderr.
async fn failing_migrate_logs(before: &[&str], after: &[&str], env: &[(&str, &str)]) -> String {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/none");
    let exit = migrate(before, &url, after, env).await;
    assert!(!exit.status.success());
    exit.log
}

#[tokio::test]
async fn logs_written_to_a_pipe_have_no_colour_codes() {
    let (status, log) = migrate_logs(&[], &[]).await;
    assert!(status.success(), "{log}");
    assert!(log.contains("applying migration: V1__broadcast"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");

    let log = failing_migrate_logs(&[], &[], &[]).await;
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("pgbroadcast failed"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");
}

#[tokio::test]
async fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let command =
        format!("'{BIN}' migrate --database-url postgres://postgres@127.0.0.1:{port}/none");
    // `script` (util-linux) runs the command on a pseudo-terminal and copies what it writes.
    let on_a_terminal = |no_color: Option<&str>| {
        let mut script = Command::new("script");
        script
            .args(["--quiet", "--return", "--command", &command, "/dev/null"])
            .env_remove("PGBROADCAST_LOG_FORMAT")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        async move {
            let out = script.output().await.expect("run `script` (util-linux)");
            assert!(!out.status.success());
            let log = String::from_utf8(out.stdout).unwrap();
            assert!(log.contains("pgbroadcast failed"), "{log:?}");
            log
        }
    };
    assert!(on_a_terminal(None).await.contains("\x1b["));
    assert!(on_a_terminal(Some("")).await.contains("\x1b["));
    assert!(!on_a_terminal(Some("1")).await.contains("\x1b["));
}

/// Every line of `log` as a JSON object with a timestamp, a level, a target
/// and `fields.message`, as tracing-subscriber's JSON format writes them.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    assert!(!log.is_empty());
    log.lines()
        .map(|line| {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            let timestamp = record["timestamp"].as_str().unwrap_or_default();
            assert!(
                time::OffsetDateTime::parse(
                    timestamp,
                    &time::format_description::well_known::Rfc3339
                )
                .is_ok(),
                "{line}"
            );
            assert!(
                ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                    .contains(&record["level"].as_str().unwrap_or_default()),
                "{line}"
            );
            assert!(record["target"].is_string(), "{line}");
            assert!(record["fields"]["message"].is_string(), "{line}");
            record
        })
        .collect()
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_before_or_after_the_subcommand() {
    let (status, log) = migrate_logs(&["--log-format", "json"], &[]).await;
    assert!(status.success(), "{log}");
    let records = json_lines(&log);
    assert!(
        records.iter().any(|r| r["level"] == "INFO"
            && r["fields"]["message"] == "applying migration: V1__broadcast"),
        "{log}"
    );

    // An error, with the flag after the subcommand, or from the environment.
    for log in [
        failing_migrate_logs(&[], &["--log-format", "json"], &[]).await,
        failing_migrate_logs(&[], &[], &[("PGBROADCAST_LOG_FORMAT", "json")]).await,
    ] {
        let records = json_lines(&log);
        let failure = records
            .iter()
            .find(|r| r["fields"]["message"] == "pgbroadcast failed")
            .unwrap_or_else(|| panic!("{log}"));
        assert_eq!(failure["level"], "ERROR");
        assert!(
            failure["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("Connection refused")),
            "{log}"
        );
    }
}

#[tokio::test]
async fn serve_logs_json_from_start_to_shutdown() {
    let serve = embedded("serve")
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .spawn();
    serve.printed_after("listening on").await;
    let exit = serve.terminate().await;
    assert!(exit.status.success(), "{exit:?}");
    let log = exit.log;
    let messages: Vec<String> = json_lines(&log)
        .iter()
        .map(|r| r["fields"]["message"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "SQL kit up to date",
        "serving; WebSocket at /ws/broadcast",
        "shutting down",
    ] {
        assert!(messages.iter().any(|m| m == expected), "{expected}: {log}");
    }
}

/// `pgbroadcast bench` runs `pgbroadcast-bench` from its own directory;
/// without it there, it fails and says how to build it.
#[test]
fn bench_without_its_binary_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("pgbroadcast");
    std::fs::copy(BIN, &lonely).unwrap();
    let out = std::process::Command::new(&lonely)
        .args([
            "bench",
            "--scenario",
            "smoke",
            "--target",
            "ws://127.0.0.1:1/ws/broadcast",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} not found",
            dir.path().join("pgbroadcast-bench").display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}
