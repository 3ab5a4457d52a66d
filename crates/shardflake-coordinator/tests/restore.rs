//! A store restored from a backup never leads to a repeated value: callers present the
//! highest generation they have seen, the restored store notices it is behind and refuses
//! to grant, and the operator's repair raises every bound above what was issued (what
//! callers presented while it was refused can only raise the operator's floors), never
//! lowering anything. The backup here is a copy of an in-memory store; `scripts/
//! restore-drill.sh` does the same with a copied redb file and an etcd snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use http_body_util::BodyExt;
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::testing::secret;
use shardflake_coordinator::{CoordError, Coordinator, CoordinatorConfig, ManualTime, TimeSource};
use shardflake_proto::auth::Scope;
use shardflake_proto::coord::{AcquireRequest, ReleaseRequest, RenewRequest, RepairRequest};
use shardflake_proto::generation::{GenerationStamp, GENERATION_HEADER};
use shardflake_proto::ns::{NamespaceSpec, NsBlockGrant, NsBlockRequest, NsHeld};
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;
const TOKEN: &str = "s3cret-cluster-token";

fn config() -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    c.pool_size = 8;
    c
}

async fn open(store: MemStore, time: &ManualTime) -> Coordinator {
    Coordinator::open(Arc::new(store), Arc::new(time.clone()), config())
        .await
        .unwrap()
}

/// What a client remembers: the highest stamp it was answered with.
#[derive(Default)]
struct Client(Option<GenerationStamp>);

impl Client {
    fn saw(&mut self, c: &Coordinator) {
        let s = c.generation_stamp();
        if self.0.as_ref().is_none_or(|o| s.generation > o.generation) {
            self.0 = Some(s);
        }
    }
}

fn values(g: &NsBlockGrant) -> Vec<u64> {
    (0..g.count).map(|i| g.start + i * g.step).collect()
}

fn ask(host_id: u32, token: u64, after: u64) -> NsBlockRequest {
    NsBlockRequest {
        host_id: u64::from(host_id),
        token,
        secret: secret(),
        after,
        ..Default::default()
    }
}

fn acquire(name: &str) -> AcquireRequest {
    AcquireRequest {
        name: name.into(),
        secret: secret(),
        ttl_ms: Some(60_000),
        reserve_ahead_ms: Some(5_000),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_restored_store_refuses_until_repaired_and_repeats_nothing() {
    let time = ManualTime::new(T0);
    let store = Arc::new(MemStore::new());
    let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config())
        .await
        .unwrap();
    let mut client = Client::default();
    let mut issued: Vec<u64> = Vec::new();
    c.put_namespace(
        "orders",
        &NamespaceSpec {
            block_min: Some(100),
            block_max: Some(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = c.acquire(&acquire("a")).await.unwrap();
    let g = c
        .grant_ns_block("orders", &ask(a.host_id, a.token, 0))
        .await
        .unwrap();
    issued.extend(values(&g));
    client.saw(&c);

    // The backup.
    let backup = store.copy();

    // After it: more blocks, a second node, a raised reservation.
    time.advance_ms(1_000);
    let g2 = c
        .grant_ns_block("orders", &ask(a.host_id, a.token, g.end()))
        .await
        .unwrap();
    issued.extend(values(&g2));
    let b = c.acquire(&acquire("b")).await.unwrap();
    let b_issued_until = b.reserved_until_ms;
    c.renew(
        a.host_id,
        &RenewRequest {
            token: a.token,
            secret: secret(),
            reserve_until_ms: Some(T0 + 6_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    client.saw(&c);
    let seen = client.0.clone().unwrap();
    drop(c);

    // The restore: a coordinator opens the backup. Until a caller says otherwise it cannot
    // know; the first caller with a memory tells it.
    time.advance_ms(1_000);
    let r = open(backup, &time).await;
    assert!(r.generation_stamp().generation < seen.generation);
    let e = r.check_generation(&seen).await.unwrap_err();
    assert!(
        matches!(e, CoordError::StoreRestored { seen: s, .. } if s == seen.generation),
        "{e}"
    );
    assert!(e.to_string().contains("shardflake repair"), "{e}");
    // Every grant is refused; what the refused node holds is kept as a floor.
    assert!(matches!(
        r.acquire(&acquire("c")).await,
        Err(CoordError::StoreRestored { .. })
    ));
    assert!(matches!(
        r.grant_ns_block("orders", &ask(a.host_id, a.token, g2.end()))
            .await,
        Err(CoordError::StoreRestored { .. })
    ));
    assert!(r.readiness().await.iter().any(|p| p.contains("restored")));
    // A stamp that was not minted by this store is refused as such.
    let forged = GenerationStamp {
        generation: seen.generation + 10,
        proof: "00".repeat(32),
    };
    assert!(matches!(
        r.check_generation(&forged).await,
        Err(CoordError::ForeignGeneration { .. })
    ));

    // The repair needs its floors.
    let e = r.repair(&RepairRequest::default()).await.unwrap_err();
    assert!(e.to_string().contains("time_at_least_ms"), "{e}");
    let e = r
        .repair(&RepairRequest {
            time_at_least_ms: Some(time.wall_ms()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("orders"), "{e}");
    // The operator's floor for `orders` is too low (150): what the node presented (the end
    // of the block it holds) raises it; nothing is lowered.
    let report = r
        .repair(&RepairRequest {
            time_at_least_ms: Some(time.wall_ms()),
            namespaces_at_least: BTreeMap::from([("orders".to_string(), 150)]),
            all_namespaces_at_least: None,
        })
        .await
        .unwrap();
    let orders = &report.namespaces[0];
    assert_eq!(orders.presented, g2.end(), "{report:?}");
    assert_eq!(orders.after, g2.end(), "{report:?}");
    assert!(orders.after >= orders.before);
    assert!(report.generation_after > seen.generation, "{report:?}");
    r.check_generation(&seen).await.unwrap();
    assert!(r.readiness().await.is_empty());

    // Grants resume above everything issued before and after the backup.
    let c2 = r.acquire(&acquire("c")).await.unwrap();
    assert!(
        c2.start_above_ms >= b_issued_until,
        "a host id granted after the backup is not reused below its bound: {c2:?}"
    );
    assert!(c2.token > b.token, "tokens do not repeat");
    let g3 = r
        .grant_ns_block("orders", &ask(c2.host_id, c2.token, 0))
        .await
        .unwrap();
    issued.extend(values(&g3));
    let mut sorted = issued.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        issued.len(),
        "no namespace value was granted twice"
    );
    // A second repair lowers nothing.
    let again = r
        .repair(&RepairRequest {
            time_at_least_ms: Some(T0),
            all_namespaces_at_least: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.namespaces[0].after, again.namespaces[0].before);
    assert!(again.generation_after >= report.generation_after);
}

/// A node that holds a block granted after the backup, and only renews while the store is
/// refused (it asks for no block in that window), presents the block with its renewal
/// retries, over HTTP: the repair raises the namespace above it however low the operator's
/// floor, and the block is never granted again. The simulation's `--weight restore=2` found
/// values served twice before: renewals presented no blocks, and the generation check
/// refused a node's requests before any handler could keep what they presented.
#[tokio::test]
async fn blocks_presented_with_renewals_while_refused_are_floors_for_the_repair() {
    let time = ManualTime::new(T0);
    let store = Arc::new(MemStore::new());
    let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config())
        .await
        .unwrap();
    let mut client = Client::default();
    c.put_namespace(
        "orders",
        &NamespaceSpec {
            block_min: Some(100),
            block_max: Some(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.put_namespace("users", &NamespaceSpec::default())
        .await
        .unwrap();
    let a = c.acquire(&acquire("a")).await.unwrap();
    let g = c
        .grant_ns_block("orders", &ask(a.host_id, a.token, 0))
        .await
        .unwrap();
    let backup = store.copy();
    time.advance_ms(1_000);
    let held = c
        .grant_ns_block("orders", &ask(a.host_id, a.token, g.end()))
        .await
        .unwrap();
    // Months of writes after the backup: the restored store is far behind what nodes saw.
    for i in 0..20 {
        c.renew(
            a.host_id,
            &RenewRequest {
                token: a.token,
                secret: secret(),
                reserve_until_ms: Some(T0 + 6_000 + i),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    client.saw(&c);
    let seen = client.0.clone().unwrap();
    drop(c);

    time.advance_ms(1_000);
    let r = Arc::new(open(backup, &time).await);
    let app = app(AppState::new(
        r.clone(),
        Auth::tokens(&[(Scope::Node, TOKEN)]).unwrap(),
    ));
    // Over HTTP, as a node: with its token and the highest stamp it has seen.
    let post = |path: String, body: String| {
        let app = app.clone();
        let seen = seen.to_string();
        async move {
            let req = axum::http::Request::builder()
                .method("POST")
                .uri(path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header(GENERATION_HEADER, seen)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).to_string())
        }
    };
    let renew = |ns_held: Vec<NsHeld>| {
        serde_json::to_string(&RenewRequest {
            token: a.token,
            secret: secret(),
            reserve_until_ms: Some(T0 + 6_000),
            ns_held,
            ..Default::default()
        })
        .unwrap()
    };
    let renew_path = format!("/v1/leases/{}/renew", a.host_id);
    // A plain renewal, then its retry presenting the held block: both refused, the first
    // one noticing the restore.
    for ns_held in [
        vec![],
        vec![NsHeld {
            name: "orders".into(),
            end: held.end(),
        }],
    ] {
        let (status, body) = post(renew_path.clone(), renew(ns_held)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("store_restored"), "{body}");
    }
    // A caller with the cluster's token but not the lease's secret presents far more: it is
    // refused like the others, and what it presented raises nothing.
    let lie = serde_json::to_string(&RenewRequest {
        token: a.token,
        secret: shardflake_proto::secret::LeaseSecret::from_bytes([0x11; 16]),
        reserve_until_ms: Some(T0 + 10 * 86_400_000),
        ns_held: vec![NsHeld {
            name: "orders".into(),
            end: held.end() + 1_000_000,
        }],
        ..Default::default()
    })
    .unwrap();
    let (status, body) = post(renew_path.clone(), lie).await;
    assert_eq!(status, 503, "{body}");
    // Every other write is refused too.
    let release = serde_json::to_string(&ReleaseRequest {
        token: a.token,
        secret: secret(),
    })
    .unwrap();
    let (status, body) = post(format!("/v1/leases/{}/release", a.host_id), release).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_restored"), "{body}");
    // A malformed presentation is refused as such, and raises nothing.
    let (status, body) = post(
        renew_path.clone(),
        renew(vec![NsHeld {
            name: "Not A Name".into(),
            end: u64::MAX,
        }]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        renew_path.clone(),
        renew(vec![
            NsHeld::default();
            shardflake_proto::ns::NS_PER_NODE_MAX + 1
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("held namespace blocks"), "{body}");

    let report = r
        .repair(&RepairRequest {
            time_at_least_ms: Some(time.wall_ms()),
            all_namespaces_at_least: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let orders = report
        .namespaces
        .iter()
        .find(|n| n.name == "orders")
        .unwrap();
    assert_eq!(
        orders.presented,
        held.end(),
        "the holder's block, not the liar's: {report:?}"
    );
    assert!(orders.after >= held.end(), "{report:?}");
    let users = report
        .namespaces
        .iter()
        .find(|n| n.name == "users")
        .unwrap();
    assert_eq!(
        users.presented, 0,
        "nothing held, nothing presented: {report:?}"
    );

    let b = r.acquire(&acquire("b")).await.unwrap();
    let fresh = r
        .grant_ns_block("orders", &ask(b.host_id, b.token, 0))
        .await
        .unwrap();
    assert!(
        fresh.start >= held.end(),
        "the held block {held:?} is not granted again: {fresh:?}"
    );
    // The liar's bound was not kept: host id a's lease is granted again without waiting ten
    // days.
    time.advance_ms(120_000);
    let again = r
        .acquire(&AcquireRequest {
            prefer_host_id: Some(a.host_id),
            ..acquire("a2")
        })
        .await
        .unwrap();
    assert_eq!(again.host_id, a.host_id);
    assert!(
        again.start_above_ms < T0 + 86_400_000,
        "a bound presented with a made-up secret was kept: {again:?}"
    );
}

/// A store that goes back under a running coordinator (an etcd restored from a snapshot
/// while the coordinator kept its connection) is noticed at the next commit, whose grant
/// is not answered.
#[tokio::test]
async fn a_commit_below_a_revision_seen_is_not_answered() {
    use shardflake_coordinator::store::{
        BoxFuture, KvStore, StoreError, Txn, TxnOutcome, Versioned,
    };
    use std::sync::Mutex;

    /// A store whose content can be swapped for a backup while a coordinator uses it.
    #[derive(Debug)]
    struct Swappable(Mutex<Arc<MemStore>>);
    impl Swappable {
        fn now(&self) -> Arc<MemStore> {
            self.0.lock().unwrap().clone()
        }
    }
    impl KvStore for Swappable {
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
            Box::pin(async move { self.now().get(key).await })
        }
        fn scan<'a>(
            &'a self,
            prefix: &'a str,
        ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
            Box::pin(async move { self.now().scan(prefix).await })
        }
        fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
            Box::pin(async move { self.now().txn(txn).await })
        }
        fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
            Box::pin(async move { self.now().revision().await })
        }
    }

    let time = ManualTime::new(T0);
    let first = Arc::new(MemStore::new());
    let swappable = Arc::new(Swappable(Mutex::new(first.clone())));
    let c = Coordinator::open(swappable.clone(), Arc::new(time.clone()), config())
        .await
        .unwrap();
    c.put_namespace("orders", &NamespaceSpec::default())
        .await
        .unwrap();
    let backup = Arc::new(first.copy());
    let a = c.acquire(&acquire("a")).await.unwrap();
    c.grant_ns_block("orders", &ask(a.host_id, a.token, 0))
        .await
        .unwrap();
    c.grant_ns_block("orders", &ask(a.host_id, a.token, 2_000_000_000))
        .await
        .unwrap();
    *swappable.0.lock().unwrap() = backup;
    let b = c.acquire(&acquire("b")).await;
    assert!(
        matches!(b, Err(CoordError::StoreRestored { .. })),
        "a grant committed into a store that went back is not answered: {b:?}"
    );
    assert!(matches!(
        c.acquire(&acquire("c")).await,
        Err(CoordError::StoreRestored { .. })
    ));
}

/// A store backed up after lease `a`, two more leases granted (the last, `b`), then the
/// backup opened a second later: the clock, the restored coordinator, `a`, `b`, and the
/// highest stamp a caller saw before the restore.
async fn restored_after_two_grants() -> (
    ManualTime,
    Coordinator,
    shardflake_proto::coord::LeaseGrant,
    shardflake_proto::coord::LeaseGrant,
    GenerationStamp,
) {
    let time = ManualTime::new(T0);
    let store = Arc::new(MemStore::new());
    let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config())
        .await
        .unwrap();
    let mut client = Client::default();
    let a = c.acquire(&acquire("a")).await.unwrap();
    client.saw(&c);
    let backup = store.copy();
    time.advance_ms(1_000);
    let _ = c.acquire(&acquire("b0")).await.unwrap();
    let b = c.acquire(&acquire("b")).await.unwrap();
    client.saw(&c);
    let seen = client.0.clone().unwrap();
    drop(c);

    time.advance_ms(1_000);
    let r = open(backup, &time).await;
    (time, r, a, b, seen)
}

/// Regression (the simulation's `--weight restore=2`, seed 27): a grant the restored store
/// made before it noticed it was behind (the caller was then refused) stayed in the store
/// with its request id, and the same caller's retry after the repair was answered with it as
/// a repeat: a token below the repair's and a start below its floor. A repair makes every
/// later acquire a new grant.
#[tokio::test]
async fn an_acquire_granted_before_the_restore_was_noticed_is_not_repeated_after_the_repair() {
    let (time, r, a, b, seen) = restored_after_two_grants().await;
    // Before any caller tells it (a caller whose retry reaches it first), the restored
    // store grants: a token it granted before.
    let retried = AcquireRequest {
        request_id: Some("0192f2d6-retried-acquire".into()),
        ..acquire("n")
    };
    let early = r.acquire(&retried).await.unwrap();
    assert!(
        early.token <= b.token,
        "the restored store reuses tokens: {early:?}"
    );
    r.check_generation(&seen).await.unwrap_err();
    let report = r
        .repair(&RepairRequest {
            time_at_least_ms: Some(time.wall_ms()),
            all_namespaces_at_least: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    // The caller never had the early grant (it was refused); its retry after the repair.
    let later = r.acquire(&retried).await.unwrap();
    assert!(
        later.token > report.token_after.max(b.token),
        "a grant from before the repair answered again: {later:?} (repair {report:?})"
    );
    assert!(
        later.start_above_ms >= time.wall_ms(),
        "the grant starts below the repair's floor: {later:?}"
    );
    assert!(later.start_above_ms >= a.reserved_until_ms.max(b.reserved_until_ms));
}

/// Regression (the simulation's `--weight restore=2`, seeds 11, 14, 27 and 89 of 1–100): a
/// holder whose clock ran an hour fast asked, while the store was refused, for a reservation
/// an hour ahead; the repair took the ask as a floor, and the host id was out of reach for an
/// hour. No coordinator grants a reservation further ahead of its clock than the look-ahead
/// limit, so that is all a presented bound can raise a floor to (the operator's time floor
/// covers the coordinators' clock error).
#[tokio::test]
async fn a_far_ask_presented_while_refused_does_not_push_a_host_id_out_of_reach() {
    use shardflake_proto::coord::ReservationRequest;
    let (time, r, a, _b, seen) = restored_after_two_grants().await;
    r.check_generation(&seen).await.unwrap_err();
    let ask = ReservationRequest {
        token: a.token,
        secret: secret(),
        until_ms: time.wall_ms() + 3_600_000,
    };
    assert!(r.extend_reservation(a.host_id, &ask).await.is_err());
    r.repair(&RepairRequest {
        time_at_least_ms: Some(time.wall_ms()),
        all_namespaces_at_least: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    // The lease runs out (a TTL from when this coordinator first sees its record as it
    // stands); its holder, or another, takes the host id again.
    let _ = r.hosts().await.unwrap();
    time.advance_ms(61_000);
    let _ = r.hosts().await.unwrap();
    time.advance_ms(61_000);
    let again = r
        .acquire(&AcquireRequest {
            host_id: Some(a.host_id),
            ..acquire("a")
        })
        .await
        .unwrap();
    let reachable = time.wall_ms() + config().reservation_ahead_ms_max;
    assert!(
        again.start_above_ms <= reachable,
        "host id {} starts {} ms ahead of the clock",
        a.host_id,
        again.start_above_ms - time.wall_ms()
    );
}
