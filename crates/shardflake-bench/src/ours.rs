//! The rows of our own generators, which every table starts with.

use shardflake::{ClockPolicy, Layout, SnowflakeGenerator, TemporalGenerator};

use crate::harness::{Row, BATCH_IDS};

fn twitter(policy: ClockPolicy) -> SnowflakeGenerator {
    SnowflakeGenerator::builder(Layout::preset("twitter").expect("a preset"))
        .node("datacenter", 1)
        .node("worker", 1)
        .policy(policy)
        .build()
        .expect("the twitter epoch is in the past")
}

fn temporal() -> TemporalGenerator {
    TemporalGenerator::builder(Layout::preset("temporal").expect("a preset"))
        .host(1)
        .build()
        .expect("the temporal epoch is in the past")
}

/// The temporal layout with a counter wide enough for a whole measurement: at billions of ids
/// a second, the preset's 33-bit counter (8.6 G values per shard and host) runs out within a
/// second of one shard, and every id after that is refused. Hourly shards for 119 years,
/// 3 host bits, a 40-bit counter (1.1 T per shard, the most the layout allows).
pub(crate) const TEMPORAL_WIDE_SPEC: &str = "temporal:granularity=1h,shard=20,host=3,counter=40";

fn temporal_wide() -> TemporalGenerator {
    TemporalGenerator::builder(Layout::from_spec(TEMPORAL_WIDE_SPEC).expect("a valid spec"))
        .host(1)
        .build()
        .expect("the temporal epoch is in the past")
}

pub(crate) fn rows(borrow_ahead_ms_max: u64) -> Vec<Row> {
    let tw = Layout::preset("twitter").expect("a preset");
    let tw_ms = move |id: u64| tw.ms_of_tick(tw.timestamp_field().get(id));
    let tp = Layout::preset("temporal").expect("a preset");
    // A temporal id carries its shard (an hour), not a millisecond: the "ahead" column shows
    // the start of the shard, so it is up to an hour behind by design.
    let tp_ms = move |id: u64| tp.ms_of_tick(tp.timestamp_field().get(id));
    let wide = Layout::from_spec(TEMPORAL_WIDE_SPEC).expect("a valid spec");
    let wide_ms = move |id: u64| wide.ms_of_tick(wide.timestamp_field().get(id));
    vec![
        Row::shared(
            "shardflake twitter next_id, wait (capped 4.096M/s)",
            || twitter(ClockPolicy::default()),
            |g| Ok((1, g.next_id()?)),
            tw_ms.clone(),
        ),
        Row::shared(
            format!("shardflake twitter next_id, borrow <= {borrow_ahead_ms_max} ms"),
            move || {
                twitter(ClockPolicy::Borrow {
                    borrow_ahead_ms_max,
                })
            },
            |g| Ok((1, g.next_id()?)),
            tw_ms.clone(),
        ),
        Row::shared_buffer(
            format!("shardflake twitter fill({BATCH_IDS}), wait"),
            || twitter(ClockPolicy::default()),
            |g, buf| Ok(g.fill(buf)?),
            tw_ms,
        ),
        Row::shared(
            "shardflake temporal next_id (33-bit counter)",
            temporal,
            |g| Ok((1, g.next_id()?)),
            tp_ms,
        ),
        Row::shared_buffer(
            format!("shardflake temporal ranges (40-bit counter) into a {BATCH_IDS}-id buffer"),
            temporal_wide,
            |g, buf| {
                let mut i = 0;
                while i < buf.len() {
                    for id in g.next_range((buf.len() - i) as u64)? {
                        buf[i] = id;
                        i += 1;
                    }
                }
                Ok(())
            },
            wide_ms,
        ),
        Row::shared(
            "shardflake uuid7::next (thread-local, monotonic)",
            || (),
            |_| Ok((1, shardflake::uuid7::next())),
            |u: shardflake::Uuid7| u.timestamp_ms(),
        ),
        Row::per_thread(
            "shardflake Uuid7Generator (monotonic, per thread)",
            shardflake::Uuid7Generator::new,
            |g| Ok((1, g.next_id())),
            |u: shardflake::Uuid7| u.timestamp_ms(),
        ),
        Row::shared(
            "shardflake ulid::next (thread-local, monotonic)",
            || (),
            |_| Ok((1, shardflake::ulid::next()?)),
            |u: shardflake::Ulid| u.timestamp_ms(),
        ),
        Row::per_thread(
            "shardflake UlidGenerator (monotonic, per thread)",
            shardflake::UlidGenerator::new,
            |g| Ok((1, g.next_id()?)),
            |u: shardflake::Ulid| u.timestamp_ms(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (`shardflake bench` printed `errors 879616` on the temporal ranges row):
    /// the preset's 33-bit counter ran out within a second of a release build. The row's
    /// layout holds more ids per shard than a run of several seconds can take.
    #[test]
    fn the_temporal_ranges_row_does_not_run_out_within_a_run() {
        let g = temporal_wide();
        let mut taken = 0u64;
        while taken < 20_000_000_000 {
            taken += g.next_range(1 << 30).expect("counter values left").len;
        }
    }
}
