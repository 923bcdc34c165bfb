//! Kill -9 tests: a child `crmhooks serve` killed while deliveries are in flight (or failing),
//! restarted on the same database; every committed event arrives at least once afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_testkit::{wait_for, wait_until};
use serde_json::{json, Value};

const KEY: &str = "crash-test-key-0123456789abcdef0123";

struct Node {
    child: Child,
    base: String,
}

fn spawn(db: &str) -> Node {
    spawn_with(db, &[])
}

fn spawn_with(db: &str, env: &[(&str, &str)]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
        ])
        .env("CRMHOOKS_API_KEY", KEY)
        .env("CRMHOOKS_DELIVERY_LEASE_SECS", "2")
        .env("CRMHOOKS_DELIVERY_SUPEROFFICE_DELAYS_MS", "[100, 200]")
        .env("CRMHOOKS_DELIVERY_POLL_MS", "100")
        .env("CRMHOOKS_DELIVERY_MAX_PER_WEBHOOK", "4")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crmhooks serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://"), "first line: {line:?}");
    Node { child, base }
}

async fn call(base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn created_keys(r: &Receiver) -> BTreeSet<i64> {
    r.received()
        .iter()
        .filter(|x| !x.is_test() && x.answered == 200)
        .filter_map(|x| x.payload.as_ref())
        .filter(|p| p.event == "contact.created")
        .map(|p| p.primary_key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_deliveries_in_flight_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    // Slow receiver: deliveries are in flight when the node dies.
    rx.set_delay(Duration::from_millis(150));
    let mut node = spawn(&db);
    call(
        &node.base,
        reqwest::Method::POST,
        "/api/v1/Webhook",
        json!({"Name": "crash", "Events": ["contact.created"], "TargetUrl": rx.url("/hook")}),
    )
    .await;
    let mut committed = BTreeSet::new();
    for i in 0..60 {
        let v = call(
            &node.base,
            reqwest::Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("c{i}")}),
        )
        .await;
        committed.insert(v["ContactId"].as_i64().unwrap());
    }
    assert!(wait_until(|| created_keys(&rx).len() >= 5, Duration::from_secs(20)).await);
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    let before = created_keys(&rx).len();
    eprintln!("killed with {before} of {} delivered", committed.len());
    assert!(
        before < committed.len(),
        "the kill came too late to test anything ({before})"
    );
    let mut node = spawn(&db);
    let all = wait_until(|| created_keys(&rx) == committed, Duration::from_secs(60)).await;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    assert!(
        all,
        "missing after restart: {:?}",
        committed.difference(&created_keys(&rx)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_failing_cycle_keeps_events_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash2.db").display());
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    let mut node = spawn(&db);
    let hook = call(
        &node.base,
        reqwest::Method::POST,
        "/api/v1/Webhook",
        json!({"Name": "failing", "Events": ["contact.created"], "TargetUrl": rx.url("/hook")}),
    )
    .await;
    let hook_id = hook["WebhookId"].as_i64().unwrap();
    rx.set_status(500);
    let mut committed = BTreeSet::new();
    for i in 0..3 {
        let v = call(
            &node.base,
            reqwest::Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("f{i}")}),
        )
        .await;
        committed.insert(v["ContactId"].as_i64().unwrap());
    }
    // Let a few attempts fail (fewer than the 9 that disable the hook), then kill.
    assert!(
        wait_until(
            || rx.received().iter().filter(|r| !r.is_test()).count() >= 4,
            Duration::from_secs(20)
        )
        .await
    );
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    rx.set_status(200);
    let mut node = spawn(&db);
    let all = wait_until(|| created_keys(&rx) == committed, Duration::from_secs(60)).await;
    // The last successes are recorded a moment after the receiver answered.
    let usage_path = format!("/api/v1/Webhook/{hook_id}/Usage");
    let usage = wait_for(
        || async {
            let usage = call(&node.base, reqwest::Method::GET, &usage_path, Value::Null).await;
            let successes = usage["total_calls"].as_i64().unwrap_or(0)
                - usage["total_errors"].as_i64().unwrap_or(0);
            (usage["consecutive_errors"] == 0 && successes == 3).then_some(usage)
        },
        Duration::from_secs(5),
    )
    .await;
    let usage = match usage {
        Some(u) => u,
        None => call(&node.base, reqwest::Method::GET, &usage_path, Value::Null).await,
    };
    let delivered = call(
        &node.base,
        reqwest::Method::GET,
        &format!("/api/v1/Webhook/{hook_id}/Deliveries?status=delivered"),
        Value::Null,
    )
    .await;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    assert!(
        all,
        "missing: {:?}",
        committed.difference(&created_keys(&rx)).collect::<Vec<_>>()
    );
    let calls = usage["total_calls"].as_i64().unwrap();
    let errors = usage["total_errors"].as_i64().unwrap();
    let seen = rx.received().iter().filter(|r| !r.is_test()).count() as i64;
    assert_eq!(usage["consecutive_errors"], 0, "{usage}");
    assert_eq!(calls - errors, 3, "one recorded success per event: {usage}");
    assert!(
        calls <= seen,
        "recorded calls {calls} cannot exceed requests seen {seen}"
    );
    assert!(errors >= 3, "{usage}");
    assert_eq!(delivered.as_array().unwrap().len(), 3);
}

/// A server restarted on its SQLite file takes back at once what the killed one had leased,
/// however long the leases: the time from the restart until every acknowledged change has
/// arrived is the time to send them, not a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sqlite_server_sends_what_the_killed_one_held_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("restart.db").display());
    let rx = Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap();
    // Two-minute leases: waiting them out would fail the deadline below.
    let lease = [("CRMHOOKS_DELIVERY_LEASE_SECS", "120")];
    let mut node = spawn_with(&db, &lease);
    call(
        &node.base,
        reqwest::Method::POST,
        "/api/v1/Webhook",
        json!({"Name": "restart", "Events": ["contact.created", "contact.changed"], "TargetUrl": rx.url("/hook")}),
    )
    .await;
    // A receiver that hangs: everything the node takes stays in flight until the kill.
    rx.set_delay(Duration::from_secs(3600));
    let mut committed = BTreeSet::new();
    for i in 0..20 {
        let v = call(
            &node.base,
            reqwest::Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("c{i}")}),
        )
        .await;
        committed.insert(v["ContactId"].as_i64().unwrap());
    }
    assert!(wait_until(|| rx.count() >= 4, Duration::from_secs(20)).await);
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();
    rx.set_delay(Duration::ZERO);
    let restarted = std::time::Instant::now();
    let mut node = spawn_with(&db, &lease);
    let all = wait_until(|| created_keys(&rx) == committed, Duration::from_secs(20)).await;
    let took = restarted.elapsed();
    eprintln!("every acknowledged change arrived {took:?} after the restart");
    // A second server on the same file is refused while this one runs, naming the file.
    let second = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db,
        ])
        .env("CRMHOOKS_API_KEY", KEY)
        .output()
        .expect("run a second server");
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    assert!(
        all,
        "missing: {:?}",
        committed.difference(&created_keys(&rx)).collect::<Vec<_>>()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !second.status.success(),
        "a second server started on the same file"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another crmhooks server"),
        "{stderr}"
    );
    assert!(stderr.contains("restart.db"), "{stderr}");
}
