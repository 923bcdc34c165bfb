//! What a SuperOffice integration meets, on both backends: the request head on the wire,
//! the authentication schemes, the contact list, dates in the server's time zone, and the
//! agent API driven with request bodies from SuperOffice's reference pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// A receiver that keeps each request head as it came off the socket and answers 200.
struct RawReceiver {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn raw_receiver() -> RawReceiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    kept.lock().unwrap().push(head);
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    RawReceiver { url, heads }
}

fn names(head: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .map(|l| l.split_once(": ").map(|(k, _)| k).unwrap_or(l).to_owned())
        .collect()
}

/// The server's deliveries on the wire: the seed's header names in the seed's order, custom
/// headers as the definition spells them, then `Host` and `Content-Length`.
async fn wire_head_of_a_delivery() {
    let app = TestApp::start_with(|t| {
        let d = t.get_mut("delivery").unwrap().as_table_mut().unwrap();
        d.insert("user_agent_version".into(), "8.8.6684.1719".into());
    })
    .await;
    let rx = raw_receiver().await;
    app.ok(
        Method::POST,
        "/api/v1/Webhook",
        Some(
            json!({"Name": "wire", "Events": ["contact.created"], "TargetUrl": rx.url,
            "Secret": "s3cret", "Headers": {"X-API-key": "k", "x-lower": "l"}}),
        ),
    )
    .await;
    app.create_contact("Acme").await;
    let deadline = tokio::time::Instant::now() + T;
    while rx.heads.lock().unwrap().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let heads = rx.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "the test event and contact.created");
    assert!(
        heads[0].starts_with("POST /webhook HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    let custom_then_framing = ["X-API-key", "x-lower", "Host", "Content-Length"];
    let mut test_head = vec![
        "Content-Type",
        "User-Agent",
        "X-Superoffice-Event",
        "X-Superoffice-Eventid",
        "X-Superoffice-Signature",
        "X-Superoffice-Retry",
        "X-Hook-Test",
    ];
    test_head.extend(custom_then_framing);
    assert_eq!(names(&heads[0]), test_head);
    let created: Vec<&str> = test_head
        .iter()
        .copied()
        .filter(|n| *n != "X-Hook-Test")
        .collect();
    assert_eq!(names(&heads[1]), created);
    assert!(
        heads[1].contains("\r\nUser-Agent: NetServer-Webhook/8.8.6684.1719\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("\r\nX-Superoffice-Event: contact.created\r\n"));
    app.stop().await;
}

/// `Bearer`, `SoTicket` and `Basic` (any user, the key as password) all carry the key; a
/// 401 names the three schemes in `WWW-Authenticate`.
async fn authentication_schemes() {
    let app = TestApp::start().await;
    let get = |auth: Option<String>, path: &'static str| {
        let mut req = app.http.get(format!("{}{path}", app.base));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send()
    };
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{}", app.key));
    for auth in [
        format!("Bearer {}", app.key),
        format!("SoTicket {}", app.key),
        format!("SOTICKET {}", app.key),
        format!("Basic {basic}"),
    ] {
        let resp = get(Some(auth.clone()), "/api/v1/Webhook").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{auth}");
        let resp = get(Some(auth.clone()), "/Default/api/v1/Contact")
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{auth} with the tenant prefix"
        );
    }
    let other = app.add_key("Other", 7).await;
    let resp = get(Some(format!("SoTicket {other}")), "/Default/api/v1/Webhook")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let wrong = base64::engine::general_purpose::STANDARD.encode("anyone:wrong");
    for auth in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {wrong}")),
        Some("Digest x".to_owned()),
    ] {
        let resp = get(auth.clone(), "/api/v1/Webhook").await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let challenges: Vec<String> = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(challenges.len(), 3, "{challenges:?}");
        for scheme in ["Bearer ", "SoTicket ", "Basic "] {
            assert!(
                challenges.iter().any(|c| c.starts_with(scheme)),
                "{scheme} in {challenges:?}"
            );
        }
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["ErrorType"], "Unauthorized");
    }
    app.stop().await;
}

async fn list(app: &TestApp, query: &str) -> (StatusCode, Value) {
    app.call(Method::GET, &format!("/api/v1/Contact{query}"), None)
        .await
}

fn listed_names(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /api/v1/Contact`: SuperOffice's OData shape, paging, order, filters, $select; soft
/// deleted contacts are not listed; unknown names are 400 naming them.
async fn contact_list() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for name in ["Sigma", "alpha", "Beta", "Stark", "Omega"] {
        ids.push(app.create_contact(name).await);
    }
    let (s, v) = list(&app, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["odata.metadata"],
        format!("{}/api/v1/archive$metadata", app.base)
    );
    assert!(v.get("odata.nextLink").is_none(), "one page only: {v}");
    let first = &v["value"][0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..4],
        ["PrimaryKey", "EntityName", "contactId", "name"]
    );
    assert_eq!(first["EntityName"], "contact");
    assert_eq!(first["PrimaryKey"], ids[0]);
    assert_eq!(
        listed_names(&v),
        ["Sigma", "alpha", "Beta", "Stark", "Omega"]
    );
    // Paging: $top and $skip, and the next page's link.
    let (_, v) = list(&app, "?$top=2&$orderBy=name%20asc").await;
    assert_eq!(listed_names(&v), ["alpha", "Beta"]);
    let next = v["odata.nextLink"].as_str().unwrap().to_owned();
    assert!(next.contains("$skip=2"), "{next}");
    let v: Value = app
        .http
        .get(&next)
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed_names(&v), ["Omega", "Sigma"]);
    let (_, v) = list(&app, "?$orderBy=contactId%20desc&$top=1&$skip=1").await;
    assert_eq!(listed_names(&v), ["Stark"]);
    // Filters, joined by and; name begins is case-insensitive.
    let (_, v) = list(&app, "?$filter=name%20begins%20's'").await;
    assert_eq!(listed_names(&v), ["Sigma", "Stark"]);
    let q = format!("?$filter=name begins 'S' and contactId gt {}", ids[0]);
    let (_, v) = list(&app, &q.replace(' ', "%20")).await;
    assert_eq!(listed_names(&v), ["Stark"]);
    let (_, v) = list(
        &app,
        "?$filter=updated%20afterTime%20'2000-01-01T00:00:00'&$top=1",
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let (_, v) = list(&app, "?$filter=updated%20afterTime%20'2999-01-01'").await;
    assert_eq!(v["value"], json!([]));
    // $select picks and orders the columns.
    let (_, v) = list(&app, "?$select=OrgNr,name&$top=1").await;
    let keys: Vec<&str> = v["value"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["PrimaryKey", "EntityName", "orgnr", "name"]);
    // A soft-deleted contact is not listed; a restored one is again.
    app.ok(Method::DELETE, &format!("/api/v1/Contact/{}", ids[1]), None)
        .await;
    let (_, v) = list(&app, "").await;
    assert!(!listed_names(&v).contains(&"alpha".to_owned()));
    // Another tenant sees none of them.
    let other = app.add_key("Other", 3).await;
    let (_, v) = app
        .call_as(&other, Method::GET, "/api/v1/Contact", None)
        .await;
    assert_eq!(v["value"], json!([]));
    // Unknown fields, operators and columns are named.
    for (query, named) in [
        ("?$filter=city%20begins%20'x'", "city"),
        ("?$filter=name%20eq%20'x'", "eq"),
        ("?$orderBy=fax", "fax"),
        ("?$select=name,fax", "fax"),
        ("?$top=5000", "$top"),
    ] {
        let (s, v) = list(&app, query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["ErrorType"], "InvalidQuery");
        assert!(v["Message"].as_str().unwrap().contains(named), "{v}");
    }
    app.stop().await;
}

/// `time_zone = "Europe/Oslo"`: local dates carry the offset of their own instant, +01:00 in
/// winter and +02:00 in summer, in the REST carriers and in FieldValues.
async fn dates_in_the_time_zone() {
    let app = TestApp::start_with(|t| {
        t.insert("time_zone".into(), "Europe/Oslo".into());
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    let v = app
        .ok(
            Method::POST,
            "/api/v1/Contact",
            Some(
                json!({"Name": "Oslo", "DbiLastModified": "2025-01-15T09:30:00Z",
                "DbiLastSyncronized": "2025-07-15T09:30:00Z"}),
            ),
        )
        .await;
    assert_eq!(v["DbiLastModified"], "2025-01-15T10:30:00+01:00");
    assert_eq!(v["DbiLastSyncronized"], "2025-07-15T11:30:00+02:00");
    let got = wait_deliveries(&rx, 1, T).await;
    let fv = got[0]
        .payload
        .as_ref()
        .unwrap()
        .field_values
        .clone()
        .unwrap();
    let updated = fv["updated"].as_str().unwrap();
    let at = crmhooks_payload::NetDateTime::parse(updated)
        .unwrap()
        .to_offset_date_time()
        .unwrap();
    let oslo = crmhooks_store::LocalZone::named("Europe/Oslo").unwrap();
    assert_eq!(at.offset(), oslo.offset_at(at), "{updated}");
    assert!(
        updated.ends_with("+01:00") || updated.ends_with("+02:00"),
        "{updated}"
    );
    app.stop().await;
}

async fn agent(app: &TestApp, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/v1/Agents/{path}", app.base))
        .bearer_auth(&app.key)
        .header("Accept", "application/json; charset=utf-8");
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json; charset=utf-8")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

/// The Webhook agent, driven with SuperOffice's documented request bodies.
async fn webhook_agent() {
    let app = TestApp::start().await;
    let rx = receiver(Some("Something Super Secret")).await;
    // CreateDefaultWebhook: no body; SuperOffice's defaults (dev/subscription.md).
    let (s, v) = agent(&app, "Webhook/CreateDefaultWebhook", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Events"], json!(["contact.created", "contact.deleted"]));
    assert_eq!(
        (v["State"].as_str(), v["Type"].as_str()),
        (Some("Active"), Some("webhook"))
    );
    // SaveWebhook with the generated reference sample (v1WebhookAgent_SaveWebhook.md): its
    // faker Type and unknown WebhookId are refused, nothing is saved.
    let sample = r#"{
  "WebhookId": 782,
  "Name": "Treutel-Christiansen",
  "Events": [
    "aliquam",
    "possimus"
  ],
  "TargetUrl": "http://www.example.com/",
  "Secret": "eos",
  "State": "Active",
  "Type": "labore",
  "Headers": {
    "Headers1": "sed",
    "Headers2": "rerum"
  },
  "Properties": {
    "fieldName": {}
  },
  "Registered": "2000-09-03T03:24:48.5966823+02:00",
  "RegisteredAssociate": null,
  "Updated": "2002-09-09T03:24:48.5966823+02:00",
  "UpdatedAssociate": null,
  "ErrorsEmail": "arthur@schumm.uk"
}"#;
    let (s, v) = agent(&app, "Webhook/SaveWebhook", Some(sample)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = agent(
        &app,
        "Webhook/SaveWebhook",
        Some(&sample.replace("\"WebhookId\": 782", "\"WebhookId\": 0")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["Message"].as_str().unwrap().starts_with("Type"), "{v}");
    // SaveWebhook with the register guide's body (dev/register.md), TargetUrl ours.
    let register = r#"{
  "Name": "Tonys Contact Handler",
  "Events": [
        "contact.created",
        "contact.changed",
        "contact.deleted"
    ],
  "TargetUrl": "https://www.myserver.com/superoffice/webhookhandler",
  "Secret": "Something Super Secret",
  "State": "Active",
  "Type": "webhook"
}"#
    .replace(
        "https://www.myserver.com/superoffice/webhookhandler",
        &rx.url("/hook"),
    );
    let (s, saved) = agent(&app, "Webhook/SaveWebhook", Some(&register)).await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let id = saved["WebhookId"].as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(saved["Secret"], Value::Null);
    assert!(
        saved.get("_Links").is_none(),
        "agent carriers have no links"
    );
    assert!(saved.get("RetryPolicy").is_none());
    // GetWebhook?webhookId= (v1WebhookAgent_GetWebhook.md), then the GetWebhook → edit →
    // SaveWebhook round trip keeps the secret (the signature below verifies).
    let (s, got) = agent(&app, &format!("Webhook/GetWebhook?webhookId={id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["Name"], "Tonys Contact Handler");
    let mut edited = got.clone();
    edited["Name"] = "Renamed".into();
    let (s, v) = agent(&app, "Webhook/SaveWebhook", Some(&edited.to_string())).await;
    assert_eq!((s, v["Name"].as_str()), (StatusCode::OK, Some("Renamed")));
    app.create_contact("Signed").await;
    let got = wait_deliveries(&rx, 1, T).await;
    assert!(
        got[0].verdict.is_valid(),
        "still signed: {:?}",
        got[0].notes
    );
    // The id in a JSON body too; $select nulls the rest; a missing id is 200 null.
    let (_, v) = agent(
        &app,
        "Webhook/GetWebhook?$select=Name",
        Some(&format!(r#"{{"WebhookId": {id}}}"#)),
    )
    .await;
    assert_eq!(
        (v["Name"].as_str(), &v["Events"]),
        (Some("Renamed"), &Value::Null)
    );
    let (s, v) = agent(&app, "Webhook/GetWebhook?webhookId=9999", None).await;
    assert_eq!((s, v), (StatusCode::OK, Value::Null));
    let (s, v) = agent(&app, "Webhook/GetWebhook?webhookId=glops", None).await;
    assert_eq!(
        (s, v["ErrorType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidId"))
    );
    let (s, _) = agent(&app, "Webhook/GetWebhook", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // GetAllWebhooks with the reference sample (v1WebhookAgent_GetAllWebhooks.md), then with
    // real filters, then with no body.
    let (s, v) = agent(
        &app,
        "Webhook/GetAllWebhooks",
        Some(
            r#"{
  "NameFilter": "Renner, Marquardt and Sawayn",
  "EventFilter": "quod",
  "StatusFilter": "Active"
}"#,
        ),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (_, v) = agent(
        &app,
        "Webhook/GetAllWebhooks",
        Some(r#"{"NameFilter": "Renamed", "EventFilter": "contact.changed", "StatusFilter": "Active"}"#),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (_, v) = agent(&app, "Webhook/GetAllWebhooks", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    // TestWebhook: the current sample's {"Webhook": null} is refused; a wrapped definition is
    // pinged (v1WebhookAgent_TestWebhook.md).
    let (s, _) = agent(
        &app,
        "Webhook/TestWebhook",
        Some(
            r#"{
  "Webhook": null
}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let body = json!({"Webhook": {"Name": "ping", "Events": ["contact.created"],
        "TargetUrl": rx.url("/ping"), "Secret": "Something Super Secret", "Type": "webhook"}});
    let (s, v) = agent(&app, "Webhook/TestWebhook", Some(&body.to_string())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Success"], true, "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["Success", "Message", "TableRight", "FieldProperties"]
    );
    // SignalEvent: the sample's name holds commas and is refused; a real one fires.
    let (s, v) = agent(
        &app,
        "Webhook/SignalEvent",
        Some(
            r#"{
  "EventName": "Goyette, Kautzer and Kuhn",
  "PrimaryKey": 612,
  "Data": {
    "fieldName": {}
  }
}"#,
        ),
    )
    .await;
    assert_eq!(
        (s, v["ErrorType"].as_str()),
        (StatusCode::BAD_REQUEST, Some("InvalidEvent"))
    );
    let sub = app
        .create_hook(&rx, &["window.closed"], Some("Something Super Secret"))
        .await;
    let (s, _) = agent(
        &app,
        "Webhook/SignalEvent",
        Some(r#"{"EventName": "window.closed", "PrimaryKey": 612, "Data": {"fieldName": {}}}"#),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let got = wait_deliveries(&rx, 2, T).await;
    let p = got[1].payload.as_ref().unwrap();
    assert_eq!((p.event.as_str(), p.primary_key), ("window.closed", 612));
    // GetLastError with the sample's shape (v1WebhookAgent_GetLastError.md): a JSON string.
    let (s, v) = agent(
        &app,
        "Webhook/GetLastError",
        Some(&format!("{{\n  \"WebhookId\": {sub}\n}}")),
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, json!("")));
    let (s, _) = agent(&app, "Webhook/GetLastError", Some(r#"{"WebhookId": 503}"#)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // DeleteWebhook?WebhookId= (v1WebhookAgent_DeleteWebhook.md), under the tenant prefix.
    let resp = app
        .http
        .post(format!(
            "{}/Default/api/v1/Agents/Webhook/DeleteWebhook?WebhookId={sub}",
            app.base
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = agent(
        &app,
        &format!("Webhook/DeleteWebhook?webhookId={sub}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Unknown methods and agents, and a GET.
    let (s, _) = agent(&app, "Webhook/GetAllWebhooksForFilter", Some("{}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = agent(&app, "Person/GetPerson", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app
        .call(Method::GET, "/api/v1/Agents/Webhook/GetWebhook", None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    // Another tenant does not see the webhook.
    let other = app.add_key("Other", 2).await;
    let resp = app
        .http
        .post(format!(
            "{}/api/v1/Agents/Webhook/GetWebhook?webhookId={id}",
            app.base
        ))
        .header("Authorization", format!("SoTicket {other}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), Value::Null);
    app.stop().await;
}

/// The Contact agent, driven with SuperOffice's documented request bodies: the same events
/// as the REST routes.
async fn contact_agent() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    app.create_hook(
        &rx,
        &["contact.created", "contact.changed", "contact.softdeleted"],
        None,
    )
    .await;
    let (s, default) = agent(&app, "Contact/CreateDefaultContactEntity", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(default["ContactId"], 0);
    // The RPC how-to (howto/company/create-contact.md): default, set fields, save.
    let mut company = default.clone();
    company["Name"] = "New company".into();
    company["Category"]["Id"] = 2.into();
    company["Business"]["Id"] = 3.into();
    company["NoMailing"] = true.into();
    let (s, saved) = agent(
        &app,
        "Contact/SaveContactEntity",
        Some(&company.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    let id = saved["ContactId"].as_i64().unwrap();
    assert_eq!(
        (
            saved["Category"]["Id"].as_i64(),
            saved["NoMailing"].as_bool()
        ),
        (Some(2), Some(true))
    );
    assert!(saved.get("_Links").is_none());
    // The reference sample of SaveContactEntity, verbatim: ContactId 420 does not exist.
    let sample = include_str!("agent_samples/save_contact_entity.json");
    let (s, v) = agent(&app, "Contact/SaveContactEntity", Some(sample)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // The same sample saved over our contact: its known properties are taken, its
    // collections (Emails, Persons, …) ignored.
    let over = sample.replace("\"ContactId\": 420,", &format!("\"ContactId\": {id},"));
    let (s, v) = agent(&app, "Contact/SaveContactEntity", Some(&over)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["ContactId"].as_i64(),
            v["Name"].as_str(),
            v["OrgNr"].as_str()
        ),
        (Some(id), Some("Stehr-Murphy"), Some("673645"))
    );
    // GetContactEntity?contactEntityId= (Agents intro: 9999 is 200 null, glops is 400).
    let (s, v) = agent(
        &app,
        &format!("Contact/GetContactEntity?contactEntityId={id}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["Name"].as_str()),
        (StatusCode::OK, Some("Stehr-Murphy"))
    );
    let (s, v) = agent(
        &app,
        &format!(
            "Contact/GetContactEntity?$select=name,department,category/id&contactEntityId={id}"
        ),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["OrgNr"], Value::Null);
    assert_eq!(v["Name"], "Stehr-Murphy");
    assert!(v["Category"].is_object(), "category/id keeps Category: {v}");
    let (s, v) = agent(&app, "Contact/GetContactEntity?contactEntityId=9999", None).await;
    assert_eq!((s, v), (StatusCode::OK, Value::Null));
    let (s, _) = agent(&app, "Contact/GetContactEntity?contactEntityId=glops", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A refused value saves nothing.
    let (s, v) = agent(
        &app,
        "Contact/SaveContactEntity",
        Some(&json!({"ContactId": id, "Name": 5}).to_string()),
    )
    .await;
    assert_eq!(
        (s, v["Message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Name: must be a string"))
    );
    // DeleteContactEntity?ContactEntityId= (v1ContactAgent_DeleteContactEntity.md): into the
    // recycle bin, as the REST DELETE.
    let (s, _) = agent(
        &app,
        &format!("Contact/DeleteContactEntity?ContactEntityId={id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, v) = agent(
        &app,
        &format!("Contact/GetContactEntity?contactEntityId={id}"),
        None,
    )
    .await;
    assert_eq!(v, Value::Null);
    let got = wait_deliveries(&rx, 3, T).await;
    let events: Vec<&str> = got
        .iter()
        .map(|r| r.payload.as_ref().unwrap().event.as_str())
        .collect();
    assert_eq!(
        events,
        ["contact.created", "contact.changed", "contact.softdeleted"]
    );
    app.stop().await;
}

both_backends!(
    wire_head_of_a_delivery,
    authentication_schemes,
    contact_list,
    dates_in_the_time_zone,
    webhook_agent,
    contact_agent,
);
