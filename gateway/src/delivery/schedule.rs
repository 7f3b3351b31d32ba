//! What follows a failed attempt: a retry at a time the destination's retry policy (and a
//! `Retry-After` it sent) sets, or dead-lettering once the retries are used up or the failure
//! is permanent. Pure: no clock, no I/O.

use std::time::Duration;

use hookstream_crds::config::RetryConfig;

/// The delivery's next step after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (unix ms).
    Retry {
        /// Due time.
        due_at: i64,
    },
    /// Give up: dead-letter the delivery (kept, visible, retryable by hand).
    DeadLetter,
}

/// The step after failed attempt number `round` of the current round (1-based; a manual retry
/// starts a new round) at `now`.
pub fn after_failure(
    retry: &RetryConfig,
    round: u32,
    permanent: bool,
    retry_after: Option<Duration>,
    now: i64,
) -> Next {
    if permanent || round > retry.max_retries {
        return Next::DeadLetter;
    }
    let backoff = retry.delay_ms(round);
    // Retry-After can only lengthen the wait: a `Retry-After: 0` must not burn the retries.
    let delay = retry_after.map_or(backoff, |d| {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .max(backoff)
    });
    Next::Retry {
        due_at: now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::v1alpha1::Backoff;

    fn policy(max_retries: u32) -> RetryConfig {
        RetryConfig {
            max_retries,
            backoff: Backoff::Exponential,
            intervals_ms: vec![1_000, 10_000],
        }
    }

    #[test]
    fn retries_follow_the_intervals_then_dead_letter() {
        let p = policy(2);
        assert_eq!(
            after_failure(&p, 1, false, None, 0),
            Next::Retry { due_at: 1_000 }
        );
        assert_eq!(
            after_failure(&p, 2, false, None, 0),
            Next::Retry { due_at: 10_000 }
        );
        assert_eq!(after_failure(&p, 3, false, None, 0), Next::DeadLetter);
    }

    #[test]
    fn permanent_failures_dead_letter_at_once() {
        assert_eq!(
            after_failure(&policy(5), 1, true, None, 0),
            Next::DeadLetter
        );
    }

    #[test]
    fn retry_after_only_lengthens_the_wait() {
        let p = policy(2);
        let short = Some(Duration::ZERO);
        let long = Some(Duration::from_secs(60));
        assert_eq!(
            after_failure(&p, 1, false, short, 5),
            Next::Retry { due_at: 1_005 }
        );
        assert_eq!(
            after_failure(&p, 1, false, long, 5),
            Next::Retry { due_at: 60_005 }
        );
    }
}
