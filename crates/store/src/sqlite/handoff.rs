//! Deliveries handed to this node's dispatcher at commit, without a claim (see [`Intake`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::syncer::SyncJob;
use super::writer::Writer;
use crate::entity::Ticks;
use crate::model::*;
use crate::WebhookId;
use crate::{now_ticks, Intake, Result};

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
pub(super) struct Batch {
    pub(super) intake: Arc<dyn Intake>,
    pub(super) owner: String,
    pub(super) lease_until: Ticks,
    /// Deliveries written leased, each reserved with `intake`.
    pub(super) handed: Vec<Claimed>,
    /// Deliveries written leased whose insert is not durable yet: handed by the syncer once
    /// deliveries up to `after_upto` are.
    pub(super) after_sync: Vec<Claimed>,
    pub(super) after_upto: i64,
    /// Webhooks read for them.
    pub(super) hooks: HashMap<WebhookId, Arc<Webhook>>,
}

impl Batch {
    pub(super) fn open(handoff: &SharedHandOff) -> Option<Batch> {
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
    pub(super) fn lease(&mut self, c: Claimed, durable: bool) {
        if durable {
            self.handed.push(c);
        } else {
            self.after_upto = self.after_upto.max(c.delivery_id.get());
            self.after_sync.push(c);
        }
    }

    /// What was handed when the transaction committed (now, and once deliveries up to the id
    /// are durable); otherwise the room given back.
    pub(super) fn close(self, committed: bool) -> (Handed, Handed, i64) {
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
                self.intake.unreserve(c.webhook.tenant_id, c.webhook.id);
            }
            (Handed::default(), Handed::default(), 0)
        }
    }
}

/// Which hand-off: of a group commit (fresh heads) or of a bookkeeping (next heads).
#[derive(Clone, Copy)]
pub(super) enum Kind {
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

/// Deliveries written leased (by a group commit, or next heads by a bookkeeping), for the
/// intake they were reserved with.
#[derive(Default)]
pub(super) struct Handed {
    pub(super) intake: Option<Arc<dyn Intake>>,
    pub(super) claimed: Vec<Claimed>,
}

impl Handed {
    pub(super) fn give(self) {
        if let Some(intake) = self.intake {
            if !self.claimed.is_empty() {
                intake.take(self.claimed);
            }
        }
    }
}

impl Writer {
    /// Lets the fan-out of the group commit about to run reserve room with the intake, if
    /// there is one.
    pub(super) fn open_handoff(&mut self) {
        self.batch = Batch::open(&self.handoff);
    }

    /// Ends the hand-off of a group commit: what it handed when it committed, and otherwise
    /// the room it reserved given back.
    pub(super) fn close_handoff(&mut self, committed: bool) -> Handed {
        self.batch
            .take()
            .map(|b| b.close(committed).0)
            .unwrap_or_default()
    }

    /// Ends the hand-off of a bookkeeping: next heads already durable go to the dispatcher
    /// now, the others through the syncer once their group commit's fsync is done (the
    /// syncer takes jobs in order, and that commit's job went first).
    pub(super) fn close_successors(&mut self, committed: bool) {
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
            tasks: Vec::new(),
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

    /// The hand-off of a kind, when one is in progress.
    pub(super) fn handoff_of(&mut self, kind: Kind) -> &mut Option<Batch> {
        match kind {
            Kind::Commit => &mut self.batch,
            Kind::Record => &mut self.successors,
        }
    }

    /// Room with the dispatcher, in the hand-off of `kind` in progress, for one more delivery
    /// of `webhook_id`, and the webhook it will carry (only an Active one is sent); `None`
    /// without that hand-off or without room.
    pub(super) fn reserve(
        &mut self,
        kind: Kind,
        webhook_id: WebhookId,
    ) -> Result<Option<Arc<Webhook>>> {
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
            .is_some_and(|b| b.intake.reserve(webhook.tenant_id, webhook_id))
            .then_some(webhook))
    }
}
