//! [`LeaseKeeper`]: holds a host-id lease for a generator node.
//!
//! One background task owns the lease. It acquires a host id (or, as a standby, waits for a
//! failed host's id), renews ahead of expiry, keeps the reservation extended ahead of need,
//! and publishes what the node may do through a watch channel of [`MemberState`].
//!
//! # Self-fencing
//!
//! The lease is measured on the node's monotonic clock from the *send* time of the last
//! acknowledged renewal: it is valid until `send + ttl − drift margin`. The coordinator
//! measures the same lease from when it committed the renewal, which is later, so the node
//! always gives up first. At the deadline the task revokes the lease's [`Reservation`], so the
//! generator fails with `LeaseLost`; the node's request path additionally calls
//! [`ActiveLease::check`] *after* generating, which catches a process that was paused (GC,
//! `SIGSTOP`) between the check and the id. Reservation bounds are extended only after the
//! coordinator acknowledged them, and never after the lease was lost: a revoked reservation
//! and a cleared lease guard stay so, whatever a request still in flight answers.
//!
//! # One store, one layout
//!
//! Before it asks for a lease the keeper asks every coordinator who it is
//! ([`CoordinatorClient::probe`]): coordinators of different stores are a configuration error
//! ([`MemberState::Failed`]), and so is a node whose layout differs from the coordinators'. A
//! node configured without a layout serves the coordinators' ([`LeaseKeeper::layout`]). Every
//! grant carries the layout's fingerprint again and is refused if it differs.
//!
//! # Tasks
//!
//! Renewals run in the keeper task; reservation extensions and counter blocks, which the
//! generator asks for from its hot path, run in a second task per lease, so a slow block
//! request never delays a renewal. Every retry backs off with jitter and logs once per change
//! of state ([`Retry`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shardflake::{
    Clock, CounterBlock, CounterSupplier, GenerateError, Layout, LayoutError, Reservation,
    Reserver, SnowflakeBuilder, SystemClock, TemporalBuilder, TemporalGenerator,
};
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, BlockRequest, LeaseGrant, ReleaseRequest, RenewRequest,
    ReservationRequest, ShardUsage, StandbyWaitRequest,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use shardflake_proto::ErrorCode;

use crate::client::{ClientError, CoordinatorClient};
use crate::retry::Retry;

/// Default lease TTL asked for (the one value shared by nodes and coordinators).
pub const TTL_MS_DEFAULT: u64 = shardflake_proto::coord::LEASE_TTL_MS_DEFAULT;
/// Renew when the time left falls under this multiple of the recent p99 renewal latency...
pub const LATENCY_MULTIPLIER_DEFAULT: f64 = 4.0;
/// ...plus this margin (ms).
pub const RENEW_MARGIN_MS_DEFAULT: u64 = 50;
/// Bounds of the default look-ahead of the reservation (ms).
const RESERVE_AHEAD_MS_MIN: u64 = 100;
const RESERVE_AHEAD_MS_MAX: u64 = 30_000;
/// Renewal latencies kept for the p99.
const LATENCY_SAMPLES_MAX: usize = 128;
/// Wait between failed acquisitions (and probes), doubling with jitter up to the maximum (ms).
const ACQUIRE_RETRY_MS_MIN: u64 = 100;
const ACQUIRE_RETRY_MS_MAX: u64 = 5_000;
/// Wait between failed renewals, doubling with jitter up to a tenth of the TTL (ms); the
/// lease deadline bounds the whole.
const RENEW_RETRY_MS_MIN: u64 = 10;
/// Wait between failed extension or block requests, doubling with jitter up to the maximum.
const SUPPLY_RETRY_MS_MIN: u64 = 20;
const SUPPLY_RETRY_MS_MAX: u64 = 2_000;
/// How long one standby long poll asks to wait (ms).
const STANDBY_POLL_MS: u64 = 30_000;
/// Time limit of the release sent on shutdown (ms).
const RELEASE_TIMEOUT_MS: u64 = 1_000;
/// Pending block requests kept; more are dropped (the generator asks again).
const BLOCK_REQUESTS_MAX: usize = 64;

/// Settings of a [`LeaseKeeper`].
#[derive(Clone)]
pub struct KeeperConfig {
    /// The holder's name, shown by the coordinator.
    pub name: String,
    /// Lease TTL to ask for.
    pub ttl_ms: u64,
    /// Subtracted from every lease deadline to cover clock-rate differences (ms).
    pub drift_margin_ms: u64,
    /// See [`LATENCY_MULTIPLIER_DEFAULT`].
    pub latency_multiplier: f64,
    /// See [`RENEW_MARGIN_MS_DEFAULT`].
    pub renew_margin_ms: u64,
    /// Keep the reservation this far ahead of the wall clock (ms).
    pub reserve_ahead_ms: u64,
    /// Ask for more when the generator's headroom falls under this (ms).
    pub low_water_ms: u64,
    /// Start as a standby: wait for a failed host's id instead of taking a free one.
    pub standby: bool,
    /// Host id to ask for first (a restarted node asking for its old id).
    pub prefer_host_id: Option<u32>,
    /// The wall clock reservations are computed against (the generator's clock).
    pub clock: Arc<dyn Clock>,
    /// The layout the node's generator uses; the keeper refuses coordinators and grants with
    /// another. `None`: serve the coordinators' layout ([`LeaseKeeper::layout`]).
    pub layout: Option<Layout>,
}

impl std::fmt::Debug for KeeperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperConfig")
            .field("name", &self.name)
            .field("ttl_ms", &self.ttl_ms)
            .field("drift_margin_ms", &self.drift_margin_ms)
            .field("reserve_ahead_ms", &self.reserve_ahead_ms)
            .field("standby", &self.standby)
            .field("layout", &self.layout.as_ref().map(Layout::spec))
            .finish_non_exhaustive()
    }
}

impl KeeperConfig {
    /// Defaults for a lease of `ttl_ms`: a drift margin of 2 % (at least 5 ms), a reservation
    /// kept one TTL ahead of the wall clock, refilled at half of that; any layout the
    /// coordinators run. The coordinators' limits, learned before the first lease, cap the
    /// TTL and the look-ahead.
    ///
    /// The holder can never issue past its lease deadline, so reserving much further ahead
    /// would only make the next holder of the id wait for the clock to pass the bound; one
    /// TTL, renewed every half TTL, keeps about half a TTL of headroom for the hot path, and
    /// the generator asks for an extension of its own only below a quarter TTL.
    ///
    /// ```
    /// use shardflake_client::KeeperConfig;
    /// let c = KeeperConfig::new("node-a", 1_000);
    /// assert_eq!((c.drift_margin_ms, c.reserve_ahead_ms, c.low_water_ms), (20, 1_000, 250));
    /// ```
    pub fn new(name: impl Into<String>, ttl_ms: u64) -> Self {
        let reserve_ahead_ms = ttl_ms.clamp(RESERVE_AHEAD_MS_MIN, RESERVE_AHEAD_MS_MAX);
        Self {
            name: name.into(),
            ttl_ms,
            drift_margin_ms: (ttl_ms / 50).max(5),
            latency_multiplier: LATENCY_MULTIPLIER_DEFAULT,
            renew_margin_ms: RENEW_MARGIN_MS_DEFAULT,
            reserve_ahead_ms,
            low_water_ms: reserve_ahead_ms / 4,
            standby: false,
            prefer_host_id: None,
            clock: Arc::new(SystemClock),
            layout: None,
        }
    }
}

/// Supplies usage reports to the coordinator and receives counter blocks (temporal mode).
///
/// The node implements it over its temporal generator and attaches it with
/// [`ActiveLease::attach_temporal`].
pub trait TemporalLink: Send + Sync {
    /// Counter usage in the current shard, reported with each renewal.
    fn usage(&self) -> Option<ShardUsage>;
    /// Installs a block the coordinator granted (and persisted) for this lease.
    fn install(&self, block: BlockGrant);
}

impl<C: Clock + 'static> TemporalLink for TemporalGenerator<C> {
    fn usage(&self) -> Option<ShardUsage> {
        let u = TemporalGenerator::usage(self);
        if u.issued_in_shard == 0 && u.block_end == 0 {
            // Nothing issued yet under this generator: no report.
            return None;
        }
        Some(ShardUsage {
            shard: u.shard,
            used_in_shard: u.issued_in_shard,
            predicted_next: None,
        })
    }

    fn install(&self, block: BlockGrant) {
        let b = CounterBlock {
            shard: block.shard,
            start: block.start,
            end: block.end,
        };
        // A block for a shard already over, or one the generator already has (a repeated
        // answer), is refused by the generator; neither is an error here.
        if let Err(e) = self.install_block(b) {
            tracing::debug!(error = %e, "counter block not installed");
        }
    }
}

/// The [`CounterSupplier`] of one lease: block requests go to the keeper task.
struct LeaseSupplier(Arc<Wake>);

impl CounterSupplier for LeaseSupplier {
    fn request_block(&self, shard: u64, after_counter: u64) {
        push_block_request(&self.0, shard, after_counter);
    }
}

fn push_block_request(wake: &Wake, shard: u64, after_counter: u64) {
    let mut q = wake.blocks.lock().expect("poisoned");
    if !q.contains(&(shard, after_counter)) && q.len() < BLOCK_REQUESTS_MAX {
        q.push((shard, after_counter));
    }
    drop(q);
    wake.notify.notify_one();
}

/// Wakes the keeper task from the generator's hot path without blocking.
#[derive(Default)]
struct Wake {
    notify: Notify,
    needed_ms: AtomicU64,
    blocks: Mutex<Vec<(u64, u64)>>,
}

struct KeeperReserver(Arc<Wake>);

impl Reserver for KeeperReserver {
    fn request_extension(&self, needed_until_ms: u64) {
        self.0
            .needed_ms
            .fetch_max(needed_until_ms, Ordering::AcqRel);
        self.0.notify.notify_one();
    }
}

/// Lease validity on the monotonic clock, readable from any thread.
#[derive(Debug)]
struct Guard {
    base: Instant,
    /// Microseconds since `base` until which the lease is valid; [`GUARD_UNSET`] before the
    /// first deadline, [`GUARD_LOST`] once the lease is lost, for good.
    deadline_us: AtomicU64,
}

/// A guard with no deadline yet.
const GUARD_UNSET: u64 = 0;
/// A guard whose lease is lost: no later [`Guard::set`] revives it.
const GUARD_LOST: u64 = 1;

impl Guard {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            deadline_us: AtomicU64::new(GUARD_UNSET),
        }
    }
    /// Moves the deadline, unless the lease was lost meanwhile: a renewal answered after the
    /// keeper gave the lease up must not make it valid again.
    fn set(&self, deadline: Instant) {
        let us = deadline.saturating_duration_since(self.base).as_micros() as u64;
        let us = us.max(GUARD_LOST + 1);
        let _ = self
            .deadline_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur != GUARD_LOST).then_some(us)
            });
    }
    fn clear(&self) {
        self.deadline_us.store(GUARD_LOST, Ordering::Release);
    }
    fn is_valid(&self) -> bool {
        let deadline = self.deadline_us.load(Ordering::Acquire);
        deadline > GUARD_LOST && (self.base.elapsed().as_micros() as u64) < deadline
    }
}

/// A lease the node holds right now.
pub struct ActiveLease {
    /// The host id.
    pub host_id: u32,
    /// The fencing token.
    pub token: u64,
    /// The lease's TTL.
    pub ttl_ms: u64,
    /// Issue only timestamps above this (the previous holders' reserved bound), Unix ms.
    pub start_above_ms: u64,
    /// The cluster's layout; the grant carried its fingerprint.
    pub layout: Layout,
    /// The store the lease is persisted in.
    pub store_id: String,
    /// Counts leases held by this keeper: a new value means "build a new generator".
    pub generation: u64,
    reservation: Arc<Reservation>,
    guard: Guard,
    wake: Arc<Wake>,
    temporal: OnceLock<Arc<dyn TemporalLink>>,
}

impl std::fmt::Debug for ActiveLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveLease")
            .field("host_id", &self.host_id)
            .field("token", &self.token)
            .field("start_above_ms", &self.start_above_ms)
            .field("generation", &self.generation)
            .field("reservation", &self.reservation)
            .field("valid", &self.is_valid())
            .finish()
    }
}

impl ActiveLease {
    /// The reservation bounding this lease's generator; revoked when the lease is lost.
    pub fn reservation(&self) -> &Arc<Reservation> {
        &self.reservation
    }

    /// True while the lease is valid by the node's monotonic clock.
    pub fn is_valid(&self) -> bool {
        self.guard.is_valid()
    }

    /// `Err(LeaseLost)` once the lease may have expired. Call it *after* generating an id
    /// and discard the id on error: an id generated before a passing check was generated
    /// while the lease was valid, even if the process was paused in between.
    #[inline]
    pub fn check(&self) -> Result<(), GenerateError> {
        if self.guard.is_valid() {
            Ok(())
        } else {
            Err(GenerateError::LeaseLost)
        }
    }

    /// The node field values of this lease's host id in the cluster's layout.
    pub fn node_values(&self) -> Result<Vec<(String, u64)>, LayoutError> {
        self.layout.node_values_of_host(self.host_id as u64)
    }

    /// A Snowflake generator builder for this lease: the cluster's layout, the host id spread
    /// over its node fields, the reservation, and the start bound. Add a clock or policy and
    /// build.
    pub fn snowflake(&self) -> Result<SnowflakeBuilder<SystemClock>, LayoutError> {
        let mut b = shardflake::SnowflakeGenerator::builder(self.layout.clone());
        for (name, v) in self.node_values()? {
            b = b.node(&name, v);
        }
        Ok(b.reservation(self.reservation.clone())
            .start_above_ms(self.start_above_ms))
    }

    /// Connects a temporal generator: its usage goes out with renewals and the blocks the
    /// coordinator grants come back through `link`. Only the first call has an effect.
    pub fn attach_temporal(&self, link: Arc<dyn TemporalLink>) {
        let _ = self.temporal.set(link);
    }

    /// Asks the keeper for a counter block above `after_counter` in `shard` (non-blocking;
    /// the block arrives through [`TemporalLink::install`]). For `CounterSupplier` impls.
    pub fn request_block(&self, shard: u64, after_counter: u64) {
        push_block_request(&self.wake, shard, after_counter);
    }

    /// The [`CounterSupplier`] for a temporal generator under this lease.
    pub fn counter_supplier(&self) -> Arc<dyn CounterSupplier> {
        Arc::new(LeaseSupplier(self.wake.clone()))
    }

    /// A temporal generator builder for this lease: the cluster's layout, the host id and
    /// the lease's counter supplier. Build it, wrap it in an `Arc` and pass it to
    /// [`ActiveLease::attach_temporal`] so that granted blocks reach it.
    pub fn temporal(&self) -> TemporalBuilder<SystemClock> {
        TemporalGenerator::builder(self.layout.clone())
            .host(self.host_id as u64)
            .supplier(self.counter_supplier())
    }
}

/// What the node may do, as published by the [`LeaseKeeper`].
#[derive(Debug, Clone)]
pub enum MemberState {
    /// Asking the coordinators for their store and layout; not serving.
    Connecting,
    /// Asking for a lease; not serving.
    Acquiring,
    /// Registered as a standby, waiting for a failed host; not serving.
    Standby,
    /// Holding a lease: serve with a generator built for it.
    Active(Arc<ActiveLease>),
    /// The lease was lost (expired or fenced); not serving until a new one is held.
    Lost {
        /// The lost host id.
        host_id: u32,
        /// The lost token.
        token: u64,
        /// Why.
        reason: String,
    },
    /// Shut down; the lease was released.
    Stopped,
    /// A configuration error no retry can fix (coordinators of different stores, a layout
    /// that differs from the cluster's): the keeper has stopped; the node must not serve.
    Failed {
        /// What is wrong, naming both sides.
        reason: String,
    },
}

impl MemberState {
    /// The lease, when active.
    pub fn active(&self) -> Option<&Arc<ActiveLease>> {
        match self {
            MemberState::Active(l) => Some(l),
            _ => None,
        }
    }

    /// Why the node may not issue ids now (for `/readyz` and `503 lease_lost`), or `None`
    /// while a lease is held and valid.
    pub fn not_ready_reason(&self) -> Option<String> {
        match self {
            MemberState::Active(l) if l.is_valid() => None,
            MemberState::Active(l) => Some(format!(
                "the lease on host id {} (token {}) has run out; renewing",
                l.host_id, l.token
            )),
            MemberState::Connecting => {
                Some("contacting the coordinators to learn the cluster's store and layout".into())
            }
            MemberState::Acquiring => Some("acquiring a host id from the coordinator".into()),
            MemberState::Standby => {
                Some("standby: waiting to take over the host id of a failed node".into())
            }
            MemberState::Lost {
                host_id,
                token,
                reason,
            } => Some(format!(
                "lost the lease on host id {host_id} (token {token}): {reason}; acquiring a new one"
            )),
            MemberState::Stopped => Some("shutting down".into()),
            MemberState::Failed { reason } => Some(reason.clone()),
        }
    }

    /// True once the keeper has stopped for good ([`MemberState::Stopped`] or
    /// [`MemberState::Failed`]).
    pub fn is_final(&self) -> bool {
        matches!(self, MemberState::Stopped | MemberState::Failed { .. })
    }
}

/// Holds a host-id lease in a background task; see the module docs.
pub struct LeaseKeeper {
    state: watch::Receiver<MemberState>,
    layout: Arc<OnceLock<Layout>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl LeaseKeeper {
    /// Starts the keeper task on the current tokio runtime.
    pub fn start(client: Arc<CoordinatorClient>, config: KeeperConfig) -> Self {
        let (tx, rx) = watch::channel(MemberState::Connecting);
        let (stop_tx, stop_rx) = oneshot::channel();
        let layout = Arc::new(OnceLock::new());
        let task = Task {
            client,
            ttl_ms: config.ttl_ms,
            reserve_ahead_ms: config.reserve_ahead_ms,
            config,
            tx,
            layout: layout.clone(),
            latencies: VecDeque::new(),
            generation: 0,
            last_host: None,
            promoted: false,
            request_id: None,
        };
        let handle = tokio::spawn(task.run(stop_rx));
        Self {
            state: rx,
            layout,
            shutdown: Some(stop_tx),
            task: Some(handle),
        }
    }

    /// The cluster's layout, once the coordinators have been reached (and, if the config
    /// named one, found to run the same).
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.get()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<MemberState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> MemberState {
        self.state.borrow().clone()
    }

    /// The lease, if one is held and valid now.
    pub fn current(&self) -> Option<Arc<ActiveLease>> {
        self.state
            .borrow()
            .active()
            .filter(|l| l.is_valid())
            .cloned()
    }

    /// Calls `on_change` with the current state and then with every new one, on a task of
    /// the current runtime, until the keeper stops. The node swaps its generator here: a new
    /// [`MemberState::Active`] lease means a new generator (new host id or token), anything
    /// else means "fenced".
    pub fn watch<F>(&self, mut on_change: F) -> JoinHandle<()>
    where
        F: FnMut(&MemberState) + Send + 'static,
    {
        let mut rx = self.subscribe();
        tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                on_change(&state);
                if state.is_final() || rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// Waits until a lease is held; `None` if the keeper stopped.
    pub async fn wait_active(&self) -> Option<Arc<ActiveLease>> {
        let mut rx = self.subscribe();
        loop {
            if let Some(l) = rx.borrow_and_update().active() {
                return Some(l.clone());
            }
            if rx.borrow().is_final() || rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Stops issuing (revokes the reservation), releases the lease and ends the task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for LeaseKeeper {
    /// Dropping without [`LeaseKeeper::shutdown`] ends the task at once, like a crash: the
    /// lease is not released and runs out on its own. The current lease is fenced first.
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            if let Some(l) = self.state.borrow().active() {
                l.reservation.revoke();
                l.guard.clear();
            }
        }
    }
}

enum Held {
    Lost,
    Shutdown,
    /// A grant that this node must not use: stop for good.
    Failed(String),
}

enum Renewal {
    Ok(Instant, u64, Option<BlockGrant>),
    Rejected(ClientError),
    Failed(ClientError),
}

/// Why the coordinators could not be used yet.
enum Resolve {
    /// Retry later (no coordinator answered, ...).
    Retry(ClientError),
    /// A configuration error: stop.
    Fatal(String),
}

struct Task {
    client: Arc<CoordinatorClient>,
    config: KeeperConfig,
    /// The TTL asked for: the configured one within the coordinators' limits.
    ttl_ms: u64,
    /// How far ahead of the clock reservations are asked for, within the coordinators' limit.
    reserve_ahead_ms: u64,
    tx: watch::Sender<MemberState>,
    layout: Arc<OnceLock<Layout>>,
    latencies: VecDeque<Duration>,
    generation: u64,
    last_host: Option<u32>,
    promoted: bool,
    /// The idempotency key of the acquisition in progress, kept across its retries.
    request_id: Option<String>,
}

/// Errors after which the lease cannot be used any more: another holder has the id, the
/// coordinator considers the lease over, or it has no record of it. Everything else
/// (unavailable coordinators, a shard the coordinator's clock has not reached, a used-up
/// counter range) is retried or waited out with the lease kept.
fn fatal_for_lease(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::StaleToken | ErrorCode::LeaseExpired | ErrorCode::NotFound)
    )
}

/// `fut`'s output, or `None` if `stop` fires first.
async fn unless_stopped<T>(
    fut: impl std::future::Future<Output = T>,
    stop: &mut oneshot::Receiver<()>,
) -> Option<T> {
    tokio::select! {
        out = fut => Some(out),
        _ = stop => None,
    }
}

/// Aborts a task when dropped, so a lease's helper task never outlives the lease.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut retry = Retry::new(
            "contacting the coordinators",
            Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
            Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
        );
        loop {
            let Some(resolved) = unless_stopped(self.resolve(), &mut stop).await else {
                return self.stopped();
            };
            let e = match resolved {
                Ok(()) => {
                    retry.succeeded();
                    break;
                }
                Err(Resolve::Fatal(reason)) => return self.failed(reason),
                Err(Resolve::Retry(e)) => e,
            };
            let wait = retry.failed(e.kind(), &e);
            if unless_stopped(tokio::time::sleep(wait), &mut stop)
                .await
                .is_none()
            {
                return self.stopped();
            }
        }
        let mut retry = Retry::new(
            "acquiring a lease",
            Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
            Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
        );
        loop {
            let Some(obtained) = unless_stopped(self.obtain(), &mut stop).await else {
                return self.stopped();
            };
            let e = match obtained {
                Ok((grant, sent)) => {
                    retry.succeeded();
                    match self.hold(grant, sent, &mut stop).await {
                        Held::Lost => continue,
                        Held::Shutdown => return,
                        Held::Failed(reason) => return self.failed(reason),
                    }
                }
                Err(e @ ClientError::StoreMismatch { .. }) => return self.failed(e.to_string()),
                Err(e) => e,
            };
            let wait = retry.failed(e.kind(), &e);
            if unless_stopped(tokio::time::sleep(wait), &mut stop)
                .await
                .is_none()
            {
                return self.stopped();
            }
        }
    }

    fn stopped(&self) {
        self.tx.send_replace(MemberState::Stopped);
    }

    /// Stops for good on a configuration error.
    fn failed(&self, reason: String) {
        tracing::error!("{reason}");
        self.tx.send_replace(MemberState::Failed { reason });
    }

    /// Learns the cluster's store, layout and limits from every reachable coordinator, and
    /// checks them against this node's configuration.
    async fn resolve(&mut self) -> Result<(), Resolve> {
        let info = self.client.probe().await.map_err(|e| match e {
            ClientError::StoreMismatch { .. } => Resolve::Fatal(e.to_string()),
            e => Resolve::Retry(e),
        })?;
        let theirs = Layout::from_spec(&info.layout_spec).map_err(|e| {
            Resolve::Fatal(format!(
                "the coordinators run layout `{}`, which this node cannot build: {e}",
                info.layout_spec
            ))
        })?;
        if let Some(mine) = &self.config.layout {
            if *mine != theirs {
                return Err(Resolve::Fatal(format!(
                    "this node's layout `{}` differs from the cluster's layout `{}` (store {}); \
                     a node must issue ids in the layout its host id is leased for: start it \
                     without --layout to serve the cluster's, or with the same layout",
                    mine.spec(),
                    theirs.spec(),
                    info.store_id
                )));
            }
        }
        let _ = self.layout.set(theirs);
        let l = info.limits;
        self.ttl_ms = self.config.ttl_ms.clamp(l.ttl_ms_min, l.ttl_ms_max);
        if self.ttl_ms != self.config.ttl_ms {
            tracing::warn!(
                asked_ms = self.config.ttl_ms,
                using_ms = self.ttl_ms,
                "the lease TTL is outside the coordinators' range {}..={} ms; using {} ms",
                l.ttl_ms_min,
                l.ttl_ms_max,
                self.ttl_ms
            );
        }
        self.apply_reservation_limit(l.reservation_ahead_ms_max);
        tracing::info!(store_id = %info.store_id, layout = %info.layout_spec,
            ttl_ms = self.ttl_ms, reserve_ahead_ms = self.reserve_ahead_ms, "coordinators reached");
        Ok(())
    }

    fn apply_reservation_limit(&mut self, ahead_max_ms: u64) {
        self.reserve_ahead_ms = self.config.reserve_ahead_ms.min(ahead_max_ms).max(1);
    }

    /// Acquires a lease (as a standby: waits for a failed host first). Returns the grant
    /// and the time the granting request was sent.
    async fn obtain(&mut self) -> Result<(LeaseGrant, Instant), ClientError> {
        // One idempotency key per acquisition, kept across retries: a grant whose answer was
        // lost is answered again instead of leaving a ghost lease behind.
        let request_id = self
            .request_id
            .get_or_insert_with(|| shardflake::uuid7::next().to_string())
            .clone();
        let c = &self.config;
        if c.standby && !self.promoted {
            self.tx.send_replace(MemberState::Standby);
            let mut busy = Retry::new(
                "taking over a failed host id",
                Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
                Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
            );
            loop {
                let offered = self
                    .client
                    .standby_wait(&StandbyWaitRequest {
                        name: c.name.clone(),
                        timeout_ms: STANDBY_POLL_MS,
                    })
                    .await?;
                let Some(host_id) = offered.host_id else {
                    continue;
                };
                let sent = Instant::now();
                match self
                    .client
                    .acquire(&AcquireRequest {
                        name: c.name.clone(),
                        ttl_ms: Some(self.ttl_ms),
                        host_id: Some(host_id),
                        prefer_host_id: None,
                        reserve_ahead_ms: Some(self.reserve_ahead_ms),
                        request_id: Some(request_id.clone()),
                    })
                    .await
                {
                    Ok(g) => {
                        self.promoted = true;
                        self.request_id = None;
                        tracing::info!(host_id, token = g.token, "standby took over host id");
                        return Ok((g, sent));
                    }
                    Err(e) if e.code() == Some(ErrorCode::HostBusy) => {
                        // Another standby took it first: wait for the next failure.
                        tokio::time::sleep(busy.failed(e.kind(), &e)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !matches!(*self.tx.borrow(), MemberState::Lost { .. }) {
            self.tx.send_replace(MemberState::Acquiring);
        }
        let sent = Instant::now();
        let g = self
            .client
            .acquire(&AcquireRequest {
                name: c.name.clone(),
                ttl_ms: Some(self.ttl_ms),
                host_id: None,
                prefer_host_id: self.last_host.or(c.prefer_host_id),
                reserve_ahead_ms: Some(self.reserve_ahead_ms),
                request_id: Some(request_id),
            })
            .await?;
        self.request_id = None;
        Ok((g, sent))
    }

    fn p99(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v: Vec<Duration> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        let idx = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx]
    }

    /// When to send the next renewal: once the time left is under k·p99 + margin, and never
    /// later than half the TTL after the last acknowledged renewal was sent.
    fn next_renewal(&self, last_send: Instant, deadline: Instant, ttl_ms: u64) -> Instant {
        let half = last_send + Duration::from_millis(ttl_ms / 2);
        let lead = self.p99().mul_f64(self.config.latency_multiplier)
            + Duration::from_millis(self.config.renew_margin_ms);
        let predictive = deadline
            .checked_sub(lead)
            .unwrap_or(last_send)
            .max(last_send);
        half.min(predictive)
    }

    fn lose(&mut self, lease: &ActiveLease, reason: String) {
        lease.reservation.revoke();
        lease.guard.clear();
        self.last_host = Some(lease.host_id);
        tracing::warn!(host_id = lease.host_id, token = lease.token, %reason, "lease lost; stopped issuing");
        self.tx.send_replace(MemberState::Lost {
            host_id: lease.host_id,
            token: lease.token,
            reason,
        });
    }

    fn deadline_after(&self, sent: Instant, ttl_ms: u64) -> Instant {
        sent + Duration::from_millis(ttl_ms.saturating_sub(self.config.drift_margin_ms))
    }

    /// Checks a grant against the cluster this keeper resolved: the layout's fingerprint and
    /// the store. A grant that fails is given back and never used.
    async fn check_grant(&self, grant: &LeaseGrant) -> Result<Layout, String> {
        let expected = self.layout.get().expect("resolved before acquiring");
        let problem = match Layout::from_spec(&grant.layout_spec) {
            Ok(l) if l == *expected => None,
            Ok(l) => Some(format!(
                "the grant of host id {} is for layout `{}`, but this node runs `{}`",
                grant.host_id,
                l.spec(),
                expected.spec()
            )),
            Err(e) => Some(format!(
                "the grant of host id {} names layout `{}`, which this node cannot build: {e}",
                grant.host_id, grant.layout_spec
            )),
        }
        .or_else(|| {
            let pinned = self.client.store_id();
            (pinned.as_deref() != Some(grant.store_id.as_str())).then(|| {
                format!(
                    "the grant of host id {} comes from store {}, but this node uses store {}",
                    grant.host_id,
                    grant.store_id,
                    pinned.unwrap_or_default()
                )
            })
        });
        match problem {
            None => Ok(expected.clone()),
            Some(p) => {
                let req = ReleaseRequest { token: grant.token };
                let release = self.client.release(grant.host_id, &req);
                let _ =
                    tokio::time::timeout(Duration::from_millis(RELEASE_TIMEOUT_MS), release).await;
                Err(format!("{p}; refused the grant and gave the host id back"))
            }
        }
    }

    async fn hold(
        &mut self,
        grant: LeaseGrant,
        sent: Instant,
        stop: &mut oneshot::Receiver<()>,
    ) -> Held {
        let layout = match self.check_grant(&grant).await {
            Ok(l) => l,
            Err(reason) => return Held::Failed(reason),
        };
        self.apply_reservation_limit(grant.limits.reservation_ahead_ms_max);
        let wake = Arc::new(Wake::default());
        // The generator asks for more once its headroom is under the low-water mark; it must
        // stay below the look-ahead, or every id would ask.
        let low_water_ms = self.config.low_water_ms.min(self.reserve_ahead_ms / 2);
        let reservation = Arc::new(Reservation::new(
            Arc::new(KeeperReserver(wake.clone())),
            low_water_ms,
        ));
        self.generation += 1;
        let lease = Arc::new(ActiveLease {
            host_id: grant.host_id,
            token: grant.token,
            ttl_ms: grant.ttl_ms,
            start_above_ms: grant.start_above_ms,
            layout,
            store_id: grant.store_id.clone(),
            generation: self.generation,
            reservation: reservation.clone(),
            guard: Guard::new(),
            wake: wake.clone(),
            temporal: OnceLock::new(),
        });
        let mut deadline = self.deadline_after(sent, grant.ttl_ms);
        if Instant::now() >= deadline {
            self.lose(
                &lease,
                "the grant arrived after the lease's deadline".into(),
            );
            return Held::Lost;
        }
        lease.guard.set(deadline);
        reservation.extend_to(grant.reserved_until_ms);
        tracing::info!(
            host_id = grant.host_id,
            token = grant.token,
            start_above_ms = grant.start_above_ms,
            "lease held"
        );
        self.tx.send_replace(MemberState::Active(lease.clone()));
        // Extensions and blocks run beside the renewals; a refusal that ends the lease comes
        // back through `refused`.
        let (refused_tx, mut refused) = mpsc::channel::<ClientError>(1);
        let _supply = AbortOnDrop(tokio::spawn(supply(
            self.client.clone(),
            lease.clone(),
            self.reserve_ahead_ms,
            self.config.clock.clone(),
            refused_tx,
        )));
        let mut retry = Retry::new(
            "renewing the lease",
            Duration::from_millis(RENEW_RETRY_MS_MIN),
            Duration::from_millis((lease.ttl_ms / 10).max(2 * RENEW_RETRY_MS_MIN)),
        );
        let mut last_send = sent;
        let mut retry_at: Option<Instant> = None;
        loop {
            let renew_at =
                retry_at.unwrap_or_else(|| self.next_renewal(last_send, deadline, lease.ttl_ms));
            tokio::select! {
                biased;
                _ = &mut *stop => {
                    reservation.revoke();
                    lease.guard.clear();
                    let req = ReleaseRequest { token: lease.token };
                    let release = self.client.release(lease.host_id, &req);
                    match tokio::time::timeout(Duration::from_millis(RELEASE_TIMEOUT_MS), release).await {
                        Ok(Ok(())) => tracing::info!(host_id = lease.host_id, "lease released"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "release failed; the lease will expire"),
                        Err(_) => tracing::warn!("release timed out; the lease will expire"),
                    }
                    self.tx.send_replace(MemberState::Stopped);
                    return Held::Shutdown;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.lose(&lease, "no renewal acknowledged before the deadline".into());
                    return Held::Lost;
                }
                Some(e) = refused.recv() => {
                    self.lose(&lease, format!("refused: {e}"));
                    return Held::Lost;
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    match self.renew_once(&lease, deadline).await {
                        Renewal::Ok(sent, reserved_until_ms, next_block) => {
                            retry.succeeded();
                            retry_at = None;
                            last_send = sent;
                            deadline = self.deadline_after(sent, lease.ttl_ms);
                            if Instant::now() >= deadline {
                                self.lose(&lease, "the renewal was acknowledged after its deadline".into());
                                return Held::Lost;
                            }
                            lease.guard.set(deadline);
                            reservation.extend_to(reserved_until_ms);
                            if let (Some(b), Some(link)) = (next_block, lease.temporal.get()) {
                                link.install(b);
                            }
                        }
                        Renewal::Rejected(e) => {
                            self.lose(&lease, format!("renewal refused: {e}"));
                            return Held::Lost;
                        }
                        Renewal::Failed(e) => {
                            // Retry soon, still bounded by the deadline arm above.
                            retry_at = Some(Instant::now() + retry.failed(e.kind(), &e));
                        }
                    }
                }
            }
        }
    }

    async fn renew_once(&mut self, lease: &ActiveLease, deadline: Instant) -> Renewal {
        let sent = Instant::now();
        let req = RenewRequest {
            token: lease.token,
            reserve_until_ms: Some(self.config.clock.now_ms() + self.reserve_ahead_ms),
            usage: lease.temporal.get().and_then(|t| t.usage()),
        };
        let left = deadline.saturating_duration_since(sent);
        let call = self.client.renew(lease.host_id, &req, left);
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Renewal::Failed(ClientError::Unavailable {
                tried: 0,
                last: "the renewal timed out at the lease deadline".into(),
            }),
            Ok(Ok(resp)) => {
                if self.latencies.len() == LATENCY_SAMPLES_MAX {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(sent.elapsed());
                Renewal::Ok(sent, resp.reserved_until_ms, resp.next_block)
            }
            Ok(Err(e)) if fatal_for_lease(&e) => Renewal::Rejected(e),
            Ok(Err(e)) => Renewal::Failed(e),
        }
    }
}

/// Serves the generator's wake-ups for one lease: reservation extensions and counter blocks.
/// Runs beside the renewals until the lease ends (the keeper aborts it); reports a refusal
/// that ends the lease through `refused`.
async fn supply(
    client: Arc<CoordinatorClient>,
    lease: Arc<ActiveLease>,
    reserve_ahead_ms: u64,
    clock: Arc<dyn Clock>,
    refused: mpsc::Sender<ClientError>,
) {
    let mut retry = Retry::new(
        "extending the reservation and fetching counter blocks",
        Duration::from_millis(SUPPLY_RETRY_MS_MIN),
        Duration::from_millis(SUPPLY_RETRY_MS_MAX),
    );
    let mut pending: Vec<(u64, u64)> = Vec::new();
    loop {
        lease.wake.notify.notified().await;
        // Serve, and after a failure wait out the backoff before trying again: the generator
        // asks again on every id it cannot issue, and those asks must not turn into requests.
        loop {
            match supply_once(&client, &lease, reserve_ahead_ms, &clock, &mut pending).await {
                Ok(()) => {
                    retry.succeeded();
                    break;
                }
                Err(e) if fatal_for_lease(&e) => {
                    let _ = refused.send(e).await;
                    return;
                }
                Err(e) => tokio::time::sleep(retry.failed(e.kind(), &e)).await,
            }
        }
    }
}

/// One pass over what the generator asked for. Block requests that fail stay in `pending`.
async fn supply_once(
    client: &CoordinatorClient,
    lease: &ActiveLease,
    reserve_ahead_ms: u64,
    clock: &Arc<dyn Clock>,
    pending: &mut Vec<(u64, u64)>,
) -> Result<(), ClientError> {
    let needed = lease.wake.needed_ms.load(Ordering::Acquire);
    if needed > lease.reservation.until_ms() && !lease.reservation.is_revoked() {
        let until_ms = needed.max(clock.now_ms() + reserve_ahead_ms);
        let req = ReservationRequest {
            token: lease.token,
            until_ms,
        };
        let r = client.extend_reservation(lease.host_id, &req).await?;
        // A revoked reservation ignores the extension, so an answer that arrives after the
        // lease was lost changes nothing.
        lease.reservation.extend_to(r.reserved_until_ms);
    }
    for request in std::mem::take(&mut *lease.wake.blocks.lock().expect("poisoned")) {
        if !pending.contains(&request) {
            pending.push(request);
        }
    }
    // Requests for shards the generator has left are moot.
    let current = lease
        .temporal
        .get()
        .and_then(|t| t.usage())
        .map_or(0, |u| u.shard);
    pending.retain(|(shard, _)| *shard >= current);
    while let Some(&(shard, after_counter)) = pending.first() {
        let req = BlockRequest {
            host_id: lease.host_id,
            token: lease.token,
            shard,
            after_counter,
        };
        match client.block(&req).await {
            Ok(b) => {
                if let (true, Some(link)) = (lease.guard.is_valid(), lease.temporal.get()) {
                    link.install(b);
                }
            }
            // Nothing left to grant in this shard (or no blocks at all): asking again cannot
            // help; the generator moves on with the next shard.
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                    ErrorCode::CounterSpaceExhausted
                        | ErrorCode::NotTemporal
                        | ErrorCode::BadRequest
                )
                ) =>
            {
                tracing::warn!(shard, error = %e, "counter block refused; not asking again for this request");
            }
            Err(e) => return Err(e),
        }
        pending.remove(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (a renewal answered after the keeper had given the lease up could set the
    /// guard again): a lost lease stays lost.
    #[tokio::test]
    async fn a_cleared_guard_stays_invalid_whatever_is_set_later() {
        let g = Guard::new();
        assert!(!g.is_valid(), "no deadline yet");
        g.set(Instant::now() + Duration::from_secs(10));
        assert!(g.is_valid());
        g.clear();
        g.set(Instant::now() + Duration::from_secs(10));
        assert!(!g.is_valid());
    }
}
