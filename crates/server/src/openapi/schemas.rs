//! Schemas of the document that no carrier derives: names the carriers hold as `&str`
//! (states, statuses), types of other crates as clients see them, and the request objects of
//! the agent methods (which read a JSON value, not a struct).

use std::borrow::Cow;

use crmhooks_store::{DeliveryStatus, ReplayStatus, WebhookState};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// A property that is always `null` (`Secret` in answers, `TableRight`).
pub fn null() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some("Always `null`."))
}

/// Any JSON value, with every type named (utoipa's model reads a schema without a type as
/// nothing).
pub fn any() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::Array(vec![
        Type::String,
        Type::Number,
        Type::Integer,
        Type::Boolean,
        Type::Object,
        Type::Array,
        Type::Null,
    ]))
}

/// A string schema that takes exactly `names`.
fn names(names: impl IntoIterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(description))
        .into()
}

/// Implements [`ToSchema`] for a doc-only type named `$name` whose schema `$schema` builds.
macro_rules! doc_schema {
    ($ty:ident, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// `State` of a webhook in answers.
pub struct WebhookStateName;
doc_schema!(
    WebhookStateName,
    "WebhookState",
    names(
        [
            WebhookState::Active,
            WebhookState::Stopped,
            WebhookState::TooManyErrors
        ]
        .map(WebhookState::name),
        "The webhook's state: only an `Active` webhook gets deliveries; `TooManyErrors` after 9 \
         failed attempts in a row or a 410 Gone."
    )
);

/// `State` of a webhook as a client may send it: a name (any case) or its number.
pub struct WebhookStateInput;
doc_schema!(
    WebhookStateInput,
    "WebhookStateInput",
    OneOfBuilder::new()
        .item(WebhookStateName::schema())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([1, 2, 3]))
                .description(Some("1 `Active`, 2 `Stopped`, 3 `TooManyErrors`")),
        )
        .description(Some(
            "A state name (any case) or its number; `null` is `Active`."
        ))
        .into()
);

/// `Status` of a delivery.
pub struct DeliveryStatusName;
doc_schema!(
    DeliveryStatusName,
    "DeliveryStatus",
    names(
        [
            DeliveryStatus::Pending,
            DeliveryStatus::InFlight,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
        ]
        .map(DeliveryStatus::name),
        "Where a delivery is: waiting (`pending`), being sent (`inflight`), or done."
    )
);

/// `status` of a replay job.
pub struct ReplayStatusName;
doc_schema!(
    ReplayStatusName,
    "ReplayStatus",
    names(
        [
            ReplayStatus::Running,
            ReplayStatus::Done,
            ReplayStatus::Failed
        ]
        .map(ReplayStatus::name),
        "Where a replay job is."
    )
);

/// The usage counters of a webhook (`crmhooks_store::WebhookUsage`, as it serializes).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(
    as = WebhookUsage,
    examples(json!({"total_calls": 12, "total_errors": 1, "consecutive_errors": 0, "last_error": null}))
)]
pub struct WebhookUsageDoc {
    /// Calls since registration.
    pub total_calls: i64,
    /// Failed calls since registration.
    pub total_errors: i64,
    /// Failed attempts since the last success.
    pub consecutive_errors: i64,
    /// The latest failure: status line, headers and body, or the transport error.
    pub last_error: Option<String>,
}

/// `GET /api/v1/Contact`: one page of SuperOffice's OData-style contact archive.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ContactList, examples(json!(crate::openapi::examples::contact_list())))]
pub struct ContactListDoc {
    /// The archive's metadata URL.
    #[serde(rename = "odata.metadata")]
    pub metadata: String,
    /// The next page, only when one follows.
    #[serde(rename = "odata.nextLink", skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
    /// The rows: `PrimaryKey`, `EntityName` and the columns `$select` names (all by default).
    #[schema(value_type = Vec<Object>)]
    pub value: Vec<serde_json::Value>,
}

/// `{"status": "ok"}` of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Health)]
pub struct HealthDoc {
    /// `ok`.
    pub status: String,
}

/// The request object of the agent's `GetAllWebhooks`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(examples(json!({"NameFilter": null, "EventFilter": "contact.changed", "StatusFilter": "Active"})))]
pub struct GetAllWebhooksRequest {
    /// Exact name.
    pub name_filter: Option<String>,
    /// Subscribed to this event.
    pub event_filter: Option<String>,
    /// `Active`, `Stopped` or `TooManyErrors`.
    pub status_filter: Option<String>,
}

/// The request object of the agent's `TestWebhook`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct TestWebhookRequest {
    /// The definition to test (not saved); a bare `Webhook` body is taken too.
    #[schema(value_type = crate::carriers::webhook::WebhookInput)]
    pub webhook: serde_json::Value,
}

/// The request object of the agent's `SignalEvent`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(examples(json!({"EventName": "invoice.paid", "PrimaryKey": 42, "Data": {"amount": 100}})))]
pub struct SignalEventRequest {
    /// 1 to 255 characters without commas; its first part (before `.`) is the entity.
    pub event_name: String,
    /// The id of the row the event is about.
    pub primary_key: i32,
    /// Free-form data: its keys become `Changes`, the object `FieldValues`.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// The request object of the agent methods that take a webhook id (`GetLastError`, and
/// `GetWebhook`/`DeleteWebhook` as an alternative to `?webhookId=`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(examples(json!({"WebhookId": 5})))]
pub struct WebhookIdRequest {
    /// The webhook.
    pub webhook_id: i32,
}

/// One operation of a JSON Patch (RFC 6902; `move` and `copy` are not supported).
#[derive(Serialize, utoipa::ToSchema)]
pub struct PatchOperation {
    /// `add`, `replace`, `remove` or `test`.
    #[schema(value_type = PatchOp)]
    pub op: String,
    /// A property path (`/Name`; the leading `/` is optional, names match in any case).
    pub path: String,
    /// The value (`add`, `replace`, `test`).
    #[schema(schema_with = any)]
    pub value: Option<serde_json::Value>,
}

/// The `op` of a JSON Patch operation.
pub struct PatchOp;
doc_schema!(
    PatchOp,
    "PatchOp",
    names(["add", "replace", "remove", "test"], "The operation.")
);

/// A PATCH body: a JSON Patch (array) or a Merge Patch (object) of the entity as a GET
/// answers it.
pub struct PatchBody;
doc_schema!(
    PatchBody,
    "PatchBody",
    OneOfBuilder::new()
        .item(
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(utoipa::openapi::Ref::from_schema_name("PatchOperation"))
                .max_items(Some(crate::patch::MAX_OPERATIONS))
                .description(Some(
                    "RFC 6902 JSON Patch; a failed `test` answers 409 Conflict."
                ))
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(
                    "RFC 7396 Merge Patch: `null` removes (the default applies)."
                ))
        )
        .examples([serde_json::json!([{"op": "replace", "path": "/State", "value": "Stopped"}])])
        .into()
);
