//! The namespace rules checked over any store: blocks fenced, disjoint and rising under
//! concurrent nodes (and two coordinators), returns taken only when safe and only once,
//! forecast-sized blocks, the routing table and the assignment.
//! [`crate::store::conformance::run_all`] and `run_shared` run these on every backend.

use std::sync::Arc;

use futures_util::StreamExt;
use shardflake::Layout;
use shardflake_proto::coord::{AcquireRequest, RenewRequest};
use shardflake_proto::ns::{
    NamespaceSpec, NsBlockGrant, NsBlockRequest, NsReturnRequest, NsUsage, NS_PER_NODE_MAX,
};

use super::{acquire_req, manual_coordinator};
use crate::store::KvStore;
use crate::{CoordError, Coordinator, CoordinatorConfig, ManualTime};

async fn coordinator(store: Arc<dyn KvStore>) -> (Coordinator, ManualTime) {
    let mut config = CoordinatorConfig::new(Layout::preset("default").unwrap());
    config.pool_size = config.pool_size.min(8);
    manual_coordinator(store, config).await
}

/// A node: its host id and token.
#[derive(Clone, Copy)]
struct Node {
    host_id: u64,
    token: u64,
}

async fn node(c: &Coordinator, name: &str) -> Node {
    let g = c
        .acquire(&AcquireRequest {
            secret: super::secret(),
            url: Some(format!("http://{name}.test:8080")),
            ..acquire_req(name, 60_000)
        })
        .await
        .unwrap();
    Node {
        host_id: u64::from(g.host_id),
        token: g.token,
    }
}

fn ask(n: Node, after: u64) -> NsBlockRequest {
    NsBlockRequest {
        secret: super::secret(),
        host_id: n.host_id,
        token: n.token,
        after,
        ..Default::default()
    }
}

fn values(g: &NsBlockGrant) -> impl Iterator<Item = u64> + '_ {
    (0..g.count).map(move |i| g.start + i * g.step)
}

fn spec(start: u64, step: u64, block_min: u64, block_max: u64) -> NamespaceSpec {
    NamespaceSpec {
        start: Some(start),
        step: Some(step),
        offset: None,
        block_min: Some(block_min),
        block_max: Some(block_max),
    }
}

/// Blocks of one namespace from several nodes, asked for concurrently: every value unique,
/// at or above `start` and on the namespace's step; each node's blocks rising; a retry after
/// a lost answer gets the same block; only a live lease's current token gets one.
pub async fn namespace_blocks_are_fenced_disjoint_and_rising(store: Arc<dyn KvStore>) {
    let check = "namespace_blocks_are_fenced_disjoint_and_rising";
    let (c, time) = coordinator(store).await;
    let c = Arc::new(c);
    let status = c
        .put_namespace("orders", &spec(1_000, 3, 10, 10))
        .await
        .unwrap();
    assert_eq!(
        (status.next, status.offset),
        (1_000, 1),
        "{check}: {status:?}"
    );
    let unknown = c.grant_ns_block("nope", &ask(node(&c, "x").await, 0)).await;
    assert!(
        matches!(unknown, Err(CoordError::UnknownNamespace { .. })),
        "{check}: {unknown:?}"
    );
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&c, &format!("n{i}")).await);
    }
    let mut tasks = Vec::new();
    for &n in &nodes {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut grants: Vec<NsBlockGrant> = Vec::new();
            let mut after = 0;
            for _ in 0..15 {
                let g = c.grant_ns_block("orders", &ask(n, after)).await.unwrap();
                after = g.end();
                grants.push(g);
            }
            grants
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let grants = t.await.unwrap();
        let mine: Vec<u64> = grants.iter().flat_map(values).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "{check}: a node's values rise"
        );
        all.extend(mine);
    }
    assert_eq!(all.len(), 3 * 15 * 10, "{check}");
    assert!(
        all.iter().all(|&v| v >= 1_000 && v % 3 == 1),
        "{check}: values on the step"
    );
    shardflake::check::check_ids(&all).assert_unique();
    // A retry whose answer was lost: the same block again, nothing new written.
    let n = nodes[0];
    let g1 = c.grant_ns_block("orders", &ask(n, 0)).await.unwrap();
    let last_end = g1.end();
    let held = c.grant_ns_block("orders", &ask(n, last_end)).await.unwrap();
    let again = c
        .grant_ns_block("orders", &ask(n, g1.start.saturating_sub(1)))
        .await
        .unwrap();
    assert_eq!(
        again, held,
        "{check}: a retry after a lost answer gets the same block"
    );
    // Fencing: a stale token, and an expired lease.
    let stale = c
        .grant_ns_block(
            "orders",
            &ask(
                Node {
                    token: n.token + 100,
                    ..n
                },
                0,
            ),
        )
        .await;
    assert!(
        matches!(stale, Err(CoordError::StaleToken { .. })),
        "{check}: {stale:?}"
    );
    time.advance_ms(61_000);
    let expired = c.grant_ns_block("orders", &ask(n, held.end())).await;
    assert!(
        matches!(expired, Err(CoordError::LeaseExpired { .. })),
        "{check}: {expired:?}"
    );
}

/// Two coordinators on one store grant blocks of one namespace to nodes asking through
/// either: no value twice.
pub async fn two_coordinators_grant_disjoint_namespace_blocks(
    a: Arc<dyn KvStore>,
    b: Arc<dyn KvStore>,
) {
    let check = "two_coordinators_grant_disjoint_namespace_blocks";
    let (ca, _) = coordinator(a).await;
    let (cb, _) = coordinator(b).await;
    let (ca, cb) = (Arc::new(ca), Arc::new(cb));
    ca.put_namespace("feed", &spec(1, 1, 7, 7)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let via = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        let n = node(&via, &format!("n{i}")).await;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut after = 0;
            for _ in 0..10 {
                let g = via.grant_ns_block("feed", &ask(n, after)).await.unwrap();
                after = g.end();
                out.extend(values(&g));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 4 * 10 * 7, "{check}");
    shardflake::check::check_ids(&all).assert_unique();
}

/// A return lowers the namespace's next value only when no later block was granted, only
/// once, and never below what the node may have issued.
pub async fn returns_take_back_only_an_unused_tail_once(store: Arc<dyn KvStore>) {
    let check = "returns_take_back_only_an_unused_tail_once";
    let (c, _) = coordinator(store).await;
    c.put_namespace("inv", &spec(1, 1, 100, 100)).await.unwrap();
    let (a, b) = (node(&c, "a").await, node(&c, "b").await);
    let ret = |n: Node, block_end: u64, unused_from: u64| NsReturnRequest {
        secret: super::secret(),
        host_id: n.host_id,
        token: n.token,
        block_end,
        unused_from,
    };
    let ga = c.grant_ns_block("inv", &ask(a, 0)).await.unwrap();
    let gb = c.grant_ns_block("inv", &ask(b, 0)).await.unwrap();
    assert_eq!((ga.start, gb.start), (1, 101), "{check}");
    // b's block came later: a's tail stays unused.
    let r = c
        .return_ns_block("inv", &ret(a, ga.end(), 51))
        .await
        .unwrap();
    assert_eq!(r.returned, 0, "{check}: a later block was granted");
    // A tail outside the caller's newest block is refused, naming the rule.
    let e = c
        .return_ns_block("inv", &ret(b, gb.end(), 50))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CoordError::ReturnRefused { .. }),
        "{check}: {e}"
    );
    // b's is the newest: issued 101..=130, the rest comes back.
    let r = c
        .return_ns_block("inv", &ret(b, gb.end(), 131))
        .await
        .unwrap();
    assert_eq!(r.returned, 70, "{check}");
    // A replay (its answer was lost) gets the same answer and changes nothing.
    let replay = c
        .return_ns_block("inv", &ret(b, gb.end(), 131))
        .await
        .unwrap();
    assert_eq!(
        replay.returned, 70,
        "{check}: a replay is answered the same"
    );
    assert_eq!(c.namespace("inv").await.unwrap().next, 131, "{check}");
    let next = c.grant_ns_block("inv", &ask(a, ga.end())).await.unwrap();
    assert_eq!(
        next.start, 131,
        "{check}: the next block starts at the first unused value"
    );
    // Contiguous blocks of one node: a return never reaches into the older one, whose
    // values the node may have issued (the review's reproduction: a return from the start
    // of the older block made the coordinator hand them out again).
    let next2 = c.grant_ns_block("inv", &ask(a, next.end())).await.unwrap();
    assert_eq!(next2.start, next.end(), "{check}");
    for (block_end, unused_from) in [
        (next2.end(), 140),
        (next2.end(), next.start),
        (next.end(), 140),
    ] {
        let e = c
            .return_ns_block("inv", &ret(a, block_end, unused_from))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CoordError::ReturnRefused { .. }),
            "{check}: {block_end} {unused_from}: {e}"
        );
    }
    let unused_from = next2.start + 5;
    let r = c
        .return_ns_block("inv", &ret(a, next2.end(), unused_from))
        .await
        .unwrap();
    assert_eq!(r.returned, next2.end() - unused_from, "{check}");
    let status = c.namespace("inv").await.unwrap();
    assert_eq!(
        (status.next, status.values_returned),
        (unused_from, 70 + next2.end() - unused_from),
        "{check}"
    );
    // A return ends the lease's use of the namespace: a block under the same token is
    // refused, so a replay of the return can never meet a new block with its bounds.
    let e = c.grant_ns_block("inv", &ask(a, 0)).await.unwrap_err();
    assert!(
        matches!(e, CoordError::NamespaceReturned { .. }),
        "{check}: {e}"
    );
    let replay = c
        .return_ns_block("inv", &ret(a, next2.end(), unused_from))
        .await
        .unwrap();
    assert_eq!(
        replay.returned,
        next2.end() - unused_from,
        "{check}: the same answer"
    );
    assert_eq!(
        c.namespace("inv").await.unwrap().next,
        unused_from,
        "{check}"
    );
    // A return made with another secret is refused: knowing the host id and the token
    // (both in `GET /v1/hosts`) is not enough.
    let d = node(&c, "d").await;
    let next3 = c.grant_ns_block("inv", &ask(d, 0)).await.unwrap();
    let stolen = NsReturnRequest {
        secret: shardflake_proto::coord::LeaseSecret::from_bytes([0x77; 16]),
        ..ret(d, next3.end(), next3.start)
    };
    let e = c.return_ns_block("inv", &stolen).await.unwrap_err();
    assert!(
        matches!(e, CoordError::SecretMismatch { .. }),
        "{check}: {e}"
    );
    assert_eq!(
        c.namespace("inv").await.unwrap().next,
        next3.end(),
        "{check}"
    );
    // A stale token may return nothing.
    let e = c
        .return_ns_block(
            "inv",
            &ret(
                Node {
                    token: a.token + 9,
                    ..a
                },
                1,
                1,
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CoordError::StaleToken { .. }), "{check}: {e}");
}

/// Consumption reported with renewals and block requests sizes the next block: a horizon of
/// forecast demand with headroom, within the namespace's bounds; the status shows forecast
/// against actual.
pub async fn usage_reports_size_blocks_from_the_forecast(store: Arc<dyn KvStore>) {
    let check = "usage_reports_size_blocks_from_the_forecast";
    let (c, _) = coordinator(store).await;
    c.put_namespace("clicks", &spec(1, 1, 1_000, 5_000_000))
        .await
        .unwrap();
    let n = node(&c, "a").await;
    let first = c.grant_ns_block("clicks", &ask(n, 0)).await.unwrap();
    assert_eq!(first.count, 1_000, "{check}: nothing known yet: block_min");
    for _ in 0..4 {
        let renew = RenewRequest {
            secret: super::secret(),
            token: n.token,
            namespaces: vec![NsUsage {
                name: "clicks".into(),
                used: 20_000,
                over_ms: 1_000,
            }],
            ..Default::default()
        };
        c.renew(n.host_id as u32, &renew).await.unwrap();
    }
    let g = c
        .grant_ns_block(
            "clicks",
            &NsBlockRequest {
                secret: super::secret(),
                used: 20_000,
                over_ms: 1_000,
                ..ask(n, first.end())
            },
        )
        .await
        .unwrap();
    // 20,000/s over the 20 s horizon with 1.25 headroom.
    assert_eq!(g.count, 500_000, "{check}");
    let status = c.namespace("clicks").await.unwrap();
    let me = &status.nodes[0];
    assert!(
        (me.forecast_per_s - 20_000.0).abs() < 1.0,
        "{check}: {me:?}"
    );
    assert_eq!(
        (me.last_forecast_per_s, me.last_actual_per_s),
        (20_000.0, 20_000.0),
        "{check}"
    );
    assert_eq!(me.last_block, 500_000, "{check}");
    // Malformed reports are refused before anything is written.
    let bad = RenewRequest {
        secret: super::secret(),
        token: n.token,
        namespaces: vec![NsUsage {
            name: "Bad Name".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = c.renew(n.host_id as u32, &bad).await.unwrap_err();
    assert!(matches!(e, CoordError::BadRequest(_)), "{check}: {e}");
}

/// A node serving as many namespaces as a node may ([`NS_PER_NODE_MAX`]) reports on each with
/// every renewal, and keeps its lease: the reports never make a renewal fail, whatever the
/// store's transaction limit; each reaches the node's forecaster or is counted as dropped.
pub async fn a_node_reporting_on_every_namespace_keeps_its_lease(store: Arc<dyn KvStore>) {
    let check = "a_node_reporting_on_every_namespace_keeps_its_lease";
    let (c, time) = coordinator(store).await;
    let names: Vec<String> = (0..NS_PER_NODE_MAX).map(|i| format!("ns-{i:04}")).collect();
    let c = &c;
    let n = node(c, "a").await;
    futures_util::stream::iter(&names)
        .for_each_concurrent(64, |name| async move {
            c.put_namespace(name, &NamespaceSpec::default())
                .await
                .unwrap();
            c.grant_ns_block(name, &ask(n, 0)).await.unwrap();
        })
        .await;
    let reports: Vec<NsUsage> = names
        .iter()
        .map(|name| NsUsage {
            name: name.clone(),
            used: 5_000,
            over_ms: 1_000,
        })
        .collect();
    for _ in 0..10 {
        time.advance_ms(1_000);
        let renewed = c
            .renew(
                n.host_id as u32,
                &RenewRequest {
                    secret: super::secret(),
                    token: n.token,
                    namespaces: reports.clone(),
                    ..Default::default()
                },
            )
            .await;
        assert!(renewed.is_ok(), "{check}: {renewed:?}");
    }
    // Every report is written or counted as dropped: written within the renewal's budget
    // (`USAGE_WRITE_BUDGET_MS` without a background writer), in order, so the first
    // namespaces' always are, however slow the store is under the rest of the suite.
    let (written, dropped) = (
        c.metrics().ns_usage_reports.get(),
        c.metrics().ns_usage_reports_dropped.get(),
    );
    assert_eq!(
        written + dropped,
        10 * NS_PER_NODE_MAX as u64,
        "{check}: every report is written or counted as dropped"
    );
    assert!(
        written >= 10 * crate::USAGE_REPORTS_PER_TXN as u64,
        "{check}: {written} written"
    );
    let status = c.namespace(&names[0]).await.unwrap();
    assert!(
        (status.nodes[0].forecast_per_s - 5_000.0).abs() < 1.0,
        "{check}: {}: {:?}",
        names[0],
        status.nodes[0]
    );
}

/// A raise moves `next` up to the first value of the progression at or above what was
/// asked, so every later block lies above it; it refuses to lower `next`, and the same raise
/// again changes nothing.
pub async fn raise_moves_next_up_and_never_down(store: Arc<dyn KvStore>) {
    let check = "raise_moves_next_up_and_never_down";
    let (c, _) = coordinator(store).await;
    c.put_namespace("orders", &spec(3, 10, 100, 100))
        .await
        .unwrap();
    let n = node(&c, "a").await;
    let first = c.grant_ns_block("orders", &ask(n, 0)).await.unwrap();
    assert_eq!((first.start, first.end()), (3, 1_003), "{check}");
    let raised = c.raise_namespace("orders", 5_000_000).await.unwrap();
    assert_eq!(raised.next, 5_000_003, "{check}: aligned to 3 modulo 10");
    let again = c.raise_namespace("orders", 5_000_000).await.unwrap();
    assert_eq!(
        again.next, 5_000_003,
        "{check}: the same raise changes nothing"
    );
    let e = c.raise_namespace("orders", 4_000_000).await.unwrap_err();
    assert!(
        matches!(
            e,
            CoordError::WouldLower {
                current: 5_000_003,
                asked: 4_000_000,
                ..
            }
        ),
        "{check}: {e}"
    );
    assert_eq!(
        c.namespace("orders").await.unwrap().next,
        5_000_003,
        "{check}"
    );
    let next = c
        .grant_ns_block("orders", &ask(n, first.end()))
        .await
        .unwrap();
    assert_eq!(
        next.start, 5_000_003,
        "{check}: blocks continue above the raise"
    );
    assert!(matches!(
        c.raise_namespace("nope", 1).await,
        Err(CoordError::UnknownNamespace { .. })
    ));
    assert!(matches!(
        c.raise_namespace("orders", u64::MAX).await,
        Err(CoordError::BadRequest(_))
    ));
}

/// A namespace whose blocks a live lease holds is deleted only with `force`; the answer
/// names the holders and the `next` a new namespace of that name must start at; afterwards
/// nothing of it is left, no block is granted, and its name can be created again.
pub async fn delete_is_refused_while_blocks_are_held_unless_forced(store: Arc<dyn KvStore>) {
    let check = "delete_is_refused_while_blocks_are_held_unless_forced";
    let (c, _) = coordinator(store.clone()).await;
    c.put_namespace("carts", &spec(1, 1, 500, 500))
        .await
        .unwrap();
    let n = node(&c, "a").await;
    c.grant_ns_block("carts", &ask(n, 0)).await.unwrap();
    let e = c.delete_namespace("carts", false).await.unwrap_err();
    match &e {
        CoordError::NamespaceBusy { held_by, next, .. } => {
            assert_eq!(
                (held_by.clone(), *next),
                (vec![n.host_id as u32], 501),
                "{check}"
            )
        }
        other => panic!("{check}: {other}"),
    }
    assert!(e.to_string().contains("force=true"), "{check}: {e}");
    assert_eq!(
        c.namespace("carts").await.unwrap().next,
        501,
        "{check}: unchanged"
    );
    let deleted = c.delete_namespace("carts", true).await.unwrap();
    assert_eq!(
        (deleted.next, deleted.held_by.clone()),
        (501, vec![n.host_id]),
        "{check}"
    );
    assert!(
        store.scan("nsuse/carts/").await.unwrap().is_empty(),
        "{check}: the use records are gone"
    );
    assert!(matches!(
        c.grant_ns_block("carts", &ask(n, 501)).await,
        Err(CoordError::UnknownNamespace { .. })
    ));
    assert!(matches!(
        c.delete_namespace("carts", true).await,
        Err(CoordError::UnknownNamespace { .. })
    ));
    // Created again above the old next: its values continue above every earlier one.
    c.put_namespace("carts", &spec(deleted.next, 1, 500, 500))
        .await
        .unwrap();
    let g = c.grant_ns_block("carts", &ask(n, 0)).await.unwrap();
    assert_eq!(g.start, 501, "{check}");
    // Once the holder is gone (released), no force is needed.
    c.release(
        n.host_id as u32,
        &shardflake_proto::coord::ReleaseRequest {
            secret: super::secret(),
            token: n.token,
        },
    )
    .await
    .unwrap();
    let d = c.delete_namespace("carts", false).await.unwrap();
    assert!(d.held_by.is_empty(), "{check}");
}

/// The routing table lists live nodes with their URLs; the assignment gives a namespace its
/// rendezvous primary, and replaces a node whose lease ended.
pub async fn routing_follows_live_nodes_and_the_assignment(store: Arc<dyn KvStore>) {
    let check = "routing_follows_live_nodes_and_the_assignment";
    let (c, time) = coordinator(store).await;
    c.put_namespace("chat", &NamespaceSpec::default())
        .await
        .unwrap();
    let (a, b) = (node(&c, "a").await, node(&c, "b").await);
    let t = c.routing().await.unwrap();
    let mut urls: Vec<_> = t.nodes.iter().map(|n| (n.host_id, n.url.clone())).collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            (a.host_id, "http://a.test:8080".into()),
            (b.host_id, "http://b.test:8080".into())
        ],
        "{check}"
    );
    assert_eq!(c.assign_namespaces().await.unwrap(), 1, "{check}");
    assert_eq!(c.assign_namespaces().await.unwrap(), 0, "{check}: stable");
    let serving = c.routing().await.unwrap().namespaces[0].serving.clone();
    let primary = shardflake_proto::ns::rendezvous_order("chat", &[a.host_id, b.host_id])[0];
    assert_eq!(serving, vec![primary], "{check}");
    // The primary's lease runs out while the other renews: the other takes over.
    let other = if primary == a.host_id { b } else { a };
    time.advance_ms(40_000);
    c.renew(
        other.host_id as u32,
        &RenewRequest {
            secret: super::secret(),
            token: other.token,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    time.advance_ms(30_000);
    assert_eq!(c.assign_namespaces().await.unwrap(), 1, "{check}");
    let t = c.routing().await.unwrap();
    assert_eq!(t.namespaces[0].serving, vec![other.host_id], "{check}");
    assert_eq!(t.nodes.len(), 1, "{check}: only live nodes are routed to");
}
