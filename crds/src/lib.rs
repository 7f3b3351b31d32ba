//! hookstream's API (group `hookstream.io`, version `v1alpha1`) and the routing-config compiler.
//!
//! This crate owns the Kubernetes types users write (Source, Destination, Connection, Topic,
//! AlertRule), the CRD schemas generated from them, and [`compiler::compile`], the one pure
//! function that turns a set of objects plus the Secrets they reference into a validated
//! [`config::GatewayConfig`]. It does no I/O: reading manifests, talking to the API server and
//! serving traffic belong to the gateway and the operator.

pub mod broker;
pub mod compiler;
pub mod config;
pub mod crdgen;
pub mod duration;
pub mod egress;
pub mod keys;
pub mod manifest;
pub mod templates;
pub mod v1alpha1;

/// The API group of every hookstream kind.
pub const GROUP: &str = "hookstream.io";
/// The API version of every hookstream kind.
pub const VERSION: &str = "v1alpha1";
