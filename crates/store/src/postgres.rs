//! The PostgreSQL store: several nodes share one database.
//!
//! Same semantics as the SQLite store, plus what sharing needs:
//! - a change locks its row (`FOR UPDATE`), so concurrent changes to one row queue up, and the
//!   delivery ids of one row's events follow commit order;
//! - claims serialize on a transaction-level advisory lock and select with `FOR UPDATE SKIP
//!   LOCKED`, so two nodes never lease the same delivery and the per-key order check sees every
//!   earlier claim; recording attempts holds that lock shared, so a claim waits for outcomes
//!   being recorded, as it would behind SQLite's single writer;
//! - recording attempts (and deleting or saving a webhook) locks the webhook rows first, in id
//!   order, so two nodes completing attempts for one webhook neither deadlock nor both fire
//!   the TooManyErrors state event;
//! - claims and attempt records commit asynchronously (a lost one means a delivery is sent
//!   again); changes, their events and deliveries commit durably;
//! - a change writes the deliveries that head their chains leased to its own node's
//!   dispatcher and hands them over after the commit (see [`Intake`]): no claim, no wake-up
//!   of the other nodes for them;
//! - after a commit that queued work for a claim, `NOTIFY crmhooks_work` wakes every node's
//!   dispatcher. It is sent outside the transaction, by one task per node that folds a burst of
//!   commits into one notification: PostgreSQL serializes the commits of notifying
//!   transactions on a global lock held across their WAL flush, which capped changes at about
//!   one per fsync.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection as _, QueryBuilder, Row as _, Transaction};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::common::read_actor;
use crate::common::{
    column_list, count_cols, disable_reason, json_text, list_deliveries_query, list_webhooks_query,
    local_offset, map_text, qualified, read_attempt, read_delivery, read_event, read_row,
    read_webhook, replay_order_key, state_event, stored_event, usage_last_error, At, DbRow as _,
    ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_STATUS, EVENT_COLS, WEBHOOK_COLS,
};
use crate::common::{created_event, plan_change, Planned};
use crate::entity::{ColumnKind, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::{
    hash_key, now_ticks, ChangeFn, ChangeOutcome, ClaimRequest, Intake, OpenOptions, Result, Store,
    StoreError,
};

/// The channel commits notify when they queue work.
const WORK_CHANNEL: &str = "crmhooks_work";

/// Advisory lock key that serializes claims across nodes ("crmhooks" in ASCII).
const CLAIM_LOCK: i64 = 0x6372_6d68_6f6f_6b73;

/// Planner settings for the statements that walk the queue, set for their transaction only (a
/// `DO` block ahead of them in the same simple query; the claim's function, migration 0004,
/// carries them as its own). The queue changes faster than its
/// statistics follow: with the estimates of a delivery table analyzed while it was small, the
/// planner gathered every pending row and sorted them (250 ms a claim with 140,000 pending, so a
/// fan-out backlog drained at about 1,000/s) instead of walking `delivery_pending` in queue
/// order and stopping at the limit (12 ms). Sorts and bitmap scans off make the ordered index
/// walk the plan; JIT off because those settings' cost penalties would otherwise trigger a JIT
/// compilation of 300 ms per statement.
const PLANNER_FOR_QUEUES: &str = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL jit = off;";

/// Optimistic attempts of a change before it takes the row lock for a transaction instead
/// (a row changed by others that often is contended; the lock queues its writers).
const OPTIMISTIC_TRIES: usize = 3;

/// What an optimistic change came to.
enum Optimistic {
    /// Written and committed (with the deliveries written leased to hand over), or nothing
    /// to write.
    Done(ChangeOutcome, Option<Leased>),
    /// The row changed between the read and the write: decide again.
    Changed,
    /// Not a change this path makes (an insert): take the locking path.
    NeedsLock,
}

/// PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
    local_offset: time::UtcOffset,
    /// Dropped with the store, which ends the listener and notifier tasks.
    alive: watch::Sender<()>,
    /// Asks the notifier task for a `NOTIFY` (signals that arrive while one is being sent
    /// fold into the next).
    notify: Arc<Notify>,
    /// This node's dispatcher, which takes the fresh heads of chains at commit.
    intake: std::sync::RwLock<Option<Arc<dyn Intake>>>,
}

type Tx<'a> = Transaction<'a, Postgres>;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e)
}

/// How a webhook row is read inside a transaction.
#[derive(Clone, Copy)]
enum Lock {
    /// Keeps the webhook from being deleted until the transaction ends (fan-out, replay).
    KeyShare,
    /// Serializes changes of its state, usage and deliveries.
    Update,
}

impl Lock {
    fn clause(self) -> &'static str {
        match self {
            Lock::KeyShare => " FOR KEY SHARE",
            Lock::Update => " FOR NO KEY UPDATE",
        }
    }
}

impl PgStore {
    /// Records attempts that all succeeded: the attempt rows, the deliveries and the usage
    /// counters, one statement each (arrays bound as parameters).
    async fn complete_successes(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        bulk: &[&AttemptOutcome],
        now: Ticks,
    ) -> Result<()> {
        let ids: Vec<i64> = bulk.iter().map(|o| o.delivery_id).collect();
        let event_ids: Vec<String> = bulk.iter().map(|o| o.event_id.to_string()).collect();
        let retries: Vec<i64> = bulk.iter().map(|o| o.retry).collect();
        let at: Vec<i64> = bulk.iter().map(|o| o.attempted_at).collect();
        let dur: Vec<i64> = bulk.iter().map(|o| o.duration_us).collect();
        let status: Vec<Option<i64>> = bulk.iter().map(|o| o.status_code.map(i64::from)).collect();
        // A delivery pruned meanwhile has nothing to record against (the join skips it).
        sqlx::query(
            "INSERT INTO attempt (delivery_id, event_id, retry, attempted_at, duration_us, status_code) \
             SELECT u.id, u.eid, u.retry, u.at, u.dur, u.st FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[]) \
             AS u(id, eid, retry, at, dur, st) JOIN delivery d ON d.delivery_id = u.id",
        )
        .bind(&ids)
        .bind(&event_ids)
        .bind(&retries)
        .bind(&at)
        .bind(&dur)
        .bind(&status)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "UPDATE delivery SET status = 2, completed = $1, attempts = attempts + 1, last_status = u.st, last_error = NULL, \
             lease_until = NULL, lease_owner = NULL FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS u(id, st) \
             WHERE delivery.delivery_id = u.id AND delivery.status = 1",
        )
        .bind(now)
        .bind(&ids)
        .bind(&status)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        let mut per_hook: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        for o in bulk {
            *per_hook.entry(o.webhook_id).or_insert(0) += 1;
        }
        let hooks: Vec<i64> = per_hook.keys().copied().collect();
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

    /// Connects to `url` (`postgres://…`) and migrates the database.
    ///
    /// Several nodes may start at once: sqlx's migrator holds a session-level
    /// `pg_advisory_lock` (a key derived from the database name) while it checks and applies
    /// migrations, so one node migrates and the others wait, then find nothing to do. It runs
    /// on a connection of its own, closed afterwards, so the lock cannot linger in the pool.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        // The URL may carry a password: never echo it.
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let mut conn = sqlx::PgConnection::connect_with(&connect)
            .await
            .map_err(db)?;
        let migrated = sqlx::migrate!("./migrations/postgres").run(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(true)
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        let (alive, _) = watch::channel(());
        let notify = Arc::new(Notify::new());
        tokio::spawn(notify_loop(pool.clone(), notify.clone(), alive.subscribe()));
        Ok(PgStore {
            pool,
            connect,
            local_offset: local_offset(),
            alive,
            notify,
            intake: std::sync::RwLock::new(None),
        })
    }

    /// Wakes every node's dispatcher soon: call after committing work that is due now.
    fn wake_nodes(&self) {
        self.notify.notify_one();
    }

    /// [`PgStore::wake_nodes`] when a committed change queued deliveries that wait for a
    /// claim (not all handed to this node's dispatcher).
    fn wake_for(&self, committed: &Committed) {
        if committed.deliveries > committed.handed {
            self.wake_nodes();
        }
    }

    /// Where a change writes the fresh heads of its chains: leased to this node's dispatcher,
    /// when one takes deliveries.
    fn hand(&self) -> Option<Hand> {
        let intake = self
            .intake
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let lease_until = now_ticks().saturating_add(intake.lease_ticks());
        Some(Hand {
            intake,
            lease_until,
        })
    }

    /// After the commit of a change that wrote deliveries leased to this node's dispatcher:
    /// each goes to the dispatcher with the room [`Intake::reserve`] gives it; one that finds
    /// none is pending again (its lease given back) for a claim. Returns how many were taken.
    async fn hand_over(&self, leased: Option<Leased>) -> u64 {
        let Some(Leased { intake, claimed }) = leased else {
            return 0;
        };
        let (taken, refused): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|c| intake.reserve(c.webhook.id));
        if !refused.is_empty() {
            let ids: Vec<i64> = refused.iter().map(|c| c.delivery_id).collect();
            let unleased = sqlx::query(
                "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL \
                 WHERE delivery_id = ANY($1) AND status = 1 AND lease_owner = $2",
            )
            .bind(&ids)
            .bind(intake.owner())
            .execute(&self.pool)
            .await;
            match unleased {
                Ok(_) => self.wake_nodes(),
                Err(e) => {
                    tracing::warn!(error = %e, deliveries = ids.len(), "giving back leases the dispatcher had no room for failed; they run out by themselves")
                }
            }
        }
        let n = taken.len() as u64;
        if !taken.is_empty() {
            intake.take(taken);
        }
        n
    }

    async fn begin(&self) -> Result<Tx<'_>> {
        self.pool.begin().await.map_err(db)
    }
}

/// Sends `NOTIFY crmhooks_work` whenever [`PgStore::wake_nodes`] asked for it, until `alive`
/// closes. Each is a statement of its own: a transaction without writes, so no WAL flush and
/// no hold on the notify lock across one.
async fn notify_loop(pool: PgPool, signal: Arc<Notify>, mut alive: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = signal.notified() => {}
            _ = alive.changed() => return,
        }
        notify_nodes(&pool).await;
    }
}

/// `NOTIFY crmhooks_work`, as a statement of its own; a failure is logged and otherwise costs
/// only latency (nodes also poll).
async fn notify_nodes(pool: &PgPool) {
    if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(pool)
        .await
    {
        tracing::debug!(error = %e, "cannot NOTIFY other nodes; they will poll");
    }
}

/// A text value as an SQL expression that no setting or content can break out of (for the
/// simple query protocol, which takes no parameters).
fn text_literal(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
}

/// Binds a value with the type of its column (PostgreSQL types NULLs too).
fn push_value(
    b: &mut sqlx::query_builder::Separated<'_, '_, Postgres, &str>,
    kind: ColumnKind,
    v: &Value,
) {
    match (kind, v) {
        (ColumnKind::Text { .. }, Value::Null) => b.push_bind(None::<String>),
        (_, Value::Null) => b.push_bind(None::<i64>),
        (_, Value::Int(i) | Value::Date(i)) => b.push_bind(*i),
        (_, Value::Text(s)) => b.push_bind(s.clone()),
    };
}

/// Fresh heads of chains written leased to this node's dispatcher (see [`Intake`]): each
/// delivery of a change with no earlier delivery of its chain open. The dispatcher's room is
/// asked for after the commit ([`PgStore::hand_over`]), as which webhooks a change fans out to
/// is known only then; the rare one without room is given back to the queue.
struct Hand {
    intake: Arc<dyn Intake>,
    lease_until: Ticks,
}

/// Deliveries written leased to [`Hand::intake`]'s owner, to hand over once committed.
struct Leased {
    intake: Arc<dyn Intake>,
    claimed: Vec<Claimed>,
}

/// A delivery a change wrote leased, before its event is attached.
struct LeasedDelivery {
    delivery_id: i64,
    event_id: Uuid,
    webhook: Arc<Webhook>,
}

/// Appends an event and one delivery per Active webhook of the tenant subscribed to it, in one
/// statement (one round trip per change).
async fn insert_event(
    tx: &mut Tx<'_>,
    actor: &Actor,
    ev: &NewEvent,
    now: Ticks,
) -> Result<Committed> {
    let mut qb = QueryBuilder::<Postgres>::new("WITH ");
    push_event_tail(&mut qb, actor, ev, now, None, None);
    let rows = qb.build().fetch_all(&mut **tx).await.map_err(db)?;
    let (committed, _) = read_event_tail(&rows)?;
    Ok(committed)
}

/// What a claim selects from the rows it leased (`upd`, with `event_seq`, `webhook_id` and
/// `tenant_id`) joined to their event `e`, webhook `w` and tenant `t`.
fn claimed_cols() -> String {
    format!(
        "u.delivery_id, u.event_id, u.attempt_in_cycle, u.queue_pos, t.name, {}, {}",
        qualified(EVENT_COLS, "e"),
        qualified(WEBHOOK_COLS, "w")
    )
}

/// Rows of [`claimed_cols`], each with its queue position.
fn read_claimed(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(i64, Claimed)>> {
    let event_at = 5;
    let webhook_at = event_at + count_cols(EVENT_COLS);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let delivery_id = r.int(0)?;
        let event_id = r.text(1)?;
        out.push((
            r.int(3)?,
            Claimed {
                delivery_id,
                event_id: Uuid::parse_str(&event_id).map_err(|e| {
                    StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}"))
                })?,
                attempt_in_cycle: r.int(2)?,
                event: Arc::new(read_event(&At(r, event_at))?),
                tenant: r.text(4)?,
                webhook: Arc::new(read_webhook(&At(r, webhook_at))?),
            },
        ));
    }
    Ok(out)
}

/// The answer of a statement that ends with [`push_event_tail`]: what it committed (no event
/// when its `source` produced no row), and the deliveries it wrote leased.
fn read_event_tail(rows: &[sqlx::postgres::PgRow]) -> Result<(Committed, Vec<LeasedDelivery>)> {
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

/// The deliveries a change wrote leased with `hand`, with its event as a claim would read it
/// back (`ev` moved into it); `None` when there are none.
fn leased_of(
    hand: Option<Hand>,
    actor: &Actor,
    seq: i64,
    ev: NewEvent,
    now: Ticks,
    deliveries: Vec<LeasedDelivery>,
) -> Option<Leased> {
    let hand = hand.filter(|_| !deliveries.is_empty())?;
    let event = Arc::new(stored_event(seq, actor, ev, now));
    let claimed = deliveries
        .into_iter()
        .map(|d| Claimed {
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            attempt_in_cycle: 0,
            event: event.clone(),
            tenant: actor.tenant.clone(),
            webhook: d.webhook,
        })
        .collect();
    Some(Leased {
        intake: hand.intake,
        claimed,
    })
}

/// Appends to a `WITH` the event (`ev`), the Active webhooks of the tenant subscribed to it
/// (`hooks`) and a delivery for each (`ins`), then selects the event's sequence number and the
/// number of deliveries (NULL and 0 when `source`, an earlier CTE, produced no row: then
/// nothing is written), with each delivery written leased (see [`Hand`]) and its webhook on a
/// row of its own (one row with NULLs there when none is).
fn push_event_tail(
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
    qb.push(
        " RETURNING event_seq), hooks AS (SELECT w.webhook_id FROM webhook_event we JOIN webhook w ON w.webhook_id = we.webhook_id WHERE we.event = ",
    )
    .push_bind(ev.event.clone())
    .push(" AND w.tenant_id = ")
    .push_bind(actor.tenant_id)
    .push(
        " AND w.state = 1 AND w.type = 'webhook' ORDER BY w.webhook_id FOR KEY SHARE OF w), \
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

/// `"col" = value, …` for every column but the key.
fn push_set_list(qb: &mut QueryBuilder<'_, Postgres>, def: &EntityDef, row: &Row) {
    let mut sep = qb.separated(", ");
    for (col, v) in def.columns.iter().zip(&row.values).skip(1) {
        sep.push(format!("\"{}\" = ", col.name));
        match (col.kind, v) {
            (ColumnKind::Text { .. }, Value::Null) => sep.push_bind_unseparated(None::<String>),
            (_, Value::Null) => sep.push_bind_unseparated(None::<i64>),
            (_, Value::Int(i) | Value::Date(i)) => sep.push_bind_unseparated(*i),
            (_, Value::Text(s)) => sep.push_bind_unseparated(s.clone()),
        };
    }
}

async fn insert_deliveries(
    tx: &mut Tx<'_>,
    tenant_id: i64,
    hooks: &[i64],
    seq: i64,
    order_key: &str,
    now: Ticks,
    replay_of: Option<i64>,
) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    // 9 parameters a row; stay well under PostgreSQL's 65535.
    for chunk in hooks.chunks(1000) {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, replay_of) ",
        );
        qb.push_values(chunk, |mut b, hook| {
            b.push_bind(tenant_id)
                .push_bind(*hook)
                .push_bind(seq)
                .push_bind(order_key.to_owned())
                .push_bind(Uuid::new_v4().to_string())
                .push_bind(now)
                .push_bind(now)
                .push_bind(now)
                .push_bind(replay_of);
        });
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

async fn load_webhook(tx: &mut Tx<'_>, id: i64, lock: Lock) -> Result<Option<Webhook>> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = $1{}",
        lock.clause()
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    row.as_ref().map(read_webhook).transpose()
}

async fn tenant_name(tx: &mut Tx<'_>, tenant_id: i64) -> Result<String> {
    sqlx::query_scalar("SELECT name FROM tenant WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)
}

impl PgStore {
    /// Sets a webhook's state inside `tx` and fires its state event. The caller holds the
    /// webhook's row lock.
    async fn set_state(
        &self,
        tx: &mut Tx<'_>,
        hook: &mut Webhook,
        state: WebhookState,
        actor: &Actor,
        now: Ticks,
    ) -> Result<()> {
        hook.state = state;
        hook.updated = now;
        hook.updated_associate_id = actor.associate_id;
        let calls: i64 = sqlx::query_scalar(
            "UPDATE webhook SET state = $1, updated = $2, updated_associate_id = $3, \"updatedCount\" = \"updatedCount\" + 1 WHERE webhook_id = $4 \
             RETURNING COALESCE((SELECT total_calls FROM webhook_usage WHERE webhook_usage_id = $4), 0)",
        )
        .bind(state as i64)
        .bind(now)
        .bind(actor.associate_id)
        .bind(hook.id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
        if let Some(ev) = state_event(hook, calls, self.local_offset) {
            insert_event(tx, actor, &ev, now).await?;
        }
        Ok(())
    }

    async fn fire_state_event(
        &self,
        tx: &mut Tx<'_>,
        hook: &Webhook,
        actor: &Actor,
        now: Ticks,
    ) -> Result<()> {
        let calls: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT total_calls FROM webhook_usage WHERE webhook_usage_id = $1), 0)",
        )
        .bind(hook.id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
        if let Some(ev) = state_event(hook, calls, self.local_offset) {
            insert_event(tx, actor, &ev, now).await?;
        }
        Ok(())
    }

    /// A change of an existing row in two round trips and no explicit transaction: read the
    /// row, decide, then one statement writes the row (only if its `updatedCount` and
    /// `updated` are still what was read), its event and deliveries, and commits. Another
    /// change that committed in between makes the write match nothing: [`Optimistic::Changed`],
    /// and the caller decides again. The row lock the write takes keeps one row's events in
    /// commit order, as `FOR UPDATE` does in [`PgStore::apply_in`].
    async fn apply_optimistic(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: i64,
        change: &mut ChangeFn,
    ) -> Result<Optimistic> {
        let current = self.get_row(actor.tenant_id, def, pk, true).await?;
        let version = current.as_ref().map(|r| {
            (
                r.get(def, "updatedCount").as_i64(),
                r.get(def, "updated").as_i64(),
            )
        });
        let now = now_ticks();
        let decided = change(current.as_ref())?;
        let planned = plan_change(def, actor, current, decided, now, self.local_offset)?;
        let (mut qb, after, event) = match planned {
            Planned::Nothing(row) => {
                return Ok(Optimistic::Done(
                    ChangeOutcome {
                        row,
                        committed: Committed::default(),
                    },
                    None,
                ))
            }
            Planned::Insert(_) => return Ok(Optimistic::NeedsLock),
            Planned::Update { row, event } => {
                let mut qb =
                    QueryBuilder::<Postgres>::new(format!("WITH w AS (UPDATE {} SET ", def.table));
                push_set_list(&mut qb, def, &row);
                (qb, Some(row), event)
            }
            Planned::Delete { event } => (
                QueryBuilder::<Postgres>::new(format!("WITH w AS (DELETE FROM {}", def.table)),
                None,
                event,
            ),
        };
        // (An update or delete always has a row it was decided from.)
        let Some((count, updated)) = version else {
            return Ok(Optimistic::NeedsLock);
        };
        qb.push(" WHERE tenant_id = ")
            .push_bind(actor.tenant_id)
            .push(format!(" AND \"{}\" = ", def.pk()))
            .push_bind(pk)
            .push(" AND \"updatedCount\" = ")
            .push_bind(count)
            .push(" AND \"updated\" = ")
            .push_bind(updated)
            .push(" RETURNING 1), ");
        let hand = self.hand();
        push_event_tail(&mut qb, actor, &event, now, Some("w"), hand.as_ref());
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        let (committed, leased) = read_event_tail(&rows)?;
        let Some(seq) = committed.event_seq else {
            return Ok(Optimistic::Changed);
        };
        let leased = leased_of(hand, actor, seq, event, now, leased);
        Ok(Optimistic::Done(
            ChangeOutcome {
                row: after,
                committed,
            },
            leased,
        ))
    }

    /// Decides and writes one change inside `tx`.
    async fn apply_in(
        &self,
        tx: &mut Tx<'_>,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        mut change: ChangeFn,
    ) -> Result<(ChangeOutcome, Option<Leased>)> {
        let current = match pk {
            Some(pk) => {
                // FOR UPDATE: a concurrent change of this row (on any node) waits, then reads
                // the row as this one left it.
                let sql = format!(
                    "SELECT {} FROM {} WHERE tenant_id = $1 AND \"{}\" = $2 FOR UPDATE",
                    column_list(def),
                    def.table,
                    def.pk()
                );
                let row = sqlx::query(&sql)
                    .bind(actor.tenant_id)
                    .bind(pk)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db)?;
                row.as_ref().map(|r| read_row(def, r)).transpose()?
            }
            None => None,
        };
        let now = now_ticks();
        let decided = change(current.as_ref())?;
        let planned = plan_change(def, actor, current, decided, now, self.local_offset)?;
        let (after, event) = match planned {
            Planned::Nothing(row) => {
                return Ok((
                    ChangeOutcome {
                        row,
                        committed: Committed::default(),
                    },
                    None,
                ))
            }
            Planned::Insert(mut row) => {
                // The key is assigned by the sequence: leave it out of the insert.
                let cols = def
                    .columns
                    .iter()
                    .skip(1)
                    .map(|c| format!("\"{}\"", c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut qb = QueryBuilder::<Postgres>::new(format!(
                    "INSERT INTO {} (tenant_id, {cols}) ",
                    def.table
                ));
                qb.push_values(std::iter::once(&row), |mut b, row| {
                    b.push_bind(actor.tenant_id);
                    for (col, v) in def.columns.iter().zip(&row.values).skip(1) {
                        push_value(&mut b, col.kind, v);
                    }
                });
                qb.push(format!(" RETURNING \"{}\"", def.pk()));
                let id: i64 = qb
                    .build_query_scalar()
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db)?;
                row.values[0] = Value::Int(id);
                let event = created_event(def, &row, self.local_offset);
                (Some(row), event)
            }
            Planned::Update { row, event } => {
                let mut qb = QueryBuilder::<Postgres>::new(format!("UPDATE {} SET ", def.table));
                push_set_list(&mut qb, def, &row);
                qb.push(" WHERE tenant_id = ");
                qb.push_bind(actor.tenant_id);
                qb.push(format!(" AND \"{}\" = ", def.pk()));
                qb.push_bind(event.primary_key);
                qb.build().execute(&mut **tx).await.map_err(db)?;
                (Some(row), event)
            }
            Planned::Delete { event } => {
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE tenant_id = $1 AND \"{}\" = $2",
                    def.table,
                    def.pk()
                ))
                .bind(actor.tenant_id)
                .bind(event.primary_key)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                (None, event)
            }
        };
        let hand = self.hand();
        let mut qb = QueryBuilder::<Postgres>::new("WITH ");
        push_event_tail(&mut qb, actor, &event, now, None, hand.as_ref());
        let rows = qb.build().fetch_all(&mut **tx).await.map_err(db)?;
        let (committed, leased) = read_event_tail(&rows)?;
        let seq = committed.event_seq.unwrap_or_default();
        let leased = leased_of(hand, actor, seq, event, now, leased);
        Ok((
            ChangeOutcome {
                row: after,
                committed,
            },
            leased,
        ))
    }
}

/// Listens on [`WORK_CHANNEL`] with a connection of its own until `alive` closes; reconnects
/// with exponential backoff (100 ms .. 5 s). Every notification, and every reconnect (work may
/// have been queued while nobody listened), wakes `wake`.
async fn listen_loop(connect: PgConnectOptions, wake: Arc<Notify>, mut alive: watch::Receiver<()>) {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    let mut backoff = MIN;
    let mut lost = false;
    loop {
        let attempt = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_with(connect.clone())
                .await?;
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen(WORK_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = alive.changed() => return,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "cannot LISTEN for work; retrying (polling meanwhile)");
                    lost = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = alive.changed() => return,
                }
                backoff = (backoff * 2).min(MAX);
                continue;
            }
        };
        if lost {
            tracing::info!("listening for work again");
        }
        backoff = MIN;
        wake.notify_one();
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = alive.changed() => return,
            };
            match next {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    tracing::warn!("lost the LISTEN connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                    break;
                }
            }
        }
        lost = true;
        wake.notify_one();
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ensure_tenant(&self, name: &str) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO tenant (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let id: i64 = sqlx::query_scalar("SELECT tenant_id FROM tenant WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(id)
    }

    async fn add_api_key(
        &self,
        tenant: &str,
        associate_id: i64,
        key: &str,
        label: &str,
    ) -> Result<()> {
        let tenant_id = self.ensure_tenant(tenant).await?;
        sqlx::query(
            "INSERT INTO api_key (key_hash, tenant_id, associate_id, label, created) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key_hash) DO UPDATE SET tenant_id = excluded.tenant_id, associate_id = excluded.associate_id, label = excluded.label",
        )
        .bind(hash_key(key))
        .bind(tenant_id)
        .bind(associate_id)
        .bind(label)
        .bind(now_ticks())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn actor_for_key(&self, key: &str) -> Result<Option<Actor>> {
        let row = sqlx::query(
            "SELECT k.tenant_id, t.name, k.associate_id FROM api_key k JOIN tenant t ON t.tenant_id = k.tenant_id WHERE k.key_hash = $1",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(read_actor).transpose()
    }

    async fn get_row(
        &self,
        tenant_id: i64,
        def: &'static EntityDef,
        pk: i64,
        include_deleted: bool,
    ) -> Result<Option<Row>> {
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND \"{}\" = $2{}",
            column_list(def),
            def.table,
            def.pk(),
            if include_deleted {
                ""
            } else {
                " AND COALESCE(\"deleted\", 0) = 0"
            }
        );
        let row = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(pk)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(|r| read_row(def, r)).transpose()
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        mut change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        if let Some(pk) = pk {
            for _ in 0..OPTIMISTIC_TRIES {
                match self.apply_optimistic(actor, def, pk, &mut change).await? {
                    Optimistic::Done(mut outcome, leased) => {
                        outcome.committed.handed = self.hand_over(leased).await;
                        self.wake_for(&outcome.committed);
                        return Ok(outcome);
                    }
                    Optimistic::Changed => continue,
                    Optimistic::NeedsLock => break,
                }
            }
        }
        let mut tx = self.begin().await?;
        let (mut outcome, leased) = self.apply_in(&mut tx, actor, def, pk, change).await?;
        if outcome.committed.event_seq.is_some() {
            tx.commit().await.map_err(db)?;
            outcome.committed.handed = self.hand_over(leased).await;
            self.wake_for(&outcome.committed);
        } else {
            // Nothing was written: only the row lock to let go of.
            let _ = tx.rollback().await;
        }
        Ok(outcome)
    }

    async fn recycle_bin_expired(
        &self,
        def: &'static EntityDef,
        cutoff: Ticks,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64)>> {
        let sql = format!(
            "SELECT c.tenant_id, t.name, c.\"{pk}\" FROM {table} c JOIN tenant t ON t.tenant_id = c.tenant_id \
             WHERE c.\"DeletedDate\" IS NOT NULL AND c.\"DeletedDate\" < $1 AND COALESCE(c.\"deleted\", 0) <> 0 LIMIT $2",
            pk = def.pk(),
            table = def.table
        );
        let rows = sqlx::query(&sql)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db)?,
                    r.try_get(1).map_err(db)?,
                    r.try_get(2).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn save_webhook(
        &self,
        actor: &Actor,
        mut hook: Webhook,
    ) -> Result<(Webhook, Option<StateChange>)> {
        let now = now_ticks();
        let mut tx = self.begin().await?;
        let before = if hook.id == 0 {
            None
        } else {
            let old = load_webhook(&mut tx, hook.id, Lock::Update).await?;
            match old {
                Some(old) if old.tenant_id == actor.tenant_id => Some(old),
                _ => return Err(StoreError::NotFound),
            }
        };
        hook.tenant_id = actor.tenant_id;
        let events = hook.events.join(",");
        match &before {
            None => {
                hook.registered = now;
                hook.registered_associate_id = actor.associate_id;
                hook.updated = 0;
                hook.updated_associate_id = 0;
                hook.updated_count = 0;
                hook.id = sqlx::query_scalar(
                    "INSERT INTO webhook (tenant_id, name, events, target_url, secret, state, type, headers, properties, registered, registered_associate_id, updated, updated_associate_id, errors_email, \"updatedCount\", retry_policy, success_status) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, $12, 0, $13, $14) RETURNING webhook_id",
                )
                .bind(hook.tenant_id)
                .bind(&hook.name)
                .bind(&events)
                .bind(&hook.target_url)
                .bind(&hook.secret)
                .bind(hook.state as i64)
                .bind(&hook.kind)
                .bind(map_text(&hook.headers))
                .bind(map_text(&hook.properties))
                .bind(hook.registered)
                .bind(hook.registered_associate_id)
                .bind(&hook.errors_email)
                .bind(&hook.retry_policy)
                .bind(&hook.success_status)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query("INSERT INTO webhook_usage (webhook_usage_id, registered, registered_associate_id, updated) VALUES ($1, $2, $3, $4)")
                    .bind(hook.id)
                    .bind(now)
                    .bind(actor.associate_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            Some(old) => {
                hook.registered = old.registered;
                hook.registered_associate_id = old.registered_associate_id;
                hook.updated = now;
                hook.updated_associate_id = actor.associate_id;
                hook.updated_count = (old.updated_count + 1) % 65536;
                sqlx::query(
                    "UPDATE webhook SET name = $1, events = $2, target_url = $3, secret = $4, state = $5, type = $6, headers = $7, properties = $8, \
                     updated = $9, updated_associate_id = $10, errors_email = $11, \"updatedCount\" = $12, retry_policy = $13, success_status = $14 WHERE webhook_id = $15",
                )
                .bind(&hook.name)
                .bind(&events)
                .bind(&hook.target_url)
                .bind(&hook.secret)
                .bind(hook.state as i64)
                .bind(&hook.kind)
                .bind(map_text(&hook.headers))
                .bind(map_text(&hook.properties))
                .bind(hook.updated)
                .bind(hook.updated_associate_id)
                .bind(&hook.errors_email)
                .bind(hook.updated_count)
                .bind(&hook.retry_policy)
                .bind(&hook.success_status)
                .bind(hook.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query("DELETE FROM webhook_event WHERE webhook_id = $1")
                    .bind(hook.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        let mut subscribed: Vec<&String> = hook.events.iter().collect();
        subscribed.sort();
        subscribed.dedup();
        for ev in subscribed {
            sqlx::query("INSERT INTO webhook_event (event, webhook_id) VALUES ($1, $2)")
                .bind(ev)
                .bind(hook.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let mut change = None;
        if let Some(old) = &before {
            if old.state != hook.state {
                if hook.state == WebhookState::Active {
                    sqlx::query("UPDATE webhook_usage SET consecutive_errors = 0 WHERE webhook_usage_id = $1")
                        .bind(hook.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                self.fire_state_event(&mut tx, &hook, actor, now).await?;
                change = Some(StateChange {
                    webhook: hook.clone(),
                    from: old.state,
                    reason: None,
                });
            }
        }
        tx.commit().await.map_err(db)?;
        if change.is_some() {
            // Reactivated: its parked deliveries are due again, on whichever node; a state
            // event may have queued deliveries too.
            self.wake_nodes();
        }
        Ok((hook, change))
    }

    async fn get_webhook(&self, tenant_id: i64, id: i64) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(read_webhook).transpose()
    }

    async fn list_webhooks(&self, tenant_id: i64, filter: &WebhookFilter) -> Result<Vec<Webhook>> {
        let mut qb = list_webhooks_query(tenant_id, filter);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(read_webhook).collect()
    }

    async fn delete_webhook(&self, tenant_id: i64, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        // The row lock first (as complete() takes it), then its deliveries.
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT webhook_id FROM webhook WHERE webhook_id = $1 AND tenant_id = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if found.is_none() {
            let _ = tx.rollback().await;
            return Ok(false);
        }
        sqlx::query("DELETE FROM webhook WHERE webhook_id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE delivery SET status = 4, completed = $1, lease_until = NULL, lease_owner = NULL WHERE webhook_id = $2 AND status IN (0, 1)")
            .bind(now_ticks())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn webhook_usage(&self, tenant_id: i64, id: i64) -> Result<Option<WebhookUsage>> {
        let row = sqlx::query(
            "SELECT u.total_calls, u.total_errors, u.consecutive_errors, u.last_error FROM webhook_usage u \
             JOIN webhook w ON w.webhook_id = u.webhook_usage_id WHERE w.webhook_id = $1 AND w.tenant_id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok(WebhookUsage {
                total_calls: r.try_get(0).map_err(db)?,
                total_errors: r.try_get(1).map_err(db)?,
                consecutive_errors: r.try_get(2).map_err(db)?,
                last_error: r.try_get(3).map_err(db)?,
            })
        })
        .transpose()
    }

    async fn emit(&self, actor: &Actor, event: NewEvent) -> Result<Committed> {
        let mut tx = self.begin().await?;
        let c = insert_event(&mut tx, actor, &event, now_ticks()).await?;
        tx.commit().await.map_err(db)?;
        self.wake_for(&c);
        Ok(c)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        // Claims and attempt records (below) commit without waiting for the disk: one lost in
        // a database crash only means a delivery is sent again (at-least-once), and a state
        // change decided with it is decided again by the next failures. Changes of rows and
        // webhooks, with their events and deliveries, always commit durably.
        //
        // One round trip: a multi-statement simple query runs as one implicit transaction. Its
        // first statement takes the claim lock, so claims serialize across nodes and the
        // claim's snapshot (taken by the next statement) sees every lease already taken: no
        // row can be locked by another claim that has not marked it yet. A claim is one
        // statement, so waiting for one is short; batches keep the rate up. The simple
        // protocol takes no parameters: every value is an integer, and the owner goes in
        // hex-encoded.
        //
        // The choice is `crmhooks_claim_ids` (migration 0004: planned once per connection, with
        // the planner settings of [`PLANNER_FOR_QUEUES`] as its own); the DO block takes the
        // claim lock, calls it and hands its ids to the UPDATE through a transaction-local
        // setting. The UPDATE and the joins of the few leased rows to their event, webhook and
        // tenant run with the planner's own settings (its cost penalties would make their
        // plans arbitrary).
        let skip = req
            .skip_webhooks
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "DO $$BEGIN PERFORM set_config('synchronous_commit', 'off', true); \
             PERFORM pg_advisory_xact_lock({CLAIM_LOCK}); \
             PERFORM set_config('crmhooks.claim', COALESCE(array_to_string(\
             crmhooks_claim_ids({now}, {window}, {cap}, {limit}, ARRAY[{skip}]::BIGINT[]), ','), ''), true); END$$; \
             WITH upd AS (UPDATE delivery d SET status = 1, lease_until = {lease_until}, lease_owner = {owner} \
             WHERE d.delivery_id = ANY (string_to_array(NULLIF(current_setting('crmhooks.claim'), ''), ',')::BIGINT[]) \
             AND EXISTS (SELECT 1 FROM event x WHERE x.event_seq = d.event_seq) \
             RETURNING d.delivery_id, d.event_id, d.attempt_in_cycle, d.queue_pos, d.event_seq, d.webhook_id, d.tenant_id) \
             SELECT {claimed_cols} \
             FROM upd u JOIN event e ON e.event_seq = u.event_seq JOIN webhook w ON w.webhook_id = u.webhook_id \
             JOIN tenant t ON t.tenant_id = u.tenant_id",
            now = req.now,
            // Rank within a window of candidates so one webhook never takes more than its share.
            window = req.limit.max(0).saturating_mul(4),
            cap = req.max_per_webhook,
            limit = req.limit.max(0),
            lease_until = req.lease_until,
            owner = text_literal(&req.owner),
            claimed_cols = claimed_cols(),
        );
        let rows = sqlx::raw_sql(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = read_claimed(&rows)?;
        // Oldest queue position first, as the SQLite store hands them out.
        out.sort_by_key(|(pos, c)| (*pos, c.delivery_id));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn complete(
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
        let mut hook_ids: Vec<i64> = outcomes.iter().map(|o| o.webhook_id).collect();
        hook_ids.sort_unstable();
        hook_ids.dedup();
        let ids = hook_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self
            .pool
            .begin_with(format!(
                "BEGIN; DO $$BEGIN PERFORM set_config('synchronous_commit', 'off', true); \
                 PERFORM 1 FROM webhook WHERE webhook_id IN ({ids}) ORDER BY webhook_id FOR NO KEY UPDATE; END$$"
            ))
            .await
            .map_err(db)?;
        let mut changes = Vec::new();
        let mut requeued = false;
        // Webhooks whose attempts in this batch all succeeded (the common case) are recorded in
        // bulk: three statements for the whole batch, whatever its size.
        let mut all_ok: std::collections::HashMap<i64, bool> = std::collections::HashMap::new();
        for o in outcomes {
            let ok = all_ok.entry(o.webhook_id).or_insert(true);
            *ok &= o.verdict == Verdict::Delivered;
        }
        let (bulk, single): (Vec<&AttemptOutcome>, Vec<&AttemptOutcome>) = outcomes
            .iter()
            .partition(|o| all_ok.get(&o.webhook_id).copied().unwrap_or(false));
        if !bulk.is_empty() {
            self.complete_successes(&mut tx, &bulk, now).await?;
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
                qb.push("UPDATE webhook_usage SET total_calls = total_calls + 1, total_errors = total_errors + 1, consecutive_errors = consecutive_errors + 1, last_error = ")
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
            let disable = o.verdict == Verdict::Gone
                || consecutive.is_some_and(|n| n >= max_consecutive_errors);
            if disable {
                if let Some(mut hook) = load_webhook(&mut tx, o.webhook_id, Lock::Update).await? {
                    if hook.state == WebhookState::Active {
                        let from = hook.state;
                        let tenant = tenant_name(&mut tx, hook.tenant_id).await?;
                        let actor = Actor::system(hook.tenant_id, &tenant);
                        self.set_state(
                            &mut tx,
                            &mut hook,
                            WebhookState::TooManyErrors,
                            &actor,
                            now,
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
        tx.commit().await.map_err(db)?;
        if requeued || !changes.is_empty() {
            // Retries due on any node; a state event may have queued deliveries.
            self.wake_nodes();
        }
        Ok(changes)
    }

    async fn next_due(&self) -> Result<Option<Ticks>> {
        // The first pending delivery of an Active webhook and the first lease to expire, each
        // read along the partial index in time order; one round trip.
        // With the planner settings of the claim (a stale estimate made this a sort of every
        // pending row: 60 ms with 100,000 pending).
        let rows = sqlx::raw_sql(&format!(
            "DO $$BEGIN {PLANNER_FOR_QUEUES} END$$; SELECT LEAST( \
             (SELECT d.next_attempt_at FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
              WHERE d.status = 0 AND w.state = 1 ORDER BY d.next_attempt_at LIMIT 1), \
             (SELECT d.lease_until FROM delivery d WHERE d.status = 1 ORDER BY d.lease_until LIMIT 1))"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        match rows.first() {
            Some(r) => r.try_get::<Option<i64>, _>(0).map_err(db),
            None => Ok(None),
        }
    }

    async fn release(&self, owner: &str) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL WHERE status = 1 AND lease_owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        if n > 0 {
            // Another node can take them over now rather than at its next poll. Sent here,
            // not by the notifier task: this runs at shutdown, just before the store goes.
            notify_nodes(&self.pool).await;
        }
        Ok(n)
    }

    async fn list_deliveries(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        let mut qb = list_deliveries_query(tenant_id, webhook_id, filter);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(read_delivery).collect()
    }

    async fn get_delivery(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        delivery_id: i64,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq WHERE d.tenant_id = $1 AND d.webhook_id = $2 AND d.delivery_id = $3"
        ))
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(delivery_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let delivery = read_delivery(&row)?;
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempt WHERE delivery_id = $1 ORDER BY attempt_id"
        ))
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let attempts = rows.iter().map(read_attempt).collect::<Result<Vec<_>>>()?;
        Ok(Some((delivery, attempts)))
    }

    async fn replay(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        req: &ReplayRequest,
    ) -> Result<ReplayReport> {
        let now = now_ticks();
        let mut tx = self.begin().await?;
        let hook = match load_webhook(&mut tx, webhook_id, Lock::KeyShare).await? {
            Some(h) if h.tenant_id == tenant_id => h,
            _ => return Err(StoreError::NotFound),
        };
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT e.event_seq, e.entity, e.primary_key, \
             (SELECT MAX(CASE WHEN d.status = 2 THEN 2 WHEN d.status IN (0, 1) THEN 1 ELSE 0 END)::BIGINT FROM delivery d WHERE d.event_seq = e.event_seq AND d.webhook_id = ",
        );
        qb.push_bind(webhook_id)
            .push(") AS best FROM event e JOIN webhook_event we ON we.event = e.event AND we.webhook_id = ")
            .push_bind(webhook_id)
            .push(" WHERE e.tenant_id = ")
            .push_bind(tenant_id)
            .push(" AND e.occurred >= ")
            .push_bind(req.since);
        if let Some(u) = req.until {
            qb.push(" AND e.occurred < ").push_bind(u);
        }
        qb.push(" ORDER BY e.event_seq LIMIT ").push_bind(req.limit);
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db)?;
        let mut report = ReplayReport::default();
        for r in rows {
            report.matched += 1;
            let seq: i64 = r.try_get(0).map_err(db)?;
            let entity: String = r.try_get(1).map_err(db)?;
            let pk: i64 = r.try_get(2).map_err(db)?;
            let best: Option<i64> = r.try_get(3).map_err(db)?;
            // Pending already: nothing to add. Delivered: only when all events are wanted.
            if best == Some(1) || (req.only_failed && best == Some(2)) {
                report.skipped += 1;
                continue;
            }
            let order_key = replay_order_key(&entity, pk);
            insert_deliveries(
                &mut tx,
                tenant_id,
                &[hook.id],
                seq,
                &order_key,
                now,
                Some(seq),
            )
            .await?;
            report.queued += 1;
        }
        tx.commit().await.map_err(db)?;
        if report.queued > 0 {
            self.wake_nodes();
        }
        Ok(report)
    }

    async fn prune_events(&self, cutoff: Ticks, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT e.event_seq FROM event e WHERE e.occurred < $1 AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_seq = e.event_seq AND d.status IN (0, 1)) ORDER BY e.event_seq LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if !seqs.is_empty() {
            sqlx::query("DELETE FROM attempt WHERE delivery_id IN (SELECT delivery_id FROM delivery WHERE event_seq = ANY($1))")
                .bind(&seqs)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM delivery WHERE event_seq = ANY($1)")
                .bind(&seqs)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM event WHERE event_seq = ANY($1)")
                .bind(&seqs)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(seqs.len() as u64)
    }

    async fn delivery_counts(&self) -> Result<Vec<(DeliveryStatus, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_STATUS} AS s, COUNT(*) FROM delivery d GROUP BY s ORDER BY s"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    DeliveryStatus::from_i64(r.try_get(0).map_err(db)?),
                    r.try_get(1).map_err(db)?,
                ))
            })
            .collect()
    }

    async fn listen_for_work(&self, wake: Arc<Notify>) -> Result<()> {
        tokio::spawn(listen_loop(
            self.connect.clone(),
            wake,
            self.alive.subscribe(),
        ));
        Ok(())
    }

    fn set_intake(&self, intake: Option<Arc<dyn Intake>>) {
        *self.intake.write().unwrap_or_else(|p| p.into_inner()) = intake;
    }
}
