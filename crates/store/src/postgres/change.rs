//! A change of a row, its event and deliveries: optimistically in one statement, or under the
//! row lock in a transaction.

use sqlx::postgres::Postgres;
use sqlx::QueryBuilder;

use super::db::db;
use super::fanout::{push_event_tail, read_event_tail};
use super::handoff::{leased_of, Leased};
use super::{PgStore, Tx};
use crate::entity::{ColumnKind, EntityDef, Row, Value};
use crate::model::*;
use crate::sql::columns::{column_list, read_row};
use crate::sql::plan::{created_event, plan_change, Planned};
use crate::sql::rows;
use crate::{now_ticks, ChangeFn, ChangeOutcome, Result};

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

impl PgStore {
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
        let current = {
            let mut conn = self.conn().await?;
            rows::get_row(&mut super::PgDb(&mut conn), actor.tenant_id, def, pk, true).await?
        };
        let version = current.as_ref().map(|r| {
            (
                r.get(def, "updatedCount").as_i64(),
                r.get(def, "updated").as_i64(),
            )
        });
        let now = now_ticks();
        let decided = change(current.as_ref())?;
        let planned = plan_change(def, actor, current, decided, now, &self.zone)?;
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
        let planned = plan_change(def, actor, current, decided, now, &self.zone)?;
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
                let event = created_event(def, &row, &self.zone);
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

    pub(super) async fn change_row(
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
}
