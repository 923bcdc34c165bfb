//! Target policy (SSRF protection) and the HTTP client that enforces it.
//!
//! `strict`: only `https://` targets, and only when every address the host resolves to is
//! public; the client connects to the addresses that were checked (the check happens inside the
//! client's resolver), follows no redirects, and always verifies certificates. `dev` allows
//! `http://` and loopback/private targets, for local integration work.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

/// Which targets may be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetPolicy {
    /// https only, public addresses only.
    Strict,
    /// Anything http(s), including loopback and private networks.
    Dev,
}

/// A target that the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetRefused(pub String);

/// Whether an address is globally routable (not loopback, private, link-local, shared,
/// documentation, multicast, unspecified, or an IPv4-mapped form of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 can reach private v4
        }
    }
}

/// Checks a target URL's shape against the policy (scheme, host, literal addresses). Names are
/// checked again at connect time, after resolution.
pub fn check_url(policy: TargetPolicy, raw: &str) -> Result<url::Url, TargetRefused> {
    let url = url::Url::parse(raw)
        .map_err(|e| TargetRefused(format!("TargetUrl {raw:?} is not a valid URL: {e}")))?;
    match (url.scheme(), policy) {
        ("https", _) | ("http", TargetPolicy::Dev) => {}
        ("http", TargetPolicy::Strict) => {
            return Err(TargetRefused(format!(
                "TargetUrl {raw:?} must use https (http is allowed only with --dev)"
            )))
        }
        (other, _) => {
            return Err(TargetRefused(format!(
                "TargetUrl {raw:?} has scheme {other:?}; only https is supported"
            )))
        }
    }
    let host = url
        .host()
        .ok_or_else(|| TargetRefused(format!("TargetUrl {raw:?} has no host")))?;
    if policy == TargetPolicy::Strict {
        let literal = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(d)
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                return Err(TargetRefused(format!(
                    "TargetUrl {raw:?} points at this machine (allowed only with --dev)"
                )))
            }
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
            return Err(TargetRefused(format!(
                "TargetUrl {raw:?} points at non-public address {ip} (allowed only with --dev)"
            )));
        }
    }
    Ok(url)
}

/// The client's resolver: every address under `dev`; under `strict` it drops non-public
/// addresses and fails when none is left, so the client can only connect to addresses that
/// passed the check (no DNS rebinding window).
#[derive(Clone, Copy, Debug)]
pub struct TargetResolver {
    public_only: bool,
}

/// What [`TargetResolver`] answers.
type Resolved = std::result::Result<std::vec::IntoIter<SocketAddr>, BoxError>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for TargetResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Resolved> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let public_only = self.public_only;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !public_only {
                return Ok(addrs.into_iter());
            }
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "refused by target policy: {host} resolves only to non-public addresses ({})",
                    addrs
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
            Ok(public.into_iter())
        })
    }
}

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

type Connector = hyper_rustls::HttpsConnector<HttpConnector<TargetResolver>>;
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
) -> Result<HttpClient, rustls::Error> {
    let strict = policy == TargetPolicy::Strict;
    let mut http = HttpConnector::new_with_resolver(TargetResolver {
        public_only: strict,
    });
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
    .wrap_connector(http);
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
        let (mut sender, conn) = http1::handshake(io).await.map_err(SendError::Http)?;
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
mod tests {
    use super::*;

    /// A target is parsed once, as the url crate writes it (percent-encoded), and the cache
    /// starts over when full; a URL that does not parse is refused every time.
    #[test]
    fn target_uris_are_parsed_once_and_encoded() {
        let client = build_client(TargetPolicy::Strict, Timeouts::default(), 8).unwrap();
        let uri = client.uri("https://example.com/a b?x=é").unwrap();
        assert_eq!(uri.to_string(), "https://example.com/a%20b?x=%C3%A9");
        assert_eq!(client.uris.lock().unwrap().len(), 1);
        assert_eq!(client.uri("https://example.com/a b?x=é").unwrap(), uri);
        assert_eq!(client.uris.lock().unwrap().len(), 1);
        assert!(client.uri("not a url").is_err());
        assert_eq!(client.uris.lock().unwrap().len(), 1);
        for i in 0..URIS_MAX {
            client.uri(&format!("https://example.com/{i}")).unwrap();
        }
        assert!(client.uris.lock().unwrap().len() <= URIS_MAX);
    }

    #[test]
    fn strict_refuses_http_loopback_and_private_literals() {
        for url in [
            "http://example.com/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:8443/",
            "https://[::ffff:192.168.0.1]/",
            "ftp://example.com/",
            "not a url",
        ] {
            assert!(check_url(TargetPolicy::Strict, url).is_err(), "{url}");
        }
        assert!(check_url(TargetPolicy::Strict, "https://example.com/hook").is_ok());
        assert!(check_url(TargetPolicy::Strict, "https://93.184.216.34/").is_ok());
    }

    #[test]
    fn dev_allows_http_and_loopback() {
        assert!(check_url(TargetPolicy::Dev, "http://127.0.0.1:9000/x").is_ok());
        assert!(check_url(TargetPolicy::Dev, "ftp://127.0.0.1/").is_err());
    }

    /// What the strict client answers for a POST to `url`.
    async fn strict_error(url: &str) -> String {
        let client = build_client(TargetPolicy::Strict, Timeouts::default(), 8)
            .unwrap_or_else(|e| panic!("{e}"));
        let req = http::Request::post(url)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .request(req)
            .await
            .err()
            .map(|e| e.describe())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn strict_client_refuses_names_that_resolve_to_loopback() {
        let err = strict_error("https://localhost:1/").await;
        assert!(err.contains("refused by target policy"), "{err}");
        assert!(err.starts_with("connect error"), "{err}");
    }

    #[tokio::test]
    async fn strict_client_refuses_plain_http() {
        let err = strict_error("http://example.com/").await;
        assert!(err.contains("unsupported scheme http"), "{err}");
    }

    /// How the test receiver treats its connections.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Keep-alive: answers every request on a connection.
        KeepAlive,
        /// Answers one request (without `Connection: close`), then closes the connection, as a
        /// receiver's idle timeout does.
        CloseAfterOne,
        /// Answers with a body longer than the excerpt the sender reads.
        LongBody,
    }

    /// A raw HTTP/1.1 receiver on port 0: answers 200 to each request; counts the connections
    /// it accepted and the requests it answered, and keeps their Host headers.
    struct TestReceiver {
        url: String,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        hosts: Arc<Mutex<Vec<String>>>,
    }

    async fn receiver(mode: Mode) -> TestReceiver {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), hosts.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: the head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| l.strip_prefix(name))
                                .map(|v| v.trim().to_owned())
                        };
                        let length: usize = header("content-length:")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(header("host:").unwrap_or_default());
                        while buf.len() < head_end + length {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let body = if mode == Mode::LongBody {
                            "x".repeat(3 * EXCERPT)
                        } else {
                            String::new()
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if mode == Mode::CloseAfterOne {
                            return;
                        }
                    }
                });
            }
        });
        TestReceiver {
            url: format!("http://{addr}/hook?x=1"),
            accepted,
            hosts,
        }
    }

    /// More than the sender keeps of an answer (send.rs reads at most 4000 bytes).
    const EXCERPT: usize = 4000;

    async fn post(client: &HttpClient, url: &str) -> crate::send::Response {
        crate::send::send(
            client,
            crate::send::Outgoing {
                url: url.to_owned(),
                body: b"{}".to_vec(),
                headers: http::HeaderMap::new(),
            },
        )
        .await
    }

    fn dev_client() -> HttpClient {
        build_client(TargetPolicy::Dev, Timeouts::default(), 8).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Requests in turn share one keep-alive connection, sent in origin form with the target's
    /// host and port as `Host`.
    #[tokio::test]
    async fn one_connection_serves_requests_in_turn() {
        let r = receiver(Mode::KeepAlive).await;
        let client = dev_client();
        for _ in 0..5 {
            let resp = post(&client, &r.url).await;
            assert_eq!(resp.status, Some(200), "{:?}", resp.error);
        }
        assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(client.idle_connections(), 1);
        let host = r
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .map(str::to_owned);
        let hosts = r.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(hosts.len(), 5);
        assert!(hosts.iter().all(|h| Some(h) == host.as_ref()), "{hosts:?}");
    }

    /// A receiver that closes its connections after each answer costs new connections, never
    /// a failed delivery.
    #[tokio::test]
    async fn a_connection_closed_by_the_receiver_is_not_reused() {
        let r = receiver(Mode::CloseAfterOne).await;
        let client = dev_client();
        for _ in 0..4 {
            let resp = post(&client, &r.url).await;
            assert_eq!(resp.status, Some(200), "{:?}", resp.error);
            // Time for the connection's task to see the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    /// An answer not read to its end leaves its connection unusable: it is not kept.
    #[tokio::test]
    async fn an_answer_cut_short_closes_its_connection() {
        let r = receiver(Mode::LongBody).await;
        let client = dev_client();
        for _ in 0..2 {
            let resp = post(&client, &r.url).await;
            assert_eq!(resp.status, Some(200), "{:?}", resp.error);
            assert_eq!(client.idle_connections(), 0);
        }
        assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// Idle connections older than IDLE_FOR are dropped instead of used; the pool keeps at most
    /// `max_idle_per_host` per host.
    #[tokio::test]
    async fn old_idle_connections_are_dropped_and_the_pool_is_bounded() {
        let r = receiver(Mode::KeepAlive).await;
        let client = build_client(TargetPolicy::Dev, Timeouts::default(), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        // Three at once: three connections, of which two are kept.
        let (a, b, c) = tokio::join!(
            post(&client, &r.url),
            post(&client, &r.url),
            post(&client, &r.url)
        );
        for resp in [a, b, c] {
            assert_eq!(resp.status, Some(200), "{:?}", resp.error);
        }
        assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(client.idle_connections(), 2);
        // Age them past IDLE_FOR: the next request opens a new connection.
        for list in client.pool.lock().values_mut() {
            for (_, since) in list.iter_mut() {
                *since -= IDLE_FOR;
            }
        }
        let resp = post(&client, &r.url).await;
        assert_eq!(resp.status, Some(200), "{:?}", resp.error);
        assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(client.idle_connections(), 1);
    }

    /// A host no request goes to any more loses its idle connections at the next sweep, when
    /// they are too old (or closed).
    #[tokio::test]
    async fn a_sweep_drops_what_another_host_left_idle() {
        let (old, busy) = (
            receiver(Mode::KeepAlive).await,
            receiver(Mode::KeepAlive).await,
        );
        let client = dev_client();
        let resp = post(&client, &old.url).await;
        assert_eq!(resp.status, Some(200), "{:?}", resp.error);
        for list in client.pool.lock().values_mut() {
            for (_, since) in list.iter_mut() {
                *since -= IDLE_FOR;
            }
        }
        // Requests to the other host only: the sweep comes with the SWEEP_EVERY-th give-back
        // (the first was the old host's).
        for _ in 2..SWEEP_EVERY {
            let resp = post(&client, &busy.url).await;
            assert_eq!(resp.status, Some(200), "{:?}", resp.error);
            let keys: Vec<PoolKey> = client.pool.lock().keys().cloned().collect();
            assert_eq!(keys.len(), 2, "{keys:?}");
        }
        let resp = post(&client, &busy.url).await;
        assert_eq!(resp.status, Some(200), "{:?}", resp.error);
        assert_eq!(client.pool.lock().len(), 1);
        assert_eq!(client.idle_connections(), 1);
    }
}
