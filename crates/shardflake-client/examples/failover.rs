//! Failover time: a primary holding a host id crashes (its keeper ends without releasing, as
//! under `kill -9`); how long until a standby holds the id, and until it issues its first id.
//!
//! `cargo run --release -p shardflake-client --example failover [-- TRIALS]`
//!
//! The coordinator runs in-process on 127.0.0.1 over the embedded store (fsync on commit).
//! The crash happens at a random point of the primary's renewal cycle. "First id" uses the
//! node's default clock policy (wait for the wall clock to pass the previous holder's
//! reserved bound) and the `borrow` policy (issue above the bound at once, up to 1 s ahead).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardflake::{ClockPolicy, Layout};
use shardflake_client::{CoordinatorClient, KeeperConfig, LeaseKeeper};
use shardflake_coordinator::http::{app, AppState, Auth};
use shardflake_coordinator::store::{RedbOptions, RedbStore};
use shardflake_coordinator::{serve, Coordinator, CoordinatorConfig, SystemTimeSource};
use shardflake_proto::auth::Scope;

const TOKEN: &str = "failover-bench-node-token";

async fn first_id_after(lease: &shardflake_client::ActiveLease, policy: ClockPolicy) {
    let g = lease.snowflake().unwrap().policy(policy).build().unwrap();
    loop {
        if g.next_id().is_ok() && lease.check().is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let trials: u32 = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("TRIALS"));
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(RedbStore::open(dir.path().join("c.redb"), RedbOptions::default()).unwrap());
    let c = Arc::new(
        Coordinator::open(
            store,
            Arc::new(SystemTimeSource::new()),
            CoordinatorConfig::new(Layout::preset("twitter").unwrap()),
        )
        .await
        .expect("the store opens"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        app(AppState::new(
            c,
            Auth::tokens(&[(Scope::Node, TOKEN)]).expect("a well-formed token"),
        )),
        std::future::pending(),
    ));
    let client = Arc::new(CoordinatorClient::new([url], Some(TOKEN.into())).unwrap());
    println!("| TTL | crash → standby holds the id | → first id (wait policy) | → first id (borrow 1 s) |");
    println!("|---:|---:|---:|---:|");
    for ttl_ms in [300u64, 1_000, 3_000] {
        let (mut held, mut wait, mut borrow) = (Vec::new(), Vec::new(), Vec::new());
        for trial in 0..trials {
            let primary = LeaseKeeper::start(
                client.clone(),
                KeeperConfig::new(format!("p{ttl_ms}-{trial}"), ttl_ms),
            );
            let lease = primary.wait_active().await.unwrap();
            let mut cfg = KeeperConfig::new(format!("s{ttl_ms}-{trial}"), ttl_ms);
            cfg.standby = true;
            let standby = LeaseKeeper::start(client.clone(), cfg);
            // Crash at a pseudo-random point of the renewal cycle.
            let jitter = (trial as u64 * 7919) % (ttl_ms / 2);
            tokio::time::sleep(Duration::from_millis(ttl_ms + jitter)).await;
            let crashed = Instant::now();
            drop(primary);
            let taken = standby.wait_active().await.unwrap();
            assert_eq!(taken.host_id, lease.host_id);
            held.push(crashed.elapsed());
            // One generator per lease: alternate the policy between trials.
            let total_ms = || crashed.elapsed().as_secs_f64() * 1e3;
            if trial % 2 == 0 {
                first_id_after(
                    &taken,
                    ClockPolicy::Wait {
                        max_wait_ms: 60_000,
                    },
                )
                .await;
                wait.push(total_ms());
            } else {
                first_id_after(
                    &taken,
                    ClockPolicy::Borrow {
                        borrow_ahead_ms_max: 1_000,
                    },
                )
                .await;
                borrow.push(total_ms());
            }
            standby.shutdown().await;
        }
        let ms = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let max = v.iter().cloned().fold(0.0, f64::max);
            format!("{mean:.0} ms (max {max:.0})")
        };
        let held: Vec<f64> = held.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        println!(
            "| {ttl_ms} ms | {} | {} | {} |",
            ms(&held),
            ms(&wait),
            ms(&borrow)
        );
    }
}
