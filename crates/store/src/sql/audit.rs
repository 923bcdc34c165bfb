//! The audit log of management calls.

use super::{args, Db};
use crate::entity::Ticks;
use crate::keys::{AuditEntry, NewAudit};
use crate::TenantId;
use crate::{now_ticks, Result};

/// Records one management call, now.
pub(crate) async fn record(db: &mut impl Db, entry: &NewAudit) -> Result<()> {
    db.exec(
        "INSERT INTO audit (tenant_id, key_id, associate_id, at, action, target, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        args![
            entry.tenant_id,
            entry.key_id,
            entry.associate_id,
            now_ticks(),
            &entry.action,
            &entry.target,
            &entry.summary
        ],
    )
    .await?;
    Ok(())
}

/// A tenant's entries, newest first: at most `limit`, older than entry `before` when given.
pub(crate) async fn list(
    db: &mut impl Db,
    tenant_id: TenantId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    db.rows(
        "SELECT audit_id, tenant_id, key_id, associate_id, at, action, target, summary FROM audit \
         WHERE tenant_id = $1 AND audit_id < $2 ORDER BY audit_id DESC LIMIT $3",
        args![tenant_id, before.unwrap_or(i64::MAX), limit],
        |r| {
            Ok(AuditEntry {
                id: r.int(0)?,
                tenant_id: TenantId::new(r.int(1)?),
                key_id: r.opt_int(2)?,
                associate_id: r.int(3)?,
                at: r.int(4)?,
                action: r.text(5)?,
                target: r.text(6)?,
                summary: r.text(7)?,
            })
        },
    )
    .await
}

/// Removes entries older than `cutoff`; how many.
pub(crate) async fn prune(db: &mut impl Db, cutoff: Ticks) -> Result<u64> {
    db.exec("DELETE FROM audit WHERE at < $1", args![cutoff])
        .await
}
