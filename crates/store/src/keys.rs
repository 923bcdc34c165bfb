//! API keys as operators manage them, and the audit log of management calls.
//!
//! A key is `crmh_` followed by 32 random bytes in base64url (43 characters): the prefix lets
//! secret scanners recognise a leaked key. Only its SHA-256 is stored ([`crate::hash_key`]).

use crate::entity::Ticks;
use crate::ids::TenantId;

/// The prefix of every generated key.
pub const KEY_PREFIX: &str = "crmh_";

/// The shortest bootstrap key (`CRMHOOKS_API_KEY`) a server accepts.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 32;

/// The name of the key `CRMHOOKS_API_KEY` bootstraps.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// A key's `last_used` is written at most this often (a minute).
pub const TOUCH_EVERY: Ticks = 60 * crate::entity::TICKS_PER_SECOND;

/// A new random key: [`KEY_PREFIX`] and 256 bits from the operating system, base64url.
pub fn generate_key() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A time in ticks as RFC 3339 in UTC (`2026-12-05T07:16:17Z`), for lists and JSON.
pub fn ticks_rfc3339(t: Ticks) -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 100)
        .ok()
        .map(|d| d.replace_nanosecond(0).unwrap_or(d))
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// Its tenant's contacts, webhooks, events and audit log.
    Tenant,
    /// Also key and tenant management and `/metrics`.
    Admin,
}

impl KeyScope {
    /// As stored and shown: `tenant` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            KeyScope::Tenant => "tenant",
            KeyScope::Admin => "admin",
        }
    }

    /// Reads a scope name (any case).
    pub fn parse(s: &str) -> Option<KeyScope> {
        if s.eq_ignore_ascii_case("tenant") {
            Some(KeyScope::Tenant)
        } else if s.eq_ignore_ascii_case("admin") {
            Some(KeyScope::Admin)
        } else {
            None
        }
    }
}

/// A stored key (never the key itself nor its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Key id.
    pub id: i64,
    /// Tenant row id.
    pub tenant_id: TenantId,
    /// Tenant name.
    pub tenant: String,
    /// Associate id the key acts as.
    pub associate_id: i64,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub scope: KeyScope,
    /// When it was made.
    pub created: Ticks,
    /// When it was last used (written at most about once a minute).
    pub last_used: Option<Ticks>,
    /// When it stops working.
    pub expires: Option<Ticks>,
    /// When it was revoked.
    pub revoked: Option<Ticks>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn valid_at(&self, now: Ticks) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| now < e)
    }

    /// The actor the key acts as.
    pub fn actor(&self) -> crate::Actor {
        crate::Actor {
            tenant_id: self.tenant_id,
            tenant: self.tenant.clone(),
            associate_id: self.associate_id,
        }
    }
}

impl ApiKey {
    /// What the audit log says of the key (never the key nor its hash).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "name {:?}, scope {}, associate {}",
            self.name,
            self.scope.name(),
            self.associate_id
        );
        if let Some(e) = self.expires {
            s.push_str(&format!(", expires {}", ticks_rfc3339(e)));
        }
        s
    }

    /// The audit entry of a change to this key (`key.created`, `key.revoked`) made by key
    /// `by` (None: the command line) acting as `associate_id`.
    pub fn audit(&self, action: &str, by: Option<i64>, associate_id: i64) -> NewAudit {
        NewAudit {
            tenant_id: self.tenant_id,
            key_id: by,
            associate_id,
            action: action.into(),
            target: format!("key/{}", self.id),
            summary: self.summary(),
        }
    }
}

/// A key to store.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// Tenant name (created if needed).
    pub tenant: String,
    /// Associate id.
    pub associate_id: i64,
    /// Name.
    pub name: String,
    /// Scope.
    pub scope: KeyScope,
    /// Expiry.
    pub expires: Option<Ticks>,
}

/// What storing the bootstrap key did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// The key's id.
    pub id: i64,
    /// The key was stored before and has been revoked since (it stays revoked).
    pub revoked: bool,
    /// Earlier bootstrap keys revoked now (`CRMHOOKS_API_KEY` changed).
    pub revoked_others: u64,
}

/// A management call to record.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// Tenant the call concerned.
    pub tenant_id: TenantId,
    /// The key that made it (None: the command line).
    pub key_id: Option<i64>,
    /// Associate of the caller (0 for the command line).
    pub associate_id: i64,
    /// What was done, e.g. `webhook.created`, `key.revoked`.
    pub action: String,
    /// What it was done to, e.g. `webhook/12`, `key/3`.
    pub target: String,
    /// What changed, for people (never a secret nor a header value).
    pub summary: String,
}

/// A recorded management call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Entry id (grows with time).
    pub id: i64,
    /// Tenant row id.
    pub tenant_id: TenantId,
    /// The key that made it.
    pub key_id: Option<i64>,
    /// The caller's associate.
    pub associate_id: i64,
    /// When.
    pub at: Ticks,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// What changed.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_keys_carry_the_prefix_and_256_bits() {
        let a = super::generate_key();
        let b = super::generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("crmh_"), "{a}");
        assert_eq!(a.len(), 5 + 43, "{a}");
        assert_eq!(super::ticks_rfc3339(0), "1970-01-01T00:00:00Z");
        assert!(a[5..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
