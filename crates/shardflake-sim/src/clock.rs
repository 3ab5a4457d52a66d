//! Per-host clocks. Every host reads the simulation's time through its own wall clock, which
//! runs at its own rate (drift) and can be stepped back or forward. A coordinator's monotonic
//! clock (the one it decides lease expiry by) runs at its host's own rate too; the nodes'
//! monotonic time is tokio's, which turmoil advances for every node alike, so a coordinator
//! whose monotonic clock runs fast is the one fault that covers both directions of a rate
//! difference between a node and the coordinators.

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
    /// The monotonic clock's rate error (parts per million, + fast) and the offset that
    /// keeps it continuous across rate changes.
    mono_ppm: AtomicI64,
    mono_offset_ms: AtomicI64,
    /// A step armed to land while a generator waits for its next tick (0: none).
    pending_step_ms: AtomicI64,
}

impl HostClock {
    /// A clock reading `base_ms` at the start of the simulation, which is `sim_ms` ms old.
    pub fn new(base_ms: u64, sim_ms: Arc<AtomicU64>) -> Self {
        Self {
            sim_ms,
            base_ms,
            drift_ppm: AtomicI64::new(0),
            offset_ms: AtomicI64::new(0),
            mono_ppm: AtomicI64::new(0),
            mono_offset_ms: AtomicI64::new(0),
            pending_step_ms: AtomicI64::new(0),
        }
    }

    /// Runs the host's monotonic clock `ppm` parts per million fast (negative: slow) from
    /// now on, without a jump: what a host's oscillator does, which NTP does not correct.
    pub fn set_mono_rate_ppm(&self, ppm: i64) {
        let e = self.elapsed_ms() as i64;
        let old = self.mono_ppm.swap(ppm, Ordering::Relaxed);
        self.mono_offset_ms
            .fetch_add(e * (old - ppm) / 1_000_000, Ordering::Relaxed);
    }

    /// The host's monotonic clock (ms since the simulation started, at the host's rate).
    pub fn mono_ms(&self) -> u64 {
        let e = self.elapsed_ms() as i64;
        let t = e
            + e * self.mono_ppm.load(Ordering::Relaxed) / 1_000_000
            + self.mono_offset_ms.load(Ordering::Relaxed);
        t.max(0) as u64
    }

    /// Steps the clock by `by_ms` (negative: back).
    pub fn step(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }

    /// Arms a step of `by_ms` to land the next time a generator waits for its next tick:
    /// in the middle of a batch, the moment a clock step costs most (the batch then waits
    /// for the clock with part of its ids taken). [`HostClock::fire_pending`] lands it
    /// anyway if no wait came.
    pub fn arm_step(&self, by_ms: i64) {
        self.pending_step_ms.store(by_ms, Ordering::Relaxed);
    }

    /// Lands an armed step that no tick wait took; whether there was one.
    pub fn fire_pending(&self) -> bool {
        let by = self.pending_step_ms.swap(0, Ordering::Relaxed);
        if by != 0 {
            self.step(by);
        }
        by != 0
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
        // A step armed for this moment lands instead: the generator reads the clock again
        // and finds it elsewhere.
        if self.fire_pending() {
            return;
        }
        let now = self.now_ms();
        if target_ms > now {
            self.step((target_ms - now) as i64);
        }
    }

    /// The wait above takes no real time, so the node keeps every batch on its runtime
    /// thread: a batch served on the blocking pool would answer at a real-time moment, and a
    /// seed would no longer replay exactly.
    fn waits_in_real_time(&self) -> bool {
        false
    }
}

/// A coordinator process's time: its host's wall clock, and its host's monotonic clock from
/// zero when the process starts.
#[derive(Debug)]
pub struct SimTime {
    host: Arc<HostClock>,
    start_ms: u64,
}

impl SimTime {
    /// Starts the monotonic clock now.
    pub fn new(host: Arc<HostClock>) -> Self {
        let start_ms = host.mono_ms();
        Self { host, start_ms }
    }
}

impl TimeSource for SimTime {
    fn wall_ms(&self) -> u64 {
        self.host.now_ms()
    }
    fn mono_ms(&self) -> u64 {
        self.host.mono_ms().saturating_sub(self.start_ms)
    }
}
