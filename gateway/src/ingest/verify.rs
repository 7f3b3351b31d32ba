//! Inbound signature verification: decides whether a request was signed by a holder of one of
//! a Source's secrets.
//!
//! Two families are supported. `hmac-sha256` and `hmac-sha1` sign the raw body, and the
//! signature header carries the MAC in hex or base64, optionally behind a prefix such as
//! `sha256=`. `standard-webhooks` (standardwebhooks.com) signs `{id}.{timestamp}.{body}` with
//! HMAC-SHA256 and rejects timestamps outside the tolerance, which stops replays. Every MAC is
//! compared in constant time, every configured secret is tried (key rotation), and errors say
//! what is wrong without revealing a secret or a signature, so they can be sent back to the
//! caller as-is.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hookstream_crds::config::{SecretValue, VerificationConfig};
use hookstream_crds::v1alpha1::{SignatureEncoding, VerificationType};
use http::HeaderMap;
use subtle::ConstantTimeEq;

mod providers;

/// Base64 decoding that accepts the standard alphabet with or without padding.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 decoding that accepts the URL-safe alphabet with or without padding.
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a request failed verification. The messages are safe to return to the caller: they
/// never contain a secret, the expected signature or the received one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing signature header {0}")]
    MissingHeader(String),
    /// A header is present but cannot be parsed.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// The signature is well formed but was not made with any configured secret over this
    /// request.
    #[error("signature does not match")]
    Mismatch,
    /// The signed timestamp is further from now than the tolerance. A negative age is a
    /// timestamp in the future.
    #[error("{}", stale_message(*age_seconds, *tolerance_seconds))]
    Stale {
        /// Seconds between the signed timestamp and now.
        age_seconds: i64,
        /// Largest accepted age or skew, in seconds.
        tolerance_seconds: u64,
    },
}

impl VerifyError {
    /// A short label for metrics: `missing`, `malformed`, `mismatch` or `stale`.
    pub fn category(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing",
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Mismatch => "mismatch",
            VerifyError::Stale { .. } => "stale",
        }
    }
}

fn stale_message(age_seconds: i64, tolerance_seconds: u64) -> String {
    if age_seconds < 0 {
        format!(
            "timestamp is {} s in the future; tolerance is {tolerance_seconds} s",
            age_seconds.unsigned_abs()
        )
    } else {
        format!("timestamp is {age_seconds} s old; tolerance is {tolerance_seconds} s")
    }
}

/// Checks the signature of a request against `config`. `body` is the raw body exactly as
/// received and `now_unix` the current time in unix seconds (used by schemes that sign a
/// timestamp). For schemes that sign the request URL (Twilio) use [`verify_at`].
pub fn verify(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    verify_at(config, headers, body, "", now_unix)
}

/// [`verify`] for a request whose full URL, as the sender called it, is `url`.
pub fn verify_at(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    url: &str,
    now_unix: i64,
) -> Result<(), VerifyError> {
    match config.scheme {
        VerificationType::HmacSha256 => verify_hmac(Hash::Sha256, config, headers, body),
        VerificationType::HmacSha1 => verify_hmac(Hash::Sha1, config, headers, body),
        VerificationType::StandardWebhooks => {
            verify_standard_webhooks(config, headers, body, now_unix)
        }
        VerificationType::Stripe => providers::STRIPE.verify(config, headers, body, now_unix),
        VerificationType::Slack => providers::slack(config, headers, body, now_unix),
        VerificationType::Twilio => providers::twilio(config, headers, body, url),
        VerificationType::Sendgrid => providers::sendgrid(config, headers, body),
        VerificationType::Linear => providers::linear(config, headers, body, now_unix),
        VerificationType::Paddle => providers::PADDLE.verify(config, headers, body, now_unix),
        VerificationType::BasicAuth => providers::basic_auth(config, headers),
    }
}

/// Refuses a signed time further than the tolerance from now, either way.
fn check_timestamp(
    signed_at: i64,
    now_unix: i64,
    tolerance_seconds: u64,
) -> Result<(), VerifyError> {
    let age_seconds = now_unix.saturating_sub(signed_at);
    if age_seconds.unsigned_abs() > tolerance_seconds {
        return Err(VerifyError::Stale {
            age_seconds,
            tolerance_seconds,
        });
    }
    Ok(())
}

/// The value of a header the scheme cannot do without.
fn required<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, VerifyError> {
    header(headers, name)?.ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
}

/// The hash under an HMAC.
#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha1,
}

impl Hash {
    /// MAC length in bytes.
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha1 => 20,
        }
    }

    /// The HMAC of the concatenation of `parts` under `key`.
    fn mac(self, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
            let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
            for part in parts {
                mac.update(part);
            }
            Some(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Hash::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
            Hash::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        }
    }
}

/// Whether any candidate signature equals the MAC of `parts` under any secret, compared in
/// constant time.
fn any_matches(
    hash: Hash,
    secrets: &[SecretValue],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> bool {
    secrets.iter().any(|secret| {
        hash.mac(secret.expose(), parts).is_some_and(|expected| {
            candidates
                .iter()
                .any(|candidate| bool::from(expected.as_slice().ct_eq(candidate)))
        })
    })
}

/// The first value of header `name`, as text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, VerifyError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| VerifyError::Malformed("header value is not printable ASCII"))
        })
        .transpose()
}

/// `text` without `prefix`, compared case-insensitively.
fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64_STANDARD
        .decode(text)
        .or_else(|_| BASE64_URL_SAFE.decode(text))
        .ok()
}

fn verify_hmac(
    hash: Hash,
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = header(headers, &config.header)?
        .ok_or_else(|| VerifyError::MissingHeader(config.header.clone()))?
        .trim();
    let text = match &config.prefix {
        Some(prefix) => strip_prefix_ignore_case(value, prefix).ok_or(VerifyError::Malformed(
            "signature lacks the required prefix",
        ))?,
        None => ["sha256=", "sha1="]
            .iter()
            .find_map(|prefix| strip_prefix_ignore_case(value, prefix))
            .unwrap_or(value),
    };
    let received = match config.encoding {
        Some(SignatureEncoding::Hex) => {
            hex::decode(text).map_err(|_| VerifyError::Malformed("signature is not hex"))?
        }
        Some(SignatureEncoding::Base64) => {
            decode_base64(text).ok_or(VerifyError::Malformed("signature is not base64"))?
        }
        None if text.len() == 2 * hash.len() && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hex::decode(text).map_err(|_| VerifyError::Malformed("signature is not hex"))?
        }
        None => decode_base64(text).ok_or(VerifyError::Malformed(
            "signature is neither hex nor base64",
        ))?,
    };
    if any_matches(hash, &config.secrets, &[body], &[received]) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The value of header `primary`, or else of `fallback` (the name Svix uses for the same
/// Standard Webhooks header); when both are absent the error names `primary`.
fn header_or<'h>(
    headers: &'h HeaderMap,
    primary: &str,
    fallback: &str,
) -> Result<&'h str, VerifyError> {
    match header(headers, primary)? {
        Some(value) => Ok(value),
        None => {
            header(headers, fallback)?.ok_or_else(|| VerifyError::MissingHeader(primary.to_owned()))
        }
    }
}

fn verify_standard_webhooks(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let id = header_or(headers, "webhook-id", "svix-id")?;
    let timestamp = header_or(headers, "webhook-timestamp", "svix-timestamp")?;
    let signatures = header_or(headers, &config.header, "svix-signature")?;

    let signed_at: i64 = timestamp
        .parse()
        .map_err(|_| VerifyError::Malformed("timestamp is not a unix time in seconds"))?;
    check_timestamp(signed_at, now_unix, config.tolerance_seconds)?;

    let v1: Vec<&str> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .collect();
    if v1.is_empty() {
        return Err(VerifyError::Malformed(
            "no v1 signature in the signature header",
        ));
    }
    let candidates: Vec<Vec<u8>> = v1.into_iter().filter_map(decode_base64).collect();
    let parts = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    if any_matches(Hash::Sha256, &config.secrets, &parts, &candidates) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"event":"push","id":42}"#;

    fn secrets(keys: &[&[u8]]) -> Vec<SecretValue> {
        keys.iter().map(|k| SecretValue(k.to_vec())).collect()
    }

    fn hmac_config(scheme: VerificationType, header: &str, keys: &[&[u8]]) -> VerificationConfig {
        VerificationConfig {
            scheme,
            secrets: secrets(keys),
            header: header.to_owned(),
            encoding: None,
            prefix: None,
            tolerance_seconds: 300,
        }
    }

    fn sha256_config(keys: &[&[u8]]) -> VerificationConfig {
        hmac_config(VerificationType::HmacSha256, "x-hub-signature-256", keys)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn sig(hash: Hash, key: &[u8], body: &[u8]) -> Vec<u8> {
        hash.mac(key, &[body]).expect("hmac accepts any key")
    }

    fn check(
        config: &VerificationConfig,
        pairs: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), VerifyError> {
        verify(config, &headers(pairs), body, NOW)
    }

    // --- HMAC schemes -------------------------------------------------------------------

    #[test]
    fn hmac_sha256_known_answer_github_example() {
        // GitHub's documented example for X-Hub-Signature-256.
        let config = sha256_config(&[b"It's a Secret to Everybody"]);
        let value = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            check(&config, &[("x-hub-signature-256", value)], b"Hello, World!"),
            Ok(())
        );
    }

    #[test]
    fn hmac_known_answers_rfc_vectors() {
        // RFC 4231 test case 2 and RFC 2202 test case 2.
        let body = b"what do ya want for nothing?";
        let sha256 = sha256_config(&[b"Jefe"]);
        let hex256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            check(&sha256, &[("x-hub-signature-256", hex256)], body),
            Ok(())
        );
        let sha1 = hmac_config(VerificationType::HmacSha1, "x-hub-signature", &[b"Jefe"]);
        let hex1 = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79";
        assert_eq!(check(&sha1, &[("x-hub-signature", hex1)], body), Ok(()));
    }

    #[test]
    fn hmac_sha256_accepts_every_encoding_and_optional_prefix() {
        let config = sha256_config(&[b"secret"]);
        let mac = sig(Hash::Sha256, b"secret", BODY);
        let lower = hex::encode(&mac);
        let upper = lower.to_uppercase();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&mac);
        let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&mac);
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac);
        for value in [
            lower.clone(),
            upper.clone(),
            b64.clone(),
            b64_nopad,
            b64_url,
            format!("sha256={lower}"),
            format!("SHA256={upper}"),
            format!("sha256={b64}"),
            format!("sha1={lower}"),
            format!("  sha256={lower} "),
        ] {
            assert_eq!(
                check(&config, &[("x-hub-signature-256", &value)], BODY),
                Ok(()),
                "{value}"
            );
        }
    }

    #[test]
    fn hmac_sha1_valid_wrong_missing() {
        let config = hmac_config(VerificationType::HmacSha1, "x-hub-signature", &[b"secret"]);
        let good = format!("sha1={}", hex::encode(sig(Hash::Sha1, b"secret", BODY)));
        assert_eq!(check(&config, &[("x-hub-signature", &good)], BODY), Ok(()));
        let wrong = format!("sha1={}", hex::encode(sig(Hash::Sha1, b"other", BODY)));
        assert_eq!(
            check(&config, &[("x-hub-signature", &wrong)], BODY),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&config, &[], BODY),
            Err(VerifyError::MissingHeader("x-hub-signature".to_owned()))
        );
        // A SHA-256 MAC is not a SHA-1 MAC.
        let sha256 = hex::encode(sig(Hash::Sha256, b"secret", BODY));
        assert!(check(&config, &[("x-hub-signature", &sha256)], BODY).is_err());
    }

    #[test]
    fn hmac_wrong_secret_is_a_mismatch() {
        let config = sha256_config(&[b"secret"]);
        let value = hex::encode(sig(Hash::Sha256, b"not-the-secret", BODY));
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &value)], BODY),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn hmac_missing_header_names_it() {
        let config = sha256_config(&[b"secret"]);
        let err =
            check(&config, &[("x-other", "abc")], BODY).expect_err("verification should fail");
        assert_eq!(
            err,
            VerifyError::MissingHeader("x-hub-signature-256".to_owned())
        );
        assert_eq!(
            err.to_string(),
            "missing signature header x-hub-signature-256"
        );
        assert_eq!(err.category(), "missing");
    }

    #[test]
    fn hmac_body_changed_by_one_byte_fails() {
        let config = sha256_config(&[b"secret"]);
        let value = hex::encode(sig(Hash::Sha256, b"secret", BODY));
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &value)], &tampered),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn hmac_truncated_or_garbage_signatures_fail_without_panic() {
        let config = sha256_config(&[b"secret"]);
        let mac = sig(Hash::Sha256, b"secret", BODY);
        let hex = hex::encode(&mac);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&mac);
        for value in [
            &hex[..63],
            &hex[..62],
            &hex[..40],
            &b64[..42], // `[..43]` only drops the optional padding
            &b64[..20],
            "",
            "sha256=",
            "zz",
            "!!!!",
            "sha256=====",
        ] {
            assert!(
                check(&config, &[("x-hub-signature-256", value)], BODY).is_err(),
                "{value:?}"
            );
        }
        let mut longer = mac.clone();
        longer.push(0);
        let value = hex::encode(longer);
        assert!(check(&config, &[("x-hub-signature-256", &value)], BODY).is_err());
    }

    #[test]
    fn hmac_key_rotation_accepts_any_secret() {
        let config = sha256_config(&[b"old", b"new"]);
        for key in [&b"old"[..], b"new"] {
            let value = hex::encode(sig(Hash::Sha256, key, BODY));
            assert_eq!(
                check(&config, &[("x-hub-signature-256", &value)], BODY),
                Ok(())
            );
        }
        let value = hex::encode(sig(Hash::Sha256, b"retired", BODY));
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &value)], BODY),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn hmac_without_secrets_never_passes() {
        let config = sha256_config(&[]);
        let value = hex::encode(sig(Hash::Sha256, b"", BODY));
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &value)], BODY),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn hmac_explicit_prefix_is_required() {
        let mut config = sha256_config(&[b"secret"]);
        config.header = "x-signature".to_owned();
        config.prefix = Some("v0=".to_owned());
        let hex = hex::encode(sig(Hash::Sha256, b"secret", BODY));
        assert_eq!(
            check(&config, &[("x-signature", &format!("v0={hex}"))], BODY),
            Ok(())
        );
        assert_eq!(
            check(&config, &[("x-signature", &format!("V0={hex}"))], BODY),
            Ok(())
        );
        let err =
            check(&config, &[("x-signature", &hex)], BODY).expect_err("verification should fail");
        assert_eq!(err.category(), "malformed");
        assert!(check(&config, &[("x-signature", &format!("sha256={hex}"))], BODY).is_err());
        assert!(check(&config, &[("x-signature", "v")], BODY).is_err());
    }

    #[test]
    fn hmac_explicit_hex_encoding_refuses_base64() {
        let mut config = sha256_config(&[b"secret"]);
        config.encoding = Some(SignatureEncoding::Hex);
        let mac = sig(Hash::Sha256, b"secret", BODY);
        let hex = hex::encode(&mac);
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &hex)], BODY),
            Ok(())
        );
        assert_eq!(
            check(
                &config,
                &[("x-hub-signature-256", &hex.to_uppercase())],
                BODY
            ),
            Ok(())
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&mac);
        assert_eq!(
            check(&config, &[("x-hub-signature-256", &b64)], BODY),
            Err(VerifyError::Malformed("signature is not hex"))
        );
    }

    #[test]
    fn hmac_explicit_base64_encoding_refuses_hex() {
        let mut config = sha256_config(&[b"secret"]);
        config.encoding = Some(SignatureEncoding::Base64);
        let mac = sig(Hash::Sha256, b"secret", BODY);
        for value in [
            base64::engine::general_purpose::STANDARD.encode(&mac),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&mac),
            base64::engine::general_purpose::URL_SAFE.encode(&mac),
        ] {
            assert_eq!(
                check(&config, &[("x-hub-signature-256", &value)], BODY),
                Ok(()),
                "{value}"
            );
        }
        assert!(check(
            &config,
            &[("x-hub-signature-256", &hex::encode(&mac))],
            BODY
        )
        .is_err());
    }

    #[test]
    fn hmac_non_ascii_header_is_malformed() {
        let config = sha256_config(&[b"secret"]);
        let mut map = HeaderMap::new();
        map.insert(
            "x-hub-signature-256",
            HeaderValue::from_bytes(b"sha256=\xff\xfe")
                .expect("opaque bytes are a valid header value"),
        );
        assert_eq!(
            verify(&config, &map, BODY, NOW).map_err(|e| e.category()),
            Err("malformed")
        );
    }

    #[test]
    fn error_messages_never_reveal_secrets_or_signatures() {
        let config = sha256_config(&[b"topsecret"]);
        let expected = hex::encode(sig(Hash::Sha256, b"topsecret", BODY));
        let received = hex::encode(sig(Hash::Sha256, b"guess", BODY));
        let err = check(&config, &[("x-hub-signature-256", &received)], BODY)
            .expect_err("verification should fail");
        let text = err.to_string();
        assert_eq!(text, "signature does not match");
        for secret in ["topsecret", expected.as_str(), received.as_str()] {
            assert!(!text.contains(secret) && !format!("{err:?}").contains(secret));
        }
    }

    // --- Standard Webhooks --------------------------------------------------------------

    const SW_KEY_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(SW_KEY_B64)
            .expect("spec key is base64")
    }

    fn sw_config(keys: Vec<Vec<u8>>) -> VerificationConfig {
        VerificationConfig {
            scheme: VerificationType::StandardWebhooks,
            secrets: keys.into_iter().map(SecretValue).collect(),
            header: "webhook-signature".to_owned(),
            encoding: None,
            prefix: None,
            tolerance_seconds: 300,
        }
    }

    fn sw_sign(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
        let ts = ts.to_string();
        let parts = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
        let mac = Hash::Sha256.mac(key, &parts).expect("hmac accepts any key");
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac)
        )
    }

    fn sw_check(
        config: &VerificationConfig,
        pairs: &[(&str, &str)],
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        verify(config, &headers(pairs), body, now)
    }

    fn sw_headers<'a>(ts: &'a str, signature: &'a str) -> [(&'static str, &'a str); 3] {
        [
            ("webhook-id", SW_ID),
            ("webhook-timestamp", ts),
            ("webhook-signature", signature),
        ]
    }

    #[test]
    fn standard_webhooks_known_answer_vector() {
        assert_eq!(sw_sign(&sw_key(), SW_ID, SW_TS, SW_BODY), SW_SIG);
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS),
            Ok(())
        );
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS + 300),
            Ok(())
        );
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS - 300),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_wrong_secret_or_body_is_a_mismatch() {
        let config = sw_config(vec![b"another key".to_vec()]);
        let ts = SW_TS.to_string();
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
        let config = sw_config(vec![sw_key()]);
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), tampered, SW_TS),
            Err(VerifyError::Mismatch)
        );
        // The id and timestamp are signed too.
        let other_id = [
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", SW_SIG),
        ];
        assert_eq!(
            sw_check(&config, &other_id, SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
        let ts2 = (SW_TS + 1).to_string();
        assert_eq!(
            sw_check(&config, &sw_headers(&ts2, SW_SIG), SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn standard_webhooks_missing_headers_are_named() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let all = sw_headers(&ts, SW_SIG);
        for (skip, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .enumerate()
        {
            let pairs: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                sw_check(&config, &pairs, SW_BODY, SW_TS),
                Err(VerifyError::MissingHeader((*name).to_owned()))
            );
        }
    }

    #[test]
    fn standard_webhooks_stale_and_future_timestamps_are_refused() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let err = sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS + 900)
            .expect_err("verification should fail");
        assert_eq!(
            err,
            VerifyError::Stale {
                age_seconds: 900,
                tolerance_seconds: 300
            }
        );
        assert_eq!(
            err.to_string(),
            "timestamp is 900 s old; tolerance is 300 s"
        );
        assert_eq!(err.category(), "stale");
        let err = sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS - 301)
            .expect_err("verification should fail");
        assert_eq!(
            err,
            VerifyError::Stale {
                age_seconds: -301,
                tolerance_seconds: 300
            }
        );
        assert_eq!(
            err.to_string(),
            "timestamp is 301 s in the future; tolerance is 300 s"
        );
        // Extreme values do not overflow.
        let min = i64::MIN.to_string();
        assert_eq!(
            sw_check(&config, &sw_headers(&min, SW_SIG), SW_BODY, NOW).map_err(|e| e.category()),
            Err("stale")
        );
    }

    #[test]
    fn standard_webhooks_checks_the_timestamp_before_the_signature() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let err = sw_check(&config, &sw_headers(&ts, "v1,AAAA"), SW_BODY, SW_TS + 3600)
            .expect_err("verification should fail");
        assert_eq!(err.category(), "stale");
    }

    #[test]
    fn standard_webhooks_non_numeric_timestamp_is_malformed() {
        let config = sw_config(vec![sw_key()]);
        for ts in ["soon", "", "1614265330.5", "0x60"] {
            let err = sw_check(&config, &sw_headers(ts, SW_SIG), SW_BODY, SW_TS)
                .expect_err("verification should fail");
            assert_eq!(err.category(), "malformed", "{ts:?}");
        }
    }

    #[test]
    fn standard_webhooks_any_v1_entry_may_match() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let wrong = sw_sign(b"someone else", SW_ID, SW_TS, SW_BODY);
        let header = format!("{wrong} v1a,{} v1,not*base64 {SW_SIG}", &SW_SIG[3..]);
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, &header), SW_BODY, SW_TS),
            Ok(())
        );
        let header = format!("{wrong} v1,AAAA");
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, &header), SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn standard_webhooks_without_v1_entry_is_malformed() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let v1a = format!("v1a,{}", &SW_SIG[3..]);
        for header in ["", "garbage", v1a.as_str(), &SW_SIG[3..]] {
            let err = sw_check(&config, &sw_headers(&ts, header), SW_BODY, SW_TS)
                .expect_err("verification should fail");
            assert_eq!(err.category(), "malformed", "{header:?}");
        }
    }

    #[test]
    fn standard_webhooks_truncated_signature_fails_without_panic() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        for cut in [3, 4, 10, 30, SW_SIG.len() - 2] {
            let header = &SW_SIG[..cut];
            assert!(
                sw_check(&config, &sw_headers(&ts, header), SW_BODY, SW_TS).is_err(),
                "{header}"
            );
        }
    }

    #[test]
    fn standard_webhooks_key_rotation() {
        let config = sw_config(vec![b"retired key".to_vec(), sw_key()]);
        let ts = SW_TS.to_string();
        assert_eq!(
            sw_check(&config, &sw_headers(&ts, SW_SIG), SW_BODY, SW_TS),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_accepts_svix_header_names() {
        let config = sw_config(vec![sw_key()]);
        let ts = SW_TS.to_string();
        let svix = [
            ("svix-id", SW_ID),
            ("svix-timestamp", ts.as_str()),
            ("svix-signature", SW_SIG),
        ];
        assert_eq!(sw_check(&config, &svix, SW_BODY, SW_TS), Ok(()));
        let stale =
            sw_check(&config, &svix, SW_BODY, SW_TS + 1000).expect_err("verification should fail");
        assert_eq!(stale.category(), "stale");
        // The webhook-* names win when both are present.
        let both = [
            ("webhook-id", SW_ID),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", SW_SIG),
            ("svix-id", "msg_ignored"),
            ("svix-timestamp", "1"),
            ("svix-signature", "v1,AAAA"),
        ];
        assert_eq!(sw_check(&config, &both, SW_BODY, SW_TS), Ok(()));
    }

    #[test]
    fn standard_webhooks_custom_signature_header() {
        let mut config = sw_config(vec![sw_key()]);
        config.header = "x-signature".to_owned();
        let ts = SW_TS.to_string();
        let pairs = [
            ("webhook-id", SW_ID),
            ("webhook-timestamp", ts.as_str()),
            ("x-signature", SW_SIG),
        ];
        assert_eq!(sw_check(&config, &pairs, SW_BODY, SW_TS), Ok(()));
        let pairs = [("webhook-id", SW_ID), ("webhook-timestamp", ts.as_str())];
        assert_eq!(
            sw_check(&config, &pairs, SW_BODY, SW_TS),
            Err(VerifyError::MissingHeader("x-signature".to_owned()))
        );
    }

    #[test]
    fn standard_webhooks_valid_signature_for_other_body() {
        let config = sw_config(vec![b"k".to_vec()]);
        let signature = sw_sign(b"k", "msg_1", NOW, BODY);
        let ts = NOW.to_string();
        let pairs = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", &signature),
        ];
        assert_eq!(sw_check(&config, &pairs, BODY, NOW), Ok(()));
        assert_eq!(
            sw_check(&config, &pairs, b"", NOW),
            Err(VerifyError::Mismatch)
        );
    }
}
