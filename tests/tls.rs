//! TLS to Postgres: a cluster with `ssl=on` and a certificate from a private
//! CA. With `sslmode=require` the bridge refuses a server it cannot verify,
//! and with `--pg-ca-file` it connects over TLS and delivers. With the
//! default, `prefer`, it uses TLS when the server offers it (still verified)
//! and connects in plain when it does not.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::binary::{Launch, Served};
use common::pki::{Certificates, Key};
use common::{TestDb, WsClient, brief, connect, write};
use pgbroadcast::config::PgArgs;
use pgbroadcast::server::{self, Settings};

/// A CA and a server certificate for 127.0.0.1 signed by it, readable by Postgres.
fn certificates() -> Certificates {
    let certs = Certificates::new(Key::Rsa2048);
    let dir = certs.dir();
    // Postgres reads these as its own user, and wants its key private.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(certs.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        for file in [certs.key(), certs.cert()] {
            std::os::unix::fs::chown(file, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
        }
    }
    certs
}

/// Whether the service's connection named `application` to `db` uses TLS.
async fn encrypted(admin: &tokio_postgres::Client, application: &str, db: &str) -> bool {
    admin
        .query_one(
            "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) \
             where a.application_name = $1 and a.datname = $2",
            &[&application, &db],
        )
        .await
        .unwrap()
        .get(0)
}

fn settings(db: &TestDb, ca_file: Option<&Path>) -> Settings {
    let mut pg = db.config.clone();
    pg.ssl_mode(tokio_postgres::config::SslMode::Require);
    Settings {
        pg,
        pg_args: PgArgs {
            pg_ca_file: ca_file.map(Path::to_owned),
            ..PgArgs::default()
        },
        limits: Default::default(),
        migrate: true,
        demo: false,
        auth: Default::default(),
    }
}

/// A cluster with `ssl=on` serving `certs`' certificate.
fn tls_cluster(certs: &Certificates) -> pgbroadcast::cluster::Cluster {
    let (cert, key) = (certs.cert(), certs.key());
    pgbroadcast::cluster::Cluster::builder()
        .setting("fsync", "off")
        .setting("ssl", "on")
        .setting("ssl_cert_file", cert.to_str().unwrap())
        .setting("ssl_key_file", key.to_str().unwrap())
        .start()
        .expect("a cluster with TLS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_verifies_the_server_and_delivers() {
    let certs = certificates();
    let cluster = tls_cluster(&certs);
    let db = common::fresh_db_in(&cluster).await;
    let mut pg = db.client().await;
    pg.batch_execute("create table things (id int primary key)")
        .await
        .unwrap();

    // Not signed by anything trusted: refused, not silently downgraded.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = server::start(listener, settings(&db, None))
        .await
        .err()
        .expect("an unverifiable server is refused");
    let message = pgbroadcast::error_chain(&err);
    assert!(
        message.contains("UnknownIssuer") || message.contains("certificate"),
        "{message}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ca = certs.ca();
    let running = server::start(listener, settings(&db, Some(&ca)))
        .await
        .expect("start over TLS");
    let mut ready = running.ready.clone();
    tokio::time::timeout(common::PATIENCE, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    pg.batch_execute("select broadcast.enable('things', 'thing')")
        .await
        .unwrap();

    // The LISTEN connection is encrypted.
    let admin = connect(&cluster.config("postgres")).await;
    assert!(encrypted(&admin, pgbroadcast::listener::APPLICATION_NAME, &db.name).await);

    let mut client = WsClient::connect(&format!("ws://{}/ws/broadcast", running.addr)).await;
    client.subscribe(&["thing"]).await;
    let txid = write(&mut pg, "insert into things values (1)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("1".into()), txid)
    );
    running.shutdown().await.unwrap();

    // The WAL stream too: verified against the same CA, encrypted, delivering.
    pg.batch_execute("set pgbroadcast.transport = 'wal'")
        .await
        .unwrap();
    let mut wal = settings(&db, Some(&ca));
    wal.pg_args.transport = pgbroadcast::wal::Transport::Wal;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start(listener, wal).await.expect("start over TLS");
    let mut ready = running.ready.clone();
    tokio::time::timeout(common::PATIENCE, ready.wait_for(|r| *r))
        .await
        .expect("the WAL stream never came up over TLS")
        .unwrap();
    assert!(encrypted(&admin, pgbroadcast::wal::APPLICATION_NAME, &db.name).await);
    let mut client = WsClient::connect(&format!("ws://{}/ws/broadcast", running.addr)).await;
    client.subscribe(&["thing"]).await;
    let txid = write(&mut pg, "insert into things values (2)").await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some("2".into()), txid)
    );
    running.shutdown().await.unwrap();
}

/// `serve` on `url` (a URL without `sslmode`: the default) with `args`; a
/// client subscribed to `thing` gets the signal of an insert into `things`.
async fn serve_delivers(db: &TestDb, url: &str, args: &[&str], id: i32) -> Served {
    let mut command = vec!["serve", "--listen", "127.0.0.1:0"];
    command.extend_from_slice(args);
    let served = Served::start(url, &command, &[]).await;
    let mut client = WsClient::connect(&served.ws_url()).await;
    client.subscribe(&["thing"]).await;
    let mut pg = db.client().await;
    let txid = write(&mut pg, &format!("insert into things values ({id})")).await;
    assert_eq!(
        brief(&client.next().await),
        ("created".into(), Some(id.to_string()), txid)
    );
    served
}

/// README: "`prefer`, the default: TLS when the server offers it", always
/// verifying the server's certificate. The service, given a URL without
/// `sslmode`: against a server with TLS, its LISTEN connection is encrypted
/// (`pg_stat_ssl`), and a certificate it cannot verify is refused rather
/// than read as "no TLS on offer"; against a server without TLS, it
/// connects in plain. Both deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_prefer_uses_tls_when_the_server_offers_it_and_plain_otherwise() {
    let certs = certificates();
    let cluster = tls_cluster(&certs);
    let db = common::fresh_db_in(&cluster).await;
    let mut pg = db.client().await;
    pgbroadcast::migrate::run(&mut pg).await.unwrap();
    let create = "create table things (id int primary key);
                  select broadcast.enable('things', 'thing');";
    pg.batch_execute(create).await.unwrap();
    let url = cluster.url(&db.name);
    assert!(!url.contains("sslmode"), "{url}");

    let exit = Launch::new(&["serve", "--listen", "127.0.0.1:0"])
        .database(&url)
        .run()
        .await;
    assert!(!exit.status.success(), "{}", exit.log);
    assert!(
        exit.log.contains("UnknownIssuer") || exit.log.contains("certificate"),
        "{}",
        exit.log
    );

    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let served = serve_delivers(&db, &url, &["--pg-ca-file", ca], 1).await;
    let admin = connect(&cluster.config("postgres")).await;
    assert!(encrypted(&admin, pgbroadcast::listener::APPLICATION_NAME, &db.name).await);
    served.kill().await;

    let plain = TestDb::migrated().await;
    plain.client().await.batch_execute(create).await.unwrap();
    let url = common::cluster().url(&plain.name);
    let served = serve_delivers(&plain, &url, &[], 2).await;
    let admin = connect(&common::cluster().config("postgres")).await;
    assert!(!encrypted(&admin, pgbroadcast::listener::APPLICATION_NAME, &plain.name).await);
    served.kill().await;
}
