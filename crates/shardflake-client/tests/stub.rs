//! Stub nodes and a stub coordinator (axum on 127.0.0.1:0) speaking the node API
//! (`/ids`, and the namespace endpoints `/ns/{name}/ids` with `404 unknown_namespace` and
//! `307` to a serving node) and `GET /v1/routing`, with switchable faults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use shardflake_proto::coord::STORE_ID_HEADER;
use shardflake_proto::node::IdsResponse;
use shardflake_proto::ns::RoutingTable;

/// A stub node: ids `base + 1, base + 2, ...`, distinct across stubs with distinct bases.
pub struct StubNode {
    pub url: String,
    pub state: Arc<NodeState>,
}

#[derive(Default)]
pub struct NodeState {
    base: u64,
    next: AtomicU64,
    /// Answer `503 lease_lost` with `Retry-After: 1`.
    pub unavailable: AtomicBool,
    /// Namespaces this node serves.
    pub namespaces: Mutex<Vec<String>>,
    /// Where a namespace this node does not serve is redirected (`307`), if anywhere.
    pub redirect_to: Mutex<Option<String>>,
    /// Successful answers, by path prefix (`ids`, `ns`).
    pub served: Mutex<HashMap<&'static str, u64>>,
}

impl NodeState {
    pub fn served(&self, what: &'static str) -> u64 {
        self.served.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    fn ids(&self, what: &'static str, count: u64) -> Response {
        if self.unavailable.load(Ordering::SeqCst) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(serde_json::json!({"error": {"code": "lease_lost", "message": "stub: no lease"}})),
            )
                .into_response();
        }
        let first = self.next.fetch_add(count, Ordering::SeqCst);
        let ids = (first + 1..=first + count).map(|i| self.base + i).collect();
        *self.served.lock().unwrap().entry(what).or_insert(0) += 1;
        Json(IdsResponse::new(ids)).into_response()
    }
}

fn count(q: &HashMap<String, String>) -> u64 {
    q.get("count").and_then(|c| c.parse().ok()).unwrap_or(1)
}

impl StubNode {
    /// A node whose ids start above `base`.
    pub async fn start(base: u64) -> StubNode {
        let state = Arc::new(NodeState {
            base,
            ..NodeState::default()
        });
        let app =
            axum::Router::new()
                .route(
                    "/ids",
                    get(
                        |State(s): State<Arc<NodeState>>,
                         Query(q): Query<HashMap<String, String>>| async move {
                            s.ids("ids", count(&q))
                        },
                    ),
                )
                .route(
                    "/ns/{name}/ids",
                    get(
                        |State(s): State<Arc<NodeState>>,
                         Path(name): Path<String>,
                         Query(q): Query<HashMap<String, String>>| async move {
                            if s.namespaces.lock().unwrap().contains(&name) {
                                return s.ids("ns", count(&q));
                            }
                            if let Some(to) = s.redirect_to.lock().unwrap().clone() {
                                let location = format!("{to}/ns/{name}/ids?count={}", count(&q));
                                return (
                                    StatusCode::TEMPORARY_REDIRECT,
                                    [(header::LOCATION, location)],
                                )
                                    .into_response();
                            }
                            (
                                StatusCode::NOT_FOUND,
                                Json(serde_json::json!({"error": {
                                    "code": "unknown_namespace",
                                    "message": format!("no namespace {name}"),
                                }})),
                            )
                                .into_response()
                        },
                    ),
                )
                .with_state(state.clone());
        let url = serve(app).await;
        StubNode { url, state }
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A stub coordinator answering `GET /v1/routing` with a table it can be given, to requests
/// with the right bearer token.
pub struct StubCoordinator {
    pub url: String,
    pub table: Arc<Mutex<RoutingTable>>,
    pub requests: Arc<AtomicU64>,
}

impl StubCoordinator {
    pub async fn start(token: &'static str, table: RoutingTable) -> StubCoordinator {
        let table = Arc::new(Mutex::new(table));
        let requests = Arc::new(AtomicU64::new(0));
        let (t, r) = (table.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/v1/routing",
            get(move |headers: HeaderMap| async move {
                r.fetch_add(1, Ordering::SeqCst);
                let store = [(STORE_ID_HEADER, "stub-store")];
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if auth != Some(&format!("Bearer {token}")) {
                    let body = serde_json::json!({"error": {"code": "unauthorized", "message": "bad token"}});
                    return (StatusCode::UNAUTHORIZED, store, Json(body)).into_response();
                }
                let table = t.lock().unwrap().clone();
                (store, Json(table)).into_response()
            }),
        );
        let url = serve(app).await;
        StubCoordinator {
            url,
            table,
            requests,
        }
    }
}
