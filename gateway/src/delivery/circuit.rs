//! Per-destination circuit breakers.
//!
//! Closed: deliveries flow and consecutive failures are counted. Open (after
//! `failureThreshold` failures in a row): deliveries wait in the queue, neither attempted
//! nor dropped. When the cooldown has passed one probe goes out (half-open): success closes
//! the circuit and the queue drains in order; failure opens it again for another cooldown.
//!
//! Draining: after a circuit closes (a successful probe or a manual reset), the deliveries
//! that waited go out one at a time, oldest first, so that they arrive in the order they were
//! queued. New deliveries queue behind them until nothing is due any more; then deliveries
//! flow concurrently again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hookstream_crds::config::{CircuitConfig, ObjectKey};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::{CircuitRow, CircuitState as State, SharedStore};

/// The circuit state gauge's value.
fn gauge(state: State) -> i64 {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

/// What a worker may do with a delivery for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Attempt it.
    Allow,
    /// Attempt it as the half-open probe; report the result with `was_probe = true`.
    Probe,
    /// Do not attempt it; it goes back to the queue.
    Wait,
}

/// A circuit as the API and status show it.
#[derive(Clone, Debug)]
pub struct View {
    /// `closed`, `open` or `half_open`.
    pub state: State,
    /// Failures in a row.
    pub failure_count: u32,
    /// Last failure, unix ms.
    pub last_failure_at: Option<i64>,
    /// When it opened, unix ms.
    pub opened_at: Option<i64>,
}

#[derive(Clone, Debug)]
struct Breaker {
    state: State,
    failures: u32,
    opened_at: Option<i64>,
    last_failure_at: Option<i64>,
    probe_out: bool,
    /// Closed after being open: waiting deliveries go out one at a time.
    draining: bool,
    /// When the drain began: only deliveries due by then drain one by one; later ones
    /// flow normally once the drain is over, so a steady stream cannot prolong it.
    drain_cutoff: i64,
    /// The delivery being attempted by the drain.
    drain_out: Option<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            opened_at: None,
            last_failure_at: None,
            probe_out: false,
            draining: false,
            drain_cutoff: 0,
            drain_out: None,
        }
    }
}

/// Destinations whose deliveries the dispatcher must not claim in bulk right now.
#[derive(Debug, Default)]
pub struct Blocked {
    /// Destinations (namespace, name) excluded from bulk claims.
    pub exclude: Vec<(String, String)>,
    /// Open circuits with no probe out.
    pub probe_ready: Vec<ObjectKey>,
    /// Draining circuits with no delivery out, with their cutoff: claim their oldest
    /// delivery due by the cutoff.
    pub drain_ready: Vec<(ObjectKey, i64)>,
}

/// Every destination's breaker.
pub struct Circuits {
    breakers: Mutex<HashMap<ObjectKey, Breaker>>,
    store: SharedStore,
    metrics: Metrics,
    /// Woken when a circuit closes, so waiting deliveries are claimed at once.
    pub wake: Arc<Notify>,
}

impl Circuits {
    /// Breakers restored from persisted rows.
    pub fn new(
        rows: Vec<CircuitRow>,
        store: SharedStore,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Circuits {
        let mut breakers = HashMap::new();
        for row in rows {
            let state = match row.state {
                // A probe that was out when the process stopped is lost: open again, with the
                // cooldown already elapsed so a new probe goes out at once.
                State::HalfOpen => State::Open,
                s => s,
            };
            metrics
                .circuit_state
                .with_label_values(&[&format!("{}/{}", row.namespace, row.destination)])
                .set(gauge(state));
            breakers.insert(
                ObjectKey::new(row.namespace, row.destination),
                Breaker {
                    state,
                    failures: row.consecutive_failures,
                    opened_at: row.opened_at,
                    last_failure_at: row.last_failure_at,
                    probe_out: false,
                    draining: false,
                    drain_cutoff: 0,
                    drain_out: None,
                },
            );
        }
        Circuits {
            breakers: Mutex::new(breakers),
            store,
            metrics,
            wake,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, Breaker>> {
        // A poisoned lock only means another thread panicked mid-update; the map is still
        // usable (each update is a plain field assignment).
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether a delivery to `key` may be attempted now.
    pub fn decide(&self, key: &ObjectKey, config: &CircuitConfig, now: i64) -> Decision {
        let mut map = self.lock();
        let Some(b) = map.get_mut(key) else {
            return Decision::Allow;
        };
        match b.state {
            State::Closed => Decision::Allow,
            State::HalfOpen => Decision::Wait,
            State::Open => {
                let cooled = b
                    .opened_at
                    .is_none_or(|at| now >= at.saturating_add(config.cooldown_ms as i64));
                if cooled && !b.probe_out {
                    b.state = State::HalfOpen;
                    b.probe_out = true;
                    let row = row_of(key, b);
                    drop(map);
                    self.changed(key, State::HalfOpen, row);
                    Decision::Probe
                } else {
                    Decision::Wait
                }
            }
        }
    }

    /// Records the result of an attempt.
    pub fn record(
        &self,
        key: &ObjectKey,
        config: &CircuitConfig,
        success: bool,
        was_probe: bool,
        now: i64,
    ) {
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_default();
        let before = b.state;
        if was_probe {
            b.probe_out = false;
        }
        if success {
            b.failures = 0;
            if b.state != State::Closed {
                b.draining = true;
                b.drain_cutoff = now;
            }
            b.state = State::Closed;
            b.opened_at = None;
        } else {
            b.failures = b.failures.saturating_add(1);
            b.last_failure_at = Some(now);
            if was_probe || b.failures >= config.failure_threshold {
                if b.state != State::Open || was_probe {
                    b.opened_at = Some(now);
                }
                b.state = State::Open;
                b.draining = false;
            }
        }
        let after = b.state;
        let row = row_of(key, b);
        drop(map);
        if before != after {
            self.changed(key, after, row);
        } else if !success || was_probe {
            self.persist(row);
        }
    }

    /// Gives back a probe slot that was not used (the delivery was not attempted).
    pub fn release_probe(&self, key: &ObjectKey) {
        let mut map = self.lock();
        if let Some(b) = map.get_mut(key) {
            if b.probe_out {
                b.probe_out = false;
                b.state = State::Open;
            }
        }
    }

    /// Closes the circuit by hand.
    pub fn reset(&self, key: &ObjectKey) -> View {
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_default();
        let was_closed = b.state == State::Closed;
        let drain_cutoff = if was_closed { b.drain_cutoff } else { now_ms() };
        *b = Breaker {
            draining: !was_closed || b.draining,
            drain_cutoff,
            // A drain delivery still in flight finishes on its own; the drain does not wait
            // for it, so a lost one can never hold the destination.
            drain_out: None,
            ..Breaker::default()
        };
        let row = row_of(key, b);
        drop(map);
        self.changed(key, State::Closed, row);
        self.view(key)
    }

    /// The circuit of `key`.
    pub fn view(&self, key: &ObjectKey) -> View {
        let map = self.lock();
        let b = map.get(key).cloned().unwrap_or_default();
        View {
            state: b.state,
            failure_count: b.failures,
            last_failure_at: b.last_failure_at,
            opened_at: b.opened_at,
        }
    }

    /// Destinations whose deliveries must not be claimed in bulk now, those ready for a
    /// probe (open, cooldown over, `cooldown_ms` gives each destination's cooldown) and
    /// those ready for their next drain delivery.
    pub fn blocked(&self, now: i64, cooldown_ms: impl Fn(&ObjectKey) -> Option<u64>) -> Blocked {
        let map = self.lock();
        let mut out = Blocked::default();
        for (key, b) in map.iter() {
            if b.state != State::Closed || b.draining {
                out.exclude.push((key.namespace.clone(), key.name.clone()));
                // A removed destination counts as cooled down: its deliveries are claimed
                // and cancelled rather than left waiting.
                let cooled = match (b.opened_at, cooldown_ms(key)) {
                    (Some(at), Some(cooldown)) => {
                        now >= at.saturating_add(i64::try_from(cooldown).unwrap_or(i64::MAX))
                    }
                    _ => true,
                };
                if b.state == State::Open && !b.probe_out && cooled {
                    out.probe_ready.push(key.clone());
                }
                if b.state == State::Closed && b.drain_out.is_none() {
                    out.drain_ready.push((key.clone(), b.drain_cutoff));
                }
            }
        }
        out
    }

    /// Whether new deliveries to `key` must queue instead of going straight to a worker:
    /// the circuit is not closed, or waiting deliveries are still draining in order.
    pub fn is_blocked(&self, key: &ObjectKey) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|b| b.state != State::Closed || b.draining)
    }

    /// The drain of `key` claimed `delivery_id`; the next waits until it is finished.
    pub fn drain_claimed(&self, key: &ObjectKey, delivery_id: &str) {
        if let Some(b) = self.lock().get_mut(key) {
            if b.draining {
                b.drain_out = Some(delivery_id.to_owned());
            }
        }
    }

    /// Nothing of `key` is due any more: the drain is over and deliveries flow again.
    pub fn drain_finished(&self, key: &ObjectKey) {
        if let Some(b) = self.lock().get_mut(key) {
            if b.drain_out.is_none() {
                b.draining = false;
            }
        }
    }

    /// A worker is done with `delivery_id` of `key` (attempted, released or cancelled).
    /// Returns whether it was the drain's delivery, so that the next one may be claimed.
    pub fn finished(&self, key: &ObjectKey, delivery_id: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(b) if b.drain_out.as_deref() == Some(delivery_id) => {
                b.drain_out = None;
                true
            }
            _ => false,
        }
    }

    fn changed(&self, key: &ObjectKey, state: State, row: CircuitRow) {
        match state {
            State::Open => {
                warn!(destination = %key, failures = row.consecutive_failures, "circuit opened")
            }
            State::HalfOpen => info!(destination = %key, "circuit half-open: sending a probe"),
            State::Closed => {
                info!(destination = %key, "circuit closed");
                self.wake.notify_one();
            }
        }
        self.metrics
            .circuit_state
            .with_label_values(&[&key.to_string()])
            .set(gauge(state));
        self.persist(row);
    }

    fn persist(&self, row: CircuitRow) {
        self.store.save_circuit(row);
    }
}

fn row_of(key: &ObjectKey, b: &Breaker) -> CircuitRow {
    CircuitRow {
        namespace: key.namespace.clone(),
        destination: key.name.clone(),
        state: b.state,
        consecutive_failures: b.failures,
        opened_at: b.opened_at,
        last_failure_at: b.last_failure_at,
    }
}
