//! The JSON bodies the clients send, and the parts of answers they read.

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

/// A ContactEntity to create, or a merge patch of a contact: only the fields set are sent.
/// List carriers go out as `{"Id": n}`, the country as `{"CountryId": n}`, the owner as
/// `{"AssociateId": n}`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContactBody<'a> {
    /// `Name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// `Department`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<&'a str>,
    /// `OrgNr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_nr: Option<&'a str>,
    /// `Number1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number1: Option<&'a str>,
    /// The `Business` list id.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "list_item")]
    pub business: Option<i32>,
    /// The `Category` list id.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "list_item")]
    pub category: Option<i32>,
    /// The `Country` id.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "country")]
    pub country: Option<i32>,
    /// The owner (`Associate`) id.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "associate")]
    pub associate: Option<i32>,
}

impl<'a> ContactBody<'a> {
    /// A contact with only a name.
    pub fn named(name: &'a str) -> Self {
        ContactBody {
            name: Some(name),
            ..ContactBody::default()
        }
    }

    /// A patch of the department only.
    pub fn department(department: &'a str) -> Self {
        ContactBody {
            department: Some(department),
            ..ContactBody::default()
        }
    }
}

fn carrier<S: Serializer>(key: &'static str, id: Option<i32>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(key, &id)?;
    map.end()
}

fn list_item<S: Serializer>(id: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
    carrier("Id", *id, s)
}

fn country<S: Serializer>(id: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
    carrier("CountryId", *id, s)
}

fn associate<S: Serializer>(id: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
    carrier("AssociateId", *id, s)
}

/// A webhook definition to create, of type `webhook`; optional fields are sent when set.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewWebhook {
    /// `Name`.
    pub name: String,
    /// The events it subscribes to.
    pub events: Vec<String>,
    /// Where the events are POSTed.
    pub target_url: String,
    /// `Active` (the server first POSTs a test event to it) or `Stopped`.
    pub state: &'static str,
    #[serde(rename = "Type")]
    kind: &'static str,
    /// The shared secret of `X-SuperOffice-Signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Custom headers sent with every delivery, in this order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "pairs")]
    pub headers: Vec<(String, String)>,
    /// Who gets a mail when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_email: Option<String>,
    /// The retry policy's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<String>,
    /// Which answers count as success (`200` or `2xx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_status: Option<String>,
}

impl NewWebhook {
    /// An Active webhook named `name`, sending `events` to `target_url`, nothing else set.
    pub fn new(
        name: impl Into<String>,
        events: Vec<String>,
        target_url: impl Into<String>,
    ) -> Self {
        NewWebhook {
            name: name.into(),
            events,
            target_url: target_url.into(),
            state: "Active",
            kind: "webhook",
            secret: None,
            headers: Vec::new(),
            errors_email: None,
            retry_policy: None,
            success_status: None,
        }
    }
}

fn pairs<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// What to replay to a webhook: the logged events between `since` and `until`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    /// From this time on.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Before this time (default: now).
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<OffsetDateTime>,
    /// Only events whose delivery did not succeed.
    pub only_failed: bool,
}

/// The `ContactId` of a contact's JSON.
pub(crate) fn contact_id(body: &[u8]) -> Result<i64, serde_json::Error> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "ContactId")]
        contact_id: i64,
    }
    serde_json::from_slice::<Created>(body).map(|c| c.contact_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_carry_only_what_is_set() -> Result<(), serde_json::Error> {
        let c = ContactBody {
            name: Some("Acme"),
            org_nr: Some("123"),
            business: Some(2),
            country: Some(578),
            associate: Some(5),
            ..ContactBody::default()
        };
        assert_eq!(
            serde_json::to_value(&c)?,
            json!({"Name": "Acme", "OrgNr": "123", "Business": {"Id": 2},
                   "Country": {"CountryId": 578}, "Associate": {"AssociateId": 5}})
        );
        assert_eq!(
            serde_json::to_string(&ContactBody::named("a"))?,
            r#"{"Name":"a"}"#
        );
        assert_eq!(serde_json::to_value(ContactBody::default())?, json!({}));

        let mut hook = NewWebhook::new("n", vec!["a".into()], "http://t/1");
        assert_eq!(
            serde_json::to_value(&hook)?,
            json!({"Name": "n", "Events": ["a"], "TargetUrl": "http://t/1", "State": "Active", "Type": "webhook"})
        );
        hook.secret = Some("s".into());
        hook.headers = vec![("X-B".into(), "1".into()), ("X-A".into(), "2".into())];
        let text = serde_json::to_string(&hook)?;
        assert!(
            text.ends_with(r#""Secret":"s","Headers":{"X-B":"1","X-A":"2"}}"#),
            "{text}"
        );

        let replay = Replay {
            since: time::macros::datetime!(2024-05-01 12:00:00 UTC),
            until: None,
            only_failed: true,
        };
        assert_eq!(
            serde_json::to_value(&replay)?,
            json!({"since": "2024-05-01T12:00:00Z", "onlyFailed": true})
        );
        assert_eq!(contact_id(br#"{"ContactId": 42, "Name": "x"}"#)?, 42);
        assert!(contact_id(br#"{"Name": "x"}"#).is_err());
        Ok(())
    }
}
