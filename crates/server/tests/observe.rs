//! `/metrics` kept as the engine works (counters move after a change and a delivery; a scrape
//! reads no table, so it costs the same at 20,000 deliveries as at 10), and the request id of
//! every API answer.
//!
//! The metrics recorder is one per process, shared by the servers of these tests: a test
//! checks how much a counter moved (at least), never its absolute value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .http
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// The sum of the series of `name` whose labels include each of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn counters_move_after_a_contact_change_and_a_delivery() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created", "contact.changed"], None)
        .await;
    let before = scrape(&app).await;
    let id = app.create_contact("Metered").await;
    app.ok(
        Method::PUT,
        &format!("/api/v1/Contact/{id}"),
        Some(json!({"Name": "Metered again"})),
    )
    .await;
    assert_eq!(app.delivered(&rx).await.len(), 2);
    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let created = [("entity", "contact"), ("event", "contact.created")];
    assert!(moved("crmhooks_events_total", &created) >= 1.0, "{after}");
    let changed = [("entity", "contact"), ("event", "contact.changed")];
    assert!(moved("crmhooks_events_total", &changed) >= 1.0, "{after}");
    let delivered = [("outcome", "delivered"), ("status_class", "2xx")];
    assert!(
        moved("crmhooks_delivery_attempts_total", &delivered) >= 2.0,
        "{after}"
    );
    for histogram in [
        "crmhooks_attempt_duration_seconds_count",
        "crmhooks_commit_to_delivery_seconds_count",
        "crmhooks_store_commit_seconds_count",
    ] {
        assert!(moved(histogram, &[]) >= 1.0, "{histogram}: {after}");
    }
    // Requests by route template, never by the raw path.
    let put = [
        ("route", "/api/v1/Contact/{id}"),
        ("method", "PUT"),
        ("status", "200"),
    ];
    assert!(moved("crmhooks_api_requests_total", &put) >= 1.0, "{after}");
    assert!(
        moved(
            "crmhooks_api_request_duration_seconds_count",
            &[("route", "/api/v1/Contact")]
        ) >= 1.0,
        "{after}"
    );
    assert!(
        !after.contains(&format!("/api/v1/Contact/{id}\"")),
        "{after}"
    );
    // The connection counters and the gauges are there too.
    assert!(value(&after, "crmhooks_http_connections_total", &[]) >= 1.0);
    for gauge in [
        "crmhooks_deliveries_waiting",
        "crmhooks_deliveries_in_flight",
    ] {
        assert!(after.contains(&format!("# TYPE {gauge} gauge")), "{after}");
    }
    // A route that does not exist is counted under one label.
    let (s, _) = app.call(Method::GET, "/no/such/route/123", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let last = scrape(&app).await;
    assert!(
        value(
            &last,
            "crmhooks_api_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0,
        "{last}"
    );
    assert!(!last.contains("/no/such/route"), "{last}");
    app.stop().await;
}

async fn a_state_change_is_counted() {
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let before = scrape(&app).await;
    app.ok(
        Method::PATCH,
        &format!("/api/v1/Webhook/{hook}"),
        Some(json!({"State": "Stopped"})),
    )
    .await;
    let after = scrape(&app).await;
    let to = [("to", "Stopped")];
    assert!(
        value(&after, "crmhooks_webhook_state_changes_total", &to)
            - value(&before, "crmhooks_webhook_state_changes_total", &to)
            >= 1.0,
        "{after}"
    );
    app.stop().await;
}

both_backends!(
    counters_move_after_a_contact_change_and_a_delivery,
    a_state_change_is_counted,
);

/// The median time of `n` scrapes.
async fn median_scrape(app: &TestApp, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        scrape(app).await;
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// A scrape reads what the recorder holds: the same at 20,000 deliveries as at 10 (the scrape
/// of before this counted every delivery by status, a scan of the whole table). On PostgreSQL
/// it answers even while another session holds the delivery and event tables locked: it runs
/// no query. (Times are compared loosely: tests run side by side on a busy machine.)
async fn a_scrape_costs_the_same_at_20000_deliveries_as_at_10() {
    let app = TestApp::stepped_with(|t| {
        t.insert("test_on_save".into(), false.into());
        t.insert("sqlite_synchronous_full".into(), false.into());
    })
    .await;
    let rx = receiver(None).await;
    for _ in 0..10 {
        app.create_hook(&rx, &["contact.created"], None).await;
    }
    app.create_contact("first").await;
    let small = median_scrape(&app, 31).await;
    // 1,999 more contacts, 10 deliveries each, never delivered (the dispatcher is stopped).
    let mut left = 1_999;
    while left > 0 {
        let n = left.min(50);
        create_contacts(&app, n).await;
        left -= n;
    }
    let counts = app.state.store.delivery_counts().await.unwrap();
    let pending: i64 = counts
        .iter()
        .filter(|(s, _)| *s == crmhooks_store::DeliveryStatus::Pending)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(pending, 20_000);
    let large = median_scrape(&app, 31).await;
    eprintln!("median scrape: {small:?} at 10 deliveries, {large:?} at 20,000");
    assert!(
        large <= small * 10 + Duration::from_millis(50),
        "a scrape took {small:?} at 10 deliveries and {large:?} at 20,000"
    );
    if app.database.starts_with("postgres") {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database)
            .await
            .unwrap();
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        sqlx::query("LOCK TABLE delivery, event IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        let text = tokio::time::timeout(Duration::from_secs(5), scrape(&app))
            .await
            .expect("a scrape waited for the locked tables: it queried them");
        assert!(text.contains("crmhooks_events_total"), "{text}");
        tx.rollback().await.unwrap();
    }
    app.stop().await;
}

both_backends!(a_scrape_costs_the_same_at_20000_deliveries_as_at_10);

/// `n` contacts created at once.
async fn create_contacts(app: &TestApp, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, base, key) = (app.http.clone(), app.base.clone(), app.key.clone());
        tasks.spawn(async move {
            let resp = http
                .post(format!("{base}/api/v1/Contact"))
                .bearer_auth(key)
                .json(&json!({"Name": format!("c{i}")}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_given_one_is_echoed() {
    let app = TestApp::stepped().await;
    let get = |id: Option<&str>, path: &str| {
        let mut req = app
            .http
            .get(format!("{}{path}", app.base))
            .bearer_auth(&app.key);
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        req.send()
    };
    // Given and sane: echoed, on a success and on an error alike.
    for path in ["/api/v1/Contact", "/api/v1/Contact/424242", "/nowhere"] {
        let resp = get(Some("abc-123_XYZ.7"), path).await.unwrap();
        assert_eq!(resp.headers()["x-request-id"], "abc-123_XYZ.7", "{path}");
    }
    // Missing, too long, or with a space: a fresh UUID instead.
    let long = "x".repeat(129);
    for given in [None, Some(long.as_str()), Some("two words")] {
        let resp = get(given, "/api/v1/Contact").await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid_like(&id), "{given:?} → {id}");
    }
    // Two answers, two ids.
    let a = get(None, "/healthz").await.unwrap();
    let b = get(None, "/healthz").await.unwrap();
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
    app.stop().await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
