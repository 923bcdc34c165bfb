//! Shutdown, restart, recycle-bin purge, event retention, TLS failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use crmhooks_store::DeliveryStatus;
use reqwest::Method;

const T: Duration = Duration::from_secs(15);

async fn graceful_shutdown_releases_in_flight_deliveries_and_a_restart_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = test_config(dir.path()).await;
    flags
        .get_mut("delivery")
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("shutdown_grace_secs".into(), 0.3.into());
    let app = TestApp::start_in(dir, flags.clone()).await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    rx.set_delay(Duration::from_secs(3));
    for i in 0..5 {
        app.create_contact(&format!("c{i}")).await;
    }
    wait_deliveries(&rx, 5, T).await;
    let store = app.state.store.clone();
    let dir = app.stop_keep().await;
    // Nothing is left leased: unfinished deliveries went back to the queue.
    let counts = store.delivery_counts().await.unwrap();
    assert!(
        !counts
            .iter()
            .any(|(s, n)| *s == DeliveryStatus::InFlight && *n > 0),
        "{counts:?}"
    );
    let pending: i64 = counts
        .iter()
        .filter(|(s, _)| *s == DeliveryStatus::Pending)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(pending, 5, "{counts:?}");
    drop(store);
    rx.set_delay(Duration::ZERO);
    let app = TestApp::start_in(dir, flags).await;
    let got = wait_deliveries(&rx, 10, T).await;
    assert_eq!(got.len(), 10, "each event again after the restart");
    // The receiver has them; their attempts are recorded a moment later.
    let deadline = tokio::time::Instant::now() + T;
    let mut counts = app.state.store.delivery_counts().await.unwrap();
    while counts != vec![(DeliveryStatus::Delivered, 5)] && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        counts = app.state.store.delivery_counts().await.unwrap();
    }
    assert_eq!(counts, vec![(DeliveryStatus::Delivered, 5)]);
    app.stop().await;
}

async fn recycle_bin_purge_fires_deleted_as_the_system() {
    let app = TestApp::start_with(|t| {
        t.insert("recycle_bin_days".into(), (0.5 / 86_400.0).into());
        t.insert("maintenance_interval_secs".into(), 0.2.into());
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.softdeleted", "contact.deleted"], None)
        .await;
    let keep = app.create_contact("restored in time").await;
    let gone = app.create_contact("purged").await;
    app.call(Method::DELETE, &format!("/api/v1/Contact/{gone}"), None)
        .await;
    app.call(Method::DELETE, &format!("/api/v1/Contact/{keep}"), None)
        .await;
    app.ok(
        Method::POST,
        &format!("/api/v1/Contact/{keep}/Restore"),
        None,
    )
    .await;
    let got = wait_deliveries(&rx, 3, T).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_after = deliveries(&rx);
    assert_eq!(got_after.len(), 3, "softdeleted ×2, deleted ×1");
    let p = got[2].payload.as_ref().unwrap();
    assert_eq!(p.event, "contact.deleted");
    assert_eq!(p.primary_key, gone);
    assert_eq!(p.changed_by_associate_id, 0, "the purge is the system");
    assert_eq!(p.values.as_ref().unwrap()["contact_id"], gone);
    app.ok(Method::GET, &format!("/api/v1/Contact/{keep}"), None)
        .await;
    app.stop().await;
}

async fn event_retention_prunes_finished_events_only() {
    let app = TestApp::start_with(|t| {
        t.insert("event_retention_days".into(), (1.0 / 86_400.0).into());
        t.insert("maintenance_interval_secs".into(), 0.2.into());
    })
    .await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let a = app.create_contact("a").await;
    wait_deliveries(&rx, 1, T).await;
    // Hook B fails until it is disabled; its delivery of "b" stays pending (parked), so the
    // event "b" must outlive the retention period.
    let rx_b = receiver(None).await;
    let b_hook = app.create_hook(&rx_b, &["contact.created"], None).await;
    rx_b.set_status(500);
    let b = app.create_contact("b").await;
    wait_deliveries(&rx_b, 9, T).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let first = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{hook}/Deliveries"),
            None,
        )
        .await;
    let first = first.as_array().unwrap();
    assert_eq!(first.len(), 1, "event a pruned, event b kept: {first:?}");
    assert_eq!(first[0]["PrimaryKey"], b);
    assert_ne!(first[0]["PrimaryKey"], a);
    let pending = app
        .ok(
            Method::GET,
            &format!("/api/v1/Webhook/{b_hook}/Deliveries?status=pending"),
            None,
        )
        .await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    app.stop().await;
}

async fn tls_failures_are_failures_with_a_readable_error() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    // https to a plain-HTTP listener: the TLS handshake fails.
    let url = rx.url("/hook").replace("http://", "https://");
    app.activate_untested(hook, &url).await;
    app.create_contact("a").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let last = app.last_error(hook).await;
    assert!(last.contains("connect error"), "{last}");
    let usage = app
        .ok(Method::GET, &format!("/api/v1/Webhook/{hook}/Usage"), None)
        .await;
    assert!(usage["total_errors"].as_i64().unwrap() >= 1, "{usage}");
    app.stop().await;
}

both_backends!(
    graceful_shutdown_releases_in_flight_deliveries_and_a_restart_sends_them,
    recycle_bin_purge_fires_deleted_as_the_system,
    event_retention_prunes_finished_events_only,
    tls_failures_are_failures_with_a_readable_error,
);
