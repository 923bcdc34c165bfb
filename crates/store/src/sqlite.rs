//! The SQLite store: WAL, one writer connection (SQLite has one writer anyway; a single
//! connection turns lock contention into a queue), a pool of readers.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value as Json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::common::read_actor;
use crate::common::{
    column_list, disable_reason, field_values, list_deliveries_query, list_webhooks_query,
    local_offset, map_text, read_attempt, read_delivery, read_event, read_row, read_webhook,
    replay_order_key, state_event, usage_last_error, ATTEMPT_COLS, DELIVERY_COLS, EVENT_COLS,
    WEBHOOK_COLS,
};
use crate::entity::{validate, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::{
    hash_key, now_ticks, Change, ChangeFn, ChangeOutcome, ClaimRequest, OpenOptions, Result, Store,
    StoreError,
};

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    local_offset: time::UtcOffset,
    committer: mpsc::Sender<Job>,
    durable_begin: &'static str,
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
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect.read_only(true))
            .await
            .map_err(db)?;
        let offset = local_offset();
        let durable_begin = if options.synchronous_full {
            "PRAGMA synchronous = FULL; BEGIN IMMEDIATE"
        } else {
            "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE"
        };
        let (committer_tx, committer_rx) = mpsc::channel(GROUP_MAX * 4);
        tokio::spawn(committer(
            writer.clone(),
            offset,
            durable_begin,
            committer_rx,
        ));
        Ok(SqliteStore {
            writer,
            reader,
            local_offset: offset,
            committer: committer_tx,
            durable_begin,
        })
    }

    /// A write transaction whose commit is durable (`synchronous` as configured, FULL by
    /// default): changes a client was told are saved.
    async fn begin_durable(&self) -> Result<Tx<'_>> {
        self.writer.begin_with(self.durable_begin).await.map_err(db)
    }

    /// A write transaction for the dispatcher's bookkeeping (leases, attempts, counters):
    /// `synchronous = NORMAL`, no fsync of its own. A process crash loses nothing (the WAL is in
    /// the OS cache); a power loss can roll back the last of these, which at worst sends a
    /// delivery again (at-least-once). The next durable commit fsyncs the WAL, these frames
    /// included, so durable changes never depend on lost bookkeeping.
    async fn begin_bookkeeping(&self) -> Result<Tx<'_>> {
        self.writer
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await
            .map_err(db)
    }
}

fn push_value(b: &mut sqlx::query_builder::Separated<'_, '_, Sqlite, &str>, v: &Value) {
    match v {
        Value::Null => b.push_bind(None::<i64>),
        Value::Int(i) | Value::Date(i) => b.push_bind(*i),
        Value::Text(s) => b.push_bind(s.clone()),
    };
}

/// Appends an event and one delivery per Active webhook of the tenant subscribed to it.
async fn insert_event(
    tx: &mut Tx<'_>,
    actor: &Actor,
    ev: &NewEvent,
    now: Ticks,
) -> Result<Committed> {
    let changes = Json::from(ev.changes.clone()).to_string();
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
    .bind(map_text(&ev.field_values))
    .bind(actor.associate_id)
    .bind(now)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    // Fan-out in one statement: a delivery per Active subscribed webhook of the tenant, each with
    // a random version-4 EventId made by SQLite.
    let deliveries = sqlx::query(
        "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created) \
         SELECT w.tenant_id, w.webhook_id, ?1, ?2, \
         lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-' || \
         substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))), \
         ?3, ?3, ?3 FROM webhook_event we JOIN webhook w ON w.webhook_id = we.webhook_id \
         WHERE we.event = ?4 AND w.tenant_id = ?5 AND w.state = 1 AND w.type = 'webhook' ORDER BY w.webhook_id",
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
    // 9 parameters a row; stay well under SQLite's 32766.
    for chunk in hooks.chunks(1000) {
        let mut qb = QueryBuilder::<Sqlite>::new(
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

async fn tenant_name(tx: &mut Tx<'_>, tenant_id: i64) -> Result<String> {
    sqlx::query_scalar("SELECT name FROM tenant WHERE tenant_id = ?")
        .bind(tenant_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)
}

impl SqliteStore {
    /// Sets a webhook's state inside `tx` and fires its state event.
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
        sqlx::query("UPDATE webhook SET state = ?, updated = ?, updated_associate_id = ?, \"updatedCount\" = \"updatedCount\" + 1 WHERE webhook_id = ?")
            .bind(state as i64)
            .bind(now)
            .bind(actor.associate_id)
            .bind(hook.id)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        self.fire_state_event(tx, hook, actor, now).await
    }

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

/// One change inside a (group) transaction: read, decide, write row, event and deliveries.
async fn apply_in(
    tx: &mut Tx<'_>,
    local_offset: time::UtcOffset,
    actor: &Actor,
    def: &'static EntityDef,
    pk: Option<i64>,
    change: ChangeFn,
) -> Result<ChangeOutcome> {
    let current = match pk {
        Some(pk) => {
            let sql = format!(
                "SELECT {} FROM {} WHERE tenant_id = ? AND \"{}\" = ?",
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
    let set_bookkeeping = |row: &mut Row, count: i64| {
        row.set(def, "updated", Value::Date(now));
        row.set(def, "updated_associate_id", Value::Int(actor.associate_id));
        row.set(def, "updatedCount", Value::Int(count));
    };
    let (after, event) = match decided {
        Change::Nothing => {
            return Ok(ChangeOutcome {
                row: current,
                committed: Committed::default(),
            })
        }
        Change::Create(mut row) => {
            row.values[0] = Value::Null;
            row.set(
                def,
                "registered",
                Value::Date(now - now % crate::entity::TICKS_PER_SECOND),
            );
            row.set(
                def,
                "registered_associate_id",
                Value::Int(actor.associate_id),
            );
            set_bookkeeping(&mut row, 0);
            validate(def, &row)?;
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {} (tenant_id, {}) ",
                def.table,
                column_list(def)
            ));
            qb.push_values(std::iter::once(&row), |mut b, row| {
                b.push_bind(actor.tenant_id);
                for v in &row.values {
                    push_value(&mut b, v);
                }
            });
            qb.push(format!(" RETURNING \"{}\"", def.pk()));
            let id: i64 = qb
                .build_query_scalar()
                .fetch_one(&mut **tx)
                .await
                .map_err(db)?;
            row.values[0] = Value::Int(id);
            let ev = NewEvent {
                event: format!("{}.created", def.entity),
                entity: def.entity.to_owned(),
                primary_key: id,
                changes: def.created_changes(),
                values: None,
                field_values: Some(field_values(def, &row, local_offset)),
                order_key: format!("{}:{id}", def.entity),
            };
            (Some(row), ev)
        }
        Change::Update { mut row, verb } => {
            let before = current.ok_or(StoreError::NotFound)?;
            row.values[0] = before.values[0].clone();
            // Bookkeeping comes from the stored row; the caller cannot set it.
            for name in def
                .bookkeeping
                .iter()
                .chain(["registered", "registered_associate_id"].iter())
            {
                row.set(def, name, before.get(def, name).clone());
            }
            if def.diff(&before, &row).is_empty() {
                return Ok(ChangeOutcome {
                    row: Some(before),
                    committed: Committed::default(),
                });
            }
            let count = (before.get(def, "updatedCount").as_i64() + 1) % 65536;
            set_bookkeeping(&mut row, count);
            validate(def, &row)?;
            let changes = def.diff(&before, &row);
            let mut qb = QueryBuilder::<Sqlite>::new(format!("UPDATE {} SET ", def.table));
            {
                let mut sep = qb.separated(", ");
                for (col, v) in def.columns.iter().zip(&row.values).skip(1) {
                    sep.push(format!("\"{}\" = ", col.name));
                    match v {
                        Value::Null => sep.push_bind_unseparated(None::<i64>),
                        Value::Int(i) | Value::Date(i) => sep.push_bind_unseparated(*i),
                        Value::Text(s) => sep.push_bind_unseparated(s.clone()),
                    };
                }
            }
            let pk_value = before.values[0].as_i64();
            qb.push(" WHERE tenant_id = ");
            qb.push_bind(actor.tenant_id);
            qb.push(format!(" AND \"{}\" = ", def.pk()));
            qb.push_bind(pk_value);
            qb.build().execute(&mut **tx).await.map_err(db)?;
            let ev = NewEvent {
                event: format!("{}.{verb}", def.entity),
                entity: def.entity.to_owned(),
                primary_key: pk_value,
                changes,
                values: None,
                field_values: Some(field_values(def, &row, local_offset)),
                order_key: format!("{}:{pk_value}", def.entity),
            };
            (Some(row), ev)
        }
        Change::Delete => {
            let before = current.ok_or(StoreError::NotFound)?;
            let pk_value = before.values[0].as_i64();
            sqlx::query(&format!(
                "DELETE FROM {} WHERE tenant_id = ? AND \"{}\" = ?",
                def.table,
                def.pk()
            ))
            .bind(actor.tenant_id)
            .bind(pk_value)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
            let mut values = Map::new();
            for name in def.deleted_values {
                values.insert(
                    (*name).to_owned(),
                    Json::from(before.get(def, name).as_i64()),
                );
            }
            let ev = NewEvent {
                event: format!("{}.deleted", def.entity),
                entity: def.entity.to_owned(),
                primary_key: pk_value,
                changes: Vec::new(),
                values: Some(values),
                field_values: Some(field_values(def, &before, local_offset)),
                order_key: format!("{}:{pk_value}", def.entity),
            };
            (None, ev)
        }
    };
    let committed = insert_event(tx, actor, &event, now).await?;
    Ok(ChangeOutcome {
        row: after,
        committed,
    })
}

/// A change waiting for the group committer.
struct Job {
    actor: Actor,
    def: &'static EntityDef,
    pk: Option<i64>,
    change: ChangeFn,
    reply: oneshot::Sender<Result<ChangeOutcome>>,
}

/// Most changes committed in one transaction.
const GROUP_MAX: usize = 512;

/// Group commit: every change waiting when the writer is free goes into one transaction (each
/// in its own savepoint, so one failing change does not undo the others), and one fsync makes
/// them all durable. Under light load a batch is a single change, so nothing waits for a batch
/// to fill; under heavy load the commit cost is shared.
async fn committer(
    pool: SqlitePool,
    local_offset: time::UtcOffset,
    durable_begin: &'static str,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let batch = jobs.len();
        let mut tx = match pool.begin_with(durable_begin).await {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
                continue;
            }
        };
        // Expected refusals (not found, invalid, conflict) happen before a change writes
        // anything, so the batch goes on; a database error may leave a change half-written, so
        // it fails the whole batch (every caller gets an error, nothing is half-committed).
        let mut done = Vec::with_capacity(jobs.len());
        let mut broken: Option<String> = None;
        for job in jobs {
            if broken.is_some() {
                done.push((
                    job.reply,
                    Err(StoreError::Unavailable("batch aborted".into())),
                ));
                continue;
            }
            let result = apply_in(
                &mut tx,
                local_offset,
                &job.actor,
                job.def,
                job.pk,
                job.change,
            )
            .await;
            if let Err(
                StoreError::Database(_) | StoreError::Unavailable(_) | StoreError::Corrupt(_),
            ) = &result
            {
                broken = result.as_ref().err().map(ToString::to_string);
            }
            done.push((job.reply, result));
        }
        if let Some(why) = broken {
            let _ = tx.rollback().await;
            tracing::warn!(error = %why, "a change failed in the database; its commit batch was rolled back");
            for (reply, _) in done {
                let _ = reply.send(Err(StoreError::Unavailable(format!(
                    "the change was not saved: {why}"
                ))));
            }
            continue;
        }
        let commit_started = std::time::Instant::now();
        let committed = tx.commit().await;
        tracing::debug!(
            batch,
            total_us = started.elapsed().as_micros() as u64,
            commit_us = commit_started.elapsed().as_micros() as u64,
            "group commit"
        );
        match committed {
            Ok(()) => {
                for (reply, result) in done {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let msg = format!("commit failed: {e}");
                for (reply, _) in done {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
    }
}

impl SqliteStore {
    /// Usage, delivery state (unless already marked delivered) and the state machine for one
    /// attempt of a webhook that had a failure in this batch.
    async fn complete_one(
        &self,
        tx: &mut Tx<'_>,
        o: &AttemptOutcome,
        now: Ticks,
        max_consecutive_errors: i64,
        changes: &mut Vec<StateChange>,
    ) -> Result<()> {
        let consecutive: Option<i64> = if o.verdict == Verdict::Delivered {
            sqlx::query("UPDATE webhook_usage SET total_calls = total_calls + 1, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                .bind(o.webhook_id)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
            None
        } else {
            sqlx::query_scalar(
                "UPDATE webhook_usage SET total_calls = total_calls + 1, total_errors = total_errors + 1, \
                 consecutive_errors = consecutive_errors + 1, last_error = ?, updated = ? WHERE webhook_usage_id = ? RETURNING consecutive_errors",
            )
            .bind(usage_last_error(o))
            .bind(now)
            .bind(o.webhook_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        };
        let status = o.status_code.map(i64::from);
        let q = match &o.verdict {
            Verdict::Delivered => None,
            Verdict::RetryAt(at) => Some(
                sqlx::query(
                    "UPDATE delivery SET status = 0, attempt_in_cycle = attempt_in_cycle + 1, next_attempt_at = ?, attempts = attempts + 1, last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                )
                .bind(*at)
                .bind(status)
                .bind(&o.error)
                .bind(o.delivery_id),
            ),
            Verdict::Requeue(at) => Some(
                sqlx::query(
                    "UPDATE delivery SET status = 0, attempt_in_cycle = 0, cycles = cycles + 1, event_id = ?, queue_pos = ?, next_attempt_at = ?, attempts = attempts + 1, last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(now)
                .bind(*at)
                .bind(status)
                .bind(&o.error)
                .bind(o.delivery_id),
            ),
            Verdict::Gone => Some(
                sqlx::query(
                    "UPDATE delivery SET status = 3, completed = ?, attempts = attempts + 1, last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                )
                .bind(now)
                .bind(status)
                .bind(&o.error)
                .bind(o.delivery_id),
            ),
        };
        if let Some(q) = q {
            q.execute(&mut **tx).await.map_err(db)?;
        }
        let disable =
            o.verdict == Verdict::Gone || consecutive.is_some_and(|n| n >= max_consecutive_errors);
        if disable {
            if let Some(mut hook) = load_webhook(tx, o.webhook_id).await? {
                if hook.state == WebhookState::Active {
                    let from = hook.state;
                    let tenant = tenant_name(tx, hook.tenant_id).await?;
                    let actor = Actor::system(hook.tenant_id, &tenant);
                    self.set_state(tx, &mut hook, WebhookState::TooManyErrors, &actor, now)
                        .await?;
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
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, name: &str) -> Result<i64> {
        let mut tx = self.begin_durable().await?;
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
        let job = Job {
            actor: actor.clone(),
            def,
            pk,
            change,
            reply,
        };
        self.committer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the commit queue is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the committer stopped".into()))?
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
        let mut tx = self.begin_durable().await?;
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
        let mut tx = self.begin_durable().await?;
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
        let mut tx = self.begin_durable().await?;
        let c = insert_event(&mut tx, actor, &event, now_ticks()).await?;
        tx.commit().await.map_err(db)?;
        Ok(c)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        let claim_started = std::time::Instant::now();
        let mut tx = self.begin_bookkeeping().await?;
        let mut qb = QueryBuilder::<Sqlite>::new("UPDATE delivery SET status = 1, lease_until = ");
        qb.push_bind(req.lease_until)
            .push(", lease_owner = ")
            .push_bind(req.owner.clone())
            .push(
                " WHERE delivery_id IN (SELECT r.delivery_id FROM (SELECT c.delivery_id, c.queue_pos, \
                 ROW_NUMBER() OVER (PARTITION BY c.webhook_id ORDER BY c.queue_pos, c.delivery_id) AS rn \
                 FROM (SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
                 WHERE d.status IN (0, 1) AND ((d.status = 0 AND d.next_attempt_at <= ",
            )
            .push_bind(req.now)
            .push(") OR (d.status = 1 AND d.lease_until < ")
            .push_bind(req.now)
            .push(
                ")) AND w.state = 1 AND NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = d.webhook_id \
                 AND p.order_key = d.order_key AND p.status IN (0, 1) AND p.delivery_id < d.delivery_id)",
            );
        if !req.skip_webhooks.is_empty() {
            qb.push(" AND d.webhook_id NOT IN (");
            let mut sep = qb.separated(", ");
            for id in &req.skip_webhooks {
                sep.push_bind(*id);
            }
            qb.push(")");
        }
        // Rank within a window of candidates so one webhook never takes more than its share.
        qb.push(" ORDER BY d.queue_pos, d.delivery_id LIMIT ")
            .push_bind(req.limit.saturating_mul(4))
            .push(") c) r WHERE r.rn <= ")
            .push_bind(req.max_per_webhook)
            .push(" ORDER BY r.queue_pos, r.delivery_id LIMIT ")
            .push_bind(req.limit)
            .push(") RETURNING delivery_id, event_id, attempt_in_cycle, event_seq, webhook_id, tenant_id");
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(db)?;
        if rows.is_empty() {
            tx.commit().await.map_err(db)?;
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut hooks: std::collections::HashMap<i64, Webhook> = std::collections::HashMap::new();
        let mut tenants: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
        let mut seqs: Vec<i64> = rows
            .iter()
            .filter_map(|r| r.try_get::<i64, _>(3).ok())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut events = std::collections::HashMap::new();
        for chunk in seqs.chunks(500) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {EVENT_COLS} FROM event WHERE event_seq IN ("
            ));
            let mut sep = qb.separated(", ");
            for s in chunk {
                sep.push_bind(*s);
            }
            qb.push(")");
            for r in qb.build().fetch_all(&mut *tx).await.map_err(db)? {
                let ev = read_event(&r)?;
                events.insert(ev.seq, ev);
            }
        }
        for r in &rows {
            let delivery_id: i64 = r.try_get(0).map_err(db)?;
            let event_id: String = r.try_get(1).map_err(db)?;
            let webhook_id: i64 = r.try_get(4).map_err(db)?;
            let tenant_id: i64 = r.try_get(5).map_err(db)?;
            let seq: i64 = r.try_get(3).map_err(db)?;
            if let std::collections::hash_map::Entry::Vacant(slot) = hooks.entry(webhook_id) {
                if let Some(h) = load_webhook(&mut tx, webhook_id).await? {
                    slot.insert(h);
                }
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = tenants.entry(tenant_id) {
                slot.insert(tenant_name(&mut tx, tenant_id).await?);
            }
            let (Some(hook), Some(event)) = (hooks.get(&webhook_id), events.get(&seq)) else {
                continue;
            };
            out.push(Claimed {
                delivery_id,
                event_id: Uuid::parse_str(&event_id).map_err(|e| {
                    StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}"))
                })?,
                attempt_in_cycle: r.try_get(2).map_err(db)?,
                event: event.clone(),
                tenant: tenants.get(&tenant_id).cloned().unwrap_or_default(),
                webhook: hook.clone(),
            });
        }
        tx.commit().await.map_err(db)?;
        tracing::debug!(
            claimed = out.len(),
            total_us = claim_started.elapsed().as_micros() as u64,
            "claim"
        );
        Ok(out)
    }

    async fn complete(
        &self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        let complete_started = std::time::Instant::now();
        let mut tx = self.begin_bookkeeping().await?;
        let mut changes = Vec::new();
        // Every attempt, in one statement per 500.
        for chunk in outcomes.chunks(500) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO attempt (delivery_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt) ",
            );
            qb.push_values(chunk, |mut b, o| {
                b.push_bind(o.delivery_id)
                    .push_bind(o.event_id.to_string())
                    .push_bind(o.retry)
                    .push_bind(o.attempted_at)
                    .push_bind(o.duration_us)
                    .push_bind(o.status_code.map(i64::from))
                    .push_bind(o.error.clone())
                    .push_bind(o.response_excerpt.clone());
            });
            qb.build().execute(&mut *tx).await.map_err(db)?;
        }
        // Successes: one statement per status code and 900 deliveries.
        let mut delivered: std::collections::BTreeMap<Option<u16>, Vec<i64>> =
            std::collections::BTreeMap::new();
        for o in outcomes.iter().filter(|o| o.verdict == Verdict::Delivered) {
            delivered
                .entry(o.status_code)
                .or_default()
                .push(o.delivery_id);
        }
        for (status, ids) in &delivered {
            for chunk in ids.chunks(900) {
                let mut qb =
                    QueryBuilder::<Sqlite>::new("UPDATE delivery SET status = 2, completed = ");
                qb.push_bind(now)
                    .push(", attempts = attempts + 1, last_status = ")
                    .push_bind(status.map(i64::from))
                    .push(", last_error = NULL, lease_until = NULL, lease_owner = NULL WHERE status = 1 AND delivery_id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await.map_err(db)?;
            }
        }
        // Usage and the state machine, per webhook in attempt order.
        let mut by_hook: std::collections::BTreeMap<i64, Vec<&AttemptOutcome>> =
            std::collections::BTreeMap::new();
        for o in outcomes {
            by_hook.entry(o.webhook_id).or_default().push(o);
        }
        for (webhook_id, list) in by_hook {
            if list.iter().all(|o| o.verdict == Verdict::Delivered) {
                sqlx::query("UPDATE webhook_usage SET total_calls = total_calls + ?, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                    .bind(list.len() as i64)
                    .bind(webhook_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                continue;
            }
            for o in list {
                self.complete_one(&mut tx, o, now, max_consecutive_errors, &mut changes)
                    .await?;
            }
        }
        tx.commit().await.map_err(db)?;
        tracing::debug!(
            recorded = outcomes.len(),
            total_us = complete_started.elapsed().as_micros() as u64,
            "complete"
        );
        Ok(changes)
    }

    async fn next_due(&self) -> Result<Option<Ticks>> {
        // Both walk a partial index in time order and stop at the first row of an Active
        // webhook, so they stay cheap with a large backlog.
        let due: Option<Ticks> = sqlx::query_scalar(
            "SELECT d.next_attempt_at FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
             WHERE d.status = 0 AND w.state = 1 ORDER BY d.next_attempt_at LIMIT 1",
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
        let n = sqlx::query("UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL WHERE status = 1 AND lease_owner = ?")
            .bind(owner)
            .execute(&self.writer)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(n)
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
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempt WHERE delivery_id = ? ORDER BY attempt_id"
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
        let mut tx = self.begin_durable().await?;
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
        let mut tx = self.begin_bookkeeping().await?;
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
        let rows =
            sqlx::query("SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status")
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
