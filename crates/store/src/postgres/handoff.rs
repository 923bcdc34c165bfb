//! The fresh heads of a change's chains, handed to this node's dispatcher after the commit.

use std::sync::{Arc, RwLock};

use std::collections::HashMap;

use crate::entity::Ticks;
use crate::model::*;
use crate::{now_ticks, DeliveryId, Intake, TenantId, WebhookId};
use tokio::sync::Notify;

/// Fresh heads of chains written leased to this node's dispatcher (see [`Intake`]): each
/// delivery of a change with no earlier delivery of its chain open. The dispatcher's room is
/// asked for after the commit ([`PgStore::hand_over`]), as which webhooks a change fans out to
/// is known only then; the rare one without room is given back to the queue.
pub(super) struct Hand {
    pub(super) intake: Arc<dyn Intake>,
    pub(super) lease_until: Ticks,
    /// Webhooks and tenants whose deliveries the dispatcher has no room for now
    /// ([`Intake::full`]): their heads are written pending, for a claim, rather than leased and
    /// given back after the commit.
    pub(super) full_webhooks: Vec<WebhookId>,
    pub(super) full_tenants: Vec<TenantId>,
    /// To decrypt the secrets of the webhooks read back with the handed deliveries.
    pub(super) keys: crate::Keyring,
}

/// The hand-off of fresh deliveries to this node's dispatcher, and the wake-up of the nodes
/// for the rest: shared by the store and its group committer.
pub(super) struct Handoff {
    pub(super) pool: sqlx::PgPool,
    /// This node's dispatcher, which takes the fresh heads of chains at commit.
    pub(super) intake: RwLock<Option<Arc<dyn Intake>>>,
    /// Asks the notifier task for a `NOTIFY` (signals that arrive while one is being sent
    /// fold into the next).
    pub(super) notify: Arc<Notify>,
    /// The store's master keys.
    pub(super) keys: crate::Keyring,
}

impl Handoff {
    /// Wakes every node's dispatcher soon: call after committing work that is due now.
    pub(super) fn wake_nodes(&self) {
        self.notify.notify_one();
    }

    /// Where a change writes the fresh heads of its chains: leased to this node's dispatcher,
    /// when one takes deliveries and has room for some.
    pub(super) fn hand(&self) -> Option<Hand> {
        let intake = self
            .intake
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let (full_webhooks, full_tenants) = intake.full()?;
        let lease_until = now_ticks().saturating_add(intake.lease_ticks());
        Some(Hand {
            intake,
            lease_until,
            full_webhooks,
            full_tenants,
            keys: self.keys.clone(),
        })
    }

    /// After the commit of deliveries written leased to this node's dispatcher (a group's fresh
    /// heads, a record's next heads): each goes to the dispatcher with the room
    /// [`Intake::reserve`] gives it; one that finds none is pending again (its lease given
    /// back) for a claim. How many of each event's were taken.
    pub(super) async fn hand_over_all(&self, claimed: Vec<Claimed>) -> HashMap<i64, u64> {
        let intake = self
            .intake
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match intake {
            Some(intake) if !claimed.is_empty() => self.give(&intake, claimed).await,
            _ => HashMap::new(),
        }
    }

    /// Gives `claimed` to `intake` as far as it has room; the rest is pending again. How many
    /// of each event's were taken.
    async fn give(&self, intake: &Arc<dyn Intake>, claimed: Vec<Claimed>) -> HashMap<i64, u64> {
        let (taken, refused): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|c| intake.reserve(c.webhook.tenant_id, c.webhook.id));
        if !refused.is_empty() {
            let ids: Vec<DeliveryId> = refused.iter().map(|c| c.delivery_id).collect();
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
        let mut by_event: HashMap<i64, u64> = HashMap::new();
        for c in &taken {
            *by_event.entry(c.event.seq).or_default() += 1;
        }
        if !taken.is_empty() {
            intake.take(taken);
        }
        by_event
    }
}
