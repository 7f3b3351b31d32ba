//! `/v1/destinations/{namespace}/{name}/circuit`: a Destination's circuit breaker, and its
//! manual reset. A Destination outside the caller's namespaces is answered exactly like one
//! that does not exist.

use axum::extract::{Path, State};
use axum::Json;
use hookstream_common::api::Circuit;
use hookstream_crds::config::ObjectKey;

use super::auth::{Allowed, OperateDeliveries, ReadDeliveries};
use super::error::ApiError;
use crate::access::Scope;
use crate::app::AppState;
use crate::clock::rfc3339;
use crate::delivery::circuit::View;

fn circuit_body(key: &ObjectKey, view: &View) -> Circuit {
    Circuit {
        destination_id: key.to_string(),
        state: view.state.to_string(),
        failure_count: view.failure_count,
        last_failure_at: view.last_failure_at.map(rfc3339),
        opened_at: view.opened_at.map(rfc3339),
    }
}

fn known_destination(
    app: &AppState,
    scope: &Scope,
    namespace: String,
    name: String,
) -> Result<ObjectKey, ApiError> {
    let key = ObjectKey::new(namespace, name);
    if scope.allows(&key.namespace) && app.config.borrow().destinations.contains_key(&key) {
        Ok(key)
    } else {
        Err(ApiError::not_found(format!("destination {key} not found")))
    }
}

pub(super) async fn get(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<ReadDeliveries>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Circuit>, ApiError> {
    let key = known_destination(&app, &scope, namespace, name)?;
    Ok(Json(circuit_body(
        &key,
        &app.dispatcher.circuits.view(&key),
    )))
}

pub(super) async fn reset(
    State(app): State<AppState>,
    Allowed(scope, _): Allowed<OperateDeliveries>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Circuit>, ApiError> {
    let key = known_destination(&app, &scope, namespace, name)?;
    tracing::info!(destination = %key, "circuit reset by API");
    let view = app.dispatcher.circuits.reset(&key).await?;
    Ok(Json(circuit_body(&key, &view)))
}
