//! API keys: `hs_live_` or `hs_test_` followed by 64 hex digits, sent as `X-API-Key`. Only
//! their SHA-256 is kept in memory. A client address that sends missing or wrong keys too
//! often is refused (429) for a while without its key being looked at; keys never reach a
//! log, a metric or an answer.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::ingest::ipfilter;
use crate::metrics::Metrics;
use crate::throttle::{retry_after_seconds, ClientThrottle};

/// Failed authentications one client address may make per minute before it is refused.
pub const FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(20).expect("20 is not zero");

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

/// What the key check needs: the keys, each client's failure budget, and where to count.
#[derive(Clone)]
pub struct ApiAuth {
    /// The accepted keys.
    pub keys: ApiKeys,
    /// Failed authentications per client address.
    pub failures: Arc<ClientThrottle>,
    /// Peers allowed to set the client address with `X-Forwarded-For`.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Where failures and refusals are counted.
    pub metrics: Metrics,
}

impl ApiAuth {
    /// The key check for `keys`, with a fresh failure budget per client.
    pub fn new(keys: ApiKeys, trusted_proxies: Arc<[IpNet]>, metrics: Metrics) -> ApiAuth {
        ApiAuth {
            keys,
            failures: Arc::new(ClientThrottle::per_minute(FAILURES_PER_MINUTE)),
            trusted_proxies,
            metrics,
        }
    }

    fn client(&self, request: &Request) -> Option<IpAddr> {
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        Some(ipfilter::client_ip(
            peer.ip(),
            request.headers(),
            &self.trusted_proxies,
        ))
    }
}

/// Middleware: refuses requests without an accepted `X-API-Key`, and, without looking at the
/// key, requests from a client address that has failed too often lately.
pub async fn require_key(State(auth): State<ApiAuth>, request: Request, next: Next) -> Response {
    let client = auth.client(&request);
    if let Some(wait) = client.and_then(|c| auth.failures.check(c).err()) {
        auth.metrics.api_auth_throttled.inc();
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; retry later".to_owned(),
        )
        .with_header("retry-after", retry_after_seconds(wait).to_string())
        .into_response();
    }
    let refusal = check_key(&auth.keys, &request);
    match refusal {
        None => next.run(request).await,
        Some((refusal, counts)) => {
            if counts {
                auth.metrics.api_auth_failures.inc();
                if let Some(client) = client {
                    auth.failures.failed(client);
                }
            }
            refusal.into_response()
        }
    }
}

/// `None` when the request carries an accepted key; else the answer, and whether it counts as
/// a failed authentication (not when the API is disabled for want of keys).
fn check_key(keys: &ApiKeys, request: &Request) -> Option<(ApiError, bool)> {
    let given = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok());
    let refusal = match given {
        _ if keys.is_empty() => return Some((disabled(), false)),
        None => "missing X-API-Key header",
        Some(key) if keys.accepts(key) => return None,
        Some(_) => "invalid API key",
    };
    Some((
        ApiError::new(StatusCode::UNAUTHORIZED, refusal.to_owned()),
        true,
    ))
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "the management API is disabled: no API keys are configured (set HOOKSTREAM_API_KEYS, or in a cluster add a Secret labelled hookstream.io/api-key=true)"
            .to_owned(),
    )
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
