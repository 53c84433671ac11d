//! The hub: which sessions want which channels, and the fan-out. Each signal
//! gets the node's next `seq`, is made into a complete WebSocket frame once
//! and kept in a bounded [`history`] for clients that resume; its recipients
//! are handed, shard by shard, to the [`shard`]s that write to their sockets,
//! every one of them the same shared bytes. A client whose queue is full is
//! owed a `resync` for that channel instead of a silent gap.

pub mod history;
pub mod shard;
pub mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::wire::{self, Epoch, Frame, Position, Resume, ResyncReason, Signal, Topic, Written};
use history::History;
use shard::{Cmd, End, Publish, ShardConfig, ShardHandle, Socket};

type SessionId = u64;

/// Counts for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Open WebSocket sessions.
    pub sessions: usize,
    /// Channels at least one session subscribes to.
    pub channels: usize,
}

/// Bounds of the hub's memory and its shards' work.
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
    /// Ping interval; silent peers go after two, non-reading ones after one.
    pub heartbeat: Duration,
    /// A client that keeps overflowing for longer is closed with 1013.
    pub max_lag: Duration,
    /// Shards writing to sockets; 0: one per core.
    pub shards: usize,
}

impl From<&Limits> for HubConfig {
    /// The hub's share of the endpoint's limits.
    fn from(limits: &Limits) -> HubConfig {
        HubConfig {
            mailbox_frames: limits.outbound_queue,
            mailbox_bytes: limits.outbound_bytes,
            history_len: limits.history_size,
            history_age: limits.history_age,
            heartbeat: limits.heartbeat,
            max_lag: limits.max_lag,
            shards: limits.shards,
        }
    }
}

impl HubConfig {
    fn shard_config(&self) -> ShardConfig {
        ShardConfig {
            mailbox_frames: self.mailbox_frames,
            mailbox_bytes: self.mailbox_bytes,
            heartbeat: self.heartbeat,
            max_lag: self.max_lag,
        }
    }
}

/// Who is subscribed to what: takes signals, numbers them and hands their
/// frames to the shards of the subscribed connections.
pub struct Hub {
    registry: Mutex<Registry>,
    /// Ticks when a WAL epoch's position moves (or the epoch changes), for
    /// resuming clients waiting for the node to reach them.
    progress: tokio::sync::watch::Sender<()>,
    /// How long signals stay resumable (`--history-age`).
    window: Duration,
    next_session: AtomicU64,
    metrics: Arc<Metrics>,
    shards: Vec<ShardHandle>,
    /// The clock sessions measure silence against.
    started: Instant,
}

struct Registry {
    channels: HashMap<String, Subscribers>,
    sessions: usize,
    /// The epoch's latest position (a signal's, a gap's, or where it began).
    at: Position,
    epoch: Epoch,
    history: History,
    /// The last position the shards were told of ([`Hub::mark`]).
    marked: Option<(Arc<str>, Position)>,
}

impl Registry {
    /// Takes a position for a moment when signals may have been missed (on
    /// `channel`, or on all), so no resume can reach across it.
    fn mark_gap(&mut self, channel: Option<&str>) {
        self.at = self.at.next();
        self.history.push_gap(self.at, channel);
    }
}

/// Where a new connection starts: the epoch and position its welcome names.
#[derive(Debug, Clone)]
pub struct Start {
    /// The name of the order its positions are in.
    pub epoch: Arc<str>,
    /// The latest position when it registered.
    pub seq: Written,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The registry holds no invariant a panicking holder could half-update in a
    // way later readers cannot live with, so poisoning is not fatal here.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub with its shards (one per core unless `config.shards` says).
    pub fn new(config: HubConfig, metrics: Arc<Metrics>) -> Arc<Hub> {
        let count = match config.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shards = (0..count)
            .map(|_| shard::spawn(config.shard_config(), Arc::clone(&metrics)))
            .collect();
        let hub = Hub::with_shards(&config, metrics, shards);
        // As often as the shards look for heartbeats due, so one names a
        // position at most a quarter interval old.
        let every = (config.heartbeat / 4).max(Duration::from_millis(25));
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { return };
                hub.mark();
            }
        });
        hub
    }

    /// A hub whose shards are `shards` (tests watch what it asks of them).
    pub fn with_shards(
        config: &HubConfig,
        metrics: Arc<Metrics>,
        shards: Vec<ShardHandle>,
    ) -> Arc<Hub> {
        assert!(!shards.is_empty(), "a hub needs a shard");
        Arc::new(Hub {
            registry: Mutex::new(Registry {
                channels: HashMap::new(),
                sessions: 0,
                at: Position::default(),
                epoch: Epoch::counted(),
                history: History::new(config.history_len, config.history_age),
                marked: None,
            }),
            progress: tokio::sync::watch::Sender::new(()),
            window: config.history_age,
            next_session: AtomicU64::new(1),
            metrics,
            shards,
            started: Instant::now(),
        })
    }

    /// Names the order of this node's positions; `seq` values are only
    /// comparable within one epoch. A counted epoch per run, until the node
    /// reads a WAL stream ([`Hub::enter_epoch`]).
    pub fn epoch(&self) -> Arc<str> {
        Arc::clone(&lock(&self.registry).epoch.name)
    }

    /// Begins `epoch` at `from`: nothing before it can be resumed, everything
    /// published after it can. Subscribers of the old one get `resync`
    /// (`reason`) when it changes: what came between cannot be proven.
    pub fn enter_epoch(&self, epoch: Epoch, from: Position, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        let changed = registry.epoch != epoch;
        registry.epoch = epoch;
        registry.at = from;
        registry.history.reset(from);
        if changed {
            self.resync_every_channel(&registry, reason);
        }
        self.progress.send_replace(());
    }

    /// How long a signal stays resumable (`--history-age`): a WAL stream
    /// is confirmed that far behind, so a restarted node re-reads it.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The counters it updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The server is stopping: every connection, and any that connects from
    /// now on, is closed with 1001 and let go once its close frame is
    /// written or `wait` has passed. Their readers end with [`End::Shutdown`].
    pub fn shutdown(&self, wait: Duration) {
        for shard in &self.shards {
            shard.send(Cmd::Shutdown { wait });
        }
    }

    /// The clock a connection's [`Socket`] measures silence against.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn shard_of(&self, id: SessionId) -> &ShardHandle {
        &self.shards[(id % self.shards.len() as u64) as usize]
    }

    /// Registers a new connection (its socket goes to a shard) with an
    /// empty subscription set, and where it starts (for its welcome).
    pub fn connect(self: &Arc<Self>, socket: Arc<Socket>) -> (Session, Start) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let shard = self.shard_of(id).clone();
        shard.send(Cmd::Add { id, socket });
        let mut registry = lock(&self.registry);
        registry.sessions += 1;
        let start = Start {
            epoch: Arc::clone(&registry.epoch.name),
            seq: registry.at.written(registry.epoch.wal),
        };
        drop(registry);
        self.metrics.connections.inc();
        let session = Session {
            hub: Arc::clone(self),
            id,
            shard,
            topics: Vec::new(),
        };
        (session, start)
    }

    /// Each shard's share of `ids`.
    fn by_shard(&self, mut each: impl FnMut(&mut dyn FnMut(SessionId))) -> Vec<Vec<SessionId>> {
        let mut split = vec![Vec::new(); self.shards.len()];
        let count = self.shards.len() as u64;
        each(&mut |id| split[(id % count) as usize].push(id));
        split
    }

    /// Records a signal in the history and hands it to the shards of every
    /// session that wants it.
    pub fn publish(&self, signal: &Signal) {
        self.publish_at(signal, None);
    }

    /// [`Hub::publish`] at `at`, the signal's WAL position; `None` (or a
    /// node not in a WAL epoch): the next position of the node's order.
    pub fn publish_at(&self, signal: &Signal, at: Option<Position>) {
        self.metrics.signals_received.inc();
        let mut registry = lock(&self.registry);
        let wal = registry.epoch.wal;
        let seq = match at {
            Some(at) if wal && at > registry.at => at,
            _ => registry.at.next(),
        };
        registry.at = seq;
        // Only resumes waiting for the stream watch this; with none, a
        // signal costs no more than reading a counter.
        if wal && self.progress.receiver_count() > 0 {
            self.progress.send_replace(());
        }
        let frame = wire::signal_frame(signal, &seq.written(wal), &registry.epoch.name);
        let entity = signal.entity_id.as_deref();
        registry
            .history
            .push_signal(seq, &signal.channel, entity, &frame);
        let Some(subscribers) = registry.channels.get(&signal.channel) else {
            return;
        };
        let split = self.by_shard(|add| subscribers.for_each_recipient(entity, add));
        let publish = Arc::new(Publish {
            frame,
            channel: Arc::from(signal.channel.as_str()),
            at: Instant::now(),
        });
        // Sent under the lock: a subscription's first frames (sent under it
        // too) come before any signal published after it.
        for (shard, to) in self.shards.iter().zip(split) {
            if !to.is_empty() {
                shard.send(Cmd::Publish {
                    publish: Arc::clone(&publish),
                    to,
                });
            }
        }
    }

    /// Signals may have been missed on every channel (e.g. the listener
    /// reconnected): every subscribed channel gets `resync`, and resuming
    /// across this point is refused.
    pub fn resync_all(&self, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        registry.mark_gap(None);
        self.resync_every_channel(&registry, reason);
    }

    /// The WAL stream goes on from `from`, and what committed before it
    /// (after what was last read) cannot be read: no resume can reach back
    /// past it, and every subscribed channel gets `resync`.
    pub fn resync_all_from(&self, from: Position, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        registry.at = registry.at.max(from);
        registry.history.skip_to(from);
        self.resync_every_channel(&registry, reason);
        self.progress.send_replace(());
    }

    /// The WAL stream has read everything up to `at` (a keepalive's
    /// position): a resume from there on needs no more waiting.
    pub fn reached(&self, at: Position) {
        let mut registry = lock(&self.registry);
        if registry.epoch.wal && at > registry.at {
            registry.at = at;
            self.progress.send_replace(());
        }
    }

    /// Tells every shard the epoch's latest position, after every signal up
    /// to it (this is sent under the same lock as they are): heartbeats
    /// carry it, so a client whose topics are quiet still moves its resume
    /// point along and does not fall out of the history window. Nothing is
    /// sent while the position stays where it was.
    pub fn mark(&self) {
        let mut registry = lock(&self.registry);
        let now = (Arc::clone(&registry.epoch.name), registry.at);
        if registry.marked.as_ref() == Some(&now) {
            return;
        }
        let heartbeat = wire::heartbeat_frame(Some((&now.0, &now.1.written(registry.epoch.wal))));
        for shard in &self.shards {
            shard.send(Cmd::Mark {
                heartbeat: heartbeat.clone(),
            });
        }
        registry.marked = Some(now);
    }

    /// Signals may have been missed on one channel (e.g. one could not be read).
    pub fn resync(&self, channel: &str, reason: ResyncReason) {
        let mut registry = lock(&self.registry);
        registry.mark_gap(Some(channel));
        if let Some(subscribers) = registry.channels.get(channel) {
            self.resync_subscribers(channel, subscribers, reason);
        }
    }

    fn resync_every_channel(&self, registry: &Registry, reason: ResyncReason) {
        for (channel, subscribers) in &registry.channels {
            self.resync_subscribers(channel, subscribers, reason);
        }
    }

    fn resync_subscribers(&self, channel: &str, subscribers: &Subscribers, reason: ResyncReason) {
        let split = self.by_shard(|add| subscribers.for_each_recipient(None, add));
        let channel: Arc<str> = Arc::from(channel);
        for (shard, to) in self.shards.iter().zip(split) {
            if to.is_empty() {
                continue;
            }
            for _ in &to {
                self.metrics.resync(reason.as_str());
            }
            shard.send(Cmd::Resync {
                channel: Arc::clone(&channel),
                reason,
                to,
            });
        }
    }

    /// Current counts of sessions and channels.
    pub fn stats(&self) -> Stats {
        let registry = lock(&self.registry);
        Stats {
            sessions: registry.sessions,
            channels: registry.channels.len(),
        }
    }
}

/// A client's registration with the hub, and the way to its socket (through
/// its shard); unregisters itself when dropped.
pub struct Session {
    hub: Arc<Hub>,
    id: SessionId,
    shard: ShardHandle,
    /// Sorted: most sessions hold a topic or two, and a set's table would
    /// cost a quiet connection more than the topics themselves.
    topics: Vec<Topic>,
}

impl Session {
    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    /// Waits (at most `within`) until this node has reached `resume`: a
    /// client of another node, or of this one before it restarted, may
    /// resume from a WAL position this node's stream has not read yet. At
    /// once for a counted epoch (only the node that counted it has it).
    pub async fn reach(&self, resume: &Resume, within: Duration) {
        if !Epoch::names_wal(&resume.epoch) {
            return;
        }
        let mut progress = self.hub.progress.subscribe();
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        loop {
            {
                let registry = lock(&self.hub.registry);
                if *registry.epoch.name == *resume.epoch && registry.at >= resume.seq {
                    return;
                }
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return },
                () = &mut deadline => return,
            }
        }
    }

    /// Sends frames to the client, in order, after whatever was sent before.
    pub fn send(&self, frames: Vec<Frame>) {
        if !frames.is_empty() {
            self.shard.send(Cmd::Send {
                id: self.id,
                frames,
            });
        }
    }

    /// Closes the connection with `code` after what is already on its way;
    /// the close frame gets `wait` to be written.
    pub fn close(&self, code: u16, reason: &str, end: End, wait: Duration) {
        self.shard.send(Cmd::Close {
            id: self.id,
            code,
            reason: reason.to_owned(),
            end,
            wait,
        });
    }

    /// Adds topics and sends `first` (the acknowledgement): every signal
    /// published for them from then on follows it.
    pub fn subscribe(&mut self, topics: &[Topic], first: Vec<Frame>) {
        let hub = Arc::clone(&self.hub);
        let registry = &mut *lock(&hub.registry);
        self.add_topics(registry, topics);
        self.send(first);
    }

    /// Adds topics and, atomically with that, sends `first` followed by what
    /// the client missed on the new ones since `resume` — or, when that
    /// cannot be proven complete, a `resync` per channel. Returns whether it
    /// could resume.
    pub fn subscribe_resuming(
        &mut self,
        topics: &[Topic],
        resume: &Resume,
        first: Vec<Frame>,
    ) -> bool {
        let hub = Arc::clone(&self.hub);
        let registry = &mut *lock(&hub.registry);
        // Topics already held are live: replaying them would duplicate.
        let fresh: Vec<Topic> = topics.iter().filter(|t| !self.holds(t)).cloned().collect();
        let current = registry.at;
        let replay = (*resume.epoch == *registry.epoch.name)
            .then(|| registry.history.replay(resume.seq, current, &fresh))
            .flatten();
        self.add_topics(registry, topics);
        let resumed = replay.is_some();
        let mut frames = first;
        match replay {
            Some(replay) => frames.extend(replay),
            None => {
                // Cannot prove what was missed: the client must assume the worst.
                let channels: std::collections::BTreeSet<&str> =
                    topics.iter().map(|t| t.channel.as_str()).collect();
                for channel in channels {
                    let reason = ResyncReason::ResumeUnavailable;
                    hub.metrics.resync(reason.as_str());
                    frames.push(wire::resync_frame(channel, reason));
                }
            }
        }
        self.send(frames);
        resumed
    }

    fn add_topics(&mut self, registry: &mut Registry, topics: &[Topic]) {
        if self.topics.len() < 4 {
            // Exact while few: a session with one topic holds room for one.
            self.topics.reserve_exact(topics.len());
        }
        for topic in topics {
            match self.topics.binary_search(topic) {
                Ok(_) => continue,
                Err(at) => self.topics.insert(at, topic.clone()),
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

    /// Removes topics (those not held are ignored) and sends `then`: no
    /// signal for them follows it.
    pub fn unsubscribe(&mut self, topics: &[Topic], then: Vec<Frame>) {
        let hub = Arc::clone(&self.hub);
        let mut registry = lock(&hub.registry);
        for topic in topics {
            if let Ok(at) = self.topics.binary_search(topic) {
                self.topics.remove(at);
                self.hub.metrics.subscriptions.dec();
                remove_interest(&mut registry, self.id, topic);
            }
        }
        self.send(then);
    }

    /// The topics this session holds.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.clone()
    }

    fn holds(&self, topic: &Topic) -> bool {
        self.topics.binary_search(topic).is_ok()
    }

    /// How many topics this session holds.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Would subscribing to `topics` add this many new ones?
    pub fn new_topic_count(&self, topics: &[Topic]) -> usize {
        let distinct: HashSet<&Topic> = topics.iter().collect();
        distinct.into_iter().filter(|t| !self.holds(t)).count()
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
        registry.sessions -= 1;
        drop(registry);
        self.shard.send(Cmd::Remove { id: self.id });
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
    use tokio::sync::mpsc::UnboundedReceiver;

    pub(crate) fn topic(s: &str) -> Topic {
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

    pub(crate) fn signal(channel: &str, entity: Option<&str>) -> Signal {
        let payload = match entity {
            Some(e) => format!(r#"{{"entity_id":"{e}","txid":7}}"#),
            None => r#"{"txid":7}"#.to_owned(),
        };
        Signal {
            channel: channel.into(),
            event: "updated".into(),
            entity_id: entity.map(str::to_owned),
            payload: serde_json::value::RawValue::from_string(payload).unwrap(),
        }
    }

    pub(crate) fn config() -> HubConfig {
        HubConfig {
            mailbox_frames: 16,
            mailbox_bytes: 1024 * 1024,
            history_len: 10_000,
            history_age: Duration::from_secs(120),
            heartbeat: Duration::from_secs(30),
            max_lag: Duration::from_secs(30),
            shards: 0,
        }
    }

    /// A hub with two shards whose commands the test reads.
    struct Watched {
        hub: Arc<Hub>,
        inboxes: Vec<UnboundedReceiver<Cmd>>,
        /// Client ends of the connections, kept open.
        clients: Vec<stream::pipe::End>,
    }

    impl Watched {
        fn new() -> Watched {
            let (handles, inboxes): (Vec<_>, Vec<_>) =
                (0..2).map(|_| ShardHandle::for_test()).unzip();
            Watched {
                hub: Hub::with_shards(&config(), Arc::new(Metrics::new()), handles),
                inboxes,
                clients: Vec::new(),
            }
        }

        async fn connect(&mut self) -> Session {
            let (client, server) = stream::pipe::pair(4096);
            self.clients.push(client);
            let socket = Socket::new(stream::Stream::Pipe(server), self.hub.started());
            self.hub.connect(Arc::new(socket)).0
        }

        /// Every frame the shards were asked to write, per session, as JSON.
        fn frames(&mut self) -> HashMap<SessionId, Vec<serde_json::Value>> {
            let mut out: HashMap<SessionId, Vec<serde_json::Value>> = HashMap::new();
            let json = |f: &Frame| serde_json::from_slice(crate::wire::frame::payload(f)).unwrap();
            for inbox in &mut self.inboxes {
                while let Ok(cmd) = inbox.try_recv() {
                    match cmd {
                        Cmd::Publish { publish, to } => {
                            for id in to {
                                out.entry(id).or_default().push(json(&publish.frame));
                            }
                        }
                        Cmd::Resync {
                            channel,
                            reason,
                            to,
                        } => {
                            for id in to {
                                out.entry(id)
                                    .or_default()
                                    .push(json(&wire::resync_frame(&channel, reason)));
                            }
                        }
                        Cmd::Send { id, frames } => {
                            out.entry(id).or_default().extend(frames.iter().map(json));
                        }
                        _ => {}
                    }
                }
            }
            out
        }
    }

    #[tokio::test]
    async fn delivers_to_channel_and_entity_subscribers_once() {
        let mut w = Watched::new();
        let mut whole = w.connect().await;
        let mut one = w.connect().await;
        let mut both = w.connect().await;
        let mut other = w.connect().await;
        let mut two = w.connect().await;
        two.subscribe(&[topic("order:1"), topic("order:2")], Vec::new());
        whole.subscribe(&[topic("order")], Vec::new());
        one.subscribe(&[topic("order:1")], Vec::new());
        both.subscribe(&[topic("order"), topic("order:1")], Vec::new());
        other.subscribe(&[topic("contact")], Vec::new());

        w.hub.publish(&signal("order", Some("1")));
        w.hub.publish(&signal("order", Some("2")));
        w.hub.publish(&signal("order", None));

        let mut frames = w.frames();
        let mut ids = |s: &Session| -> Vec<Option<String>> {
            frames
                .remove(&s.id)
                .unwrap_or_default()
                .iter()
                .map(|f| f["payload"]["entity_id"].as_str().map(str::to_owned))
                .collect()
        };
        let all = vec![Some("1".into()), Some("2".into()), None];
        assert_eq!(ids(&whole), all);
        assert_eq!(ids(&both), all);
        assert_eq!(ids(&one), vec![Some("1".into()), None]);
        assert!(ids(&other).is_empty());
        assert_eq!(ids(&two), all);
    }

    #[tokio::test]
    async fn sessions_are_spread_over_the_shards() {
        let mut w = Watched::new();
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let mut s = w.connect().await;
            s.subscribe(&[topic("order")], Vec::new());
            sessions.push(s);
        }
        w.hub.publish(&signal("order", Some("1")));
        let per_shard: Vec<usize> = w
            .inboxes
            .iter_mut()
            .map(|inbox| {
                std::iter::from_fn(|| inbox.try_recv().ok())
                    .filter_map(|cmd| match cmd {
                        Cmd::Publish { to, .. } => Some(to.len()),
                        _ => None,
                    })
                    .sum()
            })
            .collect();
        assert_eq!(per_shard, vec![2, 2]);
    }

    #[tokio::test]
    async fn seq_increases_per_signal() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        s.subscribe(&[topic("order")], Vec::new());
        w.hub.publish(&signal("order", Some("1")));
        w.hub.publish(&signal("nobody", Some("1")));
        w.hub.publish(&signal("order", Some("1")));
        let seqs: Vec<u64> = w.frames()[&s.id]
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    fn wal_epoch() -> Epoch {
        Epoch::wal("7301", 1, "app", "pgbroadcast")
    }

    /// In a WAL epoch a signal's `seq` is its WAL position, as text; a
    /// client resumes from any of them, however far the position is from
    /// the last, but not from before where the epoch began.
    #[tokio::test]
    async fn wal_positions_are_the_seq_and_resume_from_them() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        s.subscribe(&[topic("order")], Vec::new());
        w.hub.enter_epoch(
            wal_epoch(),
            Position::after_commit(0x100),
            ResyncReason::ListenerReconnected,
        );
        // The old epoch's subscriber is told it may have missed something.
        assert_eq!(
            w.frames()[&s.id][0]["payload"]["reason"],
            "listener_reconnected"
        );
        let first = Position::wal(0x200, 0);
        w.hub.publish_at(&signal("order", Some("1")), Some(first));
        w.hub
            .publish_at(&signal("order", Some("2")), Some(Position::wal(0x200, 1)));
        w.hub.publish_at(
            &signal("order", Some("3")),
            Some(Position::wal(0x9_0000_0000, 0)),
        );
        let frames = w.frames().remove(&s.id).unwrap();
        assert_eq!(frames[0]["epoch"], "wal.7301.1.app.pgbroadcast");
        assert_eq!(frames[0]["seq"], "0000000000000200.0000000000000000");
        assert_eq!(frames[2]["seq"], "0000000900000000.0000000000000000");
        let entities = |frames: &[serde_json::Value]| -> Vec<String> {
            frames
                .iter()
                .filter_map(|f| f["payload"]["entity_id"].as_str().map(str::to_owned))
                .collect()
        };
        let resume = |seq: Position| Resume {
            epoch: wal_epoch().name.to_string(),
            seq,
        };
        let mut t = w.connect().await;
        assert!(t.subscribe_resuming(&[topic("order")], &resume(first), Vec::new()));
        assert_eq!(entities(&w.frames()[&t.id]), vec!["2", "3"]);
        // From where the epoch began: everything.
        let mut u = w.connect().await;
        let start = Position::after_commit(0x100);
        assert!(u.subscribe_resuming(&[topic("order")], &resume(start), Vec::new()));
        assert_eq!(entities(&w.frames()[&u.id]), vec!["1", "2", "3"]);
        // From before it (another transaction of the slot's first commit,
        // or older): not provable.
        let mut v = w.connect().await;
        let before = Position::wal(0x100, 3);
        assert!(!v.subscribe_resuming(&[topic("order")], &resume(before), Vec::new()));
        assert_eq!(
            w.frames()[&v.id][0]["payload"]["reason"],
            "resume_unavailable"
        );
    }

    /// When the stream goes on from a new slot, what committed between the
    /// last read and the slot's start was never read here: a resume from a
    /// position in that stretch (another node read it) gets `resync`, not
    /// the signals after the stretch alone.
    #[tokio::test]
    async fn no_resume_reaches_into_a_stretch_never_read() {
        let mut w = Watched::new();
        w.hub.enter_epoch(
            wal_epoch(),
            Position::after_commit(0x100),
            ResyncReason::ListenerReconnected,
        );
        w.hub
            .publish_at(&signal("order", Some("1")), Some(Position::wal(0x200, 0)));
        w.hub
            .resync_all_from(Position::after_commit(0x500), ResyncReason::SlotLost);
        w.hub
            .publish_at(&signal("order", Some("2")), Some(Position::wal(0x600, 0)));
        let resume = |seq: Position| Resume {
            epoch: wal_epoch().name.to_string(),
            seq,
        };
        for inside in [Position::wal(0x200, 0), Position::wal(0x300, 0)] {
            let mut s = w.connect().await;
            assert!(!s.subscribe_resuming(&[topic("order")], &resume(inside), Vec::new()));
        }
        // From the new slot's start on, all is there.
        let mut s = w.connect().await;
        let start = Position::after_commit(0x500);
        assert!(s.subscribe_resuming(&[topic("order")], &resume(start), Vec::new()));
        let frames = w.frames().remove(&s.id).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["payload"]["entity_id"], "2");
    }

    /// A resume from a WAL position this node has not read yet waits for
    /// its stream to get there; one it never reaches is answered (with a
    /// resync) once the wait is over. A counted epoch does not wait.
    #[tokio::test(start_paused = true)]
    async fn a_resume_from_ahead_waits_for_the_stream() {
        let mut w = Watched::new();
        w.hub.enter_epoch(
            wal_epoch(),
            Position::after_commit(0x100),
            ResyncReason::ListenerReconnected,
        );
        let s = w.connect().await;
        let ahead = Resume {
            epoch: wal_epoch().name.to_string(),
            seq: Position::wal(0x300, 0),
        };
        let hub = Arc::clone(&w.hub);
        let started = Instant::now();
        let reached = tokio::spawn(async move {
            s.reach(&ahead, Duration::from_secs(5)).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        hub.publish_at(&signal("order", None), Some(Position::wal(0x200, 0)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!reached.is_finished(), "not there yet");
        hub.publish_at(&signal("order", None), Some(Position::wal(0x300, 0)));
        let at = reached.await.unwrap();
        assert_eq!(at.duration_since(started), Duration::from_secs(2));

        // A keepalive's position counts as reached too: a quiet stream
        // does not keep a resume from another node's welcome waiting.
        let s = w.connect().await;
        let quiet = Resume {
            epoch: wal_epoch().name.to_string(),
            seq: Position::after_commit(0x400),
        };
        let hub = Arc::clone(&w.hub);
        let started = Instant::now();
        let reached = tokio::spawn(async move {
            s.reach(&quiet, Duration::from_secs(5)).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        hub.reached(Position::after_commit(0x400));
        assert_eq!(
            reached.await.unwrap().duration_since(started),
            Duration::from_secs(1)
        );

        let s = w.connect().await;
        let never = Resume {
            epoch: wal_epoch().name.to_string(),
            seq: Position::wal(0x900, 0),
        };
        let started = Instant::now();
        s.reach(&never, Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let counted = Resume {
            epoch: "0123456789abcdef".into(),
            seq: Position::counter(99),
        };
        let started = Instant::now();
        s.reach(&counted, Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A resume asked again (a client repeats what a `rate_limited` may
    /// have dropped) replays nothing for topics it already holds, only for
    /// those that are new.
    #[tokio::test]
    async fn a_repeated_resume_replays_only_new_topics() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        w.hub.publish(&signal("order", Some("1")));
        w.hub.publish(&signal("contact", Some("2")));
        let resume = Resume {
            epoch: w.hub.epoch().to_string(),
            seq: Position::counter(0),
        };
        assert!(s.subscribe_resuming(&[topic("order")], &resume, Vec::new()));
        assert_eq!(w.frames()[&s.id].len(), 1);
        assert!(s.subscribe_resuming(&[topic("order"), topic("contact")], &resume, Vec::new()));
        let again = &w.frames()[&s.id];
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0]["channel"], "contact");
    }

    #[tokio::test]
    async fn a_subscriptions_first_frames_come_before_its_signals() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        w.hub.publish(&signal("order", Some("1")));
        let ack =
            wire::json_frame(&serde_json::json!({"type": "subscribed", "channels": ["order"]}));
        let resume = Resume {
            epoch: w.hub.epoch().to_string(),
            seq: Position::counter(0),
        };
        assert!(s.subscribe_resuming(&[topic("order")], &resume, vec![ack]));
        w.hub.publish(&signal("order", Some("2")));
        let got: Vec<String> = w.frames()[&s.id]
            .iter()
            .map(|f| match f["type"].as_str() {
                Some(kind) => kind.to_owned(),
                None => f["payload"]["entity_id"].as_str().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(got, vec!["subscribed", "1", "2"]);
        // Another epoch cannot be resumed: a resync per channel instead.
        let elsewhere = Resume {
            epoch: "other".into(),
            seq: Position::counter(0),
        };
        assert!(!s.subscribe_resuming(&[topic("contact")], &elsewhere, Vec::new()));
        assert_eq!(
            w.frames()[&s.id][0]["payload"]["reason"],
            "resume_unavailable"
        );
    }

    #[tokio::test]
    async fn unsubscribe_and_drop_remove_interest() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        s.subscribe(&[topic("order"), topic("order:1")], Vec::new());
        s.unsubscribe(&[topic("order")], Vec::new());
        w.hub.publish(&signal("order", Some("2")));
        assert!(!w.frames().contains_key(&s.id));
        w.hub.publish(&signal("order", Some("1")));
        assert_eq!(w.frames()[&s.id].len(), 1);
        s.unsubscribe(&[topic("order:1")], Vec::new());
        assert_eq!(w.hub.stats().channels, 0);
        let id = s.id;
        drop(s);
        assert_eq!(
            w.hub.stats(),
            Stats {
                sessions: 0,
                channels: 0
            }
        );
        // Its shard is told to let the socket go.
        let removed = w
            .inboxes
            .iter_mut()
            .flat_map(|inbox| std::iter::from_fn(|| inbox.try_recv().ok()).collect::<Vec<_>>())
            .any(|cmd| matches!(cmd, Cmd::Remove { id: r } if r == id));
        assert!(removed);
    }

    #[tokio::test]
    async fn resync_all_reaches_every_subscribed_channel() {
        let mut w = Watched::new();
        let mut s = w.connect().await;
        s.subscribe(&[topic("order:1"), topic("contact")], Vec::new());
        w.hub.resync_all(ResyncReason::ListenerReconnected);
        let mut got: Vec<(String, String)> = w.frames()[&s.id]
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
