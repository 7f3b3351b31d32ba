//! The ingest endpoint, `ANY /v1/ingest/{namespace}/{source}` (public: its protection is the
//! Source's verification, IP filter and limits), and the Topic publish endpoint,
//! `POST /v1/topics/{namespace}/{topic}/publish` (behind the API key; a Topic outside the
//! key's namespaces is answered exactly like one that does not exist).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookstream_common::api::{Ingested, Published};
use hookstream_crds::config::ObjectKey;
use http::StatusCode;

use super::auth::{Allowed, Publish};
use super::error::ApiError;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::ingest::{self, Accepted, Incoming, Rejection, TOPIC_PREFIX};

/// Counts the outcome under `label` (or `unknown` for an object that does not exist: the
/// label set must stay bounded).
fn count(app: &AppState, label: &str, outcome: &Result<Accepted, Rejection>) {
    let (label, name) = match outcome {
        Ok(a) if a.duplicate => (label, "duplicate"),
        Ok(_) => (label, "accepted"),
        Err(e @ Rejection::NotFound { .. }) => ("unknown", e.outcome()),
        Err(e) => (label, e.outcome()),
    };
    app.metrics
        .ingest_requests
        .with_label_values(&[label, name])
        .inc();
}

pub(super) async fn ingest(
    State(app): State<AppState>,
    Path((namespace, source)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    let key = ObjectKey::new(namespace, source);
    let label = key.to_string();
    let target = app.config.borrow().sources.get(&key).cloned();
    let outcome = match target {
        Some(target) => ingest::accept(&app.ingest, &target, key.name.clone(), incoming).await,
        None => Err(Rejection::NotFound {
            what: "source",
            key,
        }),
    };
    count(&app, &label, &outcome);
    match outcome {
        Ok(a) => (
            StatusCode::OK,
            Json(Ingested {
                event_id: a.event_id,
                source_id: label,
                duplicate: a.duplicate,
                validation_errors: a.validation_errors,
            }),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Events published to a Topic are listed with the source `topic:{name}`.
pub(super) async fn publish(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<Publish>,
    Path((namespace, topic)): Path<(String, String)>,
    incoming: Incoming,
) -> Response {
    let key = ObjectKey::new(namespace, topic);
    let stored = format!("{TOPIC_PREFIX}{}", key.name);
    let label = format!("{}/{stored}", key.namespace);
    let target = scope
        .allows(&key.namespace)
        .then(|| app.config.borrow().topics.get(&key).cloned())
        .flatten();
    let outcome = match target {
        Some(target) => ingest::accept(&app.ingest, &target, stored, incoming).await,
        None => Err(Rejection::NotFound {
            what: "topic",
            key: key.clone(),
        }),
    };
    count(&app, &label, &outcome);
    match outcome {
        Ok(a) => (
            StatusCode::OK,
            Json(Published {
                event_id: a.event_id,
                topic: key.to_string(),
                received_at: rfc3339(a.received_at),
            }),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
