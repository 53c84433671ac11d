//! The demo's browser app: `/` (an index), `/cashier`, `/kitchen` and
//! `/orders/{id}` all answer the same page, which routes on its path; the
//! script and style sheet are built by `npm run build:demo` in
//! `clients/typescript` (esbuild, from `clients/typescript/demo/src`) and
//! committed here, so the binary serves them without a front-end build.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page is revalidated each time (a new binary may serve a new bundle);
/// its script and styles are kept a minute.
const PAGE_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=60";

/// The page and its assets, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/cashier", get(page))
        .route("/kitchen", get(page))
        .route("/orders/{id}", get(page))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
        .route("/favicon.ico", get(no_icon))
}

/// No icon: an empty answer rather than a 404 in every browser console.
async fn no_icon() -> impl IntoResponse {
    (
        axum::http::StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, ASSET_CACHE)],
    )
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, PAGE_CACHE),
        ],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        APP_JS,
    )
}

async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, ASSET_CACHE),
        ],
        APP_CSS,
    )
}
