//! Attempt records: verdicts, retries, the error threshold and attempt ids.

use crmhooks_store::{
    now_ticks, AttemptOutcome, DeliveryFilter, DeliveryStatus, Verdict, WebhookState,
};

use crate::common::*;

both_backends!(
    complete_applies_each_verdict,
    failures_in_flight_together_stop_at_the_threshold,
    too_many_errors_at_the_threshold_fires_the_state_event,
    gone_disables_at_once,
    attempt_ids_stay_unique_across_stores,
    renewals_beside_records_of_the_same_deliveries_fail_neither,
);

async fn complete_applies_each_verdict(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    for i in 0..3 {
        create(s, &me, &format!("c{i}")).await;
    }
    let now = now_ticks();
    let mut claimed = s.claim(&req("n1", now, 10)).await.unwrap();
    claimed.sort_by_key(|c| c.delivery_id);
    assert_eq!(claimed.len(), 3);
    let changes = s
        .complete(
            &[
                outcome(&claimed[0], Verdict::Delivered),
                outcome(&claimed[1], Verdict::RetryAt(now + SEC)),
                outcome(&claimed[2], Verdict::Requeue(now + 5 * SEC)),
            ],
            now,
            9,
        )
        .await
        .unwrap();
    assert!(changes.is_empty());
    let usage = s.webhook_usage(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(
        (
            usage.total_calls,
            usage.total_errors,
            usage.consecutive_errors
        ),
        (3, 2, 2)
    );
    assert_eq!(
        usage.last_error.as_deref(),
        Some("HTTP/1.1 500 Internal Server Error")
    );
    let get = |id| {
        let s = s.clone();
        async move {
            s.get_delivery(me.tenant_id, h.id, id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (d0, a0) = get(claimed[0].delivery_id).await;
    assert_eq!(d0.status, DeliveryStatus::Delivered);
    assert_eq!((d0.attempts, d0.cycles, d0.last_status), (1, 0, Some(200)));
    assert!(d0.completed.is_some());
    assert_eq!(a0.len(), 1);
    assert_eq!(a0[0].event_id, claimed[0].event_id);
    assert_eq!(a0[0].status_code, Some(200));
    let (d1, a1) = get(claimed[1].delivery_id).await;
    assert_eq!(d1.status, DeliveryStatus::Pending);
    assert_eq!(d1.next_attempt_at, now + SEC);
    assert_eq!(d1.event_id, claimed[1].event_id, "same cycle, same EventId");
    assert_eq!(a1[0].error.as_deref(), Some("receiver answered 500"));
    let (d2, _) = get(claimed[2].delivery_id).await;
    assert_eq!(d2.status, DeliveryStatus::Pending);
    assert_eq!(d2.cycles, 1);
    assert_ne!(d2.event_id, claimed[2].event_id, "new cycle, new EventId");
    // A success resets the consecutive errors.
    let retry = s.claim(&req("n1", now + 2 * SEC, 10)).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt_in_cycle, 1);
    s.complete(&[outcome(&retry[0], Verdict::Delivered)], now, 9)
        .await
        .unwrap();
    // The log of a success at the second attempt shows both, in order; AttemptIds are unique
    // across deliveries (SQLite keeps a first-attempt success in the delivery's row).
    let (d1, a1) = get(claimed[1].delivery_id).await;
    assert_eq!((d1.status, d1.attempts), (DeliveryStatus::Delivered, 2));
    assert_eq!(
        a1.iter()
            .map(|a| (a.retry, a.status_code))
            .collect::<Vec<_>>(),
        [(0, Some(500)), (1, Some(200))]
    );
    assert!(a1[0].attempt_id < a1[1].attempt_id);
    let (_, a0) = get(claimed[0].delivery_id).await;
    let (_, a2) = get(claimed[2].delivery_id).await;
    let mut ids: Vec<i64> = a0
        .iter()
        .chain(&a1)
        .chain(&a2)
        .map(|a| a.attempt_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four attempts, four AttemptIds");
    assert_eq!(
        (a0[0].retry, a0[0].error.as_deref(), a0[0].duration_us),
        (0, None, 1000)
    );
    let usage = s.webhook_usage(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(
        (
            usage.total_calls,
            usage.total_errors,
            usage.consecutive_errors
        ),
        (4, 2, 0)
    );
    // The delivery log filters by status, time and id.
    let delivered = s
        .list_deliveries(
            me.tenant_id,
            h.id,
            &DeliveryFilter {
                status: Some(DeliveryStatus::Delivered),
                ..filter()
            },
        )
        .await
        .unwrap();
    assert_eq!(delivered.len(), 2);
    let page = s
        .list_deliveries(
            me.tenant_id,
            h.id,
            &DeliveryFilter {
                before_id: Some(claimed[2].delivery_id),
                limit: 1,
                ..filter()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].delivery_id, claimed[1].delivery_id);
    let none = s
        .list_deliveries(
            me.tenant_id,
            h.id,
            &DeliveryFilter {
                since: Some(now_ticks() + 100 * SEC),
                ..filter()
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Attempts in flight together may all fail (many contacts, one webhook): the count of
/// consecutive errors stops at the threshold, and the webhook is disabled once.
async fn failures_in_flight_together_stop_at_the_threshold(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    for i in 0..12 {
        create(s, &me, &format!("c{i}")).await;
    }
    let now = now_ticks();
    let claimed = s.claim(&req("n1", now, 100)).await.unwrap();
    assert_eq!(claimed.len(), 12);
    let failed: Vec<AttemptOutcome> = claimed
        .iter()
        .map(|c| outcome(c, Verdict::RetryAt(now + SEC)))
        .collect();
    let changes = s.complete(&failed[..7], now, 9).await.unwrap();
    assert!(changes.is_empty());
    let changes = s.complete(&failed[7..], now, 9).await.unwrap();
    assert_eq!(changes.len(), 1, "disabled once");
    let usage = s.webhook_usage(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(usage.consecutive_errors, 9, "not 12");
    assert_eq!(usage.total_errors, 12, "every failure counted");
}

async fn too_many_errors_at_the_threshold_fires_the_state_event(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let watcher = hook(
        s,
        &me,
        &[
            &format!("webhook{}.errors", h.id),
            &format!("webhook{}.started", h.id),
        ],
    )
    .await;
    create(s, &me, "c").await;
    let mut now = now_ticks();
    for attempt in 1..=3 {
        let c = s.claim(&req("n1", now, 10)).await.unwrap();
        let mine: Vec<_> = c.iter().filter(|c| c.webhook.id == h.id).collect();
        assert_eq!(mine.len(), 1, "attempt {attempt}");
        let changes = s
            .complete(&[outcome(mine[0], Verdict::RetryAt(now))], now, 3)
            .await
            .unwrap();
        if attempt < 3 {
            assert!(changes.is_empty());
        } else {
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].from, WebhookState::Active);
            assert_eq!(changes[0].webhook.state, WebhookState::TooManyErrors);
            let reason = changes[0].reason.as_deref().unwrap();
            assert!(reason.contains(&mine[0].event_id.to_string()), "{reason}");
        }
        now += SEC;
    }
    let saved = s.get_webhook(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(saved.state, WebhookState::TooManyErrors);
    assert_eq!(saved.updated_associate_id, 0, "changed by the system");
    let usage = s.webhook_usage(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(usage.consecutive_errors, 3);
    // Its pending delivery waits; new events make none for it; the watcher got the state event.
    assert!(s
        .claim(&req("n1", now + 60 * SEC, 10))
        .await
        .unwrap()
        .iter()
        .all(|c| c.webhook.id == watcher.id));
    let (_, c) = create(s, &me, "d").await;
    assert_eq!(c.committed.deliveries, 0);
    let w = s
        .list_deliveries(me.tenant_id, watcher.id, &filter())
        .await
        .unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].event, format!("webhook{}.errors", h.id));
    assert_eq!(w[0].primary_key, h.id.get());
    let pending = s
        .list_deliveries(me.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, DeliveryStatus::Pending);
    // Started again: errors reset, `started` fired, the parked delivery flows.
    let mut again = saved.clone();
    again.state = WebhookState::Active;
    let (_, change) = s.save_webhook(&me, again).await.unwrap();
    let change = change.unwrap();
    assert_eq!(change.from, WebhookState::TooManyErrors);
    let usage = s.webhook_usage(me.tenant_id, h.id).await.unwrap().unwrap();
    assert_eq!(usage.consecutive_errors, 0);
    let w = s
        .list_deliveries(me.tenant_id, watcher.id, &filter())
        .await
        .unwrap();
    assert_eq!(w[0].event, format!("webhook{}.started", h.id));
    let flowing = s.claim(&req("n2", now + 60 * SEC, 10)).await.unwrap();
    assert!(flowing.iter().any(|c| c.webhook.id == h.id));
}

async fn gone_disables_at_once(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    create(s, &me, "c").await;
    create(s, &me, "d").await;
    let now = now_ticks();
    let c = s.claim(&req("n1", now, 1)).await.unwrap();
    let mut gone = outcome(&c[0], Verdict::Gone);
    gone.status_code = Some(410);
    let changes = s.complete(&[gone], now, 9).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].webhook.state, WebhookState::TooManyErrors);
    let (d, _) = s
        .get_delivery(me.tenant_id, h.id, c[0].delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.last_status, Some(410));
    assert!(s.claim(&req("n1", now, 10)).await.unwrap().is_empty());
    assert_eq!(
        s.next_due().await.unwrap(),
        None,
        "nothing due for a disabled webhook"
    );
}

/// AttemptIds never repeat, whether an attempt is a row of its own or kept in its delivery's
/// row (SQLite), and whichever store on the database recorded it: here two stores take turns
/// (on SQLite, as a second process on the file, or a restart, would).
async fn attempt_ids_stay_unique_across_stores(ctx: &Ctx) {
    let s = &ctx.store;
    let other = ctx.another_node().await;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let mut seen = Vec::new();
    for round in 0..4 {
        let store = if round % 2 == 0 { s } else { &other };
        create(store, &me, &format!("c{round}")).await;
        let claimed = store.claim(&req("n1", now_ticks(), 10)).await.unwrap();
        assert_eq!(claimed.len(), 1, "round {round}");
        // Odd rounds fail first and succeed at the retry: attempts of both kinds.
        if round % 2 == 1 {
            store
                .complete(
                    &[outcome(&claimed[0], Verdict::RetryAt(now_ticks()))],
                    now_ticks(),
                    9,
                )
                .await
                .unwrap();
            let retry = store
                .claim(&req("n1", now_ticks() + SEC, 10))
                .await
                .unwrap();
            assert_eq!(retry.len(), 1, "round {round} retry");
            store
                .complete(&[outcome(&retry[0], Verdict::Delivered)], now_ticks(), 9)
                .await
                .unwrap();
        } else {
            store
                .complete(&[outcome(&claimed[0], Verdict::Delivered)], now_ticks(), 9)
                .await
                .unwrap();
        }
        let (d, attempts) = s
            .get_delivery(me.tenant_id, h.id, claimed[0].delivery_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.status, DeliveryStatus::Delivered, "round {round}");
        assert_eq!(attempts.len(), 1 + round % 2, "round {round}");
        seen.extend(attempts.iter().map(|a| a.attempt_id));
    }
    assert_eq!(seen.len(), 6);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "AttemptIds rise and never repeat: {seen:?}"
    );
}

/// A node renews the leases of what it holds while its records close some of them: both lock
/// many of the same rows. On PostgreSQL they took them in different orders (the record in its
/// outcomes' order, the renewal in id order) and deadlocked; the server broke the cycle only
/// after a second by failing one, and a failed record held its deliveries' room through its
/// retries (seconds of nothing sent under load). Here records in descending id order run
/// against renewals of every lease, over and over: neither may fail.
async fn renewals_beside_records_of_the_same_deliveries_fail_neither(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.created"]).await;
    const N: usize = 240;
    let names: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    futures::future::join_all(names.iter().map(|n| create(s, &me, n))).await;
    let mut claimed = s.claim(&req_of("n1", now_ticks(), N as i64)).await.unwrap();
    assert_eq!(claimed.len(), N);
    claimed.sort_by_key(|c| std::cmp::Reverse(c.delivery_id));
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery_id).collect();
    let recording = std::sync::atomic::AtomicBool::new(true);
    let renewals = async {
        let mut n = 0;
        while recording.load(std::sync::atomic::Ordering::SeqCst) {
            let until = now_ticks() + 60 * SEC;
            if let Err(e) = s.renew_leases("n1", &ids, until).await {
                panic!("renewal {n} failed: {e}");
            }
            n += 1;
        }
        n
    };
    let records = async {
        for chunk in claimed.chunks(12) {
            let outcomes: Vec<_> = chunk
                .iter()
                .map(|c| outcome(c, Verdict::Delivered))
                .collect();
            let r = s.complete(&outcomes, now_ticks(), 9).await;
            if let Err(e) = r {
                recording.store(false, std::sync::atomic::Ordering::SeqCst);
                panic!("record failed: {e}");
            }
        }
        recording.store(false, std::sync::atomic::Ordering::SeqCst);
    };
    let started = std::time::Instant::now();
    let (renewed, ()) = tokio::join!(renewals, records);
    assert!(renewed > 0, "renewals ran beside the records");
    assert_eq!(counts(s).await.get("delivered"), Some(&(N as i64)));
    // A deadlock is broken only after PostgreSQL's deadlock_timeout (a second); twenty
    // records and their renewals take a small part of that each.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "records and renewals took {:?}",
        started.elapsed()
    );
}
