//! HTTP surface: health, readiness and the WebSocket upgrade at `/ws/broadcast`;
//! with `demo`, the example REST API. [`error`] is the API's error shape.

pub mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::demo::Demo;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::ws::session;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub limits: Arc<Limits>,
    /// `true` while the listener's LISTEN is in effect.
    pub ready: watch::Receiver<bool>,
    /// Fires on shutdown; sessions answer with Close 1001.
    pub shutdown: CancellationToken,
    /// WebSocket sessions, awaited on shutdown (axum does not wait for upgraded connections).
    pub sessions: TaskTracker,
    /// Open WebSocket connections, counted before the upgrade so a burst
    /// cannot overshoot `max_connections`.
    pub connections: Arc<AtomicUsize>,
    pub metrics: Arc<Metrics>,
    /// The order example's API, when running `demo`.
    pub demo: Option<Demo>,
}

pub fn router(state: AppState) -> Router {
    let demo = state.demo.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws/broadcast", get(ws_upgrade))
        .route("/metrics", get(metrics))
        .with_state(state);
    match demo {
        Some(demo) => router.merge(crate::demo::router(demo)),
        None => router,
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if *state.ready.borrow() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        let body = json!({
            "status": "not_ready",
            "reason": "the LISTEN connection to Postgres is not established",
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Holds one of `max_connections` until the session ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        let previous = counter.fetch_add(1, Ordering::AcqRel);
        if previous >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot(Arc::clone(counter)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn ws_upgrade(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    let limits = Arc::clone(&state.limits);
    let Some(slot) = ConnectionSlot::take(&state.connections, limits.max_connections) else {
        state.metrics.refuse("max_connections");
        let body = json!({"error": {
            "code": "too_many_connections",
            "message": format!("this node holds its limit of {} connections; retry later or elsewhere", limits.max_connections),
        }});
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            Json(body),
        )
            .into_response();
    };
    let token = state.sessions.token();
    // Mostly small frames out, small messages in: keep per-socket buffers small
    // instead of tungstenite's 128 KiB defaults.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(limits.hard_message_limit())
        .max_frame_size(limits.hard_message_limit())
        .on_upgrade(move |socket| async move {
            let session = state.hub.connect();
            let end = session::run(
                socket,
                session,
                state.hub.epoch(),
                &limits,
                state.shutdown.clone(),
            )
            .await;
            tracing::debug!(?end, "session ended");
            drop(slot);
            drop(token);
        })
}
