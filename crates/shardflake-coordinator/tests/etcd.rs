//! The etcd backend against a real etcd cluster: the store conformance suite unchanged, the
//! coordinator's domain checks (one test body per backend), and two coordinators sharing one
//! prefix. Built with the `etcd` feature; the cluster's client URLs come from
//! `SHARDFLAKE_TEST_ETCD` (scripts/test.sh starts a 3-member cluster on loopback and sets
//! it). Without it these tests fail rather than pass unchecked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::store::{conformance, EtcdOptions, EtcdStore, KvStore, ETCD_BATCH_MAX};
use shardflake_coordinator::{CoordError, Coordinator, CoordinatorConfig, ManualTime};

/// The environment variable with the test cluster's client URLs.
const ENDPOINTS_ENV: &str = "SHARDFLAKE_TEST_ETCD";

fn endpoints() -> Vec<String> {
    let v = std::env::var(ENDPOINTS_ENV).unwrap_or_else(|_| {
        panic!(
            "{ENDPOINTS_ENV} is not set: these tests need an etcd cluster \
             (scripts/test.sh starts one; or scripts/etcd-cluster.sh start DIR)"
        )
    });
    vec![v]
}

/// A prefix no other test (or earlier run) has used.
fn fresh_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "/shardflake-test/{}-{nanos}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn store_on(prefix: &str) -> EtcdStore {
    store_batching(prefix, 1).await
}

/// A store that sends up to `batch_max` concurrent transactions as one etcd transaction.
async fn store_batching(prefix: &str, batch_max: usize) -> EtcdStore {
    EtcdStore::connect(
        EtcdOptions::new(&endpoints(), prefix)
            .unwrap()
            .with_batch_max(batch_max),
    )
    .await
    .expect("the test etcd cluster answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    conformance::run_all(|| async { store_on(&fresh_prefix()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_with_group_commit_conforms() {
    conformance::run_all(|| async { store_batching(&fresh_prefix(), 128).await }).await;
}

/// Concurrent transactions on disjoint keys share etcd transactions, each with its own
/// outcome; transactions on one key are never in one batch, so none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_each_transaction_on_its_own() {
    use shardflake_coordinator::store::{Txn, TxnOutcome};
    let s = Arc::new(store_batching(&fresh_prefix(), 128).await);
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k/{:03}", i % 16);
            let mut commits = 0u32;
            // Every task creates its key if absent; of each key's four tasks, one wins.
            match s
                .txn(
                    Txn::new()
                        .compare(&key, 0)
                        .put(&key, i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap()
            {
                TxnOutcome::Committed { .. } => commits += 1,
                TxnOutcome::Conflict {
                    key: k,
                    actual_version,
                } => {
                    assert_eq!(k, key);
                    assert!(actual_version > 0);
                }
            }
            commits
        }));
    }
    let mut commits = 0;
    for t in tasks {
        commits += t.await.unwrap();
    }
    assert_eq!(commits, 16, "one create per key");
    assert_eq!(s.scan("k/").await.unwrap().len(), 16);
    let stats = s.stats();
    assert_eq!(stats.txns, 64);
    assert!(
        stats.commits < stats.txns,
        "transactions shared etcd transactions: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_shared_by_two_coordinators_conforms() {
    // One coordinator sends each transaction alone, the other batches.
    conformance::run_shared(|| async {
        let prefix = fresh_prefix();
        let a: Arc<dyn KvStore> = Arc::new(store_on(&prefix).await);
        let b: Arc<dyn KvStore> = Arc::new(store_batching(&prefix, ETCD_BATCH_MAX).await);
        (a, b)
    })
    .await;
}

/// The store identity is one per prefix: coordinators on one prefix share it, another prefix
/// of the same etcd is another cluster, and a coordinator with another layout is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_identity_is_one_per_prefix() {
    let open = |prefix: String, layout: &'static str| async move {
        Coordinator::open(
            Arc::new(store_on(&prefix).await),
            Arc::new(ManualTime::new(1_800_000_000_000)),
            CoordinatorConfig::new(Layout::preset(layout).unwrap()),
        )
        .await
    };
    let p = fresh_prefix();
    let a = open(p.clone(), "default").await.unwrap();
    let b = open(p.clone(), "default").await.unwrap();
    assert_eq!(a.store_id(), b.store_id());
    let other = open(fresh_prefix(), "default").await.unwrap();
    assert_ne!(a.store_id(), other.store_id());
    let err = open(p, "twitter").await.unwrap_err();
    assert!(matches!(err, CoordError::LayoutMismatch { .. }), "{err}");
}

/// Keys outside the prefix are neither read nor written: two clusters share one etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_do_not_see_each_other() {
    use shardflake_coordinator::store::Txn;
    let (a, b) = (
        store_on(&fresh_prefix()).await,
        store_on(&fresh_prefix()).await,
    );
    a.txn(Txn::new().put("host/0001", b"a".to_vec()))
        .await
        .unwrap();
    assert_eq!(b.get("host/0001").await.unwrap(), None);
    assert!(b.scan("host/").await.unwrap().is_empty());
    assert_eq!(a.scan("").await.unwrap().len(), 1);
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let e = |eps: &[&str], prefix: &str| {
        let eps: Vec<String> = eps.iter().map(|s| s.to_string()).collect();
        EtcdOptions::new(&eps, prefix).unwrap_err().to_string()
    };
    assert!(e(&[], "/a/").contains("at least one endpoint"));
    assert!(e(&[" , "], "/a/").contains("at least one endpoint"));
    for bad in ["", "/", "a/", "/a"] {
        assert!(
            e(&["http://127.0.0.1:2379"], bad).contains("must start and end with '/'"),
            "{bad}"
        );
    }
    let ok = EtcdOptions::new(&["http://a:1,http://b:2".into()], "/x/").unwrap();
    assert_eq!(ok.endpoints, ["http://a:1", "http://b:2"]);
    assert_eq!(ok.batch_max, 1);
    assert_eq!(ok.clone().with_batch_max(0).batch_max, 1);
    assert_eq!(ok.with_batch_max(100_000).batch_max, ETCD_BATCH_MAX);
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error() {
    // A port nothing listens on (the etcd client retries inside its timeouts).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err =
        EtcdStore::connect(EtcdOptions::new(&[format!("http://127.0.0.1:{port}")], "/x/").unwrap())
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
