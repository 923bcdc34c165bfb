//! What every test of the suite shares: its database (`Ctx`), the runner the
//! `both_backends!` macro calls, and helpers to make actors, webhooks, changes and claims.

use std::collections::BTreeMap;
use std::sync::Arc;

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{
    now_ticks, open, Actor, AttemptOutcome, Change, ChangeOutcome, ChangeVerb, ClaimRequest,
    Claimed, ContactId, DeliveryFilter, DynStore, OpenOptions, Row, StoreError, TenantId, Ticks,
    Value, Verdict, Webhook, WebhookId, WebhookState, TICKS_PER_SECOND,
};
use crmhooks_testkit::postgres::{self, PgDatabase};
use crmhooks_testkit::Backend;

/// One test's database: the store, and how to open a second one on it (another node).
pub(crate) struct Ctx {
    pub(crate) store: DynStore,
    pub(crate) url: String,
    pub(crate) backend: Backend,
    /// The PostgreSQL database to drop afterwards.
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Ctx {
    /// `None` when `backend` is PostgreSQL and no server is there (the skip is recorded).
    pub(crate) async fn new(backend: Backend, test: &str) -> Option<Ctx> {
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
    pub(crate) async fn another_node(&self) -> DynStore {
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
    pub(crate) async fn second_node(&self) -> DynStore {
        match self.backend {
            Backend::Sqlite => self.store.clone(),
            Backend::Postgres => self.another_node().await,
        }
    }

    pub(crate) async fn finish(self) {
        let Ctx { store, pg, .. } = self;
        drop(store);
        if let Some(db) = pg {
            db.drop_database().await;
        }
    }
}

/// Runs one variant of a `both_backends!` test.
pub(crate) async fn run(backend: Backend, test: &str, body: impl AsyncFnOnce(&Ctx)) {
    if let Some(ctx) = Ctx::new(backend, test).await {
        body(&ctx).await;
        ctx.finish().await;
    }
}

pub(crate) const SEC: Ticks = TICKS_PER_SECOND;

pub(crate) async fn actor(store: &DynStore, tenant: &str, associate: i64) -> Actor {
    let key = format!("key-{tenant}-{associate}");
    store
        .add_api_key(tenant, associate, &key, "suite")
        .await
        .unwrap();
    store.actor_for_key(&key).await.unwrap().unwrap()
}

pub(crate) async fn hook(store: &DynStore, actor: &Actor, events: &[&str]) -> Webhook {
    hook_with(store, actor, events, WebhookState::Active, "webhook").await
}

pub(crate) async fn hook_with(
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
    w.kind = crmhooks_store::WebhookType::parse(kind).expect("a webhook type");
    let (saved, change) = store.save_webhook(actor, w).await.unwrap();
    assert!(change.is_none(), "a new webhook has no state change");
    saved
}

pub(crate) fn contact_row(name: &str) -> Row {
    let mut r = Row::empty(&CONTACT);
    r.set(&CONTACT, "name", Value::Text(name.into()));
    for c in ["business_idx", "category_idx", "country_id"] {
        r.set(&CONTACT, c, Value::Int(0));
    }
    r
}

pub(crate) async fn create(store: &DynStore, actor: &Actor, name: &str) -> (i64, ChangeOutcome) {
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

pub(crate) async fn set_department(
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
            Some(ContactId::new(pk)),
            Box::new(move |cur| {
                let mut row = cur.ok_or(StoreError::NotFound)?.clone();
                row.set(&CONTACT, "department", Value::Text(department.clone()));
                Ok(Change::Update {
                    row,
                    verb: ChangeVerb::Changed,
                })
            }),
        )
        .await
}

pub(crate) fn req(owner: &str, now: Ticks, limit: i64) -> ClaimRequest {
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

pub(crate) fn outcome(c: &Claimed, verdict: Verdict) -> AttemptOutcome {
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
pub(crate) async fn deliver_all(store: &DynStore, claimed: &[Claimed]) {
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|c| outcome(c, Verdict::Delivered))
        .collect();
    store.complete(&outcomes, now_ticks(), 9).await.unwrap();
}

/// `(primary key, event name)` of claimed deliveries, sorted.
pub(crate) fn keys(claimed: &[Claimed]) -> Vec<(i64, String)> {
    let mut v: Vec<_> = claimed
        .iter()
        .map(|c| (c.event.primary_key, c.event.event.clone()))
        .collect();
    v.sort();
    v
}

pub(crate) fn filter() -> DeliveryFilter {
    DeliveryFilter {
        limit: 1000,
        ..DeliveryFilter::default()
    }
}

pub(crate) async fn counts(store: &DynStore) -> BTreeMap<&'static str, i64> {
    store
        .delivery_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.name(), n))
        .collect()
}

/// A claim of `limit` for `owner` at `now`, at most `limit` of one webhook.
pub(crate) fn req_of(owner: &str, now: Ticks, limit: i64) -> ClaimRequest {
    ClaimRequest {
        max_per_webhook: limit,
        ..req(owner, now, limit)
    }
}

/// An intake with a fixed amount of room per webhook, keeping what it is handed.
pub(crate) struct RoomIntake {
    pub(crate) room: std::sync::Mutex<BTreeMap<WebhookId, usize>>,
    pub(crate) taken: std::sync::Mutex<Vec<Claimed>>,
    pub(crate) reserved: std::sync::atomic::AtomicUsize,
}

impl RoomIntake {
    pub(crate) fn new(room: &[(WebhookId, usize)]) -> Arc<Self> {
        Arc::new(RoomIntake {
            room: std::sync::Mutex::new(room.iter().copied().collect()),
            taken: std::sync::Mutex::new(Vec::new()),
            reserved: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub(crate) fn taken(&self) -> Vec<Claimed> {
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
    fn reserve(&self, _tenant_id: TenantId, webhook_id: WebhookId) -> bool {
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
    fn unreserve(&self, _tenant_id: TenantId, webhook_id: WebhookId) {
        *self.room.lock().unwrap().entry(webhook_id).or_default() += 1;
        self.reserved
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn take(&self, handed: Vec<Claimed>) {
        self.taken.lock().unwrap().extend(handed);
    }
}
