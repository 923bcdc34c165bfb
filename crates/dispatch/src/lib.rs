//! The crmhooks delivery engine.
//!
//! A [`Dispatcher`] claims due deliveries with a lease (or takes them from the store as their
//! commit hands them over), builds and signs each body, POSTs it, and records the attempt; the
//! retry policy and the webhook state machine decide what follows. It never holds a database
//! transaction across an HTTP call. The node's room ([`room`]) bounds what it holds and sends,
//! shared fairly between tenants and webhooks. [`Dispatcher::step`] runs one
//! claim-send-record round so tests can drive it; [`Dispatcher::run`] is the long-running loop,
//! woken at once by commits ([`Dispatcher::waker`]) with a polling fallback.

mod attempt;
pub mod client;
mod failures;
pub mod header_case;
pub mod mail;
pub mod meter;
pub mod policy;
pub mod room;
mod run;
pub mod send;
pub mod target;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhooks_store::{
    Claimed, DeliveryId, DynStore, Intake, StateChange, StoreError, TenantId, Ticks, WebhookId,
};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

pub use client::Timeouts;
pub use meter::MetricLabels;
pub use policy::{Policies, RetryPolicy, SuccessRule};
pub use target::{check_url, OwnAddresses, TargetPolicy, TargetRefused};

use room::{Limits, Room};

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// This node's lease owner name.
    pub owner: String,
    /// Deliveries claimed per round.
    pub batch: i64,
    /// Lease length. A node renews the leases of what it holds every third of it, so a dead
    /// node's deliveries are claimed again within about one lease.
    pub lease: Duration,
    /// Polling fallback when no wake-up comes.
    pub poll_interval: Duration,
    /// Requests in flight in total.
    pub max_in_flight: usize,
    /// Requests in flight per tenant: what one tenant's receivers may take of the node, so that
    /// slow or failing ones cannot keep another tenant's deliveries waiting.
    pub max_per_tenant: usize,
    /// Requests in flight per webhook.
    pub max_per_webhook: usize,
    /// Consecutive failed attempts before TooManyErrors.
    pub max_consecutive_errors: i64,
    /// Default success rule.
    pub success: SuccessRule,
    /// Default policy name.
    pub default_policy: RetryPolicy,
    /// The policies.
    pub policies: Policies,
    /// Target policy.
    pub target_policy: TargetPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// How long Test and test-on-save wait for the receiver's answer: they hold an API call
    /// meanwhile, so less than a delivery's timeout.
    pub test_timeout: Duration,
    /// This server's own API addresses, which no delivery may reach.
    pub own_addresses: OwnAddresses,
    /// The version after `NetServer-Webhook/` in `User-Agent`.
    pub user_agent_version: String,
    /// Labels of the attempts' metrics beyond outcome and status class.
    pub metric_labels: MetricLabels,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            owner: format!("node-{}", Uuid::new_v4().simple()),
            batch: 256,
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            max_in_flight: 512,
            max_per_tenant: 256,
            max_per_webhook: 64,
            max_consecutive_errors: 9,
            success: SuccessRule::Exactly200,
            default_policy: RetryPolicy::SuperOffice,
            policies: Policies::default(),
            target_policy: TargetPolicy::Strict,
            timeouts: Timeouts::default(),
            test_timeout: Duration::from_secs(10),
            own_addresses: OwnAddresses::default(),
            user_agent_version: send::default_user_agent_version(),
            metric_labels: MetricLabels::default(),
        }
    }
}

/// The room of a node for `cfg`. A node holds up to four times what it sends (per webhook,
/// per tenant and in all), so that the next requests start as soon as one ends instead of after
/// the finished ones are recorded and claimed again, and so that the next heads a record hands
/// over find room (docs/performance.md has the measurements behind the factor). Only the sending
/// limits are sent at once; the rest wait in memory, which costs less than waiting in the
/// database.
fn limits(cfg: &DispatchConfig) -> Limits {
    let held = |n: usize| n.max(1).saturating_mul(4);
    Limits {
        sending: cfg.max_in_flight,
        sending_per_tenant: cfg.max_per_tenant,
        sending_per_webhook: cfg.max_per_webhook,
        held: held(cfg.max_in_flight),
        held_per_tenant: held(cfg.max_per_tenant),
        held_per_webhook: held(cfg.max_per_webhook),
    }
}

/// The delivery engine.
pub struct Dispatcher {
    store: DynStore,
    client: client::HttpClient,
    /// `User-Agent` of every request, made once.
    user_agent: http::HeaderValue,
    cfg: DispatchConfig,
    wake: Arc<Notify>,
    /// What this node holds and sends, per tenant and webhook.
    room: Arc<Room>,
    /// The deliveries this node holds, whose leases it renews.
    held: Mutex<HashSet<DeliveryId>>,
    state_changes: mpsc::UnboundedSender<StateChange>,
    /// Whether [`Intake::reserve`] may take room (while [`Dispatcher::run`] runs).
    accepting: AtomicBool,
    /// Deliveries the store handed over ([`Intake::take`]), for `run` to start.
    handed_tx: mpsc::UnboundedSender<Vec<Claimed>>,
    handed_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Claimed>>>>,
    /// Metric handles.
    meter: meter::Meter,
}

/// The store hands fresh deliveries to the running dispatcher with the limits a claim has.
impl Intake for Dispatcher {
    fn owner(&self) -> &str {
        &self.cfg.owner
    }

    fn lease_ticks(&self) -> Ticks {
        i64::try_from(self.cfg.lease.as_nanos() / 100).unwrap_or(i64::MAX)
    }

    fn reserve(&self, tenant_id: TenantId, webhook_id: WebhookId) -> bool {
        self.accepting.load(Ordering::SeqCst) && self.room.try_hold(tenant_id, webhook_id)
    }

    fn unreserve(&self, tenant_id: TenantId, webhook_id: WebhookId) {
        self.room.release(tenant_id, webhook_id);
    }

    fn full(&self) -> Option<(Vec<WebhookId>, Vec<TenantId>)> {
        if !self.accepting.load(Ordering::SeqCst) || self.room.free() == 0 {
            return None;
        }
        Some(self.room.saturated())
    }

    fn take(&self, handed: Vec<Claimed>) {
        self.meter.waiting(-(handed.len() as i64));
        if let Err(lost) = self.handed_tx.send(handed) {
            // Not running any more: give the room back; the leases end by release or expiry.
            for c in lost.0 {
                self.unreserve(c.webhook.tenant_id, c.webhook.id);
            }
        }
    }
}

/// Errors of the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built (its TLS configuration).
    #[error("HTTP client: {0}")]
    Client(#[from] rustls::Error),
}

impl Dispatcher {
    /// Creates a dispatcher; state changes (for mails) are sent to the returned receiver.
    pub fn new(
        store: DynStore,
        cfg: DispatchConfig,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<StateChange>), DispatchError> {
        let client = client::build_client(
            cfg.target_policy,
            cfg.timeouts,
            cfg.max_in_flight,
            cfg.own_addresses.clone(),
        )?;
        let cfg_labels = cfg.metric_labels;
        let (tx, rx) = mpsc::unbounded_channel();
        let (handed_tx, handed_rx) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Dispatcher {
                store,
                client,
                room: Room::new(limits(&cfg)),
                user_agent: send::user_agent_value(&cfg.user_agent_version),
                cfg,
                wake: Arc::new(Notify::new()),
                held: Mutex::new(HashSet::new()),
                state_changes: tx,
                accepting: AtomicBool::new(false),
                handed_tx,
                handed_rx: Mutex::new(Some(handed_rx)),
                meter: meter::Meter::new(cfg_labels),
            }),
            rx,
        ))
    }

    /// Wakes the loop (call after a commit that queued deliveries).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Counts deliveries a commit queued (all of them, handed over or not: each is counted as
    /// waiting until a claim or a hand-over takes it).
    pub fn queued(&self, deliveries: u64) {
        self.meter
            .waiting(i64::try_from(deliveries).unwrap_or(i64::MAX));
    }

    /// The settings.
    pub fn config(&self) -> &DispatchConfig {
        &self.cfg
    }

    /// The lease length in ticks.
    fn lease_len(&self) -> Ticks {
        Intake::lease_ticks(self)
    }
}
