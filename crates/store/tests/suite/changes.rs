//! Contact changes: what a change writes, when it is answered, and concurrent writers.

use std::collections::HashSet;

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{
    now_ticks, Change, ChangeVerb, ContactId, DeliveryStatus, StoreError, Value, Verdict,
};

use crate::common::*;

both_backends!(
    change_lifecycle_writes_events_and_deliveries,
    an_answered_change_is_claimable_at_once,
    concurrent_changes_of_one_row_lose_none,
    two_nodes_changing_the_same_contacts_in_any_order_lose_none,
    preloaded_contacts_are_stored_without_events,
);

async fn change_lifecycle_writes_events_and_deliveries(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 5).await;
    let h = hook(
        s,
        &me,
        &[
            "contact.created",
            "contact.changed",
            "contact.softdeleted",
            "contact.deleted",
        ],
    )
    .await;
    let (pk, created) = create(s, &me, "Acme").await;
    assert!(pk > 0);
    assert_eq!(created.committed.deliveries, 1);
    let row = created.row.unwrap();
    assert_eq!(row.get(&CONTACT, "updatedCount"), &Value::Int(0));
    assert_eq!(row.get(&CONTACT, "registered_associate_id"), &Value::Int(5));
    assert_eq!(
        s.get_row(me.tenant_id, &CONTACT, ContactId::new(pk), false)
            .await
            .unwrap(),
        Some(row.clone())
    );

    // A save that changes nothing fires nothing and keeps the row.
    let same = s
        .apply_change(
            &me,
            &CONTACT,
            Some(ContactId::new(pk)),
            Box::new(|cur| {
                Ok(Change::Update {
                    row: cur.unwrap().clone(),
                    verb: ChangeVerb::Changed,
                })
            }),
        )
        .await
        .unwrap();
    assert!(same.committed.event_seq.is_none());
    assert_eq!(same.committed.deliveries, 0);
    assert_eq!(same.row.as_ref(), Some(&row));

    let changed = set_department(s, &me, pk, "Sales").await.unwrap();
    assert_eq!(changed.committed.deliveries, 1);
    let seq_changed = changed.committed.event_seq.unwrap();
    assert!(seq_changed > created.committed.event_seq.unwrap());
    let row = changed.row.unwrap();
    assert_eq!(row.get(&CONTACT, "updatedCount"), &Value::Int(1));
    assert_eq!(
        row.get(&CONTACT, "department"),
        &Value::Text("Sales".into())
    );

    // Soft delete: hidden from reads, listed in the recycle bin.
    let soft = s
        .apply_change(
            &me,
            &CONTACT,
            Some(ContactId::new(pk)),
            Box::new(|cur| {
                let mut row = cur.unwrap().clone();
                row.set(&CONTACT, "deleted", Value::Int(1));
                row.set(&CONTACT, "DeletedDate", Value::Date(now_ticks()));
                Ok(Change::Update {
                    row,
                    verb: ChangeVerb::SoftDeleted,
                })
            }),
        )
        .await
        .unwrap();
    assert_eq!(soft.committed.deliveries, 1);
    assert!(s
        .get_row(me.tenant_id, &CONTACT, ContactId::new(pk), false)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_row(me.tenant_id, &CONTACT, ContactId::new(pk), true)
        .await
        .unwrap()
        .is_some());
    let bin = s
        .recycle_bin_expired(&CONTACT, now_ticks() + SEC, 100)
        .await
        .unwrap();
    assert_eq!(
        bin,
        vec![(me.tenant_id, "Default".to_owned(), ContactId::new(pk))]
    );
    assert!(s
        .recycle_bin_expired(&CONTACT, now_ticks() - 3600 * SEC, 100)
        .await
        .unwrap()
        .is_empty());

    // Permanent delete.
    let gone = s
        .apply_change(
            &me,
            &CONTACT,
            Some(ContactId::new(pk)),
            Box::new(|_| Ok(Change::Delete)),
        )
        .await
        .unwrap();
    assert!(gone.row.is_none());
    assert_eq!(gone.committed.deliveries, 1);
    assert!(s
        .get_row(me.tenant_id, &CONTACT, ContactId::new(pk), true)
        .await
        .unwrap()
        .is_none());
    // Changing or deleting a missing row: NotFound.
    assert!(matches!(
        set_department(s, &me, pk, "x").await,
        Err(StoreError::NotFound)
    ));
    // A value too long for its column is refused, and nothing is written.
    let long = "x".repeat(220);
    let (pk2, _) = create(s, &me, "Other").await;
    assert!(matches!(
        set_department(s, &me, pk2, &long).await,
        Err(StoreError::Invalid(_))
    ));

    let log = s
        .list_deliveries(me.tenant_id, h.id, &filter())
        .await
        .unwrap();
    let events: Vec<_> = log
        .iter()
        .rev()
        .map(|d| (d.primary_key, d.event.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            (pk, "contact.created"),
            (pk, "contact.changed"),
            (pk, "contact.softdeleted"),
            (pk, "contact.deleted"),
            (pk2, "contact.created"),
        ]
    );
    assert!(log.iter().all(|d| d.status == DeliveryStatus::Pending));
    // Each event carries its row snapshot and Changes.
    let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    let first = claimed.iter().find(|c| c.event.primary_key == pk).unwrap();
    assert_eq!(first.event.event, "contact.created");
    assert_eq!(first.event.changes, CONTACT.created_changes());
    assert_eq!(first.event.changed_by, 5);
    assert_eq!(first.tenant, "Default");
    let fv = first.event.field_values().unwrap();
    assert_eq!(fv["registered_associate_id"], 5);
    assert_eq!(fv["deleted"], 0);
    assert_eq!(fv["DeletedDate"], "0001-01-01T00:00:00");
}

/// A change is answered only once it is durable, and from then on its deliveries can be
/// claimed (on SQLite the WAL fsync runs on its own thread, and a claim must not wait for a
/// later batch's fsync nor take a delivery before its own). Concurrent changes form group
/// commits of several; every one must be claimable right after its answer.
async fn an_answered_change_is_claimable_at_once(ctx: &Ctx) {
    let store = &ctx.store;
    let a = actor(store, "acme", 1).await;
    hook(store, &a, &["contact.created"]).await;
    for round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                create(&store, &a, &format!("Round {round} #{i}")).await.0
            }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        let claimed = store.claim(&req("n1", now_ticks(), 100)).await.unwrap();
        let got: HashSet<i64> = claimed.iter().map(|c| c.event.primary_key).collect();
        assert_eq!(
            got, ids,
            "round {round}: every answered change is claimable"
        );
        deliver_all(store, &claimed).await;
    }
}

/// Many writers, on two nodes where the backend has them, increment one row's `source` at once: each
/// change decides from the row it is given, so a store that wrote a decision made from a
/// stale row would lose increments. None is lost, every change fires its event, and the
/// events follow commit order (PostgreSQL writes optimistically and decides again when the
/// row changed under it, then falls back to the row lock; SQLite has one writer).
async fn concurrent_changes_of_one_row_lose_none(ctx: &Ctx) {
    let s = &ctx.store;
    let other = ctx.second_node().await;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.changed"]).await;
    let (pk, _) = create(s, &me, "Counter").await;
    const TASKS: usize = 12;
    const EACH: usize = 5;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { s.clone() } else { other.clone() };
        let me = me.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                store
                    .apply_change(
                        &me,
                        &CONTACT,
                        Some(ContactId::new(pk)),
                        Box::new(|cur| {
                            let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                            let n = row.get(&CONTACT, "source").as_i64();
                            row.set(&CONTACT, "source", Value::Int(n + 1));
                            Ok(Change::Update {
                                row,
                                verb: ChangeVerb::Changed,
                            })
                        }),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = TASKS * EACH;
    let row = s
        .get_row(me.tenant_id, &CONTACT, ContactId::new(pk), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.get(&CONTACT, "source").as_i64(),
        total as i64,
        "an increment was lost"
    );
    // The events, one at a time (per-contact order), carry 1, 2, … in sequence order.
    let mut last_seq = 0;
    for expected in 1..=total {
        let claimed = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
        assert_eq!(claimed.len(), 1, "one event of the contact at a time");
        let c = &claimed[0];
        assert!(c.event.seq > last_seq, "events out of commit order");
        last_seq = c.event.seq;
        let source = c
            .event
            .field_values()
            .and_then(|f| f.get("source").cloned());
        assert_eq!(
            source,
            Some(serde_json::Value::from(expected)),
            "event {expected} carries the wrong value"
        );
        s.complete(&[outcome(c, Verdict::Delivered)], now_ticks(), 9)
            .await
            .unwrap();
    }
    assert!(s
        .claim(&req("n1", now_ticks(), 10))
        .await
        .unwrap()
        .is_empty());
}

/// Two nodes change the same contacts at once, each task going through them in another order:
/// every change counts, nothing deadlocks (PostgreSQL's group commits lock their rows in key
/// order), and each contact's events follow its commit order.
async fn two_nodes_changing_the_same_contacts_in_any_order_lose_none(ctx: &Ctx) {
    let s = &ctx.store;
    let other = ctx.second_node().await;
    let me = actor(s, "Default", 1).await;
    hook(s, &me, &["contact.changed"]).await;
    let mut pks = Vec::new();
    for i in 0..4 {
        pks.push(create(s, &me, &format!("Shared {i}")).await.0);
    }
    const TASKS: usize = 8;
    const ROUNDS: usize = 4;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { s.clone() } else { other.clone() };
        let me = me.clone();
        let mut order = pks.clone();
        if t % 4 >= 2 {
            order.reverse();
        }
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                for &pk in &order {
                    store
                        .apply_change(
                            &me,
                            &CONTACT,
                            Some(ContactId::new(pk)),
                            Box::new(|cur| {
                                let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                                let n = row.get(&CONTACT, "source").as_i64();
                                row.set(&CONTACT, "source", Value::Int(n + 1));
                                Ok(Change::Update {
                                    row,
                                    verb: ChangeVerb::Changed,
                                })
                            }),
                        )
                        .await
                        .unwrap();
                }
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("the changes finished (no deadlock)");
    for &pk in &pks {
        let row = s
            .get_row(me.tenant_id, &CONTACT, ContactId::new(pk), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.get(&CONTACT, "source").as_i64(),
            (TASKS * ROUNDS) as i64,
            "an increment of contact {pk} was lost"
        );
    }
    // Per contact, the events carry 1, 2, … in sequence order.
    let mut seen: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    loop {
        let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for c in &claimed {
            let source = c
                .event
                .field_values()
                .and_then(|f| f.get("source").and_then(|v| v.as_i64()))
                .unwrap_or(-1);
            let last = seen.entry(c.event.primary_key).or_insert(0);
            assert_eq!(
                source,
                *last + 1,
                "contact {} out of order",
                c.event.primary_key
            );
            *last = source;
        }
        deliver_all(s, &claimed).await;
    }
    assert!(
        seen.values().all(|&n| n == (TASKS * ROUNDS) as i64),
        "{seen:?}"
    );
}

/// `preload_contacts` writes readable contacts of the tenant asked for and refuses an unknown
/// tenant.
async fn preloaded_contacts_are_stored_without_events(ctx: &Ctx) {
    let store = &ctx.store;
    let other = store.ensure_tenant("other").await.unwrap();
    let acme = store.ensure_tenant("acme").await.unwrap();
    assert_eq!(store.preload_contacts("acme", 1_000).await.unwrap(), 1_000);
    assert_eq!(store.preload_contacts("acme", 0).await.unwrap(), 0);
    let first = store
        .get_row(acme, &CONTACT, ContactId::new(1), false)
        .await
        .unwrap();
    let first = first.expect("contact 1 stored");
    assert_eq!(first.get(&CONTACT, "name"), &Value::Text("Stored 1".into()));
    assert_eq!(
        first.get(&CONTACT, "department"),
        &Value::Text("Sales".into())
    );
    let last = store
        .get_row(acme, &CONTACT, ContactId::new(1_000), false)
        .await
        .unwrap();
    let last = last.expect("contact 1000 stored");
    assert_eq!(
        last.get(&CONTACT, "name"),
        &Value::Text("Stored 1000".into())
    );
    assert!(store
        .get_row(acme, &CONTACT, ContactId::new(1_001), false)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_row(other, &CONTACT, ContactId::new(1), false)
        .await
        .unwrap()
        .is_none());
    let unknown = store.preload_contacts("nobody", 5).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
}
