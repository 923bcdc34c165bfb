//! The receiver: an axum server on its own task, and a handle to steer and inspect it.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use axum::Router;
use bytes::Bytes;
use crmhooks_payload::{headers, verify, SignatureError, WebhookPayload};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::record::{is_hook_test, Received, Verdict};

/// How a [`Receiver`] checks and answers requests.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// The shared secret; `None` (or empty) means signatures are not checked.
    pub secret: Option<String>,
    /// The status to answer webhook calls with (default 200).
    pub status: u16,
    /// Answer the first this-many webhook calls with 500, then `status`. Test calls
    /// (`X-Hook-Test: true`) and refused requests (401/400/413/405) do not count.
    pub fail_first: u64,
    /// Append one JSON line per request to this file (see [`Received::to_json_line`]).
    pub out: Option<PathBuf>,
    /// Print each request to stdout.
    pub print: bool,
    /// Bodies larger than this are refused with 413 (default 1 MiB).
    pub max_body: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            secret: None,
            status: 200,
            fail_first: 0,
            out: None,
            print: false,
            max_body: 1024 * 1024,
        }
    }
}

/// A running webhook receiver; a cheap handle that can be cloned.
///
/// Every request is answered as follows, in order:
/// 1. a method other than `POST` → 405;
/// 2. a body over `max_body` → 413;
/// 3. with a secret set, a missing, malformed or wrong `X-SuperOffice-Signature` → 401;
/// 4. a body that is not a webhook payload → 400 (only checked while bodies are recorded,
///    printed or written to `out`: the benchmark mode parses nothing);
/// 5. a test call (`X-Hook-Test: true` or body `Event` `test`) → the configured status, so a
///    webhook can always be saved while `fail_first` or a script is pending;
/// 6. otherwise: 500 while `fail_first` lasts, then the scripted statuses, then the configured
///    status.
///
/// Refusals (1–4) carry a JSON body `{"Error": …, "ErrorType": …, "Message": …}`. Every request
/// is recorded and counted, refused or not.
///
/// An `EventId` seen before (from the body, or from the `X-SuperOffice-EventId` header when the
/// body is not parsed) marks the request as a duplicate, answered with `X-Webhook-Duplicate:
/// true` when it succeeds; retries reuse their `EventId`, so a retry of a failed call is a
/// duplicate too. Requests refused in steps 1–4 are not remembered.
///
/// The server stops when [`Receiver::shutdown`] is called or when the last handle is dropped.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

struct Shared {
    secret: Option<String>,
    max_body: usize,
    print: bool,
    out: Option<Mutex<File>>,
    status: AtomicU16,
    fail_remaining: AtomicU64,
    script: Mutex<VecDeque<u16>>,
    by_key: Mutex<std::collections::HashMap<i64, VecDeque<u16>>>,
    delay_nanos: AtomicU64,
    /// Requests being handled now, and the most at once.
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    record: AtomicBool,
    records: Mutex<Vec<Received>>,
    count: AtomicUsize,
    duplicates: AtomicUsize,
    seen: Mutex<HashSet<Uuid>>,
    arrived: Notify,
}

/// Locks, ignoring poisoning: every critical section leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long a graceful shutdown may wait for requests in flight (e.g. delayed answers).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Receiver {
    /// Binds `addr` (port 0 picks a free port) and serves on a new tokio task.
    pub async fn start(addr: SocketAddr, config: ReceiverConfig) -> anyhow::Result<Receiver> {
        let out = match &config.out {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {} for appending", path.display()))?,
            )),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let shared = Arc::new(Shared {
            secret: config.secret.filter(|s| !s.is_empty()),
            max_body: config.max_body,
            print: config.print,
            out,
            status: AtomicU16::new(config.status),
            fail_remaining: AtomicU64::new(config.fail_first),
            script: Mutex::new(VecDeque::new()),
            by_key: Mutex::new(std::collections::HashMap::new()),
            delay_nanos: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            record: AtomicBool::new(true),
            records: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            seen: Mutex::new(HashSet::new()),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = listener.tap_io(|tcp| {
            // Small request/response exchanges on kept-alive connections: no Nagle delays.
            let _ = tcp.set_nodelay(true);
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Stops on shutdown() and when the last handle drops the sender.
                    let _ = stop_rx.await;
                })
                .await
        });
        Ok(Receiver {
            inner: Arc::new(Handle {
                shared,
                addr,
                stop: Mutex::new(Some(stop_tx)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The bound address (with the actual port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A URL on this receiver: `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.inner.addr)
    }

    /// Every request recorded so far, in arrival order (none while recording is off).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.shared.records).clone()
    }

    /// How many requests arrived (recorded or not); a single atomic load.
    pub fn count(&self) -> usize {
        self.inner.shared.count.load(Ordering::Acquire)
    }

    /// How many requests carried an `EventId` that had been seen before.
    pub fn duplicates(&self) -> usize {
        self.inner.shared.duplicates.load(Ordering::Acquire)
    }

    /// Waits until at least `n` requests arrived, or `timeout` passed, and returns the recorded
    /// ones (check the length: on timeout there may be fewer than `n`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.shared.arrived.notified();
            tokio::pin!(notified);
            // Register before checking, so an arrival in between is not missed.
            notified.as_mut().enable();
            if self.count() >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.received()
    }

    /// Answers webhook calls with `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.inner.shared.status.store(status, Ordering::Release);
    }

    /// Answers the next webhook calls with these statuses, in order, then falls back to the
    /// configured status. Replaces any script still pending. Test calls do not consume it.
    pub fn script(&self, statuses: impl IntoIterator<Item = u16>) {
        let mut script = lock(&self.inner.shared.script);
        script.clear();
        script.extend(statuses);
    }

    /// Answers calls whose payload has this `PrimaryKey` with these statuses, in order, before
    /// anything else applies (to fail one contact's events while others succeed). Needs
    /// recording on (the payload is parsed then).
    pub fn script_primary_key(&self, primary_key: i64, statuses: impl IntoIterator<Item = u16>) {
        lock(&self.inner.shared.by_key).insert(primary_key, statuses.into_iter().collect());
    }

    /// The most requests this receiver was handling at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.inner.shared.peak_in_flight.load(Ordering::Acquire)
    }

    /// Sleeps this long before answering each request (the request is recorded at once).
    pub fn set_delay(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner
            .shared
            .delay_nanos
            .store(nanos, Ordering::Release);
    }

    /// Whether to keep every request for [`Receiver::received`] (the default). Off, and with
    /// neither printing nor an `out` file, the receiver only counts: it checks the signature
    /// (when a secret is set) and de-duplicates by the `X-SuperOffice-EventId` header, but
    /// does not parse bodies.
    pub fn set_record_bodies(&self, on: bool) {
        self.inner.shared.record.store(on, Ordering::Release);
    }

    /// Stops accepting, lets requests in flight finish (for up to 5 s), and waits for the
    /// server task to end.
    pub async fn shutdown(self) {
        if let Some(stop) = lock(&self.inner.stop).take() {
            let _ = stop.send(());
        }
        let task = lock(&self.inner.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.inner.addr)
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

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

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
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
