//! Steering the answers: failing first, scripts, fallbacks, set statuses and delays.

use super::*;

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
