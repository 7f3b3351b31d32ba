//! Support for hookstream's end-to-end tests.
//!
//! - [`receiver`]: a real HTTP server that records deliveries and answers as scripted (also
//!   used by the gateway's own tests).
//! - [`chaos`]: a chaos harness (load through gateways while they are SIGKILLed, their
//!   database restarted and the receiver flaps), also the `hookstream-chaos` binary.
//! - [`cluster`]: a real control plane from `e2e/kube-up` (kube-apiserver, etcd,
//!   kube-controller-manager), `kubectl`, a namespace per test, and the operator and gateway
//!   binaries run as processes against it, one gateway or several replicas.
//! - [`postgres`]: a real PostgreSQL server from `scripts/pg-up` (or `HOOKSTREAM_TEST_POSTGRES`)
//!   and a fresh database per test, for gateway replicas sharing one.
#![allow(clippy::unwrap_used)]

pub mod chaos;
pub mod cluster;
pub mod postgres;
pub mod receiver;
