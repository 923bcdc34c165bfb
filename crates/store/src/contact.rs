//! The contact table (spec 7.1) as an [`EntityDef`], plus SoundEx.

use crate::entity::{ColumnDef, ColumnKind, EntityDef};

const fn col(
    name: &'static str,
    kind: ColumnKind,
    nullable: bool,
    property: Option<&'static str>,
) -> ColumnDef {
    ColumnDef {
        name,
        kind,
        nullable,
        property,
    }
}

const INT: ColumnKind = ColumnKind::Int;
const USHORT: ColumnKind = ColumnKind::UShort;
const BOOL: ColumnKind = ColumnKind::Bool;
const DATE: ColumnKind = ColumnKind::Date;
const fn text(max: usize) -> ColumnKind {
    ColumnKind::Text { max }
}

/// All 38 contact columns in canonical `Changes` order: the order of SuperOffice's
/// `contact.created` example, with `DeletedDate` right after `deleted` (DESIGN.md). The one
/// table of contact fields: its name, what it holds, and the `ContactEntity` property that shows
/// it; the carriers and the listing find their columns here, checked when they are built.
pub const CONTACT_COLUMNS: [ColumnDef; 38] = [
    col("contact_id", ColumnKind::Key, false, Some("ContactId")),
    col("activeErpLinks", INT, true, Some("ActiveErpLinks")),
    col("activeInterests", USHORT, true, Some("ActiveInterests")),
    col("associate_id", INT, true, Some("Associate")),
    col("business_idx", INT, false, Some("Business")),
    col("category_idx", INT, false, Some("Category")),
    col("country_id", INT, false, Some("Country")),
    col("dbi_agent_id", INT, true, Some("DbiAgentId")),
    col("dbi_key", text(255), true, Some("DbiKey")),
    col("dbi_last_modified", DATE, true, Some("DbiLastModified")),
    col(
        "dbi_last_syncronized",
        DATE,
        true,
        Some("DbiLastSyncronized"),
    ),
    col("deleted", USHORT, true, Some("Deleted")),
    col("DeletedDate", DATE, true, Some("DeletedDate")),
    col("department", text(219), true, Some("Department")),
    col("group_id", INT, true, Some("GroupId")),
    col("kananame", text(219), true, Some("Kananame")),
    col("mother_id", INT, true, Some("MotherId")),
    col("name", text(219), false, Some("Name")),
    col("nomailing", BOOL, true, Some("NoMailing")),
    col("number1", text(49), true, Some("Number1")),
    col("number2", text(49), true, Some("Number2")),
    col("orgNr", text(49), true, Some("OrgNr")),
    col("registered_associate_id", INT, false, Some("CreatedBy")),
    col("registered", DATE, false, Some("CreatedDate")),
    col("soundEx", text(9), true, None),
    col("source", USHORT, true, Some("Source")),
    col("supportAssociateId", INT, true, Some("SupportAssociateId")),
    col("supportLanguageId", INT, true, Some("SupportLanguageId")),
    col("supportPersonId", INT, true, Some("SupportPersonId")),
    col("text_id", INT, true, None),
    col("ticketPriorityId", INT, true, Some("TicketPriorityId")),
    col("tzLocationId", INT, true, Some("TzLocationId")),
    col("updated_associate_id", INT, false, Some("UpdatedBy")),
    col("updated", DATE, false, Some("UpdatedDate")),
    col("updatedCount", USHORT, false, None),
    col("userdef_id", INT, true, Some("UserdefId")),
    col("userdef2_id", INT, true, Some("Userdef2Id")),
    col("xstop", BOOL, true, Some("Xstop")),
];

/// The contact entity.
pub static CONTACT: EntityDef = EntityDef {
    entity: "contact",
    table: "contact",
    columns: &CONTACT_COLUMNS,
    not_in_created: &["DeletedDate"],
    bookkeeping: &["updated_associate_id", "updated", "updatedCount"],
    derived: &[("name", "soundEx")],
    field_values: &crmhooks_payload::CONTACT_FIELD_VALUE_KEYS,
    local_dates: &["updated", "DeletedDate"],
    deleted_values: &["associate_id", "contact_id"],
};

/// American SoundEx of a name, as SuperOffice keeps it in `soundEx` (at most 9 characters; ours
/// are always 4): the first letter, then up to three digits. Empty when the name has no letter.
pub fn soundex(name: &str) -> String {
    fn code(c: char) -> Option<char> {
        match c {
            'B' | 'F' | 'P' | 'V' => Some('1'),
            'C' | 'G' | 'J' | 'K' | 'Q' | 'S' | 'X' | 'Z' => Some('2'),
            'D' | 'T' => Some('3'),
            'L' => Some('4'),
            'M' | 'N' => Some('5'),
            'R' => Some('6'),
            _ => None,
        }
    }
    let mut letters = name
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase());
    let Some(first) = letters.next() else {
        return String::new();
    };
    let mut out = String::with_capacity(4);
    out.push(first);
    let mut last = code(first);
    for c in letters {
        if out.len() == 4 {
            break;
        }
        let d = code(c);
        if d.is_some() && d != last {
            out.extend(d);
        }
        // H and W do not separate equal codes; vowels do.
        if c != 'H' && c != 'W' {
            last = d;
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_matches_the_classic_examples() {
        for (name, want) in [
            ("Robert", "R163"),
            ("Rupert", "R163"),
            ("Rubin", "R150"),
            ("Ashcraft", "A261"),
            ("Tymczak", "T522"),
            ("Pfister", "P236"),
            ("Honeyman", "H555"),
            ("", ""),
            ("123", ""),
        ] {
            assert_eq!(soundex(name), want, "{name}");
        }
    }

    /// FieldValues written as text are the bytes serde_json gives for the map of the same
    /// values: integers (negative too) and dates set, local or absent.
    #[test]
    fn field_values_text_is_serde_jsons_map() {
        use crate::entity::{ColumnKind, Row, Value};
        use crate::sql::plan::{field_values, render_date};
        use serde_json::{Map, Value as Json};
        let zone = crate::LocalZone::named("Europe/Oslo").unwrap_or_default();
        let mut row = Row::empty(&CONTACT);
        row.set(&CONTACT, "associate_id", Value::Int(-42));
        row.set(&CONTACT, "source", Value::Int(i64::MAX));
        row.set(&CONTACT, "registered", Value::Date(638_000_000_000_000_000));
        row.set(&CONTACT, "updated", Value::Date(1));
        let mut want = Map::new();
        for name in CONTACT.field_values {
            let Some(i) = CONTACT.index(name) else {
                continue;
            };
            let v = &row.values[i];
            let json = match CONTACT.columns[i].kind {
                ColumnKind::Date => {
                    let local = CONTACT.local_dates.contains(name).then_some(&zone);
                    Json::String(render_date(v.as_ticks(), local))
                }
                ColumnKind::Text { .. } => Json::String(v.as_str().unwrap_or_default().to_owned()),
                _ => Json::from(v.as_i64()),
            };
            want.insert((*name).to_owned(), json);
        }
        assert_eq!(want.len(), CONTACT.field_values.len());
        let want = serde_json::to_string(&want).unwrap_or_default();
        assert_eq!(field_values(&CONTACT, &row, &zone), want);
    }

    /// `updated` carries the offset in force at its instant: Oslo is +01:00 in winter and
    /// +02:00 in summer; `registered` (Unspecified kind) carries none.
    #[test]
    fn field_values_dates_carry_the_offset_of_their_instant() {
        use crate::entity::{Row, Value};
        use crate::sql::plan::field_values;
        let zone = crate::LocalZone::named("Europe/Oslo").unwrap_or_default();
        let ticks = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 100) as i64;
        for (at, want) in [
            (
                time::macros::datetime!(2025-01-15 09:30:00.1234567 UTC),
                "2025-01-15T10:30:00.1234567+01:00",
            ),
            (
                time::macros::datetime!(2025-05-14 08:48:07.8912039 UTC),
                "2025-05-14T10:48:07.8912039+02:00",
            ),
        ] {
            let mut row = Row::empty(&CONTACT);
            row.set(&CONTACT, "updated", Value::Date(ticks(at)));
            row.set(&CONTACT, "registered", Value::Date(ticks(at)));
            let fv: serde_json::Value =
                serde_json::from_str(&field_values(&CONTACT, &row, &zone)).unwrap_or_default();
            assert_eq!(fv["updated"], want);
            assert!(
                !fv["registered"].as_str().unwrap_or("+").contains('+'),
                "{fv}"
            );
        }
    }

    #[test]
    fn created_changes_match_the_superoffice_example() {
        let fixture = r#"["contact_id","activeErpLinks","activeInterests","associate_id","business_idx","category_idx","country_id","dbi_agent_id","dbi_key","dbi_last_modified","dbi_last_syncronized","deleted","department","group_id","kananame","mother_id","name","nomailing","number1","number2","orgNr","registered_associate_id","registered","soundEx","source","supportAssociateId","supportLanguageId","supportPersonId","text_id","ticketPriorityId","tzLocationId","updated_associate_id","updated","updatedCount","userdef_id","userdef2_id","xstop"]"#;
        let want: Vec<String> = serde_json::from_str(fixture).unwrap_or_default();
        assert_eq!(want.len(), 37);
        assert_eq!(CONTACT.created_changes(), want);
    }
}
