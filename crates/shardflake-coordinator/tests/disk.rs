//! A full disk under the embedded store costs availability only while it is full: the
//! store reopens its file when writes succeed again, `/readyz` says what is wrong meanwhile
//! and `/healthz` stays a liveness check; a file that cannot be reopened stops the service
//! with an error. The faults come from a redb storage backend that fails writes with
//! `ENOSPC` (or every access) on command, so no root and no real full disk are needed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth};
use shardflake_coordinator::store::{
    DiskFaults, KvStore, RedbOptions, RedbStore, StoreHealth, Txn, TxnOutcome, REOPEN_ATTEMPTS_MAX,
    REOPEN_BACKOFF_MAX,
};
use shardflake_coordinator::{Coordinator, CoordinatorConfig, ManualTime, RunError};
use shardflake_proto::coord::{LeaseGrant, LeaseSecret};
use tower::ServiceExt;

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, String) {
    let b = Request::builder().method(method).uri(uri);
    let req = match body {
        Some(j) => b
            .header("content-type", "application/json")
            .body(Body::from(j))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn config() -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    c.pool_size = 8;
    c
}

fn secret() -> String {
    LeaseSecret::from_bytes([7; 16]).expose().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_costs_availability_only_while_it_is_full() {
    shardflake::mutant::activate_from_env();
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(DiskFaults::default());
    let store = Arc::new(
        RedbStore::open_with_faults(
            dir.path().join("c.redb"),
            RedbOptions::default(),
            faults.clone(),
        )
        .unwrap(),
    );
    let time = ManualTime::new(1_800_000_000_000);
    let c = Arc::new(
        Coordinator::open(store.clone(), Arc::new(time.clone()), config())
            .await
            .unwrap(),
    );
    let app = app(AppState::new(c, Auth::Off));
    let acquire = format!(r#"{{"name":"a","secret":"{}","ttl_ms":60000}}"#, secret());
    let (status, body) = call(&app, "POST", "/v1/leases", Some(acquire)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grant: LeaseGrant = serde_json::from_str(&body).unwrap();
    let renew = format!(r#"{{"token":{},"secret":"{}"}}"#, grant.token, secret());
    let renew_uri = format!("/v1/leases/{}/renew", grant.host_id);
    assert_eq!(call(&app, "GET", "/readyz", None).await.0, StatusCode::OK);

    // The disk fills up: renewals fail, readiness says why, liveness holds.
    faults.set_full(true);
    let (status, body) = call(&app, "POST", &renew_uri, Some(renew.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    let (status, body) = call(&app, "GET", "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("store wedged"), "{body}");
    let (status, body) = call(&app, "GET", "/healthz", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a full disk is no reason to restart: {body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(store.health().await, StoreHealth::NotReady(_)),
        "still full: still not ready"
    );

    // Space is freed: the store reopens by itself and the same lease renews.
    faults.set_full(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = call(&app, "POST", &renew_uri, Some(renew.clone())).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover after space came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.reopens() >= 1, "the file was reopened");
    let (status, body) = call(&app, "GET", "/readyz", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    // What was durable before the fault is still there: the lease under the same token.
    let (status, body) = call(&app, "GET", "/v1/hosts", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(&format!("\"token\":{}", grant.token)),
        "{body}"
    );
}

/// Whether `GET /healthz` on `addr` answers 200.
async fn healthz_ok(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_that_cannot_be_reopened_stops_the_service_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(DiskFaults::default());
    let store: Arc<dyn KvStore> = Arc::new(
        RedbStore::open_with_faults(
            dir.path().join("c.redb"),
            RedbOptions::default(),
            faults.clone(),
        )
        .unwrap(),
    );
    let config = shardflake_coordinator::ServiceConfig {
        coordinator: config(),
        store: shardflake_coordinator::StoreConfig::Embedded {
            data_dir: dir.path().to_path_buf(),
            group_commit_max: 1,
        },
        auth: Auth::Off,
        tls: None,
        rate_limits: Default::default(),
        reload: shardflake_runtime::reload::Triggers {
            sighup: false,
            ..Default::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tokio::spawn(shardflake_coordinator::run_with_store(
        listener,
        config,
        store.clone(),
        std::future::pending(),
    ));
    // The service serves (its store opened) before the fault.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !healthz_ok(addr).await {
        assert!(Instant::now() < deadline, "the service serves");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A write fails, then the device is gone for good: every reopen fails.
    faults.set_full(true);
    faults.set_gone(true);
    let txn = shardflake_coordinator::store::Txn::new().put("x", b"1".to_vec());
    assert!(store.txn(txn).await.is_err());
    let stopped = tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("the service stops once the store cannot recover")
        .unwrap();
    match stopped {
        Err(RunError::StoreFailed(why)) => {
            assert!(why.contains("could not be reopened"), "{why}");
            assert!(why.contains(&REOPEN_ATTEMPTS_MAX.to_string()), "{why}");
        }
        other => panic!("expected StoreFailed, got {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}

/// The simulation's driver (`Driver::Inline`): each write commits on the caller, and a
/// reopen comes with the first call, read or write, after its backoff, on the caller's clock. A full disk
/// refuses writes and reads until it has room again; then the store serves everything it had
/// committed, and nothing it refused.
#[tokio::test]
async fn the_inline_driver_recovers_from_a_full_disk_on_its_own_clock() {
    shardflake::mutant::activate_from_env();
    let faults = Arc::new(DiskFaults::default());
    let now = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = now.clone();
    let store = RedbStore::open_in_memory(
        "disk",
        faults.clone(),
        RedbOptions::default(),
        Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)),
    )
    .unwrap();
    let put = |k: &str, v: &str| Txn::new().put(k, v.as_bytes().to_vec());
    assert!(matches!(
        store.txn(put("a", "1")).await,
        Ok(TxnOutcome::Committed { .. })
    ));

    faults.set_full(true);
    let err = store.txn(put("b", "2")).await.unwrap_err();
    assert!(err.to_string().contains("no storage space"), "{err}");
    assert!(matches!(store.health().await, StoreHealth::NotReady(_)));
    // Before the backoff has passed, nothing is tried: still refused, also with room.
    faults.set_full(false);
    assert!(store.txn(put("c", "3")).await.is_err());
    assert!(
        store.get("a").await.is_err(),
        "reads wait for the reopen too"
    );

    // The clock passes the backoff: the next call, a read here (a coordinator reads before
    // it writes), reopens; writes commit again.
    now.store(
        REOPEN_BACKOFF_MAX.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
    let outcome = store.txn(put("d", "4")).await;
    assert!(
        matches!(outcome, Ok(TxnOutcome::Committed { .. })),
        "the store takes writes again once the disk has room: {outcome:?}"
    );
    assert_eq!(store.health().await, StoreHealth::Ready);
    assert_eq!(store.reopens(), 1);
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
    assert_eq!(
        store.get("b").await.unwrap(),
        None,
        "a refused write is not there"
    );
    assert_eq!(store.get("d").await.unwrap().unwrap().value, b"4");
}
