//! Contacts that were there before: many rows written in one statement, with no events and no
//! deliveries, so that a measurement can start on a database of a given size
//! (`crmhooks bench --preload-contacts`). One change at a time through
//! [`Store::apply_change`](crate::Store::apply_change) would take far longer than the
//! measurement.

use sqlx::Connection as _;

use crate::{now_ticks, Result, StoreError};

/// The columns each stored contact sets; the others keep their defaults.
const COLUMNS: &str = "tenant_id, name, business_idx, category_idx, country_id, \
    registered_associate_id, registered, updated_associate_id, updated, \"updatedCount\", department";

/// Stores `n` contacts of `tenant` (which must exist), named `Stored 1` … `Stored n`, in the
/// database at `url`, which another process may be serving. SQLite then checkpoints its WAL and
/// PostgreSQL analyses the tables, so that neither happens during what follows.
pub async fn contacts(url: &str, tenant: &str, n: i64) -> Result<()> {
    if n <= 0 {
        return Ok(());
    }
    let now = now_ticks();
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url)
            .await
            .map_err(StoreError::from_sqlx)?;
        let tenant_id: Option<i64> =
            sqlx::query_scalar("SELECT tenant_id FROM tenant WHERE name = ?1")
                .bind(tenant)
                .fetch_optional(&mut conn)
                .await
                .map_err(StoreError::from_sqlx)?;
        let tenant_id = tenant_id.ok_or(StoreError::NotFound)?;
        sqlx::query(&format!(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?3) \
             INSERT INTO contact ({COLUMNS}) SELECT ?1, 'Stored ' || i, 0, 0, 0, 1, ?2, 1, ?2, 0, 'Sales' FROM seq"
        ))
        .bind(tenant_id)
        .bind(now)
        .bind(n)
        .execute(&mut conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(StoreError::from_sqlx)?;
        let _ = conn.close().await;
    } else {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(StoreError::from_sqlx)?;
        let tenant_id: Option<i64> =
            sqlx::query_scalar("SELECT tenant_id FROM tenant WHERE name = $1")
                .bind(tenant)
                .fetch_optional(&mut conn)
                .await
                .map_err(StoreError::from_sqlx)?;
        let tenant_id = tenant_id.ok_or(StoreError::NotFound)?;
        sqlx::query(&format!(
            "INSERT INTO contact ({COLUMNS}) SELECT $1, 'Stored ' || i, 0, 0, 0, 1, $2, 1, $2, 0, 'Sales' \
             FROM generate_series(1, $3) AS i"
        ))
        .bind(tenant_id)
        .bind(now)
        .bind(n)
        .execute(&mut conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        let _ = sqlx::query("ANALYZE").execute(&mut conn).await;
        let _ = conn.close().await;
    }
    Ok(())
}
