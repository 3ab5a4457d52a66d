//! The node's router against a bare axum router, in-process (no sockets): what the node adds
//! per `GET /id` — middleware (latency histogram, timeout), body limit, state, generator
//! handle, reservation check — next to an atomic counter in the same response format.
//!
//! Run with `cargo bench -p shardflake-node --bench router`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header::CONTENT_TYPE, HeaderValue, Request};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardflake_node::{app, AppState, NodeConfig, NodeOptions};
use tower::ServiceExt;

async fn ceiling_id(State(counter): State<Arc<AtomicU64>>) -> Response {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(64);
    shardflake_proto::node::write_id_json(&mut buf, n);
    let mut r = Response::new(Body::from(Bytes::from(buf)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(async {
        // Temporal layout: the id itself never waits for the clock, so the comparison is
        // about the HTTP stack, not the 4096-per-ms cap of the Snowflake layouts.
        let options = NodeOptions {
            layout: Some("temporal".into()),
            state_dir: dir.path().into(),
            ..NodeOptions::default()
        };
        let now = shardflake::Clock::now_ms(&shardflake::SystemClock);
        let state =
            AppState::open(NodeConfig::from_options(&options, now).expect("config")).expect("node");
        state.start_keeper();
        app(state)
    });
    let ceiling = Router::new()
        .route("/id", get(ceiling_id))
        .with_state(Arc::new(AtomicU64::new(1)));
    let mut g = c.benchmark_group("get_id_in_process");
    g.throughput(Throughput::Elements(1));
    for (name, r) in [("ceiling", ceiling), ("node", node)] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let r = r.clone();
                async move {
                    let resp = r
                        .oneshot(Request::get("/id").body(Body::empty()).expect("request"))
                        .await
                        .expect("response");
                    assert_eq!(resp.status(), 200);
                    resp
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, router);
criterion_main!(benches);
