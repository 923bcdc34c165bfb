//! The process's metrics recorder: the `metrics` facade with the Prometheus exporter behind it.
//!
//! Counters, gauges and histograms are kept as the engine works (the API here and in
//! [`crate::observe`], the dispatcher in `crmhooks-dispatch`, commits and fsyncs in
//! `crmhooks-store`); `/metrics` renders what the recorder holds, so a scrape reads memory and
//! costs the same whatever the size of the delivery log. docs/metrics.md lists every metric.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `*_seconds` histogram: from a fsync or a local receiver's answer
/// (sub-millisecond) to a delivery that waited for retries (a minute).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histogram samples are folded into their buckets between scrapes (so memory stays
/// bounded when nobody scrapes).
const UPKEEP: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (tests start several servers in one
/// process: they share it) and returns its handle; `None` when a program embedding the server
/// installed a recorder of its own first.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already; /metrics stays empty");
                return None;
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("crmhooks-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms are folded at scrapes only");
            }
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text of every metric of the process.
pub fn render() -> String {
    match install() {
        Some(handle) => handle.render(),
        None => String::new(),
    }
}

/// The help text of each metric (docs/metrics.md says the same).
fn describe() {
    describe_counter!(
        "crmhooks_events_total",
        "Events committed, by entity and event name."
    );
    describe_counter!(
        "crmhooks_delivery_attempts_total",
        "Delivery attempts, by outcome (delivered, retry, requeued, gone) and status class."
    );
    describe_histogram!(
        "crmhooks_attempt_duration_seconds",
        Unit::Seconds,
        "Time from sending a delivery's request to its answer (or failure)."
    );
    describe_histogram!(
        "crmhooks_commit_to_delivery_seconds",
        Unit::Seconds,
        "Time from an event's commit to its delivery's successful answer."
    );
    describe_gauge!(
        "crmhooks_deliveries_waiting",
        "Deliveries queued and not yet taken by a dispatcher (this node's view)."
    );
    describe_gauge!(
        "crmhooks_deliveries_in_flight",
        "Deliveries this node holds: claimed or handed over, not yet recorded."
    );
    describe_counter!(
        "crmhooks_webhook_state_changes_total",
        "Webhook state changes, by the state entered."
    );
    describe_counter!(
        "crmhooks_api_requests_total",
        "API requests answered, by route template, method and status."
    );
    describe_histogram!(
        "crmhooks_api_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an API request, by route template."
    );
    describe_histogram!(
        "crmhooks_store_commit_seconds",
        Unit::Seconds,
        "Time to commit a group of changes (SQLite writer, PostgreSQL group commit)."
    );
    describe_histogram!(
        "crmhooks_store_fsync_seconds",
        Unit::Seconds,
        "Time of one fsync of SQLite's WAL (covering every group committed meanwhile)."
    );
    describe_gauge!("crmhooks_http_connections_open", "Open API connections.");
    describe_counter!(
        "crmhooks_http_connections_total",
        "API connections accepted."
    );
    describe_counter!(
        "crmhooks_http_connections_waited_total",
        "Connections that waited at max_connections."
    );
    describe_counter!(
        "crmhooks_http_cut_off_total",
        "Connections and requests cut off, by reason."
    );
}
