//! Support for hookstream's end-to-end tests.
//!
//! - [`receiver`]: a real HTTP server that records deliveries and answers as scripted (also
//!   used by the gateway's own tests).
//! - [`cluster`]: a real control plane from `e2e/kube-up` (kube-apiserver, etcd,
//!   kube-controller-manager), `kubectl`, a namespace per test, and the operator and gateway
//!   binaries run as processes against it.
#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod receiver;
