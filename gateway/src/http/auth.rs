//! API keys: `hs_live_` or `hs_test_` followed by 64 hex digits, sent as `X-API-Key`. Only
//! their SHA-256 is kept in memory.

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// A key that is not of the documented form.
#[derive(Debug, thiserror::Error)]
#[error("API key number {index} is not of the form hs_live_<64 hex> or hs_test_<64 hex>")]
pub struct BadKey {
    /// 1-based position in the list.
    pub index: usize,
}

/// The accepted keys, as hashes. Replaceable at run time (keys from Secrets in a cluster).
#[derive(Clone, Default)]
pub struct ApiKeys {
    hashes: Arc<RwLock<Vec<[u8; 32]>>>,
}

impl ApiKeys {
    /// Parses a comma-separated list of keys.
    pub fn parse(list: &str) -> Result<ApiKeys, BadKey> {
        let keys = ApiKeys::default();
        let mut hashes = Vec::new();
        for (i, key) in list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            if !well_formed(key) {
                return Err(BadKey { index: i + 1 });
            }
            hashes.push(hash(key));
        }
        keys.replace(hashes);
        Ok(keys)
    }

    /// Replaces the accepted hashes.
    pub fn replace(&self, hashes: Vec<[u8; 32]>) {
        *self.hashes.write().unwrap_or_else(|p| p.into_inner()) = hashes;
    }

    /// The accepted hashes.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        self.hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Whether `key` is accepted (constant time in the key's hash).
    pub fn accepts(&self, key: &str) -> bool {
        let candidate = hash(key);
        let hashes = self.hashes.read().unwrap_or_else(|p| p.into_inner());
        hashes
            .iter()
            .fold(false, |found, h| found | bool::from(h.ct_eq(&candidate)))
    }
}

/// The hash of `key` when it is of the documented form.
pub fn hash_if_valid(key: &str) -> Option<[u8; 32]> {
    well_formed(key).then(|| hash(key))
}

fn well_formed(key: &str) -> bool {
    let rest = key
        .strip_prefix("hs_live_")
        .or_else(|| key.strip_prefix("hs_test_"));
    rest.is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Middleware: refuses requests without an accepted `X-API-Key`.
pub async fn require_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok());
    match given {
        _ if keys.is_empty() => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the management API is disabled: no API keys are configured (set HOOKSTREAM_API_KEYS, or in a cluster add a Secret labelled hookstream.io/api-key=true)"
                .to_owned(),
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-API-Key header".to_owned(),
        )
        .into_response(),
        Some(key) if keys.accepts(key) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key".to_owned()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_keys_of_the_right_form() {
        let good = format!("hs_test_{}", "ab".repeat(32));
        let keys = ApiKeys::parse(&format!(" {good} ,")).unwrap();
        assert!(keys.accepts(&good));
        assert!(!keys.accepts(&format!("hs_live_{}", "ab".repeat(32))));
        assert!(matches!(
            ApiKeys::parse("hs_test_123"),
            Err(BadKey { index: 1 })
        ));
        assert!(ApiKeys::parse("").unwrap().is_empty());
    }
}
