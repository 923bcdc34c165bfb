//! Chains followed in memory: the deliveries of one contact to one webhook this node sends, and
//! the next one waiting behind each.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{DeliveryId, EventId, WebhookId};

use crate::entity::Ticks;
use crate::model::StoredEvent;

/// Most deliveries [`Chains`] follows at once.
const CHAINS_MAX: usize = 65_536;

/// A chain: the deliveries of one contact (an order key) to one webhook, sent one at a time.
pub(super) type ChainKey = (WebhookId, Arc<str>);

/// A delivery written leased behind one in flight, waiting for it in memory.
pub(super) struct Waiting {
    pub(super) delivery_id: DeliveryId,
    pub(super) webhook_id: WebhookId,
    pub(super) event_id: EventId,
    pub(super) event: Arc<StoredEvent>,
    pub(super) tenant: String,
    pub(super) lease_until: Ticks,
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
pub(super) struct Chains {
    /// The chain of each delivery followed (in flight or waiting).
    pub(super) live: HashMap<DeliveryId, ChainKey>,
    /// The newest delivery followed of each chain.
    pub(super) tails: HashMap<ChainKey, DeliveryId>,
    /// The delivery waiting behind each delivery followed.
    pub(super) waiting: HashMap<DeliveryId, Waiting>,
}

impl Chains {
    /// Follows `delivery_id`, now the newest open delivery of `key`. When too many are
    /// followed (outcomes that never came back), everything is forgotten first.
    pub(super) fn follow(&mut self, delivery_id: DeliveryId, key: ChainKey) {
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
    pub(super) fn tail_is(&self, key: &ChainKey, open: DeliveryId) -> bool {
        self.tails.get(key) == Some(&open) && !self.waiting.contains_key(&open)
    }

    /// Stops following `delivery_id` (it closed, or went back to the queue): its chain's tail
    /// is gone when it was the tail.
    pub(super) fn unfollow(&mut self, delivery_id: DeliveryId) {
        if let Some(key) = self.live.remove(&delivery_id) {
            if self.tails.get(&key) == Some(&delivery_id) {
                self.tails.remove(&key);
            }
        }
    }
}
