//! `/api/v1/Contact`: the ContactEntity subset of spec 8, mapped onto contact rows.
//!
//! Input: every writable field; a missing or null field means its default (empty string, 0,
//! no date), so a PUT replaces the entity and a GET → edit → PUT changes only the edit. Unknown
//! properties (Emails, Phones, …) are ignored; wrong types and over-long strings are refused
//! with 400 naming the field.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use crmhooks_store::contact::{soundex, CONTACT};
use crmhooks_store::{now_ticks, render_date, Change, Row, StoreError, Value};
use serde::Deserialize;
use serde_json::{Map, Value as Json_};

use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery, JsonBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::{patch, AppState};

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

/// ContactEntity properties in response order.
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

/// A ContactEntity to answer with, serialized straight from the row (no JSON tree).
pub struct Entity {
    row: Row,
    offset: time::UtcOffset,
    base_url: std::sync::Arc<str>,
}

impl Entity {
    fn new(row: Row, state: &AppState) -> Entity {
        Entity {
            row,
            offset: state.offset,
            base_url: state.base_url.clone(),
        }
    }
}

impl serde::Serialize for Entity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EntityRef {
            row: &self.row,
            offset: self.offset,
            base_url: &self.base_url,
        }
        .serialize(s)
    }
}

/// The ContactEntity of a borrowed row: the fields of [`FIELDS`] in order, then `_Links`.
struct EntityRef<'a> {
    row: &'a Row,
    offset: time::UtcOffset,
    base_url: &'a str,
}

#[derive(serde::Serialize)]
struct AssociateJson {
    #[serde(rename = "AssociateId")]
    id: i64,
    #[serde(rename = "Name")]
    name: &'static str,
    #[serde(rename = "FullName")]
    full_name: &'static str,
}

#[derive(serde::Serialize)]
struct ListItemJson {
    #[serde(rename = "Id")]
    id: i64,
    #[serde(rename = "Value")]
    value: &'static str,
    #[serde(rename = "Tooltip")]
    tooltip: &'static str,
}

#[derive(serde::Serialize)]
struct CountryJson {
    #[serde(rename = "CountryId")]
    id: i64,
    #[serde(rename = "Name")]
    name: &'static str,
}

#[derive(serde::Serialize)]
struct LinksJson {
    #[serde(rename = "Self")]
    this: String,
    #[serde(rename = "Archive")]
    archive: String,
}

impl serde::Serialize for EntityRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let id = self.row.get(&CONTACT, "contact_id").as_i64();
        let mut m = s.serialize_map(Some(FIELDS.len() + usize::from(id != 0)))?;
        for fd in &FIELDS {
            let v = self.row.get(&CONTACT, fd.column);
            let n = v.as_i64();
            match fd.shape {
                Shape::Text => m.serialize_entry(fd.json, v.as_str().unwrap_or_default())?,
                Shape::Int => m.serialize_entry(fd.json, &n)?,
                Shape::Bool => m.serialize_entry(fd.json, &(n != 0))?,
                Shape::Date => match v.as_ticks() {
                    Some(t) => {
                        m.serialize_entry(fd.json, &render_date(Some(t), Some(self.offset)))?
                    }
                    None => m.serialize_entry(fd.json, &())?,
                },
                Shape::Associate => m.serialize_entry(
                    fd.json,
                    &AssociateJson {
                        id: n,
                        name: "",
                        full_name: "",
                    },
                )?,
                Shape::List => m.serialize_entry(
                    fd.json,
                    &ListItemJson {
                        id: n,
                        value: "",
                        tooltip: "",
                    },
                )?,
                Shape::Country => m.serialize_entry(fd.json, &CountryJson { id: n, name: "" })?,
            }
        }
        if id != 0 {
            let link = format!("{}/api/v1/Contact/{id}", self.base_url);
            m.serialize_entry(
                "_Links",
                &LinksJson {
                    this: link.clone(),
                    archive: link,
                },
            )?;
        }
        m.end()
    }
}

/// The ContactEntity of a row as a JSON tree (to patch it).
pub fn entity_json(row: &Row, offset: time::UtcOffset, base_url: &str) -> Json_ {
    serde_json::to_value(EntityRef {
        row,
        offset,
        base_url,
    })
    .unwrap_or(Json_::Null)
}

fn carrier_id(field: &str, v: &Json_, key: &str) -> ApiResult<i64> {
    match v {
        Json_::Null => Ok(0),
        Json_::Number(n) => n
            .as_i64()
            .ok_or_else(|| ApiError::invalid_field(field, "must be an integer")),
        Json_::Object(o) => match o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
        {
            None | Some(Json_::Null) => Ok(0),
            Some(Json_::Number(n)) => n.as_i64().ok_or_else(|| {
                ApiError::invalid_field(&format!("{field}.{key}"), "must be an integer")
            }),
            Some(_) => Err(ApiError::invalid_field(
                &format!("{field}.{key}"),
                "must be an integer",
            )),
        },
        _ => Err(ApiError::invalid_field(
            field,
            format!("must be an object with {key}"),
        )),
    }
}

/// Writes the writable fields of `body` over `row` (missing or null = default).
fn apply_entity(row: &mut Row, body: &Map<String, Json_>) -> ApiResult<()> {
    for fd in FIELDS.iter().filter(|f| f.writable) {
        let v = body
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(fd.json))
            .map(|(_, v)| v)
            .unwrap_or(&Json_::Null);
        row.set(&CONTACT, fd.column, field_value(fd, v)?);
    }
    set_soundex(row);
    Ok(())
}

/// The stored value of one field from its JSON (null = default).
fn field_value(fd: &Field, v: &Json_) -> ApiResult<Value> {
    Ok(match fd.shape {
        Shape::Text => match v {
            Json_::Null => Value::Text(String::new()),
            Json_::String(s) => Value::Text(s.clone()),
            _ => return Err(ApiError::invalid_field(fd.json, "must be a string")),
        },
        Shape::Int => match v {
            Json_::Null => Value::Int(0),
            Json_::Number(n) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| ApiError::invalid_field(fd.json, "must be an integer"))?,
            ),
            _ => return Err(ApiError::invalid_field(fd.json, "must be an integer")),
        },
        Shape::Bool => match v {
            Json_::Null => Value::Int(0),
            Json_::Bool(b) => Value::Int(i64::from(*b)),
            _ => return Err(ApiError::invalid_field(fd.json, "must be true or false")),
        },
        Shape::Date => match v {
            Json_::Null => Value::Null,
            Json_::String(s) => {
                let d = crmhooks_payload::NetDateTime::parse(s)
                    .map_err(|e| ApiError::invalid_field(fd.json, e))?;
                // .NET's MinValue means "no date".
                match d.to_offset_date_time() {
                    Some(t) if !d.is_min() => Value::Date((t.unix_timestamp_nanos() / 100) as i64),
                    _ => Value::Null,
                }
            }
            _ => return Err(ApiError::invalid_field(fd.json, "must be a date string")),
        },
        Shape::Associate => Value::Int(carrier_id(fd.json, v, "AssociateId")?),
        Shape::List => Value::Int(carrier_id(fd.json, v, "Id")?),
        Shape::Country => Value::Int(carrier_id(fd.json, v, "CountryId")?),
    })
}

/// `soundEx` follows the name.
fn set_soundex(row: &mut Row) {
    let name = row
        .get(&CONTACT, "name")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    row.set(&CONTACT, "soundEx", Value::Text(soundex(&name)));
}

/// A Merge Patch whose values are all strings, numbers or booleans (the usual one: "set these
/// fields"). It changes exactly the fields it names, so it is applied to the row directly,
/// without rendering the whole entity as JSON, merging, and parsing it back (the same result;
/// `scalar_merge_patch_matches_the_document_route` checks it).
fn scalar_merge(patch: &Json_) -> Option<&Map<String, Json_>> {
    match patch {
        Json_::Object(m)
            if m.values()
                .all(|v| matches!(v, Json_::String(_) | Json_::Number(_) | Json_::Bool(_))) =>
        {
            Some(m)
        }
        _ => None,
    }
}

/// Applies a [`scalar_merge`] patch: each writable field it names (case-insensitively; of
/// several spellings the last wins, as in the merge) takes the value; the rest stay.
fn apply_fields(row: &mut Row, patch: &Map<String, Json_>) -> ApiResult<()> {
    for fd in FIELDS.iter().filter(|f| f.writable) {
        if let Some((_, v)) = patch
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(fd.json))
        {
            row.set(&CONTACT, fd.column, field_value(fd, v)?);
        }
    }
    set_soundex(row);
    Ok(())
}

/// A new contact row with defaults: zeros, empty strings, no dates.
fn default_row() -> Row {
    let mut row = Row::empty(&CONTACT);
    for (i, c) in CONTACT.columns.iter().enumerate() {
        row.values[i] = match c.kind {
            crmhooks_store::ColumnKind::Text { .. } => Value::Text(String::new()),
            crmhooks_store::ColumnKind::Date | crmhooks_store::ColumnKind::Key => Value::Null,
            _ => Value::Int(0),
        };
    }
    row
}

fn object(body: Json_) -> ApiResult<Map<String, Json_>> {
    match body {
        Json_::Object(m) => Ok(m),
        _ => Err(ApiError::new(
            ErrorCode::InvalidBody,
            "the body must be a ContactEntity JSON object",
        )),
    }
}

/// Carries an [`ApiError`] decided inside a change function out through the store.
#[derive(Clone, Default)]
struct Rejection(std::sync::Arc<std::sync::Mutex<Option<ApiError>>>);

impl Rejection {
    fn reject(&self, e: ApiError) -> StoreError {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(e);
        }
        StoreError::Conflict("rejected".into())
    }

    fn into_api(self, e: StoreError) -> ApiError {
        if let Some(api) = self.0.lock().ok().and_then(|mut s| s.take()) {
            return api;
        }
        match e {
            StoreError::NotFound => ApiError::not_found("contact not found"),
            other => other.into(),
        }
    }
}

fn respond(state: &AppState, row: Option<Row>) -> ApiResult<Json<Entity>> {
    let row = row.ok_or_else(|| ApiError::not_found("contact not found"))?;
    Ok(Json(Entity::new(row, state)))
}

async fn get_default(State(state): State<AppState>, _auth: Auth) -> Json<Entity> {
    Json(Entity::new(default_row(), &state))
}

fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse::<i32>().map(i64::from).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("contact id {raw:?} is not an int32"),
        )
    })
}

async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Entity>> {
    let id = parse_id(&id)?;
    let row = state
        .store
        .get_row(auth.actor.tenant_id, &CONTACT, id, false)
        .await?;
    respond(&state, row)
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Entity>> {
    let body = object(body)?;
    if !body.keys().any(|k| k.eq_ignore_ascii_case("Name")) {
        return Err(ApiError::invalid_field("Name", "is required"));
    }
    let mut row = default_row();
    apply_entity(&mut row, &body)?;
    let out = state
        .store
        .apply_change(
            &auth.actor,
            &CONTACT,
            None,
            Box::new(move |_| Ok(Change::Create(row.clone()))),
        )
        .await
        .map_err(|e| Rejection::default().into_api(e))?;
    state.committed(&out.committed);
    respond(&state, out.row)
}

fn live(current: Option<&Row>) -> Result<&Row, StoreError> {
    match current {
        Some(r) if r.get(&CONTACT, "deleted").as_i64() == 0 => Ok(r),
        _ => Err(StoreError::NotFound),
    }
}

async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Entity>> {
    let id = parse_id(&id)?;
    let body = object(body)?;
    let rej = Rejection::default();
    let r = rej.clone();
    let out = state
        .store
        .apply_change(
            &auth.actor,
            &CONTACT,
            Some(id),
            Box::new(move |current| {
                let mut row = live(current)?.clone();
                apply_entity(&mut row, &body).map_err(|e| r.reject(e))?;
                Ok(Change::Update {
                    row,
                    verb: "changed",
                })
            }),
        )
        .await
        .map_err(|e| rej.into_api(e))?;
    state.committed(&out.committed);
    respond(&state, out.row)
}

async fn patch_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Entity>> {
    let id = parse_id(&id)?;
    let (offset, base) = (state.offset, state.base_url.clone());
    let rej = Rejection::default();
    let r = rej.clone();
    let out = state
        .store
        .apply_change(
            &auth.actor,
            &CONTACT,
            Some(id),
            Box::new(move |current| {
                let current = live(current)?;
                if let Some(fields) = scalar_merge(&body) {
                    let mut row = current.clone();
                    apply_fields(&mut row, fields).map_err(|e| r.reject(e))?;
                    return Ok(Change::Update {
                        row,
                        verb: "changed",
                    });
                }
                let mut doc = entity_json(current, offset, &base);
                patch::apply(&mut doc, &body).map_err(|e| {
                    r.reject(match e {
                        patch::PatchError::Invalid(m) => ApiError::new(ErrorCode::InvalidBody, m),
                        patch::PatchError::TestFailed(m) => ApiError::conflict(m),
                    })
                })?;
                let obj = object(doc).map_err(|e| r.reject(e))?;
                let mut row = current.clone();
                apply_entity(&mut row, &obj).map_err(|e| r.reject(e))?;
                Ok(Change::Update {
                    row,
                    verb: "changed",
                })
            }),
        )
        .await
        .map_err(|e| rej.into_api(e))?;
    state.committed(&out.committed);
    respond(&state, out.row)
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    permanent: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let permanent = match q
        .permanent
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("permanent={other:?}: use true or false"),
            ))
        }
    };
    let change: crmhooks_store::ChangeFn = if permanent {
        Box::new(|current| current.map(|_| Change::Delete).ok_or(StoreError::NotFound))
    } else {
        Box::new(|current| {
            let mut row = live(current)?.clone();
            row.set(&CONTACT, "deleted", Value::Int(1));
            row.set(&CONTACT, "DeletedDate", Value::Date(now_ticks()));
            Ok(Change::Update {
                row,
                verb: "softdeleted",
            })
        })
    };
    let out = state
        .store
        .apply_change(&auth.actor, &CONTACT, Some(id), change)
        .await
        .map_err(|e| Rejection::default().into_api(e))?;
    state.committed(&out.committed);
    Ok(StatusCode::NO_CONTENT)
}

async fn restore(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Entity>> {
    let id = parse_id(&id)?;
    let rej = Rejection::default();
    let r = rej.clone();
    let out = state
        .store
        .apply_change(
            &auth.actor,
            &CONTACT,
            Some(id),
            Box::new(move |current| {
                let row = current.ok_or(StoreError::NotFound)?;
                if row.get(&CONTACT, "deleted").as_i64() == 0 {
                    return Err(
                        r.reject(ApiError::conflict("the contact is not in the recycle bin"))
                    );
                }
                let mut row = row.clone();
                row.set(&CONTACT, "deleted", Value::Int(0));
                row.set(&CONTACT, "DeletedDate", Value::Null);
                Ok(Change::Update {
                    row,
                    verb: "changed",
                })
            }),
        )
        .await
        .map_err(|e| rej.into_api(e))?;
    state.committed(&out.committed);
    respond(&state, out.row)
}

/// The contact routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Contact", post(create))
        .route("/Contact/default", get(get_default))
        .route(
            "/Contact/{id}",
            get(get_one).put(put).patch(patch_one).delete(delete),
        )
        .route("/Contact/{id}/Restore", post(restore))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// A JSON value for a field, valid or not for its shape.
    fn any_value() -> impl Strategy<Value = Json_> {
        prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Json_::from),
            any::<i64>().prop_map(Json_::from),
            (0i64..5).prop_map(Json_::from),
            any::<bool>().prop_map(Json_::from),
            (-1e9f64..1e9).prop_map(Json_::from),
            Just(Json_::from("2024-02-29T13:45:10")),
            Just(Json_::from("2001-01-01T00:00:00Z")),
            Just(Json_::from("not a date")),
        ]
    }

    /// A key: a field's name in any case, or an unknown one.
    fn any_key() -> impl Strategy<Value = String> {
        (0..FIELDS.len() + 1, any::<bool>()).prop_map(|(i, lower)| {
            let name = FIELDS.get(i).map_or("NoSuchField", |f| f.json);
            if lower {
                name.to_ascii_lowercase()
            } else {
                name.to_owned()
            }
        })
    }

    fn any_patch() -> impl Strategy<Value = Map<String, Json_>> {
        proptest::collection::vec((any_key(), any_value()), 1..6)
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
                if apply_fields(&mut next, &one).is_ok() {
                    row = next;
                }
            }
            row.set(&CONTACT, "contact_id", Value::Int(7));
            row
        })
    }

    /// The general route: render the entity, merge, parse it all back.
    fn document_route(row: &Row, patch: &Json_) -> Result<Row, String> {
        let offset = time::UtcOffset::UTC;
        let mut doc = entity_json(row, offset, "http://x");
        patch::apply(&mut doc, patch).map_err(|e| format!("{e:?}"))?;
        let obj = object(doc).map_err(|e| format!("{e:?}"))?;
        let mut out = row.clone();
        apply_entity(&mut out, &obj).map_err(|e| format!("{e:?}"))?;
        Ok(out)
    }

    use crmhooks_store::Ticks;
    use serde_json::json;

    fn date_json(ticks: Option<Ticks>, offset: time::UtcOffset) -> Json_ {
        match ticks {
            Some(t) => Json_::String(render_date(Some(t), Some(offset))),
            None => Json_::Null,
        }
    }

    /// The JSON-tree rendering the serializer replaced: the reference it must match.
    fn tree_entity_json(row: &Row, offset: time::UtcOffset, base_url: &str) -> Json_ {
        let mut m = Map::new();
        for fd in &FIELDS {
            let v = row.get(&CONTACT, fd.column);
            let id = v.as_i64();
            let j = match fd.shape {
                Shape::Text => Json_::String(v.as_str().unwrap_or_default().to_owned()),
                Shape::Int => Json_::from(id),
                Shape::Bool => Json_::Bool(id != 0),
                Shape::Date => date_json(v.as_ticks(), offset),
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
                json!({"Self": format!("{base_url}/api/v1/Contact/{id}"), "Archive": format!("{base_url}/api/v1/Contact/{id}")}),
            );
        }
        Json_::Object(m)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn serialized_entity_matches_the_json_tree(
            row in any_row(),
            id in prop_oneof![Just(0i64), 1i64..100_000],
            deleted in prop_oneof![Just(None), (0i64..5_000_000_000_000_000).prop_map(Some)],
            east in any::<bool>(),
        ) {
            let mut row = row;
            row.set(&CONTACT, "contact_id", Value::Int(id));
            row.set(&CONTACT, "DeletedDate", deleted.map_or(Value::Null, Value::Date));
            let offset = if east { time::UtcOffset::from_hms(2, 0, 0).unwrap() } else { time::UtcOffset::UTC };
            let entity = EntityRef { row: &row, offset, base_url: "http://h:1" };
            // Same keys, same order, same values, byte for byte.
            prop_assert_eq!(
                serde_json::to_string(&entity).unwrap(),
                tree_entity_json(&row, offset, "http://h:1").to_string()
            );
        }

        #[test]
        fn scalar_merge_patch_matches_the_document_route(row in any_row(), patch in any_patch()) {
            let patch = Json_::Object(patch);
            let fields = scalar_merge(&patch).expect("scalar values only");
            let mut fast = row.clone();
            let fast = apply_fields(&mut fast, fields).map(|()| fast).map_err(|e| format!("{e:?}"));
            prop_assert_eq!(fast, document_route(&row, &patch));
        }
    }

    #[test]
    fn only_scalar_objects_take_the_direct_route() {
        assert!(
            scalar_merge(&serde_json::json!({"Department": "x", "Source": 3, "Xstop": true}))
                .is_some()
        );
        assert!(scalar_merge(&serde_json::json!({"Department": null})).is_none());
        assert!(scalar_merge(&serde_json::json!({"Associate": {"AssociateId": 5}})).is_none());
        assert!(scalar_merge(
            &serde_json::json!([{"op": "replace", "path": "/Department", "value": "x"}])
        )
        .is_none());
    }
}
