//! The PostgreSQL store: several nodes share one database.
//!
//! Same semantics as the SQLite store, plus what sharing needs:
//! - changes are applied in groups, each in one transaction with one commit ([`group`]); a
//!   change locks its row, so concurrent changes to one row queue up, and the delivery ids of
//!   one row's events follow commit order;
//! - claims serialize on a transaction-level advisory lock and select with `FOR UPDATE SKIP
//!   LOCKED`, so two nodes never lease the same delivery and the per-key order check sees every
//!   earlier claim ([`claim`]);
//! - recording attempts (and deleting or saving a webhook) locks the webhook rows first, in id
//!   order, so two nodes completing attempts for one webhook neither deadlock nor both fire
//!   the TooManyErrors state event ([`record`]);
//! - claims and attempt records commit asynchronously (a lost one means a delivery is sent
//!   again); changes, their events and deliveries commit durably;
//! - a change writes the deliveries that head their chains leased to its own node's
//!   dispatcher and hands them over after the commit ([`handoff`]);
//! - after a commit that queued work for a claim, `NOTIFY crmhooks_work` wakes every node's
//!   dispatcher ([`notify`]).
//!
//! Tenants, keys, webhook definitions, the delivery log, retention and replay are the shared
//! statements of [`crate::sql`].

mod batch;
mod claim;
mod db;
mod group;
mod handoff;
mod notify;
mod open_error;
mod record;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection as _, Transaction};
use tokio::sync::{watch, Notify};

use crate::entity::{EntityDef, Row, Ticks};
use crate::keys::{ApiKey, AuditEntry, Bootstrap, NewAudit, NewKey};
use crate::model::*;
use crate::sql;
use crate::{
    ChangeFn, ChangeOutcome, ClaimRequest, Intake, OpenOptions, Result, Store, StoreError,
};
use crate::{ContactId, DeliveryId, TenantId, WebhookId};
use db::{db, PgDb};

/// PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
    zone: crate::LocalZone,
    /// The master keys of webhook secrets and header values.
    keys: crate::Keyring,
    /// Dropped with the store, which ends the listener and notifier tasks.
    alive: watch::Sender<()>,
    /// The hand-off to this node's dispatcher and the wake-up of the nodes.
    handoff: Arc<handoff::Handoff>,
    /// Changes waiting for their group commit ([`group`]); dropped with the store, which ends
    /// the committer's workers.
    changes: tokio::sync::mpsc::Sender<group::Job>,
    /// This node's walk for chain heads that lost their mark.
    heads_marked: std::sync::Mutex<claim::MarkWalk>,
}

/// Group committers per node: while one group commits, the next one forms and goes.
const COMMITTERS: usize = 2;

type Tx<'a> = Transaction<'a, Postgres>;

impl PgStore {
    /// Connects to `url` (`postgres://…`) and migrates the database.
    ///
    /// Several nodes may start at once: sqlx's migrator holds a session-level
    /// `pg_advisory_lock` (a key derived from the database name) while it checks and applies
    /// migrations, so one node migrates and the others wait, then find nothing to do. It runs
    /// on a connection of its own, closed afterwards, so the lock cannot linger in the pool.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        // The URL may carry a password: never echo it.
        let connect = PgConnectOptions::from_str(url).map_err(|e| open_error::bad_url(&e))?;
        // A server behind a firewall that drops packets would leave the start hanging for
        // minutes of TCP retries.
        let mut conn = tokio::time::timeout(
            open_error::CONNECT_TIMEOUT,
            sqlx::PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| open_error::no_answer(&connect))?
        .map_err(|e| open_error::cannot_connect(&connect, &e))?;
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
        tokio::spawn(notify::notify_loop(
            pool.clone(),
            notify.clone(),
            alive.subscribe(),
        ));
        let handoff = Arc::new(handoff::Handoff {
            pool: pool.clone(),
            intake: std::sync::RwLock::new(None),
            notify,
            keys: options.keyring.clone(),
        });
        let (changes, waiting) = tokio::sync::mpsc::channel(group::GROUP_MAX * 4);
        let waiting = Arc::new(tokio::sync::Mutex::new(waiting));
        let committer = Arc::new(group::Committer {
            pool: pool.clone(),
            handoff: handoff.clone(),
            zone: options.time_zone.clone(),
        });
        for _ in 0..COMMITTERS {
            tokio::spawn(Arc::clone(&committer).run(Arc::clone(&waiting)));
        }
        let store = PgStore {
            pool,
            connect,
            zone: options.time_zone.clone(),
            keys: options.keyring.clone(),
            alive,
            handoff,
            changes,
            // The first claim starts (as SQLite's store marks them when it opens).
            heads_marked: std::sync::Mutex::new(claim::MarkWalk::default()),
        };
        store.reseal_secrets(false).await?;
        Ok(store)
    }

    /// Wakes every node's dispatcher soon: call after committing work that is due now.
    fn wake_nodes(&self) {
        self.handoff.wake_nodes();
    }

    /// [`PgStore::wake_nodes`] when a committed change queued deliveries that wait for a
    /// claim (not all handed to this node's dispatcher).
    fn wake_for(&self, committed: &Committed) {
        if committed.deliveries > committed.handed {
            self.wake_nodes();
        }
    }

    async fn begin(&self) -> Result<Tx<'_>> {
        self.pool.begin().await.map_err(db)
    }

    /// A pooled connection, for reads outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(db)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ensure_tenant(&self, name: &str) -> Result<TenantId> {
        let mut tx = self.begin().await?;
        let id = sql::keys::ensure_tenant(&mut PgDb(&mut tx), name).await?;
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
        let mut tx = self.begin().await?;
        sql::keys::add_api_key(&mut PgDb(&mut tx), tenant, associate_id, key, label).await?;
        tx.commit().await.map_err(db)
    }

    async fn actor_for_key(&self, key: &str) -> Result<Option<Actor>> {
        sql::keys::actor_for_key(&mut PgDb(&mut *self.conn().await?), key).await
    }

    async fn bootstrap_key(&self, tenant: &str, associate_id: i64, key: &str) -> Result<Bootstrap> {
        let mut tx = self.begin().await?;
        let done = sql::keys::bootstrap_key(&mut PgDb(&mut tx), tenant, associate_id, key).await?;
        tx.commit().await.map_err(db)?;
        Ok(done)
    }

    async fn create_key(&self, new: &NewKey, key: &str) -> Result<ApiKey> {
        let mut tx = self.begin().await?;
        let created = sql::keys::create_key(&mut PgDb(&mut tx), new, key).await?;
        tx.commit().await.map_err(db)?;
        Ok(created)
    }

    async fn find_key(&self, key: &str) -> Result<Option<ApiKey>> {
        sql::keys::find_key(&mut PgDb(&mut *self.conn().await?), key).await
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        sql::keys::list_keys(&mut PgDb(&mut *self.conn().await?), tenant).await
    }

    async fn revoke_key(&self, id: i64) -> Result<Option<ApiKey>> {
        let mut tx = self.begin().await?;
        let key = sql::keys::revoke_key(&mut PgDb(&mut tx), id, crate::now_ticks()).await?;
        tx.commit().await.map_err(db)?;
        Ok(key)
    }

    async fn touch_key(&self, id: i64, now: Ticks) -> Result<bool> {
        sql::keys::touch_key(&mut PgDb(&mut *self.conn().await?), id, now).await
    }

    async fn list_tenants(&self) -> Result<Vec<(TenantId, String)>> {
        sql::keys::list_tenants(&mut PgDb(&mut *self.conn().await?)).await
    }

    async fn record_audit(&self, entry: &NewAudit) -> Result<()> {
        sql::audit::record(&mut PgDb(&mut *self.conn().await?), entry).await
    }

    async fn list_audit(
        &self,
        tenant_id: TenantId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        sql::audit::list(
            &mut PgDb(&mut *self.conn().await?),
            tenant_id,
            before,
            limit,
        )
        .await
    }

    async fn prune_audit(&self, cutoff: Ticks) -> Result<u64> {
        sql::audit::prune(&mut PgDb(&mut *self.conn().await?), cutoff).await
    }

    async fn get_row(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        pk: ContactId,
        include_deleted: bool,
    ) -> Result<Option<Row>> {
        let mut conn = self.conn().await?;
        sql::rows::get_row(&mut PgDb(&mut conn), tenant_id, def, pk, include_deleted).await
    }

    async fn list_rows(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        query: &crate::RowQuery,
    ) -> Result<Vec<Row>> {
        let mut conn = self.conn().await?;
        sql::rows::list(&mut PgDb(&mut conn), tenant_id, def, query).await
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<ContactId>,
        change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = group::Job {
            actor: actor.clone(),
            def,
            pk: pk.map(ContactId::get),
            change,
            reply,
        };
        if self.changes.send(job).await.is_err() {
            return Err(StoreError::Unavailable(
                "the group committer stopped".into(),
            ));
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the group committer stopped".into()))?
    }

    async fn preload_contacts(&self, tenant: &str, n: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut pg = PgDb(&mut tx);
        let stored = sql::rows::preload_contacts(&mut pg, tenant, n).await?;
        tx.commit().await.map_err(db)?;
        // The planner's statistics know the table's new size before a measurement starts.
        sqlx::query("ANALYZE contact")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(stored)
    }

    async fn recycle_bin_expired(
        &self,
        def: &'static EntityDef,
        cutoff: Ticks,
        limit: i64,
    ) -> Result<Vec<(TenantId, String, ContactId)>> {
        let mut conn = self.conn().await?;
        sql::rows::recycle_bin_expired(&mut PgDb(&mut conn), def, cutoff, limit).await
    }

    async fn save_webhook(
        &self,
        actor: &Actor,
        hook: Webhook,
    ) -> Result<(Webhook, Option<StateChange>)> {
        let mut tx = self.begin().await?;
        let saved =
            sql::webhooks::save(&mut PgDb(&mut tx), actor, hook, &self.zone, &self.keys).await?;
        tx.commit().await.map_err(db)?;
        if saved.1.is_some() {
            // Reactivated: its parked deliveries are due again, on whichever node; a state
            // event may have queued deliveries too.
            self.wake_nodes();
        }
        Ok(saved)
    }

    async fn get_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<Option<Webhook>> {
        let mut conn = self.conn().await?;
        sql::webhooks::get(&mut PgDb(&mut conn), tenant_id, id, &self.keys).await
    }

    async fn list_webhooks(
        &self,
        tenant_id: TenantId,
        filter: &WebhookFilter,
    ) -> Result<Vec<Webhook>> {
        let mut conn = self.conn().await?;
        sql::webhooks::list(&mut PgDb(&mut conn), tenant_id, filter, &self.keys).await
    }

    async fn delete_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<bool> {
        let mut tx = self.begin().await?;
        let found = sql::webhooks::delete(&mut PgDb(&mut tx), tenant_id, id).await?;
        if found {
            tx.commit().await.map_err(db)?;
        } else {
            let _ = tx.rollback().await;
        }
        Ok(found)
    }

    async fn webhook_usage(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
    ) -> Result<Option<WebhookUsage>> {
        let mut conn = self.conn().await?;
        sql::webhooks::usage(&mut PgDb(&mut conn), tenant_id, id).await
    }

    async fn emit(&self, actor: &Actor, event: NewEvent) -> Result<Committed> {
        let mut tx = self.begin().await?;
        let c = group::emit(&mut tx, actor, event, crate::now_ticks()).await?;
        tx.commit().await.map_err(db)?;
        self.wake_for(&c);
        Ok(c)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        self.claim_due(req).await
    }

    async fn complete(
        &self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        self.record(outcomes, now, max_consecutive_errors).await
    }

    async fn next_due(&self) -> Result<Option<Ticks>> {
        self.next_due_at().await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeliveryId],
        lease_until: Ticks,
    ) -> Result<u64> {
        self.renew(owner, ids, lease_until).await
    }

    async fn release(&self, owner: &str) -> Result<u64> {
        self.release_leases(owner).await
    }

    async fn list_deliveries(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        let mut conn = self.conn().await?;
        sql::log::list(&mut PgDb(&mut conn), tenant_id, webhook_id, filter).await
    }

    async fn get_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let mut conn = self.conn().await?;
        sql::log::get(&mut PgDb(&mut conn), tenant_id, webhook_id, delivery_id).await
    }

    async fn resend_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Delivery> {
        let mut tx = self.begin().await?;
        let resent =
            sql::replay::resend(&mut PgDb(&mut tx), tenant_id, webhook_id, delivery_id).await?;
        tx.commit().await.map_err(db)?;
        // Due now, on whichever node.
        self.wake_nodes();
        Ok(resent)
    }

    async fn start_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        req: &ReplayRequest,
    ) -> Result<ReplayJob> {
        let mut conn = self.conn().await?;
        sql::replay::start(&mut PgDb(&mut conn), tenant_id, webhook_id, req).await
    }

    async fn replay_step(&self, replay_id: i64, batch: i64) -> Result<ReplayJob> {
        let mut tx = self.begin().await?;
        let before = sql::replay::step(&mut PgDb(&mut tx), replay_id, batch).await?;
        tx.commit().await.map_err(db)?;
        // What the batch queued is due now, on whichever node.
        self.wake_nodes();
        Ok(before)
    }

    async fn get_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        replay_id: i64,
    ) -> Result<Option<ReplayJob>> {
        let mut conn = self.conn().await?;
        sql::replay::get(&mut PgDb(&mut conn), tenant_id, webhook_id, replay_id).await
    }

    async fn stale_replays(&self, updated_before: Ticks) -> Result<Vec<i64>> {
        let mut conn = self.conn().await?;
        sql::replay::stale(&mut PgDb(&mut conn), updated_before).await
    }

    async fn prune_events(&self, cutoff: Ticks, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sql::retention::prune_events(&mut PgDb(&mut tx), cutoff, limit).await?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn delivery_counts(&self) -> Result<Vec<(DeliveryStatus, i64)>> {
        let mut conn = self.conn().await?;
        sql::log::counts(&mut PgDb(&mut conn)).await
    }

    async fn reseal_secrets(&self, rotate: bool) -> Result<crate::ResealReport> {
        if self.keys.is_empty() {
            return Ok(crate::ResealReport::default());
        }
        let mut tx = self.begin().await?;
        let report = sql::secrets::reseal(&mut PgDb(&mut tx), &self.keys, rotate).await?;
        tx.commit().await.map_err(db)?;
        Ok(report)
    }

    async fn listen_for_work(&self, wake: Arc<Notify>) -> Result<()> {
        tokio::spawn(notify::listen_loop(
            self.connect.clone(),
            wake,
            self.alive.subscribe(),
        ));
        Ok(())
    }

    fn wakes_after_record(&self) -> bool {
        // `record` wakes the nodes when it leaves a next delivery for a claim.
        true
    }

    fn set_intake(&self, intake: Option<Arc<dyn Intake>>) {
        *self
            .handoff
            .intake
            .write()
            .unwrap_or_else(|p| p.into_inner()) = intake;
    }
}
