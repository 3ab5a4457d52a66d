//! The throughput ceiling for `GET /id`: a bare axum server whose `/id` returns an atomic
//! counter in the node's exact response format, with no generator, middleware, limits or
//! metrics. `scripts/bench-node.sh` runs it next to the node under the same load.
//!
//! `cargo run --release -p shardflake-node --example ceiling -- 18081`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

async fn id(State(counter): State<Arc<AtomicU64>>) -> Response {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(64);
    shardflake_proto::node::write_id_json(&mut buf, n);
    let mut r = Response::new(Body::from(Bytes::from(buf)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("a port number"))
        .unwrap_or(18_081);
    let app = Router::new()
        .route("/id", get(id))
        .with_state(Arc::new(AtomicU64::new(1)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
