//! What the fuzzer sends: every route with ids, names and queries that exist and that do not,
//! every method, and bodies from plausible carriers to broken bytes. Add a route here when the
//! API gets one.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::probe::{Auth, Probe};

/// Every route with its methods, `{id}` and `{n}` standing for path segments.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/Contact", &["GET", "POST"]),
    ("/api/v1/Contact/default", &["GET"]),
    (
        "/api/v1/Contact/{id}",
        &["GET", "PUT", "PATCH", "PATCH", "DELETE"],
    ),
    ("/api/v1/Contact/{id}/Restore", &["POST"]),
    ("/api/v1/Webhook", &["GET", "POST"]),
    ("/api/v1/Webhook/default", &["GET"]),
    ("/api/v1/Webhook/Test", &["POST"]),
    (
        "/api/v1/Webhook/{id}",
        &["GET", "PUT", "PATCH", "PATCH", "DELETE"],
    ),
    ("/api/v1/Webhook/{id}/LastError", &["GET"]),
    ("/api/v1/Webhook/{id}/Usage", &["GET"]),
    ("/api/v1/Webhook/{id}/Deliveries", &["GET"]),
    ("/api/v1/Webhook/{id}/Deliveries/{n}", &["GET"]),
    ("/api/v1/Webhook/{id}/Deliveries/{n}/Resend", &["POST"]),
    ("/api/v1/Webhook/{id}/Replay", &["POST"]),
    ("/api/v1/Webhook/{id}/Replay/{n}", &["GET"]),
    ("/api/v1/Webhook/{event}/{n}", &["POST"]),
    ("/api/v1/Agents/Webhook/{agent_webhook}", &["POST"]),
    ("/api/v1/Agents/Contact/{agent_contact}", &["POST"]),
    ("/healthz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/ui/", &["GET"]),
    ("/ui/{event}", &["GET"]),
    ("/api/v1/{id}", &["GET"]),
    ("/{id}", &["GET"]),
];

/// Methods for any route: some it takes, some no route takes.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FROB", "get",
];

/// Ids that exist (or did: clients delete them) and soon will.
const IDS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Events for the signal route.
const EVENTS: &[&str] = &["x.y", "contact.created", "contact.changed", "a", "x.y.z"];

/// Path segments that are not ids: out of range, not int32, text, encoded bytes.
const SEGMENTS: &[&str] = &[
    "0",
    "-1",
    "999",
    "2147483647",
    "2147483648",
    "-2147483649",
    "1e3",
    "abc",
    "contact.created",
    "contact.changed",
    "x.y",
    "a,b",
    "default",
    "Test",
    "%00",
    "a%00b",
    "%ff",
    "%C3%A6%C3%B8",
    "%20",
    "%2F",
    "..",
    ".",
    "~",
    "%25",
    "Restore",
    "0001",
    "+1",
    " 1",
];

/// Agent methods: SuperOffice's, in several cases, and some that do not exist.
const AGENT_WEBHOOK: &[&str] = &[
    "CreateDefaultWebhook",
    "SaveWebhook",
    "DeleteWebhook",
    "GetWebhook",
    "GetAllWebhooks",
    "TestWebhook",
    "SignalEvent",
    "GetLastError",
    "getwebhook",
    "GetAllWebhooksForFilter",
];
const AGENT_CONTACT: &[&str] = &[
    "CreateDefaultContactEntity",
    "GetContactEntity",
    "SaveContactEntity",
    "DeleteContactEntity",
    "savecontactentity",
    "GetContact",
];

const QUERY_NAMES: &[&str] = &[
    "nameFilter",
    "eventFilter",
    "$top",
    "$skip",
    "$select",
    "$orderBy",
    "$filter",
    "webhookId",
    "WebhookId",
    "contactEntityId",
    "ContactEntityId",
    "statusFilter",
    "status",
    "since",
    "until",
    "before",
    "limit",
    "PrimaryKey",
    "EventId",
    "permanent",
    "namefilter",
    "x",
    "",
    "%00",
];

const QUERY_VALUES: &[&str] = &[
    "",
    "1",
    "0",
    "-1",
    "1000",
    "1001",
    "99999999999999999999",
    "true",
    "false",
    "maybe",
    "Active",
    "Stopped",
    "TooManyErrors",
    "Unknown",
    "pending",
    "inflight",
    "delivered",
    "failed",
    "cancelled",
    "lost",
    "2000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00",
    "/Date(0)/",
    "yesterday",
    "contact.created",
    "%00",
    "a%00",
    "%ff",
    "h%C3%A6",
    "a+b",
    "%2B",
    "&",
    "=",
    "%3D",
];

/// Property names of the carriers and bodies, and some in other cases.
const NAMES: &[&str] = &[
    "Name",
    "Department",
    "OrgNr",
    "Number1",
    "Number2",
    "Kananame",
    "Associate",
    "Business",
    "Category",
    "Country",
    "NoMailing",
    "Xstop",
    "GroupId",
    "Source",
    "ActiveInterests",
    "DbiKey",
    "DbiLastModified",
    "DbiLastSyncronized",
    "MotherId",
    "Deleted",
    "ContactId",
    "Id",
    "CountryId",
    "AssociateId",
    "Value",
    "Events",
    "TargetUrl",
    "Secret",
    "State",
    "Type",
    "Headers",
    "Properties",
    "ErrorsEmail",
    "RetryPolicy",
    "SuccessStatus",
    "WebhookId",
    "since",
    "until",
    "onlyFailed",
    "limit",
    "name",
    "EVENTS",
    "targeturl",
    "op",
    "path",
    "value",
    "from",
    "X-Custom",
    "Content-Type",
    "Host",
    "",
    "\u{0}",
    "a\u{0}b",
    "æøå",
];

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
fn body(path: &str) -> BoxedStrategy<Option<Vec<u8>>> {
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

fn segment() -> BoxedStrategy<&'static str> {
    prop_oneof![4 => select(IDS), 1 => select(SEGMENTS)].boxed()
}

fn query() -> BoxedStrategy<String> {
    prop::collection::vec((select(QUERY_NAMES), select(QUERY_VALUES)), 0..4)
        .prop_map(|q| {
            if q.is_empty() {
                String::new()
            } else {
                let pairs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("?{}", pairs.join("&"))
            }
        })
        .boxed()
}

/// A method and a path with its query: mostly a method the route takes.
fn route() -> BoxedStrategy<(&'static str, String)> {
    let tenant = prop_oneof![
        9 => Just(None),
        1 => prop::option::of(select(vec!["Default", "default", "Other", "%00", "api"])),
    ];
    (
        select(ROUTES),
        prop_oneof![6 => Just(None), 1 => select(METHODS).prop_map(Some)],
        any::<prop::sample::Index>(),
        segment(),
        prop_oneof![3 => select(IDS), 1 => select(SEGMENTS)],
        prop_oneof![3 => select(EVENTS), 1 => select(SEGMENTS)],
        (select(AGENT_WEBHOOK), select(AGENT_CONTACT)),
        tenant,
        query(),
    )
        .prop_map(
            |((template, methods), other, pick, id, n, event, agents, tenant, query)| {
                let method = other.unwrap_or_else(|| methods[pick.index(methods.len())]);
                let path = template
                    .replace("{id}", id)
                    .replace("{n}", n)
                    .replace("{event}", event)
                    .replace("{agent_webhook}", agents.0)
                    .replace("{agent_contact}", agents.1);
                let prefix = tenant.map(|t| format!("/{t}")).unwrap_or_default();
                (method, format!("{prefix}{path}{query}"))
            },
        )
        .boxed()
}

fn auth() -> BoxedStrategy<Auth> {
    prop_oneof![
        12 => Just(Auth::Key),
        1 => Just(Auth::None),
        1 => Just(Auth::OtherTenant),
        1 => select(vec![
            "Bearer wrong", "Bearer ", "bearer test-key-default", "Basic abc", "SoTicket x",
            "Bearer test-key-default extra", "Basic Og==", "Bearer \u{7f}",
        ])
        .prop_map(|s| Auth::Raw(s.to_owned())),
    ]
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<String>> {
    prop_oneof![
        6 => Just(Some("application/json".to_owned())),
        2 => Just(None),
        1 => select(vec![
            "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16",
            "multipart/form-data; boundary=x", "", "application/xml",
        ])
        .prop_map(|s| Some(s.to_owned())),
    ]
    .boxed()
}

/// Bytes that are not quite HTTP.
fn raw() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        select(vec![
            "GET / HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.0\r\n\r\n",
            "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
            "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "POST /api/v1/Contact HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "GET /api/v1/Webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\r\n\r\n",
            "\r\n\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
            "GET http://other/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        (1usize..20_000).prop_map(|n| format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(n)).into_bytes()),
        (1usize..200).prop_map(|n| {
            let mut r = "GET /healthz HTTP/1.1\r\n".to_owned();
            for i in 0..n {
                r.push_str(&format!("X-H{i}: v\r\n"));
            }
            r.push_str("\r\n");
            r.into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
    .boxed()
}

/// One probe: mostly well-formed HTTP requests, a few raw byte strings.
pub fn probe(rx: String) -> BoxedStrategy<Probe> {
    let http = route()
        .prop_flat_map(|(method, path)| {
            let body = body(&path);
            (Just(method), Just(path), auth(), content_type(), body)
        })
        .prop_map(
            move |(method, path, auth, content_type, body)| Probe::Http {
                method: method.to_owned(),
                path,
                auth,
                content_type,
                body: body.map(|b| {
                    String::from_utf8(b.clone())
                        .map(|s| s.replace("{rx}", &rx).into_bytes())
                        .unwrap_or(b)
                }),
            },
        );
    prop_oneof![40 => http, 1 => raw().prop_map(Probe::Raw)].boxed()
}
