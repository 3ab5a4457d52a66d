//! The coordinator as a service: its options, validated once into a [`ServiceConfig`], and
//! [`run`], which opens the store and serves the API until told to stop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardflake::{Clock, Layout, SystemClock};
use shardflake_proto::auth::{Scope, LEGACY_CLUSTER_TOKEN_ENV, NODE_TOKEN_ENV};
use shardflake_runtime::credentials::{CredentialSource, Credentials};
use shardflake_runtime::reload::{self, Reload, Triggers};
use shardflake_runtime::tls::{Peer, ServerTls, ServerTlsFiles, ServiceListener};
use thiserror::Error;

use crate::config::{CoordinatorConfig, AUDIT_WINDOW_MAX, TTL_MS_MAX, TTL_MS_MIN};
use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::http::{Auth, RateLimits};
use crate::time::SystemTimeSource;
use crate::{http, store};

/// The environment variable with the etcd user's password (not a flag: flags show in `ps`).
pub const ETCD_PASSWORD_ENV: &str = "SHARDFLAKE_ETCD_PASSWORD";
/// The store file's name inside `--data-dir`.
pub const STORE_FILE_NAME: &str = "coordinator.redb";
/// How long a graceful shutdown waits for in-flight requests (long polls included), ms.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// What `shardflake coordinator` was given, before validation: one field per flag.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// `--data-dir`: directory of the store file (created if missing).
    pub data_dir: PathBuf,
    /// `--layout`: a preset or a spec; the cluster's layout.
    pub layout: String,
    /// `--shard-granularity`: the same as `granularity=` in the spec.
    pub shard_granularity: Option<String>,
    /// `--max-hosts`: lease at most this many host ids.
    pub max_hosts: Option<u32>,
    /// `--lease-ttl`: the TTL of a lease whose request names none.
    pub lease_ttl: Duration,
    /// `--lease-ttl-min`.
    pub lease_ttl_min: Duration,
    /// `--lease-ttl-max`.
    pub lease_ttl_max: Duration,
    /// `--reservation-ahead-max`.
    pub reservation_ahead_max: Duration,
    /// `--block-min`: smallest counter block (temporal layout).
    pub block_min: u64,
    /// `--ns-horizon`: a namespace block covers this much of a node's forecast demand.
    pub ns_horizon: Duration,
    /// `--ns-node-capacity`: ids/s one node serves of one namespace before the assignment
    /// adds a node to it.
    pub ns_node_capacity: u64,
    /// `--group-commit-max`: most transactions per durable commit (1 turns group commit off).
    pub group_commit_max: usize,
    /// `--etcd`: client URLs of an etcd cluster that holds the state instead of the store file
    /// (empty: the embedded store in `--data-dir`).
    pub etcd: Vec<String>,
    /// `--etcd-prefix`: the key prefix of this cluster's state in etcd.
    pub etcd_prefix: String,
    /// `--etcd-max-txn-ops`: the members' `--max-txn-ops`, which bounds a batch.
    pub etcd_max_txn_ops: usize,
    /// `--etcd-compaction`: compact etcd's history (one coordinator at a time).
    pub etcd_compaction: bool,
    /// `--etcd-compact-every`: how often.
    pub etcd_compact_every: Duration,
    /// `--etcd-quota-bytes`: the members' space quota.
    pub etcd_quota_bytes: u64,
    /// `--etcd-cacert`: CA certificate (PEM) of the members, for `https://` endpoints.
    pub etcd_cacert: Option<PathBuf>,
    /// `--etcd-cert`: client certificate (PEM), for members with client-certificate auth.
    pub etcd_cert: Option<PathBuf>,
    /// `--etcd-key`: the client certificate's key (PEM).
    pub etcd_key: Option<PathBuf>,
    /// `--etcd-user`: user name, for clusters with authentication on.
    pub etcd_user: Option<String>,
    /// `SHARDFLAKE_ETCD_PASSWORD`: that user's password.
    pub etcd_password: Option<String>,
    /// Where the accepted credentials come from: `SHARDFLAKE_{NODE,READ,ADMIN}_TOKEN` and
    /// `--{node,read,admin}-token-file`. At least one node credential is needed.
    pub credentials: Vec<CredentialSource>,
    /// `SHARDFLAKE_CLUSTER_TOKEN` is set: the single token of earlier versions, refused with
    /// a message naming the scoped credentials that replace it.
    pub legacy_cluster_token: bool,
    /// `--insecure-no-auth`: serve without credentials.
    pub insecure_no_auth: bool,
    /// `--tls-cert`, `--tls-key`, `--client-ca`, `--client-names`: serve HTTPS (and with a
    /// client CA, require client certificates).
    pub tls: Option<ServerTlsFiles>,
    /// `--rate-limit-{read,node,admin}`: requests per second per credential.
    pub rate_limits: RateLimits,
    /// `--audit-window`: grants kept in each grant log.
    pub audit_window: usize,
}

/// Shortest `--ns-horizon` (ms): a block should outlast a few coordinator round trips.
pub const NS_HORIZON_MS_MIN: u64 = 100;
/// Longest `--ns-horizon` (ms).
pub const NS_HORIZON_MS_MAX: u64 = 3_600_000;

/// A validated coordinator service: the domain configuration, where the store lives, who
/// may call it and how it is reached.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Layout, pool and limits.
    pub coordinator: CoordinatorConfig,
    /// Where the state lives.
    pub store: StoreConfig,
    /// The credentials requests must carry (`Off` only with `--insecure-no-auth`).
    pub auth: Auth,
    /// HTTPS, when configured.
    pub tls: Option<ServerTls>,
    /// Requests per second per credential.
    pub rate_limits: RateLimits,
    /// When certificate and credential files are read again.
    pub reload: Triggers,
}

/// Where the coordinator keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// The embedded store: one file in `data_dir`, for one coordinator process.
    Embedded {
        /// Directory of the store file.
        data_dir: PathBuf,
        /// Most transactions per durable commit.
        group_commit_max: usize,
    },
    /// An etcd cluster, shared by any number of coordinator processes.
    #[cfg(feature = "etcd")]
    Etcd(store::EtcdOptions),
}

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// No node credential and no `--insecure-no-auth`.
    #[error("no node credential: set {NODE_TOKEN_ENV} or --node-token-file (and the read and admin credentials the cluster's clients and operators need), or pass --insecure-no-auth on a trusted network")]
    NoToken,
    /// The single shared token of earlier versions is set.
    #[error("{LEGACY_CLUSTER_TOKEN_ENV} is no longer read: one token that could both read and lease let every SDK user act as a node. Give nodes SHARDFLAKE_NODE_TOKEN, SDK clients and dashboards SHARDFLAKE_READ_TOKEN, operators SHARDFLAKE_ADMIN_TOKEN (or the --*-token-file flags), and unset {LEGACY_CLUSTER_TOKEN_ENV}")]
    LegacyToken,
    /// A credential could not be read.
    #[error(transparent)]
    Credentials(#[from] shardflake_runtime::credentials::CredentialsError),
    /// A certificate or key could not be read.
    #[error(transparent)]
    Tls(#[from] shardflake_runtime::tls::TlsError),
    /// An option is out of range.
    #[error("{0}")]
    Config(String),
    /// The layout is unknown or invalid.
    #[error(transparent)]
    Layout(#[from] shardflake::LayoutError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The store failed for good while serving (its file cannot be reopened).
    #[error("{0}")]
    StoreFailed(String),
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

impl ServiceConfig {
    /// Validates `o` against the layout and every limit; `now_ms` is the wall clock, to
    /// refuse a layout whose timestamp field has already overflowed.
    pub fn from_options(o: &ServiceOptions, now_ms: u64) -> Result<ServiceConfig, RunError> {
        let auth = auth_of(o)?;
        let layout = Layout::from_spec_and_granularity(&o.layout, o.shard_granularity.as_deref())?;
        layout.check_time(now_ms)?;
        let mut c = CoordinatorConfig::new(layout);
        if let Some(n) = o.max_hosts {
            if n == 0 || n > c.pool_size {
                return Err(RunError::Config(format!(
                    "--max-hosts {n} is out of range 1..={} for layout `{}`",
                    c.pool_size, o.layout
                )));
            }
            c.pool_size = n;
        }
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        c.ttl_ms_min = ms(o.lease_ttl_min).max(TTL_MS_MIN);
        c.ttl_ms_max = ms(o.lease_ttl_max).min(TTL_MS_MAX);
        c.ttl_ms_default = ms(o.lease_ttl);
        if c.ttl_ms_min > c.ttl_ms_max || !(c.ttl_ms_min..=c.ttl_ms_max).contains(&c.ttl_ms_default)
        {
            return Err(RunError::Config(format!(
                "--lease-ttl {} ms must lie within --lease-ttl-min..=--lease-ttl-max ({}..={} ms, bounded by {TTL_MS_MIN}..={TTL_MS_MAX})",
                c.ttl_ms_default, c.ttl_ms_min, c.ttl_ms_max
            )));
        }
        c.reservation_ahead_ms_max = ms(o.reservation_ahead_max);
        c.block_min = o.block_min.max(1);
        c.ns_horizon_ms = ms(o.ns_horizon);
        if !(NS_HORIZON_MS_MIN..=NS_HORIZON_MS_MAX).contains(&c.ns_horizon_ms) {
            return Err(RunError::Config(format!(
                "--ns-horizon {} ms is out of range {NS_HORIZON_MS_MIN}..={NS_HORIZON_MS_MAX} ms",
                c.ns_horizon_ms
            )));
        }
        if o.ns_node_capacity == 0 {
            return Err(RunError::Config(
                "--ns-node-capacity must be at least 1 (ids per second)".into(),
            ));
        }
        c.ns_node_capacity_per_s = o.ns_node_capacity;
        if !(1..=AUDIT_WINDOW_MAX).contains(&o.audit_window) {
            return Err(RunError::Config(format!(
                "--audit-window {} is out of range 1..={AUDIT_WINDOW_MAX}",
                o.audit_window
            )));
        }
        c.audit_window = o.audit_window;
        Ok(ServiceConfig {
            coordinator: c,
            store: store_config(o)?,
            auth,
            tls: o.tls.clone().map(ServerTls::load).transpose()?,
            rate_limits: o.rate_limits,
            reload: Triggers::default(),
        })
    }

    /// [`ServiceConfig::from_options`] on the system clock.
    pub fn from_options_now(o: &ServiceOptions) -> Result<ServiceConfig, RunError> {
        Self::from_options(o, SystemClock.now_ms())
    }
}

/// The credentials `o` names: refused when the old single token is set, or when no node
/// credential is given without `--insecure-no-auth`.
fn auth_of(o: &ServiceOptions) -> Result<Auth, RunError> {
    if o.legacy_cluster_token {
        return Err(RunError::LegacyToken);
    }
    if o.insecure_no_auth {
        return Ok(Auth::Off);
    }
    let credentials = Credentials::load(o.credentials.clone())?;
    if !credentials.has_scope(Scope::Node) {
        return Err(RunError::NoToken);
    }
    Ok(Auth::Credentials(credentials))
}

/// The store `o` names: etcd when `--etcd` is given, else the embedded store.
fn store_config(o: &ServiceOptions) -> Result<StoreConfig, RunError> {
    if o.group_commit_max == 0 {
        return Err(RunError::Config(
            "--group-commit-max must be at least 1 (1 turns group commit off)".into(),
        ));
    }
    if o.etcd.is_empty() {
        return Ok(StoreConfig::Embedded {
            data_dir: o.data_dir.clone(),
            group_commit_max: o.group_commit_max,
        });
    }
    #[cfg(feature = "etcd")]
    {
        let mut etcd = store::EtcdOptions::new(&o.etcd, &o.etcd_prefix)
            .map_err(RunError::Config)?
            .with_batch_max(o.group_commit_max)
            .with_max_txn_ops(o.etcd_max_txn_ops)
            .and_then(|e| e.with_compaction(o.etcd_compaction, o.etcd_compact_every))
            .and_then(|e| e.with_quota_bytes(o.etcd_quota_bytes))
            .map_err(RunError::Config)?;
        match &o.etcd_cacert {
            Some(ca) => {
                etcd = etcd
                    .with_tls_files(ca, o.etcd_cert.as_deref(), o.etcd_key.as_deref())
                    .map_err(RunError::Config)?;
            }
            None if o.etcd_cert.is_some() || o.etcd_key.is_some() => {
                return Err(RunError::Config(
                    "--etcd-cert and --etcd-key need --etcd-cacert (and https:// endpoints)".into(),
                ));
            }
            None => {}
        }
        if let Some(user) = &o.etcd_user {
            let Some(password) = &o.etcd_password else {
                return Err(RunError::Config(format!(
                    "--etcd-user {user}: set its password in {ETCD_PASSWORD_ENV}"
                )));
            };
            etcd = etcd.with_user(user, password);
        }
        etcd.check().map_err(RunError::Config)?;
        Ok(StoreConfig::Etcd(etcd))
    }
    #[cfg(not(feature = "etcd"))]
    {
        Err(RunError::Config(
            "--etcd: this binary was built without the etcd backend; build it with `cargo build --release -p shardflake-cli --features etcd` (needs protoc)".into(),
        ))
    }
}

/// The store's housekeeping ([`crate::Housekeeper`]) every [`crate::ASSIGN_INTERVAL_MS`].
/// A failing store backs the loop off (up to 30 s), logged once per change of state.
async fn housekeeping(coordinator: Arc<Coordinator>) {
    let base = Duration::from_millis(crate::ASSIGN_INTERVAL_MS);
    let mut wait = base;
    let mut failing: Option<String> = None;
    let mut keeper = crate::Housekeeper::new(&coordinator);
    loop {
        tokio::time::sleep(wait).await;
        match keeper.pass(&coordinator).await {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("housekeeping: the store answers again");
                }
                wait = base;
            }
            Err(e) => {
                let reason = e.to_string();
                if failing.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(error = %reason, "housekeeping failed; retrying with backoff");
                    failing = Some(reason);
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// How often the service asks its store whether it can still recover.
const STORE_WATCH_MS: u64 = 1_000;

/// Resolves with the reason once `store` reports that it cannot recover by itself.
async fn store_failure(store: Arc<dyn store::KvStore>) -> String {
    loop {
        if let store::StoreHealth::Failed(why) = store.health().await {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(STORE_WATCH_MS)).await;
    }
}

/// Serves `app` on `listener` (plain TCP, or [`ServiceListener::tls`]) until `shutdown`
/// resolves, then waits for in-flight requests.
pub async fn serve(
    listener: impl Into<ServiceListener>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener.into(),
        app.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Says loudly what an operator must know before the first request: authentication off,
/// or plain HTTP on an address other machines reach (credentials and grants in clear).
fn warn_about_exposure(config: &ServiceConfig, local: std::net::SocketAddr) {
    if matches!(config.auth, Auth::Off) {
        tracing::warn!("AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach {local} can lease host ids");
    }
    if config.tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!("PLAIN HTTP ON {local}, WHICH OTHER MACHINES CAN REACH: credentials, lease secrets and grants cross the network in clear; serve HTTPS with --tls-cert and --tls-key");
    }
}

/// Opens the store in `config.data_dir` and serves the coordinator on `listener` until
/// `shutdown` resolves; in-flight requests (long polls included) then get
/// [`SHUTDOWN_GRACE_MS`] to finish. Logs a `listening` line with the bound address first.
/// Needs a tokio runtime.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ServiceConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let io = |context: String| move |source| RunError::Io { context, source };
    let (store, redb, location): (Arc<dyn store::KvStore>, _, String) = match &config.store {
        StoreConfig::Embedded {
            data_dir,
            group_commit_max,
        } => {
            std::fs::create_dir_all(data_dir)
                .map_err(io(format!("cannot create {}", data_dir.display())))?;
            let path = data_dir.join(STORE_FILE_NAME);
            let redb = Arc::new(store::RedbStore::open(
                &path,
                store::RedbOptions {
                    batch_max: *group_commit_max,
                },
            )?);
            (redb.clone(), Some(redb), path.display().to_string())
        }
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(options) => {
            let etcd = store::EtcdStore::connect(options.clone()).await?;
            let location = format!(
                "etcd {} under {}",
                options.endpoints.join(","),
                options.prefix
            );
            (Arc::new(etcd), None, location)
        }
    };
    tracing::info!(store = %location, "store connected");
    let result = run_with_store(listener, config, store, shutdown).await;
    // Every commit is durable when answered, so dropping a store that is still shared (an
    // aborted handler) loses nothing; closing it just joins the writer thread.
    if let Some(Ok(s)) = redb.map(Arc::try_unwrap) {
        s.close().await;
    }
    tracing::info!("coordinator stopped");
    result
}

/// [`run`] on a store already open: serves the coordinator over `store` on `listener`
/// until `shutdown` resolves, or until the store reports that it cannot recover
/// ([`RunError::StoreFailed`]). `config.store` is not read.
pub async fn run_with_store(
    listener: tokio::net::TcpListener,
    config: ServiceConfig,
    store: Arc<dyn store::KvStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let io = |context: String| move |source| RunError::Io { context, source };
    let local = listener.local_addr().map_err(io("local address".into()))?;
    warn_about_exposure(&config, local);
    let c = config.coordinator;
    tracing::info!(

        layout = %c.layout,
        pool_size = c.pool_size,
        ttl_ms = c.ttl_ms_default,
        "coordinator starting; every existing lease counts as live for one TTL"
    );
    let coordinator = Arc::new(
        Coordinator::open(store.clone(), Arc::new(SystemTimeSource::new()), c)
            .await
            .map_err(RunError::Coordinator)?,
    );
    tracing::info!(store_id = %coordinator.store_id(), "store opened");
    let mut reloadable: Vec<Arc<dyn Reload>> = Vec::new();
    if let Auth::Credentials(c) = &config.auth {
        reloadable.push(Arc::new(c.clone()));
    }
    let listener = match &config.tls {
        Some(tls) => {
            reloadable.push(Arc::new(tls.clone()));
            ServiceListener::tls(listener, tls.clone())
        }
        None => ServiceListener::plain(listener),
    };
    let reloader = reload::spawn(reloadable, config.reload);
    let state = http::AppState::with_limits(coordinator.clone(), config.auth, config.rate_limits);
    let app = http::app(state);
    let assigner = tokio::spawn(housekeeping(coordinator.clone()));
    let report_writer = coordinator.start_report_writer();
    let scheme = if listener.is_tls() { "https" } else { "http" };
    tracing::info!(addr = %local, scheme, "listening");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(serve(listener, app, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let mut failed = None;
    let joined = tokio::select! {
        r = &mut server => r,
        why = store_failure(store.clone()) => {
            tracing::error!(error = %why, "the store cannot recover; stopping so that a supervisor restarts the coordinator");
            failed = Some(why);
            let _ = stop_tx.send(true);
            match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
        _ = shutdown => {
            tracing::info!("finishing in-flight requests");
            let _ = stop_tx.send(true);
            // Long polls may hold connections open: give in-flight requests a bounded grace
            // time, then stop.
            match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let result = match (joined, failed) {
        (_, Some(why)) => Err(RunError::StoreFailed(why)),
        (Ok(r), None) => r.map_err(io("serving failed".into())),
        (Err(e), None) => Err(RunError::Config(format!("server task failed: {e}"))),
    };
    assigner.abort();
    report_writer.abort();
    reloader.abort();
    let _ = assigner.await;
    drop(coordinator);
    drop(store);
    result
}
