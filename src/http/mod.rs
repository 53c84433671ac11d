//! HTTP surface: health, readiness and the WebSocket upgrade at `/ws/broadcast`;
//! an application's REST API and pages when the server is given them (the
//! demo's, see [`crate::server`]). [`error`] is the API's error shape.

pub mod error;
pub mod json;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Security;
use crate::config::Limits;
use crate::http::error::ApiError;
use crate::http::json::BodyLimit;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::ws::session;
use crate::ws::upgrade::{self, NotAHandshake};

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Routes signals to the WebSocket sessions.
    pub hub: Arc<Hub>,
    /// Bounds on connections and client messages.
    pub limits: Arc<Limits>,
    /// `true` while the listener's LISTEN is in effect.
    pub ready: watch::Receiver<bool>,
    /// Fires on shutdown: the server stops accepting (the hub closes the
    /// sessions, see [`Hub::shutdown`]).
    pub shutdown: CancellationToken,
    /// WebSocket sessions, awaited on shutdown (axum does not wait for upgraded connections).
    pub sessions: TaskTracker,
    /// Open WebSocket connections, counted before the upgrade so a burst
    /// cannot overshoot `max_connections`.
    pub connections: Arc<AtomicUsize>,
    /// Where counters and gauges are kept.
    pub metrics: Arc<Metrics>,
    /// How clients authenticate and what they may subscribe to.
    pub security: Arc<Security>,
    /// An application's REST API (the order example's, when running
    /// `demo`): served behind the bearer check, with CORS.
    pub api: Option<Router>,
    /// Pages a browser loads without a token (they hold no data of their
    /// own and send the user's token with their API calls).
    pub pages: Option<Router>,
}

/// The service's routes: WebSocket, health, metrics, and the optional API and pages.
pub fn router(state: AppState) -> Router {
    let api = state.api.clone();
    let pages = state.pages.clone();
    let security = Arc::clone(&state.security);
    let body_limit = BodyLimit(state.limits.max_body_bytes);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws/broadcast", get(ws_upgrade))
        .route("/metrics", get(metrics))
        .with_state(state);
    let router = match api {
        Some(api) => {
            let api = api
                .layer(Extension(body_limit))
                .layer(axum::middleware::from_fn(in_request_span));
            let cors = cors(&security);
            let api = if security.enabled() {
                api.layer(axum::middleware::from_fn_with_state(
                    security,
                    require_bearer,
                ))
            } else {
                api
            };
            // CORS outermost: it answers preflights itself (they carry no
            // token), and a 405 or 401 still reaches the page that asked.
            router.merge(
                api.method_not_allowed_fallback(method_not_allowed)
                    .layer(cors),
            )
        }
        None => router,
    };
    let router = match pages {
        Some(pages) => router.merge(pages),
        None => router,
    };
    // Last, so that they apply to every route above.
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Which browser pages may call the REST API: those on `--allowed-origins`
/// (the list the WebSocket handshake checks), or any when none is given.
/// Never with cookies: the API takes bearer tokens, which a page can only
/// send if it holds one, so allowing an origin hands it no one's credentials.
fn cors(security: &Security) -> CorsLayer {
    use axum::http::{Method, header};
    let origins = if security.allowed_origins.is_empty() {
        AllowOrigin::any()
    } else {
        // An origin that is no valid header value can never be matched anyway.
        AllowOrigin::list(
            security
                .allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::ALLOW, header::WWW_AUTHENTICATE])
        .max_age(std::time::Duration::from_secs(600))
}

/// What a REST handler logs carries its request's method and path.
async fn in_request_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let span = tracing::error_span!(
        "request",
        method = %request.method(),
        path = %crate::logging::untrusted(request.uri().path()),
    );
    next.run(request).instrument(span).await
}

/// Any path no route serves.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("nothing is served at {}", uri.path()))
}

/// A served path asked with a method it does not take; axum adds `Allow`.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; the Allow header lists what it takes",
            uri.path()
        ),
    )
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
    let offered: Vec<&str> = offered_protocols(headers).collect();
    let at = offered
        .iter()
        .position(|p| p.eq_ignore_ascii_case("bearer"))?;
    offered.get(at + 1).map(|t| (*t).to_owned())
}

/// The subprotocols a handshake offers, in order.
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Why a request to `/ws/broadcast` is no WebSocket handshake, in the API's
/// error shape: 426 (with `Upgrade: websocket`) for a plain HTTP request.
fn not_a_handshake(rejection: NotAHandshake) -> Response {
    use axum::http::header::{CONNECTION, SEC_WEBSOCKET_VERSION, UPGRADE};
    let upgrade_required = |message: &str| {
        let mut response = ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", message)
            .into_response();
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        response
    };
    match rejection {
        NotAHandshake::Version => {
            let mut response = upgrade_required("this server speaks WebSocket version 13");
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            response
        }
        NotAHandshake::MissingKey => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "the WebSocket handshake is incomplete (Sec-WebSocket-Key is missing)",
        )
        .into_response(),
        NotAHandshake::NoUpgrade => upgrade_required(
            "this is a WebSocket endpoint: connect with a WebSocket client (ws://…/ws/broadcast)",
        ),
    }
}

async fn ws_upgrade(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
) -> Response {
    let handshake = match upgrade::handshake(&mut request) {
        Ok(handshake) => handshake,
        Err(rejection) => return not_a_handshake(rejection),
    };
    let (headers, uri) = (request.headers(), request.uri());
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
        tracing::debug!(
            origin = %crate::logging::untrusted(&String::from_utf8_lossy(origin.as_bytes())),
            "WebSocket refused: origin not allowed"
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open a WebSocket here",
        )
        .into_response();
    }
    let mut identity = None;
    if let Some(authenticator) = &security.authenticator
        && let Some(token) = protocol_token(headers)
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
    let bearer = offered_protocols(headers).any(|p| p.eq_ignore_ascii_case("bearer"));
    let hub = Arc::clone(&state.hub);
    drop(state);
    handshake.accept(bearer, move |stream, early| {
        let socket = Arc::new(crate::hub::shard::Socket::new(stream, hub.started()));
        let joined = hub.connect(Arc::clone(&socket));
        let run = session::run(socket, joined, early, limits, security, identity);
        // The connection's own task: what it holds is what a connection
        // costs while it is quiet, so it holds the session and its guards only.
        tokio::spawn(run.map(move |end| {
            tracing::debug!(?end, "session ended");
            drop(slot);
            drop(token);
        }));
    })
}
