//! Several `crmhooks serve` processes sharing one PostgreSQL database: work spread over the
//! nodes is delivered exactly once and in per-contact order, a node killed with SIGKILL has its
//! deliveries finished by the others, and a node survives its database connections being
//! terminated. Each test gets a fresh database on the server `crmhooks_testkit::postgres`
//! finds; without one the tests are skipped, and the skips counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod failover;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmhooks_listen::{Received, Receiver, ReceiverConfig};
use crmhooks_payload::NetDateTime;
use crmhooks_testkit::postgres::{self, PgDatabase};
use crmhooks_testkit::{wait_for, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection as _;

const KEY: &str = "pg-nodes-test-key-0123456789abcdef0";

/// A fresh database, dropped at the end of the test.
struct Database {
    db: PgDatabase,
}

impl Database {
    /// `None` when no PostgreSQL server is there (the skip is recorded).
    async fn create(test: &str) -> Option<Database> {
        let admin = postgres::admin_or_skip(test).await?;
        Some(Database {
            db: PgDatabase::create(&admin).await,
        })
    }

    fn url(&self) -> &str {
        self.db.url()
    }

    /// Terminates every connection to the database (what a failover or restart does to the
    /// nodes); returns how many.
    async fn terminate_connections(&self) -> i64 {
        let mut conn = sqlx::PgConnection::connect(self.db.admin()).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(self.db.name())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        n
    }

    /// Deliveries by status, read directly from the database.
    async fn delivery_statuses(&self) -> BTreeMap<i64, i64> {
        let mut conn = sqlx::PgConnection::connect(self.url()).await.unwrap();
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM delivery GROUP BY status")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let _ = conn.close().await;
        rows.into_iter().collect()
    }

    /// How many nodes hold leases right now.
    async fn lease_owners(&self) -> i64 {
        let mut conn = sqlx::PgConnection::connect(self.url()).await.unwrap();
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT lease_owner) FROM delivery WHERE status = 1")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let _ = conn.close().await;
        n
    }

    async fn drop_database(self) {
        self.db.drop_database().await;
    }
}

/// A `crmhooks serve` child; killed when dropped, so a failed assertion leaves no process.
struct Node {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// SIGKILL, no goodbye.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

/// Starts `n` nodes at once on `db` (they migrate concurrently), then waits for each to listen.
fn start_nodes(db: &str, n: usize, env: &[(&str, &str)]) -> Vec<Node> {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_crmhooks"))
                .args([
                    "serve",
                    "--dev",
                    "--listen",
                    "127.0.0.1:0",
                    "--database",
                    db,
                ])
                .env("CRMHOOKS_API_KEY", KEY)
                .env(
                    "CRMHOOKS_MASTER_KEY",
                    "t:Y3JtaG9va3MtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=",
                )
                .env("CRMHOOKS_DELIVERY_LEASE_SECS", "2")
                .env("CRMHOOKS_DELIVERY_POLL_MS", "200")
                .env("CRMHOOKS_DELIVERY_SUPEROFFICE_DELAYS_MS", "[100, 200]")
                .env("RUST_LOG", "warn,crmhooks_store=info")
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn crmhooks serve")
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(i, mut child)| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().unwrap();
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[node {i}] {line}");
                    sink.lock().unwrap().push(line);
                }
            });
            let stdout = child.stdout.take().unwrap();
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            let base = line
                .trim()
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_owned();
            assert!(base.starts_with("http://"), "node {i} first line: {line:?}");
            Node { child, base, log }
        })
        .collect()
}

/// Calls the API; while the database is away the node answers 503 (or the call fails to
/// connect): retried until `deadline`. Anything else but success fails the test.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Value,
    unavailable: &std::sync::atomic::AtomicUsize,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return r.json().await.unwrap(),
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                let text = r.text().await.unwrap_or_default();
                assert!(text.contains("DatabaseUnavailable"), "503 body: {text}");
                unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(r) => {
                let status = r.status();
                panic!(
                    "{method} {path}: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) => eprintln!("{method} {path}: {e}; retrying"),
        }
        assert!(Instant::now() < deadline, "{method} {path}: still failing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn delivered(r: &Receiver) -> Vec<Received> {
    r.received()
        .into_iter()
        .filter(|x| !x.is_test() && x.answered == 200 && x.payload.is_some())
        .collect()
}

fn updated(r: &Received) -> time::OffsetDateTime {
    let p = r.payload.as_ref().unwrap();
    let s = p.field_values.as_ref().unwrap()["updated"]
        .as_str()
        .unwrap();
    NetDateTime::parse(s)
        .unwrap()
        .to_offset_date_time()
        .unwrap()
}

async fn receiver() -> Receiver {
    Receiver::start(([127, 0, 0, 1], 0).into(), ReceiverConfig::default())
        .await
        .unwrap()
}

async fn create_hook(node: &Node, rx: &Receiver, events: &[&str]) -> i64 {
    let none = std::sync::atomic::AtomicUsize::new(0);
    let v = call(
        &reqwest::Client::new(),
        &node.base,
        Method::POST,
        "/api/v1/Webhook",
        json!({"Name": "nodes", "Events": events, "TargetUrl": rx.url("/hook")}),
        &none,
    )
    .await;
    v["WebhookId"].as_i64().unwrap()
}
