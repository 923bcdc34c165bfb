//! What the receiver records and counts: duplicates, the out file, waiting for arrivals,
//! the benchmark mode, and shutdown.

use super::*;

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
