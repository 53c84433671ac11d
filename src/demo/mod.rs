//! `pgbroadcast demo`: the order example. Its schema and broadcast routes are
//! plain SQL (`sql/examples/orders.sql`, applied on start, idempotent); its
//! REST API returns txids; `/openapi.json` carries `x-sync` read from
//! `broadcast.routes`. `migrate` never installs any of this.

pub mod orders;
pub mod web;

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
    /// Connections for the handlers' queries.
    pub pool: Pool,
}

/// The OpenAPI document of the example API, served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pgbroadcast order example",
        description = "Mutations answer {\"data\", \"txid\"}: txid is the writing transaction's 32-bit xid (Electric's awaitTxId), or null when nothing changed. Signals: WebSocket /ws/broadcast, channel \"order\". Every error answers {\"error\": {\"code\", \"message\"}}; a path nothing is served at answers 404 (components.responses.NotFound), a method a path does not take 405 with Allow (components.responses.MethodNotAllowed)."
    ),
    modifiers(&ErrorAnswers),
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

/// The error answers every operation can give, documented once under
/// `components.responses` and referenced from each operation they apply to:
/// those of a JSON body where there is one, 404 where the path names an id,
/// and 401 / 500 / 503 everywhere. Also the optional bearer authentication.
struct ErrorAnswers;

/// An error answer in `components.responses`.
struct ErrorAnswer {
    name: &'static str,
    status: &'static str,
    description: &'static str,
    /// A header it carries, and what it says.
    header: Option<(&'static str, &'static str)>,
}

const ERROR_ANSWERS: &[ErrorAnswer] = &[
    ErrorAnswer {
        name: "MalformedJson",
        status: "400",
        description: "`malformed_json`: the body is not JSON, or is empty.",
        header: None,
    },
    ErrorAnswer {
        name: "Unauthorized",
        status: "401",
        description: "`unauthorized`: the server requires authentication and no valid `Authorization: Bearer <jwt>` was sent.",
        header: Some(("WWW-Authenticate", "`Bearer`")),
    },
    ErrorAnswer {
        name: "NotFound",
        status: "404",
        description: "`not_found`: nothing is served at this path, or the id names nothing.",
        header: None,
    },
    ErrorAnswer {
        name: "MethodNotAllowed",
        status: "405",
        description: "`method_not_allowed`: the path does not take this method.",
        header: Some(("Allow", "The methods the path takes.")),
    },
    ErrorAnswer {
        name: "BodyTooLarge",
        status: "413",
        description: "`body_too_large`: the body is larger than the server's limit (`--max-body-bytes`, 64 KiB by default); the message gives the limit.",
        header: None,
    },
    ErrorAnswer {
        name: "UnsupportedMediaType",
        status: "415",
        description: "`unsupported_media_type`: the body is not sent as `Content-Type: application/json`.",
        header: None,
    },
    ErrorAnswer {
        name: "Validation",
        status: "422",
        description: "`validation`: the JSON is not what this operation takes; the message names the field by its path and says what it must be.",
        header: None,
    },
    ErrorAnswer {
        name: "Internal",
        status: "500",
        description: "`internal`: the request could not be completed; the details are in the server's log only.",
        header: None,
    },
    ErrorAnswer {
        name: "Unavailable",
        status: "503",
        description: "`unavailable`: the database cannot be reached; try again.",
        header: None,
    },
];

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{
            ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder, SecurityRequirement,
            schema::{ObjectBuilder, Type},
        };
        let components = doc.components.get_or_insert_with(Default::default);
        for answer in ERROR_ANSWERS {
            let mut response = ResponseBuilder::new()
                .description(answer.description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                );
            if let Some((header, description)) = answer.header {
                response = response.header(
                    header,
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some(description))
                        .build(),
                );
            }
            components
                .responses
                .insert(answer.name.to_owned(), RefOr::T(response.build()));
        }
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Required only when the server runs with --jwt-secret or --jwt-public-keys.",
                    ))
                    .build(),
            ),
        );
        // Without authentication configured, no credentials are needed.
        doc.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
        for (path, item) in doc.paths.paths.iter_mut() {
            let names_an_id = path.contains('{');
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let mut answers = vec!["Unauthorized", "Internal", "Unavailable"];
                if operation.request_body.is_some() {
                    answers.extend([
                        "MalformedJson",
                        "BodyTooLarge",
                        "UnsupportedMediaType",
                        "Validation",
                    ]);
                }
                if names_an_id {
                    answers.push("NotFound");
                }
                for answer in ERROR_ANSWERS {
                    if answers.contains(&answer.name) {
                        // An operation's own description of a status stays.
                        operation
                            .responses
                            .responses
                            .entry(answer.status.to_owned())
                            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(answer.name)));
                    }
                }
            }
        }
    }
}

/// Installs the example schema and routes (idempotent).
pub async fn install(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA).await
}

/// The example's REST routes under `/api`, with `/openapi.json`.
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
