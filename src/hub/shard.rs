//! A shard of the fan-out: it owns the writing side of a share of the
//! connections and writes the hub's ready-made frames to their sockets
//! itself. There is no task per delivery: a shard takes every command that
//! is waiting (up to [`BATCH`]), queues each recipient's frames, then writes
//! each touched socket with one non-blocking `writev` — several frames in one
//! system call when signals come faster than the shard writes. Only a socket
//! whose kernel buffer is full keeps a queue (bounded in frames and bytes;
//! overflow owes a `resync`), drained when it becomes writable. One shard per
//! core, so one signal's fan-out runs on every core at once.
//!
//! A sweep every quarter heartbeat does what every connection needs now and
//! then: a ping and a text heartbeat each interval, dropping peers silent for
//! two, and letting go (1013) of those that stay behind for `max_lag` or stop
//! taking frames for a heartbeat interval.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::stream::Stream;
use super::{Frame, ResyncReason};
use crate::metrics::Metrics;
use crate::ws::frame::{self, close_code};
use crate::ws::protocol;

/// Most commands taken in one pass before the sockets are written.
pub const BATCH: usize = 256;

/// Most frames handed to one `writev`.
const IOV_MAX: usize = 64;

/// How long a goodbye (a close frame) may take to be written.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Why the server let a connection go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    PeerClosed,
    Shutdown,
    HeartbeatTimeout,
    /// The peer stopped reading: no frame was taken for a heartbeat interval.
    WriteTimeout,
    /// The peer read, but stayed behind for longer than `max_lag` (closed with 1013).
    TooSlow,
    /// No valid token in time, or it expired (closed with 4001).
    Unauthorized,
    /// The client broke the protocol (closed with 1002, 1007 or 1009).
    ProtocolError,
    SocketError(String),
}

/// A connection's socket and what its reader and its shard share.
#[derive(Debug)]
pub struct Socket {
    pub stream: Stream,
    /// When the peer last sent anything: milliseconds since the hub started.
    last_seen: AtomicU64,
    started: Instant,
    /// Cancelled once the shard has let go of the connection.
    gone: CancellationToken,
    end: Mutex<Option<End>>,
}

impl Socket {
    pub fn new(stream: impl Into<Stream>, started: Instant) -> Socket {
        let socket = Socket {
            stream: stream.into(),
            last_seen: AtomicU64::new(0),
            started,
            gone: CancellationToken::new(),
            end: Mutex::new(None),
        };
        socket.seen();
        socket
    }

    /// The peer sent something (it is alive).
    pub fn seen(&self) {
        self.last_seen
            .store(millis_since(self.started), Ordering::Relaxed);
    }

    fn silent_for(&self, now: Instant) -> Duration {
        let seen = self.started + Duration::from_millis(self.last_seen.load(Ordering::Relaxed));
        now.saturating_duration_since(seen)
    }

    /// Resolves once the shard has let go of the connection.
    pub async fn gone(&self) {
        self.gone.cancelled().await;
    }

    pub fn is_gone(&self) -> bool {
        self.gone.is_cancelled()
    }

    /// Why the shard let go, if it did.
    pub fn end(&self) -> Option<End> {
        lock(&self.end).clone()
    }

    fn let_go(&self, end: End) {
        let mut slot = lock(&self.end);
        if slot.is_none() {
            *slot = Some(end);
        }
        drop(slot);
        self.stream.shutdown();
        self.gone.cancel();
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One signal on its way to a shard's share of its recipients.
#[derive(Debug)]
pub struct Publish {
    pub frame: Frame,
    pub channel: Arc<str>,
    /// When the hub had it.
    pub at: Instant,
}

/// What a shard is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// A new connection.
    Add { id: u64, socket: Arc<Socket> },
    /// A signal for these connections.
    Publish { publish: Arc<Publish>, to: Vec<u64> },
    /// Signals may have been missed on `channel`: these connections are told.
    Resync {
        channel: Arc<str>,
        reason: ResyncReason,
        to: Vec<u64>,
    },
    /// Frames for one connection (answers, welcome, replays), in order.
    Send { id: u64, frames: Vec<Frame> },
    /// Write a close frame after what is queued, then let go.
    Close {
        id: u64,
        code: u16,
        reason: String,
        end: End,
        wait: Duration,
    },
    /// The reader is done: let go once anything being closed is written.
    Remove { id: u64 },
    /// A socket that was full can take more.
    Writable { id: u64 },
}

/// How a shard bounds its connections.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub mailbox_frames: usize,
    pub mailbox_bytes: usize,
    pub heartbeat: Duration,
    pub max_lag: Duration,
}

/// Where to send a shard its commands.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ShardHandle {
    pub fn send(&self, cmd: Cmd) {
        // A shard only stops when the hub is gone.
        let _ = self.tx.send(cmd);
    }

    /// A handle whose commands land in the returned receiver (hub tests).
    #[cfg(test)]
    pub fn for_test() -> (ShardHandle, mpsc::UnboundedReceiver<Cmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ShardHandle { tx }, rx)
    }
}

/// Starts a shard task; it runs until every handle is dropped.
pub fn spawn(config: ShardConfig, metrics: Arc<Metrics>) -> ShardHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let shard = Shard {
        inbox: rx,
        tx: tx.downgrade(),
        conns: HashMap::new(),
        touched: Vec::new(),
        oldest: None,
        config,
        metrics,
    };
    tokio::spawn(shard.run());
    ShardHandle { tx }
}

struct Shard {
    inbox: mpsc::UnboundedReceiver<Cmd>,
    /// For the tasks that wait for a full socket to drain.
    tx: mpsc::WeakUnboundedSender<Cmd>,
    conns: HashMap<u64, Conn>,
    /// Connections with frames to write in this pass.
    touched: Vec<u64>,
    /// The oldest signal of this pass: its lag is observed once written.
    oldest: Option<Instant>,
    config: ShardConfig,
    metrics: Arc<Metrics>,
}

/// A connection's writing side.
struct Conn {
    socket: Arc<Socket>,
    /// Frames not yet taken by the socket, each marked whether it is a
    /// signal or resync (what the delivery metric counts); the first is
    /// written from `offset`.
    queue: VecDeque<(Frame, bool)>,
    offset: usize,
    queued_bytes: usize,
    /// Channels owed a resync: their signals are skipped until it is written.
    owed: BTreeMap<Arc<str>, ResyncReason>,
    /// The current streak of overflows: (first, latest).
    overflows: Option<(Instant, Instant)>,
    /// When the socket last took bytes, or the queue started.
    progress_at: Instant,
    next_heartbeat: Instant,
    /// A task waits for the socket to become writable.
    waiting: bool,
    touched: bool,
    /// A close frame is queued: nothing more goes out, and it must be
    /// written by this deadline.
    closing: Option<(Instant, End)>,
    /// The reader is done.
    detached: bool,
}

impl Shard {
    async fn run(mut self) {
        let check_every = (self.config.heartbeat / 4)
            .min(self.config.max_lag / 4)
            .max(Duration::from_millis(25));
        let mut sweep = tokio::time::interval(check_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = sweep.tick() => self.sweep(),
                cmd = self.inbox.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.apply(cmd);
                    for _ in 1..BATCH {
                        match self.inbox.try_recv() {
                            Ok(cmd) => self.apply(cmd),
                            Err(_) => break,
                        }
                    }
                    self.write_touched();
                }
            }
        }
    }

    fn apply(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Add { id, socket } => {
                let now = Instant::now();
                self.conns.insert(
                    id,
                    Conn {
                        socket,
                        queue: VecDeque::new(),
                        offset: 0,
                        queued_bytes: 0,
                        owed: BTreeMap::new(),
                        overflows: None,
                        progress_at: now,
                        next_heartbeat: now + self.config.heartbeat,
                        waiting: false,
                        touched: false,
                        closing: None,
                        detached: false,
                    },
                );
            }
            Cmd::Publish { publish, to } => {
                self.oldest = Some(self.oldest.map_or(publish.at, |o| o.min(publish.at)));
                for id in to {
                    let Some(conn) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    conn.push_signal(&publish, &self.config, &self.metrics);
                    touch(&mut self.touched, id, conn);
                }
            }
            Cmd::Resync {
                channel,
                reason,
                to,
            } => {
                for id in to {
                    let Some(conn) = self.conns.get_mut(&id) else {
                        continue;
                    };
                    conn.push_resync(&channel, reason, &self.config);
                    touch(&mut self.touched, id, conn);
                }
            }
            Cmd::Send { id, frames } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    for frame in frames {
                        conn.push(frame);
                    }
                    touch(&mut self.touched, id, conn);
                }
            }
            Cmd::Close {
                id,
                code,
                reason,
                end,
                wait,
            } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.close(code, &reason, end, wait);
                    touch(&mut self.touched, id, conn);
                }
            }
            Cmd::Remove { id } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.detached = true;
                    if conn.closing.is_none() {
                        self.let_go(id, End::PeerClosed);
                    }
                }
            }
            Cmd::Writable { id } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.waiting = false;
                    touch(&mut self.touched, id, conn);
                }
            }
        }
    }

    /// Writes every connection that got frames in this pass.
    fn write_touched(&mut self) {
        let mut written = 0;
        for id in std::mem::take(&mut self.touched) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.touched = false;
            match conn.write() {
                Ok(Flushed { frames, done }) => {
                    written += frames;
                    if done {
                        let end = conn
                            .closing
                            .as_ref()
                            .map_or(End::PeerClosed, |(_, end)| end.clone());
                        self.let_go(id, end);
                    } else if !conn.queue.is_empty() && !conn.waiting {
                        conn.waiting = true;
                        self.wait_writable(id);
                    }
                }
                Err(err) => self.let_go(id, End::SocketError(err.to_string())),
            }
        }
        self.metrics.frames_delivered.inc_by(written as u64);
        if let Some(at) = self.oldest.take() {
            self.metrics
                .send_lag
                .observe(Instant::now().saturating_duration_since(at).as_secs_f64());
        }
    }

    /// Has a task tell the shard when a full socket can take more.
    fn wait_writable(&self, id: u64) {
        let (Some(conn), Some(tx)) = (self.conns.get(&id), self.tx.upgrade()) else {
            return;
        };
        let socket = Arc::clone(&conn.socket);
        tokio::spawn(async move {
            tokio::select! {
                () = socket.gone() => {}
                ready = socket.stream.writable() => {
                    let _ = ready;
                    let _ = tx.send(Cmd::Writable { id });
                }
            }
        });
    }

    fn let_go(&mut self, id: u64, end: End) {
        if let Some(conn) = self.conns.remove(&id) {
            conn.socket.let_go(end);
        }
    }

    /// Heartbeats, silent peers, peers that stay behind or stop reading,
    /// and closes that take too long.
    fn sweep(&mut self) {
        let now = Instant::now();
        let config = &self.config;
        let mut done = Vec::new();
        for (id, conn) in &mut self.conns {
            if let Some((deadline, end)) = &conn.closing {
                if now >= *deadline {
                    done.push((*id, end.clone()));
                }
                continue;
            }
            if conn.socket.silent_for(now) > 2 * config.heartbeat {
                conn.close(
                    close_code::AWAY,
                    "heartbeat timeout",
                    End::HeartbeatTimeout,
                    CLOSE_WAIT,
                );
            } else if conn.behind_for(now, config.max_lag) > config.max_lag {
                self.metrics.slow_consumer_disconnects.inc();
                let reason = format!(
                    "too slow: behind for over {}; reconnect and resync",
                    humantime::format_duration(config.max_lag)
                );
                // It is reading, slowly: a heartbeat interval to reach the close frame.
                conn.close(close_code::AGAIN, &reason, End::TooSlow, config.heartbeat);
            } else if !conn.queue.is_empty()
                && now.saturating_duration_since(conn.progress_at) >= config.heartbeat
            {
                // It will most likely never read this; it is said all the same.
                let reason = format!(
                    "too slow: not reading (a write made no progress for {})",
                    humantime::format_duration(config.heartbeat)
                );
                conn.close(close_code::AGAIN, &reason, End::WriteTimeout, CLOSE_WAIT);
            } else if now >= conn.next_heartbeat {
                conn.next_heartbeat = now + config.heartbeat;
                // Browsers never show pings to scripts: a text heartbeat lets a
                // client tell a quiet channel from a dead connection.
                conn.push(frame::ping(b""));
                conn.push(protocol::Control::Heartbeat.frame());
            } else {
                continue;
            }
            touch(&mut self.touched, *id, conn);
        }
        for (id, end) in done {
            self.let_go(id, end);
        }
        self.write_touched();
    }
}

fn touch(touched: &mut Vec<u64>, id: u64, conn: &mut Conn) {
    if !conn.touched {
        conn.touched = true;
        touched.push(id);
    }
}

/// What one write of a connection did.
struct Flushed {
    frames: usize,
    /// A close frame was written: the connection is done.
    done: bool,
}

impl Conn {
    /// Queues a frame that must go out (answers, heartbeats): not bounded by
    /// the queue limits, which are the client's own doing here.
    fn push(&mut self, frame: Frame) {
        if self.closing.is_some() {
            return;
        }
        self.enqueue(frame, false);
    }

    fn enqueue(&mut self, frame: Frame, signal: bool) {
        if self.queue.is_empty() {
            self.progress_at = Instant::now();
        }
        self.queued_bytes += frame.len();
        self.queue.push_back((frame, signal));
    }

    fn full(&self, frame: &Frame, config: &ShardConfig) -> bool {
        self.queue.len() >= config.mailbox_frames.max(1)
            || self.queued_bytes + frame.len() > config.mailbox_bytes
    }

    fn push_signal(&mut self, publish: &Publish, config: &ShardConfig, metrics: &Metrics) {
        if self.closing.is_some() {
            return;
        }
        if self.owed.contains_key(&publish.channel) {
            // Still behind: its resync has not even been written yet.
            metrics.slow_consumer_frames_dropped.inc();
            self.overflowed();
            return;
        }
        if self.full(&publish.frame, config) {
            self.owed
                .insert(Arc::clone(&publish.channel), ResyncReason::SlowConsumer);
            metrics.slow_consumer_frames_dropped.inc();
            metrics.resync(ResyncReason::SlowConsumer.as_str());
            self.overflowed();
            return;
        }
        self.enqueue(publish.frame.clone(), true);
    }

    fn push_resync(&mut self, channel: &Arc<str>, reason: ResyncReason, config: &ShardConfig) {
        if self.closing.is_some() || self.owed.contains_key(channel) {
            return;
        }
        let frame = protocol::resync_frame(channel, reason);
        if self.full(&frame, config) {
            self.owed.insert(Arc::clone(channel), reason);
            self.overflowed();
        } else {
            self.enqueue(frame, true);
        }
    }

    /// Extends (or starts) the current streak of overflows.
    fn overflowed(&mut self) {
        let now = Instant::now();
        self.overflows = Some(match self.overflows {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// How long this connection has been falling behind: the span of its
    /// current streak of overflows, each within `window` of the last.
    fn behind_for(&mut self, now: Instant, window: Duration) -> Duration {
        match self.overflows {
            Some((_, last)) if now.saturating_duration_since(last) > window => {
                self.overflows = None;
                Duration::ZERO
            }
            Some((first, last)) => last.saturating_duration_since(first),
            None => Duration::ZERO,
        }
    }

    /// Queues a close frame; nothing more goes out. Frames not yet begun are
    /// dropped: the client is leaving (it will resync or resume), and so the
    /// close frame is the next thing it reads after what the kernel holds.
    fn close(&mut self, code: u16, reason: &str, end: End, wait: Duration) {
        if self.closing.is_some() {
            return;
        }
        self.owed.clear();
        let keep = usize::from(self.offset > 0);
        for (dropped, _) in self.queue.drain(keep..) {
            self.queued_bytes -= dropped.len();
        }
        self.enqueue(frame::close(code, reason), false);
        self.closing = Some((Instant::now() + wait, end));
    }

    /// Writes what is queued until the socket is full or the queue empty;
    /// once the queue is empty, the resyncs owed follow.
    fn write(&mut self) -> std::io::Result<Flushed> {
        let mut frames = 0;
        loop {
            if self.queue.is_empty() {
                if self.closing.is_some() {
                    return Ok(Flushed { frames, done: true });
                }
                if self.owed.is_empty() || self.waiting {
                    return Ok(Flushed {
                        frames,
                        done: false,
                    });
                }
                // Queued frames were older than the overflows: now the resyncs.
                for (channel, reason) in std::mem::take(&mut self.owed) {
                    self.enqueue(protocol::resync_frame(&channel, reason), true);
                }
            }
            if self.waiting {
                return Ok(Flushed {
                    frames,
                    done: false,
                });
            }
            let slices: Vec<IoSlice<'_>> = self
                .queue
                .iter()
                .take(IOV_MAX)
                .enumerate()
                .map(|(i, (f, _))| IoSlice::new(if i == 0 { &f[self.offset..] } else { f }))
                .collect();
            match self.socket.stream.try_write_vectored(&slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    frames += self.advance(n);
                    self.progress_at = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Flushed {
                        frames,
                        done: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `n` bytes were written: drops the frames they finished; returns how
    /// many of those were signals or resyncs.
    fn advance(&mut self, mut n: usize) -> usize {
        let mut finished = 0;
        while n > 0 {
            let Some((front, signal)) = self.queue.front() else {
                break;
            };
            let left = front.len() - self.offset;
            if n < left {
                self.offset += n;
                break;
            }
            n -= left;
            self.queued_bytes -= front.len();
            finished += usize::from(*signal);
            self.offset = 0;
            self.queue.pop_front();
        }
        if self.queue.is_empty() && self.queue.capacity() > 16 {
            // A connection that caught up keeps no big buffer.
            self.queue = VecDeque::new();
        }
        finished
    }
}
