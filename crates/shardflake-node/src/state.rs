//! The node's shared state: the swappable generator handle, its backing (the state file, or
//! the coordinators' lease), the background keeper, and the clean-shutdown fence.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use shardflake::{format_rfc3339_ms, ClockPolicy, Layout, LayoutError, Reservation, SystemClock};
use shardflake_client::Retry;
use shardflake_proto::node::ReadyResponse;
use shardflake_proto::ErrorCode;
use thiserror::Error;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use crate::cluster::{self, Cluster, ClusterHooks};
use crate::config::{NodeClockPolicy, NodeConfig};
use crate::issue::Refusal;
use crate::metrics::Metrics;
use crate::source::{DynClock, Generator, IdSource};
use crate::standalone::{self, Standalone, KEEPER_INTERVAL_MS, KEEPER_RETRY_MS_MAX};
use crate::state_file::StateError;

/// The longest the shutdown waits for in-flight generator calls before it writes the exact
/// last issued bound (after that it keeps the reserved bound, which is also safe).
pub const SHUTDOWN_FENCE_WAIT_MS: u64 = 1_000;

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

/// Where the node's reservations are made durable.
// One per node, built once: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Backing {
    /// The local state file.
    Standalone(Standalone),
    /// The coordinators, under the lease's fencing token.
    Cluster(Cluster),
}

pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) clock: DynClock,
    /// Where ids come from; `None` while the node may not issue (no lease, shut down).
    pub(crate) source: ArcSwapOption<IdSource>,
    /// Notified after every extension or block installation, for waiting requests.
    pub(crate) extended: Notify,
    pub(crate) metrics: Metrics,
    pub(crate) shutting_down: AtomicBool,
    /// The layout ids are issued in: the configured one, or in cluster mode without one, the
    /// coordinators' once the lease keeper has learned it.
    layout: OnceLock<Layout>,
    /// Requests up to this many ids run on the runtime thread: the generator may wait at most
    /// one 1 ms tick for them. Larger ones (and coarse-tick layouts) go to the blocking pool.
    pub(crate) inline_count_max: AtomicU64,
    pub(crate) last_readiness: Mutex<Option<ErrorCode>>,
    /// The id endpoints' client credentials and rate limit, when configured.
    pub(crate) gate: Option<crate::gate::Gate>,
    keeper: Mutex<Option<(JoinHandle<()>, watch::Sender<bool>)>>,
    backing: Backing,
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
            .field("state_file", &self.state_file())
            .finish()
    }
}

/// Requests up to this many ids are served on the runtime thread (see
/// [`Shared::inline_count_max`]): one tick's worth on 1 ms layouts, none on coarser ones;
/// every request when the clock's waits take no real time (a simulation's clock).
fn inline_count_max(layout: &Layout, clock: &DynClock) -> u64 {
    if layout.is_temporal() || !clock.waits_in_real_time() {
        u64::MAX
    } else if layout.time_unit_ms() == 1 {
        layout.ids_per_tick()
    } else {
        0
    }
}

/// The generator's clock policy for the node's: the node waits for a stepped-back clock
/// itself, asynchronously, so the generator fails at once instead of parking a runtime
/// thread.
pub(crate) fn generator_policy(p: NodeClockPolicy) -> ClockPolicy {
    match p {
        NodeClockPolicy::Fail | NodeClockPolicy::Wait { .. } => ClockPolicy::Fail,
        NodeClockPolicy::Borrow {
            borrow_ahead_ms_max,
        } => ClockPolicy::Borrow {
            borrow_ahead_ms_max,
        },
    }
}

impl Shared {
    fn new(
        config: NodeConfig,
        clock: DynClock,
        backing: Backing,
        source: Option<IdSource>,
    ) -> Self {
        let layout = OnceLock::new();
        if let Some(l) = &config.layout {
            let _ = layout.set(l.clone());
        }
        let inline = config
            .layout
            .as_ref()
            .map_or(0, |l| inline_count_max(l, &clock));
        let gate = config
            .clients
            .is_active()
            .then(|| crate::gate::Gate::new(&config.clients));
        Self {
            gate,
            config,
            clock,
            source: ArcSwapOption::from(source.map(Arc::new)),
            extended: Notify::new(),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            layout,
            inline_count_max: AtomicU64::new(inline),
            last_readiness: Mutex::new(None),
            keeper: Mutex::new(None),
            backing,
        }
    }

    /// The layout ids are issued in; `None` in cluster mode until the coordinators' layout
    /// is known.
    pub(crate) fn layout(&self) -> Option<&Layout> {
        self.layout.get()
    }

    /// Records the cluster's layout, learned from the first lease.
    pub(crate) fn learn_layout(&self, layout: &Layout) {
        let layout = self.layout.get_or_init(|| layout.clone());
        self.inline_count_max
            .store(inline_count_max(layout, &self.clock), Ordering::Relaxed);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn standalone(&self) -> Option<&Standalone> {
        match &self.backing {
            Backing::Standalone(s) => Some(s),
            Backing::Cluster(_) => None,
        }
    }

    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match &self.backing {
            Backing::Cluster(c) => Some(c),
            Backing::Standalone(_) => None,
        }
    }

    /// The lowest temporal shard ids may be issued in (0 for other layouts and clusters).
    pub(crate) fn shard_floor(&self) -> u64 {
        self.standalone().map_or(0, Standalone::shard_floor)
    }

    /// The configuration error that stops the node, if one happened (cluster mode).
    pub(crate) fn failure(&self) -> Option<String> {
        self.cluster().and_then(Cluster::failure)
    }

    /// Why the node issues nothing while it has no generator.
    pub(crate) fn not_issuing(&self) -> Refusal {
        if self.is_shutting_down() {
            return Refusal::new(
                ErrorCode::ShuttingDown,
                "the node is shutting down",
                Some(1_000),
            );
        }
        match self.cluster() {
            Some(c) => Refusal::new(
                ErrorCode::LeaseLost,
                c.state
                    .borrow()
                    .not_ready_reason()
                    .unwrap_or_else(|| "building the generator for a new lease".into()),
                Some(1_000),
            ),
            None => Refusal::new(
                ErrorCode::ShuttingDown,
                "the generator is fenced",
                Some(1_000),
            ),
        }
    }

    /// One keeper pass: extend the reservation or grant counter blocks (standalone), or ask
    /// the coordinators for the next counter blocks (cluster, temporal). Blocking.
    fn keep(&self, force: bool) -> Result<bool, StateError> {
        let Some(source) = self.source.load_full() else {
            return Ok(false);
        };
        let changed = match (&self.backing, &source.generator, &source.lease) {
            (Backing::Standalone(s), _, _) => s.keep(self, &source, force)?,
            (Backing::Cluster(_), Generator::Temporal(g), Some(lease)) => {
                cluster::prefetch_blocks(self.clock.now_ms(), g, lease);
                false
            }
            // The lease keeper extends reservations through the coordinators.
            (Backing::Cluster(_), _, _) => false,
        };
        if changed {
            self.extended.notify_waiters();
        }
        Ok(changed)
    }
}

impl AppState {
    /// Opens the node on the system clock; see [`AppState::open_with_clock`].
    pub fn open(config: NodeConfig) -> Result<AppState, StartError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens a standalone node: locks and reads the state file, builds the generator
    /// strictly above the persisted bound, and persists the first reservation before
    /// returning, so the node may serve as soon as this returns (it is ready once the clock
    /// is within the policy's bound).
    pub fn open_with_clock(config: NodeConfig, clock: DynClock) -> Result<AppState, StartError> {
        let (backing, source) = standalone::open(&config, &clock)?;
        let now_ms = clock.now_ms();
        let shared = Arc::new(Shared::new(
            config,
            clock,
            Backing::Standalone(backing),
            Some(source),
        ));
        // The first reservation is durable before anything can be issued under it.
        shared.keep(true)?;
        if let Err(r) = shared.check_ready() {
            tracing::warn!(code = %r.code, "not ready: {}", r.message);
            *shared.last_readiness.lock().expect("readiness mutex") = Some(r.code);
        }
        let layout = shared.layout().expect("a standalone node has a layout");
        if layout.overflow_ms().saturating_sub(now_ms) < 365 * 86_400_000 {
            tracing::warn!(
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
        Self::open_cluster_with(config, clock, ClusterHooks::default())
    }

    /// [`AppState::open_cluster`] with the network and the retry jitter replaced (a
    /// deterministic simulation).
    pub fn open_cluster_with(
        config: NodeConfig,
        clock: DynClock,
        hooks: ClusterHooks,
    ) -> Result<AppState, StartError> {
        let (backing, keeper) = cluster::open(&config, &clock, hooks)?;
        let shared = Arc::new(Shared::new(config, clock, Backing::Cluster(backing), None));
        cluster::connect(&shared, keeper);
        Ok(AppState { shared })
    }

    /// The validated configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared.config
    }

    /// The state file's path (standalone), or a note that there is none (cluster mode).
    pub fn state_file(&self) -> PathBuf {
        match self.shared.standalone() {
            Some(s) => s.path().to_path_buf(),
            None => PathBuf::from("(none: cluster mode)"),
        }
    }

    /// The reservation bounding a standalone Snowflake generator (`None` for the temporal
    /// layout and in cluster mode). Revoking it stops all issuing at once (`503 lease_lost`,
    /// `/readyz` not ready).
    pub fn reservation(&self) -> Option<Arc<Reservation>> {
        self.shared.standalone().and_then(|s| s.reservation.clone())
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
        if k.is_none() {
            let (tx, rx) = watch::channel(false);
            *k = Some((tokio::spawn(keeper_loop(self.shared.clone(), rx)), tx));
        }
    }

    /// Marks the node as stopping: `/readyz` answers 503 `shutting_down` from now on while
    /// in-flight and new requests are still served.
    pub fn begin_shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    /// Stops issuing for good and persists the final state: stops the keeper, fences the
    /// generator, waits (bounded) for in-flight generator calls, then writes the exact last
    /// issued bound so a restart need not wait out the unused part of the reservation. In
    /// cluster mode it gives the node id back instead.
    pub async fn shutdown(&self) -> Result<(), StateError> {
        self.begin_shutdown();
        let keeper = self.shared.keeper.lock().expect("keeper mutex").take();
        if let Some((handle, stop)) = keeper {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        let old = self.shared.source.swap(None);
        let standalone = match &self.shared.backing {
            Backing::Cluster(c) => {
                // Revokes the lease's reservation, then gives the node id back. The
                // coordinators hold every bound this node ever reserved: nothing to write.
                let lease = old.as_ref().and_then(|s| s.lease_ref());
                c.release(lease).await;
                info!("stopped; the node id was given back to the coordinator");
                return Ok(());
            }
            Backing::Standalone(s) => s,
        };
        if let Some(r) = &standalone.reservation {
            r.revoke();
        }
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_FENCE_WAIT_MS);
        let in_flight =
            |old: &Option<Arc<IdSource>>| old.as_ref().is_some_and(|s| Arc::strong_count(s) > 1);
        while in_flight(&old) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let exact = !in_flight(&old);
        let shared = self.shared.clone();
        let written = tokio::task::spawn_blocking(move || {
            let s = shared.standalone().expect("standalone");
            s.persist_final(&shared, old.as_deref(), exact)
        })
        .await
        .expect("final persist task panicked")?;
        info!(
            file = %self.state_file().display(),
            reserved_until = %format_rfc3339_ms(written.reserved_until_ms),
            exact,
            "state persisted; stopped"
        );
        Ok(())
    }
}

/// The background keeper: extends the reservation or grants counter blocks when the
/// generator asks or every [`KEEPER_INTERVAL_MS`].
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
    let wake = shared.standalone().map(|s| s.wake.clone());
    loop {
        let woken = async {
            match &wake {
                Some(w) => w.notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = woken => {}
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

#[cfg(test)]
mod tests {
    use shardflake::{ManualClock, SystemClock};

    use super::*;

    #[test]
    fn batches_stay_on_the_runtime_thread_only_when_waiting_takes_no_real_time() {
        let twitter = Layout::preset("twitter").expect("preset");
        let real: DynClock = Arc::new(SystemClock);
        let manual: DynClock = Arc::new(ManualClock::new(0));
        // A real clock: one tick's ids inline, larger batches on the blocking pool.
        assert_eq!(inline_count_max(&twitter, &real), twitter.ids_per_tick());
        // A clock that moves itself when waited on (tests, the simulation): every batch
        // inline, so that an answer never depends on when another thread finishes.
        assert_eq!(inline_count_max(&twitter, &manual), u64::MAX);
        let coarse = Layout::from_spec("twitter:unit_ms=10").expect("layout");
        assert_eq!(inline_count_max(&coarse, &real), 0);
        assert_eq!(inline_count_max(&coarse, &manual), u64::MAX);
    }
}
