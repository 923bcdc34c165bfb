//! The carriers of the REST API as typed serde structs: what a client sends and what it gets
//! back. The answers are exact: SuperOffice's property order, null where SuperOffice writes
//! null, .NET date strings.
//!
//! - [`field`]: reading a client's JSON (case-insensitive names; absent, null, a value, or a
//!   refused value told apart and reported in property order);
//! - [`webhook`]: the `Webhook` carrier in and out, and the `Test` result;
//! - [`delivery`]: the delivery log (our addition);
//! - [`contact`]: the `ContactEntity` in and out.

pub mod contact;
pub mod delivery;
pub mod field;
pub mod webhook;

use crmhooks_store::{render_date, LocalZone, Ticks};
use serde::Serialize;

/// `_Links` of an entity: its own URL as `Self`, the collection it belongs to as `Archive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Links {
    /// The entity's URL.
    #[serde(rename = "Self")]
    pub this: String,
    /// The collection's URL (`…/api/v1/Webhook`).
    #[serde(rename = "Archive")]
    pub archive: String,
}

impl Links {
    /// The links of the entity at `url` in the collection at `archive`.
    pub fn new(url: String, archive: String) -> Links {
        Links { this: url, archive }
    }
}

/// A date the store keeps as ticks, as a .NET date string in `zone`; 0 is .NET's
/// `DateTime.MinValue` (`0001-01-01T00:00:00`), SuperOffice's "never".
pub fn net_date(ticks: Ticks, zone: &LocalZone) -> String {
    if ticks == 0 {
        crmhooks_payload::NetDateTime::MIN.to_string()
    } else {
        render_date(Some(ticks), Some(zone))
    }
}
