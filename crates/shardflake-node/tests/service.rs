//! The node in-process: every endpoint and error path through `app()` with
//! `tower::ServiceExt::oneshot` on a manual clock, and `serve_state()` on 127.0.0.1:0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use shardflake::{Clock, Layout, ManualClock};
use shardflake_node::{
    app, serve_state, AppState, ClockPolicyKind, NodeConfig, NodeOptions, RESERVE_WINDOW_MS,
};
use shardflake_proto::node::{parse_ids_binary, parse_ids_text, IdResponse, IdsResponse};
use shardflake_proto::{ErrorBody, ErrorCode};
use tower::ServiceExt;

/// 2026-09-21T...: a fixed "now" for the manual clock.
const NOW_MS: u64 = 1_790_000_000_000;
const HOUR_MS: u64 = 3_600_000;

/// The node's options from the few `serve` flags these tests use (the flags themselves are
/// the binary's and tested there).
fn config(dir: &Path, flags: &[&str]) -> NodeConfig {
    let mut o = NodeOptions {
        state_dir: dir.to_path_buf(),
        ..NodeOptions::default()
    };
    for pair in flags.chunks(2) {
        let [flag, value] = pair else {
            panic!("flags come in pairs: {flags:?}")
        };
        match *flag {
            "--layout" => o.layout = Some(value.to_string()),
            "--machine-id" => o.machine_id = Some(value.parse().unwrap()),
            "--datacenter-id" => o.datacenter_id = Some(value.parse().unwrap()),
            "--max-connections" => o.max_connections = value.parse().unwrap(),
            "--borrow-ahead-max" => {
                o.borrow_ahead_max = Some(humantime::parse_duration(value).unwrap())
            }
            "--clock-policy" => {
                o.clock_policy = match *value {
                    "fail" => ClockPolicyKind::Fail,
                    "wait" => ClockPolicyKind::Wait,
                    "borrow" => ClockPolicyKind::Borrow,
                    other => panic!("clock policy {other}"),
                }
            }
            other => panic!("this test helper does not know {other}"),
        }
    }
    NodeConfig::from_options(&o, NOW_MS).unwrap()
}

fn open(dir: &Path, flags: &[&str], clock: &ManualClock) -> AppState {
    AppState::open_with_clock(config(dir, flags), Arc::new(clock.clone())).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn error_code(&self) -> ErrorCode {
        let b: ErrorBody = serde_json::from_slice(&self.body).unwrap();
        b.error.code
    }
    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

async fn call(router: &Router, method: &str, uri: &str, accept: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(router: &Router, uri: &str) -> Answer {
    call(router, "GET", uri, None).await
}

async fn one_id(router: &Router) -> u64 {
    let a = get(router, "/id").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let r: IdResponse = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(r.id.to_string(), r.id_str);
    r.id
}

#[tokio::test]
async fn id_endpoint_issues_increasing_ids_of_the_configured_node() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(
        dir.path(),
        &["--machine-id", "7", "--datacenter-id", "2"],
        &clock,
    );
    let router = app(state);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    let first: IdResponse = serde_json::from_slice(&a.body).unwrap();
    let second = one_id(&router).await;
    assert!(second > first.id);
    let d = Layout::preset("twitter").unwrap().decode(second).unwrap();
    assert_eq!(d.field("worker"), Some(7));
    assert_eq!(d.field("datacenter"), Some(2));
    assert_eq!(d.timestamp_ms, NOW_MS);
}

#[tokio::test]
async fn ids_endpoint_speaks_json_binary_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &["--machine-id", "1"], &clock));

    let a = get(&router, "/ids?count=5").await;
    assert_eq!(a.status, 200);
    let r: IdsResponse = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(r.ids.len(), 5);
    assert!(r.ids.windows(2).all(|w| w[0] < w[1]));
    let strs: Vec<String> = r.ids.iter().map(u64::to_string).collect();
    assert_eq!(r.ids_str, strs);

    let a = call(
        &router,
        "GET",
        "/ids?count=1000",
        Some("application/octet-stream"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/octet-stream");
    assert_eq!(a.body.len(), 8000);
    let bin = parse_ids_binary(&a.body).unwrap();
    assert!(bin.windows(2).all(|w| w[0] < w[1]));
    assert!(bin[0] > *r.ids.last().unwrap());

    // 10,000 ids span three 4096-id ticks: this request runs on the blocking pool and the
    // manual clock moves forward as the generator waits for each next tick.
    let a = call(&router, "GET", "/ids?count=10000", Some("text/plain")).await;
    assert_eq!(a.status, 200);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = parse_ids_text(std::str::from_utf8(&a.body).unwrap()).unwrap();
    assert_eq!(text.len(), 10_000);
    assert!(text.windows(2).all(|w| w[0] < w[1]));
    assert!(text[0] > *bin.last().unwrap());

    let a = get(&router, "/ids?count=100000").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        serde_json::from_slice::<IdsResponse>(&a.body)
            .unwrap()
            .ids
            .len(),
        100_000
    );
}

#[tokio::test]
async fn bad_requests_answer_stable_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &[], &clock));
    for (uri, status, code) in [
        ("/ids?count=0", 400, ErrorCode::CountOutOfRange),
        ("/ids?count=100001", 400, ErrorCode::CountOutOfRange),
        ("/ids", 400, ErrorCode::BadRequest),
        ("/ids?count=ten", 400, ErrorCode::BadRequest),
        ("/ids?count=1&verbose=1", 400, ErrorCode::BadRequest),
        ("/inspect/abc", 400, ErrorCode::InvalidId),
        // Bit 63 set: not a twitter id.
        ("/inspect/9223372036854775808", 400, ErrorCode::InvalidId),
        ("/nope", 404, ErrorCode::NotFound),
        ("/inspect", 404, ErrorCode::NotFound),
    ] {
        let a = get(&router, uri).await;
        assert_eq!(a.status, status, "{uri}");
        assert_eq!(a.headers["content-type"], "application/json", "{uri}");
        assert_eq!(a.error_code(), code, "{uri}");
    }
    let a = call(&router, "GET", "/ids?count=3", Some("image/png")).await;
    assert_eq!(a.status, 406);
    assert_eq!(a.error_code(), ErrorCode::NotAcceptable);
    let a = call(&router, "POST", "/id", None).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.error_code(), ErrorCode::MethodNotAllowed);
    assert!(a.headers["allow"].to_str().unwrap().contains("GET"));
    let a = call(&router, "DELETE", "/ids?count=1", None).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.error_code(), ErrorCode::MethodNotAllowed);
}

#[tokio::test]
async fn inspect_decodes_with_the_node_layout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(
        dir.path(),
        &[
            "--layout",
            "discord",
            "--machine-id",
            "0",
            "--datacenter-id",
            "1",
        ],
        &clock,
    ));
    // Discord's documented example snowflake (Discord API reference, "Snowflakes").
    let a = get(&router, "/inspect/175928847299117063").await;
    assert_eq!(a.status, 200);
    let o = a.json();
    assert_eq!(o["timestamp_ms"], 1_462_015_105_796u64);
    assert_eq!(o["time"], "2016-04-30T11:18:25.796Z");
    assert_eq!(o["worker"], 1);
    assert_eq!(o["process"], 0);
    assert_eq!(o["increment"], 7);
    assert_eq!(o["layout"], "discord");
    assert_eq!(o["id_str"], "175928847299117063");
}

#[tokio::test]
async fn probes_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &["--machine-id", "4"], &clock);
    let router = app(state.clone());
    let a = get(&router, "/healthz").await;
    assert_eq!(
        (a.status, a.json()["status"].clone()),
        (StatusCode::OK, "ok".into())
    );
    let a = get(&router, "/readyz").await;
    assert_eq!(a.status, 200);
    let r = a.json();
    assert_eq!(r["ready"], true);
    assert_eq!(r["mode"], "standalone");
    assert_eq!(r["node"]["worker"], 4);
    assert_eq!(r["reserved_until_ms"], NOW_MS + RESERVE_WINDOW_MS);
    assert!(r.get("error").is_none());

    for _ in 0..3 {
        one_id(&router).await;
    }
    assert_eq!(get(&router, "/ids?count=10").await.status, 200);
    get(&router, "/nope").await;
    let a = get(&router, "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = String::from_utf8(a.body).unwrap();
    for expect in [
        "shardflake_ids_issued_total{endpoint=\"/id\"} 3",
        "shardflake_ids_issued_total{endpoint=\"/ids\"} 10",
        "shardflake_ready 1",
        "shardflake_clock_regressions_total 0",
        "shardflake_borrowed_ahead_ms 0",
        "shardflake_sequence_exhaustion_waits_total 0",
        "shardflake_reservation_headroom_ms 2000",
        "shardflake_http_errors_total{code=\"not_found\"} 1",
        "shardflake_http_request_duration_seconds_count{route=\"/id\"} 3",
        "shardflake_state_writes_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == expect),
            "no `{expect}` in\n{text}"
        );
    }
    assert!(text
        .contains("shardflake_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/id\"} 3"));
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );

    state.begin_shutdown();
    let a = get(&router, "/readyz").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"]["code"], "shutting_down");
}

#[tokio::test]
async fn restart_with_the_clock_an_hour_back_waits_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &["--machine-id", "1"], &clock);
    let router = app(state);
    let before = one_id(&router).await;
    // A crash: no shutdown, the process is gone (the lock goes with it).
    drop(router);

    clock.set_ms(NOW_MS - HOUR_MS);
    let state = open(dir.path(), &["--machine-id", "1"], &clock);
    let router = app(state);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::ClockBehind);
    // The bound was NOW + 2 s: about an hour to wait.
    let retry = a.retry_after().unwrap();
    assert!((3_600..=3_603).contains(&retry), "Retry-After {retry}");

    let a = get(&router, "/readyz").await;
    assert_eq!(a.status, 503);
    let r = a.json();
    assert_eq!(r["ready"], false);
    assert_eq!(r["error"]["code"], "clock_behind");
    let behind = r["clock_behind_ms"].as_u64().unwrap();
    assert!(
        (HOUR_MS..=HOUR_MS + RESERVE_WINDOW_MS).contains(&behind),
        "{behind}"
    );
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ms behind the reserved bound"));

    // Once the clock passes the bound, the node serves above every earlier id.
    clock.set_ms(NOW_MS + RESERVE_WINDOW_MS + 1);
    assert_eq!(get(&router, "/readyz").await.status, 200);
    assert!(one_id(&router).await > before);
}

#[tokio::test]
async fn restart_with_the_clock_an_hour_back_borrows_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &["--machine-id", "1"], &clock));
    let mut old = Vec::new();
    for _ in 0..50 {
        old.push(one_id(&router).await);
    }
    drop(router);

    clock.set_ms(NOW_MS - HOUR_MS);
    let flags = [
        "--machine-id",
        "1",
        "--clock-policy",
        "borrow",
        "--borrow-ahead-max",
        "2h",
    ];
    let state = open(dir.path(), &flags, &clock);
    let router = app(state);
    assert_eq!(get(&router, "/readyz").await.status, 200);
    let max_old = *old.iter().max().unwrap();
    let a = call(
        &router,
        "GET",
        "/ids?count=20000",
        Some("application/octet-stream"),
    )
    .await;
    assert_eq!(a.status, 200);
    let new = parse_ids_binary(&a.body).unwrap();
    assert!(new.iter().all(|id| *id > max_old));
    let r = get(&router, "/readyz").await.json();
    assert!(r["borrowed_ahead_ms"].as_u64().unwrap() >= HOUR_MS);
}

#[tokio::test]
async fn a_small_step_back_waits_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &["--machine-id", "1"], &clock);
    let router = app(state);
    let before = one_id(&router).await;
    clock.step_back_ms(30);
    // The request waits asynchronously; meanwhile the clock catches up.
    let c = clock.clone();
    let mover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.advance_ms(31);
    });
    let after = one_id(&router).await;
    mover.await.unwrap();
    assert!(after > before);
    let text = String::from_utf8(get(&router, "/metrics").await.body).unwrap();
    assert!(
        text.contains("shardflake_clock_regressions_total 1"),
        "{text}"
    );
    assert!(!text.contains("shardflake_clock_waits_total 0"), "{text}");

    // A step beyond --clock-wait-ms-max fails at once.
    clock.step_back_ms(5_000);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::ClockBehind);
    assert_eq!(a.retry_after(), Some(5));
}

#[tokio::test]
async fn fail_policy_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &["--clock-policy", "fail"], &clock));
    one_id(&router).await;
    clock.step_back_ms(2);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::ClockBehind);
    assert_eq!(a.retry_after(), Some(1));
}

#[tokio::test]
async fn an_unextended_reservation_answers_503_until_the_keeper_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &[], &clock);
    let router = app(state.clone());
    one_id(&router).await;
    // No keeper is running and the clock jumps past the 2 s window.
    clock.advance_ms(5_000);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::ReservationExhausted);
    assert_eq!(a.retry_after(), Some(1));
    let r = get(&router, "/readyz").await;
    assert_eq!(r.json()["error"]["code"], "reservation_exhausted");

    state.keep_now().unwrap();
    one_id(&router).await;
    // With the background keeper, a request that finds the bound exhausted waits for it.
    state.start_keeper();
    clock.advance_ms(5_000);
    one_id(&router).await;
    let text = String::from_utf8(get(&router, "/metrics").await.body).unwrap();
    assert!(
        !text.contains("shardflake_reservation_waits_total 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_revoked_reservation_fences_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &[], &clock);
    let router = app(state.clone());
    one_id(&router).await;
    state.reservation().unwrap().revoke();
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::LeaseLost);
    assert!(a.retry_after().unwrap() >= 1);
    let a = get(&router, "/ids?count=3").await;
    assert_eq!(a.error_code(), ErrorCode::LeaseLost);
    let r = get(&router, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "lease_lost");
}

#[tokio::test]
async fn an_expired_layout_and_a_clock_before_the_epoch_are_503s() {
    let dir = tempfile::tempdir().unwrap();
    let twitter = Layout::preset("twitter").unwrap();
    let clock = ManualClock::new(twitter.overflow_ms() - 10);
    let state = AppState::open_with_clock(
        config(dir.path(), &["--machine-id", "2"]),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let router = app(state);
    one_id(&router).await;
    clock.advance_ms(20);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::LayoutExpired);
    assert_eq!(a.retry_after(), None);
    assert_eq!(
        get(&router, "/readyz").await.json()["error"]["code"],
        "layout_expired"
    );

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &["--clock-policy", "fail"], &clock));
    clock.set_ms(twitter.epoch_ms() - 1_000);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::EpochInFuture);
    assert_eq!(
        get(&router, "/readyz").await.json()["error"]["code"],
        "epoch_in_future"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let state = open(dir.path(), &["--machine-id", "3"], &clock);
    let file = state.state_file();
    drop(state);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, bytes).unwrap();
    let e = AppState::open_with_clock(
        config(dir.path(), &["--machine-id", "3"]),
        Arc::new(clock.clone()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(file.to_str().unwrap()), "{e}");
    assert!(e.contains("corrupt"), "{e}");
}

#[tokio::test]
async fn temporal_batches_larger_than_a_block_wait_for_the_next_durable_block() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let flags = ["--layout", "temporal", "--machine-id", "5"];
    let state = open(dir.path(), &flags, &clock);
    state.start_keeper();
    let router = app(state.clone());
    // More than the first block (TEMPORAL_BLOCK_MIN values): the keeper persists and
    // installs the next one, and requests that find the block used up wait for it.
    let mut old: Vec<u64> = Vec::new();
    while (old.len() as u64) <= shardflake_node::TEMPORAL_BLOCK_MIN {
        let a = call(
            &router,
            "GET",
            "/ids?count=100000",
            Some("application/octet-stream"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        old.extend(parse_ids_binary(&a.body).unwrap());
    }
    assert!(old.windows(2).all(|w| w[0] < w[1]));
    let layout = Layout::temporal(
        HOUR_MS,
        shardflake::SHARDFLAKE_EPOCH_MS,
        shardflake::TemporalWidths::default(),
    )
    .unwrap();
    let d = layout.decode(old[0]).unwrap();
    assert_eq!(d.field("host"), Some(5));
    let r = get(&router, "/readyz").await.json();
    assert_eq!(r["ready"], true);
    assert_eq!(r["shard"], layout.tick_of(NOW_MS).unwrap());
    let text = String::from_utf8(get(&router, "/metrics").await.body).unwrap();
    assert!(
        text.contains("shardflake_counter_blocks_granted_total 2"),
        "{text}"
    );
}

#[test]
fn temporal_restart_continues_above_the_persisted_counter_and_never_goes_back_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let flags = ["--layout", "temporal", "--machine-id", "5"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let old = rt.block_on(async {
        let router = app(open(dir.path(), &flags, &clock));
        let a = call(
            &router,
            "GET",
            "/ids?count=1000",
            Some("application/octet-stream"),
        )
        .await;
        parse_ids_binary(&a.body).unwrap()
    });
    // Restart in the same shard: the counter continues above the persisted block end.
    let new = rt.block_on(async {
        let router = app(open(dir.path(), &flags, &clock));
        let a = call(
            &router,
            "GET",
            "/ids?count=1000",
            Some("application/octet-stream"),
        )
        .await;
        assert_eq!(a.status, 200);
        parse_ids_binary(&a.body).unwrap()
    });
    assert!(new[0] > *old.last().unwrap());
    // Restart with the clock an hour back, in the previous shard: not ready, no ids.
    clock.set_ms(NOW_MS - HOUR_MS);
    rt.block_on(async {
        let router = app(open(dir.path(), &flags, &clock));
        let a = get(&router, "/id").await;
        assert_eq!(a.status, 503);
        assert_eq!(a.error_code(), ErrorCode::ClockBehind);
        assert!(a.retry_after().unwrap() >= 1);
        let r = get(&router, "/readyz").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["code"], "clock_behind");
    });
    // In the next shard it starts from a fresh block.
    clock.set_ms(NOW_MS + HOUR_MS);
    rt.block_on(async {
        let state = open(dir.path(), &flags, &clock);
        let router = app(state);
        let id = one_id(&router).await;
        assert!(id > *new.last().unwrap());
    });
}

#[test]
fn temporal_blocks_for_the_next_shard_are_prefetched() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::preset("temporal").unwrap();
    let shard = layout.tick_of(NOW_MS).unwrap();
    let boundary = layout.ms_of_tick(shard + 1);
    let clock = ManualClock::new(boundary - 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = open(dir.path(), &["--layout", "temporal"], &clock);
        let router = app(state.clone());
        let a = one_id(&router).await;
        clock.set_ms(boundary - 1_000);
        state.keep_now().unwrap();
        clock.set_ms(boundary);
        // The block for the new shard is already installed: no wait, no request.
        let b = one_id(&router).await;
        assert!(b > a);
        assert_eq!(layout.decode(b).unwrap().field("shard"), Some(shard + 1));
        let text = String::from_utf8(get(&router, "/metrics").await.body).unwrap();
        assert!(
            text.contains("shardflake_counter_blocks_granted_total 2"),
            "{text}"
        );
        assert!(
            text.contains("shardflake_reservation_waits_total 0"),
            "{text}"
        );
    });
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_on_loopback_and_persists_the_exact_bound_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let clock = shardflake::SystemClock;
    let state = AppState::open(config(dir.path(), &["--machine-id", "9"])).unwrap();
    let file = state.state_file();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_state(listener, state, async {
        let _ = rx.await;
    }));
    let (ids, ready) = tokio::task::spawn_blocking(move || {
        let mut ids = Vec::new();
        for _ in 0..20 {
            let (status, body) = http_get(addr, "/id");
            assert_eq!(status, 200);
            ids.push(serde_json::from_str::<IdResponse>(&body).unwrap().id);
        }
        (ids, http_get(addr, "/readyz").0)
    })
    .await
    .unwrap();
    assert_eq!(ready, 200);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();

    let text = std::fs::read_to_string(&file).unwrap();
    let payload: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(payload["reserved"]["clean_shutdown"], true);
    let last_ms = Layout::preset("twitter")
        .unwrap()
        .decode(*ids.last().unwrap())
        .unwrap()
        .timestamp_ms;
    // The exact last issued tick, not the reservation window above it.
    assert_eq!(payload["reserved"]["reserved_until_ms"], last_ms);
    assert!(last_ms <= clock.now_ms());
    // The lock is released: the same node id starts again, above the bound.
    let state = AppState::open(config(dir.path(), &["--machine-id", "9"])).unwrap();
    let router = app(state);
    assert!(one_id(&router).await > *ids.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::open(config(dir.path(), &["--max-connections", "1"])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_state(listener, state, async {
        let _ = rx.await;
    }));
    tokio::task::spawn_blocking(move || {
        // The first connection holds the only slot (keep-alive, idle).
        let mut first = TcpStream::connect(addr).unwrap();
        write!(first, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = first.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // The second is accepted by the kernel but not served while the first is open.
        let mut second = TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        write!(
            second,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let e = second.read(&mut buf).unwrap_err();
        assert!(matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ));
        drop(first);
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = String::new();
        second.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn request_bodies_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let router = app(open(dir.path(), &[], &clock));
    let send = |len: Option<usize>, chunked: bool| {
        let router = router.clone();
        async move {
            let mut req = Request::get("/id");
            if let Some(n) = len {
                req = req.header("content-length", n.to_string());
            }
            if chunked {
                req = req.header("transfer-encoding", "chunked");
            }
            let body = Body::from(vec![b'x'; len.unwrap_or(0)]);
            let resp = router.oneshot(req.body(body).unwrap()).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };
    let (status, _) = send(Some(10), false).await;
    assert_eq!(status, 200);
    for (len, chunked) in [
        (Some(shardflake_node::REQUEST_BODY_BYTES_MAX + 1), false),
        (None, true),
    ] {
        let (status, body) = send(len, chunked).await;
        assert_eq!(status, 413);
        let b: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(b.error.code, ErrorCode::PayloadTooLarge);
    }
}

#[tokio::test]
async fn a_failing_state_write_stops_issuing_once_the_headroom_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let clock = ManualClock::new(NOW_MS);
    let state = open(&state_dir, &[], &clock);
    let router = app(state.clone());
    one_id(&router).await;
    // The directory disappears (a lost mount): writes fail, even as root.
    std::fs::remove_dir_all(&state_dir).unwrap();
    clock.advance_ms(1_500);
    let e = state.keep_now().unwrap_err();
    assert!(
        e.to_string()
            .contains("node-twitter-datacenter0-worker0.state"),
        "{e}"
    );
    // Within the old window the node still issues.
    one_id(&router).await;
    clock.advance_ms(1_000);
    let a = get(&router, "/id").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.error_code(), ErrorCode::ReservationExhausted);
    let r = get(&router, "/readyz").await.json();
    assert_eq!(r["error"]["code"], "reservation_exhausted");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("last state write failed"));
    let text = String::from_utf8(get(&router, "/metrics").await.body).unwrap();
    assert!(
        text.contains("shardflake_state_write_errors_total 1"),
        "{text}"
    );
    // The directory is back: the next pass extends and the node issues again.
    std::fs::create_dir_all(&state_dir).unwrap();
    state.keep_now().unwrap();
    one_id(&router).await;
}

/// Regression (a clean shutdown wrote only the current shard's counter mark): a process that
/// prefetched the next shard and issued in it, then was killed, and a restart that ran in
/// the earlier shard (clock stepped back) and shut down cleanly, must not let a third start
/// in the later shard repeat the first process's ids.
#[test]
fn a_clean_shutdown_in_an_earlier_shard_keeps_the_later_shards_marks() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::preset("temporal").unwrap();
    let s = layout.tick_of(NOW_MS).unwrap();
    let boundary = layout.ms_of_tick(s + 1);
    let flags = ["--layout", "temporal", "--machine-id", "5"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batch = |router: Router| async move {
        let a = call(
            &router,
            "GET",
            "/ids?count=1000",
            Some("application/octet-stream"),
        )
        .await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        parse_ids_binary(&a.body).unwrap()
    };
    // 1: a second before the boundary the start-up pass grants shard s and prefetches s + 1
    // (both marks durable); the process moves into s + 1, issues, and dies (no shutdown).
    let clock = ManualClock::new(boundary - 1_000);
    let first = rt.block_on(async {
        let state = open(dir.path(), &flags, &clock);
        clock.set_ms(boundary + 10);
        let ids = batch(app(state)).await;
        assert_eq!(layout.decode(ids[0]).unwrap().field("shard"), Some(s + 1));
        ids
    });
    // 2: restarted with the clock stepped back into s (outside the prefetch window); it
    // issues in s and stops cleanly.
    clock.set_ms(boundary - 5_000);
    rt.block_on(async {
        let state = open(dir.path(), &flags, &clock);
        let ids = batch(app(state.clone())).await;
        assert_eq!(layout.decode(ids[0]).unwrap().field("shard"), Some(s));
        state.shutdown().await.unwrap();
    });
    // 3: in s + 1 again: strictly above everything the first process issued there.
    clock.set_ms(boundary + 20);
    let third = rt.block_on(async { batch(app(open(dir.path(), &flags, &clock))).await });
    let first_max = *first.iter().max().unwrap();
    let repeated = third.iter().filter(|id| first.contains(id)).count();
    assert_eq!(repeated, 0, "{repeated} ids of the first process repeated");
    assert!(third[0] > first_max, "{} not above {first_max}", third[0]);
}

/// Regression (`/readyz` said 200 while every request failed for want of a counter block):
/// readiness holds only while the generator can issue in the current shard.
#[test]
fn readiness_requires_a_counter_block_for_the_current_shard() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::preset("temporal").unwrap();
    let shard = layout.tick_of(NOW_MS).unwrap();
    let boundary = layout.ms_of_tick(shard + 1);
    // Far from the boundary: the start-up pass grants this shard's block only.
    let clock = ManualClock::new(boundary - 600_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = open(dir.path(), &["--layout", "temporal"], &clock);
        let router = app(state.clone());
        assert_eq!(get(&router, "/readyz").await.status, 200);
        one_id(&router).await;
        // The next shard starts and no keeper pass has granted its block yet.
        clock.set_ms(boundary + 1);
        let r = get(&router, "/readyz").await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"]["code"], "no_counter_block");
        // A keeper pass grants it: ready again.
        state.keep_now().unwrap();
        assert_eq!(get(&router, "/readyz").await.status, 200);
        let id = one_id(&router).await;
        assert_eq!(layout.decode(id).unwrap().field("shard"), Some(shard + 1));
    });
}
