//! Delivery: workers that take deliveries from the queue, make their payload, send them
//! through the destination's provider, and record the attempt, the retry schedule, the
//! circuit breaker and dead-lettering.
//!
//! Deliveries reach a worker two ways. New ones come straight from ingest, already claimed
//! in the same transaction that stored the event and holding a slot of their destination's
//! lane, so a delivery starts microseconds after the sender's 200. Everything else (retries,
//! backlogs, circuit probes, recovery after a restart, another replica's lost work) is
//! claimed from the store by the [`dispatcher`], one destination at a time, no more than its
//! lane has room for. The store is the only source of truth: a worker that dies mid-attempt
//! leaves a claimed delivery whose lease expires, so it is attempted again: at least once,
//! never lost.

pub mod circuit;
mod dispatcher;
pub mod lanes;
pub mod provider;
pub mod schedule;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::{DestinationConfig, ObjectKey};
use hookstream_transform::sandbox::Sandbox;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::store::{Job, SharedEvent, SharedStore, StoreError};
use circuit::Circuits;
use lanes::{Lanes, Slot, Ticket};
use provider::{ProviderError, Providers};

/// Longest wait between two looks at the queue when nothing wakes the dispatcher.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a claim lasts beyond the destination's timeout: time to record the attempt.
const LEASE_MARGIN_MS: i64 = 30_000;

/// The longest attempt to `destination`: its timeout.
fn timeout_ms(destination: &DestinationConfig) -> i64 {
    i64::try_from(destination.timeout_ms()).unwrap_or(i64::MAX)
}

/// The claim expiry of a delivery to `destination` claimed now: one attempt (at most the
/// destination's timeout) and the time to record it. A claimed delivery holds its slot
/// already, so it never waits for one under its lease.
pub fn lease_until(destination: &DestinationConfig, now: i64) -> i64 {
    now.saturating_add(timeout_ms(destination))
        .saturating_add(LEASE_MARGIN_MS)
}

/// The claim expiry of a new delivery handed to a worker: it may wait for `rounds` rounds of
/// the lane's attempts, then one more, before its own attempt ends.
fn hand_off_lease(destination: &DestinationConfig, rounds: u32, now: i64) -> i64 {
    lease_until(destination, now)
        .saturating_add(timeout_ms(destination).saturating_mul(i64::from(rounds) + 1))
}

/// How a delivery gets to run: a slot it holds (claimed from the store), or a ticket for one
/// (handed over by ingest, waiting in its lane's line).
pub enum Admission {
    /// Runs now.
    Slot(Slot),
    /// Runs when the lane has room.
    Ticket(Ticket),
}

/// A delivery and its event, ready for a worker.
pub struct Work {
    /// The claimed delivery.
    pub job: Job,
    /// Its event.
    pub event: SharedEvent,
    /// Its slot (freed when the attempt is recorded), or its ticket for one.
    pub admission: Admission,
    /// The attempt is its destination's half-open probe.
    pub probe: bool,
}

/// What the dispatcher is told.
enum Notice {
    /// A delivery to start now (a hand-off from ingest).
    Start(Work),
    /// Deliveries of a destination wait in the store, due at this time (unix ms).
    Queued(ObjectKey, i64),
}

/// The handle ingest and the API use: hand-off of new deliveries, the queue's wake-up, and
/// the circuits.
#[derive(Clone)]
pub struct Dispatcher {
    notices: mpsc::UnboundedSender<Notice>,
    /// Wakes the dispatcher to look at the queue now.
    pub wake: Arc<Notify>,
    /// Circuit breakers.
    pub circuits: Arc<Circuits>,
    lanes: Arc<Lanes>,
    config: ConfigHandle,
}

/// A place in its lane for a new delivery, and the lease to store it with.
pub struct HandOff {
    /// Its place in the lane.
    pub ticket: Ticket,
    /// Its claim expiry.
    pub lease_until: i64,
}

impl Dispatcher {
    /// A place for a new delivery to `key` to go straight to a worker once stored: its
    /// circuit is closed, nothing of it waits in the store, and its lane's line is short.
    /// `None`: it is stored to wait in the queue.
    pub fn hand_off(&self, key: &ObjectKey, now: i64) -> Option<HandOff> {
        if !self.circuits.is_closed(key) {
            return None;
        }
        let config = self.config.borrow().clone();
        let destination = config.destinations.get(key)?;
        let ticket = self.lanes.hand_off(key, destination)?;
        Some(HandOff {
            lease_until: hand_off_lease(destination, ticket.rounds_ahead(), now),
            ticket,
        })
    }

    /// Starts a delivery that was stored already claimed.
    pub fn start(&self, work: Work) {
        // The dispatcher only stops at shutdown; the claim then expires.
        let _ = self.notices.send(Notice::Start(work));
    }

    /// Says that deliveries of `key` wait in the store, due at `due_at`.
    pub fn queued(&self, key: ObjectKey, due_at: i64) {
        let _ = self.notices.send(Notice::Queued(key, due_at));
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
    /// Where deliveries may connect.
    pub egress: std::sync::Arc<provider::egress::Egress>,
    /// The worker processes transforms run in.
    pub sandbox: std::sync::Arc<Sandbox>,
    /// WebSocket subscribers, for `websocket` Destinations.
    pub hub: std::sync::Arc<provider::websocket::Hub>,
}

/// What workers share.
struct Shared {
    store: SharedStore,
    config: ConfigHandle,
    metrics: Metrics,
    providers: Providers,
    circuits: Arc<Circuits>,
    lanes: Arc<Lanes>,
    sandbox: Arc<Sandbox>,
    dispatcher: Dispatcher,
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
    let lanes = Arc::new(Lanes::new(setup.max_in_flight));
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher {
        notices,
        wake,
        circuits: circuits.clone(),
        lanes: lanes.clone(),
        config: setup.config.clone(),
    };
    let shared = Arc::new(Shared {
        store: setup.store,
        config: setup.config,
        metrics: setup.metrics,
        providers: Providers::new(setup.egress.clone(), setup.hub.clone())?,
        circuits,
        lanes,
        sandbox: setup.sandbox.clone(),
        dispatcher: dispatcher.clone(),
    });
    tokio::spawn(forget_deleted_destinations(
        shared.clone(),
        shutdown.clone(),
    ));
    let handle = tokio::spawn(dispatcher::run(
        shared,
        notices_rx,
        setup.shutdown_grace,
        shutdown,
    ));
    Ok((dispatcher, handle))
}

/// After each config change, the providers drop what they keep for Destinations that are
/// gone (clients, producers, connections).
async fn forget_deleted_destinations(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut config = shared.config.clone();
    loop {
        tokio::select! {
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
        let live: std::collections::HashSet<ObjectKey> = config
            .borrow_and_update()
            .destinations
            .keys()
            .cloned()
            .collect();
        shared.providers.retain(&live);
    }
}

/// The destination a job delivers to.
fn destination_of(job: &Job) -> ObjectKey {
    ObjectKey::new(job.namespace.clone(), job.destination.clone())
}
