//! An event and its deliveries, in one statement: the fan-out of a change.

use std::sync::Arc;

use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::{QueryBuilder, Row as _};
use uuid::Uuid;

use super::db::db;
use super::handoff::Hand;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::{
    json_text, map_text, qualified, read_webhook, subscribers, WEBHOOK_COLS,
};
use crate::sql::{At, DbRow as _};
use crate::{Result, StoreError};

/// A delivery a change wrote leased, before its event is attached.
pub(super) struct LeasedDelivery {
    pub(super) delivery_id: i64,
    pub(super) event_id: Uuid,
    pub(super) webhook: Arc<Webhook>,
}

/// Appends an event and one delivery per Active webhook of the tenant subscribed to it, in one
/// statement (one round trip per change).
pub(super) async fn insert_event(
    conn: &mut PgConnection,
    actor: &Actor,
    ev: NewEvent,
    now: Ticks,
) -> Result<Committed> {
    let mut qb = QueryBuilder::<Postgres>::new("WITH ");
    push_event_tail(&mut qb, actor, &ev, now, None, None);
    let rows = qb.build().fetch_all(conn).await.map_err(db)?;
    let (committed, _) = read_event_tail(&rows)?;
    Ok(committed)
}

/// The answer of a statement that ends with [`push_event_tail`]: what it committed (no event
/// when its `source` produced no row), and the deliveries it wrote leased.
pub(super) fn read_event_tail(rows: &[PgRow]) -> Result<(Committed, Vec<LeasedDelivery>)> {
    let Some(first) = rows.first() else {
        return Err(StoreError::Corrupt(
            "an event insert answered no row".into(),
        ));
    };
    let seq: Option<i64> = first.try_get(0).map_err(db)?;
    let deliveries = first.int(1)?;
    let mut leased = Vec::new();
    for r in rows {
        let Some(delivery_id) = r.opt_int(2)? else {
            continue;
        };
        let event_id = r.text(3)?;
        leased.push(LeasedDelivery {
            delivery_id,
            event_id: Uuid::parse_str(&event_id).map_err(|e| {
                StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}"))
            })?,
            webhook: Arc::new(read_webhook(&At(r, 4))?),
        });
    }
    Ok((
        Committed {
            event_seq: seq,
            deliveries: u64::try_from(deliveries).unwrap_or(0),
            handed: 0,
        },
        leased,
    ))
}

/// Appends to a `WITH` the event (`ev`), the Active webhooks of the tenant subscribed to it
/// (`hooks`) and a delivery for each (`ins`), then selects the event's sequence number and the
/// number of deliveries (NULL and 0 when `source`, an earlier CTE, produced no row: then
/// nothing is written), with each delivery written leased (see [`Hand`]) and its webhook on a
/// row of its own (one row with NULLs there when none is).
pub(super) fn push_event_tail(
    qb: &mut QueryBuilder<'_, Postgres>,
    actor: &Actor,
    ev: &NewEvent,
    now: Ticks,
    source: Option<&str>,
    hand: Option<&Hand>,
) {
    qb.push(
        "ev AS (INSERT INTO event (tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred) SELECT ",
    );
    {
        let mut sep = qb.separated(", ");
        sep.push_bind(actor.tenant_id)
            .push_bind(ev.event.clone())
            .push_bind(ev.entity.clone())
            .push_bind(ev.primary_key)
            .push_bind(json_text(&ev.changes))
            .push_bind(map_text(&ev.values))
            .push_bind(ev.field_values.clone())
            .push_bind(actor.associate_id)
            .push_bind(now);
    }
    if let Some(source) = source {
        qb.push(" FROM ").push(source);
    }
    // KEY SHARE: a webhook deleted concurrently waits for this commit, then cancels these
    // deliveries too; state changes (NO KEY UPDATE) do not wait.
    qb.push(" RETURNING event_seq), hooks AS (SELECT w.webhook_id FROM ")
    .push(subscribers("JOIN"))
    .push_bind(actor.tenant_id)
    .push(" AND we.event = ")
    .push_bind(ev.event.clone())
    .push(
        " ORDER BY w.webhook_id FOR KEY SHARE OF w), \
         ins AS (INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, status, lease_until, lease_owner) SELECT ",
    )
    .push_bind(actor.tenant_id)
    .push(", h.webhook_id, ev.event_seq, ")
    .push_bind(ev.order_key.clone())
    .push(", gen_random_uuid()::text, ")
    .push_bind(now)
    .push(", ")
    .push_bind(now)
    .push(", ")
    .push_bind(now);
    match hand {
        // A head of its chain: nothing of the contact open for that webhook. The row lock
        // of the change orders it after every earlier change of the contact, committed
        // before this statement began (an optimistic write that waited for another finds
        // its version gone and writes nothing).
        Some(hand) => {
            qb.push(", CASE WHEN x.head THEN 1 ELSE 0 END, CASE WHEN x.head THEN ")
                .push_bind(hand.lease_until)
                .push(" END, CASE WHEN x.head THEN ")
                .push_bind(hand.intake.owner().to_owned())
                .push(
                    " END FROM hooks h CROSS JOIN ev CROSS JOIN LATERAL (SELECT NOT EXISTS (SELECT 1 FROM delivery p \
                     WHERE p.webhook_id = h.webhook_id AND p.order_key = ",
                )
                .push_bind(ev.order_key.clone())
                .push(" AND p.status IN (0, 1)) AS head) x");
        }
        None => {
            qb.push(", 0, NULL, NULL FROM hooks h, ev");
        }
    }
    qb.push(format!(
        " RETURNING delivery_id, webhook_id, event_id, status) \
         SELECT (SELECT event_seq FROM ev), (SELECT COUNT(*) FROM ins), i.delivery_id, i.event_id, {} \
         FROM (SELECT 1) one LEFT JOIN ins i ON i.status = 1 LEFT JOIN webhook w ON w.webhook_id = i.webhook_id \
         ORDER BY i.webhook_id",
        qualified(WEBHOOK_COLS, "w")
    ));
}
