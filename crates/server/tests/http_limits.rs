//! The HTTP server's limits against real sockets: slow clients (nothing sent, half a head,
//! half a body) are cut off while the API answers others; the connection cap holds with idle
//! sockets and with busy ones; a body refused before it was read is drained so that the
//! client reads the answer. SQLite only: this is the HTTP layer, the same on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose `[http]` limits are `edit`ed.
async fn app_with(edit: impl FnOnce(&mut toml::value::Table)) -> TestApp {
    TestApp::start_with(|t| {
        let mut http = toml::value::Table::new();
        edit(&mut http);
        t.insert("http".into(), http.into());
    })
    .await
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// What the server sends until it closes the connection (or `limit` passes: then `None`).
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&out).into_owned())
}

/// The status and the JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &str) -> (u16, Value, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body, head.to_ascii_lowercase())
}

/// `answer` is a 408 with the JSON error body naming `limit`, closing the connection.
fn timed_out(answer: Option<String>, limit: &str) {
    let answer = answer.unwrap_or_else(|| panic!("not cut off by {limit}"));
    let (status, body, head) = parse_answer(&answer);
    assert_eq!(status, 408, "{head}");
    assert_eq!(body["ErrorType"], "RequestTimeout");
    assert!(head.contains("connection: close"), "{head}");
    let message = body["Message"].as_str().unwrap_or_default();
    assert!(message.contains(limit), "{body}");
}

async fn timed_ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Duration {
    let started = Instant::now();
    let (s, v) = app.call(method.clone(), path, body).await;
    assert!(s.is_success(), "{method} {path} → {s}: {v}");
    started.elapsed()
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_the_api_answers_others() {
    let app = app_with(|h| {
        h.insert("header_read_timeout_secs".into(), 1.0.into());
        h.insert("request_timeout_secs".into(), 1.5.into());
        h.insert("idle_timeout_secs".into(), 2.0.into());
    })
    .await;
    let started = Instant::now();
    // Sends nothing.
    let mut silent = TcpStream::connect(addr(&app)).await.unwrap();
    // Half a head.
    let mut half_head = TcpStream::connect(addr(&app)).await.unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A whole head and half the body it announces.
    let mut half_body = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"Name\":",
        app.key
    );
    half_body.write_all(head.as_bytes()).await.unwrap();

    // Meanwhile the API answers others at once.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        slowest = slowest.max(timed_ok(&app, Method::GET, "/healthz", None).await);
        let path = "/api/v1/Contact";
        let body = json!({"Name": format!("c{i}")});
        slowest = slowest.max(timed_ok(&app, Method::POST, path, Some(body)).await);
    }
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    eprintln!("slowest API answer while three slow clients hang: {slowest:?}");

    let limit = Duration::from_secs(5);
    let (half_head_answer, half_body_answer, silent_answer) = tokio::join!(
        read_until_closed(&mut half_head, limit),
        read_until_closed(&mut half_body, limit),
        read_until_closed(&mut silent, limit),
    );
    let took = started.elapsed();
    eprintln!("all three cut off {took:?} after they connected");

    timed_out(half_head_answer, "header_read_timeout_secs");
    timed_out(half_body_answer, "request_timeout_secs");

    // An idle connection is closed without an answer.
    assert_eq!(silent_answer.expect("a silent client is cut off"), "");
    // The last of them (idle, 2 s) went within a second of its deadline.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let stats = &app.state.http;
    assert_eq!(stats.header_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(stats.body_timeouts.load(Ordering::Relaxed), 1);
    assert!(stats.idle_closed.load(Ordering::Relaxed) >= 1);
    // The half-sent contact was not created: ten contacts, c0 to c9.
    let (s, v) = app.call(Method::GET, "/api/v1/Contact/11", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    app.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_serves_requests_until_it_idles_out() {
    let app = app_with(|h| {
        h.insert("header_read_timeout_secs".into(), 0.5.into());
        h.insert("idle_timeout_secs".into(), 1.5.into());
    })
    .await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    // Pauses between requests longer than the head's timeout do not cut the connection: the
    // head's clock starts at its first byte.
    for _ in 0..3 {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let started = Instant::now();
    let rest = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert_eq!(rest.as_deref(), Some(""));
    let idle = started.elapsed() + Duration::from_millis(800);
    assert!(
        idle >= Duration::from_millis(1400) && idle < Duration::from_millis(2600),
        "{idle:?}"
    );
    app.stop().await;
}

/// Open file descriptors of this process (the test and the server it runs).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test]
async fn idle_sockets_cannot_keep_clients_out_nor_use_up_file_descriptors() {
    let cap = 8;
    let app = app_with(|h| {
        h.insert("max_connections".into(), (cap as i64).into());
        h.insert("idle_timeout_secs".into(), 60.0.into());
        h.insert("header_read_timeout_secs".into(), 60.0.into());
    })
    .await;
    // Warm the client's pool and the server's store before counting.
    app.ok(Method::GET, "/api/v1/Webhook", None).await;
    // Within the listen backlog (128), so that every connect completes at once.
    let sockets = 100;
    let connecting = Instant::now();
    let before = open_fds();
    let mut idle = Vec::new();
    for i in 0..sockets {
        let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
        if i % 2 == 0 {
            // Half of them start a head and stop.
            tcp.write_all(b"GET /api/v1/Webhook HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        idle.push(tcp);
    }
    assert!(connecting.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server_side = open_fds().saturating_sub(before + sockets);
    // The server holds at most `cap` of them (and one waiting for a place); the rest wait
    // in the kernel's listen queue, which costs the process no descriptor.
    assert!(
        server_side <= cap + 2,
        "{server_side} descriptors for {sockets} sockets"
    );
    eprintln!(
        "server-side descriptors for {sockets} idle sockets at a cap of {cap}: {server_side}"
    );
    assert!(app.state.http.open() <= cap, "{}", app.state.http.open());
    // 60 of them go away; the 40 oldest stay, and the server takes them in turn: each
    // waits a second for its request before it is closed to make room, `cap` at a time.
    idle.truncate(40);
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/Webhook", app.base))
        .bearer_auth(&app.key)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let waited = started.elapsed();
    eprintln!("a client behind 40 idle sockets at a cap of {cap} was served in {waited:?}");
    // Five rounds of eight at a second each, and some room.
    assert!(waited < Duration::from_secs(9), "{waited:?}");
    let shed = app.state.http.shed.load(Ordering::Relaxed);
    assert!(shed >= 32, "{shed}");
    assert!(app.state.http.open() <= cap);
    // /metrics tells an operator.
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("crmhooks_http_cut_off_total{reason=\"shed\"}"))
        .unwrap_or_default();
    let counted: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(counted >= shed, "{metrics}");
    assert!(
        metrics.contains("crmhooks_http_connections_open "),
        "{metrics}"
    );
    // Within the cap nothing is shed: a connection that waits keeps its place.
    drop(idle);
    app.stop().await;
}

#[tokio::test]
async fn at_the_cap_busy_connections_are_served_and_a_new_one_waits_its_turn() {
    let cap = 3;
    let app = app_with(|h| {
        h.insert("max_connections".into(), (cap as i64).into());
        h.insert("request_timeout_secs".into(), 30.0.into());
    })
    .await;
    // `cap` clients in the middle of sending a body: busy, never shed.
    let body = br#"{"Name":"uploaded slowly"}"#;
    let mut busy = Vec::new();
    for _ in 0..cap {
        let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
        let head = format!(
            "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            app.key,
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&body[..5]).await.unwrap();
        busy.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next client is queued, not refused and not served ahead.
    let base = app.base.clone();
    let key = app.key.clone();
    let queued = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .get(format!("{base}/api/v1/Webhook"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        (resp.status(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!queued.is_finished(), "served past the cap");
    // The busy clients finish their bodies and are answered; then the queued one is served.
    let mut answered_at = Instant::now();
    for tcp in &mut busy {
        tcp.write_all(&body[5..]).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        let (status, v, head) = parse_answer(&String::from_utf8_lossy(&buf[..n]));
        assert_eq!(status, 200, "{head}");
        assert_eq!(v["Name"], "uploaded slowly");
        answered_at = Instant::now();
    }
    drop(busy);
    let (status, served_at) = queued.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(served_at + Duration::from_millis(50) >= answered_at);
    assert!(app.state.http.waited.load(Ordering::Relaxed) >= 1);
    app.stop().await;
}

/// `raw` is an answer with `status` and the JSON error body of `error_type`; its head, in
/// lower case.
fn refused_with(raw: &str, status: u16, error_type: &str) -> String {
    let (got, v, head) = parse_answer(raw);
    assert_eq!(
        (got, v["ErrorType"].as_str()),
        (status, Some(error_type)),
        "{raw}"
    );
    head
}

/// A raw request: `head` lines (without the blank line) and then `body`, written by a task of
/// its own while the answer is read (the server may answer before it reads the body).
async fn exchange(app: &TestApp, head: &str, body: Vec<u8>) -> String {
    let tcp = TcpStream::connect(addr(app)).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let request = format!("{head}Content-Length: {}\r\n\r\n", body.len());
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(request.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let out = read_answers(&mut rd, 1).await;
    writer.abort();
    out
}

/// As a simple client does it: writes the whole request (`head`, `body`) and a second one
/// (`GET /healthz`) on the same connection, then reads both answers. Fails if a write fails
/// (the server closed or reset the connection before reading the body).
async fn send_then_read(app: &TestApp, head: &str, body: &[u8]) -> (String, String) {
    let mut tcp = TcpStream::connect(addr(app)).await.unwrap();
    let request = format!("{head}Content-Length: {}\r\n\r\n", body.len());
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(body)
        .await
        .expect("the server reads the whole body");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("the connection stays open");
    let text = read_answers(&mut tcp, 2).await;
    let second = text.rfind("HTTP/1.1 ").unwrap_or(0);
    (text[..second].to_owned(), text[second..].to_owned())
}

/// Reads until `n` whole answers have arrived (or the connection closes, or 10 s pass).
async fn read_answers(rd: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => {
                    out.extend_from_slice(&buf[..k]);
                    let text = String::from_utf8_lossy(&out);
                    let last = text.rfind("HTTP/1.1 ").unwrap_or(0);
                    if text.matches("HTTP/1.1 ").count() >= n && complete(&out[last..]) {
                        return;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `raw` holds a whole answer (its head and `content-length` bytes of body).
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    body.len() >= len
}

#[tokio::test]
async fn a_body_refused_before_it_is_read_is_drained_and_the_client_reads_the_answer() {
    let app = TestApp::start_with(|t| {
        t.insert("max_body_bytes".into(), 65536.into());
    })
    .await;
    let big = |n: usize| {
        let mut b = br#"{"Name":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', n));
        b.extend_from_slice(br#""}"#);
        b
    };
    // A wrong key: refused before the body is read, 120 KB of it. The client writes it all,
    // reads the answer, and the connection serves its next request.
    let (raw, next) = send_then_read(
        &app,
        "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n",
        &big(120_000),
    )
    .await;
    let head = refused_with(&raw, 401, "Unauthorized");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(next.starts_with("HTTP/1.1 200 OK"), "{next}");
    // Over the limit by its Content-Length: refused before a byte is read; 100 KB is within
    // twice the limit, so it is drained and the connection kept.
    let auth = format!(
        "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n",
        app.key
    );
    let (raw, next) = send_then_read(&app, &auth, &big(100_000)).await;
    let head = refused_with(&raw, 413, "BodyTooLarge");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(next.starts_with("HTTP/1.1 200 OK"), "{next}");
    // A route that does not exist, with a body.
    let (raw, next) = send_then_read(
        &app,
        "PUT /api/v1/Nothing HTTP/1.1\r\nHost: x\r\n",
        &big(50_000),
    )
    .await;
    assert_eq!(parse_answer(&raw).1["ErrorType"], "NotFound", "{raw}");
    assert!(next.starts_with("HTTP/1.1 200 OK"), "{next}");
    // Far over: the answer still arrives, and the connection is closed after it.
    let raw = exchange(&app, &auth, big(1_000_000)).await;
    let head = refused_with(&raw, 413, "BodyTooLarge");
    assert!(head.contains("connection: close"), "{head}");
    // The signal route answers its 413 with the JSON body too.
    let signal = format!(
        "POST /api/v1/Webhook/x.y/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n",
        app.key
    );
    let raw = exchange(&app, &signal, big(70_000)).await;
    let head = refused_with(&raw, 413, "BodyTooLarge");
    assert!(head.contains("content-type: application/json"), "{head}");
    app.stop().await;
}

#[tokio::test]
async fn a_refused_request_that_expects_100_continue_gets_its_answer_without_sending_the_body() {
    let app = TestApp::start().await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\
          Expect: 100-continue\r\nContent-Length: 50000\r\n\r\n",
    )
    .await
    .unwrap();
    let raw = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed without the body");
    let (status, v, head) = parse_answer(&raw);
    assert_eq!(status, 401, "{raw}");
    assert!(!head.contains("100 continue"), "{raw}");
    assert_eq!(v["ErrorType"], "Unauthorized");
    app.stop().await;
}
