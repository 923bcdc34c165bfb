//! Target policy (SSRF protection) and the HTTP client that enforces it.
//!
//! `strict`: only `https://` targets, and only when every address the host resolves to is
//! public; the client connects to the addresses that were checked (the check happens inside the
//! client's resolver), follows no redirects, and always verifies certificates. `dev` allows
//! `http://` and loopback/private targets, for local integration work.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

/// The outgoing HTTP client: hyper's pooled HTTP/1.1 client over rustls, the stack the
/// benchmark's raw baseline uses. It follows no redirects (hyper never does), reads no proxy
/// settings, verifies certificates against the webpki roots, and under `strict` connects over
/// https only, through the public-only [`TargetResolver`].
///
/// `max_in_flight` connections per host stay open when idle: webhooks often share one
/// receiver host, and with a smaller pool every burst above it closed connections only to open
/// them again (connection setup showed as 3 % of the server's CPU with ten webhooks on one
/// host).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector<TargetResolver>>,
        Full<Bytes>,
    >,
    /// The whole request, response body included.
    pub total: Duration,
    /// Target URLs parsed lately (see [`HttpClient::uri`]).
    uris: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, http::Uri>>>,
}

/// Target URLs kept parsed at most; the cache starts over beyond.
const URIS_MAX: usize = 4096;

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
    let https = if strict {
        tls.https_only()
    } else {
        tls.https_or_http()
    }
    .enable_http1()
    .wrap_connector(http);
    let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_in_flight.max(1))
        .build(https);
    Ok(HttpClient {
        inner,
        total: timeouts.total,
        uris: std::sync::Arc::default(),
    })
}

impl HttpClient {
    /// `url` as a request URI, through the url crate as when the webhook was saved (it
    /// percent-encodes what a URI may not hold). Parsed once per target: parsing it for every
    /// request was a tenth of a delivery's send task with ten webhooks.
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

    /// Sends a request. The timeout covers the answer's head; reading its body is bounded by
    /// the caller.
    pub async fn request(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> std::result::Result<http::Response<hyper::body::Incoming>, SendError> {
        match tokio::time::timeout(self.total, self.inner.request(req)).await {
            Err(_) => Err(SendError::Timeout(self.total)),
            Ok(Err(e)) => Err(SendError::Http(e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No answer within the total timeout.
    Timeout(Duration),
    /// The client failed (connect, TLS, protocol).
    Http(hyper_util::client::legacy::Error),
}

impl SendError {
    /// A readable description: the kind, then the chain of causes, which tells timeouts,
    /// refused connections, refused addresses and TLS failures apart.
    pub fn describe(&self) -> String {
        match self {
            SendError::Timeout(t) => format!("timeout: no answer within {} ms", t.as_millis()),
            SendError::Http(e) => {
                let kind = if e.is_connect() {
                    "connect error"
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
}
