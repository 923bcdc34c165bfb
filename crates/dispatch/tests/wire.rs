//! The request head as it leaves the socket: header names spelled and ordered as SuperOffice's
//! captured requests show them, custom headers as their definition spells them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crmhooks_dispatch::client::{build_client, Timeouts};
use crmhooks_dispatch::send::{build_body, send, user_agent_value};
use crmhooks_dispatch::{OwnAddresses, TargetPolicy};
use crmhooks_payload::sign;
use crmhooks_store::Webhook;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Accepts one connection, reads one request head and its body, answers 200; returns the
/// raw bytes read.
async fn one_request(listener: tokio::net::TcpListener) -> Vec<u8> {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the head ended");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                break;
            }
        }
    }
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    raw
}

/// The header lines of a raw request, as sent.
fn header_lines(raw: &[u8]) -> Vec<(String, String)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    head.split("\r\n")
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

async fn sent_head(hook: &Webhook, test: bool, version: &str) -> (String, Vec<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(one_request(listener));
    let mut hook = hook.clone();
    hook.target_url = format!("http://{addr}/webhook");
    let client = build_client(
        TargetPolicy::Dev,
        Timeouts::default(),
        4,
        OwnAddresses::default(),
    )
    .unwrap();
    let body = br#"{"Event":"contact.created"}"#.to_vec();
    let id: Uuid = "8337ae4a-1dd6-40fd-8dc7-a050664a0af7".parse().unwrap();
    let out = build_body(
        &hook,
        body,
        "contact.created",
        id,
        0,
        test,
        &user_agent_value(version),
    )
    .unwrap();
    let resp = send(&client, out).await;
    assert_eq!(resp.status, Some(200), "{:?}", resp.error);
    let raw = server.await.unwrap();
    let first =
        String::from_utf8_lossy(&raw[..raw.iter().position(|b| *b == b'\r').unwrap()]).into_owned();
    (first, header_lines(&raw))
}

#[tokio::test]
async fn the_head_is_spelled_and_ordered_as_the_seed() {
    let mut hook = Webhook::default_for(crmhooks_store::TenantId::new(1));
    hook.secret = Some("s3cret".into());
    hook.headers = Some(
        json!({"X-API-key": "k", "x-lower-case": "l", "X-Tenant": "t"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let (line, head) = sent_head(&hook, true, "8.8.6684.1719").await;
    assert_eq!(line, "POST /webhook HTTP/1.1");
    let names: Vec<&str> = head.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Content-Type",
            "User-Agent",
            "X-Superoffice-Event",
            "X-Superoffice-Eventid",
            "X-Superoffice-Signature",
            "X-Superoffice-Retry",
            "X-Hook-Test",
            "X-API-key",
            "x-lower-case",
            "X-Tenant",
            "Host",
            "Content-Length",
        ]
    );
    let value = |name: &str| {
        head.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(value("Content-Type"), "application/json; charset=utf-8");
    assert_eq!(value("User-Agent"), "NetServer-Webhook/8.8.6684.1719");
    assert_eq!(
        value("X-Superoffice-Eventid"),
        "8337ae4a-1dd6-40fd-8dc7-a050664a0af7"
    );
    assert_eq!(
        value("X-Superoffice-Signature"),
        sign("s3cret", br#"{"Event":"contact.created"}"#)
    );
    assert_eq!(value("Content-Length"), "27");
    assert_eq!(value("X-API-key"), "k");
}

/// Without a secret, custom headers or the test flag, the seed's contact.created head exactly:
/// its five headers, then the retry count, `Host` and `Content-Length`.
#[tokio::test]
async fn a_plain_delivery_carries_the_seed_headers_and_no_others() {
    let hook = Webhook::default_for(crmhooks_store::TenantId::new(1));
    let (_, head) = sent_head(&hook, false, "0.1.0.0").await;
    let names: Vec<&str> = head.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Content-Type",
            "User-Agent",
            "X-Superoffice-Event",
            "X-Superoffice-Eventid",
            "X-Superoffice-Retry",
            "Host",
            "Content-Length",
        ]
    );
}
