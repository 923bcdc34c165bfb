//! The Webhook and Contact agents, driven with SuperOffice's documented request bodies.

use super::*;

both_backends!(webhook_agent, contact_agent,);

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
    let sample = include_str!("../agent_samples/save_contact_entity.json");
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
