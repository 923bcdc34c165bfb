//! What the receiver keeps about each request, and how it prints and logs it.

use std::fmt::{self, Write as _};
use std::time::Instant;

use bytes::Bytes;
use crmhooks_payload::{headers, WebhookPayload};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The outcome of the signature check of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A secret is set and the signature matches the body.
    Valid,
    /// A secret is set and the signature is malformed or does not match; says why.
    Invalid(String),
    /// No `X-SuperOffice-Signature` came with the request (answered 401 when a secret is set).
    Unsigned,
    /// A signature came, but no secret is set to check it with.
    NotChecked,
}

impl Verdict {
    /// A stable code for logs: `valid`, `invalid`, `unsigned` or `not_checked`.
    pub fn code(&self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unsigned => "unsigned",
            Verdict::NotChecked => "not_checked",
        }
    }

    /// Whether the signature was checked and matches.
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid)
    }
}

impl fmt::Display for Verdict {
    /// `ok`, `BAD (reason)`, `unsigned` or `not checked`, as printed per request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid => f.write_str("ok"),
            Verdict::Invalid(why) => write!(f, "BAD ({why})"),
            Verdict::Unsigned => f.write_str("unsigned"),
            Verdict::NotChecked => f.write_str("not checked"),
        }
    }
}

/// One request as the receiver saw and answered it.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived (monotonic, for measuring intervals such as retry delays).
    pub at: Instant,
    /// When it arrived (wall clock, UTC).
    pub received_at: OffsetDateTime,
    /// The HTTP method (anything but `POST` is answered 405).
    pub method: String,
    /// The request path, with the query string if any.
    pub path: String,
    /// The headers, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body (empty when it was over the size limit).
    pub body: Bytes,
    /// The parsed body, when it is a webhook payload.
    pub payload: Option<WebhookPayload>,
    /// The signature check.
    pub verdict: Verdict,
    /// Whether an earlier request already carried this `EventId` (retries do, legitimately).
    pub duplicate: bool,
    /// The status the receiver answered.
    pub answered: u16,
    /// Things a SuperOffice receiver would trip over (a missing header, a header that disagrees
    /// with the body, …) and why a request was refused. Empty for a clean call.
    pub notes: Vec<String>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `X-SuperOffice-Retry` header as a number.
    pub fn retry(&self) -> Option<u32> {
        self.header(headers::RETRY)?.trim().parse().ok()
    }

    /// Whether this is a test call (`X-Hook-Test: true`, or a body `Event` of `test`).
    pub fn is_test(&self) -> bool {
        is_hook_test(self.header(headers::HOOK_TEST))
            || self.payload.as_ref().is_some_and(WebhookPayload::is_test)
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON line written to the `--out` file: `received_at` (RFC 3339), `method`, `path`,
    /// `headers` (an object; repeated names joined with `, `), `body` (the JSON value, or a
    /// string when the body is not JSON), `verdict` ([`Verdict::code`]), `verdict_reason` (only
    /// for `invalid`), `duplicate`, `status`, and `notes` (only when there are any).
    pub fn to_json_line(&self) -> String {
        let mut headers = Map::new();
        for (name, value) in &self.headers {
            match headers.get_mut(name) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(value);
                }
                _ => {
                    headers.insert(name.clone(), Value::String(value.clone()));
                }
            }
        }
        let body = serde_json::from_slice::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(self.body_text()));
        let received_at = self
            .received_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut line = Map::new();
        line.insert("received_at".into(), received_at.into());
        line.insert("method".into(), self.method.clone().into());
        line.insert("path".into(), self.path.clone().into());
        line.insert("headers".into(), Value::Object(headers));
        line.insert("body".into(), body);
        line.insert("verdict".into(), self.verdict.code().into());
        if let Verdict::Invalid(why) = &self.verdict {
            line.insert("verdict_reason".into(), why.clone().into());
        }
        line.insert("duplicate".into(), self.duplicate.into());
        line.insert("status".into(), self.answered.into());
        if !self.notes.is_empty() {
            line.insert("notes".into(), self.notes.clone().into());
        }
        Value::Object(line).to_string()
    }

    /// The human-readable lines printed per request (the first one always; one more per note).
    pub fn to_display_lines(&self) -> String {
        let mut s = String::new();
        let t = self.received_at;
        let _ = write!(
            s,
            "{:02}:{:02}:{:02}.{:03} {} {} -> {}",
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond(),
            self.method,
            self.path,
            self.answered
        );
        if self.is_test() {
            s.push_str(" TEST");
        }
        match &self.payload {
            Some(p) => {
                let _ = write!(
                    s,
                    " {} EventId={} pk={} changes=[{}]",
                    p.event,
                    p.event_id,
                    p.primary_key,
                    p.changes.join(",")
                );
            }
            None => {
                if let Some(event) = self.header(headers::EVENT) {
                    let _ = write!(s, " {event}");
                }
                if let Some(id) = self.header(headers::EVENT_ID) {
                    let _ = write!(s, " EventId={id}");
                }
            }
        }
        match self.header(headers::RETRY) {
            Some(r) => {
                let _ = write!(s, " retry {r}");
            }
            None => s.push_str(" retry -"),
        }
        let _ = write!(s, " signature {}", self.verdict);
        if self.duplicate {
            s.push_str(" DUPLICATE");
        }
        for note in &self.notes {
            let _ = write!(s, "\n    ! {note}");
        }
        s
    }
}

pub(crate) fn is_hook_test(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}
