//! One tenant's slow receivers cannot hold another tenant's deliveries back: a node's request
//! slots are shared fairly (`delivery.max_per_tenant`); and a webhook's backlog is not held back
//! by the share one claim takes of it (`delivery.max_per_webhook`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// How long the slow tenant's receiver takes to answer each request.
const SLOW: Duration = Duration::from_millis(1500);

/// The fast tenant's delivery latency while a slow tenant's backlog fills the node, with this
/// share per tenant of 4 request slots (the slow tenant has three webhooks of 2 slots each).
async fn fast_latency_beside_a_slow_tenant(max_per_tenant: i64) -> Duration {
    let app = TestApp::start_with(|t| {
        let d = t
            .entry("delivery")
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        d.insert("max_in_flight".into(), 4.into());
        d.insert("max_per_tenant".into(), max_per_tenant.into());
        d.insert("max_per_webhook".into(), 2.into());
        d.insert("timeout_ms".into(), 10_000.into());
    })
    .await;
    let slow = receiver(None).await;
    for _ in 0..3 {
        app.create_hook(&slow, &["contact.created"], None).await;
    }
    slow.set_delay(SLOW);
    let fast_key = app.add_key("Fast", 1).await;
    let fast = receiver(None).await;
    app.create_hook_as(&fast_key, &fast, &["contact.created"], None, json!({}))
        .await;
    // The slow tenant's backlog: 30 deliveries of 1.5 s each.
    for i in 0..10 {
        app.create_contact(&format!("slow {i}")).await;
    }
    // Its requests are in flight.
    wait_deliveries(&slow, 2, Duration::from_secs(10)).await;
    let started = Instant::now();
    let (s, v) = app
        .call_as(
            &fast_key,
            Method::POST,
            "/api/v1/Contact",
            Some(json!({"Name": "fast"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = wait_deliveries(&fast, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the fast tenant's delivery arrived");
    let latency = started.elapsed();
    eprintln!("fast tenant's latency with max_per_tenant = {max_per_tenant} of 4: {latency:?}");
    app.stop().await;
    latency
}

/// With a share per tenant, the fast tenant's delivery does not wait for the slow tenant's.
async fn a_slow_tenant_does_not_delay_a_fast_one() {
    let latency = fast_latency_beside_a_slow_tenant(2).await;
    assert!(
        latency < SLOW / 2,
        "the fast tenant waited {latency:?} behind a receiver that takes {SLOW:?}"
    );
}

/// The control: when one tenant may take every slot, the same load keeps the fast tenant's
/// delivery waiting for a slow request to end (what the share above prevents).
async fn without_a_share_the_fast_tenant_waits() {
    let latency = fast_latency_beside_a_slow_tenant(4).await;
    assert!(
        latency >= SLOW / 2,
        "expected the fast tenant to wait behind the slow one, it took {latency:?}"
    );
}

/// A backlog of one webhook is claimed a share at a time (a claim takes at most
/// `max_per_webhook` of each webhook), and the next share follows at once, not after the poll:
/// on PostgreSQL, where a record wakes the dispatcher only when it left work, a claim capped
/// at the share used to be taken for one that found everything, and the backlog went at one
/// share per poll interval.
async fn a_backlog_goes_beyond_one_claim_without_waiting_for_the_poll() {
    // The backlog, queued by a node that does not deliver.
    let dir = tempfile::tempdir().unwrap();
    let mut flags = test_config(dir.path()).await;
    stepped_config(&mut flags);
    let queued = TestApp::start_in(dir, flags.clone()).await;
    let rx = receiver(None).await;
    queued.create_hook(&rx, &["contact.created"], None).await;
    const CONTACTS: usize = 40;
    for i in 0..CONTACTS {
        queued.create_contact(&format!("backlog {i}")).await;
    }
    let dir = queued.stop_keep().await;
    // A delivering node on the same database, claiming two of the webhook's at a time, its
    // poll far longer than the test waits.
    let d = flags
        .get_mut("delivery")
        .and_then(toml::Value::as_table_mut)
        .unwrap();
    d.insert("enabled".into(), true.into());
    d.insert("max_per_webhook".into(), 2.into());
    d.insert("poll_ms".into(), 30_000.into());
    let started = Instant::now();
    let app = TestApp::start_in(dir, flags).await;
    let got = wait_deliveries(&rx, CONTACTS, Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert_eq!(got.len(), CONTACTS, "delivered within 15 s (poll 30 s)");
    eprintln!("{CONTACTS} deliveries, two per claim, in {took:?}");
    app.stop().await;
}

both_backends!(
    a_slow_tenant_does_not_delay_a_fast_one,
    without_a_share_the_fast_tenant_waits,
    a_backlog_goes_beyond_one_claim_without_waiting_for_the_poll
);
