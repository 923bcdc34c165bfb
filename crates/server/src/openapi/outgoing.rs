//! The `webhooks` section: the call crmhooks makes to a webhook's `TargetUrl`, with
//! SuperOffice's headers (spelled as on the wire, `crmhooks_payload::headers`) and the body
//! of `crmhooks_payload::WebhookPayload`, its examples the payload crate's fixtures.

use crmhooks_payload::headers;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The body of a webhook call (`crmhooks_payload::WebhookPayload`, as it serializes), in
/// SuperOffice's property order.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = WebhookPayload)]
pub struct WebhookPayloadDoc {
    /// Shared by every attempt of one retry cycle (a failed cycle gets a new one); a
    /// lower-case hyphenated GUID, the same as `X-Superoffice-Eventid`.
    pub event_id: String,
    /// When the event happened: a .NET UTC date with 7 fraction digits,
    /// `2018-04-24T07:50:50.6812131Z`.
    pub timestamp: String,
    /// The columns the change touched, in the contact table's canonical order; empty for
    /// deleted, test and state events.
    pub changes: Vec<String>,
    /// Key ids of the removed row: only on `*.deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub values: Option<Map<String, Value>>,
    /// The event name: `contact.created`, `contact.changed`, `contact.softdeleted`,
    /// `contact.deleted`, `test`, `webhook.started|stopped|errors`, or a signalled one.
    pub event: String,
    /// The id of the affected row; 0 for `test`.
    pub primary_key: i64,
    /// The lower-case entity (`contact`); left out on the state events.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub entity: String,
    /// The tenant.
    pub context_identifier: String,
    /// The associate whose change it is (the API key's); 0 is the system.
    pub changed_by_associate_id: i64,
    /// The name of the receiving webhook.
    pub webhook_name: String,
    /// A snapshot of selected columns of the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub field_values: Option<Map<String, Value>>,
    /// The webhook's `Properties`, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// The fixtures (`crates/payload/tests/fixtures/`), by name.
pub const FIXTURES: [(&str, &str); 5] = [
    (
        "contact-created",
        include_str!("../../../payload/tests/fixtures/contact-created.json"),
    ),
    (
        "contact-changed",
        include_str!("../../../payload/tests/fixtures/contact-changed.json"),
    ),
    (
        "contact-changed-fieldvalues",
        include_str!("../../../payload/tests/fixtures/contact-changed-fieldvalues.json"),
    ),
    (
        "contact-deleted",
        include_str!("../../../payload/tests/fixtures/contact-deleted.json"),
    ),
    (
        "test",
        include_str!("../../../payload/tests/fixtures/test.json"),
    ),
];

/// The examples of a call: the fixtures named in `names`.
fn examples(names: &[&str]) -> Value {
    let mut out = Map::new();
    for (name, text) in FIXTURES.iter().filter(|(n, _)| names.contains(n)) {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            out.insert(
                (*name).to_owned(),
                json!({"summary": format!("fixtures/{name}.json"), "value": value}),
            );
        }
    }
    Value::Object(out)
}

/// A header parameter of the call.
fn header(name: &str, required: bool, description: &str, example: Value) -> Value {
    json!({
        "name": name, "in": "header", "required": required, "description": description,
        "schema": {"type": "string"}, "example": example
    })
}

/// The call for `event`: summary, which fixtures illustrate it, and whether it is the test.
fn call(event: &str, summary: &str, description: &str, fixtures: &[&str], test: bool) -> Value {
    let mut params = vec![
        header(
            headers::USER_AGENT,
            true,
            "`NetServer-Webhook/` and a four-part version.",
            json!("NetServer-Webhook/0.1.0.0"),
        ),
        header(
            headers::EVENT,
            true,
            "The event name, as the body's `Event` (for state events the subscribed name, `webhook{id}.started`).",
            json!(event),
        ),
        header(
            headers::EVENT_ID,
            true,
            "The body's `EventId`.",
            json!("8337ae4a-1dd6-40fd-8dc7-a050664a0af7"),
        ),
        header(
            headers::SIGNATURE,
            false,
            "base64(HMAC-SHA256(key = the UTF-8 bytes of the webhook's `Secret`, message = the raw body bytes)); only when the webhook has a secret. Verify it over the bytes received, not a re-serialized body.",
            json!("X1FmmRIXuzH8o0MDanva1lnuNZXoix6M0US1S64s+e8="),
        ),
        header(
            headers::RETRY,
            true,
            "The attempt within a retry cycle: 0, then 1, 2.",
            json!("0"),
        ),
    ];
    if test {
        params.push(header(
            headers::HOOK_TEST,
            true,
            "`true`: the test event sent before an Active webhook is saved, or by `POST /api/v1/Webhook/Test`.",
            json!("true"),
        ));
    }
    json!({
        "post": {
            "operationId": format!("webhook-{event}"),
            "summary": summary,
            "description": format!(
                "{description}\n\nThe body is sent as `{}`, its bytes exactly as signed. The \
                 webhook's custom `Headers` follow the standard ones (which they may not replace). \
                 Only the success status (200 by default, or any 2xx when the webhook's \
                 `SuccessStatus` is `2xx`) counts as delivered; anything else, or no answer \
                 within the timeout, is retried (policy `superoffice`: 3 attempts at about 0, 1 \
                 and 5 s, then the delivery goes to the back of the webhook's queue with a new \
                 `EventId`); 410 Gone stops the webhook at once.",
                headers::CONTENT_TYPE_JSON
            ),
            "tags": ["Outgoing webhooks"],
            "parameters": params,
            "requestBody": {
                "required": true,
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/WebhookPayload"},
                    "examples": examples(fixtures)
                }}
            },
            "responses": {
                "200": {"description": "Delivered."},
                "410": {"description": "Gone: the webhook is stopped (`TooManyErrors`) at once."},
                "default": {"description": "Failed: the attempt is retried."}
            },
            "security": []
        }
    })
}

/// The `webhooks` object of the document.
pub fn webhooks() -> Value {
    json!({
        "contact.created": call(
            "contact.created",
            "A contact was created",
            "`Changes` lists every column but `DeletedDate`; `FieldValues` is a snapshot of the row.",
            &["contact-created"],
            false,
        ),
        "contact.changed": call(
            "contact.changed",
            "A contact was changed or restored",
            "`Changes` lists the primary key, the changed columns and the bookkeeping columns \
             (`updated_associate_id`, `updated`, `updatedCount`, and `soundEx` when the name changed).",
            &["contact-changed", "contact-changed-fieldvalues"],
            false,
        ),
        "contact.softdeleted": call(
            "contact.softdeleted",
            "A contact went into the recycle bin",
            "`Changes` = `contact_id, deleted, DeletedDate, updated_associate_id, updated, updatedCount`, with `FieldValues`.",
            &[],
            false,
        ),
        "contact.deleted": call(
            "contact.deleted",
            "A contact was removed for good",
            "Purged from the recycle bin or deleted with `?permanent=true`: `Changes` is empty, \
             `Values` holds `associate_id` and `contact_id`.",
            &["contact-deleted"],
            false,
        ),
        "test": call(
            "test",
            "The test event",
            "Sent with `X-Hook-Test: true` before an Active webhook is saved (a failure refuses the save) and by `POST /api/v1/Webhook/Test`.",
            &["test"],
            true,
        ),
        "webhook.state": call(
            "webhook{id}.started",
            "A webhook changed state",
            "To webhooks subscribed to `webhook{id}.started`, `webhook{id}.stopped` or \
             `webhook{id}.errors`: the body's `Event` is `webhook.started|stopped|errors`, it has \
             no `Entity`, and `FieldValues` carries the webhook's `state` (1 Active, 2 Stopped, 3 TooManyErrors).",
            &[],
            false,
        ),
    })
}
