//! Key material that needs parsing before use.

use base64::Engine as _;
use p256::pkcs8::DecodePublicKey;

/// The DER (SubjectPublicKeyInfo) of an ECDSA P-256 public key given as base64 DER (as
/// SendGrid shows its verification key) or as PEM; `None` when it is neither.
pub fn ecdsa_p256_public_key(raw: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    p256::PublicKey::from_public_key_der(&der).ok()?;
    Some(der)
}
