//! HTTP surface: health, readiness and the WebSocket upgrade at `/ws/broadcast`;
//! with `demo`, the example REST API. [`error`] is the API's error shape.

pub mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Security;
use crate::config::Limits;
use crate::demo::Demo;
use crate::http::error::ApiError;
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
    pub security: Arc<Security>,
    /// The order example's API, when running `demo`.
    pub demo: Option<Demo>,
}

pub fn router(state: AppState) -> Router {
    let demo = state.demo.clone();
    let security = Arc::clone(&state.security);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws/broadcast", get(ws_upgrade))
        .route("/metrics", get(metrics))
        .with_state(state);
    match demo {
        Some(demo) if security.enabled() => router.merge(crate::demo::router(demo).layer(
            axum::middleware::from_fn_with_state(security, require_bearer),
        )),
        Some(demo) => router.merge(crate::demo::router(demo)),
        None => router,
    }
}

/// The REST API takes the same tokens as the WebSocket, as `Authorization: Bearer`.
async fn require_bearer(
    State(security): State<Arc<Security>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(authenticator) = &security.authenticator else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 7235).
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    let verified = match token {
        Some(token) => Some(authenticator.verify(token.trim()).await),
        None => None,
    };
    match verified {
        Some(Ok(_)) => next.run(request).await,
        Some(Err(err)) => unauthorized(&err.to_string()),
        None => unauthorized("send a token as Authorization: Bearer <jwt>"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
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

/// A token offered as `Sec-WebSocket-Protocol: bearer, <jwt>` (browsers
/// cannot set other headers on a WebSocket).
fn protocol_token(headers: &HeaderMap) -> Option<String> {
    let offered: Vec<String> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let at = offered
        .iter()
        .position(|p| p.eq_ignore_ascii_case("bearer"))?;
    offered.get(at + 1).cloned()
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let security = Arc::clone(&state.security);
    if crate::auth::token_in_query(uri.query()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "token_in_url",
            "credentials do not belong in URLs (proxies log them): send {\"auth\": \"<jwt>\"} as the first message, or Sec-WebSocket-Protocol: bearer, <jwt>",
        )
        .into_response();
    }
    if !security.allowed_origins.is_empty()
        && let Some(origin) = headers.get(axum::http::header::ORIGIN)
        // An Origin that is not even text is no allowed origin.
        && !origin
            .to_str()
            .is_ok_and(|origin| security.allowed_origins.iter().any(|a| a == origin))
    {
        state.metrics.refuse("origin");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open a WebSocket here",
        )
        .into_response();
    }
    let mut identity = None;
    if let Some(authenticator) = &security.authenticator
        && let Some(token) = protocol_token(&headers)
    {
        match authenticator.verify(&token).await {
            Ok(id) => identity = Some(id),
            Err(err) => {
                state.metrics.refuse("unauthorized");
                return unauthorized(&err.to_string());
            }
        }
    }
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
    ws.protocols(["bearer"])
        .read_buffer_size(4 * 1024)
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
                &security,
                identity,
                state.shutdown.clone(),
            )
            .await;
            tracing::debug!(?end, "session ended");
            drop(slot);
            drop(token);
        })
}
