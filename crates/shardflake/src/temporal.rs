//! The temporal-shard generator: ids laid out as `[shard][host][counter]`.
//!
//! The shard is the index of the current time window (hour, half-hour, minute or any
//! duration) since the layout's epoch. Within a shard a host issues counter values from
//! *blocks* handed to it from outside: in a cluster the coordinator grants, persists and
//! returns each host's starting counter for the next shard (sized from a demand forecast)
//! and a fresh block at once when one runs out. Uniqueness rests on the blocks, never on the
//! clock: a clock that steps back only keeps the host in its current shard.
//!
//! Hot path: one compare-and-swap on a packed `(shard, next counter)` word and one load of
//! the block's end. Switching shards and installing blocks take a mutex; both happen once
//! per block.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::clock::{Clock, SystemClock};
use crate::error::{GenerateError, LayoutError};
use crate::layout::{mask, Layout};
use crate::snowflake::IdRange;
use crate::sync::{AtomicU64, Ordering};

/// The fraction of a block left when a generator asks for the next one, unless its builder
/// sets another ([`TemporalBuilder::refill_fraction`]).
pub const REFILL_FRACTION_DEFAULT: f64 = 0.25;

/// A range of counter values granted to one host for one shard: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterBlock {
    /// The shard index the block belongs to.
    pub shard: u64,
    /// First counter value.
    pub start: u64,
    /// One past the last counter value.
    pub end: u64,
}

impl CounterBlock {
    /// Number of counter values in the block.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// True for an empty block.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Hands counter blocks to a [`TemporalGenerator`].
pub trait CounterSupplier: Send + Sync {
    /// Asks for a block for `shard` starting above `after_counter` (the host's high-water
    /// mark in that shard so far). Must return at once; the supplier later calls
    /// [`TemporalGenerator::install_block`].
    fn request_block(&self, shard: u64, after_counter: u64);
}

/// A block the generator cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The block is empty or reaches past the counter field.
    #[error(
        "block {start}..{end} for shard {shard} is empty, exceeds the counter range 0..={max}, or its shard does not fit the layout"
    )]
    OutOfRange {
        /// Shard of the block.
        shard: u64,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
        /// The largest counter value of the layout.
        max: u64,
    },
    /// The block overlaps counter values already granted for its shard.
    #[error("block {start}..{end} for shard {shard} starts below {floor}, the end of earlier blocks for that shard")]
    BelowFloor {
        /// Shard of the block.
        shard: u64,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
        /// The lowest start the block may have.
        floor: u64,
    },
    /// The shard is already over on this generator.
    #[error("shard {shard} is already past (current shard {current})")]
    PastShard {
        /// Shard of the block.
        shard: u64,
        /// The generator's current shard.
        current: u64,
    },
}

/// Where a temporal generator stands, for reports to the coordinator and for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalUsage {
    /// The shard ids are being issued in.
    pub shard: u64,
    /// The next counter value to issue (the high-water mark in the shard).
    pub next_counter: u64,
    /// Counter values issued in the shard so far.
    pub issued_in_shard: u64,
    /// The end of the current block (exclusive).
    pub block_end: u64,
    /// Blocks queued for this or later shards.
    pub queued_blocks: usize,
}

/// Builds a [`TemporalGenerator`].
pub struct TemporalBuilder<C> {
    layout: Layout,
    clock: C,
    host: u64,
    supplier: Option<Arc<dyn CounterSupplier>>,
    refill_fraction: f64,
}

impl TemporalBuilder<SystemClock> {
    fn new(layout: Layout) -> Self {
        Self {
            layout,
            clock: SystemClock,
            host: 0,
            supplier: None,
            refill_fraction: REFILL_FRACTION_DEFAULT,
        }
    }
}

impl<C: Clock> TemporalBuilder<C> {
    /// Uses `clock` instead of the system clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> TemporalBuilder<C2> {
        TemporalBuilder {
            layout: self.layout,
            clock,
            host: self.host,
            supplier: self.supplier,
            refill_fraction: self.refill_fraction,
        }
    }
    /// Sets the host id.
    pub fn host(mut self, host: u64) -> Self {
        self.host = host;
        self
    }
    /// Takes blocks from `supplier`. Without one, every shard's block is its whole counter
    /// range starting at 0: correct in one process, but not across restarts.
    pub fn supplier(mut self, supplier: Arc<dyn CounterSupplier>) -> Self {
        self.supplier = Some(supplier);
        self
    }
    /// Asks the supplier for the next block once this fraction of the current block is left
    /// ([`REFILL_FRACTION_DEFAULT`] by default).
    pub fn refill_fraction(mut self, fraction: f64) -> Self {
        self.refill_fraction = fraction.clamp(0.0, 1.0);
        self
    }
    /// Validates and builds. The layout's node field is the host; its sequence is the counter.
    pub fn build(self) -> Result<TemporalGenerator<C>, LayoutError> {
        let nodes: Vec<_> = self
            .layout
            .node_fields()
            .map(|f| f.name().to_string())
            .collect();
        let [host_field] = nodes.as_slice() else {
            return Err(LayoutError::Structure(format!(
                "a temporal layout has exactly one node field (the host); `{}` has {}",
                self.layout.name(),
                nodes.len()
            )));
        };
        let host_bits = self.layout.node_bits(&[(host_field.as_str(), self.host)])?;
        // A shard index that no longer fits its field would spill into the sign bit (or,
        // below it, wrap into older shards' ids): refuse the layout up front, naming the date.
        self.layout.check_time(self.clock.now_ms())?;
        let counter_bits = self.layout.sequence_field().bits();
        if counter_bits + self.layout.timestamp_field().bits() > 63 {
            return Err(LayoutError::Structure(
                "shard and counter widths must add up to at most 63 bits".into(),
            ));
        }
        if self.layout.sequence_field().shift() != 0 {
            return Err(LayoutError::Structure(
                "the counter must be the lowest field of a temporal layout".into(),
            ));
        }
        Ok(TemporalGenerator {
            state: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            refill_at: AtomicU64::new(u64::MAX),
            shard_max: self.layout.timestamp_field().max(),
            pack_bits: counter_bits + 1,
            counter_max: mask(counter_bits),
            shard_shift: self.layout.timestamp_field().shift(),
            host_bits,
            host: self.host,
            slow: Mutex::new(Slow::default()),
            supplier: self.supplier,
            refill_fraction: self.refill_fraction,
            clock: self.clock,
            layout: self.layout,
        })
    }
}

#[derive(Default)]
struct Slow {
    /// Blocks not yet in use, per shard, in ascending order.
    queued: BTreeMap<u64, VecDeque<CounterBlock>>,
    /// Per shard: the end of the highest block accepted (blocks must start at or above it).
    floors: BTreeMap<u64, u64>,
    /// The first counter value issued in the current shard.
    shard_first: u64,
    /// Whether the current shard has been entered at all.
    started: bool,
}

/// A lock-free (on its hot path) generator of temporal-shard ids for one host.
///
/// ```
/// use shardflake::{CounterBlock, Layout, ManualClock, TemporalGenerator, TemporalWidths};
/// let layout = Layout::temporal(3_600_000, 1_735_689_600_000, TemporalWidths::default()).unwrap();
/// let clock = ManualClock::new(1_735_689_600_000 + 5 * 3_600_000 + 10);
/// let g = TemporalGenerator::builder(layout).host(3).clock(clock).build().unwrap();
/// let id = g.next_id().unwrap();
/// let d = g.layout().decode(id).unwrap();
/// assert_eq!((d.field("shard"), d.field("host"), d.field("counter")), (Some(5), Some(3), Some(0)));
/// ```
pub struct TemporalGenerator<C: Clock = SystemClock> {
    /// `(shard << pack_bits) | next counter`.
    state: AtomicU64,
    /// `(shard << pack_bits) | end of the current block`.
    limit: AtomicU64,
    /// Packed position past which the next block is requested (`u64::MAX`: already asked).
    refill_at: AtomicU64,
    /// The largest shard index the shard field holds.
    shard_max: u64,
    /// Counter bits plus one, so that a block ending at `2^counter_bits` (exclusive) still
    /// packs below the shard.
    pack_bits: u32,
    counter_max: u64,
    shard_shift: u32,
    host_bits: u64,
    host: u64,
    slow: Mutex<Slow>,
    supplier: Option<Arc<dyn CounterSupplier>>,
    refill_fraction: f64,
    clock: C,
    layout: Layout,
}

impl TemporalGenerator<SystemClock> {
    /// Starts building a generator for a temporal `layout` on the system clock.
    pub fn builder(layout: Layout) -> TemporalBuilder<SystemClock> {
        TemporalBuilder::new(layout)
    }
}

impl<C: Clock> TemporalGenerator<C> {
    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The host id.
    pub fn host(&self) -> u64 {
        self.host
    }
    /// The generator's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The shard index of a Unix ms time (0 before the epoch).
    pub fn shard_of(&self, unix_ms: u64) -> u64 {
        self.layout.tick_of(unix_ms).unwrap_or(0)
    }

    /// The next id.
    #[inline]
    pub fn next_id(&self) -> Result<u64, GenerateError> {
        self.next_range(1).map(|r| r.first)
    }

    /// Up to `max` consecutive ids from the current block, taken with one compare-and-swap.
    #[inline]
    pub fn next_range(&self, max: u64) -> Result<IdRange, GenerateError> {
        let want = max.max(1);
        loop {
            let now_ms = self.clock.now_ms();
            let Some(now_shard) = self.layout.tick_of(now_ms) else {
                return Err(GenerateError::EpochInFuture {
                    epoch_ms: self.layout.epoch_ms(),
                    now_ms,
                });
            };
            let cur = self.state.load(Ordering::Acquire);
            let cur_shard = cur >> self.pack_bits;
            if now_shard > cur_shard {
                if now_shard > self.shard_max {
                    return Err(self.expired());
                }
                self.enter_shard(now_shard)?;
                continue;
            }
            // A clock behind the current shard keeps issuing in it: the counter, not the
            // clock, keeps ids apart.
            let lim = self.limit.load(Ordering::Acquire);
            if cur >= lim {
                self.refill(cur, now_shard)?;
                continue;
            }
            let take = want.min(lim - cur);
            if self
                .state
                .compare_exchange_weak(cur, cur + take, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if cur + take >= self.refill_at.load(Ordering::Relaxed) {
                    self.request_next(cur + take);
                }
                let counter = cur & self.pack_mask();
                return Ok(IdRange {
                    first: (cur_shard << self.shard_shift) | self.host_bits | counter,
                    len: take,
                    step: 1,
                });
            }
        }
    }

    /// The layout's lifetime is over: the shard index no longer fits its field.
    #[cold]
    fn expired(&self) -> GenerateError {
        GenerateError::TimestampOverflow {
            overflow_at: self.layout.overflow_time(),
        }
    }

    /// True if an id can be issued in `shard` without asking for a block: the current block
    /// is in `shard` and has values left, or a block for `shard` is queued.
    pub fn has_block_for(&self, shard: u64) -> bool {
        let slow = self.slow.lock().expect("temporal generator mutex");
        let cur = self.state.load(Ordering::Acquire);
        let lim = self.limit.load(Ordering::Acquire);
        let current = slow.started && cur >> self.pack_bits == shard && cur < lim;
        current || slow.queued.get(&shard).is_some_and(|q| !q.is_empty())
    }

    /// Hands the generator a block for the current or a later shard.
    ///
    /// Blocks for one shard must not overlap: each starts at or above the end of the
    /// previous one for the same shard.
    pub fn install_block(&self, block: CounterBlock) -> Result<(), BlockError> {
        if block.is_empty() || block.end > self.counter_max + 1 || block.shard > self.shard_max {
            return Err(BlockError::OutOfRange {
                shard: block.shard,
                start: block.start,
                end: block.end,
                max: self.counter_max,
            });
        }
        let mut slow = self.slow.lock().expect("temporal generator mutex");
        let cur = self.state.load(Ordering::Acquire);
        let cur_shard = cur >> self.pack_bits;
        if slow.started && block.shard < cur_shard {
            return Err(BlockError::PastShard {
                shard: block.shard,
                current: cur_shard,
            });
        }
        let floor = slow.floors.get(&block.shard).copied().unwrap_or(0);
        if block.start < floor {
            return Err(BlockError::BelowFloor {
                shard: block.shard,
                start: block.start,
                end: block.end,
                floor,
            });
        }
        slow.floors.insert(block.shard, block.end);
        let exhausted = cur >= self.limit.load(Ordering::Acquire);
        if slow.started && block.shard == cur_shard && exhausted {
            self.activate(&mut slow, block, false);
        } else {
            slow.queued.entry(block.shard).or_default().push_back(block);
        }
        Ok(())
    }

    /// Where the generator stands.
    pub fn usage(&self) -> TemporalUsage {
        let slow = self.slow.lock().expect("temporal generator mutex");
        let cur = self.state.load(Ordering::Acquire);
        let lim = self.limit.load(Ordering::Acquire);
        let next_counter = cur & self.pack_mask();
        TemporalUsage {
            shard: cur >> self.pack_bits,
            next_counter,
            issued_in_shard: if slow.started {
                next_counter.saturating_sub(slow.shard_first)
            } else {
                0
            },
            block_end: if lim >> self.pack_bits == cur >> self.pack_bits {
                lim & self.pack_mask()
            } else {
                0
            },
            queued_blocks: slow.queued.values().map(VecDeque::len).sum(),
        }
    }

    /// Makes `block` the current one. Called with the mutex held.
    #[inline]
    fn pack_mask(&self) -> u64 {
        mask(self.pack_bits)
    }

    fn activate(&self, slow: &mut Slow, block: CounterBlock, new_shard: bool) {
        let packed_start = (block.shard << self.pack_bits) | block.start;
        let packed_end = (block.shard << self.pack_bits) | block.end;
        // Order matters: move the state first, then the limit. A thread that sees the new
        // state with the old limit finds `cur >= lim` and comes here to wait on the mutex; a
        // thread holding the old state fails its compare-and-swap. Both words only grow.
        self.state.fetch_max(packed_start, Ordering::AcqRel);
        self.limit.store(packed_end, Ordering::Release);
        let refill_left = (block.len() as f64 * self.refill_fraction) as u64;
        let refill_at = if self.supplier.is_some() {
            packed_end - refill_left.max(1)
        } else {
            u64::MAX
        };
        self.refill_at.store(refill_at, Ordering::Relaxed);
        if new_shard {
            slow.shard_first = block.start;
            slow.started = true;
        }
    }

    /// The clock has entered `shard`: switch to its first block.
    #[cold]
    fn enter_shard(&self, shard: u64) -> Result<(), GenerateError> {
        let mut slow = self.slow.lock().expect("temporal generator mutex");
        let cur = self.state.load(Ordering::Acquire);
        if slow.started && cur >> self.pack_bits >= shard {
            return Ok(()); // Another thread switched first.
        }
        // Blocks for shards that are over can never be used.
        slow.queued.retain(|s, _| *s >= shard);
        slow.floors.retain(|s, _| *s >= shard);
        let block = match slow.queued.get_mut(&shard).and_then(VecDeque::pop_front) {
            Some(b) => b,
            None => match &self.supplier {
                Some(supplier) => {
                    supplier.request_block(shard, 0);
                    return Err(GenerateError::NoCounterBlock { shard });
                }
                None => CounterBlock {
                    shard,
                    start: 0,
                    end: self.counter_max + 1,
                },
            },
        };
        slow.floors.entry(shard).or_insert(block.end);
        self.activate(&mut slow, block, true);
        Ok(())
    }

    /// The current block is used up (or being replaced): take the next queued one or ask.
    #[cold]
    fn refill(&self, seen: u64, now_shard: u64) -> Result<(), GenerateError> {
        let mut slow = self.slow.lock().expect("temporal generator mutex");
        if !slow.started {
            // Nothing issued yet and the clock sits in shard 0 (the state's initial value).
            drop(slow);
            return self.enter_shard(now_shard);
        }
        let cur = self.state.load(Ordering::Acquire);
        if cur != seen || cur < self.limit.load(Ordering::Acquire) {
            return Ok(()); // Someone installed a block meanwhile.
        }
        let shard = cur >> self.pack_bits;
        let counter = cur & self.pack_mask();
        if let Some(block) = slow.queued.get_mut(&shard).and_then(VecDeque::pop_front) {
            self.activate(&mut slow, block, false);
            return Ok(());
        }
        if let Some(supplier) = &self.supplier {
            supplier.request_block(shard, counter);
        }
        Err(GenerateError::CounterExhausted { shard, counter })
    }

    #[cold]
    fn request_next(&self, position: u64) {
        let at = self.refill_at.load(Ordering::Relaxed);
        if position >= at
            && self
                .refill_at
                .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            if let Some(supplier) = &self.supplier {
                let shard = position >> self.pack_bits;
                let limit = self.limit.load(Ordering::Acquire);
                supplier.request_block(shard, limit & self.pack_mask());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::layout::{TemporalWidths, SHARDFLAKE_EPOCH_MS};
    use std::sync::Mutex as StdMutex;

    const HOUR: u64 = 3_600_000;

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<(u64, u64)>>);
    impl CounterSupplier for Recorder {
        fn request_block(&self, shard: u64, after: u64) {
            self.0.lock().unwrap().push((shard, after));
        }
    }

    fn small_layout() -> Layout {
        Layout::temporal(
            HOUR,
            SHARDFLAKE_EPOCH_MS,
            TemporalWidths {
                shard_bits: 20,
                host_bits: 10,
                counter_bits: 4,
            },
        )
        .unwrap()
    }

    fn decode(g: &TemporalGenerator<ManualClock>, id: u64) -> (u64, u64, u64) {
        let d = g.layout().decode(id).unwrap();
        (
            d.field("shard").unwrap(),
            d.field("host").unwrap(),
            d.field("counter").unwrap(),
        )
    }

    #[test]
    fn without_supplier_each_shard_counts_from_zero_and_exhaustion_is_an_error() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS + 2 * HOUR);
        let g = TemporalGenerator::builder(small_layout())
            .host(9)
            .clock(clock.clone())
            .build()
            .unwrap();
        for i in 0..16 {
            assert_eq!(decode(&g, g.next_id().unwrap()), (2, 9, i));
        }
        // 4 counter bits: the 17th id of the shard must not wrap to 0.
        assert_eq!(
            g.next_id(),
            Err(GenerateError::CounterExhausted {
                shard: 2,
                counter: 16
            })
        );
        clock.advance_ms(HOUR);
        assert_eq!(decode(&g, g.next_id().unwrap()), (3, 9, 0));
    }

    #[test]
    fn supplied_blocks_are_used_in_order_and_refills_are_requested_early() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS + 7 * HOUR + 5);
        let rec = Arc::new(Recorder::default());
        let g = TemporalGenerator::builder(small_layout())
            .host(1)
            .clock(clock.clone())
            .supplier(rec.clone())
            .build()
            .unwrap();
        assert_eq!(g.next_id(), Err(GenerateError::NoCounterBlock { shard: 7 }));
        assert_eq!(rec.0.lock().unwrap().as_slice(), &[(7, 0)]);
        g.install_block(CounterBlock {
            shard: 7,
            start: 4,
            end: 8,
        })
        .unwrap();
        let got: Vec<u64> = (0..3).map(|_| decode(&g, g.next_id().unwrap()).2).collect();
        assert_eq!(got, [4, 5, 6]);
        // One value left of four (refill fraction 0.25): the next block was asked for.
        assert_eq!(rec.0.lock().unwrap().last(), Some(&(7, 8)));
        assert_eq!(decode(&g, g.next_id().unwrap()).2, 7);
        assert!(matches!(
            g.next_id(),
            Err(GenerateError::CounterExhausted {
                shard: 7,
                counter: 8
            })
        ));
        // Blocks below what was granted for the shard are refused.
        assert!(matches!(
            g.install_block(CounterBlock {
                shard: 7,
                start: 6,
                end: 10
            }),
            Err(BlockError::BelowFloor { floor: 8, .. })
        ));
        g.install_block(CounterBlock {
            shard: 7,
            start: 12,
            end: 14,
        })
        .unwrap();
        assert_eq!(decode(&g, g.next_id().unwrap()).2, 12);
        // A block for the next shard is queued and used at the boundary with no request.
        g.install_block(CounterBlock {
            shard: 8,
            start: 2,
            end: 16,
        })
        .unwrap();
        let asked = rec.0.lock().unwrap().len();
        clock.advance_ms(HOUR);
        assert_eq!(decode(&g, g.next_id().unwrap()), (8, 1, 2));
        assert_eq!(rec.0.lock().unwrap().len(), asked);
        let u = g.usage();
        assert_eq!(
            (u.shard, u.next_counter, u.issued_in_shard, u.block_end),
            (8, 3, 1, 16)
        );
    }

    #[test]
    fn clock_stepping_back_stays_in_the_current_shard() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS + 4 * HOUR + 1);
        let g = TemporalGenerator::builder(small_layout())
            .clock(clock.clone())
            .build()
            .unwrap();
        let a = g.next_id().unwrap();
        clock.step_back_ms(2 * HOUR);
        let b = g.next_id().unwrap();
        assert!(b > a);
        assert_eq!(decode(&g, b), (4, 0, 1));
    }

    #[test]
    fn ranges_and_bad_blocks() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS);
        let g = TemporalGenerator::builder(small_layout())
            .clock(clock)
            .build()
            .unwrap();
        let r = g.next_range(10).unwrap();
        assert_eq!(r.len, 10);
        let r2 = g.next_range(10).unwrap();
        assert_eq!(r2.len, 6);
        assert_eq!(r2.first, r.last_id() + 1);
        assert!(matches!(
            g.install_block(CounterBlock {
                shard: 0,
                start: 3,
                end: 40
            }),
            Err(BlockError::OutOfRange { .. })
        ));
    }

    /// 8 shard bits of 1 s: the shard field runs out 256 s after the epoch.
    fn short_lived_layout() -> Layout {
        Layout::temporal(
            1_000,
            SHARDFLAKE_EPOCH_MS,
            TemporalWidths {
                shard_bits: 8,
                host_bits: 10,
                counter_bits: 20,
            },
        )
        .unwrap()
    }

    /// Regression: a shard index past its field used to be shifted into the bits above the
    /// layout (the sign bit for 63-bit layouts), and narrower ones wrapped into old shards.
    #[test]
    fn a_shard_past_its_field_is_an_expiry_error_not_a_wrap() {
        let layout = short_lived_layout();
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS + 255_500);
        let g = TemporalGenerator::builder(layout.clone())
            .host(3)
            .clock(clock.clone())
            .build()
            .unwrap();
        assert_eq!(decode(&g, g.next_id().unwrap()), (255, 3, 0));
        clock.advance_ms(1_000);
        assert_eq!(
            g.next_id(),
            Err(GenerateError::TimestampOverflow {
                overflow_at: "2025-01-01T00:04:16.000Z".into()
            })
        );
        assert!(g.next_range(10).is_err());
        assert!(matches!(
            g.install_block(CounterBlock {
                shard: 256,
                start: 0,
                end: 10
            }),
            Err(BlockError::OutOfRange { .. })
        ));
    }

    #[test]
    fn building_after_the_shard_field_ran_out_names_the_overflow_date() {
        let late = ManualClock::new(SHARDFLAKE_EPOCH_MS + 256_000);
        let e = TemporalGenerator::builder(short_lived_layout())
            .clock(late)
            .build()
            .err()
            .unwrap();
        assert_eq!(
            e,
            LayoutError::Expired {
                layout: "temporal".into(),
                overflow_at: "2025-01-01T00:04:16.000Z".into()
            }
        );
    }

    #[test]
    fn has_block_for_tells_whether_a_shard_can_issue_without_a_request() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS + 7 * HOUR + 5);
        let g = TemporalGenerator::builder(small_layout())
            .clock(clock.clone())
            .supplier(Arc::new(Recorder::default()))
            .build()
            .unwrap();
        assert!(!g.has_block_for(7));
        g.install_block(CounterBlock {
            shard: 7,
            start: 0,
            end: 2,
        })
        .unwrap();
        assert!(g.has_block_for(7) && !g.has_block_for(8));
        g.next_range(2).unwrap();
        assert!(!g.has_block_for(7), "the block is used up");
        g.install_block(CounterBlock {
            shard: 8,
            start: 0,
            end: 2,
        })
        .unwrap();
        assert!(g.has_block_for(8) && !g.has_block_for(7));
    }

    #[test]
    fn threads_never_share_a_counter() {
        let clock = ManualClock::new(SHARDFLAKE_EPOCH_MS);
        let layout = Layout::preset("temporal").unwrap();
        let g = Arc::new(
            TemporalGenerator::builder(layout)
                .clock(clock)
                .build()
                .unwrap(),
        );
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..20_000)
                        .map(|_| g.next_id().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(all.len(), 80_000);
        crate::check::check_ids(&all).assert_unique();
    }
}
