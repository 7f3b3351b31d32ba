//! `/v1/events`: list, detail and retry. A retry runs the event through the routes of its
//! Source as they are now, creating new deliveries. Lists show summaries (no body, no
//! headers); a caller sees only the events of its key's namespaces, and an event outside
//! them is answered exactly like one that does not exist.

use axum::extract::{Path, Query, State};
use axum::Json;
use base64::Engine as _;
use hookstream_common::api::{EventDetail, EventList, EventRetry, EventSummary, RetriedDelivery};
use hookstream_crds::config::ObjectKey;
use serde::Deserialize;

use super::attempts::{attempt_summary, shown_headers};
use super::auth::{Allowed, OperateDeliveries, ReadEvents};
use super::error::ApiError;
use super::page::{self, object_id, Page};
use crate::access::Scope;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::pipeline::event::{parse_body, query_object, EventData};
use crate::pipeline::route;
use crate::store::{EventListing, EventQuery, EventStatus, ManualRetry, StoredEvent};

/// An event as lists show it.
pub(super) fn event_summary(e: &EventListing) -> EventSummary {
    EventSummary {
        id: e.id.clone(),
        source_id: object_id(&e.namespace, &e.source),
        source_name: e.source.clone(),
        namespace: e.namespace.clone(),
        method: e.method.clone(),
        content_type: e.content_type.clone(),
        status: e.status.to_string(),
        received_at: rfc3339(e.received_at),
    }
}

#[derive(Deserialize)]
pub(super) struct EventParams {
    source: Option<String>,
    source_id: Option<String>,
    status: Option<String>,
    after: Option<String>,
    before: Option<String>,
    search: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn status_filter(status: Option<&str>) -> Result<Option<EventStatus>, ApiError> {
    status
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::bad_request(
                    "status must be one of received, processing, delivered, failed",
                )
            })
        })
        .transpose()
}

pub(super) async fn list(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadEvents>,
    Query(p): Query<EventParams>,
) -> Result<Json<EventList>, ApiError> {
    let limit = page::limit(p.limit.as_deref())?;
    let (namespace, source) = page::object_filter(p.source.or(p.source_id));
    let query = EventQuery {
        namespaces: scope.namespaces(),
        namespace,
        source,
        status: status_filter(p.status.as_deref())?,
        after: page::time("after", p.after.as_deref())?,
        before: page::time("before", p.before.as_deref())?,
        search: p.search.filter(|s| !s.is_empty()),
        after_position: page::cursor(p.cursor.as_deref())?,
        limit,
    };
    let rows = app.store.events(&query).await?;
    let page = Page::of(rows, limit, |e| (e.received_at, e.seq));
    Ok(Json(EventList {
        events: page.items.iter().map(event_summary).collect(),
        cursor: page.cursor,
        has_more: page.has_more,
        pagination: page.pagination,
    }))
}

/// The event `id` when it exists and is in `scope`; else the same 404 either way.
async fn find(app: &AppState, scope: &Scope, id: &str) -> Result<StoredEvent, ApiError> {
    app.store
        .event(id)
        .await?
        .filter(|e| scope.allows(&e.event.namespace))
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))
}

pub(super) async fn get(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadEvents>,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    let stored = find(&app, &scope, &id).await?;
    let attempts = app.store.attempts_of_event(&id).await?;
    let event = &stored.event;
    let utf8 = std::str::from_utf8(&event.body).is_ok();
    Ok(Json(EventDetail {
        summary: event_summary(&stored.listing()),
        path: event.path.clone(),
        query: query_object(&event.query),
        headers: shown_headers(&event.headers),
        body: utf8.then(|| parse_body(&event.body)),
        body_base64: (!utf8).then(|| base64::engine::general_purpose::STANDARD.encode(&event.body)),
        source_ip: event.source_ip.clone(),
        validation_errors: event.validation_errors.clone(),
        delivery_attempts: attempts
            .iter()
            .map(|a| attempt_summary(&a.listing()))
            .collect(),
    }))
}

pub(super) async fn retry(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<OperateDeliveries>,
    Path(id): Path<String>,
) -> Result<Json<EventRetry>, ApiError> {
    let stored = find(&app, &scope, &id).await?;
    let event = &stored.event;
    let config = app.config.borrow().clone();
    let key = ObjectKey::new(event.namespace.clone(), event.source.clone());
    let Some(source) = config.sources.get(&key) else {
        return Ok(Json(EventRetry {
            retried: Vec::new(),
            errors: vec![format!("source {key} is no longer configured")],
        }));
    };
    let data = EventData::of(event);
    let deliveries: Vec<_> = route::matching(&source.routes, &data.view())
        .into_iter()
        .map(|r| route::delivery(r, None))
        .collect();
    let retried = deliveries
        .iter()
        .map(|d| RetriedDelivery {
            destination_id: object_id(&event.namespace, &d.destination),
            route: d.route.clone(),
            delivery_id: d.id.clone(),
            status: "queued".to_owned(),
        })
        .collect();
    let errors = if deliveries.is_empty() {
        vec![format!("no route of source {key} matches this event")]
    } else {
        Vec::new()
    };
    app.store
        .retry(ManualRetry::Event {
            event_id: id,
            deliveries,
        })
        .await?;
    app.dispatcher.wake.notify_one();
    Ok(Json(EventRetry { retried, errors }))
}
