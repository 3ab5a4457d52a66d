//! Throughput of the coordinator's write operations on each store, side by side in one run:
//! lease renewals, reservation extensions and counter-block grants per second, and the time a
//! standby takes to take over a silent holder's host id beyond the lease TTL. Stores: the
//! embedded one with and without group commit, and (built with `--features etcd`, given
//! `SHARDFLAKE_BENCH_ETCD=URL,...`) an etcd cluster, e.g. the 3-member loopback cluster of
//! `scripts/etcd-cluster.sh`.
//!
//! `cargo run --release -p shardflake-coordinator --example store_bench [-- SECONDS CLIENTS]`
//! `scripts/bench-coordinator.sh` starts a 3-member etcd cluster and runs it with etcd.
//!
//! Each client owns one host id (so there are no compare-and-swap conflicts) and issues the
//! operation back to back through [`Coordinator`], i.e. without HTTP: the figures are what the
//! store and the rules sustain. Every commit is durable (redb fsyncs; etcd commits to a
//! majority's write-ahead logs, each fsynced).

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

/// A store under test.
#[derive(Clone, Debug)]
enum Backend {
    Redb {
        batch_max: usize,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        urls: String,
        batch_max: usize,
    },
}

impl Backend {
    fn label(&self) -> String {
        match self {
            Backend::Redb { batch_max: 1 } => "embedded, group commit off".into(),
            Backend::Redb { .. } => "embedded, group commit on".into(),
            #[cfg(feature = "etcd")]
            Backend::Etcd { batch_max: 1, .. } => "etcd (3 members), group commit off".into(),
            #[cfg(feature = "etcd")]
            Backend::Etcd { .. } => "etcd (3 members), group commit on".into(),
        }
    }

    /// A fresh, empty store: a new redb file, or a new etcd prefix.
    async fn open(&self, dir: &std::path::Path) -> (Arc<dyn KvStore>, Option<Arc<RedbStore>>) {
        let (a, _, redb) = self.open_pair(dir).await;
        (a, redb)
    }

    /// Two handles on a fresh store, as two coordinator processes have: for etcd two clients
    /// on one new prefix; the embedded store belongs to one process, so the same one twice.
    async fn open_pair(
        &self,
        dir: &std::path::Path,
    ) -> (Arc<dyn KvStore>, Arc<dyn KvStore>, Option<Arc<RedbStore>>) {
        match self {
            Backend::Redb { batch_max } => {
                let name = format!("bench-{}.redb", NEXT.fetch_add(1, Ordering::Relaxed));
                let s = Arc::new(
                    RedbStore::open(
                        dir.join(name),
                        RedbOptions {
                            batch_max: *batch_max,
                        },
                    )
                    .unwrap(),
                );
                (s.clone(), s.clone(), Some(s))
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd { urls, batch_max } => {
                use shardflake_coordinator::store::{EtcdOptions, EtcdStore};
                let prefix = format!(
                    "/shardflake-bench/{}-{}/",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let connect = || async {
                    let s: Arc<dyn KvStore> = Arc::new(
                        EtcdStore::connect(
                            EtcdOptions::new(std::slice::from_ref(urls), &prefix)
                                .unwrap()
                                .with_batch_max(*batch_max),
                        )
                        .await
                        .expect("the etcd cluster answers"),
                    );
                    s
                };
                (connect().await, connect().await, None)
            }
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn close(store: Arc<dyn KvStore>, redb: Option<Arc<RedbStore>>) {
    drop(store);
    if let Some(r) = redb {
        let Ok(r) = Arc::try_unwrap(r) else {
            panic!("the store is still shared")
        };
        r.close().await;
    }
}

async fn run(op: Op, backend: &Backend, clients: u32, secs: u64) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (store, redb) = backend.open(dir.path()).await;
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
                secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
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
                                secret: shardflake_proto::coord::LeaseSecret::from_bytes(
                                    [0x5e; 16],
                                ),
                                token: g.token,
                                reserve_until_ms: None,
                                usage: None,
                                ..Default::default()
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
                                secret: shardflake_proto::coord::LeaseSecret::from_bytes(
                                    [0x5e; 16],
                                ),
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
                            secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
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
    close(store, redb).await;
    (ops, commits)
}

/// A holder takes a lease of `ttl_ms` through one coordinator and goes silent; a standby
/// long-polls a second coordinator on the same store (for the embedded store, which one
/// process owns, the same coordinator). Returns how long after the holder's last commit the
/// standby held the host id, minus the TTL: the cost of detection and takeover.
async fn failover_ms(backend: &Backend, ttl_ms: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (store_a, store_b, redb) = backend.open_pair(dir.path()).await;
    let layout = Layout::preset("twitter").unwrap();
    let open = |store: Arc<dyn KvStore>| {
        let layout = layout.clone();
        async move {
            Arc::new(
                Coordinator::open(
                    store,
                    Arc::new(SystemTimeSource::new()),
                    CoordinatorConfig::new(layout),
                )
                .await
                .expect("the store opens"),
            )
        }
    };
    let a = open(store_a.clone()).await;
    let b = if redb.is_some() {
        a.clone()
    } else {
        open(store_b.clone()).await
    };
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.standby_wait("standby", 60_000).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held = a
        .acquire(&AcquireRequest {
            secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
            name: "holder".into(),
            ttl_ms: Some(ttl_ms),
            ..Default::default()
        })
        .await
        .unwrap();
    let silent = Instant::now();
    let offered = waiter.await.unwrap().unwrap().expect("an offer");
    assert_eq!(offered, held.host_id);
    b.acquire(&AcquireRequest {
        secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
        name: "standby".into(),
        host_id: Some(offered),
        ttl_ms: Some(ttl_ms),
        ..Default::default()
    })
    .await
    .unwrap();
    let ms = silent.elapsed().as_secs_f64() * 1000.0 - ttl_ms as f64;
    drop((a, b, store_b));
    close(store_a, redb).await;
    ms
}

/// The etcd cluster named by `SHARDFLAKE_BENCH_ETCD`, if any, without and with group commit.
fn etcd_backend() -> Vec<Backend> {
    match std::env::var("SHARDFLAKE_BENCH_ETCD") {
        #[cfg(feature = "etcd")]
        Ok(urls) => vec![
            Backend::Etcd {
                urls: urls.clone(),
                batch_max: 1,
            },
            Backend::Etcd {
                urls,
                batch_max: shardflake_coordinator::store::ETCD_BATCH_MAX,
            },
        ],
        #[cfg(not(feature = "etcd"))]
        Ok(_) => panic!(
            "SHARDFLAKE_BENCH_ETCD is set but this build has no etcd backend: add --features etcd"
        ),
        Err(_) => {
            eprintln!("(no SHARDFLAKE_BENCH_ETCD: embedded store only)");
            Vec::new()
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(3, |s| s.parse().expect("SECONDS"));
    let clients: u32 = args.next().map_or(64, |s| s.parse().expect("CLIENTS"));
    let embedded = [
        Backend::Redb { batch_max: 1 },
        Backend::Redb {
            batch_max: shardflake_coordinator::store::GROUP_COMMIT_BATCH_MAX_DEFAULT,
        },
    ];
    let backends: Vec<Backend> = embedded.into_iter().chain(etcd_backend()).collect();
    println!("{clients} concurrent clients, {secs} s per cell, every commit durable");
    let header: Vec<String> = backends.iter().map(Backend::label).collect();
    println!(
        "| operation, ops/s (ops per commit) | {} |",
        header.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(backends.len()));
    for op in [Op::Renew, Op::Extend, Op::Block] {
        let mut cells = Vec::new();
        for b in &backends {
            let (ops, commits) = run(op, b, clients, secs).await;
            cells.push(if commits > 0.0 {
                format!("{ops:.0} ({:.1})", ops / commits)
            } else {
                format!("{ops:.0}")
            });
        }
        println!("| {op:?} | {} |", cells.join(" | "));
    }
    let mut cells = Vec::new();
    for b in &backends {
        let (ops, _) = run(Op::Renew, b, 1, secs).await;
        cells.push(format!("{ops:.0} ({:.2} ms each)", 1000.0 / ops));
    }
    println!("| Renew, one client | {} |", cells.join(" | "));
    const TTL_MS: u64 = 1_000;
    let mut cells = Vec::new();
    for b in &backends {
        let mut runs: Vec<f64> = Vec::new();
        for _ in 0..3 {
            runs.push(failover_ms(b, TTL_MS).await);
        }
        runs.sort_by(f64::total_cmp);
        cells.push(format!("+{:.0} ms", runs[1]));
    }
    println!(
        "| standby takeover beyond a {TTL_MS} ms TTL (median of 3) | {} |",
        cells.join(" | ")
    );
}
