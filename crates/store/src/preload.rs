//! Contacts that were there before: many rows written in one statement, with no events and no
//! deliveries, so that a measurement can start on a database of a given size
//! (`crmhooks bench --preload-contacts`). One change at a time through
//! [`Store::apply_change`](crate::Store::apply_change) would take far longer than the
//! measurement.

use sqlx::{Connection as _, Database, Executor};

use crate::{now_ticks, Result, StoreError};

/// The tenant's id.
const TENANT: &str = "SELECT tenant_id FROM tenant WHERE name = $1";

/// `$3` contacts of tenant `$1` stored at `$2`; the columns not named keep their defaults.
const INSERT: &str = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $3) \
    INSERT INTO contact (tenant_id, name, business_idx, category_idx, country_id, \
    registered_associate_id, registered, updated_associate_id, updated, \"updatedCount\", department) \
    SELECT $1, 'Stored ' || i, 0, 0, 0, 1, $2, 1, $2, 0, 'Sales' FROM seq";

/// Stores `n` contacts of `tenant` (which must exist), named `Stored 1` … `Stored n`, in the
/// database at `url`, which another process may be serving. SQLite then checkpoints its WAL and
/// PostgreSQL analyses the tables, so that neither happens during what follows.
pub async fn contacts(url: &str, tenant: &str, n: i64) -> Result<()> {
    if n <= 0 {
        return Ok(());
    }
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url)
            .await
            .map_err(StoreError::from_sqlx)?;
        // SQLite reads PostgreSQL's `$1` as `?1`.
        let sql = |s: &str| s.replace('$', "?");
        insert::<sqlx::Sqlite>(&mut conn, (&sql(TENANT), &sql(INSERT)), tenant, n).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(StoreError::from_sqlx)?;
        let _ = conn.close().await;
    } else {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(StoreError::from_sqlx)?;
        insert::<sqlx::Postgres>(&mut conn, (TENANT, INSERT), tenant, n).await?;
        let _ = sqlx::query("ANALYZE").execute(&mut conn).await;
        let _ = conn.close().await;
    }
    Ok(())
}

/// Runs the statements on either backend.
async fn insert<DB>(
    conn: &mut DB::Connection,
    (tenant_sql, insert_sql): (&str, &str),
    tenant: &str,
    n: i64,
) -> Result<()>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let tenant_id: Option<i64> = sqlx::query_scalar(tenant_sql)
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    let tenant_id = tenant_id.ok_or(StoreError::NotFound)?;
    sqlx::query(insert_sql)
        .bind(tenant_id)
        .bind(now_ticks())
        .bind(n)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}
