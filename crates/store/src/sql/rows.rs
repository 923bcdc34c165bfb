//! Reading entity rows.

use super::columns::{column_list, read_row};
use super::{args, Db, Query};
use crate::entity::{ColumnKind, EntityDef, Row, Ticks};
use crate::query::{RowFilter, RowQuery};
use crate::TenantId;
use crate::{ContactId, Result, StoreError};

/// A row of a tenant; soft-deleted rows only when `include_deleted`.
pub(crate) async fn get_row(
    db: &mut impl Db,
    tenant_id: TenantId,
    def: &'static EntityDef,
    pk: ContactId,
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
) -> Result<Vec<(TenantId, String, ContactId)>> {
    let sql = format!(
        "SELECT c.tenant_id, t.name, c.\"{pk}\" FROM {table} c JOIN tenant t ON t.tenant_id = c.tenant_id \
         WHERE c.\"DeletedDate\" IS NOT NULL AND c.\"DeletedDate\" < $1 AND COALESCE(c.\"deleted\", 0) <> 0 LIMIT $2",
        pk = def.pk(),
        table = def.table
    );
    db.rows(&sql, args![cutoff, limit], |r| {
        Ok((
            TenantId::new(r.int(0)?),
            r.text(1)?,
            ContactId::new(r.int(2)?),
        ))
    })
    .await
}

/// `column` of `def` quoted for SQL, if `def` has it and it is of the `kind` asked for.
fn column_of(def: &EntityDef, column: &str, kind: fn(&ColumnKind) -> bool) -> Result<String> {
    match def.index(column) {
        Some(i) if kind(&def.columns[i].kind) => Ok(format!("\"{column}\"")),
        _ => Err(StoreError::Invalid(crate::FieldError {
            field: column.to_owned(),
            message: "is not a column of this kind to list by".to_owned(),
        })),
    }
}

/// Rows of a tenant that are not soft-deleted, filtered, ordered and paged by `query`.
pub(crate) async fn list(
    db: &mut impl Db,
    tenant_id: TenantId,
    def: &'static EntityDef,
    query: &RowQuery,
) -> Result<Vec<Row>> {
    let any = |_: &ColumnKind| true;
    let text = |k: &ColumnKind| matches!(k, ColumnKind::Text { .. });
    let date = |k: &ColumnKind| matches!(k, ColumnKind::Date);
    let mut q = Query::new(format!(
        "SELECT {} FROM {} WHERE tenant_id = ",
        column_list(def),
        def.table
    ));
    q.bind(tenant_id).push(" AND COALESCE(\"deleted\", 0) = 0");
    for f in &query.filters {
        match f {
            // LOWER on both sides: the same folding applies to the column and the prefix
            // (ASCII letters on SQLite, all letters on PostgreSQL); substr counts characters
            // on both.
            RowFilter::Begins { column, prefix } => {
                let col = column_of(def, column, text)?;
                q.push(&format!(" AND LOWER(substr({col}, 1, CAST("))
                    .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
                    .push(" AS INTEGER))) = LOWER(")
                    .bind(prefix.as_str())
                    .push(")");
            }
            RowFilter::After { column, at } => {
                let col = column_of(def, column, date)?;
                q.push(&format!(" AND {col} > ")).bind(*at);
            }
            RowFilter::Greater { column, than } => {
                let col = column_of(def, column, any)?;
                q.push(&format!(" AND {col} > ")).bind(*than);
            }
        }
    }
    let mut order = Vec::with_capacity(query.order.len() + 1);
    for (column, desc) in &query.order {
        let col = column_of(def, column, any)?;
        let dir = if *desc { "DESC" } else { "ASC" };
        // Text sorts without regard to case first (as SuperOffice's SQL Server collation
        // does), then by its bytes, so both backends give the same order for ASCII text
        // whatever the PostgreSQL database's collation.
        if column_of(def, column, text).is_ok() {
            order.push(format!("LOWER({col}) {dir}"));
        }
        order.push(format!("{col} {dir}"));
    }
    order.push(format!("\"{}\" ASC", def.pk()));
    q.push(&format!(" ORDER BY {} LIMIT ", order.join(", ")))
        .bind(query.top)
        .push(" OFFSET ")
        .bind(query.skip);
    db.rows(&q.sql, q.args, |r| read_row(def, r)).await
}
