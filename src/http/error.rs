//! The HTTP error shape: a status and `{"error": {"code", "message"}}`.
//! Database internals never reach the client; they are logged instead.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

/// An error answer of the REST API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `malformed_json`, `validation`, `not_found`, `conflict`, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // `/api/orders/abc` names no order, just as `/api/orders/999` does not.
        ApiError::not_found("no such resource")
    }
}

impl From<crate::mutation::Error> for ApiError {
    fn from(err: crate::mutation::Error) -> Self {
        match err {
            crate::mutation::Error::Postgres(e) => e.into(),
            crate::mutation::Error::Pool(e) => {
                tracing::error!(error = %error_report(&e), "database pool");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is not reachable; try again",
                )
            }
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    /// Constraint violations are the client's business (without naming the
    /// constraint); everything else is logged and answered as `internal`.
    fn from(err: tokio_postgres::Error) -> Self {
        let state = err.code();
        if state == Some(&SqlState::UNIQUE_VIOLATION) {
            return ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this conflicts with existing data",
            );
        }
        if state == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
            return ApiError::not_found("a referenced resource does not exist");
        }
        if matches!(state, Some(s) if *s == SqlState::CHECK_VIOLATION || *s == SqlState::NOT_NULL_VIOLATION)
        {
            return ApiError::validation("the data violates a rule of the database");
        }
        tracing::error!(error = %error_report(&err), "database error in a request");
        ApiError::internal()
    }
}

/// An error with its causes on one line, for the log: `outer: inner: …`,
/// and for a Postgres error all that the server said: severity, SQLSTATE,
/// message, then detail, hint, where, schema, table, column, data type and
/// constraint where present.
///
/// ```text
/// broadcast.authorize failed: ERROR 42501: permission denied for table grants
/// db error: ERROR P0001: orders are frozen (detail: "until 06:00", hint: "retry later", table: "orders")
/// ```
pub fn error_report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut report = String::new();
    let mut link = Some(err);
    while let Some(err) = link {
        let db = err
            .downcast_ref::<tokio_postgres::error::DbError>()
            .or_else(|| err.downcast_ref::<tokio_postgres::Error>()?.as_db_error());
        if let Some(db) = db {
            // "db error" says nothing the server's own words do not.
            if let Some(outer) = report.strip_suffix(": db error") {
                report.truncate(outer.len());
            }
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&describe_db_error(db));
            break;
        }
        let text = one_line(&err.to_string());
        if !report.contains(&text) {
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&text);
        }
        link = err.source();
    }
    report
}

/// `ERROR 23514: message (detail: "…", hint: "…", table: "orders", …)`.
fn describe_db_error(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!(
        "{} {}: {}",
        db.severity(),
        db.code().code(),
        one_line(db.message())
    );
    let fields = [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("where", db.where_()),
        ("schema", db.schema()),
        ("table", db.table()),
        ("column", db.column()),
        ("datatype", db.datatype()),
        ("constraint", db.constraint()),
    ];
    let present: Vec<String> = fields
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}: {:?}", (*value)?)))
        .collect();
    if !present.is_empty() {
        text.push_str(&format!(" ({})", present.join(", ")));
    }
    text
}

fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" / ")
}
