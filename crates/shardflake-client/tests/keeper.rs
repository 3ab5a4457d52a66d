//! The lease keeper: acquisition, renewal, self-fencing, standby takeover, failover.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shardflake::{Clock, GenerateError, Layout, ManualClock, SystemClock};
use shardflake_client::{ClientError, CoordinatorClient, KeeperConfig, LeaseKeeper, MemberState};
use shardflake_coordinator::store::MemStore;
use shardflake_proto::coord::LeaseState;

use crate::support::{dead_url, TestCoordinator, TOKEN};

fn client(urls: &[&str]) -> Arc<CoordinatorClient> {
    Arc::new(CoordinatorClient::new(urls.iter().copied(), Some(TOKEN.into())).unwrap())
}

async fn active_within(keeper: &LeaseKeeper, ms: u64) -> Arc<shardflake_client::ActiveLease> {
    tokio::time::timeout(Duration::from_millis(ms), keeper.wait_active())
        .await
        .expect("no lease in time")
        .expect("keeper stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_holds_a_lease_across_many_ttls_and_releases_it() {
    let coord = TestCoordinator::start().await;
    let c = client(&[&coord.url]);
    let keeper = LeaseKeeper::start(c.clone(), KeeperConfig::new("node-a", 300));
    let seen_states = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen_states.clone();
    let watcher = keeper.watch(move |s| log.lock().unwrap().push(s.not_ready_reason()));
    let lease = active_within(&keeper, 5_000).await;
    assert_eq!(lease.start_above_ms, 0);
    assert_eq!(keeper.state().not_ready_reason(), None);
    let g = lease.snowflake().unwrap().build().unwrap();
    let mut seen = Vec::new();
    let mut last = 0;
    // Ten TTLs of issuing: the lease must stay valid throughout.
    for _ in 0..30 {
        for _ in 0..100 {
            let id = g.next_id().unwrap();
            lease.check().unwrap();
            assert!(id > last);
            seen.push(id);
            last = id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shardflake::check::check_ids(&seen).assert_unique();
    assert!(lease.is_valid());
    let hosts = c.hosts().await.unwrap();
    assert_eq!(hosts.hosts[0].state, LeaseState::Live);
    assert!(hosts.hosts[0].reserved_until_ms > SystemClock.now_ms());
    keeper.shutdown().await;
    assert!(lease.reservation().is_revoked());
    assert_eq!(g.next_id(), Err(GenerateError::LeaseLost));
    assert_eq!(
        c.hosts().await.unwrap().hosts[0].state,
        LeaseState::Released
    );
    watcher.await.unwrap();
    let states = seen_states.lock().unwrap().clone();
    assert!(states.contains(&None), "{states:?}");
    assert_eq!(states.last().unwrap().as_deref(), Some("shutting down"));
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_a_crashed_host_above_its_reserved_bound() {
    let coord = TestCoordinator::start().await;
    let c = client(&[&coord.url]);
    let layout = Layout::preset("twitter").unwrap();
    let primary = LeaseKeeper::start(c.clone(), KeeperConfig::new("primary", 300));
    let lease = active_within(&primary, 5_000).await;
    let mut standby_cfg = KeeperConfig::new("standby", 300);
    standby_cfg.standby = true;
    let standby = LeaseKeeper::start(c.clone(), standby_cfg);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(standby.state(), MemberState::Standby));
    let g = lease.snowflake().unwrap().build().unwrap();
    let before: Vec<u64> = (0..1000).map(|_| g.next_id().unwrap()).collect();
    let bound = c.hosts().await.unwrap().hosts[0].reserved_until_ms;
    // Crash: the keeper task ends without releasing; the lease runs out at the coordinator.
    let crashed_at = std::time::Instant::now();
    drop(primary);
    let taken = active_within(&standby, 5_000).await;
    let failover = crashed_at.elapsed();
    assert_eq!(taken.host_id, lease.host_id);
    assert!(taken.token > lease.token);
    assert!(
        taken.start_above_ms >= bound,
        "{} < {bound}",
        taken.start_above_ms
    );
    let g2 = taken.snowflake().unwrap().build().unwrap();
    // The new holder waits until the wall clock passes the bound, then issues above it.
    let after = loop {
        match g2.next_id() {
            Ok(id) => break id,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(layout.decode(after).unwrap().timestamp_ms > bound);
    assert!(before.iter().all(|&id| id < after));
    println!("failover with ttl 300 ms took {failover:?}");
    standby.shutdown().await;
    coord.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn lease_runs_out_on_the_monotonic_clock_without_a_coordinator() {
    let coord = TestCoordinator::start().await;
    let c = client(&[&coord.url]);
    let keeper = LeaseKeeper::start(c, KeeperConfig::new("node", 1_000));
    let lease = active_within(&keeper, 5_000).await;
    let mut rx = keeper.subscribe();
    coord.stop().await;
    // From here on simulated time: every renewal fails, and the lease must run out no later
    // than a TTL after the last acknowledged renewal was sent.
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    assert!(lease.check().is_ok());
    loop {
        rx.changed().await.unwrap();
        if let MemberState::Lost { host_id, token, .. } = &*rx.borrow() {
            assert_eq!((*host_id, *token), (lease.host_id, lease.token));
            break;
        }
    }
    assert!(
        start.elapsed() <= Duration::from_millis(1_000),
        "{:?}",
        start.elapsed()
    );
    assert!(lease.reservation().is_revoked());
    assert_eq!(lease.check(), Err(GenerateError::LeaseLost));
    let g = lease.snowflake().unwrap().build().unwrap();
    assert_eq!(g.next_id(), Err(GenerateError::LeaseLost));
    drop(keeper);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fails_over_between_coordinators_sharing_a_store() {
    let store = Arc::new(MemStore::new());
    let a = TestCoordinator::start_on(store.clone(), "twitter").await;
    let b = TestCoordinator::start_on(store, "twitter").await;
    let dead = dead_url().await;
    let c = client(&[&dead, &a.url, &b.url]);
    let keeper = LeaseKeeper::start(c.clone(), KeeperConfig::new("node", 300));
    let lease = active_within(&keeper, 5_000).await;
    a.stop().await;
    // Several TTLs with only `b` up: renewals must go through it without losing the lease.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(lease.is_valid());
    assert!(matches!(keeper.state(), MemberState::Active(ref l) if l.token == lease.token));
    let wrong = CoordinatorClient::new([b.url.clone()], Some("wrong".into())).unwrap();
    match wrong.hosts().await {
        Err(ClientError::Api {
            status: 401, code, ..
        }) => assert_eq!(code.as_str(), "unauthorized"),
        other => panic!("expected 401, got {other:?}"),
    }
    let none = CoordinatorClient::new([dead], None).unwrap();
    assert!(matches!(
        none.hosts().await,
        Err(ClientError::Unavailable { tried: 1, .. })
    ));
    keeper.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_demand_extends_the_reservation_through_the_coordinator() {
    let coord = TestCoordinator::start().await;
    let c = client(&[&coord.url]);
    let keeper = LeaseKeeper::start(c.clone(), KeeperConfig::new("node", 1_000));
    let lease = active_within(&keeper, 5_000).await;
    // A generator whose clock runs 20 s ahead needs far more than the default look-ahead.
    let ahead = ManualClock::new(SystemClock.now_ms() + 20_000);
    let g = lease
        .snowflake()
        .unwrap()
        .clock(ahead.clone())
        .build()
        .unwrap();
    let first = g.next_id().unwrap_err();
    assert!(
        matches!(first, GenerateError::ReservationExhausted { .. }),
        "{first}"
    );
    let id = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match g.next_id() {
                Ok(id) => break id,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("reservation extended");
    let ts = Layout::preset("twitter")
        .unwrap()
        .decode(id)
        .unwrap()
        .timestamp_ms;
    let persisted = c.hosts().await.unwrap().hosts[0].reserved_until_ms;
    assert!(
        persisted >= ts,
        "issued {ts} above the persisted bound {persisted}"
    );
    keeper.shutdown().await;
    coord.stop().await;
}

/// The system clock, `ahead_ms` ahead.
struct AheadClock {
    ahead_ms: u64,
}

impl Clock for AheadClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.ahead_ms
    }
    fn wait_until_ms(&self, target_ms: u64) {
        SystemClock.wait_until_ms(target_ms.saturating_sub(self.ahead_ms));
    }
}

/// Regression (an extension per round trip): a node whose clock is ahead of the
/// coordinator's by more than the coordinator's look-ahead limit less the node's own gets a
/// reservation short of what it asks for, under its low-water mark; its generator asked
/// again on every id and the keeper sent an extension, a write to the store, per answer.
/// The extensions are now spaced by half the headroom granted, and ids keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_clock_ahead_of_the_coordinators_does_not_flood_them_with_extensions() {
    let mut config =
        shardflake_coordinator::CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.reservation_ahead_ms_max = 1_000;
    let coord = crate::support::TestCoordinator::start_faulty(
        Arc::new(MemStore::new()),
        config,
        crate::support::Faults::default(),
    )
    .await;
    let c = client(&[&coord.url]);
    // 800 ms ahead: the coordinator grants up to 200 ms past the node's clock, under the
    // low-water mark (a quarter of the 1 s look-ahead).
    let clock: Arc<dyn Clock> = Arc::new(AheadClock { ahead_ms: 800 });
    let mut kc = KeeperConfig::new("node", 1_000);
    kc.clock = clock.clone();
    let keeper = LeaseKeeper::start(c.clone(), kc);
    let lease = active_within(&keeper, 5_000).await;
    let g = lease.snowflake().unwrap().clock(clock).build().unwrap();
    let path = format!("/v1/leases/{}/reservation", lease.host_id);
    let before = coord.requests_to(&path);
    let (mut issued, mut refused) = (0u64, 0u64);
    let until = std::time::Instant::now() + Duration::from_millis(2_000);
    while std::time::Instant::now() < until {
        match g.next_id() {
            Ok(_) => issued += 1,
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let extensions = coord.requests_to(&path) - before;
    // Half of the 200 ms granted each time: about 20 in 2 s (a round trip each was hundreds).
    assert!(
        extensions <= 60,
        "{extensions} extensions in 2 s ({issued} ids issued, {refused} refused)"
    );
    assert!(
        issued > 10 * refused,
        "ids keep flowing: {issued} issued, {refused} refused"
    );
    keeper.shutdown().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_generator_gets_blocks_and_crosses_shards_without_repeats() {
    // One-second shards with widths sized to last a century (the default 20 shard bits of
    // one second ran out on 2025-01-13).
    let layout = Layout::from_spec("temporal:granularity=1s").unwrap();
    let coord = TestCoordinator::start_with(Arc::new(MemStore::new()), layout.clone()).await;
    let c = client(&[&coord.url]);
    let keeper = LeaseKeeper::start(c.clone(), KeeperConfig::new("t", 300));
    let lease = active_within(&keeper, 5_000).await;
    assert_eq!(
        lease.layout, layout,
        "the keeper serves the coordinator's layout"
    );
    let g = Arc::new(lease.temporal().build().unwrap());
    lease.attach_temporal(g.clone());
    let mut seen = Vec::new();
    let mut last = 0;
    let mut shards = HashSet::new();
    let until = std::time::Instant::now() + Duration::from_millis(2_600);
    while std::time::Instant::now() < until {
        match g.next_id() {
            Ok(id) => {
                lease.check().unwrap();
                assert!(id > last, "{id} after {last}");
                seen.push(id);
                last = id;
                let d = layout.decode(id).unwrap();
                assert_eq!(d.field("host"), Some(lease.host_id as u64));
                shards.insert(d.field("shard").unwrap());
            }
            // The first block of the lease is fetched on demand.
            Err(GenerateError::NoCounterBlock { .. } | GenerateError::CounterExhausted { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("{e}"),
        }
        if seen.len() % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(shards.len() >= 2, "crossed shards: {shards:?}");
    shardflake::check::check_ids(&seen).assert_unique();
    let hosts = c.hosts().await.unwrap();
    let t = hosts.hosts[0]
        .temporal
        .clone()
        .expect("usage reported with renewals");
    assert!(!t.history.is_empty(), "{t:?}");
    keeper.shutdown().await;
    coord.stop().await;
}
