//! Storage for crmhooks: entity rows, webhook definitions and usage, the event log, and the
//! delivery outbox, behind one [`Store`] trait.
//!
//! Every change to an entity row, its event and one delivery per Active subscribed webhook
//! commit in one transaction ([`Store::apply_change`]); the dispatcher claims deliveries with a
//! lease ([`Store::claim`]) and records attempts in batches ([`Store::complete`]). Nothing holds a
//! transaction across an HTTP call.

pub mod contact;
pub mod entity;
mod error;
mod ids;
pub mod keys;
pub mod model;
mod postgres;
mod query;
pub mod secrets;
mod sql;
mod sqlite;
mod webhook_rules;
mod zone;

use std::sync::Arc;

use async_trait::async_trait;

pub use entity::{
    ColumnDef, ColumnKind, EntityDef, FieldError, Row, Ticks, Value, TICKS_PER_SECOND,
};
pub use error::StoreError;
pub use ids::{ContactId, DeliveryId, EventId, TenantId, WebhookId};
pub use keys::{
    generate_key, ticks_rfc3339, ApiKey, AuditEntry, Bootstrap, KeyScope, NewAudit, NewKey,
    KEY_PREFIX, MIN_BOOTSTRAP_KEY_LEN, TOUCH_EVERY,
};
pub use model::*;
pub use postgres::PgStore;
pub use query::{RowFilter, RowQuery};
pub use secrets::{Keyring, MasterKey, ResealReport};
pub use sql::plan::render_date;
pub use sqlite::SqliteStore;
pub use webhook_rules::{RetryPolicy, SuccessRule, WebhookType};
pub use zone::LocalZone;

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a change function decided, given the current row.
#[derive(Debug)]
pub enum Change {
    /// Insert this row (its primary key is assigned by the store); fires `{entity}.created`.
    Create(Row),
    /// Replace the row; fires `{entity}.{verb}` when something other than bookkeeping differs.
    Update {
        /// The new row (bookkeeping columns are set by the store).
        row: Row,
        /// What the event says happened.
        verb: ChangeVerb,
    },
    /// Remove the row; fires `{entity}.deleted`.
    Delete,
    /// Do nothing.
    Nothing,
}

/// The verb of the event an update fires: `{entity}.changed` or `{entity}.softdeleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeVerb {
    /// Columns changed (or the row came back from the recycle bin).
    Changed,
    /// The row went into the recycle bin.
    SoftDeleted,
}

impl ChangeVerb {
    /// The verb as the event name spells it.
    pub const fn name(self) -> &'static str {
        match self {
            ChangeVerb::Changed => "changed",
            ChangeVerb::SoftDeleted => "softdeleted",
        }
    }
}

impl std::fmt::Display for ChangeVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides a [`Change`] from the current row (None when creating or when it does not exist).
/// A store may call it more than once for one change (PostgreSQL decides against a snapshot
/// and decides again when the row changed meanwhile); only the last decision is written.
pub type ChangeFn = Box<dyn FnMut(Option<&Row>) -> Result<Change> + Send>;

/// The outcome of [`Store::apply_change`].
#[derive(Clone, Debug, Default)]
pub struct ChangeOutcome {
    /// The row after the change (None after a delete).
    pub row: Option<Row>,
    /// The event and deliveries written.
    pub committed: Committed,
}

/// Options of a claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Who claims (node id), written into the lease.
    pub owner: String,
    /// Now.
    pub now: Ticks,
    /// Lease end.
    pub lease_until: Ticks,
    /// At most this many.
    pub limit: i64,
    /// Skip these webhooks (this node holds their most).
    pub skip_webhooks: Vec<WebhookId>,
    /// Skip every webhook of these tenants (this node holds their most).
    pub skip_tenants: Vec<TenantId>,
    /// At most this many deliveries per webhook in one claim (the dispatcher bounds requests in
    /// flight per webhook itself).
    pub max_per_webhook: i64,
}

/// The store. One implementation per database; both pass the same test suite.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- tenants and keys
    /// Creates the tenant if needed and returns its id.
    async fn ensure_tenant(&self, name: &str) -> Result<TenantId>;
    /// Stores an API key (hashed) for a tenant and associate.
    async fn add_api_key(
        &self,
        tenant: &str,
        associate_id: i64,
        key: &str,
        label: &str,
    ) -> Result<()>;
    /// The actor a valid (neither revoked nor expired) API key belongs to.
    async fn actor_for_key(&self, key: &str) -> Result<Option<Actor>>;
    /// Stores the bootstrap key with the admin scope and revokes every other bootstrap key.
    async fn bootstrap_key(&self, tenant: &str, associate_id: i64, key: &str) -> Result<Bootstrap>;
    /// Stores the new key `key` (hashed) as `new` says, creating its tenant if needed.
    async fn create_key(&self, new: &NewKey, key: &str) -> Result<ApiKey>;
    /// The stored key `key` is, valid or not.
    async fn find_key(&self, key: &str) -> Result<Option<ApiKey>>;
    /// Keys of one tenant (by name) or of all, by id.
    async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>>;
    /// Revokes a key (one revoked before keeps its time); None if there is no such key.
    async fn revoke_key(&self, id: i64) -> Result<Option<ApiKey>>;
    /// Notes that a key was used at `now`, at most about once a minute; whether it wrote.
    async fn touch_key(&self, id: i64, now: Ticks) -> Result<bool>;
    /// Every tenant: `(id, name)`.
    async fn list_tenants(&self) -> Result<Vec<(TenantId, String)>>;
    /// Records a management call in the audit log.
    async fn record_audit(&self, entry: &NewAudit) -> Result<()>;
    /// A tenant's audit log, newest first: at most `limit` entries older than `before`.
    async fn list_audit(
        &self,
        tenant_id: TenantId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>>;
    /// Removes audit entries older than `cutoff`; how many.
    async fn prune_audit(&self, cutoff: Ticks) -> Result<u64>;

    // --- entity rows
    /// Reads a row; soft-deleted rows only when `include_deleted`.
    async fn get_row(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        pk: ContactId,
        include_deleted: bool,
    ) -> Result<Option<Row>>;
    /// Rows of a tenant that are not soft-deleted, filtered, ordered and paged by `query`.
    async fn list_rows(
        &self,
        tenant_id: TenantId,
        def: &'static EntityDef,
        query: &RowQuery,
    ) -> Result<Vec<Row>>;
    /// Applies a change and writes its event and deliveries in one transaction.
    async fn apply_change(
        &self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<ContactId>,
        change: ChangeFn,
    ) -> Result<ChangeOutcome>;
    /// Stores `n` contacts of an existing tenant in one statement, with no events (data that
    /// was there before a measurement: `crmhooks bench --preload-contacts`). How many.
    async fn preload_contacts(&self, tenant: &str, n: i64) -> Result<u64>;
    /// Rows soft-deleted before `cutoff`: `(tenant_id, tenant name, pk)`.
    async fn recycle_bin_expired(
        &self,
        def: &'static EntityDef,
        cutoff: Ticks,
        limit: i64,
    ) -> Result<Vec<(TenantId, String, ContactId)>>;

    // --- webhooks
    /// Creates or updates a webhook; a state change fires its state event in the same
    /// transaction. Returns the saved webhook and the state change, if any.
    async fn save_webhook(
        &self,
        actor: &Actor,
        webhook: Webhook,
    ) -> Result<(Webhook, Option<StateChange>)>;
    /// One webhook of a tenant.
    async fn get_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<Option<Webhook>>;
    /// Webhooks of a tenant.
    async fn list_webhooks(
        &self,
        tenant_id: TenantId,
        filter: &WebhookFilter,
    ) -> Result<Vec<Webhook>>;
    /// Removes a webhook, its usage, and cancels its pending deliveries. False if absent.
    async fn delete_webhook(&self, tenant_id: TenantId, id: WebhookId) -> Result<bool>;
    /// Usage counters of a webhook of a tenant.
    async fn webhook_usage(
        &self,
        tenant_id: TenantId,
        id: WebhookId,
    ) -> Result<Option<WebhookUsage>>;

    // --- events and deliveries
    /// Appends an event (e.g. SignalEvent) and fans it out.
    async fn emit(&self, actor: &Actor, event: NewEvent) -> Result<Committed>;
    /// Leases due deliveries of Active webhooks, oldest queue position first, keeping
    /// per-order-key commit order per webhook.
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>>;
    /// Records attempts, updates usage, applies the state machine; returns state changes.
    async fn complete(
        &self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>>;
    /// The earliest `next_attempt_at` of a pending delivery of an Active webhook.
    async fn next_due(&self) -> Result<Option<Ticks>>;
    /// Extends to `lease_until` the leases of `owner` on its deliveries `ids` still in flight
    /// (a node renews what it holds, so that leases can be short: a dead node's deliveries
    /// are taken over once its leases run out). How many were extended.
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[DeliveryId],
        lease_until: Ticks,
    ) -> Result<u64>;
    /// Returns this owner's in-flight deliveries to pending (graceful shutdown).
    async fn release(&self, owner: &str) -> Result<u64>;
    /// The delivery log of a webhook, newest first.
    async fn list_deliveries(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>>;
    /// One delivery with its attempts.
    async fn get_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>>;
    /// Sends a delivery of a webhook of a tenant again: its event queued anew with a new
    /// EventId and a new attempt cycle, behind what is open of its contact's chain. The new
    /// delivery; NotFound when the tenant has no such delivery, Conflict while a delivery of
    /// that event to that webhook is still open.
    async fn resend_delivery(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        delivery_id: DeliveryId,
    ) -> Result<Delivery>;
    /// Starts a replay of logged events for a webhook of a tenant (NotFound when the tenant has
    /// no such webhook): the job, with nothing done yet. [`Store::replay_step`] runs it.
    async fn start_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        req: &ReplayRequest,
    ) -> Result<ReplayJob>;
    /// Runs one batch (at most `batch` events) of a replay job in a short transaction of its
    /// own; the job after it.
    async fn replay_step(&self, replay_id: i64, batch: i64) -> Result<ReplayJob>;
    /// A replay job of a webhook of a tenant.
    async fn get_replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        replay_id: i64,
    ) -> Result<Option<ReplayJob>>;
    /// Replay jobs still running whose last batch ran before `updated_before` (their node
    /// died).
    async fn stale_replays(&self, updated_before: Ticks) -> Result<Vec<i64>>;
    /// Queues events from the log again for one webhook: a replay job run to its end, batch by
    /// batch.
    async fn replay(
        &self,
        tenant_id: TenantId,
        webhook_id: WebhookId,
        req: &ReplayRequest,
    ) -> Result<ReplayReport> {
        let mut job = self.start_replay(tenant_id, webhook_id, req).await?;
        while job.status == ReplayStatus::Running {
            job = self.replay_step(job.id, REPLAY_BATCH).await?;
        }
        Ok(job.report)
    }
    /// Removes events older than `cutoff` whose deliveries are all finished; returns how many.
    async fn prune_events(&self, cutoff: Ticks, limit: i64) -> Result<u64>;
    /// Counts of deliveries by status (all tenants), for metrics and tests.
    async fn delivery_counts(&self) -> Result<Vec<(DeliveryStatus, i64)>>;

    // --- secrets
    /// In one transaction: checks that every stored webhook secret and header value decrypts
    /// with the store's keyring (an error naming the webhook and the key id otherwise, and
    /// nothing written), encrypts what is still plain text, and with `rotate` re-encrypts
    /// under the keyring's first key what another key encrypted. Idempotent; the store runs it
    /// (without `rotate`) when it opens with a keyring.
    async fn reseal_secrets(&self, rotate: bool) -> Result<ResealReport>;

    /// Wakes `wake` whenever another process (node) queues work in the shared database. The
    /// default does nothing: SQLite serves one node, which wakes its dispatcher in-process.
    async fn listen_for_work(&self, wake: Arc<tokio::sync::Notify>) -> Result<()> {
        let _ = wake;
        Ok(())
    }

    /// Whether [`Store::complete`] itself wakes the dispatcher (through the `Notify` given to
    /// [`Store::listen_for_work`]) whenever recording leaves a delivery due for a claim (a next
    /// delivery of a chain it could not hand over), so that the dispatcher need not claim after
    /// every record. The default: no, the dispatcher claims after each record.
    fn wakes_after_record(&self) -> bool {
        false
    }

    /// Hands new deliveries to this node's dispatcher as they are committed (see [`Intake`]);
    /// `None` stops it. The default ignores it: the dispatcher claims everything.
    fn set_intake(&self, intake: Option<Arc<dyn Intake>>) {
        let _ = intake;
    }
}

/// A dispatcher that takes deliveries straight from the commit that creates them.
///
/// A fresh delivery that is the head of its chain (nothing of the same contact open for that
/// webhook) is written already leased to the intake's owner when [`Intake::reserve`] says
/// there is room, and passed to [`Intake::take`] once the commit is durable: no claim has to
/// find it, read its event back and lease it in another transaction. The lease makes this as
/// safe as a claim: if the node dies before it records the attempt, the lease runs out and
/// any node claims the delivery again. The same goes for the next delivery of a chain when the
/// intake's node records the one before it (delivered or given up): it is leased in that
/// bookkeeping and taken after its commit, so the later events of a contact need no claim
/// either. Everything else (retries, deliveries that found no room, deliveries whose chain
/// another node closed) is claimed as before. (PostgreSQL hands over fresh heads only, and
/// asks for their room after the commit: which webhooks a change fans out to is known only
/// then. One that finds none is given back to the queue. A chain's next delivery is claimed:
/// leasing it in the record's transaction made every record slower than the claims it saved.)
pub trait Intake: Send + Sync {
    /// The lease owner written on handed deliveries.
    fn owner(&self) -> &str;
    /// The lease length, in ticks.
    fn lease_ticks(&self) -> Ticks;
    /// Takes room for one delivery of webhook `webhook_id` of tenant `tenant_id`; false when
    /// there is none.
    fn reserve(&self, tenant_id: TenantId, webhook_id: WebhookId) -> bool;
    /// Gives back room taken by [`Intake::reserve`] for a delivery that was not committed.
    fn unreserve(&self, tenant_id: TenantId, webhook_id: WebhookId);
    /// Committed deliveries (their inserts durable) leased to [`Intake::owner`], each reserved
    /// before.
    fn take(&self, handed: Vec<Claimed>);
    /// What [`Intake::reserve`] refuses now, for a store that writes deliveries leased before it
    /// asks for their room (so that it leaves pending what would only be given back): the
    /// webhooks and the tenants that hold their most, or `None` when nothing can be taken at
    /// all. The default: nothing is known to be full.
    fn full(&self) -> Option<(Vec<WebhookId>, Vec<TenantId>)> {
        Some((Vec::new(), Vec::new()))
    }
}

/// Events a replay handles per batch (one short transaction each).
pub const REPLAY_BATCH: i64 = 500;

/// A shared store.
pub type DynStore = Arc<dyn Store>;

/// Opens the store for a database URL: `sqlite://PATH` (created if missing) or `postgres://…`.
pub async fn open(url: &str, options: &OpenOptions) -> Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::open(url, options).await?))
    } else {
        Err(StoreError::Unavailable(format!(
            "unsupported database URL {url:?}: use sqlite://PATH or postgres://…"
        )))
    }
}

/// Connection options.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Pool size: readers (SQLite), every connection of this node (PostgreSQL).
    pub max_connections: u32,
    /// `synchronous=FULL` (durable) when true, `NORMAL` otherwise (SQLite).
    pub synchronous_full: bool,
    /// SQLite's `wal_autocheckpoint`: the writer checkpoints the WAL once it holds this many
    /// pages.
    pub wal_autocheckpoint: u32,
    /// Tests only: SQLite's WAL syncer waits this long before each fsync, so that a test can
    /// act while a commit is not durable yet.
    #[doc(hidden)]
    pub sync_delay: std::time::Duration,
    /// This process serves the database (runs its dispatcher). On SQLite it takes the file's
    /// lock, so a second serving process is refused with a clear message, and takes back every
    /// lease at once (no other process can hold one). False for short commands (`crmhooks
    /// key`), which write through SQLite's own locking beside a running server.
    pub serving: bool,
    /// The zone of .NET "local" dates in `FieldValues` (default: as the environment names it,
    /// see [`LocalZone::from_env`]).
    pub time_zone: LocalZone,
    /// The master keys webhook secrets and header values are encrypted under (empty: stored
    /// as plain text). When not empty, opening the store checks that every stored value
    /// decrypts and encrypts what is still plain text ([`Store::reseal_secrets`]).
    pub keyring: Keyring,
}

/// The default of [`OpenOptions::wal_autocheckpoint`]: 16000 pages (64 MiB), against SQLite's
/// 1000. A checkpoint copies each page once however often it changed since the last one, and
/// the newest delivery and index pages change with every event, so checkpointing less often
/// costs less per delivery (docs/performance.md).
pub const DEFAULT_WAL_AUTOCHECKPOINT: u32 = 16_000;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_connections: 8,
            synchronous_full: true,
            wal_autocheckpoint: DEFAULT_WAL_AUTOCHECKPOINT,
            sync_delay: std::time::Duration::ZERO,
            serving: true,
            time_zone: LocalZone::from_env(),
            keyring: Keyring::empty(),
        }
    }
}

/// Hashes an API key for storage (SHA-256, hex). Keys are random 256-bit tokens, so a fast hash
/// is enough; the plain key is never stored.
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(key.as_bytes());
    // Every API request hashes its key: no `format!` per byte.
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// Now, in ticks.
pub fn now_ticks() -> Ticks {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 100) as i64
}

#[cfg(test)]
mod tests {
    /// Stored key hashes are lowercase hex SHA-256: a key saved by any earlier version must
    /// still be found.
    #[test]
    fn key_hashes_are_lowercase_hex_sha256() {
        assert_eq!(
            super::hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::hash_key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
