//! Every route against a real server on port 0 (SQLite in a temporary directory), through the
//! reqwest transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crmhooks_client::{
    routes, ApiKey, ClientError, ContactBody, HttpApi, NewWebhook, Replay, Transport as _,
};
use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_server::{Config, Server};
use serde_json::Value;

const KEY: &str = "client-test-key-0123456789abcdef012";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    let mut flags = toml::value::Table::new();
    let db = format!("sqlite://{}", dir.path().join("client.db").display());
    flags.insert("database".into(), db.into());
    flags.insert("dev".into(), true.into());
    flags.insert("api_key".into(), KEY.into());
    let config = Config::load(None, flags).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::build(config, Some(listener)).await.unwrap();
    let base = format!("http://{}/", server.addr());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server.run(stopped));
    let mut api = HttpApi::new(&base, ApiKey::new(KEY).unwrap()).unwrap();

    let mut hook = NewWebhook::new(
        "client test",
        vec!["contact.created".into(), "contact.changed".into()],
        receiver.url("/hook"),
    );
    hook.headers = vec![("X-Team".into(), "crm".into())];
    let saved = api
        .json(&routes::create_webhook(&hook).unwrap())
        .await
        .unwrap();
    let hook_id = saved["WebhookId"].as_i64().expect("a WebhookId");
    assert_eq!(saved["Name"], "client test");
    assert_eq!(saved["State"], "Active");
    assert!(saved["Headers"].get("X-Team").is_some(), "{saved}");

    let full = ContactBody {
        name: Some("Acme"),
        business: Some(2),
        country: Some(578),
        ..ContactBody::default()
    };
    let id = api.create_contact(&full).await.unwrap();
    let contact = api.json(&routes::get_contact(id)).await.unwrap();
    assert_eq!(contact["Name"], "Acme");
    assert_eq!(contact["Country"]["CountryId"], 578);
    assert_eq!(contact["Business"]["Id"], 2);
    api.change_contact(id, &ContactBody::department("Ops"))
        .await
        .unwrap();
    let contact = api.json(&routes::get_contact(id)).await.unwrap();
    assert_eq!(contact["Department"], "Ops");

    api.call(&routes::delete_contact(id, false)).await.unwrap();
    let gone = api.json(&routes::get_contact(id)).await;
    let Err(ClientError::Answer {
        status,
        message,
        call,
    }) = gone
    else {
        panic!("a soft-deleted contact is not found: {gone:?}")
    };
    assert_eq!(status, 404);
    assert!(
        message.starts_with("server answered 404 Not Found"),
        "{message}"
    );
    assert_eq!(call, format!("GET /api/v1/Contact/{id}"));
    api.json(&routes::restore_contact(id)).await.unwrap();
    let restored = api.json(&routes::get_contact(id)).await.unwrap();
    assert_eq!(restored["Name"], "Acme");
    api.call(&routes::delete_contact(id, true)).await.unwrap();
    assert!(api.json(&routes::restore_contact(id)).await.is_err());

    let listed = routes::list_webhooks(Some("client test".into()), None, Some("Active".into()));
    let listed = api.json(&listed).await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let none = routes::list_webhooks(Some("other".into()), None, None);
    assert_eq!(api.json(&none).await.unwrap(), Value::Array(Vec::new()));
    let stopped = routes::set_webhook_state(hook_id, "Stopped").unwrap();
    assert_eq!(api.json(&stopped).await.unwrap()["State"], "Stopped");
    let got = api.json(&routes::get_webhook(hook_id)).await.unwrap();
    assert_eq!(got["State"], "Stopped");
    let usage = api.json(&routes::webhook_usage(hook_id)).await.unwrap();
    assert!(usage.is_object(), "{usage}");
    api.json(&routes::webhook_last_error(hook_id))
        .await
        .unwrap();
    let deliveries = routes::webhook_deliveries(hook_id, None, Some(10));
    let deliveries = api.json(&deliveries).await.unwrap();
    assert!(
        deliveries.as_array().is_some_and(|d| !d.is_empty()),
        "{deliveries}"
    );
    let replay = Replay {
        since: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        until: None,
        only_failed: false,
    };
    let report = api
        .json(&routes::replay(hook_id, &replay).unwrap())
        .await
        .unwrap();
    assert!(
        report["matched"].as_i64().is_some_and(|n| n >= 2),
        "{report}"
    );
    api.call(&routes::delete_webhook(hook_id)).await.unwrap();
    assert!(api.json(&routes::get_webhook(hook_id)).await.is_err());

    let mut wrong = HttpApi::new(&base, ApiKey::new("wrong").unwrap()).unwrap();
    let refused = wrong.json(&routes::get_contact(1)).await;
    assert!(
        matches!(refused, Err(ClientError::Answer { status, .. }) if status == 401),
        "{refused:?}"
    );
    let _ = stop.send(true);
    let _ = serving.await;
    receiver.shutdown().await;
}
