//! Tenants and API keys.

use super::columns::read_actor;
use super::{args, Db};
use crate::model::Actor;
use crate::{hash_key, now_ticks, Result, StoreError};

/// Creates the tenant if needed and returns its id.
pub(crate) async fn ensure_tenant(db: &mut impl Db, name: &str) -> Result<i64> {
    db.exec(
        "INSERT INTO tenant (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        args![name],
    )
    .await?;
    db.row(
        "SELECT tenant_id FROM tenant WHERE name = $1",
        args![name],
        |r| r.int(0),
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("tenant {name:?} vanished")))
}

/// Stores an API key (hashed) for a tenant, creating the tenant if needed.
pub(crate) async fn add_api_key(
    db: &mut impl Db,
    tenant: &str,
    associate_id: i64,
    key: &str,
    label: &str,
) -> Result<()> {
    let tenant_id = ensure_tenant(db, tenant).await?;
    db.exec(
        "INSERT INTO api_key (key_hash, tenant_id, associate_id, label, created) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key_hash) DO UPDATE SET tenant_id = excluded.tenant_id, associate_id = excluded.associate_id, label = excluded.label",
        args![hash_key(key), tenant_id, associate_id, label, now_ticks()],
    )
    .await?;
    Ok(())
}

/// The actor an API key belongs to.
pub(crate) async fn actor_for_key(db: &mut impl Db, key: &str) -> Result<Option<Actor>> {
    db.row(
        "SELECT k.tenant_id, t.name, k.associate_id FROM api_key k JOIN tenant t ON t.tenant_id = k.tenant_id WHERE k.key_hash = $1",
        args![hash_key(key)],
        |r| read_actor(r),
    )
    .await
}

/// A tenant's name.
pub(crate) async fn tenant_name(db: &mut impl Db, tenant_id: i64) -> Result<String> {
    db.row(
        "SELECT name FROM tenant WHERE tenant_id = $1",
        args![tenant_id],
        |r| r.text(0),
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id} is missing")))
}
