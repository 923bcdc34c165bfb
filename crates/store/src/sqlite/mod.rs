//! The SQLite store: one file in WAL mode, written by one thread ([`writer`]) and read by a
//! pool of read-only connections ([`read`]).
//!
//! The writer owns every write: changes with their events and deliveries (group commit,
//! [`change`] and [`fanout`]), claims ([`claim`]), attempt records ([`record`]), the hand-off of
//! deliveries to this node's dispatcher ([`handoff`], [`successors`], [`chains`]) and every
//! other write (the shared statements of [`crate::sql`], run as a task). Schema migrations
//! run once through sqlx's migrator when the store opens, before the writer starts.

mod chains;
mod change;
mod claim;
mod db;
mod fanout;
mod handoff;
mod leases;
mod read;
mod recent;
mod record;
mod successors;
mod syncer;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot};

use crate::entity::{EntityDef, Row, Ticks};
use crate::keys::{ApiKey, AuditEntry, Bootstrap, NewAudit, NewKey};
use crate::model::*;
use crate::sql::{self, block_on};
use crate::{
    ChangeFn, ChangeOutcome, ClaimRequest, Intake, OpenOptions, Result, Store, StoreError,
};
use crate::{ContactId, DeliveryId, TenantId, WebhookId};
use handoff::SharedHandOff;
use read::ReadPool;
use writer::{Cmd, Job, TaskOf, Writer, WriterOptions};

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    reader: ReadPool,
    zone: crate::LocalZone,
    /// The master keys of webhook secrets and header values.
    keys: Arc<crate::Keyring>,
    /// The writer thread.
    writer: mpsc::Sender<Cmd>,
    /// Fresh deliveries straight to this node's dispatcher.
    handoff: SharedHandOff,
    /// The file's lock, held while this store serves it.
    _lock: Option<std::fs::File>,
}

/// A missing directory is said plainly, with what to do (SQLite only says "unable to open
/// database file").
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        return Ok(());
    }
    Err(StoreError::Open(format!(
        "cannot open the SQLite database {}: the directory {} does not exist; create it, or give another path with --database sqlite://PATH",
        path.display(),
        dir.display()
    )))
}

/// Takes `<database>.lock`, which a serving process holds for as long as it runs (the
/// operating system lets go of it when the process ends, however it ends). A second one is
/// refused, naming the process that holds it.
fn lock_file(path: &Path) -> Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Open(format!(
                "cannot open the lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message a second process prints.
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                "another crmhooks server".to_owned()
            } else {
                format!("another crmhooks server (process {holder})")
            };
            Err(StoreError::Open(format!(
                "the SQLite database {} is in use by {by}: one server per SQLite file. Stop that one, or give this one another --database (several nodes need PostgreSQL)",
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Open(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
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
        let path = connect.get_filename().to_owned();
        check_directory(&path)?;
        let lock = if options.serving {
            Some(lock_file(&path)?)
        } else {
            None
        };
        let mut conn = sqlx::SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| {
                StoreError::Open(format!(
                    "cannot open the SQLite database {}: {e}",
                    path.display()
                ))
            })?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&mut conn).await;
        let _ = conn.close().await;
        migrated.map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let handoff = SharedHandOff::default();
        let writer = writer::spawn(
            &path,
            WriterOptions {
                synchronous_full: options.synchronous_full,
                wal_autocheckpoint: options.wal_autocheckpoint,
                sync_delay: options.sync_delay,
                zone: options.time_zone.clone(),
                serving: options.serving,
                keys: options.keyring.clone(),
            },
            handoff.clone(),
        )?;
        let store = SqliteStore {
            reader: ReadPool::new(&path, options.max_connections),
            zone: options.time_zone.clone(),
            keys: Arc::new(options.keyring.clone()),
            writer,
            handoff,
            _lock: lock,
        };
        store.reseal_secrets(false).await?;
        Ok(store)
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.writer.send(cmd).await.map_err(|_| writer_stopped())
    }

    /// Runs `work` on the writer thread, in a transaction of its own; with `durable`, answered
    /// once its commit is on disk.
    async fn write<T, F>(&self, durable: bool, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        let (task, answer) = TaskOf::task(work);
        self.send(Cmd::Run { durable, task }).await?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, name: &str) -> Result<TenantId> {
        let name = name.to_owned();
        self.write(true, move |w| block_on(sql::keys::ensure_tenant(w, &name)))
            .await
    }

    async fn add_api_key(
        &self,
        tenant: &str,
        associate_id: i64,
        key: &str,
        label: &str,
    ) -> Result<()> {
        let (tenant, key, label) = (tenant.to_owned(), key.to_owned(), label.to_owned());
        self.write(true, move |w| {
            block_on(sql::keys::add_api_key(
                w,
                &tenant,
                associate_id,
                &key,
                &label,
            ))
        })
        .await
    }

    async fn actor_for_key(&self, key: &str) -> Result<Option<Actor>> {
        let key = key.to_owned();
        self.reader
            .read(move |c| block_on(sql::keys::actor_for_key(c, &key)))
            .await
    }

    async fn bootstrap_key(&self, tenant: &str, associate_id: i64, key: &str) -> Result<Bootstrap> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.write(true, move |w| {
            block_on(sql::keys::bootstrap_key(w, &tenant, associate_id, &key))
        })
        .await
    }

    async fn create_key(&self, new: &NewKey, key: &str) -> Result<ApiKey> {
        let (new, key) = (new.clone(), key.to_owned());
        self.write(true, move |w| {
            block_on(sql::keys::create_key(w, &new, &key))
        })
        .await
    }

    async fn find_key(&self, key: &str) -> Result<Option<ApiKey>> {
        let key = key.to_owned();
        self.reader
            .read(move |c| block_on(sql::keys::find_key(c, &key)))
            .await
    }

    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        let tenant = tenant.map(str::to_owned);
        self.reader
            .read(move |c| block_on(sql::keys::list_keys(c, tenant.as_deref())))
            .await
    }

    async fn revoke_key(&self, id: i64) -> Result<Option<ApiKey>> {
        self.write(true, move |w| {
            block_on(sql::keys::revoke_key(w, id, crate::now_ticks()))
        })
        .await
    }

    async fn touch_key(&self, id: i64, now: Ticks) -> Result<bool> {
        // Not worth an fsync: a lost note of use is written again a minute later.
        self.write(false, move |w| block_on(sql::keys::touch_key(w, id, now)))
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<(TenantId, String)>> {
        self.reader
            .read(move |c| block_on(sql::keys::list_tenants(c)))
            .await
    }

    async fn record_audit(&self, entry: &NewAudit) -> Result<()> {
        let entry = entry.clone();
        self.write(true, move |w| block_on(sql::audit::record(w, &entry)))
            .await
    }

    async fn list_audit(
        &self,
        tenant_id: TenantId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        self.reader
            .read(move |c| block_on(sql::audit::list(c, tenant_id, before, limit)))
            .await
    }

    async fn prune_audit(&self, cutoff: Ticks) -> Result<u64> {
        self.write(true, move |w| block_on(sql::audit::prune(w, cutoff)))
            .await
    }

    async fn get_row(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        pk: ContactId,
        include_deleted: bool,
    ) -> Result<Option<Row>> {
        self.reader
            .read(move |c| block_on(sql::rows::get_row(c, tenant_id, def, pk, include_deleted)))
            .await
    }

    async fn list_rows(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        query: &crate::RowQuery,
    ) -> Result<Vec<Row>> {
        let query = query.clone();
        self.reader
            .read(move |c| block_on(sql::rows::list(c, tenant_id, def, &query)))
            .await
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<ContactId>,
        change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Change(Job {
            actor: actor.clone(),
            def,
            pk: pk.map(ContactId::get),
            change,
            reply,
        }))
        .await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn preload_contacts(&self, tenant: &str, n: i64) -> Result<u64> {
        let tenant = tenant.to_owned();
        self.write(true, move |w| {
            block_on(sql::rows::preload_contacts(w, &tenant, n))
        })
        .await
    }

    async fn recycle_bin_expired(
        &self,
        def: &'static EntityDef,
        cutoff: Ticks,
        limit: i64,
    ) -> Result<Vec<(TenantId, String, ContactId)>> {
        self.reader
            .read(move |c| block_on(sql::rows::recycle_bin_expired(c, def, cutoff, limit)))
            .await
    }

    async fn save_webhook(
        &self,
        actor: &Actor,
        hook: Webhook,
    ) -> Result<(Webhook, Option<StateChange>)> {
        let actor = actor.clone();
        let zone = self.zone.clone();
        let keys = Arc::clone(&self.keys);
        self.write(true, move |w| {
            block_on(sql::webhooks::save(w, &actor, hook, &zone, &keys))
        })
        .await
    }

    async fn get_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<Option<Webhook>> {
        let keys = Arc::clone(&self.keys);
        self.reader
            .read(move |c| block_on(sql::webhooks::get(c, tenant_id, id, &keys)))
            .await
    }

    async fn list_webhooks(
        &self,
        tenant_id: TenantId,
        filter: &WebhookFilter,
    ) -> Result<Vec<Webhook>> {
        let filter = filter.clone();
        let keys = Arc::clone(&self.keys);
        self.reader
            .read(move |c| block_on(sql::webhooks::list(c, tenant_id, &filter, &keys)))
            .await
    }

    async fn delete_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<bool> {
        self.write(true, move |w| {
            block_on(sql::webhooks::delete(w, tenant_id, id))
        })
        .await
    }

    async fn webhook_usage(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
    ) -> Result<Option<WebhookUsage>> {
        self.reader
            .read(move |c| block_on(sql::webhooks::usage(c, tenant_id, id)))
            .await
    }

    async fn emit(&self, actor: &Actor, event: NewEvent) -> Result<Committed> {
        let actor = actor.clone();
        self.write(true, move |w| {
            w.insert_event(&actor, event, crate::now_ticks())
        })
        .await
    }

    fn set_intake(&self, intake: Option<Arc<dyn Intake>>) {
        handoff::set_intake(&self.handoff, intake);
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
        self.reader.read(claim::next_due).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeliveryId],
        lease_until: Ticks,
    ) -> Result<u64> {
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.write(false, move |w| {
            block_on(leases::renew(w, &owner, &ids, lease_until))
        })
        .await
    }

    async fn release(&self, owner: &str) -> Result<u64> {
        // On the writer thread: it forgets the chains it follows in memory with them.
        let (reply, answer) = oneshot::channel();
        self.send(Cmd::Release(owner.to_owned(), reply)).await?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn list_deliveries(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        let filter = filter.clone();
        self.reader
            .read(move |c| block_on(sql::log::list(c, tenant_id, webhook_id, &filter)))
            .await
    }

    async fn get_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        self.reader
            .read(move |c| block_on(sql::log::get(c, tenant_id, webhook_id, delivery_id)))
            .await
    }

    async fn resend_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Delivery> {
        self.write(true, move |w| {
            block_on(sql::replay::resend(w, tenant_id, webhook_id, delivery_id))
        })
        .await
    }

    async fn start_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        req: &ReplayRequest,
    ) -> Result<ReplayJob> {
        let req = req.clone();
        self.write(true, move |w| {
            block_on(sql::replay::start(w, tenant_id, webhook_id, &req))
        })
        .await
    }

    async fn replay_step(&self, replay_id: i64, batch: i64) -> Result<ReplayJob> {
        self.write(true, move |w| {
            block_on(sql::replay::step(w, replay_id, batch))
        })
        .await
    }

    async fn get_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        replay_id: i64,
    ) -> Result<Option<ReplayJob>> {
        self.reader
            .read(move |c| block_on(sql::replay::get(c, tenant_id, webhook_id, replay_id)))
            .await
    }

    async fn stale_replays(&self, updated_before: Ticks) -> Result<Vec<i64>> {
        self.reader
            .read(move |c| block_on(sql::replay::stale(c, updated_before)))
            .await
    }

    async fn prune_events(&self, cutoff: Ticks, limit: i64) -> Result<u64> {
        self.write(false, move |w| {
            block_on(sql::retention::prune_events(w, cutoff, limit))
        })
        .await
    }

    async fn delivery_counts(&self) -> Result<Vec<(DeliveryStatus, i64)>> {
        self.reader.read(|c| block_on(sql::log::counts(c))).await
    }

    async fn reseal_secrets(&self, rotate: bool) -> Result<crate::ResealReport> {
        if self.keys.is_empty() {
            return Ok(crate::ResealReport::default());
        }
        let keys = Arc::clone(&self.keys);
        self.write(true, move |w| {
            block_on(sql::secrets::reseal(w, &keys, rotate))
        })
        .await
    }
}
