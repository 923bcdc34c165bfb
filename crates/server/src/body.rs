//! A JSON body extractor whose rejections are [`ApiError`]s (400 bad JSON, 413 too large).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

use crate::error::ApiError;

/// Any JSON value; the request body limit applies.
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "BodyTooLarge",
                    message: "the request body is larger than max_body_bytes".into(),
                }
            } else {
                ApiError::bad_request("InvalidBody", format!("cannot read the body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "MissingBody",
                "the request needs a JSON body",
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request("InvalidJson", format!("the body is not valid JSON: {e}"))
        })
    }
}
