//! Resending one delivery, and searching the delivery log by contact and by EventId.

use crmhooks_store::{
    now_ticks, ContactId, DeliveryFilter, DeliveryId, DeliveryStatus, StoreError, Verdict,
    WebhookId,
};

use crate::common::*;

both_backends!(
    resend_queues_a_new_cycle_of_a_closed_delivery,
    a_resent_delivery_waits_behind_its_contacts_open_deliveries,
    the_log_searches_by_primary_key_and_event_id,
);

/// A delivered delivery sent again: a new delivery of the same event with a new EventId and
/// attempt cycle, claimable at once; an open one cannot be resent; another tenant's is not found.
async fn resend_queues_a_new_cycle_of_a_closed_delivery(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let other = actor(s, "other", 1).await;
    let h = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let (pk, _) = create(s, &me, "Resent").await;
    let claimed = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let first = claimed[0].delivery_id;
    // While it is in flight it cannot be resent.
    match s.resend_delivery(me.tenant_id, h.id, first).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("still open"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    deliver_all(s, &claimed).await;
    let again = s.resend_delivery(me.tenant_id, h.id, first).await.unwrap();
    assert_ne!(again.delivery_id, first);
    assert_eq!(again.event_seq, claimed[0].event.seq);
    assert_eq!(again.primary_key, pk);
    assert_eq!(again.status, DeliveryStatus::Pending);
    assert_eq!((again.attempts, again.cycles), (0, 0));
    assert_ne!(again.event_id, claimed[0].event_id, "a new EventId");
    // A second resend while the first is open is refused.
    assert!(matches!(
        s.resend_delivery(me.tenant_id, h.id, first).await,
        Err(StoreError::Conflict(_))
    ));
    // Other tenants, other webhooks and unknown ids: not found.
    for (tenant, webhook, id) in [
        (other.tenant_id, h.id, first),
        (me.tenant_id, WebhookId::new(h.id.get() + 1000), first),
        (me.tenant_id, h.id, DeliveryId::new(first.get() + 1000)),
    ] {
        assert!(matches!(
            s.resend_delivery(tenant, webhook, id).await,
            Err(StoreError::NotFound)
        ));
    }
    let c = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].delivery_id, again.delivery_id);
    assert_eq!(c[0].attempt_in_cycle, 0);
    deliver_all(s, &c).await;
}

/// A resent delivery keeps its contact's order: it waits behind a later change of the same
/// contact that is still open, and other contacts go on.
async fn a_resent_delivery_waits_behind_its_contacts_open_deliveries(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let (pk, _) = create(s, &me, "Ordered").await;
    let c = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    deliver_all(s, &c).await;
    let created = c[0].delivery_id;
    set_department(s, &me, pk, "Sales").await.unwrap();
    let changed = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    assert_eq!(changed.len(), 1);
    // Fail its first attempt: it stays open (a retry due later).
    s.complete(
        &[outcome(
            &changed[0],
            Verdict::RetryAt(now_ticks() + 2 * SEC),
        )],
        now_ticks(),
        9,
    )
    .await
    .unwrap();
    let again = s
        .resend_delivery(me.tenant_id, h.id, created)
        .await
        .unwrap();
    let (other, _) = create(s, &me, "Other contact").await;
    let later = now_ticks() + 10 * SEC;
    let c = s.claim(&req("n1", later, 10)).await.unwrap();
    let ids: Vec<DeliveryId> = c.iter().map(|c| c.delivery_id).collect();
    assert!(
        !ids.contains(&again.delivery_id),
        "the resent one waits behind the retry of the contact's change"
    );
    assert!(ids.contains(&changed[0].delivery_id));
    assert!(c.iter().any(|c| c.event.primary_key == other));
    deliver_all(s, &c).await;
    let c = s.claim(&req("n1", later, 10)).await.unwrap();
    assert_eq!(
        c.iter().map(|c| c.delivery_id).collect::<Vec<_>>(),
        [again.delivery_id]
    );
    deliver_all(s, &c).await;
}

/// The delivery log searches by contact and by EventId, the current cycle's or an earlier's.
async fn the_log_searches_by_primary_key_and_event_id(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let (a, _) = create(s, &me, "A").await;
    let (b, _) = create(s, &me, "B").await;
    set_department(s, &me, a, "Sales").await.unwrap();
    let now = now_ticks();
    let c = s.claim(&req("n1", now, 10)).await.unwrap();
    assert_eq!(c.len(), 2, "the heads: A created, B created");
    // A's first delivery fails a whole cycle: new EventId; the old one stays in its attempts.
    let of_a = c.iter().find(|c| c.event.primary_key == a).unwrap();
    let old_event_id = of_a.event_id;
    s.complete(&[outcome(of_a, Verdict::Requeue(now))], now, 9)
        .await
        .unwrap();
    let search = |f: DeliveryFilter| {
        let s = s.clone();
        let me = me.clone();
        let hid = h.id;
        async move { s.list_deliveries(me.tenant_id, hid, &f).await.unwrap() }
    };
    let by_a = search(DeliveryFilter {
        primary_key: Some(ContactId::new(a)),
        ..filter()
    })
    .await;
    assert_eq!(by_a.len(), 2);
    assert!(by_a.iter().all(|d| d.primary_key == a));
    let by_b = search(DeliveryFilter {
        primary_key: Some(ContactId::new(b)),
        ..filter()
    })
    .await;
    assert_eq!(by_b.len(), 1);
    assert!(search(DeliveryFilter {
        primary_key: Some(ContactId::new(b + 1000)),
        ..filter()
    })
    .await
    .is_empty());
    let by_old = search(DeliveryFilter {
        event_id: Some(old_event_id),
        ..filter()
    })
    .await;
    assert_eq!(by_old.len(), 1);
    assert_eq!(by_old[0].delivery_id, of_a.delivery_id);
    assert_ne!(
        by_old[0].event_id, old_event_id,
        "found by an earlier cycle's id"
    );
    let current = by_old[0].event_id;
    let by_current = search(DeliveryFilter {
        event_id: Some(current),
        primary_key: Some(ContactId::new(a)),
        ..filter()
    })
    .await;
    assert_eq!(by_current.len(), 1);
    assert!(search(DeliveryFilter {
        event_id: Some(old_event_id),
        primary_key: Some(ContactId::new(b)),
        ..filter()
    })
    .await
    .is_empty());
    // Another tenant finds nothing of ours.
    let other = actor(s, "other", 1).await;
    let theirs = s
        .list_deliveries(
            other.tenant_id,
            h.id,
            &DeliveryFilter {
                primary_key: Some(ContactId::new(a)),
                ..filter()
            },
        )
        .await
        .unwrap();
    assert!(theirs.is_empty());
}
