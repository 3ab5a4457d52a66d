//! The block-policy comparison: a deterministic, discrete-time simulation of one node drawing
//! ids from blocks under each [`crate::policies`] policy, on the same demand traces and the
//! same fetch latency, and the table of what each policy cost.
//!
//! Time advances in steps of 1 ms. In each step: blocks whose fetch has completed arrive, the
//! step's demand (plus any demand still waiting) is served from the blocks in order, and,
//! when no fetch is in flight, the policy is asked whether to fetch now. Demand that finds no
//! id waits for the next block: that is a *stall* of the hot path, counted once per episode,
//! with its duration in ms. A fetch is one coordinator call; its latency comes from
//! [`Latency`], drawn from a seeded generator so that the k-th call of every policy takes
//! the same time.
//!
//! The node stops at a quarter, half and three quarters of every trace and at its end; the
//! ids it holds then (the rest of its current block, the blocks waiting, a block in flight)
//! are wasted. It restarts at once and loads its first block before taking traffic (not a
//! stall). What a policy keeps across the restart is the policy's business: ours keeps the
//! coordinator's forecast, Leaf and CosId keep nothing (their state lives in the process).

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::policies::{BlockPolicy, CosId, Leaf, NodeView, Ours};

/// The real trace: requests per second to NASA's web server on 1995-07-05, 06:00–18:00
/// (provenance in the file's header).
pub const NASA_TRACE: &str = include_str!("../traces/nasa-http-1995-07-05.txt");
/// Each request of the NASA trace stands for this many ids.
pub const NASA_IDS_PER_REQUEST: u64 = 1_000;

/// Smallest and largest block of every adaptive policy (Leaf's `MAX_STEP` is the largest),
/// and the step of the fixed policy, Leaf's dynamic-step floor and CosId's segment: 1,000,
/// the segment length of Meituan's Leaf design article (its README's sample row uses 2,000).
pub const STEP: u64 = 1_000;
/// Largest block of ours (Leaf's `MAX_STEP`).
pub const BLOCK_MAX: u64 = 1_000_000;

/// A splitmix64 generator: small, seedable, the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The time a block fetch takes, from the node's request to the block's arrival: a
/// coordinator round trip of `base_ms` plus a uniform jitter of `0..=jitter_ms`, and one call
/// in `slow_one_in` takes `slow_ms` instead (a coordinator fsync stall or a leader change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Round trip without jitter.
    pub base_ms: u64,
    /// Largest extra delay of an ordinary call.
    pub jitter_ms: u64,
    /// One call in this many is slow.
    pub slow_one_in: u64,
    /// A slow call's latency.
    pub slow_ms: u64,
}

impl Default for Latency {
    /// 2–5 ms, and 50 ms for one call in 100.
    fn default() -> Self {
        Self {
            base_ms: 2,
            jitter_ms: 3,
            slow_one_in: 100,
            slow_ms: 50,
        }
    }
}

impl Latency {
    fn draw(&self, rng: &mut SplitMix) -> u64 {
        let r = rng.next_u64();
        if r.is_multiple_of(self.slow_one_in) {
            self.slow_ms
        } else {
            self.base_ms + (r >> 32) % (self.jitter_ms + 1)
        }
    }
}

/// Ids demanded per step of `step_ms`, spread evenly over the step's milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The row's name.
    pub name: &'static str,
    /// Length of one step.
    pub step_ms: u64,
    /// Ids demanded in each step.
    pub ids: Vec<u64>,
}

const HOUR_MS: u64 = 3_600_000;
const SYNTH_STEP_MS: u64 = 100;

impl Trace {
    /// A synthetic trace of `hours` at a rate (ids/s) given by `rate(t_ms)`, in 100 ms steps,
    /// each step's ids drawn within ±20 % of the rate.
    fn synthetic(
        name: &'static str,
        hours: u64,
        seed: u64,
        mut rate: impl FnMut(u64) -> f64,
    ) -> Self {
        let mut rng = SplitMix::new(seed);
        let ids = (0..hours * HOUR_MS / SYNTH_STEP_MS)
            .map(|i| {
                let per_step = rate(i * SYNTH_STEP_MS) * SYNTH_STEP_MS as f64 / 1_000.0;
                let noise = 0.8 + 0.4 * rng.unit();
                (per_step * noise).round() as u64
            })
            .collect();
        Self {
            name,
            step_ms: SYNTH_STEP_MS,
            ids,
        }
    }

    /// The recorded trace ([`NASA_TRACE`]), one step a second, each request
    /// [`NASA_IDS_PER_REQUEST`] ids.
    pub fn nasa() -> Self {
        let ids = NASA_TRACE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let n: u64 = l.trim().parse().expect("the trace holds one count a line");
                n * NASA_IDS_PER_REQUEST
            })
            .collect();
        Self {
            name: "real: NASA HTTP 1995-07-05 ×1000",
            step_ms: 1_000,
            ids,
        }
    }

    /// Every trace of the table, from `seed`.
    ///
    /// * steady: 5,000 ids/s for 4 h;
    /// * diurnal: a sine between 500 and 9,500 ids/s with a 24 h period, lowest at 0 h;
    /// * step ×10: 2,000 ids/s, 20,000 in the second hour, for 4 h;
    /// * decay: 20,000 ids/s halving every 30 min, plus 100, for 4 h;
    /// * on/off: bursts of 15,000 ids/s (exponential lengths, mean 30 s) between idle spells
    ///   of 50 ids/s (mean 90 s), for 4 h;
    /// * real: [`Trace::nasa`], 12 h.
    pub fn all(seed: u64) -> Vec<Trace> {
        let mut onoff = OnOff::new(seed ^ 0x0F0F);
        vec![
            Self::synthetic("steady 5k/s", 4, seed ^ 1, |_| 5_000.0),
            Self::synthetic("diurnal sine 0.5k-9.5k/s", 24, seed ^ 2, |t| {
                let phase = t as f64 / (24 * HOUR_MS) as f64 * std::f64::consts::TAU;
                5_000.0 - 4_500.0 * phase.cos()
            }),
            Self::synthetic("step x10 2k->20k/s", 4, seed ^ 3, |t| {
                if (HOUR_MS..2 * HOUR_MS).contains(&t) {
                    20_000.0
                } else {
                    2_000.0
                }
            }),
            Self::synthetic("decay 20k/s, half-life 30 min", 4, seed ^ 4, |t| {
                20_000.0 * 0.5f64.powf(t as f64 / 1_800_000.0) + 100.0
            }),
            Self::synthetic("on/off bursts 15k/s", 4, seed ^ 5, |t| onoff.rate(t)),
            Self::nasa(),
        ]
    }

    /// The first `ms` of the trace.
    pub fn truncated(mut self, ms: u64) -> Self {
        self.ids.truncate(ms.div_ceil(self.step_ms) as usize);
        self
    }

    /// Length in ms.
    pub fn duration_ms(&self) -> u64 {
        self.ids.len() as u64 * self.step_ms
    }

    /// Ids demanded in millisecond `t`.
    fn demand(&self, t: u64) -> u64 {
        let n = self.ids[(t / self.step_ms) as usize];
        let i = t % self.step_ms;
        (i + 1) * n / self.step_ms - i * n / self.step_ms
    }
}

/// Alternating on and off spells with exponential lengths.
struct OnOff {
    rng: SplitMix,
    on: bool,
    until_ms: u64,
}

impl OnOff {
    const ON_MEAN_MS: f64 = 30_000.0;
    const OFF_MEAN_MS: f64 = 90_000.0;

    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix::new(seed),
            on: true,
            until_ms: 0,
        }
    }

    /// The rate at `t_ms`; called with rising times.
    fn rate(&mut self, t_ms: u64) -> f64 {
        while t_ms >= self.until_ms {
            self.on = !self.on;
            let mean = if self.on {
                Self::ON_MEAN_MS
            } else {
                Self::OFF_MEAN_MS
            };
            let len = -mean * (1.0 - self.rng.unit()).ln();
            self.until_ms += len.max(1.0) as u64;
        }
        if self.on {
            15_000.0
        } else {
            50.0
        }
    }
}

/// What one policy cost on one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The trace's name.
    pub trace: &'static str,
    /// The policy's name.
    pub policy: &'static str,
    /// Ids handed out.
    pub ids: u64,
    /// Episodes in which demand found no id left.
    pub stalls: u64,
    /// Milliseconds in which demand waited.
    pub stalled_ms: u64,
    /// Ids held by the node when it stopped, over all stops.
    pub wasted: u64,
    /// Block fetches (coordinator calls), the first block of every start included.
    pub calls: u64,
    /// The largest block fetched.
    pub block_max: u64,
}

impl Outcome {
    /// Coordinator calls per million ids handed out.
    pub fn calls_per_million(&self) -> f64 {
        self.calls as f64 * 1e6 / self.ids.max(1) as f64
    }
}

/// Runs `policy` over `trace` with fetch latencies drawn from `seed`.
pub fn simulate(
    trace: &Trace,
    policy: &mut dyn BlockPolicy,
    latency: Latency,
    seed: u64,
) -> Outcome {
    let end_ms = trace.duration_ms();
    let stops = [end_ms / 4, end_ms / 2, end_ms * 3 / 4];
    let mut rng = SplitMix::new(seed);
    let mut out = Outcome {
        trace: trace.name,
        policy: policy.name(),
        ids: 0,
        stalls: 0,
        stalled_ms: 0,
        wasted: 0,
        calls: 0,
        block_max: 0,
    };
    // Blocks as (length, ids left); the front one is current.
    let mut blocks: VecDeque<(u64, u64)> = VecDeque::new();
    // The fetch in flight: (arrival ms, length).
    let mut in_flight: Option<(u64, u64)> = None;
    // Demand not served yet: it waits (across a restart too, as clients retry).
    let mut waiting = 0u64;
    let mut stalled = false;
    start(&mut blocks, policy, &mut out, 0);
    for t in 0..end_ms {
        if stops.contains(&t) {
            out.wasted += held(&blocks, in_flight);
            blocks.clear();
            in_flight = None;
            start(&mut blocks, policy, &mut out, t);
        }
        if let Some((_, len)) = in_flight.filter(|f| f.0 <= t) {
            if blocks.front().is_some_and(|b| b.1 == 0) {
                blocks.pop_front();
            }
            blocks.push_back((len, len));
            in_flight = None;
            policy.granted(t);
        }
        waiting += trace.demand(t);
        let mut served = 0;
        while waiting > 0 {
            let Some(front) = blocks.front_mut() else {
                break;
            };
            let take = waiting.min(front.1);
            front.1 -= take;
            waiting -= take;
            served += take;
            // A used-up block stays current while it is the only one, so that the policy
            // sees it used up; it gives way as soon as another is there.
            if front.1 == 0 {
                if blocks.len() == 1 {
                    break;
                }
                blocks.pop_front();
            }
        }
        if served > 0 {
            policy.used(served);
            out.ids += served;
        }
        if waiting > 0 {
            if !stalled {
                out.stalls += 1;
            }
            stalled = true;
            out.stalled_ms += 1;
        } else {
            stalled = false;
        }
        if in_flight.is_none() {
            let (current_len, current_left) = blocks.front().copied().unwrap_or((0, 0));
            let view = NodeView {
                now_ms: t,
                current_len,
                current_left,
                queued: blocks.iter().skip(1).map(|b| b.1).sum(),
                starved: waiting > 0,
            };
            if let Some(len) = policy.poll(&view) {
                let len = len.max(1);
                out.calls += 1;
                out.block_max = out.block_max.max(len);
                in_flight = Some((t + latency.draw(&mut rng).max(1), len));
            }
        }
    }
    out.wasted += held(&blocks, in_flight);
    out
}

/// A (re)start: the policy's first block, loaded before the node takes traffic.
fn start(
    blocks: &mut VecDeque<(u64, u64)>,
    policy: &mut dyn BlockPolicy,
    out: &mut Outcome,
    t: u64,
) {
    let first = policy.start(t).max(1);
    policy.granted(t);
    out.calls += 1;
    out.block_max = out.block_max.max(first);
    blocks.push_back((first, first));
}

/// The ids a stopping node wastes: what is left in its blocks and the block in flight.
fn held(blocks: &VecDeque<(u64, u64)>, in_flight: Option<(u64, u64)>) -> u64 {
    blocks.iter().map(|b| b.1).sum::<u64>() + in_flight.map_or(0, |f| f.1)
}

/// The four policies of the table, fresh.
pub fn policies() -> Vec<Box<dyn BlockPolicy>> {
    vec![
        Box::new(Ours::new(STEP, BLOCK_MAX)),
        Box::new(Leaf::adaptive(STEP)),
        Box::new(CosId::new(STEP)),
        Box::new(Leaf::fixed(STEP)),
    ]
}

/// Every policy over every trace, one row each.
pub fn compare(traces: &[Trace], latency: Latency, seed: u64) -> Vec<Outcome> {
    let mut rows = Vec::new();
    for trace in traces {
        for mut policy in policies() {
            rows.push(simulate(trace, policy.as_mut(), latency, seed));
        }
    }
    rows
}

/// `n` with a thin space between groups of three digits, as the README's tables.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The rows as a Markdown table.
pub fn table(rows: &[Outcome]) -> String {
    let mut s = String::from(
        "| trace | policy | ids | stalls | stalled ms | ids wasted at 4 stops | coordinator calls per M ids | largest block |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.trace,
            r.policy,
            grouped(r.ids),
            grouped(r.stalls),
            grouped(r.stalled_ms),
            grouped(r.wasted),
            r.calls_per_million(),
            grouped(r.block_max),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(seed: u64) -> Vec<Trace> {
        Trace::all(seed)
            .into_iter()
            .map(|t| t.truncated(10 * 60_000))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_table() {
        let a = table(&compare(&short(7), Latency::default(), 7));
        let b = table(&compare(&short(7), Latency::default(), 7));
        assert_eq!(a, b);
        let c = table(&compare(&short(8), Latency::default(), 8));
        assert_ne!(a, c, "another seed, other noise");
    }

    #[test]
    fn demand_is_served_whole_and_spread_over_the_step() {
        let trace = Trace {
            name: "t",
            step_ms: 1_000,
            ids: vec![1_500, 0, 7],
        };
        let per_ms: Vec<u64> = (0..3_000).map(|t| trace.demand(t)).collect();
        assert_eq!(per_ms[..1_000].iter().sum::<u64>(), 1_500);
        assert!(per_ms[..1_000].iter().all(|&n| n == 1 || n == 2));
        assert_eq!(per_ms[2_000..].iter().sum::<u64>(), 7);
        // Every policy hands out every id demanded: a stall or a restart only delays.
        for mut p in policies() {
            let o = simulate(&trace, p.as_mut(), Latency::default(), 1);
            assert_eq!(o.ids, 1_507, "{}", o.policy);
        }
    }

    #[test]
    fn a_fixed_step_stalls_when_a_block_lasts_less_than_a_fetch() {
        // 2,000 ids per ms: a 1,000-id block lasts half a millisecond, a fetch 2–5 ms.
        let trace = Trace {
            name: "t",
            step_ms: 1,
            ids: vec![2_000; 2_000],
        };
        let o = simulate(&trace, &mut Leaf::fixed(1_000), Latency::default(), 1);
        // The backlog never clears: one stall, every millisecond of it.
        assert_eq!((o.stalls, o.stalled_ms), (1, 2_000), "{o:?}");
        // Ours grows its blocks once its reports cover a second, and catches up.
        let ours = simulate(
            &trace,
            &mut Ours::new(1_000, 1_000_000),
            Latency::default(),
            1,
        );
        assert!(ours.ids > 2 * o.ids, "{ours:?} {o:?}");
        assert!(ours.stalled_ms < 2_000, "{ours:?}");
        // Every id fetched is either handed out or held at a stop.
        assert_eq!(o.calls * 1_000, o.ids + o.wasted, "{o:?}");
    }

    #[test]
    fn the_recorded_trace_is_twelve_hours_of_seconds() {
        let t = Trace::nasa();
        assert_eq!(t.ids.len(), 12 * 3_600);
        assert_eq!(t.ids.iter().sum::<u64>(), 62_253 * NASA_IDS_PER_REQUEST);
    }

    #[test]
    fn grouping_digits() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1 000");
        assert_eq!(grouped(12_345_678), "12 345 678");
    }
}
