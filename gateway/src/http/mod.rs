//! The HTTP surface: the router and one module per API area. Handlers are thin: they parse
//! the request, call ingest, the store or delivery, and answer with the typed bodies of
//! `hookstream_common::api`. Ingest, health, readiness and metrics are public; everything
//! else under `/v1/` needs an `X-API-Key` (or, in a cluster, a ServiceAccount token), and sees
//! only the namespaces of its [`crate::access::Scope`] for what it does.

mod attempts;
pub mod auth;
mod circuits;
pub mod error;
mod events;
mod ingest;
mod page;
mod templates;
mod ws;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::Router;
use hookstream_crds::config::{INGEST_ROUTE, PUBLISH_ROUTE};
use tracing::warn;

use crate::app::AppState;
use auth::{ApiAuth, ApiKeys};

/// The management API (without the key check, which [`router`] adds).
fn api() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::get))
        .route("/v1/events/{id}/retry", post(events::retry))
        .route("/v1/delivery-attempts", get(attempts::list))
        .route("/v1/delivery-attempts/{id}", get(attempts::get))
        .route("/v1/delivery-attempts/{id}/retry", post(attempts::retry))
        .route(
            "/v1/destinations/{namespace}/{name}/circuit",
            get(circuits::get),
        )
        .route(
            "/v1/destinations/{namespace}/{name}/circuit/reset",
            post(circuits::reset),
        )
        .route(PUBLISH_ROUTE, post(ingest::publish))
        .route("/v1/sources/templates", get(templates::sources))
        .route("/v1/destinations/templates", get(templates::destinations))
        .route("/v1/ws", get(ws::upgrade))
}

/// The router: ingest (public), health and metrics (public), the API (keyed). The only API
/// route that reads a body, publish, reads it through ingest and its body read timeout.
pub fn router(
    app: AppState,
    keys: ApiKeys,
    tokens: Option<std::sync::Arc<dyn crate::access::TokenAuthority>>,
) -> Router {
    let auth = ApiAuth::new(
        keys,
        tokens,
        app.ingest.trusted_proxies.clone(),
        app.metrics.clone(),
    );
    let api = api().layer(axum::middleware::from_fn_with_state(
        auth,
        auth::require_key,
    ));
    Router::new()
        .route(INGEST_ROUTE, any(ingest::ingest))
        // Ingest enforces its own (per-source) body limit while reading.
        .layer(DefaultBodyLimit::disable())
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            warn!(error = %crate::store::error_chain(&e), "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            hookstream_common::METRICS_CONTENT_TYPE,
        )],
        app.metrics.render(),
    )
}
