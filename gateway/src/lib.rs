//! The hookstream gateway: ingest, routing, delivery, retries, circuit breaking, the
//! management API and metrics. The binary in `main.rs` only parses settings and calls
//! [`server::run`].
//!
//! Data flows one way: config (the compiled manifests) → ingest → store → delivery → status.
//! [`pipeline`] owns an event as data and its routing, [`store`] the only database access,
//! [`delivery`] the queue's workers and one provider per destination type, [`http`] the
//! thin handlers, [`cluster`] what only a gateway in Kubernetes does, [`access`] the API keys and
//! the namespaces each may see.

pub mod access;
pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod housekeeping;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod settings;
pub mod store;
pub mod throttle;
