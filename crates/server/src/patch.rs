//! PATCH bodies (spec 5): RFC 6902 JSON Patch with `add`, `replace`, `remove` and `test`, or an
//! RFC 7396 Merge Patch object. Property names match case-insensitively and the leading `/` of
//! a path is optional. An array body is JSON Patch, an object is Merge Patch.

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};

/// A patch that cannot be applied.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The body or an operation is malformed (400).
    Invalid(String),
    /// A `test` operation failed (409).
    TestFailed(String),
}

impl PatchError {
    /// The answer: 400 `InvalidBody`, or 409 `Conflict` when a `test` failed.
    pub fn into_api(self) -> ApiError {
        match self {
            PatchError::Invalid(m) => ApiError::new(ErrorCode::InvalidBody, m),
            PatchError::TestFailed(m) => ApiError::conflict(m),
        }
    }
}

fn find_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Applies `patch` to `doc`.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match patch {
        Value::Array(ops) => {
            for (i, op) in ops.iter().enumerate() {
                apply_op(doc, op).map_err(|e| match e {
                    PatchError::Invalid(m) => PatchError::Invalid(format!("operation {i}: {m}")),
                    PatchError::TestFailed(m) => {
                        PatchError::TestFailed(format!("operation {i}: {m}"))
                    }
                })?;
            }
            Ok(())
        }
        Value::Object(_) => {
            merge(doc, patch);
            Ok(())
        }
        _ => Err(PatchError::Invalid(
            "the body must be a JSON Patch array or a Merge Patch object".into(),
        )),
    }
}

fn merge(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(d) = doc {
        for (k, v) in p {
            let key = find_key(d, k).unwrap_or_else(|| k.clone());
            if v.is_null() {
                d.remove(&key);
            } else if v.is_object() {
                let slot = d.entry(key).or_insert(Value::Null);
                merge(slot, v);
            } else {
                d.insert(key, v.clone());
            }
        }
    }
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let obj = op
        .as_object()
        .ok_or_else(|| PatchError::Invalid("each operation must be an object".into()))?;
    let get = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let kind = get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::Invalid("missing \"op\"".into()))?
        .to_ascii_lowercase();
    let path = get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| PatchError::Invalid("missing \"path\"".into()))?;
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(unescape)
        .collect();
    if segs.iter().any(String::is_empty) {
        return Err(PatchError::Invalid(format!(
            "path {path:?} is empty or malformed"
        )));
    }
    let value = get("value");
    let (last, parents) = segs
        .split_last()
        .ok_or_else(|| PatchError::Invalid(format!("path {path:?} is empty")))?;
    let mut target = &mut *doc;
    for seg in parents {
        let Value::Object(m) = target else {
            return Err(PatchError::Invalid(format!(
                "path {path:?}: {seg:?} is not an object"
            )));
        };
        let key = find_key(m, seg).unwrap_or_else(|| seg.clone());
        let slot = m.entry(key).or_insert(Value::Null);
        if slot.is_null() && (kind == "add" || kind == "replace") {
            *slot = Value::Object(Map::new());
        }
        target = slot;
    }
    let Value::Object(m) = target else {
        return Err(PatchError::Invalid(format!(
            "path {path:?} does not lead into an object"
        )));
    };
    let key = find_key(m, last);
    match kind.as_str() {
        "add" | "replace" => {
            let v =
                value.ok_or_else(|| PatchError::Invalid(format!("{kind} needs a \"value\"")))?;
            m.insert(key.unwrap_or_else(|| last.clone()), v.clone());
            Ok(())
        }
        "remove" => {
            if let Some(k) = key {
                m.remove(&k);
            }
            Ok(())
        }
        "test" => {
            let want = value.ok_or_else(|| PatchError::Invalid("test needs a \"value\"".into()))?;
            let have = key.and_then(|k| m.get(&k)).unwrap_or(&Value::Null);
            if have == want {
                Ok(())
            } else {
                Err(PatchError::TestFailed(format!(
                    "test of {path:?} failed: the value is {have}, not {want}"
                )))
            }
        }
        "move" | "copy" => Err(PatchError::Invalid(format!(
            "op {kind:?} is not supported (add, replace, remove, test are)"
        ))),
        other => Err(PatchError::Invalid(format!("unknown op {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_is_case_insensitive_and_slash_optional() {
        let mut doc = json!({"Name": "A", "Department": "x", "Business": {"Id": 1}});
        apply(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/name", "value": "B"},
                {"op": "replace", "path": "department", "value": "y"},
                {"op": "replace", "path": "/business/id", "value": 3},
                {"op": "test", "path": "/NAME", "value": "B"},
            ]),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            doc,
            json!({"Name": "B", "Department": "y", "Business": {"Id": 3}})
        );
    }

    #[test]
    fn failed_test_and_unsupported_ops_are_errors() {
        let mut doc = json!({"Name": "A"});
        assert!(matches!(
            apply(
                &mut doc,
                &json!([{"op": "test", "path": "/Name", "value": "Z"}])
            ),
            Err(PatchError::TestFailed(_))
        ));
        assert!(matches!(
            apply(
                &mut doc,
                &json!([{"op": "move", "from": "/a", "path": "/Name"}])
            ),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&mut doc, &json!("x")),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut doc = json!({"Name": "A", "OrgNr": "1", "Country": {"CountryId": 1}});
        apply(
            &mut doc,
            &json!({"orgnr": null, "name": "C", "country": {"countryid": 578}}),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(doc, json!({"Name": "C", "Country": {"CountryId": 578}}));
    }
}
