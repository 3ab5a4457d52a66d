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
mod route;
mod stream;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake::FastRng;
use shardflake_proto::node::IDS_COUNT_MAX;
use shardflake_proto::ns::validate_name;
use shardflake_proto::ErrorCode;
use thiserror::Error;
use tokio::task::JoinHandle;

use buffer::Prefetch;
use route::{Router, Source, ROUTING_REFRESH_MIN};
use stream::Stream;
pub use stream::{IdStream, LOCAL_CHUNK_MAX};

use crate::{CoordinatorClient, ReqwestTransport, Retry, Transport};

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

/// Builds an [`IdClient`]; see each setting for its default and range.
///
/// ```
/// use std::time::Duration;
/// use shardflake_client::IdClient;
/// let b = IdClient::builder().nodes(["http://127.0.0.1:1"]).prefetch(10, 5);
/// let e = b.build().unwrap_err().to_string();
/// assert!(e.contains("prefetch"), "{e}");
/// let e = IdClient::builder().build().unwrap_err().to_string();
/// assert!(e.contains("nodes"), "{e}");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct IdClientBuilder {
    nodes: Vec<String>,
    coordinators: Vec<String>,
    token: Option<String>,
    request_timeout: Duration,
    call_timeout: Duration,
    prefetch_min: usize,
    prefetch_max: usize,
    horizon: Duration,
    validity: Option<Duration>,
    routing_refresh: Duration,
    transport: Option<Arc<dyn Transport>>,
}

impl Default for IdClientBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            coordinators: Vec::new(),
            token: None,
            request_timeout: Duration::from_millis(NODE_REQUEST_TIMEOUT_MS_DEFAULT),
            call_timeout: Duration::from_millis(CALL_TIMEOUT_MS_DEFAULT),
            prefetch_min: PREFETCH_MIN_DEFAULT,
            prefetch_max: PREFETCH_MAX_DEFAULT,
            horizon: Duration::from_millis(PREFETCH_HORIZON_MS_DEFAULT),
            validity: None,
            routing_refresh: Duration::from_millis(ROUTING_REFRESH_MS_DEFAULT),
            transport: None,
        }
    }
}

fn clean(urls: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        let u = u.into().trim().trim_end_matches('/').to_string();
        if !u.is_empty() && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

impl IdClientBuilder {
    /// Node URLs (`http://host:port`) to fetch from, 1 to [`NODES_MAX`]. Also takes one
    /// comma-separated string per item.
    pub fn nodes(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.nodes = clean(
            urls.into_iter()
                .flat_map(|u| u.into().split(',').map(str::to_string).collect::<Vec<_>>()),
        );
        self
    }

    /// Coordinator URLs to discover the nodes and the namespace assignment from
    /// (`GET /v1/routing`), instead of [`IdClientBuilder::nodes`].
    pub fn coordinators(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.coordinators = clean(
            urls.into_iter()
                .flat_map(|u| u.into().split(',').map(str::to_string).collect::<Vec<_>>()),
        );
        self
    }

    /// The cluster token, sent to the coordinators as `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Time limit of one request to one node (default
    /// [`NODE_REQUEST_TIMEOUT_MS_DEFAULT`] ms, at most [`TIMEOUT_MS_MAX`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time limit of a call that has to wait for ids, failovers included (default
    /// [`CALL_TIMEOUT_MS_DEFAULT`] ms, at most [`TIMEOUT_MS_MAX`]).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Bounds of one refill: `1 <= min <= max <= 100,000` (a node's largest batch). Defaults
    /// [`PREFETCH_MIN_DEFAULT`] and [`PREFETCH_MAX_DEFAULT`].
    pub fn prefetch(mut self, min: usize, max: usize) -> Self {
        self.prefetch_min = min;
        self.prefetch_max = max;
        self
    }

    /// A refill covers the forecast use over this long (default
    /// [`PREFETCH_HORIZON_MS_DEFAULT`] ms; 1 ms to 1 hour).
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// Drops buffered ids this long after their request was sent (default: never). Must be
    /// longer than the request timeout, or ids could expire on arrival.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = Some(validity);
        self
    }

    /// How often the routing table is reloaded from the coordinators (default
    /// [`ROUTING_REFRESH_MS_DEFAULT`] ms; at least 1 s). Failures reload it sooner.
    pub fn routing_refresh(mut self, interval: Duration) -> Self {
        self.routing_refresh = interval;
        self
    }

    /// Sends requests through `transport` (one that does not follow redirects) instead of
    /// [`ReqwestTransport::without_redirects`].
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Validates the settings and starts the client. Must run inside a tokio runtime (the
    /// refill tasks run on it); [`crate::BlockingIdClient`] brings its own.
    pub fn build(self) -> Result<IdClient, IdError> {
        let config = |m: String| Err(IdError::Config(m));
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            IdError::Config(
                "IdClient must be built inside a tokio runtime (its refill tasks run there); \
                 use BlockingIdClient outside one"
                    .into(),
            )
        })?;
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        for (name, d) in [
            ("request_timeout", self.request_timeout),
            ("call_timeout", self.call_timeout),
        ] {
            if !(1..=TIMEOUT_MS_MAX).contains(&ms(d)) {
                return config(format!(
                    "{name} {} ms is out of range 1..={TIMEOUT_MS_MAX} ms",
                    ms(d)
                ));
            }
        }
        let max = IDS_COUNT_MAX as usize;
        if !(1 <= self.prefetch_min
            && self.prefetch_min <= self.prefetch_max
            && self.prefetch_max <= max)
        {
            return config(format!(
                "prefetch bounds {}..{} must satisfy 1 <= min <= max <= {max} (a node's largest batch)",
                self.prefetch_min, self.prefetch_max
            ));
        }
        if !(1..=3_600_000).contains(&ms(self.horizon)) {
            return config(format!(
                "prefetch horizon {} ms is out of range 1..=3600000 ms",
                ms(self.horizon)
            ));
        }
        if let Some(v) = self.validity {
            if v <= self.request_timeout {
                return config(format!(
                    "validity {} ms must exceed the request timeout of {} ms, or ids could expire on arrival",
                    ms(v),
                    ms(self.request_timeout)
                ));
            }
        }
        if self.routing_refresh < ROUTING_REFRESH_MIN {
            return config(format!(
                "routing refresh {} ms is below the minimum of {} ms",
                ms(self.routing_refresh),
                ms(ROUTING_REFRESH_MIN)
            ));
        }
        let (urls, what) = match (self.nodes.is_empty(), self.coordinators.is_empty()) {
            (false, true) => (&self.nodes, "node"),
            (true, false) => (&self.coordinators, "coordinator"),
            (true, true) => {
                return config(
                    "give the node URLs (nodes) or the coordinator URLs (coordinators)".into(),
                )
            }
            (false, false) => {
                return config("give either node URLs or coordinator URLs, not both".into())
            }
        };
        if urls.len() > NODES_MAX {
            return config(format!(
                "{} {what} URLs; at most {NODES_MAX} are accepted",
                urls.len()
            ));
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return config(format!(
                "{what} URL `{bad}` must start with http:// or https://"
            ));
        }
        if self.token.is_some() && self.coordinators.is_empty() {
            return config("a token is sent to coordinators only; nodes take none".into());
        }
        let transport: Arc<dyn Transport> = match self.transport {
            Some(t) => t,
            None => Arc::new(
                ReqwestTransport::without_redirects(self.request_timeout)
                    .map_err(IdError::Config)?,
            ),
        };
        let source = if self.coordinators.is_empty() {
            Source::Nodes
        } else {
            let c = CoordinatorClient::new(self.coordinators.clone(), self.token.clone())
                .map_err(|e| IdError::Config(e.to_string()))?
                .with_timeout(self.request_timeout);
            Source::Coordinators(c)
        };
        let client_key = format!("client-{:016x}", FastRng::from_os().next_u64());
        let router = Arc::new(Router::new(
            transport,
            source,
            self.nodes,
            client_key,
            self.request_timeout,
        ));
        let prefetch = Prefetch {
            min: self.prefetch_min,
            max: self.prefetch_max,
            horizon: self.horizon,
            validity: self.validity,
        };
        let inner = Arc::new(Inner {
            config: Config {
                call_timeout: self.call_timeout,
                prefetch,
            },
            router: router.clone(),
            runtime,
            streams: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        if router.coordinators().is_some() {
            let refresh = self.routing_refresh;
            let task = inner.runtime.spawn(async move {
                let mut retry = Retry::new(
                    "routing table refresh",
                    ROUTING_REFRESH_MIN,
                    refresh.max(ROUTING_REFRESH_MIN),
                );
                // The first table is loaded by the first request; this keeps it fresh.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(refresh) => {}
                        () = router.refresh.notified() => {
                            tokio::time::sleep(ROUTING_REFRESH_MIN).await;
                        }
                    }
                    router.refresh_table(&mut retry).await;
                }
            });
            inner.tasks.lock().expect("poisoned").push(task);
        }
        let client = IdClient { inner };
        client.stream_of(None)?;
        Ok(client)
    }
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
        Ok(self.next_ids(1).await?[0])
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
        Ok(self.next_ids(1).await?[0])
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
