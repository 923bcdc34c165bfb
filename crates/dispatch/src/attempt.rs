//! One attempt: build and sign the request, send it within the node's room, and decide what
//! follows (success by the webhook's rule, the verdict of its retry policy); and the test
//! event of a definition.

use std::sync::Arc;
use std::time::Duration;

use crmhooks_payload::PayloadTemplate;
use crmhooks_store::{now_ticks, AttemptOutcome, Claimed, StoredEvent, Ticks, Webhook};
use futures::FutureExt as _;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{check_url, policy, send, Dispatcher, TargetRefused};

/// An event and the payload template its deliveries share.
pub(crate) type Shared = (Arc<StoredEvent>, Arc<PayloadTemplate>);

impl Dispatcher {
    /// Starts sending a delivery this node holds (claimed or handed, its room already taken),
    /// when the room gives it a request slot (see [`crate::room`]).
    ///
    /// `last` is the payload template of the delivery launched before: the deliveries of one
    /// event come one after the other (a commit hands them over together), and share it.
    pub(crate) fn launch(
        self: &Arc<Self>,
        c: Claimed,
        last: &mut Option<Shared>,
        done: &mpsc::UnboundedSender<AttemptOutcome>,
    ) {
        let template = match last {
            Some((event, template)) if Arc::ptr_eq(event, &c.event) => Arc::clone(template),
            _ => {
                let template = Arc::new(send::template_for(&c.event, &c.tenant));
                *last = Some((Arc::clone(&c.event), Arc::clone(&template)));
                template
            }
        };
        let new = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.delivery_id);
        if new {
            self.meter.in_flight(1);
        }
        let this = self.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _slot = this.room.send_slot(c.webhook.tenant_id, c.webhook.id).await;
            // A panic while building or sending is a bug, but it must not leave the delivery
            // in flight for ever (its slot held, its chain blocked): it is a failed attempt
            // like any other, with the panic as its reason.
            let attempted_at = now_ticks();
            let outcome = match std::panic::AssertUnwindSafe(this.attempt_with(&c, &template))
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let why = panic_message(panic.as_ref());
                    tracing::error!(delivery = c.delivery_id.get(), webhook = c.webhook.id.get(), panic = %why, "sending a delivery panicked");
                    this.outcome(
                        &c,
                        attempted_at,
                        send::Response::failed(
                            format!(
                                "internal error while sending (a bug; please report it): {why}"
                            ),
                            Duration::ZERO,
                        ),
                    )
                }
            };
            let _ = done.send(outcome);
        });
    }

    /// Sends one claimed delivery and decides what follows; records nothing.
    pub async fn attempt(&self, c: &Claimed) -> AttemptOutcome {
        self.attempt_with(c, &send::template_for(&c.event, &c.tenant))
            .await
    }

    /// [`Dispatcher::attempt`] with the payload template of the delivery's event.
    async fn attempt_with(&self, c: &Claimed, template: &PayloadTemplate) -> AttemptOutcome {
        let properties = c.webhook.properties.as_ref().filter(|p| !p.is_empty());
        let body = template.render(c.event_id.uuid(), &c.webhook.name, properties);
        let attempted_at = now_ticks();
        let resp = match send::build_body(
            &c.webhook,
            body,
            &c.event.event,
            c.event_id.uuid(),
            c.attempt_in_cycle,
            false,
            &self.user_agent,
        ) {
            Ok(out) => send::send(&self.client, out).await,
            Err(why) => send::Response::failed(why, Duration::ZERO),
        };
        self.outcome(c, attempted_at, resp)
    }

    /// What an attempt of `c` that got `resp` comes to: success by the webhook's rule, the
    /// verdict of its retry policy, and what the log keeps.
    pub(crate) fn outcome(
        &self,
        c: &Claimed,
        attempted_at: Ticks,
        resp: send::Response,
    ) -> AttemptOutcome {
        let rule = c.webhook.success_status.unwrap_or(self.cfg.success);
        let success = resp.status.is_some_and(|s| rule.is_success(s));
        let policy = c.webhook.retry_policy.unwrap_or(self.cfg.default_policy);
        let verdict = self.cfg.policies.verdict(
            policy,
            c.attempt_in_cycle,
            policy::AttemptResult {
                status: resp.status,
                success,
                retry_after: resp.retry_after,
            },
            now_ticks(),
        );
        self.meter.attempt(
            c,
            resp.status,
            resp.elapsed.as_secs_f64(),
            &verdict,
            now_ticks(),
        );
        let error = if success {
            None
        } else {
            Some(match (&resp.error, resp.status) {
                (Some(e), _) => e.clone(),
                (None, Some(s)) => format!("receiver answered {s}"),
                (None, None) => "no response".into(),
            })
        };
        AttemptOutcome {
            delivery_id: c.delivery_id,
            webhook_id: c.webhook.id,
            tenant_id: c.webhook.tenant_id,
            event_id: c.event_id,
            retry: c.attempt_in_cycle,
            attempted_at,
            duration_us: i64::try_from(resp.elapsed.as_micros()).unwrap_or(i64::MAX),
            status_code: resp.status,
            error: error.clone(),
            response_excerpt: if success {
                None
            } else {
                resp.excerpt().or(error)
            },
            verdict,
        }
    }

    /// Sends a `test` event (spec 6.2) to a definition that need not be saved. Returns whether
    /// it counted as success and the receiver's answer.
    pub async fn send_test(
        &self,
        hook: &Webhook,
        tenant: &str,
        associate_id: i64,
    ) -> (bool, String) {
        if let Err(e) = self.check_target(&hook.target_url) {
            return (false, e.to_string());
        }
        // Inside the node's limits like any delivery (an unsaved definition counts as webhook
        // 0 of its tenant), and bounded by the test timeout: it holds an API call.
        let _slot = self.room.send_slot(hook.tenant_id, hook.id).await;
        let payload = crmhooks_payload::WebhookPayload::test_event(
            Uuid::new_v4(),
            crmhooks_payload::NetDateTime::now_utc(),
            tenant,
            associate_id,
            &hook.name,
        );
        let out = match send::build(hook, &payload.as_ref(), 0, true, &self.user_agent) {
            Ok(out) => out,
            Err(why) => return (false, why),
        };
        let resp = match tokio::time::timeout(self.cfg.test_timeout, send::send(&self.client, out))
            .await
        {
            Ok(resp) => resp,
            Err(_) => {
                return (
                    false,
                    format!(
                        "the receiver did not answer the test event within {} ms",
                        self.cfg.test_timeout.as_millis()
                    ),
                )
            }
        };
        let rule = hook.success_status.unwrap_or(self.cfg.success);
        let ok = resp.status.is_some_and(|s| rule.is_success(s));
        let message = resp.excerpt().or(resp.error).unwrap_or_default();
        (ok, message)
    }

    /// Checks a definition's `TargetUrl` against the target policy, and that it does not name
    /// this server's own API (what a save can tell without connecting; every connection is
    /// checked again, see [`crate::target::Guard`]).
    pub fn check_target(&self, raw: &str) -> Result<url::Url, TargetRefused> {
        let url = check_url(self.cfg.target_policy, raw)?;
        if self.cfg.own_addresses.is_named_by(&url) {
            return Err(TargetRefused(format!(
                "TargetUrl {raw:?} is this server's own API: a webhook may not call its own server"
            )));
        }
        Ok(url)
    }
}

/// The message of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
