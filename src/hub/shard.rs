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

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, Sleep};

use super::stream::Stream;
use crate::metrics::Metrics;
use crate::wire::frame::{self, close_code};
use crate::wire::{self, Frame, ResyncReason};

/// Most commands taken in one pass before the sockets are written.
pub const BATCH: usize = 256;

/// Most frames handed to one `writev`.
const IOV_MAX: usize = 64;

/// How long a goodbye (a close frame) may take to be written.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Why the server let a connection go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client closed the connection.
    PeerClosed,
    /// The server is stopping.
    Shutdown,
    /// The peer sent nothing for two heartbeat intervals.
    HeartbeatTimeout,
    /// The peer stopped reading: no frame was taken for a heartbeat interval.
    WriteTimeout,
    /// The peer read, but stayed behind for longer than `max_lag` (closed with 1013).
    TooSlow,
    /// No valid token in time, or it expired (closed with 4001).
    Unauthorized,
    /// The client broke the protocol (closed with 1002, 1007 or 1009).
    ProtocolError,
    /// Reading or writing the socket failed; the text says how.
    SocketError(String),
}

/// A connection's socket and what its reader and its shard share.
#[derive(Debug)]
pub struct Socket {
    /// The connection, read by the session and written by the shard.
    pub stream: Stream,
    /// When the peer last sent anything: milliseconds since the hub started.
    last_seen: AtomicU64,
    started: Instant,
    /// Set once the shard has let go of the connection; `released` tells
    /// whoever waits for it.
    gone: AtomicBool,
    released: Notify,
    end: Mutex<Option<End>>,
}

impl Socket {
    /// A socket for `stream`; `started` is when the hub started, for `last_seen`.
    pub fn new(stream: impl Into<Stream>, started: Instant) -> Socket {
        let socket = Socket {
            stream: stream.into(),
            last_seen: AtomicU64::new(0),
            started,
            gone: AtomicBool::new(false),
            released: Notify::new(),
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

    /// Resolves once the shard has let go of the connection. (The reader
    /// needs no such wait: letting go shuts the socket down, which wakes it.)
    pub async fn gone(&self) {
        // Made before the flag is read: a release in between wakes it.
        let released = self.released.notified();
        if !self.is_gone() {
            released.await;
        }
    }

    /// Whether the shard has let go of the connection.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Why the shard let go, if it did.
    pub fn end(&self) -> Option<End> {
        lock(&self.end).clone()
    }

    /// Records why, marks the connection gone and shuts the socket down.
    fn let_go(&self, end: End) {
        let mut slot = lock(&self.end);
        if slot.is_none() {
            *slot = Some(end);
        }
        drop(slot);
        // Marked gone before the stream is shut down: the reader, woken by
        // that (its socket turns readable at the end of the stream), finds
        // the mark.
        self.gone.store(true, Ordering::Release);
        self.stream.shutdown();
        self.released.notify_waiters();
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
    /// The signal's frame, written as is to each recipient.
    pub frame: Frame,
    /// The channel it is on.
    pub channel: Arc<str>,
    /// When the hub had it.
    pub at: Instant,
}

/// What a shard is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// A new connection.
    Add {
        /// The hub's id for it.
        id: u64,
        /// Its socket.
        socket: Arc<Socket>,
    },
    /// A signal for these connections.
    Publish {
        /// The signal.
        publish: Arc<Publish>,
        /// The ids of the connections.
        to: Vec<u64>,
    },
    /// Signals may have been missed on `channel`: these connections are told.
    Resync {
        /// The channel.
        channel: Arc<str>,
        /// Why they may have missed signals.
        reason: ResyncReason,
        /// The ids of the connections.
        to: Vec<u64>,
    },
    /// Frames for one connection (answers, welcome, replays), in order.
    Send {
        /// The connection's id.
        id: u64,
        /// The frames, oldest first.
        frames: Vec<Frame>,
    },
    /// Write a close frame after what is queued, then let go.
    Close {
        /// The connection's id.
        id: u64,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
        /// What the reader is told.
        end: End,
        /// How long writing the close may take.
        wait: Duration,
    },
    /// The reader is done: let go once anything being closed is written.
    Remove {
        /// The connection's id.
        id: u64,
    },
    /// A socket that was full can take more.
    Writable {
        /// The connection's id.
        id: u64,
    },
    /// The server is stopping: every connection, and any added from now on,
    /// is closed with 1001 and let go within `wait`.
    Shutdown {
        /// How long writing the close frames may take.
        wait: Duration,
    },
    /// Every signal up to the position named in `heartbeat` has been handed
    /// to the shards (this command is sent after them): heartbeats carry it
    /// from now on, to connections that owe no resync.
    Mark {
        /// The heartbeat frame to send from now on.
        heartbeat: Frame,
    },
}

/// How a shard bounds its connections.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Most frames queued for one connection; past it, frames are dropped and a resync is owed.
    pub mailbox_frames: usize,
    /// Most bytes queued for one connection; past it, as for `mailbox_frames`.
    pub mailbox_bytes: usize,
    /// How often a ping and a heartbeat are sent.
    pub heartbeat: Duration,
    /// How long a connection may stay behind before it is let go.
    pub max_lag: Duration,
}

/// Where to send a shard its commands.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ShardHandle {
    /// Queues `cmd` for the shard.
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
        conns: FxHashMap::default(),
        pass: Pass::default(),
        config,
        metrics,
        shutdown: None,
        heartbeat_at: None,
        heartbeat_plain: wire::heartbeat_frame(None),
    };
    tokio::spawn(shard.run());
    ShardHandle { tx }
}

struct Shard {
    inbox: mpsc::UnboundedReceiver<Cmd>,
    /// For the tasks that wait for a full socket to drain.
    tx: mpsc::WeakUnboundedSender<Cmd>,
    conns: FxHashMap<u64, Conn>,
    pass: Pass,
    config: ShardConfig,
    metrics: Arc<Metrics>,
    /// The server is stopping: every connection goes by then.
    shutdown: Option<Instant>,
    /// The text heartbeat naming the latest [`Cmd::Mark`]'s position, and
    /// the plain one (for connections that owe a resync, or before a mark).
    heartbeat_at: Option<Frame>,
    heartbeat_plain: Frame,
}

/// The frames of one pass and which connection gets which, in order — as
/// uWebSockets keeps message indices per subscriber: a frame is not copied
/// or even reference-counted per recipient unless a socket cannot take it
/// at once and it has to wait in that connection's queue.
#[derive(Default)]
struct Pass {
    frames: Vec<(Frame, bool)>,
    /// Each connection's pending frames: a list through this arena.
    links: Vec<Link>,
    /// Connections with something to write in this pass.
    touched: Vec<u64>,
    /// The oldest signal of this pass: its lag is observed once written.
    oldest: Option<Instant>,
    /// This pass's heartbeat frames (ping, text with the position, plain
    /// text), added once for every connection due.
    heartbeat: Option<(u32, u32, u32)>,
}

#[derive(Clone, Copy)]
struct Link {
    frame: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

impl Pass {
    /// Adds a frame to the pass; returns its index.
    fn frame(&mut self, frame: Frame, signal: bool) -> u32 {
        self.frames.push((frame, signal));
        (self.frames.len() - 1) as u32
    }

    /// Appends frame `frame` to connection `id`'s pending frames.
    fn append(&mut self, id: u64, conn: &mut Conn, frame: u32) {
        let link = self.links.len() as u32;
        self.links.push(Link { frame, next: NONE });
        if conn.pending.0 == NONE {
            conn.pending.0 = link;
        } else {
            self.links[conn.pending.1 as usize].next = link;
        }
        conn.pending.1 = link;
        conn.pending_frames += 1;
        conn.pending_bytes += self.frames[frame as usize].0.len();
        self.touch(id, conn);
    }

    /// A signal that reached the hub at `at` goes out in this pass: the
    /// oldest one's lag is observed once the pass is written.
    fn signal_from(&mut self, at: Instant) {
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
    }

    /// Marks a connection to be written in this pass.
    fn touch(&mut self, id: u64, conn: &mut Conn) {
        if !conn.touched {
            conn.touched = true;
            self.touched.push(id);
        }
    }
}

/// A connection's writing side: what every connection needs, in one cache
/// line (a quiet connection costs its shard this much); what only one that
/// is behind or closing needs is in [`Behind`], allocated while it is.
struct Conn {
    socket: Arc<Socket>,
    /// This pass's frames for it, not yet written: (first, last) link.
    pending: (u32, u32),
    pending_frames: usize,
    pending_bytes: usize,
    /// When the socket last took bytes, or its queue started.
    progress_at: Instant,
    next_heartbeat: Instant,
    /// A task waits for the socket to become writable.
    waiting: bool,
    touched: bool,
    /// The reader is done.
    detached: bool,
    behind: Option<Box<Behind>>,
}

/// What a connection needs while the socket cannot take all it is sent, or
/// while it is being closed.
#[derive(Default)]
struct Behind {
    /// Frames the socket could not take yet, each marked whether it is a
    /// signal or resync (what the delivery metric counts); the first is
    /// written from `offset`.
    queue: VecDeque<(Frame, bool)>,
    offset: usize,
    queued_bytes: usize,
    /// Channels owed a resync: their signals are skipped until it is written.
    owed: BTreeMap<Arc<str>, ResyncReason>,
    /// The current streak of overflows: (first, latest).
    overflows: Option<(Instant, Instant)>,
    /// A close frame is on its way: nothing more goes out, and it must be
    /// written by this deadline.
    closing: Option<(Instant, End)>,
}

impl Behind {
    /// Nothing left to hold: the connection caught up.
    fn settled(&self) -> bool {
        self.queue.is_empty()
            && self.owed.is_empty()
            && self.overflows.is_none()
            && self.closing.is_none()
    }
}

impl Shard {
    async fn run(mut self) {
        let check_every = (self.config.heartbeat / 4)
            .min(self.config.max_lag / 4)
            .max(Duration::from_millis(25));
        let mut sweep = tokio::time::interval(check_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when the server stops: close frames not written by then are given up.
        let mut give_up: Option<Pin<Box<Sleep>>> = None;
        loop {
            if give_up.is_none()
                && let Some(deadline) = self.shutdown
            {
                give_up = Some(Box::pin(tokio::time::sleep_until(deadline)));
            }
            tokio::select! {
                biased;
                _ = sweep.tick() => self.sweep(),
                () = async { give_up.as_mut().expect("armed").await }, if give_up.is_some() => {
                    self.sweep();
                }
                cmd = self.inbox.recv() => {
                    let Some(cmd) = cmd else { return };
                    let now = Instant::now();
                    match cmd {
                        // A signal alone (the usual case below the top rates):
                        // written to each socket as its connection comes up.
                        Cmd::Publish { publish, to } if self.inbox.is_empty() => {
                            self.publish_now(&publish, to, now);
                        }
                        cmd => {
                            self.apply(cmd, now);
                            for _ in 1..BATCH {
                                match self.inbox.try_recv() {
                                    Ok(cmd) => self.apply(cmd, now),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    self.write_touched(now);
                }
            }
        }
    }

    fn apply(&mut self, cmd: Cmd, now: Instant) {
        let pass = &mut self.pass;
        match cmd {
            Cmd::Add { id, socket } => {
                let conn = self.conns.entry(id).insert_entry(Conn {
                    socket,
                    pending: (NONE, NONE),
                    pending_frames: 0,
                    pending_bytes: 0,
                    progress_at: now,
                    next_heartbeat: now + self.config.heartbeat,
                    waiting: false,
                    touched: false,
                    detached: false,
                    behind: None,
                });
                if let Some(deadline) = self.shutdown {
                    // Connected while the server stops.
                    conn.into_mut().shut_down(pass, id, deadline.max(now));
                }
            }
            Cmd::Publish { publish, to } => {
                pass.signal_from(publish.at);
                let frame = pass.frame(publish.frame.clone(), true);
                for id in to {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.push_signal(
                            pass,
                            id,
                            frame,
                            &publish,
                            &self.config,
                            &self.metrics,
                            now,
                        );
                    }
                }
            }
            Cmd::Resync {
                channel,
                reason,
                to,
            } => {
                let frame = pass.frame(wire::resync_frame(&channel, reason), true);
                for id in to {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.push_resync(pass, id, frame, &channel, reason, &self.config, now);
                    }
                }
            }
            Cmd::Send { id, frames } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    for frame in frames {
                        let frame = pass.frame(frame, false);
                        conn.push(pass, id, frame);
                    }
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
                    conn.close(pass, id, code, &reason, end, now + wait);
                }
            }
            Cmd::Remove { id } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.detached = true;
                    if conn.closing().is_none() {
                        self.let_go(id, End::PeerClosed);
                    }
                }
            }
            Cmd::Writable { id } => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.waiting = false;
                    pass.touch(id, conn);
                }
            }
            Cmd::Shutdown { wait } => {
                let deadline = *self.shutdown.get_or_insert(now + wait);
                for (&id, conn) in &mut self.conns {
                    conn.shut_down(pass, id, deadline);
                }
            }
            Cmd::Mark { heartbeat } => self.heartbeat_at = Some(heartbeat),
        }
    }

    /// One signal, written to each recipient whose socket is clear (nothing
    /// waiting before it) in one pass over them; the others get it the
    /// usual way, through the pass and [`Shard::write_touched`].
    fn publish_now(&mut self, publish: &Publish, to: Vec<u64>, now: Instant) {
        let pass = &mut self.pass;
        pass.signal_from(publish.at);
        let frame = &publish.frame;
        let mut index = None;
        let mut written = 0;
        for id in to {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.clear() {
                match conn.send(frame) {
                    Ok(n) if n == frame.len() => {
                        written += 1;
                        continue;
                    }
                    Ok(n) if n > 0 => {
                        // The rest waits in its queue.
                        conn.enqueue(frame.clone(), true, now);
                        conn.behind().offset = n;
                        pass.touch(id, conn);
                        continue;
                    }
                    // Full, or failing: the usual way finds out.
                    _ => {}
                }
            }
            let index = *index.get_or_insert_with(|| pass.frame(frame.clone(), true));
            conn.push_signal(pass, id, index, publish, &self.config, &self.metrics, now);
        }
        self.metrics.frames_delivered.inc_by(written);
    }

    /// Writes every connection that got frames in this pass.
    fn write_touched(&mut self, now: Instant) {
        let mut written = 0;
        let touched = std::mem::take(&mut self.pass.touched);
        for &id in &touched {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.touched = false;
            match conn.write(&self.pass, now) {
                Ok(Flushed { frames, done }) => {
                    written += frames;
                    if done {
                        let end = conn
                            .closing()
                            .map_or(End::PeerClosed, |(_, end)| end.clone());
                        self.let_go(id, end);
                    } else if conn.queued() && !conn.waiting {
                        conn.waiting = true;
                        self.wait_writable(id);
                    } else {
                        conn.settle();
                    }
                }
                Err(err) => self.let_go(id, End::SocketError(err.to_string())),
            }
        }
        let pass = &mut self.pass;
        pass.touched = touched;
        pass.touched.clear();
        pass.frames.clear();
        pass.links.clear();
        pass.heartbeat = None;
        self.metrics.frames_delivered.inc_by(written as u64);
        if let Some(at) = pass.oldest.take() {
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
        let pass = &mut self.pass;
        let mut done = Vec::new();
        for (&id, conn) in &mut self.conns {
            if let Some((deadline, end)) = conn.closing() {
                if now >= *deadline {
                    done.push((id, end.clone()));
                }
                continue;
            }
            if conn.socket.silent_for(now) > 2 * config.heartbeat {
                conn.close(
                    pass,
                    id,
                    close_code::AWAY,
                    "heartbeat timeout",
                    End::HeartbeatTimeout,
                    now + CLOSE_WAIT,
                );
            } else if conn.behind_for(now, config.max_lag) > config.max_lag {
                self.metrics.slow_consumer_disconnects.inc();
                let reason = format!(
                    "too slow: behind for over {}; reconnect and resync",
                    humantime::format_duration(config.max_lag)
                );
                // It is reading, slowly: a heartbeat interval to reach the close frame.
                conn.close(
                    pass,
                    id,
                    close_code::AGAIN,
                    &reason,
                    End::TooSlow,
                    now + config.heartbeat,
                );
            } else if conn.queued()
                && now.saturating_duration_since(conn.progress_at) >= config.heartbeat
            {
                // It will most likely never read this; it is said all the same.
                let reason = format!(
                    "too slow: not reading (a write made no progress for {})",
                    humantime::format_duration(config.heartbeat)
                );
                conn.close(
                    pass,
                    id,
                    close_code::AGAIN,
                    &reason,
                    End::WriteTimeout,
                    now + CLOSE_WAIT,
                );
            } else if now >= conn.next_heartbeat {
                conn.next_heartbeat = now + config.heartbeat;
                // Browsers never show pings to scripts: a text heartbeat lets a
                // client tell a quiet channel from a dead connection.
                let (ping, at, plain) = match pass.heartbeat {
                    Some(frames) => frames,
                    None => {
                        let plain = pass.frame(self.heartbeat_plain.clone(), false);
                        let at = match &self.heartbeat_at {
                            Some(at) => pass.frame(at.clone(), false),
                            None => plain,
                        };
                        let frames = (pass.frame(frame::ping(b""), false), at, plain);
                        pass.heartbeat = Some(frames);
                        frames
                    }
                };
                conn.push(pass, id, ping);
                // A connection owed a resync has missed signals before the
                // mark: naming it would let the client resume across them.
                conn.push(pass, id, if conn.owes_resync() { plain } else { at });
            }
        }
        for (id, end) in done {
            self.let_go(id, end);
        }
        self.write_touched(now);
    }
}

/// What one write of a connection did.
struct Flushed {
    /// Signals and resyncs written.
    frames: usize,
    /// A close frame was written: the connection is done.
    done: bool,
}

impl Conn {
    /// Queues a frame that must go out (answers, heartbeats): not bounded by
    /// the queue limits, which are the client's own doing here.
    fn push(&mut self, pass: &mut Pass, id: u64, frame: u32) {
        if self.closing().is_none() {
            pass.append(id, self, frame);
        }
    }

    /// Sends `frame` straight to the socket.
    fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        self.socket
            .stream
            .try_write_vectored(&[IoSlice::new(frame)])
    }

    /// Signals were skipped for it, and the resync saying so is not written yet.
    fn owes_resync(&self) -> bool {
        self.behind.as_ref().is_some_and(|b| !b.owed.is_empty())
    }

    /// Nothing waits to be written, and nothing keeps a signal from going out.
    fn clear(&self) -> bool {
        self.behind.is_none() && self.pending.0 == NONE && !self.waiting
    }

    fn full(&self, len: usize, config: &ShardConfig) -> bool {
        let (frames, bytes) = self
            .behind
            .as_ref()
            .map_or((0, 0), |b| (b.queue.len(), b.queued_bytes));
        frames + self.pending_frames >= config.mailbox_frames.max(1)
            || bytes + self.pending_bytes + len > config.mailbox_bytes
    }

    /// What this connection holds while it is behind.
    fn behind(&mut self) -> &mut Behind {
        self.behind.get_or_insert_with(Box::default)
    }

    /// Lets go of what being behind needed, if it caught up.
    fn settle(&mut self) {
        if self.behind.as_ref().is_some_and(|b| b.settled()) {
            self.behind = None;
        }
    }

    fn closing(&self) -> Option<&(Instant, End)> {
        self.behind.as_ref()?.closing.as_ref()
    }

    /// Frames wait in its queue.
    fn queued(&self) -> bool {
        self.behind.as_ref().is_some_and(|b| !b.queue.is_empty())
    }

    fn owes(&self, channel: &str) -> bool {
        self.behind
            .as_ref()
            .is_some_and(|b| b.owed.contains_key(channel))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_signal(
        &mut self,
        pass: &mut Pass,
        id: u64,
        frame: u32,
        publish: &Publish,
        config: &ShardConfig,
        metrics: &Metrics,
        now: Instant,
    ) {
        if self.closing().is_some() {
            return;
        }
        if self.owes(&publish.channel) {
            // Still behind: its resync has not even been written yet.
            metrics.slow_consumer_frames_dropped.inc();
            self.overflowed(now);
            return;
        }
        if self.full(publish.frame.len(), config) {
            self.behind()
                .owed
                .insert(Arc::clone(&publish.channel), ResyncReason::SlowConsumer);
            metrics.slow_consumer_frames_dropped.inc();
            metrics.resync(ResyncReason::SlowConsumer.as_str());
            self.overflowed(now);
            pass.touch(id, self);
            return;
        }
        pass.append(id, self, frame);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_resync(
        &mut self,
        pass: &mut Pass,
        id: u64,
        frame: u32,
        channel: &Arc<str>,
        reason: ResyncReason,
        config: &ShardConfig,
        now: Instant,
    ) {
        if self.closing().is_some() || self.owes(channel) {
            return;
        }
        if self.full(pass.frames[frame as usize].0.len(), config) {
            self.behind().owed.insert(Arc::clone(channel), reason);
            self.overflowed(now);
            pass.touch(id, self);
        } else {
            pass.append(id, self, frame);
        }
    }

    /// Extends (or starts) the current streak of overflows.
    fn overflowed(&mut self, now: Instant) {
        let behind = self.behind();
        behind.overflows = Some(match behind.overflows {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// How long this connection has been falling behind: the span of its
    /// current streak of overflows, each within `window` of the last.
    fn behind_for(&mut self, now: Instant, window: Duration) -> Duration {
        let Some(behind) = self.behind.as_mut() else {
            return Duration::ZERO;
        };
        match behind.overflows {
            Some((_, last)) if now.saturating_duration_since(last) > window => {
                behind.overflows = None;
                self.settle();
                Duration::ZERO
            }
            Some((first, last)) => last.saturating_duration_since(first),
            None => Duration::ZERO,
        }
    }

    /// Closes with 1001: the server is stopping.
    fn shut_down(&mut self, pass: &mut Pass, id: u64, deadline: Instant) {
        let reason = "server shutting down";
        self.close(pass, id, close_code::AWAY, reason, End::Shutdown, deadline);
    }

    /// Sends a close frame; nothing more goes out. Frames not yet begun are
    /// dropped: the client is leaving (it will resync or resume), and so the
    /// close frame is the next thing it reads after what the kernel holds.
    #[allow(clippy::too_many_arguments)]
    fn close(
        &mut self,
        pass: &mut Pass,
        id: u64,
        code: u16,
        reason: &str,
        end: End,
        deadline: Instant,
    ) {
        if self.closing().is_some() {
            return;
        }
        self.pending = (NONE, NONE);
        (self.pending_frames, self.pending_bytes) = (0, 0);
        let behind = self.behind();
        behind.owed.clear();
        let keep = usize::from(behind.offset > 0);
        for (dropped, _) in behind.queue.drain(keep..) {
            behind.queued_bytes -= dropped.len();
        }
        behind.closing = Some((deadline, end));
        let frame = pass.frame(frame::close(code, reason), false);
        pass.append(id, self, frame);
    }

    /// Writes what is queued, then this pass's frames, until the socket is
    /// full or all is written; then the resyncs owed. What the socket cannot
    /// take now waits in the queue.
    fn write(&mut self, pass: &Pass, now: Instant) -> std::io::Result<Flushed> {
        let mut frames = 0;
        loop {
            if self.waiting {
                self.queue_pending(pass);
                return Ok(Flushed {
                    frames,
                    done: false,
                });
            }
            let from_queue = self.queued();
            if !from_queue && self.pending.0 == NONE {
                if self.closing().is_some() {
                    return Ok(Flushed { frames, done: true });
                }
                let owed = match self.behind.as_mut() {
                    Some(behind) if !behind.owed.is_empty() => std::mem::take(&mut behind.owed),
                    _ => {
                        return Ok(Flushed {
                            frames,
                            done: false,
                        });
                    }
                };
                // Queued frames were older than the overflows: now the resyncs.
                for (channel, reason) in owed {
                    self.enqueue(wire::resync_frame(&channel, reason), true, now);
                }
                continue;
            }
            let written = {
                let mut slices = [IoSlice::new(&[]); IOV_MAX];
                let mut count = 0;
                if let Some(behind) = self.behind.as_ref().filter(|_| from_queue) {
                    for (frame, _) in behind.queue.iter().take(IOV_MAX) {
                        let start = if count == 0 { behind.offset } else { 0 };
                        slices[count] = IoSlice::new(&frame[start..]);
                        count += 1;
                    }
                } else {
                    let mut link = self.pending.0;
                    while link != NONE && count < IOV_MAX {
                        let Link { frame, next } = pass.links[link as usize];
                        slices[count] = IoSlice::new(&pass.frames[frame as usize].0);
                        count += 1;
                        link = next;
                    }
                }
                self.socket.stream.try_write_vectored(&slices[..count])
            };
            match written {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.progress_at = now;
                    frames += if from_queue {
                        self.advance_queue(n)
                    } else {
                        self.advance_pending(pass, n, now)
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.queue_pending(pass);
                    return Ok(Flushed {
                        frames,
                        done: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pending = (NONE, NONE);
                    return Err(e);
                }
            }
        }
    }

    fn enqueue(&mut self, frame: Frame, signal: bool, now: Instant) {
        if !self.queued() {
            self.progress_at = now;
        }
        let behind = self.behind();
        behind.queued_bytes += frame.len();
        behind.queue.push_back((frame, signal));
    }

    /// Moves this pass's unwritten frames into the queue (they outlive the pass).
    fn queue_pending(&mut self, pass: &Pass) {
        let mut link = self.pending.0;
        while link != NONE {
            let Link { frame, next } = pass.links[link as usize];
            let (bytes, signal) = &pass.frames[frame as usize];
            let behind = self.behind();
            behind.queued_bytes += bytes.len();
            behind.queue.push_back((bytes.clone(), *signal));
            link = next;
        }
        self.pending = (NONE, NONE);
        (self.pending_frames, self.pending_bytes) = (0, 0);
    }

    /// `n` bytes of this pass's frames were written: drops the frames they
    /// finished; a frame written in part goes to the queue with its offset.
    /// Returns how many signals or resyncs were finished.
    fn advance_pending(&mut self, pass: &Pass, mut n: usize, now: Instant) -> usize {
        let mut finished = 0;
        while n > 0 && self.pending.0 != NONE {
            let Link { frame, next } = pass.links[self.pending.0 as usize];
            let (bytes, signal) = &pass.frames[frame as usize];
            self.pending.0 = next;
            self.pending_frames -= 1;
            self.pending_bytes -= bytes.len();
            if n < bytes.len() {
                self.enqueue(bytes.clone(), *signal, now);
                self.behind().offset = n;
                break;
            }
            n -= bytes.len();
            finished += usize::from(*signal);
        }
        if self.pending.0 == NONE {
            self.pending.1 = NONE;
        }
        finished
    }

    /// `n` bytes of the queue were written: drops the frames they finished;
    /// returns how many of those were signals or resyncs.
    fn advance_queue(&mut self, mut n: usize) -> usize {
        let mut finished = 0;
        let behind = self.behind();
        while n > 0 {
            let Some((front, signal)) = behind.queue.front() else {
                break;
            };
            let left = front.len() - behind.offset;
            if n < left {
                behind.offset += n;
                break;
            }
            n -= left;
            behind.queued_bytes -= front.len();
            finished += usize::from(*signal);
            behind.offset = 0;
            behind.queue.pop_front();
        }
        if behind.queue.is_empty() && behind.queue.capacity() > 16 {
            // A connection that caught up keeps no big buffer.
            behind.queue = VecDeque::new();
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::stream::pipe;
    use crate::hub::tests::{config, signal, topic};
    use crate::hub::{Hub, Session};
    use std::sync::atomic::Ordering::Relaxed;

    /// Connections straight to the hub (no reader): what the shard writes.
    fn connect(hub: &Arc<Hub>, capacity: usize) -> (Session, Arc<Socket>, pipe::End) {
        let (client, server) = pipe::pair(capacity);
        let socket = Arc::new(Socket::new(Stream::Pipe(server), hub.started()));
        (hub.connect(Arc::clone(&socket)).0, socket, client)
    }

    /// Reads `n` text frames' payloads from `client`.
    async fn read_frames(client: &pipe::End, n: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let head = client.read_exact(2).await.expect("a frame");
            let len = match head[1] {
                126 => {
                    let b = client.read_exact(2).await.unwrap();
                    usize::from(u16::from_be_bytes([b[0], b[1]]))
                }
                n => usize::from(n),
            };
            let payload = client.read_exact(len).await.unwrap();
            out.push(serde_json::from_slice(&payload).unwrap());
        }
        out
    }

    fn ids(frames: &[serde_json::Value]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f["payload"]["entity_id"].as_str() {
                Some(id) => id.to_owned(),
                None => format!(
                    "{}:{}",
                    f["event"].as_str().unwrap(),
                    f["payload"]["reason"].as_str().unwrap()
                ),
            })
            .collect()
    }

    #[tokio::test]
    async fn signals_that_wait_together_go_out_in_one_write_per_socket() {
        let hub = Hub::new(config(), Arc::new(Metrics::new()));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (mut session, socket, client) = connect(&hub, 1 << 20);
            session.subscribe(&[topic("order")], Vec::new());
            clients.push((session, socket, client));
        }
        // Published back to back: the shards take them in one pass.
        for i in 0..10 {
            hub.publish(&signal("order", Some(&i.to_string())));
        }
        let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        for (_, _, client) in &clients {
            assert_eq!(ids(&read_frames(client, 10).await), expected);
            assert_eq!(client.writes.load(Relaxed), 0, "the client wrote nothing");
        }
        for (_, socket, _) in &clients {
            let Stream::Pipe(server) = &socket.stream else {
                unreachable!()
            };
            assert_eq!(server.writes.load(Relaxed), 1, "one writev for ten frames");
        }
        assert_eq!(hub.metrics().frames_delivered.get(), 40);
    }

    #[tokio::test]
    async fn a_lone_signal_is_written_at_once_to_every_clear_socket() {
        let hub = Hub::new(config(), Arc::new(Metrics::new()));
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (mut session, socket, client) = connect(&hub, 1 << 20);
            session.subscribe(&[topic("order")], Vec::new());
            clients.push((session, socket, client));
        }
        for i in 0..3 {
            hub.publish(&signal("order", Some(&i.to_string())));
            // Each signal reaches every client before the next is published.
            for (_, _, client) in &clients {
                assert_eq!(ids(&read_frames(client, 1).await), vec![i.to_string()]);
            }
        }
        for (_, socket, _) in &clients {
            let Stream::Pipe(server) = &socket.stream else {
                unreachable!()
            };
            assert_eq!(server.writes.load(Relaxed), 3, "one write per signal");
        }
        assert_eq!(hub.metrics().frames_delivered.get(), 9);
    }

    #[tokio::test]
    async fn a_socket_that_takes_a_little_at_a_time_gets_every_frame_whole_and_in_order() {
        let hub = Hub::new(config(), Arc::new(Metrics::new()));
        // Room for less than one frame at a time.
        let (mut session, _socket, client) = connect(&hub, 50);
        session.subscribe(&[topic("order")], Vec::new());
        let mut expected = Vec::new();
        for i in 0..12 {
            hub.publish(&signal("order", Some(&i.to_string())));
            expected.push(i.to_string());
            if i % 5 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(ids(&read_frames(&client, 12).await), expected);
    }

    #[tokio::test]
    async fn overflow_owes_one_resync_that_later_signals_of_its_channel_do_not_overtake() {
        let mut config = config();
        config.mailbox_frames = 3;
        let hub = Hub::new(config, Arc::new(Metrics::new()));
        // The socket takes one byte until the client reads: frames queue up.
        let (mut session, _socket, client) = connect(&hub, 1);
        session.subscribe(&[topic("order"), topic("contact")], Vec::new());
        for i in 0..2 {
            hub.publish(&signal("order", Some(&i.to_string())));
        }
        tokio::task::yield_now().await;
        // Two frames wait; a third fits, then the queue is full.
        for i in 2..6 {
            hub.publish(&signal("order", Some(&i.to_string())));
        }
        tokio::task::yield_now().await;
        let dropped = hub.metrics().slow_consumer_frames_dropped.get();
        assert_eq!(
            dropped, 3,
            "o3 overflowed, o4 and o5 waited behind its resync"
        );
        // The client reads: what was queued, then the resync; nothing of
        // `order` from after the overflow comes before it.
        let got = ids(&read_frames(&client, 4).await);
        assert_eq!(got, vec!["0", "1", "2", "resync:slow_consumer"]);
        // Paid: signals flow again.
        hub.publish(&signal("order", Some("9")));
        assert_eq!(ids(&read_frames(&client, 1).await), vec!["9"]);
    }
}
