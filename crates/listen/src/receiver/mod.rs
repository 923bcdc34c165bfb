//! The receiver: an axum server on its own task, and a handle to steer and inspect it.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::record::Received;

mod request;

use request::handle;

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
