//! Webhook definitions: the `default` carrier, POST, reads and lists, PUT, PATCH, Test,
//! signal, delete, and what the stored secret becomes.

use crmhooks_store::{TenantId, WebhookId};
use reqwest::Method;
use serde_json::Value;

use crate::common::*;
use crate::transcript::{assert_transcript, Transcript};

pub async fn webhook_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.note("the default carrier and an empty list");
    t.send(Method::GET, "/api/v1/Webhook/default", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    t.note("POST with every property, then with the required ones only");
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(
            r#"{"Name":"Full","Events":["contact.created"," contact.changed "],"TargetUrl":"{rx}/full","Secret":"s3cret","State":"Active","Type":"webhook","Headers":{"X-Custom":"v","X-Other":"w"},"Properties":{"a":1,"b":{"c":[true,null,1.5]}},"ErrorsEmail":"ops@example.com","RetryPolicy":"superoffice","SuccessStatus":"2xx"}"#,
        ),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"name":"Minimal","events":["contact.deleted"],"targeturl":"{rx}/min"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"Stopped","Events":["contact.created"],"TargetUrl":"{rx}/stopped","State":2,"Headers":{},"Properties":null,"ErrorsEmail":"","RetryPolicy":null,"SuccessStatus":"200"}"#),
    )
    .await;
    t.note("reads: one, the list, the filters");
    t.send(Method::GET, "/api/v1/Webhook/1", None).await;
    t.send(Method::GET, "/Default/api/v1/Webhook/2", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    t.send(Method::GET, "/api/v1/Webhook?nameFilter=Minimal", None)
        .await;
    t.send(
        Method::GET,
        "/api/v1/Webhook?eventFilter=contact.changed&statusFilter=Active",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=Stopped", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=", None)
        .await;
    t.note("PUT replaces: absent properties take their defaults, an absent Secret is kept");
    t.send(
        Method::PUT,
        "/api/v1/Webhook/1",
        Some(r#"{"Name":"Full, put","Events":["contact.created"],"TargetUrl":"{rx}/full","Headers":{"X-Custom":"v2"}}"#),
    )
    .await;
    t.note("PATCH: Merge Patch, JSON Patch, a failed test");
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"{"state":"Stopped","Properties":{"k":"v"},"Headers":null}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"[{"op":"replace","path":"/Name","value":"Patched"},{"op":"add","path":"/Properties/n","value":2},{"op":"test","path":"/state","value":"Stopped"},{"op":"replace","path":"State","value":"Active"}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"[{"op":"test","path":"/Name","value":"Other"}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(r#"{"Secret":"new"}"#),
    )
    .await;
    t.note("test and signal");
    t.send(
        Method::POST,
        "/api/v1/Webhook/Test",
        Some(r#"{"Events":["contact.created"],"TargetUrl":"{rx}/test"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/Test",
        Some(r#"{"Name":"x","Events":["contact.created"],"TargetUrl":"ftp://nowhere"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook/custom.thing/5",
        Some(r#"{"a":1}"#),
    )
    .await;
    t.send(Method::POST, "/api/v1/Webhook/custom.thing/6", None)
        .await;
    t.note("delete");
    t.send(Method::DELETE, "/api/v1/Webhook/3", None).await;
    t.send(Method::DELETE, "/api/v1/Webhook/3", None).await;
    t.send(Method::GET, "/api/v1/Webhook", None).await;
    assert_transcript("webhook", &t.out);
    app.stop().await;
}

/// What the stored secret became after each kind of save (the API never shows it).
pub async fn webhook_secret_semantics() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let secret = |app: &TestApp| {
        let store = app.state.store.clone();
        async move {
            store
                .get_webhook(TenantId::new(1), WebhookId::new(1))
                .await
                .unwrap()
                .unwrap()
                .secret
        }
    };
    let url = rx.url("/s");
    let put = |body: Value| {
        let app = &app;
        async move { app.ok(Method::PUT, "/api/v1/Webhook/1", Some(body)).await }
    };
    app.ok(
        Method::POST,
        "/api/v1/Webhook",
        Some(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "one"})),
    )
    .await;
    assert_eq!(secret(&app).await.as_deref(), Some("one"));
    let v = put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url}))
        .await;
    assert_eq!(v["Secret"], Value::Null);
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("one"),
        "PUT without Secret keeps it"
    );
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "two"}))
        .await;
    assert_eq!(secret(&app).await.as_deref(), Some("two"));
    app.ok(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(serde_json::json!({"Name": "s2"})),
    )
    .await;
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("two"),
        "PATCH without Secret keeps it"
    );
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": null}))
        .await;
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("two"),
        "an explicit null keeps it"
    );
    // SuperOffice's GetWebhook → edit → SaveWebhook: the GET's `"Secret": null` goes back.
    let mut got = app.ok(Method::GET, "/api/v1/Webhook/1", None).await;
    assert_eq!(got["Secret"], Value::Null);
    got["Name"] = "renamed".into();
    put(got.clone()).await;
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("two"),
        "GET, edit, PUT keeps it"
    );
    app.ok(Method::PATCH, "/api/v1/Webhook/1", Some(got)).await;
    assert_eq!(
        secret(&app).await.as_deref(),
        Some("two"),
        "a Merge Patch of what a GET answered keeps it"
    );
    app.ok(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(serde_json::json!([{"op": "replace", "path": "/Name", "value": "n"}])),
    )
    .await;
    assert_eq!(secret(&app).await.as_deref(), Some("two"));
    app.ok(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(serde_json::json!([{"op": "remove", "path": "/Secret"}])),
    )
    .await;
    assert_eq!(secret(&app).await, None, "a JSON Patch remove removes it");
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "three"}))
        .await;
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": ""}))
        .await;
    assert_eq!(secret(&app).await, None, "an empty string removes it");
    put(serde_json::json!({"Name": "s", "Events": ["contact.created"], "TargetUrl": url, "Secret": "four"}))
        .await;
    app.ok(
        Method::PATCH,
        "/api/v1/Webhook/1",
        Some(serde_json::json!({"Secret": ""})),
    )
    .await;
    assert_eq!(secret(&app).await, None, "a Merge Patch \"\" removes it");
    app.stop().await;
}

/// PATCH clears what it removes: a Merge Patch `null` and a JSON Patch `remove` empty
/// `ErrorsEmail`, `Headers`, `Properties`, `RetryPolicy` and `SuccessStatus`, and never the
/// secret by accident; `Type` is taken in any case and stored in lower case.
pub async fn webhook_patch_clears() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let full = serde_json::json!({
        "Name": "p", "Events": ["contact.created"], "TargetUrl": rx.url("/p"), "Secret": "keep",
        "Type": "Webhook", "ErrorsEmail": "ops@example.com", "Headers": {"X-A": "1"},
        "Properties": {"k": "v"}, "RetryPolicy": "exponential", "SuccessStatus": "2xx"
    });
    let v = app
        .ok(Method::POST, "/api/v1/Webhook", Some(full.clone()))
        .await;
    assert_eq!(v["Type"], "webhook");
    assert_eq!(v["RetryPolicy"], "exponential");
    let id = v["WebhookId"].as_i64().unwrap();
    let path = format!("/api/v1/Webhook/{id}");
    let cleared = [
        "ErrorsEmail",
        "Headers",
        "Properties",
        "RetryPolicy",
        "SuccessStatus",
    ];
    let merge: serde_json::Map<String, Value> = cleared
        .iter()
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    let v = app
        .ok(Method::PATCH, &path, Some(Value::Object(merge)))
        .await;
    let check = |v: &Value| {
        for k in ["ErrorsEmail", "Headers", "Properties"] {
            assert_eq!(v[k], Value::Null, "{k} cleared: {v}");
        }
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("RetryPolicy"), "{v}");
        assert!(!obj.contains_key("SuccessStatus"), "{v}");
    };
    check(&v);
    let stored = stored_webhook(&app, id).await;
    assert_eq!(
        (
            stored.errors_email,
            stored.headers,
            stored.retry_policy,
            stored.secret.as_deref()
        ),
        (None, None, None, Some("keep"))
    );
    app.ok(Method::PUT, &path, Some(full)).await;
    let ops: Vec<Value> = cleared
        .iter()
        .map(|k| serde_json::json!({"op": "remove", "path": format!("/{k}")}))
        .collect();
    let v = app.ok(Method::PATCH, &path, Some(Value::Array(ops))).await;
    check(&v);
    let stored = stored_webhook(&app, id).await;
    assert_eq!(stored.success_status, None);
    assert_eq!(stored.secret.as_deref(), Some("keep"));
    assert_eq!(stored.kind, crmhooks_store::WebhookType::Webhook);
    app.stop().await;
}

/// Webhook `id` of tenant 1 as the store holds it.
async fn stored_webhook(app: &TestApp, id: i64) -> crmhooks_store::Webhook {
    app.state
        .store
        .get_webhook(TenantId::new(1), WebhookId::new(id))
        .await
        .unwrap()
        .unwrap()
}
