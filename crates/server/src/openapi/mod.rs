//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json` (no key) and committed
//! as `openapi.json` at the repository root; the `openapi` test fails when the two differ
//! (`CRMHOOKS_UPDATE_OPENAPI=1 cargo test -p crmhooks-server --test openapi` rewrites it).
//!
//! Where its parts come from:
//! - each route's `#[utoipa::path]` attribute on its handler (method, path, parameters,
//!   request body, success answers), listed in the resource module's `Doc`
//!   ([`crate::webhook_api::Doc`], [`crate::contact_api::Doc`]), nested here under `/api/v1`;
//! - the carriers' `ToSchema` derives, and [`schemas`] for what no carrier derives;
//! - the agent methods, one operation each ([`agents`]);
//! - here: the auth schemes, the error answers every operation shares, the tenant prefix
//!   (as a server), and the outgoing webhook call (`webhooks`, [`outgoing`]).
//!
//! Adding a route: put `#[utoipa::path(...)]` on its handler and name the handler in its
//! module's `Doc`. The `openapi` test fails while a route of the router is not documented.

mod agents;
pub(crate) mod examples;
pub(crate) mod outgoing;
pub(crate) mod schemas;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

pub use agents::{CONTACT_METHODS, WEBHOOK_METHODS};

use crate::error::{ErrorBody, ErrorCode};

/// The document's parts that utoipa generates; [`document`] adds the rest.
#[derive(OpenApi)]
#[openapi(
    info(title = "crmhooks", license(name = "MIT OR Apache-2.0")),
    paths(crate::healthz, crate::metrics, openapi_json),
    nest(
        (path = "/api/v1", api = crate::webhook_api::Doc),
        (path = "/api/v1", api = crate::contact_api::Doc),
        (path = "/api/v1", api = agents::Doc),
        (path = "/api/v1", api = crate::admin_api::Doc),
        (path = "/api/v1", api = crate::audit::Doc),
    ),
    components(schemas(ErrorBody, ErrorCode, outgoing::WebhookPayloadDoc, schemas::PatchOperation)),
    tags(
        (name = "Webhook", description = "Webhook definitions (SuperOffice's `Webhook` REST API), test and signal."),
        (name = "Deliveries", description = "Our additions: each webhook's delivery log, usage and replay."),
        (name = "Contact", description = "Contacts (SuperOffice's `ContactEntity`); each change fires its event."),
        (name = "Agents", description = "SuperOffice's RPC-style agent API: every method a POST, names in any case."),
        (name = "Admin", description = "Keys and tenants (keys with the `admin` scope), and each tenant's audit log."),
        (name = "Operations", description = "Health, metrics and this document."),
        (name = "Outgoing webhooks", description = "The calls crmhooks makes to a webhook's `TargetUrl`."),
    )
)]
struct ApiDoc;

/// What the document says before its operations.
const DESCRIPTION: &str = "\
A SuperOffice-compatible webhook server: contacts stored here, SuperOffice's webhook \
definitions, and the deliveries of each change to each subscribed webhook, exactly as \
SuperOffice sends them (see `webhooks`).

**Tenants.** Every `/api/v1/...` route is also served as `/{tenant}/api/v1/...` (the second \
server below); the tenant named there must be the API key's, else 403. Without the prefix \
the key's tenant is used.

**Keys.** Send the API key as `Authorization: Bearer <key>`, `SoTicket <key>`, or `Basic` \
with the key as the password (any user name); scheme names in any case. A 401 names the \
three in `WWW-Authenticate`.

**Errors.** Every failure answers with the status its code implies and the JSON body \
`ErrorBody` (`{\"Error\", \"ErrorType\", \"Message\"}`); `ErrorType` is stable \
(`ErrorCode`). No input answers 500 by design.

**Names.** Property names of request bodies match in any case, as SuperOffice's; answers \
spell them as SuperOffice does, in its order, with .NET date strings.";

/// The shared error answers: component name, status, description, an example code.
const ERRORS: [(&str, u16, &str, ErrorCode); 8] = [
    (
        "BadRequest",
        400,
        "The request is malformed: a property, a parameter, the JSON or the path (`Message` names it).",
        ErrorCode::InvalidField,
    ),
    (
        "Unauthorized",
        401,
        "No API key, or an unknown one.",
        ErrorCode::Unauthorized,
    ),
    (
        "Forbidden",
        403,
        "The key belongs to another tenant than the path names.",
        ErrorCode::Forbidden,
    ),
    ("NotFound", 404, "No such entity.", ErrorCode::NotFound),
    (
        "RequestTimeout",
        408,
        "The request did not arrive in time.",
        ErrorCode::RequestTimeout,
    ),
    (
        "PayloadTooLarge",
        413,
        "The body is larger than `max_body_bytes`.",
        ErrorCode::BodyTooLarge,
    ),
    (
        "InternalError",
        500,
        "A server fault; the detail is in the server log.",
        ErrorCode::InternalError,
    ),
    (
        "ServiceUnavailable",
        503,
        "The database does not answer; try again shortly.",
        ErrorCode::DatabaseUnavailable,
    ),
];

/// The paths served without a key (`security: []`); every other operation answers 401 without
/// one (the `openapi` test checks both on a real server).
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/openapi.json"];

/// The whole document as a JSON value.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let Some(root) = doc.as_object_mut() else {
        return doc;
    };
    if let Some(info) = root.get_mut("info").and_then(Value::as_object_mut) {
        info.insert("description".into(), json!(DESCRIPTION));
    }
    root.insert(
        "servers".into(),
        json!([
            {"url": "/", "description": "The key's tenant."},
            {"url": "/{tenant}", "description": "A tenant named in the path: it must be the key's.",
             "variables": {"tenant": {"default": "Default", "description": "The tenant's ContextIdentifier."}}}
        ]),
    );
    root.insert(
        "security".into(),
        json!([{"bearer": []}, {"soTicket": []}, {"basic": []}]),
    );
    add_components(root);
    if let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            add_errors(path, item);
        }
    }
    root.insert("webhooks".into(), outgoing::webhooks());
    doc
}

/// The auth schemes and the shared error answers.
fn add_components(root: &mut Map<String, Value>) {
    let components = root
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(components) = components else {
        return;
    };
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <api key>`."},
            "soTicket": {"type": "apiKey", "in": "header", "name": "Authorization",
                         "description": "`Authorization: SoTicket <api key>` (SuperOffice's ticket scheme, any case)."},
            "basic": {"type": "http", "scheme": "basic", "description": "`Authorization: Basic base64(user:key)`: any user name, the key as the password."}
        }),
    );
    let mut responses = Map::new();
    for (name, status, description, code) in ERRORS {
        let reason = axum::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        responses.insert(
            name.into(),
            json!({
                "description": description,
                "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorBody"},
                    "example": {"Error": reason, "ErrorType": code.as_str(), "Message": description}
                }}
            }),
        );
    }
    components.insert("responses".into(), Value::Object(responses));
}

/// Adds the error answers an operation of `path` can give that it does not list itself.
fn add_errors(path: &str, item: &mut Value) {
    let open = OPEN_PATHS.contains(&path);
    // Outside `/api/v1` there is no tenant prefix.
    if !path.starts_with("/api/") {
        if let Some(m) = item.as_object_mut() {
            m.insert("servers".into(), json!([{"url": "/"}]));
        }
    }
    let Some(ops) = item.as_object_mut() else {
        return;
    };
    for (method, op) in ops.iter_mut() {
        if !is_method(method) {
            continue;
        }
        let Some(op) = op.as_object_mut() else {
            continue;
        };
        let has_body = op.contains_key("requestBody");
        let mut names = vec![];
        if path.starts_with("/api/") {
            names.extend(["BadRequest", "Unauthorized", "Forbidden"]);
            if path.contains('{') {
                names.push("NotFound");
            }
            if has_body {
                names.extend(["RequestTimeout", "PayloadTooLarge"]);
            }
        }
        if path != "/openapi.json" {
            names.extend(["InternalError", "ServiceUnavailable"]);
        }
        if open {
            op.insert("security".into(), json!([]));
        } else if !path.starts_with("/api/") {
            names.extend(["Unauthorized", "Forbidden"]);
        }
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        let Some(responses) = responses else {
            continue;
        };
        for name in names {
            let Some((_, status, _, _)) = ERRORS.iter().find(|e| e.0 == name) else {
                continue;
            };
            responses
                .entry(status.to_string())
                .or_insert_with(|| json!({"$ref": format!("#/components/responses/{name}")}));
        }
    }
}

/// Whether `key` of a path item is an HTTP method (not `parameters`, `servers`, …).
pub fn is_method(key: &str) -> bool {
    matches!(
        key,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

/// The document as served and committed: pretty-printed, one trailing newline.
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
        text.push('\n');
        text
    })
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "Operations", operation_id = "OpenApi",
    summary = "This document",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_text(),
    )
        .into_response()
}
