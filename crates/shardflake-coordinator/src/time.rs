//! The coordinator's two clocks: wall time for what it persists and reports, and a monotonic
//! clock for deciding that a lease has expired.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where the coordinator reads the time.
pub trait TimeSource: Send + Sync + 'static {
    /// Wall-clock time, Unix ms. May step in either direction.
    fn wall_ms(&self) -> u64;
    /// Monotonic time in ms since an arbitrary start (the process start). Never goes back.
    fn mono_ms(&self) -> u64;
}

/// The system's real-time clock and `Instant` since construction.
#[derive(Debug, Clone, Copy)]
pub struct SystemTimeSource {
    start: Instant,
}

impl SystemTimeSource {
    /// Starts the monotonic clock at 0 now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemTimeSource {
    fn default() -> Self {
        Self::new()
    }
}

impl TimeSource for SystemTimeSource {
    fn wall_ms(&self) -> u64 {
        shardflake::Clock::now_ms(&shardflake::SystemClock)
    }
    fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A time source that moves only when told to. Clones share the same time.
///
/// ```
/// use shardflake_coordinator::{ManualTime, TimeSource};
/// let t = ManualTime::new(1_000_000);
/// t.advance_ms(10);
/// t.step_wall_back_ms(500);
/// assert_eq!((t.wall_ms(), t.mono_ms()), (999_510, 10));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualTime {
    wall: Arc<AtomicU64>,
    mono: Arc<AtomicU64>,
}

impl ManualTime {
    /// Wall time `wall_ms`, monotonic time 0.
    pub fn new(wall_ms: u64) -> Self {
        Self {
            wall: Arc::new(AtomicU64::new(wall_ms)),
            mono: Arc::new(AtomicU64::new(0)),
        }
    }
    /// Moves both clocks forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.mono.fetch_add(ms, Ordering::SeqCst);
    }
    /// Steps only the wall clock back (an NTP step); monotonic time is unaffected.
    pub fn step_wall_back_ms(&self, ms: u64) {
        let _ = self
            .wall
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some(w.saturating_sub(ms))
            });
    }
    /// Steps only the wall clock forward.
    pub fn step_wall_forward_ms(&self, ms: u64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
    }
}

impl TimeSource for ManualTime {
    fn wall_ms(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }
    fn mono_ms(&self) -> u64 {
        self.mono.load(Ordering::SeqCst)
    }
}
