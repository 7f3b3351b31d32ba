//! Providers' own signature schemes, each as the provider's documentation and SDK define it.

use base64::Engine as _;
use hookstream_crds::config::VerificationConfig;
use http::HeaderMap;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::{
    any_matches, check_timestamp, decode_base64, header, required, strip_prefix_ignore_case, Hash,
    VerifyError,
};

/// Hex-decoded candidates; entries that are not hex cannot match and are skipped.
fn hex_candidates<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .filter_map(|v| hex::decode(v.trim()).ok())
        .collect()
}

fn parse_unix(text: &str) -> Result<i64, VerifyError> {
    text.trim()
        .parse()
        .map_err(|_| VerifyError::Malformed("timestamp is not a unix time in seconds"))
}

fn matched(ok: bool) -> Result<(), VerifyError> {
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`: HMAC-SHA256 of `{t}.{body}` with the
/// whole `whsec_...` string as the key. Several `v1` entries appear while Stripe rolls a
/// secret; any may match.
pub const STRIPE: TimedHeader = TimedHeader {
    separator: ',',
    time_key: "t",
    signature_key: "v1",
    joiner: b".",
};

/// `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>...]` over `{ts}:{body}`.
pub const PADDLE: TimedHeader = TimedHeader {
    separator: ';',
    time_key: "ts",
    signature_key: "h1",
    joiner: b":",
};

/// A header carrying a signing time and hex HMAC-SHA256 entries over `{time}{joiner}{body}`,
/// as Stripe (`t=..,v1=..`) and Paddle (`ts=..;h1=..`) send it.
pub struct TimedHeader {
    separator: char,
    time_key: &'static str,
    signature_key: &'static str,
    joiner: &'static [u8],
}

impl TimedHeader {
    /// Checks `config`'s header of this layout over `body`.
    pub fn verify(
        &self,
        config: &VerificationConfig,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let value = required(headers, &config.header)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in value.split(self.separator) {
            match item.trim().split_once('=') {
                Some((k, t)) if k == self.time_key => timestamp = Some(t),
                Some((k, sig)) if k == self.signature_key => signatures.push(sig),
                _ => {}
            }
        }
        let t = timestamp.ok_or(VerifyError::Malformed(
            "no timestamp in the signature header",
        ))?;
        if signatures.is_empty() {
            return Err(VerifyError::Malformed(
                "no signature entry in the signature header",
            ));
        }
        check_timestamp(parse_unix(t)?, now_unix, config.tolerance_seconds)?;
        let parts = [t.as_bytes(), self.joiner, body];
        matched(any_matches(
            Hash::Sha256,
            &config.secrets,
            &parts,
            &hex_candidates(signatures),
        ))
    }
}

/// `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
pub fn slack(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let signature = required(headers, &config.header)?;
    let timestamp = required(headers, "x-slack-request-timestamp")?;
    let hex = strip_prefix_ignore_case(signature.trim(), "v0=")
        .ok_or(VerifyError::Malformed("signature lacks the v0= prefix"))?;
    check_timestamp(parse_unix(timestamp)?, now_unix, config.tolerance_seconds)?;
    let parts = [b"v0:".as_slice(), timestamp.as_bytes(), b":", body];
    matched(any_matches(
        Hash::Sha256,
        &config.secrets,
        &parts,
        &hex_candidates([hex]),
    ))
}

/// `linear-signature: <hex>`, HMAC-SHA256 of the body; the body's `webhookTimestamp`
/// (milliseconds) must be within the tolerance, which stops replays.
pub fn linear(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let signature = required(headers, &config.header)?;
    if !any_matches(
        Hash::Sha256,
        &config.secrets,
        &[body],
        &hex_candidates([signature]),
    ) {
        return Err(VerifyError::Mismatch);
    }
    let sent_ms = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("webhookTimestamp")
                .and_then(serde_json::Value::as_i64)
        })
        .ok_or(VerifyError::Malformed(
            "the body has no numeric webhookTimestamp",
        ))?;
    check_timestamp(sent_ms.div_euclid(1000), now_unix, config.tolerance_seconds)
}

/// `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, of the URL Twilio
/// called followed by each form parameter's name and value in name order. For JSON bodies
/// the URL carries `bodySHA256` (hex SHA-256 of the body) and no parameters are appended.
/// As Twilio's own SDK does, the URL is tried as given, without its port and with the
/// scheme's default port.
pub fn twilio(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
    url: &str,
) -> Result<(), VerifyError> {
    let signature = required(headers, &config.header)?;
    let received =
        decode_base64(signature.trim()).ok_or(VerifyError::Malformed("signature is not base64"))?;
    let parsed =
        url::Url::parse(url).map_err(|_| VerifyError::Malformed("the request URL is unknown"))?;
    let body_hash = parsed
        .query_pairs()
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned());
    let mut params: Vec<(String, String)> = Vec::new();
    match body_hash {
        Some(expected) => {
            let actual = hex::encode(sha2::Sha256::digest(body));
            if !bool::from(
                actual
                    .as_bytes()
                    .ct_eq(expected.to_ascii_lowercase().as_bytes()),
            ) {
                return Err(VerifyError::Mismatch);
            }
        }
        None => {
            let form = header(headers, "content-type")?
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
            if form {
                params = url::form_urlencoded::parse(body).into_owned().collect();
                params.sort();
                params.dedup();
            }
        }
    }
    let mut suffix = String::new();
    for (name, value) in &params {
        suffix.push_str(name);
        suffix.push_str(value);
    }
    let ok = url_variants(url).iter().any(|candidate| {
        let signed = format!("{candidate}{suffix}");
        any_matches(
            Hash::Sha1,
            &config.secrets,
            &[signed.as_bytes()],
            std::slice::from_ref(&received),
        )
    });
    matched(ok)
}

/// `url`, `url` without an explicit port, and `url` with the scheme's default port.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = match authority.rfind(':') {
        Some(i)
            if !authority[i + 1..].is_empty()
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && (!authority.starts_with('[') || authority[..i].ends_with(']')) =>
        {
            &authority[..i]
        }
        _ => authority,
    };
    out.push(format!("{scheme}://{host}{tail}"));
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    out.push(format!("{scheme}://{host}:{default_port}{tail}"));
    out.dedup();
    out
}

/// SendGrid Event Webhook: base64 DER ECDSA P-256 signature in the signature header over
/// `{X-Twilio-Email-Event-Webhook-Timestamp}{body}`, checked with the public keys.
pub fn sendgrid(
    config: &VerificationConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let signature = required(headers, &config.header)?;
    let timestamp = required(headers, "x-twilio-email-event-webhook-timestamp")?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| VerifyError::Malformed("signature is not base64"))?;
    let signature = p256::ecdsa::Signature::from_der(&der)
        .map_err(|_| VerifyError::Malformed("signature is not a DER ECDSA signature"))?;
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    let ok = config.secrets.iter().any(|key| {
        p256::ecdsa::VerifyingKey::from_public_key_der(key.expose())
            .is_ok_and(|key| key.verify(&message, &signature).is_ok())
    });
    matched(ok)
}

/// `Authorization: Basic base64(user:password)` against the configured credentials.
pub fn basic_auth(config: &VerificationConfig, headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = required(headers, &config.header)?;
    let encoded = strip_prefix_ignore_case(value.trim(), "Basic ")
        .ok_or(VerifyError::Malformed("credentials are not Basic"))?;
    let given = decode_base64(encoded.trim())
        .ok_or(VerifyError::Malformed("credentials are not base64"))?;
    matched(config.secrets.iter().fold(false, |found, s| {
        found | bool::from(s.expose().ct_eq(&given))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_add_and_remove_ports() {
        assert_eq!(
            url_variants("https://h.example/a?b=1"),
            vec!["https://h.example/a?b=1", "https://h.example:443/a?b=1"]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:8080/v1/ingest/t/s"),
            vec![
                "http://127.0.0.1:8080/v1/ingest/t/s",
                "http://127.0.0.1/v1/ingest/t/s",
                "http://127.0.0.1:80/v1/ingest/t/s"
            ]
        );
    }
}

#[cfg(test)]
mod robustness {
    use super::super::verify_at;
    use hookstream_crds::config::{SecretValue, VerificationConfig};
    use hookstream_crds::v1alpha1::VerificationType;
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// Garbage in every header a scheme reads is refused with an error, never a panic.
    #[test]
    fn hostile_headers_are_refused_without_panicking() {
        let values = [
            "",
            "=",
            ",",
            ";",
            "t=",
            "v1=",
            "t=1,v1=zz",
            "ts=9999999999999999999999;h1=00",
            "v0=",
            "v0=not-hex",
            "Basic",
            "Basic !!!",
            "Basic Og==",
            "sha256=",
            "MEUCIQ==",
            "t=-1,v1=00",
            "ts=1;h1=",
            "\u{7f}",
        ];
        for scheme in [
            VerificationType::Stripe,
            VerificationType::Slack,
            VerificationType::Twilio,
            VerificationType::Sendgrid,
            VerificationType::Linear,
            VerificationType::Paddle,
            VerificationType::BasicAuth,
        ] {
            let header = hookstream_crds::templates::default_header(scheme);
            let config = VerificationConfig {
                scheme,
                secrets: vec![SecretValue(b"k".to_vec())],
                header: header.to_owned(),
                encoding: None,
                prefix: None,
                tolerance_seconds: 300,
            };
            for value in values {
                let Ok(value) = HeaderValue::from_str(value) else {
                    continue;
                };
                let mut headers = HeaderMap::new();
                for name in [
                    header,
                    "x-slack-request-timestamp",
                    "x-twilio-email-event-webhook-timestamp",
                    "content-type",
                ] {
                    headers.insert(HeaderName::from_static(name), value.clone());
                }
                for (body, url) in [
                    (b"".as_slice(), ""),
                    (
                        br#"{"webhookTimestamp": "soon"}"#.as_slice(),
                        "http://h/x?bodySHA256=00",
                    ),
                    (b"a=1&a=2&b".as_slice(), "not a url"),
                ] {
                    let result = verify_at(&config, &headers, body, url, 1_700_000_000);
                    assert!(result.is_err(), "{scheme:?} accepted {value:?}");
                }
            }
        }
    }
}
