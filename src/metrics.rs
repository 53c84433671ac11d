//! Prometheus metrics, served as text at `GET /metrics`. Labels are bounded
//! (resync reasons, refusal reasons): never a channel or entity.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `reason` label of a metric family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why it was counted.
    pub reason: &'static str,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Topics held by all connections.
    pub subscriptions: Gauge,
    /// Signals received from Postgres.
    pub signals_received: Counter,
    /// Notifications on the Postgres channel that were not valid signals.
    pub invalid_notifications: Counter,
    /// Signal and resync frames written to clients.
    pub frames_delivered: Counter,
    /// Resync frames owed to clients, by reason.
    pub resyncs: Family<Reason, Counter>,
    /// Frames not queued because a client's queue was full (a resync covers them).
    pub slow_consumer_frames_dropped: Counter,
    /// Connections closed with 1013 for staying behind too long.
    pub slow_consumer_disconnects: Counter,
    /// WebSocket connections refused, by reason.
    pub connections_refused: Family<Reason, Counter>,
    /// HTTP connections not (yet) upgraded to WebSocket.
    pub http_connections_pending: Gauge,
    /// HTTP connections closed before a request completed, by reason.
    pub http_connections_closed: Family<Reason, Counter>,
    /// Client messages dropped for exceeding the per-connection rate.
    pub messages_rate_limited: Counter,
    /// 1 while the LISTEN is in effect.
    pub listener_up: Gauge,
    /// 1 while the WAL stream (`--transport wal`, or `auto` once the
    /// database asks for it) is in effect.
    pub wal_up: Gauge,
    /// WAL the node's own slot keeps Postgres from removing, in bytes.
    pub wal_slot_retained_bytes: Gauge,
    /// How much more WAL the slot may retain before `max_slot_wal_keep_size`
    /// invalidates it; -1 when that is unlimited.
    pub wal_slot_safe_bytes: Gauge,
    /// Inactive pgbroadcast slots in the database (nodes gone, or stopped).
    pub wal_stale_slots: Gauge,
    /// WAL those inactive slots retain together, in bytes.
    pub wal_stale_slots_retained_bytes: Gauge,
    /// Times the LISTEN connection was re-established after a loss.
    pub listener_reconnects: Counter,
    /// Times the WAL stream was re-established after a loss.
    pub wal_reconnects: Counter,
    /// `pg_notification_queue_usage()`: the fraction of the NOTIFY queue in use.
    pub notify_queue_usage: Gauge<f64, AtomicU64>,
    /// Seconds from a notification reaching the service to its frame being written.
    pub send_lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `pgbroadcast` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("pgbroadcast"),
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            signals_received: Counter::default(),
            invalid_notifications: Counter::default(),
            frames_delivered: Counter::default(),
            resyncs: Family::default(),
            slow_consumer_frames_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            connections_refused: Family::default(),
            http_connections_pending: Gauge::default(),
            http_connections_closed: Family::default(),
            messages_rate_limited: Counter::default(),
            listener_up: Gauge::default(),
            wal_up: Gauge::default(),
            wal_slot_retained_bytes: Gauge::default(),
            wal_slot_safe_bytes: Gauge::default(),
            wal_stale_slots: Gauge::default(),
            wal_stale_slots_retained_bytes: Gauge::default(),
            listener_reconnects: Counter::default(),
            wal_reconnects: Counter::default(),
            notify_queue_usage: Gauge::default(),
            // 50 µs … ~1.6 s
            send_lag: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        };
        let r = &mut m.registry;
        r.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        r.register(
            "subscriptions",
            "Topics held by all connections",
            m.subscriptions.clone(),
        );
        r.register(
            "signals_received",
            "Signals received from Postgres",
            m.signals_received.clone(),
        );
        r.register(
            "invalid_notifications",
            "Notifications on the Postgres channel that were not valid signals",
            m.invalid_notifications.clone(),
        );
        r.register(
            "frames_delivered",
            "Signal and resync frames written to clients",
            m.frames_delivered.clone(),
        );
        r.register(
            "resyncs",
            "Resync frames owed to clients, by reason",
            m.resyncs.clone(),
        );
        r.register(
            "slow_consumer_frames_dropped",
            "Frames not queued because a client's queue was full (covered by a resync)",
            m.slow_consumer_frames_dropped.clone(),
        );
        r.register(
            "slow_consumer_disconnects",
            "Connections closed with 1013 for staying behind too long",
            m.slow_consumer_disconnects.clone(),
        );
        r.register(
            "connections_refused",
            "WebSocket connections refused, by reason",
            m.connections_refused.clone(),
        );
        r.register(
            "http_connections_pending",
            "HTTP connections not (yet) upgraded to WebSocket",
            m.http_connections_pending.clone(),
        );
        r.register(
            "http_connections_closed",
            "HTTP connections closed before a request completed: handshake_timeout, pending_limit",
            m.http_connections_closed.clone(),
        );
        r.register(
            "messages_rate_limited",
            "Client messages dropped for exceeding the per-connection rate",
            m.messages_rate_limited.clone(),
        );
        r.register(
            "listener_up",
            "1 while the LISTEN is in effect",
            m.listener_up.clone(),
        );
        r.register(
            "wal_up",
            "1 while the WAL stream (the wal transport) is in effect",
            m.wal_up.clone(),
        );
        r.register(
            "wal_slot_retained_bytes",
            "WAL retained by this node's replication slot (--node-id), in bytes",
            m.wal_slot_retained_bytes.clone(),
        );
        r.register(
            "wal_slot_safe_bytes",
            "WAL this node's slot may still retain before max_slot_wal_keep_size invalidates it; -1: unlimited",
            m.wal_slot_safe_bytes.clone(),
        );
        r.register(
            "wal_stale_slots",
            "Inactive pgbroadcast replication slots in the database",
            m.wal_stale_slots.clone(),
        );
        r.register(
            "wal_stale_slots_retained_bytes",
            "WAL retained by inactive pgbroadcast replication slots, in bytes",
            m.wal_stale_slots_retained_bytes.clone(),
        );
        r.register(
            "listener_reconnects",
            "Times the LISTEN connection was re-established after a loss",
            m.listener_reconnects.clone(),
        );
        r.register(
            "wal_reconnects",
            "Times the WAL stream was re-established after a loss",
            m.wal_reconnects.clone(),
        );
        r.register(
            "notify_queue_usage_ratio",
            "pg_notification_queue_usage(): fraction of Postgres's NOTIFY queue in use",
            m.notify_queue_usage.clone(),
        );
        r.register(
            "send_lag_seconds",
            "From a notification reaching pgbroadcast to its frame being written to a client (oldest frame of each write)",
            m.send_lag.clone(),
        );
        m
    }

    /// Counts a resync owed for `reason`.
    pub fn resync(&self, reason: &'static str) {
        self.resyncs.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a connection refused for `reason`.
    pub fn refuse(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}
