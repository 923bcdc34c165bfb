//! `crmhooks bench-relay` (hidden): the HTTP floor of the benchmark's load.
//!
//! Every event the load makes costs the machine two HTTP exchanges: the client's API request
//! (answered with the contact's JSON) and each delivery to a webhook. The relay does exactly
//! those exchanges and nothing else: no database, no JSON parsing, no payload built, no
//! signature computed (bodies and headers are made once, at start). It answers each request
//! with a contact-sized JSON body and sends `fanout` deliveries of the realistic bodies to the
//! receiver, with the dispatcher's limits on requests in flight (in total and per webhook),
//! over keep-alive connections of hyper's own client kept per webhook (the raw baseline's
//! stack: the floor is what HTTP allows, not what a connection pool costs). `crmhooks bench`
//! runs it as a child process, as it runs the server, and drives it with the same API clients:
//! what it measures is the most events (and deliveries) per second this machine can carry with
//! this shape of load, whatever the server does between the two exchanges.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::conn::{loopback_url, Conn};
use crate::raw::{contact_answer, raw_requests, realistic_bodies, RawRequest};

/// Flags of `bench-relay`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// The receiver's base URL (`http://IP:PORT/PATH`); deliveries go to `{target}/{k}`,
    /// k = 1..=fanout.
    #[arg(long)]
    pub target: String,
    /// Deliveries per request (the benchmark's `--webhooks`).
    #[arg(long, default_value_t = 1)]
    pub fanout: usize,
    /// Changes after each create in the load (selects the bodies' mix, as the raw baseline).
    #[arg(long, default_value_t = 3)]
    pub changes: usize,
}

struct Relay {
    /// The receiver.
    addr: SocketAddr,
    /// Per webhook k (index k - 1).
    targets: Vec<Arc<Target>>,
    sending: Arc<Semaphore>,
    created: RawRequest,
    changed: RawRequest,
    next_id: AtomicU64,
}

/// A webhook of the relay: its path, its room (requests in flight) and its idle connections.
struct Target {
    path: hyper::Uri,
    room: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
}

impl Target {
    /// Sends one delivery over an idle connection of this webhook, or a new one; keeps the
    /// connection for the next when the answer came whole.
    async fn deliver(&self, addr: SocketAddr, request: &RawRequest) {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle.filter(|c| !c.is_closed()) {
            Some(conn) => Some(conn),
            None => Conn::open(addr).await.ok(),
        };
        let (Some(mut conn), Ok(req)) = (conn, request.to(self.path.clone())) else {
            return;
        };
        if conn.send(req).await.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

/// Listens on 127.0.0.1 (an ephemeral port), prints `bench-relay listening on http://ADDR`
/// and relays until killed.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the relay")?;
    let relay = Relay::new(&args)?;
    println!("bench-relay listening on http://{}", listener.local_addr()?);
    relay.serve(listener).await
}

impl Relay {
    fn new(args: &RelayArgs) -> anyhow::Result<Arc<Self>> {
        if args.fanout == 0 {
            anyhow::bail!("--fanout must be at least 1");
        }
        // The server's own defaults, so the relay holds as many requests in flight as it would.
        let limits = crmhooks_server::Config::defaults()?.delivery;
        let requests = raw_requests(&realistic_bodies(args.changes.max(1)));
        let (created, changed) = match requests.as_slice() {
            [created, changed, ..] => (created.clone(), changed.clone()),
            _ => anyhow::bail!("the realistic bodies have no contact.changed"),
        };
        let (addr, base) = loopback_url(&args.target).context("--target")?;
        let base = base.trim_end_matches('/');
        let targets = (1..=args.fanout)
            .map(|k| {
                let path: hyper::Uri = format!("/{base}/{k}")
                    .parse()
                    .with_context(|| format!("--target {:?} is not a URL", args.target))?;
                Ok(Arc::new(Target {
                    path,
                    room: Arc::new(Semaphore::new(limits.max_per_webhook)),
                    idle: Mutex::new(Vec::new()),
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Relay {
            addr,
            targets,
            sending: Arc::new(Semaphore::new(limits.max_in_flight)),
            created,
            changed,
            next_id: AtomicU64::new(1),
        }))
    }

    /// Serves HTTP/1.1 keep-alive connections on `listener` until the task is dropped.
    async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, usually: let connections close, then go on.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let relay = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| relay.clone().handle(req));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Reads the request, takes the room for its deliveries (so a slow receiver holds the
    /// clients back, as the dispatcher's window does), starts them and answers.
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let created = req.method() == Method::POST;
        if req.into_body().collect().await.is_err() {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for target in &self.targets {
            let (Ok(webhook), Ok(total)) = (
                target.room.clone().acquire_owned().await,
                self.sending.clone().acquire_owned().await,
            ) else {
                break;
            };
            let (relay, target) = (self.clone(), target.clone());
            tokio::spawn(async move {
                let request = if created {
                    &relay.created
                } else {
                    &relay.changed
                };
                target.deliver(relay.addr, request).await;
                drop((webhook, total));
            });
        }
        let mut resp = Response::new(Full::new(contact_answer(id)));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use crmhooks_client::{ContactBody, Transport as _};
    use crmhooks_listen::counting::{CountingReceiver, RELAY_PREFIX};

    use super::*;
    use crate::load::Api;

    /// The relay answers the load's API calls as the server would (a contact with a new
    /// ContactId, about the server's size) and sends every call to each of its webhooks.
    #[tokio::test]
    async fn relays_each_call_to_every_webhook() {
        let receiver = CountingReceiver::start().await.expect("receiver");
        let relay = Relay::new(&RelayArgs {
            target: receiver.url(RELAY_PREFIX),
            fanout: 3,
            changes: 3,
        })
        .expect("relay");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let serving = tokio::spawn(relay.serve(listener));
        let mut api = Api::new(&base, "relay").expect("api").connect();
        let first = api.create_contact(&ContactBody::named("a")).await;
        let first = first.expect("create");
        let second = api.create_contact(&ContactBody::named("b")).await;
        assert_eq!(second.expect("create"), first + 1);
        let changed = api
            .change_contact(first, &ContactBody::department("d"))
            .await;
        changed.expect("change");
        let answer = contact_answer(7);
        let contact: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
        assert_eq!(contact["ContactId"], 7);
        assert!(
            (900..1000).contains(&answer.len()),
            "{} bytes",
            answer.len()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while receiver.tally().relay() < 9 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Three calls, three webhooks; nothing counted as a delivery of the server.
        assert_eq!(receiver.tally().relay(), 9);
        assert_eq!(receiver.tally().deliveries(), 0);
        serving.abort();
    }
}
