//! The LISTEN connection: one dedicated `tokio-postgres` connection (never a
//! pooled one: LISTEN dies with its session), driven with `poll_message`.
//! Parses each notification into a [`Signal`] for the hub. On loss it
//! reconnects with capped, jittered backoff, re-LISTENs, and has the hub send
//! `resync` on every subscribed channel, since signals may have been missed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Notification};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::logging::untrusted;
use crate::wire::{ResyncReason, Signal, valid_channel};

/// `application_name` of the LISTEN connection, so a DBA can find it in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "pgbroadcast-listener";

/// A notification that is not a valid signal.
#[derive(Debug, thiserror::Error)]
#[error("notification payload is not a pgbroadcast signal: {reason}")]
pub struct InvalidSignal {
    /// The channel it named, if that much could be read: it gets a resync.
    pub channel: Option<String>,
    /// What is wrong with the payload.
    pub reason: String,
}

/// The LISTEN connection: turns notifications into signals for the hub and,
/// after a reconnect, tells clients to resync.
pub struct Listener {
    config: tokio_postgres::Config,
    /// The Postgres channel to LISTEN on.
    pg_channel: String,
    hub: Arc<Hub>,
    /// `true` while the LISTEN is in effect.
    ready: watch::Sender<bool>,
    backoff: Backoff,
    /// How often to read `pg_notification_queue_usage()`.
    queue_check: Duration,
    /// Warn when the NOTIFY queue is fuller than this fraction.
    queue_warn: f64,
    tls: crate::tls::Connector,
    listened_before: bool,
}

impl Listener {
    /// A listener for `pg`'s channel that feeds `hub` and reports on `ready`; nothing
    /// connects until [`Listener::run`].
    pub fn new(
        config: tokio_postgres::Config,
        pg: &crate::config::PgArgs,
        hub: Arc<Hub>,
        ready: watch::Sender<bool>,
        tls: crate::tls::Connector,
    ) -> Listener {
        Listener {
            config,
            pg_channel: pg.pg_channel.clone(),
            hub,
            ready,
            backoff: Backoff::reconnect(pg),
            queue_check: pg.queue_check,
            queue_warn: pg.queue_warn_percent as f64 / 100.0,
            tls,
            listened_before: false,
        }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.config
            .application_name(APPLICATION_NAME)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .connect_timeout(Duration::from_secs(10));
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = self.listen_once() => ended,
            };
            self.ready.send_replace(false);
            self.hub.metrics().listener_up.set(0);
            match ended {
                Ok(()) => tracing::warn!("LISTEN connection closed; reconnecting"),
                Err(err) => tracing::warn!(
                    error = %crate::logging::error(&err),
                    "LISTEN connection lost; reconnecting"
                ),
            }
            let delay = self.backoff.next_delay();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Connects, LISTENs, and forwards notifications until the connection ends.
    async fn listen_once(&mut self) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let hub = Arc::clone(&self.hub);
        // Until the resync for this (re)connection is out, notifications wait
        // here: no client may see a signal from after the gap before the
        // resync that announces the gap.
        let held: Arc<std::sync::Mutex<Option<Vec<Notification>>>> =
            Arc::new(std::sync::Mutex::new(Some(Vec::new())));
        let gate = Arc::clone(&held);
        // The connection must be polled for the LISTEN query to complete, so it
        // runs as its own task; it publishes straight into the hub.
        let driver = tokio::spawn(async move {
            let mut open = false;
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message? {
                    AsyncMessage::Notification(n) if open => forward(&hub, n.payload()),
                    AsyncMessage::Notification(n) => {
                        let mut held = gate.lock().unwrap_or_else(|p| p.into_inner());
                        match held.as_mut() {
                            Some(waiting) => waiting.push(n),
                            None => {
                                open = true;
                                drop(held);
                                forward(&hub, n.payload());
                            }
                        }
                    }
                    AsyncMessage::Notice(notice) => {
                        tracing::info!(notice = %untrusted(&notice.to_string()), "notice on LISTEN connection")
                    }
                    _ => {}
                }
            }
            Ok(())
        });
        // An idle LISTEN connection must not fall to a server-wide
        // idle_session_timeout (PostgreSQL 14+; older servers lack the setting).
        if let Err(err) = client.batch_execute("set idle_session_timeout = 0").await {
            tracing::debug!(error = %crate::logging::error(&err), "idle_session_timeout not set");
        }
        let listen = format!("LISTEN {}", quote_ident(&self.pg_channel));
        if let Err(err) = client.batch_execute(&listen).await {
            driver.abort();
            return Err(err);
        }
        // Anything committed from here on is delivered; anything before may
        // have been missed by clients that were already subscribed. The
        // resync goes first, then what arrived meanwhile, then the rest.
        {
            let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
            self.hub.resync_all(ResyncReason::ListenerReconnected);
            for n in held.take().unwrap_or_default() {
                forward(&self.hub, n.payload());
            }
        }
        if self.listened_before {
            self.hub.metrics().listener_reconnects.inc();
        }
        self.listened_before = true;
        self.ready.send_replace(true);
        self.hub.metrics().listener_up.set(1);
        self.backoff.reset();
        tracing::info!(channel = %self.pg_channel, "LISTEN in effect");

        let mut driver = driver;
        let mut check = tokio::time::interval(self.queue_check);
        let result = loop {
            tokio::select! {
                ended = &mut driver => break ended.unwrap_or(Ok(())),
                _ = check.tick() => self.check_queue(&client).await,
            }
        };
        drop(client);
        result
    }

    /// A listener that stops consuming (anywhere in the cluster) fills the
    /// NOTIFY queue, and once it is full every notifying commit fails.
    async fn check_queue(&self, client: &tokio_postgres::Client) {
        match client
            .query_one("select pg_notification_queue_usage()", &[])
            .await
        {
            Ok(row) => {
                let usage: f64 = row.get(0);
                self.hub.metrics().notify_queue_usage.set(usage);
                if usage > self.queue_warn {
                    tracing::warn!(
                        usage_percent = usage * 100.0,
                        "Postgres's NOTIFY queue is filling up: some listener in the cluster is not consuming; \
                         when it is full, every notifying commit fails"
                    );
                }
            }
            Err(err) => {
                tracing::debug!(error = %crate::logging::error(&err), "could not read the NOTIFY queue usage")
            }
        }
    }
}

/// Publishes a payload the kit sent (by either transport), or, when it is
/// no signal, logs it and resyncs the channel it named.
pub(crate) fn forward(hub: &Hub, payload: &str) {
    forward_at(hub, payload, None);
}

/// [`forward`] at a WAL position (see [`Hub::publish_at`]).
pub(crate) fn forward_at(hub: &Hub, payload: &str, at: Option<crate::wire::Position>) {
    match parse(payload) {
        Ok(signal) => hub.publish_at(&signal, at),
        Err(invalid) => {
            hub.metrics().invalid_notifications.inc();
            // Any role may NOTIFY: nothing of it reaches the log unescaped.
            tracing::warn!(
                reason = %untrusted(&invalid.reason),
                payload = %untrusted(payload),
                "unreadable notification"
            );
            // Something on that channel may have changed: say so rather than drop it.
            if let Some(channel) = &invalid.channel {
                hub.resync(channel, ResyncReason::InvalidSignal);
            }
        }
    }
}

/// Parses the SQL kit's payload, and nothing else:
/// `{"channel": C, "event": E, "payload": {"entity_id"?, "txid", "table"?,
/// "schema"?, "op", "rows"?, "extra"?, "extra_dropped"?, "entity_id_dropped"?}}`
/// (`sql/README.md`). Any other shape — an array as payload, a key the kit
/// never writes, a txid that is no 32-bit xid — is an invalid signal.
pub fn parse(payload: &str) -> Result<Signal, InvalidSignal> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Notice {
        channel: String,
        event: String,
        payload: Box<RawValue>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Read to check the shape; only entity_id is used.
    struct Head {
        entity_id: Option<String>,
        txid: u32,
        table: Option<String>,
        schema: Option<String>,
        op: Op,
        rows: Option<u64>,
        extra: Option<IgnoredAny>,
        extra_dropped: Option<bool>,
        entity_id_dropped: Option<bool>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    enum Op {
        Insert,
        Update,
        Delete,
        Truncate,
        Emit,
    }
    #[derive(Deserialize)]
    struct ChannelOnly {
        channel: String,
    }
    let invalid = |channel: Option<String>, reason: String| InvalidSignal { channel, reason };
    let notice: Notice = serde_json::from_str(payload).map_err(|e| {
        let channel = serde_json::from_str::<ChannelOnly>(payload)
            .ok()
            .map(|c| c.channel)
            .filter(|c| valid_channel(c).is_ok());
        invalid(channel, e.to_string())
    })?;
    valid_channel(&notice.channel)
        .map_err(|why| invalid(None, format!("channel {:?}: {why}", notice.channel)))?;
    let channel = Some(notice.channel.clone());
    if !valid_event(&notice.event) {
        return Err(invalid(
            channel,
            format!("event {:?} is not a valid event name", notice.event),
        ));
    }
    let head: Head = serde_json::from_str(notice.payload.get())
        .map_err(|e| invalid(channel, format!("payload: {e}")))?;
    Ok(Signal {
        channel: notice.channel,
        event: notice.event,
        entity_id: head.entity_id,
        payload: notice.payload,
    })
}

/// The SQL kit's rule (`^[A-Za-z0-9_.-]{1,64}$`); `resync` is the server's own.
fn valid_event(event: &str) -> bool {
    (1..=64).contains(&event.len())
        && event != "resync"
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Exponential backoff with jitter: the first retry is immediate (most losses
/// are a terminated backend or a restart that is already over); retry n ≥ 1
/// waits between half and all of `min(max, base * 2^(n-1))`, so reconnecting
/// nodes spread out but never stall.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// The backoff of a connection to Postgres that must come back (the
    /// LISTEN connection, the WAL stream): from 100 ms up to `--reconnect-max`.
    pub fn reconnect(pg: &crate::config::PgArgs) -> Backoff {
        Backoff::new(Duration::from_millis(100), pg.reconnect_max)
    }

    /// Delays from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// How long to wait before the next attempt: none for the first, then a
    /// random delay between half and all of the current ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        if attempt == 0 {
            return Duration::ZERO;
        }
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow((attempt - 1).min(20)))
            .min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Starts over after a success: the next attempt is immediate.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kit_payload() {
        let s = parse(r#"{"channel":"order","event":"item_added","payload":{"entity_id":"123","txid":7561,"table":"order_items","op":"INSERT"}}"#).unwrap();
        assert_eq!(s.channel, "order");
        assert_eq!(s.event, "item_added");
        assert_eq!(s.entity_id.as_deref(), Some("123"));
        assert!(s.payload.get().contains(r#""txid":7561"#));
        let wide =
            parse(r#"{"channel":"order","event":"updated","payload":{"txid":1,"op":"UPDATE","rows":100000}}"#)
                .unwrap();
        assert_eq!(wide.entity_id, None);
    }

    #[test]
    fn rejects_foreign_payloads_naming_the_channel_when_it_can() {
        let channel = |p: &str| parse(p).unwrap_err().channel;
        assert_eq!(channel("hello"), None);
        assert_eq!(
            channel(r#"{"channel":"a b","event":"x","payload":{}}"#),
            None
        );
        assert_eq!(channel(r#"{"channel":"order"}"#), Some("order".into()));
        assert_eq!(
            channel(r#"{"channel":"a","event":"x","payload":{"entity_id":5}}"#),
            Some("a".into())
        );
        assert_eq!(
            channel(r#"{"channel":"a","event":"resync","payload":{}}"#),
            Some("a".into())
        );
        assert_eq!(
            channel(r#"{"channel":"a","event":"no spaces","payload":{}}"#),
            Some("a".into())
        );
    }

    #[test]
    fn only_the_documented_payload_shape_passes() {
        let with =
            |inner: &str| format!(r#"{{"channel":"order","event":"updated","payload":{inner}}}"#);
        for good in [
            r#"{"entity_id":"1","txid":853,"table":"order_items","op":"INSERT"}"#,
            r#"{"txid":859,"table":"orders","op":"UPDATE","rows":500}"#,
            r#"{"txid":864,"table":"orders","op":"TRUNCATE"}"#,
            r#"{"entity_id":"A\"1","txid":807,"table":"T","schema":"My Schema","op":"DELETE"}"#,
            r#"{"entity_id":"123","txid":860,"op":"EMIT","extra":{"printer":"kitchen-2"}}"#,
            r#"{"entity_id":"124","txid":4294967295,"op":"EMIT","extra_dropped":true}"#,
            r#"{"txid":1,"op":"EMIT","entity_id_dropped":true}"#,
        ] {
            assert!(parse(&with(good)).is_ok(), "{good}");
        }
        for forged in [
            r#"["666"]"#,
            r#""666""#,
            "null",
            r#"{"entity_id":"1","op":"INSERT"}"#,
            r#"{"entity_id":"1","txid":-1,"op":"INSERT"}"#,
            r#"{"entity_id":"1","txid":4294967296,"op":"INSERT"}"#,
            r#"{"entity_id":"1","txid":"7","op":"INSERT"}"#,
            r#"{"entity_id":"1","txid":7}"#,
            r#"{"entity_id":"1","txid":7,"op":"DROP"}"#,
            r#"{"entity_id":["1"],"txid":7,"op":"INSERT"}"#,
            r#"{"entity_id":"1","txid":7,"op":"INSERT","rows":-5}"#,
            r#"{"entity_id":"1","txid":7,"op":"INSERT","script":"<img>"}"#,
        ] {
            let err = parse(&with(forged)).expect_err(forged);
            // The channel still gets a resync.
            assert_eq!(err.channel.as_deref(), Some("order"), "{forged}");
        }
        let extra_key =
            r#"{"channel":"order","event":"x","payload":{"txid":1,"op":"EMIT"},"seq":1}"#;
        assert!(parse(extra_key).is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("pgbroadcast"), "\"pgbroadcast\"");
        assert_eq!(quote_ident("My \"chan\""), "\"My \"\"chan\"\"\"");
    }

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.next_delay(), Duration::ZERO);
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(5));
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::ZERO);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_notifications_never_panic(payload in ".{0,300}") {
            let _ = parse(&payload);
        }

        #[test]
        fn near_miss_notifications_never_panic(
            channel in ".{0,70}", event in ".{0,70}", entity in proptest::option::of(".{0,40}")
        ) {
            let payload = serde_json::json!({
                "channel": channel, "event": event, "payload": {"entity_id": entity, "txid": 1}
            });
            let _ = parse(&payload.to_string());
        }
    }
}
