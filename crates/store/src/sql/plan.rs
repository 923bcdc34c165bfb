//! Deciding what a change writes, and the events it fires: everything but the SQL, the same
//! on both backends.

use serde_json::{Map, Value as Json};

use super::columns::json_text;
use crate::entity::{ColumnKind, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::zone::LocalZone;
use crate::{Result, StoreError};

/// Renders a date column for `FieldValues` (spec 1.2): in `local`, with the offset in force at
/// that instant (Local kind), or as stored without an offset (Unspecified kind).
pub fn render_date(ticks: Option<Ticks>, local: Option<&LocalZone>) -> String {
    use crmhooks_payload::NetDateTime;
    let Some(t) = ticks else {
        return NetDateTime::MIN.to_string();
    };
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 100) else {
        return NetDateTime::MIN.to_string();
    };
    match local {
        Some(zone) => NetDateTime::local(dt.to_offset(zone.offset_at(dt))).to_string(),
        None => {
            NetDateTime::unspecified(time::PrimitiveDateTime::new(dt.date(), dt.time())).to_string()
        }
    }
}

/// `FieldValues` of a row as JSON text: the bytes `serde_json` writes for the map of its fields
/// (names in the entity's order), written without building the map.
pub(crate) fn field_values(def: &EntityDef, row: &Row, zone: &LocalZone) -> String {
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
                let local = def.local_dates.contains(name).then_some(zone);
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

/// The state event of spec 6.1 for `hook`, which just entered `hook.state`.
pub(crate) fn state_event(hook: &Webhook, usage_calls: i64, zone: &LocalZone) -> Option<NewEvent> {
    let verb = hook.state.event_verb()?;
    let mut fv = Map::new();
    fv.insert("events".into(), Json::from(usage_calls));
    fv.insert(
        "registered".into(),
        Json::String(render_date(Some(hook.registered), Some(zone))),
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
            render_date(Some(hook.updated), Some(zone))
        }),
    );
    fv.insert(
        "updated_associate_id".into(),
        Json::from(hook.updated_associate_id),
    );
    Some(NewEvent {
        event: format!("webhook{}.{verb}", hook.id),
        entity: "webhook".into(),
        primary_key: hook.id.get(),
        changes: Vec::new(),
        values: None,
        field_values: Some(json_text(&fv)),
        order_key: format!("webhook:{}", hook.id),
    })
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
    zone: &LocalZone,
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
                field_values: Some(field_values(def, &row, zone)),
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
                field_values: Some(field_values(def, &before, zone)),
                order_key: format!("{}:{pk}", def.entity),
            };
            Ok(Planned::Delete { event })
        }
    }
}

/// The `{entity}.created` event of an inserted row (its key set).
pub(crate) fn created_event(def: &EntityDef, row: &Row, zone: &LocalZone) -> NewEvent {
    let id = row.values[0].as_i64();
    NewEvent {
        event: format!("{}.created", def.entity),
        entity: def.entity.to_owned(),
        primary_key: id,
        changes: def.created_changes(),
        values: None,
        field_values: Some(field_values(def, row, zone)),
        order_key: format!("{}:{id}", def.entity),
    }
}
