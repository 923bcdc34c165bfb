//! The column lists both backends select, and reading their rows back into the model.

use serde_json::{Map, Value as Json};

use super::DbRow;
use crate::entity::{ColumnKind, EntityDef, Row, Ticks, Value};
use crate::model::*;
use crate::secrets::{Keyring, SecretError, PREFIX};
use crate::{DeliveryId, RetryPolicy, SuccessRule, TenantId, WebhookId, WebhookType};
use crate::{Result, StoreError};

/// The quoted column list of an entity table, in column order.
pub(crate) fn column_list(def: &EntityDef) -> String {
    def.columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
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
pub(crate) fn read_row(def: &EntityDef, r: &(impl DbRow + ?Sized)) -> Result<Row> {
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

/// A stored JSON object (a webhook's `Headers` or `Properties`, an event's `Values`).
pub(crate) fn parse_json_map(s: Option<String>) -> Result<Option<Map<String, Json>>> {
    match s {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}"))),
    }
}

/// A JSON object as stored.
pub(crate) fn map_text(m: &Option<Map<String, Json>>) -> Option<String> {
    m.as_ref().map(json_text)
}

/// A value as JSON text, serialized in place (no copy into a `serde_json::Value` first).
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // Maps with string keys, string lists and numbers always serialize; the fallback only
    // keeps a panic path out.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

pub(crate) const WEBHOOK_COLS: &str = "webhook_id, tenant_id, name, events, target_url, secret, state, type, headers, properties, registered, registered_associate_id, updated, updated_associate_id, errors_email, \"updatedCount\", retry_policy, success_status";

/// A webhook read with [`WEBHOOK_COLS`], its secret and header values decrypted with `keys`.
pub(crate) fn read_webhook(r: &(impl DbRow + ?Sized), keys: &Keyring) -> Result<Webhook> {
    let mut hook = read_stored_webhook(r)?;
    open_webhook(keys, &mut hook)?;
    Ok(hook)
}

/// Decrypts a webhook's secret and header values in place.
pub(crate) fn open_webhook(keys: &Keyring, hook: &mut Webhook) -> Result<()> {
    if let Some(s) = hook.secret.as_mut() {
        if s.starts_with(PREFIX) {
            *s = keys
                .open(s)
                .map_err(|e| secret_error(hook.id, "Secret", &e))?
                .into_owned();
        }
    }
    if let Some(h) = hook.headers.as_mut() {
        keys.open_headers(h)
            .map_err(|(name, e)| secret_error(hook.id, &format!("Headers.{name}"), &e))?;
    }
    Ok(())
}

/// The error of a stored value that does not decrypt.
pub(crate) fn secret_error(webhook_id: WebhookId, field: &str, e: &SecretError) -> StoreError {
    StoreError::Secret(format!("webhook {webhook_id}: {field} {e}"))
}

/// A webhook's secret and headers as stored: the secret and each header value encrypted.
pub(crate) fn sealed_fields(keys: &Keyring, hook: &Webhook) -> (Option<String>, Option<String>) {
    (
        hook.secret.as_deref().map(|s| keys.seal(s)),
        hook.headers
            .as_ref()
            .map(|h| json_text(&keys.seal_headers(h))),
    )
}

/// A webhook as stored (secret and header values as they are in the row).
pub(crate) fn read_stored_webhook(r: &(impl DbRow + ?Sized)) -> Result<Webhook> {
    let id = WebhookId::new(r.int(0)?);
    let events = r.text(3)?;
    // A value no version of crmhooks writes is an error, not a default.
    let unknown = |column: &str, v: &str| {
        StoreError::Corrupt(format!("webhook {id}: unknown {column} {v:?}"))
    };
    let kind = r.text(7)?;
    let kind = WebhookType::parse(&kind).ok_or_else(|| unknown("type", &kind))?;
    let retry_policy = match r.opt_text(16)? {
        Some(p) => Some(RetryPolicy::parse(&p).ok_or_else(|| unknown("retry_policy", &p))?),
        None => None,
    };
    let success_status = match r.opt_text(17)? {
        Some(s) => Some(SuccessRule::parse(&s).ok_or_else(|| unknown("success_status", &s))?),
        None => None,
    };
    Ok(Webhook {
        id,
        tenant_id: TenantId::new(r.int(1)?),
        name: r.text(2)?,
        events: events
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        target_url: r.text(4)?,
        secret: r.opt_text(5)?,
        state: WebhookState::from_i64(r.int(6)?),
        kind,
        headers: parse_json_map(r.opt_text(8)?)?,
        properties: parse_json_map(r.opt_text(9)?)?,
        registered: r.int(10)?,
        registered_associate_id: r.int(11)?,
        updated: r.int(12)?,
        updated_associate_id: r.int(13)?,
        errors_email: r.opt_text(14)?,
        updated_count: r.int(15)?,
        retry_policy,
        success_status,
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

pub(crate) fn read_event(r: &(impl DbRow + ?Sized)) -> Result<StoredEvent> {
    let changes = r.text(5)?;
    Ok(StoredEvent {
        seq: r.int(0)?,
        tenant_id: TenantId::new(r.int(1)?),
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
/// `sqlite::chains`) is pending, not in flight.
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

pub(crate) fn read_delivery(r: &(impl DbRow + ?Sized)) -> Result<Delivery> {
    Ok(Delivery {
        delivery_id: DeliveryId::new(r.int(0)?),
        webhook_id: WebhookId::new(r.int(1)?),
        event_seq: r.int(2)?,
        event: r.text(3)?,
        primary_key: r.int(4)?,
        event_id: r.event_id(5)?,
        status: DeliveryStatus::from_i64(r.int(6)?),
        attempts: r.int(7)?,
        cycles: r.int(8)?,
        created: r.int(9)?,
        next_attempt_at: r.int(10)?,
        completed: r.opt_int(11)?,
        last_status: r.opt_int(12)?,
        last_error: r.opt_text(13)?,
        replay_of: r.opt_int(14)?.map(DeliveryId::new),
    })
}

pub(crate) const ATTEMPT_COLS: &str =
    "attempt_id, event_id, retry, attempted_at, duration_us, status_code, error, response_excerpt";

pub(crate) fn read_attempt(r: &(impl DbRow + ?Sized)) -> Result<Attempt> {
    Ok(Attempt {
        attempt_id: r.int(0)?,
        event_id: r.event_id(1)?,
        retry: r.int(2)?,
        attempted_at: r.int(3)?,
        duration_us: r.int(4)?,
        status_code: r.opt_int(5)?,
        error: r.opt_text(6)?,
        response_excerpt: r.opt_text(7)?,
    })
}

/// The rule of the fan-out, for both backends: the webhooks that get a delivery of an event are
/// the Active webhooks of type `webhook` of the event's tenant subscribed to its name. `FROM`
/// and `WHERE` over `webhook_event we` and `webhook w`, to be followed by the tenant's id, then
/// `AND we.event = ` and the event's name. `join` is how the two tables are joined (SQLite is
/// told the order with `CROSS JOIN`).
pub(crate) fn subscribers(join: &str) -> String {
    format!(
        "webhook_event we {join} webhook w ON w.webhook_id = we.webhook_id \
         WHERE w.state = 1 AND w.type = 'webhook' AND w.tenant_id = "
    )
}
