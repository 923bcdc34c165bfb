//! The room of one node, shared fairly: how many deliveries it holds (claimed or handed over,
//! not yet recorded) and how many requests it has in flight, in all, per tenant and per
//! webhook.
//!
//! Holding is bounded so that a node never leases more than it can send soon. Sending is
//! bounded by `max_in_flight` in all, `max_per_tenant` per tenant and `max_per_webhook` per
//! webhook; when a request has to wait, it queues behind its webhook, and a freed slot goes to
//! the waiting tenant with the fewest requests in flight (then, within it, the webhook with the
//! fewest), oldest first within a webhook. So a tenant whose receivers are slow or failing can
//! take at most its own share: another tenant's request waits at most until one slot frees,
//! and usually not at all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crmhooks_store::{TenantId, WebhookId};
use tokio::sync::oneshot;

/// The limits of a node's room.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests in flight in all.
    pub sending: usize,
    /// Requests in flight per tenant.
    pub sending_per_tenant: usize,
    /// Requests in flight per webhook.
    pub sending_per_webhook: usize,
    /// Deliveries held in all.
    pub held: usize,
    /// Deliveries held per tenant.
    pub held_per_tenant: usize,
    /// Deliveries held per webhook.
    pub held_per_webhook: usize,
}

/// Counts of one webhook (or of an unsaved definition's test: webhook 0).
#[derive(Default)]
struct WebhookRoom {
    held: usize,
    sending: usize,
    /// Requests waiting for a slot, oldest first.
    waiting: VecDeque<oneshot::Sender<()>>,
    /// When a waiting request of it was last given a slot (fairness among equals).
    served: u64,
}

/// Counts of one tenant.
#[derive(Default)]
struct TenantRoom {
    held: usize,
    sending: usize,
    webhooks: HashMap<WebhookId, WebhookRoom>,
    served: u64,
}

impl TenantRoom {
    fn waiting(&self) -> bool {
        self.webhooks.values().any(|w| !w.waiting.is_empty())
    }
}

#[derive(Default)]
struct State {
    held: usize,
    sending: usize,
    tenants: HashMap<TenantId, TenantRoom>,
    /// Grants made to waiting requests so far (their order, for fairness among equals).
    grants: u64,
}

/// The room of a node (see the module doc).
pub struct Room {
    limits: Limits,
    state: Mutex<State>,
}

/// A request slot; the slot frees (and goes to the next waiting request) when it is dropped.
pub struct SendPermit {
    room: Arc<Room>,
    tenant: TenantId,
    webhook: WebhookId,
}

impl Drop for SendPermit {
    fn drop(&mut self) {
        let mut guard = self.room.lock();
        let state = &mut *guard;
        if let Some(t) = state.tenants.get_mut(&self.tenant) {
            t.sending = t.sending.saturating_sub(1);
            if let Some(w) = t.webhooks.get_mut(&self.webhook) {
                w.sending = w.sending.saturating_sub(1);
            }
        }
        state.sending = state.sending.saturating_sub(1);
        self.room.forget_idle(state, self.tenant, self.webhook);
        self.room.grant(state);
    }
}

/// A request waiting for a slot. Dropped before its slot came (its task ended), it leaves the
/// queue; dropped after a slot was granted but before it was taken, it frees that slot.
struct Wait {
    rx: Option<oneshot::Receiver<()>>,
    room: Arc<Room>,
    tenant: TenantId,
    webhook: WebhookId,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if rx.try_recv().is_ok() {
                drop(SendPermit {
                    room: Arc::clone(&self.room),
                    tenant: self.tenant,
                    webhook: self.webhook,
                });
            }
        }
    }
}

impl Room {
    /// An empty room with these limits (each at least 1).
    pub fn new(limits: Limits) -> Arc<Self> {
        let at_least_one = |n: usize| n.max(1);
        Arc::new(Room {
            limits: Limits {
                sending: at_least_one(limits.sending),
                sending_per_tenant: at_least_one(limits.sending_per_tenant),
                sending_per_webhook: at_least_one(limits.sending_per_webhook),
                held: at_least_one(limits.held),
                held_per_tenant: at_least_one(limits.held_per_tenant),
                held_per_webhook: at_least_one(limits.held_per_webhook),
            },
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes room to hold one delivery of `webhook` of `tenant` (a hand-over at commit); false
    /// when the node, the tenant or the webhook holds its most already.
    pub fn try_hold(&self, tenant: TenantId, webhook: WebhookId) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.held >= self.limits.held {
            return false;
        }
        let t = state.tenants.entry(tenant).or_default();
        let w_held = t.webhooks.get(&webhook).map_or(0, |w| w.held);
        if t.held >= self.limits.held_per_tenant || w_held >= self.limits.held_per_webhook {
            if t.held == 0 && t.webhooks.is_empty() {
                state.tenants.remove(&tenant);
            }
            return false;
        }
        t.held += 1;
        t.webhooks.entry(webhook).or_default().held += 1;
        state.held += 1;
        true
    }

    /// Room for up to `want` deliveries of a claim, taken from the node's total: how many may
    /// be claimed. Each claimed delivery is then counted with [`Room::claimed`]; what the claim
    /// did not use is given back with [`Room::unclaimed`].
    pub fn take_for_claim(&self, want: usize) -> usize {
        let mut state = self.lock();
        let n = want.min(self.limits.held.saturating_sub(state.held));
        state.held += n;
        n
    }

    /// Gives back room [`Room::take_for_claim`] took and the claim did not use.
    pub fn unclaimed(&self, n: usize) {
        let mut state = self.lock();
        state.held = state.held.saturating_sub(n);
    }

    /// Counts a claimed delivery of `webhook` of `tenant` (its room in the total was taken by
    /// [`Room::take_for_claim`]).
    pub fn claimed(&self, tenant: TenantId, webhook: WebhookId) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let t = state.tenants.entry(tenant).or_default();
        t.held += 1;
        t.webhooks.entry(webhook).or_default().held += 1;
    }

    /// Frees the room of a held delivery (recorded, or never committed).
    pub fn release(&self, tenant: TenantId, webhook: WebhookId) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.held = state.held.saturating_sub(1);
        if let Some(t) = state.tenants.get_mut(&tenant) {
            t.held = t.held.saturating_sub(1);
            if let Some(w) = t.webhooks.get_mut(&webhook) {
                w.held = w.held.saturating_sub(1);
            }
        }
        self.forget_idle(state, tenant, webhook);
    }

    /// Deliveries the node may still take in all.
    pub fn free(&self) -> usize {
        self.limits.held.saturating_sub(self.lock().held)
    }

    /// Whether the node holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().held == 0
    }

    /// What a claim must skip: webhooks and tenants that hold their most.
    pub fn saturated(&self) -> (Vec<WebhookId>, Vec<TenantId>) {
        let state = self.lock();
        let mut webhooks = Vec::new();
        let mut tenants = Vec::new();
        for (id, t) in &state.tenants {
            if t.held >= self.limits.held_per_tenant {
                tenants.push(*id);
                continue;
            }
            webhooks.extend(
                t.webhooks
                    .iter()
                    .filter(|(_, w)| w.held >= self.limits.held_per_webhook)
                    .map(|(id, _)| *id),
            );
        }
        (webhooks, tenants)
    }

    /// A request slot for `webhook` of `tenant`: at once when the limits allow and nothing of
    /// the webhook waits before it, else when a freed slot comes to it (see the module doc).
    pub async fn send_slot(self: &Arc<Self>, tenant: TenantId, webhook: WebhookId) -> SendPermit {
        let waiting = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let limits = self.limits;
            let node_room = state.sending < limits.sending;
            let t = state.tenants.entry(tenant).or_default();
            let tenant_room = t.sending < limits.sending_per_tenant;
            let w = t.webhooks.entry(webhook).or_default();
            if node_room
                && tenant_room
                && w.sending < limits.sending_per_webhook
                && w.waiting.is_empty()
            {
                w.sending += 1;
                t.sending += 1;
                state.sending += 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                w.waiting.push_back(tx);
                // Requests ahead of this one may have given up: the room may be free for it.
                self.grant(state);
                Some(rx)
            }
        };
        if let Some(rx) = waiting {
            let mut wait = Wait {
                rx: Some(rx),
                room: Arc::clone(self),
                tenant,
                webhook,
            };
            // The counts are raised for us by the grant. A closed channel cannot happen while
            // the room lives (a grant only drops a sender it failed to reach us with); should
            // it, the slot is taken all the same.
            let granted = match wait.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => true,
            };
            wait.rx = None;
            if !granted {
                let mut state = self.lock();
                if let Some(t) = state.tenants.get_mut(&tenant) {
                    t.sending += 1;
                    t.webhooks.entry(webhook).or_default().sending += 1;
                }
                state.sending += 1;
            }
        }
        SendPermit {
            room: Arc::clone(self),
            tenant,
            webhook,
        }
    }

    /// Gives freed slots to waiting requests, fairly: the tenant with the fewest requests in
    /// flight first, then its webhook with the fewest, the one served least lately among
    /// equals; oldest first within a webhook.
    fn grant(&self, state: &mut State) {
        let limits = self.limits;
        while state.sending < limits.sending {
            let tenant = state
                .tenants
                .iter()
                .filter(|(_, t)| t.sending < limits.sending_per_tenant && t.waiting())
                .filter(|(_, t)| {
                    t.webhooks
                        .values()
                        .any(|w| !w.waiting.is_empty() && w.sending < limits.sending_per_webhook)
                })
                .min_by_key(|(_, t)| (t.sending, t.served))
                .map(|(id, _)| *id);
            let Some(tenant) = tenant else {
                return;
            };
            state.grants += 1;
            let grant = state.grants;
            let Some(t) = state.tenants.get_mut(&tenant) else {
                return;
            };
            let webhook = t
                .webhooks
                .iter()
                .filter(|(_, w)| !w.waiting.is_empty() && w.sending < limits.sending_per_webhook)
                .min_by_key(|(_, w)| (w.sending, w.served))
                .map(|(id, _)| *id);
            let Some(w) = webhook.and_then(|id| t.webhooks.get_mut(&id)) else {
                return;
            };
            let Some(waiter) = w.waiting.pop_front() else {
                continue;
            };
            w.served = grant;
            t.served = grant;
            // The counts first: the waiter owns them once it wakes.
            w.sending += 1;
            t.sending += 1;
            state.sending += 1;
            if waiter.send(()).is_err() {
                // It gave up waiting (its task ended): undo and look again.
                if let Some(t) = state.tenants.get_mut(&tenant) {
                    t.sending = t.sending.saturating_sub(1);
                    if let Some(id) = webhook {
                        if let Some(w) = t.webhooks.get_mut(&id) {
                            w.sending = w.sending.saturating_sub(1);
                        }
                    }
                }
                state.sending = state.sending.saturating_sub(1);
            }
        }
    }

    /// Drops the entries of a webhook and a tenant that hold, send and wait for nothing.
    fn forget_idle(&self, state: &mut State, tenant: TenantId, webhook: WebhookId) {
        let Some(t) = state.tenants.get_mut(&tenant) else {
            return;
        };
        if t.webhooks
            .get(&webhook)
            .is_some_and(|w| w.held == 0 && w.sending == 0 && w.waiting.is_empty())
        {
            t.webhooks.remove(&webhook);
        }
        if t.held == 0 && t.sending == 0 && t.webhooks.is_empty() {
            state.tenants.remove(&tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(sending: usize, per_tenant: usize, per_webhook: usize) -> Limits {
        Limits {
            sending,
            sending_per_tenant: per_tenant,
            sending_per_webhook: per_webhook,
            held: 4 * sending,
            held_per_tenant: 4 * per_tenant,
            held_per_webhook: 4 * per_webhook,
        }
    }

    /// A permit that has not come yet.
    fn pending(
        room: &Arc<Room>,
        tenant: TenantId,
        webhook: WebhookId,
    ) -> tokio::task::JoinHandle<SendPermit> {
        let room = Arc::clone(room);
        tokio::spawn(async move { room.send_slot(tenant, webhook).await })
    }

    fn t(n: i64) -> TenantId {
        TenantId::new(n)
    }

    fn w(n: i64) -> WebhookId {
        WebhookId::new(n)
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_tenant_takes_at_most_its_share_and_the_other_is_not_kept_waiting() {
        let room = Room::new(limits(4, 2, 2));
        // Tenant 1 saturates its share with slow requests on two webhooks.
        let a = room.send_slot(t(1), w(10)).await;
        let b = room.send_slot(t(1), w(11)).await;
        let queued = pending(&room, t(1), w(10));
        settle().await;
        assert!(!queued.is_finished(), "tenant 1 is at its share");
        // Tenant 2 is served at once.
        let c = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            room.send_slot(t(2), w(20)),
        )
        .await
        .expect("tenant 2 does not wait behind tenant 1");
        drop(c);
        assert!(
            !queued.is_finished(),
            "freeing tenant 2's slot does not lift tenant 1's share"
        );
        drop(a);
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), queued)
            .await
            .expect("tenant 1's next request gets the slot tenant 1 freed")
            .expect("task");
        drop((got, b));
        assert!(room.lock().tenants.is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_tenant_with_the_fewest_in_flight() {
        let room = Room::new(limits(2, 2, 2));
        let a = room.send_slot(t(1), w(10)).await;
        let b = room.send_slot(t(1), w(10)).await;
        // The node is full: tenant 1 queues first, then tenant 2.
        let first = pending(&room, t(1), w(11));
        settle().await;
        let second = pending(&room, t(2), w(20));
        settle().await;
        drop(a);
        settle().await;
        assert!(
            second.is_finished(),
            "tenant 2 has none in flight: it goes first"
        );
        assert!(!first.is_finished());
        drop(b);
        let first = tokio::time::timeout(std::time::Duration::from_secs(1), first)
            .await
            .expect("then tenant 1")
            .expect("task");
        drop(first);
        drop(second.await.expect("task"));
        assert_eq!(room.lock().sending, 0);
    }

    #[tokio::test]
    async fn holding_is_bounded_per_webhook_tenant_and_node() {
        let room = Room::new(Limits {
            sending: 1,
            sending_per_tenant: 1,
            sending_per_webhook: 1,
            held: 3,
            held_per_tenant: 2,
            held_per_webhook: 1,
        });
        assert!(room.try_hold(t(1), w(10)));
        assert!(!room.try_hold(t(1), w(10)), "webhook holds its most");
        assert!(room.try_hold(t(1), w(11)));
        assert!(!room.try_hold(t(1), w(12)), "tenant holds its most");
        assert_eq!(room.saturated(), (vec![], vec![t(1)]));
        assert!(room.try_hold(t(2), w(20)));
        assert!(!room.try_hold(t(3), w(30)), "node holds its most");
        assert_eq!(room.take_for_claim(5), 0);
        room.release(t(1), w(10));
        assert_eq!(room.take_for_claim(5), 1);
        room.claimed(t(3), w(30));
        room.release(t(3), w(30));
        room.release(t(1), w(11));
        room.release(t(2), w(20));
        assert!(room.is_empty());
        assert!(room.lock().tenants.is_empty());
    }

    /// A request that gave up waiting does not take the slot from the next.
    #[tokio::test]
    async fn a_waiter_that_gave_up_is_skipped() {
        let room = Room::new(limits(1, 1, 1));
        let a = room.send_slot(t(1), w(10)).await;
        let gone = pending(&room, t(1), w(10));
        let next = pending(&room, t(2), w(20));
        settle().await;
        gone.abort();
        let _ = gone.await;
        drop(a);
        let next = tokio::time::timeout(std::time::Duration::from_secs(1), next)
            .await
            .expect("the slot reaches the next waiter")
            .expect("task");
        drop(next);
        assert_eq!(room.lock().sending, 0);
    }
}
