//! A real server on port 0 over a fresh SQLite file, a real receiver, and a small HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_server::{AppState, Config, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Which database a test runs on. Every integration test runs on both: `both_backends!`
/// generates `<test>::sqlite` and `<test>::postgres`; the PostgreSQL variant needs
/// `CRMHOOKS_TEST_DATABASE_URL` (an admin URL; each test gets a fresh database) and is skipped
/// with a printed reason without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Sqlite) };
}

/// Selects the backend for this test thread; false when PostgreSQL is not configured.
pub fn set_backend(b: Backend) -> bool {
    if b == Backend::Postgres && std::env::var("CRMHOOKS_TEST_DATABASE_URL").is_err() {
        eprintln!("skipped: PostgreSQL variant needs CRMHOOKS_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1/postgres)");
        return false;
    }
    BACKEND.with(|c| c.set(b));
    true
}

pub fn backend() -> Backend {
    BACKEND.with(|c| c.get())
}

/// Drops a test database made by [`fresh_pg_database`] (best effort).
pub async fn drop_pg_database(url: &str) {
    use sqlx::Connection;
    let Ok(admin) = std::env::var("CRMHOOKS_TEST_DATABASE_URL") else {
        return;
    };
    let Some(name) = url
        .rsplit('/')
        .next()
        .filter(|n| n.starts_with("crmhooks_test_"))
    else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

/// A fresh, empty PostgreSQL database for one test.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("CRMHOOKS_TEST_DATABASE_URL").expect("CRMHOOKS_TEST_DATABASE_URL");
    let name = format!("crmhooks_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to CRMHOOKS_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&admin).expect("admin URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The database URL for a test in `dir` on the current backend.
pub async fn test_database(dir: &std::path::Path) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.join("test.db").display()),
        Backend::Postgres => fresh_pg_database().await,
    }
}

/// Runs each named `async fn` on both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::common::set_backend(super::common::Backend::Sqlite);
                super::$name().await
            }
            #[tokio::test]
            async fn postgres() {
                if super::common::set_backend(super::common::Backend::Postgres) {
                    super::$name().await
                }
            }
        }
    )*};
}

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
    pub state: AppState,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
    pub database: String,
}

/// Settings for fast tests: dev mode, short retry delays, quick polling, no maintenance.
pub async fn test_config(dir: &std::path::Path) -> toml::value::Table {
    let mut t = toml::value::Table::new();
    t.insert("database".into(), test_database(dir).await.into());
    t.insert("dev".into(), true.into());
    t.insert("api_key".into(), "test-key-default".into());
    t.insert("maintenance_interval_secs".into(), 3600.0.into());
    let mut d = toml::value::Table::new();
    d.insert(
        "superoffice_delays_ms".into(),
        toml::Value::Array(vec![100.into(), 400.into()]),
    );
    d.insert("poll_ms".into(), 200.into());
    d.insert("timeout_ms".into(), 3000.into());
    d.insert("shutdown_grace_secs".into(), 2.0.into());
    t.insert("delivery".into(), d.into());
    t
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut toml::value::Table)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = test_config(dir.path()).await;
        edit(&mut flags);
        Self::start_in(dir, flags).await
    }

    pub async fn start_in(dir: tempfile::TempDir, flags: toml::value::Table) -> Self {
        let database = flags
            .get("database")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let config = Config::load(None, flags).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::build(config, Some(listener)).await.expect("server");
        let base = format!("http://{}", server.addr());
        let state = server.state().clone();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(server.run(rx));
        TestApp {
            base,
            key: "test-key-default".into(),
            http: reqwest::Client::new(),
            state,
            stop,
            task: Some(task),
            dir,
            database,
        }
    }

    /// Stops the server and removes its PostgreSQL test database.
    pub async fn stop(self) -> tempfile::TempDir {
        let database = self.database.clone();
        let dir = self.stop_keep().await;
        if database.starts_with("postgres") {
            drop_pg_database(&database).await;
        }
        dir
    }

    /// Stops the server and keeps its database (to start another server on it).
    pub async fn stop_keep(mut self) -> tempfile::TempDir {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        // Release the pools before the database may be dropped.
        drop(self.state);
        self.dir
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.key.clone(), method, path, body).await
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path} → {s}: {v}");
        v
    }

    /// Adds an API key for another tenant.
    pub async fn add_key(&self, tenant: &str, associate: i64) -> String {
        let key = format!("key-{tenant}-{associate}");
        self.state
            .store
            .add_api_key(tenant, associate, &key, "test")
            .await
            .unwrap();
        key
    }

    pub async fn create_hook(
        &self,
        receiver: &Receiver,
        events: &[&str],
        secret: Option<&str>,
    ) -> i64 {
        self.create_hook_as(&self.key.clone(), receiver, events, secret, json!({}))
            .await
    }

    pub async fn create_hook_as(
        &self,
        key: &str,
        receiver: &Receiver,
        events: &[&str],
        secret: Option<&str>,
        extra: Value,
    ) -> i64 {
        let mut body = json!({
            "Name": "Test hook",
            "Events": events,
            "TargetUrl": receiver.url("/hook"),
            "Secret": secret,
            "State": "Active",
            "Type": "webhook",
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (s, v) = self
            .call_as(key, Method::POST, "/api/v1/Webhook", Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["WebhookId"].as_i64().unwrap()
    }

    /// Points a webhook at `url` and makes it Active without the test POST a save through the
    /// API would send (for targets that cannot answer one: refused connections, TLS failures).
    pub async fn activate_untested(&self, hook: i64, url: &str) {
        self.ok(
            Method::PATCH,
            &format!("/api/v1/Webhook/{hook}"),
            Some(json!({"State": "Stopped", "TargetUrl": url})),
        )
        .await;
        let mut h = self
            .state
            .store
            .get_webhook(1, hook)
            .await
            .unwrap()
            .unwrap();
        h.state = crmhooks_store::WebhookState::Active;
        let actor = crmhooks_store::Actor {
            tenant_id: 1,
            tenant: "Default".into(),
            associate_id: 1,
        };
        self.state.store.save_webhook(&actor, h).await.unwrap();
    }

    /// `GET /api/v1/Webhook/{hook}/LastError` as a string.
    pub async fn last_error(&self, hook: i64) -> String {
        let v = self
            .ok(
                Method::GET,
                &format!("/api/v1/Webhook/{hook}/LastError"),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub async fn create_contact(&self, name: &str) -> i64 {
        let v = self
            .ok(Method::POST, "/api/v1/Contact", Some(json!({"Name": name})))
            .await;
        v["ContactId"].as_i64().unwrap()
    }
}

pub async fn receiver(secret: Option<&str>) -> Receiver {
    Receiver::start(
        ([127, 0, 0, 1], 0).into(),
        ReceiverConfig {
            secret: secret.map(str::to_owned),
            ..ReceiverConfig::default()
        },
    )
    .await
    .unwrap()
}

/// Requests that are not test events.
pub fn deliveries(r: &Receiver) -> Vec<crmhooks_listen::Received> {
    r.received().into_iter().filter(|x| !x.is_test()).collect()
}

/// Waits until `n` non-test requests arrived (or the timeout), returns them.
pub async fn wait_deliveries(
    r: &Receiver,
    n: usize,
    timeout: Duration,
) -> Vec<crmhooks_listen::Received> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = deliveries(r);
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Top-level keys of a JSON body, in order.
pub fn keys(body: &[u8]) -> Vec<String> {
    let v: serde_json::Map<String, Value> = serde_json::from_slice(body).unwrap();
    v.keys().cloned().collect()
}
