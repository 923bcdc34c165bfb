//! Reading entity rows.

use super::columns::{column_list, read_row};
use super::{args, Db};
use crate::entity::{EntityDef, Row, Ticks};
use crate::Result;

/// A row of a tenant; soft-deleted rows only when `include_deleted`.
pub(crate) async fn get_row(
    db: &mut impl Db,
    tenant_id: i64,
    def: &'static EntityDef,
    pk: i64,
    include_deleted: bool,
) -> Result<Option<Row>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE tenant_id = $1 AND \"{}\" = $2{}",
        column_list(def),
        def.table,
        def.pk(),
        if include_deleted {
            ""
        } else {
            " AND COALESCE(\"deleted\", 0) = 0"
        }
    );
    db.row(&sql, args![tenant_id, pk], |r| read_row(def, r))
        .await
}

/// Stores `n` contacts of `tenant` (which must exist), named `Stored 1` … `Stored n`, in one
/// statement, with no events and no deliveries: data that was there before, so that a
/// measurement can start on a database of a given size (`crmhooks bench --preload-contacts`);
/// one change at a time would take far longer than the measurement. How many were stored.
pub(crate) async fn preload_contacts(db: &mut impl Db, tenant: &str, n: i64) -> Result<u64> {
    let tenant_id = db
        .row(
            "SELECT tenant_id FROM tenant WHERE name = $1",
            args![tenant],
            |r| r.int(0),
        )
        .await?
        .ok_or(crate::StoreError::NotFound)?;
    if n <= 0 {
        return Ok(0);
    }
    db.exec(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $3) \
         INSERT INTO contact (tenant_id, name, business_idx, category_idx, country_id, \
         registered_associate_id, registered, updated_associate_id, updated, \"updatedCount\", department) \
         SELECT $1, 'Stored ' || CAST(i AS TEXT), 0, 0, 0, 1, $2, 1, $2, 0, 'Sales' FROM seq",
        args![tenant_id, crate::now_ticks(), n],
    )
    .await
}

/// Rows soft-deleted before `cutoff`, of every tenant: `(tenant_id, tenant name, pk)`.
pub(crate) async fn recycle_bin_expired(
    db: &mut impl Db,
    def: &'static EntityDef,
    cutoff: Ticks,
    limit: i64,
) -> Result<Vec<(i64, String, i64)>> {
    let sql = format!(
        "SELECT c.tenant_id, t.name, c.\"{pk}\" FROM {table} c JOIN tenant t ON t.tenant_id = c.tenant_id \
         WHERE c.\"DeletedDate\" IS NOT NULL AND c.\"DeletedDate\" < $1 AND COALESCE(c.\"deleted\", 0) <> 0 LIMIT $2",
        pk = def.pk(),
        table = def.table
    );
    db.rows(&sql, args![cutoff, limit], |r| {
        Ok((r.int(0)?, r.text(1)?, r.int(2)?))
    })
    .await
}
