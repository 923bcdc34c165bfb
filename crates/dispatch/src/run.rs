//! The dispatcher's loop: claims while there is room, starts each delivery on its own task,
//! records completions in batches, renews the leases of what it holds, and sleeps until
//! something is due; [`Dispatcher::step`] is one round of it for tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crmhooks_store::{
    now_ticks, AttemptOutcome, ClaimRequest, Claimed, DeliveryId, DynStore, Intake, StoreError,
    Ticks, Verdict, WebhookId,
};
use tokio::sync::mpsc;

use crate::Dispatcher;

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

/// What the completion writer needs to know to decide whether a record must wake the loop for
/// a claim (a store that wakes it itself when a record leaves work for a claim spares the
/// claims that would find nothing).
#[derive(Default)]
struct AfterRecord {
    /// The last claim was held back by room (or failed): a record that frees room wakes it.
    limited: std::sync::atomic::AtomicBool,
    /// Records so far, so the loop sees one that ran during its claim.
    records: std::sync::atomic::AtomicU64,
}

impl Dispatcher {
    /// One round: claim a batch, send all of it concurrently, record the attempts. Returns how
    /// many deliveries were attempted (0 when nothing was due).
    pub async fn step(&self) -> Result<usize, StoreError> {
        let (claimed, _) = self.claim(self.cfg.batch).await?;
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
        // The waiting gauge starts from one count; from then on the loop keeps it.
        match self.store.delivery_counts().await {
            Ok(counts) => self.meter.set_waiting(
                counts
                    .iter()
                    .filter(|(s, _)| *s == crmhooks_store::DeliveryStatus::Pending)
                    .map(|(_, n)| *n)
                    .sum(),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot count the deliveries waiting"),
        }
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
        let renewer = tokio::spawn(Arc::clone(&self).renew_leases());
        let mut next_due = NextDue::default();
        let scheduled = next_due.local.clone();
        let after_record = Arc::new(AfterRecord::default());
        let store_wakes = self.store.wakes_after_record();
        // Completion writer: batches whatever has finished.
        let this = self.clone();
        let recorded = Arc::clone(&after_record);
        let writer = tokio::spawn(async move {
            let mut failures = crate::failures::Failures::default();
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
                if let Some(r) = failures.note(&batch, std::time::Instant::now()) {
                    tracing::warn!(
                        failed = r.failed,
                        webhooks = r.webhooks,
                        last_webhook = r.last_webhook.get(),
                        last_error = %r.last_error,
                        "delivery attempts failed (one such line every {} s at most; each attempt is in the delivery log)",
                        crate::failures::REPORT_EVERY.as_secs()
                    );
                }
                let mut retries = false;
                for o in &batch {
                    this.done(o);
                    if let Verdict::RetryAt(t) | Verdict::Requeue(t) = o.verdict {
                        scheduled.fetch_min(t, Ordering::Relaxed);
                        retries = true;
                    }
                }
                recorded.records.fetch_add(1, Ordering::SeqCst);
                if !store_wakes || retries || recorded.limited.load(Ordering::SeqCst) {
                    this.wake.notify_one();
                }
            }
        });
        loop {
            if *shutdown.borrow() {
                break;
            }
            let free = self.room.free();
            let mut claimed_full = false;
            let records_before = after_record.records.load(Ordering::SeqCst);
            let mut limited = true;
            // The room is taken before the claim: the store hands deliveries over at commit
            // concurrently (Intake::reserve), and every delivery claimed must have its room.
            let want = self
                .room
                .take_for_claim(usize::try_from(self.cfg.batch).unwrap_or(usize::MAX));
            if want > 0 {
                match self.claim(i64::try_from(want).unwrap_or(i64::MAX)).await {
                    Ok((claimed, skipped)) => {
                        claimed_full = claimed.len() >= want;
                        // A claim takes at most max_per_webhook of each webhook: one that got
                        // that many may have left more of it behind, for the claim its records
                        // wake (PostgreSQL's records wake the loop only when told so).
                        limited = skipped
                            || claimed_full
                            || self.capped(&claimed)
                            || i64::try_from(want).unwrap_or(i64::MAX) < self.cfg.batch;
                        self.room.unclaimed(want.saturating_sub(claimed.len()));
                        let mut last = None;
                        for c in claimed {
                            self.room.claimed(c.webhook.tenant_id, c.webhook.id);
                            self.launch(c, &mut last, &done_tx);
                        }
                    }
                    Err(e) => {
                        self.room.unclaimed(want);
                        tracing::error!(error = %e, "claiming deliveries failed");
                    }
                }
            }
            // Whether a record that frees room must wake the loop: the claim left deliveries
            // behind for want of room (or failed).
            after_record.limited.store(limited, Ordering::SeqCst);
            // A full batch may have left more behind; a short one took all there was (a commit
            // or a completion wakes the loop when that changes).
            if claimed_full && self.room.free() > 0 {
                continue;
            }
            // A record that ran during a claim held back by room may have freed what it lacked.
            if limited && after_record.records.load(Ordering::SeqCst) != records_before {
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
        let deadline = tokio::time::Instant::now() + grace;
        while !self.room.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        launcher.abort();
        renewer.abort();
        drop(done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        match self.store.release(&self.cfg.owner).await {
            Ok(0) => {}
            Ok(n) => {
                self.meter.waiting(i64::try_from(n).unwrap_or(i64::MAX));
                tracing::info!(released = n, "returned unfinished deliveries to the queue")
            }
            Err(e) => {
                tracing::warn!(error = %e, "releasing leases failed; they expire by themselves")
            }
        }
    }

    /// Whether a claim took as many deliveries of one webhook as a claim takes of each
    /// (`max_per_webhook`), and so may have left more of it behind.
    fn capped(&self, claimed: &[Claimed]) -> bool {
        if claimed.len() < self.cfg.max_per_webhook {
            return false;
        }
        let mut per_webhook: std::collections::HashMap<WebhookId, usize> =
            std::collections::HashMap::new();
        claimed.iter().any(|c| {
            let n = per_webhook.entry(c.webhook.id).or_default();
            *n += 1;
            *n >= self.cfg.max_per_webhook
        })
    }

    /// Claims up to `limit` deliveries; also whether the claim skipped webhooks or tenants
    /// that hold their most.
    async fn claim(&self, limit: i64) -> Result<(Vec<Claimed>, bool), StoreError> {
        let now = now_ticks();
        let (skip_webhooks, skip_tenants) = self.room.saturated();
        let skipped = !skip_webhooks.is_empty() || !skip_tenants.is_empty();
        let claimed = self
            .store
            .claim(&ClaimRequest {
                owner: self.cfg.owner.clone(),
                now,
                lease_until: now.saturating_add(self.lease_len()),
                limit,
                skip_webhooks,
                skip_tenants,
                max_per_webhook: i64::try_from(self.cfg.max_per_webhook).unwrap_or(i64::MAX),
            })
            .await?;
        self.meter.waiting(-(claimed.len() as i64));
        Ok((claimed, skipped))
    }

    async fn record(&self, outcomes: &[AttemptOutcome]) -> Result<(), StoreError> {
        let changes = self
            .store
            .complete(outcomes, now_ticks(), self.cfg.max_consecutive_errors)
            .await?;
        for o in outcomes {
            if let Verdict::RetryAt(_) | Verdict::Requeue(_) = o.verdict {
                self.meter.waiting(1);
            }
        }
        for ch in changes {
            crate::meter::state_change(ch.webhook.state.name());
            tracing::warn!(webhook = ch.webhook.id.get(), name = %ch.webhook.name, reason = %crate::failures::without_target(ch.reason.as_deref().unwrap_or("-")), "webhook disabled: TooManyErrors");
            let _ = self.state_changes.send(ch);
        }
        Ok(())
    }

    /// What follows a recorded attempt: the delivery's room frees and its lease is no longer
    /// renewed.
    fn done(&self, o: &AttemptOutcome) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&o.delivery_id);
        if held {
            self.meter.in_flight(-1);
        }
        self.room.release(o.tenant_id, o.webhook_id);
    }

    /// Renews the leases of what this node holds every third of a lease, until aborted, so a
    /// lease runs out only when its node is gone (or cannot reach the database for that long).
    async fn renew_leases(self: Arc<Self>) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<DeliveryId> = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            if ids.is_empty() {
                continue;
            }
            let until = now_ticks().saturating_add(self.lease_len());
            if let Err(e) = self.store.renew_leases(&self.cfg.owner, &ids, until).await {
                tracing::warn!(error = %e, held = ids.len(), "renewing leases failed; trying again");
            }
        }
    }
}
