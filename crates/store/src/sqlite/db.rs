//! The shared statements ([`crate::sql`]) on rusqlite: binding, reading rows, error mapping,
//! and [`Db`] for the writer (with its fan-out) and for readers.

use std::future::{ready, Future};

use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params, params_from_iter, Connection, ErrorCode, ToSql};

use super::writer::Writer;
use crate::entity::{Ticks, Value};
use crate::model::{Actor, Committed, NewEvent};
use crate::sql::{sqlite_placeholders, Arg, Db, DbRow, Fanout};
use crate::{DeliveryId, EventId, Result, StoreError, TenantId, WebhookId};

/// A delivery's stored EventId.
pub(super) fn event_id(delivery_id: DeliveryId, text: &str) -> Result<EventId> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}")))
}

pub(super) fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Int(i) | Value::Date(i) => SqlValue::Integer(*i),
        Value::Text(s) => SqlValue::Text(s.clone()),
    }
}

/// Maps a rusqlite error: a busy or locked database, I/O failures and a full disk are
/// `Unavailable` (503), the rest a database error.
pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::CannotOpen
                    | ErrorCode::ReadOnly
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Engine(e.to_string()),
    }
}

impl DbRow for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        self.get(i).map_err(sql_err)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.get(i).map_err(sql_err)
    }
    fn text(&self, i: usize) -> Result<String> {
        self.get(i).map_err(sql_err)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.get(i).map_err(sql_err)
    }
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => v.to_sql(),
            Arg::Text(v) => v.to_sql(),
        }
    }
}

/// Runs a shared statement on `conn` (from its statement cache).
pub(super) fn exec(conn: &Connection, sql: &str, args: &[Arg]) -> Result<u64> {
    let n = conn
        .prepare_cached(&sqlite_placeholders(sql))
        .map_err(sql_err)?
        .execute(params_from_iter(args.iter()))
        .map_err(sql_err)?;
    Ok(n as u64)
}

/// Runs a shared query on `conn` and reads each row with `read`.
pub(super) fn rows<T>(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    read: impl Fn(&dyn DbRow) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn
        .prepare_cached(&sqlite_placeholders(sql))
        .map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args.iter())).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(read(row)?);
    }
    Ok(out)
}

impl Db for Writer {
    fn exec(&mut self, sql: &str, args: Vec<Arg>) -> impl Future<Output = Result<u64>> + Send {
        ready(exec(&self.conn, sql, &args))
    }

    fn rows<T, F>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        read: F,
    ) -> impl Future<Output = Result<Vec<T>>> + Send
    where
        T: Send,
        F: Fn(&dyn DbRow) -> Result<T> + Send,
    {
        ready(rows(&self.conn, sql, &args, read))
    }

    fn lock_for_update(&self) -> &'static str {
        ""
    }

    fn lock_key_share(&self) -> &'static str {
        ""
    }
}

impl Fanout for Writer {
    fn emit(
        &mut self,
        actor: &Actor,
        ev: NewEvent,
        now: Ticks,
    ) -> impl Future<Output = Result<Committed>> + Send {
        ready(self.insert_event(actor, ev, now))
    }

    fn queue_again(
        &mut self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        seq: i64,
        order_key: &str,
        now: Ticks,
    ) -> impl Future<Output = Result<()>> + Send {
        // A head of its chain (`ready`) when nothing of the chain is open.
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, replay_of, ready) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?3, NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = ?2 \
                 AND p.order_key = ?4 AND p.status IN (0, 1)))",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    tenant_id,
                    webhook_id,
                    seq,
                    order_key,
                    EventId::new_v4().to_string(),
                    now
                ])
            })
            .map(drop)
            .map_err(sql_err);
        ready(inserted)
    }
}

/// A read-only connection of the reader pool.
pub(super) struct ReadConn(pub(super) Connection);

impl Db for ReadConn {
    fn exec(&mut self, sql: &str, args: Vec<Arg>) -> impl Future<Output = Result<u64>> + Send {
        ready(exec(&self.0, sql, &args))
    }

    fn rows<T, F>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        read: F,
    ) -> impl Future<Output = Result<Vec<T>>> + Send
    where
        T: Send,
        F: Fn(&dyn DbRow) -> Result<T> + Send,
    {
        ready(rows(&self.0, sql, &args, read))
    }

    fn lock_for_update(&self) -> &'static str {
        ""
    }

    fn lock_key_share(&self) -> &'static str {
        ""
    }
}
