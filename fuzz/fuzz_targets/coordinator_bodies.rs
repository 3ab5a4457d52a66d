//! The coordinator's request bodies, through its router (`shardflake_coordinator::http::app`
//! over an in-memory store), so every body is decoded and validated exactly as the handlers
//! do, then acted on. An input is lines:
//!
//! ```text
//! layout temporal:granularity=2s      (optional, first line: the coordinator's layout)
//! acquire {"name":"a","ttl_ms":1000,"secret":"5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"}
//! renew 0 {"token":1,"secret":"5e5e...","usage":{"shard":3,"used_in_shard":10}}
//! reservation 0 {"token":1,"secret":"5e5e...","until_ms":1800000001000}
//! release 0 {"token":1,"secret":"5e5e..."}
//! blocks {"host_id":0,"token":1,"secret":"5e5e...","shard":0,"after_counter":0}
//! standby {"name":"s","timeout_ms":100}
//! ns-put orders {"block_min":10,"block_max":10}          (with the admin credential)
//! ns-blocks orders {"host_id":0,"token":1,"secret":"5e5e...","after":0}
//! ns-return orders {"host_id":0,"token":1,"secret":"5e5e...","block_end":11,"unused_from":5}
//! advance 5000                        (moves the coordinator's clocks, ms)
//! ```
//!
//! Every lease route is sent with the node credential, `ns-put` with the admin credential,
//! as a node and an operator would.
//!
//! Properties: no panic and no 5xx (the in-memory store does not fail); every answer is a
//! status the OpenAPI description lists for the route, carries the store id, and an error's
//! body is `{"error": {"code", "message"}}` with a code the description lists for that
//! status; a body the handler accepted parses on its own and survives a serde round trip;
//! a body that does not parse, sent to a route's path, is a `400 bad_request`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::{Coordinator, CoordinatorConfig, TimeSource};
use shardflake_proto::coord::{
    AcquireRequest, BlockRequest, ReleaseRequest, RenewRequest, ReservationRequest,
    StandbyWaitRequest, STORE_ID_HEADER,
};
use shardflake_proto::auth::Scope;
use shardflake_proto::ns::{NamespaceSpec, NsBlockRequest, NsReturnRequest};
use shardflake_proto::{ErrorBody, ErrorCode};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-node-token-0123";
const ADMIN_TOKEN: &str = "fuzz-admin-token-0123";
const WALL_START_MS: u64 = 1_800_000_000_000;
const LINES_MAX: usize = 32;
const ADVANCE_MS_MAX: u64 = 7 * 24 * 3_600_000;

/// Time that follows tokio's clock, which the paused runtime moves on whenever every task
/// sleeps, so a standby's long poll ends without waiting for real.
struct TokioTime {
    start: tokio::time::Instant,
}

impl TimeSource for TokioTime {
    fn wall_ms(&self) -> u64 {
        WALL_START_MS + self.mono_ms()
    }
    fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

fn description() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(shardflake_coordinator::http::openapi)
}

/// Parses `body` as the handler's type would, and checks the round trip of what parses.
fn round_trip<T>(body: &[u8]) -> bool
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(v) = serde_json::from_slice::<T>(body) else {
        return false;
    };
    let again: T = serde_json::from_slice(&serde_json::to_vec(&v).expect("serializes"))
        .expect("what serializes parses");
    assert_eq!(again, v, "a round trip changes the body");
    true
}

/// `raw` percent-encoded as one path segment.
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines().take(LINES_MAX).peekable();
    let mut layout = Layout::preset("twitter").expect("a preset");
    if let Some(spec) = lines.peek().and_then(|l| l.strip_prefix("layout ")) {
        if let Ok(l) = Layout::from_spec(spec) {
            layout = l;
        }
        lines.next();
    }
    let lines: Vec<&str> = lines.collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let time = TokioTime {
            start: tokio::time::Instant::now(),
        };
        let Ok(c) = Coordinator::open(
            Arc::new(MemStore::new()),
            Arc::new(time),
            CoordinatorConfig::new(layout),
        )
        .await
        else {
            return;
        };
        let auth = Auth::tokens(&[(Scope::Node, TOKEN), (Scope::Admin, ADMIN_TOKEN)])
            .expect("well-formed tokens");
        let router = app(AppState::new(Arc::new(c), auth));
        for line in lines {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            // Whether the path names the route for sure: a host segment of digits only.
            let mut plain_path = true;
            let (template, uri, body) = match verb {
                "advance" => {
                    let ms = rest.trim().parse::<u64>().unwrap_or(0).min(ADVANCE_MS_MAX);
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    continue;
                }
                "acquire" => ("/v1/leases", "/v1/leases".to_string(), rest),
                "blocks" => ("/v1/blocks", "/v1/blocks".to_string(), rest),
                "standby" => ("/v1/standby/wait", "/v1/standby/wait".to_string(), rest),
                "ns-put" | "ns-blocks" | "ns-return" => {
                    let (raw, body) = rest.split_once(' ').unwrap_or((rest, ""));
                    plain_path = shardflake_proto::ns::validate_name(raw).is_ok();
                    // The name is one path segment, whatever it holds: `#`, `?` or `/` in it
                    // must reach the route as the name, not end the path.
                    let name = segment(raw);
                    match verb {
                        "ns-put" => ("/v1/namespaces/{name}", format!("/v1/namespaces/{name}"), body),
                        "ns-blocks" => (
                            "/v1/namespaces/{name}/blocks",
                            format!("/v1/namespaces/{name}/blocks"),
                            body,
                        ),
                        _ => (
                            "/v1/namespaces/{name}/return",
                            format!("/v1/namespaces/{name}/return"),
                            body,
                        ),
                    }
                }
                "renew" | "reservation" | "release" => {
                    let (host, body) = rest.split_once(' ').unwrap_or((rest, ""));
                    plain_path = !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit());
                    (
                        match verb {
                            "renew" => "/v1/leases/{host_id}/renew",
                            "reservation" => "/v1/leases/{host_id}/reservation",
                            _ => "/v1/leases/{host_id}/release",
                        },
                        format!("/v1/leases/{host}/{verb}"),
                        body,
                    )
                }
                _ => continue,
            };
            let parses = match verb {
                "acquire" => round_trip::<AcquireRequest>(body.as_bytes()),
                "blocks" => round_trip::<BlockRequest>(body.as_bytes()),
                "standby" => round_trip::<StandbyWaitRequest>(body.as_bytes()),
                "renew" => round_trip::<RenewRequest>(body.as_bytes()),
                "reservation" => round_trip::<ReservationRequest>(body.as_bytes()),
                "ns-put" => round_trip::<NamespaceSpec>(body.as_bytes()),
                "ns-blocks" => round_trip::<NsBlockRequest>(body.as_bytes()),
                "ns-return" => round_trip::<NsReturnRequest>(body.as_bytes()),
                _ => round_trip::<ReleaseRequest>(body.as_bytes()),
            };
            let (method, token) = match verb {
                "ns-put" => ("PUT", ADMIN_TOKEN),
                _ => ("POST", TOKEN),
            };
            let Ok(req) = Request::builder()
                .method(method)
                .uri(&uri)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
            else {
                continue; // not a URI: no request reaches the router
            };
            let resp = router.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            assert!(status.as_u16() < 500, "{status} for {line:?}");
            assert!(resp.headers().contains_key(STORE_ID_HEADER));
            let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
            let described = &description()["paths"][template][method.to_lowercase()]["responses"]
                [status.as_str()];
            assert!(
                described.is_object(),
                "{status} for {line:?} is not in the description"
            );
            if status.is_success() {
                assert!(parses, "accepted a body that does not parse: {line:?}");
                continue;
            }
            let error: ErrorBody = serde_json::from_slice(&bytes).expect("an error body");
            assert_eq!(error.error.code.http_status(), status.as_u16());
            let codes = &described["content"]["application/json"]["schema"]["properties"]["error"]
                ["properties"]["code"]["enum"];
            assert!(
                codes
                    .as_array()
                    .is_some_and(|c| c.contains(&Value::from(error.error.code.as_str()))),
                "{} is not described for {status} of {template}",
                error.error.code
            );
            if !parses && plain_path {
                // A body that does not parse is refused before anything else.
                assert!(
                    error.error.code == ErrorCode::BadRequest,
                    "{} for a body that does not parse: {line:?}",
                    error.error.code
                );
            }
        }
    });
});
