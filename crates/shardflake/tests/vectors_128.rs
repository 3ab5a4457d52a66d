//! Published vectors for the 128-bit ids, decoded and generated exactly, each with its source.
//!
//! - RFC 9562 "Universally Unique IDentifiers (UUIDs)", Appendix A.6 "Example of a UUIDv7
//!   Value": <https://www.rfc-editor.org/rfc/rfc9562#appendix-A.6>
//! - The ULID spec, <https://github.com/ulid/spec> (README): the example ULID, the
//!   "Monotonicity" examples and "Overflow Errors when Parsing Base32 Strings".
//! - The ulid/javascript README (<https://github.com/ulid/javascript>): the seed-time example
//!   `ulid(1469918176385) // 01ARYZ6S41TSV4RRFFQ69G5FAV`.

use shardflake::ulid::{Ulid, UlidGenerator, ULID_TIMESTAMP_MAX_MS};
use shardflake::uuid7::{Uuid7, Uuid7Generator};
use shardflake::{format_rfc3339_ms, DecodeError, GenerateError, ManualClock};

/// RFC 9562 Appendix A.6: "017F22E2-79B0-7CC3-98C4-DC0C0C07398F", with unix_ts_ms
/// 0x017F22E279B0 ("Tuesday, February 22, 2022 2:22:22.00 PM GMT-05:00"), ver 0x7,
/// rand_a 0xCC3, var 0b10, rand_b 0x18C4DC0C0C07398F (62 bits).
const RFC9562_A6: &str = "017F22E2-79B0-7CC3-98C4-DC0C0C07398F";
const RFC9562_A6_TS_MS: u64 = 0x017F_22E2_79B0;
const RFC9562_A6_RAND_A: u16 = 0xCC3;
const RFC9562_A6_RAND_B: u64 = 0x18C4_DC0C_0C07_398F;

#[test]
fn rfc9562_a6_decodes() {
    let id: Uuid7 = RFC9562_A6.parse().unwrap();
    assert_eq!(id.timestamp_ms(), RFC9562_A6_TS_MS);
    assert_eq!(id.timestamp_ms(), 1_645_557_742_000);
    // 2:22:22.00 PM GMT-05:00 is 19:22:22 UTC.
    assert_eq!(
        format_rfc3339_ms(id.timestamp_ms()),
        "2022-02-22T19:22:22.000Z"
    );
    assert_eq!(id.version(), 7);
    assert_eq!(id.variant(), 0b10);
    assert_eq!(id.rand_a(), RFC9562_A6_RAND_A);
    assert_eq!(id.rand_b(), RFC9562_A6_RAND_B);
    assert_eq!(
        id.to_bytes(),
        [
            0x01, 0x7F, 0x22, 0xE2, 0x79, 0xB0, 0x7C, 0xC3, 0x98, 0xC4, 0xDC, 0x0C, 0x0C, 0x07,
            0x39, 0x8F
        ]
    );
    assert_eq!(id.to_string(), RFC9562_A6.to_lowercase());
    assert_eq!(id, RFC9562_A6.to_lowercase().parse().unwrap());
    assert_eq!(id, "017f22e279b07cc398c4dc0c0c07398f".parse().unwrap());
    assert_eq!(Uuid7::from_bytes(id.to_bytes()), Ok(id));
}

#[test]
fn rfc9562_a6_is_generated_exactly() {
    let clock = ManualClock::new(RFC9562_A6_TS_MS);
    // The appendix's rand_a has its top bit set, so the counter's rollover guard bit must be
    // off to reproduce it: the first id of a millisecond is then fully random, as in A.6.
    let mut g = Uuid7Generator::with_clock(clock)
        .with_guard_bits(0)
        .with_random(|| u128::from(RFC9562_A6_RAND_A) << 62 | u128::from(RFC9562_A6_RAND_B));
    let id = g.next_id();
    assert_eq!(id.to_string(), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    // The next id in the same millisecond increments the 42-bit counter (rand_a and the top
    // 30 bits of rand_b) and draws a fresh low 32 bits (the same ones here).
    let next = g.next_id();
    assert_eq!(next.to_string(), "017f22e2-79b0-7cc3-98c4-dc0d0c07398f");
    assert_eq!(g.borrowed_ms(), 0);
}

#[test]
fn rfc9562_a6_with_the_default_guard_bit_clears_the_counters_top_bit() {
    let mut g = Uuid7Generator::with_clock(ManualClock::new(RFC9562_A6_TS_MS))
        .with_random(|| u128::from(RFC9562_A6_RAND_A) << 62 | u128::from(RFC9562_A6_RAND_B));
    assert_eq!(
        g.next_id().to_string(),
        "017f22e2-79b0-74c3-98c4-dc0c0c07398f"
    );
}

#[test]
fn uuid7_rejects_other_versions_and_variants() {
    // RFC 9562 Appendix A.3, the UUIDv4 example: version 4.
    let e = "919108f7-52d1-4320-9bac-f847db4148a8"
        .parse::<Uuid7>()
        .unwrap_err();
    assert!(matches!(e, DecodeError::WrongKind { .. }), "{e}");
    assert!(e.to_string().contains("version 4"), "{e}");
    // The A.6 example with the variant bits changed to 0b11 (Microsoft's reserved variant).
    let e = "017f22e2-79b0-7cc3-d8c4-dc0c0c07398f"
        .parse::<Uuid7>()
        .unwrap_err();
    assert!(matches!(e, DecodeError::WrongKind { .. }), "{e}");
    assert!(e.to_string().contains("variant bits 11"), "{e}");
}

#[test]
fn uuid7_text_agrees_with_the_uuid_crate() {
    let mut g = Uuid7Generator::new();
    for _ in 0..1_000 {
        let ours = g.next_id();
        let theirs = uuid::Uuid::from_u128(ours.as_u128());
        assert_eq!(ours.to_string(), theirs.hyphenated().to_string());
        assert_eq!(theirs.get_version_num(), 7);
        assert_eq!(theirs.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = theirs.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1_000 + u64::from(nanos) / 1_000_000,
            ours.timestamp_ms()
        );
    }
}

/// The ULID spec's example, `ulid() // 01ARZ3NDEKTSV4RRFFQ69G5FAV`; its timestamp component
/// `01ARZ3NDEK` is 1469922850259 ms.
#[test]
fn ulid_spec_example_decodes() {
    let id: Ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    assert_eq!(id.timestamp_ms(), 1_469_922_850_259);
    assert_eq!(id.as_u128(), 0x0156_3E3A_B5D3_D676_4C61_EFB9_9302_BD5B);
    assert_eq!(id.random(), 0xD676_4C61_EFB9_9302_BD5B);
    assert_eq!(id.time(), "2016-07-30T23:54:10.259Z");
    // Case-insensitive, as the spec says.
    assert_eq!("01arz3ndektsv4rrffq69g5fav".parse::<Ulid>().unwrap(), id);
    assert_eq!(
        ulid::Ulid::from_string("01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .unwrap()
            .0,
        id.as_u128()
    );
}

/// ulid/javascript README: "You can also input a seed time which will consistently give you
/// the same string for the time component": `ulid(1469918176385) // 01ARYZ6S41TSV4RRFFQ69G5FAV`.
#[test]
fn ulid_seed_time_example_is_generated_exactly() {
    let random = "01ARYZ6S41TSV4RRFFQ69G5FAV"
        .parse::<Ulid>()
        .unwrap()
        .random();
    let mut g =
        UlidGenerator::with_clock(ManualClock::new(1_469_918_176_385)).with_random(move || random);
    let id = g.next_id().unwrap();
    assert_eq!(id.to_string(), "01ARYZ6S41TSV4RRFFQ69G5FAV");
    assert_eq!(id.timestamp_ms(), 1_469_918_176_385);
}

/// ULID spec, "Monotonicity": within the same millisecond the random component is incremented
/// by one, `01BX5ZZKBKACTAV9WEVGEMMVRY`, `...RZ`, `...S0`, `...S1`.
#[test]
fn ulid_spec_monotonic_example() {
    let first: Ulid = "01BX5ZZKBKACTAV9WEVGEMMVRY".parse().unwrap();
    let mut g = UlidGenerator::with_clock(ManualClock::new(first.timestamp_ms()))
        .with_random(move || first.random());
    let texts: Vec<String> = (0..4).map(|_| g.next_id().unwrap().to_string()).collect();
    assert_eq!(
        texts,
        [
            "01BX5ZZKBKACTAV9WEVGEMMVRY",
            "01BX5ZZKBKACTAV9WEVGEMMVRZ",
            "01BX5ZZKBKACTAV9WEVGEMMVS0",
            "01BX5ZZKBKACTAV9WEVGEMMVS1",
        ]
    );
}

/// ULID spec, "Monotonicity": `01BX5ZZKBKZZZZZZZZZZZZZZZX`, `...Y`, `...Z`, then "throw new
/// Error()!": generation fails once the random component is all ones in the same millisecond.
#[test]
fn ulid_spec_overflow_example() {
    let near_end: Ulid = "01BX5ZZKBKZZZZZZZZZZZZZZZX".parse().unwrap();
    let ms = near_end.timestamp_ms();
    let clock = ManualClock::new(ms);
    let mut g = UlidGenerator::with_clock(clock.clone()).with_random(move || near_end.random());
    assert_eq!(
        g.next_id().unwrap().to_string(),
        "01BX5ZZKBKZZZZZZZZZZZZZZZX"
    );
    assert_eq!(
        g.next_id().unwrap().to_string(),
        "01BX5ZZKBKZZZZZZZZZZZZZZZY"
    );
    assert_eq!(
        g.next_id().unwrap().to_string(),
        "01BX5ZZKBKZZZZZZZZZZZZZZZZ"
    );
    let err = g.next_id().unwrap_err();
    assert_eq!(err, GenerateError::MonotonicOverflow { ms });
    assert_eq!(err.retry_after_ms(), Some(1));
    // The next millisecond starts afresh.
    clock.advance_ms(1);
    assert_eq!(g.next_id().unwrap().timestamp_ms(), ms + 1);
}

/// ULID spec, "Overflow Errors when Parsing Base32 Strings": the largest valid ULID is
/// `7ZZZZZZZZZZZZZZZZZZZZZZZZZ` (timestamp 2^48 - 1 = 281474976710655); larger text must be
/// rejected.
#[test]
fn ulid_spec_parse_overflow() {
    let max: Ulid = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse().unwrap();
    assert_eq!(max.as_u128(), u128::MAX);
    assert_eq!(max.timestamp_ms(), 281_474_976_710_655);
    assert_eq!(max.timestamp_ms(), ULID_TIMESTAMP_MAX_MS);
    for bad in ["8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "80000000000000000000000000"] {
        let e = bad.parse::<Ulid>().unwrap_err();
        assert!(e.to_string().contains("above '7'"), "{bad}: {e}");
    }
}

/// ULID spec, "Encoding": the alphabet "excludes the letters I, L, O, and U".
#[test]
fn ulid_rejects_excluded_letters() {
    for c in ['I', 'L', 'O', 'U', 'i', 'l', 'o', 'u'] {
        let text = format!("01ARZ3NDEKTSV4RRFFQ69G5FA{c}");
        let e = text.parse::<Ulid>().unwrap_err();
        assert!(e.to_string().contains("at position 26"), "{text}: {e}");
    }
}

#[test]
fn ulid_text_agrees_with_the_ulid_crate() {
    let mut g = UlidGenerator::new();
    for _ in 0..1_000 {
        let ours = g.next_id().unwrap();
        let theirs = ulid::Ulid(ours.as_u128());
        assert_eq!(ours.to_string(), theirs.to_string());
        assert_eq!(ours.timestamp_ms(), theirs.timestamp_ms());
    }
}
