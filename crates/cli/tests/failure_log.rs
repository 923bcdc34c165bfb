//! A node whose receiver fails says so in its own log: one warning for the first failed attempt,
//! then at most one every ten seconds counting the rest, naming the webhook and the receiver's
//! answer but never the target URL (it may carry a receiver's token).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_testkit::wait_until;
use serde_json::{json, Value};

const KEY: &str = "failure-log-key-0123456789abcdef0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_attempts_are_reported_in_the_log_at_most_every_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("failures.db").display());
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ])
        .env("CRMHOOKS_API_KEY", KEY)
        .env("CRMHOOKS_LOG_FORMAT", "json")
        .env("CRMHOOKS_DELIVERY_SUPEROFFICE_DELAYS_MS", "[100, 200]")
        .env("CRMHOOKS_DELIVERY_POLL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crmhooks serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://"), "first line: {line:?}");

    let http = reqwest::Client::new();
    let target = format!("{}?token=s3cret-token", rx.url("/hook"));
    let hook: Value = http
        .post(format!("{base}/api/v1/Webhook"))
        .bearer_auth(KEY)
        .json(&json!({"Name": "failing", "Events": ["contact.created"], "TargetUrl": target}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook_id = hook["WebhookId"].as_i64().expect("a webhook id");
    rx.set_status(500);
    for i in 0..4 {
        let resp = http
            .post(format!("{base}/api/v1/Contact"))
            .bearer_auth(KEY)
            .json(&json!({"Name": format!("f{i}")}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    // Four contacts, three attempts each within a second (delays of 100 and 200 ms), then
    // re-queued cycles: far more than one failure inside the ten seconds.
    let failed = || rx.received().iter().filter(|r| !r.is_test()).count();
    assert!(wait_until(|| failed() >= 8, Duration::from_secs(20)).await);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();

    let reports: Vec<Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with("delivery attempts failed"))
        })
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "{} failed attempts in under ten seconds make one report: {err}",
        failed()
    );
    let r = &reports[0];
    assert_eq!(r["level"], "WARN", "{r}");
    assert_eq!(r.get("last_webhook"), Some(&json!(hook_id)), "{r}");
    assert_eq!(
        r.get("last_error").and_then(Value::as_str),
        Some("the receiver answered 500"),
        "{r}"
    );
    assert!(
        r.get("failed")
            .and_then(Value::as_u64)
            .is_some_and(|n| n >= 1),
        "{r}"
    );
    assert!(
        !err.contains("s3cret-token"),
        "the target URL was logged: {err}"
    );
}
