//! The key check of the management API: keys (`hs_live_` or `hs_test_` followed by 64 hex
//! digits) are sent as `X-API-Key` and looked up in [`ApiKeys`] (hashes only). The key's
//! [`Scope`] goes into the request's extensions for the handlers. A client address that sends
//! missing or wrong keys too often is refused (429) for a while without its key being looked
//! at; keys never reach a log, a metric or an answer.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::error::ApiError;
pub use crate::access::{ApiKeys, BadKey, Scope};
use crate::ingest::ipfilter;
use crate::metrics::Metrics;
use crate::throttle::{retry_after_seconds, ClientThrottle};

/// Failed authentications one client address may make per minute before it is refused.
pub const FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(20).expect("20 is not zero");

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
/// key, requests from a client address that has failed too often lately. An accepted
/// request carries the key's [`Scope`] in its extensions.
pub async fn require_key(
    State(auth): State<ApiAuth>,
    mut request: Request,
    next: Next,
) -> Response {
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
    match check_key(&auth.keys, &request) {
        Ok(scope) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Err((refusal, counts)) => {
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

/// The scope of the request's key when it is accepted; else the answer, and whether it
/// counts as a failed authentication (not when the API is disabled for want of keys).
fn check_key(keys: &ApiKeys, request: &Request) -> Result<Scope, (ApiError, bool)> {
    if keys.is_empty() {
        return Err((disabled(), false));
    }
    let given = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok());
    let refusal = match given.map(|key| keys.scope_of(key)) {
        None => "missing X-API-Key header",
        Some(Some(scope)) => return Ok(scope),
        Some(None) => "invalid API key",
    };
    Err((
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
