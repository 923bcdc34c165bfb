//! Claims: order per key, leases, caps, several nodes and the wake-up.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crmhooks_store::{now_ticks, Claimed, Verdict, WebhookId};
use crmhooks_testkit::Backend;

use crate::common::*;

both_backends!(
    claims_keep_commit_order_per_key,
    leases_expire_and_are_reclaimed,
    per_webhook_cap_and_skip_list,
    two_nodes_never_claim_the_same_delivery,
    listen_for_work_wakes_other_nodes,
);

async fn claims_keep_commit_order_per_key(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let (c1, _) = create(s, &me, "One").await;
    let (c2, _) = create(s, &me, "Two").await;
    let a = set_department(s, &me, c1, "a").await.unwrap();
    let b = set_department(s, &me, c1, "b").await.unwrap();
    set_department(s, &me, c2, "a").await.unwrap();
    let now = now_ticks();
    // Only the oldest pending event of each contact is eligible.
    let first = s.claim(&req("n1", now, 100)).await.unwrap();
    assert_eq!(
        keys(&first),
        vec![
            (c1, "contact.created".into()),
            (c2, "contact.created".into())
        ]
    );
    assert!(first
        .iter()
        .all(|c| c.webhook.id == h.id && c.attempt_in_cycle == 0));
    assert!(s.claim(&req("n1", now, 100)).await.unwrap().is_empty());
    // c1's first succeeds: its next event is eligible; c2's waits while its first retries.
    let c1_first = first.iter().find(|c| c.event.primary_key == c1).unwrap();
    let c2_first = first.iter().find(|c| c.event.primary_key == c2).unwrap();
    s.complete(
        &[
            outcome(c1_first, Verdict::Delivered),
            outcome(c2_first, Verdict::RetryAt(now + 2 * SEC)),
        ],
        now,
        9,
    )
    .await
    .unwrap();
    let second = s.claim(&req("n1", now, 100)).await.unwrap();
    assert_eq!(keys(&second), vec![(c1, "contact.changed".into())]);
    assert_eq!(
        Some(second[0].event.seq),
        a.committed.event_seq,
        "the first change comes first"
    );
    // The retry comes back at its time, with the same EventId and the next retry number.
    let later = s.claim(&req("n1", now + 3 * SEC, 100)).await.unwrap();
    assert_eq!(keys(&later), vec![(c2, "contact.created".into())]);
    assert_eq!(later[0].event_id, c2_first.event_id);
    assert_eq!(later[0].attempt_in_cycle, 1);
    // A failed cycle goes to the back of the queue with a new EventId, still ahead of the
    // contact's later events.
    s.complete(
        &[outcome(&later[0], Verdict::Requeue(now + 3 * SEC))],
        now + 3 * SEC,
        9,
    )
    .await
    .unwrap();
    let again = s.claim(&req("n1", now + 4 * SEC, 100)).await.unwrap();
    assert_eq!(keys(&again), vec![(c2, "contact.created".into())]);
    assert_ne!(again[0].event_id, c2_first.event_id);
    assert_eq!(again[0].attempt_in_cycle, 0);
    s.complete(
        &[
            outcome(&again[0], Verdict::Delivered),
            outcome(&second[0], Verdict::Delivered),
        ],
        now + 4 * SEC,
        9,
    )
    .await
    .unwrap();
    let rest = s.claim(&req("n1", now + 4 * SEC, 100)).await.unwrap();
    assert_eq!(
        keys(&rest),
        vec![
            (c1, "contact.changed".into()),
            (c2, "contact.changed".into())
        ]
    );
    let c1_next = rest.iter().find(|c| c.event.primary_key == c1).unwrap();
    assert_eq!(Some(c1_next.event.seq), b.committed.event_seq);
}

async fn leases_expire_and_are_reclaimed(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.created"]).await;
    create(s, &me, "One").await;
    create(s, &me, "Two").await;
    let t = now_ticks();
    let mut r = req("node-a", t, 1);
    r.lease_until = t + 10 * SEC;
    let a = s.claim(&r).await.unwrap();
    assert_eq!(a.len(), 1);
    // The earliest due time is the other pending delivery, now.
    let due = s.next_due().await.unwrap().unwrap();
    assert!(due <= now_ticks());
    let b = s.claim(&req("node-b", t + SEC, 10)).await.unwrap();
    assert_eq!(b.len(), 1, "the other delivery");
    assert_ne!(a[0].delivery_id, b[0].delivery_id);
    assert!(s
        .claim(&req("node-b", t + 5 * SEC, 10))
        .await
        .unwrap()
        .is_empty());
    // Node a died: after its lease, its delivery is claimed again, with the same EventId.
    let c = s.claim(&req("node-c", t + 11 * SEC, 10)).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].delivery_id, a[0].delivery_id);
    assert_eq!(c[0].event_id, a[0].event_id);
    // Release gives back what an owner holds.
    assert_eq!(s.release("node-b").await.unwrap(), 1);
    assert_eq!(s.release("node-b").await.unwrap(), 0);
    let d = s.claim(&req("node-d", t + 12 * SEC, 10)).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].delivery_id, b[0].delivery_id);
    assert_eq!(counts(s).await.get("inflight"), Some(&2));
}

async fn per_webhook_cap_and_skip_list(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h1 = hook(s, &me, &["contact.created"]).await;
    let h2 = hook(s, &me, &["contact.created"]).await;
    for i in 0..10 {
        create(s, &me, &format!("c{i}")).await;
    }
    let now = now_ticks();
    let mut r = req("n1", now, 100);
    r.max_per_webhook = 3;
    // One claim takes at most max_per_webhook of each webhook (the dispatcher bounds the
    // requests in flight per webhook and skips saturated ones).
    let first = s.claim(&r).await.unwrap();
    let per = |v: &[Claimed], id: WebhookId| v.iter().filter(|c| c.webhook.id == id).count();
    assert_eq!((per(&first, h1.id), per(&first, h2.id)), (3, 3));
    // The limit bounds a claim; oldest queue position first.
    let (pk, _) = create(s, &me, "late").await;
    let mut r = req("n1", now_ticks(), 1);
    r.skip_webhooks = vec![h2.id];
    let one = s.claim(&r).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].webhook.id, h1.id);
    assert_ne!(one[0].event.primary_key, pk, "older deliveries first");
    // Skipped webhooks get nothing, others proceed.
    let now = now_ticks();
    let mut r = req("n1", now, 100);
    r.skip_webhooks = vec![h1.id];
    let rest = s.claim(&r).await.unwrap();
    assert_eq!((per(&rest, h1.id), per(&rest, h2.id)), (0, 8));
    let rest = s.claim(&req("n1", now, 100)).await.unwrap();
    assert_eq!((per(&rest, h1.id), per(&rest, h2.id)), (7, 0));
    assert!(s.claim(&req("n1", now, 100)).await.unwrap().is_empty());
}

/// Two stores on one database (two nodes) claim as fast as they can while changes are made:
/// no delivery is leased twice, and each contact's events are handed out in order.
async fn two_nodes_never_claim_the_same_delivery(ctx: &Ctx) {
    let s = &ctx.store;
    // SQLite serves one node (one writer per file): there, four claimers share one store.
    let other = ctx.second_node().await;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.created", "contact.changed"]).await;
    hook(s, &me, &["contact.changed"]).await;
    const CONTACTS: usize = 20;
    const CHANGES: usize = 3;
    let mut pks = Vec::new();
    for i in 0..CONTACTS {
        pks.push(create(s, &me, &format!("c{i}")).await.0);
    }
    let writer = {
        let s = s.clone();
        let me = me.clone();
        let pks = pks.clone();
        tokio::spawn(async move {
            for round in 0..CHANGES {
                for pk in &pks {
                    set_department(&s, &me, *pk, &format!("r{round}"))
                        .await
                        .unwrap();
                }
            }
        })
    };
    let expected = CONTACTS + 2 * CONTACTS * CHANGES;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, i64, i64, i64)>::new()));
    let mut workers = Vec::new();
    for (n, store) in [s.clone(), other.clone(), s.clone(), other]
        .into_iter()
        .enumerate()
    {
        let seen = seen.clone();
        workers.push(tokio::spawn(async move {
            let owner = format!("node-{n}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.lock().unwrap().len() < expected && tokio::time::Instant::now() < deadline {
                let mut r = req(&owner, now_ticks(), 8);
                r.max_per_webhook = 1000;
                let claimed = store.claim(&r).await.unwrap();
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                {
                    let mut seen = seen.lock().unwrap();
                    for c in &claimed {
                        seen.push((
                            c.event_id.to_string(),
                            c.webhook.id.get(),
                            c.event.primary_key,
                            c.event.seq,
                        ));
                    }
                }
                let outs: Vec<_> = claimed
                    .iter()
                    .map(|c| outcome(c, Verdict::Delivered))
                    .collect();
                store.complete(&outs, now_ticks(), 9).await.unwrap();
            }
        }));
    }
    writer.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), expected, "every delivery once");
    let unique: HashSet<_> = seen.iter().map(|x| x.0.clone()).collect();
    assert_eq!(unique.len(), expected, "no EventId handed out twice");
    // Per (webhook, contact), sequence numbers were handed out increasing: in commit order.
    let mut last: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for (_, hook, pk, seq) in &seen {
        let prev = last.insert((*hook, *pk), *seq);
        assert!(
            prev.is_none_or(|p| p < *seq),
            "order broken for {pk} on {hook}"
        );
    }
    let c = counts(s).await;
    assert_eq!(c.get("delivered"), Some(&(expected as i64)));
}

async fn listen_for_work_wakes_other_nodes(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.created"]).await;
    let other = ctx.another_node().await;
    let wake = Arc::new(tokio::sync::Notify::new());
    other.listen_for_work(wake.clone()).await.unwrap();
    if ctx.backend == Backend::Sqlite {
        // One node: the dispatcher is woken in-process; nothing to listen to.
        return;
    }
    // The listener wakes once when it connects; drain that.
    let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
    create(s, &me, "c").await;
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("a commit on one node wakes the other");
    // A change with no deliveries does not.
    let me2 = actor(s, "Quiet", 1).await;
    create(s, &me2, "q").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), wake.notified())
            .await
            .is_err(),
        "no work queued, no wake-up"
    );
}
