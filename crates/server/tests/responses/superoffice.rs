//! SuperOffice's surfaces beside the REST routes: the contact list and the agent API, their
//! answers and their refusals.

use reqwest::Method;

use crate::common::*;
use crate::transcript::{assert_transcript, Transcript};

pub async fn superoffice_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    for name in ["Sigma AS", "alpha", "Beta"] {
        app.create_contact(name).await;
    }
    t.note("the contact list: the whole page, a page with a next link, $select, $filter");
    t.send(Method::GET, "/api/v1/Contact", None).await;
    t.send(
        Method::GET,
        "/api/v1/Contact?$top=1&$orderBy=name%20desc&$select=name,contactId",
        None,
    )
    .await;
    t.send(
        Method::GET,
        "/api/v1/Contact?$filter=name%20begins%20'b'%20and%20contactId%20gt%201&$select=name",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Contact?$filter=name%20eq%20'x'", None)
        .await;
    t.send(Method::GET, "/api/v1/Contact?$mode=Full", None)
        .await;
    t.note("the Webhook agent");
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/CreateDefaultWebhook",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/SaveWebhook",
        Some(r#"{"Name":"Agent hook","Events":["contact.created"],"TargetUrl":"{rx}/agent","Secret":"s","State":"Active","Type":"Webhook"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/GetWebhook?webhookId=1",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/GetWebhook?webhookId=2",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/GetAllWebhooks",
        Some(r#"{"NameFilter":null,"EventFilter":"contact.created","StatusFilter":"Unknown"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/GetLastError",
        Some(r#"{"WebhookId":1}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/TestWebhook",
        Some(r#"{"Webhook":{"Name":"t","Events":["x.y"],"TargetUrl":"{rx}/t"}}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/SignalEvent",
        Some(r#"{"EventName":"window.closed","PrimaryKey":0}"#),
    )
    .await;
    t.send(Method::POST, "/api/v1/Agents/Webhook/DeleteWebhook", None)
        .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Webhook/DeleteWebhook?webhookId=1",
        None,
    )
    .await;
    t.send(Method::POST, "/api/v1/Agents/Webhook/Nothing", Some("{}"))
        .await;
    t.note("the Contact agent");
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/CreateDefaultContactEntity",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/SaveContactEntity",
        Some(r#"{"ContactId":0,"Name":"Agent AS","Category":{"Id":2}}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/GetContactEntity?contactEntityId=4&$select=Name,Category",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/GetContactEntity?contactEntityId=glops",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/DeleteContactEntity?ContactEntityId=4",
        None,
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Agents/Contact/SaveContactEntity",
        Some(r#"{"ContactId":4,"Name":"gone"}"#),
    )
    .await;
    t.note("authentication");
    t.send_as(
        Some("raw:SoTicket test-key-default-0123456789abcdef"),
        Method::GET,
        "/api/v1/Contact?$select=name&$top=1",
        None,
    )
    .await;
    t.send_as(
        Some("raw:Negotiate x"),
        Method::GET,
        "/api/v1/Contact",
        None,
    )
    .await;
    assert_transcript("superoffice", &t.out);
    app.stop().await;
}
