//! Property tests for the text encodings and the 128-bit generators: every encoding round
//! trips and sorts like the numbers, parsers never panic on arbitrary text, and UUIDv7 / ULID
//! generators stay strictly increasing whatever the clock does.

use proptest::prelude::*;
use shardflake::encode::{decode_u128, decode_u64, encode_u128, encode_u64, Encoding};
use shardflake::ulid::{Ulid, UlidGenerator};
use shardflake::uuid7::{Uuid7, Uuid7Generator};
use shardflake::{Clock, GenerateError, ManualClock};

const T0: u64 = 1_750_000_000_000;

fn encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(Encoding::ALL.to_vec())
}

/// What the clock does between bursts of ids.
#[derive(Debug, Clone)]
enum Op {
    Issue(u16),
    Advance(u32),
    StepBack(u32),
    Jump(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..400).prop_map(Op::Issue),
        2 => (0u32..20).prop_map(Op::Advance),
        1 => (0u32..3_600_000).prop_map(Op::StepBack),
        1 => (0u64..86_400_000).prop_map(Op::Jump),
    ]
}

fn apply(clock: &ManualClock, op: &Op) {
    match *op {
        Op::Issue(_) => {}
        Op::Advance(ms) => clock.advance_ms(u64::from(ms)),
        Op::StepBack(ms) => clock.step_back_ms(u64::from(ms)),
        Op::Jump(ms) => clock.advance_ms(ms),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn u64_round_trips_in_every_encoding(id: u64, enc in encoding()) {
        let text = encode_u64(id, enc);
        if let Some(width) = enc.width_u64() {
            prop_assert_eq!(text.len(), width);
        }
        prop_assert_eq!(decode_u64(&text, enc), Ok(id));
        if matches!(enc, Encoding::Hex | Encoding::Base32) {
            prop_assert_eq!(decode_u64(&text.to_lowercase(), enc), Ok(id));
            prop_assert_eq!(decode_u64(&text.to_uppercase(), enc), Ok(id));
        }
    }

    #[test]
    fn u128_round_trips_in_every_encoding(id: u128, enc in encoding()) {
        let text = encode_u128(id, enc);
        if let Some(width) = enc.width_u128() {
            prop_assert_eq!(text.len(), width);
        }
        prop_assert_eq!(decode_u128(&text, enc), Ok(id));
    }

    #[test]
    fn fixed_width_encodings_sort_like_the_numbers(a: u64, b: u64, enc in encoding()) {
        prop_assume!(enc != Encoding::Dec);
        prop_assert_eq!(a.cmp(&b), encode_u64(a, enc).cmp(&encode_u64(b, enc)));
    }

    #[test]
    fn crockford_decoding_ignores_hyphens(id: u64, every in 1usize..13) {
        let text = encode_u64(id, Encoding::Base32);
        let hyphenated: String = text
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % every == 0).then_some('-').into_iter().chain([c]))
            .collect();
        prop_assert_eq!(decode_u64(&hyphenated, Encoding::Base32), Ok(id));
    }

    #[test]
    fn u64_decoders_never_panic(s in "\\PC{0,40}", enc in encoding()) {
        if let Ok(v) = decode_u64(&s, enc) {
            prop_assert_eq!(decode_u64(&encode_u64(v, enc), enc), Ok(v));
        }
        let _ = s.parse::<Encoding>();
    }

    #[test]
    fn decoders_never_panic_on_near_valid_text(
        s in "[0-9A-Za-z\\-_xé]{0,40}",
        enc in encoding(),
    ) {
        if let Ok(v) = decode_u64(&s, enc) {
            prop_assert_eq!(decode_u64(&encode_u64(v, enc), enc), Ok(v));
        }
        if let Ok(v) = decode_u128(&s, enc) {
            prop_assert_eq!(decode_u128(&encode_u128(v, enc), enc), Ok(v));
        }
    }

    #[test]
    fn uuid7_and_ulid_parsers_never_panic(s in "\\PC{0,40}") {
        if let Ok(id) = s.parse::<Uuid7>() {
            prop_assert_eq!(id.to_string(), s.to_lowercase());
        }
        if let Ok(id) = s.parse::<Ulid>() {
            prop_assert_eq!(id.to_string(), s.to_uppercase());
        }
    }

    #[test]
    fn uuid7_parser_never_panics_on_uuid_shaped_text(
        s in "[0-9a-fA-F\\-gé]{32,36}",
    ) {
        let _ = s.parse::<Uuid7>();
    }

    #[test]
    fn ulid_parser_never_panics_on_ulid_shaped_text(
        s in "[0-9A-Za-zé]{24,27}",
    ) {
        if let Ok(id) = s.parse::<Ulid>() {
            prop_assert_eq!(id.to_string(), s.to_uppercase());
        }
    }

    #[test]
    fn uuid7_text_round_trips(ms in 0u64..(1 << 48), rand_a in 0u16..(1 << 12), rand_b: u64) {
        let id = Uuid7::from_fields(ms, rand_a, rand_b);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 36);
        prop_assert_eq!(text.parse::<Uuid7>(), Ok(id));
        prop_assert_eq!(text.to_uppercase().parse::<Uuid7>(), Ok(id));
        prop_assert_eq!(text.replace('-', "").parse::<Uuid7>(), Ok(id));
        prop_assert_eq!(id.timestamp_ms(), ms);
        prop_assert_eq!(id.rand_a(), rand_a);
        prop_assert_eq!(id.rand_b(), rand_b & ((1 << 62) - 1));
        prop_assert_eq!(Uuid7::from_bytes(id.to_bytes()), Ok(id));
    }

    #[test]
    fn ulid_text_round_trips(value: u128) {
        let id = Ulid::from_u128(value);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 26);
        prop_assert_eq!(text.parse::<Ulid>(), Ok(id));
        prop_assert_eq!(text.to_lowercase().parse::<Ulid>(), Ok(id));
        prop_assert_eq!(decode_u128(&text, Encoding::Base32), Ok(value));
        prop_assert_eq!(Ulid::from_bytes(id.to_bytes()), id);
    }

    #[test]
    fn ulid_text_sorts_like_the_value(a: u128, b: u128) {
        let (x, y) = (Ulid::from_u128(a), Ulid::from_u128(b));
        prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn uuid7_is_monotonic_whatever_the_clock_does(
        seed: u64,
        guard_bits in 0u32..3,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let clock = ManualClock::new(T0);
        let mut g = Uuid7Generator::with_clock(clock.clone())
            .with_seed(seed)
            .with_guard_bits(guard_bits);
        let mut last: Option<Uuid7> = None;
        let mut clock_max = T0;
        for op in &ops {
            apply(&clock, op);
            clock_max = clock_max.max(clock.now_ms());
            if let Op::Issue(n) = *op {
                for _ in 0..n {
                    let id = g.next_id();
                    prop_assert_eq!(id.version(), 7);
                    prop_assert_eq!(id.variant(), 0b10);
                    if let Some(prev) = last {
                        prop_assert!(prev < id, "{prev} then {id}");
                    }
                    // Never ahead of the furthest clock reading except by borrowed ms.
                    prop_assert!(id.timestamp_ms() <= clock_max + g.borrowed_ms());
                    // Never behind the clock either: a stepped-back clock keeps the last timestamp.
                    prop_assert!(id.timestamp_ms() >= clock.now_ms());
                    last = Some(id);
                }
            }
        }
    }

    #[test]
    fn uuid7_counter_overflow_borrows_and_stays_monotonic(
        ops in prop::collection::vec(op(), 1..30),
    ) {
        // A counter seeded at its maximum overflows on the second id of every millisecond.
        let clock = ManualClock::new(T0);
        let mut g = Uuid7Generator::with_clock(clock.clone())
            .with_guard_bits(0)
            .with_random(|| u128::MAX);
        let mut last: Option<Uuid7> = None;
        for op in &ops {
            apply(&clock, op);
            if let Op::Issue(n) = *op {
                for _ in 0..n {
                    let id = g.next_id();
                    if let Some(prev) = last {
                        prop_assert!(prev < id, "{prev} then {id}");
                    }
                    last = Some(id);
                }
            }
        }
        let expected_ahead = g.last_issued_ms().map_or(0, |ms| ms.saturating_sub(clock.now_ms()));
        prop_assert_eq!(g.ahead_ms(), expected_ahead);
    }

    #[test]
    fn ulid_is_monotonic_whatever_the_clock_does(
        start_random in prop::option::of((1u128 << 80) - 500..(1u128 << 80)),
        seed: u64,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let clock = ManualClock::new(T0);
        let mut g = UlidGenerator::with_clock(clock.clone());
        g = match start_random {
            // Random components near the top force the spec's overflow error.
            Some(r) => g.with_random(move || r),
            None => g.with_seed(seed),
        };
        let mut last: Option<Ulid> = None;
        let mut clock_max = T0;
        for op in &ops {
            apply(&clock, op);
            clock_max = clock_max.max(clock.now_ms());
            if let Op::Issue(n) = *op {
                for _ in 0..n {
                    match g.next_id() {
                        Ok(id) => {
                            if let Some(prev) = last {
                                prop_assert!(prev < id, "{prev} then {id}");
                            }
                            prop_assert!(id.timestamp_ms() <= clock_max);
                            last = Some(id);
                        }
                        Err(GenerateError::MonotonicOverflow { ms }) => {
                            let prev = last.expect("overflow needs an earlier id");
                            prop_assert_eq!(ms, prev.timestamp_ms());
                            prop_assert_eq!(prev.random(), (1u128 << 80) - 1);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {e}"),
                    }
                }
            }
        }
    }
}
