//! `crmhooks key create|list|revoke` as an operator runs them (the real binary, on SQLite and
//! PostgreSQL, with no server), and a key revoked through one node refused by another within
//! 5 s (two `crmhooks serve` processes on one PostgreSQL database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crmhooks_testkit::postgres::{self, PgDatabase};
use reqwest::StatusCode;
use serde_json::Value;

const BOOTSTRAP: &str = "key-cli-bootstrap-0123456789abcdef0123";

/// `crmhooks key …` on `db` (through CRMHOOKS_DATABASE, as an operator would set it).
fn key(db: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crmhooks"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CRMHOOKS_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("key")
        .args(args)
        .env("CRMHOOKS_DATABASE", db)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(db: &str, args: &[&str]) -> String {
    let out = key(db, args);
    assert!(
        out.status.success(),
        "key {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(db: &str, args: &[&str], says: &str) {
    let out = key(db, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "key {args:?} succeeded");
    assert!(stderr.contains(says), "{says:?} missing in: {stderr}");
}

fn the_key_commands_work_on(db: &str) {
    let admin = ok(
        db,
        &[
            "create",
            "--tenant",
            "Acme",
            "--associate",
            "7",
            "--name",
            "ops",
            "--scope",
            "admin",
        ],
    );
    let admin = admin.trim();
    assert!(admin.starts_with("crmh_") && admin.len() == 48, "{admin}");
    let tenant = ok(
        db,
        &[
            "create",
            "--tenant",
            "Beta",
            "--associate",
            "2",
            "--expires",
            "90d",
        ],
    );
    assert_ne!(tenant.trim(), admin);
    let table = ok(db, &["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST USED"),
        "{table}"
    );
    assert!(
        lines[1].contains("Acme") && lines[1].contains("admin"),
        "{table}"
    );
    assert!(
        lines[2].contains("Beta") && lines[2].contains("tenant"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&ok(db, &["list", "--json"])).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let fields: Vec<&str> = list[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "id",
            "tenant",
            "associate",
            "name",
            "scope",
            "created",
            "last_used",
            "expires",
            "revoked"
        ]
    );
    assert_eq!(list[0]["tenant"], "Acme");
    assert_eq!(list[0]["associate"], 7);
    assert!(list[0]["expires"].is_null() && list[1]["expires"].is_string());
    let everything = format!("{table}{json}");
    assert!(!everything.contains(&admin[5..]) && !everything.contains(&tenant.trim()[5..]));
    let only_beta: Value =
        serde_json::from_str(&ok(db, &["list", "--json", "--tenant", "Beta"])).unwrap();
    assert_eq!(only_beta.as_array().unwrap().len(), 1);
    // Revoke.
    let id = list[1]["id"].as_i64().unwrap().to_string();
    assert!(ok(db, &["revoke", &id]).contains("revoked"));
    let json: Value = serde_json::from_str(&ok(db, &["list", "--json"])).unwrap();
    assert!(json[1]["revoked"].is_string() && json[0]["revoked"].is_null());
    // Mistakes.
    fails(db, &["revoke", "999999"], "no key 999999");
    fails(
        db,
        &[
            "create",
            "--tenant",
            "A",
            "--associate",
            "1",
            "--scope",
            "root",
        ],
        "--scope",
    );
    fails(
        db,
        &[
            "create",
            "--tenant",
            "A",
            "--associate",
            "1",
            "--expires",
            "soon",
        ],
        "--expires",
    );
    fails(
        db,
        &["create", "--tenant", " ", "--associate", "1"],
        "--tenant",
    );
}

#[test]
fn key_commands_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("keys.db").display());
    the_key_commands_work_on(&db);
}

#[tokio::test]
async fn key_commands_on_postgres() {
    let Some(admin) = postgres::admin_or_skip("key_cli::key_commands_on_postgres").await else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let url = db.url().to_owned();
    tokio::task::spawn_blocking(move || the_key_commands_work_on(&url))
        .await
        .unwrap();
    db.drop_database().await;
}

/// A `crmhooks serve` child, killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(db: &str) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmhooks"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db,
        ])
        .env("CRMHOOKS_API_KEY", BOOTSTRAP)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(base.starts_with("http://"), "first line: {line:?}");
    Node { child, base }
}

async fn status(http: &reqwest::Client, node: &Node, key: &str) -> StatusCode {
    http.get(format!("{}/api/v1/Webhook", node.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
}

/// How long until `key` is refused (401) by `node`; fails after 10 s.
async fn refused_after(http: &reqwest::Client, node: &Node, key: &str, from: Instant) -> Duration {
    loop {
        let s = status(http, node, key).await;
        if s == StatusCode::UNAUTHORIZED {
            return from.elapsed();
        }
        assert_eq!(s, StatusCode::OK);
        assert!(from.elapsed() < Duration::from_secs(10), "still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_key_revoked_on_one_node_is_refused_by_another_within_5_s() {
    let Some(admin) = postgres::admin_or_skip("key_cli::a_key_revoked_on_one_node").await else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let url = db.url().to_owned();
    let (a, b) = (start_node(&url), start_node(&url));
    let http = reqwest::Client::new();
    // A key made through node A's admin API, used on node B (so B caches it).
    let made: Value = http
        .post(format!("{}/api/v1/admin/keys", a.base))
        .bearer_auth(BOOTSTRAP)
        .json(&serde_json::json!({"tenant": "Acme", "associate": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let k = made["key"].as_str().unwrap().to_owned();
    assert_eq!(status(&http, &b, &k).await, StatusCode::OK);
    let resp = http
        .delete(format!("{}/api/v1/admin/keys/{}", a.base, made["id"]))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let took = refused_after(&http, &b, &k, Instant::now()).await;
    eprintln!("revoked through node A, refused by node B after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A key revoked with `crmhooks key revoke` while both nodes run.
    let url2 = url.clone();
    let k2 = tokio::task::spawn_blocking(move || {
        ok(&url2, &["create", "--tenant", "Acme", "--associate", "4"])
            .trim()
            .to_owned()
    })
    .await
    .unwrap();
    assert_eq!(status(&http, &a, &k2).await, StatusCode::OK);
    assert_eq!(status(&http, &b, &k2).await, StatusCode::OK);
    let url2 = url.clone();
    let listed =
        tokio::task::spawn_blocking(move || ok(&url2, &["list", "--json", "--tenant", "Acme"]))
            .await
            .unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let id = listed[1]["id"].as_i64().unwrap().to_string();
    let url2 = url.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || ok(&url2, &["revoke", &id]))
        .await
        .unwrap();
    for node in [&a, &b] {
        let took = refused_after(&http, node, &k2, started).await;
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    drop((a, b));
    db.drop_database().await;
}
