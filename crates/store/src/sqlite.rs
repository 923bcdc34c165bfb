//! The SQLite store: WAL, one writer connection (SQLite has one writer anyway; a single
//! connection turns lock contention into a queue), a pool of readers.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite, Transaction};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};
use uuid::Uuid;

use crate::common::read_actor;
use crate::common::{
    column_list, json_text, list_deliveries_query, list_webhooks_query, local_offset, map_text,
    read_attempt, read_delivery, read_row, read_webhook, replay_order_key, state_event,
    ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_STATUS, WEBHOOK_COLS,
};
use crate::entity::{EntityDef, Row, Ticks};
use crate::model::*;
use crate::sqlite_writer::{Cmd, Job, SharedHandOff, WriteGate, WriterOptions};
use crate::{
    hash_key, now_ticks, ChangeFn, ChangeOutcome, ClaimRequest, OpenOptions, Result, Store,
    StoreError,
};

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    local_offset: time::UtcOffset,
    /// The writer thread: changes, claims and attempt records.
    writer_thread: mpsc::Sender<Cmd>,
    /// Held around every write transaction of this process.
    gate: WriteGate,
    durable_begin: &'static str,
    /// Fresh deliveries straight to this node's dispatcher.
    handoff: SharedHandOff,
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
}

type Tx<'a> = Transaction<'a, Sqlite>;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e)
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if options.synchronous_full {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            .pragma("wal_autocheckpoint", options.wal_autocheckpoint.to_string())
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        // Heads of delivery chains that lost their mark (see migration 0003) are marked again.
        let repaired = sqlx::query(
            "UPDATE delivery SET ready = 1 WHERE status = 0 AND ready = 0 AND NOT EXISTS (\
             SELECT 1 FROM delivery p WHERE p.webhook_id = delivery.webhook_id AND p.order_key = delivery.order_key \
             AND p.status IN (0, 1) AND p.delivery_id < delivery.delivery_id)",
        )
        .execute(&writer)
        .await
        .map_err(db)?
        .rows_affected();
        if repaired > 0 {
            tracing::warn!(repaired, "marked delivery chain heads that were not marked");
        }
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.clone().read_only(true))
            .await
            .map_err(db)?;
        let offset = local_offset();
        let durable_begin = if options.synchronous_full {
            "PRAGMA synchronous = FULL; BEGIN IMMEDIATE"
        } else {
            "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
        };
        let gate: WriteGate = Arc::new(tokio::sync::Mutex::new(()));
        let handoff = SharedHandOff::default();
        let writer_thread = crate::sqlite_writer::spawn(
            connect.get_filename(),
            WriterOptions {
                synchronous_full: options.synchronous_full,
                wal_autocheckpoint: options.wal_autocheckpoint,
                sync_delay: options.sync_delay,
                local_offset: offset,
                gate: gate.clone(),
            },
            handoff.clone(),
        )?;
        Ok(SqliteStore {
            writer,
            reader,
            local_offset: offset,
            writer_thread,
            gate,
            durable_begin,
            handoff,
        })
    }

    /// A write transaction whose commit is durable (`synchronous` as configured, FULL by
    /// default): changes a client was told are saved. Holds the write gate until dropped.
    async fn begin_durable(&self) -> Result<(OwnedMutexGuard<()>, Tx<'_>)> {
        let gate = self.gate.clone().lock_owned().await;
        let tx = self
            .writer
            .begin_with(self.durable_begin)
            .await
            .map_err(db)?;
        Ok((gate, tx))
    }

    /// A write transaction for bookkeeping: `synchronous = NORMAL`, no fsync of its own (see
    /// the writer thread).
    async fn begin_bookkeeping(&self) -> Result<(OwnedMutexGuard<()>, Tx<'_>)> {
        let gate = self.gate.clone().lock_owned().await;
        let tx = self
            .writer
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await
            .map_err(db)?;
        Ok((gate, tx))
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.writer_thread
            .send(cmd)
            .await
            .map_err(|_| writer_stopped())
    }
}

/// Appends an event and one delivery per Active webhook of the tenant subscribed to it.
async fn insert_event(
    tx: &mut Tx<'_>,
    actor: &Actor,
    ev: &NewEvent,
    now: Ticks,
) -> Result<Committed> {
    let changes = json_text(&ev.changes);
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO event (tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING event_seq",
    )
    .bind(actor.tenant_id)
    .bind(&ev.event)
    .bind(&ev.entity)
    .bind(ev.primary_key)
    .bind(changes)
    .bind(map_text(&ev.values))
    .bind(ev.field_values.as_deref())
    .bind(actor.associate_id)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    // Fan-out in one statement: a delivery per Active subscribed webhook of the tenant, each with
    // a random version-4 EventId made by SQLite, marked `ready` when it heads its chain.
    let deliveries = sqlx::query(
        "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, ready) \
         SELECT w.tenant_id, w.webhook_id, ?1, ?2, \
         lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || \
         substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))), \
         ?3, ?3, ?3, NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = w.webhook_id AND p.order_key = ?2 \
         AND p.status IN (0, 1)) FROM webhook_event we CROSS JOIN webhook w ON w.webhook_id = we.webhook_id \
         WHERE we.event = ?4 AND w.tenant_id = ?5 AND w.state = 1 AND w.type = 'webhook' ORDER BY we.webhook_id",
    )
    .bind(seq)
    .bind(&ev.order_key)
    .bind(now)
    .bind(&ev.event)
    .bind(actor.tenant_id)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(Committed {
        event_seq: Some(seq),
        deliveries,
        handed: 0,
    })
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
    // 11 parameters a row; stay well under SQLite's 32766. Each row is `ready` when nothing of
    // its chain is open (the hooks are distinct, so the rows do not see each other).
    for chunk in hooks.chunks(1000) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, replay_of, ready) ",
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
                .push_bind(replay_of)
                .push("NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = ")
                .push_bind_unseparated(*hook)
                .push_unseparated(" AND p.order_key = ")
                .push_bind_unseparated(order_key.to_owned())
                .push_unseparated(" AND p.status IN (0, 1))");
        });
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

async fn load_webhook(tx: &mut Tx<'_>, id: i64) -> Result<Option<Webhook>> {
    let row = sqlx::query(&format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    row.as_ref().map(read_webhook).transpose()
}

impl SqliteStore {
    async fn fire_state_event(
        &self,
        tx: &mut Tx<'_>,
        hook: &Webhook,
        actor: &Actor,
        now: Ticks,
    ) -> Result<()> {
        let calls: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT total_calls FROM webhook_usage WHERE webhook_usage_id = ?), 0)",
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
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, name: &str) -> Result<i64> {
        let (_gate, mut tx) = self.begin_durable().await?;
        sqlx::query("INSERT INTO tenant (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let id: i64 = sqlx::query_scalar("SELECT tenant_id FROM tenant WHERE name = ?")
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
        let _gate = self.gate.lock().await;
        sqlx::query(
            "INSERT INTO api_key (key_hash, tenant_id, associate_id, label, created) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (key_hash) DO UPDATE SET tenant_id = excluded.tenant_id, associate_id = excluded.associate_id, label = excluded.label",
        )
        .bind(hash_key(key))
        .bind(tenant_id)
        .bind(associate_id)
        .bind(label)
        .bind(now_ticks())
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn actor_for_key(&self, key: &str) -> Result<Option<Actor>> {
        let row = sqlx::query(
            "SELECT k.tenant_id, t.name, k.associate_id FROM api_key k JOIN tenant t ON t.tenant_id = k.tenant_id WHERE k.key_hash = ?",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.reader)
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
            "SELECT {} FROM {} WHERE tenant_id = ? AND \"{}\" = ?{}",
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
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        row.as_ref().map(|r| read_row(def, r)).transpose()
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Change(Job {
            actor: actor.clone(),
            def,
            pk,
            change,
            reply,
        }))
        .await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn recycle_bin_expired(
        &self,
        def: &'static EntityDef,
        cutoff: Ticks,
        limit: i64,
    ) -> Result<Vec<(i64, String, i64)>> {
        let sql = format!(
            "SELECT c.tenant_id, t.name, c.\"{pk}\" FROM {table} c JOIN tenant t ON t.tenant_id = c.tenant_id \
             WHERE c.\"DeletedDate\" IS NOT NULL AND c.\"DeletedDate\" < ? AND COALESCE(c.\"deleted\", 0) <> 0 LIMIT ?",
            pk = def.pk(),
            table = def.table
        );
        let rows = sqlx::query(&sql)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.reader)
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
        let (_gate, mut tx) = self.begin_durable().await?;
        let before = if hook.id == 0 {
            None
        } else {
            let old = load_webhook(&mut tx, hook.id).await?;
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
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, ?, ?) RETURNING webhook_id",
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
                sqlx::query("INSERT INTO webhook_usage (webhook_usage_id, registered, registered_associate_id, updated) VALUES (?, ?, ?, ?)")
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
                    "UPDATE webhook SET name = ?, events = ?, target_url = ?, secret = ?, state = ?, type = ?, headers = ?, properties = ?, \
                     updated = ?, updated_associate_id = ?, errors_email = ?, \"updatedCount\" = ?, retry_policy = ?, success_status = ? WHERE webhook_id = ?",
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
                sqlx::query("DELETE FROM webhook_event WHERE webhook_id = ?")
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
            sqlx::query("INSERT INTO webhook_event (event, webhook_id) VALUES (?, ?)")
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
                    sqlx::query("UPDATE webhook_usage SET consecutive_errors = 0 WHERE webhook_usage_id = ?")
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
        Ok((hook, change))
    }

    async fn get_webhook(&self, tenant_id: i64, id: i64) -> Result<Option<Webhook>> {
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = ? AND tenant_id = ?"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        row.as_ref().map(read_webhook).transpose()
    }

    async fn list_webhooks(&self, tenant_id: i64, filter: &WebhookFilter) -> Result<Vec<Webhook>> {
        let mut qb = list_webhooks_query(tenant_id, filter);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(read_webhook).collect()
    }

    async fn delete_webhook(&self, tenant_id: i64, id: i64) -> Result<bool> {
        let (_gate, mut tx) = self.begin_durable().await?;
        let n = sqlx::query("DELETE FROM webhook WHERE webhook_id = ? AND tenant_id = ?")
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if n > 0 {
            sqlx::query("UPDATE delivery SET status = 4, completed = ?, lease_until = NULL, lease_owner = NULL WHERE webhook_id = ? AND status IN (0, 1)")
                .bind(now_ticks())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    async fn webhook_usage(&self, tenant_id: i64, id: i64) -> Result<Option<WebhookUsage>> {
        let row = sqlx::query(
            "SELECT u.total_calls, u.total_errors, u.consecutive_errors, u.last_error FROM webhook_usage u \
             JOIN webhook w ON w.webhook_id = u.webhook_usage_id WHERE w.webhook_id = ? AND w.tenant_id = ?",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.reader)
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
        let (_gate, mut tx) = self.begin_durable().await?;
        let c = insert_event(&mut tx, actor, &event, now_ticks()).await?;
        tx.commit().await.map_err(db)?;
        Ok(c)
    }

    fn set_intake(&self, intake: Option<Arc<dyn crate::Intake>>) {
        crate::sqlite_writer::set_intake(&self.handoff, intake);
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Claim(req.clone(), reply)).await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn complete(
        &self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Complete {
            outcomes: outcomes.to_vec(),
            now,
            max_consecutive_errors,
            reply,
        })
        .await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn next_due(&self) -> Result<Option<Ticks>> {
        // Both walk a partial index in time order and stop at the first row of an Active
        // webhook, so they stay cheap with a large backlog. Only heads of chains can be due
        // (migration 0006).
        let due: Option<Ticks> = sqlx::query_scalar(
            "SELECT d.next_attempt_at FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
             WHERE d.status = 0 AND d.ready = 1 AND w.state = 1 ORDER BY d.next_attempt_at LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        let lease: Option<Ticks> = sqlx::query_scalar(
            "SELECT d.lease_until FROM delivery d WHERE d.status = 1 ORDER BY d.lease_until LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?
        .flatten();
        Ok(match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn release(&self, owner: &str) -> Result<u64> {
        // On the writer thread: it forgets the chains it follows in memory with them.
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Release(owner.to_owned(), reply)).await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn list_deliveries(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        let mut qb = list_deliveries_query(tenant_id, webhook_id, filter);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db)?;
        rows.iter().map(read_delivery).collect()
    }

    async fn get_delivery(
        &self,
        tenant_id: i64,
        webhook_id: i64,
        delivery_id: i64,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq WHERE d.tenant_id = ? AND d.webhook_id = ? AND d.delivery_id = ?"
        ))
        .bind(tenant_id)
        .bind(webhook_id)
        .bind(delivery_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let delivery = read_delivery(&row)?;
        // A first attempt that succeeded is kept in the delivery's row (migration 0005).
        let rows = sqlx::query(&format!(
            "SELECT first_attempt_id, event_id, 0, first_attempted_at, first_duration_us, last_status, NULL, \
             first_response_excerpt FROM delivery WHERE delivery_id = ?1 AND first_attempt_id IS NOT NULL \
             UNION ALL SELECT {ATTEMPT_COLS} FROM attempt WHERE delivery_id = ?1 ORDER BY 1"
        ))
        .bind(delivery_id)
        .fetch_all(&self.reader)
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
        let (_gate, mut tx) = self.begin_durable().await?;
        let hook = match load_webhook(&mut tx, webhook_id).await? {
            Some(h) if h.tenant_id == tenant_id => h,
            _ => return Err(StoreError::NotFound),
        };
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT e.event_seq, e.entity, e.primary_key, \
             (SELECT MAX(CASE WHEN d.status = 2 THEN 2 WHEN d.status IN (0, 1) THEN 1 ELSE 0 END) FROM delivery d WHERE d.event_seq = e.event_seq AND d.webhook_id = ",
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
        Ok(report)
    }

    async fn prune_events(&self, cutoff: Ticks, limit: i64) -> Result<u64> {
        let (_gate, mut tx) = self.begin_bookkeeping().await?;
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT e.event_seq FROM event e WHERE e.occurred < ? AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_seq = e.event_seq AND d.status IN (0, 1)) ORDER BY e.event_seq LIMIT ?",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for s in &seqs {
            sqlx::query("DELETE FROM attempt WHERE delivery_id IN (SELECT delivery_id FROM delivery WHERE event_seq = ?)")
                .bind(s)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM delivery WHERE event_seq = ?")
                .bind(s)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM event WHERE event_seq = ?")
                .bind(s)
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
        .fetch_all(&self.reader)
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
}
