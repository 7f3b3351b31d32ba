//! `/v1/delivery-attempts`: list, detail, and retry of an attempt's delivery. Lists show
//! summaries (no headers, no response body); a caller sees only the attempts of its key's
//! namespaces, and an attempt outside them is answered exactly like one that does not exist.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use hookstream_common::api::{
    AttemptDetail as AttemptBody, AttemptList, AttemptRetry, AttemptSummary, RetriedAttempt,
};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Allowed, OperateDeliveries, ReadDeliveries};
use super::error::ApiError;
use super::page::{self, object_id, Page};
use crate::access::Scope;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::ingest::redact::{is_credential_header, REDACTED};
use crate::pipeline::event::headers_object;
use crate::store::{
    AttemptDetail, AttemptListing, AttemptOutcome, AttemptQuery, DeliveryState, ManualRetry,
    RouteKind, StoredAttempt,
};

/// Headers as an object, with credentials redacted (whatever the Source keeps, the API never
/// shows them).
pub(super) fn shown_headers(headers: &[(String, String)]) -> Value {
    let redacted: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            let value = if is_credential_header(k) {
                REDACTED.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), value)
        })
        .collect();
    headers_object(&redacted)
}

/// An attempt as lists show it.
pub(super) fn attempt_summary(a: &AttemptListing) -> AttemptSummary {
    AttemptSummary {
        id: a.id.clone(),
        event_id: a.event_id.clone(),
        delivery_id: a.delivery_id.clone(),
        connection_id: (a.route_kind == RouteKind::Connection)
            .then(|| object_id(&a.namespace, &a.route)),
        route_kind: a.route_kind.to_string(),
        route: a.route.clone(),
        destination_id: object_id(&a.namespace, &a.destination),
        destination_name: a.destination.clone(),
        status: a.outcome.to_string(),
        status_code: a.status_code,
        attempt_number: a.attempt_number,
        latency_ms: a.latency_ms,
        error: a.error.clone(),
        is_dlq: u8::from(a.is_dlq),
        attempted_at: rfc3339(a.attempted_at),
        next_retry_at: a.next_retry_at.map(rfc3339),
        created_at: rfc3339(a.attempted_at),
    }
}

fn attempt_detail(a: &StoredAttempt) -> AttemptBody {
    let (response_headers, response_body, response_body_truncated) = match &a.record.detail {
        AttemptDetail::Http {
            response_headers,
            response_body,
            status_code,
            response_body_truncated,
        } => (
            status_code.map(|_| headers_object(response_headers)),
            response_body.clone(),
            *response_body_truncated,
        ),
        _ => (None, None, false),
    };
    // What another transport returned (a message id, a partition and offset, an object
    // key), tagged by type.
    let provider_result = match &a.record.detail {
        AttemptDetail::None | AttemptDetail::Http { .. } => None,
        other => serde_json::to_value(other).ok(),
    };
    AttemptBody {
        summary: attempt_summary(&a.listing()),
        request_headers: shown_headers(&a.record.request_headers),
        response_headers,
        response_body,
        response_body_truncated,
        provider_result,
    }
}

#[derive(Deserialize)]
pub(super) struct AttemptParams {
    event_id: Option<String>,
    destination: Option<String>,
    destination_id: Option<String>,
    status: Option<String>,
    is_dlq: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadDeliveries>,
    Query(p): Query<AttemptParams>,
) -> Result<Json<AttemptList>, ApiError> {
    let limit = page::limit(p.limit.as_deref())?;
    let (namespace, destination) = page::object_filter(p.destination.or(p.destination_id));
    let outcome = p
        .status
        .as_deref()
        .map(|s| {
            s.parse::<AttemptOutcome>()
                .map_err(|_| ApiError::bad_request("status must be success or failed"))
        })
        .transpose()?;
    let dlq_only = match p.is_dlq.as_deref() {
        None | Some("0") | Some("false") | Some("") => false,
        Some("1") | Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("is_dlq must be 1 or 0")),
    };
    let query = AttemptQuery {
        namespaces: scope.namespaces(),
        event_id: p.event_id,
        namespace,
        destination,
        outcome,
        dlq_only,
        after_position: page::cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = app.store.attempts(&query).await?;
    let page = Page::of(rows, limit, |a| (a.attempted_at, a.seq));
    Ok(Json(AttemptList {
        delivery_attempts: page.items.iter().map(attempt_summary).collect(),
        cursor: page.cursor,
        has_more: page.has_more,
        pagination: page.pagination,
    }))
}

/// The attempt `id` when it exists and is in `scope`; else the same 404 either way.
async fn find(app: &AppState, scope: &Scope, id: &str) -> Result<StoredAttempt, ApiError> {
    app.store
        .attempt(id)
        .await?
        .filter(|a| scope.allows(&a.namespace))
        .ok_or_else(|| ApiError::not_found(format!("delivery attempt {id} not found")))
}

pub(super) async fn get(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadDeliveries>,
    Path(id): Path<String>,
) -> Result<Json<AttemptBody>, ApiError> {
    Ok(Json(attempt_detail(&find(&app, &scope, &id).await?)))
}

pub(super) async fn retry(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<OperateDeliveries>,
    Path(id): Path<String>,
) -> Result<Json<AttemptRetry>, ApiError> {
    let attempt = find(&app, &scope, &id).await?;
    let result = app
        .store
        .retry(ManualRetry::Delivery {
            delivery_id: attempt.delivery_id.clone(),
        })
        .await?;
    match result {
        None => Err(ApiError::not_found(format!(
            "the delivery of attempt {id} no longer exists"
        ))),
        Some(DeliveryState::Inflight) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "delivery {} is being attempted right now; try again when it finishes",
                attempt.delivery_id
            ),
        )),
        Some(state) => {
            app.dispatcher.wake.notify_one();
            Ok(Json(AttemptRetry {
                delivery_attempt: RetriedAttempt {
                    id: attempt.record.id.clone(),
                    event_id: attempt.event_id.clone(),
                    delivery_id: attempt.delivery_id.clone(),
                    destination_id: object_id(&attempt.namespace, &attempt.destination),
                    status: state.to_string(),
                },
            }))
        }
    }
}
