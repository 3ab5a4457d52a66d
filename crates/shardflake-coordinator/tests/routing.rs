//! What an idle cluster costs the store does not grow with its size: the routing table is
//! served from memory and the maintainer assigns namespaces from one scan of each kind of
//! record, so a minute of nodes asking for routing every 2 s (as `shardflake node` does) and
//! of housekeeping every second makes the same number of store reads at 10 hosts as at
//! 1,000. Counted with the store's read counter, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use shardflake::Layout;
use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::testing::secret;
use shardflake_coordinator::{
    Coordinator, CoordinatorConfig, Housekeeper, ManualTime, EPOCH_BUMP_DELAY_MS,
};
use shardflake_proto::coord::AcquireRequest;
use shardflake_proto::ns::NamespaceSpec;

const T0: u64 = 1_800_000_000_000;
/// The simulated minute, in steps of 100 ms.
const STEPS: u64 = 600;
const STEP_MS: u64 = 100;
/// How often each node asks for the routing table (`shardflake node`'s refresh).
const ROUTING_EVERY_MS: u64 = 2_000;

/// The reads a minute of an idle cluster of `hosts` nodes and `namespaces` namespaces makes,
/// and the routing calls it answered.
async fn idle_minute(hosts: u32, namespaces: usize) -> (u64, u64) {
    let store = Arc::new(MemStore::new());
    let time = ManualTime::new(T0);
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = 1024;
    let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config)
        .await
        .unwrap();
    for h in 0..hosts {
        c.acquire(&AcquireRequest {
            name: format!("node-{h}"),
            // Longer than the minute: no renewal is due while the cluster idles.
            ttl_ms: Some(600_000),
            url: Some(format!("http://node-{h}.test:8080")),
            secret: secret(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for n in 0..namespaces {
        c.put_namespace(&format!("ns-{n}"), &NamespaceSpec::default())
            .await
            .unwrap();
    }
    let mut keeper = Housekeeper::new(&c);
    // Settle: the first assignment and table build, and the routing epoch writes they
    // cause (made on the tokio clock, EPOCH_BUMP_DELAY_MS after a change).
    for _ in 0..3 {
        keeper.pass(&c).await.unwrap();
        c.routing().await.unwrap();
        tokio::time::sleep(Duration::from_millis(EPOCH_BUMP_DELAY_MS * 3)).await;
        time.advance_ms(1_000);
    }
    let before = store.stats().reads;
    let mut calls = 0;
    for step in 0..STEPS {
        time.advance_ms(STEP_MS);
        let now = step * STEP_MS;
        if now.is_multiple_of(1_000) {
            keeper.pass(&c).await.unwrap();
        }
        // Each node asks once per refresh interval, spread over it.
        for h in 0..u64::from(hosts) {
            if (now + h * ROUTING_EVERY_MS / u64::from(hosts)) % ROUTING_EVERY_MS < STEP_MS {
                let t = c.routing().await.unwrap();
                assert_eq!(t.nodes.len(), hosts as usize);
                assert_eq!(t.namespaces.len(), namespaces);
                calls += 1;
            }
        }
    }
    assert!(keeper.leading());
    (store.stats().reads - before, calls)
}

#[tokio::test]
async fn an_idle_cluster_reads_the_store_as_often_at_1000_hosts_as_at_10() {
    let (small, small_calls) = idle_minute(10, 50).await;
    let (large, large_calls) = idle_minute(1_000, 50).await;
    // The calls grow with the cluster: 1,000 nodes ask 30 times a minute each.
    assert_eq!(small_calls, 10 * 30);
    assert_eq!(large_calls, 1_000 * 30);
    // The same, but for where the calls fall against the once-a-second epoch check (a read
    // or two either way), while the calls grew a hundredfold.
    assert!(
        small.abs_diff(large) <= 2,
        "store reads in an idle minute: {small} at 10 hosts, {large} at 1,000"
    );
    // And few: the epoch once a second by the routing and once by the maintainer, the
    // maintainer lease every 5 s, a table build or an assignment pass (three scans each)
    // every 10 to 30 s.
    assert!(large <= 3 * 60, "{large} store reads in an idle minute");
}

#[tokio::test]
async fn the_routing_table_is_built_again_when_a_lease_lapses_and_after_a_change() {
    let store = Arc::new(MemStore::new());
    let time = ManualTime::new(T0);
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = 8;
    let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config)
        .await
        .unwrap();
    let lease = |name: &str, ttl_ms: u64| AcquireRequest {
        name: name.into(),
        ttl_ms: Some(ttl_ms),
        url: Some(format!("http://{name}.test:8080")),
        secret: secret(),
        ..Default::default()
    };
    c.acquire(&lease("a", 10_000)).await.unwrap();
    let first = c.routed().await.unwrap();
    assert_eq!(first.table.nodes.len(), 1);
    let builds = c.routing_builds();
    // Unchanged: served from memory, the same tag.
    time.advance_ms(500);
    assert_eq!(c.routed().await.unwrap().etag, first.etag);
    assert_eq!(c.routing_builds(), builds);
    // A new lease: this coordinator's own write drops its table.
    c.acquire(&lease("b", 60_000)).await.unwrap();
    let second = c.routed().await.unwrap();
    assert_eq!(second.table.nodes.len(), 2);
    assert_ne!(second.etag, first.etag);
    // a's lease lapses without a write: the table drops it when it lapses.
    time.advance_ms(10_000);
    let third = c.routed().await.unwrap();
    assert_eq!(third.table.nodes.len(), 1, "{:?}", third.table);
    assert_eq!(third.table.nodes[0].url, "http://b.test:8080");
}
