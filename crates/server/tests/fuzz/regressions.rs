//! Inputs that once crashed the server, answered 5xx or took seconds of CPU, kept as they
//! were found (issue 20 and the fuzzer's runs), each with the answer it gets now. Add the
//! input of every new finding here.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::probe::{self, Auth, Probe};

fn http(method: &str, path: &str, body: Option<Value>) -> Probe {
    Probe::Http {
        method: method.to_owned(),
        path: path.to_owned(),
        auth: Auth::Key,
        content_type: Some("application/json".to_owned()),
        body: body.map(|b| serde_json::to_vec(&b).unwrap_or_default()),
    }
}

fn raw_body(method: &str, path: &str, body: Vec<u8>) -> Probe {
    Probe::Http {
        method: method.to_owned(),
        path: path.to_owned(),
        auth: Auth::Key,
        content_type: Some("application/json".to_owned()),
        body: Some(body),
    }
}

fn deep(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "a": v });
    }
    v
}

/// (what it once did, the probe, the status it gets now)
fn kept(rx: &str) -> Vec<(&'static str, Probe, u16)> {
    let long_path = format!("/{}", vec!["a"; 300_000].join("/"));
    let many_headers: Map<String, Value> = (0..25_000)
        .map(|i| (format!("X-H{i}"), json!("v")))
        .collect();
    let many_keys: Map<String, Value> = (0..60_000).map(|i| (format!("k{i}"), json!(i))).collect();
    vec![
        (
            "a JSON Patch path of 300,000 segments overflowed the SQLite writer's stack",
            http(
                "PATCH",
                "/api/v1/Contact/1",
                Some(json!([{"op": "add", "path": long_path, "value": 1}])),
            ),
            400,
        ),
        (
            "the same path in a webhook patch",
            http(
                "PATCH",
                "/api/v1/Webhook/2",
                Some(json!([{"op": "add", "path": long_path, "value": 1}])),
            ),
            400,
        ),
        (
            "add created missing parents",
            http(
                "PATCH",
                "/api/v1/Contact/1",
                Some(json!([{"op": "add", "path": "/x/y/z", "value": 1}])),
            ),
            400,
        ),
        (
            "25,000 custom headers made every delivery panic",
            http(
                "POST",
                "/api/v1/Webhook",
                Some(
                    json!({"Name": "h", "Events": ["x.y"], "TargetUrl": rx, "State": "Stopped", "Headers": many_headers}),
                ),
            ),
            400,
        ),
        (
            "a merge patch of 60,000 keys took seconds of CPU (quadratic)",
            http("PATCH", "/api/v1/Webhook/2", Some(Value::Object(many_keys))),
            200,
        ),
        (
            "NUL in a JSON string: 500 on PostgreSQL",
            http("POST", "/api/v1/Contact", Some(json!({"Name": "a\u{0}b"}))),
            400,
        ),
        (
            "NUL in a webhook's Events entry: 500 on PostgreSQL",
            http(
                "POST",
                "/api/v1/Webhook",
                Some(
                    json!({"Name": "h", "Events": ["x\u{0}"], "TargetUrl": rx, "State": "Stopped"}),
                ),
            ),
            400,
        ),
        (
            "NUL in a custom header value",
            http(
                "POST",
                "/api/v1/Webhook",
                Some(
                    json!({"Name": "h", "Events": ["x.y"], "TargetUrl": rx, "State": "Stopped", "Headers": {"X-A": "v\u{0}"}}),
                ),
            ),
            400,
        ),
        (
            "%00 in nameFilter: 500 on PostgreSQL",
            http("GET", "/api/v1/Webhook?nameFilter=%00", None),
            400,
        ),
        (
            "%00 in eventFilter: 500 on PostgreSQL",
            http("GET", "/api/v1/Webhook?eventFilter=a%00b", None),
            400,
        ),
        (
            "%00 in a signalled event name",
            http("POST", "/api/v1/Webhook/a%00b/1", None),
            400,
        ),
        (
            "NUL in a signalled event's data",
            http(
                "POST",
                "/api/v1/Webhook/x.y/1",
                Some(json!({"k\u{0}": "v"})),
            ),
            400,
        ),
        (
            "NUL in a patch value",
            http(
                "PATCH",
                "/api/v1/Contact/2",
                Some(json!([{"op": "replace", "path": "/Department", "value": "\u{0}"}])),
            ),
            400,
        ),
        (
            "the SignalEvent route answered an oversized body with a text/plain 413",
            raw_body(
                "POST",
                "/api/v1/Webhook/x.y/1",
                format!(r#"{{"k":"{}"}}"#, "x".repeat(1_100_000)).into_bytes(),
            ),
            413,
        ),
        (
            "JSON nested 100 levels",
            http("POST", "/api/v1/Contact", Some(deep(100))),
            400,
        ),
        (
            "a patch that would store Properties deeper than the store reads back",
            http(
                "PATCH",
                "/api/v1/Webhook/2",
                Some(json!([{"op": "add", "path": "/Properties", "value": deep(62)}])),
            ),
            200,
        ),
        (
            "the webhook patched just before still reads back",
            http("GET", "/api/v1/Webhook/2", None),
            200,
        ),
        ("and lists", http("GET", "/api/v1/Webhook", None), 200),
        (
            "a NUL character in an agent API body reached PostgreSQL (500)",
            http(
                "POST",
                "/api/v1/Agents/Contact/SaveContactEntity",
                Some(json!({"Name": "fuzz", "Department": "x\u{0}y"})),
            ),
            400,
        ),
        (
            "and in SaveWebhook's events",
            http(
                "POST",
                "/api/v1/Agents/Webhook/SaveWebhook",
                Some(
                    json!({"Name": "fuzz", "Events": ["x.y", "\u{0}q"], "TargetUrl": rx, "State": "Stopped"}),
                ),
            ),
            400,
        ),
    ]
}

pub async fn kept_inputs_that_once_failed() {
    let (app, rx, target) = crate::seeded_app(1024 * 1024).await;
    let rx_url = rx.url("/kept");
    for (what, probe, want) in kept(&rx_url) {
        let started = Instant::now();
        let got = probe::send(&target, &probe).await;
        let took = started.elapsed();
        assert_eq!(got, Ok(Some(want)), "{what}");
        eprintln!("{took:>12.1?}  {what}");
        // Each is answered at once, the large bodies included (an unoptimised build).
        assert!(took < Duration::from_secs(5), "{what}: {took:?}");
    }
    let (s, _) = app.call(reqwest::Method::GET, "/healthz", None).await;
    assert!(s.is_success());
    app.stop().await;
}
