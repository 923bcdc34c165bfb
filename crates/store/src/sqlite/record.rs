//! Attempt records, usage counters and the state machine.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::db::sql_err;
use super::handoff::Batch;
use super::successors::NextHeads;
use super::writer::{CompleteJob, Writer};
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::block_on;
use crate::sql::plan::{disable_reason, usage_last_error};
use crate::{now_ticks, DeliveryId, Result, StoreError, WebhookId};

impl Writer {
    /// Every waiting batch of attempt records in one bookkeeping transaction.
    pub(super) fn completes(&mut self, batches: Vec<CompleteJob>) {
        let started = Instant::now();
        let recorded: usize = batches.iter().map(|b| b.0.len()).sum();
        self.successors = Batch::open(&self.handoff);
        self.next_heads = NextHeads::default();
        let result = self.in_tx(|w| {
            let mut all = Vec::with_capacity(batches.len());
            for (outcomes, now, max, _) in &batches {
                all.push(w.complete(outcomes, *now, *max)?);
            }
            Ok(all)
        });
        self.close_successors(result.is_ok());
        tracing::debug!(
            recorded,
            total_us = started.elapsed().as_micros() as u64,
            "complete"
        );
        match result {
            Ok(all) => {
                for ((_, _, _, reply), changes) in batches.into_iter().zip(all) {
                    let _ = reply.send(Ok(changes));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, _, _, reply) in batches {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
    }

    pub(super) fn complete(
        &mut self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        let mut changes = Vec::new();
        let mut closed = Vec::new();
        let first_id = self.attempt_ids(outcomes.len())?;
        // A success at the first attempt of a delivery still leased is kept in the delivery's
        // own row (migration 0005); any other attempt is a row of `attempt`. Either way the
        // AttemptId is the outcome's place in this batch after `first_id`.
        let mut rows: Vec<(i64, &AttemptOutcome)> = Vec::with_capacity(outcomes.len());
        let mut settle: Vec<&AttemptOutcome> = Vec::new();
        {
            let mut folded = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 2, completed = ?1, attempts = 1, last_status = ?2, last_error = NULL, \
                     lease_until = NULL, lease_owner = NULL, first_attempt_id = ?3, first_attempted_at = ?4, \
                     first_duration_us = ?5, first_response_excerpt = ?6 \
                     WHERE delivery_id = ?7 AND status = 1 AND attempts = 0 AND event_id = ?8",
                )
                .map_err(sql_err)?;
            for (id, o) in (first_id..).zip(outcomes) {
                let first_success = o.verdict == Verdict::Delivered && o.retry == 0;
                if first_success
                    && folded
                        .execute(params![
                            now,
                            o.status_code,
                            id,
                            o.attempted_at,
                            o.duration_us,
                            o.response_excerpt,
                            o.delivery_id,
                            o.event_id.to_string()
                        ])
                        .map_err(sql_err)?
                        > 0
                {
                    closed.push(o.delivery_id);
                    continue;
                }
                rows.push((id, o));
                if o.verdict == Verdict::Delivered {
                    settle.push(o);
                }
            }
        }
        // Some attempts stayed in their deliveries' rows: their ids count for the sequence.
        let folded_any = rows.len() < outcomes.len();
        if !rows.is_empty() {
            let mut attempt = self
                .conn
                .prepare_cached(
                    "INSERT INTO attempt (attempt_id, delivery_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .map_err(sql_err)?;
            for (id, o) in rows {
                attempt
                    .execute(params![
                        id,
                        o.delivery_id,
                        o.event_id.to_string(),
                        o.retry,
                        o.attempted_at,
                        o.duration_us,
                        o.status_code,
                        o.error,
                        o.response_excerpt
                    ])
                    .map_err(sql_err)?;
            }
        }
        if !settle.is_empty() {
            let mut delivered = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 2, completed = ?, attempts = attempts + 1, last_status = ?, \
                     last_error = NULL, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                )
                .map_err(sql_err)?;
            for o in settle {
                if delivered
                    .execute(params![now, o.status_code, o.delivery_id])
                    .map_err(sql_err)?
                    > 0
                {
                    closed.push(o.delivery_id);
                }
            }
        }
        if folded_any {
            self.attempt_ids_kept(first_id + outcomes.len() as i64 - 1)?;
        }

        // Usage and the state machine, per webhook in attempt order.
        let mut by_hook: BTreeMap<WebhookId, Vec<&AttemptOutcome>> = BTreeMap::new();
        for o in outcomes {
            by_hook.entry(o.webhook_id).or_default().push(o);
        }
        for (webhook_id, list) in by_hook {
            if list.iter().all(|o| o.verdict == Verdict::Delivered) {
                self.conn
                    .prepare_cached("UPDATE webhook_usage SET total_calls = total_calls + ?, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                    .map_err(sql_err)?
                    .execute(params![list.len() as i64, webhook_id])
                    .map_err(sql_err)?;
                continue;
            }
            for o in list {
                self.complete_one(o, now, max_consecutive_errors, &mut changes, &mut closed)?;
            }
        }
        // Next heads last: a webhook the state machine just disabled hands nothing over. Due
        // by this thread's clock: `now` was read when the attempts finished, and a delivery
        // written since then (due when it was written) looked not due yet, and was left to a
        // claim.
        let clock = now_ticks().max(now);
        // A delivery that did not close (a retry, a lease lost) keeps its chain closed: what
        // waited behind it in memory goes back to the queue.
        let ended: HashSet<DeliveryId> = closed.iter().copied().collect();
        for o in outcomes {
            if !ended.contains(&o.delivery_id) {
                self.release_waiting(o.delivery_id)?;
                self.chains.unfollow(o.delivery_id);
            }
        }
        for id in closed {
            self.chains.unfollow(id);
            match self.chains.waiting.remove(&id) {
                Some(w) => self.hand_waiting(w, clock)?,
                None => self.next_head(id, clock)?,
            }
        }
        Ok(changes)
    }

    /// The first of `n` new AttemptIds, in the transaction in progress. Every id comes from
    /// this counter, whether its attempt becomes a row of `attempt` (inserted with it) or stays
    /// in its delivery's row: the counter starts from `attempt`'s AUTOINCREMENT sequence, which
    /// [`Self::attempt_ids_kept`] keeps at or above every id a delivery row holds.
    pub(super) fn attempt_ids(&mut self, n: usize) -> Result<i64> {
        let last = match self.attempt_seq {
            Some(last) => last,
            None => self
                .conn
                .prepare_cached(
                    "SELECT max(COALESCE((SELECT max(seq) FROM sqlite_sequence WHERE name = 'attempt'), 0), \
                     COALESCE((SELECT max(attempt_id) FROM attempt), 0))",
                )
                .map_err(sql_err)?
                .query_row([], |r| r.get(0))
                .map_err(sql_err)?,
        };
        self.attempt_seq = Some(last + n as i64);
        Ok(last + 1)
    }

    /// Raises `attempt`'s AUTOINCREMENT sequence to `last`, an id that a delivery row now
    /// holds, in the same transaction: no id is handed out twice, even after a restart.
    pub(super) fn attempt_ids_kept(&mut self, last: i64) -> Result<()> {
        let raised = self
            .conn
            .prepare_cached(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'attempt' AND seq < ?1",
            )
            .map_err(sql_err)?
            .execute([last])
            .map_err(sql_err)?;
        if raised == 0 {
            self.conn
                .prepare_cached(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'attempt', ?1 \
                     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'attempt')",
                )
                .map_err(sql_err)?
                .execute([last])
                .map_err(sql_err)?;
        }
        Ok(())
    }

    /// Usage, delivery state (unless already marked delivered) and the state machine for one
    /// attempt of a webhook that had a failure in this batch.
    pub(super) fn complete_one(
        &mut self,
        o: &AttemptOutcome,
        now: Ticks,
        max_consecutive_errors: i64,
        changes: &mut Vec<StateChange>,
        closed: &mut Vec<DeliveryId>,
    ) -> Result<()> {
        let consecutive: Option<i64> = if o.verdict == Verdict::Delivered {
            self.conn
                .prepare_cached("UPDATE webhook_usage SET total_calls = total_calls + 1, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                .map_err(sql_err)?
                .execute([o.webhook_id])
                .map_err(sql_err)?;
            None
        } else {
            self.conn
                .prepare_cached(
                    "UPDATE webhook_usage SET total_calls = total_calls + 1, total_errors = total_errors + 1, \
                     consecutive_errors = MIN(consecutive_errors + 1, ?), last_error = ?, updated = ? WHERE webhook_usage_id = ? \
                     RETURNING consecutive_errors",
                )
                .map_err(sql_err)?
                .query_row(
                    params![max_consecutive_errors, usage_last_error(o), now, o.webhook_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?
        };
        let status = o.status_code;
        match &o.verdict {
            Verdict::Delivered => {}
            Verdict::RetryAt(at) => {
                self.conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 0, ready = 1, attempt_in_cycle = attempt_in_cycle + 1, next_attempt_at = ?, attempts = attempts + 1, \
                         last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![at, status, o.error, o.delivery_id])
                    .map_err(sql_err)?;
            }
            Verdict::Requeue(at) => {
                self.conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 0, ready = 1, attempt_in_cycle = 0, cycles = cycles + 1, event_id = ?, queue_pos = ?, next_attempt_at = ?, \
                         attempts = attempts + 1, last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![
                        Uuid::new_v4().to_string(),
                        now,
                        at,
                        status,
                        o.error,
                        o.delivery_id
                    ])
                    .map_err(sql_err)?;
            }
            Verdict::Gone => {
                if self
                    .conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 3, completed = ?, attempts = attempts + 1, last_status = ?, last_error = ?, \
                         lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![now, status, o.error, o.delivery_id])
                    .map_err(sql_err)?
                    > 0
                {
                    closed.push(o.delivery_id);
                }
            }
        }
        let disable =
            o.verdict == Verdict::Gone || consecutive.is_some_and(|n| n >= max_consecutive_errors);
        if disable {
            if let Some(mut hook) = self.load_webhook(o.webhook_id)? {
                if hook.state == WebhookState::Active {
                    let from = hook.state;
                    let tenant = self.tenant_name(hook.tenant_id)?;
                    let actor = Actor::system(hook.tenant_id, &tenant);
                    self.set_state(&mut hook, WebhookState::TooManyErrors, &actor, now)?;
                    changes.push(StateChange {
                        webhook: hook,
                        from,
                        reason: Some(disable_reason(o)),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets a webhook's state and fires its state event (the statements shared with
    /// PostgreSQL), forgetting the copy the hand-off in progress read of it.
    pub(super) fn set_state(
        &mut self,
        hook: &mut Webhook,
        state: WebhookState,
        actor: &Actor,
        now: Ticks,
    ) -> Result<()> {
        if let Some(b) = self.successors.as_mut() {
            b.hooks.remove(&hook.id);
        }
        let zone = self.options.zone.clone();
        block_on(crate::sql::webhooks::set_state(
            self, hook, state, actor, now, &zone,
        ))
    }
}
