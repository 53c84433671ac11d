//! Accepting HTTP connections, so that no client can hold the door shut.
//! Every connection that is not (yet) a WebSocket is *pending*: it must send
//! each request's headers within the handshake timeout (from connecting, or
//! from its previous request), a request must be handled within it too, and
//! at most `max_pending_connections` are held — when they are all taken, the
//! oldest is closed to make room. Sockets that trickle a request or say
//! nothing therefore cannot lock out new clients or the health checks.
//! Connections are served over HTTP/1.1 (WebSocket's handshake), with
//! `TCP_NODELAY`: signals are small and must not wait for Nagle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::error::ApiError;
use crate::metrics::{Metrics, Reason};

/// How connections are accepted; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// How long a connection may take to send its request head.
    pub handshake_timeout: Duration,
    /// Most connections that may be waiting for their first request at once.
    pub max_pending: usize,
}

/// Accepts connections and serves `app` on them until `shutdown` is
/// cancelled; then asks every pending connection to finish and returns the
/// tracker of their tasks (upgraded connections are no longer among them).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    edge: Edge,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> TaskTracker {
    let pending = Arc::new(Pending::new(edge.max_pending, Arc::clone(&metrics)));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(edge.handshake_timeout);
    loop {
        let tcp = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        // Best effort: without it, small frames wait for the peer's ACK.
        let _ = tcp.set_nodelay(true);
        let ticket = Pending::admit(&pending);
        let connection = http
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served
                        && err.is_timeout()
                    {
                        metrics.http_connections_closed.get_or_create(&Reason { reason: "handshake_timeout" }).inc();
                    }
                }
                // Dropping the connection closes the socket.
                () = ticket.evicted() => {
                    metrics.http_connections_closed.get_or_create(&Reason { reason: "pending_limit" }).inc();
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(ticket);
        });
    }
    connections.close();
    connections
}

/// Answers 408 when a request (headers aside: hyper bounds those) is not
/// handled within `limit`, such as a body that trickles in.
pub fn bound_requests(app: Router, limit: Duration) -> Router {
    app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    let message = format!(
                        "the request was not completed within {}",
                        humantime::format_duration(limit)
                    );
                    let mut response =
                        ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
                            .into_response();
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    response
                }
            }
        },
    ))
}

/// Errors of `accept` are about the new connection (it was reset before we
/// took it) or about resources (out of file descriptors); in the latter case
/// retrying at once would spin, so wait a moment.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %err, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The pending connections, oldest first.
struct Pending {
    max: usize,
    metrics: Arc<Metrics>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// One pending connection's place; gives it up when dropped.
struct Ticket {
    pending: Arc<Pending>,
    id: u64,
    evict: Arc<Notify>,
}

impl Pending {
    fn new(max: usize, metrics: Arc<Metrics>) -> Pending {
        Pending {
            max: max.max(1),
            metrics,
            open: Mutex::default(),
        }
    }

    /// A place for a new connection, evicting the oldest when all are taken.
    fn admit(pending: &Arc<Pending>) -> Ticket {
        let mut open = lock(&pending.open);
        while open.by_age.len() >= pending.max {
            if let Some((_, oldest)) = open.by_age.pop_first() {
                // A stored permit: the connection sees it even if it is not waiting yet.
                oldest.notify_one();
            }
        }
        let id = open.next;
        open.next += 1;
        let evict = Arc::new(Notify::new());
        open.by_age.insert(id, Arc::clone(&evict));
        pending
            .metrics
            .http_connections_pending
            .set(open.by_age.len() as i64);
        Ticket {
            pending: Arc::clone(pending),
            id,
            evict,
        }
    }
}

impl Ticket {
    /// Resolves when this connection must make room for a newer one.
    async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = lock(&self.pending.open);
        open.by_age.remove(&self.id);
        self.pending
            .metrics
            .http_connections_pending
            .set(open.by_age.len() as i64);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// File descriptors kept for everything but client sockets: connections to
/// Postgres, the listening socket, standard streams, the runtime's own, and
/// the private cluster's pipes.
pub const RESERVED_FDS: u64 = 64;

/// The connection limits that fit in `open_files` descriptors: if
/// `max_connections + max_pending` would not, both are lowered (pending to a
/// quarter of what is left, at most) so the process never runs out of
/// descriptors — running out would lock every new client out.
pub fn fit_open_files(
    max_connections: usize,
    max_pending: usize,
    open_files: u64,
) -> (usize, usize) {
    let budget = usize::try_from(open_files.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if max_connections.saturating_add(max_pending) <= budget {
        return (max_connections, max_pending);
    }
    let pending = max_pending.min((budget / 4).max(1));
    let connections = max_connections.min(budget.saturating_sub(pending).max(1));
    (connections, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_shrink_to_fit_the_open_file_limit() {
        assert_eq!(fit_open_files(50_000, 1024, 1_048_576), (50_000, 1024));
        assert_eq!(fit_open_files(50_000, 1024, 300), (177, 59));
        assert_eq!(fit_open_files(100, 1024, 300), (100, 59));
        assert_eq!(fit_open_files(10, 10, 20), (1, 1));
        let (connections, pending) = fit_open_files(50_000, 1024, 20_000);
        assert!(connections + pending <= 20_000 - RESERVED_FDS as usize);
    }

    #[test]
    fn the_oldest_pending_connection_makes_room() {
        let pending = Arc::new(Pending::new(2, Arc::new(Metrics::new())));
        let first = Pending::admit(&pending);
        let second = Pending::admit(&pending);
        let third = Pending::admit(&pending);
        let is_evicted = |t: &Ticket| {
            let notified = t.evict.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        assert!(is_evicted(&first));
        assert!(!is_evicted(&second));
        assert!(!is_evicted(&third));
        drop(second);
        // A place freed by a connection that finished is taken without eviction.
        let _fourth = Pending::admit(&pending);
        assert!(!is_evicted(&third));
        assert_eq!(pending.metrics.http_connections_pending.get(), 2);
    }
}
