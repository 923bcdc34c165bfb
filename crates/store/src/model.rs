//! Stored records: tenants, webhooks, usage, events, deliveries, attempts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::entity::Ticks;
use crate::ids::{ContactId, DeliveryId, EventId, TenantId, WebhookId};
use crate::webhook_rules::{RetryPolicy, SuccessRule, WebhookType};

/// Who makes a change: a tenant (its `ContextIdentifier`) and an associate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Tenant row id.
    pub tenant_id: TenantId,
    /// Tenant name, sent as `ContextIdentifier`.
    pub tenant: String,
    /// Associate id, sent as `ChangedByAssociateId` (0 = system).
    pub associate_id: i64,
}

impl Actor {
    /// The system acting for a tenant (purges, state changes): associate 0.
    pub fn system(tenant_id: TenantId, tenant: &str) -> Self {
        Actor {
            tenant_id,
            tenant: tenant.to_owned(),
            associate_id: 0,
        }
    }
}

/// SuperOffice's webhook state (spec 4.2): 1 Active, 2 Stopped, 3 TooManyErrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookState {
    /// 0: unknown (as a filter: all).
    Unknown = 0,
    /// 1: deliveries flow.
    Active = 1,
    /// 2: stopped by its owner.
    Stopped = 2,
    /// 3: disabled after too many errors or a 410 Gone.
    TooManyErrors = 3,
}

impl WebhookState {
    /// From the stored number.
    pub fn from_i64(v: i64) -> Self {
        match v {
            1 => Self::Active,
            2 => Self::Stopped,
            3 => Self::TooManyErrors,
            _ => Self::Unknown,
        }
    }

    /// The enum name, as JSON carries it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Active => "Active",
            Self::Stopped => "Stopped",
            Self::TooManyErrors => "TooManyErrors",
        }
    }

    /// From the enum name (case-insensitive) or its number.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        [
            Self::Unknown,
            Self::Active,
            Self::Stopped,
            Self::TooManyErrors,
        ]
        .into_iter()
        .find(|st| st.name().eq_ignore_ascii_case(s) || (*st as i64).to_string() == s)
    }

    /// The verb of the state event fired on entering this state (spec 6.1).
    pub fn event_verb(self) -> Option<&'static str> {
        match self {
            Self::Active => Some("started"),
            Self::Stopped => Some("stopped"),
            Self::TooManyErrors => Some("errors"),
            Self::Unknown => None,
        }
    }
}

/// A webhook definition (spec 4.1) as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    /// `webhook_id`.
    pub id: WebhookId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// `Name`.
    pub name: String,
    /// `Events`, exact names.
    pub events: Vec<String>,
    /// `TargetUrl`.
    pub target_url: String,
    /// `Secret` (never returned by the API).
    pub secret: Option<String>,
    /// `State`.
    pub state: WebhookState,
    /// `Type`.
    pub kind: WebhookType,
    /// Custom request headers.
    pub headers: Option<Map<String, Json>>,
    /// Extra body properties.
    pub properties: Option<Map<String, Json>>,
    /// Created.
    pub registered: Ticks,
    /// Created by.
    pub registered_associate_id: i64,
    /// Last updated (0 = never).
    pub updated: Ticks,
    /// Last updated by.
    pub updated_associate_id: i64,
    /// `ErrorsEmail`.
    pub errors_email: Option<String>,
    /// Save counter.
    pub updated_count: i64,
    /// Retry policy (the server's default when None).
    pub retry_policy: Option<RetryPolicy>,
    /// What counts as success (the server's default when None).
    pub success_status: Option<SuccessRule>,
}

impl Webhook {
    /// A new, unsaved definition with SuperOffice's defaults (spec 4.3).
    pub fn default_for(tenant_id: TenantId) -> Self {
        Webhook {
            id: WebhookId::default(),
            tenant_id,
            name: String::new(),
            events: vec!["contact.created".into(), "contact.deleted".into()],
            target_url: String::new(),
            secret: None,
            state: WebhookState::Active,
            kind: WebhookType::Webhook,
            headers: None,
            properties: None,
            registered: 0,
            registered_associate_id: 0,
            updated: 0,
            updated_associate_id: 0,
            errors_email: None,
            updated_count: 0,
            retry_policy: None,
            success_status: None,
        }
    }
}

/// `webhook_usage` (spec 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WebhookUsage {
    /// Calls since registration.
    pub total_calls: i64,
    /// Failed calls since registration.
    pub total_errors: i64,
    /// Failed attempts since the last success.
    pub consecutive_errors: i64,
    /// The latest failure: status line, headers and body, or the transport error.
    pub last_error: Option<String>,
}

/// Filters of `GET /api/v1/Webhook`.
#[derive(Clone, Debug, Default)]
pub struct WebhookFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Subscribed to this exact event.
    pub event: Option<String>,
    /// In this state (Unknown = all).
    pub state: Option<WebhookState>,
}

/// A state change of a webhook caused by a save or by errors.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// The webhook after the change.
    pub webhook: Webhook,
    /// The state before.
    pub from: WebhookState,
    /// Why (for the errors mail): the last error and the EventId that failed.
    pub reason: Option<String>,
}

/// An event to append to the log and fan out.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// e.g. `contact.changed`.
    pub event: String,
    /// e.g. `contact`.
    pub entity: String,
    /// The row's id.
    pub primary_key: i64,
    /// Column names.
    pub changes: Vec<String>,
    /// `Values` (deleted only).
    pub values: Option<Map<String, Json>>,
    /// `FieldValues` as JSON text (an object): what the event row keeps and the payload
    /// carries, written once.
    pub field_values: Option<String>,
    /// Events with the same key go out in commit order per webhook.
    pub order_key: String,
}

/// An event as the log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Commit order.
    pub seq: i64,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Event name.
    pub event: String,
    /// Entity name.
    pub entity: String,
    /// Primary key.
    pub primary_key: i64,
    /// Changed columns.
    pub changes: Vec<String>,
    /// `Values`.
    pub values: Option<Map<String, Json>>,
    /// `FieldValues` as the event row keeps it (JSON text of an object): the payload template
    /// puts it in as it is ([`StoredEvent::field_values`] parses it).
    pub field_values_json: Option<std::sync::Arc<str>>,
    /// `ChangedByAssociateId`.
    pub changed_by: i64,
    /// When it was committed.
    pub occurred: Ticks,
}

impl StoredEvent {
    /// `FieldValues` parsed (`None` without them, or if the stored text is not an object).
    pub fn field_values(&self) -> Option<Map<String, Json>> {
        serde_json::from_str(self.field_values_json.as_deref()?).ok()
    }
}

/// What a committed change produced.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    /// The event's sequence number, if one was written.
    pub event_seq: Option<i64>,
    /// How many deliveries were queued.
    pub deliveries: u64,
    /// How many of them went straight to this node's dispatcher (see [`crate::Intake`]);
    /// the rest wait for a claim.
    pub handed: u64,
    /// How many of the rest were queued behind an earlier delivery of their chain still open,
    /// and go on when that one is recorded (PostgreSQL: the record hands them over); no claim
    /// needs waking for them.
    pub behind: u64,
    /// The event's entity (`contact`); empty when no event was written.
    pub entity: String,
    /// The event's name (`contact.changed`); empty when no event was written.
    pub event: String,
}

/// Delivery status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DeliveryStatus {
    /// Waiting (first try, between attempts, or parked while its webhook is not Active).
    Pending = 0,
    /// Leased by a dispatcher.
    InFlight = 1,
    /// Acknowledged by the receiver.
    Delivered = 2,
    /// Given up on (410 Gone, webhook removed).
    Failed = 3,
    /// Cancelled.
    Cancelled = 4,
}

impl DeliveryStatus {
    /// From the stored number.
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => Self::Pending,
            1 => Self::InFlight,
            2 => Self::Delivered,
            3 => Self::Failed,
            _ => Self::Cancelled,
        }
    }

    /// Lower-case name used by the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "inflight",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// From the API name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::InFlight,
            Self::Delivered,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.name().eq_ignore_ascii_case(s))
    }
}

/// A delivery leased to a dispatcher, with everything needed to send it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// Delivery row id.
    pub delivery_id: DeliveryId,
    /// The EventId of the current cycle.
    pub event_id: EventId,
    /// 0, 1, 2 within the cycle (`X-SuperOffice-Retry`).
    pub attempt_in_cycle: i64,
    /// The event (shared by the deliveries of one claim that carry it: a fan-out to K
    /// webhooks reads and parses it once).
    pub event: std::sync::Arc<StoredEvent>,
    /// The tenant name (`ContextIdentifier`).
    pub tenant: String,
    /// The target (shared by the deliveries of one claim that go to it).
    pub webhook: std::sync::Arc<Webhook>,
}

/// How an attempt ended.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The webhook it went to.
    pub webhook_id: WebhookId,
    /// The webhook's tenant.
    pub tenant_id: TenantId,
    /// The EventId sent.
    pub event_id: EventId,
    /// The `X-SuperOffice-Retry` sent.
    pub retry: i64,
    /// When the attempt started.
    pub attempted_at: Ticks,
    /// How long it took.
    pub duration_us: i64,
    /// The HTTP status, if a response came.
    pub status_code: Option<u16>,
    /// Transport error or non-success description; None on success.
    pub error: Option<String>,
    /// Beginning of the response (status line, headers, body), up to 4000 characters.
    pub response_excerpt: Option<String>,
    /// What to do next.
    pub verdict: Verdict,
}

/// What the retry policy decided after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success: done.
    Delivered,
    /// Try again at this time within the same cycle (same EventId).
    RetryAt(Ticks),
    /// The cycle failed: back of the queue with a new EventId, eligible from this time.
    Requeue(Ticks),
    /// Permanent failure (410 Gone): disable the webhook at once.
    Gone,
}

/// An attempt as the delivery log shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Row id.
    pub attempt_id: i64,
    /// EventId sent.
    pub event_id: EventId,
    /// `X-SuperOffice-Retry` sent.
    pub retry: i64,
    /// When.
    pub attempted_at: Ticks,
    /// Microseconds.
    pub duration_us: i64,
    /// HTTP status, if any.
    pub status_code: Option<i64>,
    /// Failure, if any.
    pub error: Option<String>,
    /// Start of the response.
    pub response_excerpt: Option<String>,
}

/// A delivery as the log shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// Row id.
    pub delivery_id: DeliveryId,
    /// Webhook.
    pub webhook_id: WebhookId,
    /// Event log sequence.
    pub event_seq: i64,
    /// Event name.
    pub event: String,
    /// Primary key of the row.
    pub primary_key: i64,
    /// Current EventId.
    pub event_id: EventId,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: i64,
    /// Failed cycles so far.
    pub cycles: i64,
    /// Created.
    pub created: Ticks,
    /// Next attempt due (pending only).
    pub next_attempt_at: Ticks,
    /// Completed.
    pub completed: Option<Ticks>,
    /// Last HTTP status.
    pub last_status: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// The delivery this one replays, if any.
    pub replay_of: Option<DeliveryId>,
}

/// Filters of the delivery log.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Created at or after.
    pub since: Option<Ticks>,
    /// Created before.
    pub until: Option<Ticks>,
    /// Only deliveries with id below this (paging, newest first).
    pub before_id: Option<DeliveryId>,
    /// Only deliveries of this contact.
    pub primary_key: Option<ContactId>,
    /// Only the delivery that has or had this EventId (in any of its attempt cycles).
    pub event_id: Option<EventId>,
    /// Page size.
    pub limit: i64,
}

/// A replay request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Events committed at or after.
    pub since: Ticks,
    /// Events committed before.
    pub until: Option<Ticks>,
    /// Only events whose delivery to this webhook did not succeed (or never existed).
    pub only_failed: bool,
    /// At most this many events.
    pub limit: i64,
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events in the window the webhook subscribes to.
    pub matched: u64,
    /// New deliveries queued.
    pub queued: u64,
    /// Skipped: already delivered (with `onlyFailed`) or already pending.
    pub skipped: u64,
}

/// Where a replay job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStatus {
    /// Batches still to run.
    Running = 0,
    /// Every event of the window handled.
    Done = 1,
    /// Stopped early (its webhook was deleted): `error` says why.
    Failed = 2,
}

impl ReplayStatus {
    /// From the stored number (unknown numbers read as Failed).
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => ReplayStatus::Running,
            1 => ReplayStatus::Done,
            _ => ReplayStatus::Failed,
        }
    }

    /// The name clients see.
    pub fn name(self) -> &'static str {
        match self {
            ReplayStatus::Running => "Running",
            ReplayStatus::Done => "Done",
            ReplayStatus::Failed => "Failed",
        }
    }
}

/// A replay job: its request, how far it got, and what it did so far. A replay runs in bounded
/// batches, each a short transaction of its own, so that a large one never holds the database
/// for long; its progress can be read while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayJob {
    /// Its id.
    pub id: i64,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The webhook it queues events for.
    pub webhook_id: WebhookId,
    /// What was asked.
    pub request: ReplayRequest,
    /// The last event of the window handled so far (0: none yet).
    pub cursor: i64,
    /// What it did so far.
    pub report: ReplayReport,
    /// Where it is.
    pub status: ReplayStatus,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it was asked for.
    pub created: Ticks,
    /// When a batch of it last ran.
    pub updated: Ticks,
    /// When it ended.
    pub finished: Option<Ticks>,
}
