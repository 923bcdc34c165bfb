//! The audit log: every management call (webhook created, changed, started, stopped, deleted,
//! replayed, resent; key created, revoked) with tenant, key, time, action, target and a
//! summary of what changed (field names and states, never a secret nor a header value).
//! `GET /api/v1/AuditLog` reads the caller's tenant's, newest first; maintenance prunes it
//! with the event log (`event_retention_days`).
//!
//! An entry is written after the call's own commit: a call whose entry cannot be written
//! (the database went away in between) is logged as a warning, not undone.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use crmhooks_store::{ticks_rfc3339, NewAudit, Webhook, WebhookState};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::body::ApiQuery;
use crate::error::ApiResult;
use crate::AppState;

/// Records `entry`; a failure is logged, not answered (the call itself is done).
pub async fn record(state: &AppState, entry: NewAudit) {
    if let Err(e) = state.store.record_audit(&entry).await {
        tracing::warn!(error = %e, action = %entry.action, target = %entry.target, "cannot write the audit entry");
    }
}

/// Records `action` on `target` by the caller `auth`, in its tenant.
pub async fn by(state: &AppState, auth: &Auth, action: &str, target: String, summary: String) {
    record(
        state,
        NewAudit {
            tenant_id: auth.actor.tenant_id,
            key_id: Some(auth.key_id),
            associate_id: auth.actor.associate_id,
            action: action.to_owned(),
            target,
            summary,
        },
    )
    .await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

/// An entry as clients read it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = AuditEntry, examples(json!({"Id": 7, "At": "2026-12-05T08:00:00Z", "KeyId": 1, "AssociateId": 1, "Action": "webhook.changed", "Target": "webhook 3", "Summary": "State: Active -> Stopped"})))]
pub(crate) struct AuditCarrier {
    /// The entry; newest first, so `?before=` the last id seen pages on.
    id: i64,
    /// When (RFC 3339, UTC).
    at: String,
    /// The key that made the call, if any.
    key_id: Option<i64>,
    /// The key's associate.
    associate_id: i64,
    /// `webhook.created`, `webhook.changed`, `key.revoked`, …
    action: String,
    /// What it acted on.
    target: String,
    /// What changed: field names and states, never a secret nor a header value.
    summary: String,
}

#[utoipa::path(get, path = "/AuditLog", tag = "Admin", operation_id = "ListAuditLog",
    summary = "The tenant's audit log",
    params(
        ("before" = Option<i64>, Query, description = "Only entries with a smaller id: the next page."),
        ("limit" = Option<i64>, Query, description = "At most this many (1 to 1000, default 100)."),
    ),
    responses((status = 200, description = "Management calls of the key's tenant, newest first.", body = Vec<AuditCarrier>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditCarrier>>> {
    let entries = state
        .store
        .list_audit(
            auth.actor.tenant_id,
            q.before,
            q.limit.unwrap_or(100).clamp(1, 1000),
        )
        .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditCarrier {
                id: e.id,
                at: ticks_rfc3339(e.at),
                key_id: e.key_id,
                associate_id: e.associate_id,
                action: e.action,
                target: e.target,
                summary: e.summary,
            })
            .collect(),
    ))
}

/// The audit log's operation (nested under `/api/v1` in [`crate::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct Doc;

/// `GET /AuditLog?before=ID&limit=N` (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/AuditLog", get(list))
}

/// The API names of the fields that differ between two versions of a webhook (values are
/// not told: `Secret` and `Headers` may carry credentials).
pub fn webhook_changes(old: &Webhook, new: &Webhook) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut note = |differs: bool, name: &'static str| {
        if differs {
            out.push(name);
        }
    };
    note(old.name != new.name, "Name");
    note(old.events != new.events, "Events");
    note(old.target_url != new.target_url, "TargetUrl");
    note(old.secret != new.secret, "Secret");
    note(old.state != new.state, "State");
    note(old.kind != new.kind, "Type");
    note(old.headers != new.headers, "Headers");
    note(old.properties != new.properties, "Properties");
    note(old.errors_email != new.errors_email, "ErrorsEmail");
    note(old.retry_policy != new.retry_policy, "RetryPolicy");
    note(old.success_status != new.success_status, "SuccessStatus");
    out
}

/// Records a saved webhook: `webhook.created` (no `old`), `webhook.started` or
/// `webhook.stopped` (its state changed so), else `webhook.changed`.
pub async fn webhook_saved(state: &AppState, auth: &Auth, old: Option<&Webhook>, new: &Webhook) {
    let (action, summary) = match old {
        None => (
            "webhook.created",
            format!(
                "Name {:?}, Events {}, State {}, Type {}",
                new.name,
                new.events.join(","),
                new.state.name(),
                new.kind
            ),
        ),
        Some(old) => {
            let changed = webhook_changes(old, new);
            let action = match (old.state == new.state, new.state) {
                (false, WebhookState::Active) => "webhook.started",
                (false, WebhookState::Stopped) => "webhook.stopped",
                _ => "webhook.changed",
            };
            let mut summary = if changed.is_empty() {
                "nothing changed".to_owned()
            } else {
                format!("changed {}", changed.join(", "))
            };
            if old.state != new.state {
                summary.push_str(&format!(
                    "; State {} -> {}",
                    old.state.name(),
                    new.state.name()
                ));
            }
            (action, summary)
        }
    };
    by(state, auth, action, format!("webhook/{}", new.id), summary).await;
}
