//! The JSON body of a webhook call (spec 1.1).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::NetDateTime;

/// The body SuperOffice POSTs to a webhook target (`WebhookPayload`).
///
/// Serializes with the PascalCase property names and in the exact property order SuperOffice
/// uses; `Values`, `FieldValues` and `Properties` are left out when `None`, never sent as `null`.
/// Deserialization accepts any property order and ignores unknown properties.
///
/// ```
/// use crmhooks_payload::{NetDateTime, WebhookPayload};
///
/// let test = WebhookPayload::test_event(
///     "4b5ce038-50f2-4796-bdb2-f96908cf31c2".parse()?,
///     "2018-04-24T08:52:59.0005158Z".parse()?,
///     "Default",
///     316,
///     "Name you provided",
/// );
/// assert_eq!(
///     String::from_utf8(test.to_bytes())?,
///     r#"{"EventId":"4b5ce038-50f2-4796-bdb2-f96908cf31c2","Timestamp":"2018-04-24T08:52:59.0005158Z","Changes":[],"Event":"test","PrimaryKey":0,"Entity":"test","ContextIdentifier":"Default","ChangedByAssociateId":316,"WebhookName":"Name you provided"}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookPayload {
    /// `EventId`: shared by every attempt of one retry cycle; lowercase hyphenated GUID.
    pub event_id: Uuid,
    /// `Timestamp`: when the event happened (UTC kind).
    pub timestamp: NetDateTime,
    /// `Changes`: DB column names touched by the change; empty for deleted, test and state events.
    pub changes: Vec<String>,
    /// `Values`: key ids of the removed row, only on `*.deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Map<String, Value>>,
    /// `Event`: the event name, e.g. `contact.changed`.
    pub event: String,
    /// `PrimaryKey`: id of the affected row; 0 for `test`.
    pub primary_key: i64,
    /// `Entity`: lower-case entity name, e.g. `contact`. Empty when the body has none: the
    /// webhook state events (`webhook.started|stopped|errors`) carry no `Entity`; an empty
    /// one is left out of the body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity: String,
    /// `ContextIdentifier`: the tenant, e.g. `Cust1234`.
    pub context_identifier: String,
    /// `ChangedByAssociateId`: the associate who caused the change; 0 = system.
    pub changed_by_associate_id: i64,
    /// `WebhookName`: the name of the receiving webhook definition.
    pub webhook_name: String,
    /// `FieldValues`: a snapshot of selected row columns, keys in the order given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_values: Option<Map<String, Value>>,
    /// `Properties`: the webhook definition's custom properties, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// A [`WebhookPayload`] made of borrowed parts: what the dispatcher serializes, straight from
/// the stored event and the webhook definition, without copying their maps for every delivery.
/// [`WebhookPayload::to_bytes`] goes through it, so both give the same bytes by construction.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PayloadRef<'a> {
    /// `EventId`.
    pub event_id: Uuid,
    /// `Timestamp`.
    pub timestamp: NetDateTime,
    /// `Changes`.
    pub changes: &'a [String],
    /// `Values`, left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<&'a Map<String, Value>>,
    /// `Event`.
    pub event: &'a str,
    /// `PrimaryKey`.
    pub primary_key: i64,
    /// `Entity`, left out when empty (state events).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub entity: &'a str,
    /// `ContextIdentifier`.
    pub context_identifier: &'a str,
    /// `ChangedByAssociateId`.
    pub changed_by_associate_id: i64,
    /// `WebhookName`.
    pub webhook_name: &'a str,
    /// `FieldValues`, left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_values: Option<&'a Map<String, Value>>,
    /// `Properties`, left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<&'a Map<String, Value>>,
}

impl PayloadRef<'_> {
    /// The compact JSON body, exactly as sent on the wire and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        // Serializing this type cannot fail: writing into a Vec never fails, every map key is a
        // String, and `Uuid` and `NetDateTime` serialize infallibly. The empty fallback only
        // exists so that no panic path exists.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }
}

/// The parts of a payload that one event shares with every webhook it goes to, serialized once:
/// an event fanned out to ten webhooks is serialized once, not ten times. [`render`] then puts
/// in what differs per delivery (`EventId`, `WebhookName`, `Properties`) and gives the same
/// bytes as [`PayloadRef::to_bytes`] (a property test holds the two together).
///
/// [`render`]: PayloadTemplate::render
#[derive(Clone, Debug)]
pub struct PayloadTemplate {
    /// `"Timestamp":…` through `"ChangedByAssociateId":…`, without braces.
    middle: Vec<u8>,
    /// `,"FieldValues":{…}`, or nothing when the payload has none.
    field_values: Vec<u8>,
}

/// The properties between `EventId` and `WebhookName`, in the wire order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Middle<'a> {
    timestamp: NetDateTime,
    changes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<&'a Map<String, Value>>,
    event: &'a str,
    primary_key: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    entity: &'a str,
    context_identifier: &'a str,
    changed_by_associate_id: i64,
}

impl PayloadTemplate {
    /// The shared parts of `payload`; its `EventId`, `WebhookName` and `Properties` are not
    /// kept (each [`render`](PayloadTemplate::render) gives its own).
    pub fn new(payload: &PayloadRef<'_>) -> Self {
        let field_values = payload
            .field_values
            .map(|fv| serde_json::to_string(fv).unwrap_or_else(|_| "{}".to_owned()));
        Self::with_field_values_json(payload, field_values.as_deref())
    }

    /// [`new`](PayloadTemplate::new) with `FieldValues` given as JSON text, exactly as
    /// `serde_json` writes the map (as a store keeps it): the text is put in as it is, not
    /// parsed or serialized again; `payload.field_values` is not read.
    pub fn with_field_values_json(
        payload: &PayloadRef<'_>,
        field_values_json: Option<&str>,
    ) -> Self {
        let mut middle = Vec::with_capacity(512);
        // As in `to_bytes`: writing these into a Vec cannot fail.
        let _ = serde_json::to_writer(
            &mut middle,
            &Middle {
                timestamp: payload.timestamp,
                changes: payload.changes,
                values: payload.values,
                event: payload.event,
                primary_key: payload.primary_key,
                entity: payload.entity,
                context_identifier: payload.context_identifier,
                changed_by_associate_id: payload.changed_by_associate_id,
            },
        );
        // `{…}` -> `…`: the object always has properties, so it is at least `{"T…}`.
        if middle.first() == Some(&b'{') && middle.last() == Some(&b'}') {
            middle.pop();
            middle.remove(0);
        }
        let mut field_values = Vec::new();
        if let Some(fv) = field_values_json {
            field_values.reserve(fv.len() + 16);
            field_values.extend_from_slice(b",\"FieldValues\":");
            field_values.extend_from_slice(fv.as_bytes());
        }
        PayloadTemplate {
            middle,
            field_values,
        }
    }

    /// The body of one delivery: the shared parts with this delivery's `EventId`, the
    /// webhook's name and its `Properties` (left out when `None`).
    pub fn render(
        &self,
        event_id: Uuid,
        webhook_name: &str,
        properties: Option<&Map<String, Value>>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.middle.len() + self.field_values.len() + 128);
        out.extend_from_slice(b"{\"EventId\":\"");
        out.extend_from_slice(
            event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&self.middle);
        out.extend_from_slice(b",\"WebhookName\":");
        let _ = serde_json::to_writer(&mut out, webhook_name);
        out.extend_from_slice(&self.field_values);
        if let Some(p) = properties {
            out.extend_from_slice(b",\"Properties\":");
            let _ = serde_json::to_writer(&mut out, p);
        }
        out.push(b'}');
        out
    }
}

impl WebhookPayload {
    /// The payload as borrowed parts.
    pub fn as_ref(&self) -> PayloadRef<'_> {
        PayloadRef {
            event_id: self.event_id,
            timestamp: self.timestamp,
            changes: &self.changes,
            values: self.values.as_ref(),
            event: &self.event,
            primary_key: self.primary_key,
            entity: &self.entity,
            context_identifier: &self.context_identifier,
            changed_by_associate_id: self.changed_by_associate_id,
            webhook_name: &self.webhook_name,
            field_values: self.field_values.as_ref(),
            properties: self.properties.as_ref(),
        }
    }

    /// The compact JSON body, exactly as sent on the wire and signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.as_ref().to_bytes()
    }

    /// Parses a body. Properties may come in any order; unknown properties are ignored.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The `test` event sent when a webhook is saved or tested (spec 6.2): `Changes` empty,
    /// `Event` and `Entity` `"test"`, `PrimaryKey` 0.
    pub fn test_event(
        event_id: Uuid,
        timestamp: NetDateTime,
        context_identifier: &str,
        changed_by: i64,
        webhook_name: &str,
    ) -> Self {
        WebhookPayload {
            event_id,
            timestamp,
            changes: Vec::new(),
            values: None,
            event: TEST_EVENT.to_owned(),
            primary_key: 0,
            entity: TEST_EVENT.to_owned(),
            context_identifier: context_identifier.to_owned(),
            changed_by_associate_id: changed_by,
            webhook_name: webhook_name.to_owned(),
            field_values: None,
            properties: None,
        }
    }

    /// Whether this is the `test` event.
    pub fn is_test(&self) -> bool {
        self.event == TEST_EVENT
    }
}

/// The name (and entity) of the test event.
pub const TEST_EVENT: &str = "test";

/// What the body of a webhook state event says, given the name subscribed to and sent in the
/// `X-Superoffice-Event` header: `webhook{id}.started|stopped|errors` goes out with body
/// `Event` `webhook.<verb>` and no `Entity`, as SuperOffice's documented examples show; `None`
/// for any other name.
///
/// ```
/// assert_eq!(crmhooks_payload::state_event_body_name("webhook66.errors"), Some("webhook.errors".to_owned()));
/// assert_eq!(crmhooks_payload::state_event_body_name("webhook.errors"), None);
/// assert_eq!(crmhooks_payload::state_event_body_name("contact.created"), None);
/// ```
pub fn state_event_body_name(subscribed: &str) -> Option<String> {
    let (head, verb) = subscribed.split_once('.')?;
    let id = head.strip_prefix("webhook")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    matches!(verb, "started" | "stopped" | "errors").then(|| format!("webhook.{verb}"))
}
