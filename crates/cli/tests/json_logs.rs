//! `crmhooks serve --log-format json`: every line it logs is one JSON object with time, level,
//! target and message, and the lines of an API request carry its request id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::Value;

const KEY: &str = "json-logs-key-0123456789abcdef0123456789";

#[tokio::test]
async fn json_log_lines_parse_and_name_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("logs.db").display());
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
        // The API's request lines are at debug.
        .env("RUST_LOG", "info,crmhooks_server=debug")
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
    let given = "trace-4711.abc";
    let resp = http
        .get(format!("{base}/api/v1/Contact"))
        .bearer_auth(KEY)
        .header("X-Request-Id", given)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], given);
    let resp = http
        .get(format!("{base}/api/v1/Contact/999999"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let fresh = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 36, "a UUID: {fresh}");

    // SIGTERM: the server logs its shutdown and exits; then every line it wrote is read.
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
        !err.contains(KEY),
        "the API key must never be logged: {err}"
    );
}
