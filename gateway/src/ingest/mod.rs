//! Ingest: `ANY /v1/ingest/{namespace}/{source}`.
//!
//! Order of checks: the Source exists (404), the client address is allowed (403), the body
//! fits (413), the signature verifies (401), the body matches the schema (422 in reject
//! mode). Then the event, its dedup key and one delivery per matching route are committed in
//! one transaction, and only then does the sender get its 200.

pub mod ipfilter;
pub mod verify;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hookstream_crds::config::{DedupConfig, ObjectKey};
use hookstream_crds::v1alpha1::{DedupStrategy, SchemaAction, VerificationType};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::api::error::ApiError;
use crate::config::RuntimeSource;
use crate::delivery::{Dispatcher, Work};
use crate::ids;
use crate::pipeline::filter::EventView;
use crate::server::AppState;
use crate::store::{now_ms, DedupClaim, InsertOutcome, Job, NewDelivery, NewEvent};

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

/// The ingest handler.
pub async fn ingest(
    State(app): State<AppState>,
    Path((namespace, source)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    let key = ObjectKey::new(namespace, source);
    let target = app.config.borrow().sources.get(&key).cloned();
    let label = key.to_string();
    match accept(
        &app,
        "source",
        &key,
        target,
        key.name.clone(),
        &label,
        incoming,
    )
    .await
    {
        Ok(a) => {
            let mut body = json!({ "event_id": a.event_id, "source_id": label });
            if a.duplicate {
                body["duplicate"] = Value::Bool(true);
            }
            if let Some(errors) = a.validation_errors {
                body["validation_errors"] = errors;
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/topics/{namespace}/{topic}/publish` (behind the API key): stores the event and
/// fans it out to the Topic's subscriptions. Events published to a topic are listed with the
/// source `topic:{name}`.
pub async fn publish(
    State(app): State<AppState>,
    Path((namespace, topic)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    let key = ObjectKey::new(namespace, topic);
    let target = app.config.borrow().topics.get(&key).cloned();
    let stored = format!("{TOPIC_PREFIX}{}", key.name);
    let label = format!("{}/{stored}", key.namespace);
    match accept(&app, "topic", &key, target, stored, &label, incoming).await {
        Ok(a) => (
            StatusCode::OK,
            Json(json!({
                "event_id": a.event_id,
                "topic": key.to_string(),
                "received_at": crate::api::rfc3339(a.received_at),
            })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Prefix of the stored source name of events published to a Topic.
pub const TOPIC_PREFIX: &str = "topic:";

/// Stores the request as an event of `target` (404 naming the `what` when there is none)
/// and counts the outcome under `label`.
async fn accept(
    app: &AppState,
    what: &str,
    key: &ObjectKey,
    target: Option<Arc<RuntimeSource>>,
    stored_name: String,
    label: &str,
    incoming: Incoming,
) -> Result<Accepted, ApiError> {
    let outcome = match target {
        Some(target) => handle(app, &target, stored_name, incoming).await,
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{what} {key} not found"),
        )),
    };
    let name = match &outcome {
        Ok(Accepted {
            duplicate: true, ..
        }) => "duplicate",
        Ok(_) => "accepted",
        Err(e) => e.outcome(),
    };
    // Unknown names are not labelled: the label set must stay bounded.
    let label = match &outcome {
        Err(e) if e.status == StatusCode::NOT_FOUND => "unknown",
        _ => label,
    };
    app.metrics
        .ingest_requests
        .with_label_values(&[label, name])
        .inc();
    outcome
}

struct Accepted {
    event_id: String,
    received_at: i64,
    duplicate: bool,
    validation_errors: Option<Value>,
}

async fn handle(
    app: &AppState,
    source: &RuntimeSource,
    source_name: String,
    incoming: Incoming,
) -> Result<Accepted, ApiError> {
    let Incoming {
        peer,
        method,
        uri,
        headers,
        body,
    } = incoming;
    let key = &source.config.key;
    let client = ipfilter::client_ip(peer.ip(), &headers, &app.settings.trusted_proxies);
    if let Some(filter) = &source.config.ip_filter {
        if !ipfilter::is_allowed(filter, client) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("client address {client} is not allowed to send to source {key}"),
            ));
        }
    }
    if let (Some(limiter), Some(rate)) = (&source.limiter, source.config.rate_limit) {
        if let Err(not_until) = limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "source {key} accepts {} requests per second; retry in {seconds} s",
                    rate.per_second
                ),
            )
            .with_header("retry-after", seconds.max(1).to_string())
            .with_header("x-ratelimit-limit", rate.per_second.to_string()));
        }
    }
    let limit = source
        .config
        .max_body_bytes
        .map_or(app.settings.max_body_bytes, |l| {
            l.min(app.settings.max_body_bytes)
        });
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(key, limit));
    }
    let body: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(key, limit))?;
    let now = now_ms();
    if let Some(verification) = &source.config.verification {
        // Every verification failure counts as `unauthorized` in the ingest metric (its
        // documented outcome set); the finer category goes to the log.
        // Only schemes that sign the URL need it rebuilt as the sender called it.
        let url = if verification.scheme == VerificationType::Twilio {
            request_url(&headers, &uri, peer, &app.settings.trusted_proxies)
        } else {
            String::new()
        };
        verify::verify_at(verification, &headers, &body, &url, now / 1000).map_err(|e| {
            debug!(source = %key, category = e.category(), "signature verification failed");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("signature verification failed: {e}"),
            )
        })?;
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Parsing is skipped when nothing looks at the body: most of ingest's cost per event.
    let parsed = if source.needs_body {
        parse_json(&body)
    } else {
        None
    };
    let validation_errors = validate(source, key, parsed.as_ref())?;

    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query_text = uri.query().unwrap_or_default().to_owned();
    let query_pairs: Vec<(String, String)> = url::form_urlencoded::parse(query_text.as_bytes())
        .into_owned()
        .collect();
    let source_ip = client.to_string();
    let view = EventView {
        body: parsed.as_ref(),
        headers: &headers,
        query: &query_pairs,
        method: method.as_str(),
        content_type: content_type.as_deref(),
        source_ip: &source_ip,
    };
    let matched: Vec<_> = source
        .routes
        .iter()
        .filter(|r| r.routes(&view))
        .cloned()
        .collect();
    let dedup = source
        .config
        .dedup
        .as_ref()
        .and_then(|d| dedup_key(d, &headers, &body, parsed.as_ref(), now));

    let event = Arc::new(NewEvent {
        id: ids::event(),
        namespace: key.namespace.clone(),
        source: source_name,
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: query_text,
        headers: header_pairs,
        body,
        content_type,
        source_ip,
        received_at: now,
        validation_errors: validation_errors.clone(),
    });

    // Deliveries to destinations whose circuit is closed go straight to a worker when there
    // is room; the rest wait in the queue.
    let direct: Vec<bool> = matched
        .iter()
        .map(|r| {
            !app.dispatcher
                .circuits
                .is_blocked(&ObjectKey::new(r.namespace.clone(), r.destination.clone()))
        })
        .collect();
    let wanted = direct.iter().filter(|d| **d).count();
    let permits = app.dispatcher.reserve(wanted);
    let lease = permits.as_ref().map(|_| Dispatcher::lease_until(now));
    let deliveries: Vec<NewDelivery> = matched
        .iter()
        .zip(&direct)
        .map(|(r, d)| NewDelivery {
            id: ids::delivery(),
            destination: r.destination.clone(),
            route_kind: r.kind,
            route: r.name.clone(),
            lease_until: if *d { lease } else { None },
        })
        .collect();

    let outcome = app
        .store
        .writer
        .insert(event.clone(), deliveries.clone(), dedup)
        .await
        .map_err(|e| {
            warn!(error = %e, source = %key, "cannot store event");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "event storage is unavailable; retry later".to_owned(),
            )
            .with_outcome("unavailable")
        })?;
    match outcome {
        InsertOutcome::Duplicate { event_id } => {
            debug!(source = %key, event_id = %event_id, "duplicate event");
            Ok(Accepted {
                event_id,
                received_at: now,
                duplicate: true,
                validation_errors: None,
            })
        }
        InsertOutcome::Stored => {
            let mut queued = false;
            let mut permits = permits;
            for d in deliveries {
                let job = Job {
                    delivery_id: d.id,
                    event_id: event.id.clone(),
                    namespace: key.namespace.clone(),
                    destination: d.destination,
                    route_kind: d.route_kind,
                    route: d.route,
                    attempts: 0,
                    round_attempts: 0,
                };
                // Only deliveries committed as claimed take a hand-off permit.
                let permit = d
                    .lease_until
                    .and_then(|_| permits.as_mut().and_then(Iterator::next));
                match permit {
                    Some(permit) => permit.send(Work {
                        job,
                        event: event.clone(),
                    }),
                    _ => queued = true,
                }
            }
            if queued {
                app.dispatcher.wake.notify_one();
            }
            Ok(Accepted {
                event_id: event.id.clone(),
                received_at: now,
                duplicate: false,
                validation_errors,
            })
        }
    }
}

/// The URL the sender called: `X-Forwarded-Proto`/`X-Forwarded-Host` count only from a
/// trusted proxy; otherwise `http` and the `Host` header.
fn request_url(
    headers: &HeaderMap,
    uri: &Uri,
    peer: SocketAddr,
    trusted: &[ipnet::IpNet],
) -> String {
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

/// Most schema errors reported for one request.
const MAX_VALIDATION_ERRORS: usize = 50;
/// Longest schema error message kept, in bytes.
const MAX_VALIDATION_MESSAGE: usize = 300;

fn too_large(key: &ObjectKey, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the {limit} bytes source {key} accepts"),
    )
    .with_outcome("too_large")
}

/// The body as JSON, when it is JSON.
fn parse_json(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if matches!(first, b'{' | b'[' | b'"')
        || first.is_ascii_digit()
        || matches!(first, b'-' | b't' | b'f' | b'n')
    {
        serde_json::from_slice(body).ok()
    } else {
        None
    }
}

/// Schema validation: `Err` (422) in reject mode, the errors as JSON in warn mode.
fn validate(
    source: &RuntimeSource,
    key: &ObjectKey,
    body: Option<&Value>,
) -> Result<Option<Value>, ApiError> {
    let (Some(validator), Some(schema)) = (&source.schema, &source.config.schema) else {
        return Ok(None);
    };
    let errors: Vec<Value> = match body {
        None => vec![json!({ "path": "", "message": "body is not JSON" })],
        // Bounded: a hostile body can fail a schema millions of times, and each message may
        // echo the failing value.
        Some(v) => validator
            .iter_errors(v)
            .take(MAX_VALIDATION_ERRORS)
            .map(|e| {
                let mut message = e.to_string();
                if message.len() > MAX_VALIDATION_MESSAGE {
                    let cut = (0..=MAX_VALIDATION_MESSAGE)
                        .rev()
                        .find(|i| message.is_char_boundary(*i))
                        .unwrap_or(0);
                    message.truncate(cut);
                    message.push('…');
                }
                json!({ "path": e.instance_path.to_string(), "message": message })
            })
            .collect(),
    };
    if errors.is_empty() {
        return Ok(None);
    }
    match schema.action {
        SchemaAction::Reject => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("request body does not match the schema of source {key}"),
        )
        .with_outcome("invalid")
        .with_field("validation_errors", Value::Array(errors))),
        SchemaAction::Warn => Ok(Some(Value::Array(errors))),
    }
}

/// The dedup key of a request, when the strategy finds one.
fn dedup_key(
    d: &DedupConfig,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Option<&Value>,
    now: i64,
) -> Option<DedupClaim> {
    let key = match d.strategy {
        DedupStrategy::PayloadHash => hex::encode(Sha256::digest(body)),
        DedupStrategy::HeaderField => headers.get(d.field.as_deref()?)?.to_str().ok()?.to_owned(),
        DedupStrategy::BodyField => {
            match crate::pipeline::filter::lookup(parsed?, d.field.as_deref()?)? {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            }
        }
    };
    let window = i64::try_from(d.window_seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    Some(DedupClaim {
        key,
        expires_at: now.saturating_add(window),
    })
}

/// Headers as a JSON object; repeated headers are joined with `, `.
pub fn headers_object(headers: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (k, v) in headers {
        match map.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            _ => {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    Value::Object(map)
}

/// A query string as a JSON object; repeated names become lists.
pub fn query_object(query: &str) -> Value {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()).into_owned() {
        match map.get_mut(&k) {
            Some(Value::Array(list)) => list.push(Value::String(v)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(v)]);
            }
            None => {
                map.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(map)
}
