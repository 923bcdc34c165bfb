//! The load: API clients that create contacts and change each a few times, each over one
//! keep-alive connection of hyper's own client (so that the load generator takes as little of
//! the machine as it can); the requests and the reading of the answers are `crmhooks_client`'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use crmhooks_client::{routes, ApiKey, BoxError, ContactBody, NewWebhook, Transport};
use crmhooks_listen::counting::CountingReceiver;
use crmhooks_payload::ContactEvent;
use http_body_util::Full;
use hyper::StatusCode;

use crate::args::BenchArgs;
use crate::conn::{loopback_url, Conn};
use crate::BENCH_SECRET;

/// The server's API, as the load's clients see it: where it listens and the key. Each client
/// talks to it over a connection of its own ([`Api::connect`]).
#[derive(Clone)]
pub(crate) struct Api {
    addr: SocketAddr,
    key: ApiKey,
}

/// One API client: the API and its keep-alive connection, opened at the first call and again
/// after a failed one.
pub(crate) struct ApiConn {
    api: Api,
    conn: Option<Conn>,
}

impl Api {
    /// The API at `base` (`http://IP:PORT`, as the server child prints it) with `key`.
    pub(crate) fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        let (addr, _) = loopback_url(base)?;
        Ok(Api {
            addr,
            key: ApiKey::new(key)?,
        })
    }

    /// A client of its own (connected at its first call).
    pub(crate) fn connect(&self) -> ApiConn {
        ApiConn {
            api: self.clone(),
            conn: None,
        }
    }
}

impl Transport for ApiConn {
    /// Requests carry only their path: the connection goes to the one server.
    fn base(&self) -> &str {
        ""
    }

    fn key(&self) -> &ApiKey {
        &self.api.key
    }

    async fn send(
        &mut self,
        request: hyper::http::Request<Bytes>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let conn = Conn::in_slot(&mut self.conn, self.api.addr).await?;
        let answer =
            tokio::time::timeout(Duration::from_secs(60), conn.send(request.map(Full::new)))
                .await
                .context("no answer in 60 s")
                .and_then(|a| a);
        answer.map_err(|e| {
            // The connection may be mid-answer: the next call opens another.
            self.conn = None;
            e.into()
        })
    }
}

impl ApiConn {
    /// The load's webhooks: subscribed to what the load fires, each its own path, signed.
    pub(crate) async fn create_webhooks(
        &mut self,
        receiver: &CountingReceiver,
        n: usize,
    ) -> anyhow::Result<()> {
        let events = [ContactEvent::Created, ContactEvent::Changed];
        self.define_webhooks(receiver, n, ("bench", "hook"), &events, true)
            .await
            .context("cannot create the benchmark's webhooks")
    }

    /// Webhooks that exist but receive nothing from the load.
    pub(crate) async fn create_idle_webhooks(
        &mut self,
        receiver: &CountingReceiver,
        n: usize,
    ) -> anyhow::Result<()> {
        let events = [ContactEvent::Deleted];
        self.define_webhooks(receiver, n, ("idle", "idle"), &events, false)
            .await
            .context("cannot create the idle webhooks")
    }

    /// Defines `n` Active webhooks named `{name} k` at `/{path}/k` on the receiver, k = 1..n.
    async fn define_webhooks(
        &mut self,
        receiver: &CountingReceiver,
        n: usize,
        (name, path): (&str, &str),
        events: &[ContactEvent],
        signed: bool,
    ) -> anyhow::Result<()> {
        for k in 1..=n {
            let mut hook = NewWebhook::new(
                format!("{name} {k}"),
                events.iter().map(|e| e.as_str().to_owned()).collect(),
                receiver.url(&format!("/{path}/{k}")),
            );
            if signed {
                hook.secret = Some(BENCH_SECRET.to_owned());
            }
            self.call(&routes::create_webhook(&hook)?).await?;
        }
        Ok(())
    }
}

/// Committed events and failed calls of the load.
#[derive(Default)]
pub(crate) struct LoadTally {
    pub(crate) committed: AtomicU64,
    pub(crate) errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl LoadTally {
    pub(crate) fn error(&self, e: impl Into<anyhow::Error>) {
        let e = e.into();
        self.errors.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{e:#}"));
        }
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }
}

/// Spaces requests evenly at `rate` per second in total: each request takes the next slot.
pub(crate) struct Pacer {
    start: tokio::time::Instant,
    rate: f64,
    next: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(rate: f64) -> Self {
        Pacer {
            start: tokio::time::Instant::now(),
            rate,
            next: AtomicU64::new(0),
        }
    }

    async fn wait(&self) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let at = self.start + Duration::from_secs_f64(n as f64 / self.rate);
        tokio::time::sleep_until(at).await;
    }
}

/// Runs `--clients` API clients until `deadline`.
pub(crate) async fn run_clients(
    args: &BenchArgs,
    apis: &[Api],
    load: &Arc<LoadTally>,
    deadline: Instant,
    pacer: Option<Arc<Pacer>>,
) {
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        // Spread over the nodes, one client after the other.
        let Some(api) = apis.get(i % apis.len().max(1)) else {
            return;
        };
        clients.spawn(client_loop(
            api.clone(),
            load.clone(),
            i,
            deadline,
            pacer.clone(),
            args.changes,
        ));
    }
    while clients.join_next().await.is_some() {}
}

/// One API client: create a contact, change it `changes` times, repeat until `deadline`.
async fn client_loop(
    api: Api,
    load: Arc<LoadTally>,
    client: usize,
    deadline: Instant,
    pacer: Option<Arc<Pacer>>,
    changes: usize,
) {
    let pace = || async {
        if let Some(p) = &pacer {
            p.wait().await;
        }
        Instant::now() < deadline
    };
    let mut api = api.connect();
    let mut n = 0u64;
    while pace().await {
        n += 1;
        let id = match api
            .create_contact(&ContactBody::named(&format!("bench {client}-{n}")))
            .await
        {
            Ok(id) => {
                load.committed.fetch_add(1, Ordering::SeqCst);
                id
            }
            Err(e) => {
                load.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        for j in 0..changes {
            if !pace().await {
                return;
            }
            match api
                .change_contact(id, &ContactBody::department(&format!("d{j}")))
                .await
            {
                Ok(()) => {
                    load.committed.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    load.error(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
