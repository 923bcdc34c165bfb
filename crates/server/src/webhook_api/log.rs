//! The delivery log of a webhook (our addition): usage, the last error, deliveries with
//! their attempts.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmhooks_store::{
    ContactId, DeliveryFilter, DeliveryId, DeliveryStatus, EventId, StoreError, Ticks, WebhookUsage,
};
use serde::Deserialize;

use super::{load, parse_id};
use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery};
use crate::carriers::delivery::{AttemptCarrier, DeliveryCarrier, DeliveryWithAttempts};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

/// The usage counters of webhook `id` of the caller's tenant.
pub(crate) async fn usage_of(state: &AppState, auth: &Auth, id: &str) -> ApiResult<WebhookUsage> {
    let id = parse_id(id)?;
    state
        .store
        .webhook_usage(auth.actor.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))
}

#[utoipa::path(get, path = "/Webhook/{id}/LastError", tag = "Webhook", operation_id = "GetWebhookLastError",
    summary = "A webhook's last error",
    params(("id" = i32, Path, description = "The webhook.")), responses((status = 200, description = "The last failure's text, `\"\"` when none.", content_type = "application/json", body = String)))]
pub(super) async fn last_error(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<String>> {
    let usage = usage_of(&state, &auth, &id).await?;
    Ok(Json(usage.last_error.unwrap_or_default()))
}

#[utoipa::path(get, path = "/Webhook/{id}/Usage", tag = "Deliveries", operation_id = "GetWebhookUsage",
    summary = "A webhook's usage counters",
    params(("id" = i32, Path, description = "The webhook.")), responses((status = 200, description = "The webhook's counters.", body = crate::openapi::schemas::WebhookUsageDoc)))]
pub(super) async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookUsage>> {
    Ok(Json(usage_of(&state, &auth, &id).await?))
}

/// A date-time of a query or a replay body: .NET's form or RFC 3339.
pub(super) fn parse_time(field: &str, s: &str) -> ApiResult<Ticks> {
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

pub(super) fn parse_times(field: &str, s: Option<&str>) -> ApiResult<Option<Ticks>> {
    s.map(|s| parse_time(field, s)).transpose()
}

#[derive(Deserialize)]
pub(super) struct DeliveriesQuery {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
    #[serde(rename = "PrimaryKey", alias = "primaryKey")]
    primary_key: Option<String>,
    #[serde(rename = "EventId", alias = "eventId")]
    event_id: Option<String>,
}

/// Longest `EventId` a search takes (a GUID has 36 characters).
const EVENT_ID_MAX: usize = 64;

fn parse_primary_key(s: Option<&str>) -> ApiResult<Option<ContactId>> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    s.parse::<i32>()
        .map(|n| Some(ContactId::new(i64::from(n))))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("PrimaryKey {s:?} is not an int32 (a contact id)"),
            )
        })
}

fn parse_event_id(s: Option<&str>) -> ApiResult<Option<Option<EventId>>> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.len() > EVENT_ID_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("EventId is longer than {EVENT_ID_MAX} characters"),
        ));
    }
    // Only the stored (hyphenated) form can match: any other text matches no delivery.
    Ok(Some(if s.len() == 36 { s.parse().ok() } else { None }))
}

#[utoipa::path(get, path = "/Webhook/{id}/Deliveries", tag = "Deliveries", operation_id = "ListDeliveries",
    summary = "A webhook's delivery log",
    params(
        ("id" = i32, Path, description = "The webhook."),
        ("status" = Option<crate::openapi::schemas::DeliveryStatusName>, Query, description = "Only deliveries in this status."),
        ("since" = Option<String>, Query, description = "Created at or after (RFC 3339 or a .NET date)."),
        ("until" = Option<String>, Query, description = "Created before."),
        ("before" = Option<i64>, Query, description = "Only `DeliveryId`s below this one: the next page after the last id seen."),
        ("limit" = Option<i64>, Query, description = "At most this many (1 to 1000, default 100)."),
        ("PrimaryKey" = Option<i32>, Query, description = "Only deliveries of this row (also `primaryKey`)."),
        ("EventId" = Option<String>, Query, description = "Only the delivery whose current or an earlier attempt's `EventId` this is (also `eventId`)."),
    ),
    responses((status = 200, description = "The webhook's deliveries, newest first.", body = Vec<DeliveryCarrier>)))]
pub(super) async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Response> {
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
    let since = parse_times("since", q.since.as_deref())?;
    let until = parse_times("until", q.until.as_deref())?;
    let primary_key = parse_primary_key(q.primary_key.as_deref())?;
    let event_id = match parse_event_id(q.event_id.as_deref())? {
        Some(None) => return Ok(Json(Vec::<DeliveryCarrier<'_>>::new()).into_response()),
        Some(Some(id)) => Some(id),
        None => None,
    };
    let filter = DeliveryFilter {
        status,
        since,
        until,
        before_id: q.before.map(DeliveryId::new),
        primary_key,
        event_id,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let list = state
        .store
        .list_deliveries(auth.actor.tenant_id, hook.id, &filter)
        .await?;
    let carriers: Vec<DeliveryCarrier<'_>> = list
        .iter()
        .map(|d| DeliveryCarrier::of(d, &state.zone))
        .collect();
    Ok(Json(carriers).into_response())
}

#[utoipa::path(get, path = "/Webhook/{id}/Deliveries/{delivery_id}", tag = "Deliveries", operation_id = "GetDelivery",
    summary = "One delivery with its attempts",
    params(("id" = i32, Path, description = "The webhook."), ("delivery_id" = i64, Path, description = "The delivery.")),
    responses((status = 200, description = "The delivery with every attempt.", body = DeliveryWithAttempts)))]
pub(super) async fn delivery(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delivery_id)): ApiPath<(String, DeliveryId)>,
) -> ApiResult<Response> {
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
    Ok(Json(DeliveryWithAttempts {
        delivery: DeliveryCarrier::of(&d, &state.zone),
        attempt_log: attempts
            .iter()
            .map(|a| AttemptCarrier::of(a, &state.zone))
            .collect(),
    })
    .into_response())
}

/// `POST …/Deliveries/{deliveryId}/Resend`: the delivery's event queued again for this webhook
/// (a new delivery, a new EventId and attempt cycle, behind what is open of its contact's
/// chain); 202 with the new delivery and its `Location`.
#[utoipa::path(post, path = "/Webhook/{id}/Deliveries/{delivery_id}/Resend", tag = "Deliveries", operation_id = "ResendDelivery",
    summary = "Resend one delivery",
    params(("id" = i32, Path, description = "The webhook."), ("delivery_id" = i64, Path, description = "The delivery to send again.")),
    responses((status = 202, description = "The new delivery (a new `EventId` and attempt cycle, behind what is open of its contact's chain).", body = DeliveryCarrier,
        headers(("Location" = String, description = "The new delivery's URL."))),
        (status = 409, description = "A delivery of the same event to this webhook is still open (pending or in flight).", body = crate::error::ErrorBody),
    )
)]
pub(super) async fn resend(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let hook = load(&state, &auth, &id).await?;
    let not_found = || {
        ApiError::not_found(format!(
            "delivery {delivery_id} of webhook {} not found",
            hook.id
        ))
    };
    let delivery_id: DeliveryId = delivery_id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("delivery id {delivery_id:?} is not an integer"),
        )
    })?;
    let resent = match state
        .store
        .resend_delivery(auth.actor.tenant_id, hook.id, delivery_id)
        .await
    {
        Err(StoreError::NotFound) => return Err(not_found()),
        other => other?,
    };
    state.wake();
    let location = format!(
        "/api/v1/Webhook/{}/Deliveries/{}",
        hook.id, resent.delivery_id
    );
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(DeliveryCarrier::of(&resent, &state.zone)),
    )
        .into_response())
}
