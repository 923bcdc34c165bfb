//! A small JSON Schema checker for what the document uses: `$ref`, `type` (one or a list),
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `oneOf`, `anyOf`,
//! `allOf`. Strict mode also refuses properties the schema does not name (an answer must not
//! carry what the document does not describe).

use serde_json::{Map, Value};

/// Where `value` does not fit `schema` (resolved in `doc`), one line each; empty if it fits.
pub fn check(doc: &Value, schema: &Value, value: &Value, strict: bool) -> Vec<String> {
    let mut errors = Vec::new();
    walk(doc, schema, value, strict, "$", &mut errors);
    errors
}

/// The schema a `$ref` names.
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else {
            return s;
        };
        let pointer = r.trim_start_matches('#');
        match doc.pointer(pointer) {
            Some(target) => s = target,
            None => return &Value::Null,
        }
    }
    s
}

fn type_fits(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// The properties `schema` names, its `allOf` members' included.
fn known_properties(doc: &Value, schema: &Value, out: &mut Vec<String>, open: &mut bool) {
    let schema = resolve(doc, schema);
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        out.extend(p.keys().cloned());
    } else if schema.get("allOf").is_none() {
        *open = true;
    }
    if matches!(schema.get("additionalProperties"), Some(a) if a != &Value::Bool(false)) {
        *open = true;
    }
    for member in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        known_properties(doc, member, out, open);
    }
}

fn walk(
    doc: &Value,
    schema: &Value,
    value: &Value,
    strict: bool,
    at: &str,
    errors: &mut Vec<String>,
) {
    if schema.get("$ref").is_some() {
        let target = resolve(doc, schema);
        if target.is_null() {
            errors.push(format!("{at}: unresolved {schema}"));
            return;
        }
        return walk(doc, target, value, strict, at, errors);
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_fits(t, value) => {
            errors.push(format!("{at}: {value} is not {t}"));
            return;
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| type_fits(t, value))) =>
        {
            errors.push(format!("{at}: {value} is none of {ts:?}"));
            return;
        }
        _ => {}
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            errors.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    for member in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // The members of an allOf (a flattened carrier) each see part of the object.
        walk(doc, member, value, false, at, errors);
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fits = options
                .iter()
                .filter(|o| check(doc, o, value, strict).is_empty())
                .count();
            if fits == 0 || (exactly_one && fits > 1) {
                errors.push(format!("{at}: {value} fits {fits} of the {key} options"));
            }
        }
    }
    if let Value::Object(object) = value {
        check_object(doc, schema, object, strict, at, errors);
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            walk(
                doc,
                item_schema,
                item,
                strict,
                &format!("{at}[{i}]"),
                errors,
            );
        }
    }
}

fn check_object(
    doc: &Value,
    schema: &Value,
    object: &Map<String, Value>,
    strict: bool,
    at: &str,
    errors: &mut Vec<String>,
) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = name.as_str() {
            if !object.contains_key(name) {
                errors.push(format!("{at}: required {name} missing"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (k, v) in object {
        match properties.and_then(|p| p.get(k)) {
            Some(s) => walk(doc, s, v, strict, &format!("{at}.{k}"), errors),
            None => {
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    walk(doc, extra, v, strict, &format!("{at}.{k}"), errors);
                }
            }
        }
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) || strict {
        let mut known = Vec::new();
        let mut open = false;
        known_properties(doc, schema, &mut known, &mut open);
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            open = false;
        }
        if !open {
            for k in object.keys().filter(|k| !known.contains(k)) {
                errors.push(format!("{at}: property {k} is not in the schema"));
            }
        }
    }
}
