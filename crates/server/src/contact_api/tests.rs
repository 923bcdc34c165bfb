//! The typed ContactEntity against the field table it replaced: the table and its readers,
//! kept here as the reference, say what clients got before, and the typed carriers must do
//! the same, byte for byte and error for error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crmhooks_store::{render_date, LocalZone, Ticks};
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Int,
    Bool,
    Date,
    Associate,
    List,
    Country,
}

struct Field {
    json: &'static str,
    column: &'static str,
    shape: Shape,
    writable: bool,
}

const fn f(json: &'static str, column: &'static str, shape: Shape, writable: bool) -> Field {
    Field {
        json,
        column,
        shape,
        writable,
    }
}

/// The reference: ContactEntity properties in response order.
static FIELDS: [Field; 35] = [
    f("ContactId", "contact_id", Shape::Int, false),
    f("Name", "name", Shape::Text, true),
    f("Department", "department", Shape::Text, true),
    f("OrgNr", "orgNr", Shape::Text, true),
    f("Number1", "number1", Shape::Text, true),
    f("Number2", "number2", Shape::Text, true),
    f("Kananame", "kananame", Shape::Text, true),
    f("CreatedDate", "registered", Shape::Date, false),
    f("UpdatedDate", "updated", Shape::Date, false),
    f(
        "CreatedBy",
        "registered_associate_id",
        Shape::Associate,
        false,
    ),
    f("UpdatedBy", "updated_associate_id", Shape::Associate, false),
    f("Associate", "associate_id", Shape::Associate, true),
    f("Business", "business_idx", Shape::List, true),
    f("Category", "category_idx", Shape::List, true),
    f("Country", "country_id", Shape::Country, true),
    f("NoMailing", "nomailing", Shape::Bool, true),
    f("Xstop", "xstop", Shape::Bool, true),
    f("GroupId", "group_id", Shape::Int, true),
    f("Deleted", "deleted", Shape::Int, false),
    f("DeletedDate", "DeletedDate", Shape::Date, false),
    f("Source", "source", Shape::Int, true),
    f("ActiveInterests", "activeInterests", Shape::Int, true),
    f("ActiveErpLinks", "activeErpLinks", Shape::Int, true),
    f("DbiAgentId", "dbi_agent_id", Shape::Int, true),
    f("DbiKey", "dbi_key", Shape::Text, true),
    f(
        "DbiLastSyncronized",
        "dbi_last_syncronized",
        Shape::Date,
        true,
    ),
    f("DbiLastModified", "dbi_last_modified", Shape::Date, true),
    f("SupportAssociateId", "supportAssociateId", Shape::Int, true),
    f("SupportPersonId", "supportPersonId", Shape::Int, true),
    f("SupportLanguageId", "supportLanguageId", Shape::Int, true),
    f("TicketPriorityId", "ticketPriorityId", Shape::Int, true),
    f("TzLocationId", "tzLocationId", Shape::Int, true),
    f("MotherId", "mother_id", Shape::Int, true),
    f("UserdefId", "userdef_id", Shape::Int, true),
    f("Userdef2Id", "userdef2_id", Shape::Int, true),
];

/// The reference rendering: a JSON tree built from the table.
fn tree_entity_json(row: &Row, zone: &LocalZone, base_url: &str) -> Json {
    let date_json = |ticks: Option<Ticks>| match ticks {
        Some(t) => Json::String(render_date(Some(t), Some(zone))),
        None => Json::Null,
    };
    let mut m = Map::new();
    for fd in &FIELDS {
        let v = row.get(&CONTACT, fd.column);
        let id = v.as_i64();
        let j = match fd.shape {
            Shape::Text => Json::String(v.as_str().unwrap_or_default().to_owned()),
            Shape::Int => Json::from(id),
            Shape::Bool => Json::Bool(id != 0),
            Shape::Date => date_json(v.as_ticks()),
            Shape::Associate => json!({"AssociateId": id, "Name": "", "FullName": ""}),
            Shape::List => json!({"Id": id, "Value": "", "Tooltip": ""}),
            Shape::Country => json!({"CountryId": id, "Name": ""}),
        };
        m.insert(fd.json.to_owned(), j);
    }
    let id = row.get(&CONTACT, "contact_id").as_i64();
    if id != 0 {
        m.insert(
            "_Links".into(),
            json!({"Self": format!("{base_url}/api/v1/Contact/{id}"), "Archive": format!("{base_url}/api/v1/Contact")}),
        );
    }
    Json::Object(m)
}

/// The reference reader of one carrier id.
fn ref_carrier_id(field: &str, v: &Json, key: &str) -> ApiResult<i64> {
    let not_int = |name: String| ApiError::invalid_field(&name, "must be an integer");
    match v {
        Json::Null => Ok(0),
        Json::Number(n) => n.as_i64().ok_or_else(|| not_int(field.into())),
        Json::Object(o) => match o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            None | Some((_, Json::Null)) => Ok(0),
            Some((_, Json::Number(n))) => {
                n.as_i64().ok_or_else(|| not_int(format!("{field}.{key}")))
            }
            Some(_) => Err(not_int(format!("{field}.{key}"))),
        },
        _ => Err(ApiError::invalid_field(
            field,
            format!("must be an object with {key}"),
        )),
    }
}

/// The reference reader of one property (null = default).
fn ref_field_value(fd: &Field, v: &Json) -> ApiResult<Value> {
    let refuse = |problem: &str| Err(ApiError::invalid_field(fd.json, problem));
    Ok(match (fd.shape, v) {
        (Shape::Text, Json::Null) => Value::Text(String::new()),
        (Shape::Text, Json::String(s)) => Value::Text(s.clone()),
        (Shape::Text, _) => return refuse("must be a string"),
        (Shape::Int, Json::Null) => Value::Int(0),
        (Shape::Int, v) => match v.as_i64() {
            Some(n) => Value::Int(n),
            None => return refuse("must be an integer"),
        },
        (Shape::Bool, Json::Null) => Value::Int(0),
        (Shape::Bool, Json::Bool(b)) => Value::Int(i64::from(*b)),
        (Shape::Bool, _) => return refuse("must be true or false"),
        (Shape::Date, Json::Null) => Value::Null,
        (Shape::Date, Json::String(s)) => {
            let d = crmhooks_payload::NetDateTime::parse(s)
                .map_err(|e| ApiError::invalid_field(fd.json, e))?;
            match d.to_offset_date_time() {
                Some(t) if !d.is_min() => Value::Date((t.unix_timestamp_nanos() / 100) as i64),
                _ => Value::Null,
            }
        }
        (Shape::Date, _) => return refuse("must be a date string"),
        (Shape::Associate, v) => Value::Int(ref_carrier_id(fd.json, v, "AssociateId")?),
        (Shape::List, v) => Value::Int(ref_carrier_id(fd.json, v, "Id")?),
        (Shape::Country, v) => Value::Int(ref_carrier_id(fd.json, v, "CountryId")?),
    })
}

/// The reference POST/PUT reader: every writable property, first spelling, missing = default.
fn ref_apply_entity(row: &mut Row, body: &Map<String, Json>) -> ApiResult<()> {
    for fd in FIELDS.iter().filter(|f| f.writable) {
        let v = body
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(fd.json))
            .map_or(&Json::Null, |(_, v)| v);
        row.set(&CONTACT, fd.column, ref_field_value(fd, v)?);
    }
    set_soundex(row);
    Ok(())
}

/// The reference scalar-patch reader: the properties named, last spelling wins.
fn ref_apply_fields(row: &mut Row, patch: &Map<String, Json>) -> ApiResult<()> {
    for fd in FIELDS.iter().filter(|f| f.writable) {
        if let Some((_, v)) = patch
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(fd.json))
        {
            row.set(&CONTACT, fd.column, ref_field_value(fd, v)?);
        }
    }
    set_soundex(row);
    Ok(())
}

/// A JSON value for a property, valid or not for its shape.
fn any_value() -> impl Strategy<Value = Json> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (0i64..5).prop_map(Json::from),
        any::<bool>().prop_map(Json::from),
        (-1e9f64..1e9).prop_map(Json::from),
        Just(Json::Null),
        Just(json!([1])),
        Just(Json::from("2024-02-29T13:45:10")),
        Just(Json::from("2024-02-29T13:45:10.5+02:00")),
        Just(Json::from("0001-01-01T00:00:00")),
        Just(Json::from("not a date")),
        (0usize..3, any::<bool>(), 0i64..50).prop_map(|(k, lower, n)| {
            let key = ["Id", "AssociateId", "CountryId"][k];
            let key = if lower {
                key.to_ascii_lowercase()
            } else {
                key.to_owned()
            };
            let mut m = Map::new();
            m.insert("Value".into(), "x".into());
            m.insert(key, n.into());
            Json::Object(m)
        }),
        Just(json!({"Id": "two"})),
        Just(json!({"AssociateId": null})),
        Just(json!({})),
    ]
}

/// A key: a property's name in any case, or an unknown one.
fn any_key() -> impl Strategy<Value = String> {
    (0..FIELDS.len() + 1, 0..3).prop_map(|(i, case)| {
        let name = FIELDS.get(i).map_or("NoSuchField", |f| f.json);
        match case {
            0 => name.to_owned(),
            1 => name.to_ascii_lowercase(),
            _ => name.to_ascii_uppercase(),
        }
    })
}

fn any_body() -> impl Strategy<Value = Map<String, Json>> {
    proptest::collection::vec((any_key(), any_value()), 0..8)
        .prop_map(|kv| kv.into_iter().collect())
}

/// A stored row as the API writes them: defaults, then a valid entity over them.
fn any_row() -> impl Strategy<Value = Row> {
    proptest::collection::vec((any_key(), any_value()), 0..12).prop_map(|kv| {
        let mut row = default_row();
        for (k, v) in kv {
            let mut one = Map::new();
            one.insert(k, v);
            // Only values valid for their field land; the rest would be refused anyway.
            let mut next = row.clone();
            if ref_apply_fields(&mut next, &one).is_ok() {
                row = next;
            }
        }
        row.set(&CONTACT, "contact_id", Value::Int(7));
        row
    })
}

/// The typed reader on a body, as the routes use it.
fn typed(
    row: &Row,
    body: &Map<String, Json>,
    spelling: Spelling,
    absent: Absent,
) -> Result<Row, String> {
    let input: ContactInput = read_object(Json::Object(body.clone()), spelling, NOT_AN_ENTITY)
        .map_err(|e| format!("{e:?}"))?;
    let mut out = row.clone();
    apply(&input, &mut out, absent)
        .map(|()| out)
        .map_err(|e| format!("{e:?}"))
}

fn reference(
    row: &Row,
    body: &Map<String, Json>,
    read: fn(&mut Row, &Map<String, Json>) -> ApiResult<()>,
) -> Result<Row, String> {
    let mut out = row.clone();
    read(&mut out, body)
        .map(|()| out)
        .map_err(|e| format!("{e:?}"))
}

/// The general patch route: render the entity, merge, read it all back.
fn document_route(row: &Row, patch: &Json) -> Result<Row, String> {
    let input =
        patched(row, &LocalZone::default(), "http://x", patch).map_err(|e| format!("{e:?}"))?;
    let mut out = row.clone();
    apply(&input, &mut out, Absent::IsDefault)
        .map(|()| out)
        .map_err(|e| format!("{e:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_entity_serializes_as_the_reference_tree(
        row in any_row(),
        id in prop_oneof![Just(0i64), 1i64..100_000],
        deleted in prop_oneof![Just(None), (0i64..5_000_000_000_000_000).prop_map(Some)],
        east in any::<bool>(),
    ) {
        let mut row = row;
        row.set(&CONTACT, "contact_id", Value::Int(id));
        row.set(&CONTACT, "DeletedDate", deleted.map_or(Value::Null, Value::Date));
        let zone = if east { LocalZone::named("Europe/Oslo").unwrap() } else { LocalZone::default() };
        let entity = ContactEntity::of(&row, &zone, "http://h:1");
        // Same keys, same order, same values, byte for byte.
        prop_assert_eq!(
            serde_json::to_string(&entity).unwrap(),
            tree_entity_json(&row, &zone, "http://h:1").to_string()
        );
    }

    #[test]
    fn a_whole_entity_is_read_as_the_reference_reads_it(row in any_row(), body in any_body()) {
        prop_assert_eq!(
            typed(&row, &body, Spelling::FirstWins, Absent::IsDefault),
            reference(&row, &body, ref_apply_entity)
        );
    }

    #[test]
    fn a_scalar_patch_is_read_as_the_reference_reads_it(row in any_row(), body in any_body()) {
        prop_assert_eq!(
            typed(&row, &body, Spelling::LastWins, Absent::Keeps),
            reference(&row, &body, ref_apply_fields)
        );
    }

    #[test]
    fn scalar_merge_patch_matches_the_document_route(row in any_row(), body in any_body()) {
        let patch = Json::Object(body.into_iter().filter(|(_, v)| !v.is_null() && !v.is_object() && !v.is_array()).collect());
        prop_assert!(is_scalar_merge(&patch));
        let Json::Object(fields) = &patch else { unreachable!() };
        prop_assert_eq!(
            typed(&row, fields, Spelling::LastWins, Absent::Keeps),
            document_route(&row, &patch)
        );
    }
}

#[test]
fn only_scalar_objects_take_the_direct_route() {
    assert!(is_scalar_merge(
        &json!({"Department": "x", "Source": 3, "Xstop": true})
    ));
    assert!(!is_scalar_merge(&json!({"Department": null})));
    assert!(!is_scalar_merge(&json!({"Associate": {"AssociateId": 5}})));
    assert!(!is_scalar_merge(
        &json!([{"op": "replace", "path": "/Department", "value": "x"}])
    ));
}

/// Every writable property of the table is one of the typed input's, spelled alike, and its
/// refusal names it.
#[test]
fn the_typed_input_has_the_writable_properties() {
    let names = crate::carriers::field::property_names::<ContactInput>();
    let writable: Vec<&str> = FIELDS
        .iter()
        .filter(|f| f.writable)
        .map(|f| f.json)
        .collect();
    assert_eq!(names, writable.as_slice());
    for name in names {
        let mut body = Map::new();
        body.insert((*name).to_owned(), json!([[]]));
        let e = typed(
            &default_row(),
            &body,
            Spelling::FirstWins,
            Absent::IsDefault,
        )
        .unwrap_err();
        assert!(e.contains(&format!("\"{name}: ")), "{name}: {e}");
    }
}

/// The store's one table of contact fields shows each column under the property the reference
/// table gives it, and shows no property the reference does not have.
#[test]
fn the_store_table_names_the_reference_properties() {
    for fd in &FIELDS {
        assert_eq!(
            CONTACT.by_property(fd.json).map(|c| c.name),
            Some(fd.column),
            "{}",
            fd.json
        );
    }
    let shown: Vec<&str> = CONTACT.columns.iter().filter_map(|c| c.property).collect();
    assert_eq!(shown.len(), FIELDS.len());
    assert!(shown.iter().all(|p| FIELDS.iter().any(|fd| fd.json == *p)));
}
