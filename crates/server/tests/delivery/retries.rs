//! Retry cycles: their delays, their EventIds, the exponential policy, and a refused
//! connection counted as a failure.

use super::*;

both_backends!(
    superoffice_cycle_keeps_its_delays_and_event_id_then_a_new_one,
    retries_are_on_time_without_polling,
    refused_connections_are_failures_with_a_readable_error,
    exponential_policy_grows_delays_and_accepts_2xx,
);

/// With polling all but off, a retry still goes out at its time: the dispatcher sleeps until
/// the earliest due time it knows, and it knows the retries it scheduled itself even while it
/// reuses a recent answer of the store's `next_due` (which it reads at most every 100 ms under
/// load). Forgetting them would make each retry wait for the 30 s poll.
async fn retries_are_on_time_without_polling() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("poll_ms".into(), 30_000.into());
        d.insert(
            "superoffice_delays_ms".into(),
            toml::Value::Array(vec![300.into(), 600.into()]),
        );
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    rx.script([500, 500, 200]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "the retries did not come in time");
    assert_gap(&got, 1, 280, 1500);
    assert_gap(&got, 2, 580, 1800);
    assert_eq!(retry_headers(&got), ["0", "1", "2"]);
}

/// A SuperOffice cycle on the running dispatcher: attempts spaced by the configured delays, one
/// EventId for the cycle, and a failed cycle queued again at once under a new EventId. The
/// delays are the tests' (100 ms, 400 ms: `test_config`), the real ones (1 s, 4 s, the defaults
/// held by the config tests) scaled down ten times.
async fn superoffice_cycle_keeps_its_delays_and_event_id_then_a_new_one() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    rx.script([500, 500, 500, 200]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 4, T).await;
    assert_eq!(got.len(), 4);
    assert_gap(&got, 1, 95, 1100);
    assert_gap(&got, 2, 395, 1400);
    let gap3 = got[3].at.duration_since(got[2].at);
    assert!(
        gap3 < Duration::from_millis(1000),
        "a failed cycle is re-queued at once: {gap3:?}"
    );
    assert_eq!(retry_headers(&got), ["0", "1", "2", "0"]);
    let ids = event_ids(&got);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert_ne!(ids[2], ids[3], "a new cycle gets a new EventId");
    // The last success is recorded a moment after the receiver answered.
    app.wait_idle().await;
    let usage = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}/Usage"), None)
        .await;
    assert_eq!(usage["total_calls"], 4);
    assert_eq!(usage["total_errors"], 3);
    assert_eq!(usage["consecutive_errors"], 0, "reset by the success");
    app.stop().await;
}

async fn refused_connections_are_failures_with_a_readable_error() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    app.activate_untested(hook, &dead_url).await;
    app.create_contact("A").await;
    // Two rounds: the first attempt, then its retry (due at once in a stepped test).
    assert_eq!(app.step().await, 1);
    assert_eq!(app.step().await, 1);
    let last = app.last_error(hook).await;
    assert!(last.contains("connect"), "{last}");
    let list = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    let d = &list[0];
    let detail = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries/{}", d["DeliveryId"]),
            None,
        )
        .await;
    let attempts = detail["AttemptLog"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert!(attempts[0]["StatusCode"].is_null());
    assert!(attempts[0]["Error"].as_str().unwrap().contains("connect"));
    assert_eq!(attempts[0]["Retry"], 0);
    assert_eq!(attempts[1]["Retry"], 1);
    app.stop().await;
}

async fn exponential_policy_grows_delays_and_accepts_2xx() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("exponential_base_ms".into(), 200.into());
        d.insert("exponential_jitter".into(), 0.0.into());
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook_as(
        &app.key.clone(),
        &rx,
        &["contact.created"],
        None,
        json!({"RetryPolicy": "exponential", "SuccessStatus": "2xx"}),
    )
    .await;
    rx.script([500, 500, 204]);
    app.create_contact("A").await;
    let got = wait_deliveries(&rx, 3, T).await;
    assert_eq!(got.len(), 3);
    let g1 = got[1].at.duration_since(got[0].at);
    let g2 = got[2].at.duration_since(got[1].at);
    assert!(
        g1 >= Duration::from_millis(195) && g2 >= Duration::from_millis(395),
        "{g1:?} {g2:?}"
    );
    // (lower bounds only: a loaded machine can only make gaps longer)
    app.wait_idle().await;
    assert_eq!(
        deliveries(&rx).len(),
        3,
        "204 counts as success with SuccessStatus 2xx"
    );
    app.stop().await;
}
