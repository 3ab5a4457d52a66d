//! The built-in layouts (Twitter, Discord, Instagram, Sonyflake, UidGenerator, temporal,
//! shardflake's own and a JavaScript-safe one) and the widths of the temporal layout.

use super::{Layout, LayoutBuilder, LayoutKind};
use crate::error::LayoutError;

/// Names of the built-in presets, in the order `shardflake inspect` lists them.
pub const PRESETS: &[&str] = &[
    "default",
    "twitter",
    "discord",
    "instagram",
    "sonyflake",
    "sonyflake-v2",
    "uidgenerator",
    "temporal",
    "js-safe",
];

/// The largest integer a JavaScript number (an IEEE 754 double) holds exactly, 2^53 − 1
/// (ECMA-262, `Number.MAX_SAFE_INTEGER`). Every id of the `js-safe` preset is at most this.
pub const JS_MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// shardflake's own epoch: 2025-01-01T00:00:00Z.
pub const SHARDFLAKE_EPOCH_MS: u64 = 1_735_689_600_000;

/// Default granularity of the temporal layout's shard: one hour.
pub const TEMPORAL_GRANULARITY_MS_DEFAULT: u64 = 3_600_000;

/// Shortest shard a temporal layout spec accepts: one second. Shorter shards leave too little
/// time to prepare the next shard's counter block ahead of its start.
pub const TEMPORAL_GRANULARITY_MS_MIN: u64 = 1_000;

/// Field widths of the temporal layout (`shard | host | counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemporalWidths {
    /// Bits of the shard index (time since the epoch in granularity units).
    pub shard_bits: u32,
    /// Bits of the host id.
    pub host_bits: u32,
    /// Bits of the per-shard counter.
    pub counter_bits: u32,
}

impl Default for TemporalWidths {
    /// 20 shard bits (with hourly shards: 119 years), 10 host bits (1024 hosts) and 33 counter
    /// bits (8.6 billion ids per host per shard, 2.38 million per second sustained for an hour).
    fn default() -> Self {
        Self {
            shard_bits: 20,
            host_bits: 10,
            counter_bits: 33,
        }
    }
}

/// The lifetime [`TemporalWidths::for_granularity`] sizes the shard field for: 100 years.
pub const TEMPORAL_LIFETIME_MS_MIN: u64 = 100 * 365 * 86_400_000;

impl TemporalWidths {
    /// Widths for shards of `granularity_ms`: the fewest shard bits that last at least
    /// [`TEMPORAL_LIFETIME_MS_MIN`], 10 host bits, and the rest (up to 63) for the counter.
    ///
    /// Hourly shards give the defaults (20/10/33); 5-second shards need 30 shard bits and
    /// leave 23 counter bits, 8.4 million ids per host per shard.
    ///
    /// ```
    /// use shardflake::TemporalWidths;
    /// assert_eq!(TemporalWidths::for_granularity(3_600_000), TemporalWidths::default());
    /// let w = TemporalWidths::for_granularity(5_000);
    /// assert_eq!((w.shard_bits, w.host_bits, w.counter_bits), (30, 10, 23));
    /// ```
    pub fn for_granularity(granularity_ms: u64) -> Self {
        let shards = TEMPORAL_LIFETIME_MS_MIN.div_ceil(granularity_ms.max(1));
        let shard_bits = (64 - (shards - 1).leading_zeros()).clamp(8, 40);
        let host_bits = 10;
        Self {
            shard_bits,
            host_bits,
            counter_bits: (63 - shard_bits - host_bits).min(40),
        }
    }
}

impl Layout {
    /// A built-in layout by name; see [`PRESETS`].
    ///
    /// * `default`: 41-bit ms since 2025-01-01 | `node` 10 | `sequence` 12 (lifetime to 2094).
    /// * `twitter`: 41-bit ms | `datacenter` 5 | `worker` 5 | `sequence` 12, epoch 1288834974657.
    /// * `discord`: 41-bit ms | `worker` 5 | `process` 5 | `increment` 12, epoch 1420070400000.
    /// * `instagram`: 41-bit ms | `shard` 13 | `sequence` 10, epoch 1314220021721 (uses all
    ///   64 bits, as Instagram's scheme does).
    /// * `sonyflake`: 39-bit 10 ms units | `sequence` 8 | `machine` 16, start 2014-09-01.
    /// * `sonyflake-v2`: the same, start 2025-01-01.
    /// * `uidgenerator`: 28-bit seconds | `worker` 22 | `sequence` 13, epoch 2016-05-20.
    /// * `temporal`: hourly `shard` 20 | `host` 10 | `counter` 33, epoch 2025-01-01.
    /// * `js-safe`: 41-bit ms since 2025-01-01 | `node` 6 | `sequence` 6: 53 bits, so every
    ///   id is at most [`JS_MAX_SAFE_INTEGER`] and survives `JSON.parse` as a number.
    ///   64 nodes, 64 ids per ms per node (64,000 ids/s with a real clock; more only by
    ///   borrowing time), lifetime to 2094 like `default`. yitter's IdGenerator splits its
    ///   53 bits the same way by default (`WorkerIdBitLength` 6, `SeqBitLength` 6); CosId's
    ///   `SafeJavaScriptSnowflakeId.ofMillisecond` keeps 41 ms bits too and splits 3/9.
    ///
    /// ```
    /// use shardflake::{Layout, JS_MAX_SAFE_INTEGER};
    /// let l = Layout::preset("js-safe").unwrap();
    /// assert_eq!(l.total_bits(), 53);
    /// assert_eq!(l.ids_per_tick(), 64);
    /// assert_eq!(l.overflow_time(), "2094-09-07T15:47:35.552Z");
    /// let node = l.node_bits(&[("node", 63)]).unwrap();
    /// let largest = l.compose(l.timestamp_field().max(), l.sequence_field().max(), node);
    /// assert_eq!(largest, JS_MAX_SAFE_INTEGER);
    /// ```
    pub fn preset(name: &str) -> Result<Layout, LayoutError> {
        let b = LayoutBuilder::new(name);
        let built = match name {
            "default" => b
                .timestamp("timestamp", 41)
                .node("node", 10)
                .sequence("sequence", 12)
                .epoch_ms(SHARDFLAKE_EPOCH_MS),
            // twitter-archive/snowflake, IdWorker.scala: twepoch = 1288834974657L.
            "twitter" => b
                .timestamp("timestamp", 41)
                .node("datacenter", 5)
                .node("worker", 5)
                .sequence("sequence", 12)
                .epoch_ms(1_288_834_974_657),
            // Discord API reference, "Snowflakes": DISCORD_EPOCH 1420070400000.
            "discord" => b
                .timestamp("timestamp", 41)
                .node("worker", 5)
                .node("process", 5)
                .sequence("increment", 12)
                .epoch_ms(1_420_070_400_000),
            // Instagram Engineering, "Sharding & IDs at Instagram" (2012).
            "instagram" => b
                .timestamp("timestamp", 41)
                .node("shard", 13)
                .sequence("sequence", 10)
                .epoch_ms(1_314_220_021_721)
                .allow_sign_bit(),
            // sony/sonyflake: 39 bits of 10 ms, 8 sequence bits, 16 machine bits.
            "sonyflake" => b
                .timestamp("timestamp", 39)
                .sequence("sequence", 8)
                .node("machine", 16)
                .time_unit_ms(10)
                .epoch_ms(1_409_529_600_000),
            "sonyflake-v2" => b
                .timestamp("timestamp", 39)
                .sequence("sequence", 8)
                .node("machine", 16)
                .time_unit_ms(10)
                .epoch_ms(SHARDFLAKE_EPOCH_MS),
            // baidu/uid-generator DefaultUidGenerator: timeBits 28, workerBits 22, seqBits 13,
            // epochStr "2016-05-20".
            "uidgenerator" => b
                .timestamp("timestamp", 28)
                .node("worker", 22)
                .sequence("sequence", 13)
                .time_unit_ms(1000)
                .epoch_ms(1_463_702_400_000),
            // 53 bits: the widths are chosen in the doc comment above.
            "js-safe" => b
                .timestamp("timestamp", 41)
                .node("node", 6)
                .sequence("sequence", 6)
                .epoch_ms(SHARDFLAKE_EPOCH_MS),
            "temporal" => {
                return Layout::temporal(
                    TEMPORAL_GRANULARITY_MS_DEFAULT,
                    SHARDFLAKE_EPOCH_MS,
                    TemporalWidths::default(),
                )
            }
            _ => {
                return Err(LayoutError::UnknownPreset {
                    name: name.to_string(),
                    known: PRESETS.join(", "),
                })
            }
        };
        built.build()
    }

    /// The temporal-shard layout `[shard][host][counter]` with the given shard granularity.
    pub fn temporal(
        granularity_ms: u64,
        epoch_ms: u64,
        widths: TemporalWidths,
    ) -> Result<Layout, LayoutError> {
        LayoutBuilder::new("temporal")
            .kind(LayoutKind::Temporal)
            .timestamp("shard", widths.shard_bits)
            .node("host", widths.host_bits)
            .sequence("counter", widths.counter_bits)
            .time_unit_ms(granularity_ms)
            .epoch_ms(epoch_ms)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClockPolicy, ManualClock, SnowflakeGenerator};

    #[test]
    fn the_largest_js_safe_id_is_the_largest_safe_integer() {
        let l = Layout::preset("js-safe").unwrap();
        let node = l
            .node_bits(&[("node", l.field("node").unwrap().max())])
            .unwrap();
        let largest = l.compose(l.timestamp_field().max(), l.sequence_field().max(), node);
        assert_eq!(largest, JS_MAX_SAFE_INTEGER);
        assert_eq!(largest, 9_007_199_254_740_991);
        // Nothing above it decodes: the layout has no 54th bit.
        assert!(l.decode(largest).is_ok());
        assert!(l.decode(largest + 1).is_err());
    }

    #[test]
    fn js_safe_ids_round_trip_through_an_f64() {
        let l = Layout::preset("js-safe").unwrap();
        // The last four ticks before the overflow, where ids are largest (all 256 of their
        // ids, up to 2^53 − 1 itself), then a day after the epoch.
        for start_ms in [l.overflow_ms() - 4, SHARDFLAKE_EPOCH_MS + 86_400_000] {
            let clock = ManualClock::new(start_ms);
            let g = SnowflakeGenerator::builder(l.clone())
                .node("node", 63)
                .clock(clock.clone())
                .policy(ClockPolicy::Fail)
                .build()
                .unwrap();
            let mut last = 0;
            for i in 0..256 {
                let id = match g.next_id() {
                    Ok(id) => id,
                    // 64 ids per ms: the next ms brings the next 64.
                    Err(_) => {
                        clock.advance_ms(1);
                        g.next_id().unwrap()
                    }
                };
                assert!(id > last, "{i}");
                last = id;
                assert!(id <= JS_MAX_SAFE_INTEGER, "{id}");
                // What JSON.parse does to a number: parse it as a double.
                let parsed: f64 = id.to_string().parse().unwrap();
                assert_eq!(parsed as u64, id);
                assert_eq!(parsed.to_string(), id.to_string());
            }
            if start_ms == l.overflow_ms() - 4 {
                assert_eq!(last, JS_MAX_SAFE_INTEGER);
                assert!(g.next_id().is_err(), "nothing after the largest id");
            }
        }
    }
}
