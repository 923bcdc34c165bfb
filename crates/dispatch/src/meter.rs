//! What the dispatcher counts as it works (docs/metrics.md): attempts by outcome and status
//! class, their duration, the time from an event's commit to its delivery, and how many
//! deliveries wait and are in flight.
//!
//! The handles are registered once, when the dispatcher is made, so an attempt costs a few
//! atomic operations and no lookup (labels by tenant or webhook, behind settings, are looked up
//! per attempt).

use std::sync::atomic::{AtomicI64, Ordering};

use crmhooks_store::{Claimed, Verdict, TICKS_PER_SECOND};
use metrics::{Counter, Gauge, Histogram};

/// Which labels beyond outcome and status class the attempts carry (each multiplies the
/// series: off by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricLabels {
    /// `tenant`: the tenant's name.
    pub tenant: bool,
    /// `webhook`: the webhook's id.
    pub webhook: bool,
}

const OUTCOMES: [&str; 4] = ["delivered", "retry", "requeued", "gone"];
const CLASSES: [&str; 7] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn outcome_index(v: &Verdict) -> usize {
    match v {
        Verdict::Delivered => 0,
        Verdict::RetryAt(_) => 1,
        Verdict::Requeue(_) => 2,
        Verdict::Gone => 3,
    }
}

fn class_index(status: Option<u16>) -> usize {
    match status {
        None => 0,
        Some(s @ 100..=599) => usize::from(s / 100),
        Some(_) => 6,
    }
}

/// The dispatcher's metric handles.
pub(crate) struct Meter {
    labels: MetricLabels,
    attempts: Vec<Counter>,
    attempt_duration: Histogram,
    commit_to_delivery: Histogram,
    waiting: Gauge,
    waiting_now: AtomicI64,
    in_flight: Gauge,
}

impl Meter {
    pub(crate) fn new(labels: MetricLabels) -> Meter {
        let mut attempts = Vec::with_capacity(OUTCOMES.len() * CLASSES.len());
        for outcome in OUTCOMES {
            for class in CLASSES {
                attempts.push(metrics::counter!(
                    "crmhooks_delivery_attempts_total",
                    "outcome" => outcome,
                    "status_class" => class
                ));
            }
        }
        Meter {
            labels,
            attempts,
            attempt_duration: metrics::histogram!("crmhooks_attempt_duration_seconds"),
            commit_to_delivery: metrics::histogram!("crmhooks_commit_to_delivery_seconds"),
            waiting: metrics::gauge!("crmhooks_deliveries_waiting"),
            waiting_now: AtomicI64::new(0),
            in_flight: metrics::gauge!("crmhooks_deliveries_in_flight"),
        }
    }

    /// An attempt of `c` ended: `status` answered after `elapsed` seconds, `verdict` follows;
    /// `now` in ticks.
    pub(crate) fn attempt(
        &self,
        c: &Claimed,
        status: Option<u16>,
        elapsed: f64,
        verdict: &Verdict,
        now: i64,
    ) {
        let (o, k) = (outcome_index(verdict), class_index(status));
        if self.labels.tenant || self.labels.webhook {
            let mut labels = vec![
                metrics::Label::from_static_parts("outcome", OUTCOMES[o]),
                metrics::Label::from_static_parts("status_class", CLASSES[k]),
            ];
            if self.labels.tenant {
                labels.push(metrics::Label::new("tenant", c.tenant.clone()));
            }
            if self.labels.webhook {
                labels.push(metrics::Label::new("webhook", c.webhook.id.to_string()));
            }
            metrics::counter!("crmhooks_delivery_attempts_total", labels).increment(1);
        } else if let Some(counter) = self.attempts.get(o * CLASSES.len() + k) {
            counter.increment(1);
        }
        self.attempt_duration.record(elapsed);
        if matches!(verdict, Verdict::Delivered) {
            let ticks = now.saturating_sub(c.event.occurred).max(0);
            self.commit_to_delivery
                .record(ticks as f64 / TICKS_PER_SECOND as f64);
        }
    }

    /// `n` deliveries were queued for a claim or a hand-over (negative: taken).
    pub(crate) fn waiting(&self, n: i64) {
        if n != 0 {
            let now = self.waiting_now.fetch_add(n, Ordering::Relaxed) + n;
            // Deliveries this node cannot see leave the queue too (another node's claims, a
            // webhook deleted): never below zero.
            self.waiting.set(now.max(0) as f64);
        }
    }

    /// Sets the waiting count (at start, from one count of the store).
    pub(crate) fn set_waiting(&self, n: i64) {
        self.waiting_now.store(n, Ordering::Relaxed);
        self.waiting.set(n.max(0) as f64);
    }

    /// `n` deliveries more (negative: fewer) are held by this node.
    pub(crate) fn in_flight(&self, n: i64) {
        if n > 0 {
            self.in_flight.increment(n as f64);
        } else if n < 0 {
            self.in_flight.decrement(n.unsigned_abs() as f64);
        }
    }
}

/// Counts a webhook entering `to` (by its owner, or by the dispatcher's record).
pub fn state_change(to: &'static str) {
    metrics::counter!("crmhooks_webhook_state_changes_total", "to" => to).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_index(None)], "none");
        assert_eq!(CLASSES[class_index(Some(200))], "2xx");
        assert_eq!(CLASSES[class_index(Some(503))], "5xx");
        assert_eq!(CLASSES[class_index(Some(42))], "other");
        assert_eq!(CLASSES[class_index(Some(600))], "other");
    }
}
