//! Retry policies: what happens after an attempt.

use std::time::Duration;

pub use crmhooks_store::{RetryPolicy, SuccessRule};
use crmhooks_store::{Ticks, Verdict};

/// The `superoffice` policy: cycles of 3 attempts (delays 1 s and 4 s by default), a failed cycle
/// goes to the back of the queue with a new EventId.
#[derive(Clone, Debug)]
pub struct SuperOfficePolicy {
    /// Delays before the 2nd and 3rd attempt of a cycle.
    pub delays: Vec<Duration>,
    /// Delay before a re-queued cycle becomes due.
    pub requeue_delay: Duration,
}

impl Default for SuperOfficePolicy {
    fn default() -> Self {
        SuperOfficePolicy {
            delays: vec![Duration::from_secs(1), Duration::from_secs(4)],
            requeue_delay: Duration::ZERO,
        }
    }
}

/// The `exponential` policy: one attempt per cycle step with exponentially growing delays and
/// jitter, honouring `Retry-After` on 429 and 503 within bounds.
#[derive(Clone, Debug)]
pub struct ExponentialPolicy {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Attempts per cycle before the cycle is re-queued with a new EventId.
    pub attempts_per_cycle: u32,
    /// Fraction of the delay added or removed at random (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for ExponentialPolicy {
    fn default() -> Self {
        ExponentialPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            attempts_per_cycle: 8,
            jitter: 0.2,
        }
    }
}

/// The policies known by name.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// `superoffice`.
    pub superoffice: SuperOfficePolicy,
    /// `exponential`.
    pub exponential: ExponentialPolicy,
}

/// Names of the policies.
pub const POLICY_NAMES: [&str; 2] = RetryPolicy::NAMES;

/// What an attempt produced, as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct AttemptResult {
    /// Response status, if any.
    pub status: Option<u16>,
    /// Whether it counted as success.
    pub success: bool,
    /// `Retry-After`, if the receiver sent one.
    pub retry_after: Option<Duration>,
}

fn ticks(d: Duration) -> Ticks {
    i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX)
}

impl Policies {
    /// Decides what follows an attempt numbered `attempt_in_cycle` (0-based).
    pub fn verdict(
        &self,
        policy: RetryPolicy,
        attempt_in_cycle: i64,
        r: AttemptResult,
        now: Ticks,
    ) -> Verdict {
        if r.success {
            return Verdict::Delivered;
        }
        if r.status == Some(410) {
            return Verdict::Gone;
        }
        if policy == RetryPolicy::Exponential {
            let p = &self.exponential;
            let n = u32::try_from(attempt_in_cycle).unwrap_or(u32::MAX);
            let exp = p.base.saturating_mul(2u32.saturating_pow(n.min(30)));
            let mut delay = exp.min(p.max);
            if p.jitter > 0.0 {
                let f = 1.0 + p.jitter * (rand::random::<f64>() * 2.0 - 1.0);
                delay = delay.mul_f64(f.max(0.0));
            }
            if matches!(r.status, Some(429 | 503)) {
                if let Some(ra) = r.retry_after {
                    delay = ra.clamp(Duration::from_secs(1), p.max);
                }
            }
            let at = now.saturating_add(ticks(delay));
            if attempt_in_cycle + 1 >= i64::from(p.attempts_per_cycle) {
                Verdict::Requeue(at)
            } else {
                Verdict::RetryAt(at)
            }
        } else {
            let p = &self.superoffice;
            match usize::try_from(attempt_in_cycle)
                .ok()
                .and_then(|i| p.delays.get(i))
            {
                Some(d) => Verdict::RetryAt(now.saturating_add(ticks(*d))),
                None => Verdict::Requeue(now.saturating_add(ticks(p.requeue_delay))),
            }
        }
    }
}

/// Parses `Retry-After` (seconds form; HTTP dates are read as "not given").
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 10_000_000;

    fn fail(status: u16) -> AttemptResult {
        AttemptResult {
            status: Some(status),
            success: false,
            retry_after: None,
        }
    }

    #[test]
    fn superoffice_cycle_is_1s_4s_then_requeue() {
        let p = Policies::default();
        assert_eq!(
            p.verdict(RetryPolicy::SuperOffice, 0, fail(500), 0),
            Verdict::RetryAt(S)
        );
        assert_eq!(
            p.verdict(RetryPolicy::SuperOffice, 1, fail(500), 10),
            Verdict::RetryAt(10 + 4 * S)
        );
        assert_eq!(
            p.verdict(RetryPolicy::SuperOffice, 2, fail(500), 10),
            Verdict::Requeue(10)
        );
        assert_eq!(
            p.verdict(RetryPolicy::SuperOffice, 0, fail(410), 0),
            Verdict::Gone
        );
        let ok = AttemptResult {
            status: Some(200),
            success: true,
            retry_after: None,
        };
        assert_eq!(
            p.verdict(RetryPolicy::SuperOffice, 2, ok, 0),
            Verdict::Delivered
        );
    }

    #[test]
    fn exponential_honours_retry_after_within_bounds() {
        let mut p = Policies::default();
        p.exponential.jitter = 0.0;
        assert_eq!(
            p.verdict(RetryPolicy::Exponential, 0, fail(500), 0),
            Verdict::RetryAt(5 * S)
        );
        assert_eq!(
            p.verdict(RetryPolicy::Exponential, 2, fail(500), 0),
            Verdict::RetryAt(20 * S)
        );
        let r = AttemptResult {
            status: Some(429),
            success: false,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            p.verdict(RetryPolicy::Exponential, 0, r, 0),
            Verdict::RetryAt(7 * S)
        );
        let huge = AttemptResult {
            status: Some(503),
            success: false,
            retry_after: Some(Duration::from_secs(999_999)),
        };
        assert_eq!(
            p.verdict(RetryPolicy::Exponential, 0, huge, 0),
            Verdict::RetryAt(3600 * S)
        );
        assert!(matches!(
            p.verdict(RetryPolicy::Exponential, 7, fail(500), 0),
            Verdict::Requeue(_)
        ));
    }
}
