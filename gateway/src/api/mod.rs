//! The management API under `/v1/`: events, delivery attempts, retries and circuits. Every
//! route needs an `X-API-Key`; lists are newest first with an opaque `cursor` and `has_more`.

pub mod auth;
pub mod error;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hookstream_crds::config::ObjectKey;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::delivery::parse_body;
use crate::ids;
use crate::ingest::headers_object;
use crate::pipeline::filter::EventView;
use crate::server::AppState;
use crate::store::read::{self, AttemptQuery, EventQuery, StoredAttempt, StoredEvent};
use crate::store::writer::ManualRetry;
use crate::store::{state, NewDelivery};
use error::ApiError;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;
/// Request headers never shown by the API: they carry credentials.
const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// The API routes (without the key check, which the server adds).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/retry", post(retry_event))
        .route("/v1/delivery-attempts", get(list_attempts))
        .route("/v1/delivery-attempts/{id}", get(get_attempt))
        .route("/v1/delivery-attempts/{id}/retry", post(retry_attempt))
        .route(
            "/v1/destinations/{namespace}/{name}/circuit",
            get(get_circuit),
        )
        .route(
            "/v1/destinations/{namespace}/{name}/circuit/reset",
            post(reset_circuit),
        )
        .route(
            "/v1/topics/{namespace}/{topic}/publish",
            post(crate::ingest::publish),
        )
        .route("/v1/sources/templates", get(source_templates))
        .route("/v1/destinations/templates", get(destination_templates))
}

/// `GET /v1/destinations/templates`: every Destination template with what it sets.
async fn destination_templates() -> Json<Value> {
    use hookstream_crds::templates::{Credential, DESTINATION_PRESETS};
    let templates: Vec<Value> = DESTINATION_PRESETS
        .iter()
        .map(|p| {
            let credential = match p.credential {
                Credential::None => Value::Null,
                Credential::Header(name) => json!({ "header": name }),
                Credential::Binding => json!({ "binding": "$credential" }),
            };
            json!({
                "id": p.id.as_str(),
                "name": p.name,
                "type": "http",
                "description": p.description,
                "docs_url": p.docs_url,
                "config_template": { "url": p.default_url.unwrap_or_default() },
                "sets": {
                    "http": { "url": p.default_url },
                    "credentials": credential,
                    "transform": p.transform,
                },
            })
        })
        .collect();
    Json(json!({ "templates": templates }))
}

/// `GET /v1/sources/templates`: every Source template with what it sets, in manifest terms.
async fn source_templates() -> Json<Value> {
    use hookstream_crds::templates::SOURCE_PRESETS;
    let templates: Vec<Value> = SOURCE_PRESETS
        .iter()
        .map(|p| {
            let verification = p.verification.map(|v| {
                let scheme = serde_json::to_value(v.scheme).unwrap_or(Value::Null);
                let mut sets = json!({ "type": scheme, "header": v.header });
                if let Some(encoding) = v.encoding {
                    sets["encoding"] = serde_json::to_value(encoding).unwrap_or(Value::Null);
                }
                if let Some(prefix) = v.prefix {
                    sets["prefix"] = json!(prefix);
                }
                if let Some(seconds) = v.tolerance_seconds {
                    sets["tolerance"] = json!(format!("{seconds}s"));
                }
                sets
            });
            let dedup = p.dedup.map(|(strategy, field)| {
                let mut sets = json!({ "strategy": strategy });
                if let Some(field) = field {
                    sets["field"] = json!(field);
                }
                sets
            });
            json!({
                "id": p.id.as_str(),
                "name": p.name,
                "description": p.description,
                "verification_type": verification
                    .as_ref()
                    .and_then(|v| v["type"].as_str())
                    .map(|t| t.replace('-', "_")),
                "docs_url": p.docs_url,
                "sets": { "verification": verification, "dedup": dedup },
            })
        })
        .collect();
    Json(json!({ "templates": templates }))
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name} must be an ISO 8601 time like 2026-03-01T14:30:00Z"
            ))
        })
}

fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// A list position: the time and sequence number of the last item of a page.
fn encode_cursor((at, seq): (i64, i64)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{at}:{seq}"))
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<(i64, i64)>, ApiError> {
    let Some(text) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (at, seq) = s.split_once(':')?;
            Some((at.parse().ok()?, seq.parse().ok()?))
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "cursor is not valid; pass the cursor of a previous page unchanged",
            )
        })
}

/// A `namespace/name` or bare `name` filter as (namespace, name).
fn object_filter(value: Option<String>) -> (Option<String>, Option<String>) {
    match value {
        Some(s) => match s.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), Some(name.to_owned())),
            None => (None, Some(s)),
        },
        None => (None, None),
    }
}

/// The list answer for `rows` fetched with one extra row (which tells whether there are
/// more): `{key: [...], cursor, has_more, pagination}`. The cursor is the position of the
/// page's last item.
fn list_page<T>(
    key: &str,
    mut rows: Vec<T>,
    limit: u32,
    position: impl Fn(&T) -> (i64, i64),
    summary: impl Fn(&T) -> Value,
) -> Value {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let cursor = if has_more {
        rows.last().map(|r| encode_cursor(position(r)))
    } else {
        None
    };
    let items: Vec<Value> = rows.iter().map(summary).collect();
    json!({
        key: items,
        "cursor": cursor,
        "has_more": has_more,
        "pagination": { "limit": limit, "has_more": has_more, "next_cursor": cursor },
    })
}

fn source_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn event_summary(e: &StoredEvent) -> Value {
    json!({
        "id": e.id,
        "source_id": source_id(&e.namespace, &e.source),
        "source_name": e.source,
        "namespace": e.namespace,
        "method": e.method,
        "content_type": e.content_type,
        "status": e.status,
        "received_at": rfc3339(e.received_at),
    })
}

fn shown_headers(headers: &[(String, String)]) -> Value {
    let redacted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let value = if SENSITIVE_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                "[redacted]".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), value)
        })
        .collect();
    headers_object(&redacted)
}

fn attempt_summary(a: &StoredAttempt) -> Value {
    json!({
        "id": a.id,
        "event_id": a.event_id,
        "delivery_id": a.delivery_id,
        "connection_id": if a.route_kind == "connection" { Some(source_id(&a.namespace, &a.route)) } else { None },
        "route_kind": a.route_kind,
        "route": a.route,
        "destination_id": source_id(&a.namespace, &a.destination),
        "destination_name": a.destination,
        "status": a.status,
        "status_code": a.status_code,
        "attempt_number": a.attempt_number,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "is_dlq": i64::from(a.is_dlq),
        "attempted_at": rfc3339(a.attempted_at),
        "next_retry_at": a.next_retry_at.map(rfc3339),
        "created_at": rfc3339(a.attempted_at),
    })
}

fn attempt_detail(a: &StoredAttempt) -> Value {
    let mut v = attempt_summary(a);
    v["request_headers"] = shown_headers(&a.request_headers);
    v["response_headers"] = a
        .response_headers
        .as_deref()
        .map_or(Value::Null, headers_object);
    v["response_body"] = json!(a.response_body);
    v
}

#[derive(Deserialize)]
struct EventParams {
    source: Option<String>,
    source_id: Option<String>,
    status: Option<String>,
    after: Option<String>,
    before: Option<String>,
    search: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

async fn list_events(
    State(app): State<AppState>,
    Query(p): Query<EventParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let (namespace, source) = object_filter(p.source.or(p.source_id));
    if let Some(status) = &p.status {
        if !["received", "processing", "delivered", "failed"].contains(&status.as_str()) {
            return Err(ApiError::bad_request(
                "status must be one of received, processing, delivered, failed",
            ));
        }
    }
    let query = EventQuery {
        namespace,
        source,
        status: p.status,
        after: p
            .after
            .as_deref()
            .map(|t| parse_time("after", t))
            .transpose()?,
        before: p
            .before
            .as_deref()
            .map(|t| parse_time("before", t))
            .transpose()?,
        search: p.search.filter(|s| !s.is_empty()),
        after_position: decode_cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = read::events(&app.store.read, &query).await?;
    Ok(Json(list_page(
        "events",
        rows,
        limit,
        |e| (e.received_at, e.seq),
        event_summary,
    )))
}

async fn get_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = read::event(&app.store.read, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))?;
    let attempts = read::attempts_of_event(&app.store.read, &id).await?;
    let mut v = event_summary(&event);
    v["path"] = json!(event.path);
    v["query"] = crate::ingest::query_object(&event.query);
    v["headers"] = shown_headers(&event.headers);
    match std::str::from_utf8(&event.body) {
        Ok(_) => v["body"] = parse_body(&event.body),
        Err(_) => {
            v["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&event.body))
        }
    }
    v["source_ip"] = json!(event.source_ip);
    v["validation_errors"] = event.validation_errors.clone().unwrap_or(Value::Null);
    v["delivery_attempts"] = Value::Array(attempts.iter().map(attempt_summary).collect());
    Ok(Json(v))
}

async fn retry_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = read::event(&app.store.read, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))?;
    let config = app.config.borrow().clone();
    let key = ObjectKey::new(event.namespace.clone(), event.source.clone());
    let Some(source) = config.sources.get(&key) else {
        return Ok(Json(
            json!({ "retried": [], "errors": [format!("source {key} is no longer configured")] }),
        ));
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &event.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    let query: Vec<(String, String)> = url::form_urlencoded::parse(event.query.as_bytes())
        .into_owned()
        .collect();
    let body = serde_json::from_slice::<Value>(&event.body).ok();
    let view = EventView {
        body: body.as_ref(),
        headers: &headers,
        query: &query,
        method: &event.method,
        content_type: event.content_type.as_deref(),
        source_ip: &event.source_ip,
    };
    let deliveries: Vec<NewDelivery> = source
        .routes
        .iter()
        .filter(|r| r.routes(&view))
        .map(|r| NewDelivery {
            id: ids::delivery(),
            destination: r.destination.clone(),
            route_kind: r.kind,
            route: r.name.clone(),
            lease_until: None,
        })
        .collect();
    let retried: Vec<Value> = deliveries
        .iter()
        .map(|d| json!({ "destination_id": source_id(&event.namespace, &d.destination), "route": d.route, "delivery_id": d.id, "status": "queued" }))
        .collect();
    let errors: Vec<String> = if deliveries.is_empty() {
        vec![format!("no route of source {key} matches this event")]
    } else {
        Vec::new()
    };
    app.store
        .writer
        .retry(ManualRetry::Event {
            event_id: id,
            deliveries,
        })
        .await?;
    app.dispatcher.wake.notify_one();
    Ok(Json(json!({ "retried": retried, "errors": errors })))
}

#[derive(Deserialize)]
struct AttemptParams {
    event_id: Option<String>,
    destination: Option<String>,
    destination_id: Option<String>,
    status: Option<String>,
    is_dlq: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

async fn list_attempts(
    State(app): State<AppState>,
    Query(p): Query<AttemptParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let (namespace, destination) = object_filter(p.destination.or(p.destination_id));
    if let Some(status) = &p.status {
        if !["success", "failed"].contains(&status.as_str()) {
            return Err(ApiError::bad_request("status must be success or failed"));
        }
    }
    let dlq_only = match p.is_dlq.as_deref() {
        None | Some("0") | Some("false") | Some("") => false,
        Some("1") | Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("is_dlq must be 1 or 0")),
    };
    let query = AttemptQuery {
        event_id: p.event_id,
        namespace,
        destination,
        status: p.status,
        dlq_only,
        after_position: decode_cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = read::attempts(&app.store.read, &query).await?;
    Ok(Json(list_page(
        "delivery_attempts",
        rows,
        limit,
        |a| (a.attempted_at, a.seq),
        attempt_summary,
    )))
}

async fn get_attempt(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let attempt = read::attempt(&app.store.read, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery attempt {id} not found")))?;
    Ok(Json(attempt_detail(&attempt)))
}

async fn retry_attempt(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let attempt = read::attempt(&app.store.read, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery attempt {id} not found")))?;
    let result = app
        .store
        .writer
        .retry(ManualRetry::Delivery {
            delivery_id: attempt.delivery_id.clone(),
        })
        .await?;
    match result.as_deref() {
        None => Err(ApiError::not_found(format!(
            "the delivery of attempt {id} no longer exists"
        ))),
        Some(s) if s == state::INFLIGHT => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "delivery {} is being attempted right now; try again when it finishes",
                attempt.delivery_id
            ),
        )),
        Some(new_state) => {
            app.dispatcher.wake.notify_one();
            Ok(Json(json!({
                "delivery_attempt": {
                    "id": attempt.id,
                    "event_id": attempt.event_id,
                    "delivery_id": attempt.delivery_id,
                    "destination_id": source_id(&attempt.namespace, &attempt.destination),
                    "status": new_state,
                }
            })))
        }
    }
}

fn circuit_body(key: &ObjectKey, view: &crate::delivery::circuit::View) -> Value {
    json!({
        "destination_id": key.to_string(),
        "state": view.state,
        "failure_count": view.failure_count,
        "last_failure_at": view.last_failure_at.map(rfc3339),
        "opened_at": view.opened_at.map(rfc3339),
    })
}

fn known_destination(
    app: &AppState,
    namespace: String,
    name: String,
) -> Result<ObjectKey, ApiError> {
    let key = ObjectKey::new(namespace, name);
    if app.config.borrow().destinations.contains_key(&key) {
        Ok(key)
    } else {
        Err(ApiError::not_found(format!("destination {key} not found")))
    }
}

async fn get_circuit(
    State(app): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = known_destination(&app, namespace, name)?;
    Ok(Json(circuit_body(
        &key,
        &app.dispatcher.circuits.view(&key),
    )))
}

async fn reset_circuit(
    State(app): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let key = known_destination(&app, namespace, name)?;
    tracing::info!(destination = %key, "circuit reset by API");
    Ok(Json(circuit_body(
        &key,
        &app.dispatcher.circuits.reset(&key),
    )))
}
