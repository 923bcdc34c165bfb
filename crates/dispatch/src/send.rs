//! Building one request (body, headers, signature) and sending it.

use std::time::{Duration, Instant};

use crmhooks_payload::{headers, sign, NetDateTime, PayloadRef};
use crmhooks_store::{StoredEvent, Webhook};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use uuid::Uuid;

/// `User-Agent`: SuperOffice's product name and our version as four numbers.
pub fn user_agent() -> String {
    format!(
        "{}/{}.{}.{}.0",
        headers::USER_AGENT_PRODUCT,
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    )
}

/// Header names a webhook's custom `Headers` may not replace.
pub const RESERVED_HEADERS: [&str; 9] = [
    "content-type",
    "user-agent",
    "x-superoffice-event",
    "x-superoffice-eventid",
    "x-superoffice-signature",
    "x-superoffice-retry",
    "x-hook-test",
    "host",
    "content-length",
];

/// The payload of `event` for `hook`, borrowing from both.
pub fn payload_for<'a>(
    event: &'a StoredEvent,
    tenant: &'a str,
    hook: &'a Webhook,
    event_id: Uuid,
) -> PayloadRef<'a> {
    let timestamp =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.occurred) * 100)
            .map(NetDateTime::utc)
            .unwrap_or(NetDateTime::MIN);
    PayloadRef {
        event_id,
        timestamp,
        changes: &event.changes,
        values: event.values.as_ref(),
        event: &event.event,
        primary_key: event.primary_key,
        entity: &event.entity,
        context_identifier: tenant,
        changed_by_associate_id: event.changed_by,
        webhook_name: &hook.name,
        field_values: event.field_values.as_ref(),
        properties: hook.properties.as_ref().filter(|p| !p.is_empty()),
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

/// Builds the request of spec 2 for a payload.
pub fn build(hook: &Webhook, payload: &PayloadRef<'_>, retry: i64, test: bool) -> Outgoing {
    let body = payload.to_bytes();
    let mut h = HeaderMap::new();
    h.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static(headers::CONTENT_TYPE_JSON),
    );
    h.insert(reqwest::header::USER_AGENT, user_agent_value());
    if let Ok(v) = HeaderValue::from_str(payload.event) {
        h.insert(HeaderName::from_static("x-superoffice-event"), v);
    }
    let mut id = Uuid::encode_buffer();
    if let Ok(v) = HeaderValue::from_str(payload.event_id.hyphenated().encode_lower(&mut id)) {
        h.insert(HeaderName::from_static("x-superoffice-eventid"), v);
    }
    if let Some(secret) = hook.secret.as_deref().filter(|s| !s.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(&sign(secret, &body)) {
            h.insert(HeaderName::from_static("x-superoffice-signature"), v);
        }
    }
    h.insert(
        HeaderName::from_static("x-superoffice-retry"),
        HeaderValue::from(retry),
    );
    if test {
        h.insert(
            HeaderName::from_static("x-hook-test"),
            HeaderValue::from_static("true"),
        );
    }
    if let Some(custom) = &hook.headers {
        for (k, v) in custom {
            let lower = k.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
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
    status: reqwest::StatusCode,
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
        .unwrap_or_else(|| HeaderValue::from_static(headers::USER_AGENT_PRODUCT))
}

/// Sends a request; never fails (errors are part of the [`Response`]).
pub async fn send(client: &reqwest::Client, out: Outgoing) -> Response {
    let start = Instant::now();
    let result = client
        .post(&out.url)
        .headers(out.headers)
        .body(out.body)
        .send()
        .await;
    match result {
        Err(e) => Response {
            status: None,
            error: Some(describe(&e)),
            head: None,
            retry_after: None,
            elapsed: start.elapsed(),
        },
        Ok(mut resp) => {
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::policy::parse_retry_after);
            let headers = std::mem::take(resp.headers_mut());
            // The body is ignored but kept for diagnosis; read at most what the excerpt holds.
            let mut body = Vec::new();
            while body.len() < EXCERPT_MAX {
                match resp.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            Response {
                status: Some(status.as_u16()),
                error: None,
                head: Some(Head {
                    status,
                    headers,
                    body,
                }),
                retry_after,
                elapsed: start.elapsed(),
            }
        }
    }
}

/// A readable transport error: the chain of causes, which tells timeouts, refused connections
/// and TLS failures apart.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request error"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
