//! Property tests: whatever the clock does, one generator's ids strictly increase, and
//! every id decodes to the generator's node and a timestamp within the policy's bounds.

use proptest::prelude::*;
use shardflake::{Clock, ClockPolicy, Layout, ManualClock, SnowflakeGenerator, PRESETS};

const T0: u64 = 1_750_000_000_000;

/// Every Snowflake-family preset that still holds the current time, and Baidu's layout
/// widened as its users do (its default ran out in 2024).
const SPECS: &[&str] = &[
    "default",
    "twitter",
    "discord",
    "instagram",
    "sonyflake",
    "sonyflake-v2",
    "uidgenerator:timestamp=30,worker=20,epoch=2025-01-01",
];

#[derive(Debug, Clone)]
enum Op {
    Issue(u16),
    Advance(u32),
    StepBack(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..600).prop_map(Op::Issue),
        2 => (0u32..50).prop_map(Op::Advance),
        1 => (0u32..3_000).prop_map(Op::StepBack),
    ]
}

fn policy() -> impl Strategy<Value = ClockPolicy> {
    prop_oneof![
        Just(ClockPolicy::Fail),
        (0u64..2_000).prop_map(|max_wait_ms| ClockPolicy::Wait { max_wait_ms }),
        (0u64..2_000).prop_map(|borrow_ahead_ms_max| ClockPolicy::Borrow {
            borrow_ahead_ms_max
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ids_strictly_increase_under_any_clock(
        spec in prop::sample::select(SPECS),
        policy in policy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let layout = Layout::from_spec(spec).unwrap();
        let clock = ManualClock::new(T0);
        let mut b = SnowflakeGenerator::builder(layout.clone()).clock(clock.clone()).policy(policy);
        let mut expect = Vec::new();
        for (i, f) in layout.node_fields().enumerate() {
            let v = (i as u64 + 1).min(f.max());
            b = b.node(f.name(), v);
            expect.push((f.name().to_string(), v));
        }
        let g = b.build().unwrap();
        let mut last = None;
        for op in ops {
            match op {
                Op::Advance(ms) => clock.advance_ms(ms as u64),
                Op::StepBack(ms) => clock.step_back_ms(ms as u64),
                Op::Issue(n) => {
                    for _ in 0..n {
                        let Ok(id) = g.next_id() else { break };
                        prop_assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
                        last = Some(id);
                        let d = layout.decode(id).unwrap();
                        for (name, v) in &expect {
                            prop_assert_eq!(d.field(name), Some(*v));
                        }
                        let now = clock.now_ms();
                        let ahead = d.timestamp_ms.saturating_sub(now);
                        let allowed = match policy {
                            ClockPolicy::Borrow { borrow_ahead_ms_max } => borrow_ahead_ms_max,
                            _ => 0,
                        };
                        // A step back can leave the last timestamp ahead by the step itself;
                        // a fresh tick is never taken further ahead than the policy allows.
                        prop_assert!(ahead <= allowed.max(3_000) + layout.time_unit_ms());
                    }
                }
            }
        }
    }

    #[test]
    fn compose_then_decode_round_trips(
        preset in prop::sample::select(PRESETS),
        tick in any::<u64>(),
        seq in any::<u64>(),
    ) {
        let layout = Layout::preset(preset).unwrap();
        let tick = tick & layout.timestamp_field().max();
        let seq = seq & layout.sequence_field().max();
        let node: Vec<(&str, u64)> = layout.node_fields().map(|f| (f.name(), f.max() / 2)).collect();
        let bits = layout.node_bits(&node).unwrap();
        let id = layout.compose(tick, seq, bits);
        let d = layout.decode(id).unwrap();
        prop_assert_eq!(d.field(layout.timestamp_field().name()), Some(tick));
        prop_assert_eq!(d.field(layout.sequence_field().name()), Some(seq));
        for (name, v) in node {
            prop_assert_eq!(d.field(name), Some(v));
        }
        prop_assert_eq!(d.timestamp_ms, layout.ms_of_tick(tick));
    }
}
