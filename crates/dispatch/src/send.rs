//! Building one request (body, headers, signature) and sending it.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crmhooks_payload::{headers as wire, sign, NetDateTime, PayloadRef, PayloadTemplate};
use crmhooks_store::{StoredEvent, Webhook};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};

use crate::target::HttpClient;
use uuid::Uuid;

/// `User-Agent`: SuperOffice's product name and our version as four numbers.
pub fn user_agent() -> String {
    format!(
        "{}/{}.{}.{}.0",
        wire::USER_AGENT_PRODUCT,
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    )
}

/// Whether a webhook's custom `Headers` may not use `name` (any case): the standard headers
/// of a call are ours to send.
pub fn is_reserved_header(name: &str) -> bool {
    wire::is_standard(name)
}

/// The SuperOffice header names as [`HeaderName`]s, made once from the payload crate's
/// spellings (`HeaderName::from_static` takes only lower case).
struct Names {
    event: HeaderName,
    event_id: HeaderName,
    signature: HeaderName,
    retry: HeaderName,
    hook_test: HeaderName,
}

static NAMES: LazyLock<Names> = LazyLock::new(|| {
    let name = |s: &'static str| HeaderName::from_bytes(s.as_bytes()).expect("a valid header name");
    Names {
        event: name(wire::EVENT),
        event_id: name(wire::EVENT_ID),
        signature: name(wire::SIGNATURE),
        retry: name(wire::RETRY),
        hook_test: name(wire::HOOK_TEST),
    }
});

/// The payload of `event` with no webhook's parts (an empty name, no `Properties`, a nil
/// `EventId`).
fn shared_parts<'a>(event: &'a StoredEvent, tenant: &'a str) -> PayloadRef<'a> {
    let timestamp =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.occurred) * 100)
            .map(NetDateTime::utc)
            .unwrap_or(NetDateTime::MIN);
    PayloadRef {
        event_id: Uuid::nil(),
        timestamp,
        changes: &event.changes,
        values: event.values.as_ref(),
        event: &event.event,
        primary_key: event.primary_key,
        entity: &event.entity,
        context_identifier: tenant,
        changed_by_associate_id: event.changed_by,
        webhook_name: "",
        // The template takes the event's JSON text of them.
        field_values: None,
        properties: None,
    }
}

/// One outgoing request, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Target.
    pub url: String,
    /// Exact body bytes (the signature covers them).
    pub body: Vec<u8>,
    /// Headers in SuperOffice's order, then the custom ones.
    pub headers: HeaderMap,
}

/// The shared parts of the payload of `event` (see [`PayloadTemplate`]): one for all the
/// deliveries of an event.
pub fn template_for(event: &StoredEvent, tenant: &str) -> PayloadTemplate {
    // FieldValues as the store keeps them: JSON text, put in as it is.
    PayloadTemplate::with_field_values_json(
        &shared_parts(event, tenant),
        event.field_values_json.as_deref(),
    )
}

/// Builds the request of spec 2 for a payload.
pub fn build(hook: &Webhook, payload: &PayloadRef<'_>, retry: i64, test: bool) -> Outgoing {
    build_body(
        hook,
        payload.to_bytes(),
        payload.event,
        payload.event_id,
        retry,
        test,
    )
}

/// Builds the request of spec 2 around a body already made (by [`PayloadTemplate::render`]
/// or [`PayloadRef::to_bytes`]) of the event named `event` with `EventId` `event_id`.
pub fn build_body(
    hook: &Webhook,
    body: Vec<u8>,
    event: &str,
    event_id: Uuid,
    retry: i64,
    test: bool,
) -> Outgoing {
    let names = &*NAMES;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
    );
    h.insert(header::USER_AGENT, user_agent_value());
    if let Ok(v) = HeaderValue::from_str(event) {
        h.insert(names.event.clone(), v);
    }
    let mut id = Uuid::encode_buffer();
    if let Ok(v) = HeaderValue::from_str(event_id.hyphenated().encode_lower(&mut id)) {
        h.insert(names.event_id.clone(), v);
    }
    if let Some(secret) = hook.secret.as_deref().filter(|s| !s.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(&sign(secret, &body)) {
            h.insert(names.signature.clone(), v);
        }
    }
    h.insert(names.retry.clone(), HeaderValue::from(retry));
    if test {
        h.insert(names.hook_test.clone(), HeaderValue::from_static("true"));
    }
    if let Some(custom) = &hook.headers {
        for (k, v) in custom {
            if is_reserved_header(k) {
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                h.insert(name, value);
            }
        }
    }
    Outgoing {
        url: hook.target_url.clone(),
        body,
        headers: h,
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status, when a response arrived.
    pub status: Option<u16>,
    /// Transport error, when none did.
    pub error: Option<String>,
    /// The response as received (status, headers, the start of the body), when one arrived.
    head: Option<Head>,
    /// `Retry-After`, if sent.
    pub retry_after: Option<Duration>,
    /// How long it took.
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
struct Head {
    status: http::StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    /// Status line, headers and body, at most 4000 characters; built only when asked for
    /// (the log keeps it for failed attempts, a success needs none).
    pub fn excerpt(&self) -> Option<String> {
        let head = self.head.as_ref()?;
        let mut excerpt = format!(
            "HTTP/1.1 {} {}\r\n",
            head.status.as_u16(),
            head.status.canonical_reason().unwrap_or("")
        );
        for (k, v) in &head.headers {
            excerpt.push_str(k.as_str());
            excerpt.push_str(": ");
            excerpt.push_str(&String::from_utf8_lossy(v.as_bytes()));
            excerpt.push_str("\r\n");
        }
        excerpt.push_str("\r\n");
        excerpt.push_str(&String::from_utf8_lossy(&head.body));
        Some(excerpt.chars().take(EXCERPT_MAX).collect())
    }
}

const EXCERPT_MAX: usize = 4000;

/// `User-Agent`, made once.
fn user_agent_value() -> HeaderValue {
    static VALUE: std::sync::OnceLock<Option<HeaderValue>> = std::sync::OnceLock::new();
    VALUE
        .get_or_init(|| HeaderValue::from_str(&user_agent()).ok())
        .clone()
        .unwrap_or_else(|| HeaderValue::from_static(wire::USER_AGENT_PRODUCT))
}

/// Sends a request; never fails (errors are part of the [`Response`]).
pub async fn send(client: &HttpClient, out: Outgoing) -> Response {
    let start = Instant::now();
    let failed = |error: String| Response {
        status: None,
        error: Some(error),
        head: None,
        retry_after: None,
        elapsed: start.elapsed(),
    };
    let uri = match client.uri(&out.url) {
        Ok(uri) => uri,
        Err(e) => return failed(format!("request error: TargetUrl {:?}: {e}", out.url)),
    };
    let mut req = http::Request::new(Full::new(Bytes::from(out.body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = out.headers;
    let (resp, lent) = match client.request(req).await {
        Ok(sent) => sent,
        Err(e) => return failed(e.describe()),
    };
    let (parts, mut body) = resp.into_parts();
    let retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::policy::parse_retry_after);
    // The body is ignored but kept for diagnosis: read at most what the excerpt holds, within
    // what is left of the total timeout.
    let mut kept = Vec::new();
    let deadline = tokio::time::Instant::from_std(start) + client.total;
    let mut whole = false;
    while kept.len() < EXCERPT_MAX {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                }
            }
            Ok(None) => {
                whole = true;
                break;
            }
            _ => break,
        }
    }
    // The connection serves the next request only after an answer read to its end; one cut
    // short (too long to keep, too slow, broken) closes with it.
    whole = whole || hyper::body::Body::is_end_stream(&body);
    drop(body);
    if whole {
        client.reuse(lent);
    }
    Response {
        status: Some(parts.status.as_u16()),
        error: None,
        head: Some(Head {
            status: parts.status,
            headers: parts.headers,
            body: kept,
        }),
        retry_after,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The request carries the payload crate's headers, in SuperOffice's order, and custom
    /// headers that do not replace them.
    #[test]
    fn a_request_carries_the_standard_headers_then_the_custom_ones() {
        let mut hook = Webhook::default_for(1);
        hook.target_url = "http://127.0.0.1:1/".into();
        hook.secret = Some("s".into());
        let mut custom = serde_json::Map::new();
        custom.insert("X-Custom".into(), "c".into());
        custom.insert("x-superoffice-event".into(), "forged".into());
        hook.headers = Some(custom);
        let out = build_body(
            &hook,
            b"{}".to_vec(),
            "contact.created",
            Uuid::nil(),
            2,
            true,
        );
        let names: Vec<&str> = out.headers.keys().map(HeaderName::as_str).collect();
        let mut want: Vec<String> = wire::STANDARD[..7]
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        want.push("x-custom".into());
        assert_eq!(names, want);
        let get = |name: &str| out.headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(get(wire::EVENT), "contact.created");
        assert_eq!(get(wire::RETRY), "2");
        assert_eq!(get(wire::HOOK_TEST), "true");
        assert_eq!(get(wire::CONTENT_TYPE), wire::CONTENT_TYPE_JSON);
        assert_eq!(get(wire::SIGNATURE), sign("s", b"{}"));
    }

    #[test]
    fn the_standard_headers_are_reserved_in_any_case() {
        for name in wire::STANDARD {
            assert!(is_reserved_header(&name.to_ascii_uppercase()), "{name}");
        }
        assert!(!is_reserved_header("X-Custom"));
    }
}
