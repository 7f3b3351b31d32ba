//! Lanes: each destination's own share of the delivery slots. A destination may have at
//! most `concurrency` deliveries in flight and start at most `rateLimit` a second, across the
//! gateway: with several replicas each takes its share (the limit divided by the live
//! replicas, rounded up). A slow, failing or throttled destination fills its own lane and
//! never the slots of another. Every delivery also takes one of the gateway's
//! `--max-in-flight` slots.
//!
//! A lane is *backlogged* while it has deliveries waiting in the store: new deliveries then
//! queue behind them instead of going straight to a worker, so they wait no longer than the
//! backlog ahead of them, in order.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hookstream_crds::config::{DestinationConfig, ObjectKey, DEFAULT_CONCURRENCY};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The right to run one delivery: a slot of its destination's lane and one of the gateway's.
/// Dropping it frees both.
#[derive(Debug)]
pub struct Slot {
    _lane: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// Slots taken for a destination.
#[derive(Debug, Default)]
pub struct Taken {
    /// The slots.
    pub slots: Vec<Slot>,
    /// Set when the destination's rate stopped the taking: when the next one may go.
    pub rate_wait: Option<std::time::Duration>,
}

/// What a lane was built for; a lane is rebuilt when these change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    concurrency: u32,
    rate: Option<u32>,
    replicas: u32,
}

struct Lane {
    shape: Shape,
    permits: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    backlog: AtomicBool,
    /// Handed-off deliveries waiting for a slot of this lane.
    waiting: AtomicU32,
}

impl Lane {
    fn new(shape: Shape) -> Lane {
        let share = |n: u32| n.div_ceil(shape.replicas.max(1)).max(1);
        let limiter = shape.rate.map(|rate| {
            let rate = share(rate);
            let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
            // A tenth of a second's worth at once: smooth, yet claims stay batches.
            let burst = NonZeroU32::new(rate / 10).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
        });
        Lane {
            shape,
            permits: Arc::new(Semaphore::new(share(shape.concurrency) as usize)),
            limiter,
            backlog: AtomicBool::new(false),
            waiting: AtomicU32::new(0),
        }
    }

    fn capacity(&self) -> u32 {
        self.shape
            .concurrency
            .div_ceil(self.shape.replicas.max(1))
            .max(1)
    }
}

/// How many rounds of a lane's attempts handed-off deliveries may wait in its line.
const LINE_ROUNDS: u32 = 8;

/// A new delivery's place in its lane, taken before it is stored (so the store's group commit
/// holds no slot): it waits, in order, for a slot once it is stored.
#[derive(Debug)]
pub struct Ticket {
    lane: Arc<Lane>,
    global: Arc<Semaphore>,
    /// Rounds of the lane's attempts ahead of it, at most.
    rounds: u32,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("shape", &self.shape).finish()
    }
}

impl Ticket {
    /// Rounds of the lane's attempts that may go before this one's (for its lease).
    pub fn rounds_ahead(&self) -> u32 {
        self.rounds
    }

    /// Waits for a slot of the lane and one of the gateway's, first come first served.
    pub async fn slot(self) -> Option<Slot> {
        let own = self.lane.permits.clone().acquire_owned().await.ok()?;
        let global = self.global.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _lane: own,
            _global: global,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.lane.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every destination's lane, and the gateway's slots.
pub struct Lanes {
    lanes: Mutex<HashMap<ObjectKey, Arc<Lane>>>,
    global: Arc<Semaphore>,
    replicas: AtomicU32,
}

impl Lanes {
    /// Lanes under a gateway-wide limit of `max_in_flight` deliveries.
    pub fn new(max_in_flight: usize) -> Lanes {
        Lanes {
            lanes: Mutex::new(HashMap::new()),
            global: Arc::new(Semaphore::new(max_in_flight)),
            replicas: AtomicU32::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, Arc<Lane>>> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always consistent.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how many replicas share the limits (each takes its share).
    pub fn set_replicas(&self, replicas: u32) {
        self.replicas.store(replicas.max(1), Ordering::Relaxed);
    }

    /// The lane of `key`, (re)built for `destination`'s limits, or the defaults for a
    /// destination that is no longer configured (its deliveries are claimed to be cancelled).
    fn lane(&self, key: &ObjectKey, destination: Option<&DestinationConfig>) -> Arc<Lane> {
        let shape = Shape {
            concurrency: destination.map_or(DEFAULT_CONCURRENCY, |d| d.concurrency),
            rate: destination.and_then(|d| d.rate_limit),
            replicas: self.replicas.load(Ordering::Relaxed),
        };
        let mut lanes = self.lock();
        match lanes.get(key) {
            Some(lane) if lane.shape == shape => lane.clone(),
            previous => {
                let lane = Arc::new(Lane::new(shape));
                // A rebuilt lane keeps knowing that deliveries wait.
                let backlog = previous.is_some_and(|p| p.backlog.load(Ordering::Relaxed));
                lane.backlog.store(backlog, Ordering::Relaxed);
                lanes.insert(key.clone(), lane.clone());
                lane
            }
        }
    }

    /// Up to `want` slots for `key`, as many as its lane, the gateway and the rate allow now.
    pub fn take(
        &self,
        key: &ObjectKey,
        destination: Option<&DestinationConfig>,
        want: u32,
    ) -> Taken {
        let lane = self.lane(key, destination);
        let mut taken = Taken::default();
        while taken.slots.len() < want as usize {
            let Ok(own) = lane.permits.clone().try_acquire_owned() else {
                break;
            };
            let Ok(global) = self.global.clone().try_acquire_owned() else {
                break;
            };
            if let Some(limiter) = &lane.limiter {
                if let Err(not_until) = limiter.check() {
                    let clock = governor::clock::DefaultClock::default();
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                    taken.rate_wait = Some(wait);
                    break;
                }
            }
            taken.slots.push(Slot {
                _lane: own,
                _global: global,
            });
        }
        taken
    }

    /// A place in `key`'s lane for a new delivery to go straight to a worker once stored:
    /// only when nothing of `key` waits in the store ahead of it, the destination has no rate
    /// limit, and the lane's line is shorter than a few rounds of its attempts (the ticket
    /// says how many, for the lease). `None`: it is stored to wait in the queue.
    pub fn hand_off(&self, key: &ObjectKey, destination: &DestinationConfig) -> Option<Ticket> {
        let lane = self.lane(key, Some(destination));
        // A paced destination takes its deliveries from the queue, in order, as the rate
        // allows; so does one with deliveries waiting there.
        if lane.limiter.is_some() || lane.backlog.load(Ordering::Relaxed) {
            return None;
        }
        let waiting = lane.waiting.fetch_add(1, Ordering::Relaxed);
        let capacity = lane.capacity();
        let ticket = Ticket {
            lane: lane.clone(),
            global: self.global.clone(),
            rounds: waiting / capacity,
        };
        (waiting < capacity * LINE_ROUNDS).then_some(ticket)
    }

    /// Whether deliveries of `key` wait in the store.
    pub fn is_backlogged(&self, key: &ObjectKey) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|l| l.backlog.load(Ordering::Relaxed))
    }

    /// Records whether deliveries of `key` wait in the store.
    pub fn set_backlog(&self, key: &ObjectKey, destination: Option<&DestinationConfig>, on: bool) {
        self.lane(key, destination)
            .backlog
            .store(on, Ordering::Relaxed);
    }

    /// Deliveries the gateway may still start.
    pub fn free(&self) -> usize {
        self.global.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(concurrency: u32, rate: Option<u32>) -> DestinationConfig {
        let mut d: DestinationConfig = serde_json::from_value(serde_json::json!({
            "key": {"namespace": "t", "name": "d"},
            "kind": "http",
            "retry": {"max_retries": 1, "backoff": "fixed", "intervals_ms": [1000]},
            "circuit": {"failure_threshold": 5, "cooldown_ms": 1000},
        }))
        .expect("a destination config");
        d.concurrency = concurrency;
        d.rate_limit = rate;
        d
    }

    #[test]
    fn a_lane_gives_at_most_its_concurrency_and_frees_slots_on_drop() {
        let lanes = Lanes::new(100);
        let key = ObjectKey::new("t", "d");
        let d = destination(3, None);
        let slots = lanes.take(&key, Some(&d), 10).slots;
        assert_eq!(slots.len(), 3);
        assert!(
            lanes.take(&key, Some(&d), 1).slots.is_empty(),
            "the lane is full"
        );
        let other = ObjectKey::new("t", "other");
        assert_eq!(
            lanes.take(&other, Some(&d), 2).slots.len(),
            2,
            "another lane is not held back"
        );
        drop(slots);
        assert_eq!(lanes.take(&key, Some(&d), 10).slots.len(), 3);
    }

    #[test]
    fn replicas_share_the_limits() {
        let lanes = Lanes::new(100);
        lanes.set_replicas(3);
        let key = ObjectKey::new("t", "d");
        assert_eq!(
            lanes
                .take(&key, Some(&destination(32, None)), 100)
                .slots
                .len(),
            11
        );
    }

    #[test]
    fn the_rate_limit_stops_a_burst() {
        let lanes = Lanes::new(100);
        let key = ObjectKey::new("t", "d");
        let taken = lanes.take(&key, Some(&destination(50, Some(50))), 50);
        assert_eq!(taken.slots.len(), 5, "a tenth of a second's worth");
        assert!(taken.rate_wait.is_some(), "and when the next may go");
    }

    #[test]
    fn a_backlogged_lane_hands_nothing_off() {
        let lanes = Lanes::new(100);
        let key = ObjectKey::new("t", "d");
        let d = destination(3, None);
        lanes.set_backlog(&key, Some(&d), true);
        assert!(lanes.hand_off(&key, &d).is_none());
        lanes.set_backlog(&key, Some(&d), false);
        assert!(lanes.hand_off(&key, &d).is_some());
    }

    #[tokio::test]
    async fn hand_offs_wait_in_line_and_the_line_is_as_long_as_the_lane() {
        let lanes = Lanes::new(100);
        let key = ObjectKey::new("t", "d");
        let d = destination(2, None);
        let tickets: Vec<Ticket> = (0..2 * LINE_ROUNDS)
            .map(|_| lanes.hand_off(&key, &d).unwrap())
            .collect();
        assert_eq!(tickets[0].rounds_ahead(), 0);
        assert_eq!(
            tickets[2].rounds_ahead(),
            1,
            "two ahead in a lane of two: one round"
        );
        assert!(lanes.hand_off(&key, &d).is_none(), "the line is full");
        let held = lanes.take(&key, Some(&d), 2).slots;
        assert_eq!(held.len(), 2, "tickets hold no slot while they wait");
        let mut tickets = tickets.into_iter();
        let first = tokio::spawn(tickets.next().unwrap().slot());
        tokio::task::yield_now().await;
        assert!(!first.is_finished(), "no slot is free");
        drop(held);
        assert!(
            first.await.unwrap().is_some(),
            "a freed slot goes to the first in line"
        );
        drop(tickets);
        assert!(
            lanes.hand_off(&key, &d).is_some(),
            "the line has room again"
        );
    }
}
