//! Reading a request body within the limits: at most [`BodyLimit`] bytes (413), within the
//! request timeout the HTTP layer sets (408, through [`BodyTimedOut`]).

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use http_body_util::BodyExt as _;

use crate::error::{ApiError, ErrorCode};

/// The largest body a handler reads, in bytes (`max_body_bytes`); the router puts it on every
/// request.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// What reading a body gives when its bytes did not arrive within `request_timeout_secs`.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the request body did not arrive within request_timeout_secs")]
pub struct BodyTimedOut;

/// Used when no [`BodyLimit`] is on the request (a router called without the layer).
const FALLBACK_LIMIT: usize = 1024 * 1024;

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        "the request body is larger than max_body_bytes",
    )
}

/// The whole body of `req`. A declared `Content-Length` over the limit is refused before a
/// byte is read (the HTTP layer drains what it can, so that the client reads the answer).
pub async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(FALLBACK_LIMIT, |l| l.0);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| unreadable(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// A body that broke off: 408 when it ran out of time, else 400.
fn unreadable(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<BodyTimedOut>() {
            return ApiError::new(ErrorCode::RequestTimeout, BodyTimedOut.to_string());
        }
        source = s.source();
    }
    ApiError::new(ErrorCode::InvalidBody, format!("cannot read the body: {e}"))
}
