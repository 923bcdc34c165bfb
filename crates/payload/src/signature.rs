//! `X-SuperOffice-Signature`: base64(HMAC-SHA256(key = UTF-8 bytes of the secret, msg = raw body)).
//!
//! Always sign and verify the exact bytes sent or received, never a re-serialized body.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The SHA-256 block size, which is also the HMAC key size.
const BLOCK: usize = 64;

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum SignatureError {
    /// No signature came with the request (or the header was empty).
    #[error("X-SuperOffice-Signature header is missing")]
    Missing,
    /// The header is not standard base64.
    #[error("X-SuperOffice-Signature header is not valid base64")]
    MalformedBase64,
    /// The signature does not belong to this body and secret.
    #[error("X-SuperOffice-Signature does not match the body (wrong secret or altered body)")]
    Mismatch,
}

impl SignatureError {
    /// A stable code for the error, e.g. for an `ErrorType` field.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing => "SignatureMissing",
            SignatureError::MalformedBase64 => "SignatureMalformed",
            SignatureError::Mismatch => "SignatureMismatch",
        }
    }
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC pads short keys with zeros and hashes keys longer than a block (RFC 2104); doing it
    // here lets us use the infallible fixed-size constructor.
    let mut key = [0u8; BLOCK];
    let s = secret.as_bytes();
    if s.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(s));
    } else {
        key[..s.len()].copy_from_slice(s);
    }
    <HmacSha256 as hmac::digest::KeyInit>::new(&key.into())
}

/// Signs `body` with `secret`: standard base64 (with padding) of HMAC-SHA256.
///
/// ```
/// let sig = crmhooks_payload::sign("secret", b"{}");
/// assert_eq!(sig.len(), 44);
/// assert!(crmhooks_payload::verify("secret", b"{}", Some(&sig)).is_ok());
/// ```
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    STANDARD.encode(m.finalize().into_bytes())
}

/// Checks the `X-SuperOffice-Signature` value `signature` against `body` and `secret`, in
/// constant time. Surrounding whitespace in the header value is ignored.
pub fn verify(secret: &str, body: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
    let signature = signature.map(str::trim).unwrap_or_default();
    if signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    let expected = STANDARD
        .decode(signature)
        .map_err(|_| SignatureError::MalformedBase64)?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        let sig = sign("Jefe", b"what do ya want for nothing?");
        let raw = STANDARD.decode(sig).unwrap();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn same_as_variable_length_constructor_for_all_key_lengths() {
        for len in [0, 1, 31, 32, 63, 64, 65, 131, 1000] {
            let secret = "k".repeat(len);
            let mut reference = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
            reference.update(b"body");
            assert_eq!(
                sign(&secret, b"body"),
                STANDARD.encode(reference.finalize().into_bytes()),
                "key length {len}"
            );
        }
    }
}
