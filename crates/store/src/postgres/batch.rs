//! The array-bound statements of a group commit ([`super::group`]): the rows it locks, the
//! keys and numbers it takes, the rows it writes, its events and their deliveries; one
//! statement each, whatever the group's size.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::{QueryBuilder, Row as _};
use uuid::Uuid;

use super::db::db;
use super::group::{Key, Meta, Plan};
use super::handoff::Hand;
use crate::entity::{ColumnKind, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::sql::columns::{
    column_list, json_text, map_text, qualified, read_row, read_webhook, subscribers, WEBHOOK_COLS,
};
use crate::sql::{At, DbRow as _};
use crate::{Result, StoreError, TenantId};

/// A delivery the group wrote.
pub(super) struct Written {
    pub(super) delivery_id: i64,
    pub(super) event_seq: i64,
    pub(super) event_id: Uuid,
    /// Its webhook, when it was written leased to this node.
    pub(super) webhook: Option<Arc<Webhook>>,
    /// It heads its chain (nothing earlier of its contact open for that webhook).
    pub(super) head: bool,
}

/// Locks and reads the rows the group changes, table by table, in key order (so that two
/// groups that change the same rows take their locks in the same order).
pub(super) async fn lock_rows(
    conn: &mut PgConnection,
    jobs: &[Meta],
) -> Result<HashMap<Key, Option<Row>>> {
    let mut wanted: BTreeMap<&'static str, (&'static EntityDef, Vec<TenantId>, Vec<i64>)> =
        BTreeMap::new();
    for job in jobs {
        if let Some(pk) = job.pk {
            let entry = wanted
                .entry(job.def.table)
                .or_insert_with(|| (job.def, Vec::new(), Vec::new()));
            entry.1.push(job.actor.tenant_id);
            entry.2.push(pk);
        }
    }
    let mut rows = HashMap::new();
    for (table, (def, tenants, pks)) in wanted {
        for (&tenant, &pk) in tenants.iter().zip(&pks) {
            rows.insert((tenant, table, pk), None);
        }
        let sql = format!(
            "SELECT t.tenant_id, {cols} FROM {table} t JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS k(tenant_id, pk) \
             ON t.tenant_id = k.tenant_id AND t.\"{pk}\" = k.pk ORDER BY t.\"{pk}\" FOR UPDATE OF t",
            cols = qualified(&column_list(def), "t"),
            pk = def.pk(),
        );
        let found = sqlx::query(&sql)
            .bind(&tenants)
            .bind(&pks)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        for r in &found {
            let tenant = TenantId::new(r.int(0)?);
            let row = read_row(def, &At(r, 1))?;
            let pk = row.values[0].as_i64();
            rows.insert((tenant, table, pk), Some(row));
        }
    }
    Ok(rows)
}

/// Keys for the rows the group inserts (of each insert's table) and numbers for its events, in
/// one round trip.
pub(super) async fn numbers(
    conn: &mut PgConnection,
    jobs: &[Meta],
    inserts: &[usize],
    events: usize,
) -> Result<(std::vec::IntoIter<i64>, std::vec::IntoIter<i64>)> {
    // Every insert of a group is of one table today (contacts); a group mixing tables takes a
    // key per table in turn.
    let mut tables: Vec<&'static EntityDef> = Vec::new();
    for &i in inserts {
        if !tables.iter().any(|d| d.table == jobs[i].def.table) {
            tables.push(jobs[i].def);
        }
    }
    let mut sql = String::from(
        "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('event', 'event_seq')) FROM generate_series(1, $1))",
    );
    for def in &tables {
        let n = inserts
            .iter()
            .filter(|&&i| jobs[i].def.table == def.table)
            .count();
        sql.push_str(&format!(
            ", ARRAY(SELECT nextval(pg_get_serial_sequence('{table}', '{pk}')) FROM generate_series(1, {n}))",
            table = def.table,
            pk = def.pk(),
        ));
    }
    let row = sqlx::query(&sql)
        .bind(i64::try_from(events).unwrap_or(i64::MAX))
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let seqs: Vec<i64> = row.try_get(0).map_err(db)?;
    let mut by_table: HashMap<&str, std::vec::IntoIter<i64>> = HashMap::new();
    for (n, def) in tables.iter().enumerate() {
        let keys: Vec<i64> = row.try_get(n + 1).map_err(db)?;
        by_table.insert(def.table, keys.into_iter());
    }
    // In the order of the inserts.
    let mut keys = Vec::with_capacity(inserts.len());
    for &i in inserts {
        if let Some(k) = by_table.get_mut(jobs[i].def.table).and_then(Iterator::next) {
            keys.push(k);
        }
    }
    Ok((keys.into_iter(), seqs.into_iter()))
}

/// One column's values of many rows, bound as an array of its type.
enum ColumnArray {
    Int(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
}

impl ColumnArray {
    fn of(kind: ColumnKind, rows: &[&Row], i: usize) -> Self {
        match kind {
            ColumnKind::Text { .. } => ColumnArray::Text(
                rows.iter()
                    .map(|r| r.values[i].as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => ColumnArray::Int(
                rows.iter()
                    .map(|r| match &r.values[i] {
                        Value::Int(v) | Value::Date(v) => Some(*v),
                        Value::Null | Value::Text(_) => None,
                    })
                    .collect(),
            ),
        }
    }

    fn cast(&self) -> &'static str {
        match self {
            ColumnArray::Int(_) => "BIGINT[]",
            ColumnArray::Text(_) => "TEXT[]",
        }
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        match self {
            ColumnArray::Int(v) => q.bind(v),
            ColumnArray::Text(v) => q.bind(v),
        }
    }
}

/// Writes the group's rows: inserts, the last state of each updated row, deletes; one
/// statement each per table.
pub(super) async fn write_rows(
    conn: &mut PgConnection,
    jobs: &[Meta],
    plans: &[Plan],
    rows: &HashMap<Key, Option<Row>>,
) -> Result<()> {
    let mut by_table: BTreeMap<&'static str, &'static EntityDef> = BTreeMap::new();
    for job in jobs {
        by_table.insert(job.def.table, job.def);
    }
    for (table, def) in by_table {
        // Inserts.
        let inserted: Vec<(i64, &Row)> = plans
            .iter()
            .zip(jobs)
            .filter(|(_, j)| j.def.table == table)
            .filter_map(|(p, j)| match p {
                Plan::Insert(row) => Some((j.actor.tenant_id.get(), row)),
                _ => None,
            })
            .collect();
        if !inserted.is_empty() {
            let tenants: Vec<i64> = inserted.iter().map(|(t, _)| *t).collect();
            let list: Vec<&Row> = inserted.iter().map(|(_, r)| *r).collect();
            write_arrays(conn, def, "INSERT", tenants, &list).await?;
        }
        // Updates: each row's state after the group (a row deleted later in the group is
        // only deleted).
        let mut updated: Vec<(i64, &Row)> = Vec::new();
        let mut deleted: Vec<(i64, i64)> = Vec::new();
        let mut seen: std::collections::HashSet<Key> = std::collections::HashSet::new();
        for (p, j) in plans.iter().zip(jobs) {
            let Some(pk) = j.pk.filter(|_| j.def.table == table) else {
                continue;
            };
            if !matches!(p, Plan::Update(..) | Plan::Delete(_)) {
                continue;
            }
            let key = (j.actor.tenant_id, table, pk);
            if !seen.insert(key) {
                continue;
            }
            match rows.get(&key) {
                Some(Some(row)) => updated.push((j.actor.tenant_id.get(), row)),
                _ => deleted.push((j.actor.tenant_id.get(), pk)),
            }
        }
        if !updated.is_empty() {
            let tenants: Vec<i64> = updated.iter().map(|(t, _)| *t).collect();
            let list: Vec<&Row> = updated.iter().map(|(_, r)| *r).collect();
            write_arrays(conn, def, "UPDATE", tenants, &list).await?;
        }
        if !deleted.is_empty() {
            let (tenants, pks): (Vec<i64>, Vec<i64>) = deleted.into_iter().unzip();
            sqlx::query(&format!(
                "DELETE FROM {table} t USING UNNEST($1::BIGINT[], $2::BIGINT[]) AS k(tenant_id, pk) \
                 WHERE t.tenant_id = k.tenant_id AND t.\"{pk}\" = k.pk",
                pk = def.pk()
            ))
            .bind(tenants)
            .bind(pks)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}

/// Inserts `rows` (with their keys) or replaces them, every column bound as one array.
async fn write_arrays(
    conn: &mut PgConnection,
    def: &EntityDef,
    verb: &str,
    tenants: Vec<i64>,
    rows: &[&Row],
) -> Result<()> {
    let columns: Vec<ColumnArray> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| ColumnArray::of(c.kind, rows, i))
        .collect();
    let names: Vec<String> = def
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let unnest = std::iter::once("$1::BIGINT[]".to_owned())
        .chain(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::{}", i + 2, c.cast())),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let alias = format!("u(tenant_id, {})", names.join(", "));
    let sql = if verb == "INSERT" {
        format!(
            "INSERT INTO {table} (tenant_id, {cols}) SELECT * FROM UNNEST({unnest}) AS {alias}",
            table = def.table,
            cols = names.join(", "),
        )
    } else {
        let sets = names
            .iter()
            .skip(1)
            .map(|n| format!("{n} = u.{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {table} t SET {sets} FROM UNNEST({unnest}) AS {alias} \
             WHERE t.tenant_id = u.tenant_id AND t.{pk} = u.{pk}",
            table = def.table,
            pk = names[0],
        )
    };
    let mut q = sqlx::query(&sql).bind(tenants);
    for c in columns {
        q = c.bind(q);
    }
    q.execute(&mut *conn).await.map_err(db)?;
    Ok(())
}

/// Inserts the group's events with the numbers taken for them.
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    jobs: &[Meta],
    written: &[(usize, i64, NewEvent)],
    now: Ticks,
) -> Result<()> {
    let n = written.len();
    let mut seq = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut entity = Vec::with_capacity(n);
    let mut pk = Vec::with_capacity(n);
    let mut changes = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut field_values = Vec::with_capacity(n);
    let mut changed_by = Vec::with_capacity(n);
    for (i, s, ev) in written {
        seq.push(*s);
        tenant.push(jobs[*i].actor.tenant_id);
        event.push(ev.event.clone());
        entity.push(ev.entity.clone());
        pk.push(ev.primary_key);
        changes.push(json_text(&ev.changes));
        values.push(map_text(&ev.values));
        field_values.push(ev.field_values.clone());
        changed_by.push(jobs[*i].actor.associate_id);
    }
    sqlx::query(
        "INSERT INTO event (event_seq, tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred) \
         SELECT u.*, $10 FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BIGINT[]) \
         AS u(event_seq, tenant_id, event, entity, primary_key, changes, vals, field_values, changed_by)",
    )
    .bind(seq)
    .bind(tenant)
    .bind(event)
    .bind(entity)
    .bind(pk)
    .bind(changes)
    .bind(values)
    .bind(field_values)
    .bind(changed_by)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The deliveries of the group's events, in one statement: one per Active webhook of the
/// event's tenant subscribed to it, in the group's order. A delivery heads its chain when
/// nothing of its contact is open for that webhook and it is the first of its chain in the
/// group; a head is marked `head` (migration 0010) and written leased to this node's
/// dispatcher (`hand`).
pub(super) async fn insert_deliveries(
    conn: &mut PgConnection,
    jobs: &[Meta],
    written: &[(usize, i64, NewEvent)],
    now: Ticks,
    hand: Option<&Hand>,
) -> Result<Vec<Written>> {
    let n = written.len();
    let mut seq = Vec::with_capacity(n);
    let mut tenant = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut order_key = Vec::with_capacity(n);
    for (i, s, ev) in written {
        seq.push(*s);
        tenant.push(jobs[*i].actor.tenant_id);
        event.push(ev.event.clone());
        order_key.push(ev.order_key.clone());
    }
    // KEY SHARE: a webhook deleted concurrently waits for this commit, then cancels these
    // deliveries too; state changes (NO KEY UPDATE) do not wait.
    let mut qb = QueryBuilder::<Postgres>::new("WITH ev AS (SELECT * FROM UNNEST(");
    qb.push_bind(seq)
        .push("::BIGINT[], ")
        .push_bind(tenant)
        .push("::BIGINT[], ")
        .push_bind(event)
        .push("::TEXT[], ")
        .push_bind(order_key)
        .push(
            "::TEXT[]) WITH ORDINALITY AS e(seq, tenant_id, event, order_key, ord)), \
             hooks AS (SELECT ev.seq, ev.tenant_id, ev.order_key, ev.ord, w.webhook_id FROM ev, ",
        )
        .push(subscribers("JOIN"))
        .push(
            "ev.tenant_id AND we.event = ev.event FOR KEY SHARE OF w), \
             ranked AS (SELECT h.*, ROW_NUMBER() OVER (PARTITION BY h.webhook_id, h.order_key ORDER BY h.ord) AS rn, \
             NOT EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = h.webhook_id AND p.order_key = h.order_key \
             AND p.status IN (0, 1)) AS free FROM hooks h), \
             ins AS (INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, head, queue_pos, next_attempt_at, created, status, lease_until, lease_owner) \
             SELECT r.tenant_id, r.webhook_id, r.seq, r.order_key, gen_random_uuid()::text, r.rn = 1 AND r.free, ",
        )
        .push_bind(now)
        .push(", ")
        .push_bind(now)
        .push(", ")
        .push_bind(now);
    match hand {
        Some(hand) => {
            // Leased: the heads of webhooks and tenants the dispatcher has room for.
            let lease = |qb: &mut QueryBuilder<'_, Postgres>| {
                qb.push(" CASE WHEN r.rn = 1 AND r.free AND r.webhook_id <> ALL (")
                    .push_bind(hand.full_webhooks.clone())
                    .push("::BIGINT[]) AND r.tenant_id <> ALL (")
                    .push_bind(hand.full_tenants.clone())
                    .push("::BIGINT[]) THEN ");
            };
            qb.push(",");
            lease(&mut qb);
            qb.push("1 ELSE 0 END,");
            lease(&mut qb);
            qb.push_bind(hand.lease_until).push(" END,");
            lease(&mut qb);
            qb.push_bind(hand.intake.owner().to_owned()).push(" END");
        }
        None => {
            qb.push(", 0, NULL, NULL");
        }
    }
    qb.push(format!(
        " FROM ranked r ORDER BY r.ord, r.webhook_id \
         RETURNING delivery_id, webhook_id, event_seq, event_id, status, head) \
         SELECT i.delivery_id, i.event_seq, i.event_id, i.status, i.head, {} FROM ins i \
         LEFT JOIN webhook w ON i.status = 1 AND w.webhook_id = i.webhook_id ORDER BY i.delivery_id",
        qualified(WEBHOOK_COLS, "w")
    ));
    let found: Vec<PgRow> = qb.build().fetch_all(&mut *conn).await.map_err(db)?;
    let mut hooks: HashMap<i64, Arc<Webhook>> = HashMap::new();
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let delivery_id = r.int(0)?;
        let event_id = Uuid::parse_str(&r.text(2)?)
            .map_err(|e| StoreError::Corrupt(format!("delivery {delivery_id} event id: {e}")))?;
        let head: bool = r.try_get(4).map_err(db)?;
        let webhook = if r.int(3)? == 1 {
            let id = r.int(5)?;
            match hooks.get(&id) {
                Some(w) => Some(Arc::clone(w)),
                None => {
                    // Only handed rows read their webhook, and only with a `hand`.
                    let keys = hand.map(|h| &h.keys).ok_or_else(|| {
                        StoreError::Corrupt("a delivery was leased without a hand-off".into())
                    })?;
                    let w = Arc::new(read_webhook(&At(r, 5), keys)?);
                    hooks.insert(id, Arc::clone(&w));
                    Some(w)
                }
            }
        } else {
            None
        };
        out.push(Written {
            delivery_id,
            event_seq: r.int(1)?,
            event_id,
            webhook,
            head,
        });
    }
    Ok(out)
}
