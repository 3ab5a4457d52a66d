//! The store conformance suite on every backend, and the redb store's durability and
//! group commit.

use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::store::{
    conformance, KvStore, MemStore, RedbOptions, RedbStore, Txn, TxnOutcome,
};
use shardflake_coordinator::{Coordinator, CoordinatorConfig, ManualTime};
use shardflake_proto::coord::AcquireRequest;

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(|| async { MemStore::new() }).await;
}

/// One check of the suite alone: the one that catches mutant 12 (usage reports failing the
/// renewal), which `scripts/sim-mutants.sh` runs with the bug switched on
/// (`SHARDFLAKE_MUTANT`).
#[tokio::test]
async fn a_node_reporting_on_every_namespace_keeps_its_lease_on_the_memory_store() {
    shardflake::mutant::activate_from_env();
    shardflake_coordinator::testing::namespaces::a_node_reporting_on_every_namespace_keeps_its_lease(
        Arc::new(MemStore::new()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_shared_by_two_coordinators_conforms() {
    conformance::run_shared(|| async {
        let s: Arc<dyn KvStore> = Arc::new(MemStore::new());
        (s.clone(), s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_with_a_change_feed_conforms_shared_by_two_coordinators() {
    conformance::run_all(|| async { MemStore::shared() }).await;
    conformance::run_shared(|| async {
        let s: Arc<dyn KvStore> = Arc::new(MemStore::shared());
        assert!(
            s.changes().is_some(),
            "a shared memory store has a change feed"
        );
        (s.clone(), s)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_conforms() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = dirs.clone();
    conformance::run_all(move || {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("c.redb"), RedbOptions::default()).unwrap();
        d.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_without_group_commit_conforms() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = dirs.clone();
    conformance::run_all(move || {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open(dir.path().join("c.redb"), RedbOptions { batch_max: 1 }).unwrap();
        d.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_store_keeps_data_and_revisions_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    let TxnOutcome::Committed { revision } = store
        .txn(Txn::new().compare("k", 0).put("k", b"v".to_vec()))
        .await
        .unwrap()
    else {
        panic!("first write conflicts");
    };
    // A second open of the same file while the first is live is refused (file lock).
    assert!(RedbStore::open(&path, RedbOptions::default()).is_err());
    store.close().await;
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    let v = store.get("k").await.unwrap().unwrap();
    assert_eq!((v.value.as_slice(), v.version), (&b"v"[..], revision));
    let TxnOutcome::Committed { revision: next } =
        store.txn(Txn::new().put("other", vec![])).await.unwrap()
    else {
        panic!("conflict on an unconditional put");
    };
    assert!(next > revision, "revisions continue after a reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_across_coordinator_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut last = 0;
    for _ in 0..3 {
        let store = Arc::new(RedbStore::open(&path, RedbOptions::default()).unwrap());
        let c = Coordinator::open(
            store.clone(),
            Arc::new(ManualTime::new(1_800_000_000_000)),
            CoordinatorConfig::new(Layout::preset("default").unwrap()),
        )
        .await
        .unwrap();
        let g = c
            .acquire(&AcquireRequest {
                secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x5e; 16]),
                name: "n".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(g.token > last, "token {} after {last}", g.token);
        last = g.token;
        drop(c);
        Arc::try_unwrap(store).unwrap().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(RedbStore::open(dir.path().join("c.redb"), RedbOptions::default()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let out = s
                    .txn(Txn::new().put(format!("k/{t}/{i}"), vec![1]))
                    .await
                    .unwrap();
                assert!(matches!(out, TxnOutcome::Committed { .. }));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.txns, 320);
    // 32 writers each waiting for their commit: the writer must have grouped some of them.
    assert!(stats.commits < stats.txns, "{stats:?}");
    assert_eq!(store.scan("k/").await.unwrap().len(), 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_its_identity_across_restarts_and_refuses_another_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let open = |layout: &'static str| {
        let path = path.clone();
        async move {
            let store = Arc::new(RedbStore::open(&path, RedbOptions::default()).unwrap());
            let c = Coordinator::open(
                store.clone(),
                Arc::new(ManualTime::new(1_800_000_000_000)),
                CoordinatorConfig::new(Layout::preset(layout).unwrap()),
            )
            .await;
            let id = c
                .as_ref()
                .map(|c| c.store_id().to_string())
                .map_err(|e| e.to_string());
            drop(c);
            Arc::try_unwrap(store).ok().unwrap().close().await;
            id
        }
    };
    let first = open("twitter").await.unwrap();
    assert_eq!(
        open("twitter").await.unwrap(),
        first,
        "the id is written once"
    );
    let e = open("temporal").await.unwrap_err().to_string();
    assert!(
        e.contains(&first) && e.contains("twitter:") && e.contains("temporal:"),
        "{e}"
    );
}
