//! pgbroadcast: a Postgres database announces its own changes in real time.
//!
//! ```text
//! row change ─▶ statement trigger ─▶ pg_notify('pgbroadcast', {...}) at COMMIT   (SQL kit, migrations/)
//!            ─▶ listener   one dedicated LISTEN connection, reconnect + resync   (listener)
//!            ─▶ hub        who wants what, epoch + seq, frame built once        (hub)
//!            ─▶ shards     one per core, write the frame to each socket          (hub::shard)
//!            ─▶ reader     per socket: subscribe, unsubscribe, auth              (ws::session)
//!            ─▶ client     {"channel","event","payload":{entity_id, txid, ...}}  (ws::protocol)
//! ```
//!
//! [`server`] wires these together behind the [`http`] router; [`auth`]
//! verifies tokens and asks `broadcast.authorize` (per connection in
//! [`ws::access`]); [`metrics`] counts; [`migrate`] installs the SQL kit;
//! [`mutation`] gives REST handlers the txid Electric confirms, [`openapi`] the
//! `x-sync` extension, [`demo`] the order example; [`cluster`] starts a
//! private Postgres when no `DATABASE_URL` is given; [`tls`] secures the
//! connections to Postgres and to a JWKS URL; [`config`] holds the CLI;
//! [`logging`] is how text from outside and errors reach the log; [`banner`]
//! is what `serve` prints on stdout. The benchmark is its own crate
//! (`bench/`, binary `pgbroadcast-bench`), which `pgbroadcast bench` runs.

#![warn(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod hub;
pub mod kit;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod mutation;
pub mod openapi;
pub mod server;
pub mod tls;
pub mod wal;
pub mod wire;
pub mod ws;

/// Everything that can stop the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The private cluster could not be started.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The SQL kit could not be applied.
    #[error(transparent)]
    Migrate(#[from] migrate::Error),
    /// The SQL kit installed does not fit this binary (`serve --no-migrate`).
    #[error(transparent)]
    Kit(#[from] kit::Error),
    /// A query or connection to Postgres failed.
    #[error("database")]
    Postgres(#[from] tokio_postgres::Error),
    /// A socket or file could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The authentication settings could not be loaded.
    #[error(transparent)]
    AuthConfig(#[from] auth::ConfigError),
    /// The TLS settings for Postgres could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The WAL replication slots could not be read or set up.
    #[error("replication slots")]
    Wal(#[from] wal::WalError),
    /// A non-loopback address was asked for without any authentication configured.
    #[error(
        "refusing to serve {0} without authentication: clients from other machines could subscribe to everything. Configure --jwt-secret, --jwt-public-keys or --jwks-url, or pass --insecure if something in front of this service authenticates them"
    )]
    Insecure(std::net::SocketAddr),
}

pub use logging::error_chain;

/// What `serve` and `demo` print on stdout once they are up, one line each;
/// `pgbroadcast-bench` reads these lines to find the server it started.
pub mod banner {
    /// Followed by the private cluster's URL (when no `DATABASE_URL` is given).
    pub const PRIVATE_POSTGRES: &str = "private Postgres (removed on exit): ";
    /// Followed by `ADDR (WebSocket: ws://ADDR/ws/broadcast)`, once the
    /// server LISTENs.
    pub const LISTENING: &str = "listening on http://";
}
