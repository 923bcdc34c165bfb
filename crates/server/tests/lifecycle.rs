//! Shutdown, restart, recycle-bin purge, event retention, TLS failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use crmhooks_store::DeliveryStatus;
use crmhooks_testkit::wait_for;
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(15);

async fn graceful_shutdown_releases_in_flight_deliveries_and_a_restart_sends_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = test_config(dir.path()).await;
    let delivery = flags.get_mut("delivery").unwrap().as_table_mut().unwrap();
    delivery.insert("shutdown_grace_secs".into(), 0.3.into());
    delivery.insert("timeout_ms".into(), 1000.into());
    let app = TestApp::start_in(dir, flags.clone()).await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    // Answers slower than the grace period and the timeout: the requests are still in flight
    // at the stop, and none of them succeeds.
    rx.set_delay(Duration::from_millis(1500));
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
    app.wait_idle().await;
    let counts = app.state.store.delivery_counts().await.unwrap();
    assert_eq!(counts, vec![(DeliveryStatus::Delivered, 5)]);
    app.stop().await;
}

async fn recycle_bin_purge_fires_deleted_as_the_system() {
    let app = TestApp::stepped_with(|t| {
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
    // The purge comes with a maintenance round once the contact has been in the bin for half a
    // second: the clock is what this tests, so the test waits for it, delivering meanwhile.
    let got = wait_for(
        || async {
            let got = app.delivered(&rx).await;
            (got.len() >= 3).then_some(got)
        },
        T,
    )
    .await
    .expect("the purge's event");
    // Purged for good: no longer in the bin, so no later round fires for it again.
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/Contact/{gone}?permanent=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        app.delivered(&rx).await.len(),
        3,
        "softdeleted ×2, deleted ×1"
    );
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
    let app = TestApp::stepped_with(|t| {
        t.insert("event_retention_days".into(), (0.5 / 86_400.0).into());
        t.insert("maintenance_interval_secs".into(), 0.2.into());
    })
    .await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    let a = app.create_contact("a").await;
    app.deliver().await;
    // Hook B fails until it is disabled; its delivery of "b" stays pending (parked), so the
    // event "b" must outlive the retention period.
    let rx_b = receiver(None).await;
    let b_hook = app.create_hook(&rx_b, &["contact.created"], None).await;
    rx_b.set_status(500);
    let b = app.create_contact("b").await;
    assert_eq!(app.delivered(&rx_b).await.len(), 9);
    // Event a is pruned by a maintenance round once it is older than the retention period:
    // the clock is what this tests, so the test waits for it.
    let first = wait_for(
        || async {
            let list = app
                .ok(
                    Method::GET,
                    &format!("/api/v1/Webhook/{hook}/Deliveries"),
                    None,
                )
                .await;
            let list = list.as_array().unwrap().clone();
            (list.len() < 2).then_some(list)
        },
        T,
    )
    .await
    .expect("event a pruned");
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
    let app = TestApp::stepped().await;
    let rx = receiver(None).await;
    let hook = app.create_hook(&rx, &["contact.created"], None).await;
    // https to a plain-HTTP listener: the TLS handshake fails.
    let url = rx.url("/hook").replace("http://", "https://");
    app.activate_untested(hook, &url).await;
    app.create_contact("a").await;
    assert_eq!(app.step().await, 1);
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
