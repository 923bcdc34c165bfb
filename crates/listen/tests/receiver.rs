//! The receiver as a library, on port 0, driven with reqwest.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crmhooks_listen::{Receiver, ReceiverConfig, Verdict};
use crmhooks_payload::{headers, sign, NetDateTime, WebhookPayload};

const SECRET: &str = "s3cret";

fn payload(event: &str) -> WebhookPayload {
    let mut p = WebhookPayload::from_slice(include_bytes!(
        "../../payload/tests/fixtures/contact-changed.json"
    ))
    .unwrap();
    p.event = event.to_owned();
    p.event_id = uuid::Uuid::new_v4();
    p.timestamp = NetDateTime::now_utc();
    p
}

fn test_payload() -> WebhookPayload {
    WebhookPayload::test_event(
        uuid::Uuid::new_v4(),
        NetDateTime::now_utc(),
        "Default",
        1,
        "hook",
    )
}

async fn start(config: ReceiverConfig) -> Receiver {
    Receiver::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn with_secret() -> ReceiverConfig {
    ReceiverConfig {
        secret: Some(SECRET.into()),
        ..ReceiverConfig::default()
    }
}

/// POSTs `p` the way the dispatcher does; `secret` None = unsigned.
async fn deliver(
    r: &Receiver,
    p: &WebhookPayload,
    secret: Option<&str>,
    retry: u32,
) -> reqwest::Response {
    let body = p.to_bytes();
    let mut req = reqwest::Client::new()
        .post(r.url("/hook"))
        .header("content-type", headers::CONTENT_TYPE_JSON)
        .header("user-agent", "NetServer-Webhook/8.8.6684.1719")
        .header(headers::EVENT, &p.event)
        .header(headers::EVENT_ID, p.event_id.to_string())
        .header(headers::RETRY, retry.to_string());
    if let Some(s) = secret {
        req = req.header(headers::SIGNATURE, sign(s, &body));
    }
    if p.is_test() {
        req = req.header(headers::HOOK_TEST, "true");
    }
    req.body(body).send().await.unwrap()
}

async fn error_type(res: reqwest::Response) -> String {
    let v: serde_json::Value = res.json().await.unwrap();
    for key in ["Error", "ErrorType", "Message"] {
        assert!(v[key].is_string(), "{key} missing in {v}");
    }
    v["ErrorType"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn good_signature_is_recorded_and_answered_200() {
    let r = start(with_secret()).await;
    let p = payload("contact.changed");
    let res = deliver(&r, &p, Some(SECRET), 0).await;
    assert_eq!(res.status(), 200);
    let got = r.received();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.verdict, Verdict::Valid);
    assert_eq!(g.payload.as_ref(), Some(&p));
    assert_eq!(g.body, p.to_bytes());
    assert_eq!(g.path, "/hook");
    assert_eq!(g.method, "POST");
    assert_eq!(g.answered, 200);
    assert_eq!(g.retry(), Some(0));
    assert_eq!(g.header("X-SUPEROFFICE-EVENT"), Some("contact.changed"));
    assert!(g.headers.iter().all(|(n, _)| n == &n.to_ascii_lowercase()));
    assert!(!g.duplicate);
    assert!(g.notes.is_empty(), "{:?}", g.notes);
    assert_eq!(r.count(), 1);
    r.shutdown().await;
}

#[tokio::test]
async fn tampered_body_is_401_and_recorded() {
    let r = start(with_secret()).await;
    let p = payload("contact.changed");
    let body = p.to_bytes();
    let sig = sign(SECRET, &body);
    let tampered = String::from_utf8(body).unwrap().replace("994863", "994864");
    let res = reqwest::Client::new()
        .post(r.url("/hook"))
        .header(headers::SIGNATURE, sig)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_type(res).await, "SignatureMismatch");
    let got = r.received();
    assert!(
        matches!(got[0].verdict, Verdict::Invalid(_)),
        "{:?}",
        got[0].verdict
    );
    assert_eq!(got[0].answered, 401);
    assert!(got[0].payload.is_none());
    assert!(got[0].verdict.to_string().starts_with("BAD"));
}

#[tokio::test]
async fn unsigned_and_malformed_with_a_secret_are_401() {
    let r = start(with_secret()).await;
    let p = payload("contact.changed");
    let res = deliver(&r, &p, None, 0).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_type(res).await, "SignatureMissing");
    let res = reqwest::Client::new()
        .post(r.url("/"))
        .header(headers::SIGNATURE, "***")
        .body(p.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_type(res).await, "SignatureMalformed");
    let got = r.received();
    assert_eq!(got[0].verdict, Verdict::Unsigned);
    assert!(matches!(got[1].verdict, Verdict::Invalid(_)));
    // A refused request does not make the genuine one a duplicate.
    assert_eq!(deliver(&r, &p, Some(SECRET), 0).await.status(), 200);
    assert!(!r.received()[2].duplicate);
}

#[tokio::test]
async fn without_a_secret_nothing_is_checked() {
    let r = start(ReceiverConfig::default()).await;
    let p = payload("contact.changed");
    assert_eq!(deliver(&r, &p, None, 0).await.status(), 200);
    assert_eq!(
        deliver(&r, &payload("contact.changed"), Some("whatever"), 0)
            .await
            .status(),
        200
    );
    let got = r.received();
    assert_eq!(got[0].verdict, Verdict::Unsigned);
    assert_eq!(got[1].verdict, Verdict::NotChecked);
    assert_eq!(got[1].verdict.to_string(), "not checked");
}

#[tokio::test]
async fn non_json_and_non_payload_bodies_are_400() {
    let r = start(ReceiverConfig::default()).await;
    let client = reqwest::Client::new();
    for body in ["not json", "{\"hello\":1}", ""] {
        let res = client.post(r.url("/x")).body(body).send().await.unwrap();
        assert_eq!(res.status(), 400, "{body:?}");
        assert_eq!(error_type(res).await, "InvalidPayload");
    }
    let got = r.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body_text(), "not json");
    assert!(got.iter().all(|g| g.answered == 400 && g.payload.is_none()));
    assert!(
        got[0].notes[0].starts_with("refused:"),
        "{:?}",
        got[0].notes
    );
}

#[tokio::test]
async fn huge_bodies_are_413_and_the_receiver_keeps_working() {
    let r = start(ReceiverConfig {
        max_body: 4096,
        ..ReceiverConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    // Declared length over the limit.
    let res = client
        .post(r.url("/"))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_type(res).await, "PayloadTooLarge");
    // Chunked, no Content-Length: caught while reading.
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let request = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(8)
    );
    let answer = raw_http(r.addr(), request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(
        deliver(&r, &payload("contact.changed"), None, 0)
            .await
            .status(),
        200
    );
    let got = r.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(got[0].answered, 413);
    assert!(got[0].body.is_empty());
    assert_eq!(got.last().unwrap().answered, 200);
}

/// Sends raw bytes and returns everything the server answers until it closes or goes quiet.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn other_methods_are_405() {
    let r = start(ReceiverConfig::default()).await;
    let res = reqwest::Client::new()
        .get(r.url("/hook?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(error_type(res).await, "MethodNotAllowed");
    let got = r.received();
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/hook?x=1");
}

#[tokio::test]
async fn missing_and_inconsistent_headers_are_noted_not_refused() {
    let r = start(ReceiverConfig::default()).await;
    let p = payload("contact.changed");
    // A bare POST: no SuperOffice headers, no content type.
    let res = reqwest::Client::new()
        .post(r.url("/"))
        .body(p.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let notes = &r.received()[0].notes;
    for expected in [
        "no X-Superoffice-Event header",
        "no X-Superoffice-Eventid header",
        "Content-Type",
        "User-Agent",
    ] {
        assert!(
            notes.iter().any(|n| n.contains(expected)),
            "{expected} not in {notes:?}"
        );
    }
    // Headers that disagree with the body.
    let res = reqwest::Client::new()
        .post(r.url("/"))
        .header(headers::EVENT, "contact.created")
        .header(headers::EVENT_ID, uuid::Uuid::new_v4().to_string())
        .header(headers::HOOK_TEST, "true")
        .body(payload("contact.changed").to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let notes = &r.received()[1].notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("differs from the body's Event")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("differs from the body's EventId")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("X-Hook-Test: true on a")),
        "{notes:?}"
    );
    // With a secret, a bare POST is refused as unsigned.
    let r = start(with_secret()).await;
    let res = reqwest::Client::new()
        .post(r.url("/"))
        .body(p.to_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn fail_first_then_status_and_test_calls_are_exempt() {
    let r = start(ReceiverConfig {
        fail_first: 2,
        secret: Some(SECRET.into()),
        ..ReceiverConfig::default()
    })
    .await;
    // The save-time test call passes while failures are pending.
    let res = deliver(&r, &test_payload(), Some(SECRET), 0).await;
    assert_eq!(res.status(), 200);
    let p = payload("contact.created");
    let statuses = [
        deliver(&r, &p, Some(SECRET), 0).await.status().as_u16(),
        deliver(&r, &p, Some(SECRET), 1).await.status().as_u16(),
        deliver(&r, &p, Some(SECRET), 2).await.status().as_u16(),
    ];
    assert_eq!(statuses, [500, 500, 200]);
    let got = r.received();
    assert!(got[0].is_test());
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        [200, 500, 500, 200]
    );
    // Retries reuse the EventId: flagged as duplicates, with their retry number.
    assert_eq!(
        got.iter().map(|g| g.duplicate).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    assert_eq!(got[3].retry(), Some(2));
    assert_eq!(r.duplicates(), 2);
    assert!(got[3].to_display_lines().contains("retry 2"));
    assert!(got[3].to_display_lines().contains("DUPLICATE"));
    assert!(got[0].to_display_lines().contains("TEST"));
}

#[tokio::test]
async fn script_then_fallback_and_set_status() {
    let r = start(ReceiverConfig::default()).await;
    r.script([503, 410, 201]);
    let mut answered = Vec::new();
    for _ in 0..4 {
        answered.push(
            deliver(&r, &payload("contact.changed"), None, 0)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(answered, [503, 410, 201, 200]);
    r.set_status(502);
    let res = deliver(&r, &payload("contact.changed"), None, 0).await;
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("502"));
    // Test calls get the configured status, not the script.
    r.script([500]);
    r.set_status(200);
    assert_eq!(deliver(&r, &test_payload(), None, 0).await.status(), 200);
    assert_eq!(
        deliver(&r, &payload("contact.changed"), None, 0)
            .await
            .status(),
        500
    );
    // A new script replaces the old one.
    r.script([404, 404]);
    r.script([409]);
    assert_eq!(
        deliver(&r, &payload("contact.changed"), None, 0)
            .await
            .status(),
        409
    );
    assert_eq!(
        deliver(&r, &payload("contact.changed"), None, 0)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn duplicate_event_ids_are_flagged() {
    let r = start(ReceiverConfig::default()).await;
    let p = payload("contact.changed");
    let q = payload("contact.changed");
    deliver(&r, &p, None, 0).await;
    deliver(&r, &q, None, 0).await;
    deliver(&r, &p, None, 0).await;
    let got = r.received();
    assert_eq!(
        got.iter().map(|g| g.duplicate).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(r.duplicates(), 1);
}

#[tokio::test]
async fn out_file_gets_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let r = start(ReceiverConfig {
        out: Some(path.clone()),
        secret: Some(SECRET.into()),
        ..ReceiverConfig::default()
    })
    .await;
    let p = payload("contact.changed");
    deliver(&r, &p, Some(SECRET), 0).await;
    deliver(&r, &p, Some("wrong"), 1).await;
    reqwest::Client::new()
        .post(r.url("/plain"))
        .header(headers::SIGNATURE, sign(SECRET, b"plain text"))
        .body("plain text")
        .send()
        .await
        .unwrap();
    deliver(&r, &p, Some(SECRET), 1).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let first = &lines[0];
    assert_eq!(first["path"], "/hook");
    assert_eq!(first["verdict"], "valid");
    assert_eq!(first["status"], 200);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["body"]["EventId"], p.event_id.to_string());
    assert_eq!(
        first["headers"]["x-superoffice-eventid"],
        p.event_id.to_string()
    );
    assert!(time::OffsetDateTime::parse(
        first["received_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());
    assert_eq!(lines[1]["verdict"], "invalid");
    assert_eq!(lines[1]["status"], 401);
    assert!(lines[1]["verdict_reason"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    assert_eq!(lines[2]["body"], "plain text");
    assert_eq!(lines[2]["status"], 400);
    assert_eq!(lines[3]["duplicate"], true);
    assert_eq!(lines[3]["headers"]["x-superoffice-retry"], "1");
}

#[tokio::test]
async fn wait_for_returns_on_arrival_or_timeout() {
    let r = start(ReceiverConfig::default()).await;
    let started = Instant::now();
    assert!(r.wait_for(1, Duration::from_millis(200)).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
    let r2 = r.clone();
    let waiter = tokio::spawn(async move { r2.wait_for(2, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    deliver(&r, &payload("contact.changed"), None, 0).await;
    deliver(&r, &payload("contact.changed"), None, 0).await;
    let got = waiter.await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn delay_holds_the_answer_but_records_at_once() {
    let r = start(ReceiverConfig::default()).await;
    r.set_delay(Duration::from_millis(300));
    let r2 = r.clone();
    let p = payload("contact.changed");
    let sent = Instant::now();
    let call = tokio::spawn(async move { deliver(&r2, &p, None, 0).await.status() });
    let got = r.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert!(
        sent.elapsed() < Duration::from_millis(300),
        "recorded only after the delay"
    );
    assert_eq!(call.await.unwrap(), 200);
    assert!(sent.elapsed() >= Duration::from_millis(300));
    // A client that gives up early does not upset the receiver.
    r.set_delay(Duration::from_secs(2));
    let res = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .post(r.url("/"))
        .body(payload("contact.changed").to_bytes())
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    r.set_delay(Duration::ZERO);
    assert_eq!(
        deliver(&r, &payload("contact.changed"), None, 0)
            .await
            .status(),
        200
    );
    r.shutdown().await;
}

#[tokio::test]
async fn benchmark_mode_counts_without_recording() {
    let r = start(with_secret()).await;
    r.set_record_bodies(false);
    let p = payload("contact.changed");
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (client, url, body) = (client.clone(), r.url("/"), p.to_bytes());
        let (id, sig) = (p.event_id.to_string(), sign(SECRET, &body));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header(headers::EVENT_ID, id)
                .header(
                    headers::SIGNATURE,
                    if i == 7 { "AAAA".to_owned() } else { sig },
                )
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 199);
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1);
    assert_eq!(r.count(), 200);
    assert!(r.received().is_empty());
    // Same EventId 199 times (the bad signature is not remembered): 198 duplicates.
    assert_eq!(r.duplicates(), 198);
    // Unparsed bodies are not refused in this mode.
    assert_eq!(
        client
            .post(r.url("/"))
            .header(headers::SIGNATURE, sign(SECRET, b"x"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    r.set_record_bodies(true);
    assert_eq!(
        client
            .post(r.url("/"))
            .header(headers::SIGNATURE, sign(SECRET, b"x"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(r.received().len(), 1);
}

#[tokio::test]
async fn shutdown_frees_the_port_and_dropping_the_handle_stops_the_server() {
    let r = start(ReceiverConfig::default()).await;
    let addr = r.addr();
    assert!(r.url("hook").ends_with(&format!("{}/hook", addr.port())));
    r.shutdown().await;
    assert!(reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .send()
        .await
        .is_err());
    // Rebinding the same port works.
    let again = Receiver::start(addr, ReceiverConfig::default())
        .await
        .unwrap();
    let addr = again.addr();
    drop(again);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .send()
        .await
        .is_err());
}
