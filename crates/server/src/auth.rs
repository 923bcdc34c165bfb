//! API keys. A key belongs to one tenant and one associate; `/{tenant}/api/v1/...` must name
//! the key's tenant.
//!
//! The key travels in `Authorization` in any of the schemes SuperOffice's WebAPI takes (scheme
//! names in any case, as its samples spell them variously: `SOTicket`, `SOTICKET`):
//! `Bearer <key>`, `SoTicket <key>`, or `Basic base64(user:key)` with any user name and the
//! key as the password. Every 401 names the three in `WWW-Authenticate`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
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

/// The challenges of a 401, one `WWW-Authenticate` field each.
pub const CHALLENGES: [&str; 3] = [
    "Bearer realm=\"crmhooks\"",
    "SoTicket realm=\"crmhooks\"",
    "Basic realm=\"crmhooks\", charset=\"UTF-8\"",
];

const HOW: &str =
    "send `Authorization: Bearer <api key>` (or `SoTicket <api key>`, or `Basic` with the key as the password)";

/// The API key in an `Authorization` value, or why there is none.
pub fn key_of(value: &str) -> Result<String, String> {
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("the Authorization header names no scheme: {HOW}"))?;
    let rest = rest.trim();
    let key = if scheme.eq_ignore_ascii_case("Bearer") || scheme.eq_ignore_ascii_case("SoTicket") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("Basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "the Basic credentials are not base64".to_owned())?;
        let text = String::from_utf8(decoded)
            .map_err(|_| "the Basic credentials are not UTF-8".to_owned())?;
        let (_user, password) = text
            .split_once(':')
            .ok_or_else(|| "the Basic credentials are not user:password".to_owned())?;
        password.to_owned()
    } else {
        return Err(format!(
            "the Authorization scheme {scheme:?} is not supported: {HOW}"
        ));
    };
    if key.is_empty() {
        return Err(format!("the Authorization header carries no key: {HOW}"));
    }
    Ok(key)
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
                ApiError::unauthorized(format!("missing Authorization header: {HOW}"))
            })?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let key = key_of(value).map_err(ApiError::unauthorized)?;
        let actor = state
            .keys
            .lookup(&state.store, &key)
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

#[cfg(test)]
mod tests {
    use super::key_of;
    use base64::Engine as _;

    #[test]
    fn the_three_schemes_carry_the_key_in_any_case() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        for (value, key) in [
            ("Bearer k1".to_owned(), "k1"),
            ("bearer  k1 ".to_owned(), "k1"),
            ("SoTicket 7T:abc==".to_owned(), "7T:abc=="),
            ("SOTICKET k2".to_owned(), "k2"),
            (basic("anyone:k3"), "k3"),
            (basic(":k:4"), "k:4"),
        ] {
            assert_eq!(key_of(&value).as_deref(), Ok(key), "{value}");
        }
        for bad in [
            "k1".to_owned(),
            "Bearer ".to_owned(),
            "Digest x".to_owned(),
            "Basic !!!".to_owned(),
            basic("no-colon"),
            basic("user:"),
        ] {
            assert!(key_of(&bad).is_err(), "{bad}");
        }
    }
}
