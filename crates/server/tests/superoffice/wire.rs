//! The request head on the wire and the authentication schemes.

use super::*;

both_backends!(wire_head_of_a_delivery, authentication_schemes,);

/// A receiver that keeps each request head as it came off the socket and answers 200.
struct RawReceiver {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn raw_receiver() -> RawReceiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    kept.lock().unwrap().push(head);
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    RawReceiver { url, heads }
}

fn names(head: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .map(|l| l.split_once(": ").map(|(k, _)| k).unwrap_or(l).to_owned())
        .collect()
}

/// The server's deliveries on the wire: the seed's header names in the seed's order, custom
/// headers as the definition spells them, then `Host` and `Content-Length`.
async fn wire_head_of_a_delivery() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("user_agent_version".into(), "8.8.6684.1719".into());
    })
    .await;
    let rx = raw_receiver().await;
    app.ok(
        Method::POST,
        "/api/v1/Webhook",
        Some(
            json!({"Name": "wire", "Events": ["contact.created"], "TargetUrl": rx.url,
            "Secret": "s3cret", "Headers": {"X-API-key": "k", "x-lower": "l"}}),
        ),
    )
    .await;
    app.create_contact("Acme").await;
    crmhooks_testkit::wait_until(|| rx.heads.lock().unwrap().len() >= 2, T).await;
    let heads = rx.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "the test event and contact.created");
    assert!(
        heads[0].starts_with("POST /webhook HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    let custom_then_framing = ["X-API-key", "x-lower", "Host", "Content-Length"];
    let mut test_head = vec![
        "Content-Type",
        "User-Agent",
        "X-Superoffice-Event",
        "X-Superoffice-Eventid",
        "X-Superoffice-Signature",
        "X-Superoffice-Retry",
        "X-Hook-Test",
    ];
    test_head.extend(custom_then_framing);
    assert_eq!(names(&heads[0]), test_head);
    let created: Vec<&str> = test_head
        .iter()
        .copied()
        .filter(|n| *n != "X-Hook-Test")
        .collect();
    assert_eq!(names(&heads[1]), created);
    assert!(
        heads[1].contains("\r\nUser-Agent: NetServer-Webhook/8.8.6684.1719\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("\r\nX-Superoffice-Event: contact.created\r\n"));
    app.stop().await;
}

/// `Bearer`, `SoTicket` and `Basic` (any user, the key as password) all carry the key; a
/// 401 names the three schemes in `WWW-Authenticate`.
async fn authentication_schemes() {
    let app = TestApp::start().await;
    let get = |auth: Option<String>, path: &'static str| {
        let mut req = app.http.get(format!("{}{path}", app.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{}", app.key));
    for auth in [
        format!("Bearer {}", app.key),
        format!("SoTicket {}", app.key),
        format!("SOTICKET {}", app.key),
        format!("Basic {basic}"),
    ] {
        let resp = get(Some(auth.clone()), "/api/v1/Webhook").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{auth}");
        let resp = get(Some(auth.clone()), "/Default/api/v1/Contact")
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{auth} with the tenant prefix"
        );
    }
    let other = app.add_key("Other", 7).await;
    let resp = get(Some(format!("SoTicket {other}")), "/Default/api/v1/Webhook")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let wrong = base64::engine::general_purpose::STANDARD.encode("anyone:wrong");
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {wrong}")),
        Some("Digest x".to_owned()),
    ] {
        let resp = get(auth.clone(), "/api/v1/Webhook").await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let challenges: Vec<String> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(challenges.len(), 3, "{challenges:?}");
        for scheme in ["Bearer ", "SoTicket ", "Basic "] {
            assert!(
                challenges.iter().any(|c| c.starts_with(scheme)),
                "{scheme} in {challenges:?}"
            );
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["ErrorType"], "Unauthorized");
    }
    app.stop().await;
}
