//! The `ContactEntity` subset of spec 8, in and out, mapped onto contact rows.
//!
//! Out: every property, carriers in their full shape (`Business` and `Category`
//! `{"Id","Value","Tooltip"}`, `Country` `{"CountryId","Name"}`, `Associate`, `CreatedBy` and
//! `UpdatedBy` `{"AssociateId","Name","FullName"}`), then `_Links` once the contact exists.
//! In: the writable properties; of a carrier only its id counts, and a bare number is taken
//! as the id. Unknown properties (Emails, Phones, …) are ignored.

use crmhooks_store::contact::CONTACT;
use crmhooks_store::{render_date, LocalZone, Row, Ticks, Value as Stored};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field::{Field, FromJson, Refusal};
use super::Links;
use crate::error::ApiResult;

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
        let get = |column| row.get(&CONTACT, column);
        let text = |column| get(column).as_str().unwrap_or_default();
        let int = |column| get(column).as_i64();
        let date = |column| {
            get(column)
                .as_ticks()
                .map(|t| render_date(Some(t), Some(zone)))
        };
        let associate = |column| Associate {
            associate_id: int(column),
            name: "",
            full_name: "",
        };
        let list_item = |column| ListItem {
            id: int(column),
            value: "",
            tooltip: "",
        };
        let id = int("contact_id");
        ContactEntity {
            contact_id: id,
            name: text("name"),
            department: text("department"),
            org_nr: text("orgNr"),
            number1: text("number1"),
            number2: text("number2"),
            kananame: text("kananame"),
            created_date: date("registered"),
            updated_date: date("updated"),
            created_by: associate("registered_associate_id"),
            updated_by: associate("updated_associate_id"),
            associate: associate("associate_id"),
            business: list_item("business_idx"),
            category: list_item("category_idx"),
            country: Country {
                country_id: int("country_id"),
                name: "",
            },
            no_mailing: int("nomailing") != 0,
            xstop: int("xstop") != 0,
            group_id: int("group_id"),
            deleted: int("deleted"),
            deleted_date: date("DeletedDate"),
            source: int("source"),
            active_interests: int("activeInterests"),
            active_erp_links: int("activeErpLinks"),
            dbi_agent_id: int("dbi_agent_id"),
            dbi_key: text("dbi_key"),
            dbi_last_syncronized: date("dbi_last_syncronized"),
            dbi_last_modified: date("dbi_last_modified"),
            support_associate_id: int("supportAssociateId"),
            support_person_id: int("supportPersonId"),
            support_language_id: int("supportLanguageId"),
            ticket_priority_id: int("ticketPriorityId"),
            tz_location_id: int("tzLocationId"),
            mother_id: int("mother_id"),
            userdef_id: int("userdef_id"),
            userdef2_id: int("userdef2_id"),
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
        w.put("Name", "name", &self.name)?;
        w.put("Department", "department", &self.department)?;
        w.put("OrgNr", "orgNr", &self.org_nr)?;
        w.put("Number1", "number1", &self.number1)?;
        w.put("Number2", "number2", &self.number2)?;
        w.put("Kananame", "kananame", &self.kananame)?;
        w.put("Associate", "associate_id", &self.associate)?;
        w.put("Business", "business_idx", &self.business)?;
        w.put("Category", "category_idx", &self.category)?;
        w.put("Country", "country_id", &self.country)?;
        w.put("NoMailing", "nomailing", &self.no_mailing)?;
        w.put("Xstop", "xstop", &self.xstop)?;
        w.put("GroupId", "group_id", &self.group_id)?;
        w.put("Source", "source", &self.source)?;
        w.put("ActiveInterests", "activeInterests", &self.active_interests)?;
        w.put("ActiveErpLinks", "activeErpLinks", &self.active_erp_links)?;
        w.put("DbiAgentId", "dbi_agent_id", &self.dbi_agent_id)?;
        w.put("DbiKey", "dbi_key", &self.dbi_key)?;
        w.put(
            "DbiLastSyncronized",
            "dbi_last_syncronized",
            &self.dbi_last_syncronized,
        )?;
        w.put(
            "DbiLastModified",
            "dbi_last_modified",
            &self.dbi_last_modified,
        )?;
        w.put(
            "SupportAssociateId",
            "supportAssociateId",
            &self.support_associate_id,
        )?;
        w.put(
            "SupportPersonId",
            "supportPersonId",
            &self.support_person_id,
        )?;
        w.put(
            "SupportLanguageId",
            "supportLanguageId",
            &self.support_language_id,
        )?;
        w.put(
            "TicketPriorityId",
            "ticketPriorityId",
            &self.ticket_priority_id,
        )?;
        w.put("TzLocationId", "tzLocationId", &self.tz_location_id)?;
        w.put("MotherId", "mother_id", &self.mother_id)?;
        w.put("UserdefId", "userdef_id", &self.userdef_id)?;
        w.put("Userdef2Id", "userdef2_id", &self.userdef2_id)
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
    /// Writes one property into `column`: its value, or the default for null (and for
    /// absent, unless absent keeps).
    fn put<T: Column>(
        &mut self,
        property: &str,
        column: &'static str,
        field: &Field<T>,
    ) -> ApiResult<()> {
        let value = match field.read(property)? {
            None if self.absent == Absent::Keeps => return Ok(()),
            None | Some(None) => T::default(),
            Some(Some(v)) => v.stored(),
        };
        self.row.set(&CONTACT, column, value);
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
