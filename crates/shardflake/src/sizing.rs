//! Counter-block sizing: how many counter values the next block of a temporal shard holds.
//!
//! One rule for every place that grants blocks, the standalone node's keeper and the
//! coordinator: size a block to last about a target time at the rate the previous one was
//! used, change by at most a bounded factor per block so that one odd interval does not swing
//! it, and stay within bounds. A block sized from a forecast (the first block of a shard in a
//! cluster) gets headroom on top of the forecast.

use crate::temporal::REFILL_FRACTION_DEFAULT;

/// Forecast-sized blocks are the forecast times this factor, so a forecast that is a little
/// low still fits.
pub const FORECAST_HEADROOM: f64 = 1.25;

/// Segment mode (namespaces): a node's block covers this much of its forecast demand (ms).
pub const SEGMENT_HORIZON_MS_DEFAULT: u64 = 20_000;

/// Segment mode: a node asks for its next block of a namespace once the current one has this
/// fraction left (double buffering: the next block is there before the current runs out).
pub const SEGMENT_PREFETCH_FRACTION: f64 = 0.5;

/// The bounds and target of block sizes.
///
/// ```
/// use shardflake::{BlockSizing, BlockUse};
/// let s = BlockSizing { min: 1_000, max: 1_000_000, target_ms: 2_000, change_factor_max: 2 };
/// assert_eq!(s.refill(None), 1_000);
/// // 4,000 values, asked to be refilled with a quarter left after 100 ms: 3,000 used in
/// // 100 ms, 60,000 would last 2 s, but a block grows at most twofold.
/// assert_eq!(s.refill(Some(BlockUse { len: 4_000, lasted_ms: 100 })), 8_000);
/// assert_eq!(s.for_forecast(100_000), 125_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizing {
    /// Smallest block, and the size of a first block when nothing is known.
    pub min: u64,
    /// Largest block.
    pub max: u64,
    /// A block should last about this long at the observed rate, in ms.
    pub target_ms: u64,
    /// A block is at most this many times larger, or smaller, than the previous one.
    pub change_factor_max: u64,
}

/// The previous block of the same host: its size, and how long after its grant the next one
/// was asked for. Generators ask with [`REFILL_FRACTION_DEFAULT`] of a block left, so the rest
/// of it was used in that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockUse {
    /// Counter values in the previous block.
    pub len: u64,
    /// Time from its grant to the request for the next one, in ms.
    pub lasted_ms: u64,
}

impl BlockSizing {
    /// The size of the next block after `last` (the first block's size without it).
    pub fn refill(&self, last: Option<BlockUse>) -> u64 {
        let Some(last) = last else {
            return self.bounded(self.min);
        };
        let used = last.len - (last.len as f64 * REFILL_FRACTION_DEFAULT) as u64;
        let lasted_ms = last.lasted_ms.max(1);
        let want = (used as u128 * self.target_ms as u128 / lasted_ms as u128).min(u64::MAX as u128)
            as u64;
        let factor = self.change_factor_max.max(1);
        let want = want.clamp(
            last.len / factor,
            last.len.saturating_mul(factor).max(last.len / factor),
        );
        self.bounded(want)
    }

    /// The size of a block for a forecast use of `forecast` values, with
    /// [`FORECAST_HEADROOM`].
    pub fn for_forecast(&self, forecast: u64) -> u64 {
        self.bounded((forecast as f64 * FORECAST_HEADROOM).ceil() as u64)
    }

    fn bounded(&self, size: u64) -> u64 {
        size.max(self.min).min(self.max.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BlockSizing = BlockSizing {
        min: 100,
        max: 10_000,
        target_ms: 1_000,
        change_factor_max: 4,
    };

    #[test]
    fn blocks_follow_the_rate_within_the_factor_and_the_bounds() {
        // (previous block, ms it lasted, next block)
        let cases = [
            // 300 of 400 used in 1 s: 300 lasts the target.
            (400, 1_000, 300),
            // Used in 10 ms: a hundredfold rate, but at most four times larger.
            (400, 10, 1_600),
            // Used over 100 s: at most four times smaller, and never below the minimum.
            (4_000, 100_000, 1_000),
            (200, 100_000, 100),
            // Never above the maximum, whatever the rate.
            (9_000, 1, 10_000),
        ];
        for (len, lasted_ms, next) in cases {
            assert_eq!(
                S.refill(Some(BlockUse { len, lasted_ms })),
                next,
                "{len} in {lasted_ms} ms"
            );
        }
        assert_eq!(S.for_forecast(0), 100);
        assert_eq!(S.for_forecast(1_000_000), 10_000);
    }
}
