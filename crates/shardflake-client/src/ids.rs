//! [`IdClient`]: ids from shardflake nodes, prefetched ahead of need, with failover.
//!
//! A client holds one *stream* per kind of id it hands out: plain ids (`GET /ids` of any
//! node) and one per namespace (`GET /ns/{name}/ids` of the nodes serving it). Each stream has
//! a local buffer that a background task refills before it runs out, sized from a forecast
//! of the caller's own rate of use (Holt's method, [`shardflake::forecast::RateForecast`]):
//! a refill covers the forecast use over the prefetch horizon, between the configured
//! minimum and maximum. At a steady rate a call never waits on the network.
//!
//! * **Failover.** A connection error, a timeout or a 5xx moves the request to the next node;
//!   the caller sees an error only when every node failed during its call (or the call's
//!   time limit passed), and the error names each node and what it answered. A 4xx (a bad
//!   request, an unknown namespace) comes back at once: every node would say the same.
//! * **Exactly once.** An id leaves the buffer once; a failed request adds nothing.
//! * **Validity.** With [`IdClientBuilder::validity`], ids buffered longer than that are
//!   dropped unused (Hazelcast's prefetch validity), so their timestamps stay fresh.
//! * **Fast path.** [`IdClient::stream`] gives a caller-owned [`IdStream`] that takes ids a
//!   chunk at a time and hands them out without a lock.
//!
//! ```no_run
//! # async fn f() -> Result<(), shardflake_client::IdError> {
//! use std::time::Duration;
//! use shardflake_client::IdClient;
//!
//! let client = IdClient::builder()
//!     .nodes(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
//!     .prefetch(1_000, 50_000)
//!     .validity(Duration::from_secs(60))
//!     .build()?;
//! let id = client.next_id().await?;
//! let batch = client.next_ids(100).await?;
//! let order_no = client.ns("orders")?.next_id().await?;
//! # let _ = (id, batch, order_no);
//! # Ok(()) }
//! ```

mod buffer;
mod builder;
mod route;
mod stream;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake_proto::ns::validate_name;
use shardflake_proto::ErrorCode;
use thiserror::Error;
use tokio::task::JoinHandle;

use buffer::Prefetch;
pub use builder::IdClientBuilder;
use route::Router;
use stream::Stream;
pub use stream::{IdStream, LOCAL_CHUNK_MAX};

/// Default time limit of one request to one node.
pub const NODE_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default time limit of a call that waits for ids (all its failovers included).
pub const CALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default smallest refill.
pub const PREFETCH_MIN_DEFAULT: usize = 100;
/// Default largest refill.
pub const PREFETCH_MAX_DEFAULT: usize = 10_000;
/// Default prefetch horizon: a refill covers this much forecast use.
pub const PREFETCH_HORIZON_MS_DEFAULT: u64 = 1_000;
/// Default interval of routing-table refreshes (with coordinators).
pub const ROUTING_REFRESH_MS_DEFAULT: u64 = 10_000;
/// Most node URLs a client takes.
pub const NODES_MAX: usize = 64;
/// Most namespaces one client streams.
pub const NAMESPACES_MAX: usize = 1_024;
/// Most ids one [`IdClient::next_ids`] call returns.
pub const NEXT_IDS_MAX: usize = 1_000_000;
/// Longest time limit accepted for a request or a call, in ms.
pub const TIMEOUT_MS_MAX: u64 = 600_000;

/// One node's failure in a round of failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node's URL.
    pub url: String,
    /// What went wrong: the connection error, the time limit, or the status and error code.
    pub error: String,
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.error)
    }
}

fn list(failures: &[NodeFailure]) -> String {
    failures
        .iter()
        .map(NodeFailure::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn last_failure(e: &Option<Box<IdError>>) -> String {
    match e {
        Some(e) => format!("; last failure: {e}"),
        None => "; no node failed, they were slow".into(),
    }
}

/// Why an [`IdClient`] call failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum IdError {
    /// A node refused the request with a 4xx (not retried elsewhere: every node would say the
    /// same). An unknown namespace is a 404.
    #[error("node {node} refused the request ({status} {}): {message}", code.as_str())]
    Api {
        /// The URL asked.
        node: String,
        /// The HTTP status.
        status: u16,
        /// The stable code ([`ErrorCode::Unknown`] for a code this version does not know).
        code: ErrorCode,
        /// The node's message.
        message: String,
    },
    /// Every node failed within the call's time limit.
    #[error("no node could serve {stream} ({} tried): {}", failures.len(), list(failures))]
    Unavailable {
        /// `plain ids` or `namespace `name``.
        stream: String,
        /// Each node tried, in order, with its error.
        failures: Vec<NodeFailure>,
    },
    /// The call's time limit passed before ids arrived.
    #[error(
        "no ids for {stream} within the call's time limit of {waited_ms} ms{}",
        last_failure(last)
    )]
    Timeout {
        /// `plain ids` or `namespace `name``.
        stream: String,
        /// The time limit, in ms.
        waited_ms: u64,
        /// The last failure of a refill, if one failed.
        last: Option<Box<IdError>>,
    },
    /// A namespace name that breaks the name rule.
    #[error("invalid namespace name: {0}")]
    InvalidNamespace(String),
    /// A count outside what one call returns.
    #[error("asked for {asked} ids; one call returns 1..={max}")]
    CountOutOfRange {
        /// The count asked for.
        asked: usize,
        /// The largest count.
        max: usize,
    },
    /// A bad builder setting, or no runtime to run in.
    #[error("{0}")]
    Config(String),
}

impl IdError {
    /// The API error code, if a node answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            IdError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A short name of the failure, for logs: the API code, `unavailable`, `timeout`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            IdError::Api { code, .. } => code.as_str(),
            IdError::Unavailable { .. } => "unavailable",
            IdError::Timeout { .. } => "timeout",
            IdError::InvalidNamespace(_) => "invalid_namespace",
            IdError::CountOutOfRange { .. } => "count_out_of_range",
            IdError::Config(_) => "config",
        }
    }
}

/// The validated settings of a client.
#[derive(Debug, Clone)]
struct Config {
    call_timeout: Duration,
    prefetch: Prefetch,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    router: Arc<Router>,
    runtime: tokio::runtime::Handle,
    streams: Mutex<HashMap<Option<String>, Arc<Stream>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
    }
}

/// An async client of the id nodes: plain ids and namespaces, prefetched, with failover.
///
/// Cheap to clone (one shared state); the background tasks stop when the last clone, and the
/// last [`Namespace`] and [`IdStream`] made from it, are dropped. The crate docs describe
/// prefetching, failover and validity.
#[derive(Debug, Clone)]
pub struct IdClient {
    inner: Arc<Inner>,
}

impl IdClient {
    /// A builder with the defaults.
    pub fn builder() -> IdClientBuilder {
        IdClientBuilder::default()
    }

    fn stream_of(&self, ns: Option<&str>) -> Result<Arc<Stream>, IdError> {
        let mut streams = self.inner.streams.lock().expect("poisoned");
        let key = ns.map(str::to_string);
        if let Some(s) = streams.get(&key) {
            return Ok(s.clone());
        }
        if streams.len() > NAMESPACES_MAX {
            return Err(IdError::Config(format!(
                "this client already streams {NAMESPACES_MAX} namespaces, the most it takes"
            )));
        }
        let stream = Arc::new(Stream::new(key.clone(), self.inner.config.prefetch));
        let task = self
            .inner
            .runtime
            .spawn(stream.clone().refill(self.inner.router.clone()));
        self.inner.tasks.lock().expect("poisoned").push(task);
        streams.insert(key, stream.clone());
        Ok(stream)
    }

    fn default_stream(&self) -> Arc<Stream> {
        self.stream_of(None).expect("the default stream exists")
    }

    /// The next plain id (from any node).
    ///
    /// Returns at once from the buffer in steady state; otherwise waits for a refill up to the
    /// call timeout. Fails with [`IdError::Unavailable`] when every node failed during the
    /// call, [`IdError::Timeout`] when the time limit passed, [`IdError::Api`] on a node's
    /// 4xx.
    pub async fn next_id(&self) -> Result<u64, IdError> {
        self.default_stream()
            .take_one(self.inner.config.call_timeout)
            .await
    }

    /// The next `n` plain ids (`1..=`[`NEXT_IDS_MAX`]), in the order they were fetched.
    pub async fn next_ids(&self, n: usize) -> Result<Vec<u64>, IdError> {
        take(&self.default_stream(), n, self.inner.config.call_timeout).await
    }

    /// A handle on the namespace `name` (checked with the name rule,
    /// [`shardflake_proto::ns::validate_name`]); the first handle starts its stream.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let client = shardflake_client::IdClient::builder()
    ///     .nodes(["http://127.0.0.1:1"])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(client.ns("orders").unwrap().name(), "orders");
    /// assert!(client.ns("Orders").unwrap_err().to_string().contains("'O'"));
    /// # }
    /// ```
    pub fn ns(&self, name: &str) -> Result<Namespace, IdError> {
        validate_name(name).map_err(IdError::InvalidNamespace)?;
        Ok(Namespace {
            client: self.clone(),
            stream: self.stream_of(Some(name))?,
        })
    }

    /// A caller-owned fast-path handle on the plain ids (see [`IdStream`]).
    pub fn stream(&self) -> IdStream {
        IdStream::new(self.clone(), self.default_stream())
    }

    /// The state of the plain-id stream.
    pub fn stats(&self) -> StreamStats {
        StreamStats::of(&self.default_stream())
    }
}

async fn take(stream: &Stream, n: usize, timeout: Duration) -> Result<Vec<u64>, IdError> {
    if !(1..=NEXT_IDS_MAX).contains(&n) {
        return Err(IdError::CountOutOfRange {
            asked: n,
            max: NEXT_IDS_MAX,
        });
    }
    stream.take(n, timeout).await
}

/// A snapshot of a stream's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Ids buffered.
    pub buffered: usize,
    /// The forecast rate of use, ids per second.
    pub forecast_per_s: f64,
    /// Ids dropped unused because they outlived the validity.
    pub expired: u64,
}

impl StreamStats {
    fn of(s: &Stream) -> Self {
        let (buffered, forecast_per_s, expired) = s.stats();
        Self {
            buffered,
            forecast_per_s,
            expired,
        }
    }
}

/// A namespace of an [`IdClient`]: the same methods, for `GET /ns/{name}/ids`.
#[derive(Debug, Clone)]
pub struct Namespace {
    client: IdClient,
    stream: Arc<Stream>,
}

impl Namespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.stream.ns.as_deref().expect("a namespace stream")
    }

    /// The next id of the namespace; errors as [`IdClient::next_id`] (an unknown namespace is
    /// an [`IdError::Api`] with a 404).
    pub async fn next_id(&self) -> Result<u64, IdError> {
        self.stream
            .take_one(self.client.inner.config.call_timeout)
            .await
    }

    /// The next `n` ids of the namespace (`1..=`[`NEXT_IDS_MAX`]).
    pub async fn next_ids(&self, n: usize) -> Result<Vec<u64>, IdError> {
        take(&self.stream, n, self.client.inner.config.call_timeout).await
    }

    /// A caller-owned fast-path handle on the namespace (see [`IdStream`]).
    pub fn stream(&self) -> IdStream {
        IdStream::new(self.client.clone(), self.stream.clone())
    }

    /// The state of the namespace's stream.
    pub fn stats(&self) -> StreamStats {
        StreamStats::of(&self.stream)
    }
}
