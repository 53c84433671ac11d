//! What the bench's tests share: a private Postgres cluster, fresh
//! databases in it, and the `pgbroadcast` server binary beside the bench's.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use pgbroadcast::cluster::Cluster;
use tokio_postgres::{Client, NoTls};

/// The cluster shared by the tests of one binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::builder()
            .setting("fsync", "off")
            .start()
            .expect("start test cluster")
    })
}

/// A fresh database in the shared cluster.
pub struct TestDb {
    pub name: String,
    pub config: tokio_postgres::Config,
}

impl TestDb {
    /// A database with the SQL kit installed.
    pub async fn migrated() -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let cluster = cluster();
        connect(&cluster.config("postgres"))
            .await
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create database");
        let db = TestDb {
            config: cluster.config(&name),
            name,
        };
        let mut client = connect(&db.config).await;
        pgbroadcast::migrate::run(&mut client)
            .await
            .expect("migrate");
        db
    }
}

pub async fn connect(config: &tokio_postgres::Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// The bench's binary, as `pgbroadcast bench` runs it.
pub const BENCH_BIN: &str = env!("CARGO_BIN_EXE_pgbroadcast-bench");

/// The `pgbroadcast` server binary of this build (`target/<profile>/`, the
/// directory `pgbroadcast-bench` is in, where it looks for the server), built
/// once per test binary: Cargo builds only this package's binaries for its
/// tests, and the server is another package of the workspace.
pub fn server_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = PathBuf::from(BENCH_BIN)
                .parent()
                .expect("bench binary has a directory")
                .to_owned();
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "pgbroadcast",
                    "--bin",
                    "pgbroadcast",
                ])
                .arg("--manifest-path")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
            match profile {
                "debug" => {}
                "release" => {
                    cargo.arg("--release");
                }
                other => {
                    cargo.args(["--profile", other]);
                }
            }
            let status = cargo.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p pgbroadcast: {status}");
            let bin = dir.join("pgbroadcast");
            assert!(bin.is_file(), "no {} after cargo build", bin.display());
            bin
        })
        .clone()
}
