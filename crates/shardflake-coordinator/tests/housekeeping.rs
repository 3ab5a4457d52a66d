//! Records safety no longer needs are deleted, and only those: temporal block records of
//! shards older than the current one minus `SHARDS_KEPT` (after the host's floor is raised,
//! so that no block of a retired shard is granted again), and the namespace use records of
//! released leases.

use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::testing::secret;
use shardflake_coordinator::{Collected, Coordinator, CoordinatorConfig, ManualTime, SHARDS_KEPT};
use shardflake_proto::coord::{AcquireRequest, BlockRequest, ReleaseRequest, RenewRequest};
use shardflake_proto::ns::{NamespaceSpec, NsBlockRequest};

const T0: u64 = 1_800_000_000_000;

async fn open(store: Arc<MemStore>, layout: Layout, time: &ManualTime) -> Coordinator {
    let mut config = CoordinatorConfig::new(layout);
    config.pool_size = 8;
    Coordinator::open(store, Arc::new(time.clone()), config)
        .await
        .unwrap()
}

fn lease(name: &str) -> AcquireRequest {
    AcquireRequest {
        name: name.into(),
        secret: secret(),
        ttl_ms: Some(60_000),
        ..Default::default()
    }
}

#[tokio::test]
async fn old_shards_block_records_go_and_their_shards_are_retired() {
    let store = Arc::new(MemStore::new());
    let time = ManualTime::new(T0);
    let layout = Layout::from_spec("temporal:granularity=5s").unwrap();
    let c = open(store.clone(), layout.clone(), &time).await;
    let g = c.acquire(&lease("a")).await.unwrap();
    let first = layout.tick_of(T0).unwrap();
    let block = |shard: u64| BlockRequest {
        host_id: g.host_id as u32,
        token: g.token,
        secret: secret(),
        shard,
        after_counter: 0,
    };
    for i in 0..5 {
        c.grant_block(&block(first + i)).await.unwrap();
        time.advance_ms(5_000);
        c.renew(
            g.host_id as u32,
            &RenewRequest {
                token: g.token,
                secret: secret(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(store.count("block/").await.unwrap(), 5);
    let current = layout.tick_of(T0 + 25_000).unwrap();
    assert_eq!(current, first + 5);
    let done = c.collect_garbage().await.unwrap();
    // Shards below current - SHARDS_KEPT go: first .. first + 2.
    let gone = current - SHARDS_KEPT - first;
    assert_eq!(
        done,
        Collected {
            block_records: gone,
            use_records: 0,
            floors_raised: 1
        }
    );
    assert_eq!(store.count("block/").await.unwrap() as u64, 5 - gone);
    // A block of a retired shard is refused rather than granted again from zero.
    let e = c.grant_block(&block(first)).await.unwrap_err();
    assert_eq!(e.code().as_str(), "shard_retired", "{e}");
    // A kept shard is answered as before (the same block again).
    c.grant_block(&block(current - SHARDS_KEPT)).await.unwrap();
    // Nothing more to delete.
    assert_eq!(c.collect_garbage().await.unwrap(), Collected::default());
    // A later holder of the host id inherits the floor.
    c.release(
        g.host_id as u32,
        &ReleaseRequest {
            token: g.token,
            secret: secret(),
        },
    )
    .await
    .unwrap();
    let again = c
        .acquire(&AcquireRequest {
            host_id: Some(g.host_id as u32),
            ..lease("b")
        })
        .await
        .unwrap();
    let e = c
        .grant_block(&BlockRequest {
            token: again.token,
            ..block(first + 1)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code().as_str(), "shard_retired", "{e}");
}

#[tokio::test]
async fn use_records_of_released_leases_go_and_live_ones_stay() {
    let store = Arc::new(MemStore::new());
    let time = ManualTime::new(T0);
    let c = open(store.clone(), Layout::preset("twitter").unwrap(), &time).await;
    c.put_namespace("orders", &NamespaceSpec::default())
        .await
        .unwrap();
    let a = c.acquire(&lease("a")).await.unwrap();
    let b = c.acquire(&lease("b")).await.unwrap();
    for g in [&a, &b] {
        c.grant_ns_block(
            "orders",
            &NsBlockRequest {
                host_id: u64::from(g.host_id),
                token: g.token,
                secret: secret(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(store.count("nsuse/").await.unwrap(), 2);
    c.release(
        a.host_id as u32,
        &ReleaseRequest {
            token: a.token,
            secret: secret(),
        },
    )
    .await
    .unwrap();
    let done = c.collect_garbage().await.unwrap();
    assert_eq!(done.use_records, 1);
    let left = store.scan("nsuse/").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(
        left[0].0.ends_with(&format!("{:010}", b.host_id)),
        "{left:?}"
    );
    assert_eq!(c.collect_garbage().await.unwrap(), Collected::default());
}
