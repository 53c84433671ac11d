//! One WebSocket connection: a single `select!` loop over the socket, the
//! session's hub mailbox, heartbeats and shutdown. Generic over any
//! `Sink + Stream` of messages so it runs against a real socket or a test pair.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, close_code};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::{Identity, Security};
use crate::config::Limits;
use crate::hub::{Frame, Outbound, ResyncReason, Session, Topic};
use crate::ws::access::{Access, CLOSE_UNAUTHORIZED, far_future};
use crate::ws::protocol::{self, Control, ErrorCode, Request};

/// Most frames written between two flushes.
const BATCH: usize = 256;

/// How long a goodbye (close frame, closing handshake) may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// How a session ended, for logs.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    PeerClosed,
    Shutdown,
    HeartbeatTimeout,
    /// The peer stopped reading: a write did not complete within a heartbeat interval.
    WriteTimeout,
    /// The peer read, but stayed behind for longer than `max_lag` (closed with 1013).
    TooSlow,
    /// No valid token in time, or it expired (closed with 4001).
    Unauthorized,
    SocketError(String),
}

/// Runs the session until the peer leaves, the socket fails or `shutdown` fires.
#[allow(clippy::too_many_arguments)]
pub async fn run<S, E>(
    mut socket: S,
    mut session: Session,
    epoch: &str,
    limits: &Limits,
    security: &Security,
    identity: Option<Identity>,
    shutdown: CancellationToken,
) -> End
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut access = Access::new(security, identity);
    let welcome = Control::Welcome {
        protocol: protocol::VERSION,
        auth: if access.required() {
            "required"
        } else {
            "none"
        },
        epoch,
        seq: session.start_seq(),
        limits: limits.into(),
    };
    match tokio::time::timeout(limits.heartbeat, socket.send(text(welcome.frame()))).await {
        Err(_) => return End::WriteTimeout,
        Ok(Err(e)) => return End::SocketError(e.to_string()),
        Ok(Ok(())) => {}
    }
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + limits.heartbeat, limits.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut rate = RateLimit::new(limits.max_messages_per_second);
    // Timers of authentication; far in the future when not in use.
    let auth_deadline = tokio::time::sleep_until(if access.authenticated() {
        far_future()
    } else {
        Instant::now() + access.auth_timeout()
    });
    let expiry = tokio::time::sleep_until(access.expires());
    let expiry_notice = tokio::time::sleep_until(access.notice_at());
    tokio::pin!(auth_deadline, expiry, expiry_notice);
    let mut recheck = tokio::time::interval_at(
        Instant::now() + access.recheck_every(),
        access.recheck_every(),
    );
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When to tell the client how many messages were dropped (armed on a drop).
    let rate_notice = tokio::time::sleep_until(far_future());
    // Armed once, not per wake-up: this loop runs for every frame.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled, rate_notice);

    loop {
        // A peer (or a publisher) that is always ready must not keep this task
        // from yielding: timers and the shutdown signal advance only when it does.
        tokio::task::coop::consume_budget().await;
        // Decide what to write; the write itself happens below, bounded.
        let out: Vec<Message> = tokio::select! {
            biased;
            () = &mut cancelled => {
                close(&mut socket, close_code::AWAY, "server shutting down", CLOSE_WAIT).await;
                return End::Shutdown;
            }
            // Deadlines come before the socket: a busy peer must not outlive its token.
            () = &mut auth_deadline => {
                let reason = format!(r#"unauthorized: no {{"auth": "<jwt>"}} within {:?}"#, access.auth_timeout());
                close(&mut socket, CLOSE_UNAUTHORIZED, &reason, CLOSE_WAIT).await;
                return End::Unauthorized;
            }
            () = &mut expiry, if access.identity().is_some() => {
                close(&mut socket, CLOSE_UNAUTHORIZED, "unauthorized: the token expired", CLOSE_WAIT).await;
                return End::Unauthorized;
            }
            inbound = socket.next() => {
                last_seen = Instant::now();
                match inbound {
                    None => return End::PeerClosed,
                    Some(Ok(Message::Close(_))) => {
                        // The WebSocket layer queued the closing handshake's reply; send it.
                        let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
                        return End::PeerClosed;
                    }
                    Some(Err(e)) => {
                        // A broken frame or message: say which rule it broke (RFC 6455 §7.4.1).
                        if let Some((code, reason)) = read_error_close(&e, limits) {
                            close(&mut socket, code, &reason, CLOSE_WAIT).await;
                        }
                        return End::SocketError(e.to_string());
                    }
                    Some(Ok(Message::Text(request))) => match rate.admit() {
                        true => match protocol::parse(&request, limits) {
                            Ok(Request::Auth(token)) => match access.accept(&token).await {
                                Ok(expires_at) => {
                                    auth_deadline.as_mut().reset(far_future());
                                    expiry.as_mut().reset(access.expires());
                                    expiry_notice.as_mut().reset(access.notice_at());
                                    let mut out = vec![text(Control::Authenticated { expires_at }.frame())];
                                    // New claims: the topics held must be allowed for them too,
                                    // and if that cannot be checked, they are not kept.
                                    out.extend(revoke_denied(&mut session, &mut access, true).await.into_iter().map(text));
                                    out
                                }
                                Err(err) if !access.authenticated() => {
                                    let reason = format!("unauthorized: {err}");
                                    close(&mut socket, CLOSE_UNAUTHORIZED, &reason, CLOSE_WAIT).await;
                                    return End::Unauthorized;
                                }
                                // A failed refresh: the current token holds until it expires.
                                Err(err) => vec![text(error(ErrorCode::Unauthorized, &err.to_string()))],
                            },
                            Ok(_) if !access.authenticated() => vec![text(error(
                                ErrorCode::AuthRequired,
                                r#"authenticate first: send {"auth": "<jwt>"}"#,
                            ))],
                            Ok(request) => handle(request, &mut session, limits, &mut access).await.into_iter().map(text).collect(),
                            Err(rejection) => vec![text(error(rejection.code, &rejection.message))],
                        },
                        false => dropped(&mut rate, &session, rate_notice.as_mut()),
                    },
                    Some(Ok(Message::Binary(_))) => match rate.admit() {
                        true => vec![text(error(
                            ErrorCode::BinaryNotSupported,
                            "binary frames are not part of the protocol; send JSON text",
                        ))],
                        false => dropped(&mut rate, &session, rate_notice.as_mut()),
                    },
                    // Pings are answered by the WebSocket layer whatever happens
                    // here; pongs only prove liveness. Both use up the message
                    // rate, so a ping flood leaves no room for requests.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        rate.admit();
                        Vec::new()
                    }
                }
            }
            () = &mut rate_notice, if rate.dropped > 0 => {
                rate_notice.as_mut().reset(far_future());
                let count = rate.take_dropped();
                vec![text(Control::Error {
                    code: ErrorCode::RateLimited,
                    message: &format!(
                        "over {} messages per second: {count} message(s) dropped, not applied",
                        limits.max_messages_per_second
                    ),
                    topics: Vec::new(),
                    dropped: Some(count),
                }.frame())]
            }
            outbound = session.next_outbound() => {
                let (mut out, oldest): (Vec<Message>, Option<Instant>) = match outbound {
                    Outbound::Frame(queued) => (vec![text(queued.frame)], Some(queued.at)),
                    Outbound::Resyncs(frames) => (frames.into_iter().map(text).collect(), None),
                };
                // Batch what is already queued: one flush for many frames.
                while out.len() < BATCH {
                    let Some(queued) = session.try_recv() else { break };
                    out.push(text(queued.frame));
                }
                let metrics = session.metrics();
                metrics.frames_delivered.inc_by(out.len() as u64);
                if let Some(at) = oldest {
                    metrics.send_lag.observe(at.elapsed().as_secs_f64());
                }
                out
            }
            () = &mut expiry_notice, if access.identity().is_some() && !access.expiry_notified => {
                access.expiry_notified = true;
                let expires_at = access.identity().map_or(0, |id| id.expires_at);
                vec![text(Control::AuthExpiring { expires_at }.frame())]
            }
            _ = recheck.tick(), if access.required() && session.topic_count() > 0 => {
                revoke_denied(&mut session, &mut access, false).await.into_iter().map(text).collect()
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > 2 * limits.heartbeat {
                    close(&mut socket, close_code::AWAY, "heartbeat timeout", CLOSE_WAIT).await;
                    return End::HeartbeatTimeout;
                }
                // Browsers never show pings to scripts: a text heartbeat lets a
                // client tell a quiet channel from a dead connection.
                vec![Message::Ping(Default::default()), text(Control::Heartbeat.frame())]
            }
        };
        // A client that keeps falling behind is told so and let go.
        if too_slow(&session, limits) {
            return let_go_too_slow(&mut socket, &session, limits).await;
        }
        if out.is_empty() {
            continue;
        }
        match write(&mut socket, out, &session, limits, cancelled.as_mut()).await {
            Written::All => {}
            Written::Shutdown => {
                close(
                    &mut socket,
                    close_code::AWAY,
                    "server shutting down",
                    CLOSE_WAIT,
                )
                .await;
                return End::Shutdown;
            }
            Written::TooSlow => return let_go_too_slow(&mut socket, &session, limits).await,
            Written::Stalled => {
                // It will most likely never read this; it is said all the same.
                let reason = format!(
                    "too slow: not reading (a write made no progress for {})",
                    humantime::format_duration(limits.heartbeat)
                );
                close(&mut socket, close_code::AGAIN, &reason, CLOSE_WAIT).await;
                return End::WriteTimeout;
            }
            Written::Failed(e) => return End::SocketError(e),
        }
    }
}

/// How a [`write`] ended.
enum Written {
    All,
    Shutdown,
    /// The client stayed behind for longer than `max_lag` while it was written to.
    TooSlow,
    /// One frame was not taken within a heartbeat interval: the peer stopped reading.
    Stalled,
    Failed(String),
}

/// Writes `out` and flushes. A peer that stops reading must not park the
/// session: a write that takes no frame for a heartbeat interval is stalled,
/// a peer that reads but stays behind is let go after `max_lag` (checked
/// while the write is under way, not only between writes), and shutdown
/// comes first. Most writes complete at once and arm no timer at all.
async fn write<S, E>(
    socket: &mut S,
    out: Vec<Message>,
    session: &Session,
    limits: &Limits,
    mut cancelled: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> Written
where
    S: Sink<Message, Error = E> + Unpin,
    E: std::fmt::Display,
{
    use std::sync::atomic::Ordering::Relaxed;
    // Frames taken so far: progress, for telling a slow peer from a stalled one.
    // (An atomic only because the session's future must be Send; one writer.)
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let frames = async {
        for message in out {
            if let Err(e) = socket.feed(message).await {
                return Written::Failed(e.to_string());
            }
            taken.store(taken.load(Relaxed) + 1, Relaxed);
        }
        match socket.flush().await {
            Ok(()) => Written::All,
            Err(e) => Written::Failed(e.to_string()),
        }
    };
    tokio::pin!(frames);
    if let std::task::Poll::Ready(written) = futures_util::poll!(frames.as_mut()) {
        return written;
    }
    let check_every = (limits.heartbeat / 4)
        .min(limits.max_lag / 4)
        .max(Duration::from_millis(25));
    let check = tokio::time::sleep(check_every);
    tokio::pin!(check);
    let (mut progress_at, mut progress) = (Instant::now(), taken.load(Relaxed));
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => return Written::Shutdown,
            written = &mut frames => return written,
            () = &mut check => {
                if too_slow(session, limits) {
                    return Written::TooSlow;
                }
                let now = Instant::now();
                if taken.load(Relaxed) != progress {
                    (progress_at, progress) = (now, taken.load(Relaxed));
                } else if now.duration_since(progress_at) >= limits.heartbeat {
                    return Written::Stalled;
                }
                check.as_mut().reset(now + check_every);
            }
        }
    }
}

/// Has this session been behind for longer than `max_lag`?
fn too_slow(session: &Session, limits: &Limits) -> bool {
    session
        .behind_for(limits.max_lag)
        .is_some_and(|behind| behind > limits.max_lag)
}

/// Closes a client that stayed behind with 1013. A slow reader is still
/// reading, so it gets a heartbeat interval to reach the close frame.
async fn let_go_too_slow<S>(socket: &mut S, session: &Session, limits: &Limits) -> End
where
    S: Sink<Message> + Unpin,
{
    session.metrics().slow_consumer_disconnects.inc();
    let reason = format!(
        "too slow: behind for over {}; reconnect and resync",
        humantime::format_duration(limits.max_lag)
    );
    close(socket, close_code::AGAIN, &reason, limits.heartbeat).await;
    End::TooSlow
}

/// Answers a subscribe or unsubscribe: an ack (and replayed or resync
/// frames), `error` frames for what is refused.
async fn handle(
    request: Request,
    session: &mut Session,
    limits: &Limits,
    access: &mut Access<'_>,
) -> Vec<Frame> {
    match request {
        Request::Auth(_) => Vec::new(),
        Request::Subscribe { topics, resume } => {
            let total = session.topic_count() + session.new_topic_count(&topics);
            if total > limits.max_subscriptions {
                return vec![error(
                    ErrorCode::SubscriptionLimit,
                    &format!(
                        "this would hold {total} subscriptions; the limit per connection is {}",
                        limits.max_subscriptions
                    ),
                )];
            }
            let (topics, denied) = match access.authorize(&topics).await {
                Ok(split) => split,
                Err(err) => {
                    tracing::warn!(error = %crate::logging::error(&err), "authorization query failed");
                    return vec![error(
                        ErrorCode::AuthorizationUnavailable,
                        "authorization could not be checked; nothing was subscribed, try again",
                    )];
                }
            };
            let mut frames = Vec::new();
            if !denied.is_empty() {
                frames.push(
                    Control::Error {
                        code: ErrorCode::Forbidden,
                        message: "not allowed for this token",
                        topics: denied.iter().map(ToString::to_string).collect(),
                        dropped: None,
                    }
                    .frame(),
                );
            }
            if topics.is_empty() {
                return frames;
            }
            frames.push(
                Control::Subscribed {
                    channels: topics.iter().map(ToString::to_string).collect(),
                }
                .frame(),
            );
            match resume.map(|resume| session.subscribe_resuming(&topics, &resume)) {
                None => session.subscribe(&topics),
                // Everything missed since `resume`, before any live frame.
                Some(Some(replay)) => frames.extend(replay),
                Some(None) => {
                    // Cannot prove what was missed: the client must assume the worst.
                    let channels: BTreeSet<&str> =
                        topics.iter().map(|t| t.channel.as_str()).collect();
                    for channel in channels {
                        session
                            .metrics()
                            .resync(ResyncReason::ResumeUnavailable.as_str());
                        frames.push(protocol::resync_frame(
                            channel,
                            ResyncReason::ResumeUnavailable,
                        ));
                    }
                }
            }
            frames
        }
        Request::Unsubscribe(topics) => {
            session.unsubscribe(&topics);
            vec![unsubscribed(&topics, None)]
        }
    }
}

/// Drops the held topics the current claims may no longer see, and says so.
/// When the database cannot be asked: with `fail_closed` (the claims just
/// changed) every held topic is dropped; otherwise (a periodic check of claims
/// that were allowed) they are kept until the next check gets through.
async fn revoke_denied(
    session: &mut Session,
    access: &mut Access<'_>,
    fail_closed: bool,
) -> Vec<Frame> {
    if !access.required() || session.topic_count() == 0 {
        return Vec::new();
    }
    match access.recheck(&session.topics()).await {
        Ok(denied) if denied.is_empty() => Vec::new(),
        Ok(denied) => {
            session.unsubscribe(&denied);
            vec![unsubscribed(&denied, Some("revoked"))]
        }
        Err(err) if fail_closed => {
            tracing::warn!(error = %crate::logging::error(&err), "authorization for new claims could not be checked; dropping held topics");
            let held = session.topics();
            session.unsubscribe(&held);
            vec![unsubscribed(&held, Some("authorization_unavailable"))]
        }
        Err(err) => {
            tracing::warn!(error = %crate::logging::error(&err), "re-checking authorization failed; keeping topics until the next check");
            Vec::new()
        }
    }
}

/// Inbound messages per second: a token bucket holding one second's worth.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
    /// Messages dropped since the last notice.
    dropped: u64,
    last_notice: Option<Instant>,
}

/// How long after the first dropped message the client is told: long enough
/// for a burst to be counted in one notice.
const RATE_NOTICE_DELAY: Duration = Duration::from_millis(100);

impl RateLimit {
    fn new(per_second: usize) -> RateLimit {
        let per_second = per_second as f64;
        RateLimit {
            per_second,
            tokens: per_second,
            last: Instant::now(),
            dropped: 0,
            last_notice: None,
        }
    }

    /// Takes a token if there is one.
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
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
        self.dropped += 1;
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
        std::mem::take(&mut self.dropped)
    }
}

/// A message over the rate: not applied, counted, and the notice armed.
fn dropped(
    rate: &mut RateLimit,
    session: &Session,
    notice: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Vec<Message> {
    session.metrics().messages_rate_limited.inc();
    if let Some(at) = rate.drop_one() {
        notice.reset(at);
    }
    Vec::new()
}

/// The close a read error calls for (RFC 6455 §7.4.1), when the peer can
/// still be told: 1007 for a text message that is not UTF-8, 1009 for one
/// over the size limit, 1002 for a broken frame (unmasked, reserved opcode or
/// bits, fragmented control frame).
fn read_error_close(
    error: &(dyn std::error::Error + 'static),
    limits: &Limits,
) -> Option<(u16, String)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(ws) = error.downcast_ref::<WsError>() {
            return match ws {
                WsError::Utf8(_) => Some((
                    close_code::INVALID,
                    "invalid UTF-8 in a text message".to_owned(),
                )),
                WsError::Capacity(_) => Some((
                    close_code::SIZE,
                    format!(
                        "message too big: the limit is {} bytes",
                        limits.hard_message_limit()
                    ),
                )),
                // The peer is gone; there is no one to tell.
                WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                WsError::Protocol(violation) => {
                    Some((close_code::PROTOCOL, format!("protocol error: {violation}")))
                }
                _ => None,
            };
        }
        cause = error.source();
    }
    None
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

fn text(frame: Frame) -> Message {
    Message::Text(frame)
}

/// Sends a close frame, waiting at most `wait` for it to be written: the
/// peer may be gone or stalled, and shutdown must not wait on it.
async fn close<S>(socket: &mut S, code: u16, reason: &str, wait: Duration)
where
    S: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    let _ = tokio::time::timeout(wait, socket.send(Message::Close(Some(frame)))).await;
}

/// A close frame's reason holds at most 123 bytes (RFC 6455 §5.5).
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, Signal};
    use futures_channel::mpsc;
    use serde_json::Value;

    /// A socket made of two channels: what the client sends, what the server wrote.
    struct Pair {
        to_server: mpsc::UnboundedSender<Result<Message, std::io::Error>>,
        from_server: mpsc::UnboundedReceiver<Message>,
    }

    fn spawn_session(
        hub: &std::sync::Arc<Hub>,
        limits: Limits,
    ) -> (Pair, tokio::task::JoinHandle<End>, CancellationToken) {
        let (to_server, inbound) = mpsc::unbounded();
        let (outbound, from_server) = mpsc::unbounded::<Message>();
        let socket = inbound;
        let sink = outbound.sink_map_err(std::io::Error::other);
        let io = Joined {
            stream: socket,
            sink,
        };
        let shutdown = CancellationToken::new();
        let session = hub.connect();
        let token = shutdown.clone();
        let epoch = hub.epoch().to_owned();
        let task = tokio::spawn(async move {
            run(
                io,
                session,
                &epoch,
                &limits,
                &Security::default(),
                None,
                token,
            )
            .await
        });
        (
            Pair {
                to_server,
                from_server,
            },
            task,
            shutdown,
        )
    }

    struct Joined<St, Si> {
        stream: St,
        sink: Si,
    }

    impl<St: Stream + Unpin, Si: Unpin> Stream for Joined<St, Si> {
        type Item = St::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.stream.poll_next_unpin(cx)
        }
    }

    impl<St: Unpin, Si: Sink<Message> + Unpin> Sink<Message> for Joined<St, Si> {
        type Error = Si::Error;
        fn poll_ready(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.poll_ready_unpin(cx)
        }
        fn start_send(
            mut self: std::pin::Pin<&mut Self>,
            item: Message,
        ) -> Result<(), Self::Error> {
            self.sink.start_send_unpin(item)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.poll_flush_unpin(cx)
        }
        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.poll_close_unpin(cx)
        }
    }

    impl Pair {
        fn send(&self, text: &str) {
            self.to_server
                .unbounded_send(Ok(Message::Text(text.into())))
                .unwrap();
        }

        async fn next(&mut self) -> Message {
            self.from_server.next().await.expect("session ended")
        }

        async fn json(&mut self) -> Value {
            match self.next().await {
                Message::Text(t) => serde_json::from_str(&t).unwrap(),
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    fn signal(channel: &str, entity: &str) -> Signal {
        Signal {
            channel: channel.into(),
            event: "updated".into(),
            entity_id: Some(entity.into()),
            payload: serde_json::value::RawValue::from_string(format!(
                r#"{{"entity_id":"{entity}"}}"#
            ))
            .unwrap(),
        }
    }

    #[tokio::test]
    async fn welcome_subscribe_signal_unsubscribe() {
        let hub = crate::hub::tests::test_hub(8);
        let (mut client, _task, _stop) = spawn_session(&hub, Limits::default());
        let welcome = client.json().await;
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["epoch"], hub.epoch());

        client.send(r#"{"subscribe": ["order:1"]}"#);
        assert_eq!(
            client.json().await,
            serde_json::json!({"type": "subscribed", "channels": ["order:1"]})
        );
        hub.publish(&signal("order", "2"));
        hub.publish(&signal("order", "1"));
        let got = client.json().await;
        assert_eq!(got["payload"]["entity_id"], "1");

        client.send(r#"{"unsubscribe": ["order:1"]}"#);
        assert_eq!(client.json().await["type"], "unsubscribed");
        assert_eq!(hub.stats().channels, 0);
    }

    #[tokio::test]
    async fn bad_input_gets_error_frames_and_the_session_goes_on() {
        let hub = crate::hub::tests::test_hub(8);
        let limits = Limits {
            max_subscriptions: 2,
            ..Limits::default()
        };
        let (mut client, _task, _stop) = spawn_session(&hub, limits);
        client.json().await;
        client.send("{nope");
        assert_eq!(client.json().await["code"], "invalid_json");
        client
            .to_server
            .unbounded_send(Ok(Message::Binary(vec![1, 2].into())))
            .unwrap();
        assert_eq!(client.json().await["code"], "binary_not_supported");
        client.send(r#"{"subscribe": ["a", "b", "c"]}"#);
        assert_eq!(client.json().await["code"], "subscription_limit");
        client.send(r#"{"subscribe": ["a"]}"#);
        assert_eq!(client.json().await["type"], "subscribed");
    }

    #[tokio::test]
    async fn slow_consumer_gets_resync_after_its_queued_frames() {
        let hub = crate::hub::tests::test_hub(2);
        let (mut client, _task, _stop) = spawn_session(&hub, Limits::default());
        client.json().await;
        client.send(r#"{"subscribe": ["order"]}"#);
        client.json().await;
        // The session task cannot run between these publishes (same thread, no
        // await), so the mailbox overflows deterministically.
        for i in 0..5 {
            hub.publish(&signal("order", &i.to_string()));
        }
        assert_eq!(client.json().await["payload"]["entity_id"], "0");
        assert_eq!(client.json().await["payload"]["entity_id"], "1");
        let resync = client.json().await;
        assert_eq!(resync["event"], "resync");
        assert_eq!(resync["payload"]["reason"], "slow_consumer");
        hub.publish(&signal("order", "9"));
        assert_eq!(client.json().await["payload"]["entity_id"], "9");
    }

    #[tokio::test]
    async fn shutdown_sends_close_1001() {
        let hub = crate::hub::tests::test_hub(8);
        let (mut client, task, stop) = spawn_session(&hub, Limits::default());
        client.json().await;
        stop.cancel();
        match client.next().await {
            Message::Close(Some(frame)) => assert_eq!(frame.code, close_code::AWAY),
            other => panic!("expected close, got {other:?}"),
        }
        assert_eq!(task.await.unwrap(), End::Shutdown);
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_is_dropped_after_two_heartbeats() {
        let hub = crate::hub::tests::test_hub(8);
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let (mut client, task, _stop) = spawn_session(&hub, limits);
        client.json().await;
        for _ in 0..2 {
            assert!(matches!(client.next().await, Message::Ping(_)));
            assert_eq!(
                client.json().await,
                serde_json::json!({"type": "heartbeat"})
            );
        }
        match client.next().await {
            Message::Close(Some(frame)) => assert_eq!(frame.reason.as_str(), "heartbeat timeout"),
            other => panic!("expected close, got {other:?}"),
        }
        assert_eq!(task.await.unwrap(), End::HeartbeatTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn pongs_keep_a_peer_alive() {
        let hub = crate::hub::tests::test_hub(8);
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let (mut client, _task, _stop) = spawn_session(&hub, limits);
        client.json().await;
        for _ in 0..5 {
            assert!(matches!(client.next().await, Message::Ping(_)));
            assert_eq!(client.json().await["type"], "heartbeat");
            client
                .to_server
                .unbounded_send(Ok(Message::Pong(Default::default())))
                .unwrap();
        }
    }

    /// A sink that takes `accept` messages and then never another one.
    struct Stuck {
        accept: usize,
        stalled: std::sync::Arc<tokio::sync::Notify>,
    }

    impl Sink<Message> for Stuck {
        type Error = std::io::Error;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            if self.accept == 0 {
                self.stalled.notify_one();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(
            mut self: std::pin::Pin<&mut Self>,
            _: Message,
        ) -> Result<(), std::io::Error> {
            self.accept -= 1;
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            self.poll_ready(cx)
        }
    }

    type StuckSession = (
        mpsc::UnboundedSender<Result<Message, std::io::Error>>,
        std::sync::Arc<tokio::sync::Notify>,
        tokio::task::JoinHandle<End>,
        CancellationToken,
    );

    fn spawn_stuck(hub: &std::sync::Arc<Hub>) -> StuckSession {
        let (to_server, inbound) = mpsc::unbounded();
        let stalled = std::sync::Arc::new(tokio::sync::Notify::new());
        let io = Joined {
            stream: inbound,
            sink: Stuck {
                accept: 1,
                stalled: stalled.clone(),
            },
        };
        let shutdown = CancellationToken::new();
        let session = hub.connect();
        let token = shutdown.clone();
        let epoch = hub.epoch().to_owned();
        let limits = Limits {
            heartbeat: Duration::from_secs(10),
            ..Limits::default()
        };
        let task = tokio::spawn(async move {
            run(
                io,
                session,
                &epoch,
                &limits,
                &Security::default(),
                None,
                token,
            )
            .await
        });
        (to_server, stalled, task, shutdown)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_after_a_heartbeat_interval() {
        let hub = crate::hub::tests::test_hub(8);
        let (to_server, _stalled, task, _stop) = spawn_stuck(&hub);
        to_server
            .unbounded_send(Ok(Message::Text(r#"{"subscribe": ["order"]}"#.into())))
            .unwrap();
        let started = Instant::now();
        assert_eq!(task.await.unwrap(), End::WriteTimeout);
        // A heartbeat interval without progress, then a bounded try at a close frame.
        assert_eq!(started.elapsed(), Duration::from_secs(10) + CLOSE_WAIT);
        assert_eq!(hub.stats().sessions, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_not_held_up_by_a_stuck_write() {
        let hub = crate::hub::tests::test_hub(8);
        let (to_server, stalled, task, stop) = spawn_stuck(&hub);
        to_server
            .unbounded_send(Ok(Message::Text(r#"{"subscribe": ["order"]}"#.into())))
            .unwrap();
        stalled.notified().await;
        let started = Instant::now();
        stop.cancel();
        assert_eq!(task.await.unwrap(), End::Shutdown);
        // Only the bounded try at a close frame, not the stuck write.
        assert_eq!(started.elapsed(), CLOSE_WAIT);
    }

    #[tokio::test]
    async fn resume_without_history_gets_a_resync_per_channel() {
        let hub = crate::hub::tests::test_hub(8);
        let (mut client, _task, _stop) = spawn_session(&hub, Limits::default());
        client.json().await;
        client.send(r#"{"subscribe": ["order", "order:1", "contact"], "resume": {"epoch": "old", "seq": 7}}"#);
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
        let hub = crate::hub::tests::test_hub(8);
        hub.publish(&signal("order", "1"));
        let (mut client, _task, _stop) = spawn_session(&hub, Limits::default());
        let welcome = client.json().await;
        assert_eq!(welcome["seq"], 1);
        hub.publish(&signal("order", "2"));
        hub.publish(&signal("contact", "3"));
        hub.publish(&signal("order", "4"));
        let resume =
            serde_json::json!({"subscribe": ["order"], "resume": {"epoch": hub.epoch(), "seq": 1}});
        client.send(&resume.to_string());
        assert_eq!(client.json().await["type"], "subscribed");
        hub.publish(&signal("order", "5"));
        let mut got = Vec::new();
        for _ in 0..3 {
            let frame = client.json().await;
            assert_eq!(frame["epoch"], hub.epoch());
            got.push((
                frame["seq"].as_u64().unwrap(),
                frame["payload"]["entity_id"].as_str().unwrap().to_owned(),
            ));
        }
        assert_eq!(got, vec![(2, "2".into()), (4, "4".into()), (5, "5".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_over_the_rate_are_dropped_and_the_client_is_told() {
        let hub = crate::hub::tests::test_hub(8);
        let limits = Limits {
            max_messages_per_second: 5,
            ..Limits::default()
        };
        let (mut client, _task, _stop) = spawn_session(&hub, limits);
        client.json().await;
        for i in 0..8 {
            client.send(&format!(r#"{{"subscribe": ["c{i}"]}}"#));
        }
        for _ in 0..5 {
            assert_eq!(client.json().await["type"], "subscribed");
        }
        let error = client.json().await;
        assert_eq!(error["code"], "rate_limited");
        assert_eq!(error["dropped"], 3, "{error}");
        assert_eq!(hub.stats().channels, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        client.send(r#"{"subscribe": ["later"]}"#);
        assert_eq!(client.json().await["type"], "subscribed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_notice_carries_every_dropped_message() {
        let hub = crate::hub::tests::test_hub(8);
        let (mut client, _task, _stop) = spawn_session(&hub, Limits::default());
        client.json().await;
        let sent = Instant::now();
        // 80 back to back; 50 a second are allowed.
        for i in 0..80 {
            client.send(&format!(r#"{{"subscribe": ["c{i}"]}}"#));
        }
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
        for i in 0..20 {
            client.send(&format!(r#"{{"unsubscribe": ["c{i}"]}}"#));
        }
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

    /// A sink that takes `per_message` (of tokio's clock) for every message.
    struct Slow {
        per_message: Duration,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        got: std::sync::Arc<std::sync::Mutex<Vec<Message>>>,
    }

    impl Sink<Message> for Slow {
        type Error = std::io::Error;
        fn poll_ready(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            let per_message = self.per_message;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(per_message)));
            std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
            self.sleep = None;
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: std::pin::Pin<&mut Self>, item: Message) -> Result<(), std::io::Error> {
            self.got.lock().unwrap().push(item);
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A client that takes `per_message` for every frame while signals come
    /// every 2 ms; what it ended with, everything it was sent, and when.
    async fn slow_client(per_message: Duration, limits: Limits) -> (End, Vec<Message>, Duration) {
        let hub = crate::hub::tests::test_hub(4);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to_server, inbound) = mpsc::unbounded::<Result<Message, std::io::Error>>();
        let sink = Slow {
            per_message,
            sleep: None,
            got: got.clone(),
        };
        let io = Joined {
            stream: inbound,
            sink,
        };
        let mut session = hub.connect();
        session.subscribe(&[crate::hub::Topic {
            channel: "order".into(),
            entity: None,
        }]);
        let epoch = hub.epoch().to_owned();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            run(
                io,
                session,
                &epoch,
                &limits,
                &Security::default(),
                None,
                CancellationToken::new(),
            )
            .await
        });
        let publisher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    hub.publish(&signal("order", &i.to_string()));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let end = task.await.unwrap();
        let elapsed = started.elapsed();
        publisher.abort();
        drop(to_server);
        let got = got.lock().unwrap().clone();
        (end, got, elapsed)
    }

    fn assert_closed_too_slow(got: &[Message]) {
        match got.last() {
            Some(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, close_code::AGAIN);
                assert!(frame.reason.contains("too slow"), "{}", frame.reason);
            }
            other => panic!("expected a 1013 close, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_behind_is_closed_with_1013() {
        let limits = Limits {
            max_lag: Duration::from_secs(2),
            ..Limits::default()
        };
        let (end, got, _) = slow_client(Duration::from_millis(10), limits).await;
        assert_eq!(end, End::TooSlow);
        assert_closed_too_slow(&got);
        // It was told about the gaps before being let go.
        assert!(
            got.iter()
                .any(|m| matches!(m, Message::Text(t) if t.contains("slow_consumer")))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_behind_in_a_long_write_is_closed_with_1013_not_dropped() {
        // Each frame is taken within a heartbeat interval, but a batch of
        // them is not: the client reads, too slowly.
        let limits = Limits {
            heartbeat: Duration::from_secs(5),
            max_lag: Duration::from_secs(6),
            ..Limits::default()
        };
        let (end, got, elapsed) = slow_client(Duration::from_secs(3), limits.clone()).await;
        assert_eq!(end, End::TooSlow);
        assert_closed_too_slow(&got);
        // Let go once max_lag is over (checked every max_lag / 4), plus the
        // time it takes to read up to the close frame.
        assert!(elapsed > limits.max_lag, "{elapsed:?}");
        assert!(
            elapsed <= limits.max_lag + limits.max_lag / 4 + limits.heartbeat,
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_busy_peer_cannot_outlive_its_auth_deadline() {
        let hub = crate::hub::tests::test_hub(8);
        let security = Security {
            authenticator: crate::auth::Authenticator::new(&crate::config::AuthArgs {
                jwt_secret: Some("a-unit-test-secret-of-at-least-32-bytes".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .map(std::sync::Arc::new),
            auth_timeout: Duration::from_millis(200),
            ..Security::default()
        };
        // A peer whose messages never stop: the read side is always ready.
        let flood = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Message::Ping(Default::default()))
        });
        let (outbound, _from_server) = mpsc::unbounded::<Message>();
        let io = Joined {
            stream: flood,
            sink: outbound.sink_map_err(std::io::Error::other),
        };
        let session = hub.connect();
        let epoch = hub.epoch().to_owned();
        let limits = Limits::default();
        let end = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                io,
                session,
                &epoch,
                &limits,
                &security,
                None,
                CancellationToken::new(),
            ),
        )
        .await
        .expect("the auth deadline never fired");
        assert_eq!(end, End::Unauthorized);
    }
}
