//! Ingest: turns a request to a Source (or a publish to a Topic) into a stored event with its
//! deliveries.
//!
//! Order of checks: the client address is allowed (403), the client has not failed
//! verification too often lately (429, before any verification work), the body fits (413) and
//! arrives within the read timeout (408), the signature verifies (401; a failure is counted
//! against the client), the Source's rate limit has room (429; only verified requests spend
//! it, so a flood of forged requests cannot lock a genuine sender out), the body matches the
//! schema (422 in reject mode). Credential headers are then redacted (unless the Source keeps
//! them), so filters, dedup, transforms and the store see what is stored. Then the event, its
//! dedup key and one delivery per matching route are committed in one transaction, and only
//! then is the request accepted; deliveries to closed circuits go straight to a worker. The
//! HTTP handlers that answer live in `http::ingest`.

pub mod dedup;
pub mod gate;
pub mod ipfilter;
pub mod redact;
pub mod schema;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::VerificationType;
use ipnet::IpNet;
use serde_json::Value;
use tracing::{debug, warn};

use crate::clock::now_ms;
use crate::config::{Route, RuntimeSource};
use crate::delivery::{Admission, Dispatcher, Work};
use crate::ids;
use crate::pipeline::event::{query_pairs, HOPS_HEADER};
use crate::pipeline::filter::EventView;
use crate::pipeline::route;
use crate::store::{
    DedupClaim, InsertOutcome, Job, NewDelivery, NewEvent, SharedEvent, SharedStore,
};
use crate::throttle::ClientThrottle;

/// Prefix of the stored source name of events published to a Topic.
pub const TOPIC_PREFIX: &str = "topic:";

/// The request as ingest and publish receive it.
pub struct Incoming {
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
}

impl<S: Send + Sync> FromRequest<S> for Incoming {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Incoming {
            peer,
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }
}

/// Why a request was not accepted. Messages never carry secrets.
#[derive(Debug)]
pub enum Rejection {
    /// No such Source or Topic.
    NotFound {
        /// `source` or `topic`.
        what: &'static str,
        /// Its key.
        key: ObjectKey,
    },
    /// The client address is not allowed.
    Forbidden {
        /// The client.
        client: IpAddr,
        /// The Source.
        source: ObjectKey,
    },
    /// Over the Source's rate limit.
    RateLimited {
        /// The Source.
        source: ObjectKey,
        /// Its limit.
        per_second: u32,
        /// When a request may be accepted again.
        retry_in_seconds: u64,
    },
    /// The client failed verification too often lately; it is refused without verifying.
    Throttled {
        /// The client.
        client: IpAddr,
        /// When a request may be verified again.
        retry_in_seconds: u64,
    },
    /// The body did not arrive whole within the read timeout.
    BodyTimeout {
        /// The timeout in seconds.
        seconds: f64,
    },
    /// The body is over the limit.
    TooLarge {
        /// The Source.
        source: ObjectKey,
        /// The limit in bytes.
        limit: usize,
    },
    /// The signature does not verify.
    Unauthorized(verify::VerifyError),
    /// The body fails the Source's schema (reject mode).
    Invalid {
        /// The Source.
        source: ObjectKey,
        /// The errors, `path` and `message` each.
        errors: Value,
    },
    /// The event could not be stored.
    Unavailable,
    /// The request has passed through more gateways than the limit (`X-Hookstream-Hops`).
    LoopDetected {
        /// The Source.
        source: ObjectKey,
        /// Hops the request carried.
        hops: u32,
        /// The gateway's limit.
        limit: u32,
    },
}

impl Rejection {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotFound { .. } => StatusCode::NOT_FOUND,
            Rejection::Forbidden { .. } => StatusCode::FORBIDDEN,
            Rejection::RateLimited { .. } | Rejection::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Rejection::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::LoopDetected { .. } => StatusCode::LOOP_DETECTED,
        }
    }

    /// The outcome label of the ingest metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::NotFound { .. } => "not_found",
            Rejection::Forbidden { .. } => "forbidden",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::Throttled { .. } => "throttled",
            Rejection::BodyTimeout { .. } => "body_timeout",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::Unauthorized(_) => "unauthorized",
            Rejection::Invalid { .. } => "invalid",
            Rejection::Unavailable => "unavailable",
            Rejection::LoopDetected { .. } => "loop_detected",
        }
    }

    /// What to tell the sender.
    pub fn message(&self) -> String {
        match self {
            Rejection::NotFound { what, key } => format!("{what} {key} not found"),
            Rejection::Forbidden { client, source } => {
                format!("client address {client} is not allowed to send to source {source}")
            }
            Rejection::RateLimited {
                source,
                per_second,
                retry_in_seconds,
            } => format!(
                "source {source} accepts {per_second} requests per second; retry in {retry_in_seconds} s"
            ),
            Rejection::Throttled {
                client,
                retry_in_seconds,
            } => format!(
                "too many requests from {client} failed signature verification; retry in {retry_in_seconds} s"
            ),
            Rejection::BodyTimeout { seconds } => {
                format!("the request body was not received within {seconds} s")
            }
            Rejection::TooLarge { source, limit } => {
                format!("request body is larger than the {limit} bytes source {source} accepts")
            }
            Rejection::Unauthorized(e) => format!("signature verification failed: {e}"),
            Rejection::Invalid { source, .. } => {
                format!("request body does not match the schema of source {source}")
            }
            Rejection::Unavailable => "event storage is unavailable; retry later".to_owned(),
            Rejection::LoopDetected { source, hops, limit } => format!(
                "the request has made {hops} hops through gateways ({HOPS_HEADER}), over the limit of {limit} for source {source}: a Connection probably delivers back into a gateway"
            ),
        }
    }
}

/// What ingest needs from the rest of the gateway.
#[derive(Clone)]
pub struct Ingest {
    /// Where events go.
    pub store: SharedStore,
    /// Hand-off of new deliveries to workers.
    pub dispatcher: Dispatcher,
    /// Peers allowed to set the client address with `X-Forwarded-For`.
    pub trusted_proxies: Arc<[IpNet]>,
    /// The gateway's body limit (a Source may set a lower one) and body read timeout.
    pub body: gate::BodyLimits,
    /// Each client's budget of failed verifications.
    pub failures: Arc<ClientThrottle>,
    /// Most hops a request may carry (`X-Hookstream-Hops`); over it, 508.
    pub max_hops: u32,
}

/// An accepted request.
#[derive(Debug)]
pub struct Accepted {
    /// The stored event, or the earlier one for a duplicate.
    pub event_id: String,
    /// When it was received, unix ms.
    pub received_at: i64,
    /// The request repeated an earlier one; nothing was stored.
    pub duplicate: bool,
    /// Schema errors in warn mode.
    pub validation_errors: Option<Value>,
}

/// Stores the request as an event of `target`, stored under the source name `stored_name`.
pub async fn accept(
    ingest: &Ingest,
    target: &RuntimeSource,
    stored_name: String,
    incoming: Incoming,
) -> Result<Accepted, Rejection> {
    let Incoming {
        peer,
        method,
        uri,
        mut headers,
        body,
    } = incoming;
    let client = ipfilter::client_ip(peer.ip(), &headers, &ingest.trusted_proxies);
    gate::check_address(target, client)?;
    gate::check_hops(target, &headers, ingest.max_hops)?;
    gate::check_failures(&ingest.failures, client)?;
    let body = gate::read_body(target, ingest.body, &headers, body).await?;
    let now = now_ms();
    verify_signature(ingest, target, &headers, &uri, peer, &body, now).inspect_err(|_| {
        ingest.failures.failed(client);
    })?;
    gate::check_rate(target)?;
    if !target.config.keep_credential_headers {
        redact::redact_credentials(&mut headers);
    }
    // Parsing is skipped when nothing looks at the body: most of ingest's cost per event.
    let parsed = target
        .needs_body
        .then(|| schema::parse_json(&body))
        .flatten();
    let validation_errors = schema::validate(target, parsed.as_ref())?;
    let request = Checked {
        method,
        uri,
        headers,
        body,
        source_ip: client.to_string(),
        parsed,
    };
    let routes = request.matching_routes(target);
    let dedup = target.config.dedup.as_ref().and_then(|d| {
        dedup::key(
            d,
            &request.headers,
            &request.body,
            request.parsed.as_ref(),
            now,
        )
    });
    let event = Arc::new(request.into_event(target, stored_name, now, validation_errors.clone()));
    store_and_hand_off(ingest, event, &routes, dedup, now, validation_errors).await
}

fn verify_signature(
    ingest: &Ingest,
    target: &RuntimeSource,
    headers: &HeaderMap,
    uri: &Uri,
    peer: SocketAddr,
    body: &Bytes,
    now: i64,
) -> Result<(), Rejection> {
    let Some(verification) = &target.config.verification else {
        return Ok(());
    };
    // Only schemes that sign the URL need it rebuilt as the sender called it.
    let url = if verification.scheme == VerificationType::Twilio {
        request_url(headers, uri, peer, &ingest.trusted_proxies)
    } else {
        String::new()
    };
    verify::verify_at(verification, headers, body, &url, now / 1000).map_err(|e| {
        // Every verification failure counts as `unauthorized` in the ingest metric (its
        // documented outcome set); the finer category goes to the log.
        debug!(source = %target.config.key, category = e.category(), "signature verification failed");
        Rejection::Unauthorized(e)
    })
}

/// A request past the gate, verification and the schema.
struct Checked {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    source_ip: String,
    parsed: Option<Value>,
}

impl Checked {
    fn matching_routes(&self, target: &RuntimeSource) -> Vec<Arc<Route>> {
        let query = query_pairs(self.uri.query().unwrap_or_default());
        let content_type = content_type(&self.headers);
        let view = EventView {
            body: self.parsed.as_ref(),
            headers: &self.headers,
            query: &query,
            method: self.method.as_str(),
            content_type: content_type.as_deref(),
            source_ip: &self.source_ip,
        };
        route::matching(&target.routes, &view)
            .into_iter()
            .cloned()
            .collect()
    }

    fn into_event(
        self,
        target: &RuntimeSource,
        stored_name: String,
        now: i64,
        validation_errors: Option<Value>,
    ) -> NewEvent {
        NewEvent {
            id: ids::event(),
            namespace: target.config.key.namespace.clone(),
            source: stored_name,
            method: self.method.as_str().to_owned(),
            path: self.uri.path().to_owned(),
            query: self.uri.query().unwrap_or_default().to_owned(),
            content_type: content_type(&self.headers),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: self.body,
            source_ip: self.source_ip,
            received_at: now,
            validation_errors,
        }
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Commits the event with one delivery per route, then hands the deliveries that were
/// committed as claimed to workers. Deliveries to destinations whose circuit is not closed,
/// whose lane is full, or that have deliveries waiting already, queue.
///
/// With deliveries, runs as a task of its own: a sender that hangs up while its event is
/// being written does not stop the hand-off, so nothing stored is left claimed but not
/// started.
async fn store_and_hand_off(
    ingest: &Ingest,
    event: SharedEvent,
    routes: &[Arc<Route>],
    dedup: Option<DedupClaim>,
    now: i64,
    validation_errors: Option<Value>,
) -> Result<Accepted, Rejection> {
    let mut hand_offs = Vec::with_capacity(routes.len());
    let mut deliveries = Vec::with_capacity(routes.len());
    for r in routes {
        let key = ObjectKey::new(r.namespace.clone(), r.destination.clone());
        let hand_off = ingest.dispatcher.hand_off(&key, now);
        deliveries.push(route::delivery(r, hand_off.as_ref().map(|h| h.lease_until)));
        hand_offs.push(hand_off.map(|h| h.ticket));
    }
    let nothing_to_start = routes.is_empty();
    let ingest = ingest.clone();
    let task = async move {
        let outcome = ingest
            .store
            .insert(event.clone(), deliveries.clone(), dedup)
            .await;
        if let Ok(InsertOutcome::Stored) = outcome {
            for (d, ticket) in deliveries.into_iter().zip(hand_offs) {
                let key = ObjectKey::new(event.namespace.clone(), d.destination.clone());
                match ticket {
                    Some(ticket) => ingest.dispatcher.start(Work {
                        job: new_job(&event, d),
                        event: event.clone(),
                        admission: Admission::Ticket(ticket),
                        probe: false,
                    }),
                    None => ingest.dispatcher.queued(key, now),
                }
            }
        }
        (event, outcome)
    };
    let (event, outcome) = if nothing_to_start {
        // No delivery to start: a sender that hangs up strands nothing by ending the wait.
        task.await
    } else {
        tokio::spawn(task)
            .await
            .map_err(|_| Rejection::Unavailable)?
    };
    match outcome {
        Ok(InsertOutcome::Stored) => Ok(Accepted {
            event_id: event.id.clone(),
            received_at: now,
            duplicate: false,
            validation_errors,
        }),
        Ok(InsertOutcome::Duplicate { event_id }) => {
            debug!(source = %event.source, event_id = %event_id, "duplicate event");
            Ok(Accepted {
                event_id,
                received_at: now,
                duplicate: true,
                validation_errors: None,
            })
        }
        Err(e) => {
            warn!(error = %crate::store::error_chain(&e), namespace = %event.namespace, source = %event.source, "cannot store event");
            Err(Rejection::Unavailable)
        }
    }
}

fn new_job(event: &NewEvent, d: NewDelivery) -> Job {
    Job {
        delivery_id: d.id,
        event_id: event.id.clone(),
        namespace: event.namespace.clone(),
        destination: d.destination,
        route_kind: d.route_kind,
        route: d.route,
        // Stored as claimed: the claim is its first attempt.
        attempts: 1,
        round_attempts: 1,
    }
}

/// The URL the sender called: `X-Forwarded-Proto`/`X-Forwarded-Host` count only from a
/// trusted proxy; otherwise `http` and the `Host` header.
fn request_url(headers: &HeaderMap, uri: &Uri, peer: SocketAddr, trusted: &[IpNet]) -> String {
    let from_proxy = trusted.iter().any(|n| n.contains(&peer.ip()));
    let forwarded = |name: &str| {
        from_proxy
            .then(|| headers.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = forwarded("x-forwarded-proto").unwrap_or("http");
    let host = forwarded("x-forwarded-host")
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}
