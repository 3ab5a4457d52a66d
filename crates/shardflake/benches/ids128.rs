//! Monotonic 128-bit id generation on one thread: shardflake's UUIDv7 and ULID generators
//! next to the peer crates, measured in the same run.
//!
//! Run with: `cargo bench -p shardflake --bench ids128`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shardflake::{ulid, uuid7, CoarseClock, FastRng, UlidGenerator, Uuid7Generator};

/// Gives scru128's generator the same fast PRNG shardflake uses, so its row measures the
/// generator rather than its default random source.
struct Scru128Rng(FastRng);

impl scru128::generator::RandSource for Scru128Rng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u64() as u32
    }
}

/// One row: `next` returns the id's `u128` value. The timing loop is written out (rather
/// than `Bencher::iter`, which moves each result through its own stack slots) so that every
/// row pays the same small cost for keeping its result alive: one `black_box` of a `u128`.
fn row(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut next: impl FnMut() -> u128,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(next());
            }
            start.elapsed()
        })
    });
}

fn uuid_v7(c: &mut Criterion) {
    let mut g = c.benchmark_group("uuidv7");
    row(
        &mut g,
        "shardflake uuid7::next (thread-local, coarse clock)",
        || uuid7::next().as_u128(),
    );
    let mut coarse = Uuid7Generator::with_clock(CoarseClock);
    row(&mut g, "shardflake Uuid7Generator<CoarseClock>", || {
        coarse.next_id().as_u128()
    });
    let mut system = Uuid7Generator::new();
    row(&mut g, "shardflake Uuid7Generator<SystemClock>", || {
        system.next_id().as_u128()
    });
    row(&mut g, "uuid Uuid::now_v7 (fast-rng)", || {
        uuid::Uuid::now_v7().as_u128()
    });
    let ctx = uuid::ContextV7::new();
    row(&mut g, "uuid ContextV7 (fast-rng)", || {
        uuid::Uuid::new_v7(uuid::Timestamp::now(&ctx)).as_u128()
    });
    g.finish();
}

fn ulid_and_peers(c: &mut Criterion) {
    let mut g = c.benchmark_group("ulid");
    row(
        &mut g,
        "shardflake ulid::next (thread-local, coarse clock)",
        || ulid::next().unwrap().as_u128(),
    );
    let mut coarse = UlidGenerator::with_clock(CoarseClock);
    row(&mut g, "shardflake UlidGenerator<CoarseClock>", || {
        coarse.next_id().unwrap().as_u128()
    });
    let mut system = UlidGenerator::new();
    row(&mut g, "shardflake UlidGenerator<SystemClock>", || {
        system.next_id().unwrap().as_u128()
    });
    let mut peer = ::ulid::Generator::new();
    row(&mut g, "ulid Generator", || peer.generate().unwrap().0);
    row(&mut g, "ferroid thread_local Ulid::new_ulid_mono", || {
        ferroid::generator::thread_local::Ulid::new_ulid_mono(|_| std::thread::yield_now()).to_raw()
    });
    row(&mut g, "scru128 new (global)", || scru128::new().to_u128());
    let mut scru = scru128::Generator::with_rand_and_time_sources(
        Scru128Rng(FastRng::from_os()),
        scru128::generator::StdSystemTime,
    );
    row(&mut g, "scru128 Generator (xoshiro rng)", || {
        scru.generate().to_u128()
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = uuid_v7, ulid_and_peers
}
criterion_main!(benches);
