//! Tests of the HTTP client: URI parsing, the pool, and what the strict client refuses.

use super::*;

/// A target is parsed once, as the url crate writes it (percent-encoded), and the cache
/// starts over when full; a URL that does not parse is refused every time.
#[test]
fn target_uris_are_parsed_once_and_encoded() {
    let client = build_client(
        TargetPolicy::Strict,
        Timeouts::default(),
        8,
        OwnAddresses::default(),
    )
    .unwrap();
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

/// What the strict client answers for a POST to `url`.
async fn strict_error(url: &str) -> String {
    let client = build_client(
        TargetPolicy::Strict,
        Timeouts::default(),
        8,
        OwnAddresses::default(),
    )
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
            own_case: Vec::new(),
        },
    )
    .await
}

fn dev_client() -> HttpClient {
    build_client(
        TargetPolicy::Dev,
        Timeouts::default(),
        8,
        OwnAddresses::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
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
    let client = build_client(
        TargetPolicy::Dev,
        Timeouts::default(),
        2,
        OwnAddresses::default(),
    )
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

/// A connection that reaches this server's own API is refused under any policy, and no request
/// goes out on it.
#[tokio::test]
async fn a_connection_to_the_own_api_is_refused() {
    let r = receiver(Mode::KeepAlive).await;
    let own = OwnAddresses::default();
    let addr: std::net::SocketAddr = r
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.url));
    own.add(addr);
    let client = build_client(TargetPolicy::Dev, Timeouts::default(), 8, own)
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = post(&client, &r.url).await;
    assert_eq!(resp.status, None);
    let err = resp.error.unwrap_or_default();
    assert!(err.contains("this server's own API"), "{err}");
    assert!(
        r.hosts.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "nothing was sent"
    );
    // Another port of the same host is a receiver like any other.
    let other = receiver(Mode::KeepAlive).await;
    let resp = post(&client, &other.url).await;
    assert_eq!(resp.status, Some(200), "{:?}", resp.error);
}

/// A literal private address under the strict policy is refused before anything connects to
/// it, whatever the definition was saved under.
#[tokio::test]
async fn strict_refuses_a_private_literal_without_connecting() {
    let r = receiver(Mode::KeepAlive).await;
    let https = r.url.replace("http://", "https://");
    let err = strict_error(&https).await;
    assert!(err.contains("is not a public address"), "{err}");
    assert_eq!(r.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}
