//! `/api/v1/Webhook`: definitions (spec 5), test and signal, and our additions: usage,
//! the delivery log, and replay.
//!
//! `Secret` is write-only: accepted on POST, PUT and PATCH, never returned (responses carry
//! `"Secret": null`). A PUT or PATCH without `Secret` keeps the stored one; an explicit empty
//! string or null removes it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use crmhooks_dispatch::policy::POLICY_NAMES;
use crmhooks_dispatch::send::is_reserved_header;
use crmhooks_dispatch::{check_url, SuccessRule};
use crmhooks_store::{
    render_date, DeliveryFilter, DeliveryStatus, NewEvent, ReplayRequest, Ticks, Webhook,
    WebhookFilter, WebhookState,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery, JsonBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::{patch, AppState};

fn date(ticks: Ticks, offset: time::UtcOffset) -> Value {
    if ticks == 0 {
        Value::String(crmhooks_payload::NetDateTime::MIN.to_string())
    } else {
        Value::String(render_date(Some(ticks), Some(offset)))
    }
}

fn associate(id: i64) -> Value {
    if id == 0 {
        Value::Null
    } else {
        json!({"AssociateId": id})
    }
}

/// The `Webhook` carrier (spec 4.1), with `_Links` when `links`.
pub fn webhook_json(h: &Webhook, offset: time::UtcOffset, base: &str, links: bool) -> Value {
    let mut v = json!({
        "WebhookId": h.id,
        "Name": if h.id == 0 && h.name.is_empty() { Value::Null } else { Value::String(h.name.clone()) },
        "Events": h.events,
        "ErrorsEmail": h.errors_email,
        "TargetUrl": if h.target_url.is_empty() { Value::Null } else { Value::String(h.target_url.clone()) },
        "Secret": Value::Null,
        "State": h.state.name(),
        "Type": h.kind,
        "Headers": h.headers,
        "Properties": h.properties,
        "Registered": date(h.registered, offset),
        "RegisteredAssociate": associate(h.registered_associate_id),
        "Updated": date(h.updated, offset),
        "UpdatedAssociate": associate(h.updated_associate_id),
        "RetryPolicy": h.retry_policy,
        "SuccessStatus": h.success_status,
    });
    if links && h.id != 0 {
        if let Value::Object(m) = &mut v {
            m.insert(
                "_Links".into(),
                json!({"Self": format!("{base}/api/v1/Webhook/{}", h.id), "Archive": format!("{base}/api/v1/Webhook/{}", h.id)}),
            );
        }
    }
    v
}

fn str_field(m: &Map<String, Value>, name: &str) -> Option<Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn opt_string(field: &str, v: Option<Value>, max: usize) -> ApiResult<Option<Option<String>>> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                Err(ApiError::invalid_field(
                    field,
                    format!("is longer than {max} characters"),
                ))
            } else {
                Ok(Some(Some(s)))
            }
        }
        Some(_) => Err(ApiError::invalid_field(field, "must be a string")),
    }
}

fn opt_map(field: &str, v: Option<Value>) -> ApiResult<Option<Option<Map<String, Value>>>> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Object(m)) => Ok(Some(if m.is_empty() { None } else { Some(m) })),
        Some(_) => Err(ApiError::invalid_field(field, "must be an object")),
    }
}

/// Writes the properties present in `body` over `hook` and validates the result.
fn apply_body(
    hook: &mut Webhook,
    body: &Map<String, Value>,
    full: bool,
    state: &AppState,
) -> ApiResult<()> {
    let get = |name: &str| {
        let v = str_field(body, name);
        // PUT replaces the entity: absent properties take their defaults (but Secret is kept).
        if v.is_none() && full && name != "Secret" {
            Some(Value::Null)
        } else {
            v
        }
    };
    if let Some(v) = opt_string("Name", get("Name"), 400)? {
        hook.name = v.unwrap_or_default();
    }
    match get("Events") {
        None => {}
        Some(Value::Null) => hook.events = Vec::new(),
        Some(Value::Array(items)) => {
            let mut events = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let s = it
                    .as_str()
                    .ok_or_else(|| {
                        ApiError::invalid_field(&format!("Events[{i}]"), "must be a string")
                    })?
                    .trim();
                if s.is_empty() || s.contains(',') || s.len() > 255 {
                    return Err(ApiError::invalid_field(
                        &format!("Events[{i}]"),
                        "must be a non-empty event name without commas, at most 255 characters",
                    ));
                }
                events.push(s.to_owned());
            }
            if events.join(",").chars().count() > 4000 {
                return Err(ApiError::invalid_field(
                    "Events",
                    "is longer than 4000 characters in total",
                ));
            }
            hook.events = events;
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "Events",
                "must be an array of event names",
            ))
        }
    }
    if let Some(v) = opt_string("TargetUrl", get("TargetUrl"), 4000)? {
        hook.target_url = v.unwrap_or_default();
    }
    if let Some(v) = opt_string("Secret", get("Secret"), 400)? {
        hook.secret = v.filter(|s| !s.is_empty());
    }
    match get("State") {
        None => {}
        Some(Value::Null) => hook.state = WebhookState::Active,
        Some(Value::String(s)) => {
            hook.state = WebhookState::parse(&s)
                .filter(|s| *s != WebhookState::Unknown)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "State",
                        format!("{s:?} is not Active, Stopped or TooManyErrors"),
                    )
                })?
        }
        Some(Value::Number(n)) => {
            hook.state = n
                .as_i64()
                .map(WebhookState::from_i64)
                .filter(|s| *s != WebhookState::Unknown)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "State",
                        "must be 1 (Active), 2 (Stopped) or 3 (TooManyErrors)",
                    )
                })?
        }
        Some(_) => return Err(ApiError::invalid_field("State", "must be a state name")),
    }
    if let Some(v) = opt_string("Type", get("Type"), 100)? {
        hook.kind = v.unwrap_or_else(|| "webhook".into());
    }
    if let Some(v) = opt_map("Headers", get("Headers"))? {
        hook.headers = v;
    }
    if let Some(v) = opt_map("Properties", get("Properties"))? {
        hook.properties = v;
    }
    if let Some(v) = opt_string("ErrorsEmail", get("ErrorsEmail"), 239)? {
        hook.errors_email = v.filter(|s| !s.is_empty());
    }
    if let Some(v) = opt_string("RetryPolicy", get("RetryPolicy"), 40)? {
        hook.retry_policy = v.filter(|s| !s.is_empty());
    }
    if let Some(v) = opt_string("SuccessStatus", get("SuccessStatus"), 10)? {
        hook.success_status = v.filter(|s| !s.is_empty());
    }
    validate(hook, state)
}

fn validate(hook: &Webhook, state: &AppState) -> ApiResult<()> {
    if hook.name.trim().is_empty() {
        return Err(ApiError::invalid_field("Name", "is required"));
    }
    if hook.events.is_empty() {
        return Err(ApiError::invalid_field(
            "Events",
            "must name at least one event",
        ));
    }
    if hook.kind != "webhook" {
        return Err(ApiError::invalid_field(
            "Type",
            format!(
                "{:?} is not supported; crmhooks delivers type \"webhook\" (HTTP POST)",
                hook.kind
            ),
        ));
    }
    check_url(state.dispatcher.config().target_policy, &hook.target_url)
        .map_err(|e| ApiError::invalid_field("TargetUrl", e))?;
    if let Some(headers) = &hook.headers {
        for (k, v) in headers {
            if is_reserved_header(k) {
                return Err(ApiError::invalid_field(
                    &format!("Headers.{k}"),
                    "may not replace a standard header",
                ));
            }
            let Value::String(s) = v else {
                return Err(ApiError::invalid_field(
                    &format!("Headers.{k}"),
                    "must be a string",
                ));
            };
            if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(s).is_err()
            {
                return Err(ApiError::invalid_field(
                    &format!("Headers.{k}"),
                    "is not a valid HTTP header",
                ));
            }
        }
    }
    if let Some(p) = &hook.properties {
        if Value::Object(p.clone()).to_string().len() > 64 * 1024 {
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
    if let Some(p) = &hook.retry_policy {
        if !POLICY_NAMES.contains(&p.as_str()) {
            return Err(ApiError::invalid_field(
                "RetryPolicy",
                format!("{p:?}: use one of {POLICY_NAMES:?}"),
            ));
        }
    }
    if let Some(s) = &hook.success_status {
        if SuccessRule::parse(s).is_none() {
            return Err(ApiError::invalid_field(
                "SuccessStatus",
                format!("{s:?}: use \"200\" or \"2xx\""),
            ));
        }
    }
    Ok(())
}

/// Saves after the test POST of spec 4.4 (Active webhooks only).
async fn save(state: &AppState, auth: &Auth, hook: Webhook) -> ApiResult<Json<Value>> {
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
    let (saved, change) = state.store.save_webhook(&auth.actor, hook).await?;
    if change.is_some() {
        state.wake();
    }
    Ok(Json(webhook_json(
        &saved,
        state.offset,
        &state.base_url,
        true,
    )))
}

fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i32>().map(i64::from).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("webhook id {raw:?} is not an int32"),
        )
    })
}

async fn load(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Webhook> {
    let id = parse_id(id)?;
    state
        .store
        .get_webhook(auth.actor.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))
}

async fn get_default(State(state): State<AppState>, auth: Auth) -> Json<Value> {
    Json(webhook_json(
        &Webhook::default_for(auth.actor.tenant_id),
        state.offset,
        &state.base_url,
        false,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    name_filter: Option<String>,
    event_filter: Option<String>,
    status_filter: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let status = match q.status_filter.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(WebhookState::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("statusFilter {s:?}: use Unknown, Active, Stopped or TooManyErrors"),
            )
        })?),
    };
    let filter = WebhookFilter {
        name: q.name_filter.filter(|s| !s.is_empty()),
        event: q.event_filter.filter(|s| !s.is_empty()),
        state: status,
    };
    let hooks = state
        .store
        .list_webhooks(auth.actor.tenant_id, &filter)
        .await?;
    Ok(Json(Value::Array(
        hooks
            .iter()
            .map(|h| webhook_json(h, state.offset, &state.base_url, false))
            .collect(),
    )))
}

fn object(body: Value) -> ApiResult<Map<String, Value>> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::new(
            ErrorCode::InvalidBody,
            "the body must be a Webhook JSON object",
        )),
    }
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let body = object(body)?;
    let mut hook = Webhook::default_for(auth.actor.tenant_id);
    hook.events = Vec::new();
    apply_body(&mut hook, &body, false, &state)?;
    save(&state, &auth, hook).await
}

async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let hook = load(&state, &auth, &id).await?;
    Ok(Json(webhook_json(
        &hook,
        state.offset,
        &state.base_url,
        true,
    )))
}

async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let mut hook = load(&state, &auth, &id).await?;
    let body = object(body)?;
    apply_body(&mut hook, &body, true, &state)?;
    save(&state, &auth, hook).await
}

async fn patch_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let mut hook = load(&state, &auth, &id).await?;
    let mut doc = webhook_json(&hook, state.offset, &state.base_url, false);
    if let Value::Object(m) = &mut doc {
        m.remove("Secret");
    }
    patch::apply(&mut doc, &body).map_err(|e| match e {
        patch::PatchError::Invalid(m) => ApiError::new(ErrorCode::InvalidBody, m),
        patch::PatchError::TestFailed(m) => ApiError::conflict(m),
    })?;
    let doc = object(doc)?;
    apply_body(&mut hook, &doc, false, &state)?;
    save(&state, &auth, hook).await
}

async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if state.store.delete_webhook(auth.actor.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("webhook {id} not found")))
    }
}

async fn test(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let body = object(body)?;
    let mut hook = Webhook::default_for(auth.actor.tenant_id);
    if str_field(&body, "Name").is_none() {
        hook.name = "test".into();
    }
    apply_body(&mut hook, &body, false, &state)?;
    let (ok, message) = state
        .dispatcher
        .send_test(&hook, &auth.actor.tenant, auth.actor.associate_id)
        .await;
    Ok(Json(
        json!({"Success": ok, "Message": message, "TableRight": null, "FieldProperties": {}}),
    ))
}

async fn signal(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((event, pk)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    if event.is_empty() || event.len() > 255 || event.contains(',') {
        return Err(ApiError::new(
            ErrorCode::InvalidEvent,
            "the event name must be 1 to 255 characters without commas",
        ));
    }
    let pk: i64 = pk.parse::<i32>().map(i64::from).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("primary key {pk:?} is not an int32"),
        )
    })?;
    let parsed: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            )
        })?)
    };
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
    state.committed(&committed);
    Ok(StatusCode::NO_CONTENT)
}

async fn last_error(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let usage = state
        .store
        .webhook_usage(auth.actor.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))?;
    Ok(Json(Value::String(usage.last_error.unwrap_or_default())))
}

async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let usage = state
        .store
        .webhook_usage(auth.actor.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))?;
    Ok(Json(json!(usage)))
}

fn parse_time(field: &str, s: &str) -> ApiResult<Ticks> {
    let d = crmhooks_payload::NetDateTime::parse(s)
        .ok()
        .and_then(|d| d.to_offset_date_time())
        .or_else(|| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{field} {s:?} is not a date-time (use RFC 3339)"),
            )
        })?;
    Ok((d.unix_timestamp_nanos() / 100) as i64)
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

fn delivery_json(d: &crmhooks_store::Delivery, offset: time::UtcOffset) -> Value {
    json!({
        "DeliveryId": d.delivery_id,
        "WebhookId": d.webhook_id,
        "EventSeq": d.event_seq,
        "Event": d.event,
        "PrimaryKey": d.primary_key,
        "EventId": d.event_id,
        "Status": d.status.name(),
        "Attempts": d.attempts,
        "FailedCycles": d.cycles,
        "Created": date(d.created, offset),
        "NextAttemptAt": if d.status == DeliveryStatus::Pending { date(d.next_attempt_at, offset) } else { Value::Null },
        "Completed": d.completed.map(|t| date(t, offset)),
        "LastStatus": d.last_status,
        "LastError": d.last_error,
        "ReplayOf": d.replay_of,
    })
}

async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Value>> {
    let hook = load(&state, &auth, &id).await?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("status {s:?}: use pending, inflight, delivered, failed or cancelled"),
            )
        })?),
    };
    let filter = DeliveryFilter {
        status,
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        before_id: q.before,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let list = state
        .store
        .list_deliveries(auth.actor.tenant_id, hook.id, &filter)
        .await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|d| delivery_json(d, state.offset))
            .collect(),
    )))
}

async fn delivery(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delivery_id)): ApiPath<(String, i64)>,
) -> ApiResult<Json<Value>> {
    let hook = load(&state, &auth, &id).await?;
    let (d, attempts) = state
        .store
        .get_delivery(auth.actor.tenant_id, hook.id, delivery_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "delivery {delivery_id} of webhook {} not found",
                hook.id
            ))
        })?;
    let mut v = delivery_json(&d, state.offset);
    if let Value::Object(m) = &mut v {
        m.insert(
            "AttemptLog".into(),
            Value::Array(
                attempts
                    .iter()
                    .map(|a| {
                        json!({
                            "AttemptId": a.attempt_id,
                            "EventId": a.event_id,
                            "Retry": a.retry,
                            "AttemptedAt": date(a.attempted_at, state.offset),
                            "DurationMs": a.duration_us as f64 / 1000.0,
                            "StatusCode": a.status_code,
                            "Error": a.error,
                            "Response": a.response_excerpt,
                        })
                    })
                    .collect(),
            ),
        );
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplayBody {
    since: String,
    until: Option<String>,
    #[serde(default)]
    only_failed: bool,
    limit: Option<i64>,
}

/// Most events one replay request may queue.
pub const REPLAY_MAX: i64 = 100_000;

async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let hook = load(&state, &auth, &id).await?;
    let body: ReplayBody = serde_json::from_value(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("replay body: {e} (expected {{\"since\": RFC 3339, \"until\"?, \"onlyFailed\"?, \"limit\"?}})")))?;
    let req = ReplayRequest {
        since: parse_time("since", &body.since)?,
        until: body
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        only_failed: body.only_failed,
        limit: body.limit.unwrap_or(REPLAY_MAX).clamp(1, REPLAY_MAX),
    };
    let report = state
        .store
        .replay(auth.actor.tenant_id, hook.id, &req)
        .await?;
    if report.queued > 0 {
        state.wake();
    }
    Ok(Json(json!(report)))
}

/// The webhook routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Webhook", get(list).post(create))
        .route("/Webhook/default", get(get_default))
        .route("/Webhook/Test", post(test))
        .route(
            "/Webhook/{id}",
            get(get_one).put(put).patch(patch_one).delete(delete),
        )
        .route("/Webhook/{id}/LastError", get(last_error))
        .route("/Webhook/{id}/Usage", get(usage))
        .route("/Webhook/{id}/Deliveries", get(deliveries))
        .route("/Webhook/{id}/Deliveries/{delivery_id}", get(delivery))
        .route("/Webhook/{id}/Replay", post(replay))
        .route("/Webhook/{id}/{pk}", post(signal))
}
