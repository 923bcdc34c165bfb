//! A real server on port 0 over a fresh database (a SQLite file, or a PostgreSQL database for the
//! `::postgres` variants), a real receiver, and a small HTTP client. The server's dispatcher
//! runs its loop ([`TestApp::start`]) or is driven round by round ([`TestApp::stepped`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_server::{AppState, Config, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crmhooks_testkit::postgres::{self, PgDatabase};
pub use crmhooks_testkit::Backend;

thread_local! {
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Sqlite) };
}

/// Runs one variant of a `both_backends!` test: selects `backend` for this test thread (the
/// server the test starts opens its database there), or skips a PostgreSQL variant when no
/// server is available (counted and reported by `crmhooks_testkit::skips`).
pub async fn run(backend: Backend, test: &str, body: impl AsyncFnOnce()) {
    if backend == Backend::Postgres && postgres::admin_or_skip(test).await.is_none() {
        return;
    }
    BACKEND.with(|c| c.set(backend));
    body().await
}

/// Runs each named `async fn` on both backends: `<test>::sqlite` and `<test>::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        crmhooks_testkit::both_backends!(#[tokio::test] $crate::common::run => $($name),*);
    };
}

pub fn backend() -> Backend {
    BACKEND.with(|c| c.get())
}

/// A fresh, empty PostgreSQL database for one test; [`TestApp::stop`] drops it.
pub async fn fresh_pg_database() -> String {
    let admin = postgres::admin_url()
        .await
        .expect("a PostgreSQL variant runs only when a server is there");
    PgDatabase::create(&admin).await.url().to_owned()
}

/// The database URL for a test in `dir` on the current backend.
pub async fn test_database(dir: &std::path::Path) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.join("test.db").display()),
        Backend::Postgres => fresh_pg_database().await,
    }
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
    /// The dispatcher's loop does not run: the test drives it ([`TestApp::stepped`]).
    stepped: bool,
}

/// How long [`TestApp::deliver`] and [`TestApp::wait_idle`] wait for the queue to empty.
const SETTLE: Duration = Duration::from_secs(20);

/// Turns `flags` into those of a server whose dispatcher loop does not run, and whose retries
/// are due at once: the test drives each round with [`TestApp::deliver`], so attempt `n` of a
/// cycle is round `n`, whatever the clock says.
pub fn stepped_config(flags: &mut toml::value::Table) {
    let d = flags
        .entry("delivery")
        .or_insert_with(|| toml::value::Table::new().into())
        .as_table_mut()
        .expect("[delivery] is a table");
    d.insert("enabled".into(), false.into());
    d.insert(
        "superoffice_delays_ms".into(),
        toml::Value::Array(vec![0.into(), 0.into()]),
    );
}

/// The master key of the test servers (32 bytes in base64).
pub const TEST_MASTER_KEY: &str = "test:Y3JtaG9va3MtdGVzdC1tYXN0ZXIta2V5LTMyYnl0ZXM=";

/// Settings for fast tests: dev mode, short retry delays, quick polling, no maintenance.
pub async fn test_config(dir: &std::path::Path) -> toml::value::Table {
    let mut t = toml::value::Table::new();
    t.insert("database".into(), test_database(dir).await.into());
    t.insert("dev".into(), true.into());
    t.insert("api_key".into(), "test-key-default-0123456789abcdef".into());
    // A fixed master key, so that no test writes a --dev key file outside its directory.
    t.insert("master_key".into(), TEST_MASTER_KEY.into());
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

    /// A server whose dispatcher does not run by itself: nothing is delivered until the test
    /// calls [`TestApp::deliver`], which runs `Dispatcher::step` rounds. For tests of what is
    /// delivered (payloads, order, the state machine), not of the loop's timing.
    pub async fn stepped() -> Self {
        Self::stepped_with(|_| {}).await
    }

    /// [`TestApp::stepped`] with other settings too.
    pub async fn stepped_with(edit: impl FnOnce(&mut toml::value::Table)) -> Self {
        Self::start_with(|t| {
            stepped_config(t);
            edit(t);
        })
        .await
    }

    pub async fn start_in(dir: tempfile::TempDir, flags: toml::value::Table) -> Self {
        let stepped = flags
            .get("delivery")
            .and_then(|d| d.get("enabled"))
            .and_then(toml::Value::as_bool)
            == Some(false);
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
            key: "test-key-default-0123456789abcdef".into(),
            http: reqwest::Client::new(),
            state,
            stop,
            task: Some(task),
            dir,
            database,
            stepped,
        }
    }

    /// Runs the stopped dispatcher's rounds (claim what is due, send it, record it) until the
    /// queue holds nothing due now or later: every delivery recorded, every retry made,
    /// deliveries of disabled webhooks parked. Returns how many attempts were made.
    pub async fn deliver(&self) -> usize {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut attempts = 0;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries still queued after {SETTLE:?} ({attempts} attempts made)"
            );
            let n = self.step().await;
            attempts += n;
            if n > 0 {
                continue;
            }
            let due = self.state.store.next_due().await.expect("next_due");
            if due.is_none() {
                return attempts;
            }
            // Due later (a retry's own time, a Retry-After): wait for it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One round of the stopped dispatcher: claims what is due, sends it, records it. Returns
    /// how many deliveries it attempted.
    pub async fn step(&self) -> usize {
        assert!(self.stepped, "step() drives a TestApp::stepped() server");
        self.state
            .dispatcher
            .step()
            .await
            .expect("a dispatcher round")
    }

    /// [`TestApp::deliver`], then what `r` received (test events aside).
    pub async fn delivered(&self, r: &Receiver) -> Vec<crmhooks_listen::Received> {
        self.deliver().await;
        deliveries(r)
    }

    /// Waits until the running dispatcher has nothing left: no delivery in flight, none due
    /// now or later (deliveries of disabled webhooks aside). After it, nothing more is sent
    /// unless something new happens, so a test can check that something was not sent.
    pub async fn wait_idle(&self) {
        let store = &self.state.store;
        let idle = crmhooks_testkit::wait_for(
            || async {
                store
                    .next_due()
                    .await
                    .expect("next_due")
                    .is_none()
                    .then_some(())
            },
            SETTLE,
        )
        .await;
        assert!(idle.is_some(), "deliveries still queued after {SETTLE:?}");
    }

    /// Stops the server and removes its PostgreSQL test database.
    pub async fn stop(self) -> tempfile::TempDir {
        let database = self.database.clone();
        let dir = self.stop_keep().await;
        if database.starts_with("postgres") {
            postgres::drop_database_url(&database).await;
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
            .get_webhook(
                crmhooks_store::TenantId::new(1),
                crmhooks_store::WebhookId::new(hook),
            )
            .await
            .unwrap()
            .unwrap();
        h.state = crmhooks_store::WebhookState::Active;
        let actor = crmhooks_store::Actor {
            tenant_id: crmhooks_store::TenantId::new(1),
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

/// Waits until the running dispatcher has sent `n` non-test requests (or the timeout), returns
/// them. (A [`TestApp::stepped`] test calls [`TestApp::delivered`] instead.)
pub async fn wait_deliveries(
    r: &Receiver,
    n: usize,
    timeout: Duration,
) -> Vec<crmhooks_listen::Received> {
    crmhooks_testkit::wait_until(|| deliveries(r).len() >= n, timeout).await;
    deliveries(r)
}

/// Top-level keys of a JSON body, in order.
pub fn keys(body: &[u8]) -> Vec<String> {
    let v: serde_json::Map<String, Value> = serde_json::from_slice(body).unwrap();
    v.keys().cloned().collect()
}
