//! Per-destination circuit breakers.
//!
//! Closed: deliveries flow and consecutive failures are counted. Open (after
//! `failureThreshold` failures in a row): deliveries wait in the queue, neither attempted
//! nor dropped. When the cooldown has passed one probe goes out (half-open): success closes
//! the circuit and the queue drains in order; failure opens it again for another cooldown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hookstream_crds::config::{CircuitConfig, ObjectKey};
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::{CircuitRow, Writer};

/// The three states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Deliveries flow.
    Closed,
    /// Deliveries wait.
    Open,
    /// One probe is out.
    HalfOpen,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn parse(text: &str) -> State {
        match text {
            "open" => State::Open,
            "half_open" => State::HalfOpen,
            _ => State::Closed,
        }
    }

    fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
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

/// A circuit as the API shows it.
#[derive(Clone, Debug, Serialize)]
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
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: State::Closed, failures: 0, opened_at: None, last_failure_at: None, probe_out: false }
    }
}

/// Every destination's breaker.
pub struct Circuits {
    breakers: Mutex<HashMap<ObjectKey, Breaker>>,
    writer: Writer,
    metrics: Metrics,
    /// Woken when a circuit closes, so waiting deliveries are claimed at once.
    pub wake: Arc<Notify>,
}

impl Circuits {
    /// Breakers restored from persisted rows.
    pub fn new(rows: Vec<CircuitRow>, writer: Writer, metrics: Metrics, wake: Arc<Notify>) -> Circuits {
        let mut breakers = HashMap::new();
        for row in rows {
            let state = match State::parse(&row.state) {
                // A probe that was out when the process stopped is lost: open again, with the
                // cooldown already elapsed so a new probe goes out at once.
                State::HalfOpen => State::Open,
                s => s,
            };
            metrics.circuit_state.with_label_values(&[&format!("{}/{}", row.namespace, row.destination)]).set(state.gauge());
            breakers.insert(
                ObjectKey::new(row.namespace, row.destination),
                Breaker {
                    state,
                    failures: row.consecutive_failures,
                    opened_at: row.opened_at,
                    last_failure_at: row.last_failure_at,
                    probe_out: false,
                },
            );
        }
        Circuits { breakers: Mutex::new(breakers), writer, metrics, wake }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, Breaker>> {
        // A poisoned lock only means another thread panicked mid-update; the map is still
        // usable (each update is a plain field assignment).
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether a delivery to `key` may be attempted now.
    pub fn decide(&self, key: &ObjectKey, config: &CircuitConfig, now: i64) -> Decision {
        let mut map = self.lock();
        let Some(b) = map.get_mut(key) else { return Decision::Allow };
        match b.state {
            State::Closed => Decision::Allow,
            State::HalfOpen => Decision::Wait,
            State::Open => {
                let cooled = b.opened_at.is_none_or(|at| now >= at.saturating_add(config.cooldown_ms as i64));
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
    pub fn record(&self, key: &ObjectKey, config: &CircuitConfig, success: bool, was_probe: bool, now: i64) {
        let mut map = self.lock();
        let b = map.entry(key.clone()).or_default();
        let before = b.state;
        if was_probe {
            b.probe_out = false;
        }
        if success {
            b.failures = 0;
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
        *b = Breaker::default();
        let row = row_of(key, b);
        drop(map);
        self.changed(key, State::Closed, row);
        self.view(key)
    }

    /// The circuit of `key`.
    pub fn view(&self, key: &ObjectKey) -> View {
        let map = self.lock();
        let b = map.get(key).cloned().unwrap_or_default();
        View { state: b.state, failure_count: b.failures, last_failure_at: b.last_failure_at, opened_at: b.opened_at }
    }

    /// Destinations whose deliveries must not be claimed now, and those ready for a probe.
    pub fn blocked(&self) -> (Vec<(String, String)>, Vec<ObjectKey>) {
        let map = self.lock();
        let mut blocked = Vec::new();
        let mut probe_ready = Vec::new();
        for (key, b) in map.iter() {
            if b.state != State::Closed {
                blocked.push((key.namespace.clone(), key.name.clone()));
                if b.state == State::Open && !b.probe_out {
                    probe_ready.push(key.clone());
                }
            }
        }
        (blocked, probe_ready)
    }

    /// Whether deliveries to `key` would wait right now.
    pub fn is_blocked(&self, key: &ObjectKey) -> bool {
        self.lock().get(key).is_some_and(|b| b.state != State::Closed)
    }

    fn changed(&self, key: &ObjectKey, state: State, row: CircuitRow) {
        match state {
            State::Open => warn!(destination = %key, failures = row.consecutive_failures, "circuit opened"),
            State::HalfOpen => info!(destination = %key, "circuit half-open: sending a probe"),
            State::Closed => {
                info!(destination = %key, "circuit closed");
                self.wake.notify_one();
            }
        }
        self.metrics.circuit_state.with_label_values(&[&key.to_string()]).set(state.gauge());
        self.persist(row);
    }

    fn persist(&self, row: CircuitRow) {
        self.writer.save_circuit(row);
    }
}

fn row_of(key: &ObjectKey, b: &Breaker) -> CircuitRow {
    CircuitRow {
        namespace: key.namespace.clone(),
        destination: key.name.clone(),
        state: b.state.as_str().to_owned(),
        consecutive_failures: b.failures,
        opened_at: b.opened_at,
        last_failure_at: b.last_failure_at,
    }
}
