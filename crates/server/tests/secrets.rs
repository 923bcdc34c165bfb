//! `Headers` values are write-only like `Secret`: answered masked, kept when a PUT or PATCH
//! sends the mask back, sent in full to the receiver; `reveal_headers = true` answers them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MASK: &str = "********";

both_backends!(
    header_values_are_masked_kept_and_delivered,
    reveal_headers_answers_them_in_full,
);

fn header<'a>(r: &'a crmhooks_listen::Received, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn header_values_are_masked_kept_and_delivered() {
    let app = TestApp::stepped().await;
    let rx = receiver(Some("s3cret")).await;
    let extra = json!({"Headers": {"X-Api-Key": "receiver-password", "X-Team": "crm"}});
    let id = app
        .create_hook_as(
            &app.key.clone(),
            &rx,
            &["contact.created"],
            Some("s3cret"),
            extra,
        )
        .await;
    let path = format!("/api/v1/Webhook/{id}");
    let got = app.ok(Method::GET, &path, None).await;
    assert_eq!(got["Headers"], json!({"X-Api-Key": MASK, "X-Team": MASK}));
    assert_eq!(got["Secret"], Value::Null);

    // A GET, one edit, a PUT: the masked header keeps its value, the edited one changes.
    let mut edited = got.clone();
    edited["Headers"]["X-Team"] = json!("sales");
    app.ok(Method::PUT, &path, Some(edited)).await;
    // A merge patch of another property keeps both.
    app.ok(Method::PATCH, &path, Some(json!({"Name": "patched"})))
        .await;
    app.create_contact("Acme").await;
    let delivered = app.delivered(&rx).await;
    let last = delivered.last().expect("a delivery");
    assert_eq!(header(last, "X-Api-Key"), Some("receiver-password"));
    assert_eq!(header(last, "X-Team"), Some("sales"));

    // The mask of a header the webhook does not have is refused, naming it.
    let mut bad = app.ok(Method::GET, &path, None).await;
    bad["Headers"]["X-New"] = json!(MASK);
    let (s, v) = app.call(Method::PUT, &path, Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("Headers.X-New"), "{v}");
    app.stop().await;
}

async fn reveal_headers_answers_them_in_full() {
    let app = TestApp::stepped_with(|t| {
        t.insert("reveal_headers".into(), true.into());
    })
    .await;
    let rx = receiver(None).await;
    let extra = json!({"Headers": {"X-Api-Key": "receiver-password"}});
    let id = app
        .create_hook_as(&app.key.clone(), &rx, &["contact.created"], None, extra)
        .await;
    let got = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{id}"), None)
        .await;
    assert_eq!(got["Headers"], json!({"X-Api-Key": "receiver-password"}));
    app.stop().await;
}
