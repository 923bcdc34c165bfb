//! Group commit: every waiting change applied in one transaction, answered after its fsync.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OptionalExtension};

use super::db::{sql_err, sql_value};
use super::syncer::{Answers, SyncJob};
use super::writer::{Job, Writer};
use crate::entity::{EntityDef, Value};
use crate::model::*;
use crate::sql::columns::{column_list, read_row};
use crate::sql::plan::{created_event, plan_change, Planned};
use crate::{now_ticks, ChangeFn, ChangeOutcome, Result, StoreError};

/// The SQL of one entity table, built once.
pub(super) struct EntitySql {
    select: String,
    insert: String,
    update: String,
    delete: String,
}

impl Writer {
    /// Group commit: every waiting change in one transaction and one fsync. Expected refusals
    /// (not found, invalid, conflict) happen before a change writes anything, so the batch goes
    /// on; a database error may leave a change half-written, so it fails the whole batch
    /// (every caller gets an error, nothing is half-committed).
    pub(super) fn changes(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let batch = jobs.len();
        // The commit itself does not fsync: with a syncer, the syncer does, before answering.
        if let Err(e) = self.begin() {
            let why = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(why.clone())));
            }
            return;
        }
        let (done, broken) = self.apply_jobs(jobs);
        self.end_changes(done, broken, batch, started);
    }

    /// Applies a group commit's changes in the transaction in progress: their answers, and the
    /// database error that broke the batch, if one did. Expected refusals (not found, invalid,
    /// conflict) happen before a change writes anything, so the batch goes on.
    pub(super) fn apply_jobs(&mut self, jobs: Vec<Job>) -> (Answers, Option<String>) {
        self.open_handoff();
        let mut done: Answers = Vec::with_capacity(jobs.len());
        let mut broken: Option<String> = None;
        for job in jobs {
            if broken.is_some() {
                done.push((
                    job.reply,
                    Err(StoreError::Unavailable("batch aborted".into())),
                ));
                continue;
            }
            let result = self.apply(&job.actor, job.def, job.pk, job.change);
            if let Err(
                e @ (StoreError::Database(_)
                | StoreError::Engine(_)
                | StoreError::Unavailable(_)
                | StoreError::Corrupt(_)),
            ) = &result
            {
                broken = Some(e.to_string());
            }
            done.push((job.reply, result));
        }
        (done, broken)
    }

    /// Commits a group commit (or rolls it back when `broken`), hands its answers and
    /// deliveries to the syncer, or answers the error; whether it committed.
    pub(super) fn end_changes(
        &mut self,
        mut done: Answers,
        broken: Option<String>,
        batch: usize,
        started: Instant,
    ) -> bool {
        let commit_started = Instant::now();
        let mut failed = match broken {
            Some(why) => {
                self.rollback();
                tracing::warn!(error = %why, "a change failed in the database; its commit batch was rolled back");
                Some(why)
            }
            None => self.commit().err().map(|e| e.to_string()),
        };
        let committed = failed.is_none();
        if committed {
            metrics::histogram!("crmhooks_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        let handed = self.close_handoff(committed);
        tracing::debug!(
            batch,
            handed = handed.claimed.len(),
            total_us = started.elapsed().as_micros() as u64,
            commit_us = commit_started.elapsed().as_micros() as u64,
            "group commit"
        );
        if committed {
            if let Some(syncer) = self.syncer.clone() {
                match self.last_delivery_id() {
                    Ok(upto) => {
                        self.handed_upto = upto;
                        match syncer.send(SyncJob {
                            answers: done,
                            tasks: Vec::new(),
                            upto,
                            handed,
                            wait_for: None,
                        }) {
                            Ok(()) => return true,
                            Err(lost) => {
                                tracing::error!("the WAL syncer stopped");
                                // Committed all the same: the handed deliveries exist.
                                lost.0.handed.give();
                                done = lost.0.answers;
                                failed = Some("the WAL syncer stopped".into());
                            }
                        }
                    }
                    Err(e) => {
                        handed.give();
                        failed = Some(e.to_string());
                    }
                }
            } else {
                handed.give();
            }
        }
        for (reply, result) in done {
            let _ = reply.send(match &failed {
                None => result,
                Some(why) => Err(StoreError::Unavailable(format!(
                    "the change was not saved: {why}"
                ))),
            });
        }
        committed
    }

    pub(super) fn entity_sql(&mut self, def: &'static EntityDef) -> Arc<EntitySql> {
        self.sql
            .entry(def.table)
            .or_insert_with(|| {
                let cols = column_list(def);
                let pk = def.pk();
                let table = def.table;
                let marks = vec!["?"; def.columns.len() + 1].join(", ");
                let sets = def
                    .columns
                    .iter()
                    .skip(1)
                    .map(|c| format!("\"{}\" = ?", c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                Arc::new(EntitySql {
                    select: format!(
                        "SELECT {cols} FROM {table} WHERE tenant_id = ? AND \"{pk}\" = ?"
                    ),
                    insert: format!("INSERT INTO {table} (tenant_id, {cols}) VALUES ({marks})"),
                    update: format!(
                        "UPDATE {table} SET {sets} WHERE tenant_id = ? AND \"{pk}\" = ?"
                    ),
                    delete: format!("DELETE FROM {table} WHERE tenant_id = ? AND \"{pk}\" = ?"),
                })
            })
            .clone()
    }

    /// One change inside the group transaction: read, decide, write row, event and deliveries.
    pub(super) fn apply(
        &mut self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        mut change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let sql = self.entity_sql(def);
        let zone = &self.options.zone;
        let current = match pk {
            Some(pk) => self
                .conn
                .prepare_cached(&sql.select)
                .map_err(sql_err)?
                .query_row(params![actor.tenant_id, pk], |r| Ok(read_row(def, r)))
                .optional()
                .map_err(sql_err)?
                .transpose()?,
            None => None,
        };
        let now = now_ticks();
        let decided = change(current.as_ref())?;
        let (after, event) = match plan_change(def, actor, current, decided, now, zone)? {
            Planned::Nothing(row) => {
                return Ok(ChangeOutcome {
                    row,
                    committed: Committed::default(),
                })
            }
            Planned::Insert(mut row) => {
                let args = std::iter::once(SqlValue::Integer(actor.tenant_id.get()))
                    .chain(row.values.iter().map(sql_value));
                self.conn
                    .prepare_cached(&sql.insert)
                    .map_err(sql_err)?
                    .execute(params_from_iter(args))
                    .map_err(sql_err)?;
                let id = self.conn.last_insert_rowid();
                row.values[0] = Value::Int(id);
                let event = created_event(def, &row, zone);
                (Some(row), event)
            }
            Planned::Update { row, event } => {
                let args = row.values.iter().skip(1).map(sql_value).chain([
                    SqlValue::Integer(actor.tenant_id.get()),
                    SqlValue::Integer(event.primary_key),
                ]);
                self.conn
                    .prepare_cached(&sql.update)
                    .map_err(sql_err)?
                    .execute(params_from_iter(args))
                    .map_err(sql_err)?;
                (Some(row), event)
            }
            Planned::Delete { event } => {
                self.conn
                    .prepare_cached(&sql.delete)
                    .map_err(sql_err)?
                    .execute(params![actor.tenant_id, event.primary_key])
                    .map_err(sql_err)?;
                (None, event)
            }
        };
        let committed = self.insert_event(actor, event, now)?;
        Ok(ChangeOutcome {
            row: after,
            committed,
        })
    }
}
