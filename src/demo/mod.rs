//! `pgbroadcast demo`: the order example. Its schema and broadcast routes are
//! plain SQL (`sql/examples/orders.sql`, applied on start, idempotent); its
//! REST API returns txids; `/openapi.json` carries `x-sync` read from
//! `broadcast.routes`. `migrate` never installs any of this.

pub mod orders;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use deadpool_postgres::Pool;
use utoipa::OpenApi;

use crate::http::error::{ApiError, ErrorBody, ErrorDetail};
use crate::openapi::{SyncedPath, add_x_sync};

/// The example's tables and routes.
pub const SCHEMA: &str = include_str!("../../sql/examples/orders.sql");

/// Paths whose data a local-first client syncs, and the tables behind them.
pub const SYNCED: &[SyncedPath] = &[
    SyncedPath {
        path: "/api/orders",
        tables: &["orders"],
    },
    SyncedPath {
        path: "/api/orders/{id}",
        tables: &["orders", "order_items"],
    },
    SyncedPath {
        path: "/api/orders/{id}/items",
        tables: &["order_items"],
    },
    SyncedPath {
        path: "/api/orders/{id}/items/{item_id}",
        tables: &["order_items"],
    },
];

/// State of the example API.
#[derive(Clone)]
pub struct Demo {
    pub pool: Pool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pgbroadcast order example",
        description = "Mutations answer {\"data\", \"txid\"}: txid is the writing transaction's 32-bit xid (Electric's awaitTxId), or null when nothing changed. Signals: WebSocket /ws/broadcast, channel \"order\"."
    ),
    paths(
        orders::create,
        orders::list,
        orders::show,
        orders::set_status,
        orders::remove,
        orders::add_item,
        orders::remove_item
    ),
    components(schemas(ErrorBody, ErrorDetail, orders::Status))
)]
pub struct ApiDoc;

/// Installs the example schema and routes (idempotent).
pub async fn install(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA).await
}

pub fn router(demo: Demo) -> Router {
    Router::new()
        .route("/api/orders", get(orders::list).post(orders::create))
        .route(
            "/api/orders/{id}",
            get(orders::show)
                .patch(orders::set_status)
                .delete(orders::remove),
        )
        .route("/api/orders/{id}/items", post(orders::add_item))
        .route(
            "/api/orders/{id}/items/{item_id}",
            delete(orders::remove_item),
        )
        .route("/openapi.json", get(openapi))
        .with_state(demo)
}

/// The OpenAPI 3.1 document, with `x-sync` as the database says right now.
async fn openapi(State(demo): State<Demo>) -> Result<Response, ApiError> {
    let mut doc = ApiDoc::openapi();
    let client = demo
        .pool
        .get()
        .await
        .map_err(crate::mutation::Error::from)?;
    add_x_sync(&mut doc, &**client, SYNCED).await?;
    Ok(Json(doc).into_response())
}
