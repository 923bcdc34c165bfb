//! The store suite: every test runs against SQLite (a temporary file) and PostgreSQL (a fresh
//! database per test, on the server `crmhooks_testkit::postgres` finds; the PostgreSQL variant
//! is skipped, and the skip counted, when there is none).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{
    now_ticks, open, Actor, AttemptOutcome, Change, ChangeOutcome, ClaimRequest, Claimed,
    DeliveryFilter, DeliveryStatus, DynStore, OpenOptions, ReplayRequest, ReplayStatus, Row,
    StoreError, Ticks, Value, Verdict, Webhook, WebhookState, REPLAY_BATCH, TICKS_PER_SECOND,
};
use crmhooks_testkit::postgres::{self, PgDatabase};
use crmhooks_testkit::Backend;
use sqlx::Connection as _;

/// One test's database: the store, and how to open a second one on it (another node).
struct Ctx {
    store: DynStore,
    url: String,
    backend: Backend,
    /// The PostgreSQL database to drop afterwards.
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Ctx {
    /// `None` when `backend` is PostgreSQL and no server is there (the skip is recorded).
    async fn new(backend: Backend, test: &str) -> Option<Ctx> {
        let (url, pg, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("suite.db").display());
                (url, None, Some(dir))
            }
            Backend::Postgres => {
                let admin = postgres::admin_or_skip(test).await?;
                let db = PgDatabase::create(&admin).await;
                (db.url().to_owned(), Some(db), None)
            }
        };
        let store = open(&url, &OpenOptions::default()).await.unwrap();
        Some(Ctx {
            store,
            url,
            backend,
            pg,
            _dir: dir,
        })
    }

    /// A second store on the same database, as another node would open it (on SQLite, where
    /// one process serves a file, as a short command such as `crmhooks key` opens it).
    async fn another_node(&self) -> DynStore {
        let serving = self.backend != Backend::Sqlite;
        open(
            &self.url,
            &OpenOptions {
                serving,
                ..OpenOptions::default()
            },
        )
        .await
        .unwrap()
    }

    /// Another node where the backend has them; on SQLite (one writer per file) this store.
    async fn second_node(&self) -> DynStore {
        match self.backend {
            Backend::Sqlite => self.store.clone(),
            Backend::Postgres => self.another_node().await,
        }
    }

    async fn finish(self) {
        let Ctx { store, pg, .. } = self;
        drop(store);
        if let Some(db) = pg {
            db.drop_database().await;
        }
    }
}

/// Runs one variant of a `both_backends!` test.
async fn run(backend: Backend, test: &str, body: impl AsyncFnOnce(&Ctx)) {
    if let Some(ctx) = Ctx::new(backend, test).await {
        body(&ctx).await;
        ctx.finish().await;
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        crmhooks_testkit::both_backends!(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)] crate::run => $($name),*
        );
    };
}

// Tests in files of their own (`suite/<topic>.rs`), each listing its tests with `both_backends!`.
#[path = "suite/resend.rs"]
mod resend;

both_backends!(
    tenants_and_keys,
    change_lifecycle_writes_events_and_deliveries,
    fan_out_only_to_active_subscribed_webhooks_of_the_tenant,
    tenants_are_isolated,
    claims_keep_commit_order_per_key,
    leases_expire_and_are_reclaimed,
    per_webhook_cap_and_skip_list,
    complete_applies_each_verdict,
    too_many_errors_at_the_threshold_fires_the_state_event,
    failures_in_flight_together_stop_at_the_threshold,
    gone_disables_at_once,
    replay_reports_and_queues,
    a_replay_runs_in_batches_and_shows_its_progress,
    a_large_replay_drains_without_fresh_statistics,
    changes_made_during_a_large_replay_are_not_held_back,
    prune_removes_only_finished_events,
    delete_webhook_cancels_its_deliveries,
    two_nodes_never_claim_the_same_delivery,
    listen_for_work_wakes_other_nodes,
    an_answered_change_is_claimable_at_once,
    concurrent_changes_of_one_row_lose_none,
    two_nodes_changing_the_same_contacts_in_any_order_lose_none,
    attempt_ids_stay_unique_across_stores,
    fan_out_to_many_webhooks_and_replays_keep_ids_unique,
    hands_fresh_heads_to_the_dispatcher,
);

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

// --- helpers

const SEC: Ticks = TICKS_PER_SECOND;

async fn actor(store: &DynStore, tenant: &str, associate: i64) -> Actor {
    let key = format!("key-{tenant}-{associate}");
    store
        .add_api_key(tenant, associate, &key, "suite")
        .await
        .unwrap();
    store.actor_for_key(&key).await.unwrap().unwrap()
}

async fn hook(store: &DynStore, actor: &Actor, events: &[&str]) -> Webhook {
    hook_with(store, actor, events, WebhookState::Active, "webhook").await
}

async fn hook_with(
    store: &DynStore,
    actor: &Actor,
    events: &[&str],
    state: WebhookState,
    kind: &str,
) -> Webhook {
    let mut w = Webhook::default_for(actor.tenant_id);
    w.name = format!("hook for {}", events.join(","));
    w.events = events.iter().map(|s| (*s).to_owned()).collect();
    w.target_url = "http://127.0.0.1:9/hook".into();
    w.state = state;
    w.kind = kind.into();
    let (saved, change) = store.save_webhook(actor, w).await.unwrap();
    assert!(change.is_none(), "a new webhook has no state change");
    saved
}

fn contact_row(name: &str) -> Row {
    let mut r = Row::empty(&CONTACT);
    r.set(&CONTACT, "name", Value::Text(name.into()));
    for c in ["business_idx", "category_idx", "country_id"] {
        r.set(&CONTACT, c, Value::Int(0));
    }
    r
}

async fn create(store: &DynStore, actor: &Actor, name: &str) -> (i64, ChangeOutcome) {
    let row = contact_row(name);
    let out = store
        .apply_change(
            actor,
            &CONTACT,
            None,
            Box::new(move |_| Ok(Change::Create(row.clone()))),
        )
        .await
        .unwrap();
    let pk = out
        .row
        .as_ref()
        .unwrap()
        .get(&CONTACT, "contact_id")
        .as_i64();
    (pk, out)
}

async fn set_department(
    store: &DynStore,
    actor: &Actor,
    pk: i64,
    department: &str,
) -> Result<ChangeOutcome, StoreError> {
    let department = department.to_owned();
    store
        .apply_change(
            actor,
            &CONTACT,
            Some(pk),
            Box::new(move |cur| {
                let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                row.set(&CONTACT, "department", Value::Text(department.clone()));
                Ok(Change::Update {
                    row,
                    verb: "changed",
                })
            }),
        )
        .await
}

fn req(owner: &str, now: Ticks, limit: i64) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        now,
        lease_until: now + 60 * SEC,
        limit,
        skip_webhooks: Vec::new(),
        skip_tenants: Vec::new(),
        max_per_webhook: 64,
    }
}

fn outcome(c: &Claimed, verdict: Verdict) -> AttemptOutcome {
    let ok = verdict == Verdict::Delivered;
    AttemptOutcome {
        tenant_id: c.webhook.tenant_id,
        delivery_id: c.delivery_id,
        webhook_id: c.webhook.id,
        event_id: c.event_id,
        retry: c.attempt_in_cycle,
        attempted_at: now_ticks(),
        duration_us: 1000,
        status_code: Some(if ok { 200 } else { 500 }),
        error: (!ok).then(|| "receiver answered 500".to_owned()),
        response_excerpt: (!ok).then(|| "HTTP/1.1 500 Internal Server Error".to_owned()),
        verdict,
    }
}

/// Records every claimed delivery as delivered.
async fn deliver_all(store: &DynStore, claimed: &[Claimed]) {
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|c| outcome(c, Verdict::Delivered))
        .collect();
    store.complete(&outcomes, now_ticks(), 9).await.unwrap();
}

/// `(primary key, event name)` of claimed deliveries, sorted.
fn keys(claimed: &[Claimed]) -> Vec<(i64, String)> {
    let mut v: Vec<_> = claimed
        .iter()
        .map(|c| (c.event.primary_key, c.event.event.clone()))
        .collect();
    v.sort();
    v
}

fn filter() -> DeliveryFilter {
    DeliveryFilter {
        limit: 1000,
        ..DeliveryFilter::default()
    }
}

async fn counts(store: &DynStore) -> BTreeMap<&'static str, i64> {
    store
        .delivery_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.name(), n))
        .collect()
}

// --- tests

async fn tenants_and_keys(ctx: &Ctx) {
    let s = &ctx.store;
    let a = s.ensure_tenant("Acme").await.unwrap();
    assert_eq!(s.ensure_tenant("Acme").await.unwrap(), a, "idempotent");
    let b = s.ensure_tenant("Beta").await.unwrap();
    assert_ne!(a, b);
    s.add_api_key("Acme", 7, "k1", "first").await.unwrap();
    let who = s.actor_for_key("k1").await.unwrap().unwrap();
    assert_eq!(
        who,
        Actor {
            tenant_id: a,
            tenant: "Acme".into(),
            associate_id: 7
        }
    );
    assert!(s.actor_for_key("nope").await.unwrap().is_none());
    // Re-adding a key moves it.
    s.add_api_key("Beta", 9, "k1", "moved").await.unwrap();
    let who = s.actor_for_key("k1").await.unwrap().unwrap();
    assert_eq!((who.tenant_id, who.associate_id), (b, 9));
    // A new tenant through add_api_key.
    s.add_api_key("Gamma", 1, "k2", "").await.unwrap();
    let g = s.actor_for_key("k2").await.unwrap().unwrap();
    assert_eq!(g.tenant, "Gamma");
    assert_eq!(s.ensure_tenant("Gamma").await.unwrap(), g.tenant_id);
}

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
        s.get_row(me.tenant_id, &CONTACT, pk, false).await.unwrap(),
        Some(row.clone())
    );

    // A save that changes nothing fires nothing and keeps the row.
    let same = s
        .apply_change(
            &me,
            &CONTACT,
            Some(pk),
            Box::new(|cur| {
                Ok(Change::Update {
                    row: cur.unwrap().clone(),
                    verb: "changed",
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
            Some(pk),
            Box::new(|cur| {
                let mut row = cur.unwrap().clone();
                row.set(&CONTACT, "deleted", Value::Int(1));
                row.set(&CONTACT, "DeletedDate", Value::Date(now_ticks()));
                Ok(Change::Update {
                    row,
                    verb: "softdeleted",
                })
            }),
        )
        .await
        .unwrap();
    assert_eq!(soft.committed.deliveries, 1);
    assert!(s
        .get_row(me.tenant_id, &CONTACT, pk, false)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_row(me.tenant_id, &CONTACT, pk, true)
        .await
        .unwrap()
        .is_some());
    let bin = s
        .recycle_bin_expired(&CONTACT, now_ticks() + SEC, 100)
        .await
        .unwrap();
    assert_eq!(bin, vec![(me.tenant_id, "Default".to_owned(), pk)]);
    assert!(s
        .recycle_bin_expired(&CONTACT, now_ticks() - 3600 * SEC, 100)
        .await
        .unwrap()
        .is_empty());

    // Permanent delete.
    let gone = s
        .apply_change(&me, &CONTACT, Some(pk), Box::new(|_| Ok(Change::Delete)))
        .await
        .unwrap();
    assert!(gone.row.is_none());
    assert_eq!(gone.committed.deliveries, 1);
    assert!(s
        .get_row(me.tenant_id, &CONTACT, pk, true)
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

async fn fan_out_only_to_active_subscribed_webhooks_of_the_tenant(ctx: &Ctx) {
    let s = &ctx.store;
    let a = actor(s, "A", 1).await;
    let b = actor(s, "B", 1).await;
    let both = hook(s, &a, &["contact.created", "contact.changed"]).await;
    let changed_only = hook(s, &a, &["contact.changed"]).await;
    let stopped = hook_with(
        s,
        &a,
        &["contact.created", "contact.changed"],
        WebhookState::Stopped,
        "webhook",
    )
    .await;
    let script = hook_with(
        s,
        &a,
        &["contact.created"],
        WebhookState::Active,
        "crmscript",
    )
    .await;
    let other_tenant = hook(s, &b, &["contact.created", "contact.changed"]).await;

    let (pk, created) = create(s, &a, "Acme").await;
    assert_eq!(created.committed.deliveries, 1);
    let changed = set_department(s, &a, pk, "Sales").await.unwrap();
    assert_eq!(changed.committed.deliveries, 2);
    let n = |id| {
        let s = s.clone();
        let tenant = if id == other_tenant.id {
            b.tenant_id
        } else {
            a.tenant_id
        };
        async move {
            s.list_deliveries(tenant, id, &filter())
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(n(both.id).await, 2);
    assert_eq!(n(changed_only.id).await, 1);
    assert_eq!(n(stopped.id).await, 0);
    assert_eq!(n(script.id).await, 0);
    assert_eq!(n(other_tenant.id).await, 0);
    // Tenant B's own change goes to B's webhook only.
    let (_, b_created) = create(s, &b, "Beta").await;
    assert_eq!(b_created.committed.deliveries, 1);
    assert_eq!(n(other_tenant.id).await, 1);
    assert_eq!(n(both.id).await, 2);
}

async fn tenants_are_isolated(ctx: &Ctx) {
    let s = &ctx.store;
    let a = actor(s, "A", 1).await;
    let b = actor(s, "B", 1).await;
    let h = hook(s, &a, &["contact.created"]).await;
    let (pk, _) = create(s, &a, "Acme").await;
    assert!(s
        .get_row(b.tenant_id, &CONTACT, pk, true)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        set_department(s, &b, pk, "x").await,
        Err(StoreError::NotFound)
    ));
    assert!(s.get_webhook(b.tenant_id, h.id).await.unwrap().is_none());
    assert!(s.get_webhook(a.tenant_id, h.id).await.unwrap().is_some());
    assert!(s
        .list_webhooks(b.tenant_id, &Default::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_webhooks(a.tenant_id, &Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s.webhook_usage(b.tenant_id, h.id).await.unwrap().is_none());
    assert!(s
        .list_deliveries(b.tenant_id, h.id, &filter())
        .await
        .unwrap()
        .is_empty());
    let d = s
        .list_deliveries(a.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    assert!(s
        .get_delivery(b.tenant_id, h.id, d[0].delivery_id)
        .await
        .unwrap()
        .is_none());
    let replay = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: 100,
    };
    assert!(matches!(
        s.replay(b.tenant_id, h.id, &replay).await,
        Err(StoreError::NotFound)
    ));
    let mut stolen = h.clone();
    stolen.name = "mine now".into();
    assert!(matches!(
        s.save_webhook(&b, stolen).await,
        Err(StoreError::NotFound)
    ));
    assert!(!s.delete_webhook(b.tenant_id, h.id).await.unwrap());
    assert!(s.delete_webhook(a.tenant_id, h.id).await.unwrap());
}

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
    let per = |v: &[Claimed], id: i64| v.iter().filter(|c| c.webhook.id == id).count();
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
    assert_eq!(a0[0].event_id, claimed[0].event_id.to_string());
    assert_eq!(a0[0].status_code, Some(200));
    let (d1, a1) = get(claimed[1].delivery_id).await;
    assert_eq!(d1.status, DeliveryStatus::Pending);
    assert_eq!(d1.next_attempt_at, now + SEC);
    assert_eq!(
        d1.event_id,
        claimed[1].event_id.to_string(),
        "same cycle, same EventId"
    );
    assert_eq!(a1[0].error.as_deref(), Some("receiver answered 500"));
    let (d2, _) = get(claimed[2].delivery_id).await;
    assert_eq!(d2.status, DeliveryStatus::Pending);
    assert_eq!(d2.cycles, 1);
    assert_ne!(
        d2.event_id,
        claimed[2].event_id.to_string(),
        "new cycle, new EventId"
    );
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
    assert_eq!(w[0].primary_key, h.id);
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

async fn replay_reports_and_queues(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let since = now_ticks() - SEC;
    for i in 0..3 {
        create(s, &me, &format!("c{i}")).await;
    }
    let now = now_ticks();
    let c = s.claim(&req("n1", now, 10)).await.unwrap();
    let mut outs: Vec<_> = c.iter().map(|c| outcome(c, Verdict::Delivered)).collect();
    outs.sort_by_key(|o| o.delivery_id);
    // Two delivered, one cancelled by... a Gone would disable the hook, so leave it pending.
    s.complete(&outs[..2], now, 9).await.unwrap();
    let all = |only_failed| ReplayRequest {
        since,
        until: None,
        only_failed,
        limit: 100,
    };
    let r = s.replay(me.tenant_id, h.id, &all(true)).await.unwrap();
    assert_eq!((r.matched, r.queued, r.skipped), (3, 0, 3));
    let r = s.replay(me.tenant_id, h.id, &all(false)).await.unwrap();
    assert_eq!(
        (r.matched, r.queued, r.skipped),
        (3, 2, 1),
        "delivered ones again, the pending one is skipped"
    );
    let log = s
        .list_deliveries(me.tenant_id, h.id, &filter())
        .await
        .unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log.iter().filter(|d| d.replay_of.is_some()).count(), 2);
    // A webhook added later gets the logged events it subscribes to.
    let late = hook(s, &me, &["contact.created", "contact.changed"]).await;
    let r = s.replay(me.tenant_id, late.id, &all(true)).await.unwrap();
    assert_eq!((r.matched, r.queued, r.skipped), (3, 3, 0));
    // The window and the limit apply.
    let r = s
        .replay(
            me.tenant_id,
            late.id,
            &ReplayRequest {
                since,
                until: Some(since + 1),
                only_failed: false,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.matched, 0);
    let r = s
        .replay(
            me.tenant_id,
            late.id,
            &ReplayRequest {
                limit: 2,
                ..all(false)
            },
        )
        .await
        .unwrap();
    assert_eq!((r.matched, r.skipped), (2, 2));
    assert!(matches!(
        s.replay(me.tenant_id, 999_999, &all(false)).await,
        Err(StoreError::NotFound)
    ));
}

/// A replay is a job: each batch handles at most so many events in a transaction of its own,
/// and its progress can be read between batches.
async fn a_replay_runs_in_batches_and_shows_its_progress(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    for i in 0..5 {
        create(s, &me, &format!("r{i}")).await;
    }
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: 100,
    };
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    assert_eq!(job.status, ReplayStatus::Running);
    let mut seen = Vec::new();
    let mut last = job;
    while last.status == ReplayStatus::Running {
        last = s.replay_step(last.id, 2).await.unwrap();
        let read = s
            .get_replay(me.tenant_id, h.id, last.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, last, "the progress read back is the batch's");
        seen.push(last.report.matched);
        assert!(seen.len() <= 4, "{seen:?}");
    }
    assert_eq!(seen, vec![2, 4, 5], "two events a batch");
    assert_eq!(last.status, ReplayStatus::Done);
    // The originals are still pending: all skipped, nothing queued twice.
    assert_eq!((last.report.queued, last.report.skipped), (0, 5));
    assert!(last.finished.is_some());
    // Another tenant does not see it; a webhook of another tenant cannot be replayed.
    let other = actor(s, "Other", 1).await;
    assert!(s
        .get_replay(other.tenant_id, h.id, last.id)
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        s.start_replay(other.tenant_id, h.id, &req).await,
        Err(StoreError::NotFound)
    ));
    // A job stopped halfway (its node died) is found stale, and goes on from its cursor.
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    let half = s.replay_step(job.id, 3).await.unwrap();
    assert_eq!(half.report.matched, 3);
    assert_eq!(
        s.stale_replays(now_ticks() + SEC).await.unwrap(),
        vec![job.id]
    );
    assert!(s.stale_replays(half.updated).await.unwrap().is_empty());
    let rest = s.replay_step(job.id, 100).await.unwrap();
    assert_eq!((rest.report.matched, rest.status), (5, ReplayStatus::Done));
}

/// A large replay, and the claims and records that drain it, keep their plans when the
/// database's statistics are stale: on PostgreSQL with autovacuum off (this test turns it off
/// for its tables; a queue's statistics go stale between autovacuum's runs anyway) a replay of
/// 30,000 events took minutes and a claim over nine minutes before the claim, the bookkeeping
/// and the group commit chose their plans whatever the statistics say.
async fn a_large_replay_drains_without_fresh_statistics(ctx: &Ctx) {
    const EVENTS: i64 = 20_000;
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    // Statistics taken while the tables were nearly empty, and never again: the estimates
    // say a queue of a few rows, whatever it holds by now.
    log_events(ctx, me.tenant_id, EVENTS, true).await;
    let started = std::time::Instant::now();
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: EVENTS,
    };
    let report = s.replay(me.tenant_id, h.id, &req).await.unwrap();
    let replayed = started.elapsed();
    assert_eq!(report.queued, EVENTS as u64);
    let started = std::time::Instant::now();
    // Ten events a contact: 2,000 chains. What a record hands over (the next delivery of each
    // chain it closes) is delivered next; the rest is claimed.
    let intake = RoomIntake::new(&[(h.id, EVENTS as usize)]);
    s.set_intake(Some(intake.clone()));
    let (mut delivered, mut slowest) = (0, std::time::Duration::ZERO);
    loop {
        let mut work = intake.taken();
        if work.is_empty() {
            let claiming = std::time::Instant::now();
            work = s.claim(&req_of("n1", now_ticks(), 256)).await.unwrap();
            slowest = slowest.max(claiming.elapsed());
        }
        if work.is_empty() {
            break;
        }
        delivered += work.len();
        let recording = std::time::Instant::now();
        deliver_all(s, &work).await;
        slowest = slowest.max(recording.elapsed());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "draining stalled"
        );
    }
    s.set_intake(None);
    eprintln!(
        "{:?}: replay of {EVENTS} events {replayed:?}, drained in {:?}, slowest claim or record {slowest:?}",
        ctx.backend,
        started.elapsed()
    );
    assert_eq!(delivered, EVENTS as usize);
    assert!(
        replayed < std::time::Duration::from_secs(60),
        "replay took {replayed:?}"
    );
    assert!(
        slowest < std::time::Duration::from_secs(2),
        "a claim took {slowest:?}"
    );
}

/// Writes `n` `contact.created` events of tenant `tenant` straight into the log (setup only:
/// what `n` changes of 2,000 contacts would leave). `stale_statistics` (PostgreSQL): statistics
/// of the nearly empty tables taken first, and autovacuum off for them.
async fn log_events(ctx: &Ctx, tenant: i64, n: i64, stale_statistics: bool) {
    let insert = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2) \
        INSERT INTO event (tenant_id, event, entity, primary_key, changes, field_values, changed_by, occurred) \
        SELECT $1, 'contact.created', 'contact', i % 2000, '[]', '{}', 1, $3 FROM seq";
    match ctx.backend {
        Backend::Postgres => {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
            for table in ["delivery", "event", "attempt", "replay"] {
                if !stale_statistics {
                    break;
                }
                sqlx::query(&format!(
                    "ALTER TABLE {table} SET (autovacuum_enabled = false)"
                ))
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::query(&format!("ANALYZE {table}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            sqlx::query(insert)
                .bind(tenant)
                .bind(n)
                .bind(now_ticks())
                .execute(&mut conn)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&ctx.url).await.unwrap();
            sqlx::query(&insert.replace('$', "?"))
                .bind(tenant)
                .bind(n)
                .bind(now_ticks())
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A replay job runs in batches, each a short transaction of its own: another tenant's changes
/// made while it runs wait at most about one batch, not for the whole replay (on SQLite a
/// replay once held the write gate while it inserted 100,000 rows).
async fn changes_made_during_a_large_replay_are_not_held_back(ctx: &Ctx) {
    const EVENTS: i64 = 20_000;
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let other = actor(s, "Other", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    hook(s, &other, &["contact.created"]).await;
    log_events(ctx, me.tenant_id, EVENTS, false).await;
    let req = ReplayRequest {
        since: 0,
        until: None,
        only_failed: false,
        limit: EVENTS,
    };
    let job = s.start_replay(me.tenant_id, h.id, &req).await.unwrap();
    let replaying = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (mut batches, mut slowest_batch) = (0, std::time::Duration::ZERO);
            let mut last = job;
            while last.status == ReplayStatus::Running {
                let batch = std::time::Instant::now();
                last = s.replay_step(last.id, REPLAY_BATCH).await.unwrap();
                slowest_batch = slowest_batch.max(batch.elapsed());
                batches += 1;
            }
            (last, batches, slowest_batch, started.elapsed())
        })
    };
    // The other tenant's changes, one after another, while the replay runs.
    let mut waits = Vec::new();
    while !replaying.is_finished() {
        let t = std::time::Instant::now();
        create(s, &other, "during the replay").await;
        waits.push(t.elapsed());
    }
    let (last, batches, slowest_batch, took) = replaying.await.unwrap();
    assert_eq!(last.status, ReplayStatus::Done);
    assert_eq!(last.report.queued, EVENTS as u64);
    waits.sort();
    let slowest_change = waits.last().copied().unwrap_or_default();
    eprintln!(
        "{:?}: replay of {EVENTS} events in {batches} batches, {took:?} (slowest batch {slowest_batch:?}); \
         {} changes meanwhile, median {:?}, slowest {slowest_change:?}",
        ctx.backend,
        waits.len(),
        waits[waits.len() / 2],
    );
    assert!(batches >= EVENTS / REPLAY_BATCH, "{batches} batches");
    assert!(
        waits.len() >= 5,
        "only {} changes during the replay",
        waits.len()
    );
    // A change may wait for the batch in progress (and its own commit), never for the replay.
    assert!(
        slowest_change < slowest_batch * 3 + std::time::Duration::from_millis(200)
            && slowest_change < took / 4,
        "a change waited {slowest_change:?}; batches took at most {slowest_batch:?}, the replay {took:?}"
    );
}

/// A claim of `limit` for `owner` at `now`, at most `limit` of one webhook.
fn req_of(owner: &str, now: Ticks, limit: i64) -> ClaimRequest {
    ClaimRequest {
        max_per_webhook: limit,
        ..req(owner, now, limit)
    }
}

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

async fn delete_webhook_cancels_its_deliveries(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let h = hook(s, &me, &["contact.created"]).await;
    let keep = hook(s, &me, &["contact.created"]).await;
    for i in 0..3 {
        create(s, &me, &format!("c{i}")).await;
    }
    let mut r = req("n1", now_ticks(), 1);
    r.skip_webhooks = vec![keep.id];
    assert_eq!(s.claim(&r).await.unwrap().len(), 1);
    assert!(s.delete_webhook(me.tenant_id, h.id).await.unwrap());
    assert!(!s.delete_webhook(me.tenant_id, h.id).await.unwrap());
    let c = counts(s).await;
    assert_eq!(c.get("cancelled"), Some(&3));
    assert_eq!(c.get("pending"), Some(&3));
    assert!(s.webhook_usage(me.tenant_id, h.id).await.unwrap().is_none());
    let claimed = s.claim(&req("n1", now_ticks(), 10)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|c| c.webhook.id == keep.id));
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
                            c.webhook.id,
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

/// An event goes to every one of 40 webhooks (more than one multi-row INSERT holds on
/// SQLite), and delivery ids stay unique and rising when replays (written by another
/// connection on SQLite) come between events.
async fn fan_out_to_many_webhooks_and_replays_keep_ids_unique(ctx: &Ctx) {
    let s = &ctx.store;
    let me = actor(s, "Default", 1).await;
    let since = now_ticks() - SEC;
    let mut hooks = Vec::new();
    for _ in 0..40 {
        hooks.push(hook(s, &me, &["contact.created"]).await);
    }
    let mut last = 0;
    for round in 0..3 {
        create(s, &me, &format!("c{round}")).await;
        // Everything delivered, so that the replay queues each event again.
        let claimed = s.claim(&req("n1", now_ticks(), 500)).await.unwrap();
        assert!(
            claimed.len() >= 40,
            "round {round}: claimed {}",
            claimed.len()
        );
        let mut keys: Vec<(i64, i64, i64)> = claimed
            .iter()
            .map(|c| (c.webhook.id, c.event.primary_key, c.event.seq))
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len(),
            n,
            "round {round}: one delivery per webhook and event"
        );
        deliver_all(s, &claimed).await;
        let r = s
            .replay(
                me.tenant_id,
                hooks[round].id,
                &ReplayRequest {
                    since,
                    until: None,
                    only_failed: false,
                    limit: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(r.queued, round as u64 + 1, "round {round}");
        let mut ids = Vec::new();
        for h in &hooks {
            let log = s
                .list_deliveries(me.tenant_id, h.id, &filter())
                .await
                .unwrap();
            ids.extend(log.iter().map(|d| d.delivery_id));
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "round {round}: no delivery id twice");
        assert_eq!(
            ids.iter().filter(|&&id| id > last).count(),
            40 + round + 1,
            "round {round}: the event's 40 and the replay's"
        );
        last = ids.last().copied().unwrap_or(0);
    }
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

/// Many writers, on two nodes where the backend has them, increment one row's `source` at once: each
/// change decides from the row it is given, so a store that wrote a decision made from a
/// stale row would lose increments. None is lost, every change fires its event, and the
/// events follow commit order (PostgreSQL writes optimistically and decides again when the
/// row changed under it, then falls back to the row lock; SQLite has one writer).
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
                            Some(pk),
                            Box::new(|cur| {
                                let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                                let n = row.get(&CONTACT, "source").as_i64();
                                row.set(&CONTACT, "source", Value::Int(n + 1));
                                Ok(Change::Update {
                                    row,
                                    verb: "changed",
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
            .get_row(me.tenant_id, &CONTACT, pk, true)
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
                        Some(pk),
                        Box::new(|cur| {
                            let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                            let n = row.get(&CONTACT, "source").as_i64();
                            row.set(&CONTACT, "source", Value::Int(n + 1));
                            Ok(Change::Update {
                                row,
                                verb: "changed",
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
        .get_row(me.tenant_id, &CONTACT, pk, true)
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

#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    // Nothing listens on port 1.
    match open(
        "postgres://postgres@127.0.0.1:1/nothing",
        &OpenOptions::default(),
    )
    .await
    {
        Err(StoreError::Unavailable(_)) => {}
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to port 1?"),
    }
}

// --- the hand-off at commit (SQLite: the writer thread leases fresh heads for the dispatcher)

/// An intake with a fixed amount of room per webhook, keeping what it is handed.
struct RoomIntake {
    room: std::sync::Mutex<BTreeMap<i64, usize>>,
    taken: std::sync::Mutex<Vec<Claimed>>,
    reserved: std::sync::atomic::AtomicUsize,
}

impl RoomIntake {
    fn new(room: &[(i64, usize)]) -> Arc<Self> {
        Arc::new(RoomIntake {
            room: std::sync::Mutex::new(room.iter().copied().collect()),
            taken: std::sync::Mutex::new(Vec::new()),
            reserved: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn taken(&self) -> Vec<Claimed> {
        std::mem::take(&mut *self.taken.lock().unwrap())
    }
}

impl crmhooks_store::Intake for RoomIntake {
    fn owner(&self) -> &str {
        "intake-node"
    }
    fn lease_ticks(&self) -> Ticks {
        60 * SEC
    }
    fn reserve(&self, _tenant_id: i64, webhook_id: i64) -> bool {
        let mut room = self.room.lock().unwrap();
        match room.get_mut(&webhook_id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.reserved
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }
    fn unreserve(&self, _tenant_id: i64, webhook_id: i64) {
        *self.room.lock().unwrap().entry(webhook_id).or_default() += 1;
        self.reserved
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn take(&self, handed: Vec<Claimed>) {
        self.taken.lock().unwrap().extend(handed);
    }
}

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
            .bind(next[0].delivery_id)
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

/// One process serves a SQLite file: a second serving store is refused with a message that
/// names the file and says what to do, while a short command's store opens beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_server_on_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.db");
    let url = format!("sqlite://{}", path.display());
    let first = open(&url, &OpenOptions::default()).await.unwrap();
    let second = open(&url, &OpenOptions::default()).await;
    let Err(err) = second else {
        panic!("a second serving store opened on the same file");
    };
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("in use by another crmhooks server"), "{msg}");
    assert!(
        msg.contains(&format!("process {}", std::process::id())),
        "{msg}"
    );
    let short = open(
        &url,
        &OpenOptions {
            serving: false,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let me = actor(&short, "Default", 1).await;
    assert!(first.actor_for_key("key-Default-1").await.unwrap() == Some(me));
    drop(first);
    open(&url, &OpenOptions::default())
        .await
        .expect("the file is free once its server is gone");
}

/// A missing directory is named, with what to do, once.
#[tokio::test]
async fn sqlite_a_missing_directory_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    let Err(err) = open(&url, &OpenOptions::default()).await else {
        panic!("opened a database in a directory that does not exist");
    };
    let msg = err.to_string();
    assert!(msg.contains("no/such/dir/x.db"), "{msg}");
    assert!(msg.contains("the directory"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert_eq!(msg.matches("unable to open").count(), 0, "{msg}");
}

/// A server restarted on its SQLite file takes back the leases of the process before it at
/// once (no other process can hold one), instead of waiting for them to run out; a delivery
/// that waited behind another of its chain stays behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_restarted_server_takes_back_its_leases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("restart.db").display());
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let me = actor(&s, "Default", 1).await;
    hook(&s, &me, &["contact.created", "contact.changed"]).await;
    let (c1, _) = create(&s, &me, "Acme").await;
    set_department(&s, &me, c1, "d1").await.unwrap();
    // Leased for two minutes to a node that then dies.
    let leased = s.claim(&req("dead", now_ticks(), 10)).await.unwrap();
    assert_eq!(leased.len(), 1, "the head of the chain");
    drop(s);
    let s = open(&url, &OpenOptions::default()).await.unwrap();
    let first = s.claim(&req("n2", now_ticks(), 10)).await.unwrap();
    assert_eq!(first.len(), 1, "taken back at once, not in two minutes");
    assert_eq!(first[0].delivery_id, leased[0].delivery_id);
    assert_eq!(first[0].event.event, "contact.created");
    deliver_all(&s, &first).await;
    let second = s.claim(&req("n2", now_ticks(), 10)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event.event, "contact.changed", "in order");
}

both_backends!(preloaded_contacts_are_stored_without_events);

/// `preload_contacts` writes readable contacts of the tenant asked for and refuses an unknown
/// tenant.
async fn preloaded_contacts_are_stored_without_events(ctx: &Ctx) {
    let store = &ctx.store;
    let other = store.ensure_tenant("other").await.unwrap();
    let acme = store.ensure_tenant("acme").await.unwrap();
    assert_eq!(store.preload_contacts("acme", 1_000).await.unwrap(), 1_000);
    assert_eq!(store.preload_contacts("acme", 0).await.unwrap(), 0);
    let first = store.get_row(acme, &CONTACT, 1, false).await.unwrap();
    let first = first.expect("contact 1 stored");
    assert_eq!(first.get(&CONTACT, "name"), &Value::Text("Stored 1".into()));
    assert_eq!(
        first.get(&CONTACT, "department"),
        &Value::Text("Sales".into())
    );
    let last = store.get_row(acme, &CONTACT, 1_000, false).await.unwrap();
    let last = last.expect("contact 1000 stored");
    assert_eq!(
        last.get(&CONTACT, "name"),
        &Value::Text("Stored 1000".into())
    );
    assert!(store
        .get_row(acme, &CONTACT, 1_001, false)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_row(other, &CONTACT, 1, false)
        .await
        .unwrap()
        .is_none());
    let unknown = store.preload_contacts("nobody", 5).await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
}
