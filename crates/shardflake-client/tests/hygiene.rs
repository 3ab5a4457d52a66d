//! One store, one layout, and a lease that survives everything but its own expiry: the
//! regression tests of the paths that repeated ids or dropped leases.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake::{Clock, GenerateError, Layout, ManualClock, SystemClock};
use shardflake_client::{ClientError, CoordinatorClient, KeeperConfig, LeaseKeeper, MemberState};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::CoordinatorConfig;
use shardflake_proto::coord::LeaseState;

use crate::support::{Faults, TestCoordinator, TOKEN};

fn client(urls: &[&str]) -> Arc<CoordinatorClient> {
    Arc::new(CoordinatorClient::new(urls.iter().copied(), Some(TOKEN.into())).unwrap())
}

async fn settled(keeper: &LeaseKeeper, ms: u64) -> MemberState {
    let mut rx = keeper.subscribe();
    let _ = tokio::time::timeout(Duration::from_millis(ms), async {
        loop {
            if matches!(*rx.borrow_and_update(), MemberState::Active(_)) || rx.borrow().is_final() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    keeper.state()
}

async fn active(keeper: &LeaseKeeper) -> Arc<shardflake_client::ActiveLease> {
    match settled(keeper, 5_000).await {
        MemberState::Active(l) => l,
        other => panic!("no lease: {other:?}"),
    }
}

/// Watches a keeper and fails the test if its lease is ever lost.
fn never_lost(keeper: &LeaseKeeper) -> Arc<Mutex<Vec<String>>> {
    let lost = Arc::new(Mutex::new(Vec::new()));
    let sink = lost.clone();
    keeper.watch(move |s| {
        if let MemberState::Lost { reason, .. } = s {
            sink.lock().unwrap().push(reason.clone());
        }
    });
    lost
}

/// Regression (two coordinators with separate stores gave two nodes the same host id): a
/// client pins the first store it sees and never fails over into another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_never_fails_over_into_another_store() {
    let a = TestCoordinator::start_on(Arc::new(MemStore::new()), "twitter").await;
    let b = TestCoordinator::start_on(Arc::new(MemStore::new()), "twitter").await;
    let (id_a, id_b) = (
        a.coordinator.store_id().to_string(),
        b.coordinator.store_id().to_string(),
    );
    // Up front: the URLs of two stores are a configuration error naming both ids.
    let e = client(&[&a.url, &b.url]).probe().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, ClientError::StoreMismatch { .. })
            && msg.contains(&id_a)
            && msg.contains(&id_b),
        "{msg}"
    );
    // A keeper given both stops for good instead of serving.
    let keeper = LeaseKeeper::start(client(&[&b.url, &a.url]), KeeperConfig::new("n", 500));
    match settled(&keeper, 5_000).await {
        MemberState::Failed { reason } => {
            assert!(reason.contains(&id_a) && reason.contains(&id_b), "{reason}")
        }
        other => panic!("expected a failed keeper, got {other:?}"),
    }
    // Later: pinned to A, a client whose A goes away does not move to B.
    let c = client(&[&a.url, &b.url]);
    c.hosts().await.unwrap();
    assert_eq!(c.store_id().as_deref(), Some(id_a.as_str()));
    a.stop().await;
    match c.hosts().await {
        Err(ClientError::StoreMismatch {
            expected, found, ..
        }) => assert_eq!((expected, found), (id_a, id_b)),
        other => panic!("failed over into another store: {other:?}"),
    }
    b.stop().await;
}

/// Regression (a twitter node served ids from a temporal coordinator's lease): the cluster's
/// layout is the truth. A node with another layout stops; one without a layout serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_layout_is_the_truth() {
    let temporal = Layout::from_spec("temporal:granularity=5s").unwrap();
    let coord = TestCoordinator::start_with(Arc::new(MemStore::new()), temporal.clone()).await;
    let mut cfg = KeeperConfig::new("twitter-node", 500);
    cfg.layout = Some(Layout::preset("twitter").unwrap());
    let wrong = LeaseKeeper::start(client(&[&coord.url]), cfg);
    match settled(&wrong, 5_000).await {
        MemberState::Failed { reason } => assert!(
            reason.contains(&temporal.spec())
                && reason.contains(&Layout::preset("twitter").unwrap().spec()),
            "{reason}"
        ),
        other => panic!("expected a failed keeper, got {other:?}"),
    }
    // Another shard length is another layout too.
    let mut cfg = KeeperConfig::new("hourly-node", 500);
    cfg.layout = Some(Layout::preset("temporal").unwrap());
    let hourly = LeaseKeeper::start(client(&[&coord.url]), cfg);
    assert!(matches!(
        settled(&hourly, 5_000).await,
        MemberState::Failed { .. }
    ));
    // No layout given: the keeper adopts the cluster's.
    let adopting = LeaseKeeper::start(client(&[&coord.url]), KeeperConfig::new("plain", 500));
    let lease = active(&adopting).await;
    assert_eq!(lease.layout, temporal);
    assert_eq!(adopting.layout(), Some(&temporal));
    // The same layout given explicitly is accepted.
    let mut cfg = KeeperConfig::new("same", 500);
    cfg.layout = Some(temporal.clone());
    let same = LeaseKeeper::start(client(&[&coord.url]), cfg);
    assert_eq!(active(&same).await.layout, temporal);
    // No lease was taken by the refused keepers.
    let hosts = client(&[&coord.url]).hosts().await.unwrap();
    let live = hosts
        .hosts
        .iter()
        .filter(|h| h.state == LeaseState::Live)
        .count();
    assert_eq!(live, 2, "{hosts:?}");
    adopting.shutdown().await;
    same.shutdown().await;
    coord.stop().await;
}

/// Regression (block requests ran inside the renewal `select!`): a block request that takes
/// longer than the TTL must not delay renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_block_request_does_not_delay_renewals() {
    let layout = Layout::from_spec("temporal:granularity=1s").unwrap();
    let coord = TestCoordinator::start_faulty(
        Arc::new(MemStore::new()),
        CoordinatorConfig::new(layout),
        Faults {
            block_delay: Some(Duration::from_millis(1_500)),
            ..Faults::default()
        },
    )
    .await;
    let keeper = LeaseKeeper::start(client(&[&coord.url]), KeeperConfig::new("t", 400));
    let lease = active(&keeper).await;
    let lost = never_lost(&keeper);
    let g = Arc::new(lease.temporal().build().unwrap());
    lease.attach_temporal(g.clone());
    assert!(matches!(
        g.next_id(),
        Err(GenerateError::NoCounterBlock { .. })
    ));
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(lease.is_valid(), "lost: {:?}", lost.lock().unwrap());
    }
    assert!(lost.lock().unwrap().is_empty());
    keeper.shutdown().await;
    coord.stop().await;
}

/// Regression (`shard_too_far_ahead` ended the lease): a node whose clock is ahead of the
/// coordinator's waits for its block; it keeps its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_ahead_of_the_coordinator_clock_is_waited_out_with_the_lease_kept() {
    let layout = Layout::from_spec("temporal:granularity=1s").unwrap();
    let coord = TestCoordinator::start_with(Arc::new(MemStore::new()), layout).await;
    let keeper = LeaseKeeper::start(client(&[&coord.url]), KeeperConfig::new("t", 400));
    let lease = active(&keeper).await;
    let lost = never_lost(&keeper);
    let ahead = ManualClock::new(SystemClock.now_ms() + 10_000);
    let g = Arc::new(lease.temporal().clock(ahead).build().unwrap());
    lease.attach_temporal(g.clone());
    for _ in 0..30 {
        assert!(matches!(
            g.next_id(),
            Err(GenerateError::NoCounterBlock { .. })
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lease.is_valid(), "lost: {:?}", lost.lock().unwrap());
    assert!(lost.lock().unwrap().is_empty());
    keeper.shutdown().await;
    coord.stop().await;
}

async fn http_errors(url: &str) -> Vec<String> {
    // reqwest is built here without a TLS provider of its own (rustls on ring is chosen by
    // the SDK): install it, as an application that builds its own reqwest clients would.
    shardflake_client::install_default_provider();
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("shardflake_coordinator_http_errors_total{"))
        .map(String::from)
        .collect()
}

/// Regression (`reservation_too_far` failed whole renewals, and the look-ahead halved for
/// good): the keeper sizes its reservations from the limit the coordinator states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_sized_from_the_coordinator_limit() {
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.reservation_ahead_ms_max = 200;
    let coord =
        TestCoordinator::start_faulty(Arc::new(MemStore::new()), config, Faults::default()).await;
    let keeper = LeaseKeeper::start(client(&[&coord.url]), KeeperConfig::new("n", 1_000));
    let lease = active(&keeper).await;
    let g = lease.snowflake().unwrap().build().unwrap();
    let mut issued = 0;
    for _ in 0..30 {
        if g.next_id().is_ok() {
            issued += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(issued >= 25, "issued {issued} of 30");
    assert!(lease.is_valid());
    let now = SystemClock.now_ms();
    assert!(
        lease.reservation().until_ms() <= now + 200,
        "within the limit"
    );
    assert_eq!(http_errors(&coord.url).await, Vec::<String>::new());
    keeper.shutdown().await;
    coord.stop().await;
}

/// Regression (a grant whose answer was lost left a ghost lease): the keeper's retry carries
/// the same request id and gets the same grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_grant_is_answered_again_not_leaked() {
    let coord = TestCoordinator::start_faulty(
        Arc::new(MemStore::new()),
        CoordinatorConfig::new(Layout::preset("twitter").unwrap()),
        Faults {
            lose_first_grant: true,
            ..Faults::default()
        },
    )
    .await;
    let c = client(&[&coord.url]);
    let keeper = LeaseKeeper::start(c.clone(), KeeperConfig::new("n", 1_000));
    let lease = active(&keeper).await;
    assert_eq!(
        coord.requests_to("/v1/leases"),
        2,
        "one lost answer, one retry"
    );
    assert_eq!(lease.host_id, 0, "the first grant, not a second host id");
    let hosts = c.hosts().await.unwrap();
    assert_eq!(hosts.hosts.len(), 1, "no ghost lease: {hosts:?}");
    assert_eq!(hosts.hosts[0].token, lease.token);
    keeper.shutdown().await;
    coord.stop().await;
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Regression (a refused block request was retried about every 6 ms with a warning each
/// time): block requests back off, and the failure is logged once.
#[tokio::test(flavor = "current_thread")]
async fn failing_block_requests_back_off_and_log_once() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Current-thread runtime: every task of the test runs on this thread, under this
    // subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let layout = Layout::from_spec("temporal:granularity=1s").unwrap();
    let coord = TestCoordinator::start_faulty(
        Arc::new(MemStore::new()),
        CoordinatorConfig::new(layout),
        Faults {
            unavailable: vec!["/v1/blocks"],
            ..Faults::default()
        },
    )
    .await;
    let keeper = LeaseKeeper::start(client(&[&coord.url]), KeeperConfig::new("t", 1_000));
    let lease = active(&keeper).await;
    let g = Arc::new(lease.temporal().build().unwrap());
    lease.attach_temporal(g.clone());
    // The generator asks for a block on every id it cannot issue: 2 s of asking.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut asks = 0;
    while std::time::Instant::now() < until {
        assert!(g.next_id().is_err());
        asks += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let requests = coord.requests_to("/v1/blocks");
    assert!(asks > 500, "the generator asked {asks} times");
    assert!(
        (2..=12).contains(&requests),
        "{requests} block requests in 2 s: not backing off"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("counter blocks"))
        .count();
    assert_eq!(warnings, 1, "{text}");
    keeper.shutdown().await;
    coord.stop().await;
}
