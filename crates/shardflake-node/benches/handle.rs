//! What the swappable generator handle costs per id: a direct call, an `ArcSwap` load (what
//! the node does on every request) and an `RwLock<Arc<_>>` read, on one thread and on two.
//!
//! Run with `cargo bench -p shardflake-node --bench handle`.

use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardflake::{Layout, TemporalGenerator};

fn generator() -> TemporalGenerator {
    // The temporal generator without a supplier issues from one large block: every call is
    // one compare-and-swap and never waits for the clock, so only the handle differs.
    TemporalGenerator::builder(Layout::preset("temporal").expect("preset"))
        .host(1)
        .build()
        .expect("generator")
}

fn handle(c: &mut Criterion) {
    let mut g = c.benchmark_group("generator_handle");
    g.throughput(Throughput::Elements(1));
    let direct = generator();
    g.bench_function("direct", |b| b.iter(|| direct.next_id().expect("id")));
    let swap = ArcSwap::from_pointee(generator());
    g.bench_function("arc_swap_load", |b| {
        b.iter(|| swap.load().next_id().expect("id"))
    });
    let lock = RwLock::new(Arc::new(generator()));
    g.bench_function("rwlock_read", |b| {
        b.iter(|| lock.read().expect("lock").next_id().expect("id"))
    });
    // Two threads contending, as the node's two runtime workers do.
    let swap = Arc::new(ArcSwap::from_pointee(generator()));
    g.bench_function("arc_swap_load_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let swap = swap.clone();
                    s.spawn(move || {
                        for _ in 0..iters / 2 {
                            std::hint::black_box(swap.load().next_id().expect("id"));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let lock = Arc::new(RwLock::new(Arc::new(generator())));
    g.bench_function("rwlock_read_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let lock = lock.clone();
                    s.spawn(move || {
                        for _ in 0..iters / 2 {
                            std::hint::black_box(lock.read().expect("lock").next_id().expect("id"));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, handle);
criterion_main!(benches);
