//! The SQLite hot path on one OS thread.
//!
//! Changes (group commit), claims and attempt records all run here, on a connection of the
//! thread's own, with prepared statements cached. Each command is one hop from a tokio task to
//! the thread and one back, whatever number of statements it runs; through sqlx every statement
//! was a hop, and under load those hops, not SQLite, set the pace.
//!
//! Each loop takes every command that is waiting: all changes in one transaction (group
//! commit), then the attempt records and the claims in another (the claims see the deliveries
//! the records finished). Writes that stay on sqlx (webhook definitions, keys, replay) take
//! the same [`WriteGate`], so the two connections never wait on SQLite's lock.
//!
//! Durability without stalling the writer: with `synchronous=FULL` configured, a batch of
//! changes commits with `synchronous=NORMAL` and is handed to a second thread, the syncer, that
//! `fdatasync`s the WAL file and only then answers the callers. That is the guarantee of
//! `FULL` (nobody is told "saved" before the commit frame is on disk) but the writer goes on
//! with the next batch, the claims and the records while the disk works, and one fsync covers
//! every batch that committed while the previous one ran. Until its fsync is done a batch's
//! deliveries are not claimed (`synced_upto`), so no webhook announces a change that a power
//! loss could still take back.

use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OptionalExtension};
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::common::{
    column_list, created_event, disable_reason, json_text, map_text, plan_change, read_event,
    read_row, read_webhook, state_event, stored_event, usage_last_error, DbRow, Planned,
    EARLIER_OPEN, EVENT_COLS, WEBHOOK_COLS,
};
use crate::entity::{EntityDef, Ticks, Value};
use crate::model::*;
use crate::{now_ticks, ChangeFn, ChangeOutcome, ClaimRequest, Intake, Result, StoreError};

/// Serializes every write transaction of the process: the writer thread holds it for each of
/// its transactions, sqlx writes hold it around theirs. Fair (FIFO), so neither side starves.
pub(crate) type WriteGate = Arc<tokio::sync::Mutex<()>>;

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
    /// Record attempts and run the state machine.
    Complete {
        outcomes: Vec<AttemptOutcome>,
        now: Ticks,
        max_consecutive_errors: i64,
        reply: oneshot::Sender<Result<Vec<StateChange>>>,
    },
}

/// Attempt records waiting: outcomes, now, the error threshold, and who waits.
type CompleteJob = (
    Vec<AttemptOutcome>,
    Ticks,
    i64,
    oneshot::Sender<Result<Vec<StateChange>>>,
);

/// A claim waiting, and who waits.
type ClaimJob = (ClaimRequest, oneshot::Sender<Result<Vec<Claimed>>>);

/// What a bookkeeping answers: the state changes of each record job, the deliveries of each
/// claim.
type Kept = (Vec<Vec<StateChange>>, Vec<Vec<Claimed>>);

/// Settings of the writer thread.
pub(crate) struct WriterOptions {
    pub synchronous_full: bool,
    pub wal_autocheckpoint: u32,
    /// Tests only: the syncer waits this long before each fsync.
    pub sync_delay: Duration,
    pub local_offset: time::UtcOffset,
    pub gate: WriteGate,
}

/// The hand-off of fresh deliveries to this node's dispatcher (see [`Intake`]), shared by the
/// store (which sets the intake) and the writer thread (which reserves room with it).
#[derive(Default)]
pub(crate) struct HandOff {
    /// The dispatcher, when one runs on this node.
    intake: Option<Arc<dyn Intake>>,
}

/// A hand-off in progress: the intake it reserves room with, the lease it writes, and what it
/// wrote leased. A group commit hands the heads it inserts (after their fsync); a bookkeeping
/// transaction hands the next delivery of each chain it closes, so that the later events of a
/// contact need no claim: at once when its insert is durable, after the fsync that makes it so
/// otherwise. Events written by bookkeeping are not handed (their commit has no fsync of its
/// own): they wait for a claim.
struct Batch {
    intake: Arc<dyn Intake>,
    owner: String,
    lease_until: Ticks,
    /// Deliveries written leased, each reserved with `intake`.
    handed: Vec<Claimed>,
    /// Deliveries written leased whose insert is not durable yet: handed by the syncer once
    /// deliveries up to `after_upto` are.
    after_sync: Vec<Claimed>,
    after_upto: i64,
    /// Webhooks read for them.
    hooks: HashMap<i64, Arc<Webhook>>,
}

impl Batch {
    fn open(handoff: &SharedHandOff) -> Option<Batch> {
        let intake = lock(handoff).intake.clone()?;
        Some(Batch {
            owner: intake.owner().to_owned(),
            lease_until: now_ticks().saturating_add(intake.lease_ticks()),
            intake,
            handed: Vec::new(),
            after_sync: Vec::new(),
            after_upto: 0,
            hooks: HashMap::new(),
        })
    }

    /// Takes `c`, leased to the intake's node by this bookkeeping: handed at its commit when
    /// its insert is durable, else once the syncer has made it so.
    fn lease(&mut self, c: Claimed, durable: bool) {
        if durable {
            self.handed.push(c);
        } else {
            self.after_upto = self.after_upto.max(c.delivery_id);
            self.after_sync.push(c);
        }
    }

    /// What was handed when the transaction committed (now, and once deliveries up to the id
    /// are durable); otherwise the room given back.
    fn close(self, committed: bool) -> (Handed, Handed, i64) {
        if committed {
            (
                Handed {
                    intake: Some(self.intake.clone()),
                    claimed: self.handed,
                },
                Handed {
                    intake: Some(self.intake),
                    claimed: self.after_sync,
                },
                self.after_upto,
            )
        } else {
            for c in self.handed.iter().chain(&self.after_sync) {
                self.intake.unreserve(c.webhook.id);
            }
            (Handed::default(), Handed::default(), 0)
        }
    }
}

/// How many recent events the writer keeps for claims.
const RECENT_EVENTS: usize = 1024;

/// The events committed lately, newest last: nearly every delivery a claim takes was written a
/// few milliseconds before, and reading its event back (and parsing its JSON) was a quarter of
/// the claim. Events never change once written; the ones of a transaction in progress are
/// staged and only kept when it commits.
#[derive(Default)]
struct RecentEvents {
    by_seq: HashMap<i64, Arc<StoredEvent>>,
    order: std::collections::VecDeque<i64>,
    staged: Vec<Arc<StoredEvent>>,
}

impl RecentEvents {
    fn get(&self, seq: i64) -> Option<Arc<StoredEvent>> {
        self.by_seq.get(&seq).cloned()
    }

    fn stage(&mut self, event: Arc<StoredEvent>) {
        self.staged.push(event);
    }

    fn publish(&mut self) {
        for event in self.staged.drain(..) {
            self.order.push_back(event.seq);
            self.by_seq.insert(event.seq, event);
        }
        while self.order.len() > RECENT_EVENTS {
            if let Some(old) = self.order.pop_front() {
                self.by_seq.remove(&old);
            }
        }
    }

    fn discard(&mut self) {
        self.staged.clear();
    }
}

/// How often a claim looks for deliveries that waited in memory on a node that died.
const REQUEUE_EVERY: Duration = Duration::from_secs(1);

/// Most deliveries [`Chains`] follows at once.
const CHAINS_MAX: usize = 65_536;

/// A chain: the deliveries of one contact (an order key) to one webhook, sent one at a time.
type ChainKey = (i64, Arc<str>);

/// A delivery written leased behind one in flight, waiting for it in memory.
struct Waiting {
    delivery_id: i64,
    webhook_id: i64,
    event_id: Uuid,
    event: Arc<StoredEvent>,
    tenant: String,
    lease_until: Ticks,
}

/// Chains followed in memory, so that the later events of a contact go out without a claim
/// and without a query: the deliveries this writer handed over and that are in flight, and
/// behind each one the delivery of the next event of the same contact, written leased to this
/// node with `ready` = 0 and handed over by the record that closes the one before it.
///
/// Forgetting is always safe (a rollback forgets everything): a waiting delivery is a leased
/// row whose lease runs out, and an expired lease is claimed again only once nothing earlier
/// of its chain is open, so order holds across a crash too.
#[derive(Default)]
struct Chains {
    /// The chain of each delivery followed (in flight or waiting).
    live: HashMap<i64, ChainKey>,
    /// The newest delivery followed of each chain.
    tails: HashMap<ChainKey, i64>,
    /// The delivery waiting behind each delivery followed.
    waiting: HashMap<i64, Waiting>,
}

impl Chains {
    /// Follows `delivery_id`, now the newest open delivery of `key`. When too many are
    /// followed (outcomes that never came back), everything is forgotten first.
    fn follow(&mut self, delivery_id: i64, key: ChainKey) {
        if self.live.len() >= CHAINS_MAX {
            tracing::warn!(
                followed = self.live.len(),
                "forgetting the chains followed in memory"
            );
            *self = Chains::default();
        }
        self.tails.insert(key.clone(), delivery_id);
        self.live.insert(delivery_id, key);
    }

    /// Whether `open`, the newest open delivery of `key`, is the last one this writer follows
    /// on that chain (in flight or waiting), with nothing waiting behind it yet: a new delivery
    /// of the chain may then wait behind it in memory.
    fn tail_is(&self, key: &ChainKey, open: i64) -> bool {
        self.tails.get(key) == Some(&open) && !self.waiting.contains_key(&open)
    }

    /// Stops following `delivery_id` (it closed, or went back to the queue): its chain's tail
    /// is gone when it was the tail.
    fn unfollow(&mut self, delivery_id: i64) {
        if let Some(key) = self.live.remove(&delivery_id) {
            if self.tails.get(&key) == Some(&delivery_id) {
                self.tails.remove(&key);
            }
        }
    }
}

/// Which hand-off: of a group commit (fresh heads) or of a bookkeeping (next heads).
#[derive(Clone, Copy)]
enum Kind {
    Commit,
    Record,
}

/// Shared [`HandOff`].
pub(crate) type SharedHandOff = Arc<std::sync::Mutex<HandOff>>;

fn lock(h: &SharedHandOff) -> std::sync::MutexGuard<'_, HandOff> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets or clears the intake.
pub(crate) fn set_intake(h: &SharedHandOff, intake: Option<Arc<dyn Intake>>) {
    lock(h).intake = intake;
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

/// Answers to a committed batch of changes, owed once the WAL is on disk.
type Answers = Vec<(
    oneshot::Sender<Result<ChangeOutcome>>,
    Result<ChangeOutcome>,
)>;

/// Work for the syncer: a committed batch of changes waiting for its fsync (its answers, the
/// highest delivery id it may have written, the deliveries it handed to the dispatcher), or
/// next heads a bookkeeping leased that wait for an earlier batch's fsync (`wait_for`).
struct SyncJob {
    answers: Answers,
    upto: i64,
    handed: Handed,
    /// `None`: a group commit, made durable by the next fsync. `Some(id)`: deliveries leased by
    /// a bookkeeping, given once deliveries up to `id` are durable (no fsync of their own).
    wait_for: Option<i64>,
}

/// Deliveries written leased (by a group commit, or next heads by a bookkeeping), for the
/// intake they were reserved with.
#[derive(Default)]
struct Handed {
    intake: Option<Arc<dyn Intake>>,
    claimed: Vec<Claimed>,
}

impl Handed {
    fn give(self) {
        if let Some(intake) = self.intake {
            if !self.claimed.is_empty() {
                intake.take(self.claimed);
            }
        }
    }
}

/// The syncer thread: takes every job waiting, makes the WAL durable with one `fdatasync`,
/// marks their deliveries claimable, hands over what they leased, then answers the callers.
/// Jobs that only wait for deliveries already durable are handed over without an fsync.
fn syncer(
    wal: &Path,
    synced_upto: &AtomicI64,
    rx: &std::sync::mpsc::Receiver<SyncJob>,
    delay: Duration,
) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let started = Instant::now();
        let durable = synced_upto.load(Ordering::SeqCst);
        if jobs
            .iter()
            .all(|j| j.wait_for.is_some_and(|id| id <= durable))
        {
            // Only hand-overs waiting for an fsync that is done already.
            for job in jobs {
                job.handed.give();
            }
            continue;
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        // The WAL stays one file while the writer's connection is open (SQLite deletes it only
        // when the last connection closes; a checkpoint truncates it in place), so it is opened
        // once, not for every fsync.
        let synced = match &file {
            Some(f) => f.sync_data(),
            None => std::fs::OpenOptions::new()
                .write(true)
                .open(wal)
                .and_then(|f| {
                    let done = f.sync_data();
                    file = Some(f);
                    done
                }),
        };
        tracing::debug!(
            batches = jobs.len(),
            sync_us = started.elapsed().as_micros() as u64,
            "wal sync"
        );
        let upto = jobs.iter().map(|j| j.upto).max().unwrap_or(0);
        match synced {
            Ok(()) => {
                synced_upto.fetch_max(upto, Ordering::SeqCst);
                for job in jobs {
                    job.handed.give();
                    for (reply, result) in job.answers {
                        let _ = reply.send(result);
                    }
                }
            }
            Err(e) => {
                // The changes are committed but their durability is unknown: say so, and let
                // their deliveries go (the database holds them; holding them back forever
                // would be worse).
                tracing::error!(error = %e, wal = %wal.display(), "fsync of the WAL failed");
                synced_upto.fetch_max(upto, Ordering::SeqCst);
                for job in jobs {
                    job.handed.give();
                    for (reply, result) in job.answers {
                        let _ = reply.send(result.and(Err(StoreError::Unavailable(format!(
                            "the change was committed but could not be made durable: {e}"
                        )))));
                    }
                }
            }
        }
    }
}

/// A delivery's stored EventId.
fn event_id(delivery_id: i64, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text)
        .map_err(|e| StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}")))
}

/// Integers as a JSON array, for `IN (SELECT value FROM json_each(?))`.
fn json_ids(ids: &[i64]) -> String {
    Json::from(ids).to_string()
}

/// The SQL of one entity table, built once.
struct EntitySql {
    select: String,
    insert: String,
    update: String,
    delete: String,
}

struct Writer {
    conn: Connection,
    options: WriterOptions,
    sql: HashMap<&'static str, Arc<EntitySql>>,
    /// The syncer, when changes must be durable before they are answered.
    syncer: Option<std::sync::mpsc::Sender<SyncJob>>,
    /// Deliveries up to this id are durable (set by the syncer).
    synced_upto: Arc<AtomicI64>,
    /// The highest delivery id a batch handed to the syncer may have written.
    handed_upto: i64,
    /// The hand-off to the dispatcher.
    handoff: SharedHandOff,
    /// The hand-off of the group commit in progress.
    batch: Option<Batch>,
    /// The hand-off of the bookkeeping in progress (next deliveries of closed chains).
    successors: Option<Batch>,
    /// Events committed lately, for claims.
    recent: RecentEvents,
    /// Tenant names read so far.
    tenants: HashMap<i64, String>,
    /// What became of the next heads of the bookkeeping in progress (in its debug line).
    next_heads: NextHeads,
    /// The last AttemptId handed out in the transaction in progress ([`Writer::attempt_ids`]).
    attempt_seq: Option<i64>,
    /// Chains followed in memory.
    chains: Chains,
    /// When a claim last requeued what waited in memory on a node that died.
    requeued_at: Option<Instant>,
}

/// The next heads a bookkeeping found, by what kept them from being handed over.
#[derive(Default, Debug)]
struct NextHeads {
    /// Already leased (claimed by then).
    leased: u32,
    /// A retry not due yet.
    not_due: u32,
    /// Written by a group commit whose fsync is not done: handed over after it, if there is
    /// room.
    not_durable: u32,
    /// Durable: handed over now, if there is room.
    tried: u32,
    /// Handed over.
    handed: u32,
    /// Found waiting in memory behind the one that closed, without a query (those handed
    /// over count in `handed` too).
    followed: u32,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut changes = Vec::new();
            let mut claims = Vec::new();
            let mut completes = Vec::new();
            let mut releases = Vec::new();
            let mut take = |cmd: Cmd| match cmd {
                Cmd::Change(j) => changes.push(j),
                Cmd::Claim(r, reply) => claims.push((r, reply)),
                Cmd::Release(owner, reply) => releases.push((owner, reply)),
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
            let gate = self.options.gate.clone();
            let _held = gate.blocking_lock();
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
        }
    }

    /// Gives `owner`'s leases back: pending again, and heads of their chains when nothing
    /// earlier of the chain is open (a delivery handed over from memory still says `ready` =
    /// 0). The chains followed in memory are forgotten with them.
    fn release(&mut self, owner: &str) -> Result<u64> {
        self.chains = Chains::default();
        let n = self
            .conn
            .prepare_cached(&format!(
                "UPDATE delivery AS d SET status = 0, lease_until = NULL, lease_owner = NULL, \
                 ready = CASE WHEN ready = 1 OR NOT {EARLIER_OPEN} THEN 1 ELSE 0 END \
                 WHERE status = 1 AND lease_owner = ?",
            ))
            .map_err(sql_err)?
            .execute([owner])
            .map_err(sql_err)?;
        Ok(n as u64)
    }

    /// Attempt records, then claims (which see them), in one bookkeeping transaction: one
    /// commit for both. When it fails, each part is redone on its own so that one failing part
    /// does not fail the other.
    fn bookkeeping(&mut self, completes: Vec<CompleteJob>, claims: Vec<ClaimJob>) {
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
    fn record_and_claim(&mut self, completes: &[CompleteJob], claims: &[ClaimJob]) -> Result<Kept> {
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
    fn answer_bookkeeping(
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

    /// Begins an immediate transaction. Every transaction here runs with
    /// `synchronous=NORMAL` (set when the connection opens): commits write the WAL without an
    /// fsync of their own; the syncer makes changes durable before they are answered, and a
    /// power loss can at worst roll back the last bookkeeping (a delivery sent again).
    fn begin(&mut self) -> Result<()> {
        self.run_cached("BEGIN IMMEDIATE").map_err(sql_err)
    }

    fn commit(&mut self) -> Result<()> {
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

    fn rollback(&mut self) {
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
    fn run_cached(&mut self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    /// Runs `f` in a transaction; rolls back when it fails.
    fn in_tx<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => self.commit().map(|()| v),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Group commit: every waiting change in one transaction and one fsync. Expected refusals
    /// (not found, invalid, conflict) happen before a change writes anything, so the batch goes
    /// on; a database error may leave a change half-written, so it fails the whole batch
    /// (every caller gets an error, nothing is half-committed).
    fn changes(&mut self, jobs: Vec<Job>) {
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

    /// Bookkeeping and a group commit in one transaction, when both wait: the pages both
    /// write (the newest deliveries, the open-delivery indexes) go to the WAL once, with one
    /// commit. The bookkeeping goes first: its input is borrowed, so when the changes fail in
    /// the database it is redone on its own (as the changes fail in any case then); when it
    /// fails, nothing of the changes has run yet, and each part runs apart as before.
    fn changes_and_bookkeeping(
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

    /// Applies a group commit's changes in the transaction in progress: their answers, and the
    /// database error that broke the batch, if one did. Expected refusals (not found, invalid,
    /// conflict) happen before a change writes anything, so the batch goes on.
    fn apply_jobs(&mut self, jobs: Vec<Job>) -> (Answers, Option<String>) {
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
    fn end_changes(
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

    /// Lets the fan-out of the group commit about to run reserve room with the intake, if
    /// there is one.
    fn open_handoff(&mut self) {
        self.batch = Batch::open(&self.handoff);
    }

    /// Ends the hand-off of a group commit: what it handed when it committed, and otherwise
    /// the room it reserved given back.
    fn close_handoff(&mut self, committed: bool) -> Handed {
        self.batch
            .take()
            .map(|b| b.close(committed).0)
            .unwrap_or_default()
    }

    /// Ends the hand-off of a bookkeeping: next heads already durable go to the dispatcher
    /// now, the others through the syncer once their group commit's fsync is done (the
    /// syncer takes jobs in order, and that commit's job went first).
    fn close_successors(&mut self, committed: bool) {
        let Some(b) = self.successors.take() else {
            return;
        };
        let (now, later, upto) = b.close(committed);
        now.give();
        if later.claimed.is_empty() {
            return;
        }
        let job = SyncJob {
            answers: Vec::new(),
            upto: 0,
            handed: later,
            wait_for: Some(upto),
        };
        match &self.syncer {
            Some(syncer) => {
                if let Err(lost) = syncer.send(job) {
                    // As for a group commit: committed all the same, so the leases exist.
                    tracing::error!("the WAL syncer stopped");
                    lost.0.handed.give();
                }
            }
            None => job.handed.give(),
        }
    }

    /// The highest delivery id ever assigned (AUTOINCREMENT keeps them rising).
    fn last_delivery_id(&mut self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'delivery'")
            .map_err(sql_err)?
            .query_row([], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(sql_err)?
            .unwrap_or(0))
    }

    fn entity_sql(&mut self, def: &'static EntityDef) -> Arc<EntitySql> {
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
    fn apply(
        &mut self,
        actor: &Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        mut change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let sql = self.entity_sql(def);
        let offset = self.options.local_offset;
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
        let (after, event) = match plan_change(def, actor, current, decided, now, offset)? {
            Planned::Nothing(row) => {
                return Ok(ChangeOutcome {
                    row,
                    committed: Committed::default(),
                })
            }
            Planned::Insert(mut row) => {
                let args = std::iter::once(SqlValue::Integer(actor.tenant_id))
                    .chain(row.values.iter().map(sql_value));
                self.conn
                    .prepare_cached(&sql.insert)
                    .map_err(sql_err)?
                    .execute(params_from_iter(args))
                    .map_err(sql_err)?;
                let id = self.conn.last_insert_rowid();
                row.values[0] = Value::Int(id);
                let event = created_event(def, &row, offset);
                (Some(row), event)
            }
            Planned::Update { row, event } => {
                let args = row.values.iter().skip(1).map(sql_value).chain([
                    SqlValue::Integer(actor.tenant_id),
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

    /// Appends an event and one delivery per Active webhook of the tenant subscribed to it.
    fn insert_event(&mut self, actor: &Actor, ev: NewEvent, now: Ticks) -> Result<Committed> {
        let changes = json_text(&ev.changes);
        // No RETURNING (SQLite buffers its rows in a temporary table): the rowid is the key.
        self.conn
            .prepare_cached(
                "INSERT INTO event (tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .map_err(sql_err)?
            .execute(
                params![
                    actor.tenant_id,
                    ev.event,
                    ev.entity,
                    ev.primary_key,
                    changes,
                    map_text(&ev.values),
                    ev.field_values,
                    actor.associate_id,
                    now
                ],
            )
            .map_err(sql_err)?;
        let seq = self.conn.last_insert_rowid();
        // Fan-out: a delivery per Active subscribed webhook of the tenant, with a random
        // version-4 EventId. The newest open delivery of the same contact to that webhook, if
        // there is one, goes first: the new one waits behind it (`ready` = 0), in memory and
        // leased when this writer follows it (see `Chains`). A head of its chain is written
        // leased when the dispatcher of the group commit has room for it, and handed over after
        // the commit. Plain statements: one fan-out statement with a materialized CTE (for the
        // reservation) opened and closed a temporary B-tree per event, and cost more than the
        // rest of the event put together. Ordered by `we.webhook_id`, which the index of
        // `webhook_event` gives as it is (by `w.webhook_id`, SQLite sorted in a temporary
        // B-tree per event).
        let targets: Vec<(i64, Option<i64>)> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT w.webhook_id, (SELECT max(p.delivery_id) FROM delivery p WHERE p.webhook_id = w.webhook_id \
                     AND p.order_key = ?1 AND p.status IN (0, 1)) \
                     FROM webhook_event we CROSS JOIN webhook w ON w.webhook_id = we.webhook_id \
                     WHERE we.event = ?2 AND w.tenant_id = ?3 AND w.state = 1 AND w.type = 'webhook' \
                     ORDER BY we.webhook_id",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![ev.order_key, ev.event, actor.tenant_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        let deliveries = targets.len() as u64;
        let mut leased: Vec<(i64, Uuid, Arc<Webhook>)> = Vec::new();
        let order_key: Arc<str> = Arc::from(ev.order_key.as_str());
        // Written leased to wait in memory: (their id, EventId, the one in front, webhook).
        let mut behind: Vec<(i64, Uuid, i64, i64)> = Vec::new();
        for (webhook_id, newest_open) in targets {
            let open = newest_open.is_some();
            let key: ChainKey = (webhook_id, Arc::clone(&order_key));
            // Behind a delivery this writer follows: it waits in memory, leased to this node.
            let wait_behind = match (newest_open, &self.batch) {
                (Some(tail), Some(_)) if self.chains.tail_is(&key, tail) => Some(tail),
                _ => None,
            };
            let webhook = if open {
                None
            } else {
                match self.reserve(Kind::Commit, webhook_id) {
                    Ok(webhook) => webhook,
                    Err(e) => {
                        self.give_back(&leased);
                        return Err(e);
                    }
                }
            };
            // Leased to this node: a head handed over at commit, or one waiting in memory.
            let (owner, until) = match &self.batch {
                Some(b) if webhook.is_some() || wait_behind.is_some() => {
                    (Some(b.owner.as_str()), Some(b.lease_until))
                }
                _ => (None, None),
            };
            let event_id = Uuid::new_v4();
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, \
                     next_attempt_at, created, ready, status, lease_until, lease_owner) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(
                        params![
                            actor.tenant_id,
                            webhook_id,
                            seq,
                            ev.order_key,
                            event_id.hyphenated().to_string(),
                            now,
                            !open,
                            owner.is_some(),
                            until,
                            owner
                        ],
                    )
                })
                .map(|_| self.conn.last_insert_rowid())
                .map_err(sql_err);
            match (inserted, webhook) {
                (Ok(delivery_id), Some(webhook)) => {
                    self.chains.follow(delivery_id, key);
                    leased.push((delivery_id, event_id, webhook));
                }
                (Ok(delivery_id), None) => {
                    if let Some(tail) = wait_behind {
                        self.chains.follow(delivery_id, key);
                        behind.push((delivery_id, event_id, tail, webhook_id));
                    }
                }
                (Err(e), webhook) => {
                    if let (Some(_), Some(b)) = (webhook, &self.batch) {
                        b.intake.unreserve(webhook_id);
                    }
                    self.give_back(&leased);
                    return Err(e);
                }
            }
        }
        // The event as a claim would read it back (the NewEvent is moved into it, not copied):
        // the handed deliveries carry it, and claims find it among the recent events.
        let handed = leased.len() as u64;
        let event = Arc::new(stored_event(seq, actor, ev, now));
        if let Some(lease_until) = self.batch.as_ref().map(|b| b.lease_until) {
            for (delivery_id, event_id, tail, webhook_id) in behind {
                self.chains.waiting.insert(
                    tail,
                    Waiting {
                        delivery_id,
                        webhook_id,
                        event_id,
                        event: Arc::clone(&event),
                        tenant: actor.tenant.clone(),
                        lease_until,
                    },
                );
            }
        }
        if let Some(batch) = self.batch.as_mut() {
            for (delivery_id, event_id, webhook) in leased {
                batch.handed.push(Claimed {
                    delivery_id,
                    event_id,
                    attempt_in_cycle: 0,
                    event: Arc::clone(&event),
                    tenant: actor.tenant.clone(),
                    webhook,
                });
            }
        }
        if deliveries > 0 {
            self.recent.stage(event);
        }
        Ok(Committed {
            event_seq: Some(seq),
            deliveries,
            handed,
        })
    }

    /// Gives back the room of deliveries an event reserved before it failed: the batch rolls
    /// back, and its close only gives back what was handed to it.
    fn give_back(&self, leased: &[(i64, Uuid, Arc<Webhook>)]) {
        if let Some(b) = &self.batch {
            for (_, _, webhook) in leased {
                b.intake.unreserve(webhook.id);
            }
        }
    }

    /// The hand-off of a kind, when one is in progress.
    fn handoff_of(&mut self, kind: Kind) -> &mut Option<Batch> {
        match kind {
            Kind::Commit => &mut self.batch,
            Kind::Record => &mut self.successors,
        }
    }

    /// Room with the dispatcher, in the hand-off of `kind` in progress, for one more delivery
    /// of `webhook_id`, and the webhook it will carry (only an Active one is sent); `None`
    /// without that hand-off or without room.
    fn reserve(&mut self, kind: Kind, webhook_id: i64) -> Result<Option<Arc<Webhook>>> {
        let Some(batch) = self.handoff_of(kind).as_ref() else {
            return Ok(None);
        };
        let webhook = match batch.hooks.get(&webhook_id).cloned() {
            Some(w) => w,
            None => {
                let Some(w) = self.load_webhook(webhook_id)? else {
                    return Ok(None);
                };
                let w = Arc::new(w);
                if let Some(b) = self.handoff_of(kind).as_mut() {
                    b.hooks.insert(webhook_id, Arc::clone(&w));
                }
                w
            }
        };
        if webhook.state != WebhookState::Active {
            return Ok(None);
        }
        Ok(self
            .handoff_of(kind)
            .as_ref()
            .is_some_and(|b| b.intake.reserve(webhook_id))
            .then_some(webhook))
    }

    fn load_webhook(&mut self, id: i64) -> Result<Option<Webhook>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = ?"
            ))
            .map_err(sql_err)?
            .query_row([id], |r| Ok(read_webhook(r)))
            .optional()
            .map_err(sql_err)?
            .transpose()
    }

    /// A tenant's name, read once: tenants are never renamed or removed, and every claim and
    /// hand-over at record needs the name for the payload.
    fn tenant_name(&mut self, tenant_id: i64) -> Result<String> {
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

    /// Leases due deliveries: the oldest first, never one whose contact has an earlier
    /// delivery still open for the same webhook, at most `max_per_webhook` of one webhook.
    fn claim(&mut self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        // Candidates, oldest first: expired leases (a node died mid-send; rare, one index seek
        // when there are none) of heads only (a delivery that waited in memory behind another
        // of its chain is leased too, and must not overtake it), then pending heads: rows whose
        // contact has no earlier open delivery to the same webhook (`ready`, kept by the
        // inserts and by next_head; checked again here). Both walks read only their partial
        // indexes.
        let window = req.limit.saturating_mul(4);
        let skip_args: Vec<SqlValue> = req
            .skip_webhooks
            .iter()
            .map(|id| SqlValue::Integer(*id))
            .collect();
        let skip = |col: &str| {
            if skip_args.is_empty() {
                String::new()
            } else {
                format!(
                    " AND {col} NOT IN ({})",
                    vec!["?"; skip_args.len()].join(", ")
                )
            }
        };
        if !skip_args.is_empty() {
            // Every Active webhook skipped (its requests in flight are at the cap): nothing to
            // claim, and the walk below would visit every head of its backlog to learn that.
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM webhook w WHERE w.state = 1{})",
                skip("w.webhook_id")
            );
            let any: bool = self
                .conn
                .prepare_cached(&sql)
                .map_err(sql_err)?
                .query_row(params_from_iter(skip_args.iter()), |r| r.get(0))
                .map_err(sql_err)?;
            if !any {
                return Ok(Vec::new());
            }
        }
        // Deliveries that waited in memory on a node that died (leased, not heads, something
        // earlier of their chain still open) go back to the queue once, as pending: the walk
        // below would otherwise pass over every one of them at every claim until the ones in
        // front close. One index seek when no lease has run out, at most once a second. Should
        // one of them be waiting in this writer's memory (its lease ran out before the one in
        // front closed), it is forgotten there: the database's way takes it.
        let due = self
            .requeued_at
            .is_none_or(|at| at.elapsed() >= REQUEUE_EVERY);
        let requeued: Vec<i64> = if !due {
            Vec::new()
        } else {
            self.requeued_at = Some(Instant::now());
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL WHERE delivery_id IN \
                     (SELECT d.delivery_id FROM delivery d WHERE d.status = 1 AND d.lease_until < ?1 AND d.ready = 0 \
                     AND {EARLIER_OPEN}) RETURNING delivery_id",
                ))
                .map_err(sql_err)?;
            let rows = stmt.query_map([req.now], |r| r.get(0)).map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        if !requeued.is_empty() {
            let requeued: std::collections::HashSet<i64> = requeued.into_iter().collect();
            self.chains
                .waiting
                .retain(|_, w| !requeued.contains(&w.delivery_id));
            for id in &requeued {
                self.chains.unfollow(*id);
            }
        }
        let mut candidates: Vec<(i64, i64, i64)> = Vec::new();
        self.candidates(
            &format!(
                "SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d JOIN webhook w ON w.webhook_id = d.webhook_id \
                 WHERE d.status = 1 AND d.lease_until < ? AND w.state = 1{} AND NOT {EARLIER_OPEN} \
                 ORDER BY d.lease_until LIMIT ?",
                skip("d.webhook_id")
            ),
            std::iter::once(SqlValue::Integer(req.now))
                .chain(skip_args.iter().cloned())
                .chain(std::iter::once(SqlValue::Integer(window))),
            &mut candidates,
        )?;
        // Deliveries of a batch whose fsync is still running wait for it.
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let unsynced = (synced < self.handed_upto).then_some(SqlValue::Integer(synced));
        self.candidates(
            &format!(
                "SELECT d.delivery_id, d.webhook_id, d.queue_pos FROM delivery d INDEXED BY delivery_ready \
                 JOIN webhook w ON w.webhook_id = d.webhook_id \
                 WHERE d.status = 0 AND d.ready = 1 AND d.next_attempt_at <= ? AND w.state = 1{}{} \
                 AND NOT {EARLIER_OPEN} ORDER BY d.queue_pos, d.delivery_id LIMIT ?",
                if unsynced.is_some() { " AND d.delivery_id <= ?" } else { "" },
                skip("d.webhook_id")
            ),
            std::iter::once(SqlValue::Integer(req.now))
                .chain(unsynced)
                .chain(skip_args.iter().cloned())
                .chain(std::iter::once(SqlValue::Integer(window))),
            &mut candidates,
        )?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Oldest first, at most max_per_webhook of one webhook, at most limit in all.
        candidates.sort_by_key(|&(id, _, pos)| (pos, id));
        let mut per_hook: HashMap<i64, i64> = HashMap::new();
        let mut chosen: Vec<i64> = Vec::new();
        for (id, hook, _) in candidates {
            if chosen.len() as i64 >= req.limit {
                break;
            }
            let n = per_hook.entry(hook).or_insert(0);
            if *n < req.max_per_webhook {
                *n += 1;
                chosen.push(id);
            }
        }
        // One plain statement per row: an UPDATE with RETURNING over a json_each list of ids
        // buffered its rows in a temporary table, and cost more than the rest of the claim.
        struct Leased {
            delivery_id: i64,
            event_id: String,
            attempt_in_cycle: i64,
            seq: i64,
            webhook_id: i64,
            tenant_id: i64,
        }
        let mut leased: Vec<Leased> = Vec::with_capacity(chosen.len());
        {
            let mut lease = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 1, lease_until = ?1, lease_owner = ?2 \
                     WHERE delivery_id = ?3 AND status IN (0, 1)",
                )
                .map_err(sql_err)?;
            let mut read = self
                .conn
                .prepare_cached(
                    "SELECT event_id, attempt_in_cycle, event_seq, webhook_id, tenant_id FROM delivery WHERE delivery_id = ?",
                )
                .map_err(sql_err)?;
            for id in chosen {
                if lease
                    .execute(params![req.lease_until, req.owner, id])
                    .map_err(sql_err)?
                    == 0
                {
                    continue;
                }
                leased.push(
                    read.query_row([id], |r| {
                        Ok(Leased {
                            delivery_id: id,
                            event_id: r.get(0)?,
                            attempt_in_cycle: r.get(1)?,
                            seq: r.get(2)?,
                            webhook_id: r.get(3)?,
                            tenant_id: r.get(4)?,
                        })
                    })
                    .map_err(sql_err)?,
                );
            }
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        // Events from the recent ones the writer keeps, the others read back.
        let mut events: HashMap<i64, Arc<StoredEvent>> = HashMap::new();
        let mut missing: Vec<i64> = Vec::new();
        for l in &leased {
            if events.contains_key(&l.seq) {
                continue;
            }
            match self.recent.get(l.seq) {
                Some(ev) => {
                    events.insert(l.seq, ev);
                }
                None => missing.push(l.seq),
            }
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS} FROM event WHERE event_seq IN (SELECT value FROM json_each(?))"
                ))
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([json_ids(&missing)], |r| Ok(read_event(r)))
                .map_err(sql_err)?;
            for ev in rows {
                let ev = ev.map_err(sql_err)??;
                events.insert(ev.seq, Arc::new(ev));
            }
        }
        let mut hooks: HashMap<i64, Option<Arc<Webhook>>> = HashMap::new();
        let mut out = Vec::with_capacity(leased.len());
        for l in leased {
            if let std::collections::hash_map::Entry::Vacant(slot) = hooks.entry(l.webhook_id) {
                slot.insert(self.load_webhook(l.webhook_id)?.map(Arc::new));
            }
            let (Some(Some(hook)), Some(event)) = (hooks.get(&l.webhook_id), events.get(&l.seq))
            else {
                continue;
            };
            out.push(Claimed {
                delivery_id: l.delivery_id,
                event_id: event_id(l.delivery_id, &l.event_id)?,
                attempt_in_cycle: l.attempt_in_cycle,
                event: Arc::clone(event),
                tenant: self.tenant_name(l.tenant_id)?,
                webhook: Arc::clone(hook),
            });
        }
        Ok(out)
    }

    /// Appends the `(delivery_id, webhook_id, queue_pos)` rows of a candidate query to `out`.
    fn candidates(
        &mut self,
        sql: &str,
        args: impl Iterator<Item = SqlValue>,
        out: &mut Vec<(i64, i64, i64)>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sql_err)?;
        for row in rows {
            out.push(row.map_err(sql_err)?);
        }
        Ok(())
    }

    /// Every waiting batch of attempt records in one bookkeeping transaction.
    fn completes(&mut self, batches: Vec<CompleteJob>) {
        let started = Instant::now();
        let recorded: usize = batches.iter().map(|b| b.0.len()).sum();
        self.successors = Batch::open(&self.handoff);
        self.next_heads = NextHeads::default();
        let result = self.in_tx(|w| {
            let mut all = Vec::with_capacity(batches.len());
            for (outcomes, now, max, _) in &batches {
                all.push(w.complete(outcomes, *now, *max)?);
            }
            Ok(all)
        });
        self.close_successors(result.is_ok());
        tracing::debug!(
            recorded,
            total_us = started.elapsed().as_micros() as u64,
            "complete"
        );
        match result {
            Ok(all) => {
                for ((_, _, _, reply), changes) in batches.into_iter().zip(all) {
                    let _ = reply.send(Ok(changes));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, _, _, reply) in batches {
                    let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
                }
            }
        }
    }

    fn complete(
        &mut self,
        outcomes: &[AttemptOutcome],
        now: Ticks,
        max_consecutive_errors: i64,
    ) -> Result<Vec<StateChange>> {
        let mut changes = Vec::new();
        let mut closed = Vec::new();
        let first_id = self.attempt_ids(outcomes.len())?;
        // A success at the first attempt of a delivery still leased is kept in the delivery's
        // own row (migration 0005); any other attempt is a row of `attempt`. Either way the
        // AttemptId is the outcome's place in this batch after `first_id`.
        let mut rows: Vec<(i64, &AttemptOutcome)> = Vec::with_capacity(outcomes.len());
        let mut settle: Vec<&AttemptOutcome> = Vec::new();
        {
            let mut folded = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 2, completed = ?1, attempts = 1, last_status = ?2, last_error = NULL, \
                     lease_until = NULL, lease_owner = NULL, first_attempt_id = ?3, first_attempted_at = ?4, \
                     first_duration_us = ?5, first_response_excerpt = ?6 \
                     WHERE delivery_id = ?7 AND status = 1 AND attempts = 0 AND event_id = ?8",
                )
                .map_err(sql_err)?;
            for (id, o) in (first_id..).zip(outcomes) {
                let first_success = o.verdict == Verdict::Delivered && o.retry == 0;
                if first_success
                    && folded
                        .execute(params![
                            now,
                            o.status_code,
                            id,
                            o.attempted_at,
                            o.duration_us,
                            o.response_excerpt,
                            o.delivery_id,
                            o.event_id.to_string()
                        ])
                        .map_err(sql_err)?
                        > 0
                {
                    closed.push(o.delivery_id);
                    continue;
                }
                rows.push((id, o));
                if o.verdict == Verdict::Delivered {
                    settle.push(o);
                }
            }
        }
        // Some attempts stayed in their deliveries' rows: their ids count for the sequence.
        let folded_any = rows.len() < outcomes.len();
        if !rows.is_empty() {
            let mut attempt = self
                .conn
                .prepare_cached(
                    "INSERT INTO attempt (attempt_id, delivery_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .map_err(sql_err)?;
            for (id, o) in rows {
                attempt
                    .execute(params![
                        id,
                        o.delivery_id,
                        o.event_id.to_string(),
                        o.retry,
                        o.attempted_at,
                        o.duration_us,
                        o.status_code,
                        o.error,
                        o.response_excerpt
                    ])
                    .map_err(sql_err)?;
            }
        }
        if !settle.is_empty() {
            let mut delivered = self
                .conn
                .prepare_cached(
                    "UPDATE delivery SET status = 2, completed = ?, attempts = attempts + 1, last_status = ?, \
                     last_error = NULL, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                )
                .map_err(sql_err)?;
            for o in settle {
                if delivered
                    .execute(params![now, o.status_code, o.delivery_id])
                    .map_err(sql_err)?
                    > 0
                {
                    closed.push(o.delivery_id);
                }
            }
        }
        if folded_any {
            self.attempt_ids_kept(first_id + outcomes.len() as i64 - 1)?;
        }

        // Usage and the state machine, per webhook in attempt order.
        let mut by_hook: std::collections::BTreeMap<i64, Vec<&AttemptOutcome>> =
            std::collections::BTreeMap::new();
        for o in outcomes {
            by_hook.entry(o.webhook_id).or_default().push(o);
        }
        for (webhook_id, list) in by_hook {
            if list.iter().all(|o| o.verdict == Verdict::Delivered) {
                self.conn
                    .prepare_cached("UPDATE webhook_usage SET total_calls = total_calls + ?, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                    .map_err(sql_err)?
                    .execute(params![list.len() as i64, webhook_id])
                    .map_err(sql_err)?;
                continue;
            }
            for o in list {
                self.complete_one(o, now, max_consecutive_errors, &mut changes, &mut closed)?;
            }
        }
        // Next heads last: a webhook the state machine just disabled hands nothing over. Due
        // by this thread's clock: `now` was read when the attempts finished, and a delivery
        // written since then (due when it was written) looked not due yet: with ten webhooks,
        // one next head in six was left to a claim for that reason.
        let clock = now_ticks().max(now);
        // A delivery that did not close (a retry, a lease lost) keeps its chain closed: what
        // waited behind it in memory goes back to the queue.
        let ended: std::collections::HashSet<i64> = closed.iter().copied().collect();
        for o in outcomes {
            if !ended.contains(&o.delivery_id) {
                self.release_waiting(o.delivery_id)?;
                self.chains.unfollow(o.delivery_id);
            }
        }
        for id in closed {
            self.chains.unfollow(id);
            match self.chains.waiting.remove(&id) {
                Some(w) => self.hand_waiting(w, clock)?,
                None => self.next_head(id, clock)?,
            }
        }
        Ok(changes)
    }

    /// Hands over `w`, which waited in memory behind a delivery that just closed: it is
    /// leased to this node already, so no statement runs unless its lease is half gone. With
    /// no room (or no dispatcher, or its webhook no longer Active) it becomes a pending head
    /// for a claim instead, and what waited behind it goes back to the queue.
    fn hand_waiting(&mut self, w: Waiting, now: Ticks) -> Result<()> {
        self.next_heads.followed += 1;
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let durable = synced >= self.handed_upto || w.delivery_id <= synced;
        if let Some(webhook) = self.reserve(Kind::Record, w.webhook_id)? {
            let fresh = self.successors.as_ref().map_or(now, |b| b.lease_until);
            if w.lease_until.saturating_sub(now) < fresh.saturating_sub(now) / 2 {
                self.conn
                    .prepare_cached("UPDATE delivery SET lease_until = ? WHERE delivery_id = ?")
                    .map_err(sql_err)?
                    .execute(params![fresh, w.delivery_id])
                    .map_err(sql_err)?;
            }
            let claimed = Claimed {
                delivery_id: w.delivery_id,
                event_id: w.event_id,
                attempt_in_cycle: 0,
                event: w.event,
                tenant: w.tenant,
                webhook,
            };
            if let Some(b) = self.successors.as_mut() {
                b.lease(claimed, durable);
                self.next_heads.handed += 1;
            }
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "UPDATE delivery SET status = 0, ready = 1, lease_until = NULL, lease_owner = NULL \
                 WHERE delivery_id = ? AND status = 1",
            )
            .map_err(sql_err)?
            .execute([w.delivery_id])
            .map_err(sql_err)?;
        self.release_waiting(w.delivery_id)?;
        self.chains.unfollow(w.delivery_id);
        Ok(())
    }

    /// Sends the deliveries waiting in memory behind `id` back to the queue: pending, not
    /// heads (`ready` = 0), for the database's way (a next head when the one before closes).
    fn release_waiting(&mut self, id: i64) -> Result<()> {
        let mut next = self.chains.waiting.remove(&id);
        while let Some(w) = next {
            self.conn
                .prepare_cached(
                    "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL \
                     WHERE delivery_id = ? AND status = 1 AND ready = 0",
                )
                .map_err(sql_err)?
                .execute([w.delivery_id])
                .map_err(sql_err)?;
            self.chains.unfollow(w.delivery_id);
            next = self.chains.waiting.remove(&w.delivery_id);
        }
        Ok(())
    }

    /// Marks the next head of the chain of `closed`, a delivery just closed: the oldest open
    /// delivery of the same webhook and contact, which may now be sent. When it is due and
    /// durable and the dispatcher has room, it is leased and handed over after the commit
    /// instead (no claim round trip for the later events of a contact).
    fn next_head(&mut self, closed: i64, now: Ticks) -> Result<()> {
        struct Next {
            id: i64,
            webhook_id: i64,
            status: i64,
            ready: bool,
            due: Ticks,
            seq: i64,
            event_id: String,
            attempt_in_cycle: i64,
            tenant_id: i64,
        }
        let next = self
            .conn
            .prepare_cached(
                "SELECT p.delivery_id, p.webhook_id, p.status, p.ready, p.next_attempt_at, p.event_seq, p.event_id, \
                 p.attempt_in_cycle, p.tenant_id FROM delivery d \
                 JOIN delivery p ON p.webhook_id = d.webhook_id AND p.order_key = d.order_key AND p.status IN (0, 1) \
                 WHERE d.delivery_id = ? ORDER BY p.delivery_id LIMIT 1",
            )
            .map_err(sql_err)?
            .query_row([closed], |r| {
                Ok(Next {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    status: r.get(2)?,
                    ready: r.get(3)?,
                    due: r.get(4)?,
                    seq: r.get(5)?,
                    event_id: r.get(6)?,
                    attempt_in_cycle: r.get(7)?,
                    tenant_id: r.get(8)?,
                })
            })
            .optional()
            .map_err(sql_err)?;
        let Some(n) = next else {
            return Ok(());
        };
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let durable = synced >= self.handed_upto || n.id <= synced;
        let found = if n.status != 0 {
            &mut self.next_heads.leased
        } else if n.due > now {
            &mut self.next_heads.not_due
        } else if !durable {
            &mut self.next_heads.not_durable
        } else {
            &mut self.next_heads.tried
        };
        *found += 1;
        if n.status == 0 && n.due <= now && self.successors.is_some() {
            if let Some(webhook) = self.reserve(Kind::Record, n.webhook_id)? {
                let written = match self.successors.as_ref() {
                    Some(b) => self
                        .conn
                        .prepare_cached(
                            "UPDATE delivery SET ready = 1, status = 1, lease_until = ?, lease_owner = ? \
                             WHERE delivery_id = ? AND status = 0",
                        )
                        .map_err(sql_err)?
                        .execute(params![b.lease_until, b.owner, n.id])
                        .map_err(sql_err),
                    None => Ok(0),
                };
                let claimed = match written {
                    Ok(1) => self.successor_claim(
                        n.id,
                        n.seq,
                        &n.event_id,
                        n.attempt_in_cycle,
                        n.tenant_id,
                        webhook,
                    ),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                match (claimed, self.successors.as_mut()) {
                    (Ok(Some(c)), Some(b)) => {
                        b.lease(c, durable);
                        self.next_heads.handed += 1;
                        return Ok(());
                    }
                    (result, b) => {
                        if let Some(b) = b {
                            b.intake.unreserve(n.webhook_id);
                        }
                        result?;
                        // Not written (or its event is gone): marked ready below, claimed later.
                    }
                }
            }
        }
        if !n.ready {
            self.conn
                .prepare_cached("UPDATE delivery SET ready = 1 WHERE delivery_id = ? AND ready = 0")
                .map_err(sql_err)?
                .execute([n.id])
                .map_err(sql_err)?;
        }
        Ok(())
    }

    /// A successor just leased, as a claim would give it.
    fn successor_claim(
        &mut self,
        delivery_id: i64,
        seq: i64,
        event_id: &str,
        attempt_in_cycle: i64,
        tenant_id: i64,
        webhook: Arc<Webhook>,
    ) -> Result<Option<Claimed>> {
        let event = match self.recent.get(seq) {
            Some(e) => e,
            None => {
                let read = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM event WHERE event_seq = ?"
                    ))
                    .map_err(sql_err)?
                    .query_row([seq], |r| Ok(read_event(r)))
                    .optional()
                    .map_err(sql_err)?;
                match read {
                    Some(ev) => Arc::new(ev?),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Claimed {
            delivery_id,
            event_id: self::event_id(delivery_id, event_id)?,
            attempt_in_cycle,
            event,
            tenant: self.tenant_name(tenant_id)?,
            webhook,
        }))
    }

    /// The first of `n` new AttemptIds, in the transaction in progress. Every id comes from
    /// this counter, whether its attempt becomes a row of `attempt` (inserted with it) or stays
    /// in its delivery's row: the counter starts from `attempt`'s AUTOINCREMENT sequence, which
    /// [`Self::attempt_ids_kept`] keeps at or above every id a delivery row holds.
    fn attempt_ids(&mut self, n: usize) -> Result<i64> {
        let last = match self.attempt_seq {
            Some(last) => last,
            None => self
                .conn
                .prepare_cached(
                    "SELECT max(COALESCE((SELECT max(seq) FROM sqlite_sequence WHERE name = 'attempt'), 0), \
                     COALESCE((SELECT max(attempt_id) FROM attempt), 0))",
                )
                .map_err(sql_err)?
                .query_row([], |r| r.get(0))
                .map_err(sql_err)?,
        };
        self.attempt_seq = Some(last + n as i64);
        Ok(last + 1)
    }

    /// Raises `attempt`'s AUTOINCREMENT sequence to `last`, an id that a delivery row now
    /// holds, in the same transaction: no id is handed out twice, even after a restart.
    fn attempt_ids_kept(&mut self, last: i64) -> Result<()> {
        let raised = self
            .conn
            .prepare_cached(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'attempt' AND seq < ?1",
            )
            .map_err(sql_err)?
            .execute([last])
            .map_err(sql_err)?;
        if raised == 0 {
            self.conn
                .prepare_cached(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'attempt', ?1 \
                     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'attempt')",
                )
                .map_err(sql_err)?
                .execute([last])
                .map_err(sql_err)?;
        }
        Ok(())
    }

    /// Usage, delivery state (unless already marked delivered) and the state machine for one
    /// attempt of a webhook that had a failure in this batch.
    fn complete_one(
        &mut self,
        o: &AttemptOutcome,
        now: Ticks,
        max_consecutive_errors: i64,
        changes: &mut Vec<StateChange>,
        closed: &mut Vec<i64>,
    ) -> Result<()> {
        let consecutive: Option<i64> = if o.verdict == Verdict::Delivered {
            self.conn
                .prepare_cached("UPDATE webhook_usage SET total_calls = total_calls + 1, consecutive_errors = 0 WHERE webhook_usage_id = ?")
                .map_err(sql_err)?
                .execute([o.webhook_id])
                .map_err(sql_err)?;
            None
        } else {
            self.conn
                .prepare_cached(
                    "UPDATE webhook_usage SET total_calls = total_calls + 1, total_errors = total_errors + 1, \
                     consecutive_errors = consecutive_errors + 1, last_error = ?, updated = ? WHERE webhook_usage_id = ? RETURNING consecutive_errors",
                )
                .map_err(sql_err)?
                .query_row(params![usage_last_error(o), now, o.webhook_id], |r| r.get(0))
                .optional()
                .map_err(sql_err)?
        };
        let status = o.status_code;
        match &o.verdict {
            Verdict::Delivered => {}
            Verdict::RetryAt(at) => {
                self.conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 0, ready = 1, attempt_in_cycle = attempt_in_cycle + 1, next_attempt_at = ?, attempts = attempts + 1, \
                         last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![at, status, o.error, o.delivery_id])
                    .map_err(sql_err)?;
            }
            Verdict::Requeue(at) => {
                self.conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 0, ready = 1, attempt_in_cycle = 0, cycles = cycles + 1, event_id = ?, queue_pos = ?, next_attempt_at = ?, \
                         attempts = attempts + 1, last_status = ?, last_error = ?, lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![
                        Uuid::new_v4().to_string(),
                        now,
                        at,
                        status,
                        o.error,
                        o.delivery_id
                    ])
                    .map_err(sql_err)?;
            }
            Verdict::Gone => {
                if self
                    .conn
                    .prepare_cached(
                        "UPDATE delivery SET status = 3, completed = ?, attempts = attempts + 1, last_status = ?, last_error = ?, \
                         lease_until = NULL, lease_owner = NULL WHERE delivery_id = ? AND status = 1",
                    )
                    .map_err(sql_err)?
                    .execute(params![now, status, o.error, o.delivery_id])
                    .map_err(sql_err)?
                    > 0
                {
                    closed.push(o.delivery_id);
                }
            }
        }
        let disable =
            o.verdict == Verdict::Gone || consecutive.is_some_and(|n| n >= max_consecutive_errors);
        if disable {
            if let Some(mut hook) = self.load_webhook(o.webhook_id)? {
                if hook.state == WebhookState::Active {
                    let from = hook.state;
                    let tenant = self.tenant_name(hook.tenant_id)?;
                    let actor = Actor::system(hook.tenant_id, &tenant);
                    self.set_state(&mut hook, WebhookState::TooManyErrors, &actor, now)?;
                    changes.push(StateChange {
                        webhook: hook,
                        from,
                        reason: Some(disable_reason(o)),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sets a webhook's state and fires its state event.
    fn set_state(
        &mut self,
        hook: &mut Webhook,
        state: WebhookState,
        actor: &Actor,
        now: Ticks,
    ) -> Result<()> {
        if let Some(b) = self.successors.as_mut() {
            b.hooks.remove(&hook.id);
        }
        hook.state = state;
        hook.updated = now;
        hook.updated_associate_id = actor.associate_id;
        self.conn
            .prepare_cached("UPDATE webhook SET state = ?, updated = ?, updated_associate_id = ?, \"updatedCount\" = \"updatedCount\" + 1 WHERE webhook_id = ?")
            .map_err(sql_err)?
            .execute(params![state as i64, now, actor.associate_id, hook.id])
            .map_err(sql_err)?;
        let calls: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE((SELECT total_calls FROM webhook_usage WHERE webhook_usage_id = ?), 0)",
            )
            .map_err(sql_err)?
            .query_row([hook.id], |r| r.get(0))
            .map_err(sql_err)?;
        if let Some(ev) = state_event(hook, calls, self.options.local_offset) {
            self.insert_event(actor, ev, now)?;
        }
        Ok(())
    }
}

fn sql_value(v: &Value) -> SqlValue {
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
