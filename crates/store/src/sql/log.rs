//! The delivery log: deliveries of a webhook with their attempts.

use super::columns::{read_attempt, read_delivery, ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_STATUS};
use super::{args, Db, Query};
use crate::contact::CONTACT;
use crate::model::*;
use crate::Result;
use crate::{DeliveryId, TenantId, WebhookId};

/// The delivery log of a webhook of a tenant, newest first, with its filters and paging.
pub(crate) async fn list(
    db: &mut impl Db,
    tenant_id: TenantId,
    webhook_id: WebhookId,
    filter: &DeliveryFilter,
) -> Result<Vec<Delivery>> {
    let mut q = Query::new(format!(
        "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq WHERE d.tenant_id = "
    ));
    q.bind(tenant_id)
        .push(" AND d.webhook_id = ")
        .bind(webhook_id);
    if let Some(s) = filter.status {
        q.push(&format!(" AND {DELIVERY_STATUS} = ")).bind(s as i64);
    }
    if let Some(t) = filter.since {
        q.push(" AND d.created >= ").bind(t);
    }
    if let Some(t) = filter.until {
        q.push(" AND d.created < ").bind(t);
    }
    if let Some(id) = filter.before_id {
        q.push(" AND d.delivery_id < ").bind(id);
    }
    // Both searches walk the webhook's log newest first (the index on (webhook_id,
    // delivery_id)) and filter: an index of their own would be written at every delivery at
    // a random place (a contact's key, a random EventId), which cost the write path a quarter
    // of its throughput (docs/performance.md).
    if let Some(pk) = filter.primary_key {
        q.push(" AND d.order_key = ")
            .bind(super::replay::order_key(CONTACT.entity, pk.get()));
    }
    if let Some(id) = &filter.event_id {
        // The EventId of its current cycle, or of an earlier one (kept in its attempts).
        q.push(" AND (d.event_id = ")
            .bind(*id)
            .push(" OR EXISTS (SELECT 1 FROM attempt a WHERE a.delivery_id = d.delivery_id AND a.event_id = ")
            .bind(*id)
            .push("))");
    }
    q.push(" ORDER BY d.delivery_id DESC LIMIT ")
        .bind(filter.limit);
    db.rows(&q.sql, q.args, |r| read_delivery(r)).await
}

/// One delivery of a webhook of a tenant, with its attempts in order.
pub(crate) async fn get(
    db: &mut impl Db,
    tenant_id: TenantId,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
) -> Result<Option<(Delivery, Vec<Attempt>)>> {
    let found = db
        .row(
            &format!(
                "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq \
                 WHERE d.tenant_id = $1 AND d.webhook_id = $2 AND d.delivery_id = $3"
            ),
            args![tenant_id, webhook_id, delivery_id],
            |r| read_delivery(r),
        )
        .await?;
    let Some(delivery) = found else {
        return Ok(None);
    };
    // A first attempt that succeeded may be kept in the delivery's own row (its `first_*`
    // columns) instead of a row of `attempt`; it reads like any other.
    let attempts = db
        .rows(
            &format!(
                "SELECT first_attempt_id, event_id, CAST(0 AS BIGINT), first_attempted_at, first_duration_us, last_status, \
                 CAST(NULL AS TEXT), first_response_excerpt FROM delivery WHERE delivery_id = $1 AND first_attempt_id IS NOT NULL \
                 UNION ALL SELECT {ATTEMPT_COLS} FROM attempt WHERE delivery_id = $1 ORDER BY 1"
            ),
            args![delivery_id],
            |r| read_attempt(r),
        )
        .await?;
    Ok(Some((delivery, attempts)))
}

/// Counts of deliveries by status (all tenants), as the log shows their status.
pub(crate) async fn counts(db: &mut impl Db) -> Result<Vec<(DeliveryStatus, i64)>> {
    db.rows(
        &format!("SELECT {DELIVERY_STATUS} AS s, COUNT(*) FROM delivery d GROUP BY s ORDER BY s"),
        Vec::new(),
        |r| Ok((DeliveryStatus::from_i64(r.int(0)?), r.int(1)?)),
    )
    .await
}
