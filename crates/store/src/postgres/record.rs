//! Attempt records, usage counters and the state machine.

use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::claim::{claimed_cols, read_claimed};
use super::db::{db, PgDb};
use super::group::PLANNER_BY_KEY;
use super::handoff::Hand;
use super::PgStore;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::plan::{disable_reason, usage_last_error};
use crate::sql::{keys, webhooks, Db as _};
use crate::{DeliveryId, Result, WebhookId};

/// How far past the record's `now` a next delivery still counts as due (1 s in ticks): they are
/// written due at once (a retry stays its chain's head, so no next delivery waits for a later
/// time), only by another clock.
const NEXT_HEAD_GRACE: Ticks = 10_000_000;

impl PgStore {
    pub(super) async fn record(
        &self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        // Recording does not take the claim lock, so claims and recordings run side by side.
        // Order still holds: until an outcome is committed its delivery is in flight, which
        // blocks the next event of the same contact. (A claim running while a 410 Gone is being
        // recorded can still hand out other contacts' deliveries for that webhook; they are
        // sent once, as they would be had they been claimed a moment earlier.)
        //
        // The webhooks, in id order, before their usage, deliveries and state: two nodes
        // completing for the same webhooks queue up instead of deadlocking, and only one of
        // them can see it Active and disable it. (All in the BEGIN round trip: integers only.)
        // The deliveries in id order, so that each statement below locks its rows in about
        // that order. What keeps records from deadlocking with the other statements that lock
        // deliveries is not this order but theirs: renewals, claims and the looks for heads
        // skip rows others hold (SKIP LOCKED), and the statements that wait (records, a
        // webhook's deletion) take the webhook's row first, in id order.
        let mut outcomes: Vec<&AttemptOutcome> = outcomes.iter().collect();
        outcomes.sort_unstable_by_key(|o| o.delivery_id);
        let mut hook_ids: Vec<WebhookId> = outcomes.iter().map(|o| o.webhook_id).collect();
        hook_ids.sort_unstable();
        hook_ids.dedup();
        let ids = hook_ids
            .iter()
            .map(WebhookId::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self
            .pool
            .begin_with(format!(
                "BEGIN; {PLANNER_BY_KEY} DO $$BEGIN PERFORM set_config('synchronous_commit', 'off', true); \
                 PERFORM 1 FROM webhook WHERE webhook_id IN ({ids}) ORDER BY webhook_id FOR NO KEY UPDATE; END$$"
            ))
            .await
            .map_err(db)?;
        let mut changes = Vec::new();
        let mut requeued = false;
        // Deliveries this batch closes: the next delivery of each of their chains may go.
        let mut closed: Vec<DeliveryId> = Vec::new();
        // Webhooks whose attempts in this batch all succeeded (the common case) are recorded in
        // bulk: three statements for the whole batch, whatever its size.
        let mut all_ok: std::collections::HashMap<WebhookId, bool> =
            std::collections::HashMap::new();
        for o in &outcomes {
            let ok = all_ok.entry(o.webhook_id).or_insert(true);
            *ok &= o.verdict == Verdict::Delivered;
        }
        let (bulk, single): (Vec<&AttemptOutcome>, Vec<&AttemptOutcome>) = outcomes
            .into_iter()
            .partition(|o| all_ok.get(&o.webhook_id).copied().unwrap_or(false));
        if !bulk.is_empty() {
            self.complete_successes(&mut tx, &bulk, now).await?;
            closed.extend(bulk.iter().map(|o| o.delivery_id));
        }
        for o in single {
            // One statement per attempt: the attempt row, the usage counters and the delivery.
            let ok = o.verdict == Verdict::Delivered;
            let status = o.status_code.map(i64::from);
            let mut qb = QueryBuilder::<Postgres>::new(
                "WITH a AS (INSERT INTO attempt (delivery_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt) SELECT ",
            );
            {
                let mut sep = qb.separated(", ");
                sep.push_bind(o.delivery_id)
                    .push_bind(o.event_id.to_string())
                    .push_bind(o.retry)
                    .push_bind(o.attempted_at)
                    .push_bind(o.duration_us)
                    .push_bind(status)
                    .push_bind(o.error.clone())
                    .push_bind(o.response_excerpt.clone());
            }
            // A delivery pruned meanwhile has nothing to record against.
            qb.push(" WHERE EXISTS (SELECT 1 FROM delivery WHERE delivery_id = ")
                .push_bind(o.delivery_id)
                .push(")), u AS (");
            if ok {
                qb.push("UPDATE webhook_usage SET total_calls = total_calls + 1, consecutive_errors = 0 WHERE webhook_usage_id = ")
                    .push_bind(o.webhook_id)
                    .push(" RETURNING NULL::BIGINT AS consecutive_errors");
            } else {
                // Attempts in flight together may all fail: the count stops at the threshold.
                qb.push("UPDATE webhook_usage SET total_calls = total_calls + 1, total_errors = total_errors + 1, consecutive_errors = LEAST(consecutive_errors + 1, ")
                    .push_bind(max_consecutive_errors)
                    .push("), last_error = ")
                    .push_bind(usage_last_error(o))
                    .push(", updated = ")
                    .push_bind(now)
                    .push(" WHERE webhook_usage_id = ")
                    .push_bind(o.webhook_id)
                    .push(" RETURNING consecutive_errors");
            }
            qb.push("), d AS (UPDATE delivery SET ");
            match &o.verdict {
                Verdict::Delivered => {
                    qb.push("status = 2, completed = ")
                        .push_bind(now)
                        .push(", last_error = NULL");
                }
                Verdict::RetryAt(at) => {
                    qb.push(
                        "status = 0, attempt_in_cycle = attempt_in_cycle + 1, next_attempt_at = ",
                    )
                    .push_bind(*at)
                    .push(", last_error = ")
                    .push_bind(o.error.clone());
                }
                Verdict::Requeue(at) => {
                    requeued = true;
                    qb.push("status = 0, attempt_in_cycle = 0, cycles = cycles + 1, event_id = ")
                        .push_bind(Uuid::new_v4().to_string())
                        .push(", queue_pos = ")
                        .push_bind(now)
                        .push(", next_attempt_at = ")
                        .push_bind(*at)
                        .push(", last_error = ")
                        .push_bind(o.error.clone());
                }
                Verdict::Gone => {
                    qb.push("status = 3, completed = ")
                        .push_bind(now)
                        .push(", last_error = ")
                        .push_bind(o.error.clone());
                }
            }
            qb.push(", attempts = attempts + 1, last_status = ")
                .push_bind(status)
                .push(", lease_until = NULL, lease_owner = NULL WHERE delivery_id = ")
                .push_bind(o.delivery_id)
                .push(" AND status = 1) SELECT (SELECT consecutive_errors FROM u)");
            let consecutive: Option<i64> = qb
                .build_query_scalar()
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
            if matches!(o.verdict, Verdict::Delivered | Verdict::Gone) {
                closed.push(o.delivery_id);
            }
            let disable = o.verdict == Verdict::Gone
                || consecutive.is_some_and(|n| n >= max_consecutive_errors);
            if disable {
                let mut pg = PgDb(&mut tx);
                let lock = pg.lock_for_update();
                if let Some(mut hook) =
                    webhooks::load(&mut pg, o.webhook_id, lock, &self.keys).await?
                {
                    if hook.state == WebhookState::Active {
                        let from = hook.state;
                        let tenant = keys::tenant_name(&mut pg, hook.tenant_id).await?;
                        let actor = Actor::system(hook.tenant_id, &tenant);
                        webhooks::set_state(
                            &mut pg,
                            &mut hook,
                            WebhookState::TooManyErrors,
                            &actor,
                            now,
                            &self.zone,
                        )
                        .await?;
                        changes.push(StateChange {
                            webhook: hook,
                            from,
                            reason: Some(disable_reason(o)),
                        });
                    }
                }
            }
        }
        // Next heads last: a webhook the state machine just disabled hands nothing over.
        let hand = self.handoff.hand();
        let next = if closed.is_empty() {
            Vec::new()
        } else {
            // Due by a clock a little ahead of the dispatcher's `now`: a next delivery was
            // written by a change at that change's time, which can be a few milliseconds after
            // the `now` this record was given, and one left for a claim that way waited for
            // the poll (a second) since nothing woke a claim for it.
            let due_by = now.saturating_add(NEXT_HEAD_GRACE);
            next_heads(&mut tx, &closed, hand.as_ref(), due_by).await?
        };
        tx.commit().await.map_err(db)?;
        if !next.is_empty() {
            self.handoff.hand_over_all(next).await;
        }
        // The dispatcher does not claim after a record (`wakes_after_record`): wake the nodes
        // when this one left a next delivery due for a claim. Without a hand-off nothing was
        // leased. With one, what found no room is pending again and woke the nodes already
        // (`Handoff::give`); what is not due yet waits for its time (`next_due`). That leaves
        // a change that ran beside this record: it saw the delivery this record closes still
        // open and queued its own behind it, unmarked, and committed after the next-heads
        // lookup. If it committed before the look below, the look marks its delivery; if
        // after, the change's own look after its commit does (`Committer::behind_freed`).
        // Without room (a hand-off with webhooks or tenants full, or none), next heads may have
        // been left pending for a claim, on any node with room.
        let full = hand
            .as_ref()
            .is_none_or(|h| !h.full_webhooks.is_empty() || !h.full_tenants.is_empty());
        let stranded = !closed.is_empty()
            && (heads_of_chains(&self.pool, &closed, Chains::Closed).await || full);
        if requeued || stranded || !changes.is_empty() {
            // Retries due on any node; a state event may have queued deliveries.
            self.wake_nodes();
        }
        Ok(changes)
    }

    /// Records attempts that all succeeded: the attempt rows, the deliveries and the usage
    /// counters, one statement each (arrays bound as parameters).
    pub(super) async fn complete_successes(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        bulk: &[&AttemptOutcome],
        now: Ticks,
    ) -> Result<()> {
        let ids: Vec<i64> = bulk.iter().map(|o| o.delivery_id.get()).collect();
        let event_ids: Vec<String> = bulk.iter().map(|o| o.event_id.to_string()).collect();
        let retries: Vec<i64> = bulk.iter().map(|o| o.retry).collect();
        let at: Vec<i64> = bulk.iter().map(|o| o.attempted_at).collect();
        let dur: Vec<i64> = bulk.iter().map(|o| o.duration_us).collect();
        let status: Vec<Option<i64>> = bulk.iter().map(|o| o.status_code.map(i64::from)).collect();
        // A success at the first attempt of a delivery still leased (nearly all) is kept in the
        // delivery's own row, with an AttemptId from the attempts' sequence, instead of a row
        // of `attempt`: the log reads both alike (as on SQLite). One statement closes them all
        // and names the ones it kept.
        let folded: Vec<i64> = sqlx::query_scalar(
            "UPDATE delivery d SET status = 2, completed = $1, attempts = 1, last_status = u.st, last_error = NULL, \
             lease_until = NULL, lease_owner = NULL, first_attempt_id = nextval(pg_get_serial_sequence('attempt', 'attempt_id')), \
             first_attempted_at = u.at, first_duration_us = u.dur, first_response_excerpt = NULL \
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[]) AS u(id, eid, retry, at, dur, st) \
             WHERE d.delivery_id = u.id AND d.status = 1 AND d.attempts = 0 AND u.retry = 0 AND d.event_id = u.eid \
             RETURNING d.delivery_id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&event_ids)
        .bind(&retries)
        .bind(&at)
        .bind(&dur)
        .bind(&status)
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?;
        if folded.len() < ids.len() {
            // The others (successes at a retry): an attempt row each, then their deliveries
            // closed. A delivery pruned meanwhile has nothing to record against (the join skips
            // it).
            let folded: std::collections::HashSet<i64> = folded.into_iter().collect();
            let rest: Vec<usize> = (0..ids.len())
                .filter(|&i| !folded.contains(&ids[i]))
                .collect();
            let pick = |v: &Vec<i64>| rest.iter().map(|&i| v[i]).collect::<Vec<i64>>();
            let rest_ids = pick(&ids);
            let rest_status: Vec<Option<i64>> = rest.iter().map(|&i| status[i]).collect();
            let rest_eids: Vec<String> = rest.iter().map(|&i| event_ids[i].clone()).collect();
            sqlx::query(
                "INSERT INTO attempt (delivery_id, event_id, retry, attempted_at, duration_us, status_code) \
                 SELECT u.id, u.eid, u.retry, u.at, u.dur, u.st FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[]) \
                 AS u(id, eid, retry, at, dur, st) JOIN delivery d ON d.delivery_id = u.id",
            )
            .bind(&rest_ids)
            .bind(&rest_eids)
            .bind(pick(&retries))
            .bind(pick(&at))
            .bind(pick(&dur))
            .bind(&rest_status)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            sqlx::query(
                "UPDATE delivery SET status = 2, completed = $1, attempts = attempts + 1, last_status = u.st, last_error = NULL, \
                 lease_until = NULL, lease_owner = NULL FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS u(id, st) \
                 WHERE delivery.delivery_id = u.id AND delivery.status = 1",
            )
            .bind(now)
            .bind(&rest_ids)
            .bind(&rest_status)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        }
        let mut per_hook: std::collections::BTreeMap<WebhookId, i64> =
            std::collections::BTreeMap::new();
        for o in bulk {
            *per_hook.entry(o.webhook_id).or_insert(0) += 1;
        }
        let hooks: Vec<WebhookId> = per_hook.keys().copied().collect();
        let counts: Vec<i64> = per_hook.values().copied().collect();
        sqlx::query(
            "UPDATE webhook_usage SET total_calls = total_calls + u.n, consecutive_errors = 0 \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS u(id, n) WHERE webhook_usage_id = u.id",
        )
        .bind(&hooks)
        .bind(&counts)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// Which deliveries [`heads_of_chains`] looks at.
pub(super) enum Chains {
    /// The chains of these deliveries, which a record closed.
    Closed,
    /// These deliveries, which a change queued behind an open one of their chain.
    Queued,
}

/// Marks the pending deliveries that head one of the chains of `ids` but were not marked, and
/// says whether there were any: the nodes have a claim to make. Run after a commit, to catch
/// a change and a record of the same chain that ran side by side (each decided before the
/// other's commit: whichever looks second sees both). A failure answers yes: waking the nodes
/// for nothing costs a claim; the mark a failure leaves out is set by the claims' periodic
/// `crmhooks_mark_heads`.
///
/// A row another transaction holds is skipped, not waited for: its holder is a record marking
/// or leasing it as the next head, another of these looks or the marking pass (each sets the
/// mark), a webhook's deletion (which closes it), or a resend of it that fails (which sets
/// nothing); the periodic pass marks what a holder left, within a lap of it. Two of these looks that waited for each other's
/// rows deadlocked under load (PostgreSQL breaks a deadlock only after a second, failing one).
pub(super) async fn heads_of_chains(
    pool: &sqlx::PgPool,
    ids: &[DeliveryId],
    chains: Chains,
) -> bool {
    // Integers only: the simple protocol, with the planner settings of a record in the same
    // round trip (the chains are reached by key whatever the statistics say). A mark lost in
    // a crash is set again like one never made, so it commits without waiting for the disk.
    let ids = ids
        .iter()
        .map(|id| id.get().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let settings = format!(
        "DO $$BEGIN {PLANNER_BY_KEY} PERFORM set_config('synchronous_commit', 'off', true); END$$;"
    );
    let sql = match chains {
        // The oldest open delivery of each chain.
        Chains::Closed => format!(
            "{settings} WITH c AS MATERIALIZED (SELECT DISTINCT d.webhook_id, d.order_key FROM delivery d WHERE d.delivery_id IN ({ids})), \
             n AS MATERIALIZED (SELECT x.delivery_id FROM c CROSS JOIN LATERAL (SELECT p.delivery_id, p.status, p.head FROM delivery p \
             WHERE p.webhook_id = c.webhook_id AND p.order_key = c.order_key AND p.status IN (0, 1) \
             ORDER BY p.webhook_id, p.order_key, p.delivery_id LIMIT 1) x WHERE x.status = 0 AND NOT x.head) \
             UPDATE delivery d SET head = true WHERE d.delivery_id = ANY (ARRAY(SELECT x.delivery_id FROM delivery x \
             WHERE x.delivery_id = ANY (ARRAY(SELECT delivery_id FROM n)) AND x.status = 0 AND NOT x.head \
             ORDER BY x.delivery_id FOR UPDATE OF x SKIP LOCKED)) RETURNING d.delivery_id"
        ),
        // These deliveries, when nothing earlier of their chain is open any more.
        Chains::Queued => format!(
            "{settings} UPDATE delivery d SET head = true WHERE d.delivery_id = ANY (ARRAY(SELECT x.delivery_id \
             FROM delivery x WHERE x.delivery_id IN ({ids}) AND x.status = 0 AND NOT x.head \
             AND NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = x.webhook_id \
             AND p.order_key = x.order_key AND p.status IN (0, 1) AND p.delivery_id < x.delivery_id) \
             ORDER BY x.delivery_id FOR UPDATE OF x SKIP LOCKED)) RETURNING d.delivery_id"
        ),
    };
    match sqlx::raw_sql(&sql).fetch_all(pool).await {
        Ok(marked) => !marked.is_empty(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for chain heads left unmarked; waking the nodes");
            true
        }
    }
}

/// Marks as its head the next delivery of each chain (webhook and contact) whose delivery
/// `closed` names, and with a hand-off leases it to this node when it is due and its webhook
/// Active: it may go now, and goes to this node's dispatcher after the commit instead of
/// waiting for a claim. Row locks keep a claim on another node from taking the same one (it
/// skips or re-checks a row this transaction leased). What it leased, to hand over.
async fn next_heads(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    closed: &[DeliveryId],
    hand: Option<&Hand>,
    now: Ticks,
) -> Result<Vec<Claimed>> {
    // The next deliveries are found first and once (MATERIALIZED), then updated by key (an
    // array of ids, which only the primary key can serve): with statistics that say the table
    // is small, the planner otherwise drove the lease from every pending delivery of the
    // webhook and looked for the next heads again for each one (millions of probes, seconds per
    // record). The oldest open delivery of a chain is ordered by the
    // whole key of `delivery_order` (webhook, contact, id), which no other index gives.
    let rows = sqlx::query(&format!(
        "WITH closed AS MATERIALIZED (SELECT DISTINCT d.webhook_id, d.order_key FROM delivery d WHERE d.delivery_id = ANY($1)), \
         nxt AS MATERIALIZED (SELECT n.delivery_id, $5 AND h.state = 1 AND n.next_attempt_at <= $2 \
         AND h.webhook_id <> ALL ($6::BIGINT[]) AND h.tenant_id <> ALL ($7::BIGINT[]) AS take \
         FROM closed c JOIN webhook h ON h.webhook_id = c.webhook_id \
         CROSS JOIN LATERAL (SELECT p.delivery_id, p.status, p.next_attempt_at \
         FROM delivery p WHERE p.webhook_id = c.webhook_id AND p.order_key = c.order_key AND p.status IN (0, 1) \
         ORDER BY p.webhook_id, p.order_key, p.delivery_id LIMIT 1) n WHERE n.status = 0), \
         marked AS (UPDATE delivery d SET head = true WHERE d.delivery_id = ANY (ARRAY(SELECT delivery_id FROM nxt WHERE NOT take)) \
         AND d.status = 0 AND NOT d.head), \
         upd AS (UPDATE delivery d SET status = 1, head = true, lease_until = $3, lease_owner = $4 \
         WHERE d.delivery_id = ANY (ARRAY(SELECT delivery_id FROM nxt WHERE take)) AND d.status = 0 \
         RETURNING d.delivery_id, d.event_id, d.attempt_in_cycle, d.queue_pos, d.event_seq, d.webhook_id, d.tenant_id) \
         SELECT {} FROM upd u JOIN event e ON e.event_seq = u.event_seq JOIN webhook w ON w.webhook_id = u.webhook_id \
         JOIN tenant t ON t.tenant_id = u.tenant_id",
        claimed_cols()
    ))
    .bind(closed)
    .bind(now)
    .bind(hand.map(|h| h.lease_until))
    .bind(hand.map(|h| h.intake.owner().to_owned()))
    .bind(hand.is_some())
    .bind(hand.map(|h| h.full_webhooks.clone()).unwrap_or_default())
    .bind(hand.map(|h| h.full_tenants.clone()).unwrap_or_default())
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    match hand {
        Some(hand) => Ok(read_claimed(&rows, &hand.keys)?
            .into_iter()
            .map(|(_, c)| c)
            .collect()),
        None => Ok(Vec::new()),
    }
}
