//! The test endpoint, signal events, and replays that deliver exactly the missed events.

use super::*;

both_backends!(
    test_endpoint_and_signal_event,
    replay_delivers_exactly_the_missed_events,
);

async fn test_endpoint_and_signal_event() {
    let app = TestApp::stepped().await;
    let rx = receiver(Some("k")).await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/Test",
            Some(
                json!({"Name": "try", "TargetUrl": rx.url("/t"), "Secret": "k", "Events": ["x.y"]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Success"], true, "{v}");
    assert!(v["Message"].as_str().unwrap().starts_with("HTTP/1.1 200"));
    let t = rx.received();
    assert_eq!(t.len(), 1);
    assert!(t[0].is_test() && t[0].verdict.is_valid());
    assert_eq!(t[0].header("x-hook-test"), Some("true"));
    let p = t[0].payload.as_ref().unwrap();
    assert_eq!(
        (p.event.as_str(), p.entity.as_str(), p.primary_key),
        ("test", "test", 0)
    );
    rx.set_status(503);
    let (_, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/Test",
            Some(json!({"TargetUrl": rx.url("/t"), "Secret": "k", "Events": ["x.y"]})),
        )
        .await;
    assert_eq!(v["Success"], false);
    assert!(v["Message"].as_str().unwrap().contains("503"));
    rx.set_status(200);
    // SignalEvent: every webhook subscribed to that exact name.
    app.create_hook(&rx, &["window.closed"], Some("k")).await;
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/window.closed/42",
            Some(json!({"width": 3, "title": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .call(Method::POST, "/api/v1/Webhook/window.opened/42", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 1);
    let p = got[0].payload.as_ref().unwrap();
    assert_eq!(p.event, "window.closed");
    assert_eq!(p.entity, "window");
    assert_eq!(p.primary_key, 42);
    assert_eq!(p.changes, ["width", "title"]);
    assert_eq!(p.field_values.as_ref().unwrap()["width"], 3);
    assert_eq!(p.changed_by_associate_id, 1);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/Webhook/window.closed/notanumber",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.stop().await;
}

async fn replay_delivers_exactly_the_missed_events() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let since = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let first = app.create_contact("delivered").await;
    app.deliver().await;
    // Stopped: events happen but the hook gets no deliveries.
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Stopped"})),
    )
    .await;
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(app.create_contact(&format!("missed {i}")).await);
    }
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Active"})),
    )
    .await;
    assert_eq!(app.delivered(&rx).await.len(), 1);
    let since_s = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let report = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s, "onlyFailed": true})),
        )
        .await;
    assert_eq!(
        (
            &report["status"],
            &report["matched"],
            &report["queued"],
            &report["skipped"]
        ),
        (&json!("Done"), &json!(4), &json!(3), &json!(1)),
        "{report}"
    );
    // The job can be read back, done; another webhook's path does not find it.
    let job = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Replay/{}", report["replayId"]),
            None,
        )
        .await;
    assert_eq!(job, report);
    let (s, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Replay/999999"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 4);
    let pks: Vec<i64> = got[1..]
        .iter()
        .map(|r| r.payload.as_ref().unwrap().primary_key)
        .collect();
    assert_eq!(pks, missed);
    assert_eq!(got[0].payload.as_ref().unwrap().primary_key, first);
    // Idempotent per request: a second identical replay queues nothing new.
    let again = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s, "onlyFailed": true})),
        )
        .await;
    assert_eq!(again["queued"], 0, "{again}");
    // Without onlyFailed everything in the window is sent again.
    let all = app
        .ok(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": since_s})),
        )
        .await;
    assert_eq!(all["queued"], 4, "{all}");
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Replay"),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    app.stop().await;
}
