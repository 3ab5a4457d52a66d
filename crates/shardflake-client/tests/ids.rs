//! [`IdClient`] against stub nodes and a stub coordinator: failover without errors while a
//! node can serve, one clear error when none can, 4xx at once, namespace routing by the
//! routing table and by redirects, validity, the fast path and the blocking client. Every id
//! set goes through `shardflake::check`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shardflake::check::check_ids;
use shardflake_client::{BlockingIdClient, IdClient, IdError};
use shardflake_proto::ns::{RoutedNamespace, RoutedNode, RoutingTable};

use crate::stub::{StubCoordinator, StubNode};
use crate::support::dead_url;

const TOKEN: &str = "stub-token";

#[tokio::test]
async fn plain_ids_fail_over_past_dead_and_unavailable_nodes_without_an_error() {
    let dead = dead_url().await;
    let busy = StubNode::start(1 << 40).await;
    busy.state.unavailable.store(true, Ordering::SeqCst);
    let good = StubNode::start(2 << 40).await;
    let client = IdClient::builder()
        .nodes([dead.clone(), busy.url.clone(), good.url.clone()])
        .request_timeout(Duration::from_millis(500))
        .prefetch(10, 1_000)
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..300 {
        if i % 3 == 0 {
            ids.extend(client.next_ids(17).await.expect("a node can serve"));
        } else {
            ids.push(client.next_id().await.expect("a node can serve"));
        }
    }
    assert_eq!(ids.len(), 100 * 17 + 200);
    check_ids(&ids).assert_unique();
    assert!(
        ids.iter().all(|id| id >> 40 == 2),
        "only the good node served"
    );
    // The busy node recovers and the good one goes: the stream moves back without an error.
    busy.state.unavailable.store(false, Ordering::SeqCst);
    good.state.unavailable.store(true, Ordering::SeqCst);
    let more = client.next_ids(5_000).await.expect("the busy node is back");
    ids.extend(more);
    check_ids(&ids).assert_unique();
    assert!(busy.state.served("ids") > 0);
}

#[tokio::test]
async fn when_every_node_fails_the_error_names_each_node_and_its_failure() {
    let dead = dead_url().await;
    let busy = StubNode::start(0).await;
    busy.state.unavailable.store(true, Ordering::SeqCst);
    let client = IdClient::builder()
        .nodes([dead.clone(), busy.url.clone()])
        .request_timeout(Duration::from_millis(300))
        .call_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let e = client.next_id().await.unwrap_err();
    let IdError::Unavailable { failures, .. } = &e else {
        panic!("expected Unavailable, got {e}");
    };
    assert_eq!(failures.len(), 2, "{e}");
    let text = e.to_string();
    assert!(text.contains(&dead) && text.contains(&busy.url), "{text}");
    assert!(text.contains("503 lease_lost"), "{text}");
    assert_eq!(e.kind(), "unavailable");
    // The stream keeps trying in the background: the node's recovery is seen.
    busy.state.unavailable.store(false, Ordering::SeqCst);
    let id = client.next_id().await.expect("served after recovery");
    assert!(id > 0);
}

#[tokio::test]
async fn an_unknown_namespace_and_a_bad_name_are_refused_at_once() {
    let node = StubNode::start(0).await;
    let client = IdClient::builder()
        .nodes([node.url.clone()])
        .call_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let e = client.ns("nope").unwrap().next_id().await.unwrap_err();
    match &e {
        IdError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 404);
            assert!(message.contains("no namespace nope"), "{e}");
        }
        other => panic!("expected the node's 404, got {other}"),
    }
    assert!(matches!(
        client.ns("Bad/Name"),
        Err(IdError::InvalidNamespace(_))
    ));
    assert!(matches!(
        client.next_ids(0).await,
        Err(IdError::CountOutOfRange { asked: 0, .. })
    ));
}

#[tokio::test]
async fn a_namespace_goes_to_its_serving_node_from_the_routing_table() {
    let a = StubNode::start(1 << 40).await;
    let b = StubNode::start(2 << 40).await;
    b.state.namespaces.lock().unwrap().push("orders".into());
    a.state.namespaces.lock().unwrap().push("orders".into());
    let table = RoutingTable {
        nodes: vec![
            RoutedNode {
                host_id: 1,
                url: a.url.clone(),
            },
            RoutedNode {
                host_id: 2,
                url: b.url.clone(),
            },
        ],
        namespaces: vec![RoutedNamespace {
            name: "orders".into(),
            serving: vec![2],
        }],
    };
    let coordinator = StubCoordinator::start(TOKEN, table).await;
    let client = IdClient::builder()
        .coordinators([coordinator.url.clone()])
        .token(TOKEN)
        .build()
        .unwrap();
    let orders = client.ns("orders").unwrap();
    let ids = orders.next_ids(500).await.unwrap();
    check_ids(&ids).assert_unique();
    assert!(ids.iter().all(|id| id >> 40 == 2), "the serving node only");
    assert_eq!(a.state.served("ns"), 0);
    // Plain ids go to either node of the table.
    let plain = client.next_ids(100).await.unwrap();
    assert!(plain.iter().all(|id| matches!(id >> 40, 1 | 2)));
    // The serving node fails: the namespace fails over to the other node, no error.
    b.state.unavailable.store(true, Ordering::SeqCst);
    let more = orders
        .next_ids(20_000)
        .await
        .expect("failover to the other node");
    assert!(more.iter().any(|id| id >> 40 == 1));
    let mut all = ids;
    all.extend(more);
    check_ids(&all).assert_unique();
}

#[tokio::test]
async fn a_wrong_token_is_reported_with_the_coordinators_answer() {
    let coordinator = StubCoordinator::start(TOKEN, RoutingTable::default()).await;
    let client = IdClient::builder()
        .coordinators([coordinator.url.clone()])
        .token("wrong")
        .call_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let e = client.next_id().await.unwrap_err().to_string();
    assert!(e.contains("unauthorized"), "{e}");
    assert!(coordinator.requests.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_node_not_serving_the_namespace_redirects_to_one_that_does() {
    let serving = StubNode::start(5 << 40).await;
    serving
        .state
        .namespaces
        .lock()
        .unwrap()
        .push("users".into());
    let other = StubNode::start(6 << 40).await;
    *other.state.redirect_to.lock().unwrap() = Some(serving.url.clone());
    let client = IdClient::builder()
        .nodes([other.url.clone()])
        .build()
        .unwrap();
    let ids = client.ns("users").unwrap().next_ids(50).await.unwrap();
    assert_eq!(ids.len(), 50);
    assert!(ids.iter().all(|id| id >> 40 == 5));
    // A redirect to a node that is down fails over like the node itself.
    *other.state.redirect_to.lock().unwrap() = Some(dead_url().await);
    let client = IdClient::builder()
        .nodes([other.url.clone(), serving.url.clone()])
        .build()
        .unwrap();
    let ids = client.ns("users").unwrap().next_ids(50).await.unwrap();
    assert!(ids.iter().all(|id| id >> 40 == 5));
}

#[tokio::test]
async fn ids_older_than_the_validity_are_dropped_not_handed_out() {
    let node = StubNode::start(0).await;
    let client = IdClient::builder()
        .nodes([node.url.clone()])
        .request_timeout(Duration::from_millis(100))
        .validity(Duration::from_millis(300))
        .prefetch(100, 100)
        .build()
        .unwrap();
    let mut stream = client.stream();
    let first = stream.next_id().await.unwrap();
    assert_eq!(first, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The first batch (ids 1..=100, maybe 101..=200 prefetched) has expired; a new one is
    // fetched, above it.
    let next = stream.next_id().await.unwrap();
    assert!(next > 100, "{next}");
    assert!(client.stats().expired >= 99, "{:?}", client.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_streams_and_shared_calls_never_hand_out_an_id_twice() {
    let a = StubNode::start(1 << 40).await;
    let b = StubNode::start(2 << 40).await;
    let client = IdClient::builder()
        .nodes([a.url.clone(), b.url.clone()])
        .prefetch(1_000, 20_000)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            if t % 2 == 0 {
                let mut s = client.stream();
                for _ in 0..50_000 {
                    out.push(s.next_id().await.unwrap());
                }
            } else {
                for _ in 0..200 {
                    out.extend(client.next_ids(100).await.unwrap());
                }
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 2 * 50_000 + 2 * 20_000);
    check_ids(&all).assert_unique();
}

#[test]
fn the_blocking_client_works_without_a_runtime_of_the_callers() {
    // The stub node needs a runtime of its own, on another thread.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = rt.block_on(StubNode::start(0));
    node.state.namespaces.lock().unwrap().push("orders".into());
    let client = BlockingIdClient::build(IdClient::builder().nodes([node.url.clone()])).unwrap();
    let mut ids = vec![client.next_id().unwrap()];
    ids.extend(client.next_ids(10).unwrap());
    let mut stream = client.stream();
    for _ in 0..1_000 {
        ids.push(stream.next_id().unwrap());
    }
    check_ids(&ids).assert_unique();
    let orders = client.ns("orders").unwrap();
    assert_eq!(orders.next_ids(3).unwrap().len(), 3);
    drop(client);
    drop(rt);
}

#[tokio::test]
async fn a_routing_table_whose_nodes_all_fail_is_reloaded() {
    let dead = dead_url().await;
    let table = |url: &str| RoutingTable {
        nodes: vec![RoutedNode {
            host_id: 7,
            url: url.to_string(),
        }],
        namespaces: Vec::new(),
    };
    let coordinator = StubCoordinator::start(TOKEN, table(&dead)).await;
    let client = IdClient::builder()
        .coordinators([coordinator.url.clone()])
        .token(TOKEN)
        .routing_refresh(Duration::from_secs(600))
        .call_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let e = client.next_id().await.unwrap_err().to_string();
    assert!(e.contains(&dead), "{e}");
    // The node moved; the next failure reloads the table (at most once a second), long before
    // the periodic refresh, and the same call goes round the new table's nodes.
    let node = StubNode::start(0).await;
    *coordinator.table.lock().unwrap() = table(&node.url);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let id = client.next_id().await.expect("the new table's node serves");
    assert!(id > 0);
    assert!(coordinator.requests.load(Ordering::SeqCst) >= 2);
}
