//! HMAC-SHA256 signatures (spec 2).
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use crmhooks_payload::{sign, verify, SignatureError};
use proptest::prelude::*;

#[test]
fn error_kinds() {
    let body = br#"{"Event":"test"}"#;
    let sig = sign("s3cret", body);
    assert_eq!(verify("s3cret", body, Some(&sig)), Ok(()));
    assert_eq!(verify("s3cret", body, Some(&format!("  {sig}\t"))), Ok(()));
    assert_eq!(verify("s3cret", body, None), Err(SignatureError::Missing));
    assert_eq!(
        verify("s3cret", body, Some("")),
        Err(SignatureError::Missing)
    );
    assert_eq!(
        verify("s3cret", body, Some("not base64!")),
        Err(SignatureError::MalformedBase64)
    );
    assert_eq!(
        verify("s3cret", body, Some("AAAA")),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify("other", body, Some(&sig)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        SignatureError::Missing.to_string(),
        "X-SuperOffice-Signature header is missing"
    );
}

#[test]
fn standard_base64_with_padding() {
    let sig = sign("secret", b"hello");
    assert_eq!(sig.len(), 44);
    assert!(sig.ends_with('='));
    // A known value (python: base64.b64encode(hmac.new(b"secret", b"hello", sha256).digest())).
    assert_eq!(sig, "iKqz7ejTrflNJquQ07r9SiCDBww7zOnAFO4EpEOEfAs=");
    // The key is the UTF-8 bytes of the secret.
    assert_eq!(sign("sécret", b"x"), sign("s\u{e9}cret", b"x"));
    assert_ne!(sign("sécret", b"x"), sign("se\u{301}cret", b"x"));
}

proptest! {
    #[test]
    fn sign_verify_round_trip(secret in "\\PC{0,100}", body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let sig = sign(&secret, &body);
        prop_assert_eq!(verify(&secret, &body, Some(&sig)), Ok(()));
    }

    #[test]
    fn any_flipped_body_bit_fails(secret in "\\PC{0,40}", body in proptest::collection::vec(any::<u8>(), 1..512), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let sig = sign(&secret, &body);
        let mut tampered = body.clone();
        let i = at.index(tampered.len());
        tampered[i] ^= 1 << bit;
        prop_assert_eq!(verify(&secret, &tampered, Some(&sig)), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_flipped_signature_bit_fails(secret in "\\PC{0,40}", body in proptest::collection::vec(any::<u8>(), 0..512), at in 0usize..32, bit in 0u8..8) {
        let sig = sign(&secret, &body);
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&sig).unwrap();
        raw[at] ^= 1 << bit;
        let tampered = base64::engine::general_purpose::STANDARD.encode(raw);
        prop_assert_eq!(verify(&secret, &body, Some(&tampered)), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_different_secret_fails(a in "\\PC{0,40}", b in "\\PC{0,40}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assume!(a != b);
        prop_assert_eq!(verify(&b, &body, Some(&sign(&a, &body))), Err(SignatureError::Mismatch));
    }
}
