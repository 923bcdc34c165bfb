//! Claims: leasing due deliveries, giving leases back, and when something is due next.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension};
use serde_json::Value as Json;

use super::chains::Chains;
use super::db::{event_id, sql_err, ReadConn};
use super::writer::Writer;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::{read_event, EARLIER_OPEN, EVENT_COLS};
use crate::{ClaimRequest, Result};
use crate::{DeliveryId, TenantId, WebhookId};

/// How often a claim looks for deliveries that waited in memory on a node that died.
const REQUEUE_EVERY: Duration = Duration::from_secs(1);

/// Integers as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_ids(ids: &[i64]) -> String {
    Json::from(ids).to_string()
}

impl Writer {
    /// Leases due deliveries: the oldest first, never one whose contact has an earlier
    /// delivery still open for the same webhook, at most `max_per_webhook` of one webhook.
    pub(super) fn claim(&mut self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        // Candidates, oldest first: expired leases (a node died mid-send; rare, one index seek
        // when there are none) of heads only (a delivery that waited in memory behind another
        // of its chain is leased too, and must not overtake it), then pending heads: rows whose
        // contact has no earlier open delivery to the same webhook (`ready`, kept by the
        // inserts and by next_head; checked again here). Both walks read only their partial
        // indexes.
        let window = req.limit.saturating_mul(4);
        // Webhooks and tenants this node holds its most of, skipped: `skip(alias)` is the
        // condition on the rows of `alias`, with `skip_args` its values.
        let skip_args: Vec<SqlValue> = req
            .skip_webhooks
            .iter()
            .map(|id| id.get())
            .chain(req.skip_tenants.iter().map(|id| id.get()))
            .map(SqlValue::Integer)
            .collect();
        let skip = |alias: &str| {
            let mut sql = String::new();
            for (col, n) in [
                ("webhook_id", req.skip_webhooks.len()),
                ("tenant_id", req.skip_tenants.len()),
            ] {
                if n > 0 {
                    sql.push_str(&format!(
                        " AND {alias}.{col} NOT IN ({})",
                        vec!["?"; n].join(", ")
                    ));
                }
            }
            sql
        };
        if !skip_args.is_empty() {
            // Every Active webhook skipped (its requests in flight are at the cap): nothing to
            // claim, and the walk below would visit every head of its backlog to learn that.
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM webhook w WHERE w.state = 1{})",
                skip("w")
            );
            let any: bool = self
                .conn
                .prepare_cached(&sql)
                .map_err(sql_err)?
                .query_row(params_from_iter(skip_args.iter()), |r| r.get(0))
                .map_err(sql_err)?;
            if !any {
                return Ok(Vec::new());
            }
        }
        // Deliveries that waited in memory on a node that died (leased, not heads, something
        // earlier of their chain still open) go back to the queue once, as pending: the walk
        // below would otherwise pass over every one of them at every claim until the ones in
        // front close. One index seek when no lease has run out, at most once a second. Should
        // one of them be waiting in this writer's memory (its lease ran out before the one in
        // front closed), it is forgotten there: the database's way takes it.
        let due = self
            .requeued_at
            .is_none_or(|at| at.elapsed() >= REQUEUE_EVERY);
        let requeued: Vec<DeliveryId> = if !due {
            Vec::new()
        } else {
            self.requeued_at = Some(Instant::now());
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL WHERE delivery_id IN \
                     (SELECT d.delivery_id FROM delivery d WHERE d.status = 1 AND d.lease_until < ?1 AND d.ready = 0 \
                     AND {EARLIER_OPEN}) RETURNING delivery_id",
                ))
                .map_err(sql_err)?;
            let rows = stmt.query_map([req.now], |r| r.get(0)).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        if !requeued.is_empty() {
            let requeued: std::collections::HashSet<DeliveryId> = requeued.into_iter().collect();
            self.chains
                .waiting
                .retain(|_, w| !requeued.contains(&w.delivery_id));
            for id in &requeued {
                self.chains.unfollow(*id);
            }
        }
        let mut candidates: Vec<(DeliveryId, WebhookId, i64)> = Vec::new();
        self.candidates(
            &format!(
                "SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
                 WHERE d.status = 1 AND d.lease_until < ? AND w.state = 1{} AND NOT {EARLIER_OPEN} \
                 ORDER BY d.lease_until LIMIT ?",
                skip("d")
            ),
            std::iter::once(SqlValue::Integer(req.now))
                .chain(skip_args.iter().cloned())
                .chain(std::iter::once(SqlValue::Integer(window))),
            &mut candidates,
        )?;
        // Deliveries of a batch whose fsync is still running wait for it.
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let unsynced = (synced < self.handed_upto).then_some(SqlValue::Integer(synced));
        self.candidates(
            &format!(
                "SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d INDEXED BY delivery_ready \
                 JOIN webhook w ON w.webhook_id = d.webhook_id \
                 WHERE d.status = 0 AND d.ready = 1 AND d.next_attempt_at <= ? AND w.state = 1{}{} \
                 AND NOT {EARLIER_OPEN} ORDER BY d.queue_pos, d.delivery_id LIMIT ?",
                if unsynced.is_some() { " AND d.delivery_id <= ?" } else { "" },
                skip("d")
            ),
            std::iter::once(SqlValue::Integer(req.now))
                .chain(unsynced)
                .chain(skip_args.iter().cloned())
                .chain(std::iter::once(SqlValue::Integer(window))),
            &mut candidates,
        )?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Oldest first, at most max_per_webhook of one webhook, at most limit in all.
        candidates.sort_by_key(|&(id, _, pos)| (pos, id));
        let mut per_hook: HashMap<WebhookId, i64> = HashMap::new();
        let mut chosen: Vec<DeliveryId> = Vec::new();
        for (id, hook, _) in candidates {
            if chosen.len() as i64 >= req.limit {
                break;
            }
            let n = per_hook.entry(hook).or_insert(0);
            if *n < req.max_per_webhook {
                *n += 1;
                chosen.push(id);
            }
        }
        // One plain statement per row: an UPDATE with RETURNING over a json_each list of ids
        // buffered its rows in a temporary table, and cost more than the rest of the claim.
        struct Leased {
            delivery_id: DeliveryId,
            event_id: String,
            attempt_in_cycle: i64,
            seq: i64,
            webhook_id: WebhookId,
            tenant_id: TenantId,
        }
        let mut leased: Vec<Leased> = Vec::with_capacity(chosen.len());
        {
            let mut lease = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 1, lease_until = ?1, lease_owner = ?2 \
                     WHERE delivery_id = ?3 AND status IN (0, 1)",
                )
                .map_err(sql_err)?;
            let mut read = self
                .conn
                .prepare_cached(
                    "SELECT event_id, attempt_in_cycle, event_seq, webhook_id, tenant_id FROM delivery WHERE delivery_id = ?",
                )
                .map_err(sql_err)?;
            for id in chosen {
                if lease
                    .execute(params![req.lease_until, req.owner, id])
                    .map_err(sql_err)?
                    == 0
                {
                    continue;
                }
                leased.push(
                    read.query_row([id], |r| {
                        Ok(Leased {
                            delivery_id: id,
                            event_id: r.get(0)?,
                            attempt_in_cycle: r.get(1)?,
                            seq: r.get(2)?,
                            webhook_id: r.get(3)?,
                            tenant_id: r.get(4)?,
                        })
                    })
                    .map_err(sql_err)?,
                );
            }
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        // Events from the recent ones the writer keeps, the others read back.
        let mut events: HashMap<i64, Arc<StoredEvent>> = HashMap::new();
        let mut missing: Vec<i64> = Vec::new();
        for l in &leased {
            if events.contains_key(&l.seq) {
                continue;
            }
            match self.recent.get(l.seq) {
                Some(ev) => {
                    events.insert(l.seq, ev);
                }
                None => missing.push(l.seq),
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS} FROM event WHERE event_seq IN (SELECT value FROM json_each(?))"
                ))
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([json_ids(&missing)], |r| Ok(read_event(r)))
                .map_err(sql_err)?;
            for ev in rows {
                let ev = ev.map_err(sql_err)??;
                events.insert(ev.seq, Arc::new(ev));
            }
        }
        let mut hooks: HashMap<WebhookId, Option<Arc<Webhook>>> = HashMap::new();
        let mut out = Vec::with_capacity(leased.len());
        for l in leased {
            if let std::collections::hash_map::Entry::Vacant(slot) = hooks.entry(l.webhook_id) {
                slot.insert(self.load_webhook(l.webhook_id)?.map(Arc::new));
            }
            let (Some(Some(hook)), Some(event)) = (hooks.get(&l.webhook_id), events.get(&l.seq))
            else {
                continue;
            };
            out.push(Claimed {
                delivery_id: l.delivery_id,
                event_id: event_id(l.delivery_id, &l.event_id)?,
                attempt_in_cycle: l.attempt_in_cycle,
                event: Arc::clone(event),
                tenant: self.tenant_name(l.tenant_id)?,
                webhook: Arc::clone(hook),
            });
        }
        Ok(out)
    }

    /// Appends the `(delivery_id, webhook_id, queue_pos)` rows of a candidate query to `out`.
    pub(super) fn candidates(
        &mut self,
        sql: &str,
        args: impl Iterator<Item = SqlValue>,
        out: &mut Vec<(DeliveryId, WebhookId, i64)>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sql_err)?;
        for row in rows {
            out.push(row.map_err(sql_err)?);
        }
        Ok(())
    }

    /// Gives `owner`'s leases back: pending again, and heads of their chains when nothing
    /// earlier of the chain is open (a delivery handed over from memory still says `ready` =
    /// 0). The chains followed in memory are forgotten with them.
    pub(super) fn release(&mut self, owner: &str) -> Result<u64> {
        self.chains = Chains::default();
        let n = self
            .conn
            .prepare_cached(&format!(
                "UPDATE delivery AS d SET status = 0, lease_until = NULL, lease_owner = NULL, \
                 ready = CASE WHEN ready = 1 OR NOT {EARLIER_OPEN} THEN 1 ELSE 0 END \
                 WHERE status = 1 AND lease_owner = ?",
            ))
            .map_err(sql_err)?
            .execute([owner])
            .map_err(sql_err)?;
        Ok(n as u64)
    }
}

/// The earliest time something may become due: the first pending head of an Active webhook,
/// or the first lease to run out. Both walk a partial index in time order and stop at the
/// first row, so they stay cheap with a large backlog (only heads of chains can be due,
/// migration 0006).
pub(super) fn next_due(c: &mut ReadConn) -> Result<Option<Ticks>> {
    let due: Option<Ticks> = c
        .0
        .prepare_cached(
            "SELECT d.next_attempt_at FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
             WHERE d.status = 0 AND d.ready = 1 AND w.state = 1 ORDER BY d.next_attempt_at LIMIT 1",
        )
        .map_err(sql_err)?
        .query_row([], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    let lease: Option<Ticks> = c
        .0
        .prepare_cached(
            "SELECT d.lease_until FROM delivery d WHERE d.status = 1 ORDER BY d.lease_until LIMIT 1",
        )
        .map_err(sql_err)?
        .query_row([], |r| r.get::<_, Option<Ticks>>(0))
        .optional()
        .map_err(sql_err)?
        .flatten();
    Ok(match (due, lease) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
