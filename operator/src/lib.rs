//! The hookstream operator: kube-runtime controllers that validate Source, Destination,
//! Connection, Topic and AlertRule objects with the shared compiler (`hookstream-crds`),
//! write their status conditions, and hand the compiled routing config to the gateway.
//!
//! The controllers are not part of this release yet; the standalone gateway already runs the
//! same compiler on a folder of manifests.

pub use hookstream_crds::compiler::compile;
