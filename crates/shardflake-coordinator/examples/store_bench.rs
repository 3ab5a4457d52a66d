//! Throughput of the coordinator's write operations on the embedded store, with and without
//! group commit: lease renewals, reservation extensions and counter-block grants per second.
//!
//! `cargo run --release -p shardflake-coordinator --example store_bench [-- SECONDS CLIENTS]`
//!
//! Each client owns one host id (so there are no compare-and-swap conflicts) and issues the
//! operation back to back through [`Coordinator`], i.e. without HTTP: the figures are what the
//! store and the rules sustain. Every commit is fsynced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardflake::{Layout, TemporalWidths, SHARDFLAKE_EPOCH_MS};
use shardflake_coordinator::store::{KvStore, RedbOptions, RedbStore};
use shardflake_coordinator::{Coordinator, CoordinatorConfig, SystemTimeSource, TimeSource};
use shardflake_proto::coord::{AcquireRequest, BlockRequest, RenewRequest, ReservationRequest};

#[derive(Clone, Copy, Debug)]
enum Op {
    Renew,
    Extend,
    Block,
}

async fn run(op: Op, batch_max: usize, clients: u32, secs: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        RedbStore::open(dir.path().join("bench.redb"), RedbOptions { batch_max }).unwrap(),
    );
    let layout =
        Layout::temporal(3_600_000, SHARDFLAKE_EPOCH_MS, TemporalWidths::default()).unwrap();
    let time = Arc::new(SystemTimeSource::new());
    let c = Arc::new(
        Coordinator::open(
            store.clone(),
            time.clone(),
            CoordinatorConfig::new(layout.clone()),
        )
        .await
        .expect("the store opens"),
    );
    let mut leases = Vec::new();
    for i in 0..clients {
        let g = c
            .acquire(&AcquireRequest {
                name: format!("bench-{i}"),
                ttl_ms: Some(600_000),
                ..Default::default()
            })
            .await
            .unwrap();
        leases.push(g);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = store.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for g in leases {
        let (c, stop, done, time, layout) = (
            c.clone(),
            stop.clone(),
            done.clone(),
            time.clone(),
            layout.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut after = 0;
            let mut until = time.wall_ms();
            while !stop.load(Ordering::Relaxed) {
                match op {
                    Op::Renew => {
                        c.renew(
                            g.host_id,
                            &RenewRequest {
                                token: g.token,
                                reserve_until_ms: None,
                                usage: None,
                            },
                        )
                        .await
                        .unwrap();
                    }
                    Op::Extend => {
                        until = until.max(time.wall_ms()) + 1;
                        c.extend_reservation(
                            g.host_id,
                            &ReservationRequest {
                                token: g.token,
                                until_ms: until,
                            },
                        )
                        .await
                        .unwrap();
                    }
                    Op::Block => {
                        // A fresh (host, shard) pair each time, walking back from the current
                        // shard: each grant writes one new block record, as at a shard start,
                        // and the counter space never runs out however long the run.
                        let shard = layout.tick_of(time.wall_ms()).unwrap() - after;
                        c.grant_block(&BlockRequest {
                            host_id: g.host_id,
                            token: g.token,
                            shard,
                            after_counter: 0,
                        })
                        .await
                        .unwrap();
                        after += 1;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats();
    let ops = done.load(Ordering::Relaxed) as f64 / elapsed;
    let commits = (after.commits - before.commits) as f64 / elapsed;
    drop(c);
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("the store is still shared")
    };
    store.close().await;
    (ops, commits)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(3, |s| s.parse().expect("SECONDS"));
    let clients: u32 = args.next().map_or(64, |s| s.parse().expect("CLIENTS"));
    println!("{clients} concurrent clients, {secs} s per row, fsync on every commit");
    println!("| operation | group commit | ops/s | commits/s | ops per commit |");
    println!("|---|---|---:|---:|---:|");
    for op in [Op::Renew, Op::Extend, Op::Block] {
        let mut base = 0.0;
        for (label, batch) in [
            ("off", 1),
            (
                "on",
                shardflake_coordinator::store::GROUP_COMMIT_BATCH_MAX_DEFAULT,
            ),
        ] {
            let (ops, commits) = run(op, batch, clients, secs).await;
            if batch == 1 {
                base = ops;
            }
            let gain = if batch == 1 {
                String::new()
            } else {
                format!(" ({:.1}x)", ops / base)
            };
            println!(
                "| {op:?} | {label} | {ops:.0}{gain} | {commits:.0} | {:.1} |",
                ops / commits.max(1.0)
            );
        }
    }
    let (ops, _) = run(Op::Renew, 1, 1, secs).await;
    println!(
        "single client, renewals: {ops:.0}/s ({:.2} ms per fsynced commit)",
        1000.0 / ops
    );
}
