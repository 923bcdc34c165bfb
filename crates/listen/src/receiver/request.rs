//! One request, from the socket to its answer: the checks in order, the refusals with their
//! JSON body, what is recorded, and the notes on how the request differs from SuperOffice's.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crmhooks_payload::{headers, verify, SignatureError, WebhookPayload};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::record::{is_hook_test, Received, Verdict};

use super::{lock, Shared};

/// A request refused before the configured status applies.
struct Refusal {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            error_type,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "Error": self.status.canonical_reason().unwrap_or("Error"),
            "ErrorType": self.error_type,
            "Message": self.message,
        });
        let mut res = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        res
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(h: &HeaderMap, body: Body, max: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the body is larger than the limit of {max} bytes"),
        )
    };
    let declared =
        header_str(h, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "BodyUnreadable",
            format!("the body could not be read: {e}"),
        )),
    }
}

impl Shared {
    /// Whether anything beyond counting is wanted for each request.
    fn detailed(&self) -> bool {
        self.print || self.out.is_some() || self.record.load(Ordering::Acquire)
    }

    fn check_signature(&self, h: &HeaderMap, body: &[u8]) -> Result<Verdict, (Verdict, Refusal)> {
        let signature = h
            .get(headers::SIGNATURE)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let Some(secret) = &self.secret else {
            return Ok(if signature.is_some() {
                Verdict::NotChecked
            } else {
                Verdict::Unsigned
            });
        };
        match verify(secret, body, signature) {
            Ok(()) => Ok(Verdict::Valid),
            Err(e) => {
                let verdict = match e {
                    SignatureError::Missing => Verdict::Unsigned,
                    ref other => Verdict::Invalid(other.to_string()),
                };
                Err((
                    verdict,
                    Refusal::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
                ))
            }
        }
    }

    /// Picks the answer of a webhook call that passed every check.
    fn answer_status(&self, is_test: bool, primary_key: Option<i64>) -> u16 {
        let configured = self.status.load(Ordering::Acquire);
        if is_test {
            return configured;
        }
        if let Some(pk) = primary_key {
            let mut by_key = lock(&self.by_key);
            if let Some(q) = by_key.get_mut(&pk) {
                if let Some(status) = q.pop_front() {
                    return status;
                }
            }
        }
        let failing = self
            .fail_remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return 500;
        }
        lock(&self.script).pop_front().unwrap_or(configured)
    }

    /// Whether `id` was seen before; remembers it.
    fn is_duplicate(&self, id: Uuid) -> bool {
        let dup = !lock(&self.seen).insert(id);
        if dup {
            self.duplicates.fetch_add(1, Ordering::AcqRel);
        }
        dup
    }

    fn publish(&self, received: Received) {
        if self.print {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", received.to_display_lines());
            let _ = stdout.flush();
        }
        if let Some(out) = &self.out {
            let mut line = received.to_json_line();
            line.push('\n');
            if let Err(e) = lock(out).write_all(line.as_bytes()) {
                tracing::warn!("cannot append to the --out file: {e}");
            }
        }
        if self.record.load(Ordering::Acquire) {
            lock(&self.records).push(received);
        }
    }
}

/// Differences from what SuperOffice sends, worth pointing out to a receiver author.
fn wire_notes(h: &HeaderMap, payload: &WebhookPayload, notes: &mut Vec<String>) {
    match header_str(h, headers::EVENT) {
        None => notes.push(format!("no {} header", headers::EVENT)),
        // A state event's header names the subscription (`webhook66.errors`), its body the
        // documented `webhook.errors`.
        Some(e)
            if e != payload.event
                && crmhooks_payload::state_event_body_name(e).as_deref()
                    != Some(payload.event.as_str()) =>
        {
            notes.push(format!(
                "{} {e:?} differs from the body's Event {:?}",
                headers::EVENT,
                payload.event
            ))
        }
        Some(_) => {}
    }
    match header_str(h, headers::EVENT_ID) {
        None => notes.push(format!("no {} header", headers::EVENT_ID)),
        Some(id) if id.trim().parse::<Uuid>().ok() != Some(payload.event_id) => {
            notes.push(format!(
                "{} {id:?} differs from the body's EventId {}",
                headers::EVENT_ID,
                payload.event_id
            ))
        }
        Some(_) => {}
    }
    if !header_str(h, header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"))
    {
        notes.push(format!(
            "Content-Type is not {}",
            headers::CONTENT_TYPE_JSON
        ));
    }
    let product = format!("{}/", headers::USER_AGENT_PRODUCT);
    if !header_str(h, header::USER_AGENT.as_str()).is_some_and(|ua| ua.starts_with(&product)) {
        notes.push(format!("User-Agent is not {product}<version>"));
    }
    if let Some(r) = header_str(h, headers::RETRY) {
        if r.trim().parse::<u32>().is_err() {
            notes.push(format!("{} {r:?} is not a number", headers::RETRY));
        }
    }
    let hook_test = is_hook_test(header_str(h, headers::HOOK_TEST));
    if hook_test != payload.is_test() {
        notes.push(if hook_test {
            format!(
                "{}: true on a {:?} event",
                headers::HOOK_TEST,
                payload.event
            )
        } else {
            format!("test event without {}: true", headers::HOOK_TEST)
        });
    }
}

/// Counts a request in [`Shared::in_flight`] while it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let _in_flight = InFlight::new(&shared);
    let at = Instant::now();
    let received_at = OffsetDateTime::now_utc();
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let detailed = shared.detailed();

    let mut verdict = Verdict::Unsigned;
    let mut payload = None;
    let mut duplicate = false;
    let mut notes = Vec::new();
    let mut bytes = Bytes::new();

    let outcome: Result<u16, Refusal> = async {
        if parts.method != Method::POST {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{} is not accepted: webhooks are POSTed", parts.method),
            ));
        }
        bytes = read_body(h, body, shared.max_body).await?;
        verdict = match shared.check_signature(h, &bytes) {
            Ok(v) => v,
            Err((v, refusal)) => {
                verdict = v;
                return Err(refusal);
            }
        };
        let event_id = if detailed {
            let p = WebhookPayload::from_slice(&bytes).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidPayload",
                    format!("the body is not a webhook payload: {e}"),
                )
            })?;
            wire_notes(h, &p, &mut notes);
            let id = p.event_id;
            payload = Some(p);
            Some(id)
        } else {
            header_str(h, headers::EVENT_ID).and_then(|v| v.trim().parse::<Uuid>().ok())
        };
        if let Some(id) = event_id {
            duplicate = shared.is_duplicate(id);
        }
        let is_test = is_hook_test(header_str(h, headers::HOOK_TEST))
            || payload.as_ref().is_some_and(WebhookPayload::is_test);
        Ok(shared.answer_status(is_test, payload.as_ref().map(|p| p.primary_key)))
    }
    .await;

    let answered = match &outcome {
        Ok(status) => *status,
        Err(refusal) => {
            notes.push(format!("refused: {}", refusal.message));
            refusal.status.as_u16()
        }
    };

    if detailed {
        let headers = h
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        shared.publish(Received {
            at,
            received_at,
            method: parts.method.to_string(),
            path,
            headers,
            body: bytes,
            payload,
            verdict,
            duplicate,
            answered,
            notes,
        });
    }
    shared.count.fetch_add(1, Ordering::AcqRel);
    shared.arrived.notify_waiters();

    let delay = shared.delay_nanos.load(Ordering::Acquire);
    if delay > 0 {
        tokio::time::sleep(Duration::from_nanos(delay)).await;
    }

    match outcome {
        Err(refusal) => refusal.into_response(),
        Ok(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_success() && duplicate {
                // Tells a sender (crmhooks check-receiver) that this EventId was seen before
                // and not processed again.
                (status, [("x-webhook-duplicate", "true")]).into_response()
            } else if status.is_success() {
                status.into_response()
            } else {
                let text = format!(
                    "crmhooks listen: answering {} as configured\n",
                    status.as_u16()
                );
                (status, text).into_response()
            }
        }
    }
}
