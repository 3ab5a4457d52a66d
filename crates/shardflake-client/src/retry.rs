//! [`Retry`]: the schedule and the log of an operation retried after failures.
//!
//! Every retry loop of the cluster layer (acquire, renew, reservation extensions, counter
//! blocks, standby polls, the standalone node's state-file writes) waits between attempts with
//! exponential backoff, jittered so that nodes that failed together do not retry together, and
//! capped so that recovery is noticed soon. It logs once per change of state — the first
//! failure, a different failure, the recovery — not once per attempt, so a coordinator that is
//! down for an hour costs a handful of log lines, not a million.
//!
//! The schedule is written here rather than taken from a crate because the jitter must come
//! from a seedable generator ([`FastRng`]) so that a deterministic simulation can replay it, and
//! because the loops it serves are `select!` state machines that need a delay, not a wrapper
//! around a future.

use std::fmt::Display;
use std::time::Duration;

use shardflake::FastRng;

/// An operation's retry schedule and log state.
///
/// ```
/// use std::time::Duration;
/// use shardflake_client::Retry;
/// let mut r = Retry::new("renewal", Duration::from_millis(10), Duration::from_millis(200));
/// let d1 = r.failed("unavailable", &"connection refused");
/// let d2 = r.failed("unavailable", &"connection refused");
/// assert!(d1 >= Duration::from_millis(5) && d1 <= Duration::from_millis(10));
/// assert!(d2 >= Duration::from_millis(10) && d2 <= Duration::from_millis(20));
/// for _ in 0..20 {
///     assert!(r.failed("unavailable", &"still refused") <= Duration::from_millis(200));
/// }
/// assert_eq!(r.failures(), 22);
/// r.succeeded();
/// assert_eq!(r.failures(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    what: &'static str,
    min: Duration,
    max: Duration,
    failures: u32,
    /// The kind of the last failure logged, `None` while the operation succeeds.
    state: Option<String>,
    rng: FastRng,
}

impl Retry {
    /// A schedule from `min` doubling up to `max`, for the operation `what` (used in logs).
    pub fn new(what: &'static str, min: Duration, max: Duration) -> Self {
        Self::with_rng(what, min, max, FastRng::from_os())
    }

    /// [`Retry::new`] with a given jitter source, for reproducible schedules.
    pub fn with_rng(what: &'static str, min: Duration, max: Duration, rng: FastRng) -> Self {
        Self {
            what,
            min: min.max(Duration::from_millis(1)),
            max: max.max(min),
            failures: 0,
            state: None,
            rng,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt, without recording a failure.
    fn delay(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let cap = self.min.saturating_mul(1u32 << exp).min(self.max);
        // "Equal jitter": half the cap, plus a random part of the other half, so the delay
        // still grows while retries of different nodes spread out.
        let half = cap / 2;
        let spread = (cap - half).as_micros() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.rng.next_u64() % (spread + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Records a failure of kind `kind` (an error code, "unavailable", ...) and returns how
    /// long to wait before the next attempt. Logs at warn when the kind differs from the
    /// previous failure's, at debug otherwise.
    pub fn failed(&mut self, kind: &str, error: &dyn Display) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.delay();
        if self.state.as_deref() != Some(kind) {
            tracing::warn!(
                operation = self.what,
                failures = self.failures,
                retry_in_ms = delay.as_millis() as u64,
                "{} failing: {error}; retrying with backoff (logged again when this changes)",
                self.what
            );
            self.state = Some(kind.to_string());
        } else {
            tracing::debug!(operation = self.what, failures = self.failures, %error, "retrying");
        }
        delay
    }

    /// Records a success: logs the recovery once if the operation was failing, and resets the
    /// schedule.
    pub fn succeeded(&mut self) {
        if self.state.take().is_some() {
            tracing::info!(
                operation = self.what,
                after_failures = self.failures,
                "{} works again",
                self.what
            );
        }
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_up_to_the_cap_and_reset_on_success() {
        let mut r = Retry::with_rng(
            "t",
            Duration::from_millis(100),
            Duration::from_millis(2_000),
            FastRng::from_seed(7),
        );
        let delays: Vec<Duration> = (0..10).map(|_| r.failed("x", &"e")).collect();
        for (i, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis((100u64 << i.min(20)).min(2_000));
            assert!(
                *d >= cap / 2 && *d <= cap,
                "attempt {i}: {d:?} vs cap {cap:?}"
            );
        }
        assert!(delays[9] >= Duration::from_millis(1_000));
        r.succeeded();
        let d = r.failed("x", &"e");
        assert!(
            d <= Duration::from_millis(100),
            "reset after success: {d:?}"
        );
        // Two schedules with different seeds do not retry in lockstep.
        let mut a = Retry::with_rng(
            "a",
            Duration::from_millis(100),
            Duration::from_secs(10),
            FastRng::from_seed(1),
        );
        let mut b = Retry::with_rng(
            "b",
            Duration::from_millis(100),
            Duration::from_secs(10),
            FastRng::from_seed(2),
        );
        let da: Vec<_> = (0..8).map(|_| a.failed("x", &"e")).collect();
        let db: Vec<_> = (0..8).map(|_| b.failed("x", &"e")).collect();
        assert_ne!(da, db);
    }
}
