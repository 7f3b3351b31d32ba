//! Delivery: workers that take deliveries from the queue, make their payload, send them
//! through the destination's provider, and record the attempt, the retry schedule, the
//! circuit breaker and dead-lettering.
//!
//! Deliveries reach a worker two ways. New ones come straight from ingest, already claimed
//! in the same transaction that stored the event, so a delivery starts microseconds after
//! the sender's 200. Everything else (retries, circuit drains, recovery after a restart, an
//! overflow of the hand-off channel) is claimed from the store in batches by the
//! [`dispatcher`]. The store is the only source of truth: a worker that dies mid-attempt
//! leaves a claimed delivery whose lease expires, so it is attempted again: at least once,
//! never lost.

pub mod circuit;
mod dispatcher;
pub mod provider;
pub mod schedule;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use hookstream_transform::Limits;
use tokio::sync::{mpsc, watch, Notify};

use hookstream_crds::config::ObjectKey;

use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::store::{Job, SharedEvent, SharedStore, StoreError};
use circuit::Circuits;
use provider::{ProviderError, Providers};

/// Longest wait between two looks at the queue when nothing wakes the dispatcher. A look is
/// also due when the earliest scheduled retry falls due, so retries are not late by this much.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a claim lasts beyond the longest possible attempt.
const LEASE_MARGIN_MS: i64 = 60_000;
/// The longest destination timeout the compiler allows.
const MAX_TIMEOUT_MS: i64 = hookstream_crds::compiler::MAX_TIMEOUT_SECONDS as i64 * 1000;

/// A delivery and its event, ready for a worker.
pub struct Work {
    /// The claimed delivery.
    pub job: Job,
    /// Its event.
    pub event: SharedEvent,
}

/// The handle ingest and the API use: hand-off of new deliveries, and the queue's wake-up.
#[derive(Clone)]
pub struct Dispatcher {
    fast: mpsc::Sender<Work>,
    /// Wakes the dispatcher to look at the queue now.
    pub wake: Arc<Notify>,
    /// Circuit breakers.
    pub circuits: Arc<Circuits>,
}

impl Dispatcher {
    /// Reserves room to hand `n` new deliveries straight to workers. `None` when workers
    /// are saturated: the deliveries then wait in the queue.
    pub fn reserve(&self, n: usize) -> Option<mpsc::PermitIterator<'_, Work>> {
        if n == 0 {
            return None;
        }
        self.fast.try_reserve_many(n).ok()
    }

    /// The claim expiry for a delivery handed over now.
    pub fn lease_until(now: i64) -> i64 {
        // A handed-over delivery may wait for a worker slot up to one full timeout (the
        // attempt holding the slot) before its own attempt, which takes at most another.
        now + 2 * MAX_TIMEOUT_MS + LEASE_MARGIN_MS
    }
}

/// Delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The circuits could not be read.
    #[error("cannot read the circuits")]
    Store(#[from] StoreError),
    /// A provider could not be set up.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What delivery needs from the rest of the gateway.
pub struct Setup {
    /// The store.
    pub store: SharedStore,
    /// The routing snapshot.
    pub config: ConfigHandle,
    /// Metrics.
    pub metrics: Metrics,
    /// Most attempts in flight at once.
    pub max_in_flight: usize,
    /// How long shutdown waits for attempts in flight.
    pub shutdown_grace: Duration,
}

/// What workers share.
struct Shared {
    store: SharedStore,
    config: ConfigHandle,
    metrics: Metrics,
    providers: Providers,
    circuits: Arc<Circuits>,
    limits: Limits,
    /// Wakes the dispatcher to look at the queue now.
    wake: Arc<Notify>,
}

/// Starts delivery. It stops when `shutdown` turns true, after attempts in flight end (or
/// the grace period passes).
pub async fn start(
    setup: Setup,
    shutdown: watch::Receiver<bool>,
) -> Result<(Dispatcher, tokio::task::JoinHandle<()>), StartError> {
    let wake = Arc::new(Notify::new());
    let circuits = Arc::new(Circuits::new(
        setup.store.circuits().await?,
        setup.store.clone(),
        setup.metrics.clone(),
        wake.clone(),
    ));
    let (fast, fast_rx) = mpsc::channel(setup.max_in_flight);
    let shared = Arc::new(Shared {
        store: setup.store,
        config: setup.config,
        metrics: setup.metrics,
        providers: Providers::new()?,
        circuits: circuits.clone(),
        limits: Limits::default(),
        wake: wake.clone(),
    });
    let dispatcher = Dispatcher {
        fast,
        wake,
        circuits,
    };
    let handle = tokio::spawn(dispatcher::run(
        shared,
        fast_rx,
        setup.max_in_flight,
        setup.shutdown_grace,
        shutdown,
    ));
    Ok((dispatcher, handle))
}

/// The destination a job delivers to.
fn destination_of(job: &Job) -> ObjectKey {
    ObjectKey::new(job.namespace.clone(), job.destination.clone())
}
