//! Group commit on PostgreSQL: the changes that wait at the same time are applied together, in
//! one transaction of a few array-bound statements (the rows they lock, the rows they write,
//! their events, their deliveries) and one commit, so that one WAL flush and a handful of round
//! trips serve the whole group. The callers are answered after that commit.
//!
//! Order and isolation are as for a change on its own: the rows a group changes are locked in
//! key order before they are read (`SELECT … ORDER BY key FOR UPDATE`), so a group on another
//! node that changes the same rows waits for this one, and the deliveries of one contact get
//! ids in commit order. A change decides against the row as the changes before it in the group
//! left it. A change that its function refuses writes nothing and gets its error; a database
//! error fails the group, whose changes are then made one by one, so one bad change does not
//! fail the others.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgConnection;
use tokio::sync::{mpsc, oneshot};

use super::batch::{insert_deliveries, insert_events, lock_rows, numbers, write_rows};
use super::db::db;
use super::handoff::{Hand, Handoff};
use super::record::{heads_of_chains, Chains};
use crate::entity::{EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::sql::columns::stored_event;
use crate::sql::plan::{created_event, plan_change, Planned};
use crate::{now_ticks, ChangeFn, ChangeOutcome, Result, StoreError};
use crate::{DeliveryId, EventId, TenantId};

/// Planner settings for a transaction whose statements reach their rows by key (a group, a
/// record): with a queue's statistics stale (it changes faster than autovacuum follows, or
/// autovacuum is off) the planner otherwise picks scans of the whole delivery table, and a
/// statement of a few rows took seconds.
pub(super) const PLANNER_BY_KEY: &str =
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off;";

/// Most changes in one group.
pub(super) const GROUP_MAX: usize = 256;

/// A change waiting for its group.
pub(super) struct Job {
    pub(super) actor: Actor,
    pub(super) def: &'static EntityDef,
    pub(super) pk: Option<i64>,
    pub(super) change: ChangeFn,
    pub(super) reply: oneshot::Sender<Result<ChangeOutcome>>,
}

/// Who changes which row: what the statements of a group need of its jobs (the change
/// functions stay out of the futures, which must be `Send`).
pub(super) struct Meta {
    pub(super) actor: Actor,
    pub(super) def: &'static EntityDef,
    pub(super) pk: Option<i64>,
}

/// What a change of the group came to before anything is written.
pub(super) enum Plan {
    /// Refused or nothing to write: answered as it is.
    Done(Result<ChangeOutcome>),
    /// A new row (its key assigned below).
    Insert(Row),
    /// The row after the change, and its event.
    Update(Row, NewEvent),
    /// The row is removed; its event.
    Delete(NewEvent),
}

/// A row of the group, by tenant, table and key.
pub(super) type Key = (TenantId, &'static str, i64);

/// Takes the waiting changes in groups and commits each group.
pub(super) struct Committer {
    pub(super) pool: sqlx::PgPool,
    pub(super) handoff: Arc<Handoff>,
    pub(super) zone: crate::LocalZone,
}

impl Committer {
    /// Commits groups taken from `rx` until every sender is gone. Several workers may share
    /// one receiver: while one group commits, the next one forms and goes.
    pub(super) async fn run(self: Arc<Self>, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let jobs = {
                let mut rx = rx.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut jobs = vec![first];
                while jobs.len() < GROUP_MAX {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                jobs
            };
            self.commit(jobs).await;
        }
    }

    /// Commits one group and answers its callers; a group that fails in the database is
    /// made again one change at a time.
    async fn commit(&self, mut jobs: Vec<Job>) {
        let hand = self.handoff.hand();
        let started = std::time::Instant::now();
        let size = jobs.len();
        match self.group(&mut jobs, hand.as_ref()).await {
            Ok((answers, leased, behind)) => {
                metrics::histogram!("crmhooks_store_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                let taken = self.handoff.hand_over_all(leased).await;
                let mut waiting = false;
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let answer = answer.map(|mut outcome| {
                        if let Some(seq) = outcome.committed.event_seq {
                            outcome.committed.handed = taken.get(&seq).copied().unwrap_or(0);
                        }
                        let c = &outcome.committed;
                        waiting |= c.deliveries > c.handed + c.behind;
                        outcome
                    });
                    let _ = job.reply.send(answer);
                }
                // The look runs whatever `waiting` says: it is what marks a delivery whose
                // chain's open one a record closed meanwhile, and a claim walks marked heads
                // only (short-circuited, such a delivery waited for the marking pass).
                let freed = self.behind_freed(&behind).await;
                if waiting || freed {
                    self.handoff.wake_nodes();
                }
                tracing::debug!(
                    group = size,
                    total_us = started.elapsed().as_micros() as u64,
                    "group commit"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, group = size, "a group commit failed; its changes are made one by one");
                for job in jobs {
                    let answer = self.alone(job.actor, job.def, job.pk, job.change).await;
                    let _ = job.reply.send(answer);
                }
            }
        }
    }

    /// One change on its own, in a transaction of its own (what a failed group falls back to).
    async fn alone(
        &self,
        actor: Actor,
        def: &'static EntityDef,
        pk: Option<i64>,
        change: ChangeFn,
    ) -> Result<ChangeOutcome> {
        let mut job_list = vec![Job {
            actor,
            def,
            pk,
            change,
            reply: oneshot::channel().0,
        }];
        let hand = self.handoff.hand();
        let (mut answers, leased, behind) = self.group(&mut job_list, hand.as_ref()).await?;
        let taken = self.handoff.hand_over_all(leased).await;
        let mut answer = answers
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("a change had no answer".into())));
        if let Ok(outcome) = &mut answer {
            if let Some(seq) = outcome.committed.event_seq {
                outcome.committed.handed = taken.get(&seq).copied().unwrap_or(0);
                let c = &outcome.committed;
                let freed = self.behind_freed(&behind).await;
                if c.deliveries > c.handed + c.behind || freed {
                    self.handoff.wake_nodes();
                }
            }
        }
        answer
    }

    /// Marks the deliveries the group queued behind an open one of their chain that head it
    /// now, and says whether there were any: the one in front was recorded while the group
    /// ran, by a record whose look for the next deliveries came before the group's commit (see
    /// `record`: each side looks after its own commit, so one of the two sees both). Only then
    /// does a claim need waking for them.
    async fn behind_freed(&self, behind: &[DeliveryId]) -> bool {
        !behind.is_empty() && heads_of_chains(&self.pool, behind, Chains::Queued).await
    }

    /// Applies `jobs` in one transaction: each job's answer (in order), the deliveries
    /// written leased to this node's dispatcher (to hand over after the commit), and those
    /// queued behind an open delivery of their chain.
    async fn group(
        &self,
        jobs: &mut [Job],
        hand: Option<&Hand>,
    ) -> Result<(Vec<Result<ChangeOutcome>>, Vec<Claimed>, Vec<DeliveryId>)> {
        let metas: Vec<Meta> = jobs
            .iter()
            .map(|j| Meta {
                actor: j.actor.clone(),
                def: j.def,
                pk: j.pk,
            })
            .collect();
        // Each statement reaches its rows by key: planner settings that keep it so whatever
        // the statistics say (see PLANNER_BY_KEY), in the BEGIN's round trip.
        let mut tx = self
            .pool
            .begin_with(format!("BEGIN; {PLANNER_BY_KEY}"))
            .await
            .map_err(db)?;
        let mut rows = lock_rows(&mut tx, &metas).await?;
        let now = now_ticks();
        // Decide every change against the row as the changes before it left it.
        let mut plans = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            let key = job.pk.map(|pk| (job.actor.tenant_id, job.def.table, pk));
            let current = key.and_then(|k| rows.get(&k).cloned().flatten());
            let plan = (job.change)(current.as_ref()).and_then(|decided| {
                plan_change(job.def, &job.actor, current, decided, now, &self.zone)
            });
            plans.push(match plan {
                Err(e) => Plan::Done(Err(e)),
                Ok(Planned::Nothing(row)) => Plan::Done(Ok(ChangeOutcome {
                    row,
                    committed: Committed::default(),
                })),
                Ok(Planned::Insert(row)) => Plan::Insert(row),
                Ok(Planned::Update { row, event }) => {
                    if let Some(k) = key {
                        rows.insert(k, Some(row.clone()));
                    }
                    Plan::Update(row, event)
                }
                Ok(Planned::Delete { event }) => {
                    if let Some(k) = key {
                        rows.insert(k, None);
                    }
                    Plan::Delete(event)
                }
            });
        }
        // Keys for the new rows, numbers for the events: one round trip.
        let inserts: Vec<usize> = (0..plans.len())
            .filter(|&i| matches!(plans[i], Plan::Insert(_)))
            .collect();
        let events = plans.iter().filter(|p| !matches!(p, Plan::Done(_))).count();
        if events == 0 {
            // Nothing to write (refusals, changes that change nothing): only the locks to let
            // go of.
            let _ = tx.rollback().await;
            let answers = plans
                .into_iter()
                .map(|p| match p {
                    Plan::Done(answer) => answer,
                    _ => Err(StoreError::Corrupt("a change was left unwritten".into())),
                })
                .collect();
            return Ok((answers, Vec::new(), Vec::new()));
        }
        let (mut keys, mut seqs) = numbers(&mut tx, &metas, &inserts, events).await?;
        // The rows.
        let mut new_rows: Vec<(usize, Row)> = Vec::new();
        for &i in &inserts {
            if let Plan::Insert(row) = &mut plans[i] {
                row.values[0] = Value::Int(keys.next().unwrap_or_default());
                new_rows.push((i, row.clone()));
            }
        }
        write_rows(&mut tx, &metas, &plans, &rows).await?;
        // The events, in the group's order, and their deliveries.
        let mut written: Vec<(usize, i64, NewEvent)> = Vec::with_capacity(events);
        for (i, plan) in plans.iter().enumerate() {
            let event = match plan {
                Plan::Done(_) => continue,
                Plan::Insert(row) => created_event(metas[i].def, row, &self.zone),
                Plan::Update(_, event) | Plan::Delete(event) => event.clone(),
            };
            written.push((i, seqs.next().unwrap_or_default(), event));
        }
        insert_events(&mut tx, &metas, &written, now).await?;
        let deliveries = insert_deliveries(&mut tx, &metas, &written, now, hand).await?;
        tx.commit().await.map_err(db)?;
        // The answers, and what was written leased with the events as claims read them.
        let mut counts: HashMap<i64, u64> = HashMap::new();
        // Deliveries that do not head their chain wait behind an open delivery of it, which
        // marks (and hands on) the next one when it is recorded.
        let mut behind_by_seq: HashMap<i64, u64> = HashMap::new();
        let mut behind = Vec::new();
        for d in &deliveries {
            *counts.entry(d.event_seq).or_default() += 1;
            if !d.head {
                *behind_by_seq.entry(d.event_seq).or_default() += 1;
                behind.push(DeliveryId::new(d.delivery_id));
            }
        }
        let mut leased_by_seq: HashMap<i64, Vec<Leased>> = HashMap::new();
        for d in deliveries {
            if let Some(webhook) = d.webhook {
                leased_by_seq.entry(d.event_seq).or_default().push(Leased {
                    delivery_id: DeliveryId::new(d.delivery_id),
                    event_id: d.event_id.into(),
                    webhook,
                });
            }
        }
        let mut seq_of: HashMap<usize, (i64, NewEvent)> = written
            .into_iter()
            .map(|(i, seq, event)| (i, (seq, event)))
            .collect();
        let mut new_rows: HashMap<usize, Row> = new_rows.into_iter().collect();
        let mut leased = Vec::new();
        let mut answers = Vec::with_capacity(plans.len());
        for (i, plan) in plans.into_iter().enumerate() {
            let row = match plan {
                Plan::Done(answer) => {
                    answers.push(answer);
                    continue;
                }
                Plan::Insert(_) => new_rows.remove(&i),
                Plan::Update(row, _) => Some(row),
                Plan::Delete(_) => None,
            };
            let Some((seq, event)) = seq_of.remove(&i) else {
                answers.push(Err(StoreError::Corrupt("an event went missing".into())));
                continue;
            };
            let deliveries = counts.get(&seq).copied().unwrap_or(0);
            let (entity, name) = (event.entity.clone(), event.event.clone());
            if let Some(list) = leased_by_seq.remove(&seq) {
                let actor = &metas[i].actor;
                let stored = Arc::new(stored_event(seq, actor, event, now));
                leased.extend(list.into_iter().map(|d| Claimed {
                    delivery_id: d.delivery_id,
                    event_id: d.event_id,
                    attempt_in_cycle: 0,
                    event: Arc::clone(&stored),
                    tenant: actor.tenant.clone(),
                    webhook: d.webhook,
                }));
            }
            answers.push(Ok(ChangeOutcome {
                row,
                committed: Committed {
                    event_seq: Some(seq),
                    deliveries,
                    handed: 0,
                    behind: behind_by_seq.get(&seq).copied().unwrap_or(0),
                    entity,
                    event: name,
                },
            }));
        }
        Ok((answers, leased, behind))
    }
}

/// Appends one event of `actor` (one that is not a row's change: SignalEvent, a webhook's state
/// event) and its deliveries, on `conn` (in its transaction), as a group does.
pub(super) async fn emit(
    conn: &mut PgConnection,
    actor: &Actor,
    ev: NewEvent,
    now: Ticks,
) -> Result<Committed> {
    let metas = [Meta {
        actor: actor.clone(),
        def: &crate::contact::CONTACT,
        pk: None,
    }];
    let (_, mut seqs) = numbers(&mut *conn, &metas, &[], 1).await?;
    let seq = seqs
        .next()
        .ok_or_else(|| StoreError::Corrupt("no event number was taken".into()))?;
    let (entity, event) = (ev.entity.clone(), ev.event.clone());
    let written = [(0, seq, ev)];
    insert_events(&mut *conn, &metas, &written, now).await?;
    let deliveries = insert_deliveries(&mut *conn, &metas, &written, now, None).await?;
    Ok(Committed {
        event_seq: Some(seq),
        deliveries: deliveries.len() as u64,
        handed: 0,
        behind: 0,
        entity,
        event,
    })
}

/// A delivery written leased, before its event is attached.
struct Leased {
    delivery_id: DeliveryId,
    event_id: EventId,
    webhook: Arc<Webhook>,
}
