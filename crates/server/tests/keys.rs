//! Keys over HTTP: the admin API, scopes (403 for tenant keys), revocation seen within 5 s,
//! `/metrics` for admin keys or on `metrics_listen`, `/healthz` open, and the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use crmhooks_server::{Config, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

both_backends!(
    admin_keys_manage_keys_and_tenant_keys_get_403,
    revoked_expired_and_malformed_keys_are_401,
    metrics_needs_an_admin_key_or_its_own_address,
    management_calls_are_in_the_audit_log,
);

/// A 4xx with the JSON error body.
fn refused(got: &(StatusCode, Value), status: StatusCode) {
    assert_eq!(got.0, status, "{}", got.1);
    assert!(got.1["Error"].is_string(), "a JSON error body: {}", got.1);
}

async fn new_key(app: &TestApp, body: Value) -> Value {
    let (s, v) = app
        .call(Method::POST, "/api/v1/admin/keys", Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn admin_keys_manage_keys_and_tenant_keys_get_403() {
    let app = TestApp::start().await;
    let made = new_key(
        &app,
        json!({"tenant": "Newco", "associate": 5, "name": "crm sync"}),
    )
    .await;
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("crmh_") && key.len() >= 48, "{key}");
    assert_eq!(made["tenant"], "Newco");
    assert_eq!(made["associate"], 5);
    assert_eq!(made["scope"], "tenant");
    assert_eq!(made["name"], "crm sync");
    assert!(made["revoked"].is_null() && made["expires"].is_null());
    // The tenant was created, and the key works there.
    let (s, v) = app
        .call_as(&key, Method::GET, "/api/v1/Webhook", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .call_as(&key, Method::GET, "/Newco/api/v1/Webhook", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tenants = app.ok(Method::GET, "/api/v1/admin/tenants", None).await;
    assert!(
        tenants
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "Newco"),
        "{tenants}"
    );
    // Listed without the key.
    let list = app
        .ok(Method::GET, "/api/v1/admin/keys?tenant=Newco", None)
        .await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], made["id"]);
    assert!(list[0].get("key").is_none());
    assert!(!list[0].to_string().contains(&key[5..]));
    // A tenant key on admin routes: 403.
    for (method, path) in [
        (Method::GET, "/api/v1/admin/keys"),
        (Method::POST, "/api/v1/admin/keys"),
        (Method::DELETE, "/api/v1/admin/keys/1"),
        (Method::GET, "/api/v1/admin/tenants"),
    ] {
        let body = (method == Method::POST).then(|| json!({"tenant": "X", "associate": 1}));
        refused(
            &app.call_as(&key, method, path, body).await,
            StatusCode::FORBIDDEN,
        );
    }
    // An admin key for another tenant, with an expiry.
    let admin = new_key(
        &app,
        json!({"tenant": "Ops", "associate": 1, "scope": "admin", "expires": "90d"}),
    )
    .await;
    assert_eq!(admin["scope"], "admin");
    assert!(admin["expires"].as_str().unwrap().ends_with('Z'), "{admin}");
    let (s, _) = app
        .call_as(
            admin["key"].as_str().unwrap(),
            Method::GET,
            "/api/v1/admin/keys",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Bad input: 400 with the JSON body; an unknown key id 404.
    for body in [
        json!({"tenant": "X"}),
        json!({"tenant": "", "associate": 1}),
        json!({"tenant": "X", "associate": 1, "scope": "root"}),
        json!({"tenant": "X", "associate": 1, "expires": "forever"}),
        json!({"tenant": "X", "associate": -1}),
        json!({"tenant": "X", "associate": 1, "hash": "x"}),
        json!([1]),
    ] {
        refused(
            &app.call(Method::POST, "/api/v1/admin/keys", Some(body))
                .await,
            StatusCode::BAD_REQUEST,
        );
    }
    refused(
        &app.call(Method::DELETE, "/api/v1/admin/keys/abc", None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    refused(
        &app.call(Method::DELETE, "/api/v1/admin/keys/999999", None)
            .await,
        StatusCode::NOT_FOUND,
    );
    app.stop().await;
}

async fn revoked_expired_and_malformed_keys_are_401() {
    let app = TestApp::start().await;
    let made = new_key(&app, json!({"tenant": "Default", "associate": 2})).await;
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call_as(&key, Method::GET, "/api/v1/Webhook", None)
            .await
            .0,
        StatusCode::OK
    );
    let revoked = app
        .ok(
            Method::DELETE,
            &format!("/api/v1/admin/keys/{}", made["id"]),
            None,
        )
        .await;
    assert!(revoked["revoked"].is_string(), "{revoked}");
    // Refused within 5 s (the cache trusts a lookup for 2 s).
    let started = std::time::Instant::now();
    let refused_at = crmhooks_testkit::wait_for(
        || async {
            let got = app
                .call_as(&key, Method::GET, "/api/v1/Webhook", None)
                .await;
            (got.0 == StatusCode::UNAUTHORIZED).then_some(got)
        },
        Duration::from_secs(5),
    )
    .await
    .expect("the revoked key is refused within 5 s");
    refused(&refused_at, StatusCode::UNAUTHORIZED);
    eprintln!("revoked key refused after {:?}", started.elapsed());
    // An expired key, stored as an operator could have made it.
    let expired = crmhooks_store::generate_key();
    app.state
        .store
        .create_key(
            &crmhooks_store::NewKey {
                tenant: "Default".into(),
                associate_id: 3,
                name: "old".into(),
                scope: crmhooks_store::KeyScope::Tenant,
                expires: Some(crmhooks_store::now_ticks() - 1),
            },
            &expired,
        )
        .await
        .unwrap();
    for k in [expired.as_str(), "crmh_unknown", "x", "crmh_\u{e9}"] {
        refused(
            &app.call_as(k, Method::GET, "/api/v1/Webhook", None).await,
            StatusCode::UNAUTHORIZED,
        );
    }
    let resp = app
        .http
        .get(format!("{}/api/v1/Webhook", app.base))
        .header("Authorization", "Bearer")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert!(body["Error"].is_string(), "{body}");
    app.stop().await;
}

async fn get(url: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn metrics_needs_an_admin_key_or_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = test_config(dir.path()).await;
    flags.insert("metrics_listen".into(), "127.0.0.1:0".into());
    let database = flags["database"].as_str().unwrap().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::build(Config::load(None, flags).unwrap(), Some(listener))
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    let open = format!("http://{}/metrics", server.metrics_addr().unwrap());
    let state = server.state().clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.run(rx));
    let admin = "test-key-default-0123456789abcdef";
    let tenant_key = crmhooks_store::generate_key();
    state
        .store
        .create_key(
            &crmhooks_store::NewKey {
                tenant: "Secretco".into(),
                associate_id: 1,
                name: String::new(),
                scope: crmhooks_store::KeyScope::Tenant,
                expires: None,
            },
            &tenant_key,
        )
        .await
        .unwrap();
    let metrics = format!("{base}/metrics");
    let (s, body) = get(&metrics, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("\"Error\""), "{body}");
    let (s, body) = get(&metrics, Some(&tenant_key)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("admin"), "{body}");
    let (s, body) = get(&metrics, Some(admin)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("crmhooks_"), "{body}");
    // Its own address: no key needed, and nothing else there.
    let (s, body) = get(&open, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("crmhooks_"), "{body}");
    let other = open.replace("/metrics", "/api/v1/Webhook");
    assert_eq!(get(&other, Some(admin)).await.0, StatusCode::NOT_FOUND);
    // /healthz: open, and says nothing of tenants.
    let (s, body) = get(&format!("{base}/healthz"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        !body.contains("Secretco") && !body.contains("Default"),
        "{body}"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(state);
    if database.starts_with("postgres") {
        crmhooks_testkit::postgres::drop_database_url(&database).await;
    }
}

async fn management_calls_are_in_the_audit_log() {
    let app = TestApp::start_with(|t| {
        t.insert("test_on_save".into(), false.into());
    })
    .await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/Webhook",
            Some(json!({
                "Name": "audited",
                "Events": ["contact.created"],
                "TargetUrl": "http://127.0.0.1:9/hook",
                "Secret": "sup3r-s3cret-value",
                "Headers": {"X-Api-Key": "hdr-s3cret-value"},
                "State": "Stopped",
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hook = v["WebhookId"].as_i64().unwrap();
    let path = format!("/api/v1/Webhook/{hook}");
    app.ok(
        Method::PATCH,
        &path,
        Some(json!({"Name": "renamed", "Secret": "an0ther-s3cret"})),
    )
    .await;
    app.ok(Method::PATCH, &path, Some(json!({"State": "Active"})))
        .await;
    app.ok(Method::PATCH, &path, Some(json!({"State": "Stopped"})))
        .await;
    app.ok(
        Method::POST,
        &format!("{path}/Replay"),
        Some(json!({"since": "2020-01-01T00:00:00Z"})),
    )
    .await;
    let made = new_key(
        &app,
        json!({"tenant": "Default", "associate": 4, "name": "ci"}),
    )
    .await;
    app.ok(
        Method::DELETE,
        &format!("/api/v1/admin/keys/{}", made["id"]),
        None,
    )
    .await;
    let (s, _) = app.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let log = app.ok(Method::GET, "/api/v1/AuditLog", None).await;
    let entries = log.as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["Action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "webhook.deleted",
            "key.revoked",
            "key.created",
            "webhook.replayed",
            "webhook.stopped",
            "webhook.started",
            "webhook.changed",
            "webhook.created",
        ],
        "{log}"
    );
    let text = log.to_string();
    for secret in [
        "sup3r-s3cret-value",
        "hdr-s3cret-value",
        "an0ther-s3cret",
        made["key"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let changed = &entries[6];
    assert_eq!(changed["Target"], format!("webhook/{hook}"));
    assert!(
        changed["Summary"]
            .as_str()
            .unwrap()
            .contains("Name, Secret"),
        "{changed}"
    );
    assert_eq!(changed["AssociateId"], 1);
    assert!(changed["KeyId"].is_i64() && changed["At"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entries[2]["Target"], format!("key/{}", made["id"]));
    // Paging: newest first, a limit, then older than the last seen.
    let page = app.ok(Method::GET, "/api/v1/AuditLog?limit=3", None).await;
    assert_eq!(page.as_array().unwrap().len(), 3);
    let next = app
        .ok(
            Method::GET,
            &format!("/api/v1/AuditLog?limit=3&before={}", page[2]["Id"]),
            None,
        )
        .await;
    assert_eq!(next[0]["Action"], "webhook.replayed");
    refused(
        &app.call(Method::GET, "/api/v1/AuditLog?limit=x", None)
            .await,
        StatusCode::BAD_REQUEST,
    );
    // Another tenant sees none of it.
    let other = app.add_key("Other", 1).await;
    let (s, v) = app
        .call_as(&other, Method::GET, "/api/v1/AuditLog", None)
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    app.stop().await;
}
