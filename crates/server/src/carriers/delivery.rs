//! The delivery log of a webhook as answered (our addition to the API): deliveries and
//! their attempts.

use crmhooks_store::{
    Attempt, Delivery, DeliveryId, DeliveryStatus, EventId, LocalZone, WebhookId,
};
use serde::Serialize;

use super::net_date;

/// One delivery of an event to a webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = Delivery, examples(json!(crate::openapi::examples::delivery())))]
pub struct DeliveryCarrier<'a> {
    /// Row id.
    #[schema(value_type = i64)]
    pub delivery_id: DeliveryId,
    /// The webhook.
    #[schema(value_type = i64)]
    pub webhook_id: WebhookId,
    /// The event's place in the event log.
    pub event_seq: i64,
    /// Event name.
    pub event: &'a str,
    /// Primary key of the changed row.
    pub primary_key: i64,
    /// The current `EventId` (a failed cycle gets a new one).
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// `pending`, `inflight`, `delivered`, `failed`, `cancelled`.
    #[schema(value_type = crate::openapi::schemas::DeliveryStatusName)]
    pub status: &'static str,
    /// Attempts so far.
    pub attempts: i64,
    /// Failed cycles so far.
    pub failed_cycles: i64,
    /// .NET date.
    pub created: String,
    /// When the next attempt is due; `null` unless pending.
    pub next_attempt_at: Option<String>,
    /// When it was delivered or given up; `null` before.
    pub completed: Option<String>,
    /// The last HTTP status, if any.
    pub last_status: Option<i64>,
    /// The last error, if any.
    #[schema(value_type = Option<String>)]
    pub last_error: Option<&'a str>,
    /// The delivery this one replays, if any.
    #[schema(value_type = Option<i64>)]
    pub replay_of: Option<DeliveryId>,
}

impl<'a> DeliveryCarrier<'a> {
    /// The carrier of `d`, its dates in `zone`.
    pub fn of(d: &'a Delivery, zone: &LocalZone) -> Self {
        DeliveryCarrier {
            delivery_id: d.delivery_id,
            webhook_id: d.webhook_id,
            event_seq: d.event_seq,
            event: &d.event,
            primary_key: d.primary_key,
            event_id: d.event_id,
            status: d.status.name(),
            attempts: d.attempts,
            failed_cycles: d.cycles,
            created: net_date(d.created, zone),
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| net_date(d.next_attempt_at, zone)),
            completed: d.completed.map(|t| net_date(t, zone)),
            last_status: d.last_status,
            last_error: d.last_error.as_deref(),
            replay_of: d.replay_of,
        }
    }
}

/// One delivery with its attempts, as `GET /Webhook/{id}/Deliveries/{delivery_id}` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeliveryWithAttempts, examples(json!(crate::openapi::examples::delivery_with_attempts())))]
pub struct DeliveryWithAttempts<'a> {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: DeliveryCarrier<'a>,
    /// Its attempts, oldest first.
    #[serde(rename = "AttemptLog")]
    pub attempt_log: Vec<AttemptCarrier<'a>>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = Attempt)]
pub struct AttemptCarrier<'a> {
    /// Row id.
    pub attempt_id: i64,
    /// The `EventId` sent.
    #[schema(value_type = String)]
    pub event_id: EventId,
    /// The `X-SuperOffice-Retry` sent.
    pub retry: i64,
    /// .NET date.
    pub attempted_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// The HTTP status, if a response came.
    pub status_code: Option<i64>,
    /// The failure, if any.
    #[schema(value_type = Option<String>)]
    pub error: Option<&'a str>,
    /// The start of a failed attempt's response.
    #[schema(value_type = Option<String>)]
    pub response: Option<&'a str>,
}

impl<'a> AttemptCarrier<'a> {
    /// The carrier of `a`, its date in `zone`.
    pub fn of(a: &'a Attempt, zone: &LocalZone) -> Self {
        AttemptCarrier {
            attempt_id: a.attempt_id,
            event_id: a.event_id,
            retry: a.retry,
            attempted_at: net_date(a.attempted_at, zone),
            duration_ms: a.duration_us as f64 / 1000.0,
            status_code: a.status_code,
            error: a.error.as_deref(),
            response: a.response_excerpt.as_deref(),
        }
    }
}
