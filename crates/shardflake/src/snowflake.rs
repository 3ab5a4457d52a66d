//! The lock-free Snowflake-family generator for any [`Layout`].
//!
//! All state is one `AtomicU64` holding the last issued `(tick, sequence)` pair; every id is
//! one successful compare-and-swap on it, so ids from one generator are strictly increasing
//! across all threads that share it.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::{GenerateError, LayoutError};
use crate::layout::{format_rfc3339_ms, mask, Layout};
use crate::reservation::Reservation;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What a generator does when the wall clock is behind the last issued timestamp, and when a
/// tick's sequence runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockPolicy {
    /// Fail at once with [`GenerateError::ClockMovedBackwards`] (Twitter Snowflake's
    /// behaviour). An exhausted sequence waits for the next tick.
    Fail,
    /// Wait for the clock to catch up if it is behind by at most `max_wait_ms`; fail beyond.
    /// An exhausted sequence waits for the next tick.
    Wait {
        /// The longest wait for a clock that stepped back.
        max_wait_ms: u64,
    },
    /// Keep issuing on a logical clock that runs at most `borrow_ahead_ms_max` ahead of the
    /// wall clock: after a step back, and when a tick's sequence runs out (the next tick is
    /// borrowed instead of waited for). Beyond the bound a step back fails and an exhausted
    /// sequence waits until the wall clock is close enough again.
    Borrow {
        /// How far ahead of the wall clock issued timestamps may run.
        borrow_ahead_ms_max: u64,
    },
}

impl Default for ClockPolicy {
    /// `Wait { max_wait_ms: 100 }`: small NTP corrections cost a short pause, larger steps
    /// fail fast so the caller can retry elsewhere.
    fn default() -> Self {
        ClockPolicy::Wait { max_wait_ms: 100 }
    }
}

/// Counters from the generator's slow paths, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnowflakeStats {
    /// Times the wall clock was found behind the last issued timestamp.
    pub clock_regressions: u64,
    /// Times a thread waited for the next tick because the sequence was exhausted.
    pub exhaustion_waits: u64,
    /// Times a thread waited for a clock that stepped back (Wait policy).
    pub regression_waits: u64,
    /// Ticks started ahead of the wall clock (Borrow policy).
    pub borrowed_ticks: u64,
    /// The furthest ahead of the wall clock an issued timestamp has been, in ms.
    pub max_ahead_ms: u64,
}

/// A contiguous run of ids taken with one atomic operation: `first`, `first + step`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub first: u64,
    /// How many ids.
    pub len: u64,
    /// Distance between consecutive ids (1 when the sequence is the lowest field).
    pub step: u64,
}

impl IdRange {
    /// The last id of the run.
    pub fn last_id(&self) -> u64 {
        self.first + (self.len - 1) * self.step
    }
}

impl Iterator for IdRange {
    type Item = u64;
    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let id = self.first;
        self.first = self.first.wrapping_add(self.step);
        self.len -= 1;
        Some(id)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len as usize, Some(self.len as usize))
    }
}

impl ExactSizeIterator for IdRange {}

/// Builds a [`SnowflakeGenerator`].
pub struct SnowflakeBuilder<C> {
    layout: Layout,
    clock: C,
    node: Vec<(String, u64)>,
    policy: ClockPolicy,
    reservation: Option<Arc<Reservation>>,
    start_above_ms: Option<u64>,
}

impl SnowflakeBuilder<SystemClock> {
    fn new(layout: Layout) -> Self {
        Self {
            layout,
            clock: SystemClock,
            node: Vec::new(),
            policy: ClockPolicy::default(),
            reservation: None,
            start_above_ms: None,
        }
    }
}

impl<C: Clock> SnowflakeBuilder<C> {
    /// Uses `clock` instead of the system clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> SnowflakeBuilder<C2> {
        SnowflakeBuilder {
            layout: self.layout,
            clock,
            node: self.node,
            policy: self.policy,
            reservation: self.reservation,
            start_above_ms: self.start_above_ms,
        }
    }
    /// Sets a node field's value (datacenter, worker, machine, ...).
    pub fn node(mut self, field: &str, value: u64) -> Self {
        self.node.push((field.to_string(), value));
        self
    }
    /// Sets the clock policy.
    pub fn policy(mut self, policy: ClockPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Bounds issued timestamps by `reservation` (unbounded without one).
    pub fn reservation(mut self, reservation: Arc<Reservation>) -> Self {
        self.reservation = Some(reservation);
        self
    }
    /// Issues only timestamps strictly above `bound_ms` (Unix ms): the previous holder of this
    /// node id may have issued up to and including it.
    pub fn start_above_ms(mut self, bound_ms: u64) -> Self {
        self.start_above_ms = Some(bound_ms);
        self
    }

    /// Validates the node values and the epoch, and builds the generator.
    pub fn build(self) -> Result<SnowflakeGenerator<C>, LayoutError> {
        let node: Vec<(&str, u64)> = self.node.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let node_bits = self.layout.node_bits(&node)?;
        self.layout.check_time(self.clock.now_ms())?;
        let seq_bits = self.layout.sequence_field().bits();
        let seq_max = mask(seq_bits);
        // Nothing issued yet: pretend the last id was the final sequence value of the tick
        // containing the bound, so the first id lands in a later tick.
        let start_tick = match self.start_above_ms {
            Some(bound) => self.layout.tick_of(bound).unwrap_or(0),
            None => 0,
        };
        let initial = (start_tick << seq_bits) | seq_max;
        Ok(SnowflakeGenerator {
            ts_shift: self.layout.timestamp_field().shift(),
            seq_shift: self.layout.sequence_field().shift(),
            tick_max: self.layout.timestamp_field().max(),
            unit_ms: self.layout.time_unit_ms(),
            epoch_ms: self.layout.epoch_ms(),
            seq_bits,
            seq_max,
            node_bits,
            policy: self.policy,
            reservation: self.reservation,
            state: AtomicU64::new(initial),
            behind: AtomicBool::new(false),
            stats: Counters::default(),
            clock: self.clock,
            layout: self.layout,
        })
    }
}

#[derive(Default)]
struct Counters {
    clock_regressions: AtomicU64,
    exhaustion_waits: AtomicU64,
    regression_waits: AtomicU64,
    borrowed_ticks: AtomicU64,
    max_ahead_ms: AtomicU64,
}

/// A lock-free, `Send + Sync` generator of 64-bit ids for one node of a [`Layout`].
///
/// ```
/// use shardflake::{ClockPolicy, Layout, ManualClock, SnowflakeGenerator};
/// let clock = ManualClock::new(1_700_000_000_000);
/// let g = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
///     .node("datacenter", 1)
///     .node("worker", 2)
///     .clock(clock.clone())
///     .policy(ClockPolicy::Fail)
///     .build()
///     .unwrap();
/// let a = g.next_id().unwrap();
/// let b = g.next_id().unwrap();
/// assert!(b > a);
/// let d = g.layout().decode(a).unwrap();
/// assert_eq!(d.timestamp_ms, 1_700_000_000_000);
/// assert_eq!((d.field("datacenter"), d.field("worker"), d.field("sequence")), (Some(1), Some(2), Some(0)));
/// ```
pub struct SnowflakeGenerator<C: Clock = SystemClock> {
    // Hot fields first; `state` is the only one written per id.
    state: AtomicU64,
    ts_shift: u32,
    seq_shift: u32,
    seq_bits: u32,
    seq_max: u64,
    tick_max: u64,
    unit_ms: u64,
    epoch_ms: u64,
    node_bits: u64,
    policy: ClockPolicy,
    reservation: Option<Arc<Reservation>>,
    behind: AtomicBool,
    stats: Counters,
    clock: C,
    layout: Layout,
}

impl<C: Clock> std::fmt::Debug for SnowflakeGenerator<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeGenerator")
            .field("layout", &self.layout.name())
            .field("node_bits", &self.node_bits)
            .field("policy", &self.policy)
            .field("last_issued_ms", &self.last_issued_ms())
            .finish()
    }
}

/// Outcome of one attempt to take sequence values.
enum Step {
    Take { tick: u64, seq: u64, count: u64 },
    WaitUntil(u64),
}

impl SnowflakeGenerator<SystemClock> {
    /// Starts building a generator for `layout` on the system clock.
    pub fn builder(layout: Layout) -> SnowflakeBuilder<SystemClock> {
        SnowflakeBuilder::new(layout)
    }
}

impl<C: Clock> SnowflakeGenerator<C> {
    /// The layout this generator issues ids in.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The clock policy.
    pub fn policy(&self) -> ClockPolicy {
        self.policy
    }

    /// The generator's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The reservation bounding this generator, if any.
    pub fn reservation(&self) -> Option<&Arc<Reservation>> {
        self.reservation.as_ref()
    }

    /// The next id.
    #[inline]
    pub fn next_id(&self) -> Result<u64, GenerateError> {
        let (tick, seq, _) = self.take(1)?;
        Ok((tick << self.ts_shift) | (seq << self.seq_shift) | self.node_bits)
    }

    /// Up to `max` consecutive ids of one tick, taken with one compare-and-swap.
    ///
    /// The run ends at the end of the tick's sequence, so it may be shorter than `max`; call
    /// again for more (or use [`SnowflakeGenerator::fill`]).
    #[inline]
    pub fn next_range(&self, max: u64) -> Result<IdRange, GenerateError> {
        let (tick, seq, len) = self.take(max.max(1))?;
        Ok(IdRange {
            first: (tick << self.ts_shift) | (seq << self.seq_shift) | self.node_bits,
            len,
            step: 1 << self.seq_shift,
        })
    }

    /// Fills `out` with increasing ids, one compare-and-swap per run.
    pub fn fill(&self, out: &mut [u64]) -> Result<(), GenerateError> {
        let mut i = 0;
        while i < out.len() {
            let range = self.next_range((out.len() - i) as u64)?;
            for id in range {
                out[i] = id;
                i += 1;
            }
        }
        Ok(())
    }

    /// `n` increasing ids.
    pub fn next_batch(&self, n: usize) -> Result<Vec<u64>, GenerateError> {
        let mut v = vec![0; n];
        self.fill(&mut v)?;
        Ok(v)
    }

    /// Unix ms of the tick of the last issued id (or of the start bound, before the first).
    pub fn last_issued_ms(&self) -> u64 {
        let tick = self.state.load(Ordering::Acquire) >> self.seq_bits;
        self.epoch_ms + tick * self.unit_ms
    }

    /// How far the last issued timestamp is ahead of the wall clock now, in ms (0 if not).
    pub fn ahead_ms(&self) -> u64 {
        self.last_issued_ms().saturating_sub(self.clock.now_ms())
    }

    /// Counters from the slow paths.
    pub fn stats(&self) -> SnowflakeStats {
        let s = &self.stats;
        SnowflakeStats {
            clock_regressions: s.clock_regressions.load(Ordering::Relaxed),
            exhaustion_waits: s.exhaustion_waits.load(Ordering::Relaxed),
            regression_waits: s.regression_waits.load(Ordering::Relaxed),
            borrowed_ticks: s.borrowed_ticks.load(Ordering::Relaxed),
            max_ahead_ms: s.max_ahead_ms.load(Ordering::Relaxed),
        }
    }

    /// Takes `want >= 1` sequence values of one tick; returns `(tick, first_seq, count)`.
    #[inline(always)]
    fn take(&self, want: u64) -> Result<(u64, u64, u64), GenerateError> {
        loop {
            // Load the state before reading the clock: a thread preempted between the two
            // then sees a clock that is newer than the state, never older, so a stale read can
            // not pass for a clock that stepped back. If the state moved meanwhile, the
            // compare-and-swap below fails and the loop starts over.
            let cur = self.state.load(Ordering::Acquire);
            let now_ms = self.clock.now_ms();
            let Some(now_tick) = now_ms.checked_sub(self.epoch_ms).map(|d| d / self.unit_ms) else {
                return Err(GenerateError::EpochInFuture {
                    epoch_ms: self.epoch_ms,
                    now_ms,
                });
            };
            let last_tick = cur >> self.seq_bits;
            let last_seq = cur & self.seq_max;
            let step = if now_tick > last_tick {
                if self.behind.load(Ordering::Relaxed) {
                    self.behind.store(false, Ordering::Relaxed);
                }
                Step::Take {
                    tick: now_tick,
                    seq: 0,
                    count: want.min(self.seq_max + 1),
                }
            } else {
                self.slow_step(now_ms, now_tick, last_tick, last_seq, want)?
            };
            match step {
                Step::WaitUntil(target_ms) => {
                    self.clock.wait_until_ms(target_ms);
                    continue;
                }
                Step::Take { tick, seq, count } => {
                    if tick > self.tick_max {
                        return Err(GenerateError::TimestampOverflow {
                            overflow_at: format_rfc3339_ms(self.layout.overflow_ms()),
                        });
                    }
                    if let Some(r) = &self.reservation {
                        r.check(self.epoch_ms + tick * self.unit_ms)?;
                    }
                    let next = (tick << self.seq_bits) | (seq + count - 1);
                    if self
                        .state
                        .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok((tick, seq, count));
                    }
                }
            }
        }
    }

    /// The wall clock is at or behind the last issued tick: same-tick sequence, a clock that
    /// stepped back, or an exhausted sequence. Applies the clock policy.
    #[cold]
    fn slow_step(
        &self,
        now_ms: u64,
        now_tick: u64,
        last_tick: u64,
        last_seq: u64,
        want: u64,
    ) -> Result<Step, GenerateError> {
        let last_ms = self.epoch_ms + last_tick * self.unit_ms;
        if now_tick < last_tick {
            // The wall clock is behind what we issued: it stepped back, or we borrowed.
            let by_ms = last_ms - now_ms;
            if !self.behind.swap(true, Ordering::Relaxed) {
                self.stats.clock_regressions.fetch_add(1, Ordering::Relaxed);
            }
            match self.policy {
                ClockPolicy::Fail => return Err(GenerateError::ClockMovedBackwards { by_ms }),
                ClockPolicy::Wait { max_wait_ms } => {
                    if by_ms > max_wait_ms {
                        return Err(GenerateError::ClockMovedBackwards { by_ms });
                    }
                    self.stats.regression_waits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Step::WaitUntil(last_ms));
                }
                ClockPolicy::Borrow {
                    borrow_ahead_ms_max,
                } => {
                    if by_ms > borrow_ahead_ms_max {
                        return Err(GenerateError::ClockMovedBackwards { by_ms });
                    }
                }
            }
        }
        if last_seq < self.seq_max {
            return Ok(Step::Take {
                tick: last_tick,
                seq: last_seq + 1,
                count: want.min(self.seq_max - last_seq),
            });
        }
        // The sequence of `last_tick` is used up.
        let next_tick_ms = last_ms + self.unit_ms;
        if let ClockPolicy::Borrow {
            borrow_ahead_ms_max,
        } = self.policy
        {
            let ahead = next_tick_ms.saturating_sub(now_ms);
            if ahead <= borrow_ahead_ms_max {
                self.stats.borrowed_ticks.fetch_add(1, Ordering::Relaxed);
                self.stats.max_ahead_ms.fetch_max(ahead, Ordering::Relaxed);
                return Ok(Step::Take {
                    tick: last_tick + 1,
                    seq: 0,
                    count: want.min(self.seq_max + 1),
                });
            }
            self.stats.exhaustion_waits.fetch_add(1, Ordering::Relaxed);
            return Ok(Step::WaitUntil(next_tick_ms - borrow_ahead_ms_max));
        }
        self.stats.exhaustion_waits.fetch_add(1, Ordering::Relaxed);
        Ok(Step::WaitUntil(next_tick_ms))
    }
}

#[cfg(test)]
#[path = "snowflake_tests.rs"]
mod tests;
