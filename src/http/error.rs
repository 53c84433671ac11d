//! The HTTP error shape: a status and `{"error": {"code", "message"}}`.
//! Database internals never reach the client; they are logged instead.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;

use crate::logging;

/// An error answer of the REST API.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// The `code` of the body; see [`ErrorDetail::code`].
    pub code: &'static str,
    /// The `message` of the body.
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `malformed_json`, `validation`, `not_found`, `conflict`, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl ApiError {
    /// An answer with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `validation`: the request is well-formed but its values are refused.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }

    /// 500 `internal`, with a message that points to the server log.
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
                tracing::error!(error = %logging::error(&e), "database pool");
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
        tracing::error!(error = %logging::error(&err), "database error in a request");
        ApiError::internal()
    }
}
