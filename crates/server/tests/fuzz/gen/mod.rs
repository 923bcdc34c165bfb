//! What the fuzzer sends: every route with ids, names and queries that exist and that do not,
//! every method, and bodies from plausible carriers to broken bytes. Add a route to `vocab.rs`
//! when the API gets one.

mod body;
mod vocab;

use proptest::prelude::*;
use proptest::sample::select;

use crate::probe::{Auth, Probe};

use body::body;
use vocab::{
    AGENT_CONTACT, AGENT_WEBHOOK, EVENTS, IDS, METHODS, QUERY_NAMES, QUERY_VALUES, ROUTES, SEGMENTS,
};

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
            "Bearer wrong", "Bearer ", "bearer test-key-default-0123456789abcdef", "Basic abc", "SoTicket x",
            "Bearer test-key-default-0123456789abcdef extra", "Basic Og==", "Bearer \u{7f}",
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
