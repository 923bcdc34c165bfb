//! The counting receiver: a bare hyper HTTP/1.1 server that counts what arrives and measures
//! commit-to-delivery latency, for `crmhooks bench`.
//!
//! It records nothing, verifies nothing and parses no JSON: it reads the commit time from each
//! body's `Timestamp` by scanning the bytes, and answers 200 with an empty body. It is the
//! fastest receiver this workspace has, on purpose: the benchmark's raw baseline posts to it,
//! and a slower receiver would lower the baseline and flatter every ratio measured against it.
//! The [`Receiver`](crate::Receiver) is the one to use for anything else.
//!
//! Requests are sorted by path: under [`RAW_PREFIX`] they count as the raw baseline's, under
//! [`RELAY_PREFIX`] as the relay floor's, `X-Hook-Test: true` as test events; everything else
//! is a delivery, whose size, commit time and latency are kept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use crmhooks_payload::headers;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Paths under this prefix count as requests of the raw baseline.
pub const RAW_PREFIX: &str = "/raw";
/// Paths under this prefix count as deliveries of the relay floor.
pub const RELAY_PREFIX: &str = "/relay";

/// What the receiver counted.
pub struct Tally {
    /// Requests of the raw baseline (paths under [`RAW_PREFIX`]).
    raw: AtomicU64,
    /// Deliveries of the relay floor (paths under [`RELAY_PREFIX`]).
    relay: AtomicU64,
    /// Deliveries (webhook paths), test events excluded.
    deliveries: AtomicU64,
    /// `X-Hook-Test: true` requests, not counted as deliveries.
    tests: AtomicU64,
    delivery_bytes: AtomicU64,
    /// Earliest `Timestamp` seen in a delivery, µs since the epoch.
    first_commit_us: AtomicI64,
    /// Wall clock of the latest delivery, µs since the epoch.
    last_delivery_us: AtomicI64,
    /// Commit-to-delivery latency of each delivery, µs.
    latencies_us: Mutex<Vec<u32>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            raw: AtomicU64::new(0),
            relay: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            tests: AtomicU64::new(0),
            delivery_bytes: AtomicU64::new(0),
            first_commit_us: AtomicI64::new(i64::MAX),
            last_delivery_us: AtomicI64::new(0),
            latencies_us: Mutex::new(Vec::with_capacity(1 << 16)),
        }
    }

    /// Requests of the raw baseline so far.
    pub fn raw(&self) -> u64 {
        self.raw.load(Ordering::SeqCst)
    }

    /// Deliveries of the relay floor so far.
    pub fn relay(&self) -> u64 {
        self.relay.load(Ordering::SeqCst)
    }

    /// Test events (`X-Hook-Test: true`) so far.
    pub fn tests(&self) -> u64 {
        self.tests.load(Ordering::SeqCst)
    }

    /// Deliveries so far (whoever sees a count also sees those deliveries' latencies).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::SeqCst)
    }

    /// Body bytes of the deliveries so far.
    pub fn delivery_bytes(&self) -> u64 {
        self.delivery_bytes.load(Ordering::SeqCst)
    }

    /// The earliest commit time (`Timestamp`) of a delivery, µs since the epoch; `i64::MAX`
    /// before the first.
    pub fn first_commit_us(&self) -> i64 {
        self.first_commit_us.load(Ordering::SeqCst)
    }

    /// When the latest delivery arrived, µs since the epoch; 0 before the first.
    pub fn last_delivery_us(&self) -> i64 {
        self.last_delivery_us.load(Ordering::SeqCst)
    }

    /// Forgets the relay floor's count.
    pub fn reset_relay(&self) {
        self.relay.store(0, Ordering::SeqCst);
    }

    /// Forgets deliveries and latencies (between phases; raw and test counts are kept).
    pub fn reset(&self) {
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
        self.deliveries.store(0, Ordering::SeqCst);
        self.delivery_bytes.store(0, Ordering::SeqCst);
        self.first_commit_us.store(i64::MAX, Ordering::SeqCst);
        self.last_delivery_us.store(0, Ordering::SeqCst);
    }

    fn record_delivery(&self, body: &[u8], now_us: i64) {
        if let Some(committed) = commit_micros(body) {
            self.first_commit_us.fetch_min(committed, Ordering::SeqCst);
            let latency = u32::try_from((now_us - committed).max(0)).unwrap_or(u32::MAX);
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push(latency);
            }
        }
        self.last_delivery_us.fetch_max(now_us, Ordering::SeqCst);
        self.delivery_bytes
            .fetch_add(body.len() as u64, Ordering::SeqCst);
        // Counted last, so whoever sees the count also sees this delivery's latency.
        self.deliveries.fetch_add(1, Ordering::SeqCst);
    }

    /// The commit-to-delivery latencies so far, µs, sorted.
    pub fn latencies(&self) -> Vec<u32> {
        let mut v = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

/// Microseconds since the Unix epoch, from the wall clock (the server's `Timestamp` is too).
pub fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The commit time of a webhook body (its `Timestamp`), µs since the epoch, read without
/// parsing the JSON.
pub fn commit_micros(body: &[u8]) -> Option<i64> {
    find_timestamp(body).and_then(parse_utc_micros)
}

/// The value of `"Timestamp":"…"` in a body, found without parsing the JSON.
fn find_timestamp(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"Timestamp\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    Some(&body[start..start + len])
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (UTC, any number of fraction digits) as µs since the epoch.
fn parse_utc_micros(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &b| {
            if b.is_ascii_digit() {
                acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
            } else {
                None
            }
        })
    }
    let (head, rest) = (s.get(..19)?, s.get(19..)?);
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&head[..4])?, num(&head[5..7])?, num(&head[8..10])?);
    let (hour, minute, second) = (
        num(&head[11..13])?,
        num(&head[14..16])?,
        num(&head[17..19])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let micros = match rest {
        [b'Z'] => 0,
        [b'.', fraction @ .., b'Z']
            if !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit) =>
        {
            // Microseconds: the first six digits; .NET writes seven, the rest is truncated.
            let digits = &fraction[..fraction.len().min(6)];
            num(digits)? * 10i64.pow(6 - digits.len() as u32)
        }
        _ => return None,
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// An HTTP/1.1 keep-alive receiver on 127.0.0.1 answering 200 with an empty body; it stops
/// when dropped.
pub struct CountingReceiver {
    addr: SocketAddr,
    tally: Arc<Tally>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingReceiver {
    /// Binds 127.0.0.1 on a free port and serves on new tokio tasks.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the receiver")?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Tally::new());
        let t = tally.clone();
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, usually: let connections close, then go on.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let t = t.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(t.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(CountingReceiver {
            addr,
            tally,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What arrived so far.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// A URL on this receiver: `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for CountingReceiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn receive(
    tally: Arc<Tally>,
    req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let raw = req.uri().path().starts_with(RAW_PREFIX);
    let relay = req.uri().path().starts_with(RELAY_PREFIX);
    let test = req
        .headers()
        .get(headers::HOOK_TEST)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut resp = Response::new(Empty::new());
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(resp);
        }
    };
    let now = unix_micros_now();
    if raw {
        tally.raw.fetch_add(1, Ordering::Relaxed);
    } else if relay {
        tally.relay.fetch_add(1, Ordering::Relaxed);
    } else if test {
        tally.tests.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.record_delivery(&body, now);
    }
    Ok(Response::new(Empty::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_like_the_time_crate() {
        for s in [
            "2018-04-24T07:50:50.6812131Z",
            "2026-02-28T23:59:59.9999999Z",
            "2024-02-29T00:00:00Z",
            "1970-01-01T00:00:00.1Z",
            "2000-03-01T12:34:56.123456789Z",
        ] {
            let want =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
                    .ok();
            assert_eq!(parse_utc_micros(s.as_bytes()), want, "{s}");
        }
        for bad in [
            "2018-04-24T07:50:50",
            "2018-13-24T07:50:50Z",
            "2018-04-24 07:50:50Z",
            "x",
            "2018-04-24T07:50:50.Z",
        ] {
            assert_eq!(parse_utc_micros(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            commit_micros(br#"{"EventId":"x","Timestamp":"1970-01-01T00:00:01.5Z","Changes":[]}"#),
            Some(1_500_000)
        );
        assert_eq!(commit_micros(br#"{"Timestamp":1}"#), None);
    }
}
