//! What `crmhooks serve` logs: with `--log-format json` every line is one JSON object with
//! time, level, target and message, and the lines of an API request carry its request id; a
//! node whose receiver fails says so, at most once every ten seconds, naming the webhook and
//! the receiver's answer but never the target URL (it may carry a receiver's token).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_testkit::wait_until;
use serde_json::{json, Value};

/// `crmhooks serve --dev` on `db` logging JSON to a pipe, with `key` and `env`; the child and
/// its base URL.
fn serve_json(db: &str, key: &str, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
        ])
        .env("CRMHOOKS_API_KEY", key)
        .env("CRMHOOKS_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crmhooks serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://"), "first line: {line:?}");
    (child, base)
}

/// SIGTERM: the server logs its shutdown and exits; then everything it wrote to stderr.
fn stop_and_read_log(mut child: Child) -> String {
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
    err
}

const JSON_KEY: &str = "json-logs-key-0123456789abcdef0123456789";

#[tokio::test]
async fn json_log_lines_parse_and_name_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("logs.db").display());
    // The API's request lines are at debug.
    let (child, base) = serve_json(&db, JSON_KEY, &[("RUST_LOG", "info,crmhooks_server=debug")]);

    let http = reqwest::Client::new();
    let given = "trace-4711.abc";
    let resp = http
        .get(format!("{base}/api/v1/Contact"))
        .bearer_auth(JSON_KEY)
        .header("X-Request-Id", given)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], given);
    let resp = http
        .get(format!("{base}/api/v1/Contact/999999"))
        .bearer_auth(JSON_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let fresh = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 36, "a UUID: {fresh}");

    let err = stop_and_read_log(child);

    let lines: Vec<Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    let request_id = |l: &Value| {
        l.pointer("/span/request_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    assert!(
        lines
            .iter()
            .any(|l| request_id(l).as_deref() == Some(given)),
        "no line names the given request id: {err}"
    );
    assert!(
        lines.iter().any(|l| request_id(l) == Some(fresh.clone())),
        "no line names the fresh request id: {err}"
    );
    assert!(
        !err.contains(JSON_KEY),
        "the API key must never be logged: {err}"
    );
}

const FAILURE_KEY: &str = "failure-log-key-0123456789abcdef0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_attempts_are_reported_in_the_log_at_most_every_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("failures.db").display());
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    let (child, base) = serve_json(
        &db,
        FAILURE_KEY,
        &[
            ("CRMHOOKS_DELIVERY_SUPEROFFICE_DELAYS_MS", "[100, 200]"),
            ("CRMHOOKS_DELIVERY_POLL_MS", "100"),
            ("RUST_LOG", "warn"),
        ],
    );

    let http = reqwest::Client::new();
    let target = format!("{}?token=s3cret-token", rx.url("/hook"));
    let hook: Value = http
        .post(format!("{base}/api/v1/Webhook"))
        .bearer_auth(FAILURE_KEY)
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
            .bearer_auth(FAILURE_KEY)
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

    let err = stop_and_read_log(child);

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
