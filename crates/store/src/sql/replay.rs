//! Replay: events from the log queued again for one webhook.

use super::{webhooks, Fanout, Query};
use crate::model::*;
use crate::{now_ticks, Result, StoreError};

/// The ordering key of an event re-queued by a replay (the chain its original delivery was
/// on).
pub(crate) fn order_key(entity: &str, pk: i64) -> String {
    format!("{entity}:{pk}")
}

/// Queues the logged events of `req` again for one webhook of a tenant, in the transaction
/// `db`: each event the webhook is subscribed to, unless a delivery of it is still open (or,
/// with `only_failed`, was delivered).
pub(crate) async fn replay(
    db: &mut impl Fanout,
    tenant_id: i64,
    webhook_id: i64,
    req: &ReplayRequest,
) -> Result<ReplayReport> {
    let now = now_ticks();
    let lock = db.lock_key_share();
    match webhooks::load(db, webhook_id, lock).await? {
        Some(h) if h.tenant_id == tenant_id => {}
        _ => return Err(StoreError::NotFound),
    }
    let mut q = Query::new(
        "SELECT e.event_seq, e.entity, e.primary_key, \
         (SELECT CAST(MAX(CASE WHEN d.status = 2 THEN 2 WHEN d.status IN (0, 1) THEN 1 ELSE 0 END) AS BIGINT) \
         FROM delivery d WHERE d.event_seq = e.event_seq AND d.webhook_id = ",
    );
    q.bind(webhook_id)
        .push(") AS best FROM event e JOIN webhook_event we ON we.event = e.event AND we.webhook_id = ")
        .bind(webhook_id)
        .push(" WHERE e.tenant_id = ")
        .bind(tenant_id)
        .push(" AND e.occurred >= ")
        .bind(req.since);
    if let Some(u) = req.until {
        q.push(" AND e.occurred < ").bind(u);
    }
    q.push(" ORDER BY e.event_seq LIMIT ").bind(req.limit);
    let rows = db
        .rows(&q.sql, q.args, |r| {
            Ok((r.int(0)?, r.text(1)?, r.int(2)?, r.opt_int(3)?))
        })
        .await?;
    let mut report = ReplayReport::default();
    for (seq, entity, pk, best) in rows {
        report.matched += 1;
        // Pending already: nothing to add. Delivered: only when all events are wanted.
        if best == Some(1) || (req.only_failed && best == Some(2)) {
            report.skipped += 1;
            continue;
        }
        db.queue_again(tenant_id, webhook_id, seq, &order_key(&entity, pk), now)
            .await?;
        report.queued += 1;
    }
    Ok(report)
}
