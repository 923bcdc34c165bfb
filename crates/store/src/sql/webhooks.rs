//! Webhook definitions: saving (with the state events a save fires), reading, listing,
//! deleting, usage counters, and the state machine's writes.

use super::columns::{read_webhook, sealed_fields, WEBHOOK_COLS};
use super::plan::state_event;
use super::{args, Db, Fanout, Query};
use crate::entity::Ticks;
use crate::model::*;
use crate::secrets::Keyring;
use crate::zone::LocalZone;
use crate::{now_ticks, Result, StoreError};
use crate::{RetryPolicy, SuccessRule, TenantId, WebhookId};

/// Reads a webhook inside a transaction, with the row lock `lock` (see [`Db`]).
pub(crate) async fn load(
    db: &mut impl Db,
    id: WebhookId,
    lock: &str,
    keys: &Keyring,
) -> Result<Option<Webhook>> {
    db.row(
        &format!("SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = $1{lock}"),
        args![id],
        |r| read_webhook(r, keys),
    )
    .await
}

/// The tenant of a webhook, read inside a transaction with the row lock `lock` (its secrets
/// are not read).
pub(crate) async fn tenant_of(
    db: &mut impl Db,
    id: WebhookId,
    lock: &str,
) -> Result<Option<TenantId>> {
    db.row(
        &format!("SELECT tenant_id FROM webhook WHERE webhook_id = $1{lock}"),
        args![id],
        |r| r.int(0).map(TenantId::new),
    )
    .await
}

/// One webhook of a tenant.
pub(crate) async fn get(
    db: &mut impl Db,
    tenant_id: TenantId,
    id: WebhookId,
    keys: &Keyring,
) -> Result<Option<Webhook>> {
    db.row(
        &format!("SELECT {WEBHOOK_COLS} FROM webhook WHERE webhook_id = $1 AND tenant_id = $2"),
        args![id, tenant_id],
        |r| read_webhook(r, keys),
    )
    .await
}

/// Webhooks of a tenant, with the filters of `GET /api/v1/Webhook`.
pub(crate) async fn list(
    db: &mut impl Db,
    tenant_id: TenantId,
    filter: &WebhookFilter,
    keys: &Keyring,
) -> Result<Vec<Webhook>> {
    let mut q = Query::new(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook WHERE tenant_id = "
    ));
    q.bind(tenant_id);
    if let Some(name) = &filter.name {
        q.push(" AND name = ").bind(name);
    }
    if let Some(ev) = &filter.event {
        q.push(" AND webhook_id IN (SELECT webhook_id FROM webhook_event WHERE event = ")
            .bind(ev)
            .push(")");
    }
    if let Some(state) = filter.state.filter(|s| *s != WebhookState::Unknown) {
        q.push(" AND state = ").bind(state as i64);
    }
    q.push(" ORDER BY webhook_id");
    db.rows(&q.sql, q.args, |r| read_webhook(r, keys)).await
}

/// Usage counters of a webhook of a tenant.
pub(crate) async fn usage(
    db: &mut impl Db,
    tenant_id: TenantId,
    id: WebhookId,
) -> Result<Option<WebhookUsage>> {
    db.row(
        "SELECT u.total_calls, u.total_errors, u.consecutive_errors, u.last_error FROM webhook_usage u \
         JOIN webhook w ON w.webhook_id = u.webhook_usage_id WHERE w.webhook_id = $1 AND w.tenant_id = $2",
        args![id, tenant_id],
        |r| {
            Ok(WebhookUsage {
                total_calls: r.int(0)?,
                total_errors: r.int(1)?,
                consecutive_errors: r.int(2)?,
                last_error: r.opt_text(3)?,
            })
        },
    )
    .await
}

/// Creates or updates a webhook in the transaction `db`; a state change fires its state event
/// in the same transaction. The saved webhook and the state change, if any.
pub(crate) async fn save(
    db: &mut impl Fanout,
    actor: &Actor,
    mut hook: Webhook,
    zone: &LocalZone,
    keys: &Keyring,
) -> Result<(Webhook, Option<StateChange>)> {
    let now = now_ticks();
    let before = if hook.id == WebhookId::default() {
        None
    } else {
        let lock = db.lock_for_update();
        match load(db, hook.id, lock, keys).await? {
            Some(old) if old.tenant_id == actor.tenant_id => Some(old),
            _ => return Err(StoreError::NotFound),
        }
    };
    hook.tenant_id = actor.tenant_id;
    let events = hook.events.join(",");
    let (secret, headers) = sealed_fields(keys, &hook);
    match &before {
        None => {
            hook.registered = now;
            hook.registered_associate_id = actor.associate_id;
            hook.updated = 0;
            hook.updated_associate_id = 0;
            hook.updated_count = 0;
            hook.id = db
                .row(
                    "INSERT INTO webhook (tenant_id, name, events, target_url, secret, state, type, headers, properties, registered, registered_associate_id, updated, updated_associate_id, errors_email, \"updatedCount\", retry_policy, success_status) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, 0, $12, 0, $13, $14) RETURNING webhook_id",
                    args![
                        hook.tenant_id,
                        &hook.name,
                        events,
                        &hook.target_url,
                        secret,
                        hook.state as i64,
                        hook.kind.name(),
                        headers,
                        super::columns::map_text(&hook.properties),
                        hook.registered,
                        hook.registered_associate_id,
                        &hook.errors_email,
                        hook.retry_policy.map(RetryPolicy::name),
                        hook.success_status.map(SuccessRule::name),
                    ],
                    |r| r.int(0).map(WebhookId::new),
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt("a webhook insert answered no id".into()))?;
            db.exec(
                "INSERT INTO webhook_usage (webhook_usage_id, registered, registered_associate_id, updated) VALUES ($1, $2, $3, $4)",
                args![hook.id, now, actor.associate_id, now],
            )
            .await?;
        }
        Some(old) => {
            hook.registered = old.registered;
            hook.registered_associate_id = old.registered_associate_id;
            hook.updated = now;
            hook.updated_associate_id = actor.associate_id;
            hook.updated_count = (old.updated_count + 1) % 65536;
            db.exec(
                "UPDATE webhook SET name = $1, events = $2, target_url = $3, secret = $4, state = $5, type = $6, headers = $7, properties = $8, \
                 updated = $9, updated_associate_id = $10, errors_email = $11, \"updatedCount\" = $12, retry_policy = $13, success_status = $14 WHERE webhook_id = $15",
                args![
                    &hook.name,
                    events,
                    &hook.target_url,
                    secret,
                    hook.state as i64,
                    hook.kind.name(),
                    headers,
                    super::columns::map_text(&hook.properties),
                    hook.updated,
                    hook.updated_associate_id,
                    &hook.errors_email,
                    hook.updated_count,
                    hook.retry_policy.map(RetryPolicy::name),
                    hook.success_status.map(SuccessRule::name),
                    hook.id,
                ],
            )
            .await?;
            db.exec(
                "DELETE FROM webhook_event WHERE webhook_id = $1",
                args![hook.id],
            )
            .await?;
        }
    }
    let mut subscribed: Vec<&String> = hook.events.iter().collect();
    subscribed.sort();
    subscribed.dedup();
    for ev in subscribed {
        db.exec(
            "INSERT INTO webhook_event (event, webhook_id) VALUES ($1, $2)",
            args![ev, hook.id],
        )
        .await?;
    }
    let mut change = None;
    if let Some(old) = &before {
        if old.state != hook.state {
            if hook.state == WebhookState::Active {
                db.exec(
                    "UPDATE webhook_usage SET consecutive_errors = 0 WHERE webhook_usage_id = $1",
                    args![hook.id],
                )
                .await?;
            }
            fire_state_event(db, &hook, actor, now, zone).await?;
            change = Some(StateChange {
                webhook: hook.clone(),
                from: old.state,
                reason: None,
            });
        }
    }
    Ok((hook, change))
}

/// Removes a webhook of a tenant (its usage and subscriptions go with it) and cancels its open
/// deliveries, in the transaction `db`. False when there is no such webhook.
pub(crate) async fn delete(db: &mut impl Db, tenant_id: TenantId, id: WebhookId) -> Result<bool> {
    // The row lock first (as attempt records take it), then its deliveries.
    let lock = db.lock_for_update();
    let found = db
        .row(
            &format!(
                "SELECT webhook_id FROM webhook WHERE webhook_id = $1 AND tenant_id = $2{lock}"
            ),
            args![id, tenant_id],
            |r| r.int(0),
        )
        .await?;
    if found.is_none() {
        return Ok(false);
    }
    db.exec(
        "DELETE FROM webhook WHERE webhook_id = $1 AND tenant_id = $2",
        args![id, tenant_id],
    )
    .await?;
    db.exec(
        "UPDATE delivery SET status = 4, completed = $1, lease_until = NULL, lease_owner = NULL WHERE webhook_id = $2 AND status IN (0, 1)",
        args![now_ticks(), id],
    )
    .await?;
    Ok(true)
}

/// Sets a webhook's state (the state machine: TooManyErrors after too many failures or a 410)
/// and fires its state event, in the transaction `db`, which holds the webhook's row lock.
pub(crate) async fn set_state(
    db: &mut impl Fanout,
    hook: &mut Webhook,
    state: WebhookState,
    actor: &Actor,
    now: Ticks,
    zone: &LocalZone,
) -> Result<()> {
    hook.state = state;
    hook.updated = now;
    hook.updated_associate_id = actor.associate_id;
    db.exec(
        "UPDATE webhook SET state = $1, updated = $2, updated_associate_id = $3, \"updatedCount\" = \"updatedCount\" + 1 WHERE webhook_id = $4",
        args![state as i64, now, actor.associate_id, hook.id],
    )
    .await?;
    fire_state_event(db, hook, actor, now, zone).await
}

/// Fires `webhook{id}.<verb>` for `hook`, which just entered `hook.state`.
async fn fire_state_event(
    db: &mut impl Fanout,
    hook: &Webhook,
    actor: &Actor,
    now: Ticks,
    zone: &LocalZone,
) -> Result<()> {
    let calls = db
        .row(
            "SELECT total_calls FROM webhook_usage WHERE webhook_usage_id = $1",
            args![hook.id],
            |r| r.int(0),
        )
        .await?
        .unwrap_or(0);
    if let Some(ev) = state_event(hook, calls, zone) {
        db.emit(actor, ev, now).await?;
    }
    Ok(())
}
