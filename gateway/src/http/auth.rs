//! The caller check of the management API. Keys (`hs_live_` or `hs_test_` followed by 64 hex
//! digits) are sent as `X-API-Key` (or `Authorization: Bearer`) and looked up in [`ApiKeys`]
//! (hashes only). In a cluster, any other bearer token is taken to the [`TokenAuthority`]
//! (TokenReview). The [`Caller`] goes into the request's extensions; a handler asks for the
//! [`Scope`] of what it does with the [`Allowed`] extractor. A client address that sends
//! missing or wrong credentials too often is refused (429) for a while without them being
//! looked at; keys and tokens never reach a log, a metric or an answer.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::error::ApiError;
use crate::access::{Action, Caller, TokenAuthority};
pub use crate::access::{ApiKeys, BadKey, Scope};
use crate::ingest::ipfilter;
use crate::metrics::Metrics;
use crate::throttle::{retry_after_seconds, ClientThrottle};

/// Failed authentications one client address may make per minute before it is refused.
pub const FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(20).expect("20 is not zero");

/// Tokens longer than this are refused without a review (a ServiceAccount token is about
/// 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the caller check needs: the keys, the token authority (in a cluster), each client's
/// failure budget, and where to count.
#[derive(Clone)]
pub struct ApiAuth {
    /// The accepted keys.
    pub keys: ApiKeys,
    /// Who checks bearer tokens that are not keys (in a cluster).
    pub tokens: Option<Arc<dyn TokenAuthority>>,
    /// Failed authentications per client address.
    pub failures: Arc<ClientThrottle>,
    /// Peers allowed to set the client address with `X-Forwarded-For`.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Where failures and refusals are counted.
    pub metrics: Metrics,
}

impl ApiAuth {
    /// The caller check for `keys` and `tokens`, with a fresh failure budget per client.
    pub fn new(
        keys: ApiKeys,
        tokens: Option<Arc<dyn TokenAuthority>>,
        trusted_proxies: Arc<[IpNet]>,
        metrics: Metrics,
    ) -> ApiAuth {
        ApiAuth {
            keys,
            tokens,
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

/// Middleware: refuses requests without an accepted key or token, and, without looking at
/// them, requests from a client address that has failed too often lately. An accepted request
/// carries its [`Caller`] in its extensions.
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
    match check(&auth, request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
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

/// The caller when its credentials are accepted; else the answer, and whether it counts as a
/// failed authentication (not when the API is disabled, nor when the Kubernetes API cannot be
/// asked).
async fn check(auth: &ApiAuth, headers: &HeaderMap) -> Result<Caller, (ApiError, bool)> {
    if auth.keys.is_empty() && auth.tokens.is_none() {
        return Err((disabled(), false));
    }
    let refused = |message: &str| {
        Err((
            ApiError::new(StatusCode::UNAUTHORIZED, message.to_owned()),
            true,
        ))
    };
    // A key, from either header.
    let as_key = |key: Option<&str>| match key.and_then(|k| auth.keys.scope_of(k)) {
        Some(scope) => Ok(Caller::Key(scope)),
        None => refused("invalid API key"),
    };
    if let Some(key) = headers.get("x-api-key") {
        return as_key(key.to_str().ok());
    }
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return refused("missing X-API-Key header (or Authorization: Bearer with a key or, in a cluster, a ServiceAccount token)");
    };
    if crate::access::well_formed(token) {
        return as_key(Some(token));
    }
    let Some(authority) = &auth.tokens else {
        return refused("invalid API key (ServiceAccount tokens are accepted only by a gateway running in a cluster)");
    };
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return refused("invalid bearer token");
    }
    match authority.authenticate(token).await {
        Ok(Some(identity)) => Ok(Caller::Account {
            identity,
            authority: authority.clone(),
        }),
        Ok(None) => refused("invalid bearer token: the Kubernetes API does not accept it (expired, revoked or not a ServiceAccount token)"),
        Err(e) => Err((unavailable(&e), false)),
    }
}

fn unavailable(e: &crate::access::Unavailable) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot check the caller's token now: {e}"),
    )
}

/// What a handler does, as a type: `Allowed<ReadEvents>` in its arguments gives the scope in
/// which the caller may read events.
pub trait Permission: Send + Sync + 'static {
    /// The action.
    const ACTION: Action;
}

/// Reading events.
pub struct ReadEvents;
impl Permission for ReadEvents {
    const ACTION: Action = Action::READ_EVENTS;
}

/// Reading attempts, circuits and live deliveries.
pub struct ReadDeliveries;
impl Permission for ReadDeliveries {
    const ACTION: Action = Action::READ_DELIVERIES;
}

/// Retrying and resetting circuits.
pub struct OperateDeliveries;
impl Permission for OperateDeliveries {
    const ACTION: Action = Action::OPERATE_DELIVERIES;
}

/// Publishing to topics.
pub struct Publish;
impl Permission for Publish {
    const ACTION: Action = Action::PUBLISH;
}

/// The [`Scope`] in which the request's caller may do `P`'s action.
pub struct Allowed<P>(pub Scope, pub PhantomData<P>);

impl<S: Send + Sync, P: Permission> FromRequestParts<S> for Allowed<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "not authenticated".to_owned())
        })?;
        let scope = caller.scope(P::ACTION).await.map_err(|e| unavailable(&e))?;
        Ok(Allowed(scope, PhantomData))
    }
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "the management API is disabled: no API keys are configured (set HOOKSTREAM_API_KEYS, or in a cluster add a Secret labelled hookstream.io/api-key=true)"
            .to_owned(),
    )
}
