//! The hub: which sessions want which channels, and the fan-out. Each signal
//! gets the node's next `seq`, is serialized once and kept in a bounded
//! [`history`] for clients that resume; every matching session receives the
//! same shared bytes through its bounded mailbox. A session whose mailbox is
//! full is owed a `resync` for that channel instead of a silent gap.

pub mod history;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::ws::protocol::{self, Resume};
use history::History;

/// One serialized server → client frame, shared by every recipient.
pub type Frame = Utf8Bytes;

/// A change signal as it came from Postgres.
#[derive(Debug)]
pub struct Signal {
    pub channel: String,
    pub event: String,
    /// `None` means "something (possibly many things) in this channel changed".
    pub entity_id: Option<String>,
    /// The client-facing payload object (`entity_id`, `txid`, `table`, `op`, ...).
    pub payload: Box<RawValue>,
}

/// What a client subscribes to: a whole channel, or one entity in it (`order:123`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub channel: String,
    pub entity: Option<String>,
}

impl Topic {
    /// Does a signal on `channel` about `entity` concern this topic? A
    /// channel-wide signal (no entity) concerns every entity topic too.
    pub fn wants(&self, channel: &str, entity: Option<&str>) -> bool {
        self.channel == channel
            && (self.entity.is_none() || entity.is_none() || self.entity.as_deref() == entity)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.entity {
            Some(entity) => write!(f, "{}:{entity}", self.channel),
            None => f.write_str(&self.channel),
        }
    }
}

/// Why a client is told to resync a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResyncReason {
    /// The LISTEN connection was re-established; signals may have been missed meanwhile.
    ListenerReconnected,
    /// The client's outbound queue was full.
    SlowConsumer,
    /// The client asked to resume, and this node cannot replay what it missed.
    ResumeUnavailable,
    /// A notification for this channel could not be read as a signal.
    InvalidSignal,
}

impl ResyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::ListenerReconnected => "listener_reconnected",
            ResyncReason::SlowConsumer => "slow_consumer",
            ResyncReason::ResumeUnavailable => "resume_unavailable",
            ResyncReason::InvalidSignal => "invalid_signal",
        }
    }
}

type SessionId = u64;

/// Counts for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub channels: usize,
}

/// Bounds of the hub's memory.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames a session may have queued before it is owed a resync.
    pub mailbox_frames: usize,
    /// Bytes a session may have queued before it is owed a resync.
    pub mailbox_bytes: usize,
    /// Signals kept for resuming clients, at most this many ...
    pub history_len: usize,
    /// ... and at most this old.
    pub history_age: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            mailbox_frames: 1024,
            mailbox_bytes: 4 * 1024 * 1024,
            history_len: 10_000,
            history_age: Duration::from_secs(120),
        }
    }
}

pub struct Hub {
    registry: Mutex<Registry>,
    epoch: String,
    next_session: AtomicU64,
    config: HubConfig,
    metrics: Arc<Metrics>,
}

struct Registry {
    channels: HashMap<String, Subscribers>,
    sessions: HashMap<SessionId, Arc<Mailbox>>,
    seq: u64,
    history: History,
}

impl Registry {
    /// Takes a seq for a moment when signals may have been missed (on
    /// `channel`, or on all), so no resume can reach across it.
    fn mark_gap(&mut self, channel: Option<&str>) {
        self.seq += 1;
        self.history.push_gap(self.seq, channel);
    }
}

/// Who wants one channel. Indexed by entity, so a signal for `order:123`
/// costs the channel's whole-channel subscribers plus that entity's, not
/// every entity subscriber of the channel.
#[derive(Debug, Default)]
struct Subscribers {
    whole: HashSet<SessionId>,
    by_entity: HashMap<String, HashSet<SessionId>>,
}

impl Subscribers {
    /// Each session that wants a signal about `entity`, once. A channel-wide
    /// signal (no entity) concerns every entity subscriber too.
    fn for_each_recipient(&self, entity: Option<&str>, mut f: impl FnMut(SessionId)) {
        self.whole.iter().copied().for_each(&mut f);
        match entity {
            Some(entity) => {
                if let Some(ids) = self.by_entity.get(entity) {
                    ids.iter()
                        .filter(|id| !self.whole.contains(*id))
                        .copied()
                        .for_each(&mut f);
                }
            }
            None => {
                let mut seen = HashSet::new();
                for ids in self.by_entity.values() {
                    for id in ids {
                        if !self.whole.contains(id) && seen.insert(*id) {
                            f(*id);
                        }
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.by_entity.is_empty()
    }
}

/// A frame waiting for its session, with when the hub handed it over.
pub struct Queued {
    pub frame: Frame,
    pub at: Instant,
}

struct Mailbox {
    tx: mpsc::Sender<Queued>,
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Channels owed a resync; further signals on them are skipped until it is sent.
    missed: Mutex<BTreeMap<String, ResyncReason>>,
    /// The current streak of overflows: (first, latest).
    overflows: Mutex<Option<(Instant, Instant)>>,
    wake: Arc<Notify>,
}

impl Mailbox {
    /// Queues `frame`; if the queue is full (frames or bytes), the channel is
    /// owed a resync for `reason_if_full` instead (the first reason owed is kept).
    fn deliver(
        &self,
        channel: &str,
        frame: &Frame,
        reason_if_full: ResyncReason,
        metrics: &Metrics,
    ) {
        let mut missed = lock(&self.missed);
        if missed.contains_key(channel) {
            // Still behind: its resync has not even been written yet.
            metrics.slow_consumer_frames_dropped.inc();
            self.overflowed();
            return;
        }
        let len = frame.len();
        let fits = self.bytes.load(Ordering::Relaxed) + len <= self.max_bytes;
        let queued = fits
            && self
                .tx
                .try_send(Queued {
                    frame: frame.clone(),
                    at: Instant::now(),
                })
                .is_ok();
        if queued {
            self.bytes.fetch_add(len, Ordering::Relaxed);
        } else if !self.tx.is_closed() {
            missed.insert(channel.to_owned(), reason_if_full);
            metrics.slow_consumer_frames_dropped.inc();
            if reason_if_full == ResyncReason::SlowConsumer {
                // A new resync; others were counted when they were sent.
                metrics.resync(reason_if_full.as_str());
            }
            self.overflowed();
            self.wake.notify_one();
        }
    }

    /// Extends (or starts) the current streak of overflows.
    fn overflowed(&self) {
        let now = Instant::now();
        let mut overflows = lock(&self.overflows);
        *overflows = Some(match *overflows {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The registry holds no invariant a panicking holder could half-update in a
    // way later readers cannot live with, so poisoning is not fatal here.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new(config: HubConfig, metrics: Arc<Metrics>) -> Arc<Hub> {
        let history = History::new(config.history_len, config.history_age);
        Arc::new(Hub {
            registry: Mutex::new(Registry {
                channels: HashMap::new(),
                sessions: HashMap::new(),
                seq: 0,
                history,
            }),
            epoch: format!("{:016x}", rand::random::<u64>()),
            next_session: AtomicU64::new(1),
            config,
            metrics,
        })
    }

    /// Identifies this node's run; `seq` values are only comparable within one epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Registers a new session with an empty subscription set.
    pub fn connect(self: &Arc<Self>) -> Session {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.config.mailbox_frames.max(1));
        let mailbox = Arc::new(Mailbox {
            tx,
            bytes: AtomicUsize::new(0),
            max_bytes: self.config.mailbox_bytes,
            missed: Mutex::default(),
            overflows: Mutex::default(),
            wake: Arc::new(Notify::new()),
        });
        let mut registry = lock(&self.registry);
        registry.sessions.insert(id, Arc::clone(&mailbox));
        let start_seq = registry.seq;
        drop(registry);
        self.metrics.connections.inc();
        Session {
            hub: Arc::clone(self),
            id,
            owed: Box::pin(Arc::clone(&mailbox.wake).notified_owned()),
            mailbox,
            rx,
            topics: HashSet::new(),
            start_seq,
        }
    }

    /// Records a signal in the history and fans it out to every session that wants it.
    pub fn publish(&self, signal: &Signal) {
        self.metrics.signals_received.inc();
        let mut registry = lock(&self.registry);
        registry.seq += 1;
        let seq = registry.seq;
        let frame = protocol::signal_frame(signal, seq, &self.epoch);
        let entity = signal.entity_id.as_deref();
        registry
            .history
            .push_signal(seq, &signal.channel, entity, &frame);
        let Some(subscribers) = registry.channels.get(&signal.channel) else {
            return;
        };
        subscribers.for_each_recipient(entity, |id| {
            if let Some(mailbox) = registry.sessions.get(&id) {
                mailbox.deliver(
                    &signal.channel,
                    &frame,
                    ResyncReason::SlowConsumer,
                    &self.metrics,
                );
            }
        });
    }

    /// Signals may have been missed on every channel (e.g. the listener
    /// reconnected): every subscribed channel gets `resync`, and resuming
    /// across this point is refused.
    pub fn resync_all(&self, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        registry.mark_gap(None);
        for (channel, subscribers) in &registry.channels {
            self.resync_subscribers(&registry, channel, subscribers, reason);
        }
    }

    /// Signals may have been missed on one channel (e.g. one could not be read).
    pub fn resync(&self, channel: &str, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        registry.mark_gap(Some(channel));
        if let Some(subscribers) = registry.channels.get(channel) {
            self.resync_subscribers(&registry, channel, subscribers, reason);
        }
    }

    fn resync_subscribers(
        &self,
        registry: &Registry,
        channel: &str,
        subscribers: &Subscribers,
        reason: ResyncReason,
    ) {
        let frame = protocol::resync_frame(channel, reason);
        subscribers.for_each_recipient(None, |id| {
            if let Some(mailbox) = registry.sessions.get(&id) {
                self.metrics.resync(reason.as_str());
                mailbox.deliver(channel, &frame, reason, &self.metrics);
            }
        });
    }

    pub fn stats(&self) -> Stats {
        let registry = lock(&self.registry);
        Stats {
            sessions: registry.sessions.len(),
            channels: registry.channels.len(),
        }
    }
}

/// See [`Session::next_outbound`].
pub enum Outbound {
    Frame(Queued),
    Resyncs(Vec<Frame>),
}

/// A client's registration with the hub; unregisters itself when dropped.
pub struct Session {
    hub: Arc<Hub>,
    id: SessionId,
    mailbox: Arc<Mailbox>,
    rx: mpsc::Receiver<Queued>,
    /// Armed once and kept: the next wake-up for owed resyncs.
    owed: std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>,
    topics: HashSet<Topic>,
    start_seq: u64,
}

impl Session {
    pub fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    /// The node's latest `seq` when this session connected: where a client
    /// that has seen nothing yet can resume from.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// Adds topics. Once this returns, every signal the hub publishes for them
    /// reaches this session (or a resync does).
    pub fn subscribe(&mut self, topics: &[Topic]) {
        let hub = Arc::clone(&self.hub);
        let mut registry = lock(&hub.registry);
        self.add_topics(&mut registry, topics);
    }

    /// Adds topics and, atomically with that, collects what the client missed
    /// on the new ones since `resume`: the frames to write before any live
    /// frame, or `None` if that cannot be proven complete (the client must resync).
    pub fn subscribe_resuming(&mut self, topics: &[Topic], resume: &Resume) -> Option<Vec<Frame>> {
        let hub = Arc::clone(&self.hub);
        let mut registry = lock(&hub.registry);
        // Topics already held are live: replaying them would duplicate.
        let fresh: Vec<Topic> = topics
            .iter()
            .filter(|t| !self.topics.contains(*t))
            .cloned()
            .collect();
        let current = registry.seq;
        let replay = (resume.epoch == hub.epoch)
            .then(|| registry.history.replay(resume.seq, current, &fresh))
            .flatten();
        self.add_topics(&mut registry, topics);
        replay
    }

    fn add_topics(&mut self, registry: &mut Registry, topics: &[Topic]) {
        for topic in topics {
            if !self.topics.insert(topic.clone()) {
                continue;
            }
            self.hub.metrics.subscriptions.inc();
            let subscribers = registry.channels.entry(topic.channel.clone()).or_default();
            match &topic.entity {
                None => subscribers.whole.insert(self.id),
                Some(entity) => subscribers
                    .by_entity
                    .entry(entity.clone())
                    .or_default()
                    .insert(self.id),
            };
        }
    }

    /// Removes topics; topics not subscribed are ignored.
    pub fn unsubscribe(&mut self, topics: &[Topic]) {
        let mut registry = lock(&self.hub.registry);
        for topic in topics {
            if self.topics.remove(topic) {
                self.hub.metrics.subscriptions.dec();
                remove_interest(&mut registry, self.id, topic);
            }
        }
    }

    /// The topics this session holds.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.iter().cloned().collect()
    }

    /// How many topics this session holds.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Would subscribing to `topics` add this many new ones?
    pub fn new_topic_count(&self, topics: &[Topic]) -> usize {
        let distinct: HashSet<&Topic> = topics.iter().collect();
        distinct
            .into_iter()
            .filter(|t| !self.topics.contains(*t))
            .count()
    }

    /// A queued frame, if one is ready now.
    pub fn try_recv(&mut self) -> Option<Queued> {
        let queued = self.rx.try_recv().ok()?;
        self.mailbox
            .bytes
            .fetch_sub(queued.frame.len(), Ordering::Relaxed);
        Some(queued)
    }

    /// The next thing to write: a queued frame or, once the queue is drained
    /// of what came before, the resyncs this session is owed.
    pub async fn next_outbound(&mut self) -> Outbound {
        std::future::poll_fn(|cx| self.poll_outbound(cx)).await
    }

    fn poll_outbound(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outbound> {
        use std::future::Future;
        // Queued frames are older than the overflow that caused a resync.
        if let std::task::Poll::Ready(Some(queued)) = self.rx.poll_recv(cx) {
            self.mailbox
                .bytes
                .fetch_sub(queued.frame.len(), Ordering::Relaxed);
            return std::task::Poll::Ready(Outbound::Frame(queued));
        }
        if self.owed.as_mut().poll(cx).is_ready() {
            self.owed = Box::pin(Arc::clone(&self.mailbox.wake).notified_owned());
            return std::task::Poll::Ready(Outbound::Resyncs(self.take_missed()));
        }
        std::task::Poll::Pending
    }

    /// The resync frames owed to this session, clearing the debt.
    fn take_missed(&self) -> Vec<Frame> {
        let missed = std::mem::take(&mut *lock(&self.mailbox.missed));
        missed
            .into_iter()
            .map(|(channel, reason)| protocol::resync_frame(&channel, reason))
            .collect()
    }

    /// How long this session has been falling behind: the span of its
    /// current streak of queue overflows, each within `window` of the last.
    /// A session that overflows once and then keeps up has no streak.
    pub fn behind_for(&self, window: Duration) -> Option<Duration> {
        let mut overflows = lock(&self.mailbox.overflows);
        let (first, last) = (*overflows)?;
        if last.elapsed() > window {
            *overflows = None;
            return None;
        }
        Some(last.duration_since(first))
    }
}

fn remove_interest(registry: &mut Registry, id: SessionId, topic: &Topic) {
    let Some(subscribers) = registry.channels.get_mut(&topic.channel) else {
        return;
    };
    match &topic.entity {
        None => {
            subscribers.whole.remove(&id);
        }
        Some(entity) => {
            if let Some(ids) = subscribers.by_entity.get_mut(entity) {
                ids.remove(&id);
                if ids.is_empty() {
                    subscribers.by_entity.remove(entity);
                }
            }
        }
    }
    if subscribers.is_empty() {
        registry.channels.remove(&topic.channel);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut registry = lock(&self.hub.registry);
        for topic in &self.topics {
            remove_interest(&mut registry, self.id, topic);
        }
        registry.sessions.remove(&self.id);
        self.hub
            .metrics
            .subscriptions
            .dec_by(self.topics.len() as i64);
        self.hub.metrics.connections.dec();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        match s.split_once(':') {
            Some((c, e)) => Topic {
                channel: c.into(),
                entity: Some(e.into()),
            },
            None => Topic {
                channel: s.into(),
                entity: None,
            },
        }
    }

    fn signal(channel: &str, entity: Option<&str>) -> Signal {
        let payload = match entity {
            Some(e) => format!(r#"{{"entity_id":"{e}","txid":7}}"#),
            None => r#"{"txid":7}"#.to_owned(),
        };
        Signal {
            channel: channel.into(),
            event: "updated".into(),
            entity_id: entity.map(str::to_owned),
            payload: RawValue::from_string(payload).unwrap(),
        }
    }

    pub(crate) fn test_hub(frames: usize) -> Arc<Hub> {
        let config = HubConfig {
            mailbox_frames: frames,
            ..HubConfig::default()
        };
        Hub::new(config, Arc::new(Metrics::new()))
    }

    fn frames(session: &mut Session) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| session.try_recv())
            .map(|q| serde_json::from_str(&q.frame).unwrap())
            .collect()
    }

    #[test]
    fn delivers_to_channel_and_entity_subscribers_once() {
        let hub = test_hub(16);
        let mut whole = hub.connect();
        let mut one = hub.connect();
        let mut both = hub.connect();
        let mut other = hub.connect();
        let mut two = hub.connect();
        two.subscribe(&[topic("order:1"), topic("order:2")]);
        whole.subscribe(&[topic("order")]);
        one.subscribe(&[topic("order:1")]);
        both.subscribe(&[topic("order"), topic("order:1")]);
        other.subscribe(&[topic("contact")]);

        hub.publish(&signal("order", Some("1")));
        hub.publish(&signal("order", Some("2")));
        hub.publish(&signal("order", None));

        let ids = |fs: Vec<serde_json::Value>| -> Vec<Option<String>> {
            fs.iter()
                .map(|f| f["payload"]["entity_id"].as_str().map(str::to_owned))
                .collect()
        };
        let all = vec![Some("1".into()), Some("2".into()), None];
        assert_eq!(ids(frames(&mut whole)), all);
        assert_eq!(ids(frames(&mut both)), all);
        assert_eq!(ids(frames(&mut one)), vec![Some("1".into()), None]);
        assert!(frames(&mut other).is_empty());
        assert_eq!(ids(frames(&mut two)), all);
    }

    #[test]
    fn seq_increases_per_signal() {
        let hub = test_hub(16);
        let mut s = hub.connect();
        s.subscribe(&[topic("order")]);
        hub.publish(&signal("order", Some("1")));
        hub.publish(&signal("nobody", Some("1")));
        hub.publish(&signal("order", Some("1")));
        let seqs: Vec<u64> = frames(&mut s)
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn unsubscribe_and_drop_remove_interest() {
        let hub = test_hub(16);
        let mut s = hub.connect();
        s.subscribe(&[topic("order"), topic("order:1")]);
        s.unsubscribe(&[topic("order")]);
        hub.publish(&signal("order", Some("2")));
        assert!(frames(&mut s).is_empty());
        hub.publish(&signal("order", Some("1")));
        assert_eq!(frames(&mut s).len(), 1);
        s.unsubscribe(&[topic("order:1")]);
        assert_eq!(hub.stats().channels, 0);
        drop(s);
        assert_eq!(
            hub.stats(),
            Stats {
                sessions: 0,
                channels: 0
            }
        );
    }

    #[test]
    fn full_mailbox_owes_one_resync_per_channel_and_skips_until_paid() {
        let hub = test_hub(2);
        let mut s = hub.connect();
        s.subscribe(&[topic("order"), topic("contact")]);
        for _ in 0..5 {
            hub.publish(&signal("order", Some("1")));
        }
        assert_eq!(frames(&mut s).len(), 2);
        // Room again, but the channel is owed a resync: later signals must not
        // overtake it.
        hub.publish(&signal("order", Some("1")));
        assert!(frames(&mut s).is_empty());
        hub.publish(&signal("contact", Some("9")));
        assert_eq!(frames(&mut s).len(), 1);

        let owed: Vec<serde_json::Value> = s
            .take_missed()
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0]["channel"], "order");
        assert_eq!(owed[0]["event"], "resync");
        assert_eq!(owed[0]["payload"]["reason"], "slow_consumer");
        assert!(owed[0]["payload"].get("entity_id").is_none());

        hub.publish(&signal("order", Some("1")));
        assert_eq!(frames(&mut s).len(), 1);
    }

    #[test]
    fn the_first_reason_owed_is_kept() {
        let hub = test_hub(1);
        let mut s = hub.connect();
        s.subscribe(&[topic("order")]);
        hub.publish(&signal("order", Some("1")));
        hub.resync_all(ResyncReason::ListenerReconnected);
        hub.publish(&signal("order", Some("2")));
        assert_eq!(frames(&mut s).len(), 1);
        let owed: Vec<serde_json::Value> = s
            .take_missed()
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(owed.len(), 1);
        assert_eq!(owed[0]["payload"]["reason"], "listener_reconnected");
    }

    #[test]
    fn resync_all_reaches_every_subscribed_channel() {
        let hub = test_hub(16);
        let mut s = hub.connect();
        s.subscribe(&[topic("order:1"), topic("contact")]);
        hub.resync_all(ResyncReason::ListenerReconnected);
        let mut got: Vec<(String, String)> = frames(&mut s)
            .iter()
            .map(|f| {
                (
                    f["channel"].as_str().unwrap().to_owned(),
                    f["payload"]["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("contact".into(), "listener_reconnected".into()),
                ("order".into(), "listener_reconnected".into())
            ]
        );
    }
}
