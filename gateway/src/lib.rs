//! The hookstream gateway: ingest, routing, delivery, retries, circuit breaking, the
//! management API and metrics. The binary in `main.rs` only parses settings and calls
//! [`server::run`].

pub mod api;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod ids;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod settings;
pub mod store;
