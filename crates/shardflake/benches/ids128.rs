//! Monotonic 128-bit id generation on one thread: shardflake's UUIDv7 and ULID generators
//! next to the peer crates, measured in the same run.
//!
//! Run with: `cargo bench -p shardflake --bench ids128`

use std::hint::black_box;
use std::time::Duration;

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

fn uuid_v7(c: &mut Criterion) {
    let mut g = c.benchmark_group("uuidv7");
    g.bench_function("shardflake uuid7::next (thread-local, coarse clock)", |b| {
        b.iter(|| black_box(uuid7::next()))
    });
    let mut coarse = Uuid7Generator::with_clock(CoarseClock);
    g.bench_function("shardflake Uuid7Generator<CoarseClock>", |b| {
        b.iter(|| black_box(coarse.next_id()))
    });
    let mut system = Uuid7Generator::new();
    g.bench_function("shardflake Uuid7Generator<SystemClock>", |b| {
        b.iter(|| black_box(system.next_id()))
    });
    g.bench_function("uuid Uuid::now_v7 (fast-rng)", |b| {
        b.iter(|| black_box(uuid::Uuid::now_v7()))
    });
    let ctx = uuid::ContextV7::new();
    g.bench_function("uuid ContextV7 (fast-rng)", |b| {
        b.iter(|| black_box(uuid::Uuid::new_v7(uuid::Timestamp::now(&ctx))))
    });
    g.finish();
}

fn ulid_and_peers(c: &mut Criterion) {
    let mut g = c.benchmark_group("ulid");
    g.bench_function("shardflake ulid::next (thread-local, coarse clock)", |b| {
        b.iter(|| black_box(ulid::next()))
    });
    let mut coarse = UlidGenerator::with_clock(CoarseClock);
    g.bench_function("shardflake UlidGenerator<CoarseClock>", |b| {
        b.iter(|| black_box(coarse.next_id()))
    });
    let mut system = UlidGenerator::new();
    g.bench_function("shardflake UlidGenerator<SystemClock>", |b| {
        b.iter(|| black_box(system.next_id()))
    });
    let mut peer = ::ulid::Generator::new();
    g.bench_function("ulid Generator", |b| {
        b.iter(|| black_box(peer.generate().map(|u| u.0).ok()))
    });
    g.bench_function("ferroid thread_local Ulid::new_ulid_mono", |b| {
        b.iter(|| {
            black_box(ferroid::generator::thread_local::Ulid::new_ulid_mono(
                |_| std::thread::yield_now(),
            ))
        })
    });
    g.bench_function("scru128 new (global)", |b| {
        b.iter(|| black_box(scru128::new()))
    });
    let mut scru = scru128::Generator::with_rand_and_time_sources(
        Scru128Rng(FastRng::from_os()),
        scru128::generator::StdSystemTime,
    );
    g.bench_function("scru128 Generator (xoshiro rng)", |b| {
        b.iter(|| black_box(scru.generate()))
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
