//! Clock edge cases, driven by a manual clock.

use std::sync::{Arc, Mutex};

use super::*;
use crate::clock::ManualClock;
use crate::layout::LayoutBuilder;
use crate::reservation::Reserver;

const T0: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;

fn twitter(clock: &ManualClock, policy: ClockPolicy) -> SnowflakeGenerator<ManualClock> {
    SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
        .node("datacenter", 3)
        .node("worker", 4)
        .clock(clock.clone())
        .policy(policy)
        .build()
        .unwrap()
}

fn ts(g: &SnowflakeGenerator<ManualClock>, id: u64) -> u64 {
    g.layout().decode(id).unwrap().timestamp_ms
}

const STEPS_MS: [u64; 4] = [1, 5, 1_000, HOUR_MS];

#[test]
fn fail_policy_reports_every_step_back_with_its_size() {
    for step in STEPS_MS {
        let clock = ManualClock::new(T0);
        let g = twitter(&clock, ClockPolicy::Fail);
        g.next_id().unwrap();
        clock.step_back_ms(step);
        assert_eq!(
            g.next_id(),
            Err(GenerateError::ClockMovedBackwards { by_ms: step }),
            "step {step} ms"
        );
        assert_eq!(g.stats().clock_regressions, 1);
        // Once the clock is past the last id again, issuing resumes.
        clock.set_ms(T0 + 1);
        assert_eq!(ts(&g, g.next_id().unwrap()), T0 + 1);
    }
}

#[test]
fn wait_policy_waits_within_its_bound_and_fails_beyond() {
    for step in STEPS_MS {
        let clock = ManualClock::new(T0);
        let g = twitter(&clock, ClockPolicy::Wait { max_wait_ms: 10 });
        let before = g.next_id().unwrap();
        clock.step_back_ms(step);
        let res = g.next_id();
        if step <= 10 {
            let id = res.unwrap_or_else(|e| panic!("step {step} ms: {e}"));
            assert!(id > before);
            // The manual clock was made to wait until the last issued millisecond.
            assert_eq!(clock.now_ms(), T0, "step {step} ms");
            assert_eq!(ts(&g, id), T0);
            assert_eq!(g.stats().regression_waits, 1);
        } else {
            assert_eq!(res, Err(GenerateError::ClockMovedBackwards { by_ms: step }));
            assert_eq!(clock.now_ms(), T0 - step, "no waiting beyond the bound");
        }
    }
}

#[test]
fn borrow_policy_runs_ahead_within_its_bound_and_fails_beyond() {
    for step in STEPS_MS {
        let clock = ManualClock::new(T0);
        let g = twitter(
            &clock,
            ClockPolicy::Borrow {
                borrow_ahead_ms_max: 2_000,
            },
        );
        let before = g.next_id().unwrap();
        clock.step_back_ms(step);
        let res = g.next_id();
        if step <= 2_000 {
            let id = res.unwrap_or_else(|e| panic!("step {step} ms: {e}"));
            assert!(id > before);
            assert_eq!(ts(&g, id), T0, "continues on the last issued millisecond");
            assert_eq!(clock.now_ms(), T0 - step, "did not wait");
            assert_eq!(g.ahead_ms(), step);
        } else {
            assert_eq!(res, Err(GenerateError::ClockMovedBackwards { by_ms: step }));
        }
    }
}

#[test]
fn exhausted_sequence_waits_for_the_next_tick() {
    for policy in [ClockPolicy::Fail, ClockPolicy::Wait { max_wait_ms: 0 }] {
        let clock = ManualClock::new(T0);
        let g = twitter(&clock, policy);
        let ids: Vec<u64> = (0..4096).map(|_| g.next_id().unwrap()).collect();
        assert!(ids.iter().all(|&id| ts(&g, id) == T0));
        let next = g.next_id().unwrap();
        assert_eq!(ts(&g, next), T0 + 1, "{policy:?}");
        assert_eq!(g.layout().decode(next).unwrap().field("sequence"), Some(0));
        assert_eq!(clock.now_ms(), T0 + 1, "the clock was waited on");
        assert_eq!(g.stats().exhaustion_waits, 1);
    }
}

#[test]
fn exhausted_sequence_borrows_up_to_the_bound_then_waits() {
    let clock = ManualClock::new(T0);
    let g = twitter(
        &clock,
        ClockPolicy::Borrow {
            borrow_ahead_ms_max: 2,
        },
    );
    let mut last = 0;
    for tick in 0..3 {
        for _ in 0..4096 {
            let id = g.next_id().unwrap();
            assert!(id > last);
            last = id;
            assert_eq!(ts(&g, id), T0 + tick);
        }
    }
    assert_eq!(clock.now_ms(), T0, "ticks T0+1 and T0+2 were borrowed");
    assert_eq!(g.stats().borrowed_ticks, 2);
    assert_eq!(g.stats().max_ahead_ms, 2);
    // T0+3 would be 3 ms ahead: wait until it is only 2 ms ahead.
    let id = g.next_id().unwrap();
    assert_eq!(ts(&g, id), T0 + 3);
    assert_eq!(clock.now_ms(), T0 + 1);
}

#[derive(Default)]
struct Asked(Mutex<Vec<u64>>);
impl Reserver for Asked {
    fn request_extension(&self, needed_until_ms: u64) {
        self.0.lock().unwrap().push(needed_until_ms);
    }
}

#[test]
fn reservation_bound_is_never_exceeded() {
    let clock = ManualClock::new(T0);
    let asked = Arc::new(Asked::default());
    let r = Arc::new(Reservation::new(asked.clone(), 100));
    r.extend_to(T0 + 500);
    let g = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
        .node("datacenter", 0)
        .node("worker", 0)
        .clock(clock.clone())
        .reservation(r.clone())
        .build()
        .unwrap();
    g.next_id().unwrap();
    assert!(asked.0.lock().unwrap().is_empty(), "plenty of headroom");
    clock.set_ms(T0 + 450);
    g.next_id().unwrap();
    assert_eq!(
        asked.0.lock().unwrap().as_slice(),
        &[T0 + 550],
        "low water reached"
    );
    clock.set_ms(T0 + 501);
    assert_eq!(
        g.next_id(),
        Err(GenerateError::ReservationExhausted {
            reserved_until_ms: T0 + 500,
            needed_ms: T0 + 501
        })
    );
    r.extend_to(T0 + 1_000);
    assert_eq!(ts(&g, g.next_id().unwrap()), T0 + 501);
    r.revoke();
    assert_eq!(g.next_id(), Err(GenerateError::LeaseLost));
}

/// A lease keeper's extension that was already on its way when the lease was lost must not
/// re-arm the generator: revocation is final for a reservation.
#[test]
fn revoked_reservation_stays_revoked_when_a_late_extension_arrives() {
    // scripts/sim-mutants.sh runs this test with mutant 6 switched on (SHARDFLAKE_MUTANT).
    crate::mutant::activate_from_env();
    let clock = ManualClock::new(T0);
    let r = Arc::new(Reservation::new(Arc::new(crate::NoReserver), 0));
    r.extend_to(T0 + 100);
    let g = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
        .node("datacenter", 0)
        .node("worker", 0)
        .clock(clock.clone())
        .reservation(r.clone())
        .build()
        .unwrap();
    assert!(g.next_id().is_ok());
    r.revoke();
    r.extend_to(T0 + 10_000);
    assert!(r.is_revoked());
    assert_eq!(r.until_ms(), 0);
    clock.set_ms(T0 + 1_000);
    assert_eq!(g.next_id(), Err(GenerateError::LeaseLost));
}

#[test]
fn borrowing_never_passes_the_reservation() {
    let clock = ManualClock::new(T0);
    let r = Arc::new(Reservation::new(Arc::new(crate::NoReserver), 0));
    r.extend_to(T0 + 1);
    let g = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
        .node("datacenter", 0)
        .node("worker", 0)
        .clock(clock.clone())
        .policy(ClockPolicy::Borrow {
            borrow_ahead_ms_max: 1_000,
        })
        .reservation(r)
        .build()
        .unwrap();
    let mut n = 0;
    while g.next_id().is_ok() {
        n += 1;
    }
    assert_eq!(
        n,
        2 * 4096,
        "two reserved milliseconds, fully used, nothing more"
    );
}

#[test]
fn restart_starts_strictly_above_the_previous_bound() {
    let bound = T0 + 10_000;
    // The clock was set back an hour across the restart.
    let clock = ManualClock::new(bound - HOUR_MS);
    let build = |policy| {
        SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
            .node("datacenter", 1)
            .node("worker", 1)
            .clock(clock.clone())
            .policy(policy)
            .start_above_ms(bound)
            .build()
            .unwrap()
    };
    let strict = build(ClockPolicy::Wait { max_wait_ms: 1_000 });
    assert_eq!(
        strict.next_id(),
        Err(GenerateError::ClockMovedBackwards { by_ms: HOUR_MS })
    );
    let borrowing = build(ClockPolicy::Borrow {
        borrow_ahead_ms_max: 2 * HOUR_MS,
    });
    let id = borrowing.next_id().unwrap();
    assert_eq!(ts(&borrowing, id), bound + 1);
}

#[test]
fn epoch_in_the_future_is_refused() {
    let clock = ManualClock::new(1_000_000_000_000); // 2001, before Twitter's epoch
    let err = SnowflakeGenerator::builder(Layout::preset("twitter").unwrap())
        .node("datacenter", 0)
        .node("worker", 0)
        .clock(clock.clone())
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        LayoutError::EpochInFuture {
            epoch_ms: 1_288_834_974_657,
            now_ms: 1_000_000_000_000
        }
    );
    // A clock that steps to before the epoch after start-up gets the runtime error.
    clock.set_ms(T0);
    let g = twitter(&clock, ClockPolicy::Fail);
    clock.set_ms(1_000_000_000_000);
    assert!(matches!(
        g.next_id(),
        Err(GenerateError::EpochInFuture { .. })
    ));
}

#[test]
fn timestamp_overflow_is_an_error_not_a_wrap() {
    let layout = LayoutBuilder::new("tiny")
        .timestamp("t", 8)
        .sequence("s", 2)
        .epoch_ms(T0)
        .build()
        .unwrap();
    assert_eq!(layout.overflow_ms(), T0 + 256);
    let clock = ManualClock::new(T0 + 255);
    let g = SnowflakeGenerator::builder(layout)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(g.next_id().unwrap() >> 2, 255);
    clock.set_ms(T0 + 256);
    assert_eq!(
        g.next_id(),
        Err(GenerateError::TimestampOverflow {
            overflow_at: crate::format_rfc3339_ms(T0 + 256)
        })
    );
}

#[test]
fn ranges_are_contiguous_runs_within_a_tick() {
    let clock = ManualClock::new(T0);
    let g = twitter(&clock, ClockPolicy::Fail);
    let r = g.next_range(1_000).unwrap();
    assert_eq!((r.len, r.step), (1_000, 1));
    let r2 = g.next_range(5_000).unwrap();
    assert_eq!(r2.first, r.last_id() + 1);
    assert_eq!(r2.len, 3_096, "the rest of the tick");
    let ids = g.next_batch(10_000).unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(ids[0] > r2.last_id());

    // Sonyflake puts the machine below the sequence: consecutive ids step by 2^16.
    let s = SnowflakeGenerator::builder(Layout::preset("sonyflake").unwrap())
        .node("machine", 9)
        .clock(clock.clone())
        .build()
        .unwrap();
    let r = s.next_range(300).unwrap();
    assert_eq!((r.len, r.step), (256, 1 << 16));
    assert!(r.clone().all(|id| id & 0xffff == 9));
}

#[test]
fn shared_generator_never_repeats_across_threads() {
    let clock = ManualClock::new(T0);
    let g = Arc::new(twitter(
        &clock,
        ClockPolicy::Borrow {
            borrow_ahead_ms_max: 60_000,
        },
    ));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                let ids: Vec<u64> = (0..25_000).map(|_| g.next_id().unwrap()).collect();
                assert!(ids.windows(2).all(|w| w[0] < w[1]), "per-thread order");
                ids
            })
        })
        .collect();
    let all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), 100_000);
    crate::check::check_ids(&all).assert_unique();
}
