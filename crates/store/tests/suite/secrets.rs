//! Webhook secrets and header values encrypted at rest: what the database holds (read
//! directly, bypassing the store), plain-text rows encrypted at the first start with a key, a
//! rotation, and a wrong key refused without writing anything.

use serde_json::{Map, Value as Json};
use sqlx::Connection as _;

use crate::common::*;
use crmhooks_store::{
    now_ticks, open, Actor, ClaimRequest, DynStore, Keyring, MasterKey, OpenOptions, StoreError,
    Webhook,
};
use crmhooks_testkit::postgres::{self, PgDatabase};
use crmhooks_testkit::Backend;

const SECRET: &str = "s3cret-signing-value-4711";
const HEADER: &str = "receiver-password-0815";

/// A database of one test, opened as many times as it likes with the keys it likes.
struct Db {
    url: String,
    backend: Backend,
    pg: Option<PgDatabase>,
    dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn new(backend: Backend, test: &str) -> Option<Db> {
        Some(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("secrets.db").display());
                Db {
                    url,
                    backend,
                    pg: None,
                    dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres::admin_or_skip(test).await?;
                let db = PgDatabase::create(&admin).await;
                Db {
                    url: db.url().to_owned(),
                    backend,
                    pg: Some(db),
                    dir: None,
                }
            }
        })
    }

    async fn open(&self, keys: &Keyring) -> Result<DynStore, StoreError> {
        open(
            &self.url,
            &OpenOptions {
                keyring: keys.clone(),
                ..OpenOptions::default()
            },
        )
        .await
    }

    /// `(secret, headers)` of every webhook as the database holds them.
    async fn raw(&self) -> Vec<(Option<String>, Option<String>)> {
        let q = "SELECT secret, headers FROM webhook ORDER BY webhook_id";
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(q).fetch_all(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_as(q).fetch_all(&mut c).await.unwrap()
            }
        }
    }

    /// Everything the database holds, as bytes to search: the SQLite file and its WAL; on
    /// PostgreSQL every row of the webhook table as text.
    async fn everything(&self) -> Vec<u8> {
        match (&self.dir, self.backend) {
            (Some(dir), Backend::Sqlite) => {
                let mut all = Vec::new();
                for name in ["secrets.db", "secrets.db-wal"] {
                    if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
                        all.extend(bytes);
                    }
                }
                all
            }
            _ => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let rows: Vec<(String,)> = sqlx::query_as("SELECT w::text FROM webhook w")
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                rows.into_iter().flat_map(|(t,)| t.into_bytes()).collect()
            }
        }
    }

    async fn finish(self) {
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

async fn run_db(backend: Backend, test: &str, body: impl AsyncFnOnce(&Db)) {
    if let Some(db) = Db::new(backend, test).await {
        body(&db).await;
        db.finish().await;
    }
}

macro_rules! with_db {
    ($($name:ident),* $(,)?) => {
        crmhooks_testkit::both_backends!(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)] crate::secrets::run_db => $($name),*
        );
    };
}

with_db!(
    secrets_and_header_values_are_never_stored_in_plain_text,
    plain_text_rows_are_encrypted_when_a_key_is_first_given,
    a_rotation_reencrypts_everything_under_the_new_key,
    a_wrong_master_key_names_its_key_id_and_writes_nothing,
);

fn ring(line: &str) -> Keyring {
    Keyring::parse(line).unwrap()
}

fn new_key(kid: &str) -> String {
    MasterKey::generate(kid).unwrap().1
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A signed webhook with a custom header, saved.
async fn secret_hook(store: &DynStore, a: &Actor) -> Webhook {
    let mut w = Webhook::default_for(a.tenant_id);
    w.name = "signed".into();
    w.events = vec!["contact.created".into()];
    w.target_url = "http://127.0.0.1:9/hook".into();
    w.secret = Some(SECRET.into());
    let mut h = Map::new();
    h.insert("X-Api-Key".into(), Json::String(HEADER.into()));
    w.headers = Some(h);
    store.save_webhook(a, w).await.unwrap().0
}

fn assert_plain(w: &Webhook) {
    assert_eq!(w.secret.as_deref(), Some(SECRET));
    assert_eq!(
        w.headers.as_ref().unwrap()["X-Api-Key"],
        Json::String(HEADER.into())
    );
}

/// Each stored value is `enc1:<kid>:…`, and the header's name stays readable.
fn assert_sealed_under(raw: &[(Option<String>, Option<String>)], kid: &str) {
    let prefix = format!("enc1:{kid}:");
    for (secret, headers) in raw {
        assert!(
            secret.as_deref().unwrap().starts_with(&prefix),
            "{secret:?}"
        );
        let h: Map<String, Json> = serde_json::from_str(headers.as_deref().unwrap()).unwrap();
        assert!(
            h["X-Api-Key"].as_str().unwrap().starts_with(&prefix),
            "{h:?}"
        );
    }
}

async fn secrets_and_header_values_are_never_stored_in_plain_text(db: &Db) {
    let keys = ring(&new_key("k1"));
    let store = db.open(&keys).await.unwrap();
    let a = actor(&store, "acme", 1).await;
    let saved = secret_hook(&store, &a).await;
    assert_plain(&saved);
    assert_plain(
        &store
            .get_webhook(a.tenant_id, saved.id)
            .await
            .unwrap()
            .unwrap(),
    );
    let listed = store
        .list_webhooks(a.tenant_id, &Default::default())
        .await
        .unwrap();
    assert_plain(&listed[0]);
    // The dispatcher gets the plain secret with what it claims.
    create(&store, &a, "Bob").await;
    let claimed = store
        .claim(&ClaimRequest {
            owner: "node".into(),
            now: now_ticks() + 10 * SEC,
            lease_until: now_ticks() + 60 * SEC,
            limit: 10,
            skip_webhooks: vec![],
            skip_tenants: vec![],
            max_per_webhook: 10,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_plain(&claimed[0].webhook);
    // An update writes them encrypted too.
    let mut edited = saved.clone();
    edited.name = "renamed".into();
    store.save_webhook(&a, edited).await.unwrap();
    drop(store);

    let raw = db.raw().await;
    assert_eq!(raw.len(), 1);
    assert_sealed_under(&raw, "k1");
    let everything = db.everything().await;
    assert!(!everything.is_empty());
    assert!(contains(&everything, "X-Api-Key"), "names stay readable");
    assert!(
        !contains(&everything, SECRET),
        "the secret is in the database"
    );
    assert!(
        !contains(&everything, HEADER),
        "a header value is in the database"
    );
}

async fn plain_text_rows_are_encrypted_when_a_key_is_first_given(db: &Db) {
    let store = db.open(&Keyring::empty()).await.unwrap();
    let a = actor(&store, "acme", 1).await;
    let id = secret_hook(&store, &a).await.id;
    drop(store);
    assert_eq!(
        db.raw().await[0].0.as_deref(),
        Some(SECRET),
        "written before keys"
    );

    let keys = ring(&new_key("k1"));
    let store = db.open(&keys).await.unwrap();
    assert_sealed_under(&db.raw().await, "k1");
    assert_plain(&store.get_webhook(a.tenant_id, id).await.unwrap().unwrap());
    // Idempotent: nothing left to do, nothing re-encrypted.
    let again = store.reseal_secrets(false).await.unwrap();
    assert_eq!((again.webhooks, again.sealed, again.rotated), (1, 0, 0));
}

async fn a_rotation_reencrypts_everything_under_the_new_key(db: &Db) {
    let old = new_key("k1");
    let store = db.open(&ring(&old)).await.unwrap();
    let a = actor(&store, "acme", 1).await;
    let id = secret_hook(&store, &a).await.id;
    drop(store);

    let new = new_key("k2");
    let both = ring(&format!("{new},{old}"));
    let store = db.open(&both).await.unwrap();
    let report = store.reseal_secrets(true).await.unwrap();
    assert_eq!((report.sealed, report.rotated), (0, 2));
    assert_sealed_under(&db.raw().await, "k2");
    drop(store);

    // The old key can go.
    let store = db.open(&ring(&new)).await.unwrap();
    assert_plain(&store.get_webhook(a.tenant_id, id).await.unwrap().unwrap());
    drop(store);
    // A node still on the old key alone is refused, naming the key it lacks.
    let err = db.open(&ring(&old)).await.err().expect("the old key alone");
    assert!(err.to_string().contains("\"k2\""), "{err}");
}

async fn a_wrong_master_key_names_its_key_id_and_writes_nothing(db: &Db) {
    let store = db.open(&ring(&new_key("k1"))).await.unwrap();
    let a = actor(&store, "acme", 1).await;
    secret_hook(&store, &a).await;
    drop(store);
    // A row written in plain text meanwhile (by a version without keys).
    let store = db.open(&Keyring::empty()).await.unwrap();
    secret_hook(&store, &a).await;
    drop(store);
    let before = db.raw().await;

    let err = db
        .open(&ring(&new_key("k1")))
        .await
        .err()
        .expect("another key under the same id");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Secret(_)), "{msg}");
    assert!(msg.contains("\"k1\"") && msg.contains("webhook"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
    assert_eq!(db.raw().await, before, "nothing was overwritten");
    assert_eq!(before[1].0.as_deref(), Some(SECRET), "still plain text");
}
