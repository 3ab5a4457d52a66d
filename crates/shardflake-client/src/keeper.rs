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
    Clock, CounterBlock, CounterSupplier, FastRng, GenerateError, Layout, LayoutError, Reservation,
    Reserver, SnowflakeBuilder, SystemClock, TemporalBuilder, TemporalGenerator,
};
use shardflake_proto::coord::{BlockGrant, LeaseSecret, ShardUsage};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::CoordinatorClient;
use crate::retry::Retry;

mod supply;
mod task;

use task::Task;

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
    /// Seeds the jitter of every retry loop of the keeper, so that a deterministic simulation
    /// replays it; `None` (the default) seeds it from the operating system.
    pub jitter_seed: Option<u64>,
    /// Draws lease secrets from a PRNG with this seed instead of the operating system's
    /// cryptographic source, so that a deterministic simulation replays them. Secrets drawn
    /// this way are predictable: never set it outside a simulation.
    pub secret_seed: Option<u64>,
    /// Where clients reach this node, sent with every acquire for the routing table.
    pub url: Option<String>,
    /// Called before every renewal for the node's namespace consumption since the previous
    /// call, sent with the renewal (the coordinator forecasts from it).
    pub ns_usage: Option<NsUsageSource>,
    /// Called before a renewal that follows a failed one for the newest block the node holds
    /// of each namespace, presented with it: a store restored from a backup keeps them as
    /// floors for its repair ([`shardflake_proto::coord::RenewRequest::ns_held`]).
    pub ns_held: Option<NsHeldSource>,
}

/// What [`KeeperConfig::ns_held`] calls.
pub type NsHeldSource = Arc<dyn Fn() -> Vec<shardflake_proto::ns::NsHeld> + Send + Sync + 'static>;

/// What [`KeeperConfig::ns_usage`] calls.
pub type NsUsageSource =
    Arc<dyn Fn() -> Vec<shardflake_proto::ns::NsUsage> + Send + Sync + 'static>;

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
            jitter_seed: None,
            secret_seed: None,
            url: None,
            ns_usage: None,
            ns_held: None,
        }
    }

    /// A new lease secret: from the operating system's cryptographic source, or from
    /// [`KeeperConfig::secret_seed`] and the acquisition's number in a simulation.
    pub(crate) fn draw_secret(&self, acquisition: u64) -> LeaseSecret {
        let mut bytes = [0u8; shardflake_proto::secret::LEASE_SECRET_BYTES];
        match self.secret_seed {
            Some(seed) => {
                let mut rng =
                    FastRng::from_seed(seed ^ acquisition.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                bytes.copy_from_slice(&rng.next_u128().to_le_bytes());
            }
            None => getrandom::fill(&mut bytes)
                .expect("the operating system's random source is available"),
        }
        LeaseSecret::from_bytes(bytes)
    }

    /// The retry schedule of the loop `what`, jittered from [`KeeperConfig::jitter_seed`].
    pub(crate) fn retry(&self, what: &'static str, min: Duration, max: Duration) -> Retry {
        match self.jitter_seed {
            None => Retry::new(what, min, max),
            Some(seed) => {
                // Each loop gets its own stream: the seed mixed with the loop's name (FNV-1a).
                let salt = what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                Retry::with_rng(what, min, max, FastRng::from_seed(seed ^ salt))
            }
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
    /// The secret this keeper drew for the lease; every call under it presents it.
    secret: LeaseSecret,
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
    /// The lease's secret, for calls made under the lease (namespace blocks and returns).
    /// Never log it.
    pub fn secret(&self) -> &LeaseSecret {
        &self.secret
    }

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
        Ok(b.reservation(self.reservation.clone()).start_above_ms(
            if shardflake::mutant::active(
                shardflake::mutant::Mutant::SuccessorStartsAtTheBoundNotAboveIt,
            ) {
                self.start_above_ms.saturating_sub(1)
            } else {
                self.start_above_ms
            },
        ))
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
            acquisitions: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
