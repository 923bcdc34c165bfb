//! The dashboard at `/ui`: static files compiled into the binary (vanilla JavaScript and CSS,
//! no build step), served with a strict Content-Security-Policy. It signs in with an API key,
//! kept in the browser's sessionStorage only, and does everything through the API with that
//! key: it sees exactly what the key's tenant may see.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::body::ApiPath;
use crate::AppState;

/// Scripts, styles, images and API calls from this origin only; no inline code, no framing,
/// no forms posted elsewhere.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files: name, content type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dom.js"),
    ),
    (
        "webhooks.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/webhooks.js"),
    ),
    (
        "deliveries.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/deliveries.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/chart.js"),
    ),
    (
        "contacts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/contacts.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("assets/icon.svg"),
    ),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// The dashboard routes: `/ui` (redirected to `/ui/`), `/ui/` and `/ui/{file}`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(asset))
}

fn respond(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Served from the binary: a new build may change them, so the browser asks each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => respond(content_type, body),
        None => {
            crate::error::ApiError::not_found(format!("no dashboard file {file:?}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let index = std::str::from_utf8(INDEX).unwrap_or_default();
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
        }
        for part in index.split("\"./").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html names {name}, which is not served"
            );
        }
    }

    #[test]
    fn no_inline_script_or_style_the_policy_would_block() {
        let index = std::str::from_utf8(INDEX).unwrap_or_default();
        assert!(!index.contains("<script>"), "inline script");
        assert!(!index.contains("<style"), "inline style");
        assert!(!index.contains(" style="), "inline style attribute");
        for handler in [
            " onclick",
            " onload",
            " onsubmit",
            " onerror",
            "javascript:",
        ] {
            assert!(!index.contains(handler), "inline event handler {handler}");
        }
    }
}
