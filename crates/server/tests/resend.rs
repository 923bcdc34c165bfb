//! Issue 23: resending one delivery, and searching the delivery log by contact and EventId,
//! through the API with a real receiver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

both_backends!(
    resend_sends_the_event_again_with_a_new_event_id,
    resend_refuses_other_tenants_open_deliveries_and_bad_ids,
    the_log_searches_by_primary_key_and_event_id,
);

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().expect("a JSON array")
}

/// A delivered delivery resent: the receiver gets the same event again, with a new EventId and
/// `X-SuperOffice-Retry: 0`; the log shows the new delivery next to the first.
async fn resend_sends_the_event_again_with_a_new_event_id() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let pk = app.create_contact("Resent").await;
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 1);
    let log = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    let first = list(&log)[0]["DeliveryId"].as_i64().unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Deliveries/{first}/Resend"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["Status"], "pending");
    assert_eq!(v["PrimaryKey"], pk);
    assert_ne!(v["DeliveryId"].as_i64().unwrap(), first);
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 2, "sent again");
    let (a, b) = (
        got[0].payload.as_ref().unwrap(),
        got[1].payload.as_ref().unwrap(),
    );
    assert_ne!(a.event_id, b.event_id, "a new EventId");
    assert_eq!(b.event, "contact.created");
    assert_eq!(got[1].header("x-superoffice-retry"), Some("0"));
    let log = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    assert_eq!(list(&log).len(), 2);
    assert!(list(&log).iter().all(|d| d["Status"] == "delivered"));
    app.stop().await;
}

/// Another tenant's delivery is not found, an open one is a conflict, ids are checked; every
/// error is the JSON error body.
async fn resend_refuses_other_tenants_open_deliveries_and_bad_ids() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    app.create_contact("Open").await;
    let log = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    let id = list(&log)[0]["DeliveryId"].as_i64().unwrap();
    let resend = |key: String, path: String| {
        let app = &app;
        async move { app.call_as(&key, Method::POST, &path, None).await }
    };
    let me = "test-key-default-0123456789abcdef".to_owned();
    let (s, v) = resend(
        me.clone(),
        format!("/api/v1/Webhook/{hook}/Deliveries/{id}/Resend"),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "still pending: {v}");
    assert_eq!(v["ErrorType"], "Conflict");
    app.deliver().await;
    let other = app.add_key("Other", 1).await;
    let (s, v) = resend(
        other.clone(),
        format!("/api/v1/Webhook/{hook}/Deliveries/{id}/Resend"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Their own webhook, our delivery id: not found either.
    let theirs = app
        .create_hook_as(&other, &rx, &["contact.created"], None, json!({}))
        .await;
    let (s, _) = resend(
        other,
        format!("/api/v1/Webhook/{theirs}/Deliveries/{id}/Resend"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (path, status) in [
        (
            format!("/api/v1/Webhook/{hook}/Deliveries/x/Resend"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/Webhook/{hook}/Deliveries/{}/Resend", id + 99),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/Webhook/abc/Deliveries/{id}/Resend"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = resend(me.clone(), path.clone()).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["Message"].is_string(), "{path}: a JSON error body: {v}");
    }
    let (s, _) = app
        .call_as(
            "no-such-key",
            Method::POST,
            &format!("/api/v1/Webhook/{hook}/Deliveries/{id}/Resend"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// `PrimaryKey` and `EventId` narrow the log, together with the other filters; bad values are
/// 400 with the JSON error body.
async fn the_log_searches_by_primary_key_and_event_id() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app
        .create_hook(&rx, &["contact.created", "contact.changed"], None)
        .await;
    let a = app.create_contact("A").await;
    let b = app.create_contact("B").await;
    app.ok(
        Method::PUT,
        &format!("/api/v1/Contact/{a}"),
        Some(json!({"Name": "A", "Department": "Sales"})),
    )
    .await;
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 3);
    let base = format!("/api/v1/Webhook/{hook}/Deliveries");
    let by_a = app
        .ok(Method::GET, &format!("{base}?PrimaryKey={a}"), None)
        .await;
    assert_eq!(list(&by_a).len(), 2);
    assert!(list(&by_a).iter().all(|d| d["PrimaryKey"] == a));
    let by_b = app
        .ok(
            Method::GET,
            &format!("{base}?primaryKey={b}&status=delivered"),
            None,
        )
        .await;
    assert_eq!(list(&by_b).len(), 1);
    let event_id = got[0].payload.as_ref().unwrap().event_id.to_string();
    let by_id = app
        .ok(
            Method::GET,
            &format!("{base}?EventId={}", event_id.to_uppercase()),
            None,
        )
        .await;
    assert_eq!(list(&by_id).len(), 1);
    assert_eq!(list(&by_id)[0]["EventId"], event_id.as_str());
    let none = app
        .ok(
            Method::GET,
            &format!("{base}?EventId={event_id}&status=failed"),
            None,
        )
        .await;
    assert!(list(&none).is_empty());
    for bad in [
        "PrimaryKey=abc",
        "PrimaryKey=99999999999",
        &format!("EventId={}", "x".repeat(65)),
    ] {
        let (s, v) = app.call(Method::GET, &format!("{base}?{bad}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["ErrorType"], "InvalidQuery", "{bad}: {v}");
    }
    app.stop().await;
}
