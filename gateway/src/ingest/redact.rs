//! Credential headers: the headers that carry a caller's credentials (`Authorization`,
//! `Cookie`, API-key and token headers). Ingest stores them as `[redacted]`, after the
//! signature check has seen the real values, unless the Source sets
//! `keepCredentialHeaders`; the API never shows them either way.

use axum::http::{HeaderMap, HeaderValue};

/// What a credential header's value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Header names (lowercase) that carry credentials.
const CREDENTIAL_HEADERS: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-api-token",
    "x-apikey",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-amz-security-token",
    "x-csrf-token",
];

/// Name endings of API-key headers beyond the list (`X-Acme-Api-Key`, `Shop-Api-Token`).
const CREDENTIAL_SUFFIXES: [&str; 3] = ["-api-key", "-api-token", "-apikey"];

/// Whether the header `name` (any case) carries credentials.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&name.as_str())
        || CREDENTIAL_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Replaces the value of every credential header of `headers` with [`REDACTED`].
pub fn redact_credentials(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|n| is_credential_header(n.as_str()))
        .cloned()
        .collect();
    for name in names {
        // One value in place of every value the header had.
        headers.insert(name, HeaderValue::from_static(REDACTED));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_redacted_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.append("cookie", HeaderValue::from_static("a=b"));
        headers.append("cookie", HeaderValue::from_static("c=d"));
        headers.insert("x-shop-api-key", HeaderValue::from_static("k"));
        headers.insert("x-hub-signature-256", HeaderValue::from_static("sha256=00"));
        redact_credentials(&mut headers);
        assert_eq!(headers["authorization"], REDACTED);
        assert_eq!(headers.get_all("cookie").iter().count(), 1);
        assert_eq!(headers["cookie"], REDACTED);
        assert_eq!(headers["x-shop-api-key"], REDACTED);
        assert_eq!(headers["x-hub-signature-256"], "sha256=00");
        assert!(is_credential_header("X-Api-Token") && is_credential_header("Api-Key"));
    }
}
