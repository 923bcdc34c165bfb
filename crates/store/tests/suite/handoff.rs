//! The hand-off at commit (SQLite: the writer thread leases fresh heads for the dispatcher),
//! and the chains that wait in memory behind a delivery in flight.

use std::sync::Arc;
use std::time::Duration;

use crmhooks_store::{
    now_ticks, open, Actor, Claimed, DeliveryFilter, DeliveryStatus, DynStore, OpenOptions, Verdict,
};
use crmhooks_testkit::Backend;
use sqlx::Connection as _;

use crate::common::*;

both_backends!(hands_fresh_heads_to_the_dispatcher,);

/// When a delivery is recorded delivered, the next one of its chain (a later event of the same
/// contact that waited behind it) goes to the dispatcher with that bookkeeping, leased, when
/// there is room: no claim round trip for it. Without room it is marked ready and claimed. A
/// failed attempt keeps the chain closed, so nothing behind it moves.
#[tokio::test]
async fn sqlite_hands_the_next_delivery_of_a_chain_when_one_is_recorded() {
    let ctx = Ctx::new(Backend::Sqlite, "sqlite").await.unwrap();
    let s = &ctx.store;
    let me = actor(s, "Default", 7).await;
    let h1 = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let intake = RoomIntake::new(&[(h1.id, 2)]);
    s.set_intake(Some(intake.clone()));

    let (c1, _) = create(s, &me, "One").await;
    let head = intake.taken();
    assert_eq!(keys(&head), vec![(c1, "contact.created".into())]);
    let first = set_department(s, &me, c1, "d1").await.unwrap();
    let second = set_department(s, &me, c1, "d2").await.unwrap();
    assert_eq!((first.committed.handed, second.committed.handed), (0, 0));
    assert!(intake.taken().is_empty(), "behind an open delivery");

    // The created event is delivered: the first change is handed with that commit.
    s.complete(&[outcome(&head[0], Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let next = intake.taken();
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(next[0].event.seq), first.committed.event_seq);
    assert_eq!((next[0].webhook.id, next[0].attempt_in_cycle), (h1.id, 0));
    assert_eq!(next[0].tenant, "Default");
    assert_eq!(intake.reserved.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Leased to the intake's node, so no claim takes it, nor the second change behind it.
    let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert!(claimed.is_empty(), "{:?}", keys(&claimed));

    // It fails: the chain stays closed, nothing is handed, nothing is claimable now.
    s.complete(
        &[outcome(
            &next[0],
            Verdict::RetryAt(now_ticks() + 3600 * SEC),
        )],
        now_ticks(),
        9,
    )
    .await
    .unwrap();
    assert!(intake.taken().is_empty());
    assert!(s
        .claim(&req("n1", now_ticks(), 100))
        .await
        .unwrap()
        .is_empty());
    // Nothing is due before the retry either: the second change, written before it, waits
    // behind it and does not count (a dispatcher asking would otherwise wake for nothing).
    let due = s
        .next_due()
        .await
        .unwrap()
        .expect("the retry is due some time");
    assert!(
        due > now_ticks() + 3000 * SEC,
        "due {due}, now {}",
        now_ticks()
    );
    // Its retry comes (claimed by the clock) and succeeds; the intake has no room left, so
    // the second change is marked ready and claimed, with its own event.
    let retry = s
        .claim(&req("n1", now_ticks() + 3601 * SEC, 100))
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].delivery_id, next[0].delivery_id);
    s.complete(&[outcome(&retry[0], Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    assert!(intake.taken().is_empty(), "no room: nothing handed");
    let last = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(keys(&last), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(last[0].event.seq), second.committed.event_seq);
    ctx.finish().await;
}

/// A next head whose own change is not durable yet (its group commit's fsync still running)
/// is leased by the record that closes the delivery before it, and handed over only once that
/// fsync is done: never announced before it is on disk, and not left to a claim either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hands_a_next_head_over_after_its_fsync() {
    const DELAY: Duration = Duration::from_millis(600);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slow.db").display());
    let s = open(
        &url,
        &OpenOptions {
            sync_delay: DELAY,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let me = actor(&s, "Default", 7).await;
    let h1 = hook(&s, &me, &["contact.created", "contact.changed"]).await;
    let intake = RoomIntake::new(&[(h1.id, 4)]);
    s.set_intake(Some(intake.clone()));
    let (c1, _) = create(&s, &me, "One").await;
    let head = intake.taken();
    assert_eq!(keys(&head), vec![(c1, "contact.created".into())]);

    // A change commits behind the open head; its answer waits for the slow fsync.
    let change = {
        let (s, me) = (s.clone(), me.clone());
        tokio::spawn(async move { set_department(&s, &me, c1, "d1").await })
    };
    tokio::time::sleep(DELAY / 4).await;
    assert!(!change.is_finished(), "answered before its fsync");
    // The head is recorded meanwhile: the change's delivery is next, not durable yet.
    s.complete(&[outcome(&head[0], Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    assert!(
        intake.taken().is_empty(),
        "a next head was handed over before its change was durable"
    );
    assert!(
        s.claim(&req("n1", now_ticks(), 100))
            .await
            .unwrap()
            .is_empty(),
        "leased to this node's dispatcher, so no claim takes it"
    );
    let changed = change.await.unwrap().unwrap();
    let mut next = Vec::new();
    for _ in 0..200 {
        next = intake.taken();
        if !next.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(next[0].event.seq), changed.committed.event_seq);
    assert_eq!(next[0].webhook.id, h1.id);
    drop(s);
}

/// A fresh delivery that heads its chain goes to the dispatcher at commit, leased to it and
/// with the same event a claim would read; one behind an open delivery of the same contact,
/// or one the intake has no room for, waits for a claim. A handed delivery whose node died
/// is claimed again after its lease, like any other. (PostgreSQL asks for the room after the
/// commit: c3's delivery to h1 is written leased, then given back to the queue.)
async fn hands_fresh_heads_to_the_dispatcher(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 7).await;
    let h1 = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let h2 = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let intake = RoomIntake::new(&[(h1.id, 2)]);
    s.set_intake(Some(intake.clone()));

    // c1: h1 has room, h2 has none.
    let (c1, out) = create(s, &me, "One").await;
    assert_eq!(
        (out.committed.deliveries, out.committed.handed),
        (2, 1),
        "one of two handed"
    );
    let handed = intake.taken();
    assert_eq!(handed.len(), 1, "handed before the change is answered");
    let first = &handed[0];
    assert_eq!(
        (
            first.webhook.id,
            first.event.primary_key,
            first.attempt_in_cycle
        ),
        (h1.id, c1, 0)
    );
    assert_eq!(first.tenant, "Default");
    assert_eq!(first.webhook.name, h1.name);
    // h1's delivery is leased to the intake's node: a claim finds only h2's, whose event is
    // the very same as the handed one (so are the payloads built from them).
    let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].webhook.id, h2.id);
    assert_eq!(*claimed[0].event, *first.event);
    assert_eq!(
        claimed[0].event.field_values_json, first.event.field_values_json,
        "FieldValues in the same order"
    );
    assert_eq!(claimed[0].event.changed_by, 7);

    // c1 changed: its created deliveries are open, so nothing is handed (h1 still has room).
    let changed = set_department(s, &me, c1, "d").await.unwrap();
    assert_eq!(
        (changed.committed.deliveries, changed.committed.handed),
        (2, 0)
    );
    assert!(intake.taken().is_empty());
    // c2 takes h1's last room; c3 finds none.
    let (c2, out2) = create(s, &me, "Two").await;
    let (c3, out3) = create(s, &me, "Three").await;
    assert_eq!((out2.committed.handed, out3.committed.handed), (1, 0));
    let handed2 = intake.taken();
    assert_eq!(keys(&handed2), vec![(c2, "contact.created".into())]);
    assert_eq!(intake.reserved.load(std::sync::atomic::Ordering::SeqCst), 2);
    let claimed2 = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    let mut got: Vec<_> = claimed2
        .iter()
        .map(|c| (c.webhook.id, c.event.primary_key))
        .collect();
    got.sort();
    assert_eq!(got, vec![(h1.id, c3), (h2.id, c2), (h2.id, c3)]);

    // The intake's node records c1's handed delivery: c1's change to h1 is next, by claim.
    s.complete(&[outcome(first, Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let next = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert_eq!(next[0].webhook.id, h1.id);
    assert_eq!(Some(next[0].event.seq), changed.committed.event_seq);

    // The intake's node dies holding c2's delivery: after the lease it is claimed again,
    // with the same EventId.
    let later = now_ticks() + 61 * SEC;
    let again = s.claim(&req("n2", later, 100)).await.unwrap();
    let c2_again: Vec<_> = again
        .iter()
        .filter(|c| c.delivery_id == handed2[0].delivery_id)
        .collect();
    assert_eq!(c2_again.len(), 1, "the handed delivery's lease ran out");
    assert_eq!(c2_again[0].event_id, handed2[0].event_id);

    // Without an intake nothing is handed.
    s.set_intake(None);
    let (_, out4) = create(s, &me, "Four").await;
    assert_eq!((out4.committed.deliveries, out4.committed.handed), (2, 0));
}

/// A contact created while an intake with room for ten takes the deliveries of the one webhook
/// (subscribed to created and changed): the actor, the intake, the contact and its created
/// delivery, handed at its commit.
async fn handed_contact(s: &DynStore) -> (Actor, Arc<RoomIntake>, i64, Claimed) {
    let me = actor(s, "Default", 7).await;
    let h1 = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let intake = RoomIntake::new(&[(h1.id, 10)]);
    s.set_intake(Some(intake.clone()));
    let (c1, _) = create(s, &me, "One").await;
    let mut head = intake.taken();
    assert_eq!(keys(&head), vec![(c1, "contact.created".into())]);
    (me, intake, c1, head.remove(0))
}

/// Later changes of a contact whose delivery is in flight wait for it in memory, written
/// leased to this node (no query finds them when it closes). When the node dies, their leases
/// run out like the others', and order holds: a claim takes the one in front, and the one
/// behind it only once that one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deliveries_waiting_in_memory_keep_their_order_when_the_node_dies() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("chain.db").display());
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let (me, intake, c1, head) = handed_contact(&s).await;
    let first = set_department(&s, &me, c1, "d1").await.unwrap();
    let second = set_department(&s, &me, c1, "d2").await.unwrap();
    assert_eq!((first.committed.handed, second.committed.handed), (0, 0));
    assert!(intake.taken().is_empty(), "behind an open delivery");
    assert!(
        s.claim(&req("n1", now_ticks(), 100))
            .await
            .unwrap()
            .is_empty(),
        "leased to the intake's node while they wait"
    );
    // The log shows them pending (they wait), the head in flight.
    let log = s
        .list_deliveries(me.tenant_id, head.webhook.id, &filter())
        .await
        .unwrap();
    let statuses: Vec<DeliveryStatus> = log.iter().rev().map(|d| d.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::InFlight,
            DeliveryStatus::Pending,
            DeliveryStatus::Pending
        ]
    );
    let pending = DeliveryFilter {
        status: Some(DeliveryStatus::Pending),
        ..filter()
    };
    assert_eq!(
        s.list_deliveries(me.tenant_id, head.webhook.id, &pending)
            .await
            .unwrap()
            .len(),
        2
    );
    let by_status = counts(&s).await;
    assert_eq!(
        (by_status.get("pending"), by_status.get("inflight")),
        (Some(&2), Some(&1)),
        "{by_status:?}"
    );
    // The head is recorded: the first change goes out, the second waits behind it.
    s.complete(&[outcome(&head, Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let next = intake.taken();
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(next[0].event.seq), first.committed.event_seq);
    assert_eq!(
        (next[0].webhook.id, next[0].tenant.as_str()),
        (head.webhook.id, "Default")
    );

    // The node dies (no release) with the first change in flight: another node, after the
    // leases ran out, takes the first change only.
    drop(s);
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let later = now_ticks() + 61 * SEC;
    let again = s.claim(&req("n2", later, 100)).await.unwrap();
    assert_eq!(
        again.iter().map(|c| c.delivery_id).collect::<Vec<_>>(),
        vec![next[0].delivery_id],
        "the second change overtook the first"
    );
    assert_eq!(again[0].event_id, next[0].event_id);
    // The second went back to the queue with that claim, pending behind the first: later
    // claims do not walk past it while the first is open.
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (status, ready): (i64, i64) = sqlx::query_as(
        "SELECT d.status, d.ready FROM delivery d JOIN event e ON e.event_seq = d.event_seq \
         WHERE e.event_seq = ?",
    )
    .bind(second.committed.event_seq)
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!((status, ready), (0, 0), "pending, not a head");
    drop(raw);
    s.complete(&[outcome(&again[0], Verdict::Delivered)], later, 9)
        .await
        .unwrap();
    let last = s.claim(&req("n2", later, 100)).await.unwrap();
    assert_eq!(keys(&last), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(last[0].event.seq), second.committed.event_seq);
    s.complete(&[outcome(&last[0], Verdict::Delivered)], later, 9)
        .await
        .unwrap();
    assert!(s.claim(&req("n2", later, 100)).await.unwrap().is_empty());
    drop(s);
}

/// A node that stops gives its leases back: a delivery it was sending after it waited in
/// memory becomes a pending head (claimable at once), and one still waiting behind it stays
/// behind it. Nothing is handed from memory after that.
#[tokio::test]
async fn sqlite_release_returns_deliveries_handed_from_memory_in_order() {
    let ctx = Ctx::new(Backend::Sqlite, "sqlite").await.unwrap();
    let s = &ctx.store;
    let (me, intake, c1, head) = handed_contact(s).await;
    let first = set_department(s, &me, c1, "d1").await.unwrap();
    let second = set_department(s, &me, c1, "d2").await.unwrap();
    s.complete(&[outcome(&head, Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let sending = intake.taken();
    assert_eq!(keys(&sending), vec![(c1, "contact.changed".into())]);

    assert_eq!(
        s.release("intake-node").await.unwrap(),
        2,
        "in flight and waiting"
    );
    let claimed = s.claim(&req("n1", now_ticks(), 100)).await.unwrap();
    assert_eq!(keys(&claimed), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(claimed[0].event.seq), first.committed.event_seq);
    assert_eq!(claimed[0].delivery_id, sending[0].delivery_id);
    // Its record hands nothing from memory (forgotten): the second change is next by claim.
    s.complete(&[outcome(&claimed[0], Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let last: Vec<Claimed> = intake
        .taken()
        .into_iter()
        .chain(s.claim(&req("n1", now_ticks(), 100)).await.unwrap())
        .collect();
    assert_eq!(keys(&last), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(last[0].event.seq), second.committed.event_seq);
    ctx.finish().await;
}

/// A delivery waiting in memory whose lease runs out before the one in front closes (a
/// receiver slower than the lease) goes back to the queue at the next claim and is forgotten
/// in memory: the record of the one in front then leases it the database's way, so it is never
/// sent while the database says it is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_waiting_delivery_whose_lease_ran_out_is_leased_again_before_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("slow.db").display());
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let (me, intake, c1, head) = handed_contact(&s).await;
    let changed = set_department(&s, &me, c1, "d1").await.unwrap();
    assert!(intake.taken().is_empty(), "behind an open delivery");

    // Past both leases another node claims the head again (the change stays behind it).
    let later = now_ticks() + 61 * SEC;
    let again = s.claim(&req("n2", later, 100)).await.unwrap();
    assert_eq!(
        again.iter().map(|c| c.delivery_id).collect::<Vec<_>>(),
        vec![head.delivery_id]
    );
    // The head is recorded: the change goes out, leased again first.
    s.complete(&[outcome(&head, Verdict::Delivered)], now_ticks(), 9)
        .await
        .unwrap();
    let next = intake.taken();
    assert_eq!(keys(&next), vec![(c1, "contact.changed".into())]);
    assert_eq!(Some(next[0].event.seq), changed.committed.event_seq);
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (status, owner): (i64, Option<String>) =
        sqlx::query_as("SELECT status, lease_owner FROM delivery WHERE delivery_id = ?")
            .bind(next[0].delivery_id.get())
            .fetch_one(&mut raw)
            .await
            .unwrap();
    assert_eq!(
        (status, owner.as_deref()),
        (1, Some("intake-node")),
        "sent while the database said pending"
    );
    drop(raw);
    drop(s);
}
