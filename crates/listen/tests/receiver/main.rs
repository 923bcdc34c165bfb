//! The receiver as a library, on port 0, driven with reqwest.
#![allow(clippy::unwrap_used)]

mod recording;
mod refusals;
mod steering;

use std::time::{Duration, Instant};

use crmhooks_listen::{Receiver, ReceiverConfig, Verdict};
use crmhooks_payload::{headers, sign, NetDateTime, WebhookPayload};

const SECRET: &str = "s3cret";

fn payload(event: &str) -> WebhookPayload {
    let mut p = WebhookPayload::from_slice(include_bytes!(
        "../../../payload/tests/fixtures/contact-changed.json"
    ))
    .unwrap();
    p.event = event.to_owned();
    p.event_id = uuid::Uuid::new_v4();
    p.timestamp = NetDateTime::now_utc();
    p
}

fn test_payload() -> WebhookPayload {
    WebhookPayload::test_event(
        uuid::Uuid::new_v4(),
        NetDateTime::now_utc(),
        "Default",
        1,
        "hook",
    )
}

async fn start(config: ReceiverConfig) -> Receiver {
    Receiver::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

fn with_secret() -> ReceiverConfig {
    ReceiverConfig {
        secret: Some(SECRET.into()),
        ..ReceiverConfig::default()
    }
}

/// POSTs `p` the way the dispatcher does; `secret` None = unsigned.
async fn deliver(
    r: &Receiver,
    p: &WebhookPayload,
    secret: Option<&str>,
    retry: u32,
) -> reqwest::Response {
    let body = p.to_bytes();
    let mut req = reqwest::Client::new()
        .post(r.url("/hook"))
        .header("content-type", headers::CONTENT_TYPE_JSON)
        .header("user-agent", "NetServer-Webhook/8.8.6684.1719")
        .header(headers::EVENT, &p.event)
        .header(headers::EVENT_ID, p.event_id.to_string())
        .header(headers::RETRY, retry.to_string());
    if let Some(s) = secret {
        req = req.header(headers::SIGNATURE, sign(s, &body));
    }
    if p.is_test() {
        req = req.header(headers::HOOK_TEST, "true");
    }
    req.body(body).send().await.unwrap()
}

async fn error_type(res: reqwest::Response) -> String {
    let v: serde_json::Value = res.json().await.unwrap();
    for key in ["Error", "ErrorType", "Message"] {
        assert!(v[key].is_string(), "{key} missing in {v}");
    }
    v["ErrorType"].as_str().unwrap().to_owned()
}
