//! The hookstream operator: kube-runtime controllers that validate Source, Destination,
//! Connection, Topic and AlertRule objects with the shared compiler (`hookstream-crds`),
//! write their status conditions and Events, and hand the compiled routing config to the
//! gateway through one Secret.

pub mod controller;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod status;

pub use hookstream_crds::compiler::compile;
