//! The etcd backend against a real etcd cluster: the store conformance suite unchanged, the
//! coordinator's domain checks (one test body per backend), and two coordinators sharing one
//! prefix. Built with the `etcd` feature; the cluster's client URLs come from
//! `SHARDFLAKE_TEST_ETCD` (scripts/test.sh starts a 3-member cluster on loopback and sets
//! it). Without it these tests fail rather than pass unchecked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::store::{conformance, EtcdOptions, EtcdStore, KvStore};
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
    EtcdStore::connect(EtcdOptions::new(&endpoints(), prefix).unwrap())
        .await
        .expect("the test etcd cluster answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    conformance::run_all(|| async { store_on(&fresh_prefix()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_shared_by_two_coordinators_conforms() {
    conformance::run_shared(|| async {
        let prefix = fresh_prefix();
        let a: Arc<dyn KvStore> = Arc::new(store_on(&prefix).await);
        let b: Arc<dyn KvStore> = Arc::new(store_on(&prefix).await);
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
