//! What both backends share: rendering `FieldValues` and state events, the stored JSON
//! columns, the column lists, and reading rows back into the model.

use serde_json::{Map, Value as Json};

use crate::entity::{ColumnKind, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::{Result, StoreError};

/// The server's offset for .NET Local-kind dates: `CRMHOOKS_TZ_OFFSET` (e.g. `+02:00`) if set,
/// else UTC. (Reading the OS zone is unsound in a multi-threaded process.)
pub fn local_offset() -> time::UtcOffset {
    std::env::var("CRMHOOKS_TZ_OFFSET")
        .ok()
        .and_then(|s| {
            let fmt =
                time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
            time::UtcOffset::parse(&s, &fmt).ok()
        })
        .unwrap_or(time::UtcOffset::UTC)
}

/// Renders a date column for `FieldValues` (spec 1.2).
pub fn render_date(ticks: Option<Ticks>, local: Option<time::UtcOffset>) -> String {
    use crmhooks_payload::NetDateTime;
    let Some(t) = ticks else {
        return NetDateTime::MIN.to_string();
    };
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 100) else {
        return NetDateTime::MIN.to_string();
    };
    match local {
        Some(off) => NetDateTime::local(dt.to_offset(off)).to_string(),
        None => {
            NetDateTime::unspecified(time::PrimitiveDateTime::new(dt.date(), dt.time())).to_string()
        }
    }
}

/// The quoted column list of an entity table, in column order.
pub(crate) fn column_list(def: &EntityDef) -> String {
    def.columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FieldValues` of a row as JSON text: the bytes `serde_json` writes for the map of its fields
/// (names in the entity's order), written without building the map.
pub(crate) fn field_values(def: &EntityDef, row: &Row, offset: time::UtcOffset) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(64 * def.field_values.len());
    out.push(b'{');
    for name in def.field_values {
        let Some(i) = def.index(name) else { continue };
        if out.len() > 1 {
            out.push(b',');
        }
        json_str(&mut out, name);
        out.push(b':');
        let v = &row.values[i];
        match def.columns[i].kind {
            ColumnKind::Date => {
                let local = def.local_dates.contains(name).then_some(offset);
                json_str(&mut out, &render_date(v.as_ticks(), local));
            }
            ColumnKind::Text { .. } => json_str(&mut out, v.as_str().unwrap_or_default()),
            _ => {
                let _ = serde_json::to_writer(&mut out, &v.as_i64());
            }
        }
    }
    out.push(b'}');
    // Only JSON written by serde_json and ASCII punctuation went in: always UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_owned())
}

/// A JSON string, escaped as `serde_json` escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub(crate) fn parse_json_map(s: Option<String>) -> Result<Option<Map<String, Json>>> {
    match s {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}"))),
    }
}

pub(crate) fn map_text(m: &Option<Map<String, Json>>) -> Option<String> {
    m.as_ref().map(json_text)
}

/// A value as JSON text, serialized in place (no copy into a `serde_json::Value` first).
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // Maps with string keys, string lists and numbers always serialize; the fallback only
    // keeps a panic path out.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// The state event of spec 6.1 for `hook`, which just entered `hook.state`.
pub(crate) fn state_event(
    hook: &Webhook,
    usage_calls: i64,
    offset: time::UtcOffset,
) -> Option<NewEvent> {
    let verb = hook.state.event_verb()?;
    let mut fv = Map::new();
    fv.insert("events".into(), Json::from(usage_calls));
    fv.insert(
        "registered".into(),
        Json::String(render_date(Some(hook.registered), Some(offset))),
    );
    fv.insert(
        "registered_associate_id".into(),
        Json::from(hook.registered_associate_id),
    );
    fv.insert("state".into(), Json::from(hook.state as i64));
    fv.insert(
        "updated".into(),
        Json::String(if hook.updated == 0 {
            crmhooks_payload::NetDateTime::MIN.to_string()
        } else {
            render_date(Some(hook.updated), Some(offset))
        }),
    );
    fv.insert(
        "updated_associate_id".into(),
        Json::from(hook.updated_associate_id),
    );
    Some(NewEvent {
        event: format!("webhook{}.{verb}", hook.id),
        entity: "webhook".into(),
        primary_key: hook.id,
        changes: Vec::new(),
        values: None,
        field_values: Some(json_text(&fv)),
        order_key: format!("webhook:{}", hook.id),
    })
}

/// Reads columns of either backend's rows by position, with the store's error mapping.
pub(crate) trait DbRow {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
}

macro_rules! db_row {
    ($row:ty) => {
        impl DbRow for $row {
            fn int(&self, i: usize) -> Result<i64> {
                sqlx::Row::try_get(self, i).map_err(StoreError::from_sqlx)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>> {
                sqlx::Row::try_get(self, i).map_err(StoreError::from_sqlx)
            }
            fn text(&self, i: usize) -> Result<String> {
                sqlx::Row::try_get(self, i).map_err(StoreError::from_sqlx)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>> {
                sqlx::Row::try_get(self, i).map_err(StoreError::from_sqlx)
            }
        }
    };
}

db_row!(sqlx::sqlite::SqliteRow);
db_row!(sqlx::postgres::PgRow);

/// The columns of `row` from `offset` on, for reading one record out of a wider row.
pub(crate) struct At<'a, R>(pub &'a R, pub usize);

impl<R: DbRow> DbRow for At<'_, R> {
    fn int(&self, i: usize) -> Result<i64> {
        self.0.int(self.1 + i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        self.0.opt_int(self.1 + i)
    }
    fn text(&self, i: usize) -> Result<String> {
        self.0.text(self.1 + i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.0.opt_text(self.1 + i)
    }
}

/// `cols` (a comma-separated column list) with every column qualified by `alias`.
pub(crate) fn qualified(cols: &str, alias: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many columns a comma-separated column list has.
pub(crate) fn count_cols(cols: &str) -> usize {
    cols.split(", ").count()
}

/// An entity row read with [`column_list`].
pub(crate) fn read_row(def: &EntityDef, r: &impl DbRow) -> Result<Row> {
    let mut values = Vec::with_capacity(def.columns.len());
    for (i, col) in def.columns.iter().enumerate() {
        let v = match col.kind {
            ColumnKind::Text { .. } => r.opt_text(i)?.map_or(Value::Null, Value::Text),
            ColumnKind::Date => r.opt_int(i)?.map_or(Value::Null, Value::Date),
            _ => r.opt_int(i)?.map_or(Value::Null, Value::Int),
        };
        values.push(v);
    }
    Ok(Row { values })
}

pub(crate) const WEBHOOK_COLS: &str = "webhook_id, tenant_id, name, events, target_url, secret, state, type, headers, properties, registered, registered_associate_id, updated, updated_associate_id, errors_email, \"updatedCount\", retry_policy, success_status";

pub(crate) fn read_webhook(r: &impl DbRow) -> Result<Webhook> {
    let events = r.text(3)?;
    Ok(Webhook {
        id: r.int(0)?,
        tenant_id: r.int(1)?,
        name: r.text(2)?,
        events: events
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        target_url: r.text(4)?,
        secret: r.opt_text(5)?,
        state: WebhookState::from_i64(r.int(6)?),
        kind: r.text(7)?,
        headers: parse_json_map(r.opt_text(8)?)?,
        properties: parse_json_map(r.opt_text(9)?)?,
        registered: r.int(10)?,
        registered_associate_id: r.int(11)?,
        updated: r.int(12)?,
        updated_associate_id: r.int(13)?,
        errors_email: r.opt_text(14)?,
        updated_count: r.int(15)?,
        retry_policy: r.opt_text(16)?,
        success_status: r.opt_text(17)?,
    })
}

/// The event `ev` of `actor`, committed as `seq` at `now`, as [`read_event`] reads it back
/// (`ev` is moved into it, not copied): what a store hands over with the deliveries it leased
/// at commit.
pub(crate) fn stored_event(seq: i64, actor: &Actor, ev: NewEvent, now: Ticks) -> StoredEvent {
    StoredEvent {
        seq,
        tenant_id: actor.tenant_id,
        event: ev.event,
        entity: ev.entity,
        primary_key: ev.primary_key,
        changes: ev.changes,
        values: ev.values,
        field_values_json: ev.field_values.map(std::sync::Arc::from),
        changed_by: actor.associate_id,
        occurred: now,
    }
}

pub(crate) const EVENT_COLS: &str =
    "event_seq, tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred";

pub(crate) fn read_event(r: &impl DbRow) -> Result<StoredEvent> {
    let changes = r.text(5)?;
    Ok(StoredEvent {
        seq: r.int(0)?,
        tenant_id: r.int(1)?,
        event: r.text(2)?,
        entity: r.text(3)?,
        primary_key: r.int(4)?,
        changes: serde_json::from_str(&changes)
            .map_err(|e| StoreError::Corrupt(format!("event changes: {e}")))?,
        values: parse_json_map(r.opt_text(6)?)?,
        field_values_json: r.opt_text(7)?.map(std::sync::Arc::from),
        changed_by: r.int(8)?,
        occurred: r.int(9)?,
    })
}

/// Whether an earlier delivery of the same chain (contact and webhook) as `delivery d` is
/// still open: `d` must wait for it.
macro_rules! earlier_open {
    () => {
        "EXISTS (SELECT 1 FROM delivery p WHERE p.webhook_id = d.webhook_id \
         AND p.order_key = d.order_key AND p.status IN (0, 1) AND p.delivery_id < d.delivery_id)"
    };
}

/// [`earlier_open!`], for queries built at run time.
pub(crate) const EARLIER_OPEN: &str = earlier_open!();

/// A delivery's status as the log shows it (SQL over `delivery d`): one leased while it waits
/// behind an earlier open delivery of its contact (SQLite's writer keeps those in memory, see
/// `Chains`) is pending, not in flight.
macro_rules! delivery_status {
    () => {
        concat!(
            "CASE WHEN d.status = 1 AND ",
            earlier_open!(),
            " THEN 0 ELSE d.status END"
        )
    };
}

/// [`delivery_status!`], for filters.
pub(crate) const DELIVERY_STATUS: &str = delivery_status!();

pub(crate) const DELIVERY_COLS: &str = concat!(
    "d.delivery_id, d.webhook_id, d.event_seq, e.event, e.primary_key, d.event_id, ",
    delivery_status!(),
    ", d.attempts, d.cycles, d.created, d.next_attempt_at, d.completed, d.last_status, d.last_error, d.replay_of"
);

pub(crate) fn read_delivery(r: &impl DbRow) -> Result<Delivery> {
    Ok(Delivery {
        delivery_id: r.int(0)?,
        webhook_id: r.int(1)?,
        event_seq: r.int(2)?,
        event: r.text(3)?,
        primary_key: r.int(4)?,
        event_id: r.text(5)?,
        status: DeliveryStatus::from_i64(r.int(6)?),
        attempts: r.int(7)?,
        cycles: r.int(8)?,
        created: r.int(9)?,
        next_attempt_at: r.int(10)?,
        completed: r.opt_int(11)?,
        last_status: r.opt_int(12)?,
        last_error: r.opt_text(13)?,
        replay_of: r.opt_int(14)?,
    })
}

pub(crate) const ATTEMPT_COLS: &str =
    "attempt_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt";

pub(crate) fn read_attempt(r: &impl DbRow) -> Result<Attempt> {
    Ok(Attempt {
        attempt_id: r.int(0)?,
        event_id: r.text(1)?,
        retry: r.int(2)?,
        attempted_at: r.int(3)?,
        duration_us: r.int(4)?,
        status_code: r.opt_int(5)?,
        error: r.opt_text(6)?,
        response_excerpt: r.opt_text(7)?,
    })
}

/// The ordering key of an event re-queued by a replay.
pub(crate) fn replay_order_key(entity: &str, pk: i64) -> String {
    if entity == "webhook" {
        format!("webhook:{pk}")
    } else {
        format!("{entity}:{pk}")
    }
}

/// The text kept as `webhook_usage.last_error` for a failed attempt.
pub(crate) fn usage_last_error(o: &AttemptOutcome) -> String {
    o.response_excerpt
        .clone()
        .or_else(|| o.error.clone())
        .unwrap_or_default()
        .chars()
        .take(4000)
        .collect()
}

/// Why a webhook was disabled, for the errors mail.
pub(crate) fn disable_reason(o: &AttemptOutcome) -> String {
    format!(
        "EventId {}: {}",
        o.event_id,
        o.error.clone().unwrap_or_default()
    )
}

// Query builders shared by both backends: their SQL is identical, and `QueryBuilder` writes
// each backend's placeholders (`?` or `$n`).

/// `GET /api/v1/Webhook` with its filters.
pub(crate) fn list_webhooks_query<'a, DB>(
    tenant_id: i64,
    filter: &WebhookFilter,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::<DB>::new(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = "
    ));
    qb.push_bind(tenant_id);
    if let Some(name) = &filter.name {
        qb.push(" AND name = ").push_bind(name.clone());
    }
    if let Some(ev) = &filter.event {
        qb.push(" AND webhook_id IN (SELECT webhook_id FROM webhook_event WHERE event = ")
            .push_bind(ev.clone())
            .push(")");
    }
    if let Some(state) = filter.state.filter(|s| *s != WebhookState::Unknown) {
        qb.push(" AND state = ").push_bind(state as i64);
    }
    qb.push(" ORDER BY webhook_id");
    qb
}

/// The delivery log of one webhook, newest first, with its filters and paging.
pub(crate) fn list_deliveries_query<'a, DB>(
    tenant_id: i64,
    webhook_id: i64,
    filter: &DeliveryFilter,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::<DB>::new(format!(
        "SELECT {DELIVERY_COLS} FROM delivery d JOIN event e ON e.event_seq = d.event_seq WHERE d.tenant_id = "
    ));
    qb.push_bind(tenant_id)
        .push(" AND d.webhook_id = ")
        .push_bind(webhook_id);
    if let Some(s) = filter.status {
        qb.push(format!(" AND {DELIVERY_STATUS} = "))
            .push_bind(s as i64);
    }
    if let Some(t) = filter.since {
        qb.push(" AND d.created >= ").push_bind(t);
    }
    if let Some(t) = filter.until {
        qb.push(" AND d.created < ").push_bind(t);
    }
    if let Some(id) = filter.before_id {
        qb.push(" AND d.delivery_id < ").push_bind(id);
    }
    qb.push(" ORDER BY d.delivery_id DESC LIMIT ")
        .push_bind(filter.limit);
    qb
}

/// An [`Actor`] from `SELECT tenant_id, tenant name, associate_id`.
pub(crate) fn read_actor(r: &impl DbRow) -> Result<Actor> {
    Ok(Actor {
        tenant_id: r.int(0)?,
        tenant: r.text(1)?,
        associate_id: r.int(2)?,
    })
}

/// A decided change, ready to write: everything but the SQL, which each backend runs itself.
pub(crate) enum Planned {
    /// Nothing to write; answer with this row.
    Nothing(Option<Row>),
    /// Insert this row (its key column is Null); the event follows from [`created_event`] once
    /// the key is known.
    Insert(Row),
    /// Replace the stored row with `row`, firing `event`.
    Update { row: Row, event: NewEvent },
    /// Delete the stored row, firing `event`.
    Delete { event: NewEvent },
}

/// Turns what a change function decided into the row to write and its event: bookkeeping set
/// by the store (never by the caller), validation, and the `Changes` of an update; an update
/// that changes nothing but bookkeeping writes nothing.
pub(crate) fn plan_change(
    def: &'static EntityDef,
    actor: &Actor,
    current: Option<Row>,
    decided: crate::Change,
    now: Ticks,
    offset: time::UtcOffset,
) -> Result<Planned> {
    use crate::Change;
    let set_bookkeeping = |row: &mut Row, count: i64| {
        row.set(def, "updated", Value::Date(now));
        row.set(def, "updated_associate_id", Value::Int(actor.associate_id));
        row.set(def, "updatedCount", Value::Int(count));
    };
    match decided {
        Change::Nothing => Ok(Planned::Nothing(current)),
        Change::Create(mut row) => {
            row.values[0] = Value::Null;
            row.set(
                def,
                "registered",
                Value::Date(now - now % crate::entity::TICKS_PER_SECOND),
            );
            row.set(
                def,
                "registered_associate_id",
                Value::Int(actor.associate_id),
            );
            set_bookkeeping(&mut row, 0);
            crate::entity::validate(def, &row)?;
            Ok(Planned::Insert(row))
        }
        Change::Update { mut row, verb } => {
            let before = current.ok_or(StoreError::NotFound)?;
            row.values[0] = before.values[0].clone();
            for name in def
                .bookkeeping
                .iter()
                .chain(["registered", "registered_associate_id"].iter())
            {
                row.set(def, name, before.get(def, name).clone());
            }
            // The bookkeeping columns are not compared and always listed, so setting them
            // below leaves this list as it is.
            let changes = def.diff(&before, &row);
            if changes.is_empty() {
                return Ok(Planned::Nothing(Some(before)));
            }
            let count = (before.get(def, "updatedCount").as_i64() + 1) % 65536;
            set_bookkeeping(&mut row, count);
            crate::entity::validate(def, &row)?;
            let pk = row.values[0].as_i64();
            let event = NewEvent {
                event: format!("{}.{verb}", def.entity),
                entity: def.entity.to_owned(),
                primary_key: pk,
                changes,
                values: None,
                field_values: Some(field_values(def, &row, offset)),
                order_key: format!("{}:{pk}", def.entity),
            };
            Ok(Planned::Update { row, event })
        }
        Change::Delete => {
            let before = current.ok_or(StoreError::NotFound)?;
            let pk = before.values[0].as_i64();
            let mut values = Map::new();
            for name in def.deleted_values {
                values.insert(
                    (*name).to_owned(),
                    Json::from(before.get(def, name).as_i64()),
                );
            }
            let event = NewEvent {
                event: format!("{}.deleted", def.entity),
                entity: def.entity.to_owned(),
                primary_key: pk,
                changes: Vec::new(),
                values: Some(values),
                field_values: Some(field_values(def, &before, offset)),
                order_key: format!("{}:{pk}", def.entity),
            };
            Ok(Planned::Delete { event })
        }
    }
}

/// The `{entity}.created` event of an inserted row (its key set).
pub(crate) fn created_event(def: &EntityDef, row: &Row, offset: time::UtcOffset) -> NewEvent {
    let id = row.values[0].as_i64();
    NewEvent {
        event: format!("{}.created", def.entity),
        entity: def.entity.to_owned(),
        primary_key: id,
        changes: def.created_changes(),
        values: None,
        field_values: Some(field_values(def, row, offset)),
        order_key: format!("{}:{id}", def.entity),
    }
}
