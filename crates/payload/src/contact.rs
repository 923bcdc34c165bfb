//! Typed contact events and their `FieldValues` (spec 1.3, 1.4).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::{DateError, NetDateTime};

/// The entity name of contact events.
pub const CONTACT_ENTITY: &str = "contact";

/// The four contact events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContactEvent {
    /// `contact.created`
    Created,
    /// `contact.changed`
    Changed,
    /// `contact.softdeleted`
    SoftDeleted,
    /// `contact.deleted`
    Deleted,
}

impl ContactEvent {
    /// Every contact event, in lifecycle order.
    pub const ALL: [ContactEvent; 4] = [
        ContactEvent::Created,
        ContactEvent::Changed,
        ContactEvent::SoftDeleted,
        ContactEvent::Deleted,
    ];

    /// The event name on the wire, e.g. `"contact.softdeleted"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ContactEvent::Created => "contact.created",
            ContactEvent::Changed => "contact.changed",
            ContactEvent::SoftDeleted => "contact.softdeleted",
            ContactEvent::Deleted => "contact.deleted",
        }
    }
}

impl fmt::Display for ContactEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the contact events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown contact event {0:?} (expected contact.created, contact.changed, contact.softdeleted or contact.deleted)")]
pub struct UnknownContactEvent(pub String);

impl FromStr for ContactEvent {
    type Err = UnknownContactEvent;

    /// Exact match on the wire name (event names are case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContactEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownContactEvent(s.to_owned()))
    }
}

/// The contact `FieldValues` keys in the order SuperOffice sends them (spec 1.4).
pub const CONTACT_FIELD_VALUE_KEYS: [&str; 13] = [
    "activeInterests",
    "associate_id",
    "business_idx",
    "category_idx",
    "country_id",
    "deleted",
    "DeletedDate",
    "registered",
    "registered_associate_id",
    "source",
    "updated",
    "userdef2_id",
    "userdef_id",
];

/// The `FieldValues` snapshot of a contact row. Unset foreign keys are 0, a NULL date is
/// [`NetDateTime::MIN`].
#[derive(Clone, Debug, PartialEq)]
pub struct ContactFieldValues {
    /// `activeInterests`
    pub active_interests: i64,
    /// `associate_id`: the contact's owner.
    pub associate_id: i64,
    /// `business_idx`
    pub business_idx: i64,
    /// `category_idx`
    pub category_idx: i64,
    /// `country_id`
    pub country_id: i64,
    /// `deleted`: nonzero when soft-deleted.
    pub deleted: i64,
    /// `DeletedDate`: when it was soft-deleted, MIN when not.
    pub deleted_date: NetDateTime,
    /// `registered`: when it was created (unspecified kind).
    pub registered: NetDateTime,
    /// `registered_associate_id`
    pub registered_associate_id: i64,
    /// `source`
    pub source: i64,
    /// `updated`: when it was last changed (local kind).
    pub updated: NetDateTime,
    /// `userdef2_id`
    pub userdef2_id: i64,
    /// `userdef_id`
    pub userdef_id: i64,
}

/// Why a `FieldValues` object is not a contact snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldValuesError {
    /// A required key is absent.
    #[error("FieldValues has no {0:?}")]
    Missing(&'static str),
    /// A numeric key holds something other than an integer.
    #[error("FieldValues {0:?} is not an integer")]
    NotAnInteger(&'static str),
    /// A date key holds something other than a date-time string.
    #[error("FieldValues {key:?} is not a date-time: {source}")]
    BadDate {
        /// The key.
        key: &'static str,
        /// What was wrong with the value.
        source: DateError,
    },
    /// A date key holds something other than a string.
    #[error("FieldValues {0:?} is not a date-time string")]
    NotAString(&'static str),
}

impl ContactFieldValues {
    /// The JSON object, keys in [`CONTACT_FIELD_VALUE_KEYS`] order.
    pub fn to_map(&self) -> Map<String, Value> {
        let date = |d: &NetDateTime| Value::String(d.to_string());
        let entries = [
            Value::from(self.active_interests),
            Value::from(self.associate_id),
            Value::from(self.business_idx),
            Value::from(self.category_idx),
            Value::from(self.country_id),
            Value::from(self.deleted),
            date(&self.deleted_date),
            date(&self.registered),
            Value::from(self.registered_associate_id),
            Value::from(self.source),
            date(&self.updated),
            Value::from(self.userdef2_id),
            Value::from(self.userdef_id),
        ];
        CONTACT_FIELD_VALUE_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .zip(entries)
            .collect()
    }

    /// Reads the snapshot back from a `FieldValues` object. Every key of
    /// [`CONTACT_FIELD_VALUE_KEYS`] is required; other keys are ignored.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, FieldValuesError> {
        let int = |key: &'static str| -> Result<i64, FieldValuesError> {
            map.get(key)
                .ok_or(FieldValuesError::Missing(key))?
                .as_i64()
                .ok_or(FieldValuesError::NotAnInteger(key))
        };
        let date = |key: &'static str| -> Result<NetDateTime, FieldValuesError> {
            let s = map
                .get(key)
                .ok_or(FieldValuesError::Missing(key))?
                .as_str()
                .ok_or(FieldValuesError::NotAString(key))?;
            NetDateTime::parse(s).map_err(|source| FieldValuesError::BadDate { key, source })
        };
        Ok(ContactFieldValues {
            active_interests: int("activeInterests")?,
            associate_id: int("associate_id")?,
            business_idx: int("business_idx")?,
            category_idx: int("category_idx")?,
            country_id: int("country_id")?,
            deleted: int("deleted")?,
            deleted_date: date("DeletedDate")?,
            registered: date("registered")?,
            registered_associate_id: int("registered_associate_id")?,
            source: int("source")?,
            updated: date("updated")?,
            userdef2_id: int("userdef2_id")?,
            userdef_id: int("userdef_id")?,
        })
    }
}

/// The `Values` object of `contact.deleted`: `{"associate_id": …, "contact_id": …}`.
pub fn contact_deleted_values(contact_id: i64, associate_id: i64) -> Map<String, Value> {
    let mut values = Map::new();
    values.insert("associate_id".to_owned(), Value::from(associate_id));
    values.insert("contact_id".to_owned(), Value::from(contact_id));
    values
}
