//! A fuzzing harness over every route, method and body, against a real server on port 0 on
//! both backends: no answer may be a 5xx other than a database outage, every refusal carries
//! the JSON error body, and the server serves on afterwards (a crash would take the test
//! process down with it).
//!
//! Each run draws its cases from a fresh seed, printed so that a failure can be replayed:
//! `CRMHOOKS_FUZZ_SEED=<seed>`. `CRMHOOKS_FUZZ_CASES=<n>` sets the number of cases per backend
//! (CI runs the default, 15,000: about half a minute each); a long run, e.g. 100000:
//!
//! ```text
//! CRMHOOKS_FUZZ_CASES=100000 cargo test -p crmhooks-server --test fuzz -- --nocapture
//! ```
//!
//! The inputs that once found bugs are kept in [`regressions`] and run every time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod gen;
mod probe;
mod regressions;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde_json::json;

use probe::{Failure, Target};
use regressions::kept_inputs_that_once_failed;

const DEFAULT_CASES: u32 = 15_000;

/// A body limit small enough that the fuzzer reaches it often.
pub const FUZZ_MAX_BODY: i64 = 32 * 1024;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A server with contacts, webhooks (one Active, to a receiver) and deliveries to hit.
pub async fn seeded_app(max_body: i64) -> (TestApp, crmhooks_listen::Receiver, Target) {
    let app = TestApp::start_with(|t| {
        t.insert("max_body_bytes".into(), max_body.into());
    })
    .await;
    let rx = receiver(None).await;
    for name in ["a", "b", "c"] {
        app.create_contact(name).await;
    }
    app.create_hook(&rx, &["contact.created", "contact.changed", "x.y"], None)
        .await;
    app.ok(
        Method::POST,
        "/api/v1/Webhook",
        Some(json!({"Name": "s", "Events": ["contact.deleted"], "TargetUrl": rx.url("/s"), "State": "Stopped"})),
    )
    .await;
    app.ok(
        Method::PUT,
        "/api/v1/Contact/1",
        Some(json!({"Name": "a2"})),
    )
    .await;
    let other_key = app.add_key("Other", 2).await;
    let target = Target {
        base: app.base.clone(),
        key: app.key.clone(),
        other_key,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    (app, rx, target)
}

struct Report {
    cases: u32,
    seed: u64,
    took: Duration,
    statuses: BTreeMap<String, u64>,
    failures: Vec<Failure>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = f64::from(self.cases) / self.took.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "fuzz: {} cases in {:.1?} ({rate:.0}/s), seed {}; failures: {}",
            self.cases,
            self.took,
            self.seed,
            self.failures.len()
        )?;
        writeln!(f, "fuzz: answers by status: {:?}", self.statuses)?;
        for failure in self.failures.iter().take(20) {
            writeln!(f, "FAILURE {failure}")?;
        }
        Ok(())
    }
}

/// Sends `cases` probes drawn from `seed` (on a blocking thread: proptest's runner is
/// synchronous, the server runs on the test's runtime).
fn run(
    handle: tokio::runtime::Handle,
    target: Target,
    rx: String,
    cases: u32,
    seed: u64,
) -> Report {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let statuses = std::cell::RefCell::new(BTreeMap::<String, u64>::new());
    let failures = std::cell::RefCell::new(Vec::new());
    let started = Instant::now();
    // Every case passes the runner: failures are collected (all of them, with their
    // requests) rather than shrunk one at a time.
    let _ = runner.run(&gen::probe(rx), |probe| {
        let key = match handle.block_on(probe::send(&target, &probe)) {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "not sent or no answer".to_owned(),
            Err(what) => {
                failures.borrow_mut().push(Failure { probe, what });
                "failure".to_owned()
            }
        };
        *statuses.borrow_mut().entry(key).or_default() += 1;
        Ok(())
    });
    Report {
        cases,
        seed,
        took: started.elapsed(),
        statuses: statuses.into_inner(),
        failures: failures.into_inner(),
    }
}

async fn every_route_method_and_body() {
    let (app, rx, target) = seeded_app(FUZZ_MAX_BODY).await;
    let cases = env_number("CRMHOOKS_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let seed = env_number("CRMHOOKS_FUZZ_SEED").unwrap_or_else(rand_seed);
    let handle = tokio::runtime::Handle::current();
    let rx_url = rx.url("/fuzz");
    let report = tokio::task::spawn_blocking(move || run(handle, target, rx_url, cases, seed))
        .await
        .unwrap();
    eprintln!("{} ({:?})\n{report}", backend_name(), backend());
    assert!(report.failures.is_empty(), "{report}");
    // The server still serves, and writes.
    let (s, v) = app.call(Method::GET, "/healthz", None).await;
    assert!(s.is_success(), "{s} {v}");
    app.create_contact("after the fuzz").await;
    app.stop().await;
}

fn backend_name() -> &'static str {
    match backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

crmhooks_testkit::both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] crate::common::run =>
    every_route_method_and_body,
    kept_inputs_that_once_failed,
);
