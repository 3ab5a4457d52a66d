//! The HTTP API through `tower::ServiceExt::oneshot`: auth, errors, limits.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth, RateLimits, BODY_BYTES_MAX};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::{Coordinator, CoordinatorConfig, ManualTime};
use shardflake_proto::auth::Scope;
use shardflake_proto::coord::{HostsResponse, LeaseGrant, RenewResponse};
use shardflake_proto::ErrorBody;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-cluster-token";
const READ_TOKEN: &str = "read-only-token-0123";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// The credentials of these tests: a node, a read and an admin credential.
fn auth() -> Auth {
    Auth::tokens(&[
        (Scope::Node, TOKEN),
        (Scope::Read, READ_TOKEN),
        (Scope::Admin, ADMIN_TOKEN),
    ])
    .unwrap()
}

async fn router(pool: u32) -> (axum::Router, ManualTime) {
    let time = ManualTime::new(1_800_000_000_000);
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = pool;
    let c = Arc::new(
        Coordinator::open(Arc::new(MemStore::new()), Arc::new(time.clone()), config)
            .await
            .unwrap(),
    );
    (app(AppState::new(c, auth())), time)
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = auth {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(j) => b
            .header("content-type", "application/json")
            .body(Body::from(j.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)))
        .error
        .code
        .as_str()
        .to_string()
}

#[tokio::test]
async fn healthz_needs_no_token_and_everything_else_does() {
    let (app, _) = router(4).await;
    let (s, b) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"ok\n"[..]));
    for (method, uri, body) in [
        (
            "POST",
            "/v1/leases",
            Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"a"}"#),
        ),
        ("GET", "/v1/hosts", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/blocks", Some("{}")),
        ("GET", "/nope", None),
    ] {
        let (s, b) = call(&app, method, uri, None, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(error_code(&b), "unauthorized");
        let (s, b) = call(&app, method, uri, Some("wrong-token"), body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(error_code(&b), "unauthorized");
    }
}

#[tokio::test]
async fn lease_lifecycle_over_http() {
    let (app, time) = router(2).await;
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"a","ttl_ms":1000,"reserve_ahead_ms":2000}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let a: LeaseGrant = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (a.host_id, a.layout_spec, a.pool_size),
        (0, Layout::preset("twitter").unwrap().spec(), 2)
    );
    assert_eq!(a.reserved_until_ms, time_now(&time) + 2_000);
    let renew = format!(
        r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":{},"reserve_until_ms":{}}}"#,
        a.token,
        time_now(&time) + 3_000
    );
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases/0/renew",
        Some(TOKEN),
        Some(&renew),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r: RenewResponse = serde_json::from_slice(&b).unwrap();
    // More than half of the look-ahead asked for is left: the bound stays, and the
    // renewal writes only its heartbeat.
    assert_eq!(r.reserved_until_ms, time_now(&time) + 2_000);
    let renew = format!(
        r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":{},"reserve_until_ms":{}}}"#,
        a.token,
        time_now(&time) + 5_000
    );
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases/0/renew",
        Some(TOKEN),
        Some(&renew),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r: RenewResponse = serde_json::from_slice(&b).unwrap();
    assert_eq!(r.reserved_until_ms, time_now(&time) + 5_000);
    // Fill the pool, then a third acquire is a clear 409.
    call(
        &app,
        "POST",
        "/v1/leases",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"b"}"#),
    )
    .await;
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"c"}"#),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::CONFLICT, "pool_exhausted")
    );
    // A stale token is refused.
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases/0/reservation",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":999,"until_ms":1}"#),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::CONFLICT, "stale_token")
    );
    // Too far ahead: clamped to the stated limit, not refused.
    let far = format!(
        r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":{},"until_ms":{}}}"#,
        a.token,
        time_now(&time) + 3_600_000
    );
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases/0/reservation",
        Some(TOKEN),
        Some(&far),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let clamped: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        clamped["reserved_until_ms"].as_u64(),
        Some(time_now(&time) + a.limits.reservation_ahead_ms_max)
    );
    // Expired: renewals are refused, the id can be taken over above the bound.
    time.advance_ms(1_000);
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases/0/renew",
        Some(TOKEN),
        Some(&renew),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::CONFLICT, "lease_expired")
    );
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"s","host_id":0}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let s2: LeaseGrant = serde_json::from_slice(&b).unwrap();
    // The takeover starts above the highest bound persisted: the clamped extension.
    assert!(clamped["reserved_until_ms"].as_u64().unwrap() > r.reserved_until_ms);
    assert_eq!(
        Some(s2.start_above_ms),
        clamped["reserved_until_ms"].as_u64()
    );
    // Status shows both hosts.
    let (s, b) = call(&app, "GET", "/v1/hosts", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    let hosts: HostsResponse = serde_json::from_slice(&b).unwrap();
    assert_eq!(hosts.hosts.len(), 2);
    assert_eq!(hosts.hosts[0].holder, "s");
    // Release, then blocks are refused on a non-temporal layout.
    let rel = format!(
        r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":{}}}"#,
        s2.token
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/leases/0/release",
        Some(TOKEN),
        Some(&rel),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let blk = r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","host_id":0,"token":1,"shard":0,"after_counter":0}"#;
    let (s, b) = call(&app, "POST", "/v1/blocks", Some(TOKEN), Some(blk)).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::BAD_REQUEST, "not_temporal")
    );
    let (s, b) = call(&app, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains("shardflake_coordinator_grants_total 3"),
        "{text}"
    );
    assert!(
        text.contains("shardflake_coordinator_releases_total 1"),
        "{text}"
    );
    // Errors are counted by their code: the three 409s of this test, each by name.
    for code in ["stale_token", "lease_expired", "pool_exhausted"] {
        assert!(
            text.contains(&format!(
                "shardflake_coordinator_http_errors_total{{code=\"{code}\"}} 1"
            )),
            "{code}: {text}"
        );
    }
}

fn time_now(t: &ManualTime) -> u64 {
    use shardflake_coordinator::TimeSource;
    t.wall_ms()
}

#[tokio::test]
async fn malformed_requests_get_json_errors() {
    let (app, _) = router(4).await;
    let cases: [(&str, &str, Option<&str>, StatusCode, &str); 11] = [
        // A field given twice is refused (the fuzz target found it accepted, last one
        // winning, while bodies were first read as any JSON value).
        (
            "POST",
            "/v1/blocks",
            Some(
                r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","host_id":5,"token":1,"shard":1,"after_counter":0,"token":2}"#,
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A struct's fields as an array, or any body that is not an object (schemathesis
        // found `[null, null]` accepted as an empty namespace spec).
        (
            "PUT",
            "/v1/namespaces/orders",
            Some("[null, null]"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/namespaces/orders/blocks",
            Some("[0, 1]"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "PUT",
            "/v1/namespaces/Bad!",
            Some("{}"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/namespaces/nope/blocks",
            Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","host_id":0,"token":1}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            "/v1/leases",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/leases",
            Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"a","ttl_ms":5}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/leases/x/renew",
            Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":1}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/v1/leases/3/renew",
            Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":1}"#),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/v1/leases",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v2/anything",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        // Namespaces are created with the admin credential, everything else here is a node's.
        let token = if method == "PUT" { ADMIN_TOKEN } else { TOKEN };
        let (s, b) = call(&app, method, uri, Some(token), body).await;
        assert_eq!(
            (s, error_code(&b).as_str()),
            (status, code),
            "{method} {uri}"
        );
    }
    let big = format!(
        r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"{}"}}"#,
        "x".repeat(BODY_BYTES_MAX)
    );
    let (s, b) = call(&app, "POST", "/v1/leases", Some(TOKEN), Some(&big)).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
}

#[tokio::test]
async fn every_response_names_the_store_and_cluster_describes_it() {
    let (app, _) = router(4).await;
    let mut ids = std::collections::HashSet::new();
    for (uri, auth, status) in [
        ("/healthz", None, StatusCode::OK),
        ("/v1/cluster", Some(TOKEN), StatusCode::OK),
        ("/v1/hosts", None, StatusCode::UNAUTHORIZED),
        ("/nope", Some(TOKEN), StatusCode::NOT_FOUND),
    ] {
        let mut b = Request::builder().uri(uri);
        if let Some(t) = auth {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{uri}");
        let id = resp
            .headers()
            .get(shardflake_proto::coord::STORE_ID_HEADER)
            .unwrap_or_else(|| panic!("{uri}: no store id header"))
            .to_str()
            .unwrap()
            .to_string();
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "one store, one id: {ids:?}");
    let (s, b) = call(&app, "GET", "/v1/cluster", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    let info: shardflake_proto::coord::ClusterInfo = serde_json::from_slice(&b).unwrap();
    assert!(ids.contains(&info.store_id));
    assert_eq!(info.layout_spec, Layout::preset("twitter").unwrap().spec());
    assert_eq!(info.pool_size, 4);
    assert_eq!(info.limits.reservation_ahead_ms_max, 60_000);
    // Another store has another id.
    let (other, _) = router(4).await;
    let (_, b) = call(&other, "GET", "/v1/cluster", Some(TOKEN), None).await;
    let other: shardflake_proto::coord::ClusterInfo = serde_json::from_slice(&b).unwrap();
    assert_ne!(other.store_id, info.store_id);
}

/// Regression (schemathesis: a renewal reporting usage in shard `u64::MAX` overflowed
/// `shard + 1` and the debug build dropped the connection): a usage report for a shard the
/// layout cannot hold is a `400 bad_request`, and the lease goes on.
#[tokio::test]
async fn a_usage_report_beyond_the_layout_is_refused_not_an_overflow() {
    let time = ManualTime::new(1_800_000_000_000);
    let config = CoordinatorConfig::new(Layout::from_spec("temporal:granularity=2s").unwrap());
    let c = Coordinator::open(Arc::new(MemStore::new()), Arc::new(time.clone()), config)
        .await
        .unwrap();
    let app = app(AppState::new(Arc::new(c), auth()));
    let (s, b) = call(
        &app,
        "POST",
        "/v1/leases",
        Some(TOKEN),
        Some(r#"{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","name":"t"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let grant: LeaseGrant = serde_json::from_slice(&b).unwrap();
    let renew = |shard: u64| {
        format!(
            r#"{{"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e","token":{},"usage":{{"shard":{shard},"used_in_shard":0,"predicted_next":0}}}}"#,
            grant.token
        )
    };
    let uri = format!("/v1/leases/{}/renew", grant.host_id);
    let (s, b) = call(&app, "POST", &uri, Some(TOKEN), Some(&renew(u64::MAX))).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_eq!(error_code(&b), "bad_request");
    let layout = Layout::from_spec("temporal:granularity=2s").unwrap();
    let shard = layout.tick_of(time_now(&time)).unwrap();
    let (s, b) = call(&app, "POST", &uri, Some(TOKEN), Some(&renew(shard))).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
}

/// Regression (found by the `coordinator_bodies` fuzz target): a host id that percent-decodes
/// to invalid UTF-8 was refused by axum's own path rejection, in plain text.
#[tokio::test]
async fn a_host_id_that_is_not_utf8_gets_a_json_error() {
    let (app, _) = router(4).await;
    for action in ["renew", "reservation", "release"] {
        let (status, body) = call(
            &app,
            "POST",
            &format!("/v1/leases/x%94967297/{action}"),
            Some(TOKEN),
            Some("{}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action}");
        assert_eq!(error_code(&body), "bad_request", "{action}");
    }
}

/// A credential over its request rate gets `429 rate_limited` with `Retry-After`; another
/// credential is served meanwhile, and the refusals are counted by credential name.
#[tokio::test]
async fn a_credential_over_its_rate_is_told_to_wait_while_others_are_served() {
    let time = ManualTime::new(1_800_000_000_000);
    let c = Coordinator::open(
        Arc::new(MemStore::new()),
        Arc::new(time),
        CoordinatorConfig::new(Layout::preset("twitter").unwrap()),
    )
    .await
    .unwrap();
    let limits = RateLimits {
        read_per_s: 3,
        node_per_s: 0,
        admin_per_s: 0,
        auth_failures_per_s: 5,
    };
    let app = app(AppState::with_limits(Arc::new(c), auth(), limits));
    for _ in 0..3 {
        assert_eq!(
            call(&app, "GET", "/v1/hosts", Some(READ_TOKEN), None)
                .await
                .0,
            StatusCode::OK
        );
    }
    let req = Request::get("/v1/hosts")
        .header("authorization", format!("Bearer {READ_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(error_code(&body), "rate_limited");
    // The node credential has no limit here: it is served.
    for _ in 0..10 {
        assert_eq!(
            call(&app, "GET", "/v1/hosts", Some(TOKEN), None).await.0,
            StatusCode::OK
        );
    }
    let (_, metrics) = call(&app, "GET", "/metrics", Some(TOKEN), None).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(r#"shardflake_coordinator_rate_limited_total{credential="read#1"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(READ_TOKEN));
    // Guessing credentials: 5 failures a second, then 429, while a valid credential and the
    // other scopes' refusals go on as before.
    for _ in 0..5 {
        assert_eq!(
            call(&app, "GET", "/v1/hosts", Some("a-guess-0123456789"), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, b) = call(&app, "GET", "/v1/hosts", Some("a-guess-0123456789"), None).await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(
        call(&app, "GET", "/v1/hosts", Some(TOKEN), None).await.0,
        StatusCode::OK
    );
    let (s, _) = call(&app, "POST", "/v1/leases", Some(ADMIN_TOKEN), Some("{}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, metrics) = call(&app, "GET", "/metrics", Some(TOKEN), None).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(r#"shardflake_coordinator_auth_failures_total{reason="scope"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"shardflake_coordinator_auth_failures_total{reason="unknown"} 6"#),
        "{metrics}"
    );
}

/// `GET /v1/routing` with its entity tag: `304` while the table is unchanged, a new tag once
/// it changed, and the same tag from two coordinators of one store.
#[tokio::test]
async fn routing_answers_304_to_the_tag_it_gave_and_coordinators_agree_on_it() {
    let time = ManualTime::new(1_800_000_000_000);
    let store: Arc<dyn shardflake_coordinator::store::KvStore> = Arc::new(MemStore::new());
    let open = || async {
        let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
        config.pool_size = 8;
        let c = Coordinator::open(store.clone(), Arc::new(time.clone()), config)
            .await
            .unwrap();
        app(AppState::new(Arc::new(c), auth()))
    };
    let (a, b) = (open().await, open().await);
    let get = |app: axum::Router, tag: Option<String>| async move {
        let mut r = Request::builder()
            .uri("/v1/routing")
            .header("authorization", format!("Bearer {READ_TOKEN}"));
        if let Some(t) = tag {
            r = r.header("if-none-match", t);
        }
        let resp = app.oneshot(r.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, etag, body)
    };
    let (s, tag, body) = get(a.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    let tag = tag.expect("an ETag");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["nodes"].as_array().unwrap().len(), 0);
    let (s, again, body) = get(a.clone(), Some(tag.clone())).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(again.as_deref(), Some(tag.as_str()));
    assert!(body.is_empty());
    // Another tag, or none: the table.
    let (s, _, _) = get(a.clone(), Some("\"0-0000\"".into())).await;
    assert_eq!(s, StatusCode::OK);
    // A namespace is created through coordinator a: a's table changes at once.
    let (s, _) = call(
        &a,
        "PUT",
        "/v1/namespaces/orders",
        Some(ADMIN_TOKEN),
        Some("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, new_tag, body) = get(a.clone(), Some(tag.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let new_tag = new_tag.unwrap();
    assert_ne!(new_tag, tag);
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["namespaces"][0]["name"], "orders");
    // b learns of it from the routing epoch (written after EPOCH_BUMP_DELAY_MS, read at most
    // once per ROUTING_CHECK_MS) and then gives the same tag.
    tokio::time::sleep(std::time::Duration::from_millis(
        shardflake_coordinator::EPOCH_BUMP_DELAY_MS * 4,
    ))
    .await;
    let (_, tag_a, _) = get(a.clone(), None).await;
    time.advance_ms(shardflake_coordinator::ROUTING_CHECK_MS);
    let (s, tag_b, body) = get(b.clone(), None).await;
    assert_eq!(s, StatusCode::OK);
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["namespaces"][0]["name"], "orders", "b sees the change");
    let (_, tag_a2, _) = get(a.clone(), None).await;
    assert_eq!(
        tag_b, tag_a2,
        "the same table, the same tag ({tag_a:?} before a checked)"
    );
}
