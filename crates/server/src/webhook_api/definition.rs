//! Webhook definitions: the `default` carrier, list, create, read, replace, patch, delete,
//! and the rules a definition must meet to be saved.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmhooks_dispatch::send::{check_custom_headers, is_reserved_header};
use crmhooks_store::{Webhook, WebhookFilter, WebhookId, WebhookState, WebhookType};
use serde::Deserialize;

use super::{load, parse_id, NOT_A_WEBHOOK};
use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery, JsonBody};
use crate::carriers::field::{read_object, Field, Spelling};
use crate::carriers::webhook::{unsupported_type, WebhookCarrier, WebhookInput, WebhookWithLinks};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::{patch, AppState};

/// The rules a definition must meet beyond its properties' types: what it needs, what the
/// target policy allows, headers that do not replace the standard ones.
pub(super) fn validate(hook: &Webhook, state: &AppState) -> ApiResult<()> {
    if hook.name.trim().is_empty() {
        return Err(ApiError::invalid_field("Name", "is required"));
    }
    if hook.events.is_empty() {
        return Err(ApiError::invalid_field(
            "Events",
            "must name at least one event",
        ));
    }
    if hook.kind != WebhookType::Webhook {
        return Err(unsupported_type(hook.kind.name()));
    }
    state
        .dispatcher
        .check_target(&hook.target_url)
        .map_err(|e| ApiError::invalid_field("TargetUrl", e))?;
    if let Some(headers) = &hook.headers {
        for (k, v) in headers {
            let field = format!("Headers.{k}");
            if is_reserved_header(k) {
                return Err(ApiError::invalid_field(
                    &field,
                    "may not replace a standard header",
                ));
            }
            let Some(s) = v.as_str() else {
                return Err(ApiError::invalid_field(&field, "must be a string"));
            };
            if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(s).is_err()
            {
                return Err(ApiError::invalid_field(
                    &field,
                    "is not a valid HTTP header",
                ));
            }
        }
        // How many, how large, and no header that frames the message or concerns the
        // connection: what a delivery would fail on.
        check_custom_headers(headers).map_err(|e| ApiError::invalid_field("Headers", e))?;
    }
    if let Some(p) = &hook.properties {
        if serde_json::to_string(p).map_or(0, |s| s.len()) > 64 * 1024 {
            return Err(ApiError::invalid_field(
                "Properties",
                "is larger than 64 KiB",
            ));
        }
    }
    if let Some(e) = &hook.errors_email {
        if !e.contains('@') {
            return Err(ApiError::invalid_field(
                "ErrorsEmail",
                "is not a mail address",
            ));
        }
    }
    Ok(())
}

/// Writes `input` over `hook` and checks the result.
pub(super) fn apply(input: &WebhookInput, hook: &mut Webhook, state: &AppState) -> ApiResult<()> {
    input.apply_to(hook)?;
    validate(hook, state)
}

/// Saves after the test POST of spec 4.4 (Active webhooks only); answers with the stored
/// webhook and its links.
async fn save(state: &AppState, auth: &Auth, hook: Webhook) -> ApiResult<Response> {
    let saved = save_hook(state, auth, hook).await?;
    Ok(answer(state, &saved))
}

/// Saves after the test POST of spec 4.4 (Active webhooks only); the stored webhook.
pub(crate) async fn save_hook(state: &AppState, auth: &Auth, hook: Webhook) -> ApiResult<Webhook> {
    if state.test_on_save && hook.state == WebhookState::Active {
        let (ok, message) = state
            .dispatcher
            .send_test(&hook, &auth.actor.tenant, auth.actor.associate_id)
            .await;
        if !ok {
            return Err(ApiError::new(
                ErrorCode::WebhookTestFailed,
                format!("the test event to TargetUrl did not succeed, so the webhook was not saved. Receiver answer: {message}"),
            ));
        }
    }
    // The version before, for the audit log's summary of what changed.
    let old = match hook.id {
        id if id == WebhookId::default() => None,
        id => state.store.get_webhook(auth.actor.tenant_id, id).await?,
    };
    let (saved, change) = state.store.save_webhook(&auth.actor, hook).await?;
    if let Some(change) = &change {
        crmhooks_dispatch::meter::state_change(change.webhook.state.name());
        state.wake();
    }
    crate::audit::webhook_saved(state, auth, old.as_ref(), &saved).await;
    Ok(saved)
}

/// A new webhook from `input` (what `POST /Webhook` and the agent's SaveWebhook with id 0 do).
pub(crate) async fn create_hook(
    state: &AppState,
    auth: &Auth,
    input: &WebhookInput,
) -> ApiResult<Webhook> {
    let mut hook = Webhook::default_for(auth.actor.tenant_id);
    hook.events = Vec::new();
    apply(input, &mut hook, state)?;
    save_hook(state, auth, hook).await
}

/// Webhook `id` replaced by `input` (what `PUT /Webhook/{id}` and the agent's SaveWebhook do).
pub(crate) async fn replace_hook(
    state: &AppState,
    auth: &Auth,
    id: &str,
    input: WebhookInput,
) -> ApiResult<Webhook> {
    let mut hook = load(state, auth, id).await?;
    apply(&input.replacing(), &mut hook, state)?;
    save_hook(state, auth, hook).await
}

/// The webhooks of the caller's tenant that pass SuperOffice's three filters (empty ones
/// filter nothing; a status of `Unknown` neither).
pub(crate) async fn list_hooks(
    state: &AppState,
    auth: &Auth,
    name: Option<String>,
    event: Option<String>,
    status: Option<&str>,
) -> ApiResult<Vec<Webhook>> {
    let status = match status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(WebhookState::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("statusFilter {s:?}: use Unknown, Active, Stopped or TooManyErrors"),
            )
        })?),
    };
    let filter = WebhookFilter {
        name: name.filter(|s| !s.is_empty()),
        event: event.filter(|s| !s.is_empty()),
        state: status,
    };
    Ok(state
        .store
        .list_webhooks(auth.actor.tenant_id, &filter)
        .await?)
}

/// A stored webhook as the routes that name it answer it.
fn answer(state: &AppState, hook: &Webhook) -> Response {
    Json(WebhookWithLinks::of(
        hook,
        &state.zone,
        &state.base_url,
        state.reveal_headers,
    ))
    .into_response()
}

#[utoipa::path(get, path = "/Webhook/default", tag = "Webhook", operation_id = "GetDefaultWebhook",
    summary = "A new webhook's defaults",
    responses((status = 200, description = "A new webhook's defaults (not saved).", body = WebhookCarrier)))]
pub(super) async fn get_default(State(state): State<AppState>, auth: Auth) -> Response {
    let hook = Webhook::default_for(auth.actor.tenant_id);
    Json(WebhookCarrier::of(&hook, &state.zone, state.reveal_headers)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    name_filter: Option<String>,
    event_filter: Option<String>,
    status_filter: Option<String>,
}

#[utoipa::path(get, path = "/Webhook", tag = "Webhook", operation_id = "ListWebhooks",
    summary = "List webhooks",
    params(
        ("nameFilter" = Option<String>, Query, description = "Exact name."),
        ("eventFilter" = Option<String>, Query, description = "Subscribed to this event."),
        ("statusFilter" = Option<String>, Query, description = "`Active`, `Stopped` or `TooManyErrors`."),
    ),
    responses((status = 200, description = "The webhooks of the key's tenant (without `_Links`).", body = Vec<WebhookCarrier>)))]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let hooks = list_hooks(
        &state,
        &auth,
        q.name_filter,
        q.event_filter,
        q.status_filter.as_deref(),
    )
    .await?;
    let carriers: Vec<WebhookCarrier<'_>> = hooks
        .iter()
        .map(|h| WebhookCarrier::of(h, &state.zone, state.reveal_headers))
        .collect();
    Ok(Json(carriers).into_response())
}

#[utoipa::path(post, path = "/Webhook", tag = "Webhook", operation_id = "CreateWebhook",
    summary = "Create a webhook",
    request_body = WebhookInput,
    responses((status = 200, description = "The saved webhook. An Active one is saved only after a test event to `TargetUrl` succeeded (else 400 `WebhookTestFailed`).", body = WebhookWithLinks)))]
pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let input: WebhookInput = read_object(body, Spelling::FirstWins, NOT_A_WEBHOOK)?;
    let saved = create_hook(&state, &auth, &input).await?;
    Ok(answer(&state, &saved))
}

#[utoipa::path(get, path = "/Webhook/{id}", tag = "Webhook", operation_id = "GetWebhook",
    summary = "Get a webhook",
    params(("id" = i32, Path, description = "The webhook.")),
    responses((status = 200, description = "The webhook.", body = WebhookWithLinks)))]
pub(super) async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let hook = load(&state, &auth, &id).await?;
    Ok(answer(&state, &hook))
}

#[utoipa::path(put, path = "/Webhook/{id}", tag = "Webhook", operation_id = "ReplaceWebhook",
    summary = "Replace a webhook",
    params(("id" = i32, Path, description = "The webhook.")), request_body = WebhookInput,
    responses((status = 200, description = "The saved webhook; properties left out take their defaults, except `Secret`.", body = WebhookWithLinks)))]
pub(super) async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let input: WebhookInput = read_object(body, Spelling::FirstWins, NOT_A_WEBHOOK)?;
    let saved = replace_hook(&state, &auth, &id, input).await?;
    Ok(answer(&state, &saved))
}

/// A JSON Patch or Merge Patch applies to the carrier as a GET answers it (`"Secret": null`
/// included). What the patch removed (a Merge Patch `null`, a JSON Patch `remove`) is gone
/// from the patched document and takes its default, as in a PUT. `Secret` follows the PUT's
/// rule too (`null` keeps it, `""` removes it), with one addition: a JSON Patch `remove` of
/// `/Secret` removes it. A Merge Patch `"Secret": null` keeps it, since a client that sends
/// back what a GET answered sends exactly that.
#[utoipa::path(patch, path = "/Webhook/{id}", tag = "Webhook", operation_id = "PatchWebhook",
    summary = "Patch a webhook",
    description = "A JSON Patch (array) or Merge Patch (object) of the webhook as a GET answers it. What the patch removes takes its default, as in a PUT; `Secret` follows the PUT's rule (`null` keeps it, `\"\"` removes it), and a JSON Patch `remove` of `/Secret` removes it.",
    params(("id" = i32, Path, description = "The webhook.")), request_body = crate::openapi::schemas::PatchBody,
    responses(
        (status = 200, description = "The saved webhook.", body = WebhookWithLinks),
        (status = 409, description = "A JSON Patch `test` failed.", body = crate::error::ErrorBody),
    ))]
pub(super) async fn patch_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let mut hook = load(&state, &auth, &id).await?;
    let mut doc =
        serde_json::to_value(WebhookCarrier::of(&hook, &state.zone, state.reveal_headers))
            .map_err(ApiError::internal)?;
    patch::apply(&mut doc, &body).map_err(patch::PatchError::into_api)?;
    let secret_removed = body.is_array()
        && doc
            .as_object()
            .is_some_and(|m| !m.keys().any(|k| k.eq_ignore_ascii_case("Secret")));
    let mut input: WebhookInput = read_object(doc, Spelling::FirstWins, NOT_A_WEBHOOK)?;
    if secret_removed {
        input.secret = Field::Set(String::new());
    }
    apply(&input.replacing(), &mut hook, &state)?;
    save(&state, &auth, hook).await
}

#[utoipa::path(delete, path = "/Webhook/{id}", tag = "Webhook", operation_id = "DeleteWebhook",
    summary = "Delete a webhook",
    params(("id" = i32, Path, description = "The webhook.")), responses((status = 204, description = "Deleted; its pending deliveries are cancelled.")))]
pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if delete_hook(&state, &auth, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("webhook {id} not found")))
    }
}

/// Deletes webhook `id` of the caller's tenant and records it; false if there is none.
pub(crate) async fn delete_hook(state: &AppState, auth: &Auth, id: WebhookId) -> ApiResult<bool> {
    let old = state.store.get_webhook(auth.actor.tenant_id, id).await?;
    let deleted = state.store.delete_webhook(auth.actor.tenant_id, id).await?;
    if deleted {
        let name = old.map(|h| h.name).unwrap_or_default();
        crate::audit::by(
            state,
            auth,
            "webhook.deleted",
            format!("webhook/{id}"),
            format!("Name {name:?}"),
        )
        .await;
    }
    Ok(deleted)
}
