//! Block policies of segment (namespace) mode side by side: when a node asks for its next block
//! of ids and how large that block is — ours, Meituan Leaf's, CosId's segment chain, and a
//! fixed step.
//!
//! A policy is both sides of the exchange: the node's trigger (when to ask) and the sizing
//! (what the coordinator, or the database in Leaf and CosId, hands out). The simulation in
//! [`crate::blocksim`] owns the blocks, the clock and the fetch latency, and asks the policy
//! after every simulated millisecond; the policy only decides.
//!
//! The peers' rules are taken from their code (file and commit cited on each type), not from
//! their documentation.

use shardflake::forecast::RateForecast;
use shardflake::{BlockSizing, SEGMENT_HORIZON_MS_DEFAULT, SEGMENT_PREFETCH_FRACTION};

/// What the node holds when a policy is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Simulated time, ms.
    pub now_ms: u64,
    /// Size of the block ids are taken from (0 when the node holds none).
    pub current_len: u64,
    /// Ids left in it.
    pub current_left: u64,
    /// Ids in the blocks waiting behind it.
    pub queued: u64,
    /// Demand in this millisecond found no id left: the hot path waits.
    pub starved: bool,
}

impl NodeView {
    /// Every id the node holds.
    pub fn available(&self) -> u64 {
        self.current_left + self.queued
    }
}

/// When to ask for the next block, and how large it is.
pub trait BlockPolicy {
    /// The row's name in the table.
    fn name(&self) -> &'static str;
    /// The node (re)starts at `now_ms` holding nothing: forget what lived in the node's memory
    /// and return the size of its first block (loaded before it takes traffic).
    fn start(&mut self, now_ms: u64) -> u64;
    /// The size of the block to ask for now, if any. Called after every simulated millisecond
    /// in which no fetch is in flight (one at a time, as in every policy compared).
    fn poll(&mut self, view: &NodeView) -> Option<u64>;
    /// The block asked for last arrived at `now_ms`.
    fn granted(&mut self, _now_ms: u64) {}
    /// `n` ids were handed out.
    fn used(&mut self, _n: u64) {}
}

/// Ours: the coordinator forecasts the node's rate with [`RateForecast`] (Holt) from the
/// `used` / `over_ms` the node reports with each request, and grants
/// [`RateForecast::block_size`] over [`SEGMENT_HORIZON_MS_DEFAULT`] (forecast × horizon ×
/// 1.25, within `sizing`); the node asks when its current block has
/// [`SEGMENT_PREFETCH_FRACTION`] left and no next block is waiting (double buffering).
///
/// The forecast lives in the coordinator, so it outlives a node's restart.
#[derive(Debug, Clone)]
pub struct Ours {
    sizing: BlockSizing,
    forecast: RateForecast,
    used_since_request: u64,
    last_request_ms: u64,
}

impl Ours {
    /// Blocks within `min..=max`.
    pub fn new(min: u64, max: u64) -> Self {
        Self {
            sizing: BlockSizing {
                min,
                max,
                // Rate blocks use neither: they are sized from the forecast only.
                target_ms: 0,
                change_factor_max: 1,
            },
            forecast: RateForecast::default(),
            used_since_request: 0,
            last_request_ms: 0,
        }
    }

    fn block(&self) -> u64 {
        self.forecast
            .block_size(&self.sizing, SEGMENT_HORIZON_MS_DEFAULT)
    }
}

impl BlockPolicy for Ours {
    fn name(&self) -> &'static str {
        "ours (Holt forecast)"
    }

    fn start(&mut self, now_ms: u64) -> u64 {
        // A fresh node has nothing to report; the coordinator sizes its first block from the
        // forecast it kept.
        self.used_since_request = 0;
        self.last_request_ms = now_ms;
        self.block()
    }

    fn poll(&mut self, view: &NodeView) -> Option<u64> {
        let low = view.current_left as f64 <= SEGMENT_PREFETCH_FRACTION * view.current_len as f64;
        if view.queued > 0 || !low {
            return None;
        }
        let over_ms = view.now_ms - self.last_request_ms;
        self.forecast.observe(self.used_since_request, over_ms);
        self.used_since_request = 0;
        self.last_request_ms = view.now_ms;
        Some(self.block())
    }

    fn used(&mut self, n: u64) {
        self.used_since_request += n;
    }
}

/// Leaf's segment duration threshold: a step that lasted less than this doubles
/// (`SEGMENT_DURATION`, 15 min).
pub const LEAF_SEGMENT_DURATION_MS: u64 = 15 * 60 * 1000;
/// Leaf's largest step (`MAX_STEP`).
pub const LEAF_MAX_STEP: u64 = 1_000_000;
/// Leaf loads the next segment once the current one's idle ids fall below this fraction of
/// its step (`segment.getIdle() < 0.9 * segment.getStep()`: 10 % used).
pub const LEAF_LOAD_BELOW_IDLE: f64 = 0.9;

/// Meituan Leaf's segment mode (`SegmentIDGenImpl`, github.com/Meituan-Dianping/Leaf, commit
/// 86a6441d263497b9f9ee321de13422b9c63f0c06,
/// `leaf-core/src/main/java/com/sankuai/inf/leaf/segment/SegmentIDGenImpl.java`):
///
/// * `getIdFromSegmentBuffer`: when no next segment is ready, no load is running and the
///   current segment's idle ids are below 0.9 × its step, load the next one asynchronously.
/// * `updateSegmentFromDb`: the first load (init) and the second take the database's step;
///   from the third on, with `duration` the time since the previous load finished: under
///   15 min the step doubles unless that passes `MAX_STEP` (1,000,000); under 30 min it
///   stays; otherwise it halves unless that falls below the database's step.
///
/// With `adaptive` off, every segment has the database's step: Leaf with a fixed step.
/// The step lives in the Leaf server's memory, so a restart starts over from the database's.
#[derive(Debug, Clone)]
pub struct Leaf {
    db_step: u64,
    adaptive: bool,
    step: u64,
    loads: u64,
    update_ms: Option<u64>,
}

impl Leaf {
    /// Leaf's rule over a database step of `db_step`.
    pub fn adaptive(db_step: u64) -> Self {
        Self::with(db_step, true)
    }

    /// Leaf's double buffer with every segment `step` long.
    pub fn fixed(step: u64) -> Self {
        Self::with(step, false)
    }

    fn with(db_step: u64, adaptive: bool) -> Self {
        Self {
            db_step,
            adaptive,
            step: db_step,
            loads: 0,
            update_ms: None,
        }
    }

    /// The step of the next load at `now_ms` (`updateSegmentFromDb`).
    fn next_step(&mut self, now_ms: u64) -> u64 {
        let Some(update_ms) = self.update_ms.filter(|_| self.adaptive) else {
            self.step = self.db_step;
            return self.step;
        };
        let duration = now_ms - update_ms;
        if duration < LEAF_SEGMENT_DURATION_MS {
            if self.step * 2 <= LEAF_MAX_STEP {
                self.step *= 2;
            }
        } else if duration < LEAF_SEGMENT_DURATION_MS * 2 {
            // Between 15 and 30 minutes: the step stays.
        } else if self.step / 2 >= self.db_step {
            self.step /= 2;
        }
        self.step
    }
}

impl BlockPolicy for Leaf {
    fn name(&self) -> &'static str {
        if self.adaptive {
            "Leaf (dynamic step)"
        } else {
            "fixed step (Leaf, 1000)"
        }
    }

    fn start(&mut self, now_ms: u64) -> u64 {
        self.loads = 0;
        self.update_ms = None;
        let step = self.next_step(now_ms);
        self.loads = 1;
        step
    }

    fn poll(&mut self, view: &NodeView) -> Option<u64> {
        let low = (view.current_left as f64) < LEAF_LOAD_BELOW_IDLE * view.current_len as f64;
        if view.queued > 0 || !low {
            return None;
        }
        self.loads += 1;
        Some(self.next_step(view.now_ms))
    }

    fn granted(&mut self, now_ms: u64) {
        // The init load sets no timestamp; every later one stamps its end.
        if self.loads >= 2 {
            self.update_ms = Some(now_ms);
        }
    }
}

/// CosId's prefetch worker runs every job this often (`DEFAULT_PREFETCH_PERIOD`, 1 s).
pub const COSID_PREFETCH_PERIOD_MS: u64 = 1_000;
/// A job is hungry for this long after its last starvation (`hungerThreshold`, 5 s).
pub const COSID_HUNGER_THRESHOLD_S: u64 = 5;
/// Segments kept ahead when not hungry (`DEFAULT_SAFE_DISTANCE`).
pub const COSID_SAFE_DISTANCE: u64 = 2;
/// The prefetch distance's cap (`MAX_PREFETCH_DISTANCE`), in segments.
pub const COSID_PREFETCH_DISTANCE_MAX: u64 = 100_000_000;

/// CosId's segment chain (`SegmentChainId`, github.com/Ahoo-Wang/CosId, commit
/// fc29da0a2f11063f3b10c36b4cb9f7b22bae76fc,
/// `cosid-core/src/main/java/me/ahoo/cosid/segment/SegmentChainId.java`, with
/// `concurrent/AffinityJob.java`, `concurrent/DefaultPrefetchWorker.java` and
/// `concurrent/PrefetchWorkerExecutorService.java`):
///
/// * `generate`: a caller that finds the chain empty fetches `safeDistance` segments itself
///   (the hot path waits) and calls `hungry()`, which stamps the hunger time (seconds) and
///   wakes the prefetch worker.
/// * `PrefetchJob.prefetch`, run every second and on every wake-up: hungry means "starved
///   less than 5 s ago"; hungry doubles the prefetch distance (at most 100,000,000), not
///   hungry halves it (at least `safeDistance`). With `gap` the whole steps left in the chain,
///   a job that is not hungry and has `gap >= safeDistance` does nothing; otherwise it appends
///   `hungry ? prefetchDistance : safeDistance - gap` segments in one distributor call.
///
/// The chain lives in the process, so a restart starts over (and its first call starves).
#[derive(Debug, Clone)]
pub struct CosId {
    step: u64,
    distance: u64,
    last_hunger_s: Option<u64>,
    next_run_ms: u64,
    wake: bool,
}

impl CosId {
    /// A chain of segments of `step` ids.
    pub fn new(step: u64) -> Self {
        Self {
            step,
            distance: COSID_SAFE_DISTANCE,
            last_hunger_s: None,
            next_run_ms: 0,
            wake: false,
        }
    }

    /// `PrefetchJob.prefetch` at `now_ms` with `available` ids left in the chain.
    fn prefetch(&mut self, now_ms: u64, available: u64) -> Option<u64> {
        let now_s = now_ms / 1_000;
        let hungry = self
            .last_hunger_s
            .is_some_and(|h| now_s - h < COSID_HUNGER_THRESHOLD_S);
        self.distance = if hungry {
            (self.distance * 2).min(COSID_PREFETCH_DISTANCE_MAX)
        } else {
            (self.distance / 2).max(COSID_SAFE_DISTANCE)
        };
        let gap = available / self.step;
        if gap >= COSID_SAFE_DISTANCE && !hungry {
            return None;
        }
        let segments = if hungry {
            self.distance
        } else {
            COSID_SAFE_DISTANCE - gap
        };
        Some(segments * self.step)
    }

    fn starve(&mut self, now_ms: u64) -> u64 {
        self.last_hunger_s = Some(now_ms / 1_000);
        self.wake = true;
        COSID_SAFE_DISTANCE * self.step
    }
}

impl BlockPolicy for CosId {
    fn name(&self) -> &'static str {
        "CosId segment chain"
    }

    fn start(&mut self, now_ms: u64) -> u64 {
        *self = Self::new(self.step);
        self.next_run_ms = now_ms + COSID_PREFETCH_PERIOD_MS;
        // The root chain holds no ids: the first `generate` starves.
        self.starve(now_ms)
    }

    fn poll(&mut self, view: &NodeView) -> Option<u64> {
        if view.starved {
            return Some(self.starve(view.now_ms));
        }
        if self.wake || view.now_ms >= self.next_run_ms {
            // The worker parks for a period after every run, woken or not.
            self.wake = false;
            self.next_run_ms = view.now_ms + COSID_PREFETCH_PERIOD_MS;
            return self.prefetch(view.now_ms, view.available());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(now_ms: u64, current_len: u64, current_left: u64, queued: u64) -> NodeView {
        NodeView {
            now_ms,
            current_len,
            current_left,
            queued,
            starved: false,
        }
    }

    #[test]
    fn ours_asks_at_half_and_sizes_from_the_reported_rate() {
        let mut p = Ours::new(1_000, 1_000_000);
        // Nothing forecast yet: the minimum.
        assert_eq!(p.start(0), 1_000);
        p.used(2_000);
        // More than half left, or a next block waiting: no request.
        assert_eq!(p.poll(&view(1_000, 1_000, 501, 0)), None);
        assert_eq!(p.poll(&view(1_000, 1_000, 500, 1_000)), None);
        // Half left: report 2,000 used over 1,000 ms; 2,000/s × 20 s × 1.25.
        assert_eq!(p.poll(&view(1_000, 1_000, 500, 0)), Some(50_000));
        // The next report, 6,000 over 1 s: Holt's second observation sets level 6,000 and
        // trend +4,000, so 10,000/s × 20 s × 1.25 = 250,000.
        p.used(6_000);
        assert_eq!(p.poll(&view(2_000, 50_000, 25_000, 0)), Some(250_000));
        // Far beyond the maximum: clamped.
        p.used(10_000_000);
        assert_eq!(p.poll(&view(3_000, 250_000, 0, 0)), Some(1_000_000));
    }

    #[test]
    fn ours_keeps_its_forecast_across_a_node_restart() {
        let mut p = Ours::new(1_000, 1_000_000);
        p.start(0);
        p.used(2_000);
        assert_eq!(p.poll(&view(1_000, 1_000, 0, 0)), Some(50_000));
        assert_eq!(p.start(5_000), 50_000);
        // A report shorter than a second is pooled, not observed, and its rate (1,000/s) is
        // below the forecast: the block stays.
        p.used(100);
        assert_eq!(p.poll(&view(5_100, 50_000, 0, 0)), Some(50_000));
    }

    #[test]
    fn leaf_loads_at_ten_percent_and_doubles_or_halves_by_duration() {
        let min = 60_000;
        let mut p = Leaf::adaptive(1_000);
        assert_eq!(p.start(0), 1_000);
        p.granted(2);
        // 950 idle of 1,000: not below 900 yet. 899: load, with the database's step (the
        // second load only stamps the time).
        assert_eq!(p.poll(&view(10, 1_000, 950, 0)), None);
        assert_eq!(p.poll(&view(10, 1_000, 899, 0)), Some(1_000));
        p.granted(13);
        // A next segment is ready: nothing more.
        assert_eq!(p.poll(&view(14, 1_000, 100, 1_000)), None);
        // 1 min after the last load: doubled.
        assert_eq!(p.poll(&view(13 + min, 1_000, 0, 0)), Some(2_000));
        p.granted(20 + min);
        // 20 min: unchanged.
        assert_eq!(p.poll(&view(20 + 21 * min, 2_000, 0, 0)), Some(2_000));
        p.granted(20 + 21 * min);
        // 31 min: halved.
        assert_eq!(p.poll(&view(20 + 52 * min, 2_000, 0, 0)), Some(1_000));
        p.granted(20 + 52 * min);
        // 40 min: half would be below the database's step, so it stays.
        assert_eq!(p.poll(&view(20 + 92 * min, 1_000, 0, 0)), Some(1_000));
    }

    #[test]
    fn leaf_never_doubles_past_its_max_step_and_a_restart_forgets() {
        let mut p = Leaf::adaptive(1_000);
        p.start(0);
        let mut t = 0;
        let mut last = 0;
        for _ in 0..30 {
            p.granted(t);
            t += 1_000;
            last = p.poll(&view(t, 1, 0, 0)).unwrap();
        }
        // 1,000 doubles to 512,000; 1,024,000 would pass 1,000,000.
        assert_eq!(last, 512_000);
        assert_eq!(p.start(t), 1_000);
        let mut fixed = Leaf::fixed(1_000);
        fixed.start(0);
        fixed.granted(1);
        fixed.poll(&view(2, 1_000, 0, 0));
        fixed.granted(3);
        assert_eq!(fixed.poll(&view(4, 1_000, 0, 0)), Some(1_000));
    }

    #[test]
    fn cosid_doubles_while_hungry_and_decays_to_the_safe_distance() {
        let mut p = CosId::new(1_000);
        // The first call starves: 2 segments at once, and the worker is woken.
        assert_eq!(p.start(0), 2_000);
        // Woken, hungry (starved this second): distance 2 → 4 segments.
        assert_eq!(p.poll(&view(3, 2_000, 2_000, 0)), Some(4_000));
        // Between runs: nothing.
        assert_eq!(p.poll(&view(500, 2_000, 1_000, 4_000)), None);
        // Runs at 1 s..4 s are within 5 s of the hunger: 8, 16, 32, 64 segments, whatever
        // the chain holds.
        for (t, want) in [
            (1_003, 8_000),
            (2_003, 16_000),
            (3_003, 32_000),
            (4_003, 64_000),
        ] {
            assert_eq!(p.poll(&view(t, 1_000, 1_000, 500_000)), Some(want), "{t}");
        }
        // At 5 s it is no longer hungry: the distance halves (64 → 32) and a full chain
        // gets nothing.
        assert_eq!(p.poll(&view(5_003, 1_000, 1_000, 500_000)), None);
        assert_eq!(p.distance, 32);
        // A chain with one whole step left gets the one missing segment.
        assert_eq!(p.poll(&view(6_003, 1_000, 500, 1_000)), Some(1_000));
        assert_eq!(p.distance, 16);
        // Starving again: the hot path fetches 2 segments itself; the woken worker then
        // doubles the distance (16 → 32).
        let starved = NodeView {
            starved: true,
            ..view(6_500, 0, 0, 0)
        };
        assert_eq!(p.poll(&starved), Some(2_000));
        assert_eq!(p.poll(&view(6_504, 2_000, 1_990, 0)), Some(32_000));
    }
}
