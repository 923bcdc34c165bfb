//! API keys. A key belongs to one tenant and one associate; `/{tenant}/api/v1/...` must name
//! the key's tenant.
//!
//! The key travels in `Authorization` in any of the schemes SuperOffice's WebAPI takes (scheme
//! names in any case, as its samples spell them variously: `SOTicket`, `SOTICKET`):
//! `Bearer <key>`, `SoTicket <key>`, or `Basic base64(user:key)` with any user name and the
//! key as the password. Every 401 names the three in `WWW-Authenticate`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use crmhooks_store::{hash_key, now_ticks, Actor, ApiKey, DynStore, KeyScope, TOUCH_EVERY};

use crate::error::ApiError;
use crate::AppState;

/// The tenant named in the path prefix, put there by [`crate::strip_tenant_prefix`].
#[derive(Clone, Debug)]
pub struct PathTenant(pub String);

/// The authenticated caller.
pub struct Auth {
    /// Tenant and associate of the key.
    pub actor: Actor,
    /// The key's id (recorded in the audit log).
    pub key_id: i64,
    /// What the key may do.
    pub scope: KeyScope,
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
        let found = state
            .keys
            .lookup(&state.store, &key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        if found.revoked.is_some() {
            return Err(ApiError::unauthorized("this API key has been revoked"));
        }
        if !found.valid_at(now_ticks()) {
            return Err(ApiError::unauthorized("this API key has expired"));
        }
        let actor = found.actor();
        if let Some(PathTenant(t)) = parts.extensions.get::<PathTenant>() {
            if !t.eq_ignore_ascii_case(&actor.tenant) {
                return Err(ApiError::forbidden(format!(
                    "this API key belongs to another tenant than {t:?}"
                )));
            }
        }
        Ok(Auth {
            actor,
            key_id: found.id,
            scope: found.scope,
        })
    }
}

/// An authenticated caller whose key has the `admin` scope (key and tenant management,
/// `/metrics`); a tenant key gets 403.
pub struct Admin(pub Auth);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        if auth.scope != KeyScope::Admin {
            return Err(ApiError::forbidden(
                "this route needs an API key with the admin scope",
            ));
        }
        Ok(Admin(auth))
    }
}

/// Middleware of the routes only admin keys may call (`/metrics` on the API address).
pub async fn require_admin(
    _admin: Admin,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    next.run(req).await
}

/// How long a key lookup is trusted: a key revoked or expired on any node is refused
/// everywhere within this time (the promise is 5 s).
pub const KEY_TTL: Duration = Duration::from_secs(2);

/// Most keys cached; past this the cache starts over.
const MAX_CACHED: usize = 10_000;

struct Cached {
    key: ApiKey,
    fetched: Instant,
}

/// A cache of key lookups (keys are checked on every request), each trusted for [`KEY_TTL`].
/// Unknown keys are not cached: a flood of made-up keys cannot push out the real ones.
pub struct KeyCache {
    map: RwLock<HashMap<String, Cached>>,
    ttl: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::with_ttl(KEY_TTL)
    }
}

impl KeyCache {
    /// A cache trusting a lookup for `ttl`.
    pub fn with_ttl(ttl: Duration) -> Self {
        KeyCache {
            map: RwLock::default(),
            ttl,
        }
    }

    /// The stored key `key` is (valid or not), from the cache while it is fresh. Notes the
    /// key's use in the store when the stored note is older than a minute, without waiting.
    pub async fn lookup(&self, store: &DynStore, key: &str) -> Result<Option<ApiKey>, ApiError> {
        let hash = hash_key(key);
        let now = Instant::now();
        if let Some(k) = self.map.read().ok().and_then(|m| {
            m.get(&hash)
                .filter(|c| now.duration_since(c.fetched) < self.ttl)
                .map(|c| c.key.clone())
        }) {
            return Ok(Some(k));
        }
        let found = store.find_key(key).await?;
        if let Ok(mut m) = self.map.write() {
            match &found {
                Some(k) => {
                    if m.len() >= MAX_CACHED {
                        m.clear();
                    }
                    m.insert(
                        hash,
                        Cached {
                            key: k.clone(),
                            fetched: now,
                        },
                    );
                }
                None => {
                    m.remove(&hash);
                }
            }
        }
        if let Some(k) = &found {
            let ticks = now_ticks();
            if k.valid_at(ticks) && k.last_used.is_none_or(|t| ticks - t >= TOUCH_EVERY) {
                let (store, id) = (store.clone(), k.id);
                tokio::spawn(async move {
                    if let Err(e) = store.touch_key(id, ticks).await {
                        tracing::debug!(error = %e, key_id = id, "cannot note the key's use");
                    }
                });
            }
        }
        Ok(found)
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
