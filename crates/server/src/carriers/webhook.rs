//! The `Webhook` carrier (spec 4.1) in and out, and the result of `POST /Webhook/Test`.
//!
//! `Secret` is write-only: taken from [`WebhookInput`], always `null` in [`WebhookCarrier`].
//! `Headers` values are write-only too unless the server reveals them (`reveal_headers`): the
//! carrier shows each name with [`MASK`], and an input that sends [`MASK`] back keeps the
//! stored value.

use crmhooks_store::{
    LocalZone, RetryPolicy, SuccessRule, Webhook, WebhookId, WebhookState, WebhookType,
};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::field::{Field, FromJson, Refusal};
use super::{net_date, Links};
use crate::error::{ApiError, ApiResult};

/// What a masked header value reads as.
pub const MASK: &str = "********";

/// A webhook's custom headers as answered: the names, and the values masked unless revealed.
#[derive(Clone, Copy, Debug)]
pub struct ShownHeaders<'a> {
    map: &'a Map<String, Value>,
    reveal: bool,
}

impl Serialize for ShownHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.reveal {
            return self.map.serialize(s);
        }
        let mut m = s.serialize_map(Some(self.map.len()))?;
        for name in self.map.keys() {
            m.serialize_entry(name, MASK)?;
        }
        m.end()
    }
}

/// A webhook as answered, in SuperOffice's property order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = Webhook, examples(json!(crate::openapi::examples::webhook_carrier())))]
pub struct WebhookCarrier<'a> {
    /// 0 for the `default` carrier.
    #[schema(value_type = i64)]
    pub webhook_id: WebhookId,
    /// `null` on the `default` carrier.
    #[schema(value_type = Option<String>)]
    pub name: Option<&'a str>,
    /// Subscribed event names.
    #[schema(value_type = Vec<String>)]
    pub events: &'a [String],
    /// Where the errors mail goes.
    #[schema(value_type = Option<String>)]
    pub errors_email: Option<&'a str>,
    /// `null` when not set.
    #[schema(value_type = Option<String>)]
    pub target_url: Option<&'a str>,
    /// Write-only: always `null`.
    #[schema(schema_with = crate::openapi::schemas::null)]
    pub secret: (),
    /// `Active`, `Stopped`, `TooManyErrors`.
    #[schema(value_type = crate::openapi::schemas::WebhookStateName)]
    pub state: &'static str,
    /// `webhook`.
    #[serde(rename = "Type")]
    #[schema(value_type = String)]
    pub kind: &'a str,
    /// Custom headers (`null` when none), their values masked unless revealed.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<ShownHeaders<'a>>,
    /// Custom properties put into each body (`null` when none).
    #[schema(value_type = Option<Object>)]
    pub properties: Option<&'a Map<String, Value>>,
    /// .NET date; `0001-01-01T00:00:00` on the `default` carrier.
    pub registered: String,
    /// `null` when none.
    pub registered_associate: Option<AssociateId>,
    /// .NET date; `0001-01-01T00:00:00` until the first update.
    pub updated: String,
    /// `null` until the first update.
    pub updated_associate: Option<AssociateId>,
    /// Our addition: the retry policy's name; left out when the definition takes the server's
    /// (strict deserializers refuse properties SuperOffice's carrier does not have).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub retry_policy: Option<&'a str>,
    /// Our addition: `200` or `2xx`; left out when the definition takes the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub success_status: Option<&'a str>,
}

/// `{"AssociateId": n}`, the associate of a webhook's `Registered`/`Updated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AssociateId {
    /// The associate.
    #[serde(rename = "AssociateId")]
    pub associate_id: i64,
}

impl AssociateId {
    /// `null` for 0 (nobody).
    fn of(id: i64) -> Option<AssociateId> {
        (id != 0).then_some(AssociateId { associate_id: id })
    }
}

impl<'a> WebhookCarrier<'a> {
    /// The carrier of `hook`, its dates in `zone`; header values in full with `reveal`.
    pub fn of(hook: &'a Webhook, zone: &LocalZone, reveal: bool) -> Self {
        WebhookCarrier {
            webhook_id: hook.id,
            name: (hook.id != WebhookId::default() || !hook.name.is_empty())
                .then_some(hook.name.as_str()),
            events: &hook.events,
            errors_email: hook.errors_email.as_deref(),
            target_url: (!hook.target_url.is_empty()).then_some(hook.target_url.as_str()),
            secret: (),
            state: hook.state.name(),
            kind: hook.kind.name(),
            headers: hook
                .headers
                .as_ref()
                .map(|map| ShownHeaders { map, reveal }),
            properties: hook.properties.as_ref(),
            registered: net_date(hook.registered, zone),
            registered_associate: AssociateId::of(hook.registered_associate_id),
            updated: net_date(hook.updated, zone),
            updated_associate: AssociateId::of(hook.updated_associate_id),
            retry_policy: hook.retry_policy.map(RetryPolicy::name),
            success_status: hook.success_status.map(SuccessRule::name),
        }
    }
}

/// A stored webhook as answered by the routes that name it: the carrier, then `_Links`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookWithLinks, examples(json!(crate::openapi::examples::webhook_with_links())))]
pub struct WebhookWithLinks<'a> {
    /// The carrier.
    #[serde(flatten)]
    pub webhook: WebhookCarrier<'a>,
    /// Its URL.
    #[serde(rename = "_Links")]
    pub links: Links,
}

impl<'a> WebhookWithLinks<'a> {
    /// `hook` (a stored one) with its links under `base_url`.
    pub fn of(hook: &'a Webhook, zone: &LocalZone, base_url: &str, reveal: bool) -> Self {
        WebhookWithLinks {
            webhook: WebhookCarrier::of(hook, zone, reveal),
            links: Links::new(
                format!("{base_url}/api/v1/Webhook/{}", hook.id),
                format!("{base_url}/api/v1/Webhook"),
            ),
        }
    }
}

/// A webhook as a client sends it (POST, PUT, PATCH, Test). Property names match in any
/// case; properties of the answer that are not here (`WebhookId`, `Registered`, …) are ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", default)]
#[schema(examples(json!(crate::openapi::examples::webhook_input())))]
pub struct WebhookInput {
    /// Required (non-blank, at most 400 characters) once applied.
    #[schema(value_type = Option<String>)]
    pub name: Field<String>,
    /// At least one, once applied; each trimmed, without commas.
    #[schema(value_type = Option<Vec<String>>)]
    pub events: Field<EventNames>,
    /// Checked against the target policy when saved.
    #[schema(value_type = Option<String>)]
    pub target_url: Field<String>,
    /// Absent and `null` keep the stored secret (a GET answers `null`, so a GET, an edit and
    /// a PUT keep deliveries signed); only `""` removes it.
    #[schema(value_type = Option<String>)]
    pub secret: Field<String>,
    /// A name or 1, 2, 3; `null` is `Active`.
    #[schema(value_type = Option<crate::openapi::schemas::WebhookStateInput>)]
    pub state: Field<WebhookState>,
    /// `null` is `webhook`; any case, stored in lower case.
    #[serde(rename = "Type")]
    #[schema(value_type = Option<String>)]
    pub kind: Field<String>,
    /// `null` or `{}` is none; may not name a standard header.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Field<Map<String, Value>>,
    /// `null` or `{}` is none.
    #[schema(value_type = Option<Object>)]
    pub properties: Field<Map<String, Value>>,
    /// `null` or `""` is none.
    #[schema(value_type = Option<String>)]
    pub errors_email: Field<String>,
    /// `null` or `""` is the default.
    #[schema(value_type = Option<String>)]
    pub retry_policy: Field<String>,
    /// `null` or `""` is the default.
    #[schema(value_type = Option<String>)]
    pub success_status: Field<String>,
}

impl WebhookInput {
    /// What a PUT, which replaces the definition, writes (and a PATCH, whose patched document
    /// lacks exactly what the patch removed): properties it leaves out take their defaults,
    /// but the secret is kept (so that a GET, an edit and a PUT keep deliveries signed).
    pub fn replacing(self) -> Self {
        WebhookInput {
            name: self.name.or_null(),
            events: self.events.or_null(),
            target_url: self.target_url.or_null(),
            secret: self.secret,
            state: self.state.or_null(),
            kind: self.kind.or_null(),
            headers: self.headers.or_null(),
            properties: self.properties.or_null(),
            errors_email: self.errors_email.or_null(),
            retry_policy: self.retry_policy.or_null(),
            success_status: self.success_status.or_null(),
        }
    }

    /// Writes the properties present over `hook`, in the carrier's order; the first refused
    /// one is the answer.
    pub fn apply_to(&self, hook: &mut Webhook) -> ApiResult<()> {
        fn some_text(v: Option<&str>) -> Option<String> {
            v.filter(|s| !s.is_empty()).map(str::to_owned)
        }
        fn some_map(v: Option<&Map<String, Value>>) -> Option<Map<String, Value>> {
            v.filter(|m| !m.is_empty()).cloned()
        }
        if let Some(v) = self.name.read_text("Name", 400)? {
            hook.name = v.unwrap_or_default().to_owned();
        }
        if let Some(v) = self.events.read("Events")? {
            hook.events = v.map(|e| e.0.clone()).unwrap_or_default();
        }
        if let Some(v) = self.target_url.read_text("TargetUrl", 4000)? {
            hook.target_url = v.unwrap_or_default().to_owned();
        }
        if let Some(Some(v)) = self.secret.read_text("Secret", 400)? {
            hook.secret = some_text(Some(v));
        }
        if let Some(v) = self.state.read("State")? {
            hook.state = v.copied().unwrap_or(WebhookState::Active);
        }
        if let Some(v) = self.kind.read_text("Type", 100)? {
            let name = v.unwrap_or("webhook").to_ascii_lowercase();
            hook.kind = WebhookType::parse(&name).ok_or_else(|| unsupported_type(&name))?;
        }
        if let Some(v) = self.headers.read("Headers")? {
            let mut headers = some_map(v);
            if let Some(h) = headers.as_mut() {
                keep_masked(h, hook.headers.as_ref())?;
            }
            hook.headers = headers;
        }
        if let Some(v) = self.properties.read("Properties")? {
            hook.properties = some_map(v);
        }
        if let Some(v) = self.errors_email.read_text("ErrorsEmail", 239)? {
            hook.errors_email = some_text(v);
        }
        if let Some(v) = self.retry_policy.read_text("RetryPolicy", 40)? {
            hook.retry_policy = match some_text(v) {
                None => None,
                Some(p) => Some(RetryPolicy::parse(&p).ok_or_else(|| {
                    ApiError::invalid_field(
                        "RetryPolicy",
                        format!("{p:?}: use one of {:?}", RetryPolicy::NAMES),
                    )
                })?),
            };
        }
        if let Some(v) = self.success_status.read_text("SuccessStatus", 10)? {
            hook.success_status = match some_text(v) {
                None => None,
                Some(s) => Some(SuccessRule::parse(&s).ok_or_else(|| {
                    ApiError::invalid_field(
                        "SuccessStatus",
                        format!("{s:?}: use \"200\" or \"2xx\""),
                    )
                })?),
            };
        }
        Ok(())
    }
}

/// The refusal of a definition of a type crmhooks does not deliver (`name` as given, in lower
/// case).
pub(crate) fn unsupported_type(name: &str) -> ApiError {
    ApiError::invalid_field(
        "Type",
        format!("{name:?} is not supported; crmhooks delivers type \"webhook\" (HTTP POST)"),
    )
}

/// Each header whose value is [`MASK`] (sent back as a GET answered it) takes the stored value
/// of the header of that name (in any case); one the webhook does not have is refused.
fn keep_masked(
    headers: &mut Map<String, Value>,
    stored: Option<&Map<String, Value>>,
) -> ApiResult<()> {
    for (name, value) in headers.iter_mut() {
        if value.as_str() != Some(MASK) {
            continue;
        }
        let old = stored.and_then(|s| {
            s.get(name).or_else(|| {
                s.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
        });
        match old {
            Some(old) => *value = old.clone(),
            None => return Err(ApiError::invalid_field(
                &format!("Headers.{name}"),
                "is the masked value of a header this webhook does not have; send the value itself",
            )),
        }
    }
    Ok(())
}

/// `Events`: event names, each trimmed, non-empty, without commas, at most 255 bytes, at
/// most 4000 characters together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventNames(pub Vec<String>);

impl FromJson for EventNames {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        let Value::Array(items) = v else {
            return Err(Refusal::new("must be an array of event names"));
        };
        let mut events = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let s = it
                .as_str()
                .ok_or_else(|| Refusal::at(format!("[{i}]"), "must be a string"))?
                .trim();
            if s.is_empty() || s.contains(',') || s.len() > 255 {
                return Err(Refusal::at(
                    format!("[{i}]"),
                    "must be a non-empty event name without commas, at most 255 characters",
                ));
            }
            events.push(s.to_owned());
        }
        if events.join(",").chars().count() > 4000 {
            return Err(Refusal::new("is longer than 4000 characters in total"));
        }
        Ok(EventNames(events))
    }
}

impl FromJson for WebhookState {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        let known = |s: &WebhookState| *s != WebhookState::Unknown;
        match v {
            Value::String(s) => WebhookState::parse(&s).filter(known).ok_or_else(|| {
                Refusal::new(format!("{s:?} is not Active, Stopped or TooManyErrors"))
            }),
            Value::Number(n) => n
                .as_i64()
                .map(WebhookState::from_i64)
                .filter(known)
                .ok_or_else(|| {
                    Refusal::new("must be 1 (Active), 2 (Stopped) or 3 (TooManyErrors)")
                }),
            _ => Err(Refusal::new("must be a state name")),
        }
    }
}

/// The answer of `POST /Webhook/Test`: whether the receiver took the test event, and its
/// answer (or the transport error).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(examples(json!(crate::openapi::examples::webhook_result())))]
pub struct WebhookResult {
    /// The receiver answered with success.
    pub success: bool,
    /// Status line, headers and body, or the error.
    pub message: String,
    /// Always `null`.
    #[schema(schema_with = crate::openapi::schemas::null)]
    pub table_right: (),
    /// Always `{}`.
    pub field_properties: FieldProperties,
}

/// The empty `FieldProperties` object of a [`WebhookResult`].
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct FieldProperties {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::carriers::field::{property_names, read_object, Spelling};
    use crmhooks_store::TenantId;
    use serde_json::json;

    /// Every property's refusal names it as the carrier spells it.
    #[test]
    fn each_property_is_named_in_its_refusal() {
        let names = property_names::<WebhookInput>();
        assert_eq!(names.len(), 11);
        for name in names {
            let mut body = Map::new();
            body.insert((*name).to_owned(), json!([[]]));
            let body = Value::Object(body);
            let input: WebhookInput = read_object(body, Spelling::FirstWins, "x").unwrap();
            let e = input
                .apply_to(&mut Webhook::default_for(TenantId::new(1)))
                .unwrap_err();
            assert!(e.message.starts_with(name), "{name}: {}", e.message);
        }
    }

    #[test]
    fn refusals_come_in_property_order() {
        let body = json!({"SuccessStatus": 5, "State": "x", "Events": 1, "Name": 2});
        let input: WebhookInput = read_object(body, Spelling::FirstWins, "x").unwrap();
        let e = input
            .apply_to(&mut Webhook::default_for(TenantId::new(1)))
            .unwrap_err();
        assert_eq!(e.message, "Name: must be a string");
    }

    #[test]
    fn the_carrier_serializes_in_superoffice_order() {
        let mut hook = Webhook::default_for(TenantId::new(1));
        hook.id = WebhookId::new(4);
        hook.name = "n".into();
        let v = serde_json::to_value(WebhookWithLinks::of(
            &hook,
            &LocalZone::default(),
            "http://h",
            false,
        ))
        .unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "WebhookId",
                "Name",
                "Events",
                "ErrorsEmail",
                "TargetUrl",
                "Secret",
                "State",
                "Type",
                "Headers",
                "Properties",
                "Registered",
                "RegisteredAssociate",
                "Updated",
                "UpdatedAssociate",
                "_Links"
            ]
        );
        assert_eq!(v["_Links"]["Self"], "http://h/api/v1/Webhook/4");
        assert_eq!(v["_Links"]["Archive"], "http://h/api/v1/Webhook");
        assert_eq!(v["Secret"], Value::Null);
    }

    #[test]
    fn the_test_result_has_its_fixed_parts() {
        let r = WebhookResult {
            success: true,
            message: "m".into(),
            table_right: (),
            field_properties: FieldProperties::default(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"Success":true,"Message":"m","TableRight":null,"FieldProperties":{}}"#
        );
    }
}
