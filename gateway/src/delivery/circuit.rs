//! Per-destination circuit breakers, one circuit per destination for the whole gateway.
//!
//! Closed: deliveries flow and consecutive failures are counted. Open (after
//! `failureThreshold` failures in a row, from any replica): deliveries wait in the queue,
//! neither attempted nor dropped. When the cooldown has passed one probe goes out (half-open;
//! one for the whole gateway): success closes the circuit and the waiting deliveries go out
//! in order, at the destination's concurrency; failure opens it again for another cooldown.
//!
//! The state lives in the store and every change is one atomic statement there; this module
//! keeps a copy for the hot path (is the circuit closed?) that is refreshed from the store
//! about once a second, so a change made by another replica is seen within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hookstream_crds::config::{CircuitConfig, ObjectKey};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::{error_chain, CircuitChange, CircuitRow, CircuitState, SharedStore, StoreError};

/// The circuit state gauge's value.
fn gauge(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

/// What the dispatcher may do with a destination's waiting deliveries now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Claim them.
    Closed,
    /// Claim one, as the probe: this caller won the half-open turn.
    Probe,
    /// Leave them waiting.
    Wait,
}

/// A circuit as the API and status show it.
#[derive(Clone, Debug)]
pub struct View {
    /// State.
    pub state: CircuitState,
    /// Failures in a row.
    pub failure_count: u32,
    /// Last failure, unix ms.
    pub last_failure_at: Option<i64>,
    /// When it opened, unix ms.
    pub opened_at: Option<i64>,
}

/// Every destination's circuit.
pub struct Circuits {
    cache: Mutex<HashMap<ObjectKey, CircuitRow>>,
    store: SharedStore,
    metrics: Metrics,
    /// Woken when a circuit closes, so waiting deliveries are claimed at once.
    wake: Arc<Notify>,
}

impl Circuits {
    /// Circuits as the store has them.
    pub fn new(
        rows: Vec<CircuitRow>,
        store: SharedStore,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Circuits {
        let circuits = Circuits {
            cache: Mutex::new(HashMap::new()),
            store,
            metrics,
            wake,
        };
        for row in rows {
            circuits.apply(row);
        }
        circuits
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, CircuitRow>> {
        // A poisoned lock only means another thread panicked mid-update; each update is a
        // whole-row replace, so the map is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in a row read from (or returned by) the store: logs and counts transitions, and
    /// wakes the dispatcher when the circuit closed.
    fn apply(&self, row: CircuitRow) {
        let key = ObjectKey::new(row.namespace.clone(), row.destination.clone());
        let state = row.state;
        let before = self
            .lock()
            .insert(key.clone(), row.clone())
            .map(|r| r.state);
        self.metrics
            .circuit_state
            .with_label_values(&[&key.to_string()])
            .set(gauge(state));
        if before == Some(state) || (before.is_none() && state == CircuitState::Closed) {
            return;
        }
        match state {
            CircuitState::Open => {
                warn!(destination = %key, failures = row.consecutive_failures, "circuit opened")
            }
            CircuitState::HalfOpen => {
                info!(destination = %key, "circuit half-open: a probe goes out")
            }
            CircuitState::Closed => {
                info!(destination = %key, "circuit closed");
                self.wake.notify_one();
            }
        }
    }

    /// Reloads every circuit from the store (changes made by other replicas).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        for row in self.store.circuits().await? {
            self.apply(row);
        }
        Ok(())
    }

    /// Whether deliveries to `key` may go out now (an unknown circuit is closed).
    pub fn is_closed(&self, key: &ObjectKey) -> bool {
        self.lock()
            .get(key)
            .is_none_or(|r| r.state == CircuitState::Closed)
    }

    /// Whether the dispatcher may claim `key`'s deliveries: all of them (closed), one as the
    /// probe (this caller won the half-open turn), or none. `probe_timeout_ms` is how long a
    /// probe may be out before another is sent.
    pub async fn gate(
        &self,
        key: &ObjectKey,
        config: &CircuitConfig,
        probe_timeout_ms: i64,
        now: i64,
    ) -> Gate {
        let due = match self.lock().get(key) {
            None => return Gate::Closed,
            Some(r) => match r.state {
                CircuitState::Closed => return Gate::Closed,
                CircuitState::Open => {
                    let cooldown = i64::try_from(config.cooldown_ms).unwrap_or(i64::MAX);
                    r.opened_at.unwrap_or(0).saturating_add(cooldown) <= now
                }
                CircuitState::HalfOpen => {
                    r.probe_at.unwrap_or(0).saturating_add(probe_timeout_ms) <= now
                }
            },
        };
        if !due {
            return Gate::Wait;
        }
        let change = CircuitChange::TryProbe {
            cooldown_ms: i64::try_from(config.cooldown_ms).unwrap_or(i64::MAX),
            probe_timeout_ms,
            now,
        };
        match self
            .store
            .change_circuit(&key.namespace, &key.name, change)
            .await
        {
            Ok(Some(row)) => {
                self.apply(row);
                Gate::Probe
            }
            Ok(None) => Gate::Wait,
            Err(e) => {
                warn!(destination = %key, error = %error_chain(&e), "cannot take the circuit probe");
                Gate::Wait
            }
        }
    }

    /// Records the result of an attempt.
    pub async fn record(
        &self,
        key: &ObjectKey,
        config: &CircuitConfig,
        success: bool,
        was_probe: bool,
        now: i64,
    ) {
        let change = if success {
            let clean = self
                .lock()
                .get(key)
                .is_none_or(|r| r.state == CircuitState::Closed && r.consecutive_failures == 0);
            if clean && !was_probe {
                return;
            }
            CircuitChange::Close
        } else {
            CircuitChange::Failure {
                threshold: config.failure_threshold,
                was_probe,
                now,
            }
        };
        self.change(key, change).await;
    }

    /// Gives back a probe that was not attempted (its payload could not be made).
    pub async fn release_probe(&self, key: &ObjectKey) {
        self.change(key, CircuitChange::ReleaseProbe).await;
    }

    async fn change(&self, key: &ObjectKey, change: CircuitChange) {
        match self
            .store
            .change_circuit(&key.namespace, &key.name, change)
            .await
        {
            Ok(Some(row)) => self.apply(row),
            Ok(None) => {}
            Err(e) => {
                warn!(destination = %key, error = %error_chain(&e), "cannot record the circuit")
            }
        }
    }

    /// Closes the circuit by hand: waiting deliveries go out in order.
    pub async fn reset(&self, key: &ObjectKey) -> Result<View, StoreError> {
        if let Some(row) = self
            .store
            .change_circuit(&key.namespace, &key.name, CircuitChange::Close)
            .await?
        {
            self.apply(row);
        }
        Ok(self.view(key))
    }

    /// The circuit of `key`.
    pub fn view(&self, key: &ObjectKey) -> View {
        match self.lock().get(key) {
            Some(r) => View {
                state: r.state,
                failure_count: r.consecutive_failures,
                last_failure_at: r.last_failure_at,
                opened_at: r.opened_at,
            },
            None => View {
                state: CircuitState::Closed,
                failure_count: 0,
                last_failure_at: None,
                opened_at: None,
            },
        }
    }
}
