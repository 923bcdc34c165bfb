//! The SQL both backends share: tenants and keys, webhook definitions, the delivery log,
//! retention and replay are written once here, as `async` functions over [`Db`], and run on
//! PostgreSQL (a sqlx connection or transaction) and on SQLite (the writer thread's connection
//! for writes, a reader's for reads; their futures are ready at once and are driven by
//! [`block_on`]). The hot paths (a change with its fan-out, claims, attempt records) stay
//! with each backend, where they are tuned to it.
//!
//! Statements are written with PostgreSQL's `$1` placeholders, which SQLite reads as `?1`
//! ([`sqlite_placeholders`]); casts use `CAST(… AS BIGINT)`, which both understand.

pub(crate) mod audit;
pub(crate) mod columns;
pub(crate) mod keys;
pub(crate) mod log;
pub(crate) mod plan;
pub(crate) mod replay;
pub(crate) mod retention;
pub(crate) mod rows;
pub(crate) mod secrets;
pub(crate) mod webhooks;

use std::borrow::Cow;
use std::future::Future;

use crate::entity::Ticks;
use crate::ids::{ContactId, DeliveryId, EventId, TenantId, WebhookId};
use crate::model::{Actor, Committed, NewEvent};
use crate::Result;

/// A value bound to a statement. NULLs carry their type: PostgreSQL infers a parameter's type
/// from what is bound.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}

macro_rules! id_args {
    ($($id:ty),*) => {$(
        impl From<$id> for Arg {
            fn from(v: $id) -> Self {
                Arg::Int(Some(v.get()))
            }
        }

        impl From<Option<$id>> for Arg {
            fn from(v: Option<$id>) -> Self {
                Arg::Int(v.map(<$id>::get))
            }
        }
    )*};
}
id_args!(TenantId, ContactId, WebhookId, DeliveryId);

/// An EventId is stored as its hyphenated text.
impl From<EventId> for Arg {
    fn from(v: EventId) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}

/// The arguments of a statement, each converted with [`Arg::from`].
macro_rules! args {
    ($($e:expr),* $(,)?) => { vec![$($crate::sql::Arg::from($e)),*] };
}
pub(crate) use args;

/// Reads columns of either backend's rows by position, with the store's error mapping.
pub(crate) trait DbRow {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;

    /// A stored EventId (its text).
    fn event_id(&self, i: usize) -> Result<EventId> {
        let text = self.text(i)?;
        text.parse()
            .map_err(|e| crate::StoreError::Corrupt(format!("event id {text:?}: {e}")))
    }
}

/// The columns of `row` from `offset` on, for reading one record out of a wider row.
pub(crate) struct At<'a, R: ?Sized>(pub &'a R, pub usize);

impl<R: DbRow + ?Sized> DbRow for At<'_, R> {
    fn int(&self, i: usize) -> Result<i64> {
        self.0.int(self.1 + i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.0.opt_int(self.1 + i)
    }
    fn text(&self, i: usize) -> Result<String> {
        self.0.text(self.1 + i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.0.opt_text(self.1 + i)
    }
}

/// A connection (or transaction) the shared statements run on.
pub(crate) trait Db: Send {
    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: Vec<Arg>) -> impl Future<Output = Result<u64>> + Send;

    /// Runs a query and reads each row with `read`.
    fn rows<T, F>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        read: F,
    ) -> impl Future<Output = Result<Vec<T>>> + Send
    where
        T: Send,
        F: Fn(&dyn DbRow) -> Result<T> + Send;

    /// The row lock a read takes before the row is changed in the same transaction
    /// (` FOR NO KEY UPDATE` on PostgreSQL; nothing on SQLite, whose writer is alone).
    fn lock_for_update(&self) -> &'static str;

    /// The row lock that keeps a row from being deleted until the transaction ends.
    fn lock_key_share(&self) -> &'static str;

    /// The first row, if any.
    fn row<T, F>(
        &mut self,
        sql: &str,
        args: Vec<Arg>,
        read: F,
    ) -> impl Future<Output = Result<Option<T>>> + Send
    where
        T: Send,
        F: Fn(&dyn DbRow) -> Result<T> + Send,
    {
        let rows = self.rows(sql, args, read);
        async move { Ok(rows.await?.into_iter().next()) }
    }
}

/// A write transaction that can append events: each backend fans an event out to its
/// subscribers in its own tuned way.
pub(crate) trait Fanout: Db {
    /// Appends `ev` (by `actor`, at `now`) and one delivery per Active subscribed webhook.
    fn emit(
        &mut self,
        actor: &Actor,
        ev: NewEvent,
        now: Ticks,
    ) -> impl Future<Output = Result<Committed>> + Send;

    /// Queues event `seq` again for one webhook (a replay), behind what is open of its chain.
    fn queue_again(
        &mut self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        seq: i64,
        order_key: &str,
        now: Ticks,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Queues each `(seq, order_key)` of `events` again for one webhook, in that order (a
    /// replay's batch); by default one at a time.
    fn queue_again_all(
        &mut self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        events: Vec<(i64, String)>,
        now: Ticks,
    ) -> impl Future<Output = Result<()>> + Send
    where
        Self: Send,
    {
        async move {
            for (seq, order_key) in &events {
                self.queue_again(tenant_id, webhook_id, *seq, order_key, now)
                    .await?;
            }
            Ok(())
        }
    }
}

/// Drives a future whose every step is ready at once: the shared statements on a SQLite
/// connection, which answers synchronously.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// `sql` with PostgreSQL's `$1` placeholders written as SQLite's `?1`. (SQLite would read `$1`
/// as a named parameter, numbered in order of first use, not by its digits.)
pub(crate) fn sqlite_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A statement built at run time, numbering its placeholders as values are bound.
pub(crate) struct Query {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Query {
    pub fn new(sql: impl Into<String>) -> Self {
        Query {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        self.sql.push_str(&format!("${}", self.args.len()));
        self
    }
}

/// `$from, $from+1, …` for `n` values: an `IN (…)` list both backends take.
pub(crate) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_numbered_question_marks() {
        assert_eq!(
            super::sqlite_placeholders("SELECT $2, $10 FROM t WHERE a = $1"),
            "SELECT ?2, ?10 FROM t WHERE a = ?1"
        );
        assert_eq!(super::sqlite_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(super::placeholders(3, 2), "$3, $4");
    }
}
