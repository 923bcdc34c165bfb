//! The one API error type. Every failure becomes a JSON body
//! `{"Error": title, "ErrorType": stable code, "Message": detail}` with the right status; client
//! mistakes are not logged as errors, server faults are logged and answered opaquely.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crmhooks_store::StoreError;
use serde::Serialize;

/// The stable, machine-readable `ErrorType` of an answer: what clients match on. Each code
/// implies its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A property of the body is missing, of the wrong type or out of range (400).
    InvalidField,
    /// The body has the wrong shape, or a patch cannot be applied (400).
    InvalidBody,
    /// The body is not JSON (400).
    InvalidJson,
    /// The route needs a body and got none (400).
    MissingBody,
    /// The body is larger than `max_body_bytes` (413).
    BodyTooLarge,
    /// The request's head or body did not arrive in time (408).
    RequestTimeout,
    /// An id in the path is not an int32 (400).
    InvalidId,
    /// The path does not parse (400).
    InvalidPath,
    /// The query string does not parse, or names an unknown value (400).
    InvalidQuery,
    /// A signalled event name is empty, too long or has a comma (400).
    InvalidEvent,
    /// The test event sent before saving an Active webhook did not succeed (400).
    WebhookTestFailed,
    /// No API key, or an unknown one (401).
    Unauthorized,
    /// The key belongs to another tenant than the path names (403).
    Forbidden,
    /// No such entity or route (404).
    NotFound,
    /// The route does not take that method (405).
    MethodNotAllowed,
    /// The request conflicts with the entity's state, or a patch `test` failed (409).
    Conflict,
    /// A server fault; the detail is in the server log (500).
    InternalError,
    /// The database does not answer (503).
    DatabaseUnavailable,
}

impl ErrorCode {
    /// Every code, in the order of the enum.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidField,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidJson,
        ErrorCode::MissingBody,
        ErrorCode::BodyTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::InvalidId,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidEvent,
        ErrorCode::WebhookTestFailed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::InternalError,
        ErrorCode::DatabaseUnavailable,
    ];

    /// The `ErrorType` string clients see.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidField => "InvalidField",
            ErrorCode::InvalidBody => "InvalidBody",
            ErrorCode::InvalidJson => "InvalidJson",
            ErrorCode::MissingBody => "MissingBody",
            ErrorCode::BodyTooLarge => "BodyTooLarge",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::InvalidId => "InvalidId",
            ErrorCode::InvalidPath => "InvalidPath",
            ErrorCode::InvalidQuery => "InvalidQuery",
            ErrorCode::InvalidEvent => "InvalidEvent",
            ErrorCode::WebhookTestFailed => "WebhookTestFailed",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::DatabaseUnavailable => "DatabaseUnavailable",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidField
            | ErrorCode::InvalidBody
            | ErrorCode::InvalidJson
            | ErrorCode::MissingBody
            | ErrorCode::InvalidId
            | ErrorCode::InvalidPath
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidEvent
            | ErrorCode::WebhookTestFailed => StatusCode::BAD_REQUEST,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// Stable machine-readable code; it implies the status.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and its status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
    /// 400 naming a field.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidField, format!("{field}: {problem}"))
    }
    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// 500 without detail for the client (the detail is logged).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "internal error; see the server log",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // A change function's own refusal comes back as it was made.
            StoreError::Rejected(inner) => match inner.downcast::<ApiError>() {
                Ok(api) => *api,
                Err(other) => ApiError::internal(other),
            },
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Invalid(f) => ApiError::invalid_field(&f.field, &f.message),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError::new(
                    ErrorCode::DatabaseUnavailable,
                    "the database is unavailable; try again shortly",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// The JSON body of an error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(examples(json!({
    "Error": "Bad Request",
    "ErrorType": "InvalidField",
    "Message": "Name: is longer than 219 characters"
})))]
pub struct ErrorBody<'a> {
    /// The status' reason phrase.
    #[serde(rename = "Error")]
    title: &'a str,
    /// The stable code clients match on; it implies the status.
    #[serde(rename = "ErrorType")]
    code: ErrorCode,
    /// What was wrong, for a person; names the property or parameter at fault.
    #[serde(rename = "Message")]
    message: &'a str,
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let statuses: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("`{c}` ({})", c.status().as_u16()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "The stable `ErrorType` of an error answer, with the status it implies: {}.",
                statuses.join(", ")
            )))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
}

impl ApiError {
    fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            title: self.status().canonical_reason().unwrap_or("Error"),
            code: self.code,
            message: &self.message,
        }
    }

    /// The whole HTTP/1.1 answer as bytes, closing the connection: for the HTTP layer when it
    /// answers without hyper (a request head that did not arrive in time).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if self.code == ErrorCode::Unauthorized {
            for challenge in crate::auth::CHALLENGES {
                resp.headers_mut().append(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static(challenge),
                );
            }
        }
        resp
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What clients see today: every code, its `ErrorType` and its status. A rename, a new
    /// status or a code added without a row here fails.
    const SEEN_BY_CLIENTS: [(ErrorCode, &str, u16); 18] = [
        (ErrorCode::InvalidField, "InvalidField", 400),
        (ErrorCode::InvalidBody, "InvalidBody", 400),
        (ErrorCode::InvalidJson, "InvalidJson", 400),
        (ErrorCode::MissingBody, "MissingBody", 400),
        (ErrorCode::BodyTooLarge, "BodyTooLarge", 413),
        (ErrorCode::RequestTimeout, "RequestTimeout", 408),
        (ErrorCode::InvalidId, "InvalidId", 400),
        (ErrorCode::InvalidPath, "InvalidPath", 400),
        (ErrorCode::InvalidQuery, "InvalidQuery", 400),
        (ErrorCode::InvalidEvent, "InvalidEvent", 400),
        (ErrorCode::WebhookTestFailed, "WebhookTestFailed", 400),
        (ErrorCode::Unauthorized, "Unauthorized", 401),
        (ErrorCode::Forbidden, "Forbidden", 403),
        (ErrorCode::NotFound, "NotFound", 404),
        (ErrorCode::MethodNotAllowed, "MethodNotAllowed", 405),
        (ErrorCode::Conflict, "Conflict", 409),
        (ErrorCode::InternalError, "InternalError", 500),
        (ErrorCode::DatabaseUnavailable, "DatabaseUnavailable", 503),
    ];

    #[test]
    fn codes_strings_and_statuses_are_what_clients_see() {
        assert_eq!(
            ErrorCode::ALL.to_vec(),
            SEEN_BY_CLIENTS.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        for (code, name, status) in SEEN_BY_CLIENTS {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.to_string(), name);
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{name}\""));
            assert_eq!(code.status().as_u16(), status, "{name}");
        }
    }

    #[tokio::test]
    async fn an_error_answers_with_its_status_and_the_json_body() {
        for (code, name, status) in SEEN_BY_CLIENTS {
            let resp = ApiError::new(code, "a \"detail\"").into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(
                resp.headers()
                    .get(axum::http::header::CONTENT_TYPE)
                    .unwrap(),
                "application/json"
            );
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let title = code.status().canonical_reason().unwrap();
            assert_eq!(
                std::str::from_utf8(&body).unwrap(),
                format!(r#"{{"Error":"{title}","ErrorType":"{name}","Message":"a \"detail\""}}"#)
            );
        }
    }
}
