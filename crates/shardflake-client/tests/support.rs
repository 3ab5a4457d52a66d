//! An in-process coordinator on 127.0.0.1:0.

use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState};
use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::{serve, Coordinator, CoordinatorConfig, SystemTimeSource};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-cluster-token";

pub struct TestCoordinator {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestCoordinator {
    pub async fn start() -> Self {
        Self::start_on(Arc::new(MemStore::new()), "twitter").await
    }

    pub async fn start_on(store: Arc<dyn KvStore>, layout: &str) -> Self {
        Self::start_with(store, Layout::preset(layout).unwrap()).await
    }

    pub async fn start_with(store: Arc<dyn KvStore>, layout: Layout) -> Self {
        let config = CoordinatorConfig::new(layout);
        let c = Arc::new(
            Coordinator::open(store, Arc::new(SystemTimeSource::new()), config)
                .await
                .expect("the store opens"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, app(AppState::new(c, Some(TOKEN.into()))), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            stop: Some(tx),
            task: Some(task),
        }
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
