//! An in-process coordinator on 127.0.0.1:0, optionally with injected faults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth};
use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::{serve, Coordinator, CoordinatorConfig, SystemTimeSource};
use shardflake_proto::auth::Scope;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-cluster-token";

/// Faults the coordinator's HTTP front injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer `POST /v1/blocks` only after this long.
    pub block_delay: Option<Duration>,
    /// Commit the first lease grant but answer it with a 502, as if the answer were lost.
    pub lose_first_grant: bool,
    /// Answer these paths with a 503 without serving them.
    pub unavailable: Vec<&'static str>,
}

pub struct TestCoordinator {
    pub url: String,
    pub coordinator: Arc<Coordinator>,
    /// Requests received, by path.
    pub requests: Arc<Mutex<HashMap<String, u64>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestCoordinator {
    pub async fn start() -> Self {
        Self::start_on(Arc::new(MemStore::new()), "twitter").await
    }

    pub async fn start_on(store: Arc<dyn KvStore>, layout: &str) -> Self {
        Self::start_with(store, Layout::from_spec(layout).unwrap()).await
    }

    pub async fn start_with(store: Arc<dyn KvStore>, layout: Layout) -> Self {
        Self::start_faulty(store, CoordinatorConfig::new(layout), Faults::default()).await
    }

    pub async fn start_faulty(
        store: Arc<dyn KvStore>,
        config: CoordinatorConfig,
        faults: Faults,
    ) -> Self {
        let c = Arc::new(
            Coordinator::open(store, Arc::new(SystemTimeSource::new()), config)
                .await
                .expect("the store opens"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let counts = requests.clone();
        let auth = Auth::tokens(&[(Scope::Node, TOKEN)]).expect("a well-formed token");
        let router = app(AppState::new(c.clone(), auth)).layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let faults = faults.clone();
                let lost = lost.clone();
                let counts = counts.clone();
                async move {
                    let path = req.uri().path().to_string();
                    *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                    if faults.unavailable.contains(&path.as_str()) {
                        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
                    }
                    if path == "/v1/blocks" {
                        if let Some(d) = faults.block_delay {
                            tokio::time::sleep(d).await;
                        }
                    }
                    let resp: Response = next.run(req).await;
                    if path == "/v1/leases"
                        && faults.lose_first_grant
                        && resp.status().is_success()
                        && !lost.swap(true, Ordering::SeqCst)
                    {
                        return (StatusCode::BAD_GATEWAY, "answer lost").into_response();
                    }
                    resp
                }
            },
        ));
        let task = tokio::spawn(async move {
            serve(listener, router, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            coordinator: c,
            requests,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Requests received on `path` so far.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Stops listening and closes every connection (waits for in-flight requests).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A URL on which nothing listens.
pub async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}
