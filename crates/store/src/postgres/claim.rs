//! Claims across nodes, what is due next, and giving leases back.

use std::sync::Arc;

use sqlx::postgres::PgRow;
use sqlx::Row as _;

use super::db::db;
use super::notify::notify_nodes;
use super::PgStore;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::{
    count_cols, qualified, read_event, read_webhook, EVENT_COLS, WEBHOOK_COLS,
};
use crate::sql::{At, DbRow as _};
use crate::{ClaimRequest, DeliveryId, Result, StoreError};

/// Advisory lock key that serializes claims across nodes ("crmhooks" in ASCII).
const CLAIM_LOCK: i64 = 0x6372_6d68_6f6f_6b73;

/// Planner settings for the statements that walk the queue, set for their transaction only (a
/// `DO` block ahead of them in the same simple query; the claim's function, migration 0004,
/// carries them as its own). The queue changes faster than its statistics follow: with the
/// estimates of a delivery table analyzed while it was small, the planner gathered every
/// pending row and sorted them instead of walking `delivery_pending` in queue order and
/// stopping at the limit (docs/performance.md has the figures). Sorts and bitmap scans off make
/// the ordered index walk the plan; JIT off because those settings' cost penalties would
/// otherwise trigger a JIT compilation per statement.
const PLANNER_FOR_QUEUES: &str = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL jit = off;";

/// A text value as an SQL expression that no setting or content can break out of (for the
/// simple query protocol, which takes no parameters).
fn text_literal(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
}

/// What a claim selects from the rows it leased (`upd`, with `event_seq`, `webhook_id` and
/// `tenant_id`) joined to their event `e`, webhook `w` and tenant `t`.
pub(super) fn claimed_cols() -> String {
    format!(
        "u.delivery_id, u.event_id, u.attempt_in_cycle, u.queue_pos, t.name, {}, {}",
        qualified(EVENT_COLS, "e"),
        qualified(WEBHOOK_COLS, "w")
    )
}

/// Rows of [`claimed_cols`], each with its queue position.
pub(super) fn read_claimed(rows: &[PgRow], keys: &crate::Keyring) -> Result<Vec<(i64, Claimed)>> {
    let event_at = 5;
    let webhook_at = event_at + count_cols(EVENT_COLS);
    let mut out = Vec::with_capacity(rows.len());
    // Each webhook decrypted once per claim, however many of its deliveries it leased.
    let mut hooks: std::collections::HashMap<i64, Arc<crate::model::Webhook>> =
        std::collections::HashMap::new();
    for r in rows {
        let delivery_id = DeliveryId::new(r.int(0)?);
        let hook_id = r.int(webhook_at)?;
        let webhook = match hooks.get(&hook_id) {
            Some(w) => Arc::clone(w),
            None => {
                let w = Arc::new(read_webhook(&At(r, webhook_at), keys)?);
                hooks.insert(hook_id, Arc::clone(&w));
                w
            }
        };
        let event_id = r.text(1)?;
        out.push((
            r.int(3)?,
            Claimed {
                delivery_id,
                event_id: event_id.parse().map_err(|e| {
                    StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}"))
                })?,
                attempt_in_cycle: r.int(2)?,
                event: Arc::new(read_event(&At(r, event_at))?),
                tenant: r.text(4)?,
                webhook,
            },
        ));
    }
    Ok(out)
}

/// How often a node's claims mark the chain heads that lost their mark, and how many open rows
/// each such walk visits at most.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
const MARK_ROWS: i64 = 5_000;

/// Where this node's walk for heads that lost their mark (migration 0010) goes on.
#[derive(Default)]
pub(super) struct MarkWalk {
    /// When the last slice was walked.
    at: Option<std::time::Instant>,
    /// The last chain walked (webhook, order key); (0, "") starts from the first.
    after: (i64, String),
}

impl PgStore {
    /// About once a second, before a claim: marks the chain heads that lost their mark, one
    /// slice of [`MARK_ROWS`] open rows at a time (`crmhooks_mark_heads`). A head loses its
    /// mark only when a node dies between a commit and its look for a head made beside it,
    /// or when a replay or a resend queues behind a delivery a record closes meanwhile; the
    /// walk bounds how long such a delivery waits. A failure only delays it to the next walk.
    async fn mark_lost_heads(&self) {
        let after = {
            let mut walk = self.heads_marked.lock().unwrap_or_else(|p| p.into_inner());
            if walk.at.is_some_and(|at| at.elapsed() < MARK_EVERY) {
                return;
            }
            walk.at = Some(std::time::Instant::now());
            walk.after.clone()
        };
        let found = sqlx::query_as::<_, (i64, Option<i64>, Option<String>)>(
            "SELECT marked, last_webhook, last_key FROM crmhooks_mark_heads($1, $2, $3)",
        )
        .bind(after.0)
        .bind(&after.1)
        .bind(MARK_ROWS)
        .fetch_one(&self.pool)
        .await;
        match found {
            Ok((marked, webhook, key)) => {
                // Not a warning: under load the walk also meets heads in the moment between a
                // record's commit and its look for them (a few a second at full load, none of
                // them late), which a warning would report every second.
                if marked > 0 {
                    tracing::debug!(marked, "marked delivery chain heads that were not marked");
                }
                let mut walk = self.heads_marked.lock().unwrap_or_else(|p| p.into_inner());
                walk.after = match (webhook, key) {
                    (Some(w), Some(k)) => (w, k),
                    _ => (0, String::new()),
                };
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for unmarked chain heads"),
        }
    }

    pub(super) async fn claim_due(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
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
        // tenant reach their rows by key, whatever the statistics say.
        fn list(ids: &[impl ToString]) -> String {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        let (skip, skip_tenants) = (list(&req.skip_webhooks), list(&req.skip_tenants));
        self.mark_lost_heads().await;
        let sql = format!(
            "DO $$BEGIN PERFORM set_config('synchronous_commit', 'off', true); {by_key} \
             PERFORM pg_advisory_xact_lock({CLAIM_LOCK}); \
             PERFORM set_config('crmhooks.claim', COALESCE(array_to_string(\
             crmhooks_claim_ids({now}, {window}, {cap}, {limit}, ARRAY[{skip}]::BIGINT[], ARRAY[{skip_tenants}]::BIGINT[]), ','), ''), true); END$$; \
             WITH upd AS (UPDATE delivery d SET status = 1, lease_until = {lease_until}, lease_owner = {owner} \
             WHERE d.delivery_id = ANY (string_to_array(NULLIF(current_setting('crmhooks.claim'), ''), ',')::BIGINT[]) \
             AND EXISTS (SELECT 1 FROM event x WHERE x.event_seq = d.event_seq) \
             RETURNING d.delivery_id, d.event_id, d.attempt_in_cycle, d.queue_pos, d.event_seq, d.webhook_id, d.tenant_id) \
             SELECT {claimed_cols} \
             FROM upd u JOIN event e ON e.event_seq = u.event_seq JOIN webhook w ON w.webhook_id = u.webhook_id \
             JOIN tenant t ON t.tenant_id = u.tenant_id",
            // The leases' UPDATE and its joins reach their rows by key (see PLANNER_BY_KEY).
            by_key = "PERFORM set_config('enable_seqscan', 'off', true); PERFORM set_config('enable_hashjoin', 'off', true); \
                      PERFORM set_config('enable_mergejoin', 'off', true);",
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
        let mut out = read_claimed(&rows, &self.keys)?;
        // Oldest queue position first, as the SQLite store hands them out.
        out.sort_by_key(|(pos, c)| (*pos, c.delivery_id));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    pub(super) async fn next_due_at(&self) -> Result<Option<Ticks>> {
        // The first pending head of a chain of an Active webhook (what waits behind an open
        // delivery cannot go before that one closes, whatever its time) and the first lease
        // to expire, each read along the partial index in time order; one round trip.
        // With the planner settings of the claim (a stale estimate made this a sort of every
        // pending row).
        let rows = sqlx::raw_sql(&format!(
            "DO $$BEGIN {PLANNER_FOR_QUEUES} END$$; SELECT LEAST( \
             (SELECT d.next_attempt_at FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
              WHERE d.status = 0 AND d.head AND w.state = 1 ORDER BY d.next_attempt_at LIMIT 1), \
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

    /// Extends to `lease_until` the leases of `owner` on `ids` still in flight; how many.
    ///
    /// Rows another transaction holds are skipped, not waited for: the record closing them
    /// (the usual holder) locks many of the same rows in its own order, and a renewal that
    /// waited for them deadlocked with it, which PostgreSQL breaks only after its
    /// `deadlock_timeout` (a second), failing one of the two: a record that failed so held
    /// its deliveries' room through its retries, and the node's sending stalled for seconds.
    /// A lease skipped here is extended by the next renewal (a third of a lease later), or
    /// was closed meanwhile.
    pub(super) async fn renew(
        &self,
        owner: &str,
        ids: &[DeliveryId],
        lease_until: Ticks,
    ) -> Result<u64> {
        // Bookkeeping: a renewal lost in a crash only lets a lease run out (at-least-once).
        let mut tx = self.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let n = sqlx::query(
            // An array of ids, which only the primary key can serve, whatever the statistics.
            "UPDATE delivery d SET lease_until = $1 WHERE d.delivery_id = ANY (ARRAY(\
             SELECT x.delivery_id FROM delivery x WHERE x.delivery_id = ANY($3) \
             AND x.lease_owner = $2 AND x.status = 1 ORDER BY x.delivery_id FOR UPDATE SKIP LOCKED))",
        )
        .bind(lease_until)
        .bind(owner)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    pub(super) async fn release_leases(&self, owner: &str) -> Result<u64> {
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
}
