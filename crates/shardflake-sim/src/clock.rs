//! Per-host clocks. Every host reads the simulation's time through its own wall clock, which
//! runs at its own rate (drift) and can be stepped back or forward; monotonic time is tokio's,
//! which turmoil advances for every host alike.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use shardflake::Clock;
use shardflake_coordinator::TimeSource;

/// A host's wall clock: simulation time × (1 + drift) + steps.
#[derive(Debug)]
pub struct HostClock {
    /// Simulated ms since the start, set by the driver before every step.
    sim_ms: Arc<AtomicU64>,
    base_ms: u64,
    drift_ppm: AtomicI64,
    offset_ms: AtomicI64,
}

impl HostClock {
    /// A clock reading `base_ms` at the start of the simulation, which is `sim_ms` ms old.
    pub fn new(base_ms: u64, sim_ms: Arc<AtomicU64>) -> Self {
        Self {
            sim_ms,
            base_ms,
            drift_ppm: AtomicI64::new(0),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Steps the clock by `by_ms` (negative: back).
    pub fn step(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }

    /// Runs the clock `ppm` parts per million fast (negative: slow) from now on; the reading
    /// does not jump.
    pub fn set_drift_ppm(&self, ppm: i64) {
        let e = self.elapsed_ms() as i64;
        let old = self.drift_ppm.swap(ppm, Ordering::Relaxed);
        // Keep the reading continuous: fold the change of rate so far into the offset.
        self.offset_ms
            .fetch_add(e * (old - ppm) / 1_000_000, Ordering::Relaxed);
    }

    fn elapsed_ms(&self) -> u64 {
        self.sim_ms.load(Ordering::Relaxed)
    }
}

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        let e = self.elapsed_ms() as i64;
        let drift = e * self.drift_ppm.load(Ordering::Relaxed) / 1_000_000;
        let t = self.base_ms as i64 + e + drift + self.offset_ms.load(Ordering::Relaxed);
        t.max(0) as u64
    }

    /// Simulated time does not pass inside a blocking call, so a generator waiting for the next
    /// tick finds the clock there at once: the host's clock runs ahead (a clock that is fast is
    /// one of the faults the design must survive anyway).
    fn wait_until_ms(&self, target_ms: u64) {
        let now = self.now_ms();
        if target_ms > now {
            self.step((target_ms - now) as i64);
        }
    }
}

/// A coordinator process's time: its host's wall clock, and a monotonic clock that starts at
/// zero when the process starts.
#[derive(Debug)]
pub struct SimTime {
    wall: Arc<HostClock>,
    start: tokio::time::Instant,
}

impl SimTime {
    /// Starts the monotonic clock now (inside the host's runtime).
    pub fn new(wall: Arc<HostClock>) -> Self {
        Self {
            wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl TimeSource for SimTime {
    fn wall_ms(&self) -> u64 {
        self.wall.now_ms()
    }
    fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}
