//! Ids of the domain's records, one type each, so that a webhook's id cannot be passed where a
//! tenant's is expected. They are the database's integer keys (and the EventId a UUID) and
//! serialize as the bare value; the SQL edge converts them (binding and reading rows).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! integer_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// The id stored as `v`.
            pub const fn new(v: i64) -> Self {
                $name(v)
            }

            /// The stored integer.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.0))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(v).map($name)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <i64 as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <i64 as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <i64 as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <i64 as sqlx::Encode<'_, sqlx::Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                v: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                <i64 as sqlx::Decode<'r, sqlx::Postgres>>::decode(v).map($name)
            }
        }
    };
}

integer_id!(
    /// A tenant (`ContextIdentifier`): `tenant.tenant_id`.
    TenantId
);
integer_id!(
    /// A contact: its primary key, `contact.contact_id`.
    ContactId
);
integer_id!(
    /// A webhook definition: `webhook.webhook_id` (`WebhookId` on the wire).
    WebhookId
);
integer_id!(
    /// A delivery of an event to a webhook: `delivery.delivery_id`.
    DeliveryId
);

/// The `EventId` of a delivery's attempt cycle (`X-Superoffice-Eventid`): a new one for each
/// cycle. Stored as its hyphenated lower-case text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A new random EventId.
    pub fn new_v4() -> Self {
        EventId(uuid::Uuid::new_v4())
    }

    /// The UUID.
    pub const fn uuid(self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for EventId {
    fn from(u: uuid::Uuid) -> Self {
        EventId(u)
    }
}

impl From<EventId> for uuid::Uuid {
    fn from(e: EventId) -> Self {
        e.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(EventId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_bare_values() {
        assert_eq!(
            serde_json::to_string(&WebhookId::new(7)).ok().as_deref(),
            Some("7")
        );
        assert_eq!("42".parse::<TenantId>().ok(), Some(TenantId::new(42)));
        assert!("x".parse::<DeliveryId>().is_err());
        let id: EventId = uuid::Uuid::nil().into();
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some("\"00000000-0000-0000-0000-000000000000\"")
        );
        assert_eq!(id.to_string().parse::<EventId>().ok(), Some(id));
    }
}
