//! Model-checks the generator's compare-and-swap loop under every thread interleaving.
//!
//! Run with: `RUSTFLAGS="--cfg loom" cargo test -p shardflake --test loom --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shardflake::{ClockPolicy, LayoutBuilder, ManualClock, SnowflakeGenerator};

const T0: u64 = 1_700_000_000_000;

fn generator(policy: ClockPolicy) -> SnowflakeGenerator<ManualClock> {
    // One sequence bit: two ids per tick, so three ids force the exhaustion path.
    let layout = LayoutBuilder::new("loom")
        .timestamp("t", 41)
        .sequence("s", 1)
        .epoch_ms(T0 - 1)
        .build()
        .unwrap();
    SnowflakeGenerator::builder(layout)
        .clock(ManualClock::new(T0))
        .policy(policy)
        .build()
        .unwrap()
}

fn check(policy: ClockPolicy) {
    loom::model(move || {
        let g = Arc::new(generator(policy));
        let g2 = g.clone();
        let t = thread::spawn(move || {
            let a = g2.next_id().unwrap();
            let b = g2.next_id().unwrap();
            assert!(a < b);
            [a, b]
        });
        let c = g.next_id().unwrap();
        let [a, b] = t.join().unwrap();
        assert!(a != c && b != c, "duplicate id: {a} {b} {c}");
    });
}

#[test]
fn cas_loop_never_issues_a_duplicate_when_waiting() {
    check(ClockPolicy::Fail);
}

#[test]
fn cas_loop_never_issues_a_duplicate_when_borrowing() {
    check(ClockPolicy::Borrow {
        borrow_ahead_ms_max: 10,
    });
}
