//! The crmhooks delivery engine.
//!
//! A [`Dispatcher`] claims due deliveries with a lease, builds and signs each body, POSTs it,
//! and records the attempt; the retry policy and the webhook state machine decide what follows.
//! It never holds a database transaction across an HTTP call. [`Dispatcher::step`] runs one
//! claim-send-record round so tests can drive it; [`Dispatcher::run`] is the long-running loop,
//! woken at once by commits ([`Dispatcher::waker`]) with a polling fallback.

pub mod client;
pub mod header_case;
pub mod mail;
pub mod policy;
pub mod send;
pub mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmhooks_payload::PayloadTemplate;
use crmhooks_store::{
    now_ticks, AttemptOutcome, ClaimRequest, Claimed, DynStore, Intake, StateChange, StoreError,
    StoredEvent, Ticks, Verdict, Webhook,
};
use futures::FutureExt as _;
use tokio::sync::{mpsc, Notify, Semaphore};
use uuid::Uuid;

pub use client::Timeouts;
pub use policy::{Policies, SuccessRule};
pub use target::{check_url, OwnAddresses, TargetPolicy, TargetRefused};

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// This node's lease owner name.
    pub owner: String,
    /// Deliveries claimed per round.
    pub batch: i64,
    /// Lease length; a delivery whose worker died is claimed again after it.
    pub lease: Duration,
    /// Polling fallback when no wake-up comes.
    pub poll_interval: Duration,
    /// Requests in flight in total.
    pub max_in_flight: usize,
    /// Requests in flight per webhook.
    pub max_per_webhook: usize,
    /// Consecutive failed attempts before TooManyErrors.
    pub max_consecutive_errors: i64,
    /// Default success rule.
    pub success: SuccessRule,
    /// Default policy name.
    pub default_policy: String,
    /// The policies.
    pub policies: Policies,
    /// Target policy.
    pub target_policy: TargetPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// This server's own API addresses, which no delivery may reach.
    pub own_addresses: OwnAddresses,
    /// The version after `NetServer-Webhook/` in `User-Agent`.
    pub user_agent_version: String,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            owner: format!("node-{}", Uuid::new_v4().simple()),
            batch: 256,
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            max_in_flight: 512,
            max_per_webhook: 64,
            max_consecutive_errors: 9,
            success: SuccessRule::Exactly200,
            default_policy: "superoffice".into(),
            policies: Policies::default(),
            target_policy: TargetPolicy::Strict,
            timeouts: Timeouts::default(),
            own_addresses: OwnAddresses::default(),
            user_agent_version: send::default_user_agent_version(),
        }
    }
}

/// Deliveries a node holds at most (claimed or handed, not yet recorded): four times
/// `max_in_flight`. Holding only as many as it sends left the sending slots idle while
/// finished deliveries waited for their record and the next ones for a claim, and the next
/// heads that a record hands over found no room and were left to claims, which cost more
/// than a hand-over. Only `max_in_flight` are sent at once (`sending`); the rest wait in
/// memory, which costs less than waiting in the database. (Measurements behind the factor:
/// docs/performance.md.)
fn held(cfg: &DispatchConfig) -> usize {
    cfg.max_in_flight.max(1).saturating_mul(4)
}

/// How long a `next_due` answer is reused while wake-ups keep coming (a retry scheduled by this
/// node in the meantime is known without asking).
const NEXT_DUE_TTL: Duration = Duration::from_millis(100);

/// The earliest time something may become due, as the dispatcher's loop sleeps until it. Under
/// load every commit wakes the loop, and asking the store's `next_due` at every wake-up cost
/// two queries per event: an answer is reused for [`NEXT_DUE_TTL`], with the retries this node
/// scheduled since folded in.
struct NextDue {
    /// The last answer, when it was read, and whether it named a future time then.
    read: Option<Read>,
    /// The earliest retry this node scheduled since the last read (i64::MAX: none).
    local: Arc<std::sync::atomic::AtomicI64>,
}

/// One `next_due` answer.
#[derive(Clone, Copy)]
struct Read {
    at: tokio::time::Instant,
    due: Option<Ticks>,
    /// The answer named a time still to come when it was read.
    future: bool,
}

impl Default for NextDue {
    fn default() -> Self {
        NextDue {
            read: None,
            local: Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX)),
        }
    }
}

impl NextDue {
    /// The earliest due time known. Reads the store again when the answer is older than
    /// [`NEXT_DUE_TTL`], or when a time it or a retry of this node named has come since (what
    /// follows it is not known).
    ///
    /// An answer that was already past when it was read is reused like any other: under load
    /// there is always such a row (a later event of a contact waiting behind an earlier one,
    /// or a batch waiting for its fsync), the claim that ran just before could not take it,
    /// and reading it again at every wake-up was a visible share of the server's CPU spent to
    /// learn the same.
    /// The loop then sleeps until a wake-up, the poll interval, or a retry of this node.
    async fn earliest(&mut self, store: &DynStore) -> Result<Option<Ticks>, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_ticks();
        let local = self.local.load(Relaxed);
        let fresh = self.read.filter(|r| {
            r.at.elapsed() < NEXT_DUE_TTL
                && !(r.future && r.due.is_some_and(|d| d <= now))
                && local > now
        });
        let due = match fresh {
            Some(r) => r.due,
            None => {
                self.local.store(i64::MAX, Relaxed);
                let due = store.next_due().await?;
                self.read = Some(Read {
                    at: tokio::time::Instant::now(),
                    due,
                    future: due.is_some_and(|d| d > now_ticks()),
                });
                due
            }
        };
        Ok(match (due, self.local.load(Relaxed)) {
            (_, i64::MAX) => due,
            (Some(d), l) => Some(d.min(l)),
            (None, l) => Some(l),
        })
    }
}

/// An event and the payload template its deliveries share.
type Shared = (Arc<StoredEvent>, Arc<PayloadTemplate>);

/// The delivery engine.
pub struct Dispatcher {
    store: DynStore,
    client: client::HttpClient,
    user_agent: http::HeaderValue,
    cfg: DispatchConfig,
    wake: Arc<Notify>,
    per_webhook: Mutex<HashMap<i64, WebhookSlots>>,
    /// Deliveries this node holds (claimed or handed, not yet recorded): [`Dispatcher::held`].
    slots: Arc<Semaphore>,
    /// Requests in flight in total: `max_in_flight`.
    sending: Arc<Semaphore>,
    state_changes: mpsc::UnboundedSender<StateChange>,
    /// Whether [`Intake::reserve`] may take room (while [`Dispatcher::run`] runs).
    accepting: AtomicBool,
    /// Deliveries the store handed over ([`Intake::take`]), for `run` to start.
    handed_tx: mpsc::UnboundedSender<Vec<Claimed>>,
    handed_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Claimed>>>>,
}

/// The store hands fresh deliveries to the running dispatcher with the same limits a claim
/// has: a slot of [`Dispatcher::held`], and at most [`Dispatcher::window`] held per webhook.
impl Intake for Dispatcher {
    fn owner(&self) -> &str {
        &self.cfg.owner
    }

    fn lease_ticks(&self) -> Ticks {
        i64::try_from(self.cfg.lease.as_nanos() / 100).unwrap_or(i64::MAX)
    }

    fn reserve(&self, webhook_id: i64) -> bool {
        if !self.accepting.load(Ordering::SeqCst) {
            return false;
        }
        let mut map = self.per_webhook.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&webhook_id)
            .is_some_and(|w| w.claimed >= self.window())
        {
            return false;
        }
        let Ok(permit) = self.slots.try_acquire() else {
            return false;
        };
        permit.forget();
        self.slots_of(&mut map, webhook_id).claimed += 1;
        true
    }

    fn unreserve(&self, webhook_id: i64) {
        self.track_done(webhook_id);
        self.slots.add_permits(1);
    }

    fn take(&self, handed: Vec<Claimed>) {
        if let Err(lost) = self.handed_tx.send(handed) {
            // Not running any more: give the room back; the leases end by release or expiry.
            for c in lost.0 {
                self.unreserve(c.webhook.id);
            }
        }
    }
}

/// Deliveries of one webhook claimed by this node and not yet recorded, and the semaphore that
/// bounds its requests in flight.
struct WebhookSlots {
    claimed: usize,
    requests: Arc<Semaphore>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(held(&cfg)));
        let sending = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        let (handed_tx, handed_rx) = mpsc::unbounded_channel();
        Ok((
            Arc::new(Dispatcher {
                store,
                client,
                user_agent: send::user_agent_value(&cfg.user_agent_version),
                cfg,
                wake: Arc::new(Notify::new()),
                per_webhook: Mutex::new(HashMap::new()),
                slots,
                sending,
                state_changes: tx,
                accepting: AtomicBool::new(false),
                handed_tx,
                handed_rx: Mutex::new(Some(handed_rx)),
            }),
            rx,
        ))
    }

    /// Wakes the loop (call after a commit that queued deliveries).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The settings.
    pub fn config(&self) -> &DispatchConfig {
        &self.cfg
    }

    /// Webhooks this node holds enough leases of ([`Dispatcher::window`]). The receiver still
    /// sees at most `max_per_webhook` requests (a semaphore per webhook); the rest are claimed
    /// ahead or wait for their record, so a webhook's next requests start as soon as a slot
    /// frees instead of after its finished attempts are recorded and another claim round trip.
    fn saturated(&self) -> Vec<i64> {
        let window = self.window();
        let map = self.per_webhook.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, w)| w.claimed >= window)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leases this node may hold of one webhook: four times `max_per_webhook` (see
    /// [`Dispatcher::saturated`]). Each contact with events outstanding holds one (its chain's
    /// head, handed over or claimed), sent or waiting for its record. With a smaller window,
    /// many clients each changing their own contacts outgrew it: heads that found no room
    /// waited for a claim, which costs more than a hand-over, and the queue grew for as long as
    /// the load lasted. The requests stay at `max_per_webhook`.
    fn window(&self) -> usize {
        self.cfg.max_per_webhook.saturating_mul(4)
    }

    /// The slots of `webhook_id`, made when it has none.
    fn slots_of<'m>(
        &self,
        map: &'m mut HashMap<i64, WebhookSlots>,
        webhook_id: i64,
    ) -> &'m mut WebhookSlots {
        map.entry(webhook_id).or_insert_with(|| WebhookSlots {
            claimed: 0,
            requests: Arc::new(Semaphore::new(self.cfg.max_per_webhook.max(1))),
        })
    }

    /// Counts a claimed delivery of `webhook_id`.
    fn track_claimed(&self, webhook_id: i64) {
        let mut map = self.per_webhook.lock().unwrap_or_else(|p| p.into_inner());
        self.slots_of(&mut map, webhook_id).claimed += 1;
    }

    /// Starts sending a delivery this node holds (claimed or handed, already counted), at
    /// most `max_per_webhook` requests per webhook and `max_in_flight` in all at a time.
    ///
    /// `last` is the payload template of the delivery launched before: the deliveries of one
    /// event come one after the other (a commit hands them over together), and share it.
    fn launch(
        self: &Arc<Self>,
        c: Claimed,
        last: &mut Option<Shared>,
        done: &mpsc::UnboundedSender<AttemptOutcome>,
    ) {
        let template = match last {
            Some((event, template)) if Arc::ptr_eq(event, &c.event) => Arc::clone(template),
            _ => {
                let template = Arc::new(send::template_for(&c.event, &c.tenant));
                *last = Some((Arc::clone(&c.event), Arc::clone(&template)));
                template
            }
        };
        let requests = {
            let mut map = self.per_webhook.lock().unwrap_or_else(|p| p.into_inner());
            self.slots_of(&mut map, c.webhook.id).requests.clone()
        };
        let sending = self.sending.clone();
        let this = self.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let _slot = requests.acquire_owned().await;
            let _sending = sending.acquire_owned().await;
            // A panic while building or sending is a bug, but it must not leave the delivery
            // in flight for ever (its slot held, its chain blocked): it is a failed attempt
            // like any other, with the panic as its reason.
            let attempted_at = now_ticks();
            let outcome = match std::panic::AssertUnwindSafe(this.attempt_with(&c, &template))
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let why = panic_message(panic.as_ref());
                    tracing::error!(delivery = c.delivery_id, webhook = c.webhook.id, panic = %why, "sending a delivery panicked");
                    this.outcome(
                        &c,
                        attempted_at,
                        send::Response::failed(
                            format!(
                                "internal error while sending (a bug; please report it): {why}"
                            ),
                            Duration::ZERO,
                        ),
                    )
                }
            };
            let _ = done.send(outcome);
        });
    }

    fn track_done(&self, webhook_id: i64) {
        let mut map = self.per_webhook.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slots) = map.get_mut(&webhook_id) {
            slots.claimed = slots.claimed.saturating_sub(1);
            if slots.claimed == 0 {
                map.remove(&webhook_id);
            }
        }
    }

    async fn claim(&self, limit: i64) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ticks();
        self.store
            .claim(&ClaimRequest {
                owner: self.cfg.owner.clone(),
                now,
                lease_until: now.saturating_add(self.lease_ticks()),
                limit,
                skip_webhooks: self.saturated(),
                max_per_webhook: i64::try_from(self.cfg.max_per_webhook).unwrap_or(i64::MAX),
            })
            .await
    }

    /// Sends one claimed delivery and decides what follows; records nothing.
    pub async fn attempt(&self, c: &Claimed) -> AttemptOutcome {
        self.attempt_with(c, &send::template_for(&c.event, &c.tenant))
            .await
    }

    /// [`Dispatcher::attempt`] with the payload template of the delivery's event.
    async fn attempt_with(&self, c: &Claimed, template: &PayloadTemplate) -> AttemptOutcome {
        let properties = c.webhook.properties.as_ref().filter(|p| !p.is_empty());
        let body = template.render(c.event_id, &c.webhook.name, properties);
        let attempted_at = now_ticks();
        let resp = match send::build_body(
            &c.webhook,
            body,
            &c.event.event,
            c.event_id,
            c.attempt_in_cycle,
            false,
            &self.user_agent,
        ) {
            Ok(out) => send::send(&self.client, out).await,
            Err(why) => send::Response::failed(why, Duration::ZERO),
        };
        self.outcome(c, attempted_at, resp)
    }

    /// What an attempt of `c` that got `resp` comes to: success by the webhook's rule, the
    /// verdict of its retry policy, and what the log keeps.
    fn outcome(&self, c: &Claimed, attempted_at: Ticks, resp: send::Response) -> AttemptOutcome {
        let rule = c
            .webhook
            .success_status
            .as_deref()
            .and_then(SuccessRule::parse)
            .unwrap_or(self.cfg.success);
        let success = resp.status.is_some_and(|s| rule.is_success(s));
        let policy = c
            .webhook
            .retry_policy
            .clone()
            .unwrap_or_else(|| self.cfg.default_policy.clone());
        let verdict = self.cfg.policies.verdict(
            &policy,
            c.attempt_in_cycle,
            policy::AttemptResult {
                status: resp.status,
                success,
                retry_after: resp.retry_after,
            },
            now_ticks(),
        );
        let error = if success {
            None
        } else {
            Some(match (&resp.error, resp.status) {
                (Some(e), _) => e.clone(),
                (None, Some(s)) => format!("receiver answered {s}"),
                (None, None) => "no response".into(),
            })
        };
        AttemptOutcome {
            delivery_id: c.delivery_id,
            webhook_id: c.webhook.id,
            event_id: c.event_id,
            retry: c.attempt_in_cycle,
            attempted_at,
            duration_us: i64::try_from(resp.elapsed.as_micros()).unwrap_or(i64::MAX),
            status_code: resp.status,
            error: error.clone(),
            response_excerpt: if success {
                None
            } else {
                resp.excerpt().or(error)
            },
            verdict,
        }
    }

    async fn record(&self, outcomes: &[AttemptOutcome]) -> Result<(), StoreError> {
        let changes = self
            .store
            .complete(outcomes, now_ticks(), self.cfg.max_consecutive_errors)
            .await?;
        for ch in changes {
            tracing::warn!(webhook = ch.webhook.id, name = %ch.webhook.name, reason = ?ch.reason, "webhook disabled: TooManyErrors");
            let _ = self.state_changes.send(ch);
        }
        Ok(())
    }

    /// One round: claim a batch, send all of it concurrently, record the attempts. Returns how
    /// many deliveries were attempted (0 when nothing was due).
    pub async fn step(&self) -> Result<usize, StoreError> {
        let claimed = self.claim(self.cfg.batch).await?;
        let n = claimed.len();
        let outcomes = futures::future::join_all(claimed.iter().map(|c| self.attempt(c))).await;
        if !outcomes.is_empty() {
            self.record(&outcomes).await?;
        }
        Ok(n)
    }

    /// Runs until `shutdown` resolves: claims while there is capacity, sends each delivery on its
    /// own task, records completions in batches. On shutdown, waits up to `grace` for requests
    /// in flight, records them, and returns what is left to the queue.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) {
        if let Err(e) = self.store.listen_for_work(self.wake.clone()).await {
            tracing::warn!(error = %e, "cannot listen for work from other nodes; polling only");
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AttemptOutcome>();
        // Deliveries handed over by the store at commit start here.
        let launcher = {
            let handed = self
                .handed_rx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let (this, done) = (self.clone(), done_tx.clone());
            tokio::spawn(async move {
                let Some(mut handed) = handed else { return };
                while let Some(list) = handed.recv().await {
                    let mut last = None;
                    for c in list {
                        this.launch(c, &mut last, &done);
                    }
                }
            })
        };
        self.accepting.store(true, Ordering::SeqCst);
        self.store
            .set_intake(Some(self.clone() as Arc<dyn Intake + 'static>));
        let mut next_due = NextDue::default();
        let scheduled = next_due.local.clone();
        // Completion writer: batches whatever has finished.
        let this = self.clone();
        let writer = tokio::spawn(async move {
            while let Some(first) = done_rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 512 {
                    match done_rx.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
                let mut delay = Duration::from_millis(100);
                loop {
                    match this.record(&batch).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "recording attempts failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                for o in &batch {
                    this.track_done(o.webhook_id);
                    if let Verdict::RetryAt(t) | Verdict::Requeue(t) = o.verdict {
                        scheduled.fetch_min(t, Ordering::Relaxed);
                    }
                }
                this.slots.add_permits(batch.len());
                this.wake.notify_one();
            }
        });
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = self.slots.available_permits();
            let mut claimed_full = false;
            let want = free.min(usize::try_from(self.cfg.batch).unwrap_or(usize::MAX));
            // The room is taken before the claim: the store hands deliveries over at commit
            // concurrently (Intake::reserve), and every delivery claimed must have its slot.
            let room = u32::try_from(want)
                .ok()
                .filter(|n| *n > 0)
                .and_then(|n| self.slots.try_acquire_many(n).ok());
            if let Some(room) = room {
                room.forget();
                match self.claim(i64::try_from(want).unwrap_or(i64::MAX)).await {
                    Ok(claimed) => {
                        claimed_full = claimed.len() >= want;
                        self.slots.add_permits(want.saturating_sub(claimed.len()));
                        let mut last = None;
                        for c in claimed {
                            self.track_claimed(c.webhook.id);
                            self.launch(c, &mut last, &done_tx);
                        }
                    }
                    Err(e) => {
                        self.slots.add_permits(want);
                        tracing::error!(error = %e, "claiming deliveries failed");
                    }
                }
            }
            // A full batch may have left more behind; a short one took all there was (a commit
            // or a completion wakes the loop when that changes).
            if claimed_full && self.slots.available_permits() > 0 {
                continue;
            }
            // Nothing claimable now. Sleep until the next retry is due; when work exists but is
            // blocked (all slots busy, or later events waiting for an earlier one of the same
            // contact), a completion wakes the loop, and the poll interval is the fallback.
            let wait = if free == 0 {
                self.cfg.poll_interval
            } else {
                match next_due.earliest(&self.store).await {
                    Ok(Some(due)) if due > now_ticks() => {
                        let ms = (due - now_ticks()) / 10_000 + 1;
                        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                            .min(self.cfg.poll_interval)
                    }
                    Ok(_) => self.cfg.poll_interval,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading next due time failed");
                        self.cfg.poll_interval
                    }
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Shutdown: nothing more is handed over (the store drops its reference, which also
        // ends the cycle store -> dispatcher -> store); let requests in flight, handed ones
        // included, finish within the grace period.
        self.accepting.store(false, Ordering::SeqCst);
        self.store.set_intake(None);
        let total = held(&self.cfg);
        let deadline = tokio::time::Instant::now() + grace;
        while self.slots.available_permits() < total && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        launcher.abort();
        drop(done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        match self.store.release(&self.cfg.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "returned unfinished deliveries to the queue"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing leases failed; they expire by themselves")
            }
        }
    }

    /// Sends a `test` event (spec 6.2) to a definition that need not be saved. Returns whether
    /// it counted as success and the receiver's answer.
    pub async fn send_test(
        &self,
        hook: &Webhook,
        tenant: &str,
        associate_id: i64,
    ) -> (bool, String) {
        if let Err(e) = check_url(self.cfg.target_policy, &hook.target_url) {
            return (false, e.to_string());
        }
        let payload = crmhooks_payload::WebhookPayload::test_event(
            Uuid::new_v4(),
            crmhooks_payload::NetDateTime::now_utc(),
            tenant,
            associate_id,
            &hook.name,
        );
        let resp = match send::build(hook, &payload.as_ref(), 0, true, &self.user_agent) {
            Ok(out) => send::send(&self.client, out).await,
            Err(why) => return (false, why),
        };
        let rule = hook
            .success_status
            .as_deref()
            .and_then(SuccessRule::parse)
            .unwrap_or(self.cfg.success);
        let ok = resp.status.is_some_and(|s| rule.is_success(s));
        let message = resp.excerpt().or(resp.error).unwrap_or_default();
        (ok, message)
    }
}

/// The message of a panic's payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
