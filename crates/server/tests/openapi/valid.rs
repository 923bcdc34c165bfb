//! The document is well-formed OpenAPI 3.1: it reads back into utoipa's model, every `$ref`
//! resolves, operation ids are unique, path templates and parameters agree, and its examples
//! fit their schemas; and what a real server answers fits the schemas the document gives.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::TestApp;
use crate::schema_check::{check, resolve};
use crmhooks_server::openapi::{document, document_text, is_method};

fn each_ref(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| each_ref(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| each_ref(v, out)),
        _ => {}
    }
}

/// Every operation: (path, method, operation object), webhooks included.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for section in ["paths", "webhooks"] {
        for (path, item) in doc[section].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if is_method(method) {
                    out.push((path.clone(), method.clone(), op));
                }
            }
        }
    }
    out
}

fn drop_null_defaults(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("default") == Some(&Value::Null) {
                m.remove("default");
            }
            m.values_mut().for_each(drop_null_defaults);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}

#[test]
fn it_is_openapi_3_1_and_reads_back() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "crmhooks");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let model: utoipa::openapi::OpenApi = serde_json::from_str(document_text()).unwrap();
    let back = serde_json::to_value(&model).unwrap();
    assert_eq!(back["paths"], doc["paths"], "paths survive utoipa's model");
    // utoipa's model reads `"default": null` as no default; everything else must survive.
    let mut doc = doc;
    drop_null_defaults(&mut doc);
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert_eq!(
            &back["components"]["schemas"][name], schema,
            "schema {name} survives utoipa's model"
        );
    }
    assert!(doc["webhooks"].as_object().unwrap().len() >= 5);
}

#[test]
fn references_operations_and_parameters_are_consistent() {
    let doc = document();
    let mut refs = Vec::new();
    each_ref(&doc, &mut refs);
    assert!(refs.len() > 50);
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "$ref {r} resolves to nothing"
        );
    }
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(ids.insert(id.to_owned()), "{at}: operationId {id} twice");
        for t in op["tags"].as_array().unwrap() {
            assert!(
                tags.contains(t.as_str().unwrap()),
                "{at}: undeclared tag {t}"
            );
        }
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{at}: no responses");
        for (status, r) in responses {
            assert!(
                status == "default" || status.parse::<u16>().is_ok(),
                "{at}: status {status}"
            );
            assert!(
                resolve(&doc, r)["description"].is_string(),
                "{at} {status}: no description"
            );
        }
        // Path templates and path parameters name the same things, each required.
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{at}: path parameter {p} not required");
                p["name"].as_str().unwrap()
            })
            .collect();
        if !path.contains('.') || path.starts_with('/') {
            assert_eq!(templated, in_path, "{at}: path parameters");
        }
        for p in &params {
            assert!(
                ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap()),
                "{at}: {p}"
            );
        }
        for requirement in op
            .get("security")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(name), "{at}: unknown scheme {name}");
            }
        }
    }
    for requirement in doc["security"].as_array().unwrap() {
        for name in requirement.as_object().unwrap().keys() {
            assert!(schemes.contains_key(name), "unknown scheme {name}");
        }
    }
    // No two templates are the same path (OpenAPI forbids it).
    let mut shapes = BTreeSet::new();
    for path in doc["paths"].as_object().unwrap().keys() {
        let shape: Vec<&str> = path
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect();
        assert!(
            shapes.insert(shape.join("/")),
            "{path} is the same template as another path"
        );
    }
}

#[test]
fn every_example_fits_its_schema() {
    let doc = document();
    let mut checked = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for example in schema
            .get("examples")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let errors = check(&doc, schema, example, false);
            assert!(
                errors.is_empty(),
                "schema {name}, example {example}: {errors:#?}"
            );
            checked += 1;
        }
    }
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let content = &response["content"]["application/json"];
        let errors = check(&doc, &content["schema"], &content["example"], true);
        assert!(errors.is_empty(), "response {name}: {errors:#?}");
        checked += 1;
    }
    for (path, method, op) in operations(&doc) {
        for (media, content) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            for (example_name, example) in content["examples"].as_object().into_iter().flatten() {
                let errors = check(&doc, &content["schema"], &example["value"], true);
                assert!(
                    errors.is_empty(),
                    "{method} {path} {media} example {example_name}: {errors:#?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} examples");
}

/// The schema the document gives for answer `status` of `method path` (a path as documented).
fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let response = &op["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {path}: answer {status} is not documented"
    );
    &resolve(doc, response)["content"]["application/json"]["schema"]
}

/// Calls `method url` and checks the answer against what the document says of `path`.
async fn fits(
    app: &TestApp,
    doc: &Value,
    method: Method,
    path: &str,
    url: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = app.call(method.clone(), url, body).await;
    let m = method.as_str().to_ascii_lowercase();
    let schema = answer_schema(doc, &m, path, status.as_u16());
    if status.as_u16() != 204 {
        assert!(!schema.is_null(), "{method} {url}: no schema for {status}");
        let errors = check(doc, schema, &answer, true);
        assert!(
            errors.is_empty(),
            "{method} {url} → {status} {answer}: {errors:#?}"
        );
    }
    answer
}

#[tokio::test]
async fn real_answers_fit_the_documented_schemas() {
    let app = TestApp::stepped().await;
    let doc = document();
    let rx = crate::common::receiver(Some("s")).await;
    let target = rx.url("/hook");
    let w = "/api/v1/Webhook";
    let c = "/api/v1/Contact";
    fits(&app, &doc, Method::GET, w, w, None).await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/default",
        "/api/v1/Webhook/default",
        None,
    )
    .await;
    let hook = json!({"Name": "Doc", "Events": ["contact.created", "contact.changed"], "TargetUrl": target,
                      "Secret": "s", "Headers": {"X-A": "b"}, "Properties": {"p": 1}, "RetryPolicy": "superoffice", "SuccessStatus": "2xx"});
    let saved = fits(&app, &doc, Method::POST, w, w, Some(hook)).await;
    let id = saved["WebhookId"].as_i64().unwrap();
    let one = format!("{w}/{id}");
    fits(&app, &doc, Method::GET, "/api/v1/Webhook/{id}", &one, None).await;
    fits(
        &app,
        &doc,
        Method::PATCH,
        "/api/v1/Webhook/{id}",
        &one,
        Some(json!({"Name": "Doc 2"})),
    )
    .await;
    fits(&app, &doc, Method::GET, w, w, None).await;
    fits(
        &app,
        &doc,
        Method::POST,
        "/api/v1/Webhook/Test",
        "/api/v1/Webhook/Test",
        Some(json!({"Events": ["contact.created"], "TargetUrl": target})),
    )
    .await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Contact/default",
        "/api/v1/Contact/default",
        None,
    )
    .await;
    let contact = fits(
        &app,
        &doc,
        Method::POST,
        c,
        c,
        Some(json!({"Name": "Doc AS", "Business": 2, "Country": {"CountryId": 578}})),
    )
    .await;
    let cid = contact["ContactId"].as_i64().unwrap();
    let cone = format!("{c}/{cid}");
    fits(
        &app,
        &doc,
        Method::PUT,
        "/api/v1/Contact/{id}",
        &cone,
        Some(json!({"Name": "Doc AS", "Department": "Sales"})),
    )
    .await;
    fits(&app, &doc, Method::GET, c, &format!("{c}?$top=1"), None).await;
    app.deliver().await;
    let list = fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/{id}/Deliveries",
        &format!("{one}/Deliveries"),
        None,
    )
    .await;
    let did = list[0]["DeliveryId"].as_i64().unwrap();
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/{id}/Deliveries/{delivery_id}",
        &format!("{one}/Deliveries/{did}"),
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/{id}/Usage",
        &format!("{one}/Usage"),
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/{id}/LastError",
        &format!("{one}/LastError"),
        None,
    )
    .await;
    let job = fits(
        &app,
        &doc,
        Method::POST,
        "/api/v1/Webhook/{id}/Replay",
        &format!("{one}/Replay"),
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await;
    let rid = job["replayId"].as_i64().unwrap();
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Webhook/{id}/Replay/{replay_id}",
        &format!("{one}/Replay/{rid}"),
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::DELETE,
        "/api/v1/Contact/{id}",
        &cone,
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::POST,
        "/api/v1/Contact/{id}/Restore",
        &format!("{cone}/Restore"),
        None,
    )
    .await;
    // Errors: each answer's body is the documented ErrorBody.
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Contact/{id}",
        &format!("{c}/999"),
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/Contact/{id}",
        &format!("{c}/x"),
        None,
    )
    .await;
    fits(&app, &doc, Method::POST, c, c, Some(json!({"Name": 5}))).await;
    let (status, body) = app.call_as("nope", Method::GET, w, None).await;
    let errors = check(
        &doc,
        answer_schema(&doc, "get", w, status.as_u16()),
        &body,
        true,
    );
    assert!(errors.is_empty(), "{errors:#?}");
    // Resend, the audit log, the admin API (the bootstrap key is an admin key).
    let resend = "/api/v1/Webhook/{id}/Deliveries/{delivery_id}/Resend";
    let url = format!("{one}/Deliveries/{did}/Resend");
    // 409 first: the delivery the replay queued is still open.
    let (status, _) = app.call(Method::POST, &url, None).await;
    assert_eq!(status, 409);
    app.deliver().await;
    let resent = fits(&app, &doc, Method::POST, resend, &url, None).await;
    assert_eq!(resent["Status"], "pending");
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/AuditLog",
        "/api/v1/AuditLog?limit=5",
        None,
    )
    .await;
    let keys = "/api/v1/admin/keys";
    let key = fits(
        &app,
        &doc,
        Method::POST,
        keys,
        keys,
        Some(json!({"tenant": "Other", "associate": 5, "expires": "1d"})),
    )
    .await;
    fits(&app, &doc, Method::GET, keys, keys, None).await;
    fits(
        &app,
        &doc,
        Method::GET,
        "/api/v1/admin/tenants",
        "/api/v1/admin/tenants",
        None,
    )
    .await;
    let kid = key["id"].as_i64().unwrap();
    fits(
        &app,
        &doc,
        Method::DELETE,
        "/api/v1/admin/keys/{id}",
        &format!("{keys}/{kid}"),
        None,
    )
    .await;
    // The agent methods.
    let agent = |m: &str| format!("/api/v1/Agents/Webhook/{m}");
    fits(
        &app,
        &doc,
        Method::POST,
        &agent("GetAllWebhooks"),
        &agent("GetAllWebhooks"),
        Some(json!({})),
    )
    .await;
    fits(
        &app,
        &doc,
        Method::POST,
        &agent("GetWebhook"),
        &format!("{}?webhookId={id}", agent("GetWebhook")),
        None,
    )
    .await;
    fits(
        &app,
        &doc,
        Method::POST,
        &agent("GetWebhook"),
        &format!("{}?webhookId=999", agent("GetWebhook")),
        None,
    )
    .await;
    let ca = "/api/v1/Agents/Contact/GetContactEntity";
    fits(
        &app,
        &doc,
        Method::POST,
        ca,
        &format!("{ca}?contactEntityId={cid}"),
        None,
    )
    .await;
    let health = reqwest::get(format!("{}/healthz", app.base))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(check(
        &doc,
        answer_schema(&doc, "get", "/healthz", 200),
        &health,
        true
    )
    .is_empty());
    app.stop().await;
}
