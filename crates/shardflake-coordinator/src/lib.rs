//! The shardflake coordinator: leases host ids to generator nodes, persists their reservations
//! before they may use them, hands out counter blocks for temporal shards, and promotes
//! standbys when a host fails.
//!
//! * [`store`]: the [`store::KvStore`] trait (compare-and-swap transactions), the embedded
//!   [`store::RedbStore`] with group commit, an in-memory store, and the conformance suite.
//! * [`Coordinator`]: the rules, stateless over a store.
//! * [`http`]: the axum API.
//! * [`CoordinatorArgs`] and [`run_coordinator`]: what `shardflake coordinator` runs.
//!
//! # Why ids stay unique
//!
//! Every grant of a host id comes with a fencing token larger than every token before it
//! (a persisted counter, incremented in the same transaction as the grant). A holder may
//! issue a timestamp (or a counter value) only at or below a bound the coordinator has
//! persisted for it, and the coordinator persists a new bound only in a compare-and-swap
//! transaction that checks the caller's token is still the id's current token and its lease
//! is live. The next holder of an id starts strictly above the previous holders' persisted
//! bound (counter blocks: above the high-water mark of every block of that shard and host).
//! So a holder that lost its lease — paused, partitioned, or just slow — can still only issue
//! below a bound that its successor starts above, and can never raise that bound again:
//! uniqueness does not depend on any clock. Clocks only decide *when* an id is handed over
//! (availability), and there the rules err on the late side: the holder measures its lease
//! from the send time of its last acknowledged renewal minus a drift margin, the coordinator
//! from after it committed that renewal, and a restarted coordinator treats every lease as
//! live for one full TTL on its monotonic clock, because it cannot know when the last renewal
//! before the crash was acknowledged.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use shardflake::Layout;
//! use shardflake_coordinator::{store::MemStore, Coordinator, CoordinatorConfig, ManualTime};
//! use shardflake_proto::coord::{AcquireRequest, ReservationRequest};
//!
//! let time = ManualTime::new(1_800_000_000_000);
//! let c = Coordinator::open(
//!     Arc::new(MemStore::new()),
//!     Arc::new(time.clone()),
//!     CoordinatorConfig::new(Layout::preset("twitter").unwrap()),
//! )
//! .await
//! .unwrap();
//! let lease = c.acquire(&AcquireRequest { name: "node-a".into(), ..Default::default() }).await.unwrap();
//! assert_eq!((lease.host_id, lease.token, lease.start_above_ms), (0, 1, 0));
//! let r = c
//!     .extend_reservation(0, &ReservationRequest { token: 1, until_ms: 1_800_000_002_000 })
//!     .await
//!     .unwrap();
//! assert_eq!(r.reserved_until_ms, 1_800_000_002_000);
//! # });
//! ```
#![deny(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardflake::Layout;
use shardflake_proto::coord::CLUSTER_TOKEN_ENV;
use thiserror::Error;

mod blocks;
mod config;
mod coordinator;
mod error;
pub mod forecast;
pub mod http;
mod leases;
mod meta;
mod records;
mod standby;
mod status;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod time;

pub use config::{
    CoordinatorConfig, BLOCK_MIN_DEFAULT, POOL_SIZE_MAX, RESERVATION_AHEAD_MS_MAX_DEFAULT,
    TTL_MS_DEFAULT, TTL_MS_MAX, TTL_MS_MIN,
};
pub use coordinator::{Coordinator, Metrics};
pub use error::CoordError;
pub use meta::ClusterRecord;
pub use records::{BlockRecord, HostRecord, TemporalRecord};
pub use standby::STANDBY_WAIT_MS_MAX;
#[cfg(any(test, feature = "testing"))]
pub use testing::domain as domain_conformance;
pub use time::{ManualTime, SystemTimeSource, TimeSource};

/// The store file's name inside `--data-dir`.
pub const STORE_FILE_NAME: &str = "coordinator.redb";
/// How long a graceful shutdown waits for in-flight requests (long polls included).
const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Options of `shardflake coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory of the store file (created if missing).
    #[arg(long, default_value = "./shardflake-coordinator-data")]
    pub data_dir: PathBuf,
    /// Layout whose host ids are leased: a preset or a spec (`temporal:granularity=5s`). It
    /// is the cluster's layout: nodes started without `--layout` serve it, and nodes whose
    /// layout differs refuse to start. A store keeps the layout it was created with.
    #[arg(long, default_value = "twitter")]
    pub layout: String,
    /// Shard length of the temporal layout (`1h`, `30m`, `5s`, ...); the same as adding
    /// `granularity=` to the spec.
    #[arg(long)]
    pub shard_granularity: Option<String>,
    /// Lease at most this many host ids (default: every value of the layout's node fields).
    #[arg(long)]
    pub max_hosts: Option<u32>,
    /// Lease TTL when a node asks for none.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Shortest lease TTL a node may ask for.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub lease_ttl_min: Duration,
    /// Longest lease TTL a node may ask for.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lease_ttl_max: Duration,
    /// How far ahead of the coordinator's clock a reservation may reach.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reservation_ahead_max: Duration,
    /// Smallest counter block (temporal layout).
    #[arg(long, default_value_t = BLOCK_MIN_DEFAULT)]
    pub block_min: u64,
    /// Most transactions per durable commit (1 turns group commit off).
    #[arg(long, default_value_t = store::GROUP_COMMIT_BATCH_MAX_DEFAULT)]
    pub group_commit_max: usize,
    /// The cluster token every request must carry as `Authorization: Bearer <token>`.
    #[arg(long, env = CLUSTER_TOKEN_ENV, hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// Serve without authentication (only on a trusted network).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Log format on stderr (`RUST_LOG` filters, default `info`).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "SHARDFLAKE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). Does nothing if a
/// subscriber is already installed.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// No cluster token and no `--insecure-no-auth`.
    #[error("no cluster token: set {CLUSTER_TOKEN_ENV} (or pass --insecure-no-auth on a trusted network)")]
    NoToken,
    /// An option is out of range.
    #[error("{0}")]
    Config(String),
    /// The layout is unknown or invalid.
    #[error(transparent)]
    Layout(#[from] shardflake::LayoutError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The store's identity could not be read or does not fit this coordinator.
    #[error(transparent)]
    Coordinator(CoordError),
    /// Listening or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl CoordinatorArgs {
    /// The layout the coordinator leases host ids for.
    pub fn build_layout(&self) -> Result<Layout, RunError> {
        Ok(Layout::from_spec_and_granularity(
            &self.layout,
            self.shard_granularity.as_deref(),
        )?)
    }

    /// Validates the options into a [`CoordinatorConfig`].
    pub fn config(&self) -> Result<CoordinatorConfig, RunError> {
        let layout = self.build_layout()?;
        layout.check_time(shardflake::Clock::now_ms(&shardflake::SystemClock))?;
        let mut c = CoordinatorConfig::new(layout);
        if let Some(n) = self.max_hosts {
            if n == 0 || n > c.pool_size {
                return Err(RunError::Config(format!(
                    "--max-hosts {n} is out of range 1..={} for layout `{}`",
                    c.pool_size, self.layout
                )));
            }
            c.pool_size = n;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        c.ttl_ms_min = ms(self.lease_ttl_min).max(TTL_MS_MIN);
        c.ttl_ms_max = ms(self.lease_ttl_max).min(TTL_MS_MAX);
        c.ttl_ms_default = ms(self.lease_ttl);
        if c.ttl_ms_min > c.ttl_ms_max || !(c.ttl_ms_min..=c.ttl_ms_max).contains(&c.ttl_ms_default)
        {
            return Err(RunError::Config(format!(
                "--lease-ttl {} ms must lie within --lease-ttl-min..=--lease-ttl-max ({}..={} ms, bounded by {TTL_MS_MIN}..={TTL_MS_MAX})",
                c.ttl_ms_default, c.ttl_ms_min, c.ttl_ms_max
            )));
        }
        c.reservation_ahead_ms_max = ms(self.reservation_ahead_max);
        c.block_min = self.block_min.max(1);
        Ok(c)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Runs `shardflake coordinator`: sets up logging, opens the store, listens, serves until
/// SIGTERM or SIGINT.
pub fn run_coordinator(args: CoordinatorArgs) -> Result<(), RunError> {
    init_logging(args.log_format);
    let token = match (&args.cluster_token, args.insecure_no_auth) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, true) => {
            tracing::warn!("AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach {} can lease host ids", args.listen);
            None
        }
        _ => return Err(RunError::NoToken),
    };
    let config = args.config()?;
    let io = |context: String| move |source| RunError::Io { context, source };
    std::fs::create_dir_all(&args.data_dir)
        .map_err(io(format!("cannot create {}", args.data_dir.display())))?;
    let runtime = tokio::runtime::Runtime::new().map_err(io("cannot start the runtime".into()))?;
    runtime.block_on(async move {
        let path = args.data_dir.join(STORE_FILE_NAME);
        let store = Arc::new(store::RedbStore::open(
            &path,
            store::RedbOptions {
                batch_max: args.group_commit_max,
            },
        )?);
        tracing::info!(
            store = %path.display(),
            layout = %config.layout,
            pool_size = config.pool_size,
            ttl_ms = config.ttl_ms_default,
            "coordinator starting; every existing lease counts as live for one TTL"
        );
        let coordinator = Arc::new(
            Coordinator::open(store.clone(), Arc::new(SystemTimeSource::new()), config)
                .await
                .map_err(RunError::Coordinator)?,
        );
        tracing::info!(store_id = %coordinator.store_id(), "store opened");
        let app = http::app(http::AppState::new(coordinator.clone(), token));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(io(format!("cannot listen on {}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(io("local address".into()))?;
        tracing::info!(addr = %local, "listening");
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let mut server = tokio::spawn(serve(listener, app, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }));
        let joined = tokio::select! {
            r = &mut server => r,
            _ = shutdown_signal() => {
                let _ = stop_tx.send(true);
                // Long polls may hold connections open: give in-flight requests a bounded
                // grace time, then stop.
                match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let result = match joined {
            Ok(r) => r.map_err(io("serving failed".into())),
            Err(e) => Err(RunError::Config(format!("server task failed: {e}"))),
        };
        drop(coordinator);
        // Every commit is durable when answered, so dropping a store that is still shared
        // (an aborted handler) loses nothing; closing it just joins the writer thread.
        if let Ok(s) = Arc::try_unwrap(store) {
            s.close().await;
        }
        tracing::info!("coordinator stopped");
        result
    })
}
