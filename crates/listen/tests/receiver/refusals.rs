//! What the receiver checks and refuses: signatures, bodies, methods, and the headers it
//! notes without refusing.

use super::*;

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
