//! The handles that request handlers share: the routing snapshot, the store, delivery's
//! dispatcher, ingest and metrics. Background tasks take the one or two of these they need,
//! not this whole struct.

use std::sync::Arc;

use crate::config::ConfigHandle;
use crate::delivery::Dispatcher;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::store::SharedStore;

/// What request handlers share; cloned per request, so one `Arc`.
pub type AppState = Arc<App>;

/// The parts of a running gateway that handlers use.
pub struct App {
    /// Current routing snapshot.
    pub config: ConfigHandle,
    /// The store.
    pub store: SharedStore,
    /// Delivery hand-off, wake-up and circuits.
    pub dispatcher: Dispatcher,
    /// Ingest's handles.
    pub ingest: Ingest,
    /// Metrics.
    pub metrics: Metrics,
    /// WebSocket subscribers of `GET /v1/ws`.
    pub hub: std::sync::Arc<crate::delivery::provider::websocket::Hub>,
}
