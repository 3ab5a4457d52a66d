//! The clock abstraction: the only way the library learns the time.
//!
//! Generators are generic over [`Clock`], so production code uses [`SystemClock`] and tests
//! drive a [`ManualClock`] through steps backwards, jumps and drift without touching the
//! system clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in whole milliseconds since the Unix epoch.
///
/// The wall clock may jump in either direction; generators treat it as a hint and enforce
/// uniqueness themselves.
pub trait Clock: Send + Sync {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    fn now_ms(&self) -> u64;

    /// Blocks until [`Clock::now_ms`] reaches `target_ms` (or returns at once if it has).
    ///
    /// Generators call this only on slow paths: a sequence exhausted for the current tick,
    /// or a bounded wait for a clock that stepped back.
    fn wait_until_ms(&self, target_ms: u64);

    /// Whether [`Clock::wait_until_ms`] holds the calling thread while real time passes (the
    /// default). A clock that moves itself to the target instead ([`ManualClock`], a
    /// simulation's clock) answers `false`, and a caller that would move a call that may
    /// wait off an async runtime's thread (a node serving a large batch) can then keep it
    /// where it is, which a deterministic simulation needs: work on another thread finishes
    /// at a moment the simulation does not control.
    fn waits_in_real_time(&self) -> bool {
        true
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
    fn wait_until_ms(&self, target_ms: u64) {
        (**self).wait_until_ms(target_ms)
    }
    fn waits_in_real_time(&self) -> bool {
        (**self).waits_in_real_time()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
    fn wait_until_ms(&self, target_ms: u64) {
        (**self).wait_until_ms(target_ms)
    }
    fn waits_in_real_time(&self) -> bool {
        (**self).waits_in_real_time()
    }
}

/// The operating system's real-time clock (`CLOCK_REALTIME`, read through the vDSO on Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        // A system clock before 1970 is reported as 0; every layout's epoch is later, so the
        // generator then reports `EpochInFuture` instead of producing a bogus id.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn wait_until_ms(&self, target_ms: u64) {
        loop {
            let now = self.now_ms();
            if now >= target_ms {
                return;
            }
            let left = target_ms - now;
            if left > 2 {
                // Sleep for all but the last two milliseconds; sleeping overshoots by up to a
                // scheduler quantum, which would waste most of the next tick.
                std::thread::sleep(Duration::from_millis(left - 2));
            } else {
                // Within two ticks: spin. Yielding would hand the core to whatever else is
                // runnable and, on a busy machine, miss the start of the next millisecond,
                // which is where a generator with an exhausted sequence resumes.
                std::hint::spin_loop();
            }
        }
    }
}

/// A clock that only moves when told to: for tests and deterministic simulation.
///
/// Clones share the same time. [`Clock::wait_until_ms`] advances the clock to the target, so
/// a generator that waits for a tick does not hang a test: simulated time passes instead.
///
/// ```
/// use shardflake::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance_ms(5);
/// clock.step_back_ms(3);
/// assert_eq!(clock.now_ms(), 1_002);
/// clock.wait_until_ms(1_010);
/// assert_eq!(clock.now_ms(), 1_010);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads `now_ms` until moved.
    pub fn new(now_ms: u64) -> Self {
        Self {
            ms: Arc::new(AtomicU64::new(now_ms)),
        }
    }

    /// Sets the time, forwards or backwards.
    pub fn set_ms(&self, now_ms: u64) {
        self.ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time forwards by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Moves the time backwards by `ms` (saturating at 0), like an NTP step.
    pub fn step_back_ms(&self, ms: u64) {
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_sub(ms))
            });
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }

    fn wait_until_ms(&self, target_ms: u64) {
        self.ms.fetch_max(target_ms, Ordering::SeqCst);
    }

    fn waits_in_real_time(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2024_and_waits() {
        let c = SystemClock;
        let t = c.now_ms();
        assert!(t > 1_704_067_200_000, "system clock reads {t}");
        c.wait_until_ms(t + 3);
        assert!(c.now_ms() >= t + 3);
    }

    #[test]
    fn manual_clock_wait_never_moves_backwards() {
        let c = ManualClock::new(50);
        c.wait_until_ms(10);
        assert_eq!(c.now_ms(), 50);
        c.step_back_ms(100);
        assert_eq!(c.now_ms(), 0);
    }

    #[test]
    fn only_clocks_that_sleep_say_their_waits_take_real_time() {
        assert!(SystemClock.waits_in_real_time());
        assert!(crate::CoarseClock.waits_in_real_time());
        assert!(!ManualClock::new(0).waits_in_real_time());
        let shared: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        assert!(!shared.waits_in_real_time(), "an Arc answers for its clock");
        let by_ref: &dyn Clock = &&ManualClock::new(0);
        assert!(
            !by_ref.waits_in_real_time(),
            "a reference answers for its clock"
        );
    }
}
