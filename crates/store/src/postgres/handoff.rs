//! The fresh heads of a change's chains, handed to this node's dispatcher after the commit.

use std::sync::Arc;

use super::fanout::LeasedDelivery;
use super::PgStore;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::stored_event;
use crate::{now_ticks, Intake};

/// Fresh heads of chains written leased to this node's dispatcher (see [`Intake`]): each
/// delivery of a change with no earlier delivery of its chain open. The dispatcher's room is
/// asked for after the commit ([`PgStore::hand_over`]), as which webhooks a change fans out to
/// is known only then; the rare one without room is given back to the queue.
pub(super) struct Hand {
    pub(super) intake: Arc<dyn Intake>,
    pub(super) lease_until: Ticks,
}

/// Deliveries written leased to [`Hand::intake`]'s owner, to hand over once committed.
pub(super) struct Leased {
    intake: Arc<dyn Intake>,
    claimed: Vec<Claimed>,
}

/// The deliveries a change wrote leased with `hand`, with its event as a claim would read it
/// back (`ev` moved into it); `None` when there are none.
pub(super) fn leased_of(
    hand: Option<Hand>,
    actor: &Actor,
    seq: i64,
    ev: NewEvent,
    now: Ticks,
    deliveries: Vec<LeasedDelivery>,
) -> Option<Leased> {
    let hand = hand.filter(|_| !deliveries.is_empty())?;
    let event = Arc::new(stored_event(seq, actor, ev, now));
    let claimed = deliveries
        .into_iter()
        .map(|d| Claimed {
            delivery_id: d.delivery_id,
            event_id: d.event_id,
            attempt_in_cycle: 0,
            event: event.clone(),
            tenant: actor.tenant.clone(),
            webhook: d.webhook,
        })
        .collect();
    Some(Leased {
        intake: hand.intake,
        claimed,
    })
}

impl PgStore {
    /// Where a change writes the fresh heads of its chains: leased to this node's dispatcher,
    /// when one takes deliveries.
    pub(super) fn hand(&self) -> Option<Hand> {
        let intake = self
            .intake
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let lease_until = now_ticks().saturating_add(intake.lease_ticks());
        Some(Hand {
            intake,
            lease_until,
        })
    }

    /// After the commit of a change that wrote deliveries leased to this node's dispatcher:
    /// each goes to the dispatcher with the room [`Intake::reserve`] gives it; one that finds
    /// none is pending again (its lease given back) for a claim. Returns how many were taken.
    pub(super) async fn hand_over(&self, leased: Option<Leased>) -> u64 {
        let Some(Leased { intake, claimed }) = leased else {
            return 0;
        };
        let (taken, refused): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|c| intake.reserve(c.webhook.tenant_id, c.webhook.id));
        if !refused.is_empty() {
            let ids: Vec<i64> = refused.iter().map(|c| c.delivery_id).collect();
            let unleased = sqlx::query(
                "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL \
                 WHERE delivery_id = ANY($1) AND status = 1 AND lease_owner = $2",
            )
            .bind(&ids)
            .bind(intake.owner())
            .execute(&self.pool)
            .await;
            match unleased {
                Ok(_) => self.wake_nodes(),
                Err(e) => {
                    tracing::warn!(error = %e, deliveries = ids.len(), "giving back leases the dispatcher had no room for failed; they run out by themselves")
                }
            }
        }
        let n = taken.len() as u64;
        if !taken.is_empty() {
            intake.take(taken);
        }
        n
    }
}
