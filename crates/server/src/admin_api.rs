//! `/api/v1/admin/...`: key and tenant management for keys with the `admin` scope (tenant
//! keys get 403). The same as `crmhooks key create|list|revoke`, over HTTP.
//!
//! - `GET /admin/keys[?tenant=T]`: keys (never the key nor its hash);
//! - `POST /admin/keys` `{"tenant", "associate", "name"?, "scope"?, "expires"?}`: a new key
//!   (201), the key itself in `key`, shown this once; a new tenant is created;
//! - `DELETE /admin/keys/{id}`: revokes it (every node refuses it within 5 s);
//! - `GET /admin/tenants`: tenants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use crmhooks_store::{
    generate_key, now_ticks, ticks_rfc3339, ApiKey, KeyScope, NewKey, Ticks, TICKS_PER_SECOND,
};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::body::{ApiPath, ApiQuery, JsonBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

/// A lifetime such as `90d` (a number and s, m, h, d or w), in ticks.
pub fn parse_lifetime(text: &str) -> Result<Ticks, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let how = "write a number and s, m, h, d or w, e.g. 90d";
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("expires {text:?}: {how}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("expires {text:?}: {how}")),
    };
    if n < 1 {
        return Err(format!("expires {text:?}: must be at least 1{unit}"));
    }
    n.checked_mul(secs)
        .and_then(|s| s.checked_mul(TICKS_PER_SECOND))
        .filter(|t| *t < 1000 * 366 * 86_400 * TICKS_PER_SECOND)
        .ok_or_else(|| format!("expires {text:?}: too far away"))
}

// Lower-case names, RFC 3339 times in UTC, never the hash; the key itself only in the answer
// that creates it.
/// An API key as the admin API and `crmhooks key list --json` show it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(
    as = ApiKey,
    examples(json!({"id": 2, "tenant": "Cust1234", "associate": 316, "name": "crm sync", "scope": "tenant",
                    "created": "2026-12-05T08:00:00Z", "last_used": null, "expires": "2027-03-05T08:00:00Z", "revoked": null}))
)]
pub struct KeyView {
    /// Its id.
    pub id: i64,
    /// Its tenant.
    pub tenant: String,
    /// The associate its changes are made as.
    pub associate: i64,
    /// A name for people.
    pub name: String,
    /// `tenant` or `admin`.
    pub scope: &'static str,
    /// RFC 3339, UTC.
    pub created: String,
    /// When it was last used, if ever.
    pub last_used: Option<String>,
    /// When it expires, if ever.
    pub expires: Option<String>,
    /// When it was revoked, if it was.
    pub revoked: Option<String>,
    /// The key itself: only in the answer that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl KeyView {
    /// The key as shown, without the key itself.
    pub fn of(k: &ApiKey) -> Self {
        KeyView {
            id: k.id,
            tenant: k.tenant.clone(),
            associate: k.associate_id,
            name: k.name.clone(),
            scope: k.scope.name(),
            created: ticks_rfc3339(k.created),
            last_used: k.last_used.map(ticks_rfc3339),
            expires: k.expires.map(ticks_rfc3339),
            revoked: k.revoked.map(ticks_rfc3339),
            key: None,
        }
    }
}

/// A tenant.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Tenant)]
pub struct TenantView {
    /// Its id.
    pub id: i64,
    /// Its `ContextIdentifier`.
    pub name: String,
}

/// A key to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewApiKey, examples(json!({"tenant": "Cust1234", "associate": 316, "name": "crm sync", "scope": "tenant", "expires": "90d"})))]
pub(crate) struct CreateBody {
    /// The tenant (created when new): 1 to 200 characters without `/`.
    tenant: String,
    /// The associate id the key's changes are made as (`ChangedByAssociateId`).
    associate: i64,
    /// A name for people.
    #[serde(default)]
    name: String,
    /// `tenant` (the default) or `admin`.
    scope: Option<String>,
    /// A lifetime: a number and s, m, h, d or w (`90d`); none: never expires.
    expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidBody, message)
}

#[utoipa::path(get, path = "/admin/keys", tag = "Admin", operation_id = "ListKeys",
    summary = "List API keys",
    params(("tenant" = Option<String>, Query, description = "Only this tenant's keys.")),
    responses((status = 200, description = "The keys (never the key itself nor its hash).", body = Vec<KeyView>)))]
async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<KeyView>>> {
    let keys = state.store.list_keys(q.tenant.as_deref()).await?;
    Ok(Json(keys.iter().map(KeyView::of).collect()))
}

#[utoipa::path(post, path = "/admin/keys", tag = "Admin", operation_id = "CreateKey",
    summary = "Create an API key",
    request_body = CreateBody,
    responses((status = 201, description = "The new key; `key` holds the key itself, shown this once.", body = KeyView)))]
async fn create_key(
    State(state): State<AppState>,
    Admin(auth): Admin,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let body: CreateBody = serde_json::from_value(body).map_err(|e| {
        bad(format!(
            "key body: {e} (expected {{\"tenant\", \"associate\", \"name\"?, \"scope\"?: \"tenant\"|\"admin\", \"expires\"?: \"90d\"}})"
        ))
    })?;
    let tenant = body.tenant.trim();
    if tenant.is_empty() || tenant.len() > 200 || tenant.contains('/') {
        return Err(bad(
            "tenant must be a name of 1 to 200 characters without '/'".into(),
        ));
    }
    if !(0..=i64::from(i32::MAX)).contains(&body.associate) {
        return Err(bad("associate must be an int32 of 0 or more".into()));
    }
    let scope = match body.scope.as_deref() {
        None => KeyScope::Tenant,
        Some(s) => KeyScope::parse(s)
            .ok_or_else(|| bad(format!("scope {s:?}: use \"tenant\" or \"admin\"")))?,
    };
    let expires = match body.expires.as_deref() {
        None => None,
        Some(e) => Some(now_ticks() + parse_lifetime(e).map_err(bad)?),
    };
    let plain = generate_key();
    let new = NewKey {
        tenant: tenant.to_owned(),
        associate_id: body.associate,
        name: body.name,
        scope,
        expires,
    };
    let key = state.store.create_key(&new, &plain).await?;
    crate::audit::record(
        &state,
        key.audit("key.created", Some(auth.key_id), auth.actor.associate_id),
    )
    .await;
    let out = KeyView {
        key: Some(plain),
        ..KeyView::of(&key)
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "Admin", operation_id = "RevokeKey",
    summary = "Revoke an API key",
    params(("id" = i64, Path, description = "The key's id.")),
    responses((status = 200, description = "The revoked key; every node refuses it within 5 s.", body = KeyView)))]
async fn revoke_key(
    State(state): State<AppState>,
    Admin(auth): Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<KeyView>> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("key id {id:?} is not a number"),
        )
    })?;
    let key = state
        .store
        .revoke_key(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("key {id} not found")))?;
    crate::audit::record(
        &state,
        key.audit("key.revoked", Some(auth.key_id), auth.actor.associate_id),
    )
    .await;
    Ok(Json(KeyView::of(&key)))
}

#[utoipa::path(get, path = "/admin/tenants", tag = "Admin", operation_id = "ListTenants",
    summary = "List tenants",
    responses((status = 200, description = "The tenants.", body = Vec<TenantView>)))]
async fn list_tenants(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<Vec<TenantView>>> {
    let tenants = state.store.list_tenants().await?;
    Ok(Json(
        tenants
            .into_iter()
            .map(|(id, name)| TenantView { id: id.get(), name })
            .collect(),
    ))
}

/// The admin routes' operations (nested under `/api/v1` in [`crate::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_keys, create_key, revoke_key, list_tenants))]
pub struct Doc;

/// The admin routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", delete(revoke_key))
        .route("/admin/tenants", get(list_tenants))
}

#[cfg(test)]
mod tests {
    use super::parse_lifetime;
    use crmhooks_store::TICKS_PER_SECOND;

    #[test]
    fn lifetimes_take_a_number_and_a_unit() {
        assert_eq!(parse_lifetime("90d"), Ok(90 * 86_400 * TICKS_PER_SECOND));
        assert_eq!(parse_lifetime("2w"), Ok(14 * 86_400 * TICKS_PER_SECOND));
        assert_eq!(parse_lifetime("30s"), Ok(30 * TICKS_PER_SECOND));
        for bad in ["", "d", "90", "90y", "0d", "-1d", "99999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
