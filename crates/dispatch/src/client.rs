//! The outgoing HTTP client: hyper's connection-level HTTP/1.1 client over rustls, with a pool
//! of keep-alive connections per target host, connecting through the target policy's
//! [`Guard`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use crate::target::{Guard, OwnAddresses, TargetPolicy, TargetResolver};

/// Timeouts of outgoing calls.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Whole request, including reading the response.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// The outgoing HTTP client: HTTP/1.1 over rustls, on hyper's connection-level client with
/// keep-alive connections kept per target host. It follows no redirects (hyper never does),
/// reads no proxy settings, verifies certificates against the webpki roots, and under `strict`
/// connects over https only, through the public-only [`TargetResolver`].
///
/// Its own pool rather than hyper-util's: hyper-util's pooled client made markedly fewer POSTs
/// per second than the connection-level client in the benchmark's raw baseline, and its pool
/// was a large share of the dispatcher's async time with ten webhooks. This one does what a
/// webhook sender needs of a pool: a connection is lent for one request and given back
/// ([`HttpClient::reuse`]) only once its answer was read whole; the most recently used idle
/// connection goes first (the one least likely to have been closed by the receiver's idle
/// timeout); idle ones older than [`IDLE_FOR`] are dropped; a request that an idle connection
/// could not take (closed by the receiver meanwhile) goes to the next one or a new connection,
/// never counted as a failure.
///
/// Up to `max_in_flight` idle connections per host are kept: webhooks often share one receiver
/// host, and with fewer every burst above it closed connections only to open them again
/// (connection setup showed in the server's CPU profile with ten webhooks on one host).
#[derive(Clone, Debug)]
pub struct HttpClient {
    connector: Connector,
    pool: Arc<Pool>,
    /// The whole request, response body included.
    pub total: Duration,
    /// Target URLs parsed lately (see [`HttpClient::uri`]).
    uris: Arc<Mutex<HashMap<String, http::Uri>>>,
}

type Connector = hyper_rustls::HttpsConnector<Guard>;
type Sender = http1::SendRequest<Full<Bytes>>;

/// Target URLs kept parsed at most; the cache starts over beyond.
const URIS_MAX: usize = 4096;

/// An idle connection older than this is closed rather than used (hyper-util's default).
pub const IDLE_FOR: Duration = Duration::from_secs(90);

/// Where a connection goes: scheme and authority of the target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    scheme: Scheme,
    authority: Authority,
}

/// Idle connections per host, the most recently used last.
#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, Instant)>>>,
    max_idle_per_host: usize,
    /// Connections given back since the last sweep (see [`SWEEP_EVERY`]).
    returned: std::sync::atomic::AtomicUsize,
}

/// Every this many connections given back, the pool drops the idle connections of every host
/// that are closed or older than [`IDLE_FOR`]: a host no delivery goes to any more would
/// otherwise keep its entry (and its receiver's sockets, until the receiver closes them).
const SWEEP_EVERY: usize = 1024;

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<(Sender, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `key` that is still open and young enough.
    fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        let found = loop {
            let Some((sender, since)) = list.pop() else {
                break None;
            };
            if since.elapsed() >= IDLE_FOR {
                // Every one below is older still.
                list.clear();
                break None;
            }
            if !sender.is_closed() {
                break Some(sender);
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let sweep = self
            .returned
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % SWEEP_EVERY
            == SWEEP_EVERY - 1;
        let mut idle = self.lock();
        if sweep {
            idle.retain(|_, list| {
                list.retain(|(sender, since)| !sender.is_closed() && since.elapsed() < IDLE_FOR);
                !list.is_empty()
            });
        }
        let list = idle.entry(key).or_default();
        if list.len() < self.max_idle_per_host {
            list.push((sender, Instant::now()));
        }
    }
}

/// A connection lent for one request: give it back with [`HttpClient::reuse`] once the answer
/// was read to its end, or drop it (the connection closes).
pub struct Lent {
    key: PoolKey,
    sender: Sender,
}

/// Builds the HTTP client for a policy. The crypto provider is named (ring) rather than taken
/// from the process default, which rustls cannot pick, and panics over, when a dependency
/// compiles in a second one.
pub fn build_client(
    policy: TargetPolicy,
    timeouts: Timeouts,
    max_in_flight: usize,
    own: OwnAddresses,
) -> Result<HttpClient, rustls::Error> {
    let strict = policy == TargetPolicy::Strict;
    let mut http = HttpConnector::new_with_resolver(TargetResolver::new(strict));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeouts.connect));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?;
    let connector = if strict {
        tls.https_only()
    } else {
        tls.https_or_http()
    }
    .enable_http1()
    .wrap_connector(Guard::new(http, policy, own));
    Ok(HttpClient {
        connector,
        pool: Arc::new(Pool {
            idle: Mutex::default(),
            max_idle_per_host: max_in_flight.max(1),
            returned: std::sync::atomic::AtomicUsize::new(0),
        }),
        total: timeouts.total,
        uris: Arc::default(),
    })
}

impl HttpClient {
    /// `url` as a request URI, through the url crate as when the webhook was saved (it
    /// percent-encodes what a URI may not hold). Parsed once per target: parsing it for every
    /// request was a noticeable part of a delivery's send task.
    pub fn uri(&self, url: &str) -> Result<http::Uri, String> {
        let cached = self
            .uris
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned();
        if let Some(uri) = cached {
            return Ok(uri);
        }
        let uri = url::Url::parse(url)
            .map_err(|e| e.to_string())
            .and_then(|u| u.as_str().parse::<http::Uri>().map_err(|e| e.to_string()))?;
        let mut uris = self.uris.lock().unwrap_or_else(|p| p.into_inner());
        if uris.len() >= URIS_MAX {
            uris.clear();
        }
        uris.insert(url.to_owned(), uri.clone());
        Ok(uri)
    }

    /// Sends a request to its absolute URI (sent in origin form, with a `Host` header unless it
    /// has one). The timeout covers connecting and the answer's head; reading its body is
    /// bounded by the caller, who then gives the connection back.
    pub async fn request(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> std::result::Result<(http::Response<hyper::body::Incoming>, Lent), SendError> {
        match tokio::time::timeout(self.total, self.send(req)).await {
            Err(_) => Err(SendError::Timeout(self.total)),
            Ok(result) => result,
        }
    }

    /// Keeps a lent connection for the next request to its host. Call only after the answer's
    /// body was read to its end.
    pub fn reuse(&self, lent: Lent) {
        self.pool.put(lent.key, lent.sender);
    }

    /// Idle connections kept, to all hosts.
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().values().map(Vec::len).sum()
    }

    async fn send(
        &self,
        mut req: http::Request<Full<Bytes>>,
    ) -> std::result::Result<(http::Response<hyper::body::Incoming>, Lent), SendError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::Request(format!("{uri} is not an absolute URI")));
        };
        let key = PoolKey {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        if !req.headers().contains_key(http::header::HOST) {
            let host = match authority.port_u16() {
                Some(port) if Some(port) != default_port(scheme) => {
                    format!("{}:{port}", authority.host())
                }
                _ => authority.host().to_owned(),
            };
            let host = http::HeaderValue::from_str(&host)
                .map_err(|e| SendError::Request(format!("Host {host:?}: {e}")))?;
            req.headers_mut().insert(http::header::HOST, host);
        }
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::from(path);
        // Idle connections first; one the receiver closed meanwhile hands the request back.
        while let Some(mut sender) = self.pool.take(&key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lent { key, sender })),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector.call(uri).await.map_err(SendError::Connect)?;
        // Header names in title case, as SuperOffice's requests spell them (a request may carry
        // its own spellings of custom names: see `header_case`).
        let (mut sender, conn) = http1::Builder::new()
            .title_case_headers(true)
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            // Ends when the connection closes (the sender and the pool's copy dropped, or the
            // receiver closed it); its errors are the requests' errors.
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await.map_err(SendError::Http)?;
        Ok((resp, Lent { key, sender }))
    }
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTPS {
        Some(443)
    } else if *scheme == Scheme::HTTP {
        Some(80)
    } else {
        None
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No answer within the total timeout.
    Timeout(Duration),
    /// No connection: refused, unreachable, refused by the target policy, TLS.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed (protocol, closed mid-answer).
    Http(hyper::Error),
    /// The request could not be made (its URI, its Host).
    Request(String),
}

impl SendError {
    /// A readable description: the kind, then the chain of causes, which tells timeouts,
    /// refused connections, refused addresses and TLS failures apart.
    pub fn describe(&self) -> String {
        fn chain(kind: &str, e: &dyn std::error::Error) -> String {
            let mut msg = format!("{kind}: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        }
        match self {
            SendError::Timeout(t) => format!("timeout: no answer within {} ms", t.as_millis()),
            SendError::Connect(e) => chain("connect error", e.as_ref()),
            SendError::Http(e) => chain("request error", e),
            SendError::Request(e) => format!("request error: {e}"),
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
