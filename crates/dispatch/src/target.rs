//! Target policy (SSRF protection): which targets a delivery may reach, checked when a
//! definition is saved ([`check_url`]) and again on every new connection of every delivery
//! ([`Guard`]), whatever policy the definition was saved under.
//!
//! `strict`: only `https://` targets, and only public addresses: the resolver keeps the public
//! addresses of a name (no DNS rebinding window), a literal address is checked before any
//! connection is made, and the address a connection reached is checked again once it is made.
//! `dev` allows `http://` and loopback/private targets, for local integration work. Under
//! both, a connection to this server's own API ([`OwnAddresses`]) is refused: a webhook that
//! calls its own server's SignalEvent would loop for ever.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
                || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 192.88.99/24 6to4 relay anycast
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
                || s[..6] == [0; 6] // ::/96 IPv4-compatible (deprecated; reaches v4 space)
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] & 0xfff0) == 0x3ff0 // 3fff::/20 documentation
                || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32 tunnels to v4
                || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0) // 2001:2::/48 benchmarking
                || (s[0] == 0x2001 && (s[1] & 0xffe0) == 0x0020) // ORCHIDv2 2001:20::/28
                || s[0] == 0x2002 // 6to4 2002::/16 tunnels to v4
                || (s[0] == 0x100 && s[1..4] == [0; 3]) // 100::/64 discard only
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 (incl. 64:ff9b:1::/48) can reach private v4
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

impl TargetResolver {
    /// A resolver that keeps only public addresses when `public_only`.
    pub fn new(public_only: bool) -> Self {
        TargetResolver { public_only }
    }
}

/// What [`TargetResolver`] answers.
type Resolved = std::result::Result<std::vec::IntoIter<SocketAddr>, BoxError>;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// This server's own API addresses, where no delivery may go: set by the server once its
/// listener is bound, read at every new connection.
#[derive(Clone, Debug, Default)]
pub struct OwnAddresses(Arc<RwLock<Vec<SocketAddr>>>);

impl OwnAddresses {
    /// Adds an address the API listens on.
    pub fn add(&self, addr: SocketAddr) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).push(addr);
    }

    /// Whether a connection from `local` to `peer` reached this server's own API: the port of
    /// a listening address, and its address (or, for a listener on every interface, a
    /// loopback address or one of this machine's own, which a connection to itself has at
    /// both ends).
    pub fn is_own(&self, local: SocketAddr, peer: SocketAddr) -> bool {
        let peer_ip = canonical(peer.ip());
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|own| {
                own.port() == peer.port()
                    && (canonical(own.ip()) == peer_ip
                        || (own.ip().is_unspecified()
                            && (peer_ip.is_loopback() || peer_ip == canonical(local.ip()))))
            })
    }

    /// Whether `url` names one of this server's API addresses literally (`localhost` counts as
    /// loopback): what a save can tell without connecting.
    pub fn is_named_by(&self, url: &url::Url) -> bool {
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        let ips: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(a)) => vec![IpAddr::V4(a)],
            Some(url::Host::Ipv6(a)) => vec![IpAddr::V6(a)],
            Some(url::Host::Domain(d))
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                vec![
                    IpAddr::from([127, 0, 0, 1]),
                    IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                ]
            }
            _ => return false,
        };
        ips.into_iter().any(|ip| {
            let peer = SocketAddr::new(ip, port);
            self.is_own(peer, peer)
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why a connection to `peer` (from `local`) is refused, if it is.
fn refused(
    policy: TargetPolicy,
    own: &OwnAddresses,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<String> {
    if policy == TargetPolicy::Strict && !is_public(peer.ip()) {
        return Some(format!(
            "refused by target policy: {} is not a public address (allowed only with --dev)",
            peer.ip()
        ));
    }
    if own.is_own(local, peer) {
        return Some(format!(
            "refused by target policy: {peer} is this server's own API (a webhook may not call its own server)"
        ));
    }
    None
}

/// The TCP connector under TLS: connects through [`TargetResolver`], refuses a literal address
/// the policy does not allow before connecting, and checks the address each connection reached
/// before it is used.
#[derive(Clone, Debug)]
pub struct Guard {
    inner: HttpConnector<TargetResolver>,
    policy: TargetPolicy,
    own: OwnAddresses,
}

impl Guard {
    /// A guard over `inner` for `policy`.
    pub fn new(
        inner: HttpConnector<TargetResolver>,
        policy: TargetPolicy,
        own: OwnAddresses,
    ) -> Self {
        Guard { inner, policy, own }
    }
}

impl tower_service::Service<http::Uri> for Guard {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let (policy, own) = (self.policy, self.own.clone());
        Box::pin(async move {
            let literal = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok());
            if let Some(ip) = literal.filter(|ip| policy == TargetPolicy::Strict && !is_public(*ip))
            {
                return Err(format!(
                    "refused by target policy: {ip} is not a public address (allowed only with --dev)"
                )
                .into());
            }
            let io = inner.call(uri).await?;
            let stream = io.inner();
            let (local, peer) = (stream.local_addr()?, stream.peer_addr()?);
            if let Some(why) = refused(policy, &own, local, peer) {
                return Err(why.into());
            }
            Ok(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn special_ranges_are_not_public() {
        for ip in [
            "192.88.99.1",
            "::1.2.3.4",
            "::a00:1",
            "2002:c0a8:0101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "3fff::1",
            "100::1",
            "2001:2::1",
            "64:ff9b:1::a00:1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert!(!is_public(ip), "{ip} is not public");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2001:4860::8888",
        ] {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert!(is_public(ip), "{ip} is public");
        }
    }

    #[test]
    fn own_addresses_are_recognised() {
        let own = OwnAddresses::default();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}"));
        own.add(any);
        own.add(lo);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        // A listener on every interface: loopback, or an address this machine has at both ends.
        assert!(own.is_own(at("127.0.0.1:5555"), at("127.0.0.1:8080")));
        assert!(own.is_own(at("10.0.0.5:5555"), at("10.0.0.5:8080")));
        assert!(own.is_own(at("[::1]:5555"), at("[::ffff:127.0.0.1]:8080")));
        assert!(
            !own.is_own(at("10.0.0.5:5555"), at("10.0.0.6:8080")),
            "another host"
        );
        assert!(
            !own.is_own(at("127.0.0.1:5555"), at("127.0.0.1:8081")),
            "another port"
        );
        assert!(own.is_own(at("127.0.0.1:5555"), at("127.0.0.1:9000")));
        let url = |s: &str| url::Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(own.is_named_by(&url("http://localhost:8080/api/v1/Webhook/a.b/1")));
        assert!(own.is_named_by(&url("http://127.0.0.1:9000/")));
        assert!(!own.is_named_by(&url("http://127.0.0.1:9001/")));
        assert!(!own.is_named_by(&url("https://example.com:8080/")));
    }
}
