//! Every route of the router is documented, and every documented operation is a route.
//!
//! The routes are read from the server's source (each `.route("path", get(..).post(..))`,
//! wherever it is), so a route added without its `#[utoipa::path]` fails here. Conversely
//! each documented operation is called on a real server, with and without the tenant
//! prefix: none may fall to the router's fallback (404 "no such route"), answer 405, or name
//! an agent method that does not exist.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::common::TestApp;
use crmhooks_server::openapi::{document, is_method, OPEN_PATHS};

/// A route as the source registers it: its path (relative to where its router is mounted)
/// and its methods, both as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRoute {
    pub path: String,
    pub methods: Vec<String>,
    pub file: String,
}

/// `{anything}` as `{}`: parameter names differ between router and document.
fn normalize(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The routes registered in `source` (the text of one file).
pub fn routes_in(source: &str, file: &str) -> Vec<SourceRoute> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let call = balanced(rest);
        let Some(open) = call.find('"') else { continue };
        let Some(len) = call[open + 1..].find('"') else {
            continue;
        };
        let path = call[open + 1..open + 1 + len].to_owned();
        let mut methods = Vec::new();
        let handlers = &call[open + 1 + len..];
        for m in [
            "get", "post", "put", "patch", "delete", "head", "options", "any",
        ] {
            let needle = format!("{m}(");
            let mut from = 0;
            while let Some(i) = handlers[from..].find(&needle) {
                let i = from + i;
                let before = handlers[..i].chars().last().unwrap_or(' ');
                if !(before.is_alphanumeric() || before == '_') {
                    methods.push(m.to_owned());
                    break;
                }
                from = i + needle.len();
            }
        }
        out.push(SourceRoute {
            path,
            methods,
            file: file.to_owned(),
        });
    }
    out
}

/// The text up to the parenthesis that closes the one just opened.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// Every route registered under `dir` (recursively), test modules aside.
pub fn source_routes(dir: &Path) -> Vec<SourceRoute> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            out.extend(source_routes(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // The tests of a module may build routers of their own.
            let text = text
                .split("#[cfg(test)]\nmod tests {")
                .next()
                .unwrap_or_default();
            out.extend(routes_in(text, &path.display().to_string()));
        }
    }
    out
}

/// Every documented operation: (path, method), `paths` of `doc`.
pub fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| is_method(k)) {
            out.insert((path.clone(), method.clone()));
        }
    }
    out
}

/// Where the routers are mounted: the root, and `/api/v1` (`crmhooks_server::router`).
const MOUNTS: [&str; 2] = ["", "/api/v1"];

/// Matches source routes to documented operations: exactly (after normalizing parameter
/// names) first, then a route with parameters (`/Agents/{agent}/{method}`) to the documented
/// operations no exact route took. Returns what is not documented and what is not a route.
pub fn unmatched(
    routes: &[SourceRoute],
    docs: &BTreeSet<(String, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut taken = BTreeSet::new();
    let mut missing = Vec::new();
    let mut pending = Vec::new();
    for r in routes {
        for m in &r.methods {
            let exact: Vec<_> = docs
                .iter()
                .filter(|(p, dm)| {
                    dm == m
                        && MOUNTS
                            .iter()
                            .any(|mount| normalize(p) == normalize(&format!("{mount}{}", r.path)))
                })
                .cloned()
                .collect();
            if exact.is_empty() {
                pending.push((r, m));
            }
            taken.extend(exact);
        }
    }
    for (r, m) in pending {
        let pattern: Vec<String> = normalize(&r.path).split('/').map(str::to_owned).collect();
        let wild: Vec<_> = docs
            .iter()
            .filter(|op| !taken.contains(*op) && &op.1 == m)
            .filter(|(p, _)| {
                MOUNTS.iter().any(|mount| {
                    let Some(rest) = p.strip_prefix(mount) else {
                        return false;
                    };
                    let segs: Vec<&str> = rest.split('/').collect();
                    segs.len() == pattern.len()
                        && segs
                            .iter()
                            .zip(&pattern)
                            .all(|(s, pat)| pat == "{}" || s == pat)
                })
            })
            .cloned()
            .collect();
        if wild.is_empty() {
            missing.push(format!("{} {} ({})", m.to_uppercase(), r.path, r.file));
        }
        taken.extend(wild);
    }
    let extra = docs
        .iter()
        .filter(|op| !taken.contains(*op))
        .map(|(p, m)| format!("{} {p}", m.to_uppercase()))
        .collect();
    (missing, extra)
}

#[test]
fn every_route_is_documented_and_every_operation_is_a_route() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The dashboard's pages and assets are HTML, JS and CSS for a browser, not API operations.
    let routes: Vec<_> = source_routes(&src)
        .into_iter()
        .filter(|r| r.path != "/ui" && !r.path.starts_with("/ui/"))
        .collect();
    assert!(
        routes.len() >= 15,
        "the scan found too few routes: {routes:?}"
    );
    let (missing, extra) = unmatched(&routes, &documented(&document()));
    assert!(
        missing.is_empty(),
        "routes without an OpenAPI operation (add #[utoipa::path] to the handler and name it \
         in its module's Doc): {missing:#?}"
    );
    assert!(
        extra.is_empty(),
        "documented operations that are no route: {extra:#?}"
    );
}

#[test]
fn the_scan_catches_an_undocumented_route() {
    let source = r#"
        Router::new()
            .route("/Webhook/{id}/Usage", get(usage))
            .route(
                "/Webhook/{id}/Secret",
                get(get_secret).post(axum::routing::post(x)),
            )
            .route("/Webhook/{webhook}/Deliveries/{d}", get(delivery).put(nothing))
    "#;
    let routes = routes_in(source, "sample.rs");
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[1].methods, ["get", "post"]);
    let (missing, _) = unmatched(&routes, &documented(&document()));
    assert_eq!(
        missing,
        [
            "GET /Webhook/{id}/Secret (sample.rs)",
            "POST /Webhook/{id}/Secret (sample.rs)",
            "PUT /Webhook/{webhook}/Deliveries/{d} (sample.rs)",
        ]
    );
}

/// `path` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| match s {
            "{eventName}" => "probe.event",
            s if s.starts_with('{') => "1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_open_operations_need_no_key_and_the_others_do() {
    let app = TestApp::start().await;
    let http = reqwest::Client::new();
    for (path, method) in documented(&document()) {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let url = format!("{}{}", app.base, concrete(&path));
        let status = http.request(m, &url).send().await.unwrap().status();
        if OPEN_PATHS.contains(&path.as_str()) {
            assert_ne!(
                status, 401,
                "{method} {path} is documented as open (OPEN_PATHS)"
            );
        } else {
            assert_eq!(
                status, 401,
                "{method} {path} without a key (add it to OPEN_PATHS if it is open)"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn every_documented_operation_answers_on_a_real_server() {
    let app = TestApp::start().await;
    let doc = document();
    for (path, method) in documented(&doc) {
        let mut urls = vec![concrete(&path)];
        if path.starts_with("/api/v1/") {
            urls.push(format!("/Default{}", concrete(&path)));
        }
        for url in urls {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = app.call(m, &url, None).await;
            let message = body["Message"].as_str().unwrap_or_default();
            let fell_through = (status == 404 && message.starts_with("no such route"))
                || status == 405
                || message.contains("has no method")
                || message.starts_with("no agent");
            assert!(!fell_through, "{method} {url}: {status} {body}");
        }
    }
    app.stop().await;
}
