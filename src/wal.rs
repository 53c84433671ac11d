//! The `wal` transport: signals the SQL kit sends as transactional logical
//! decoding messages (`pgbroadcast.transport = 'wal'`), read over the logical
//! replication protocol (`pgoutput` with `messages`) with
//! [`pgwire_replication`]. Unlike NOTIFY, sending one takes no cluster-wide
//! lock at commit.
//!
//! The stream uses a temporary slot: it lives with the connection, so a node
//! that stops (or dies) leaves nothing behind that makes Postgres keep WAL.
//! What committed while no slot was streaming is not re-read: on every
//! (re)connection the hub sends `resync` on every subscribed channel, as it
//! does when the LISTEN connection comes back. Only messages whose prefix is
//! the node's channel (`--pg-channel`, the kit's `pgbroadcast.channel`) are
//! signals; the rest of the WAL is decoded by Postgres and skipped.

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, ResyncReason};
use crate::listener::{Backoff, forward};

/// `application_name` of the replication connection, for `pg_stat_replication`.
pub const APPLICATION_NAME: &str = "pgbroadcast-wal";

/// The publication the stream names. `pgoutput` needs one; it publishes no
/// table, so no row crosses the wire, only the kit's messages.
pub const PUBLICATION: &str = "pgbroadcast";

/// Which transport(s) the service reads (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// LISTEN always; the WAL stream too once the database's
    /// `pgbroadcast.transport` setting is `wal` (checked at start and then
    /// every `--queue-check`).
    Auto,
    /// LISTEN only.
    Notify,
    /// LISTEN and the WAL stream from the start.
    Wal,
}

/// Why the WAL stream could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("replication connection")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("database")]
    Database(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Config(String),
}

/// Reads the kit's `wal` messages into the hub until shutdown.
pub struct WalListener {
    config: tokio_postgres::Config,
    pg_channel: String,
    hub: Arc<Hub>,
    transport: Transport,
    /// How often `auto` looks at the database's setting.
    check_every: Duration,
    /// `logical_decoding_work_mem` for the stream's session.
    decoding_work_mem: Option<String>,
    /// `--pg-ca-file`: trusted beside the Mozilla roots.
    ca_file: Option<std::path::PathBuf>,
    backoff: Backoff,
    tls: crate::tls::Connector,
    /// `false` while the database sends through the WAL and the stream is
    /// not in effect (the node is then not ready: signals would be missed).
    ready: watch::Sender<bool>,
}

impl WalListener {
    /// The stream `pg`'s settings ask for (`--transport` and the rest), as
    /// [`crate::listener::Listener::new`] makes the LISTEN connection.
    pub fn new(
        config: tokio_postgres::Config,
        pg: &crate::config::PgArgs,
        hub: Arc<Hub>,
        ready: watch::Sender<bool>,
        tls: crate::tls::Connector,
    ) -> WalListener {
        WalListener {
            config,
            pg_channel: pg.pg_channel.clone(),
            hub,
            transport: pg.transport,
            check_every: pg.queue_check,
            decoding_work_mem: pg.wal_decoding_work_mem.clone(),
            ca_file: pg.pg_ca_file.clone(),
            backoff: Backoff::reconnect(pg),
            tls,
            ready,
        }
    }

    /// Runs until `shutdown` fires. With [`Transport::Auto`], it waits until
    /// the database asks for `wal`, then streams for good (LISTEN still
    /// carries whatever is sent with `notify`).
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.transport == Transport::Notify {
            // Ready for good; held until shutdown, as the readiness it feeds.
            self.ready.send_replace(true);
            return shutdown.cancelled().await;
        }
        if self.transport == Transport::Auto {
            let mut check = tokio::time::interval(self.check_every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = check.tick() => {}
                }
                match self.database_transport().await {
                    Ok(setting) if setting == "wal" => break,
                    // Not ready before the first answer: the database may be
                    // sending through the WAL already.
                    Ok(_) => {
                        self.ready.send_replace(true);
                    }
                    Err(err) => tracing::debug!(
                        error = %crate::logging::error(&err),
                        "could not read pgbroadcast.transport"
                    ),
                }
            }
            tracing::info!(
                "the database sends signals through the WAL (pgbroadcast.transport = wal)"
            );
            self.ready.send_replace(false);
        }
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = self.stream_once() => ended,
            };
            self.hub.metrics().wal_up.set(0);
            self.ready.send_replace(false);
            match ended {
                Ok(()) => tracing::warn!("WAL stream ended; reconnecting"),
                Err(err) => tracing::warn!(
                    error = %crate::logging::error(&err),
                    "WAL stream lost; reconnecting"
                ),
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// A short-lived ordinary session (its connection is driven until the
    /// client is dropped).
    async fn session(&self) -> Result<tokio_postgres::Client, WalError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The database's `pgbroadcast.transport` for a new session (`notify` when unset).
    async fn database_transport(&self) -> Result<String, WalError> {
        let row = self
            .session()
            .await?
            .query_one(
                "select coalesce(nullif(current_setting('pgbroadcast.transport', true), ''), 'notify')",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Makes sure the publication exists, opens a replication connection
    /// with a temporary slot, and forwards the kit's messages until it ends.
    async fn stream_once(&mut self) -> Result<(), WalError> {
        self.ensure_publication().await?;
        let slot = format!(
            "pgbroadcast_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut config = replication_config(&self.config, &slot, self.ca_file.as_deref())?;
        if let Some(memory) = &self.decoding_work_mem {
            // Checked by the flag's parser: digits and a unit.
            config = config.with_options(format!("-c logical_decoding_work_mem={memory}"));
        }
        let mut client = ReplicationClient::connect_gated(config).await?;
        client
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'nothing')"
            ))
            .await?;
        client.start().await?;
        // The slot reads what commits from its creation on; what committed
        // before (while no slot streamed) may have been missed.
        self.hub.resync_all(ResyncReason::ListenerReconnected);
        self.hub.metrics().wal_up.set(1);
        self.ready.send_replace(true);
        self.backoff.reset();
        tracing::info!(%slot, channel = %self.pg_channel, "WAL stream in effect");
        // Messages of the transaction being decoded: forwarded at its commit.
        let mut messages: Vec<bytes::Bytes> = Vec::new();
        while let Some(event) = client.recv().await? {
            match event {
                ReplicationEvent::Begin { .. } => messages.clear(),
                ReplicationEvent::Message {
                    transactional: true,
                    prefix,
                    content,
                    ..
                } if prefix == self.pg_channel => messages.push(content),
                ReplicationEvent::Commit { end_lsn, .. } => {
                    for content in messages.drain(..) {
                        forward(&self.hub, &String::from_utf8_lossy(&content));
                    }
                    client.update_applied_lsn(end_lsn);
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn ensure_publication(&self) -> Result<(), WalError> {
        let client = self.session().await?;
        let exists = client
            .query_opt(
                "select 1 from pg_publication where pubname = $1",
                &[&PUBLICATION],
            )
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("create publication {PUBLICATION}"))
                .await?;
        }
        Ok(())
    }
}

/// The replication connection's settings, from the service's Postgres URL.
/// TLS as for every connection of the service, verified (chain and host
/// name) — with `sslmode=require`; `prefer` connects without it here, as
/// the replication client cannot fall back from one to the other.
fn replication_config(
    pg: &tokio_postgres::Config,
    slot: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<ReplicationConfig, WalError> {
    use tokio_postgres::config::{Host, SslMode};
    let user = pg.get_user().unwrap_or("postgres");
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = pg.get_dbname().unwrap_or(user);
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let config = match pg.get_hosts().first() {
        Some(Host::Tcp(host)) => {
            ReplicationConfig::new(host.clone(), user, password, database, slot, PUBLICATION)
                .with_port(port)
                .with_tls(match pg.get_ssl_mode() {
                    SslMode::Require => {
                        let tls = TlsConfig::verify_full(ca_file.map(ToOwned::to_owned));
                        // An address is checked against the certificate's IP
                        // names, as rustls does for the other connections; the
                        // client wants it said explicitly.
                        if host.parse::<std::net::IpAddr>().is_ok() {
                            tls.with_sni_hostname(host.clone())
                        } else {
                            tls
                        }
                    }
                    _ => TlsConfig::disabled(),
                })
        }
        Some(Host::Unix(dir)) => ReplicationConfig::unix(
            dir.to_string_lossy(),
            port,
            user,
            password,
            database,
            slot,
            PUBLICATION,
        ),
        None => return Err(WalError::Config("the Postgres URL names no host".into())),
    };
    Ok(config
        .with_application_name(APPLICATION_NAME)
        .with_status_interval(Duration::from_secs(1))
        .with_wakeup_interval(Duration::from_secs(1)))
}
