//! The gate around verification: the client address (IP filters), the client's budget of
//! failed verifications, and the body size and read time, each refused before any more work
//! is done; and the Source's request rate, which only verified requests spend.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;

use super::{ipfilter, Rejection};
use crate::config::RuntimeSource;
use crate::pipeline::event::request_hops;
use crate::throttle::{retry_after_seconds, ClientThrottle};

/// Failed verifications one client address may make per minute before it is refused.
pub const FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(120).expect("120 is not zero");

/// A fresh budget of failed verifications per client address.
pub fn failure_budget() -> Arc<ClientThrottle> {
    Arc::new(ClientThrottle::per_minute(FAILURES_PER_MINUTE))
}

/// Refuses a client that has failed verification too often lately, without verifying.
pub fn check_failures(failures: &ClientThrottle, client: IpAddr) -> Result<(), Rejection> {
    failures.check(client).map_err(|wait| Rejection::Throttled {
        client,
        retry_in_seconds: retry_after_seconds(wait),
    })
}

/// Refuses a client address the Source's IP filter does not allow.
pub fn check_address(source: &RuntimeSource, client: IpAddr) -> Result<(), Rejection> {
    match &source.config.ip_filter {
        Some(filter) if !ipfilter::is_allowed(filter, client) => Err(Rejection::Forbidden {
            client,
            source: source.config.key.clone(),
        }),
        _ => Ok(()),
    }
}

/// Refuses a request that has passed through more gateways than `limit`.
pub fn check_hops(
    source: &RuntimeSource,
    headers: &HeaderMap,
    limit: u32,
) -> Result<(), Rejection> {
    let hops = request_hops(headers);
    if hops > limit {
        return Err(Rejection::LoopDetected {
            source: source.config.key.clone(),
            hops,
            limit,
        });
    }
    Ok(())
}

/// Takes one request from the Source's rate limit, or says how long to wait. Called only for
/// requests that verified, so forged requests cannot spend a sender's rate.
pub fn check_rate(source: &RuntimeSource) -> Result<(), Rejection> {
    let (Some(limiter), Some(rate)) = (&source.limiter, source.config.rate_limit) else {
        return Ok(());
    };
    let Err(not_until) = limiter.check() else {
        return Ok(());
    };
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    Err(Rejection::RateLimited {
        source: source.config.key.clone(),
        per_second: rate.per_second,
        retry_in_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    })
}

/// How a body is read: the gateway's size limit and how long the whole body may take.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// The gateway's body limit in bytes (a Source may set a lower one).
    pub max_bytes: u64,
    /// How long reading the whole body may take.
    pub read_timeout: Duration,
}

/// Reads the body, refusing one larger than the Source's limit (or the gateway's, whichever
/// is lower) before reading it when `Content-Length` says so, else as soon as it grows past;
/// and refusing one that has not arrived whole within the read timeout.
pub async fn read_body(
    source: &RuntimeSource,
    limits: BodyLimits,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Rejection> {
    let read = read_limited(source, limits.max_bytes, headers, body);
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .unwrap_or(Err(Rejection::BodyTimeout {
            seconds: limits.read_timeout.as_secs_f64(),
        }))
}

async fn read_limited(
    source: &RuntimeSource,
    gateway_limit: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Rejection> {
    let limit = source
        .config
        .max_body_bytes
        .map_or(gateway_limit, |l| l.min(gateway_limit));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let too_large = || Rejection::TooLarge {
        source: source.config.key.clone(),
        limit,
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}
