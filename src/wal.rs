//! The `wal` transport: signals the SQL kit sends as transactional logical
//! decoding messages (`pgbroadcast.transport = 'wal'`), read over the logical
//! replication protocol (`pgoutput` with `messages`) with
//! [`pgwire_replication`]. Unlike NOTIFY, sending one takes no cluster-wide
//! lock at commit.
//!
//! Only messages whose prefix is the node's channel (`--pg-channel`, the
//! kit's `pgbroadcast.channel`) are signals; the rest of the WAL is decoded
//! by Postgres and skipped. A signal's position is its transaction's commit
//! LSN and its place in the transaction ([`crate::wire::position`]): the same
//! on every node, so a client resumes on any node whose window holds it.
//!
//! **Slots.** With `--node-id`, the node's slot `pgbroadcast_<id>` outlives
//! the process and is confirmed one window (`--history-age`) behind what
//! was read: a node that restarts, even after `kill -9`, re-reads its
//! window and resumes clients exactly; a walsender that is terminated costs
//! nothing. Without it, a temporary slot lives with each connection: nothing
//! is left behind, and what committed while none streamed cannot be read
//! (`resync` on every channel). A slot that vanished (dropped by a DBA, or
//! lost to `max_slot_wal_keep_size`) is made anew, with `resync`
//! (`slot_lost`). The WAL slots retain is watched: see [`watch_slots`].

use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use pgwire_replication::Lsn;

use crate::hub::Hub;
use crate::listener::{Backoff, forward_at};
use crate::wire::{Epoch, Position, ResyncReason};

/// Every slot of the service is named so (see [`watch_slots`] and `pgbroadcast slots`).
pub const SLOT_PREFIX: &str = "pgbroadcast_";

/// `application_name` of the replication connection, for `pg_stat_replication`.
pub const APPLICATION_NAME: &str = "pgbroadcast-wal";

/// The publication the stream names. `pgoutput` needs one; it publishes no
/// table, so no row crosses the wire, only the kit's messages.
pub const PUBLICATION: &str = "pgbroadcast";

pub use crate::config::Transport;

/// Why the WAL stream could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The replication connection failed.
    #[error("replication connection")]
    Replication(#[from] pgwire_replication::PgWireError),
    /// A query on the ordinary connection failed.
    #[error("database")]
    Database(#[from] tokio_postgres::Error),
    /// The database is not set up for the WAL stream; the text says why.
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
    /// `--node-id`: names a slot kept across restarts.
    node_id: Option<String>,
    /// What this run has read, across reconnections.
    read: Option<Read>,
    /// Whether a stream was in effect before (a new one is then a reconnection).
    streamed_before: bool,
    /// When what was read may be confirmed; kept across reconnections, so
    /// a stream that reconnects often still confirms.
    confirm: Confirm,
}

/// The epoch a run reads, and how far.
struct Read {
    epoch: Epoch,
    /// How far the stream has been read: the end of the last commit, or a
    /// keepalive's position (every commit before it has been received).
    last_end: u64,
}

/// When a position read may be confirmed to Postgres: at once for a
/// temporary slot, one window after it was read for a node's own slot (so a
/// restart re-reads the window). Positions are sampled, one a second at most.
struct Confirm {
    window: std::time::Duration,
    at_once: bool,
    read: std::collections::VecDeque<(tokio::time::Instant, u64)>,
}

impl Confirm {
    fn new(window: std::time::Duration, at_once: bool) -> Confirm {
        Confirm {
            window,
            at_once,
            read: std::collections::VecDeque::new(),
        }
    }

    /// `lsn` was read (every commit up to it published): the position to
    /// confirm now, if it moved.
    fn passed(&mut self, lsn: u64) -> Option<u64> {
        if self.at_once {
            return Some(lsn);
        }
        let now = tokio::time::Instant::now();
        let sampled = self
            .read
            .back()
            .is_some_and(|&(at, _)| now.duration_since(at) < std::time::Duration::from_secs(1));
        if !sampled {
            self.read.push_back((now, lsn));
        }
        let mut confirm = None;
        while let Some(&(at, lsn)) = self.read.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            confirm = Some(lsn);
            self.read.pop_front();
        }
        confirm
    }
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
            hub: Arc::clone(&hub),
            transport: pg.transport,
            check_every: pg.queue_check,
            decoding_work_mem: pg.wal_decoding_work_mem.clone(),
            ca_file: pg.pg_ca_file.clone(),
            backoff: Backoff::reconnect(pg),
            tls,
            ready,
            confirm: Confirm::new(hub.window(), pg.node_id.is_none()),
            node_id: pg.node_id.clone(),
            read: None,
            streamed_before: false,
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
        if self.transport == Transport::Wal {
            match self.database_transport().await {
                Ok(setting) if setting != "wal" => tracing::warn!(
                    setting = %setting,
                    "--transport wal reads only the WAL, but this database's pgbroadcast.transport is not wal: signals its sessions send with NOTIFY are not read (alter database ... set pgbroadcast.transport = 'wal', or use --transport auto)"
                ),
                _ => {}
            }
        }
        tokio::spawn(watch_slots(
            self.config.clone(),
            self.tls.clone(),
            self.node_id.as_ref().map(|id| format!("{SLOT_PREFIX}{id}")),
            Arc::clone(&self.hub),
            self.check_every,
            shutdown.clone(),
        ));
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

    /// The slot this node streams from: `pgbroadcast_<node-id>`, or a
    /// temporary one.
    fn slot_name(&self) -> Result<(String, bool), WalError> {
        Ok(match &self.node_id {
            // Checked by the flag's parser; again here, as it is written
            // into a replication command.
            Some(id) => (
                format!(
                    "{SLOT_PREFIX}{}",
                    crate::config::parse_node_id(id).map_err(WalError::Config)?
                ),
                false,
            ),
            None => (
                format!(
                    "{SLOT_PREFIX}{}_{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ),
                true,
            ),
        })
    }

    /// The node's slot as it stands: where it is confirmed up to, or `None`
    /// if it must be made (absent, or lost to `max_slot_wal_keep_size`,
    /// which drops it). Refuses a slot another process streams from.
    async fn existing_slot(&self, slot: &str) -> Result<Option<u64>, WalError> {
        let client = self.session().await?;
        let Some(row) = client
            .query_opt(
                "select confirmed_flush_lsn::text, wal_status, active_pid, plugin,
                        database = current_database()
                   from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await?
        else {
            return Ok(None);
        };
        let confirmed: Option<String> = row.get(0);
        let status: Option<String> = row.get(1);
        let pid: Option<i32> = row.get(2);
        let plugin: Option<String> = row.get(3);
        let here: Option<bool> = row.get(4);
        if here != Some(true) || plugin.as_deref() != Some("pgoutput") {
            return Err(WalError::Config(format!(
                "replication slot {slot} exists for another database or plugin ({plugin:?}): give this node another --node-id, or drop it"
            )));
        }
        if let Some(pid) = pid {
            return Err(WalError::Config(format!(
                "replication slot {slot} is in use by another process (pid {pid}): is --node-id given to two nodes?"
            )));
        }
        if status.as_deref() == Some("lost") {
            tracing::warn!(%slot, "the replication slot was invalidated (max_slot_wal_keep_size): dropping and making it anew");
            client
                .execute("select pg_drop_replication_slot($1)", &[&slot])
                .await?;
            return Ok(None);
        }
        lsn_of(confirmed.as_deref(), slot, "confirmed position").map(Some)
    }

    /// Makes sure the publication and the slot exist, opens a replication
    /// connection and forwards the kit's messages until it ends.
    async fn stream_once(&mut self) -> Result<(), WalError> {
        self.ensure_publication().await?;
        let (slot, temporary) = self.slot_name()?;
        let existing = if temporary {
            None
        } else {
            self.existing_slot(&slot).await?
        };
        let mut config = replication_config(&self.config, &slot, self.ca_file.as_deref())?;
        if let Some(memory) = &self.decoding_work_mem {
            // Checked by the flag's parser: digits and a unit.
            config = config.with_options(format!("-c logical_decoding_work_mem={memory}"));
        }
        if let Some(confirmed) = existing {
            config = config.with_ack_lsn(Lsn::from_u64(confirmed));
        }
        let mut client = ReplicationClient::connect_gated(config).await?;
        let system = client.identify_system().await?;
        let from = match existing {
            Some(confirmed) => confirmed,
            None => {
                let kind = if temporary { "TEMPORARY " } else { "" };
                // The name is ours: a prefix and a checked node id or digits.
                let made = client
                    .simple_query(&format!(
                        "CREATE_REPLICATION_SLOT {slot} {kind}LOGICAL pgoutput (SNAPSHOT 'nothing')"
                    ))
                    .await?;
                // Its row: slot_name, consistent_point (where it begins), ...
                let start = made
                    .first()
                    .and_then(|row| row.get(1))
                    .and_then(Option::as_ref)
                    .map(|lsn| String::from_utf8_lossy(lsn).into_owned());
                lsn_of(start.as_deref(), &slot, "start")?
            }
        };
        let database = system.dbname.clone().unwrap_or_default();
        let epoch = Epoch::wal(
            &system.system_id,
            system.timeline,
            &database,
            &self.pg_channel,
        );
        match &self.read {
            // Same database, same timeline: this node's positions go on.
            Some(read) if read.epoch == epoch => {
                if existing.is_none() || from > read.last_end {
                    // The slot is new (or was moved on by someone else):
                    // what committed since the last read cannot be read.
                    let reason = if temporary {
                        ResyncReason::ListenerReconnected
                    } else {
                        tracing::warn!(%slot, "the replication slot was gone (dropped?) or moved on by another process: made anew; clients resync");
                        ResyncReason::SlotLost
                    };
                    self.hub
                        .resync_all_from(Position::after_commit(from), reason);
                }
            }
            // The first stream of this run (or a new timeline): positions
            // begin where the slot does.
            _ => self.hub.enter_epoch(
                epoch.clone(),
                Position::after_commit(from),
                ResyncReason::ListenerReconnected,
            ),
        }
        let read = self.read.get_or_insert(Read {
            epoch: epoch.clone(),
            last_end: from,
        });
        read.epoch = epoch;
        read.last_end = read.last_end.max(from);
        client.start().await?;
        if self.streamed_before {
            self.hub.metrics().wal_reconnects.inc();
        }
        self.streamed_before = true;
        self.hub.metrics().wal_up.set(1);
        self.backoff.reset();
        // Ready once caught up with what had been written when it connected:
        // a restarted node first re-reads its window.
        let target = system.xlogpos.as_u64();
        let mut caught_up = from >= target;
        self.ready.send_replace(caught_up);
        tracing::info!(%slot, channel = %self.pg_channel, from = %Lsn::from_u64(from), "WAL stream in effect");
        // Messages of the transaction being decoded: forwarded at its commit.
        let mut messages: Vec<bytes::Bytes> = Vec::new();
        while let Some(event) = client.recv().await? {
            let reached = match event {
                ReplicationEvent::Begin { .. } => {
                    messages.clear();
                    None
                }
                ReplicationEvent::Message {
                    transactional: true,
                    prefix,
                    content,
                    ..
                } if prefix == self.pg_channel => {
                    messages.push(content);
                    None
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    let end = end_lsn.as_u64();
                    let read = self.read.as_mut().expect("set above");
                    // Re-sent from the slot's confirmed position: already
                    // published before the stream was lost.
                    if end > read.last_end {
                        for (index, content) in messages.drain(..).enumerate() {
                            let at = Position::wal(end, u32::try_from(index).unwrap_or(u32::MAX));
                            forward_at(&self.hub, &String::from_utf8_lossy(&content), Some(at));
                        }
                        read.last_end = end;
                    }
                    messages.clear();
                    Some(end)
                }
                ReplicationEvent::KeepAlive {
                    wal_end,
                    reply_requested,
                    ..
                } => {
                    if reply_requested {
                        // Postgres asks so when it stops (and its walsender
                        // waits, holding up the shutdown, until everything
                        // sent is confirmed) or nearly times the stream out:
                        // confirm all that was read. The node still has its
                        // window in memory; only if it too restarts before
                        // a window has passed do its clients resync.
                        client.update_applied_lsn(wal_end);
                    }
                    let read = self.read.as_mut().expect("set above");
                    read.last_end = read.last_end.max(wal_end.as_u64());
                    self.hub.reached(Position::after_commit(read.last_end));
                    Some(wal_end.as_u64())
                }
                _ => None,
            };
            if let Some(lsn) = reached {
                if let Some(lsn) = self.confirm.passed(lsn) {
                    client.update_applied_lsn(Lsn::from_u64(lsn));
                }
                if !caught_up && lsn >= target {
                    caught_up = true;
                    self.ready.send_replace(true);
                    tracing::info!(%slot, "WAL stream caught up");
                }
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

/// An LSN as Postgres writes it (`16/B374D848`), a slot's `what`.
fn lsn_of(text: Option<&str>, slot: &str, what: &str) -> Result<u64, WalError> {
    text.and_then(|lsn| Lsn::parse(lsn).ok())
        .map(Lsn::as_u64)
        .ok_or_else(|| WalError::Config(format!("replication slot {slot} has no {what}")))
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

/// One of the service's replication slots, as `pg_replication_slots` has it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The slot's name.
    pub name: String,
    /// Whether a connection streams from it now.
    pub active: bool,
    /// Whether it goes away with its connection.
    pub temporary: bool,
    /// WAL it keeps Postgres from removing (`None` once lost).
    pub retained_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// How much more it may retain before `max_slot_wal_keep_size`
    /// invalidates it (`None`: unlimited).
    pub safe_bytes: Option<i64>,
    /// The position up to which its consumer confirmed receipt (`confirmed_flush_lsn`).
    pub confirmed: Option<String>,
}

/// The service's slots in the connected database (named `pgbroadcast_…`).
pub async fn slots(client: &tokio_postgres::Client) -> Result<Vec<Slot>, tokio_postgres::Error> {
    let rows = client
        .query(
            r"select slot_name::text, active, temporary,
                     pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                     wal_status, safe_wal_size, confirmed_flush_lsn::text
                from pg_replication_slots
               where starts_with(slot_name::text, $1) and database = current_database()
               order by slot_name",
            &[&SLOT_PREFIX],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Slot {
            name: row.get(0),
            active: row.get(1),
            temporary: row.get(2),
            retained_bytes: row.get(3),
            wal_status: row.get(4),
            safe_bytes: row.get(5),
            confirmed: row.get(6),
        })
        .collect())
}

/// Drops one of the service's slots; refuses one that is streaming (its
/// node is alive: stop it first) and any slot not named `pgbroadcast_…`.
pub async fn drop_slot(client: &tokio_postgres::Client, name: &str) -> Result<(), WalError> {
    let all = slots(client).await?;
    let Some(slot) = all.iter().find(|s| s.name == name) else {
        return Err(WalError::Config(format!(
            "no replication slot {name:?} of pgbroadcast in this database (they are named {SLOT_PREFIX}<node-id>)"
        )));
    };
    if slot.active {
        return Err(WalError::Config(format!(
            "replication slot {name} is streaming to a running node: stop that node first"
        )));
    }
    client
        .execute("select pg_drop_replication_slot($1)", &[&name])
        .await?;
    Ok(())
}

/// How often a stale slot is warned about again.
const STALE_WARN_EVERY: Duration = Duration::from_secs(600);

/// Watches the WAL the service's slots retain, every `every`, until
/// `shutdown`: the node's own slot (`own`) as metrics, with a warning once it
/// holds half of what `max_slot_wal_keep_size` allows; inactive slots of
/// other nodes (gone, or stopped) as metrics and a warning naming
/// `pgbroadcast slots`, as they keep WAL until someone drops them.
pub async fn watch_slots(
    config: tokio_postgres::Config,
    tls: crate::tls::Connector,
    own: Option<String>,
    hub: Arc<Hub>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let metrics = hub.metrics();
    let mut warned: std::collections::HashMap<String, tokio::time::Instant> =
        std::collections::HashMap::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let found = async {
            let (client, connection) = config.connect(tls.clone()).await?;
            tokio::spawn(connection);
            slots(&client).await
        }
        .await;
        let all = match found {
            Ok(all) => all,
            Err(err) => {
                tracing::debug!(error = %crate::logging::error(&err), "could not read the replication slots");
                continue;
            }
        };
        let mut stale = 0;
        let mut stale_bytes = 0;
        for slot in &all {
            let retained = slot.retained_bytes.unwrap_or(0);
            if own.as_deref() == Some(slot.name.as_str()) {
                metrics.wal_slot_retained_bytes.set(retained);
                metrics
                    .wal_slot_safe_bytes
                    .set(slot.safe_bytes.unwrap_or(-1));
                if slot.safe_bytes.is_some_and(|safe| retained >= safe) {
                    warn_once(&mut warned, &slot.name, || {
                        tracing::warn!(
                            slot = %slot.name, retained_bytes = retained, safe_bytes = slot.safe_bytes,
                            "this node's replication slot holds over half of what max_slot_wal_keep_size allows: once it is exceeded the slot is lost and clients resync"
                        );
                    });
                }
            } else if !slot.active && !slot.temporary {
                stale += 1;
                stale_bytes += retained;
                warn_once(&mut warned, &slot.name, || {
                    tracing::warn!(
                        slot = %slot.name, retained_bytes = retained,
                        "an inactive pgbroadcast replication slot keeps WAL from being removed: if its node is gone for good, drop it with `pgbroadcast slots --drop {}`",
                        slot.name
                    );
                });
            }
        }
        metrics.wal_stale_slots.set(stale);
        metrics.wal_stale_slots_retained_bytes.set(stale_bytes);
    }
}

fn warn_once(
    warned: &mut std::collections::HashMap<String, tokio::time::Instant>,
    slot: &str,
    warn: impl FnOnce(),
) {
    let now = tokio::time::Instant::now();
    if warned
        .get(slot)
        .is_none_or(|at| now.duration_since(*at) >= STALE_WARN_EVERY)
    {
        warn();
        warned.insert(slot.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's own slot is confirmed one window behind what was read (so a
    /// restart re-reads the window); a temporary slot at once.
    #[tokio::test(start_paused = true)]
    async fn positions_are_confirmed_a_window_after_they_were_read() {
        let window = Duration::from_secs(120);
        let mut confirm = Confirm::new(window, false);
        assert_eq!(confirm.passed(100), None);
        tokio::time::advance(Duration::from_millis(300)).await;
        // Sampled once a second at most: this one is not kept.
        assert_eq!(confirm.passed(150), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(confirm.passed(200), None);
        tokio::time::advance(window - Duration::from_secs(1)).await;
        assert_eq!(confirm.passed(300), Some(100));
        assert_eq!(confirm.passed(300), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(confirm.passed(300), Some(200));
        let mut temporary = Confirm::new(window, true);
        assert_eq!(temporary.passed(100), Some(100));
    }
}
