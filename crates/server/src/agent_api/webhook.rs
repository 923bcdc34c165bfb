//! The Webhook agent: CreateDefaultWebhook, SaveWebhook, DeleteWebhook, GetWebhook,
//! GetAllWebhooks, TestWebhook, SignalEvent, GetLastError.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmhooks_store::{Webhook, WebhookId};
use serde_json::Value;

use super::{selected, Call};
use crate::auth::Auth;
use crate::carriers::field::{read_object, Spelling};
use crate::carriers::webhook::{WebhookCarrier, WebhookInput};
use crate::error::{ApiError, ApiResult};
use crate::webhook_api::{definition, log, signal, NOT_A_WEBHOOK};
use crate::AppState;

/// The id parameter of GetWebhook and DeleteWebhook.
const ID: &str = "webhookId";

fn carrier(state: &AppState, hook: &Webhook) -> ApiResult<Value> {
    serde_json::to_value(WebhookCarrier::of(hook, &state.zone, state.reveal_headers))
        .map_err(ApiError::internal)
}

/// A text filter of GetAllWebhooks (absent, null and "" filter nothing).
fn text(req: &serde_json::Map<String, Value>, name: &str) -> ApiResult<Option<String>> {
    match req.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        None | Some((_, Value::Null)) => Ok(None),
        Some((_, Value::String(s))) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid_field(name, "must be a string")),
    }
}

/// Runs method `method` of the Webhook agent; `None` when it has no such method.
pub(super) async fn call(
    state: &AppState,
    auth: &Auth,
    method: &str,
    call: &Call,
) -> ApiResult<Option<Response>> {
    let select = call.select();
    let answer = |v: Value| Json(selected(v, select.as_deref())).into_response();
    let m = method.to_ascii_lowercase();
    Ok(Some(match m.as_str() {
        "createdefaultwebhook" => {
            answer(carrier(state, &Webhook::default_for(auth.actor.tenant_id))?)
        }
        "savewebhook" => {
            let body = call.entity("SaveWebhook", "Webhook")?;
            let id = call.body_int("WebhookId")?;
            let input: WebhookInput = read_object(body, Spelling::FirstWins, NOT_A_WEBHOOK)?;
            let saved = if id == 0 {
                definition::create_hook(state, auth, &input).await?
            } else {
                definition::replace_hook(state, auth, &id.to_string(), input).await?
            };
            answer(carrier(state, &saved)?)
        }
        "deletewebhook" => {
            let id = WebhookId::new(call.id(ID)?);
            if !definition::delete_hook(state, auth, id).await? {
                return Err(ApiError::not_found(format!("webhook {id} not found")));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        "getwebhook" => {
            let id = WebhookId::new(call.id(ID)?);
            match state.store.get_webhook(auth.actor.tenant_id, id).await? {
                Some(hook) => answer(carrier(state, &hook)?),
                None => Json(Value::Null).into_response(),
            }
        }
        "getallwebhooks" => {
            let req = call.request()?;
            let status = text(&req, "StatusFilter")?;
            let hooks = definition::list_hooks(
                state,
                auth,
                text(&req, "NameFilter")?,
                text(&req, "EventFilter")?,
                status.as_deref(),
            )
            .await?;
            let list = hooks
                .iter()
                .map(|h| carrier(state, h))
                .collect::<ApiResult<Vec<Value>>>()?;
            answer(Value::Array(list))
        }
        "testwebhook" => {
            // `{"Webhook": {…}}` as documented; a bare Webhook is taken too.
            let wrapped = call.body_property("Webhook").cloned();
            let body = match wrapped {
                Some(w) => w,
                None if call.body_property("TargetUrl").is_some() => {
                    call.body.clone().unwrap_or_default()
                }
                None => {
                    return Err(ApiError::invalid_field(
                        "Webhook",
                        "is required: the definition to ping, with a TargetUrl",
                    ))
                }
            };
            let input: WebhookInput = read_object(body, Spelling::FirstWins, NOT_A_WEBHOOK)?;
            let result = signal::test_hook(state, auth, &input).await?;
            answer(serde_json::to_value(result).map_err(ApiError::internal)?)
        }
        "signalevent" => {
            call.request()?;
            let event = call
                .body_property("EventName")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid_field("EventName", "is required (a string)"))?
                .to_owned();
            let pk = call.body_int("PrimaryKey")?;
            let data = match call.body_property("Data") {
                None => serde_json::Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(_) => return Err(ApiError::invalid_field("Data", "must be an object")),
            };
            signal::signal_event(state, auth, event, pk, data).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        "getlasterror" => {
            let id = call.id("WebhookId")?;
            let usage = log::usage_of(state, auth, &id.to_string()).await?;
            Json(Value::String(usage.last_error.unwrap_or_default())).into_response()
        }
        _ => return Ok(None),
    }))
}
