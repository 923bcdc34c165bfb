//! Replay: events from the log queued again for one webhook, as a job that runs in bounded
//! batches (see [`ReplayJob`]).

use super::columns::{read_delivery, DELIVERY_COLS};
use super::{args, webhooks, Db, DbRow, Fanout, Query};
use crate::entity::Ticks;
use crate::model::*;
use crate::{now_ticks, Result, StoreError};
use crate::{DeliveryId, TenantId, WebhookId};

/// The ordering key of an event re-queued by a replay (the chain its original delivery was
/// on).
pub(crate) fn order_key(entity: &str, pk: i64) -> String {
    format!("{entity}:{pk}")
}

const JOB_COLS: &str = "replay_id, tenant_id, webhook_id, since, until, only_failed, max_events, cursor, matched, queued, skipped, status, error, created, updated, finished";

fn read_job(r: &(impl DbRow + ?Sized)) -> Result<ReplayJob> {
    let count = |i: usize| r.int(i).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(ReplayJob {
        id: r.int(0)?,
        tenant_id: TenantId::new(r.int(1)?),
        webhook_id: WebhookId::new(r.int(2)?),
        request: ReplayRequest {
            since: r.int(3)?,
            until: r.opt_int(4)?,
            only_failed: r.int(5)? != 0,
            limit: r.int(6)?,
        },
        cursor: r.int(7)?,
        report: ReplayReport {
            matched: count(8)?,
            queued: count(9)?,
            skipped: count(10)?,
        },
        status: ReplayStatus::from_i64(r.int(11)?),
        error: r.opt_text(12)?,
        created: r.int(13)?,
        updated: r.int(14)?,
        finished: r.opt_int(15)?,
    })
}

/// Starts a replay of `req` for a webhook of a tenant: the job, with nothing done yet.
pub(crate) async fn start(
    db: &mut impl Db,
    tenant_id: TenantId,
    webhook_id: WebhookId,
    req: &ReplayRequest,
) -> Result<ReplayJob> {
    if webhooks::tenant_of(db, webhook_id, "").await? != Some(tenant_id) {
        return Err(StoreError::NotFound);
    }
    let now = now_ticks();
    let id = db
        .row(
            "INSERT INTO replay (tenant_id, webhook_id, since, until, only_failed, max_events, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING replay_id",
            args![
                tenant_id,
                webhook_id,
                req.since,
                req.until,
                i64::from(req.only_failed),
                req.limit,
                now
            ],
            |r| r.int(0),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("a replay insert answered no id".into()))?;
    Ok(ReplayJob {
        id,
        tenant_id,
        webhook_id,
        request: req.clone(),
        cursor: 0,
        report: ReplayReport::default(),
        status: ReplayStatus::Running,
        error: None,
        created: now,
        updated: now,
        finished: None,
    })
}

/// A replay job of a webhook of a tenant.
pub(crate) async fn get(
    db: &mut impl Db,
    tenant_id: TenantId,
    webhook_id: WebhookId,
    replay_id: i64,
) -> Result<Option<ReplayJob>> {
    db.row(
        &format!("SELECT {JOB_COLS} FROM replay WHERE replay_id = $1 AND tenant_id = $2 AND webhook_id = $3"),
        args![replay_id, tenant_id, webhook_id],
        |r| read_job(r),
    )
    .await
}

/// Running jobs no batch ran for since `updated_before` (their node died): what another node
/// picks up.
pub(crate) async fn stale(db: &mut impl Db, updated_before: Ticks) -> Result<Vec<i64>> {
    db.rows(
        "SELECT replay_id FROM replay WHERE status = 0 AND updated < $1 ORDER BY replay_id LIMIT 100",
        args![updated_before],
        |r| r.int(0),
    )
    .await
}

/// Runs one batch of job `replay_id` in the transaction `db`: the next `batch` events of its
/// window (after its cursor) that the webhook is subscribed to, each queued again unless a
/// delivery of it is still open (or, with `only_failed`, was delivered). The job after it; a
/// job that is not running is left as it is.
pub(crate) async fn step(db: &mut impl Fanout, replay_id: i64, batch: i64) -> Result<ReplayJob> {
    let lock = db.lock_for_update();
    let mut job = db
        .row(
            &format!("SELECT {JOB_COLS} FROM replay WHERE replay_id = $1{lock}"),
            args![replay_id],
            |r| read_job(r),
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    if job.status != ReplayStatus::Running {
        return Ok(job);
    }
    let now = now_ticks();
    let key_share = db.lock_key_share();
    let alive = webhooks::tenant_of(db, job.webhook_id, key_share).await? == Some(job.tenant_id);
    if !alive {
        job.status = ReplayStatus::Failed;
        job.error = Some("the webhook was deleted".into());
        return save(db, job, now).await;
    }
    let matched = i64::try_from(job.report.matched).unwrap_or(i64::MAX);
    let take = batch.min(job.request.limit.saturating_sub(matched)).max(0);
    let mut q = Query::new(
        "SELECT e.event_seq, e.entity, e.primary_key, \
         (SELECT CAST(MAX(CASE WHEN d.status = 2 THEN 2 WHEN d.status IN (0, 1) THEN 1 ELSE 0 END) AS BIGINT) \
         FROM delivery d WHERE d.event_seq = e.event_seq AND d.webhook_id = ",
    );
    q.bind(job.webhook_id)
        .push(") AS best FROM event e JOIN webhook_event we ON we.event = e.event AND we.webhook_id = ")
        .bind(job.webhook_id)
        .push(" WHERE e.tenant_id = ")
        .bind(job.tenant_id)
        .push(" AND e.occurred >= ")
        .bind(job.request.since)
        .push(" AND e.event_seq > ")
        .bind(job.cursor);
    if let Some(u) = job.request.until {
        q.push(" AND e.occurred < ").bind(u);
    }
    q.push(" ORDER BY e.event_seq LIMIT ").bind(take);
    let rows = if take > 0 {
        db.rows(&q.sql, q.args, |r| {
            Ok((r.int(0)?, r.text(1)?, r.int(2)?, r.opt_int(3)?))
        })
        .await?
    } else {
        Vec::new()
    };
    let fetched = rows.len() as i64;
    let mut again = Vec::with_capacity(rows.len());
    for (seq, entity, pk, best) in rows {
        job.cursor = seq;
        job.report.matched += 1;
        // Pending already: nothing to add. Delivered: only when all events are wanted.
        if best == Some(1) || (job.request.only_failed && best == Some(2)) {
            job.report.skipped += 1;
            continue;
        }
        again.push((seq, order_key(&entity, pk)));
    }
    job.report.queued += again.len() as u64;
    if !again.is_empty() {
        db.queue_again_all(job.tenant_id, job.webhook_id, again, now)
            .await?;
    }
    if fetched < take || take == 0 {
        job.status = ReplayStatus::Done;
    }
    save(db, job, now).await
}

/// Writes a job's progress after a batch.
async fn save(db: &mut impl Db, mut job: ReplayJob, now: Ticks) -> Result<ReplayJob> {
    job.updated = now;
    if job.status != ReplayStatus::Running {
        job.finished = Some(now);
    }
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    db.exec(
        "UPDATE replay SET cursor = $1, matched = $2, queued = $3, skipped = $4, status = $5, error = $6, \
         updated = $7, finished = $8 WHERE replay_id = $9",
        args![
            job.cursor,
            count(job.report.matched),
            count(job.report.queued),
            count(job.report.skipped),
            job.status as i64,
            &job.error,
            job.updated,
            job.finished,
            job.id
        ],
    )
    .await?;
    Ok(job)
}

/// Sends delivery `delivery_id` of a webhook of a tenant again: its event queued anew for that
/// webhook, with a new EventId and a new attempt cycle, behind what is open of its contact's
/// chain (so per-contact order holds). The new delivery. `NotFound` when the tenant has no
/// such delivery of that webhook; `Conflict` while a delivery of that event to that webhook is
/// still open (it will be sent anyway).
pub(crate) async fn resend(
    db: &mut impl Fanout,
    tenant_id: TenantId,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
) -> Result<Delivery> {
    let key_share = db.lock_key_share();
    let alive = webhooks::tenant_of(db, webhook_id, key_share).await? == Some(tenant_id);
    if !alive {
        return Err(StoreError::NotFound);
    }
    // The row lock makes two resends of one delivery take turns, so the second sees the first's.
    let lock = db.lock_for_update();
    let (seq, order_key) = db
        .row(
            &format!(
                "SELECT event_seq, order_key FROM delivery WHERE delivery_id = $1 AND tenant_id = $2 \
                 AND webhook_id = $3{lock}"
            ),
            args![delivery_id, tenant_id, webhook_id],
            |r| Ok((r.int(0)?, r.text(1)?)),
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    let open = db
        .row(
            "SELECT delivery_id FROM delivery WHERE event_seq = $1 AND webhook_id = $2 AND status IN (0, 1) \
             ORDER BY delivery_id LIMIT 1",
            args![seq, webhook_id],
            |r| r.int(0),
        )
        .await?;
    if let Some(open) = open {
        return Err(StoreError::Conflict(format!(
            "delivery {open} of this event is still open (pending or in flight): it will be sent; \
             resend once it has ended"
        )));
    }
    db.queue_again(tenant_id, webhook_id, seq, &order_key, now_ticks())
        .await?;
    db.row(
        &format!(
            "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq \
             WHERE d.webhook_id = $1 AND d.event_seq = $2 ORDER BY d.delivery_id DESC LIMIT 1"
        ),
        args![webhook_id, seq],
        |r| read_delivery(r),
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("a resent delivery was not written".into()))
}
