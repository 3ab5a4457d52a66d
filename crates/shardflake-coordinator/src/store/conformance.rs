//! The conformance suite every [`KvStore`] backend must pass.
//!
//! A backend's tests call [`run_all`] with a factory that returns a fresh, empty store (for
//! etcd: a client on a fresh key prefix). The suite panics with the name of the failed check.
//! It covers the key-value contract here and, through [`crate::Coordinator`], the lease,
//! reservation and block rules on top of it ([`crate::testing::domain`]), so a backend that
//! passes can run a coordinator. Compiled only with the `testing` feature.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use shardflake_coordinator::store::{conformance, MemStore};
//! conformance::run_all(|| async { MemStore::new() }).await;
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;

use super::{KvStore, StoreError, Txn, TxnOutcome, GET_MANY_MAX, VALUE_BYTES_MAX};
use crate::testing::{adversary, domain, namespaces};

/// Runs every check, each on a store from `make_store`.
pub async fn run_all<S, F, Fut>(mut make_store: F)
where
    S: KvStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    absent_key_reads_none(&make_store().await).await;
    put_if_absent_then_conflict(&make_store().await).await;
    revisions_increase_and_version_keys(&make_store().await).await;
    failed_compare_writes_nothing(&make_store().await).await;
    delete_makes_key_absent(&make_store().await).await;
    scan_is_sorted_and_bounded_by_prefix(&make_store().await).await;
    get_many_reads_each_key_in_order(&make_store().await).await;
    limits_are_enforced(&make_store().await).await;
    concurrent_increments_lose_nothing(Arc::new(make_store().await)).await;
    domain::grant_renew_expire_takeover(Arc::new(make_store().await)).await;
    domain::repeated_acquire_answers_the_same_grant(Arc::new(make_store().await)).await;
    domain::every_call_under_a_lease_needs_its_secret(Arc::new(make_store().await)).await;
    domain::blocks_only_move_upwards(Arc::new(make_store().await)).await;
    domain::restarted_coordinator_treats_every_lease_as_live_for_one_ttl(Arc::new(
        make_store().await,
    ))
    .await;
    domain::wall_clock_steps_neither_expire_nor_extend_a_lease(Arc::new(make_store().await)).await;
    domain::ttl_and_host_limits_are_enforced(Arc::new(make_store().await)).await;
    domain::forecasts_follow_usage_and_history_records_predicted_against_actual(Arc::new(
        make_store().await,
    ))
    .await;
    namespaces::namespace_blocks_are_fenced_disjoint_and_rising(Arc::new(make_store().await)).await;
    namespaces::returns_take_back_only_an_unused_tail_once(Arc::new(make_store().await)).await;
    namespaces::usage_reports_size_blocks_from_the_forecast(Arc::new(make_store().await)).await;
    namespaces::routing_follows_live_nodes_and_the_assignment(Arc::new(make_store().await)).await;
    namespaces::a_node_reporting_on_every_namespace_keeps_its_lease(Arc::new(make_store().await))
        .await;
    namespaces::raise_moves_next_up_and_never_down(Arc::new(make_store().await)).await;
    namespaces::delete_is_refused_while_blocks_are_held_unless_forced(Arc::new(make_store().await))
        .await;
    // The property test runs random sequences on the in-memory store; every backend runs
    // the same seeded ones.
    for seed in 0..ADVERSARY_SEEDS {
        let ops = adversary::seeded_ops(seed, ADVERSARY_OPS);
        adversary::no_value_is_granted_twice(Arc::new(make_store().await), &ops).await;
    }
}

/// Seeded adversarial sequences every backend runs, and their length.
const ADVERSARY_SEEDS: u64 = 3;
const ADVERSARY_OPS: usize = 120;

/// The checks that need two handles on one store's state, as two coordinator processes
/// sharing it have: `make_pair` returns two handles on a fresh, empty state (the same
/// in-memory store twice; for etcd, two clients on one new prefix).
pub async fn run_shared<F, Fut>(mut make_pair: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Arc<dyn KvStore>, Arc<dyn KvStore>)>,
{
    let (a, b) = make_pair().await;
    domain::two_coordinators_grant_a_host_id_once(a, b).await;
    let (a, b) = make_pair().await;
    domain::standby_on_one_coordinator_takes_over_from_another(a, b).await;
    let (a, b) = make_pair().await;
    namespaces::two_coordinators_grant_disjoint_namespace_blocks(a, b).await;
}

/// `get_many` answers each key in the order asked, absent ones as `None`, with the versions
/// `get` reports; more than [`GET_MANY_MAX`] keys are refused.
pub async fn get_many_reads_each_key_in_order<S: KvStore>(s: &S) {
    let check = "get_many_reads_each_key_in_order";
    let rev = committed(
        s.txn(
            Txn::new()
                .put("m/b", b"2".to_vec())
                .put("m/a", b"1".to_vec()),
        )
        .await
        .unwrap(),
        check,
    );
    let keys: Vec<String> = ["m/b", "m/none", "m/a"].map(String::from).to_vec();
    let got = s.get_many(&keys).await.unwrap();
    let values: Vec<Option<(Vec<u8>, u64)>> = got
        .into_iter()
        .map(|v| v.map(|v| (v.value, v.version)))
        .collect();
    assert_eq!(
        values,
        vec![Some((b"2".to_vec(), rev)), None, Some((b"1".to_vec(), rev))],
        "{check}"
    );
    let many: Vec<String> = (0..=GET_MANY_MAX).map(|i| format!("m/{i}")).collect();
    assert!(
        matches!(s.get_many(&many).await, Err(StoreError::TooLarge { .. })),
        "{check}: more than GET_MANY_MAX keys"
    );
    assert!(s.get_many(&many[..GET_MANY_MAX]).await.is_ok(), "{check}");
}

fn committed(outcome: TxnOutcome, check: &str) -> u64 {
    match outcome {
        TxnOutcome::Committed { revision } => revision,
        other => panic!("{check}: expected a commit, got {other:?}"),
    }
}

/// `get` of a key never written is `None`; an empty scan is empty.
pub async fn absent_key_reads_none<S: KvStore>(s: &S) {
    assert_eq!(s.get("nope").await.unwrap(), None, "absent_key_reads_none");
    assert!(
        s.scan("nope/").await.unwrap().is_empty(),
        "absent_key_reads_none: scan"
    );
}

/// Compare-with-0 creates a key once; a second create conflicts and reports the version.
pub async fn put_if_absent_then_conflict<S: KvStore>(s: &S) {
    let check = "put_if_absent_then_conflict";
    let rev = committed(
        s.txn(Txn::new().compare("k", 0).put("k", b"one".to_vec()))
            .await
            .unwrap(),
        check,
    );
    let got = s.get("k").await.unwrap().expect(check);
    assert_eq!(
        (got.value.as_slice(), got.version),
        (&b"one"[..], rev),
        "{check}"
    );
    let again = s
        .txn(Txn::new().compare("k", 0).put("k", b"two".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        again,
        TxnOutcome::Conflict {
            key: "k".into(),
            actual_version: rev
        },
        "{check}"
    );
    assert_eq!(s.get("k").await.unwrap().unwrap().value, b"one", "{check}");
}

/// Every commit gets a larger revision, and the keys it writes carry it as their version.
pub async fn revisions_increase_and_version_keys<S: KvStore>(s: &S) {
    let check = "revisions_increase_and_version_keys";
    let mut last = 0;
    let mut version = 0;
    for i in 0..5u8 {
        let rev = committed(
            s.txn(
                Txn::new()
                    .compare("a", version)
                    .put("a", vec![i])
                    .put("b", vec![i]),
            )
            .await
            .unwrap(),
            check,
        );
        assert!(rev > last, "{check}: revision {rev} after {last}");
        last = rev;
        version = rev;
        assert_eq!(s.get("a").await.unwrap().unwrap().version, rev, "{check}");
        assert_eq!(s.get("b").await.unwrap().unwrap().version, rev, "{check}");
        // The store's revision is at least the last commit's (etcd's is the whole
        // cluster's, which other writers move too).
        assert!(s.revision().await.unwrap() >= rev, "{check}: revision()");
    }
    // A commit on another key also moves the revision on, as in etcd.
    let other = committed(s.txn(Txn::new().put("c", vec![])).await.unwrap(), check);
    assert!(other > last, "{check}");
    assert_eq!(s.get("a").await.unwrap().unwrap().version, last, "{check}");
}

/// A transaction whose second compare fails writes none of its ops.
pub async fn failed_compare_writes_nothing<S: KvStore>(s: &S) {
    let check = "failed_compare_writes_nothing";
    let rev = committed(
        s.txn(Txn::new().put("x", b"1".to_vec())).await.unwrap(),
        check,
    );
    let out = s
        .txn(
            Txn::new()
                .compare("x", rev)
                .compare("y", 12345)
                .put("x", b"2".to_vec())
                .put("z", b"2".to_vec()),
        )
        .await
        .unwrap();
    assert!(
        matches!(out, TxnOutcome::Conflict { ref key, actual_version: 0 } if key == "y"),
        "{check}: {out:?}"
    );
    assert_eq!(s.get("x").await.unwrap().unwrap().value, b"1", "{check}");
    assert_eq!(s.get("z").await.unwrap(), None, "{check}");
}

/// After a delete the key reads as absent and compare-with-0 succeeds again.
pub async fn delete_makes_key_absent<S: KvStore>(s: &S) {
    let check = "delete_makes_key_absent";
    let rev = committed(
        s.txn(Txn::new().put("d", b"1".to_vec())).await.unwrap(),
        check,
    );
    committed(
        s.txn(Txn::new().compare("d", rev).delete("d"))
            .await
            .unwrap(),
        check,
    );
    assert_eq!(s.get("d").await.unwrap(), None, "{check}");
    committed(
        s.txn(Txn::new().compare("d", 0).put("d", b"2".to_vec()))
            .await
            .unwrap(),
        check,
    );
}

/// A scan returns exactly the keys with the prefix, in ascending order.
pub async fn scan_is_sorted_and_bounded_by_prefix<S: KvStore>(s: &S) {
    let check = "scan_is_sorted_and_bounded_by_prefix";
    for k in [
        "host/0002",
        "host/0000",
        "host/0001",
        "hosts",
        "hos",
        "block/1",
    ] {
        committed(
            s.txn(Txn::new().put(k, k.as_bytes().to_vec()))
                .await
                .unwrap(),
            check,
        );
    }
    let keys: Vec<String> = s
        .scan("host/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.value, k.as_bytes(), "{check}");
            k
        })
        .collect();
    assert_eq!(keys, ["host/0000", "host/0001", "host/0002"], "{check}");
    assert_eq!(s.count("host/").await.unwrap(), 3, "{check}: count");
    assert_eq!(s.count("hos").await.unwrap(), 5, "{check}: count");
    assert_eq!(s.count("nothing/").await.unwrap(), 0, "{check}: count");
}

/// Oversized values are refused with `TooLarge` and nothing is written.
pub async fn limits_are_enforced<S: KvStore>(s: &S) {
    let check = "limits_are_enforced";
    let err = s
        .txn(Txn::new().put("big", vec![0; VALUE_BYTES_MAX + 1]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{check}: {err}");
    assert_eq!(s.get("big").await.unwrap(), None, "{check}");
}

/// Tasks that read, add one and compare-and-swap, retrying on conflict, lose no increment.
pub async fn concurrent_increments_lose_nothing<S: KvStore>(s: Arc<S>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..EACH {
                loop {
                    let cur = s.get("counter").await.unwrap();
                    let (n, version) = match &cur {
                        Some(v) => (
                            u64::from_be_bytes(v.value.as_slice().try_into().unwrap()),
                            v.version,
                        ),
                        None => (0, 0),
                    };
                    let out = s
                        .txn(
                            Txn::new()
                                .compare("counter", version)
                                .put("counter", (n + 1).to_be_bytes().to_vec()),
                        )
                        .await
                        .unwrap();
                    if matches!(out, TxnOutcome::Committed { .. }) {
                        break;
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let v = s.get("counter").await.unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(v.value.as_slice().try_into().unwrap()),
        TASKS * EACH,
        "concurrent_increments_lose_nothing"
    );
}
