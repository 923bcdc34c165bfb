//! PATCH bodies (spec 5): RFC 6902 JSON Patch with `add`, `replace`, `remove` and `test`, or an
//! RFC 7396 Merge Patch object. An array body is JSON Patch, an object is Merge Patch.
//!
//! As SuperOffice's API, property names match case-insensitively, the leading `/` of a path is
//! optional, and `move` and `copy` are not supported. Otherwise JSON Patch follows the RFC: the
//! parent of every target must exist (nothing is created on the way), `remove` needs its
//! target, array members are addressed by index (`-` appends on `add`). One leniency: a
//! `replace` of a property the object lacks adds it, because a carrier leaves write-only
//! properties out (`Secret`) and a client replaces them all the same.
//!
//! Every patch is bounded before it is applied: at most [`MAX_OPERATIONS`] operations, paths
//! of at most [`MAX_PATH_SEGMENTS`] segments. A Merge Patch costs time linear in its size and
//! the document's (each object's properties are looked up through one index per object).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};

/// Most operations in one JSON Patch.
pub const MAX_OPERATIONS: usize = 256;

/// Most segments in one JSON Patch path.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// A patch that cannot be applied.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// The body or an operation is malformed, or its target does not exist (400).
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

    fn in_operation(self, i: usize) -> PatchError {
        match self {
            PatchError::Invalid(m) => PatchError::Invalid(format!("operation {i}: {m}")),
            PatchError::TestFailed(m) => PatchError::TestFailed(format!("operation {i}: {m}")),
        }
    }
}

fn invalid(message: impl Into<String>) -> PatchError {
    PatchError::Invalid(message.into())
}

/// Applies `patch` to `doc`. On an error `doc` may be partly patched: callers patch a copy.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match patch {
        Value::Array(ops) => {
            if ops.len() > MAX_OPERATIONS {
                return Err(invalid(format!(
                    "a JSON Patch has at most {MAX_OPERATIONS} operations, this one {}",
                    ops.len()
                )));
            }
            for (i, op) in ops.iter().enumerate() {
                apply_op(doc, op).map_err(|e| e.in_operation(i))?;
            }
            Ok(())
        }
        Value::Object(_) => {
            merge(doc, patch);
            Ok(())
        }
        _ => Err(invalid(
            "the body must be a JSON Patch array or a Merge Patch object",
        )),
    }
}

/// The key of `map` spelled as `name` in any case: the exact spelling first (one hash lookup),
/// else the first that matches ignoring case.
fn find_key<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m String> {
    if let Some((k, _)) = map.get_key_value(name) {
        return Some(k);
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name))
}

/// RFC 7396, with property names matched in any case. Each object of the document is indexed
/// once by its lower-cased names, so a patch with many properties costs one lookup each.
fn merge(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(d) = doc else {
        return;
    };
    // Lower-cased name → the document's spellings in document order; the first wins, as
    // `find_key`. A member's data may hold names that differ only in case (`Headers` of "b"
    // and "B"): a removal uncovers the next spelling, as a scan after the removal would.
    let mut index: HashMap<String, Vec<String>> = HashMap::with_capacity(d.len());
    for k in d.keys() {
        index
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(k.clone());
    }
    for (k, v) in p {
        let lower = k.to_ascii_lowercase();
        let spellings = index.entry(lower).or_default();
        if v.is_null() {
            if !spellings.is_empty() {
                let key = spellings.remove(0);
                d.remove(&key);
            }
            continue;
        }
        let key = match spellings.first() {
            Some(key) => key.clone(),
            None => {
                spellings.push(k.clone());
                k.clone()
            }
        };
        if v.is_object() {
            merge(d.entry(key).or_insert(Value::Null), v);
        } else {
            d.insert(key, v.clone());
        }
    }
}

/// The segments of a JSON Pointer (RFC 6901; the leading `/` optional).
fn segments(path: &str) -> Result<Vec<String>, PatchError> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let malformed = || invalid(format!("path {path:?} is empty or malformed"));
    if body.is_empty() {
        return Err(malformed());
    }
    let count = body.split('/').count();
    if count > MAX_PATH_SEGMENTS {
        return Err(invalid(format!(
            "path has {count} segments; at most {MAX_PATH_SEGMENTS} are allowed"
        )));
    }
    body.split('/')
        .map(|seg| {
            if seg.is_empty() {
                return Err(malformed());
            }
            unescape(seg).ok_or_else(|| {
                invalid(format!(
                    "path {path:?}: a `~` must be followed by 0 or 1 (~0 is `~`, ~1 is `/`)"
                ))
            })
        })
        .collect()
}

fn unescape(seg: &str) -> Option<String> {
    if !seg.contains('~') {
        return Some(seg.to_owned());
    }
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index: `0` or digits without a leading zero, within `len` (inclusive when
/// `end_ok`, for `add`).
fn index(seg: &str, len: usize, end_ok: bool) -> Option<usize> {
    let digits = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
    if !digits || (seg.len() > 1 && seg.starts_with('0')) {
        return None;
    }
    let i: usize = seg.parse().ok()?;
    (i < len || (end_ok && i == len)).then_some(i)
}

/// The value at `segs` (each must exist).
fn walk<'d>(doc: &'d mut Value, segs: &[String], path: &str) -> Result<&'d mut Value, PatchError> {
    let mut target = doc;
    for (depth, seg) in segs.iter().enumerate() {
        let at = || format!("/{}", segs[..=depth].join("/"));
        target = match target {
            Value::Object(m) => {
                let key = find_key(m, seg)
                    .cloned()
                    .ok_or_else(|| invalid(format!("path {path:?}: {} does not exist", at())))?;
                m.get_mut(&key)
                    .ok_or_else(|| invalid(format!("path {path:?}: {} does not exist", at())))?
            }
            Value::Array(a) => {
                let i = index(seg, a.len(), false).ok_or_else(|| {
                    invalid(format!(
                        "path {path:?}: {} is not an index of the array",
                        at()
                    ))
                })?;
                &mut a[i]
            }
            _ => {
                return Err(invalid(format!(
                    "path {path:?} does not lead into an object"
                )))
            }
        };
    }
    Ok(target)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
    Test,
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let obj = op
        .as_object()
        .ok_or_else(|| invalid("each operation must be an object"))?;
    let get = |name: &str| find_key(obj, name).and_then(|k| obj.get(k));
    let kind = get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing \"op\""))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "add" => Kind::Add,
        "replace" => Kind::Replace,
        "remove" => Kind::Remove,
        "test" => Kind::Test,
        "move" | "copy" => {
            return Err(invalid(format!(
                "op {:?} is not supported (add, replace, remove, test are)",
                kind.to_ascii_lowercase()
            )))
        }
        other => return Err(invalid(format!("unknown op {other:?}"))),
    };
    let path = get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing \"path\""))?;
    let value = match kind {
        Kind::Remove => None,
        Kind::Add | Kind::Replace | Kind::Test => {
            let name = match kind {
                Kind::Add => "add",
                Kind::Replace => "replace",
                _ => "test",
            };
            Some(get("value").ok_or_else(|| invalid(format!("{name} needs a \"value\"")))?)
        }
    };
    let segs = segments(path)?;
    let Some((last, parents)) = segs.split_last() else {
        return Err(invalid(format!("path {path:?} is empty")));
    };
    match walk(doc, parents, path)? {
        Value::Object(m) => on_object(m, kind, last, value, path),
        Value::Array(a) => on_array(a, kind, last, value, path),
        _ => Err(invalid(format!(
            "path {path:?} does not lead into an object"
        ))),
    }
}

fn on_object(
    m: &mut Map<String, Value>,
    kind: Kind,
    last: &str,
    value: Option<&Value>,
    path: &str,
) -> Result<(), PatchError> {
    let key = find_key(m, last).cloned();
    match (kind, key, value) {
        (Kind::Add | Kind::Replace, key, Some(v)) => {
            m.insert(key.unwrap_or_else(|| last.to_owned()), v.clone());
            Ok(())
        }
        (Kind::Remove, Some(key), _) => {
            m.shift_remove(&key);
            Ok(())
        }
        (Kind::Test, Some(key), Some(want)) => test(m.get(&key), want, path),
        (Kind::Test, None, Some(want)) => test(None, want, path),
        _ => Err(invalid(format!("path {path:?} does not exist"))),
    }
}

fn on_array(
    a: &mut Vec<Value>,
    kind: Kind,
    last: &str,
    value: Option<&Value>,
    path: &str,
) -> Result<(), PatchError> {
    let bad_index = || {
        invalid(format!(
            "path {path:?}: {last:?} is not an index of the array"
        ))
    };
    match (kind, value) {
        (Kind::Add, Some(v)) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(last, a.len(), true).ok_or_else(bad_index)?
            };
            a.insert(i, v.clone());
            Ok(())
        }
        (Kind::Replace, Some(v)) => {
            let i = index(last, a.len(), false).ok_or_else(bad_index)?;
            a[i] = v.clone();
            Ok(())
        }
        (Kind::Remove, _) => {
            let i = index(last, a.len(), false).ok_or_else(bad_index)?;
            a.remove(i);
            Ok(())
        }
        (Kind::Test, Some(want)) => test(index(last, a.len(), false).map(|i| &a[i]), want, path),
        _ => Err(bad_index()),
    }
}

fn test(have: Option<&Value>, want: &Value, path: &str) -> Result<(), PatchError> {
    match have {
        Some(have) if have == want => Ok(()),
        Some(have) => Err(PatchError::TestFailed(format!(
            "test of {path:?} failed: the value is {have}, not {want}"
        ))),
        None => Err(PatchError::TestFailed(format!(
            "test of {path:?} failed: there is no such value"
        ))),
    }
}

#[cfg(test)]
mod tests;
