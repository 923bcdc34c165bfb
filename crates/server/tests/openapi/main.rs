//! The OpenAPI document: the committed `openapi.json` is the generated one, it is served at
//! `/openapi.json` without a key, every route of the router is in it and every operation in
//! it is a route ([`coverage`]), and it is well-formed OpenAPI 3.1 whose examples and real
//! answers fit its schemas ([`valid`]).
//!
//! After a change to the API: `CRMHOOKS_UPDATE_OPENAPI=1 cargo test -p crmhooks-server --test
//! openapi` rewrites `openapi.json`; review the diff and commit it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod coverage;
mod schema_check;
mod valid;

use std::path::PathBuf;

use common::TestApp;
use crmhooks_server::openapi::document_text;

/// `openapi.json` at the repository root.
fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let path = committed_path();
    let generated = document_text();
    if std::env::var_os("CRMHOOKS_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                committed.lines().count().min(generated.lines().count()),
                |i| i,
            );
        panic!(
            "openapi.json differs from the generated document from line {} on \
             (committed: {:?}, generated: {:?}); run \
             `CRMHOOKS_UPDATE_OPENAPI=1 cargo test -p crmhooks-server --test openapi` and commit it",
            line + 1,
            committed.lines().nth(line),
            generated.lines().nth(line),
        );
    }
}

#[test]
fn the_document_is_stable() {
    let again = serde_json::to_string_pretty(&crmhooks_server::openapi::document()).unwrap() + "\n";
    assert_eq!(again, document_text());
}

#[tokio::test]
async fn served_without_a_key() {
    let app = TestApp::start().await;
    let resp = reqwest::get(format!("{}/openapi.json", app.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(resp.text().await.unwrap(), document_text());
    // Under the tenant prefix it is not a route: the document is one for every tenant.
    let resp = reqwest::get(format!("{}/Default/openapi.json", app.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;
}
