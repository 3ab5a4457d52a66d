//! The node's shared state: the swappable generator handle, the reservation keeper that
//! makes every bound durable before it is used, readiness, and the clean-shutdown fence.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use shardflake::{
    format_rfc3339_ms, Clock, ClockPolicy, CounterBlock, CounterSupplier, GenerateError, IdRange,
    Layout, LayoutError, Reservation, Reserver, SnowflakeGenerator, SystemClock, TemporalGenerator,
};
use shardflake_client::{
    ActiveLease, CoordinatorClient, KeeperConfig, LeaseKeeper, MemberState, Retry,
};
use shardflake_proto::node::{NodeMode, ReadyResponse};
use shardflake_proto::{ErrorCode, ErrorDetail};
use thiserror::Error;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{ClusterConfig, NodeClockPolicy, NodeConfig};
use crate::metrics::{Metrics, Snapshot};
use crate::state_file::{Reserved, StateError, StateFile, StateIdentity};

/// How far ahead of the later of the clock and the last issued timestamp the keeper reserves.
pub const RESERVE_WINDOW_MS: u64 = 2_000;
/// The keeper extends the reservation once less than this is left.
pub const EXTEND_BELOW_HEADROOM_MS: u64 = 1_000;
/// How often the keeper looks at the headroom without being woken.
pub const KEEPER_INTERVAL_MS: u64 = 100;
/// The longest pause between retries of a failing state write.
pub const KEEPER_RETRY_MS_MAX: u64 = 1_000;
/// Smallest temporal counter block (the first block of a process has this size): a
/// millisecond or two at full speed, a negligible 1/8192 of the default 33-bit counter range
/// left unused by a crash.
pub const TEMPORAL_BLOCK_MIN: u64 = 1 << 20;
/// Largest temporal counter block: an eighth of the default 33-bit counter range.
pub const TEMPORAL_BLOCK_MAX: u64 = 1 << 30;
/// Counter blocks are sized to last about this long at the observed rate, so a busy node
/// writes its state file about once per this period.
pub const TEMPORAL_BLOCK_TARGET_MS: u64 = 2_000;
/// The keeper grants the next shard's first block this long before the shard starts, so the
/// boundary needs no request.
pub const TEMPORAL_PREFETCH_MS: u64 = 2_000;
/// The longest a request waits in total for the reservation or a counter block.
pub const EXTENSION_WAIT_MS_MAX: u64 = 500;
/// How long a waiting request sleeps before looking again if no extension wakes it.
pub const EXTENSION_POLL_MS: u64 = 5;
/// The longest the shutdown waits for in-flight generator calls before it writes the exact
/// last issued bound (after that it keeps the reserved bound, which is also safe).
pub const SHUTDOWN_FENCE_WAIT_MS: u64 = 1_000;

/// The clock the node runs on.
pub type DynClock = Arc<dyn Clock>;

/// Where ids come from. Swapped as a whole (cluster mode gets a new generator with a new
/// host id; shutdown swaps in [`IdSource::Fenced`]).
pub(crate) enum IdSource {
    Snowflake(SnowflakeGenerator<DynClock>),
    Temporal(TemporalGenerator<DynClock>),
    /// Cluster mode: a generator for the lease's node id. An id counts only if the lease is
    /// still valid *after* it was generated, so a process paused between the two (GC,
    /// `SIGSTOP`) cannot hand out an id made after its lease ran out.
    Leased(SnowflakeGenerator<DynClock>, Arc<ActiveLease>),
    /// Cluster mode with the temporal layout; blocks come from the coordinator.
    LeasedTemporal(Arc<TemporalGenerator<DynClock>>, Arc<ActiveLease>),
    /// Issues nothing.
    Fenced,
}

impl IdSource {
    #[inline]
    pub(crate) fn next_id(&self) -> Result<u64, GenerateError> {
        match self {
            IdSource::Snowflake(g) => g.next_id(),
            IdSource::Temporal(g) => g.next_id(),
            IdSource::Leased(g, lease) => {
                let id = g.next_id()?;
                lease.check()?;
                Ok(id)
            }
            IdSource::LeasedTemporal(g, lease) => {
                let id = g.next_id()?;
                lease.check()?;
                Ok(id)
            }
            IdSource::Fenced => Err(GenerateError::LeaseLost),
        }
    }

    #[inline]
    pub(crate) fn next_range(&self, max: u64) -> Result<IdRange, GenerateError> {
        match self {
            IdSource::Snowflake(g) => g.next_range(max),
            IdSource::Temporal(g) => g.next_range(max),
            IdSource::Leased(g, lease) => {
                let r = g.next_range(max)?;
                lease.check()?;
                Ok(r)
            }
            IdSource::LeasedTemporal(g, lease) => {
                let r = g.next_range(max)?;
                lease.check()?;
                Ok(r)
            }
            IdSource::Fenced => Err(GenerateError::LeaseLost),
        }
    }
}

/// Wakes the keeper from the hot path without blocking: the generator's [`Reserver`] and the
/// temporal generator's [`CounterSupplier`].
#[derive(Default)]
pub(crate) struct Wake {
    notify: Notify,
    requested_until_ms: AtomicU64,
    blocks: Mutex<BTreeMap<u64, u64>>,
}

impl Reserver for Wake {
    fn request_extension(&self, needed_until_ms: u64) {
        self.requested_until_ms
            .fetch_max(needed_until_ms, Ordering::AcqRel);
        self.notify.notify_one();
    }
}

impl CounterSupplier for Wake {
    fn request_block(&self, shard: u64, after_counter: u64) {
        {
            let mut b = self.blocks.lock().expect("block request mutex");
            let e = b.entry(shard).or_insert(after_counter);
            *e = (*e).max(after_counter);
        }
        self.notify.notify_one();
    }
}

/// How the reservation is made durable. Standalone: the local state file. (Cluster mode
/// adds a variant whose bound is persisted by the coordinator under the lease's token.)
pub(crate) enum Backing {
    Standalone(LocalBacking),
    /// Cluster mode: the coordinator persists every bound (under the lease's token) before
    /// the lease keeper raises the generator's reservation; nothing is written locally.
    Cluster(Mutex<Reserved>),
}

pub(crate) struct LocalBacking {
    file: StateFile,
    persisted: Mutex<Reserved>,
}

impl Backing {
    fn persisted(&self) -> MutexGuard<'_, Reserved> {
        match self {
            Backing::Standalone(l) => l.persisted.lock().expect("persisted state mutex"),
            Backing::Cluster(r) => r.lock().expect("persisted state mutex"),
        }
    }

    /// Applies `change` to a copy of the persisted state, writes it durably, and only then
    /// makes it the persisted state. Blocking: call from a blocking context.
    fn persist(
        &self,
        clock: &DynClock,
        metrics: &Metrics,
        change: impl FnOnce(&mut Reserved),
    ) -> Result<Reserved, StateError> {
        match self {
            Backing::Standalone(l) => {
                let mut persisted = l.persisted.lock().expect("persisted state mutex");
                let mut next = persisted.clone();
                change(&mut next);
                next.written_at_ms = clock.now_ms();
                let started = Instant::now();
                let r = l.file.store(&next);
                metrics.state_write_last_us.store(
                    started.elapsed().as_micros().min(u64::MAX as u128) as u64,
                    Ordering::Relaxed,
                );
                match r {
                    Ok(()) => {
                        metrics.state_writes.fetch_add(1, Ordering::Relaxed);
                        *persisted = next.clone();
                        Ok(next)
                    }
                    Err(e) => {
                        metrics.state_write_errors.fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                }
            }
            Backing::Cluster(r) => Ok(r.lock().expect("persisted state mutex").clone()),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Backing::Standalone(l) => l.file.path(),
            Backing::Cluster(_) => Path::new("(none: cluster mode)"),
        }
    }
}

/// Block sizing and prefetch bookkeeping of the temporal keeper.
#[derive(Default)]
struct TemporalKeeper {
    /// Per shard: when its last block was granted and how large it was.
    last_grant: BTreeMap<u64, (Instant, u64)>,
    /// Shards this process has installed a block for (so the prefetch runs once per shard).
    installed: BTreeSet<u64>,
}

/// Why the node could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The state file could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The generator could not be built for this layout and node id.
    #[error("cannot build the generator: {0}")]
    Layout(#[from] LayoutError),
    /// Cluster mode: the coordinator settings are unusable.
    #[error("cluster mode: {0}")]
    Cluster(String),
}

/// Why a readiness check failed.
#[derive(Debug, Clone)]
pub(crate) struct NotReady {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) retry_after_ms: Option<u64>,
}

pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) clock: DynClock,
    pub(crate) source: ArcSwap<IdSource>,
    pub(crate) reservation: Option<Arc<Reservation>>,
    backing: Backing,
    wake: Arc<Wake>,
    /// Notified after every extension or block installation, for waiting requests.
    pub(crate) extended: Notify,
    pub(crate) metrics: Metrics,
    pub(crate) shutting_down: AtomicBool,
    /// Temporal layout: the persisted shard floor, readable without the state mutex (which
    /// is held across fsyncs).
    floor: AtomicU64,
    /// The layout ids are issued in: the configured one, or in cluster mode without one, the
    /// coordinators' once the lease keeper has learned it.
    layout: OnceLock<Layout>,
    /// Requests up to this many ids run on the runtime thread: the generator may wait at most
    /// one 1 ms tick for them. Larger ones (and coarse-tick layouts) go to the blocking pool.
    pub(crate) inline_count_max: AtomicU64,
    /// Cluster mode: a configuration error that stops the node (coordinators of different
    /// stores, a layout other than the cluster's).
    failed: Mutex<Option<String>>,
    /// Notified when `failed` is set.
    pub(crate) failed_notify: Notify,
    node_json: Map<String, Value>,
    temporal: Mutex<TemporalKeeper>,
    last_write_error: Mutex<Option<String>>,
    last_readiness: Mutex<Option<ErrorCode>>,
    keeper: Mutex<Option<(JoinHandle<()>, watch::Sender<bool>)>>,
    /// Cluster mode: the lease keeper (taken at shutdown) and its state.
    cluster: Option<ClusterLink>,
}

pub(crate) struct ClusterLink {
    keeper: Mutex<Option<LeaseKeeper>>,
    state: watch::Receiver<MemberState>,
}

/// The node's state, shared by every request: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("layout", &self.shared.layout().map(Layout::spec))
            .field("node", &self.shared.config.node_label())
            .field("state_file", &self.shared.backing.path())
            .finish()
    }
}

/// Requests up to this many ids are served on the runtime thread (see
/// [`Shared::inline_count_max`]): one tick's worth on 1 ms layouts, none on coarser ones.
fn inline_count_max(layout: &Layout) -> u64 {
    if layout.is_temporal() {
        u64::MAX
    } else if layout.time_unit_ms() == 1 {
        layout.ids_per_tick()
    } else {
        0
    }
}

fn generator_policy(p: NodeClockPolicy) -> ClockPolicy {
    match p {
        // The node waits for a stepped-back clock itself, asynchronously, so the generator
        // fails at once instead of parking a runtime thread.
        NodeClockPolicy::Fail | NodeClockPolicy::Wait { .. } => ClockPolicy::Fail,
        NodeClockPolicy::Borrow {
            borrow_ahead_ms_max,
        } => ClockPolicy::Borrow {
            borrow_ahead_ms_max,
        },
    }
}

impl AppState {
    /// Opens the node on the system clock; see [`AppState::open_with_clock`].
    pub fn open(config: NodeConfig) -> Result<AppState, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Locks and reads the state file, builds the generator strictly above the persisted
    /// bound, and persists the first reservation before returning: the node may serve as
    /// soon as this returns (it is ready once the clock is within the policy's bound).
    pub fn open_with_clock(config: NodeConfig, clock: DynClock) -> Result<AppState, StartError> {
        let layout = config
            .layout
            .clone()
            .expect("a standalone node's configuration has a layout");
        let mut node_json = Map::new();
        for n in &config.node {
            node_json.insert(n.field.clone(), n.value.into());
        }
        let identity = StateIdentity {
            layout: layout.name().to_string(),
            epoch_ms: layout.epoch_ms(),
            time_unit_ms: layout.time_unit_ms(),
            node: node_json.clone(),
            spec: Some(layout.spec()),
        };
        let (file, prior) = StateFile::open(&config.state_dir, &config.node_label(), identity)?;
        let path = file.path().to_path_buf();
        match &prior {
            None => info!(file = %path.display(), node = %config.node_label(),
                "no state file: first start of this layout and node id"),
            Some(r) => info!(file = %path.display(),
                reserved_until = %format_rfc3339_ms(r.reserved_until_ms),
                clean_shutdown = r.clean_shutdown, "read state file"),
        }
        for n in config.node.iter().filter(|n| !n.given) {
            warn!(
                "{} is not set: using {}=0 for field `{}`; nodes sharing a node id repeat ids",
                n.var, n.var, n.field
            );
        }
        let prior = prior.unwrap_or_default();
        let wake = Arc::new(Wake::default());
        let metrics = Metrics::default();
        let backing = Backing::Standalone(LocalBacking {
            file,
            persisted: Mutex::new(prior.clone()),
        });
        let now_ms = clock.now_ms();
        let (source, reservation) = if layout.is_temporal() {
            let host = config.node[0].value;
            let g = TemporalGenerator::builder(layout.clone())
                .host(host)
                .clock(clock.clone())
                .supplier(wake.clone())
                .build()?;
            (IdSource::Temporal(g), None)
        } else {
            let reservation = Arc::new(Reservation::new(wake.clone(), EXTEND_BELOW_HEADROOM_MS));
            let mut b = SnowflakeGenerator::builder(layout.clone())
                .clock(clock.clone())
                .policy(generator_policy(config.clock_policy))
                .reservation(reservation.clone());
            for (field, value) in config.node_values() {
                b = b.node(field, value);
            }
            if prior.reserved_until_ms > 0 {
                b = b.start_above_ms(prior.reserved_until_ms);
            }
            let g = b.build()?;
            (IdSource::Snowflake(g), Some(reservation))
        };
        let shared = Arc::new(Shared {
            config,
            clock,
            source: ArcSwap::from_pointee(source),
            reservation,
            backing,
            wake,
            extended: Notify::new(),
            metrics,
            shutting_down: AtomicBool::new(false),
            floor: AtomicU64::new(prior.temporal.as_ref().map_or(0, |t| t.shard_floor)),
            layout: OnceLock::from(layout.clone()),
            inline_count_max: AtomicU64::new(inline_count_max(&layout)),
            failed: Mutex::new(None),
            failed_notify: Notify::new(),
            node_json,
            temporal: Mutex::new(TemporalKeeper::default()),
            last_write_error: Mutex::new(None),
            last_readiness: Mutex::new(None),
            keeper: Mutex::new(None),
            cluster: None,
        });
        // The first reservation is durable before anything can be issued under it.
        shared.keep_once(true)?;
        if let Err(nr) = shared.check_ready() {
            warn!(file = %path.display(), code = %nr.code, "not ready: {}", nr.message);
            *shared.last_readiness.lock().expect("readiness mutex") = Some(nr.code);
        }
        let overflow_ms = layout.overflow_ms();
        if overflow_ms.saturating_sub(now_ms) < 365 * 86_400_000 {
            warn!(
                "layout {} overflows on {}: less than a year from now",
                layout.name(),
                layout.overflow_time()
            );
        }
        Ok(AppState { shared })
    }

    /// Opens the node in cluster mode: no state file; a lease keeper acquires a node id
    /// from the coordinators (or waits as a standby) and every lease it holds gets a new
    /// generator, swapped in whole. Until then, and whenever the lease is lost, the node
    /// issues nothing (`503 lease_lost`, `/readyz` says why). Needs a tokio runtime.
    pub fn open_cluster(config: NodeConfig, clock: DynClock) -> Result<AppState, StartError> {
        let cluster = config
            .cluster
            .clone()
            .expect("open_cluster needs a cluster configuration");
        let client = CoordinatorClient::new(cluster.urls.clone(), cluster.token.clone())
            .map_err(|e| StartError::Cluster(e.to_string()))?;
        let keeper = LeaseKeeper::start(Arc::new(client), keeper_config(&config, &cluster, &clock));
        let layout = OnceLock::new();
        if let Some(l) = &config.layout {
            let _ = layout.set(l.clone());
        }
        let inline_now = config.layout.as_ref().map_or(0, inline_count_max);
        info!(
            coordinators = %cluster.urls.join(","),
            standby = cluster.standby,
            lease_ttl_ms = cluster.lease_ttl_ms,
            layout = %config.layout_label(),
            "cluster mode: leasing the node id from the coordinator"
        );
        let shared = Arc::new(Shared {
            config,
            clock,
            source: ArcSwap::from_pointee(IdSource::Fenced),
            reservation: None,
            backing: Backing::Cluster(Mutex::new(Reserved::default())),
            wake: Arc::new(Wake::default()),
            extended: Notify::new(),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            floor: AtomicU64::new(0),
            inline_count_max: AtomicU64::new(inline_now),
            layout,
            failed: Mutex::new(None),
            failed_notify: Notify::new(),
            node_json: Map::new(),
            temporal: Mutex::new(TemporalKeeper::default()),
            last_write_error: Mutex::new(None),
            last_readiness: Mutex::new(None),
            keeper: Mutex::new(None),
            cluster: Some(ClusterLink {
                state: keeper.subscribe(),
                keeper: Mutex::new(None),
            }),
        });
        let watcher = shared.clone();
        keeper.watch(move |state| watcher.on_member_state(state));
        if let Some(link) = &shared.cluster {
            *link.keeper.lock().expect("keeper mutex") = Some(keeper);
        }
        Ok(AppState { shared })
    }

    /// The validated configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The state file's path.
    pub fn state_file(&self) -> PathBuf {
        self.shared.backing.path().to_path_buf()
    }

    /// The reservation bounding the timestamp generator (`None` for the temporal layout).
    /// Revoking it stops all issuing at once (`503 lease_lost`, `/readyz` not ready).
    pub fn reservation(&self) -> Option<Arc<Reservation>> {
        self.shared.reservation.clone()
    }

    /// The readiness report served at `/readyz`.
    pub fn readiness(&self) -> ReadyResponse {
        self.shared.readiness()
    }

    /// Runs one keeper pass now (extend the reservation or grant counter blocks if needed).
    /// The background keeper does this on its own; tests on a manual clock call it directly.
    pub fn keep_now(&self) -> Result<(), StateError> {
        self.shared.keep(false).map(|_| ())
    }

    /// Starts the background keeper (idempotent). Needs a tokio runtime.
    pub fn start_keeper(&self) {
        let mut k = self.shared.keeper.lock().expect("keeper mutex");
        if k.is_some() {
            return;
        }
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(keeper_loop(self.shared.clone(), rx));
        *k = Some((handle, tx));
    }

    /// Marks the node as stopping: `/readyz` answers 503 `shutting_down` from now on while
    /// in-flight and new requests are still served.
    pub fn begin_shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    /// Stops issuing for good and persists the final state: stops the keeper, fences the
    /// generator, waits (bounded) for in-flight generator calls, then writes the exact last
    /// issued bound so a restart need not wait out the unused part of the reservation.
    pub async fn shutdown(&self) -> Result<(), StateError> {
        self.begin_shutdown();
        let keeper = self.shared.keeper.lock().expect("keeper mutex").take();
        if let Some((handle, stop)) = keeper {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        let old = self.shared.source.swap(Arc::new(IdSource::Fenced));
        if let Some(r) = &self.shared.reservation {
            r.revoke();
        }
        let lease_keeper = self
            .shared
            .cluster
            .as_ref()
            .and_then(|c| c.keeper.lock().expect("keeper mutex").take());
        if let Some(k) = lease_keeper {
            // Revokes the lease's reservation, then gives the node id back.
            k.shutdown().await;
        }
        if self.shared.cluster.is_some() {
            // The coordinator holds every bound this node ever reserved; nothing to write.
            info!("stopped; the node id was given back to the coordinator");
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_FENCE_WAIT_MS);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let exact = Arc::strong_count(&old) == 1;
        let shared = self.shared.clone();
        let written = tokio::task::spawn_blocking(move || shared.persist_final(&old, exact))
            .await
            .expect("final persist task panicked")?;
        info!(
            file = %self.shared.backing.path().display(),
            reserved_until = %format_rfc3339_ms(written.reserved_until_ms),
            exact,
            "state persisted; stopped"
        );
        Ok(())
    }
}

async fn keeper_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // A failing disk is retried with jittered backoff up to KEEPER_RETRY_MS_MAX and logged
    // once per change of state; the node stops issuing when the headroom is gone, and
    // `/readyz` shows the last write error meanwhile.
    let mut retry = Retry::new(
        "extending the reservation in the state file",
        Duration::from_millis(KEEPER_INTERVAL_MS),
        Duration::from_millis(KEEPER_RETRY_MS_MAX),
    );
    let mut pause = Duration::from_millis(KEEPER_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = shared.wake.notify.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.keep(false)).await {
            Ok(Ok(_)) => {
                retry.succeeded();
                pause = Duration::from_millis(KEEPER_INTERVAL_MS);
            }
            Ok(Err(e)) => pause = retry.failed(e.kind(), &e),
            Err(e) => pause = retry.failed("panic", &e),
        }
        shared.log_readiness_change();
    }
}

fn lease_lost(lease: &ActiveLease) -> NotReady {
    NotReady {
        code: ErrorCode::LeaseLost,
        message: format!(
            "the lease on node id {} (token {}) may have expired; renewing or acquiring a new one",
            lease.host_id, lease.token
        ),
        retry_after_ms: Some(1_000),
    }
}

/// Readiness of a temporal generator: it has a counter block for the shard it issues in
/// (the later of the clock's shard, the generator's own and `floor`).
fn check_temporal_ready(
    g: &TemporalGenerator<DynClock>,
    layout: &Layout,
    now_ms: u64,
    floor: u64,
    write_error: &dyn Fn() -> String,
) -> Result<(), NotReady> {
    let u = g.usage();
    let now_shard = layout.tick_of(now_ms).unwrap_or(0);
    let shard = now_shard.max(u.shard).max(floor);
    if g.has_block_for(shard) {
        return Ok(());
    }
    let counter_end = layout.sequence_field().max() + 1;
    if u.shard == shard && u.next_counter >= counter_end {
        let next_ms = layout.ms_of_tick(shard + 1);
        return Err(NotReady {
            code: ErrorCode::CounterExhausted,
            message: format!(
                "every counter value of shard {shard} is used; the next shard starts in {} ms",
                next_ms.saturating_sub(now_ms)
            ),
            retry_after_ms: Some(next_ms.saturating_sub(now_ms).max(1)),
        });
    }
    Err(NotReady {
        code: ErrorCode::NoCounterBlock,
        message: format!(
            "no counter block for shard {shard} yet; one has been requested{}",
            write_error()
        ),
        retry_after_ms: Some(1_000),
    })
}

fn keeper_config(config: &NodeConfig, cluster: &ClusterConfig, clock: &DynClock) -> KeeperConfig {
    let name = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into()),
        config.listen.port()
    );
    let mut k = KeeperConfig::new(name, cluster.lease_ttl_ms);
    k.standby = cluster.standby;
    k.clock = clock.clone();
    k.layout = config.layout.clone();
    k
}

impl Shared {
    /// Swaps in a generator for every new lease and fences the node when it has none.
    fn on_member_state(&self, state: &MemberState) {
        if self.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if let MemberState::Failed { reason } = state {
            error!("cluster: stopping: {reason}");
            *self.failed.lock().expect("failed mutex") = Some(reason.clone());
            self.failed_notify.notify_waiters();
            self.source.store(Arc::new(IdSource::Fenced));
            return;
        }
        let source = match state {
            MemberState::Active(lease) => match self.leased_source(lease) {
                Ok(s) => {
                    info!(
                        node_id = lease.host_id,
                        token = lease.token,
                        start_above = %format_rfc3339_ms(lease.start_above_ms),
                        "cluster: holding a lease; issuing"
                    );
                    s
                }
                Err(e) => {
                    error!(
                        "cluster: cannot build a generator for node id {}: {e}",
                        lease.host_id
                    );
                    IdSource::Fenced
                }
            },
            other => {
                if let Some(reason) = other.not_ready_reason() {
                    warn!("cluster: not issuing: {reason}");
                }
                IdSource::Fenced
            }
        };
        self.source.store(Arc::new(source));
        self.extended.notify_waiters();
    }

    fn leased_source(&self, lease: &Arc<ActiveLease>) -> Result<IdSource, LayoutError> {
        // The keeper checked the grant's layout against the configured one (if any); the
        // first lease tells a node started without one which layout it serves.
        let layout = self.layout.get_or_init(|| lease.layout.clone());
        self.inline_count_max
            .store(inline_count_max(layout), Ordering::Relaxed);
        if lease.layout.is_temporal() {
            let g = Arc::new(lease.temporal().clock(self.clock.clone()).build()?);
            lease.attach_temporal(g.clone());
            Ok(IdSource::LeasedTemporal(g, lease.clone()))
        } else {
            let g = lease
                .snowflake()?
                .clock(self.clock.clone())
                .policy(generator_policy(self.config.clock_policy))
                .build()?;
            Ok(IdSource::Leased(g, lease.clone()))
        }
    }

    /// The configuration error that stops the node, if one happened.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().expect("failed mutex").clone()
    }

    fn node_policy(&self) -> NodeClockPolicy {
        self.config.clock_policy
    }

    /// The layout ids are issued in; `None` in cluster mode until the coordinators' layout
    /// is known.
    pub(crate) fn layout(&self) -> Option<&Layout> {
        self.layout.get()
    }

    /// The layout of a standalone node, which always has one.
    fn standalone_layout(&self) -> &Layout {
        self.layout().expect("a standalone node has a layout")
    }

    /// The lowest temporal shard ids may be issued in (0 for other layouts).
    pub(crate) fn shard_floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// One keeper pass that records its outcome for `/readyz`. Blocking.
    fn keep(&self, force: bool) -> Result<bool, StateError> {
        let r = self.keep_once(force);
        *self.last_write_error.lock().expect("error mutex") =
            r.as_ref().err().map(|e| e.to_string());
        r
    }

    /// One keeper pass. Blocking (it writes the state file). Returns whether anything was
    /// extended. `force` writes even when the headroom is ample (start-up).
    fn keep_once(&self, force: bool) -> Result<bool, StateError> {
        let source = self.source.load_full();
        let changed = match &*source {
            IdSource::Snowflake(g) => self.keep_snowflake(g, force)?,
            IdSource::Temporal(g) => self.keep_temporal(g)?,
            IdSource::LeasedTemporal(g, lease) => {
                self.prefetch_leased_blocks(g, lease);
                false
            }
            // The lease keeper extends through the coordinator.
            IdSource::Leased(..) | IdSource::Fenced => false,
        };
        if changed {
            self.extended.notify_waiters();
        }
        Ok(changed)
    }

    /// Cluster mode, temporal layout: asks the coordinator (through the lease keeper) for a
    /// block for the current shard when the generator has none, and for the next shard
    /// [`TEMPORAL_PREFETCH_MS`] before it starts, so an idle node stays ready across shard
    /// boundaries instead of waiting for the first request to ask. Repeated asks for a block
    /// already granted get the same block back.
    fn prefetch_leased_blocks(&self, g: &TemporalGenerator<DynClock>, lease: &ActiveLease) {
        if !lease.is_valid() {
            return;
        }
        let layout = &lease.layout;
        let now_ms = self.clock.now_ms();
        let Some(now_shard) = layout.tick_of(now_ms) else {
            return;
        };
        let shard = now_shard.max(g.usage().shard);
        if !g.has_block_for(shard) {
            lease.request_block(shard, 0);
        }
        let next = shard + 1;
        if layout.ms_of_tick(next).saturating_sub(now_ms) <= TEMPORAL_PREFETCH_MS
            && next <= layout.timestamp_field().max()
            && !g.has_block_for(next)
        {
            lease.request_block(next, 0);
        }
    }

    fn keep_snowflake(
        &self,
        g: &SnowflakeGenerator<DynClock>,
        force: bool,
    ) -> Result<bool, StateError> {
        let r = self
            .reservation
            .as_ref()
            .expect("snowflake has a reservation");
        if r.is_revoked() {
            return Ok(false);
        }
        let base = self.clock.now_ms().max(g.last_issued_ms());
        let until = r.until_ms();
        let requested = self.wake.requested_until_ms.load(Ordering::Acquire);
        if !force && until >= base + EXTEND_BELOW_HEADROOM_MS && requested <= until {
            return Ok(false);
        }
        let target = base.max(requested) + RESERVE_WINDOW_MS;
        let written = self.backing.persist(&self.clock, &self.metrics, |st| {
            st.reserved_until_ms = st.reserved_until_ms.max(target);
            st.clean_shutdown = false;
        })?;
        // Durable now: the generator may issue up to it.
        r.extend_to(written.reserved_until_ms);
        debug!(until = written.reserved_until_ms, "reservation extended");
        Ok(true)
    }

    fn keep_temporal(&self, g: &TemporalGenerator<DynClock>) -> Result<bool, StateError> {
        let layout = self.standalone_layout();
        let counter_end = layout.sequence_field().max() + 1;
        let now_ms = self.clock.now_ms();
        let now_shard = layout.tick_of(now_ms).unwrap_or(0);
        let usage = g.usage();
        let requests: Vec<(u64, u64)> = {
            let mut b = self.wake.blocks.lock().expect("block request mutex");
            std::mem::take(&mut *b).into_iter().collect()
        };
        let mut keeper = self.temporal.lock().expect("temporal keeper mutex");
        let prior = self
            .backing
            .persisted()
            .temporal
            .clone()
            .unwrap_or_default();
        let mut t = prior.clone();
        // The generator never goes back to an earlier shard in-process; the floor carries
        // that across restarts.
        let mut floor = t.shard_floor.max(usage.shard);
        let mut grants: Vec<CounterBlock> = Vec::new();
        // Size each block to last about TEMPORAL_BLOCK_TARGET_MS at the rate the last one
        // was used: the generator asks for the next block with a quarter of the current
        // one left, so the rate is three quarters of it over the time since its grant.
        let size_for = |keeper: &TemporalKeeper, shard: u64| -> u64 {
            let last = keeper
                .last_grant
                .get(&shard)
                .or_else(|| keeper.last_grant.range(..shard).next_back().map(|(_, v)| v));
            match last {
                None => TEMPORAL_BLOCK_MIN,
                Some((at, size)) => {
                    let lasted_ms = (at.elapsed().as_millis() as u64).max(1);
                    let used = size - size / 4;
                    let want = (used as u128 * TEMPORAL_BLOCK_TARGET_MS as u128 / lasted_ms as u128)
                        .min(TEMPORAL_BLOCK_MAX as u128) as u64;
                    want.clamp(TEMPORAL_BLOCK_MIN, TEMPORAL_BLOCK_MAX)
                }
            }
        };
        let mut wanted: Vec<(u64, u64)> = requests;
        // The node is ready only with a block for the current shard: grant one at start-up,
        // and whenever the clock has moved into a shard whose block was not prefetched (a
        // clock jump, a missed pass), unless the shard's counter range is used up.
        if now_shard >= floor
            && !g.has_block_for(now_shard)
            && t.counters.get(&now_shard).copied().unwrap_or(0) < counter_end
        {
            wanted.push((now_shard, 0));
        }
        // Shortly before the next shard starts, grant its first block so the switch needs
        // no request.
        let next = now_shard + 1;
        if now_shard >= floor
            && layout.ms_of_tick(next).saturating_sub(now_ms) <= TEMPORAL_PREFETCH_MS
            && !keeper.installed.contains(&next)
        {
            wanted.push((next, 0));
        }
        for (shard, after) in wanted {
            if shard < floor {
                debug!(shard, floor, "refusing a block below the shard floor");
                continue;
            }
            if grants.iter().any(|b| b.shard == shard) {
                continue;
            }
            let start = after.max(t.counters.get(&shard).copied().unwrap_or(0));
            if start >= counter_end {
                warn!(
                    shard,
                    "the shard's counter range is used up until the next shard"
                );
                continue;
            }
            let size = size_for(&keeper, shard);
            let end = start.saturating_add(size).min(counter_end);
            t.counters.insert(shard, end);
            grants.push(CounterBlock { shard, start, end });
        }
        // A block for the current shard means the generator moves into it and never back;
        // a block for the next shard (prefetched) does not move the floor yet.
        for b in grants.iter().filter(|b| b.shard <= now_shard) {
            floor = floor.max(b.shard);
        }
        t.shard_floor = floor;
        t.counters.retain(|s, _| *s >= floor);
        if grants.is_empty() && t == prior {
            return Ok(false);
        }
        self.backing.persist(&self.clock, &self.metrics, |st| {
            st.temporal = Some(t.clone());
            st.clean_shutdown = false;
        })?;
        self.floor.store(floor, Ordering::Release);
        // Durable now: hand the blocks to the generator.
        for b in grants {
            keeper.last_grant.insert(b.shard, (Instant::now(), b.len()));
            keeper.installed.insert(b.shard);
            match g.install_block(b) {
                Ok(()) => {
                    self.metrics.blocks_granted.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        shard = b.shard,
                        start = b.start,
                        end = b.end,
                        "counter block installed"
                    );
                }
                // The shard ended while the block was being written: it is simply unused.
                Err(e) => debug!("counter block not installed: {e}"),
            }
        }
        keeper.last_grant.retain(|s, _| *s >= floor);
        keeper.installed.retain(|s| *s >= floor);
        Ok(true)
    }

    /// Writes the final state after the generator has been fenced.
    fn persist_final(&self, old: &IdSource, exact: bool) -> Result<Reserved, StateError> {
        self.backing
            .persist(&self.clock, &self.metrics, |st| match old {
                IdSource::Snowflake(g) if exact => {
                    // Nothing can be issued any more and no call is in flight: the last
                    // issued tick is the exact bound.
                    st.reserved_until_ms = g.last_issued_ms();
                    st.clean_shutdown = true;
                }
                IdSource::Temporal(g) if exact => {
                    let u = g.usage();
                    if let Some(t) = st.temporal.as_mut() {
                        if u.shard >= t.shard_floor && u.next_counter > 0 {
                            // The current shard's mark drops to what was issued (this process
                            // started above the old mark, so nothing above it was issued), and
                            // earlier shards are over. Later shards keep their marks: an
                            // earlier process may have issued there before the clock stepped
                            // back, and its prefetched blocks are as durable as its ids.
                            t.shard_floor = u.shard;
                            t.counters.retain(|shard, _| *shard > u.shard);
                            t.counters.insert(u.shard, u.next_counter);
                        }
                    }
                    st.clean_shutdown = true;
                }
                _ => {}
            })
    }

    /// Readiness of a timestamp generator bounded by `r`.
    fn check_snowflake_ready(
        &self,
        g: &SnowflakeGenerator<DynClock>,
        r: &Reservation,
        now_ms: u64,
        write_error: &dyn Fn() -> String,
    ) -> Result<(), NotReady> {
        if r.is_revoked() {
            return Err(NotReady {
                code: ErrorCode::LeaseLost,
                message: "the reservation was revoked".into(),
                retry_after_ms: Some(1_000),
            });
        }
        let issued = g.last_issued_ms();
        let behind = issued.saturating_sub(now_ms);
        let tolerated = self.node_policy().tolerated_behind_ms();
        if behind > tolerated {
            return Err(NotReady {
                code: ErrorCode::ClockBehind,
                message: format!(
                    "the clock ({}) is {behind} ms behind the reserved bound {}; \
                     clock policy {} tolerates {tolerated} ms; waiting for the clock \
                     to catch up",
                    format_rfc3339_ms(now_ms),
                    format_rfc3339_ms(issued),
                    self.node_policy()
                ),
                retry_after_ms: Some(behind - tolerated),
            });
        }
        let until = r.until_ms();
        if until < now_ms.max(issued) {
            return Err(NotReady {
                code: ErrorCode::ReservationExhausted,
                message: format!(
                    "the reservation (until {}) has not been extended{}",
                    format_rfc3339_ms(until),
                    write_error()
                ),
                retry_after_ms: Some(1_000),
            });
        }
        Ok(())
    }

    /// Why a node in cluster mode without a usable lease cannot issue: what the lease keeper
    /// is doing.
    fn without_lease(&self) -> NotReady {
        match &self.cluster {
            Some(c) => NotReady {
                code: ErrorCode::LeaseLost,
                message: c
                    .state
                    .borrow()
                    .not_ready_reason()
                    .unwrap_or_else(|| "building the generator for a new lease".into()),
                retry_after_ms: Some(1_000),
            },
            None => NotReady {
                code: ErrorCode::ShuttingDown,
                message: "the generator is fenced".into(),
                retry_after_ms: Some(1_000),
            },
        }
    }

    /// Why the node cannot issue ids now, if it cannot. `Ok` means the next request is
    /// served: a lease is held (cluster mode), the clock is within the policy's bound, the
    /// reservation covers the clock, and a temporal generator has a counter block for the
    /// shard it issues in.
    pub(crate) fn check_ready(&self) -> Result<(), NotReady> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(NotReady {
                code: ErrorCode::ShuttingDown,
                message: "the node is shutting down".into(),
                retry_after_ms: Some(1_000),
            });
        }
        if let Some(reason) = self.failure() {
            return Err(NotReady {
                code: ErrorCode::ClusterMisconfigured,
                message: reason,
                retry_after_ms: None,
            });
        }
        let Some(layout) = self.layout() else {
            return Err(self.without_lease());
        };
        let now_ms = self.clock.now_ms();
        if now_ms < layout.epoch_ms() {
            return Err(NotReady {
                code: ErrorCode::EpochInFuture,
                message: format!(
                    "the clock reads {}, before the layout's epoch {}",
                    format_rfc3339_ms(now_ms),
                    format_rfc3339_ms(layout.epoch_ms())
                ),
                retry_after_ms: Some(layout.epoch_ms() - now_ms),
            });
        }
        if now_ms >= layout.overflow_ms() {
            return Err(NotReady {
                code: ErrorCode::LayoutExpired,
                message: format!(
                    "layout {} overflowed on {}",
                    layout.spec(),
                    layout.overflow_time()
                ),
                retry_after_ms: None,
            });
        }
        let write_error = || {
            self.last_write_error
                .lock()
                .expect("error mutex")
                .clone()
                .map(|e| format!("; last state write failed: {e}"))
                .unwrap_or_default()
        };
        let source = self.source.load();
        match &**source {
            IdSource::Fenced => Err(self.without_lease()),
            IdSource::Snowflake(g) => {
                let r = self
                    .reservation
                    .as_ref()
                    .expect("snowflake has a reservation");
                self.check_snowflake_ready(g, r, now_ms, &write_error)
            }
            IdSource::Leased(g, lease) => {
                if !lease.is_valid() {
                    return Err(lease_lost(lease));
                }
                self.check_snowflake_ready(g, lease.reservation(), now_ms, &write_error)
            }
            IdSource::LeasedTemporal(g, lease) => {
                if !lease.is_valid() {
                    return Err(lease_lost(lease));
                }
                check_temporal_ready(g, layout, now_ms, 0, &write_error)
            }
            IdSource::Temporal(g) => {
                let floor = self.shard_floor();
                let now_shard = layout.tick_of(now_ms).unwrap_or(0);
                if now_shard < floor {
                    let by = layout.ms_of_tick(floor) - now_ms;
                    return Err(NotReady {
                        code: ErrorCode::ClockBehind,
                        message: format!(
                            "the clock ({}) is in shard {now_shard}, below shard {floor} that \
                             ids were already issued in; shard {floor} starts in {by} ms",
                            format_rfc3339_ms(now_ms)
                        ),
                        retry_after_ms: Some(by),
                    });
                }
                check_temporal_ready(g, layout, now_ms, floor, &write_error)
            }
        }
    }

    pub(crate) fn readiness(&self) -> ReadyResponse {
        let check = self.check_ready();
        let now_ms = self.clock.now_ms();
        let mut r = ReadyResponse {
            ready: check.is_ok(),
            error: check.err().map(|nr| ErrorDetail {
                code: nr.code,
                message: nr.message,
            }),
            mode: if self.cluster.is_some() {
                NodeMode::Cluster
            } else {
                NodeMode::Standalone
            },
            layout: self
                .layout()
                .map_or_else(String::new, |l| l.name().to_string()),
            node: self.node_json.clone(),
            reserved_until_ms: None,
            headroom_ms: None,
            last_issued_ms: None,
            clock_behind_ms: None,
            borrowed_ahead_ms: None,
            shard: None,
            block_remaining: None,
        };
        let source = self.source.load();
        let leased = match &**source {
            IdSource::Leased(_, lease) | IdSource::LeasedTemporal(_, lease) => Some(lease),
            _ => None,
        };
        if let Some(lease) = leased {
            if let Ok(values) = lease.node_values() {
                r.node = values
                    .into_iter()
                    .map(|(field, v)| (field, Value::from(v)))
                    .collect();
            }
        }
        match &**source {
            IdSource::Snowflake(g) | IdSource::Leased(g, _) => {
                let reservation = match &**source {
                    IdSource::Leased(_, lease) => Some(lease.reservation()),
                    _ => self.reservation.as_ref(),
                };
                let until = reservation.map_or(0, |r| r.until_ms());
                let issued = g.last_issued_ms();
                r.reserved_until_ms = Some(until);
                r.headroom_ms = Some(until.saturating_sub(now_ms.max(issued)));
                r.last_issued_ms = Some(issued);
                r.clock_behind_ms = Some(issued.saturating_sub(now_ms));
                if matches!(self.node_policy(), NodeClockPolicy::Borrow { .. }) {
                    r.borrowed_ahead_ms = Some(g.ahead_ms());
                }
            }
            IdSource::Temporal(g) => {
                let u = g.usage();
                let floor = self.shard_floor();
                let layout = self.standalone_layout();
                r.shard = Some(u.shard.max(floor));
                r.block_remaining = Some(u.block_end.saturating_sub(u.next_counter));
                r.clock_behind_ms = Some(layout.ms_of_tick(floor).saturating_sub(now_ms));
            }
            IdSource::LeasedTemporal(g, _) => {
                let u = g.usage();
                r.shard = Some(u.shard);
                r.block_remaining = Some(u.block_end.saturating_sub(u.next_counter));
            }
            IdSource::Fenced => {}
        }
        r
    }

    /// Logs readiness transitions (at warn when the node becomes unready).
    fn log_readiness_change(&self) {
        let now = self.check_ready();
        let code = now.as_ref().err().map(|nr| nr.code);
        let mut last = self.last_readiness.lock().expect("readiness mutex");
        if *last == code {
            return;
        }
        *last = code;
        match now {
            Ok(()) => info!("ready: issuing ids"),
            Err(nr) => warn!(code = %nr.code, "not ready: {}", nr.message),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let r = self.readiness();
        let source = self.source.load();
        let stats = match &**source {
            IdSource::Snowflake(g) | IdSource::Leased(g, _) => Some(g.stats()),
            _ => None,
        };
        Snapshot {
            layout: r.layout.clone(),
            ready: r.ready,
            clock_regressions: stats.map_or(0, |s| s.clock_regressions),
            exhaustion_waits: stats.map_or(0, |s| s.exhaustion_waits),
            borrowed_ticks: stats.map_or(0, |s| s.borrowed_ticks),
            borrowed_ahead_ms: r.borrowed_ahead_ms.unwrap_or(0),
            clock_behind_ms: r.clock_behind_ms.unwrap_or(0),
            reserved_until_ms: r.reserved_until_ms,
            headroom_ms: r.headroom_ms,
            block_remaining: r.block_remaining,
            shard: r.shard,
        }
    }
}
