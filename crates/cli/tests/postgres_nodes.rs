//! Several `crmhooks serve` processes sharing one PostgreSQL database: work spread over the
//! nodes is delivered exactly once and in per-contact order, a node killed with SIGKILL has its
//! deliveries finished by the others, and a node survives its database connections being
//! terminated. Each test gets a fresh database on the server `crmhooks_testkit::postgres`
//! finds; without one the tests are skipped, and the skips counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

const KEY: &str = "pg-nodes-test-key";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_once_in_contact_order() {
    let Some(db) =
        Database::create("postgres_nodes::three_nodes_deliver_every_event_once_in_contact_order")
            .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 3, &[]);
    create_hook(&nodes[0], &rx, &["contact.created", "contact.changed"]).await;
    const CONTACTS: usize = 100;
    const CHANGES: usize = 2;
    let started = Instant::now();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(12));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONTACTS {
        let (bases, http, gate, unavailable) = (
            bases.clone(),
            http.clone(),
            gate.clone(),
            unavailable.clone(),
        );
        tasks.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            // Each change of a contact goes to another node than the one before.
            let node = |k: usize| bases[(i + k) % bases.len()].clone();
            let v = call(
                &http,
                &node(0),
                Method::POST,
                "/api/v1/Contact",
                json!({"Name": format!("c{i}")}),
                &unavailable,
            )
            .await;
            let id = v["ContactId"].as_i64().unwrap();
            for k in 1..=CHANGES {
                call(
                    &http,
                    &node(k),
                    Method::PATCH,
                    &format!("/api/v1/Contact/{id}"),
                    json!({"Department": format!("d{k}")}),
                    &unavailable,
                )
                .await;
            }
            id
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    let committed = started.elapsed();
    let expected = CONTACTS * (1 + CHANGES);
    let all = wait_until(
        || delivered(&rx).len() >= expected,
        Duration::from_secs(120),
    )
    .await;
    let done = started.elapsed();
    // Every attempt recorded: nothing is leased or pending any more, so whatever was sent twice
    // has arrived by now.
    let all_delivered = BTreeMap::from([(2, expected as i64)]);
    wait_for(
        || async { (db.delivery_statuses().await == all_delivered).then_some(()) },
        Duration::from_secs(30),
    )
    .await;
    let got = delivered(&rx);
    eprintln!(
        "{expected} events over 3 nodes: committed in {committed:?}, all delivered after {done:?}"
    );
    assert!(all, "delivered {} of {expected}", got.len());
    assert_eq!(got.len(), expected, "every event exactly once");
    let event_ids: HashSet<_> = got
        .iter()
        .map(|r| r.payload.as_ref().unwrap().event_id)
        .collect();
    assert_eq!(event_ids.len(), expected, "no EventId twice");
    let mut per_contact: BTreeMap<i64, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        per_contact
            .entry(r.payload.as_ref().unwrap().primary_key)
            .or_default()
            .push(r);
    }
    assert_eq!(per_contact.keys().copied().collect::<BTreeSet<_>>(), ids);
    for (id, events) in &per_contact {
        let names: Vec<&str> = events
            .iter()
            .map(|r| r.payload.as_ref().unwrap().event.as_str())
            .collect();
        assert_eq!(
            names,
            ["contact.created", "contact.changed", "contact.changed"],
            "contact {id}"
        );
        let times: Vec<_> = events.iter().map(|r| updated(r)).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "contact {id}: updated values out of order: {times:?}"
        );
    }
    let statuses = db.delivery_statuses().await;
    assert_eq!(
        statuses,
        BTreeMap::from([(2, expected as i64)]),
        "all delivered"
    );
    drop(nodes);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_is_taken_over_after_its_lease() {
    let Some(db) = Database::create(
        "postgres_nodes::a_node_killed_mid_delivery_is_taken_over_after_its_lease",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    // At most 3 requests in flight for the webhook on each node: the queue outlasts the kill.
    let mut nodes = start_nodes(db.url(), 3, &[("CRMHOOKS_DELIVERY_MAX_PER_WEBHOOK", "3")]);
    create_hook(&nodes[0], &rx, &["contact.created"]).await;
    // Slow receiver: every node has requests in flight when one dies.
    rx.set_delay(Duration::from_millis(300));
    // Enough work that the moment with all three nodes busy lasts, even on a loaded machine.
    // The contacts go in through nodes 1 and 2 while the test watches, so that node 0 can be
    // killed whenever that moment comes, even before the last one is created (under a full
    // test run, creating them one by one could outlast the deliveries).
    // Four clients at once: faster than nodes 1 and 2 can deliver what they are handed at
    // commit, so that the rest waits for a claim, and node 0 claims some of it.
    let creating = {
        let bases = [nodes[1].base.clone(), nodes[2].base.clone()];
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let base = bases[c % 2].clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    let none = std::sync::atomic::AtomicUsize::new(0);
                    let mut committed = BTreeSet::new();
                    for i in 0..75 {
                        let v = call(
                            &http,
                            &base,
                            Method::POST,
                            "/api/v1/Contact",
                            json!({"Name": format!("f{c}-{i}")}),
                            &none,
                        )
                        .await;
                        committed.insert(v["ContactId"].as_i64().unwrap());
                    }
                    committed
                })
            })
            .collect();
        async move {
            let mut all = BTreeSet::new();
            for c in clients {
                all.extend(c.await.expect("the contacts were created"));
            }
            all
        }
    };
    let keys = |rx: &Receiver| -> BTreeSet<i64> {
        delivered(rx)
            .iter()
            .map(|r| r.payload.as_ref().unwrap().primary_key)
            .collect()
    };
    // Kill node 0 once a few deliveries are done and every node holds a lease (so node 0 has
    // requests in flight), with most of the work still to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = db.delivery_statuses().await.get(&2).copied().unwrap_or(0);
        if delivered >= 5 && db.lease_owners().await == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "never saw all three nodes busy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    nodes[0].kill();
    let at_kill = db.delivery_statuses().await;
    eprintln!(
        "node 0 killed; deliveries by status (0 pending, 1 in flight, 2 delivered): {at_kill:?}"
    );
    let committed = creating.await;
    assert!(
        at_kill.get(&2).copied().unwrap_or(0) < committed.len() as i64,
        "the kill came too late"
    );
    // The survivors finish everything, including node 0's leased deliveries.
    let finished = async {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let s = db.delivery_statuses().await;
            if s == BTreeMap::from([(2, committed.len() as i64)]) {
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("statuses: {s:?}");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        finished.await,
        "the other nodes did not finish node 0's work"
    );
    eprintln!(
        "taken over {:?} after the kill; receiver saw {} requests, {} of them repeats",
        killed_at.elapsed(),
        rx.count(),
        rx.duplicates()
    );
    assert_eq!(keys(&rx), committed, "nothing lost");
    assert!(
        rx.duplicates() > 0,
        "node 0's requests in flight were sent again by the others"
    );
    drop(nodes);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_survives_its_database_connections_being_terminated() {
    let Some(db) = Database::create(
        "postgres_nodes::a_node_survives_its_database_connections_being_terminated",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 1, &[]);
    let node = &nodes[0];
    create_hook(node, &rx, &["contact.created", "contact.changed"]).await;
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let base = node.base.clone();
        let unavailable = unavailable.clone();
        let written = written.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for i in 0..60 {
                let v = call(
                    &http,
                    &base,
                    Method::POST,
                    "/api/v1/Contact",
                    json!({"Name": format!("o{i}")}),
                    &unavailable,
                )
                .await;
                let id = v["ContactId"].as_i64().unwrap();
                call(
                    &http,
                    &base,
                    Method::PATCH,
                    &format!("/api/v1/Contact/{id}"),
                    json!({"Department": "after"}),
                    &unavailable,
                )
                .await;
                acknowledged.push(id);
                written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };
    // Four terminations spread over the writes (after every twelfth contact), each while the
    // node is busy writing and delivering.
    let mut terminated = 0;
    for round in 1..=4 {
        let progressed = wait_until(
            || written.load(std::sync::atomic::Ordering::Relaxed) >= 12 * round,
            Duration::from_secs(60),
        )
        .await;
        assert!(progressed, "the writes stalled before termination {round}");
        terminated += db.terminate_connections().await;
    }
    let acknowledged = writer.await.unwrap();
    eprintln!(
        "terminated {terminated} connections in 4 rounds; {} API answers were 503",
        unavailable.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(terminated >= 4, "the node had connections to terminate");
    // Every acknowledged change arrives, without restarting the node.
    let seen = |rx: &Receiver| -> BTreeSet<(i64, String)> {
        delivered(rx)
            .iter()
            .map(|r| {
                let p = r.payload.as_ref().unwrap();
                (p.primary_key, p.event.clone())
            })
            .collect()
    };
    let want: BTreeSet<(i64, String)> = acknowledged
        .iter()
        .flat_map(|id| {
            [
                (*id, "contact.created".to_owned()),
                (*id, "contact.changed".to_owned()),
            ]
        })
        .collect();
    let all = wait_until(|| want.is_subset(&seen(&rx)), Duration::from_secs(60)).await;
    assert!(
        all,
        "missing: {:?}",
        want.difference(&seen(&rx)).collect::<Vec<_>>()
    );
    // The node noticed, and listens for work from other nodes again.
    assert!(
        wait_until(
            || node.log_contains("listening for work again"),
            Duration::from_secs(10)
        )
        .await,
        "the LISTEN connection came back"
    );
    drop(nodes);
    db.drop_database().await;
}

/// A node renews the leases of what it is sending: a request that takes longer than a lease is
/// not sent again by another node while its own node lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_its_lease_is_not_sent_twice_while_its_node_lives() {
    let Some(db) = Database::create(
        "postgres_nodes::a_request_longer_than_its_lease_is_not_sent_twice_while_its_node_lives",
    )
    .await
    else {
        return;
    };
    let rx = receiver().await;
    let nodes = start_nodes(db.url(), 2, &[("CRMHOOKS_DELIVERY_LEASE_SECS", "1")]);
    create_hook(&nodes[0], &rx, &["contact.created"]).await;
    rx.set_delay(Duration::from_millis(2500));
    let http = reqwest::Client::new();
    let none = std::sync::atomic::AtomicUsize::new(0);
    for i in 0..3 {
        call(
            &http,
            &nodes[i % 2].base,
            Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("long {i}")}),
            &none,
        )
        .await;
    }
    let done = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if db.delivery_statuses().await == BTreeMap::from([(2, 3)]) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(done.await, "every delivery recorded");
    // Time for a node to have claimed a lease that ran out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(&rx).len(), 3, "each sent once");
    assert_eq!(
        rx.duplicates(),
        0,
        "no lease ran out while its request was in flight"
    );
    drop(nodes);
    db.drop_database().await;
}

/// A node that dies holding deliveries (its requests in flight) has them taken over by another
/// node once their leases run out: with the default 15 s lease, within about 15 s of its death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_deliveries_are_taken_over_within_its_lease() {
    let Some(db) =
        Database::create("postgres_nodes::a_dead_nodes_deliveries_are_taken_over_within_its_lease")
            .await
    else {
        return;
    };
    let rx = receiver().await;
    let lease = [("CRMHOOKS_DELIVERY_LEASE_SECS", "15")];
    let mut first = start_nodes(db.url(), 1, &lease);
    create_hook(&first[0], &rx, &["contact.created"]).await;
    // The receiver hangs: what the node takes stays in flight until it dies.
    rx.set_delay(Duration::from_secs(3600));
    let http = reqwest::Client::new();
    let none = std::sync::atomic::AtomicUsize::new(0);
    let mut committed = BTreeSet::new();
    for i in 0..5 {
        let v = call(
            &http,
            &first[0].base,
            Method::POST,
            "/api/v1/Contact",
            json!({"Name": format!("held {i}")}),
            &none,
        )
        .await;
        committed.insert(v["ContactId"].as_i64().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.delivery_statuses().await.get(&1).copied().unwrap_or(0) < 5 {
        assert!(
            Instant::now() < deadline,
            "the node never held its deliveries"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first[0].kill();
    let died = Instant::now();
    rx.set_delay(Duration::ZERO);
    let _second = start_nodes(db.url(), 1, &lease);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if db.delivery_statuses().await == BTreeMap::from([(2, 5)]) {
            break;
        }
        assert!(Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = died.elapsed();
    eprintln!("a dead node's deliveries were delivered {took:?} after its death (lease 15 s)");
    let keys: BTreeSet<i64> = delivered(&rx)
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.payload.as_ref().unwrap().primary_key)
        .collect();
    assert_eq!(keys, committed, "nothing lost");
    assert!(took <= Duration::from_secs(18), "took {took:?}");
    drop(first);
    db.drop_database().await;
}
