//! Failed attempts in the log: counted, and reported at most once per [`REPORT_EVERY`]. Each
//! attempt is in the delivery log and the metrics, but the server's own log said nothing while
//! a node's receivers failed or timed out, so a node that had stopped delivering for that
//! reason looked, from its log, like one that had stalled.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crmhooks_store::{AttemptOutcome, Verdict, WebhookId};

/// The shortest time between two reports.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Failures since the previous report.
#[derive(Debug, PartialEq)]
pub(crate) struct Report {
    /// Attempts that failed.
    pub(crate) failed: u64,
    /// Webhooks they went to.
    pub(crate) webhooks: usize,
    /// The webhook of the last one.
    pub(crate) last_webhook: WebhookId,
    /// Why the last one failed: the receiver's status, or the transport error.
    pub(crate) last_error: String,
}

/// Counts failed attempts between reports.
#[derive(Default)]
pub(crate) struct Failures {
    reported: Option<Instant>,
    failed: u64,
    webhooks: HashSet<WebhookId>,
    /// The last failure counted and not reported yet: its webhook and why.
    last: Option<(WebhookId, String)>,
}

impl Failures {
    /// Counts the failures among `outcomes`; a report when failures are counted and none was
    /// made in the last [`REPORT_EVERY`] (so the first failure after a quiet spell is reported
    /// at once, and what follows it within the interval with the next batch recorded after the
    /// interval, failed or not).
    pub(crate) fn note(&mut self, outcomes: &[AttemptOutcome], now: Instant) -> Option<Report> {
        for o in outcomes.iter().filter(|o| o.verdict != Verdict::Delivered) {
            self.failed += 1;
            self.webhooks.insert(o.webhook_id);
            self.last = Some((o.webhook_id, why(o)));
        }
        if self.failed == 0
            || self
                .reported
                .is_some_and(|at| now.saturating_duration_since(at) < REPORT_EVERY)
        {
            return None;
        }
        let (last_webhook, last_error) = self.last.take()?;
        self.reported = Some(now);
        let report = Report {
            failed: std::mem::take(&mut self.failed),
            webhooks: self.webhooks.len(),
            last_webhook,
            last_error,
        };
        self.webhooks.clear();
        Some(report)
    }
}

/// Why an attempt failed, for the server's log: the receiver's status, or the transport error
/// (never the target URL, which may carry a receiver's token: the delivery log has the rest).
fn why(o: &AttemptOutcome) -> String {
    match (o.status_code, o.error.as_deref()) {
        (Some(status), _) => format!("the receiver answered {status}"),
        (None, Some(e)) => without_target(e).chars().take(300).collect(),
        (None, None) => "no answer".to_owned(),
    }
}

/// An attempt's error for the server's log: the one error that names the target URL (an
/// invalid one, `request error: TargetUrl "…"`) is replaced, wherever it stands in `text`.
pub(crate) fn without_target(text: &str) -> std::borrow::Cow<'_, str> {
    match text.find("request error: TargetUrl") {
        Some(at) => format!("{}the TargetUrl is not a valid request target", &text[..at]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmhooks_store::{DeliveryId, TenantId};

    fn outcome(webhook: i64, status: Option<u16>, error: Option<&str>) -> AttemptOutcome {
        AttemptOutcome {
            delivery_id: DeliveryId::new(1),
            webhook_id: WebhookId::new(webhook),
            tenant_id: TenantId::new(1),
            event_id: crmhooks_store::EventId::new_v4(),
            retry: 0,
            attempted_at: 0,
            duration_us: 0,
            status_code: status,
            error: error.map(str::to_owned),
            response_excerpt: None,
            verdict: if status == Some(200) {
                Verdict::Delivered
            } else {
                Verdict::RetryAt(0)
            },
        }
    }

    #[test]
    fn the_first_failure_is_reported_at_once_and_the_rest_once_per_interval() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        assert_eq!(f.note(&[outcome(1, Some(200), None)], t0), None);
        let first = f.note(&[outcome(1, Some(500), Some("HTTP 500"))], t0);
        assert_eq!(
            first,
            Some(Report {
                failed: 1,
                webhooks: 1,
                last_webhook: WebhookId::new(1),
                last_error: "the receiver answered 500".into(),
            })
        );
        let later = t0 + Duration::from_secs(3);
        let batch = [
            outcome(2, None, Some("timeout: no answer within 30000 ms")),
            outcome(3, None, Some("connect error: Connection refused")),
            outcome(3, Some(200), None),
        ];
        assert_eq!(f.note(&batch, later), None, "within the interval");
        let next = f.note(
            &[outcome(2, None, Some("timeout: no answer within 30000 ms"))],
            t0 + REPORT_EVERY,
        );
        assert_eq!(
            next,
            Some(Report {
                failed: 3,
                webhooks: 2,
                last_webhook: WebhookId::new(2),
                last_error: "timeout: no answer within 30000 ms".into(),
            })
        );
        assert_eq!(
            f.note(&[outcome(1, Some(200), None)], t0 + 3 * REPORT_EVERY),
            None,
            "successes alone report nothing"
        );
        // Failures counted within an interval are reported after it even when no new one
        // comes.
        let t1 = t0 + 4 * REPORT_EVERY;
        assert!(f.note(&[outcome(4, Some(503), None)], t1).is_some());
        assert_eq!(f.note(&[outcome(5, Some(502), None)], t1), None);
        assert_eq!(
            f.note(&[outcome(5, Some(200), None)], t1 + REPORT_EVERY),
            Some(Report {
                failed: 1,
                webhooks: 1,
                last_webhook: WebhookId::new(5),
                last_error: "the receiver answered 502".into(),
            })
        );
    }

    #[test]
    fn a_target_url_never_reaches_the_log() {
        let o = outcome(
            1,
            None,
            Some("request error: TargetUrl \"https://x/?token=s3cret\": invalid uri"),
        );
        let r = Failures::default().note(&[o], Instant::now()).unwrap();
        assert!(!r.last_error.contains("s3cret"), "{}", r.last_error);
        let reason = "EventId 1: request error: TargetUrl \"https://x/?token=s3cret\": invalid uri";
        let masked = without_target(reason);
        assert_eq!(
            masked,
            "EventId 1: the TargetUrl is not a valid request target"
        );
    }
}
