//! The webhook API: the write-only secret, filters, a failing test on save, and the
//! strict target policy.

use super::*;

both_backends!(
    strict_target_policy_refuses_http_and_loopback,
    webhook_api_secret_is_write_only_and_filters_work,
    saving_an_active_hook_whose_test_fails_is_refused,
);

async fn strict_target_policy_refuses_http_and_loopback() {
    let app = TestApp::start_with(|t| {
        t.insert("dev".into(), false.into());
    })
    .await;
    for url in [
        "http://127.0.0.1:9/hook",
        "https://127.0.0.1/hook",
        "https://localhost/x",
        "https://10.0.0.1/x",
    ] {
        let (s, v) = app
            .call(
                Method::POST,
                "/api/v1/Webhook",
                Some(json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": url})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {v}");
        assert!(v["Message"].as_str().unwrap().contains("TargetUrl"), "{v}");
    }
    app.stop().await;
}

async fn webhook_api_secret_is_write_only_and_filters_work() {
    let app = TestApp::stepped().await;
    let rx = receiver(Some("abc")).await;
    let id = app
        .create_hook(&rx, &["contact.created", "contact.changed"], Some("abc"))
        .await;
    let v = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{id}"), None)
        .await;
    assert_eq!(v["Secret"], Value::Null);
    assert_eq!(v["State"], "Active");
    assert!(v["_Links"]["Self"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/api/v1/Webhook/{id}")));
    let list = app.ok(Method::GET, "/api/v1/Webhook", None).await;
    assert!(
        list.to_string().find("abc").is_none(),
        "secret never listed: {list}"
    );
    // PUT without Secret keeps it: deliveries stay signed.
    let mut put = v.clone();
    put.as_object_mut().unwrap().remove("Secret");
    put["Name"] = json!("Renamed");
    app.ok(Method::PUT, &format!("/api/v1/Webhook/{id}"), Some(put))
        .await;
    app.create_contact("x").await;
    let got = app.delivered(&rx).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].verdict.is_valid());
    assert_eq!(got[0].payload.as_ref().unwrap().webhook_name, "Renamed");
    // Filters.
    let by_event = app
        .ok(
            Method::GET,
            "/api/v1/Webhook?eventFilter=contact.changed",
            None,
        )
        .await;
    assert_eq!(by_event.as_array().unwrap().len(), 1);
    let none = app
        .ok(
            Method::GET,
            "/api/v1/Webhook?eventFilter=contact.deleted",
            None,
        )
        .await;
    assert!(none.as_array().unwrap().is_empty());
    let by_name = app
        .ok(
            Method::GET,
            "/api/v1/Webhook?nameFilter=Renamed&statusFilter=Active",
            None,
        )
        .await;
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    let stopped = app
        .ok(Method::GET, "/api/v1/Webhook?statusFilter=Stopped", None)
        .await;
    assert!(stopped.as_array().unwrap().is_empty());
    let d = app.ok(Method::GET, "/api/v1/Webhook/default", None).await;
    assert_eq!(d["Events"], json!(["contact.created", "contact.deleted"]));
    assert_eq!(d["Registered"], "0001-01-01T00:00:00");
    // An explicit empty Secret removes it.
    // (a receiver without a secret: the one above now refuses unsigned calls, test events too)
    let rx2 = receiver(None).await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{id}"),
        Some(json!([{"op": "replace", "path": "secret", "value": ""}, {"op": "replace", "path": "/TARGETURL", "value": rx2.url("/hook")}])),
    )
    .await;
    app.create_contact("y").await;
    let got = app.delivered(&rx2).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].header("x-superoffice-signature").is_none());
    let (s, _) = app
        .call(Method::DELETE, &format!("/api/v1/Webhook/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .call(Method::GET, &format!("/api/v1/Webhook/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn saving_an_active_hook_whose_test_fails_is_refused() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    rx.set_status(500);
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook",
            Some(json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/x")})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["ErrorType"], "WebhookTestFailed");
    assert!(v["Message"].as_str().unwrap().contains("500"), "{v}");
    let tests: Vec<_> = rx.received().into_iter().filter(|r| r.is_test()).collect();
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].payload.as_ref().unwrap().event, "test");
    // A Stopped hook is saved without a test.
    let (s, _) = app
        .call(Method::POST, "/api/v1/Webhook", Some(json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/x"), "State": "Stopped"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}
