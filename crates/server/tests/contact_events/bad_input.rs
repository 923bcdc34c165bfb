//! Bad input gets a clear 4xx with the JSON error body; JSON Patch `test` and paths.

use super::*;

both_backends!(
    bad_input_gets_clear_4xx_json_errors,
    json_patch_test_op_conflicts_and_paths_are_case_insensitive,
);

async fn bad_input_gets_clear_4xx_json_errors() {
    let app = TestApp::start_with(|t| {
        t.insert("max_body_bytes".into(), 4096.into());
    })
    .await;
    let check = |s: StatusCode, v: &Value, want: StatusCode, needle: &str| {
        assert_eq!(s, want, "{v}");
        assert!(v["ErrorType"].is_string() && v["Error"].is_string(), "{v}");
        assert!(
            v["Message"].as_str().unwrap().contains(needle),
            "{v} should mention {needle}"
        );
    };
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "x".repeat(220)})),
        )
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "name");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "ok", "OrgNr": "1".repeat(50)})),
        )
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "orgNr");
    let (s, v) = app
        .call(Method::POST, "/api/v1/Contact", Some(json!({"Name": 5})))
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "Name");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Department": "no name"})),
        )
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "Name");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "a", "Business": {"Id": "two"}})),
        )
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "Business.Id");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "a", "Source": 70000})),
        )
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "source");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "x".repeat(5000)})),
        )
        .await;
    check(s, &v, StatusCode::PAYLOAD_TOO_LARGE, "max_body_bytes");
    let resp = app
        .http
        .post(format!("{}/api/v1/Contact", app.base))
        .bearer_auth(&app.key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    check(StatusCode::BAD_REQUEST, &v, StatusCode::BAD_REQUEST, "JSON");
    let (s, v) = app.call(Method::GET, "/api/v1/Contact/abc", None).await;
    check(s, &v, StatusCode::BAD_REQUEST, "int32");
    let (s, v) = app.call(Method::GET, "/api/v1/Contact/999", None).await;
    check(s, &v, StatusCode::NOT_FOUND, "not found");
    let (s, v) = app
        .call_as("wrong", Method::GET, "/api/v1/Contact/1", None)
        .await;
    check(s, &v, StatusCode::UNAUTHORIZED, "API key");
    // Health needs no key and answers from the database.
    let health: Value = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let resp = app
        .http
        .get(format!("{}/api/v1/Webhook", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, v) = app
        .call(Method::GET, "/api/v1/Webhook?statusFilter=Sleeping", None)
        .await;
    check(s, &v, StatusCode::BAD_REQUEST, "statusFilter");
    let (s, v) = app
        .call(Method::GET, "/api/v1/Webhook/1/Deliveries?limit=many", None)
        .await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
        "{s} {v}"
    );
    assert!(
        v["ErrorType"].is_string(),
        "JSON error for a bad query: {v}"
    );
    let (s, v) = app
        .call(Method::GET, "/api/v1/Webhook/1/Deliveries/notanumber", None)
        .await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
        "{s} {v}"
    );
    assert!(v["ErrorType"].is_string(), "JSON error for a bad path: {v}");
    let (s, v) = app.call(Method::DELETE, "/api/v1/Contact", None).await;
    check(s, &v, StatusCode::METHOD_NOT_ALLOWED, "method");
    let (s, v) = app.call(Method::GET, "/api/v2/nothing", None).await;
    check(s, &v, StatusCode::NOT_FOUND, "route");
    let (s, v) = app
        .call(Method::PATCH, "/api/v1/Contact/1", Some(json!("text")))
        .await;
    assert!(
        s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
        "{s} {v}"
    );
    // Webhook validation.
    let rx = receiver(None).await;
    for (body, needle) in [
        (
            json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": "ftp://x"}),
            "TargetUrl",
        ),
        (
            json!({"Name": "h", "Events": "contact.created", "TargetUrl": rx.url("/")}),
            "Events",
        ),
        (
            json!({"Name": "", "Events": ["contact.created"], "TargetUrl": rx.url("/")}),
            "Name",
        ),
        (
            json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/"), "State": "Bogus"}),
            "State",
        ),
        (
            json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/"), "Headers": {"X-SuperOffice-Event": "x"}}),
            "Headers",
        ),
        (
            json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/"), "Type": "crmscript"}),
            "Type",
        ),
        (
            json!({"Name": "h", "Events": ["contact.created"], "TargetUrl": rx.url("/"), "RetryPolicy": "never"}),
            "RetryPolicy",
        ),
    ] {
        let (s, v) = app.call(Method::POST, "/api/v1/Webhook", Some(body)).await;
        check(s, &v, StatusCode::BAD_REQUEST, needle);
    }
    app.stop().await;
}

async fn json_patch_test_op_conflicts_and_paths_are_case_insensitive() {
    let app = TestApp::start().await;
    let id = app.create_contact("A").await;
    let v = app
        .ok(Method::PATCH, &format!("/api/v1/Contact/{id}"), Some(json!([{"op": "replace", "path": "department", "value": "D"}, {"op": "add", "path": "/country/countryid", "value": 578}])))
        .await;
    assert_eq!(v["Department"], "D");
    assert_eq!(v["Country"]["CountryId"], 578);
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/Contact/{id}"),
            Some(json!([{"op": "test", "path": "/Name", "value": "Z"}])),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/Contact/{id}"),
            Some(json!([{"op": "move", "from": "/Name", "path": "/Department"}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    app.stop().await;
}
