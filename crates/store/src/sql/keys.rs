//! Tenants and API keys.

use super::{args, Db, DbRow};
use crate::entity::Ticks;
use crate::keys::{ApiKey, Bootstrap, KeyScope, NewKey, BOOTSTRAP_NAME, TOUCH_EVERY};
use crate::model::Actor;
use crate::TenantId;
use crate::{hash_key, now_ticks, Result, StoreError};

/// The columns of a key, read by [`read_key`].
const KEY_COLUMNS: &str = "k.key_id, k.tenant_id, t.name, k.associate_id, k.name, k.scope, \
     k.created, k.last_used, k.expires, k.revoked FROM api_key k JOIN tenant t ON t.tenant_id = k.tenant_id";

fn read_key(r: &dyn DbRow) -> Result<ApiKey> {
    let scope = r.text(5)?;
    Ok(ApiKey {
        id: r.int(0)?,
        tenant_id: TenantId::new(r.int(1)?),
        tenant: r.text(2)?,
        associate_id: r.int(3)?,
        name: r.text(4)?,
        scope: KeyScope::parse(&scope)
            .ok_or_else(|| StoreError::Corrupt(format!("key scope {scope:?}")))?,
        created: r.int(6)?,
        last_used: r.opt_int(7)?,
        expires: r.opt_int(8)?,
        revoked: r.opt_int(9)?,
    })
}

/// Creates the tenant if needed and returns its id.
pub(crate) async fn ensure_tenant(db: &mut impl Db, name: &str) -> Result<TenantId> {
    db.exec(
        "INSERT INTO tenant (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        args![name],
    )
    .await?;
    db.row(
        "SELECT tenant_id FROM tenant WHERE name = $1",
        args![name],
        |r| r.int(0).map(TenantId::new),
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("tenant {name:?} vanished")))
}

/// Every tenant: `(id, name)`, by id.
pub(crate) async fn list_tenants(db: &mut impl Db) -> Result<Vec<(TenantId, String)>> {
    db.rows(
        "SELECT tenant_id, name FROM tenant ORDER BY tenant_id",
        args![],
        |r| Ok((TenantId::new(r.int(0)?), r.text(1)?)),
    )
    .await
}

/// Stores an API key (hashed) with the tenant scope, creating the tenant if needed; a key
/// stored before moves to this tenant and associate.
pub(crate) async fn add_api_key(
    db: &mut impl Db,
    tenant: &str,
    associate_id: i64,
    key: &str,
    label: &str,
) -> Result<()> {
    let tenant_id = ensure_tenant(db, tenant).await?;
    db.exec(
        "INSERT INTO api_key (key_hash, tenant_id, associate_id, name, scope, created) VALUES ($1, $2, $3, $4, 'tenant', $5) \
         ON CONFLICT (key_hash) DO UPDATE SET tenant_id = excluded.tenant_id, associate_id = excluded.associate_id, name = excluded.name",
        args![hash_key(key), tenant_id, associate_id, label, now_ticks()],
    )
    .await?;
    Ok(())
}

/// Stores a new key `key` (hashed) as `new` says, creating its tenant if needed.
pub(crate) async fn create_key(db: &mut impl Db, new: &NewKey, key: &str) -> Result<ApiKey> {
    let tenant_id = ensure_tenant(db, &new.tenant).await?;
    let id = db
        .row(
            "INSERT INTO api_key (key_hash, tenant_id, associate_id, name, scope, created, expires) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING key_id",
            args![
                hash_key(key),
                tenant_id,
                new.associate_id,
                &new.name,
                new.scope.name(),
                now_ticks(),
                new.expires
            ],
            |r| r.int(0),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the new key has no id".into()))?;
    get_key(db, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("key {id} vanished")))
}

/// One key by id.
pub(crate) async fn get_key(db: &mut impl Db, id: i64) -> Result<Option<ApiKey>> {
    db.row(
        &format!("SELECT {KEY_COLUMNS} WHERE k.key_id = $1"),
        args![id],
        read_key,
    )
    .await
}

/// The stored key `key` is, whether or not it is still valid.
pub(crate) async fn find_key(db: &mut impl Db, key: &str) -> Result<Option<ApiKey>> {
    db.row(
        &format!("SELECT {KEY_COLUMNS} WHERE k.key_hash = $1"),
        args![hash_key(key)],
        read_key,
    )
    .await
}

/// Keys of one tenant (by name), or of all; by id.
pub(crate) async fn list_keys(db: &mut impl Db, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
    match tenant {
        Some(t) => {
            db.rows(
                &format!("SELECT {KEY_COLUMNS} WHERE t.name = $1 ORDER BY k.key_id"),
                args![t],
                read_key,
            )
            .await
        }
        None => {
            db.rows(
                &format!("SELECT {KEY_COLUMNS} ORDER BY k.key_id"),
                args![],
                read_key,
            )
            .await
        }
    }
}

/// Revokes key `id` at `now` (a key revoked before keeps its time); the key, None if absent.
pub(crate) async fn revoke_key(db: &mut impl Db, id: i64, now: Ticks) -> Result<Option<ApiKey>> {
    db.exec(
        "UPDATE api_key SET revoked = $2 WHERE key_id = $1 AND revoked IS NULL",
        args![id, now],
    )
    .await?;
    get_key(db, id).await
}

/// Notes that key `id` was used at `now`, unless that was noted less than [`TOUCH_EVERY`]
/// ago. Whether it wrote.
pub(crate) async fn touch_key(db: &mut impl Db, id: i64, now: Ticks) -> Result<bool> {
    let n = db
        .exec(
            "UPDATE api_key SET last_used = $2 WHERE key_id = $1 AND (last_used IS NULL OR last_used <= $3)",
            args![id, now, now - TOUCH_EVERY],
        )
        .await?;
    Ok(n > 0)
}

/// Stores the bootstrap key (`CRMHOOKS_API_KEY`) with the admin scope for `tenant` and
/// revokes every other bootstrap key: when the variable changes, the previous key stops
/// working. A key stored before is left as it is (one revoked stays revoked).
pub(crate) async fn bootstrap_key(
    db: &mut impl Db,
    tenant: &str,
    associate_id: i64,
    key: &str,
) -> Result<Bootstrap> {
    let now = now_ticks();
    let tenant_id = ensure_tenant(db, tenant).await?;
    let hash = hash_key(key);
    db.exec(
        "INSERT INTO api_key (key_hash, tenant_id, associate_id, name, scope, created) VALUES ($1, $2, $3, $4, 'admin', $5) \
         ON CONFLICT (key_hash) DO NOTHING",
        args![&hash, tenant_id, associate_id, BOOTSTRAP_NAME, now],
    )
    .await?;
    let (id, revoked) = db
        .row(
            "SELECT key_id, revoked FROM api_key WHERE key_hash = $1",
            args![&hash],
            |r| Ok((r.int(0)?, r.opt_int(1)?)),
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("the bootstrap key vanished".into()))?;
    let revoked_others = db
        .exec(
            "UPDATE api_key SET revoked = $1 WHERE name = $2 AND key_id <> $3 AND revoked IS NULL",
            args![now, BOOTSTRAP_NAME, id],
        )
        .await?;
    Ok(Bootstrap {
        id,
        revoked: revoked.is_some(),
        revoked_others,
    })
}

/// The actor a valid (not revoked, not expired) API key belongs to.
pub(crate) async fn actor_for_key(db: &mut impl Db, key: &str) -> Result<Option<Actor>> {
    let now = now_ticks();
    Ok(find_key(db, key)
        .await?
        .filter(|k| k.valid_at(now))
        .map(|k| k.actor()))
}

/// A tenant's name.
pub(crate) async fn tenant_name(db: &mut impl Db, tenant_id: TenantId) -> Result<String> {
    db.row(
        "SELECT name FROM tenant WHERE tenant_id = $1",
        args![tenant_id],
        |r| r.text(0),
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id} is missing")))
}
