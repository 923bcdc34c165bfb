//! What every string a client sends must meet, checked where it enters (body, query, path):
//! no NUL character, which PostgreSQL refuses in text (SQLite stores it), so that both
//! backends answer the same 400 naming the field; and JSON nested at most [`MAX_DEPTH`]
//! levels, so that a patched document stays within what the store reads back (serde_json
//! stops at 128) and no walk over it recurses deeply.

use serde_json::Value;

use crate::error::{ApiError, ErrorCode};

/// Deepest nesting of a JSON body, in objects and arrays.
pub const MAX_DEPTH: usize = 64;

const NUL: &str = "must not contain the NUL character (\\u0000)";

/// Refuses a body nested deeper than [`MAX_DEPTH`] or holding a NUL character in a string or
/// a property name, naming where (`Headers.X-A`, `Events[1]`).
pub fn check_json(body: &Value) -> Result<(), ApiError> {
    let mut path = Vec::new();
    walk(body, 0, &mut path)
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn render(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&k.replace('\0', "\\u0000"));
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str("body");
    }
    out
}

/// Recursion is bounded: it goes no deeper than [`MAX_DEPTH`].
fn walk<'a>(v: &'a Value, depth: usize, path: &mut Vec<Step<'a>>) -> Result<(), ApiError> {
    if depth >= MAX_DEPTH && (v.is_object() || v.is_array()) {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    match v {
        Value::String(s) if s.contains('\0') => Err(ApiError::invalid_field(&render(path), NUL)),
        Value::Object(m) => {
            for (k, v) in m {
                path.push(Step::Key(k));
                if k.contains('\0') {
                    return Err(ApiError::invalid_field(
                        &render(path),
                        format!("the property name {NUL}"),
                    ));
                }
                walk(v, depth + 1, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Step::Index(i));
                walk(v, depth + 1, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Refuses a NUL character in a query parameter's name or value (`code` `InvalidQuery`) or a
/// path parameter (`InvalidPath`), naming the parameter.
pub fn check_params<'a>(
    code: ErrorCode,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), ApiError> {
    for (name, value) in params {
        if name.contains('\0') || value.contains('\0') {
            let what = if code == ErrorCode::InvalidPath {
                "path parameter "
            } else {
                ""
            };
            return Err(ApiError::new(
                code,
                format!(
                    "{what}{}: must not contain the NUL character (%00)",
                    name.replace('\0', "%00")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> (ErrorCode, String) {
        match check_json(&v) {
            Err(e) => (e.code, e.message),
            Ok(()) => (ErrorCode::InternalError, "accepted".into()),
        }
    }

    #[test]
    fn a_nul_anywhere_is_refused_naming_where() {
        assert!(check_json(&json!({"Name": "a\u{1}b", "Events": ["x"]})).is_ok());
        assert_eq!(
            message(json!({"Name": "ok", "Events": ["a", "b\u{0}"]})),
            (
                ErrorCode::InvalidField,
                "Events[1]: must not contain the NUL character (\\u0000)".into()
            )
        );
        assert_eq!(
            message(json!({"Headers": {"X-A": "v\u{0}"}})).1,
            "Headers.X-A: must not contain the NUL character (\\u0000)"
        );
        assert_eq!(
            message(json!({"Headers": {"X\u{0}": "v"}})).1,
            "Headers.X\\u0000: the property name must not contain the NUL character (\\u0000)"
        );
        assert_eq!(
            message(json!([{"op": "add", "path": "/a", "value": [[1, "\u{0}"]]}])).1,
            "[0].value[0][1]: must not contain the NUL character (\\u0000)"
        );
        assert_eq!(
            message(json!("\u{0}")).1,
            "body: must not contain the NUL character (\\u0000)"
        );
    }

    #[test]
    fn nesting_is_capped() {
        let nest = |n: usize| {
            let mut v = json!(1);
            for _ in 0..n {
                v = json!([v]);
            }
            v
        };
        assert!(check_json(&nest(MAX_DEPTH)).is_ok());
        assert_eq!(
            message(nest(MAX_DEPTH + 1)),
            (
                ErrorCode::InvalidBody,
                "the body is nested deeper than 64 levels".into()
            )
        );
    }

    #[test]
    fn parameters_with_nul_are_refused_naming_them() {
        assert!(check_params(ErrorCode::InvalidQuery, [("nameFilter", "a b")]).is_ok());
        let e = check_params(ErrorCode::InvalidQuery, [("a", "1"), ("nameFilter", "x\0")])
            .err()
            .map(|e| (e.code, e.message));
        assert_eq!(
            e,
            Some((
                ErrorCode::InvalidQuery,
                "nameFilter: must not contain the NUL character (%00)".into()
            ))
        );
    }
}
