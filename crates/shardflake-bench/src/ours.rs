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

pub(crate) fn rows(borrow_ahead_ms_max: u64) -> Vec<Row> {
    let tw = Layout::preset("twitter").expect("a preset");
    let tw_ms = move |id: u64| tw.ms_of_tick(tw.timestamp_field().get(id));
    let tp = Layout::preset("temporal").expect("a preset");
    // A temporal id carries its shard (an hour), not a millisecond: the "ahead" column shows
    // the start of the shard, so it is up to an hour behind by design.
    let tp_ms = move |id: u64| tp.ms_of_tick(tp.timestamp_field().get(id));
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
            tp_ms.clone(),
        ),
        Row::shared_buffer(
            format!("shardflake temporal ranges into a {BATCH_IDS}-id buffer"),
            temporal,
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
            tp_ms,
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
