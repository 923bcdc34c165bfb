//! The one API error type. Every failure becomes a JSON body
//! `{"Error": title, "ErrorType": stable code, "Message": detail}` with the right status; client
//! mistakes are not logged as errors, server faults are logged and answered opaquely.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhooks_store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `InvalidField`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
    /// 400 naming a field.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request("InvalidField", format!("{field}: {problem}"))
    }
    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: what.into(),
        }
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthorized",
            message: message.into(),
        }
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            message: message.into(),
        }
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "Conflict",
            message: message.into(),
        }
    }
    /// 500 without detail for the client (the detail is logged).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: "internal error; see the server log".into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Invalid(f) => ApiError::invalid_field(&f.field, &f.message),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "DatabaseUnavailable",
                    message: "the database is unavailable; try again shortly".into(),
                }
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = serde_json::json!({
            "Error": title,
            "ErrorType": self.code,
            "Message": self.message,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
