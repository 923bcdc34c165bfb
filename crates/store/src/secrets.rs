//! Webhook secrets and custom header values encrypted at rest.
//!
//! A [`Keyring`] holds one or more master keys, each with a key id (`kid`). The first key
//! encrypts; every key decrypts. A stored value is `enc1:<kid>:<base64(nonce || ciphertext)>`:
//! AES-256-GCM with a random 96-bit nonce, so the key id of every value is known and several
//! master keys can be in use during a rotation. A value without the `enc1:` prefix is plain
//! text written before encryption existed (the store encrypts those when it opens).
//!
//! An empty keyring stores plain text; the server never runs with one (it refuses to start
//! without a master key outside `--dev`), but the store's own tests and short commands may.

use std::borrow::Cow;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use serde_json::{Map, Value as Json};

/// What every encrypted value starts with.
pub const PREFIX: &str = "enc1:";

/// Length of a master key in bytes (AES-256).
pub const KEY_BYTES: usize = 32;

const NONCE_BYTES: usize = 12;

/// A master key given in a wrong form.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not `kid:base64key`.
    #[error(
        "a master key is written kid:base64key (e.g. k1:{example}), not {0:?}",
        example = "<44 base64 characters>"
    )]
    Form(String),
    /// A key id with characters other than letters, digits, `.`, `_`, `-`, or too long.
    #[error("master key id {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    Kid(String),
    /// The key is not 32 bytes of base64.
    #[error("master key {0:?}: the key must be 32 bytes written in base64 (44 characters); `crmhooks secrets generate-key` makes one")]
    Material(String),
    /// The same key id twice.
    #[error("master key id {0:?} is given twice")]
    Duplicate(String),
    /// No key at all.
    #[error("no master key given")]
    Empty,
}

/// A value that cannot be decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Encrypted under a key id the keyring does not have.
    #[error(
        "encrypted under master key id {kid:?}, which is not among the configured keys ({known})"
    )]
    UnknownKid {
        /// The key id of the value.
        kid: String,
        /// The configured key ids, comma separated (or "none").
        known: String,
    },
    /// The key with that id does not open it: another key under the same id, or damaged data.
    #[error("cannot be decrypted with master key id {kid:?}: a wrong key under that id, or damaged data")]
    WrongKey {
        /// The key id of the value.
        kid: String,
    },
    /// Not in the `enc1:kid:base64` form.
    #[error("is not a well-formed encrypted value")]
    Malformed,
}

impl SecretError {
    /// The key id the value could not be decrypted with, if it named one.
    pub fn kid(&self) -> Option<&str> {
        match self {
            SecretError::UnknownKid { kid, .. } | SecretError::WrongKey { kid } => Some(kid),
            SecretError::Malformed => None,
        }
    }
}

/// One master key: its id and its AES-256-GCM cipher (the key itself is not kept elsewhere).
pub struct MasterKey {
    kid: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    let ok = !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Kid(kid.to_owned()))
    }
}

impl MasterKey {
    /// Reads `kid:base64key`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let Some((kid, material)) = text.split_once(':') else {
            // Never echo what may be a key.
            return Err(KeyError::Form(redact_key(text)));
        };
        check_kid(kid)?;
        let material = material.trim();
        let bytes = STANDARD
            .decode(material)
            .or_else(|_| STANDARD_NO_PAD.decode(material))
            .map_err(|_| KeyError::Material(kid.to_owned()))?;
        if bytes.len() != KEY_BYTES {
            return Err(KeyError::Material(kid.to_owned()));
        }
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::Material(kid.to_owned()))?;
        Ok(MasterKey {
            kid: kid.to_owned(),
            cipher,
        })
    }

    /// A new random key with id `kid`, and its line `kid:base64key` (shown once).
    pub fn generate(kid: &str) -> Result<(Self, String), KeyError> {
        check_kid(kid)?;
        let key = Aes256Gcm::generate_key(OsRng);
        let line = format!("{kid}:{}", STANDARD.encode(key));
        Ok((
            MasterKey {
                kid: kid.to_owned(),
                cipher: Aes256Gcm::new(&key),
            },
            line,
        ))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// What a message may show of something that should have been `kid:key`: its length only.
fn redact_key(text: &str) -> String {
    format!("<{} characters>", text.chars().count())
}

/// The master keys: the first encrypts, all decrypt. Cheap to share (`Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Arc<MasterKey>>,
}

impl Keyring {
    /// No key: values are stored as plain text.
    pub fn empty() -> Self {
        Keyring::default()
    }

    /// Reads a list of `kid:base64key`, separated by commas, spaces or new lines (a key file
    /// may have `#` comment lines). At least one key.
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let mut ring = Keyring::default();
        for line in list.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            for item in line.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
                ring.push(MasterKey::parse(item)?)?;
            }
        }
        if ring.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(ring)
    }

    /// Adds `key` after the others (it decrypts, but does not encrypt unless it is the first).
    pub fn push(&mut self, key: MasterKey) -> Result<(), KeyError> {
        if self.get(&key.kid).is_some() {
            return Err(KeyError::Duplicate(key.kid));
        }
        self.keys.push(Arc::new(key));
        Ok(())
    }

    /// This keyring with `key` first: it encrypts from now on (a rotation's new key). A key
    /// of the same id already in the ring is replaced.
    pub fn with_primary(mut self, key: MasterKey) -> Result<Self, KeyError> {
        self.keys.retain(|k| k.kid != key.kid);
        self.keys.insert(0, Arc::new(key));
        Ok(self)
    }

    /// No key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key that encrypts.
    pub fn primary_kid(&self) -> Option<&str> {
        self.keys.first().map(|k| k.kid.as_str())
    }

    /// Every key id, the encrypting one first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    fn get(&self, kid: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.kid == kid).map(|k| &**k)
    }

    /// `plain` as stored: encrypted under the first key, or as it is with no key.
    pub fn seal(&self, plain: &str) -> String {
        let Some(key) = self.keys.first() else {
            return plain.to_owned();
        };
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption fails only for messages of gigabytes; the store's values are small and
        // bounded, so this never happens, and no plain text is ever written instead.
        let ct = key
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_BYTES + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        format!("{PREFIX}{}:{}", key.kid, STANDARD.encode(raw))
    }

    /// The key id of a stored value, or None when it is plain text.
    pub fn kid_of(stored: &str) -> Option<&str> {
        stored.strip_prefix(PREFIX)?.split_once(':').map(|(k, _)| k)
    }

    /// A stored value as plain text (plain text stays as it is).
    pub fn open<'a>(&self, stored: &'a str) -> Result<Cow<'a, str>, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(Cow::Borrowed(stored));
        };
        let (kid, data) = rest.split_once(':').ok_or(SecretError::Malformed)?;
        let key = self.get(kid).ok_or_else(|| SecretError::UnknownKid {
            kid: kid.to_owned(),
            known: if self.is_empty() {
                "none".to_owned()
            } else {
                self.kids().join(", ")
            },
        })?;
        let raw = STANDARD.decode(data).map_err(|_| SecretError::Malformed)?;
        if raw.len() < NONCE_BYTES {
            return Err(SecretError::Malformed);
        }
        let (nonce, ct) = raw.split_at(NONCE_BYTES);
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::WrongKey {
                kid: kid.to_owned(),
            })?;
        String::from_utf8(plain)
            .map(Cow::Owned)
            .map_err(|_| SecretError::Malformed)
    }

    /// A webhook's custom headers as stored: each string value sealed (names stay readable).
    pub fn seal_headers(&self, headers: &Map<String, Json>) -> Map<String, Json> {
        headers
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Json::String(s) => Json::String(self.seal(s)),
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// Opens every sealed header value in place; the name of the header that failed.
    pub fn open_headers(
        &self,
        headers: &mut Map<String, Json>,
    ) -> Result<(), (String, SecretError)> {
        for (k, v) in headers.iter_mut() {
            if let Json::String(s) = v {
                if s.starts_with(PREFIX) {
                    let plain = self.open(s).map_err(|e| (k.clone(), e))?.into_owned();
                    *s = plain;
                }
            }
        }
        Ok(())
    }
}

/// What [`crate::Store::reseal_secrets`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Webhook definitions looked at.
    pub webhooks: u64,
    /// Values that were plain text and are now encrypted.
    pub sealed: u64,
    /// Values re-encrypted under the first key (a rotation).
    pub rotated: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ring(kids: &[&str]) -> (Keyring, Vec<String>) {
        let mut r = Keyring::empty();
        let mut lines = Vec::new();
        for kid in kids {
            let (k, line) = MasterKey::generate(kid).unwrap();
            r.push(k).unwrap();
            lines.push(line);
        }
        (r, lines)
    }

    #[test]
    fn a_sealed_value_opens_with_any_key_of_the_ring_that_made_it() {
        let (r, lines) = ring(&["k1"]);
        let sealed = r.seal("s3cret");
        assert!(sealed.starts_with("enc1:k1:"), "{sealed}");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(sealed, r.seal("s3cret"), "a fresh nonce every time");
        assert_eq!(r.open(&sealed).unwrap(), "s3cret");
        // A ring parsed from the same line, behind a newer key, still opens it.
        let (new, _) = MasterKey::generate("k2").unwrap();
        let r2 = Keyring::parse(&lines[0])
            .unwrap()
            .with_primary(new)
            .unwrap();
        assert_eq!(r2.open(&sealed).unwrap(), "s3cret");
        assert!(r2.seal("x").starts_with("enc1:k2:"));
        assert_eq!(r2.kids(), ["k2", "k1"]);
        assert_eq!(r.open("plain").unwrap(), "plain");
    }

    #[test]
    fn a_wrong_or_missing_key_names_the_key_id() {
        let (r, _) = ring(&["k1"]);
        let sealed = r.seal("s3cret");
        let (other, _) = ring(&["k1"]);
        let e = other.open(&sealed).unwrap_err();
        assert_eq!(e.kid(), Some("k1"));
        assert!(e.to_string().contains("\"k1\""), "{e}");
        let (none, _) = ring(&["k9"]);
        let e = none.open(&sealed).unwrap_err();
        assert!(
            e.to_string().contains("\"k1\"") && e.to_string().contains("k9"),
            "{e}"
        );
        assert!(matches!(r.open("enc1:k1:%%%"), Err(SecretError::Malformed)));
        assert!(matches!(r.open("enc1:k1"), Err(SecretError::Malformed)));
        assert!(matches!(
            r.open("enc1:k1:AAAA"),
            Err(SecretError::Malformed)
        ));
    }

    #[test]
    fn key_lists_are_checked_and_never_echoed() {
        let (_, lines) = ring(&["a", "b.2"]);
        let both = Keyring::parse(&format!("# keys\n{}, {}\n", lines[0], lines[1])).unwrap();
        assert_eq!(both.kids(), ["a", "b.2"]);
        assert!(matches!(Keyring::parse(""), Err(KeyError::Empty)));
        let e = Keyring::parse("c2VjcmV0c2VjcmV0").unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        assert!(matches!(
            Keyring::parse("k:c2hvcnQ="),
            Err(KeyError::Material(_))
        ));
        assert!(matches!(Keyring::parse("k k:x"), Err(KeyError::Form(_))));
        let dup = format!("{},{}", lines[0], lines[0]);
        assert!(matches!(Keyring::parse(&dup), Err(KeyError::Duplicate(_))));
        assert!(matches!(
            MasterKey::generate("bad kid"),
            Err(KeyError::Kid(_))
        ));
    }

    #[test]
    fn header_values_are_sealed_and_names_kept() {
        let (r, _) = ring(&["k1"]);
        let mut h = Map::new();
        h.insert("X-Api-Key".into(), Json::String("abc".into()));
        let mut sealed = r.seal_headers(&h);
        assert!(sealed["X-Api-Key"]
            .as_str()
            .unwrap()
            .starts_with("enc1:k1:"));
        r.open_headers(&mut sealed).unwrap();
        assert_eq!(sealed, h);
    }
}
