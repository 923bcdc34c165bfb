//! The delivery log: deliveries, attempts (a failed one, then a success), usage, the last
//! error, replay, and a pending delivery.

use reqwest::Method;

use crate::common::*;
use crate::transcript::{assert_transcript, wait_delivered, Transcript};

pub async fn delivery_log_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], Some("k")).await;
    let mut t = Transcript::new(&app, &rx);
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(r#"{"Name":"Delivered"}"#),
    )
    .await;
    wait_delivered(&app, hook, 1).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=delivered&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00&limit=5",
        None,
    )
    .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=failed",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/1", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/1/LastError", None)
        .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00Z","onlyFailed":true}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00","until":"2999-01-01T00:00:00Z","limit":10}"#),
    )
    .await;
    wait_delivered(&app, hook, 2).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?limit=1", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?before=2", None)
        .await;
    t.note("a failed attempt, then a successful one");
    let flaky = crmhooks_listen::Receiver::start(
        ([127, 0, 0, 1], 0).into(),
        crmhooks_listen::ReceiverConfig {
            fail_first: 1,
            ..crmhooks_listen::ReceiverConfig::default()
        },
    )
    .await
    .unwrap();
    let flaky_hook = app.create_hook(&flaky, &["contact.changed"], None).await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"Department":"retried"}"#),
    )
    .await;
    wait_delivered(&app, flaky_hook, 1).await;
    let flaky_base = flaky.url("").trim_end_matches('/').to_owned();
    let from = t.out.len();
    t.send(Method::GET, "/api/v1/Webhook/2/Deliveries/3", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/2/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/2/LastError", None)
        .await;
    let tail = t.out.split_off(from).replace(&flaky_base, "{flaky}");
    t.out.push_str(&tail);
    assert_transcript("delivery_log", &t.out);
    app.stop().await;
}

/// A node that does not deliver: the delivery stays pending, with its next attempt.
pub async fn pending_delivery_responses() {
    let app = TestApp::start_with(|t| {
        if let Some(d) = t.get_mut("delivery").and_then(|d| d.as_table_mut()) {
            d.insert("enabled".into(), false.into());
        }
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    app.create_contact("pending").await;
    let mut t = Transcript::new(&app, &rx);
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=pending",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/1", None)
        .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/1/Replay",
        Some(r#"{"since":"2000-01-01T00:00:00Z"}"#),
    )
    .await;
    assert_transcript("pending_delivery", &t.out);
    app.stop().await;
}
