//! The benchmark's counting receiver on port 0, driven with reqwest.
#![allow(clippy::unwrap_used)]

use crmhooks_listen::counting::{unix_micros_now, CountingReceiver, RAW_PREFIX, RELAY_PREFIX};
use crmhooks_payload::{headers, NetDateTime, WebhookPayload};

/// A delivery body committed `ago_ms` milliseconds ago.
fn body(ago_ms: i64) -> Vec<u8> {
    let mut p = WebhookPayload::from_slice(include_bytes!(
        "../../payload/tests/fixtures/contact-changed.json"
    ))
    .unwrap();
    let committed = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(ago_ms);
    p.timestamp = NetDateTime::utc(committed);
    p.to_bytes()
}

/// Raw, relay and test requests are only counted; a delivery is counted, sized and timed from
/// its body's `Timestamp`; a reset forgets the deliveries.
#[tokio::test]
async fn sorts_by_path_and_times_deliveries() {
    let receiver = CountingReceiver::start().await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, test: bool| {
        let mut req = http.post(receiver.url(path)).body(body);
        if test {
            req = req.header(headers::HOOK_TEST, "true");
        }
        req.send()
    };
    for (path, test) in [
        (format!("{RAW_PREFIX}/1"), false),
        (format!("{RELAY_PREFIX}/1"), false),
        (format!("{RELAY_PREFIX}/2"), false),
        ("/hook/1".to_owned(), true),
    ] {
        let answer = post(&path, body(0), test).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert!(answer.bytes().await.unwrap().is_empty());
    }
    let t = receiver.tally();
    assert_eq!(
        (t.raw(), t.relay(), t.tests(), t.deliveries()),
        (1, 2, 1, 0)
    );
    assert!(t.latencies().is_empty());

    let delivery = body(250);
    let before = unix_micros_now();
    let size = delivery.len() as u64;
    assert_eq!(
        post("/hook/1", delivery, false).await.unwrap().status(),
        200
    );
    assert_eq!(
        post("/hook/2", b"{}".to_vec(), false)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(t.deliveries(), 2);
    assert_eq!(t.delivery_bytes(), size + 2);
    // Only the body with a Timestamp has a latency: at least the 250 ms it is old.
    let latencies = t.latencies();
    assert_eq!(latencies.len(), 1);
    assert!(
        (250_000..60_000_000).contains(&latencies[0]),
        "{latencies:?}"
    );
    assert!(t.first_commit_us() <= before - 250_000);
    assert!(t.last_delivery_us() >= before);

    t.reset();
    t.reset_relay();
    assert_eq!((t.deliveries(), t.delivery_bytes(), t.relay()), (0, 0, 0));
    assert_eq!((t.first_commit_us(), t.last_delivery_us()), (i64::MAX, 0));
    assert!(t.latencies().is_empty());
    assert_eq!(t.raw(), 1, "the raw count is kept");
}
