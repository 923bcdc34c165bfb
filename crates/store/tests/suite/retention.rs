//! Retention: pruning finished events.

use crmhooks_store::{now_ticks, DeliveryStatus, Verdict};

use crate::common::*;

both_backends!(prune_removes_only_finished_events,);

async fn prune_removes_only_finished_events(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    for i in 0..4 {
        create(s, &me, &format!("c{i}")).await;
    }
    // An event nobody subscribes to is finished at once.
    let (pk, _) = create(s, &me, "x").await;
    set_department(s, &me, pk, "y").await.unwrap();
    let now = now_ticks();
    let c = s.claim(&req("n1", now, 2)).await.unwrap();
    assert_eq!(c.len(), 2);
    let outs: Vec<_> = c.iter().map(|c| outcome(c, Verdict::Delivered)).collect();
    s.complete(&outs, now, 9).await.unwrap();
    assert_eq!(
        s.prune_events(now - 3600 * SEC, 100).await.unwrap(),
        0,
        "too young"
    );
    let pruned = s.prune_events(now_ticks() + SEC, 100).await.unwrap();
    assert_eq!(pruned, 3, "two delivered + the unsubscribed change");
    let left = s
        .list_deliveries(me.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(left.len(), 3, "the pending ones and the x creation stay");
    assert!(left.iter().all(|d| d.status == DeliveryStatus::Pending));
    assert_eq!(s.prune_events(now_ticks() + SEC, 100).await.unwrap(), 0);
}
