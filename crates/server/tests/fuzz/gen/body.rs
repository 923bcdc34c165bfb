//! Request bodies: plausible Webhook and Contact carriers, JSON Patch documents, nested and
//! mutated JSON, and broken bytes.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use super::vocab::NAMES;

/// Strings: ordinary, long, unicode, with NUL, and values the API gives meaning to.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec![
            "", "a", "Acme", " ", "\u{0}", "x\u{0}y", "æøå", "😀", "\u{202e}rtl", "a\nb",
            "contact.created", "contact.changed", "contact.deleted", "a,b", "webhook",
            "email", "Active", "Stopped", "TooManyErrors", "Unknown", "2xx", "200", "201",
            "superoffice", "exponential", "never", "ops@example.com", "nobody",
            "http://127.0.0.1:1/x", "https://example.com/hook", "ftp://x", "{rx}",
            "2000-01-01T00:00:00Z", "2000-01-01T00:00:00", "/Date(0)/", "yesterday",
            "9999-12-31T23:59:59.9999999", "-1", "1e400", "true", "null", "~0~1", "%00",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9 ._/-]{0,20}",
        1 => "[a-z.]{0,6}\u{0}[a-z.]{0,6}",
        1 => any::<String>(),
        1 => (1usize..3000).prop_map(|n| "n".repeat(n)),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        select(vec![
            0i64, 1, 2, 3, -1, 32767, 32768, 65535, 70000, 2147483647, 2147483648
        ])
        .prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        select(vec![1.5f64, -0.0, 1e300, 2.0]).prop_map(|f| json!(f)),
    ]
    .boxed()
}

/// Any JSON value, weighted to carriers' shapes: objects with the API's property names.
pub fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((select(NAMES), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
    .boxed()
}

/// An object with some of the API's property names.
fn object() -> BoxedStrategy<Map<String, Value>> {
    prop::collection::vec((select(NAMES), value()), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        .boxed()
}

/// A contact or a webhook that would be saved, with some properties changed.
fn carrier() -> BoxedStrategy<Value> {
    let contact = json!({"Name": "fuzz", "Department": "d", "Country": {"CountryId": 578}});
    let webhook = json!({
        "Name": "fuzz", "Events": ["contact.created", "contact.changed", "x.y"],
        "TargetUrl": "{rx}", "State": "Stopped", "Type": "webhook",
    });
    let active = json!({
        "Name": "fuzz", "Events": ["contact.created", "x.y"], "TargetUrl": "{rx}",
        "Headers": {"X-Fuzz": "1"}, "Properties": {"a": 1},
    });
    (select(vec![contact, webhook, active]), object())
        .prop_map(|(mut base, extra)| {
            if let Value::Object(b) = &mut base {
                b.extend(extra);
            }
            base
        })
        .boxed()
}

/// A carrier that would be saved but for one string property: where a bad string reaches
/// the store.
fn contact_one_string() -> BoxedStrategy<Value> {
    let names = vec![
        "Name",
        "Department",
        "OrgNr",
        "Number1",
        "Kananame",
        "DbiKey",
    ];
    (select(names), text())
        .prop_map(|(name, s)| {
            let mut m = Map::new();
            m.insert("Name".into(), json!("fuzz"));
            m.insert(name.to_owned(), json!(s));
            Value::Object(m)
        })
        .boxed()
}

/// As [`contact_one_string`], for a webhook.
fn webhook_one_string() -> BoxedStrategy<Value> {
    let names = vec![
        "Name",
        "Secret",
        "ErrorsEmail",
        "Events",
        "Headers",
        "Properties",
    ];
    (select(names), text())
        .prop_map(|(name, s)| {
            let v = match name {
                "Events" => json!(["x.y", s]),
                "Headers" => json!({"X-Fuzz": s}),
                "Properties" => json!({"k": s}),
                _ => json!(s),
            };
            let mut base = json!({
                "Name": "fuzz", "Events": ["x.y"], "TargetUrl": "{rx}", "State": "Stopped",
            });
            if let Value::Object(b) = &mut base {
                b.insert(name.to_owned(), v);
            }
            base
        })
        .boxed()
}

fn pointer() -> BoxedStrategy<String> {
    let seg = select(vec![
        "Name",
        "name",
        "Business",
        "Id",
        "Country",
        "CountryId",
        "Events",
        "Headers",
        "Properties",
        "Secret",
        "State",
        "0",
        "1",
        "-",
        "01",
        "99",
        "a~1b",
        "~0",
        "~2",
        "",
        "x",
        "\u{0}",
    ]);
    prop_oneof![
        8 => (any::<bool>(), prop::collection::vec(seg, 0..5))
            .prop_map(|(slash, s)| format!("{}{}", if slash { "/" } else { "" }, s.join("/"))),
        1 => (20usize..40).prop_map(|n| format!("/{}", vec!["a"; n].join("/"))),
    ]
    .boxed()
}

/// A JSON Patch: operations, right and wrong.
fn json_patch() -> BoxedStrategy<Value> {
    let op = (
        select(vec![
            "add", "replace", "remove", "test", "move", "copy", "REPLACE", "x",
        ]),
        pointer(),
        prop::option::of(value()),
        prop::option::of(pointer()),
    )
        .prop_map(|(op, path, value, from)| {
            let mut m = Map::new();
            m.insert("op".into(), json!(op));
            m.insert("path".into(), json!(path));
            if let Some(v) = value {
                m.insert("value".into(), v);
            }
            if let Some(f) = from {
                m.insert("from".into(), json!(f));
            }
            Value::Object(m)
        });
    prop_oneof![
        8 => prop::collection::vec(op, 0..6).prop_map(Value::Array),
        1 => prop::collection::vec(value(), 0..4).prop_map(Value::Array),
    ]
    .boxed()
}

/// JSON nested `depth` levels.
fn nested(depth: usize, object: bool) -> Vec<u8> {
    let (open, close) = if object {
        ("{\"Properties\":", "}")
    } else {
        ("[", "]")
    };
    format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

/// `bytes` with a few bytes changed, inserted or taken out.
fn mutated() -> BoxedStrategy<Vec<u8>> {
    (
        carrier(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4),
    )
        .prop_map(|(v, edits)| {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            for (at, kind, byte) in edits {
                if b.is_empty() {
                    break;
                }
                let i = at.index(b.len());
                match kind {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            b
        })
        .boxed()
}

/// A body; for a route that writes a contact or a webhook, often one of its own shape.
pub(super) fn body(path: &str) -> BoxedStrategy<Option<Vec<u8>>> {
    let json = |s: BoxedStrategy<Value>| {
        s.prop_map(|v| Some(serde_json::to_vec(&v).unwrap_or_default()))
            .boxed()
    };
    let own = if path.contains("/Contact") {
        json(contact_one_string())
    } else if path.contains("/Webhook") {
        json(webhook_one_string())
    } else {
        Just(None).boxed()
    };
    prop_oneof![
        8 => own,
        6 => Just(None),
        10 => json(carrier()),
        6 => json(value()),
        5 => json(json_patch()),
        3 => json(object().prop_map(Value::Object).boxed()),
        2 => json(
            (text(), prop::option::of(text()), any::<bool>(), prop::option::of(number()))
                .prop_map(|(s, u, f, l)| json!({"since": s, "until": u, "onlyFailed": f, "limit": l}))
                .boxed()
        ),
        3 => mutated().prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        1 => (1usize..200, any::<bool>()).prop_map(|(d, o)| Some(nested(d, o))),
        1 => (10_000usize..40_000).prop_map(|n| Some(format!(r#"{{"Name":"{}"}}"#, "x".repeat(n)).into_bytes())),
        1 => (100usize..2000).prop_map(|n| {
            let m: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            Some(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
        }),
        1 => Just(Some(b"  ".to_vec())),
        1 => Just(Some(b"null".to_vec())),
    ]
    .boxed()
}
