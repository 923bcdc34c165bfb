//! What every API request leaves behind: an `X-Request-Id` on its answer (the client's own
//! when it is sane, else a fresh UUID), a tracing span carrying that id (so each log line of
//! the request names it), and its count and duration by route template.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// The route label of a request that matched no route (never the raw path: unbounded).
const UNMATCHED: &str = "unmatched";

/// A client's request id, when it is at most [`MAX_REQUEST_ID`] visible ASCII characters.
fn sane(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if ok {
        value.to_str().ok()
    } else {
        None
    }
}

/// The method's name as a label (the standard ones without an allocation).
fn method_label(m: &Method) -> metrics::SharedString {
    let known = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    const NAMES: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    match known.iter().position(|k| k == m) {
        Some(i) => metrics::SharedString::const_str(NAMES[i]),
        None => metrics::SharedString::const_str("other"),
    }
}

/// The middleware: id, span, metrics.
pub async fn request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(&REQUEST_ID).and_then(sane) {
        Some(given) => given.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = route.as_deref().unwrap_or(UNMATCHED),
    );
    let mut resp = async move {
        let resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "answered");
        resp
    }
    .instrument(span)
    .await;
    let route: metrics::SharedString = match route {
        Some(r) => r.into(),
        None => metrics::SharedString::const_str(UNMATCHED),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!(
        "crmhooks_api_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status,
    )
    .increment(1);
    metrics::histogram!("crmhooks_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ascii_ids_are_taken() {
        assert_eq!(sane(&HeaderValue::from_static("abc-123")), Some("abc-123"));
        assert_eq!(sane(&HeaderValue::from_static("")), None);
        assert_eq!(sane(&HeaderValue::from_static("a b")), None);
        let long = "x".repeat(129);
        assert_eq!(sane(&HeaderValue::from_str(&long).expect("ascii")), None);
        let max = "x".repeat(128);
        assert!(sane(&HeaderValue::from_str(&max).expect("ascii")).is_some());
        assert_eq!(
            sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("opaque")),
            None
        );
    }
}
