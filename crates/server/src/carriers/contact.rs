//! The `ContactEntity` subset of spec 8, in and out, mapped onto contact rows.
//!
//! Out: every property, carriers in their full shape (`Business` and `Category`
//! `{"Id","Value","Tooltip"}`, `Country` `{"CountryId","Name"}`, `Associate`, `CreatedBy` and
//! `UpdatedBy` `{"AssociateId","Name","FullName"}`), then `_Links` once the contact exists.
//! In: the writable properties; of a carrier only its id counts, and a bare number is taken
//! as the id. Unknown properties (Emails, Phones, …) are ignored.

use crmhooks_store::contact::CONTACT_COLUMNS;
use crmhooks_store::{render_date, LocalZone, Row, Ticks, Value as Stored};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field::{Field, FromJson, Refusal};
use super::Links;
use crate::error::ApiResult;

/// The position in a contact row of the column that `ContactEntity` shows as `$property`,
/// looked up in the store's one table of contact fields while the code is built: a property
/// that no column declares does not compile.
macro_rules! at {
    ($property:literal) => {
        const { crmhooks_store::entity::property_index(&CONTACT_COLUMNS, $property) }
    };
}

/// A contact as answered, in SuperOffice's property order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[schema(as = ContactEntity, examples(json!(crate::openapi::examples::contact_with_links())))]
#[allow(missing_docs)] // the properties of spec 8, named as SuperOffice names them
pub struct ContactEntity<'a> {
    pub contact_id: i64,
    pub name: &'a str,
    pub department: &'a str,
    pub org_nr: &'a str,
    pub number1: &'a str,
    pub number2: &'a str,
    pub kananame: &'a str,
    pub created_date: Option<String>,
    pub updated_date: Option<String>,
    pub created_by: Associate,
    pub updated_by: Associate,
    pub associate: Associate,
    pub business: ListItem,
    pub category: ListItem,
    pub country: Country,
    pub no_mailing: bool,
    pub xstop: bool,
    pub group_id: i64,
    pub deleted: i64,
    pub deleted_date: Option<String>,
    pub source: i64,
    pub active_interests: i64,
    pub active_erp_links: i64,
    pub dbi_agent_id: i64,
    pub dbi_key: &'a str,
    pub dbi_last_syncronized: Option<String>,
    pub dbi_last_modified: Option<String>,
    pub support_associate_id: i64,
    pub support_person_id: i64,
    pub support_language_id: i64,
    pub ticket_priority_id: i64,
    pub tz_location_id: i64,
    pub mother_id: i64,
    pub userdef_id: i64,
    pub userdef2_id: i64,
    /// Absent on a contact not yet stored (the `default` carrier).
    #[serde(rename = "_Links", skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
}

/// `{"AssociateId": n, "Name": "", "FullName": ""}` (we keep no associate names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Associate {
    /// The associate; 0 is none.
    pub associate_id: i64,
    /// Always empty.
    pub name: &'static str,
    /// Always empty.
    pub full_name: &'static str,
}

/// `{"Id": n, "Value": "", "Tooltip": ""}`: an entry of a list (Business, Category).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ListItem {
    /// The entry; 0 is none.
    pub id: i64,
    /// Always empty (we keep no list texts).
    pub value: &'static str,
    /// Always empty.
    pub tooltip: &'static str,
}

/// `{"CountryId": n, "Name": ""}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Country {
    /// The country; 0 is none.
    pub country_id: i64,
    /// Always empty.
    pub name: &'static str,
}

impl<'a> ContactEntity<'a> {
    /// The entity of a stored `row` (`_Links` under `base_url` once it has an id), its
    /// dates in `zone`.
    pub fn of(row: &'a Row, zone: &LocalZone, base_url: &str) -> Self {
        let get = |i| row.at(i);
        let text = |i| get(i).as_str().unwrap_or_default();
        let int = |i| get(i).as_i64();
        let date = |i| get(i).as_ticks().map(|t| render_date(Some(t), Some(zone)));
        let associate = |i| Associate {
            associate_id: int(i),
            name: "",
            full_name: "",
        };
        let list_item = |i| ListItem {
            id: int(i),
            value: "",
            tooltip: "",
        };
        let id = int(at!("ContactId"));
        ContactEntity {
            contact_id: id,
            name: text(at!("Name")),
            department: text(at!("Department")),
            org_nr: text(at!("OrgNr")),
            number1: text(at!("Number1")),
            number2: text(at!("Number2")),
            kananame: text(at!("Kananame")),
            created_date: date(at!("CreatedDate")),
            updated_date: date(at!("UpdatedDate")),
            created_by: associate(at!("CreatedBy")),
            updated_by: associate(at!("UpdatedBy")),
            associate: associate(at!("Associate")),
            business: list_item(at!("Business")),
            category: list_item(at!("Category")),
            country: Country {
                country_id: int(at!("Country")),
                name: "",
            },
            no_mailing: int(at!("NoMailing")) != 0,
            xstop: int(at!("Xstop")) != 0,
            group_id: int(at!("GroupId")),
            deleted: int(at!("Deleted")),
            deleted_date: date(at!("DeletedDate")),
            source: int(at!("Source")),
            active_interests: int(at!("ActiveInterests")),
            active_erp_links: int(at!("ActiveErpLinks")),
            dbi_agent_id: int(at!("DbiAgentId")),
            dbi_key: text(at!("DbiKey")),
            dbi_last_syncronized: date(at!("DbiLastSyncronized")),
            dbi_last_modified: date(at!("DbiLastModified")),
            support_associate_id: int(at!("SupportAssociateId")),
            support_person_id: int(at!("SupportPersonId")),
            support_language_id: int(at!("SupportLanguageId")),
            ticket_priority_id: int(at!("TicketPriorityId")),
            tz_location_id: int(at!("TzLocationId")),
            mother_id: int(at!("MotherId")),
            userdef_id: int(at!("UserdefId")),
            userdef2_id: int(at!("Userdef2Id")),
            links: (id != 0).then(|| {
                Links::new(
                    format!("{base_url}/api/v1/Contact/{id}"),
                    format!("{base_url}/api/v1/Contact"),
                )
            }),
        }
    }
}

/// A contact as a client sends it: the writable properties. Names match in any case; `null`
/// or a missing property is its default (empty, 0, no date) on POST and PUT; of `Associate`,
/// `Business`, `Category` and `Country` only the id counts, and a bare number is taken as
/// the id; dates are .NET date strings or RFC 3339; read-only and unknown properties
/// (`ContactId`, `Emails`, …) are ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase", default)]
#[allow(missing_docs)] // as in ContactEntity
#[schema(examples(json!(crate::openapi::examples::contact_input())))]
pub struct ContactInput {
    #[schema(value_type = Option<String>)]
    pub name: Field<String>,
    #[schema(value_type = Option<String>)]
    pub department: Field<String>,
    #[schema(value_type = Option<String>)]
    pub org_nr: Field<String>,
    #[schema(value_type = Option<String>)]
    pub number1: Field<String>,
    #[schema(value_type = Option<String>)]
    pub number2: Field<String>,
    #[schema(value_type = Option<String>)]
    pub kananame: Field<String>,
    #[schema(value_type = Option<Associate>)]
    pub associate: Field<AssociateRef>,
    #[schema(value_type = Option<ListItem>)]
    pub business: Field<ListItemRef>,
    #[schema(value_type = Option<ListItem>)]
    pub category: Field<ListItemRef>,
    #[schema(value_type = Option<Country>)]
    pub country: Field<CountryRef>,
    #[schema(value_type = Option<bool>)]
    pub no_mailing: Field<bool>,
    #[schema(value_type = Option<bool>)]
    pub xstop: Field<bool>,
    #[schema(value_type = Option<i64>)]
    pub group_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub source: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub active_interests: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub active_erp_links: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub dbi_agent_id: Field<i64>,
    #[schema(value_type = Option<String>)]
    pub dbi_key: Field<String>,
    #[schema(value_type = Option<String>)]
    pub dbi_last_syncronized: Field<NetDate>,
    #[schema(value_type = Option<String>)]
    pub dbi_last_modified: Field<NetDate>,
    #[schema(value_type = Option<i64>)]
    pub support_associate_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub support_person_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub support_language_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub ticket_priority_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub tz_location_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub mother_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub userdef_id: Field<i64>,
    #[schema(value_type = Option<i64>)]
    pub userdef2_id: Field<i64>,
}

/// What an absent property does to the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    /// Takes its default: empty string, 0, no date (a carrier sent whole: POST, PUT).
    IsDefault,
    /// Keeps the stored value (a patch that names only what it changes).
    Keeps,
}

impl ContactInput {
    /// Writes the properties over `row`, in the carrier's order; the first refused one is
    /// the answer. Null is the default.
    pub fn apply_to(&self, row: &mut Row, absent: Absent) -> ApiResult<()> {
        let mut w = RowWriter { row, absent };
        macro_rules! put {
            ($property:literal, $field:expr) => {
                w.put($property, at!($property), &$field)?
            };
        }
        put!("Name", self.name);
        put!("Department", self.department);
        put!("OrgNr", self.org_nr);
        put!("Number1", self.number1);
        put!("Number2", self.number2);
        put!("Kananame", self.kananame);
        put!("Associate", self.associate);
        put!("Business", self.business);
        put!("Category", self.category);
        put!("Country", self.country);
        put!("NoMailing", self.no_mailing);
        put!("Xstop", self.xstop);
        put!("GroupId", self.group_id);
        put!("Source", self.source);
        put!("ActiveInterests", self.active_interests);
        put!("ActiveErpLinks", self.active_erp_links);
        put!("DbiAgentId", self.dbi_agent_id);
        put!("DbiKey", self.dbi_key);
        put!("DbiLastSyncronized", self.dbi_last_syncronized);
        put!("DbiLastModified", self.dbi_last_modified);
        put!("SupportAssociateId", self.support_associate_id);
        put!("SupportPersonId", self.support_person_id);
        put!("SupportLanguageId", self.support_language_id);
        put!("TicketPriorityId", self.ticket_priority_id);
        put!("TzLocationId", self.tz_location_id);
        put!("MotherId", self.mother_id);
        put!("UserdefId", self.userdef_id);
        put!("Userdef2Id", self.userdef2_id);
        Ok(())
    }
}

/// A property's value as the row stores it.
trait Column {
    /// The stored value.
    fn stored(&self) -> Stored;
    /// The stored value of null (and of absent in a whole carrier).
    fn default() -> Stored;
}

impl Column for String {
    fn stored(&self) -> Stored {
        Stored::Text(self.clone())
    }
    fn default() -> Stored {
        Stored::Text(String::new())
    }
}

impl Column for i64 {
    fn stored(&self) -> Stored {
        Stored::Int(*self)
    }
    fn default() -> Stored {
        Stored::Int(0)
    }
}

impl Column for bool {
    fn stored(&self) -> Stored {
        Stored::Int(i64::from(*self))
    }
    fn default() -> Stored {
        Stored::Int(0)
    }
}

/// Writes [`ContactInput`]'s properties into a row.
struct RowWriter<'r> {
    row: &'r mut Row,
    absent: Absent,
}

impl RowWriter<'_> {
    /// Writes one property into the row's column `at`: its value, or the default for null
    /// (and for absent, unless absent keeps).
    fn put<T: Column>(&mut self, property: &str, at: usize, field: &Field<T>) -> ApiResult<()> {
        let value = match field.read(property)? {
            None if self.absent == Absent::Keeps => return Ok(()),
            None | Some(None) => T::default(),
            Some(Some(v)) => v.stored(),
        };
        self.row.set_at(at, value);
        Ok(())
    }
}

/// A date as sent: a .NET date string; .NET's `MinValue` means "no date".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NetDate(pub Option<Ticks>);

impl FromJson for NetDate {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        let Value::String(s) = v else {
            return Err(Refusal::new("must be a date string"));
        };
        let d =
            crmhooks_payload::NetDateTime::parse(&s).map_err(|e| Refusal::new(e.to_string()))?;
        Ok(NetDate(match d.to_offset_date_time() {
            Some(t) if !d.is_min() => Some((t.unix_timestamp_nanos() / 100) as i64),
            _ => None,
        }))
    }
}

impl Column for NetDate {
    fn stored(&self) -> Stored {
        self.0.map_or(Stored::Null, Stored::Date)
    }
    fn default() -> Stored {
        Stored::Null
    }
}

/// The id of a carrier as sent: `{"<key>": n, …}` (the key in any case; missing or null is
/// 0), a bare number, or null.
fn carrier_id(v: Value, key: &str) -> Result<i64, Refusal> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| Refusal::new("must be an integer")),
        Value::Object(o) => match o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            None | Some((_, Value::Null)) => Ok(0),
            Some((_, v)) => v
                .as_i64()
                .ok_or_else(|| Refusal::at(format!(".{key}"), "must be an integer")),
        },
        _ => Err(Refusal::new(format!("must be an object with {key}"))),
    }
}

/// `Associate` as sent: its `AssociateId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AssociateRef(pub i64);

impl FromJson for AssociateRef {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        carrier_id(v, "AssociateId").map(AssociateRef)
    }
}

impl Column for AssociateRef {
    fn stored(&self) -> Stored {
        Stored::Int(self.0)
    }
    fn default() -> Stored {
        Stored::Int(0)
    }
}

/// `Business` or `Category` as sent: its `Id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ListItemRef(pub i64);

impl FromJson for ListItemRef {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        carrier_id(v, "Id").map(ListItemRef)
    }
}

impl Column for ListItemRef {
    fn stored(&self) -> Stored {
        Stored::Int(self.0)
    }
    fn default() -> Stored {
        Stored::Int(0)
    }
}

/// `Country` as sent: its `CountryId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CountryRef(pub i64);

impl FromJson for CountryRef {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        carrier_id(v, "CountryId").map(CountryRef)
    }
}

impl Column for CountryRef {
    fn stored(&self) -> Stored {
        Stored::Int(self.0)
    }
    fn default() -> Stored {
        Stored::Int(0)
    }
}
