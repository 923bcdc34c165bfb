//! Building one request (body, headers, signature) and sending it.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crmhooks_payload::{headers as wire, sign, NetDateTime, PayloadRef, PayloadTemplate};
use crmhooks_store::{StoredEvent, Webhook};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};

use crate::client::HttpClient;
use uuid::Uuid;

/// `User-Agent`: SuperOffice's product name and our version as four numbers.
pub fn user_agent() -> String {
    user_agent_with(&default_user_agent_version())
}

/// crmhooks' version as the four numbers of a .NET version (`0.1.0.0`): the default of
/// `delivery.user_agent_version`.
pub fn default_user_agent_version() -> String {
    format!(
        "{}.{}.{}.0",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    )
}

/// `User-Agent` with `version` after SuperOffice's product name (`NetServer-Webhook/8.8.6684.1719`
/// makes a receiver that checks the version see what SuperOffice sends).
pub fn user_agent_with(version: &str) -> String {
    format!("{}/{version}", wire::USER_AGENT_PRODUCT)
}

/// Whether `version` may follow `NetServer-Webhook/`: letters, digits, `.`, `-`, `+`, `_`, at
/// most 64 of them (a product version token of RFC 9110, kept plain).
pub fn is_user_agent_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
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

/// Headers that frame the message or concern the connection: a definition's custom `Headers`
/// may not set them (they would break the request or the connection it travels on).
pub const HOP_BY_HOP_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
];

/// Most custom `Headers` a definition may carry.
pub const MAX_CUSTOM_HEADERS: usize = 32;

/// Most bytes the custom `Headers` of a definition may take, names and values together.
pub const MAX_CUSTOM_HEADER_BYTES: usize = 8 * 1024;

/// Checks a definition's custom `Headers` (what a save refuses, and what a delivery of a
/// definition stored before these limits fails with): at most [`MAX_CUSTOM_HEADERS`] of them
/// in [`MAX_CUSTOM_HEADER_BYTES`], valid HTTP names and values (strings), none of SuperOffice's
/// own headers, none that frames the message or concerns the connection.
pub fn check_custom_headers(
    custom: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    if custom.len() > MAX_CUSTOM_HEADERS {
        return Err(format!(
            "{} custom headers; at most {MAX_CUSTOM_HEADERS} are allowed",
            custom.len()
        ));
    }
    let mut bytes = 0usize;
    for (name, value) in custom {
        let lower = name.to_ascii_lowercase();
        if is_reserved_header(name) {
            return Err(format!(
                "{name:?} is set by the server and may not be replaced"
            ));
        }
        if HOP_BY_HOP_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{name:?} frames the message or concerns the connection and may not be set"
            ));
        }
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{name:?} is not a valid header name"));
        }
        let serde_json::Value::String(text) = value else {
            return Err(format!("the value of {name:?} must be a string"));
        };
        if HeaderValue::from_str(text).is_err() {
            return Err(format!(
                "the value of {name:?} holds characters a header may not carry"
            ));
        }
        bytes = bytes.saturating_add(name.len() + text.len());
    }
    if bytes > MAX_CUSTOM_HEADER_BYTES {
        return Err(format!(
            "custom headers take {bytes} bytes; at most {MAX_CUSTOM_HEADER_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// The payload of `event` with no webhook's parts (an empty name, no `Properties`, a nil
/// `EventId`). A state event, kept under the name subscribed to (`webhook{id}.<verb>`, which
/// the header carries), says `webhook.<verb>` in its body and has no `Entity` (spec 6.1).
fn shared_parts<'a>(
    event: &'a StoredEvent,
    tenant: &'a str,
    body_name: Option<&'a str>,
) -> PayloadRef<'a> {
    let timestamp =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.occurred) * 100)
            .map(NetDateTime::utc)
            .unwrap_or(NetDateTime::MIN);
    PayloadRef {
        event_id: Uuid::nil(),
        timestamp,
        changes: &event.changes,
        values: event.values.as_ref(),
        event: body_name.unwrap_or(&event.event),
        primary_key: event.primary_key,
        entity: if body_name.is_some() {
            ""
        } else {
            &event.entity
        },
        context_identifier: tenant,
        changed_by_associate_id: event.changed_by,
        webhook_name: "",
        // The template takes the event's JSON text of them.
        field_values: None,
        properties: None,
    }
}

/// The entity the store files webhook state events under (an event signalled by a client is
/// filed under the part of its name before the dot, so `webhook66.started` signalled by hand
/// is not taken for one).
const STATE_EVENT_ENTITY: &str = "webhook";

/// One outgoing request, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Target.
    pub url: String,
    /// Exact body bytes (the signature covers them).
    pub body: Vec<u8>,
    /// Headers in SuperOffice's order, then the custom ones (`Host` and `Content-Length`
    /// follow when it is sent).
    pub headers: HeaderMap,
    /// The custom header names that go out spelled as the definition spells them, where title
    /// case would spell them otherwise (see [`crate::header_case`]).
    pub own_case: Vec<String>,
}

/// The shared parts of the payload of `event` (see [`PayloadTemplate`]): one for all the
/// deliveries of an event.
pub fn template_for(event: &StoredEvent, tenant: &str) -> PayloadTemplate {
    let state_event = if event.entity == STATE_EVENT_ENTITY {
        crmhooks_payload::state_event_body_name(&event.event)
    } else {
        None
    };
    // FieldValues as the store keeps them: JSON text, put in as it is.
    PayloadTemplate::with_field_values_json(
        &shared_parts(event, tenant, state_event.as_deref()),
        event.field_values_json.as_deref(),
    )
}

/// Builds the request of spec 2 for a payload; an error when the definition's custom headers
/// break the limits of [`check_custom_headers`].
pub fn build(
    hook: &Webhook,
    payload: &PayloadRef<'_>,
    retry: i64,
    test: bool,
    user_agent: &HeaderValue,
) -> Result<Outgoing, String> {
    build_body(
        hook,
        payload.to_bytes(),
        payload.event,
        payload.event_id,
        retry,
        test,
        user_agent,
    )
}

/// Builds the request of spec 2 around a body already made (by [`PayloadTemplate::render`]
/// or [`PayloadRef::to_bytes`]) of the event named `event` with `EventId` `event_id`. A
/// definition whose custom headers break the limits of [`check_custom_headers`] (stored before
/// they were checked) gets no request: the attempt fails with the reason. `event` is the name
/// the header carries (for a state event the subscribed `webhook{id}.<verb>`, which the body
/// does not).
pub fn build_body(
    hook: &Webhook,
    body: Vec<u8>,
    event: &str,
    event_id: Uuid,
    retry: i64,
    test: bool,
    user_agent: &HeaderValue,
) -> Result<Outgoing, String> {
    if let Some(custom) = &hook.headers {
        check_custom_headers(custom).map_err(|e| format!("the webhook's Headers: {e}"))?;
    }
    let names = &*NAMES;
    let mut h = HeaderMap::with_capacity(8 + hook.headers.as_ref().map_or(0, |c| c.len()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::CONTENT_TYPE_JSON),
    );
    h.insert(header::USER_AGENT, user_agent.clone());
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
    let own_case = hook
        .headers
        .as_ref()
        .map(|custom| crate::header_case::own_case_names(custom.keys().map(String::as_str)))
        .unwrap_or_default();
    Ok(Outgoing {
        url: hook.target_url.clone(),
        body,
        headers: h,
        own_case,
    })
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
    /// No request went out (or no answer came back): `error` says why.
    pub fn failed(error: String, elapsed: Duration) -> Self {
        Response {
            status: None,
            error: Some(error),
            head: None,
            retry_after: None,
            elapsed,
        }
    }

    /// A header of the answer, when one arrived and has it as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.as_ref()?.headers.get(name)?.to_str().ok()
    }

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

/// `User-Agent` for `version` as a header value (checked by [`is_user_agent_version`]; a
/// value a header cannot carry falls back to the product name alone).
pub fn user_agent_value(version: &str) -> HeaderValue {
    HeaderValue::from_str(&user_agent_with(version))
        .unwrap_or_else(|_| HeaderValue::from_static(wire::USER_AGENT_PRODUCT))
}

/// Sends a request; never fails (errors are part of the [`Response`]).
pub async fn send(client: &HttpClient, out: Outgoing) -> Response {
    let start = Instant::now();
    let failed = |error: String| Response::failed(error, start.elapsed());
    let uri = match client.uri(&out.url) {
        Ok(uri) => uri,
        Err(e) => return failed(format!("request error: TargetUrl {:?}: {e}", out.url)),
    };
    let mut req = http::Request::new(Full::new(Bytes::from(out.body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = out.headers;
    if let Some(ext) = crate::header_case::case_extensions(&out.own_case).await {
        *req.extensions_mut() = (*ext).clone();
    }
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
    use super::*;
    use serde_json::{json, Map, Value};

    fn hook_with(headers: Map<String, Value>) -> Webhook {
        let mut hook = Webhook::default_for(crmhooks_store::TenantId::new(1));
        hook.target_url = "https://example.com/hook".into();
        hook.headers = Some(headers);
        hook
    }

    fn ua() -> HeaderValue {
        user_agent_value(&default_user_agent_version())
    }

    fn headers(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn custom_headers_within_the_limits_are_sent() {
        let hook = hook_with(headers(&[
            ("X-Api-Key", json!("k")),
            ("X-Tenant", json!("t")),
        ]));
        let out = build_body(
            &hook,
            b"{}".to_vec(),
            "contact.created",
            Uuid::nil(),
            0,
            false,
            &ua(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.headers.get("x-api-key").map(|v| v.as_bytes()),
            Some(&b"k"[..])
        );
    }

    /// What a save refuses, and what fails a delivery of a definition stored before the limits
    /// (instead of a panic: a HeaderMap holds at most 32,768 entries).
    #[test]
    fn custom_headers_beyond_the_limits_fail_the_request_without_a_panic() {
        let many: Map<String, Value> = (0..25_000)
            .map(|i| (format!("X-H{i}"), json!("v")))
            .collect();
        for (custom, why) in [
            (many, "at most 32"),
            (
                headers(&[("Connection", json!("close"))]),
                "concerns the connection",
            ),
            (
                headers(&[("transfer-encoding", json!("chunked"))]),
                "frames the message",
            ),
            (
                headers(&[("Expect", json!("100-continue"))]),
                "may not be set",
            ),
            (headers(&[("Host", json!("evil"))]), "set by the server"),
            (
                headers(&[("content-length", json!("1"))]),
                "set by the server",
            ),
            (
                headers(&[(wire::SIGNATURE, json!("x"))]),
                "set by the server",
            ),
            (
                headers(&[("X-Big", json!("x".repeat(9000)))]),
                "at most 8192",
            ),
            (
                headers(&[("Bad Name", json!("x"))]),
                "not a valid header name",
            ),
            (
                headers(&[("X-Line", json!("a\r\nInjected: 1"))]),
                "characters a header",
            ),
            (headers(&[("X-Num", json!(1))]), "must be a string"),
        ] {
            let err = check_custom_headers(&custom).err().unwrap_or_default();
            assert!(err.contains(why), "{why}: {err}");
            let hook = hook_with(custom);
            let built = build_body(&hook, b"{}".to_vec(), "test", Uuid::nil(), 0, true, &ua());
            assert!(built.is_err(), "{why}");
        }
    }

    /// The request carries the payload crate's headers, in SuperOffice's order, then the
    /// custom ones.
    #[test]
    fn a_request_carries_the_standard_headers_then_the_custom_ones() {
        let mut hook = hook_with(headers(&[("X-Custom", json!("c"))]));
        hook.secret = Some("s".into());
        let out = build_body(
            &hook,
            b"{}".to_vec(),
            "contact.created",
            Uuid::nil(),
            2,
            true,
            &ua(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = out.headers.keys().map(HeaderName::as_str).collect();
        let mut want: Vec<String> = wire::STANDARD[..7]
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        want.push("x-custom".into());
        assert_eq!(names, want);
        let get = |name: &str| out.headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get(wire::EVENT), Some("contact.created"));
        assert_eq!(get(wire::RETRY), Some("2"));
        assert_eq!(get(wire::HOOK_TEST), Some("true"));
        assert_eq!(get(wire::CONTENT_TYPE), Some(wire::CONTENT_TYPE_JSON));
        assert_eq!(get(wire::SIGNATURE), Some(sign("s", b"{}").as_str()));
    }

    #[test]
    fn the_standard_headers_are_reserved_in_any_case() {
        for name in wire::STANDARD {
            assert!(is_reserved_header(&name.to_ascii_uppercase()), "{name}");
        }
        assert!(!is_reserved_header("X-Custom"));
    }
}
