//! One WebSocket connection's reading side: a small task that waits for the
//! socket to be readable, parses what the client sent ([`frame::Reader`]),
//! and answers it — subscribe, unsubscribe, authenticate — while the hub's
//! shard writes to the same socket (signals, answers, heartbeats). While the
//! client is quiet the task holds no buffer, and with authentication off no
//! timer either; heartbeats and slow readers are the shard's business.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::auth::{Identity, Security};
use crate::config::Limits;
use crate::hub::shard::{CLOSE_WAIT, Socket};
use crate::hub::stream::Stream;
use crate::hub::{Session, Start};
use crate::wire::frame::{self, Incoming, close_code};
use crate::wire::{Frame, Topic};
use crate::ws::access::{Access, CLOSE_UNAUTHORIZED};
use crate::ws::protocol::{self, Control, ErrorCode, Request};

pub use crate::hub::shard::End;

/// Most bytes read from a socket before the task lets others run.
const READ_BUDGET: usize = 16 * 1024;

/// How long a resume from a WAL position this node has not read yet waits
/// for its stream to get there (a node that just started re-reads its
/// window; another node may be a little behind) before it is answered with
/// `resync`.
pub const RESUME_WAIT: Duration = Duration::from_secs(5);

/// Runs the connection until the peer leaves, the socket fails or the shard
/// lets it go (as it does for every connection when the server stops, see
/// [`crate::hub::Hub::shutdown`]). `early`: bytes the client sent right
/// after its handshake.
///
/// The welcome, the checks of `early` and the timers are set up before the
/// returned future first runs; the future keeps only what a waiting
/// connection needs (a quiet socket costs its memory, so this is kept small).
pub fn run(
    socket: Arc<Socket>,
    (session, start): (Session, Start),
    early: Bytes,
    limits: Arc<Limits>,
    security: Arc<Security>,
    identity: Option<Identity>,
) -> impl Future<Output = End> + Send + 'static {
    let access = Access::new(security, identity);
    session.send(vec![
        Control::Welcome {
            protocol: protocol::VERSION,
            auth: if access.required() {
                "required"
            } else {
                "none"
            },
            epoch: &start.epoch,
            seq: start.seq,
            limits: (&*limits).into(),
        }
        .frame(),
    ]);
    let mut reader = frame::Reader::new(limits.hard_message_limit());
    let mut timers = Timers::default();
    if access.required() {
        if !access.authenticated() {
            timers.set().auth_deadline = Some(sleep(access.auth_timeout()));
        }
        timers.set().recheck = Some(sleep(access.recheck_every()));
        timers.set_expiry(&access);
    }
    let mut incoming = Vec::new();
    let read = match reader.feed(&early, &mut incoming) {
        Ok(()) => Read::Open,
        Err(violation) => Read::Broken(Box::new(violation)),
    };
    drop(early);
    let mut connection = Connection {
        socket,
        session,
        rate: RateLimit::new(limits.max_messages_per_second),
        limits,
        access,
        reader,
        timers,
        incoming,
        read,
    };
    // The block's captures are the connection's state, used in place (an
    // `async fn` would hold its arguments twice, and a method a pointer to
    // them).
    async move {
        loop {
            // What the last read found, and the messages it brought.
            if let Some(end) = connection.after_read().await {
                return end;
            }
            // A peer that always has more to read must not keep this task from
            // yielding: timers (its deadlines) advance only when it does.
            tokio::task::coop::consume_budget().await;
            // One wait polled by hand: a future per source, as `select!`
            // builds, would make every quiet connection hold them all.
            let event = std::future::poll_fn(|cx| connection.poll_event(cx)).await;
            if let Some(end) = connection.on_event(event).await {
                return end;
            }
        }
    }
}

/// A connection's reading side between reads.
struct Connection {
    socket: Arc<Socket>,
    session: Session,
    limits: Arc<Limits>,
    access: Access,
    reader: frame::Reader,
    rate: RateLimit,
    timers: Timers,
    incoming: Vec<Incoming>,
    /// What the last read found, acted on at the top of the loop.
    read: Read,
}

impl Connection {
    /// Acts on what the last read found.
    fn after_read(&mut self) -> Work<'_> {
        match std::mem::replace(&mut self.read, Read::Open) {
            Read::Open => {}
            // The shard shut the stream down: it says why.
            Read::Closed | Read::Failed(_) if self.socket.is_gone() => return done(self.gone()),
            Read::Closed => return done(End::PeerClosed),
            Read::Failed(e) => return done(End::SocketError(e.to_string())),
            Read::Broken(violation) => {
                // A broken frame or message: say which rule it broke (RFC 6455 §7.4.1).
                return self.goodbye(violation.code, &violation.reason, End::ProtocolError);
            }
        }
        if self.incoming.is_empty() {
            return nothing();
        }
        // Taken, not drained: a quiet connection keeps no buffer.
        let messages = std::mem::take(&mut self.incoming);
        Box::pin(async move {
            for message in messages {
                let answer = on_message(
                    message,
                    &mut self.session,
                    &self.limits,
                    &mut self.access,
                    &mut self.rate,
                    &mut self.timers,
                );
                if let Some(end) = answer.await {
                    return Some(end);
                }
            }
            None
        })
    }

    fn on_event(&mut self, event: Event) -> Work<'_> {
        match event {
            Event::Readable(ready) => {
                self.read = match ready {
                    Ok(()) => read_some(&self.socket.stream, &mut self.reader, &mut self.incoming),
                    Err(e) => Read::Failed(e),
                };
                self.socket.seen();
            }
            Event::Gone => return done(self.gone()),
            Event::ExpiryNotice => {
                self.access.expiry_notified = true;
                let expires_at = self.access.identity().map_or(0, |id| id.expires_at);
                self.session
                    .send(vec![Control::AuthExpiring { expires_at }.frame()]);
            }
            Event::RateNotice => {
                let count = self.rate.take_dropped();
                self.session.send(vec![
                    Control::Error {
                        code: ErrorCode::RateLimited,
                        message: &format!(
                            "over {} messages per second: {count} message(s) dropped, not applied",
                            self.limits.max_messages_per_second
                        ),
                        topics: Vec::new(),
                        dropped: Some(count),
                    }
                    .frame(),
                ]);
            }
            Event::AuthDeadline => {
                let reason = format!(
                    r#"unauthorized: no {{"auth": "<jwt>"}} within {:?}"#,
                    self.access.auth_timeout()
                );
                return self.goodbye(CLOSE_UNAUTHORIZED, &reason, End::Unauthorized);
            }
            Event::Expired => {
                let reason = "unauthorized: the token expired";
                return self.goodbye(CLOSE_UNAUTHORIZED, reason, End::Unauthorized);
            }
            Event::Recheck => {
                self.timers.set().recheck = Some(sleep(self.access.recheck_every()));
                return Box::pin(async move {
                    revoke_denied(&mut self.session, &mut self.access, false).await;
                    None
                });
            }
        }
        nothing()
    }

    /// Why the shard let go.
    fn gone(&self) -> End {
        self.socket.end().unwrap_or(End::PeerClosed)
    }

    /// What ends the wait, in this order: the shard letting go, the
    /// deadlines (a busy peer must not outlive its token), then the socket
    /// having something to read. The shard's letting go needs no waker of
    /// its own: it shuts the stream down, which makes it readable.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.socket.is_gone() {
            return Poll::Ready(Event::Gone);
        }
        if let Some(timers) = self.timers.armed() {
            if fired(&mut timers.auth_deadline, cx) {
                return Poll::Ready(Event::AuthDeadline);
            }
            if fired(&mut timers.expiry, cx) {
                return Poll::Ready(Event::Expired);
            }
            if fired(&mut timers.expiry_notice, cx) {
                timers.expiry_notice = None;
                return Poll::Ready(Event::ExpiryNotice);
            }
            if fired(&mut timers.recheck, cx) {
                return Poll::Ready(Event::Recheck);
            }
            if fired(&mut timers.rate_notice, cx) {
                timers.rate_notice = None;
                return Poll::Ready(Event::RateNotice);
            }
        }
        match self.socket.stream.poll_read_ready(cx) {
            // Marked before the stream is shut down: a wake by the shutdown finds it.
            Poll::Ready(_) if self.socket.is_gone() => Poll::Ready(Event::Gone),
            ready => ready.map(Event::Readable),
        }
    }

    /// Closes with `code`, waits (bounded) until the close frame is written,
    /// and ends with `end`.
    fn goodbye(&self, code: u16, reason: &str, end: End) -> Work<'_> {
        self.session.close(code, reason, end.clone(), CLOSE_WAIT);
        Box::pin(async move {
            let _ = tokio::time::timeout(CLOSE_WAIT, self.socket.gone()).await;
            Some(end)
        })
    }
}

/// What a connection does beside waiting — answer messages, re-check its
/// topics, say goodbye — resolving to `Some` when the connection ends. Boxed:
/// a waiting connection holds only the loop around it, not the larger
/// futures of its rarer work.
type Work<'a> = Pin<Box<dyn Future<Output = Option<End>> + Send + 'a>>;

/// The connection ends now.
fn done(end: End) -> Work<'static> {
    Box::pin(std::future::ready(Some(end)))
}

/// No work: the usual case, and free (a box of nothing allocates nothing).
fn nothing() -> Work<'static> {
    Box::pin(Nothing)
}

struct Nothing;

impl Future for Nothing {
    type Output = Option<End>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<End>> {
        Poll::Ready(None)
    }
}

/// What ended a wait in the loop of [`run`].
enum Event {
    Gone,
    AuthDeadline,
    Expired,
    ExpiryNotice,
    Recheck,
    RateNotice,
    Readable(std::io::Result<()>),
}

/// What reading the socket found.
enum Read {
    Open,
    /// The peer closed the TCP connection.
    Closed,
    Failed(std::io::Error),
    /// The client broke the protocol.
    Broken(Box<frame::Violation>),
}

/// Reads what the socket has (up to [`READ_BUDGET`]) into `out`. The buffer
/// lives only during the call: an idle connection holds none.
fn read_some(stream: &Stream, reader: &mut frame::Reader, out: &mut Vec<Incoming>) -> Read {
    let mut buf = [0u8; 8192];
    let mut taken = 0;
    while taken < READ_BUDGET {
        match stream.try_read(&mut buf) {
            Ok(0) => return Read::Closed,
            Ok(n) => {
                taken += n;
                if let Err(violation) = reader.feed(&buf[..n], out) {
                    return Read::Broken(Box::new(violation));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Read::Open,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Read::Failed(e),
        }
    }
    Read::Open
}

/// The connection's timers: none at all (not even their slots) unless
/// authentication is on or a rate notice is due, so an idle connection
/// usually holds none.
#[derive(Default)]
struct Timers(Option<Box<Slots>>);

#[derive(Default)]
struct Slots {
    auth_deadline: Option<Pin<Box<Sleep>>>,
    expiry: Option<Pin<Box<Sleep>>>,
    expiry_notice: Option<Pin<Box<Sleep>>>,
    recheck: Option<Pin<Box<Sleep>>>,
    rate_notice: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    /// The slots, to arm a timer.
    fn set(&mut self) -> &mut Slots {
        self.0.get_or_insert_with(Default::default)
    }

    /// The slots, if a timer was ever armed.
    fn armed(&mut self) -> Option<&mut Slots> {
        self.0.as_deref_mut()
    }

    /// Arms the expiry and its notice for the current token.
    fn set_expiry(&mut self, access: &Access) {
        if access.identity().is_some() {
            let slots = self.set();
            slots.expiry = Some(Box::pin(tokio::time::sleep_until(access.expires())));
            slots.expiry_notice = (!access.expiry_notified)
                .then(|| Box::pin(tokio::time::sleep_until(access.notice_at())));
        }
    }
}

fn sleep(duration: Duration) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep(duration))
}

/// Whether `timer` has fired (never, if there is none); when it has not, `cx`
/// is woken when it does.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

/// Answers one message from the client; `Some` when the connection ends.
async fn on_message(
    message: Incoming,
    session: &mut Session,
    limits: &Limits,
    access: &mut Access,
    rate: &mut RateLimit,
    timers: &mut Timers,
) -> Option<End> {
    match message {
        Incoming::Text(text) if rate.admit(limits.max_messages_per_second) => {
            match protocol::parse(&text, limits) {
                Ok(Request::Auth(token)) => match access.accept(&token).await {
                    Ok(expires_at) => {
                        if let Some(slots) = timers.armed() {
                            slots.auth_deadline = None;
                        }
                        timers.set_expiry(access);
                        session.send(vec![Control::Authenticated { expires_at }.frame()]);
                        // New claims: the topics held must be allowed for them too,
                        // and if that cannot be checked, they are not kept.
                        revoke_denied(session, access, true).await;
                    }
                    Err(err) if !access.authenticated() => {
                        let reason = format!("unauthorized: {err}");
                        session.close(CLOSE_UNAUTHORIZED, &reason, End::Unauthorized, CLOSE_WAIT);
                        return Some(End::Unauthorized);
                    }
                    // A failed refresh: the current token holds until it expires.
                    Err(err) => {
                        session.send(vec![error(ErrorCode::Unauthorized, &err.to_string())])
                    }
                },
                Ok(_) if !access.authenticated() => session.send(vec![error(
                    ErrorCode::AuthRequired,
                    r#"authenticate first: send {"auth": "<jwt>"}"#,
                )]),
                Ok(request) => handle(request, session, limits, access).await,
                Err(rejection) => session.send(vec![error(rejection.code, &rejection.message)]),
            }
        }
        Incoming::Binary if rate.admit(limits.max_messages_per_second) => {
            session.send(vec![error(
                ErrorCode::BinaryNotSupported,
                "binary frames are not part of the protocol; send JSON text",
            )])
        }
        Incoming::Text(_) | Incoming::Binary => {
            session.metrics().messages_rate_limited.inc();
            if let Some(at) = rate.drop_one() {
                timers.set().rate_notice = Some(Box::pin(tokio::time::sleep_until(at)));
            }
        }
        // Pings and pongs use up the message rate too, so a ping flood leaves
        // no room for requests; pings within the rate are answered (RFC
        // 6455 §5.5.2), a flood of them is not.
        Incoming::Ping(payload) => {
            if rate.admit(limits.max_messages_per_second) {
                session.send(vec![frame::pong(&payload)]);
            }
        }
        Incoming::Pong => {
            rate.admit(limits.max_messages_per_second);
        }
        Incoming::Close(close) => {
            // The closing handshake: the same code back (RFC 6455 §5.5.1).
            let code = close.map_or(close_code::NORMAL, |(code, _)| code);
            session.close(code, "", End::PeerClosed, CLOSE_WAIT);
            return Some(End::PeerClosed);
        }
    }
    None
}

/// Answers a subscribe or unsubscribe: an ack (and replayed or resync
/// frames), `error` frames for what is refused.
async fn handle(request: Request, session: &mut Session, limits: &Limits, access: &mut Access) {
    match request {
        Request::Auth(_) => {}
        Request::Subscribe { topics, resume } => {
            let total = session.topic_count() + session.new_topic_count(&topics);
            if total > limits.max_subscriptions {
                return session.send(vec![error(
                    ErrorCode::SubscriptionLimit,
                    &format!(
                        "this would hold {total} subscriptions; the limit per connection is {}",
                        limits.max_subscriptions
                    ),
                )]);
            }
            let (topics, denied) = match access.authorize(&topics).await {
                Ok(split) => split,
                Err(err) => {
                    tracing::warn!(error = %crate::logging::error(&err), "authorization query failed");
                    return session.send(vec![error(
                        ErrorCode::AuthorizationUnavailable,
                        "authorization could not be checked; nothing was subscribed, try again",
                    )]);
                }
            };
            if !denied.is_empty() {
                session.send(vec![
                    Control::Error {
                        code: ErrorCode::Forbidden,
                        message: "not allowed for this token",
                        topics: denied.iter().map(ToString::to_string).collect(),
                        dropped: None,
                    }
                    .frame(),
                ]);
            }
            if topics.is_empty() {
                return;
            }
            let ack = Control::Subscribed {
                channels: topics.iter().map(ToString::to_string).collect(),
            }
            .frame();
            match resume {
                None => session.subscribe(&topics, vec![ack]),
                // Everything missed since `resume` (or a resync per channel),
                // before any live frame.
                Some(resume) => {
                    session.reach(&resume, RESUME_WAIT).await;
                    session.subscribe_resuming(&topics, &resume, vec![ack]);
                }
            }
        }
        Request::Unsubscribe(topics) => {
            let ack = unsubscribed(&topics, None);
            session.unsubscribe(&topics, vec![ack]);
        }
    }
}

/// Drops the held topics the current claims may no longer see, and says so.
/// When the database cannot be asked: with `fail_closed` (the claims just
/// changed) every held topic is dropped; otherwise (a periodic check of claims
/// that were allowed) they are kept until the next check gets through.
async fn revoke_denied(session: &mut Session, access: &mut Access, fail_closed: bool) {
    if !access.required() || session.topic_count() == 0 {
        return;
    }
    match access.recheck(&session.topics()).await {
        Ok(denied) if denied.is_empty() => {}
        Ok(denied) => {
            let notice = unsubscribed(&denied, Some("revoked"));
            session.unsubscribe(&denied, vec![notice]);
        }
        Err(err) if fail_closed => {
            tracing::warn!(error = %crate::logging::error(&err), "authorization for new claims could not be checked; dropping held topics");
            let held = session.topics();
            let notice = unsubscribed(&held, Some("authorization_unavailable"));
            session.unsubscribe(&held, vec![notice]);
        }
        Err(err) => {
            tracing::warn!(error = %crate::logging::error(&err), "re-checking authorization failed; keeping topics until the next check");
        }
    }
}

/// Inbound messages per second: a token bucket holding one second's worth
/// (the rate is the connection's limit, not kept here).
struct RateLimit {
    tokens: f32,
    last: Instant,
    /// Messages dropped since the last notice.
    dropped: u32,
    last_notice: Option<Instant>,
}

/// How long after the first dropped message the client is told: long enough
/// for a burst to be counted in one notice.
const RATE_NOTICE_DELAY: Duration = Duration::from_millis(100);

impl RateLimit {
    fn new(per_second: usize) -> RateLimit {
        RateLimit {
            tokens: per_second as f32,
            last: Instant::now(),
            dropped: 0,
            last_notice: None,
        }
    }

    /// Takes a token if there is one.
    fn admit(&mut self, per_second: usize) -> bool {
        let per_second = per_second as f32;
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f32() * per_second;
        self.tokens = (self.tokens + refill).min(per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }

    /// Counts a dropped message; returns when to send the notice if this is
    /// the first since the last one (at most one notice a second).
    fn drop_one(&mut self) -> Option<Instant> {
        self.dropped = self.dropped.saturating_add(1);
        if self.dropped > 1 {
            return None;
        }
        let soon = Instant::now() + RATE_NOTICE_DELAY;
        Some(match self.last_notice {
            Some(last) => soon.max(last + Duration::from_secs(1)),
            None => soon,
        })
    }

    /// The count for a notice being sent now.
    fn take_dropped(&mut self) -> u64 {
        self.last_notice = Some(Instant::now());
        u64::from(std::mem::take(&mut self.dropped))
    }
}

fn unsubscribed(topics: &[Topic], reason: Option<&'static str>) -> Frame {
    Control::Unsubscribed {
        channels: topics.iter().map(ToString::to_string).collect(),
        reason,
    }
    .frame()
}

fn error(code: ErrorCode, message: &str) -> Frame {
    Control::Error {
        code,
        message,
        topics: Vec::new(),
        dropped: None,
    }
    .frame()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::hub::stream::pipe;
    use crate::hub::tests::signal;
    use serde_json::Value;

    /// A client speaking raw frames over an in-memory pipe with a bounded
    /// buffer (the kernel's, in real life), so a test decides exactly what
    /// it sends and when it reads — a WebSocket library would answer pings
    /// behind its back — and time can be paused.
    struct Client {
        end: pipe::End,
    }

    impl Client {
        async fn send_frame(&mut self, first: u8, payload: &[u8]) {
            self.end.write_all(&masked(first, payload)).await.unwrap();
        }

        async fn send(&mut self, text: &str) {
            self.send_frame(0x81, text.as_bytes()).await;
        }

        /// The next frame: opcode and payload; `None` at the end of the stream.
        async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
            let head = self.end.read_exact(2).await?;
            let len = match head[1] & 0x7f {
                126 => {
                    let b = self.end.read_exact(2).await?;
                    usize::from(u16::from_be_bytes([b[0], b[1]]))
                }
                127 => {
                    let b = self.end.read_exact(8).await?;
                    u64::from_be_bytes(b.try_into().unwrap()) as usize
                }
                n => usize::from(n),
            };
            let payload = self.end.read_exact(len).await?;
            Some((head[0] & 0x0f, payload))
        }

        async fn json(&mut self) -> Value {
            match self.frame().await {
                Some((1, payload)) => serde_json::from_slice(&payload).unwrap(),
                other => panic!("expected a text frame, got {other:?}"),
            }
        }

        /// The close frame's code and reason.
        async fn close(&mut self) -> (u16, String) {
            match self.frame().await {
                Some((8, payload)) => (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    String::from_utf8(payload[2..].to_vec()).unwrap(),
                ),
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// A client frame: masked, as clients must.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn hub_for(limits: &Limits, mailbox_frames: usize) -> Arc<Hub> {
        let mut config = crate::hub::HubConfig::from(limits);
        config.mailbox_frames = mailbox_frames;
        Hub::new(config, Arc::new(crate::metrics::Metrics::new()))
    }

    struct Spawned {
        client: Client,
        task: tokio::task::JoinHandle<End>,
    }

    /// A session over a pipe holding `capacity` bytes each way.
    async fn spawn_session_with(
        hub: &Arc<Hub>,
        limits: Limits,
        security: Security,
        capacity: usize,
    ) -> Spawned {
        let (client, server) = pipe::pair(capacity);
        let socket = Arc::new(Socket::new(Stream::Pipe(server), hub.started()));
        let joined = hub.connect(Arc::clone(&socket));
        let task = tokio::spawn(run(
            socket,
            joined,
            Bytes::new(),
            Arc::new(limits),
            Arc::new(security),
            None,
        ));
        Spawned {
            client: Client { end: client },
            task,
        }
    }

    async fn spawn_session(hub: &Arc<Hub>, limits: Limits) -> Spawned {
        spawn_session_with(hub, limits, Security::default(), 1 << 20).await
    }

    #[tokio::test]
    async fn welcome_subscribe_signal_unsubscribe() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        let welcome = client.json().await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["epoch"], *hub.epoch());

        client.send(r#"{"subscribe": ["order:1"]}"#).await;
        assert_eq!(
            client.json().await,
            serde_json::json!({"type": "subscribed", "channels": ["order:1"]})
        );
        hub.publish(&signal("order", Some("2")));
        hub.publish(&signal("order", Some("1")));
        let got = client.json().await;
        assert_eq!(got["payload"]["entity_id"], "1");

        client.send(r#"{"unsubscribe": ["order:1"]}"#).await;
        assert_eq!(client.json().await["type"], "unsubscribed");
        assert_eq!(hub.stats().channels, 0);
    }

    #[tokio::test]
    async fn bad_input_gets_error_frames_and_the_session_goes_on() {
        let limits = Limits {
            max_subscriptions: 2,
            ..Limits::default()
        };
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        client.send("{nope").await;
        assert_eq!(client.json().await["code"], "invalid_json");
        client.send_frame(0x82, &[1, 2]).await;
        assert_eq!(client.json().await["code"], "binary_not_supported");
        client.send(r#"{"subscribe": ["a", "b", "c"]}"#).await;
        assert_eq!(client.json().await["code"], "subscription_limit");
        client.send(r#"{"subscribe": ["a"]}"#).await;
        assert_eq!(client.json().await["type"], "subscribed");
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_close_gets_its_code_back() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let Spawned {
            mut client, task, ..
        } = spawn_session(&hub, limits).await;
        client.json().await;
        client.send_frame(0x89, b"are you there").await;
        assert_eq!(client.frame().await, Some((0xA, b"are you there".to_vec())));
        client
            .send_frame(0x88, &[0x0f, 0xa0, b'b', b'y', b'e'])
            .await;
        assert_eq!(client.close().await, (4000, String::new()));
        assert_eq!(task.await.unwrap(), End::PeerClosed);
        // Then the server ends the TCP connection.
        assert_eq!(client.frame().await, None);
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test]
    async fn slow_consumer_gets_resync_after_its_queued_frames() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 2);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        client.send(r#"{"subscribe": ["order"]}"#).await;
        client.json().await;
        // Published back to back, before the shard runs: its queue takes two.
        for i in 0..5 {
            hub.publish(&signal("order", Some(&i.to_string())));
        }
        assert_eq!(client.json().await["payload"]["entity_id"], "0");
        assert_eq!(client.json().await["payload"]["entity_id"], "1");
        let resync = client.json().await;
        assert_eq!(resync["event"], "resync");
        assert_eq!(resync["payload"]["reason"], "slow_consumer");
        hub.publish(&signal("order", Some("9")));
        assert_eq!(client.json().await["payload"]["entity_id"], "9");
    }

    #[tokio::test]
    async fn shutdown_sends_close_1001() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, task } = spawn_session(&hub, limits).await;
        client.json().await;
        hub.shutdown(CLOSE_WAIT);
        assert_eq!(client.close().await.0, close_code::AWAY);
        assert_eq!(task.await.unwrap(), End::Shutdown);
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test]
    async fn a_connection_made_while_the_server_stops_is_closed_with_1001() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        hub.shutdown(CLOSE_WAIT);
        let Spawned { mut client, task } = spawn_session(&hub, limits).await;
        assert_eq!(
            client.close().await,
            (close_code::AWAY, "server shutting down".to_owned())
        );
        assert_eq!(task.await.unwrap(), End::Shutdown);
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_is_dropped_after_two_heartbeats() {
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let hub = hub_for(&limits, 8);
        let Spawned {
            mut client, task, ..
        } = spawn_session(&hub, limits).await;
        let started = Instant::now();
        client.json().await;
        for _ in 0..2 {
            assert_eq!(client.frame().await.map(|f| f.0), Some(0x9));
            // The node's position, where a client with quiet topics resumes.
            assert_eq!(
                client.json().await,
                serde_json::json!({"type": "heartbeat", "epoch": *hub.epoch(), "seq": 0})
            );
        }
        assert_eq!(
            client.close().await,
            (close_code::AWAY, "heartbeat timeout".to_owned())
        );
        assert_eq!(task.await.unwrap(), End::HeartbeatTimeout);
        // Two intervals, found by a check every quarter of one.
        let elapsed = started.elapsed();
        assert!(elapsed > Duration::from_secs(20), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(22_500), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_keep_a_peer_alive() {
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let hub = hub_for(&limits, 8);
        let Spawned {
            mut client, task, ..
        } = spawn_session(&hub, limits).await;
        client.json().await;
        for _ in 0..5 {
            assert_eq!(client.frame().await.map(|f| f.0), Some(0x9));
            assert_eq!(client.json().await["type"], "heartbeat");
            client.send_frame(0x8A, b"").await;
        }
        assert!(!task.is_finished());
    }

    /// A heartbeat names the position of the latest signal, also one the
    /// connection was not sent: nothing up to it concerns the client.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_names_the_latest_position() {
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        client.send(r#"{"subscribe": ["order:1"]}"#).await;
        client.json().await;
        for i in 2..5 {
            hub.publish(&signal("order", Some(&i.to_string())));
        }
        assert_eq!(client.frame().await.map(|f| f.0), Some(0x9));
        assert_eq!(
            client.json().await,
            serde_json::json!({"type": "heartbeat", "epoch": *hub.epoch(), "seq": 3})
        );
    }

    /// While signals dropped for a slow client are owed a resync, its
    /// heartbeats name no position (a resume from there would skip them);
    /// once the resync is written, they do again.
    #[tokio::test(start_paused = true)]
    async fn no_position_is_named_while_a_resync_is_owed() {
        let limits = Limits {
            heartbeat: Duration::from_secs(1),
            ..Limits::default()
        };
        // Sixteen frames wait, the rest are dropped: seconds of owing.
        let hub = hub_for(&limits, 16);
        let Spawned { mut client, .. } =
            spawn_session_with(&hub, limits, Security::default(), 1024).await;
        client.json().await;
        client.send(r#"{"subscribe": ["order"]}"#).await;
        client.json().await;
        flood(&hub, 300);
        // Read slowly: one frame every 300 ms, and stay alive (pings wait
        // in the queue too).
        let mut heartbeats = Vec::new();
        let mut resynced = false;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.send_frame(0x8A, b"").await;
            match client.frame().await {
                Some((9, _)) => {}
                Some((1, payload)) => {
                    let frame: Value = serde_json::from_slice(&payload).unwrap();
                    if frame["event"] == "resync" {
                        assert_eq!(frame["payload"]["reason"], "slow_consumer");
                        resynced = true;
                    } else if frame["type"] == "heartbeat" {
                        heartbeats.push((resynced, frame["seq"].clone()));
                        if resynced {
                            break;
                        }
                    }
                }
                other => panic!("expected frames, got {other:?}"),
            }
        }
        let before: Vec<_> = heartbeats.iter().filter(|h| !h.0).collect();
        assert!(
            !before.is_empty(),
            "no heartbeat while owed: {heartbeats:?}"
        );
        assert!(before.iter().all(|h| h.1.is_null()), "{heartbeats:?}");
        assert_eq!(heartbeats.last().unwrap(), &(true, serde_json::json!(300)));
    }

    /// Publishes `count` signals of about 1 KiB on `order`.
    fn flood(hub: &Hub, count: usize) {
        let padding = "x".repeat(1000);
        for i in 0..count {
            let mut s = signal("order", Some(&i.to_string()));
            s.payload = serde_json::value::RawValue::from_string(format!(
                r#"{{"entity_id":"{i}","txid":7,"extra":"{padding}"}}"#
            ))
            .unwrap();
            hub.publish(&s);
        }
    }

    /// Waits until the hub holds `channels` channels (a subscription is
    /// live before its ack is read).
    async fn until_channels(hub: &Hub, channels: usize) {
        while hub.stats().channels != channels {
            tokio::task::yield_now().await;
        }
    }

    /// A client that subscribes to `order` and then reads nothing at all.
    async fn stuck(limits: Limits) -> (Arc<Hub>, Spawned) {
        let hub = hub_for(&limits, 1024);
        let mut spawned = spawn_session_with(&hub, limits, Security::default(), 4096).await;
        spawned.client.send(r#"{"subscribe": ["order"]}"#).await;
        until_channels(&hub, 1).await;
        // Far more than the kernel's buffers hold.
        flood(&hub, 300);
        (hub, spawned)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_after_a_heartbeat_interval() {
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let started = Instant::now();
        let (
            hub,
            Spawned {
                task,
                client: _client,
                ..
            },
        ) = stuck(limits).await;
        assert_eq!(task.await.unwrap(), End::WriteTimeout);
        // No frame taken for an interval (checked every quarter of one), then a
        // bounded try at a close frame.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(10), "{elapsed:?}");
        assert!(
            elapsed <= Duration::from_millis(12_500) + CLOSE_WAIT + Duration::from_millis(2_500),
            "{elapsed:?}"
        );
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_not_held_up_by_a_stuck_write() {
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let (
            hub,
            Spawned {
                task,
                client: _client,
            },
        ) = stuck(limits).await;
        let started = Instant::now();
        hub.shutdown(CLOSE_WAIT);
        assert_eq!(task.await.unwrap(), End::Shutdown);
        // Only the bounded try at a close frame, not the stuck write.
        assert_eq!(started.elapsed(), CLOSE_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_behind_is_closed_with_1013_it_can_read() {
        let limits = Limits {
            max_lag: Duration::from_secs(2),
            ..Limits::default()
        };
        let hub = hub_for(&limits, 4);
        let Spawned {
            mut client, task, ..
        } = spawn_session_with(&hub, limits, Security::default(), 4096).await;
        client.json().await;
        client.send(r#"{"subscribe": ["order"]}"#).await;
        client.json().await;
        // Signals every 2 ms; the client reads one frame every 10 ms.
        let publisher = {
            let hub = Arc::clone(&hub);
            tokio::spawn(async move {
                for i in 0.. {
                    hub.publish(&signal("order", Some(&i.to_string())));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let mut resynced = false;
        let close = loop {
            match client.frame().await {
                Some((1, payload)) => {
                    let frame: Value = serde_json::from_slice(&payload).unwrap();
                    resynced |= frame["payload"]["reason"] == "slow_consumer";
                }
                Some((8, payload)) => break payload,
                other => panic!("expected frames then a close, got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        publisher.abort();
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), close_code::AGAIN);
        let reason = String::from_utf8_lossy(&close[2..]).into_owned();
        assert!(reason.contains("too slow"), "{reason}");
        // It was told about the gaps before being let go.
        assert!(resynced);
        assert_eq!(task.await.unwrap(), End::TooSlow);
        assert_eq!(hub.metrics().slow_consumer_disconnects.get(), 1);
    }

    #[tokio::test]
    async fn resume_without_history_gets_a_resync_per_channel() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        client
            .send(r#"{"subscribe": ["order", "order:1", "contact"], "resume": {"epoch": "old", "seq": 7}}"#)
            .await;
        assert_eq!(client.json().await["type"], "subscribed");
        let mut resyncs = vec![client.json().await, client.json().await];
        resyncs.sort_by_key(|f| f["channel"].as_str().unwrap().to_owned());
        assert_eq!(
            resyncs,
            vec![
                serde_json::json!({"channel": "contact", "event": "resync", "payload": {"reason": "resume_unavailable"}}),
                serde_json::json!({"channel": "order", "event": "resync", "payload": {"reason": "resume_unavailable"}}),
            ]
        );
    }

    #[tokio::test]
    async fn resume_in_the_same_epoch_replays_then_goes_live_without_a_seam() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        hub.publish(&signal("order", Some("1")));
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        let welcome = client.json().await;
        assert_eq!(welcome["seq"], 1);
        hub.publish(&signal("order", Some("2")));
        hub.publish(&signal("contact", Some("3")));
        hub.publish(&signal("order", Some("4")));
        let resume = serde_json::json!({"subscribe": ["order"], "resume": {"epoch": &*hub.epoch(), "seq": 1}});
        client.send(&resume.to_string()).await;
        assert_eq!(client.json().await["type"], "subscribed");
        hub.publish(&signal("order", Some("5")));
        let mut got = Vec::new();
        for _ in 0..3 {
            let frame = client.json().await;
            assert_eq!(frame["epoch"], *hub.epoch());
            got.push((
                frame["seq"].as_u64().unwrap(),
                frame["payload"]["entity_id"].as_str().unwrap().to_owned(),
            ));
        }
        assert_eq!(got, vec![(2, "2".into()), (4, "4".into()), (5, "5".into())]);
    }

    /// Sends `texts` in one write, so the server reads them back to back.
    async fn burst(client: &mut Client, texts: impl Iterator<Item = String>) {
        let bytes: Vec<u8> = texts.flat_map(|t| masked(0x81, t.as_bytes())).collect();
        client.end.write_all(&bytes).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn messages_over_the_rate_are_dropped_and_the_client_is_told() {
        let limits = Limits {
            max_messages_per_second: 5,
            ..Limits::default()
        };
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        burst(
            &mut client,
            (0..8).map(|i| format!(r#"{{"subscribe": ["c{i}"]}}"#)),
        )
        .await;
        for _ in 0..5 {
            assert_eq!(client.json().await["type"], "subscribed");
        }
        let error = client.json().await;
        assert_eq!(error["code"], "rate_limited");
        assert_eq!(error["dropped"], 3, "{error}");
        assert_eq!(hub.stats().channels, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        client.send(r#"{"subscribe": ["later"]}"#).await;
        assert_eq!(client.json().await["type"], "subscribed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_notice_carries_every_dropped_message() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let Spawned { mut client, .. } = spawn_session(&hub, limits).await;
        client.json().await;
        let sent = Instant::now();
        // 80 back to back; 50 a second are allowed.
        burst(
            &mut client,
            (0..80).map(|i| format!(r#"{{"subscribe": ["c{i}"]}}"#)),
        )
        .await;
        for _ in 0..50 {
            assert_eq!(client.json().await["type"], "subscribed");
        }
        let notice = client.json().await;
        assert_eq!(notice["code"], "rate_limited");
        assert_eq!(notice["dropped"], 30, "{notice}");
        assert!(
            notice["message"]
                .as_str()
                .unwrap()
                .contains("30 message(s) dropped"),
            "{notice}"
        );
        assert_eq!(hub.metrics().messages_rate_limited.get(), 30);
        // Promptly: within the notice delay, not a second later.
        assert_eq!(sent.elapsed(), RATE_NOTICE_DELAY);
        // Later drops are counted in the next notice, no sooner than a second after.
        tokio::time::advance(Duration::from_millis(200)).await;
        burst(
            &mut client,
            (0..20).map(|i| format!(r#"{{"unsubscribe": ["c{i}"]}}"#)),
        )
        .await;
        let mut acks = 0;
        let notice = loop {
            let frame = client.json().await;
            if frame["type"] == "unsubscribed" {
                acks += 1;
                continue;
            }
            break frame;
        };
        assert_eq!(notice["code"], "rate_limited");
        assert_eq!(acks + notice["dropped"].as_u64().unwrap(), 20, "{notice}");
        assert_eq!(
            hub.metrics().messages_rate_limited.get(),
            30 + notice["dropped"].as_u64().unwrap()
        );
    }

    #[tokio::test]
    async fn a_busy_peer_cannot_outlive_its_auth_deadline() {
        let limits = Limits::default();
        let hub = hub_for(&limits, 8);
        let security = Security {
            authenticator: crate::auth::Authenticator::new(&crate::config::AuthArgs {
                jwt_secret: Some("a-unit-test-secret-of-at-least-32-bytes".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .map(Arc::new),
            auth_timeout: Duration::from_millis(200),
            ..Security::default()
        };
        let Spawned { client, task, .. } =
            spawn_session_with(&hub, limits, security, 1 << 20).await;
        // A peer whose pings never stop: the socket is always readable.
        let client = Arc::new(client);
        let flood = {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let pings = masked(0x89, b"").repeat(100);
                while client.end.write_all(&pings).await.is_ok() {}
            })
        };
        let drain = {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let mut buf = vec![0; 65536];
                loop {
                    match client.end.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(_) => client.end.readable().await,
                    }
                }
            })
        };
        let end = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the auth deadline never fired")
            .unwrap();
        assert_eq!(end, End::Unauthorized);
        flood.abort();
        drain.abort();
    }
}
