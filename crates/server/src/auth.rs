//! Bearer API keys. A key belongs to one tenant and one associate; `/{tenant}/api/v1/...`
//! must name the key's tenant.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crmhooks_store::Actor;

use crate::error::ApiError;
use crate::AppState;

/// The tenant named in the path prefix, put there by [`crate::strip_tenant_prefix`].
#[derive(Clone, Debug)]
pub struct PathTenant(pub String);

/// The authenticated caller.
pub struct Auth {
    /// Tenant and associate of the key.
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing Authorization header: send `Authorization: Bearer <api key>`",
                )
            })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <api key>`")
            })?;
        let actor = state
            .keys
            .lookup(&state.store, key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        if let Some(PathTenant(t)) = parts.extensions.get::<PathTenant>() {
            if !t.eq_ignore_ascii_case(&actor.tenant) {
                return Err(ApiError::forbidden(format!(
                    "this API key belongs to another tenant than {t:?}"
                )));
            }
        }
        Ok(Auth { actor })
    }
}

/// A small cache of key lookups (keys are checked on every request).
#[derive(Default)]
pub struct KeyCache {
    map: std::sync::RwLock<std::collections::HashMap<String, Actor>>,
}

impl KeyCache {
    async fn lookup(
        &self,
        store: &crmhooks_store::DynStore,
        key: &str,
    ) -> Result<Option<Actor>, ApiError> {
        let hash = crmhooks_store::hash_key(key);
        if let Some(a) = self.map.read().ok().and_then(|m| m.get(&hash).cloned()) {
            return Ok(Some(a));
        }
        let actor = store.actor_for_key(key).await?;
        if let (Some(a), Ok(mut m)) = (&actor, self.map.write()) {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(hash, a.clone());
        }
        Ok(actor)
    }
}
