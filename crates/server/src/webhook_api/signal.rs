//! `POST /Webhook/Test`, a test event to a definition that is not saved, and
//! `POST /Webhook/{event}/{pk}`, an event signalled by the client.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use crmhooks_store::{NewEvent, Webhook};
use serde_json::{Map, Value};

use super::definition::apply;
use super::NOT_A_WEBHOOK;
use crate::auth::Auth;
use crate::body::{ApiPath, JsonBody, OptionalJsonBody};
use crate::carriers::field::{read_object, Spelling};
use crate::carriers::webhook::{FieldProperties, WebhookInput, WebhookResult};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

#[utoipa::path(post, path = "/Webhook/Test", tag = "Webhook", operation_id = "TestWebhook",
    summary = "Send a test event to a definition",
    request_body = WebhookInput,
    responses((status = 200, description = "How the receiver answered the `test` event (the definition is not saved).", body = WebhookResult)))]
pub(super) async fn test(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<WebhookResult>> {
    let input: WebhookInput = read_object(body, Spelling::FirstWins, NOT_A_WEBHOOK)?;
    Ok(Json(test_hook(&state, &auth, &input).await?))
}

/// Sends a `test` event to the definition `input` (not saved) and tells how it went.
pub(crate) async fn test_hook(
    state: &AppState,
    auth: &Auth,
    input: &WebhookInput,
) -> ApiResult<WebhookResult> {
    let mut hook = Webhook::default_for(auth.actor.tenant_id);
    if input.name.is_absent() {
        hook.name = "test".into();
    }
    apply(input, &mut hook, state)?;
    let (success, message) = state
        .dispatcher
        .send_test(&hook, &auth.actor.tenant, auth.actor.associate_id)
        .await;
    Ok(WebhookResult {
        success,
        message,
        table_right: (),
        field_properties: FieldProperties::default(),
    })
}

#[utoipa::path(post, path = "/Webhook/{eventName}/{primaryKey}", tag = "Webhook", operation_id = "SignalEvent",
    summary = "Signal an event",
    params(
        ("eventName" = String, Path, description = "The event name (1 to 255 characters, no comma), e.g. `invoice.paid`."),
        ("primaryKey" = i32, Path, description = "The primary key of the row the event is about."),
    ),
    request_body(content = Option<Object>, description = "Free-form data: its keys become `Changes`, the object `FieldValues`."),
    responses((status = 204, description = "Committed; deliveries follow.")))]
pub(super) async fn signal(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((event, pk)): ApiPath<(String, String)>,
    OptionalJsonBody(parsed): OptionalJsonBody,
) -> ApiResult<StatusCode> {
    let pk: i64 = pk.parse::<i32>().map(i64::from).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("primary key {pk:?} is not an int32"),
        )
    })?;
    // The event's data is free-form: any JSON object, or nothing.
    let data = match parsed {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "the event data must be a JSON object",
            ))
        }
    };
    signal_event(&state, &auth, event, pk, data).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fires `event` for primary key `pk` with `data` to every subscribed webhook (SignalEvent).
pub(crate) async fn signal_event(
    state: &AppState,
    auth: &Auth,
    event: String,
    pk: i64,
    data: Map<String, Value>,
) -> ApiResult<()> {
    if event.is_empty() || event.len() > 255 || event.contains(',') {
        return Err(ApiError::new(
            ErrorCode::InvalidEvent,
            "the event name must be 1 to 255 characters without commas",
        ));
    }
    let entity = event.split('.').next().unwrap_or_default().to_owned();
    let committed = state
        .store
        .emit(
            &auth.actor,
            NewEvent {
                changes: data.keys().cloned().collect(),
                field_values: if data.is_empty() {
                    None
                } else {
                    serde_json::to_string(&data).ok()
                },
                order_key: format!("{entity}:{pk}"),
                event,
                entity,
                primary_key: pk,
                values: None,
            },
        )
        .await?;
    state.count_event(&auth.actor, "signal", "signal", &committed);
    if committed.deliveries > committed.handed + committed.behind {
        state.wake();
    }
    Ok(())
}
