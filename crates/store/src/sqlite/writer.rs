//! The SQLite writer: one OS thread owns every write to the file.
//!
//! Changes (group commit), claims, attempt records and every other write (webhook
//! definitions, keys, replay, retention: [`Task`]s) run here, on a connection of the thread's
//! own, with prepared statements cached. Each command is one hop from a tokio task to the thread
//! and one back, whatever number of statements it runs.
//!
//! Each loop takes every command that is waiting: all changes in one transaction (group
//! commit), the attempt records and the claims in the same transaction or another (the claims
//! see the deliveries the records finished), then each task in a transaction of its own.
//!
//! Durability without stalling the writer: with `synchronous=FULL` configured, a batch of
//! changes commits with `synchronous=NORMAL` and is handed to a second thread, the syncer
//! ([`super::syncer`]), that `fdatasync`s the WAL file and only then answers the callers. That
//! is the guarantee of `FULL` (nobody is told "saved" before the commit frame is on disk) but
//! the writer goes on with the next batch, the claims and the records while the disk works,
//! and one fsync covers every batch that committed while the previous one ran. Until its fsync
//! is done a batch's deliveries are not claimed (`synced_upto`), so no webhook announces a
//! change that a power loss could still take back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::chains::Chains;
use super::change::EntitySql;
use super::db::sql_err;
use super::handoff::{Batch, SharedHandOff};
use super::recent::RecentEvents;
use super::successors::NextHeads;
use super::syncer::{syncer, SyncJob};
use crate::entity::{EntityDef, Ticks};
use crate::model::*;
use crate::sql::columns::{read_webhook, EARLIER_OPEN, WEBHOOK_COLS};
use crate::{ChangeFn, ChangeOutcome, ClaimRequest, Result, StoreError};
use crate::{TenantId, WebhookId};

/// Most commands taken in one loop.
const TAKE_MAX: usize = 1024;

/// A change waiting for the group commit.
pub(crate) struct Job {
    pub actor: Actor,
    pub def: &'static EntityDef,
    pub pk: Option<i64>,
    pub change: ChangeFn,
    pub reply: oneshot::Sender<Result<ChangeOutcome>>,
}

/// What the writer thread does.
pub(crate) enum Cmd {
    /// Apply a change (grouped with the others waiting).
    Change(Job),
    /// Lease due deliveries.
    Claim(ClaimRequest, oneshot::Sender<Result<Vec<Claimed>>>),
    /// Give an owner's leases back to the queue (a node stopping), and forget the chains
    /// followed in memory (their deliveries are no longer leased to this node).
    Release(String, oneshot::Sender<Result<u64>>),
    /// Run a task in a transaction of its own (every other write).
    Run {
        /// Whether the commit must be durable (fsync'd) before the task is answered.
        durable: bool,
        task: Box<dyn Task>,
    },
    /// Record attempts and run the state machine.
    Complete {
        outcomes: Vec<AttemptOutcome>,
        now: Ticks,
        max_consecutive_errors: i64,
        reply: oneshot::Sender<Result<Vec<StateChange>>>,
    },
}

/// Attempt records waiting: outcomes, now, the error threshold, and who waits.
pub(super) type CompleteJob = (
    Vec<AttemptOutcome>,
    Ticks,
    i64,
    oneshot::Sender<Result<Vec<StateChange>>>,
);

/// A claim waiting, and who waits.
pub(super) type ClaimJob = (ClaimRequest, oneshot::Sender<Result<Vec<Claimed>>>);

/// What a bookkeeping answers: the state changes of each record job, the deliveries of each
/// claim.
type Kept = (Vec<Vec<StateChange>>, Vec<Vec<Claimed>>);

/// Settings of the writer thread.
pub(crate) struct WriterOptions {
    pub synchronous_full: bool,
    pub wal_autocheckpoint: u32,
    /// Tests only: the syncer waits this long before each fsync.
    pub sync_delay: Duration,
    pub zone: crate::LocalZone,
    /// This process is the file's only server: leases left by a process before it are taken
    /// back at once.
    pub serving: bool,
    /// The master keys of webhook secrets and header values.
    pub keys: crate::Keyring,
}

/// A write that is not a change, a claim or a record: it runs in a transaction of its own on
/// the writer's connection, and is answered once that transaction is committed (and durable,
/// when asked) or rolled back.
pub(crate) trait Task: Send {
    /// Runs in the open transaction; false when it failed (the transaction is rolled back).
    fn run(&mut self, w: &mut Writer) -> bool;
    /// Answers the caller: with the task's own result, or `failure` when its transaction could
    /// not be committed or made durable.
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

/// A [`Task`] running `work` and answering its result on a channel.
pub(crate) struct TaskOf<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> TaskOf<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
{
    /// The task, and where its answer comes.
    pub(crate) fn task(work: F) -> (Box<dyn Task>, oneshot::Receiver<Result<T>>) {
        let (reply, answer) = oneshot::channel();
        let task = TaskOf {
            work: Some(work),
            result: None,
            reply,
        };
        (Box::new(task), answer)
    }
}

impl<T, F> Task for TaskOf<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
{
    fn run(&mut self, w: &mut Writer) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(w);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        let result = match (failure, self.result) {
            (Some(e), Some(Ok(_)) | None) => Err(e),
            (_, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("the task did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Opens the writer connection on `path` and starts its thread. The thread ends when every
/// sender is dropped.
pub(crate) fn spawn(
    path: &Path,
    options: WriterOptions,
    handoff: SharedHandOff,
) -> Result<mpsc::Sender<Cmd>> {
    let conn = Connection::open(path).map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
    )
    .map_err(sql_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The writer commits nearly everything, so it runs nearly every checkpoint.
    conn.pragma_update(None, "wal_autocheckpoint", options.wal_autocheckpoint)
        .map_err(sql_err)?;
    // Heads of delivery chains that lost their mark (see migration 0003) are marked again.
    let repaired = conn
        .execute(
            &format!(
                "UPDATE delivery AS d SET ready = 1 WHERE status = 0 AND ready = 0 AND NOT {EARLIER_OPEN}"
            ),
            [],
        )
        .map_err(sql_err)?;
    if repaired > 0 {
        tracing::warn!(repaired, "marked delivery chain heads that were not marked");
    }
    if options.serving {
        // Only a serving process leases deliveries, and this one holds the file's lock: every
        // lease left in the file belongs to a process that is gone (killed, or stopped
        // without releasing). They are pending again now, not when their leases run out; a
        // delivery that waited behind another of its chain stays behind it.
        let taken_back = conn
            .execute(
                &format!(
                    "UPDATE delivery AS d SET status = 0, lease_until = NULL, lease_owner = NULL, \
                     ready = CASE WHEN ready = 1 OR NOT {EARLIER_OPEN} THEN 1 ELSE 0 END WHERE status = 1"
                ),
                [],
            )
            .map_err(sql_err)?;
        if taken_back > 0 {
            tracing::info!(
                deliveries = taken_back,
                "took back the leases of a process that is gone"
            );
        }
    }
    let (tx, rx) = mpsc::channel(TAKE_MAX * 4);
    let synced_upto = Arc::new(AtomicI64::new(0));
    let syncer = if options.synchronous_full {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let upto = synced_upto.clone();
        let delay = options.sync_delay;
        std::thread::Builder::new()
            .name("crmhooks-sqlite-sync".into())
            .spawn(move || syncer(&wal, &upto, &sync_rx, delay))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the WAL syncer: {e}")))?;
        Some(sync_tx)
    } else {
        None
    };
    std::thread::Builder::new()
        .name("crmhooks-sqlite-writer".into())
        .spawn(move || {
            Writer {
                conn,
                options,
                sql: HashMap::new(),
                syncer,
                synced_upto,
                handed_upto: 0,
                handoff,
                batch: None,
                successors: None,
                recent: RecentEvents::default(),
                tenants: HashMap::new(),
                next_heads: NextHeads::default(),
                attempt_seq: None,
                chains: Chains::default(),
                requeued_at: None,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite writer: {e}")))?;
    Ok(tx)
}

pub(crate) struct Writer {
    pub(super) conn: Connection,
    pub(super) options: WriterOptions,
    pub(super) sql: HashMap<&'static str, Arc<EntitySql>>,
    /// The syncer, when changes must be durable before they are answered.
    pub(super) syncer: Option<std::sync::mpsc::Sender<SyncJob>>,
    /// Deliveries up to this id are durable (set by the syncer).
    pub(super) synced_upto: Arc<AtomicI64>,
    /// The highest delivery id a batch handed to the syncer may have written.
    pub(super) handed_upto: i64,
    /// The hand-off to the dispatcher.
    pub(super) handoff: SharedHandOff,
    /// The hand-off of the group commit in progress.
    pub(super) batch: Option<Batch>,
    /// The hand-off of the bookkeeping in progress (next deliveries of closed chains).
    pub(super) successors: Option<Batch>,
    /// Events committed lately, for claims.
    pub(super) recent: RecentEvents,
    /// Tenant names read so far.
    pub(super) tenants: HashMap<TenantId, String>,
    /// What became of the next heads of the bookkeeping in progress (in its debug line).
    pub(super) next_heads: NextHeads,
    /// The last AttemptId handed out in the transaction in progress ([`Writer::attempt_ids`]).
    pub(super) attempt_seq: Option<i64>,
    /// Chains followed in memory.
    pub(super) chains: Chains,
    /// When a claim last requeued what waited in memory on a node that died.
    pub(super) requeued_at: Option<Instant>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut changes = Vec::new();
            let mut claims = Vec::new();
            let mut completes = Vec::new();
            let mut releases = Vec::new();
            let mut tasks = Vec::new();
            let mut take = |cmd: Cmd| match cmd {
                Cmd::Change(j) => changes.push(j),
                Cmd::Claim(r, reply) => claims.push((r, reply)),
                Cmd::Release(owner, reply) => releases.push((owner, reply)),
                Cmd::Run { durable, task } => tasks.push((durable, task)),
                Cmd::Complete {
                    outcomes,
                    now,
                    max_consecutive_errors,
                    reply,
                } => completes.push((outcomes, now, max_consecutive_errors, reply)),
            };
            take(first);
            for _ in 1..TAKE_MAX {
                match rx.try_recv() {
                    Ok(cmd) => take(cmd),
                    Err(_) => break,
                }
            }
            let bookkeeping = !completes.is_empty() || !claims.is_empty();
            match (changes.is_empty(), bookkeeping) {
                (false, true) => self.changes_and_bookkeeping(changes, completes, claims),
                (false, false) => self.changes(changes),
                (true, true) => self.bookkeeping(completes, claims),
                (true, false) => {}
            }
            for (owner, reply) in releases {
                let _ = reply.send(self.in_tx(|w| w.release(&owner)));
            }
            for (durable, task) in tasks {
                self.task(durable, task);
            }
        }
    }

    /// Runs a task in a transaction of its own; a durable one is answered after the syncer's
    /// fsync, with the deliveries it wrote held back from claims until then.
    fn task(&mut self, durable: bool, mut task: Box<dyn Task>) {
        if let Err(e) = self.begin() {
            task.answer(Some(e));
            return;
        }
        if !task.run(self) {
            self.rollback();
            task.answer(None);
            return;
        }
        if let Err(e) = self.commit() {
            task.answer(Some(e));
            return;
        }
        let Some(syncer) = self.syncer.clone().filter(|_| durable) else {
            task.answer(None);
            return;
        };
        let upto = match self.last_delivery_id() {
            Ok(upto) => upto,
            Err(e) => {
                task.answer(Some(e));
                return;
            }
        };
        self.handed_upto = upto;
        let job = SyncJob {
            answers: Vec::new(),
            tasks: vec![task],
            upto,
            handed: Default::default(),
            wait_for: None,
        };
        if let Err(lost) = syncer.send(job) {
            tracing::error!("the WAL syncer stopped");
            for task in lost.0.tasks {
                task.answer(Some(StoreError::Unavailable(
                    "the WAL syncer stopped".into(),
                )));
            }
        }
    }

    /// Attempt records, then claims (which see them), in one bookkeeping transaction: one
    /// commit for both. When it fails, each part is redone on its own so that one failing part
    /// does not fail the other.
    pub(super) fn bookkeeping(&mut self, completes: Vec<CompleteJob>, claims: Vec<ClaimJob>) {
        let started = Instant::now();
        self.successors = Batch::open(&self.handoff);
        self.next_heads = NextHeads::default();
        let together = self.in_tx(|w| w.record_and_claim(&completes, &claims));
        self.close_successors(together.is_ok());
        match together {
            Ok((recorded, claimed)) => {
                let took = started.elapsed();
                self.answer_bookkeeping(completes, claims, recorded, claimed, took);
            }
            Err(e) => {
                tracing::warn!(error = %e, "bookkeeping failed; recording and claiming apart");
                if !completes.is_empty() {
                    self.completes(completes);
                }
                for (req, reply) in claims {
                    let result = self.in_tx(|w| w.claim(&req));
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// The attempt records, then the claims, in the transaction in progress.
    pub(super) fn record_and_claim(
        &mut self,
        completes: &[CompleteJob],
        claims: &[ClaimJob],
    ) -> Result<Kept> {
        let mut recorded = Vec::with_capacity(completes.len());
        for (outcomes, now, max, _) in completes {
            recorded.push(self.complete(outcomes, *now, *max)?);
        }
        let mut claimed = Vec::with_capacity(claims.len());
        for (req, _) in claims {
            claimed.push(self.claim(req)?);
        }
        Ok((recorded, claimed))
    }

    /// Answers a committed bookkeeping.
    pub(super) fn answer_bookkeeping(
        &self,
        completes: Vec<CompleteJob>,
        claims: Vec<ClaimJob>,
        recorded: Vec<Vec<StateChange>>,
        claimed: Vec<Vec<Claimed>>,
        took: Duration,
    ) {
        tracing::debug!(
            recorded = completes.iter().map(|c| c.0.len()).sum::<usize>(),
            claimed = claimed.iter().map(Vec::len).sum::<usize>(),
            next_heads = ?self.next_heads,
            total_us = took.as_micros() as u64,
            "bookkeeping"
        );
        for ((_, _, _, reply), changes) in completes.into_iter().zip(recorded) {
            let _ = reply.send(Ok(changes));
        }
        for ((_, reply), c) in claims.into_iter().zip(claimed) {
            let _ = reply.send(Ok(c));
        }
    }

    /// Bookkeeping and a group commit in one transaction, when both wait: the pages both
    /// write (the newest deliveries, the open-delivery indexes) go to the WAL once, with one
    /// commit. The bookkeeping goes first: its input is borrowed, so when the changes fail in
    /// the database it is redone on its own (as the changes fail in any case then); when it
    /// fails, nothing of the changes has run yet, and each part runs apart as before.
    pub(super) fn changes_and_bookkeeping(
        &mut self,
        jobs: Vec<Job>,
        completes: Vec<CompleteJob>,
        claims: Vec<ClaimJob>,
    ) {
        let started = Instant::now();
        let batch = jobs.len();
        if self.begin().is_err() {
            self.changes(jobs);
            self.bookkeeping(completes, claims);
            return;
        }
        self.successors = Batch::open(&self.handoff);
        self.next_heads = NextHeads::default();
        let kept = self.record_and_claim(&completes, &claims);
        let Ok((recorded, claimed)) = kept else {
            self.rollback();
            self.close_successors(false);
            self.changes(jobs);
            self.bookkeeping(completes, claims);
            return;
        };
        // Timed apart in the debug lines: the commit is the group commit's.
        let bookkeeping_took = started.elapsed();
        let (done, broken) = self.apply_jobs(jobs);
        let committed = self.end_changes(done, broken, batch, started + bookkeeping_took);
        self.close_successors(committed);
        if !committed {
            self.bookkeeping(completes, claims);
            return;
        }
        self.answer_bookkeeping(completes, claims, recorded, claimed, bookkeeping_took);
    }

    /// Begins an immediate transaction. Every transaction here runs with
    /// `synchronous=NORMAL` (set when the connection opens): commits write the WAL without an
    /// fsync of their own; the syncer makes changes durable before they are answered, and a
    /// power loss can at worst roll back the last bookkeeping (a delivery sent again).
    pub(super) fn begin(&mut self) -> Result<()> {
        self.run_cached("BEGIN IMMEDIATE").map_err(sql_err)
    }

    pub(super) fn commit(&mut self) -> Result<()> {
        // The AttemptId counter is read once per transaction, under its write lock: another
        // connection to the file may write attempts between two.
        self.attempt_seq = None;
        match self.run_cached("COMMIT") {
            Ok(()) => {
                self.recent.publish();
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(StoreError::Unavailable(format!("commit failed: {e}")))
            }
        }
    }

    pub(super) fn rollback(&mut self) {
        self.recent.discard();
        self.attempt_seq = None;
        // What the transaction did to the chains is undone by forgetting them all (safe: see
        // `Chains`).
        self.chains = Chains::default();
        if !self.conn.is_autocommit() {
            if let Err(e) = self.run_cached("ROLLBACK") {
                tracing::error!(error = %e, "rollback failed");
            }
        }
    }

    /// Runs a statement without parameters from the statement cache: at low rates every event
    /// pays for several transactions, and preparing BEGIN and COMMIT each time showed in
    /// profiles.
    pub(super) fn run_cached(&mut self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Runs `f` in a transaction; rolls back when it fails.
    pub(super) fn in_tx<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => self.commit().map(|()| v),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// The highest delivery id ever assigned (AUTOINCREMENT keeps them rising).
    pub(super) fn last_delivery_id(&mut self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'delivery'")
            .map_err(sql_err)?
            .query_row([], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql_err)?
            .unwrap_or(0))
    }

    pub(super) fn load_webhook(&mut self, id: WebhookId) -> Result<Option<Webhook>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = ?"
            ))
            .map_err(sql_err)?
            .query_row([id], |r| Ok(read_webhook(r, &self.options.keys)))
            .optional()
            .map_err(sql_err)?
            .transpose()
    }

    /// A tenant's name, read once: tenants are never renamed or removed, and every claim and
    /// hand-over at record needs the name for the payload.
    pub(super) fn tenant_name(&mut self, tenant_id: TenantId) -> Result<String> {
        if let Some(name) = self.tenants.get(&tenant_id) {
            return Ok(name.clone());
        }
        let name: String = self
            .conn
            .prepare_cached("SELECT name FROM tenant WHERE tenant_id = ?")
            .map_err(sql_err)?
            .query_row([tenant_id], |r| r.get(0))
            .map_err(sql_err)?;
        self.tenants.insert(tenant_id, name.clone());
        Ok(name)
    }
}
