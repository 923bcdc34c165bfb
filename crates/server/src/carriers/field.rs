//! Reading a carrier from a client's JSON object.
//!
//! SuperOffice's API takes property names in any case, so a body is first given the
//! carrier's spelling ([`read_object`]); then each property is a [`Field`]: absent, null, a
//! value of its type, or a value it refuses. A refusal is not an error at once: the carrier
//! reports the first one in its own property order when it is applied, whatever order the
//! client wrote the properties in, and names the property (`Business.Id: must be an
//! integer`).

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Why a value was refused: where inside the property (`.Id`, `[2]`, or nowhere) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    at: String,
    problem: String,
}

impl Refusal {
    /// The property's value as a whole is refused.
    pub fn new(problem: impl Into<String>) -> Refusal {
        Refusal {
            at: String::new(),
            problem: problem.into(),
        }
    }

    /// A part of the value (`.Id`, `[2]`) is refused.
    pub fn at(at: impl Into<String>, problem: impl Into<String>) -> Refusal {
        Refusal {
            at: at.into(),
            problem: problem.into(),
        }
    }

    /// The 400 answer naming `property`.
    pub fn naming(&self, property: &str) -> ApiError {
        ApiError::invalid_field(&format!("{property}{}", self.at), &self.problem)
    }
}

/// One property of a carrier as the client sent it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Field<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A value of the property's type.
    Set(T),
    /// A value the property does not take.
    Refused(Refusal),
}

impl<T> Field<T> {
    /// `None` when absent, `Some(None)` when null, `Some(Some(value))` when set; a refused
    /// value is the 400 answer naming `property`.
    pub fn read(&self, property: &str) -> ApiResult<Option<Option<&T>>> {
        match self {
            Field::Absent => Ok(None),
            Field::Null => Ok(Some(None)),
            Field::Set(v) => Ok(Some(Some(v))),
            Field::Refused(r) => Err(r.naming(property)),
        }
    }

    /// Absent becomes null: a property a replacing write (PUT) leaves out takes its default.
    pub fn or_null(self) -> Self {
        match self {
            Field::Absent => Field::Null,
            other => other,
        }
    }

    /// Whether the body left the property out.
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }
}

impl Field<String> {
    /// As [`Field::read`], refusing text longer than `max` characters.
    pub fn read_text(&self, property: &str, max: usize) -> ApiResult<Option<Option<&str>>> {
        match self.read(property)? {
            Some(Some(s)) if s.chars().count() > max => Err(ApiError::invalid_field(
                property,
                format!("is longer than {max} characters"),
            )),
            v => Ok(v.map(|s| s.map(String::as_str))),
        }
    }
}

/// A type a property's value can have, read from the JSON the client sent (never `null`,
/// which is [`Field::Null`]).
pub trait FromJson: Sized {
    /// The value, or why `v` is refused.
    fn from_json(v: Value) -> Result<Self, Refusal>;
}

/// The value sent, `null` when none: the OpenAPI document's defaults (a property left out is
/// `null`) come from it.
impl<T: serde::Serialize> serde::Serialize for Field<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(v) => v.serialize(s),
            Field::Absent | Field::Null | Field::Refused(_) => s.serialize_none(),
        }
    }
}

impl<'de, T: FromJson> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Field::Null,
            v => match T::from_json(v) {
                Ok(t) => Field::Set(t),
                Err(r) => Field::Refused(r),
            },
        })
    }
}

impl FromJson for String {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        match v {
            Value::String(s) => Ok(s),
            _ => Err(Refusal::new("must be a string")),
        }
    }
}

impl FromJson for i64 {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        v.as_i64().ok_or_else(|| Refusal::new("must be an integer"))
    }
}

impl FromJson for bool {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        v.as_bool()
            .ok_or_else(|| Refusal::new("must be true or false"))
    }
}

impl FromJson for Map<String, Value> {
    fn from_json(v: Value) -> Result<Self, Refusal> {
        match v {
            Value::Object(m) => Ok(m),
            _ => Err(Refusal::new("must be an object")),
        }
    }
}

/// Of several spellings of one property in a body, which one counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// The first (a carrier sent whole: POST, PUT).
    FirstWins,
    /// The last (a Merge Patch, as merging the spellings one after the other would).
    LastWins,
}

/// Reads carrier `T` from a client's JSON `body`, which must be an object (else 400
/// `InvalidBody` with `not_object`). Properties match `T`'s names in any case; unknown ones
/// are ignored.
pub fn read_object<T: DeserializeOwned>(
    body: Value,
    spelling: Spelling,
    not_object: &str,
) -> ApiResult<T> {
    let Value::Object(body) = body else {
        return Err(ApiError::new(ErrorCode::InvalidBody, not_object));
    };
    let names = property_names::<T>();
    let body = spelled(body, names, spelling);
    // Every Field deserializes (a wrong value becomes Refused) and unknown properties are
    // ignored, so this only fails if a carrier type breaks that rule.
    serde_json::from_value(Value::Object(body)).map_err(ApiError::internal)
}

/// `body` with its properties spelled as in `names`.
fn spelled(body: Map<String, Value>, names: &[&str], spelling: Spelling) -> Map<String, Value> {
    let spelled_right =
        |k: &str| names.contains(&k) || !names.iter().any(|n| n.eq_ignore_ascii_case(k));
    if body.keys().all(|k| spelled_right(k)) {
        // The usual body: nothing to rename, and no property twice.
        return body;
    }
    let mut out = Map::with_capacity(body.len());
    for (k, v) in body {
        let name = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(&k))
            .map_or(k, |n| (*n).to_owned());
        if spelling == Spelling::LastWins || !out.contains_key(&name) {
            out.insert(name, v);
        }
    }
    out
}

/// The property names of carrier `T`, as its derived `Deserialize` spells them: asked of it
/// by a deserializer that only listens (serde hands a struct's field names to
/// `deserialize_struct`).
pub fn property_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut ask = Introspect(&[]);
    let _ = T::deserialize(&mut ask);
    ask.0
}

struct Introspect(&'static [&'static str]);

/// The error [`Introspect`] answers every request with.
#[derive(Debug)]
struct Listened;

impl std::fmt::Display for Listened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("introspection only")
    }
}

impl std::error::Error for Listened {}

impl de::Error for Listened {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Listened
    }
}

impl<'de> Deserializer<'de> for &mut Introspect {
    type Error = Listened;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Listened> {
        Err(Listened)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Listened> {
        self.0 = fields;
        Err(Listened)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    struct Sample {
        name: Field<String>,
        group_id: Field<i64>,
    }

    fn read(body: Value, spelling: Spelling) -> Sample {
        read_object(body, spelling, "not an object").unwrap()
    }

    #[test]
    fn names_come_from_the_derive() {
        assert_eq!(property_names::<Sample>(), ["Name", "GroupId"]);
    }

    #[test]
    fn absent_null_set_and_refused_are_told_apart() {
        let s = read(
            json!({"Name": null, "GroupId": "x", "Other": 1}),
            Spelling::FirstWins,
        );
        assert_eq!(s.name, Field::Null);
        assert_eq!(
            s.group_id,
            Field::Refused(Refusal::new("must be an integer"))
        );
        let s = read(json!({"groupid": 3}), Spelling::FirstWins);
        assert_eq!(s.name, Field::Absent);
        assert_eq!(s.group_id, Field::Set(3));
        assert_eq!(
            s.name.or_null().read("Name").unwrap(),
            Some(None),
            "a PUT's absent property is null"
        );
    }

    #[test]
    fn of_several_spellings_the_first_or_the_last_counts() {
        let body = json!({"name": "a", "GroupId": 1, "NAME": "b", "Name": "c"});
        assert_eq!(
            read(body.clone(), Spelling::FirstWins).name,
            Field::Set("a".into())
        );
        assert_eq!(read(body, Spelling::LastWins).name, Field::Set("c".into()));
    }

    #[test]
    fn refusals_name_the_property_and_the_part() {
        let e = Refusal::at(".Id", "must be an integer").naming("Business");
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "Business.Id: must be an integer");
        let long = Field::Set("abcd".to_owned());
        assert_eq!(
            long.read_text("Name", 3).unwrap_err().message,
            "Name: is longer than 3 characters"
        );
        assert_eq!(long.read_text("Name", 4).unwrap(), Some(Some("abcd")));
        let e =
            read_object::<Sample>(json!([1]), Spelling::FirstWins, "not an object").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::InvalidBody, "not an object")
        );
    }
}
