//! Failure budgets per client address: how many failed attempts (a signature that does not
//! verify, a wrong API key) one client may make per minute before it is refused without
//! being checked at all.
//!
//! Failures are counted by governor's keyed rate limiter. Once a client's budget is spent,
//! the client is put in a penalty box until the limiter has room for another failure; while
//! it is there, [`ClientThrottle::check`] refuses it at once, before any costly check. A
//! client that succeeds spends nothing. IPv6 clients are keyed by their /64, which is what
//! one host usually holds. Entries that have nothing left to remember are dropped as failures
//! arrive, so memory follows the failing clients of about the last minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// After this many failures (from anyone) the tables are swept of entries that hold nothing.
const SWEEP_EVERY: u64 = 1024;

/// A per-client failure budget.
pub struct ClientThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: DashMap<IpAddr, Instant>,
    clock: DefaultClock,
    counted: AtomicU64,
}

impl ClientThrottle {
    /// A budget of `failures` per minute per client (all of it may be spent at once).
    pub fn per_minute(failures: NonZeroU32) -> ClientThrottle {
        ClientThrottle {
            failures: RateLimiter::dashmap(Quota::per_minute(failures)),
            blocked: DashMap::new(),
            clock: DefaultClock::default(),
            counted: AtomicU64::new(0),
        }
    }

    /// `Err` with how long to wait while `client` has no failure budget left.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let key = key(client);
        let until = match self.blocked.get(&key) {
            Some(until) => *until,
            None => return Ok(()),
        };
        let now = Instant::now();
        if until > now {
            return Err(until - now);
        }
        self.blocked.remove_if(&key, |_, u| *u <= now);
        Ok(())
    }

    /// Counts a failure of `client`; returns true when it went over its budget, and is refused
    /// by [`ClientThrottle::check`] from now until the budget has room again.
    pub fn failed(&self, client: IpAddr) -> bool {
        let key = key(client);
        if self.counted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        match self.failures.check_key(&key) {
            Ok(_) => false,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.blocked.insert(key, Instant::now() + wait);
                true
            }
        }
    }

    /// Drops entries that hold nothing any more: budgets that are full again and penalties
    /// that are over.
    pub fn sweep(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.shrink_to_fit();
    }

    /// How many clients the tables remember.
    pub fn tracked(&self) -> usize {
        self.failures.len().max(self.blocked.len())
    }
}

/// The key of a client: IPv4 addresses as they are, IPv6 addresses by their /64.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Seconds to put in `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_a_client_only_after_its_budget_is_spent() {
        let t = ClientThrottle::per_minute(NonZeroU32::new(3).unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!t.failed(a));
        assert!(!t.failed(a));
        assert!(!t.failed(a));
        assert!(
            t.check(a).is_ok(),
            "three failures spend the budget, not more"
        );
        assert!(t.failed(a));
        let wait = t.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20));
        assert!(t.check(b).is_ok(), "another client has its own budget");
    }

    #[test]
    fn keys_ipv6_clients_by_their_64() {
        let t = ClientThrottle::per_minute(NonZeroU32::new(1).unwrap());
        t.failed("2001:db8::1".parse().unwrap());
        t.failed("2001:db8::2".parse().unwrap());
        assert!(t.check("2001:db8::3".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:0:1::3".parse().unwrap()).is_ok());
    }

    #[test]
    fn sweeping_forgets_clients_with_nothing_to_remember() {
        let t = ClientThrottle::per_minute(NonZeroU32::new(60_000).unwrap());
        for i in 0..100u8 {
            t.failed(IpAddr::from([10, 0, 1, i]));
        }
        assert_eq!(t.tracked(), 100);
        // 60,000 a minute refills one failure per millisecond.
        std::thread::sleep(Duration::from_millis(20));
        t.sweep();
        assert_eq!(t.tracked(), 0);
    }
}
