//! The shared statements ([`crate::sql`]) on sqlx's PostgreSQL driver: binding, reading rows,
//! and [`Db`] for a connection or transaction (with this backend's fan-out).

use std::future::Future;

use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};
use sqlx::query::Query;
use uuid::Uuid;

use super::group;
use crate::entity::Ticks;
use crate::model::{Actor, Committed, NewEvent};
use crate::sql::{Arg, Db, DbRow, Fanout};
use crate::{Result, StoreError};
use crate::{TenantId, WebhookId};

pub(super) fn db(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e)
}

impl DbRow for PgRow {
    fn int(&self, i: usize) -> Result<i64> {
        sqlx::Row::try_get(self, i).map_err(db)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        sqlx::Row::try_get(self, i).map_err(db)
    }
    fn text(&self, i: usize) -> Result<String> {
        sqlx::Row::try_get(self, i).map_err(db)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        sqlx::Row::try_get(self, i).map_err(db)
    }
}

fn bind(
    mut q: Query<'_, Postgres, PgArguments>,
    args: Vec<Arg>,
) -> Query<'_, Postgres, PgArguments> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
        };
    }
    q
}

/// A connection or transaction of this backend, for the shared statements.
pub(super) struct PgDb<'c>(pub(super) &'c mut PgConnection);

impl Db for PgDb<'_> {
    async fn exec(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        let done = bind(sqlx::query(sql), args)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn rows<T, F>(&mut self, sql: &str, args: Vec<Arg>, read: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(&dyn DbRow) -> Result<T> + Send,
    {
        let rows = bind(sqlx::query(sql), args)
            .fetch_all(&mut *self.0)
            .await
            .map_err(db)?;
        rows.iter().map(|r| read(r)).collect()
    }

    fn lock_for_update(&self) -> &'static str {
        " FOR NO KEY UPDATE"
    }

    fn lock_key_share(&self) -> &'static str {
        // A webhook deleted meanwhile waits for this transaction, then cancels what it queued.
        " FOR KEY SHARE"
    }
}

impl Fanout for PgDb<'_> {
    fn emit(
        &mut self,
        actor: &Actor,
        ev: NewEvent,
        now: Ticks,
    ) -> impl Future<Output = Result<Committed>> + Send {
        group::emit(self.0, actor, ev, now)
    }

    fn queue_again(
        &mut self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        seq: i64,
        order_key: &str,
        now: Ticks,
    ) -> impl Future<Output = Result<()>> + Send {
        let args = crate::sql::args![
            tenant_id,
            webhook_id,
            seq,
            order_key,
            Uuid::new_v4().hyphenated().to_string(),
            now
        ];
        // Marked as its chain's head when nothing of the chain is open (migration 0010).
        async move {
            self.exec(
                "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, replay_of, head) \
                 SELECT $1, $2, $3, $4, $5, $6, $6, $6, $3, NOT EXISTS (SELECT 1 FROM delivery p \
                 WHERE p.webhook_id = $2 AND p.order_key = $4 AND p.status IN (0, 1))",
                args,
            )
            .await
            .map(drop)
        }
    }

    fn queue_again_all(
        &mut self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        events: Vec<(i64, String)>,
        now: Ticks,
    ) -> impl Future<Output = Result<()>> + Send {
        // One statement for the batch: a round trip per event made a replay of 20,000 events
        // take seconds longer on a busy server. The first of each chain, when nothing of it is
        // open, is marked as its head (migration 0010).
        let (seqs, keys): (Vec<i64>, Vec<String>) = events.into_iter().unzip();
        async move {
            sqlx::query(
                "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, next_attempt_at, created, replay_of, head) \
                 SELECT $1, $2, u.seq, u.order_key, gen_random_uuid()::text, $5, $5, $5, u.seq, \
                 ROW_NUMBER() OVER (PARTITION BY u.order_key ORDER BY u.ord) = 1 AND NOT EXISTS (SELECT 1 FROM delivery p \
                 WHERE p.webhook_id = $2 AND p.order_key = u.order_key AND p.status IN (0, 1)) \
                 FROM UNNEST($3::BIGINT[], $4::TEXT[]) WITH ORDINALITY AS u(seq, order_key, ord) ORDER BY u.ord",
            )
            .bind(tenant_id)
            .bind(webhook_id)
            .bind(seqs)
            .bind(keys)
            .bind(now)
            .execute(&mut *self.0)
            .await
            .map(drop)
            .map_err(db)
        }
    }
}
