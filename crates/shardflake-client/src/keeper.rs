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
//! coordinator acknowledged them, and never after the lease was lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shardflake::{
    Clock, CounterBlock, CounterSupplier, GenerateError, Layout, LayoutError, Reservation,
    Reserver, SnowflakeBuilder, SystemClock, TemporalBuilder, TemporalGenerator,
};
use shardflake_proto::coord::{
    codes, AcquireRequest, BlockGrant, BlockRequest, LeaseGrant, ReleaseRequest, RenewRequest,
    ReservationRequest, ShardUsage, StandbyWaitRequest,
};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{ClientError, CoordinatorClient};

/// Default lease TTL asked for.
pub const TTL_MS_DEFAULT: u64 = 10_000;
/// Renew when the time left falls under this multiple of the recent p99 renewal latency...
pub const LATENCY_MULTIPLIER_DEFAULT: f64 = 4.0;
/// ...plus this margin (ms).
pub const RENEW_MARGIN_MS_DEFAULT: u64 = 50;
/// Bounds of the default look-ahead of the reservation (ms).
const RESERVE_AHEAD_MS_MIN: u64 = 100;
const RESERVE_AHEAD_MS_MAX: u64 = 30_000;
/// Renewal latencies kept for the p99.
const LATENCY_SAMPLES_MAX: usize = 128;
/// Wait between failed acquisitions, doubling up to the maximum (ms).
const ACQUIRE_RETRY_MS_MIN: u64 = 100;
const ACQUIRE_RETRY_MS_MAX: u64 = 2_000;
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
}

impl std::fmt::Debug for KeeperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperConfig")
            .field("name", &self.name)
            .field("ttl_ms", &self.ttl_ms)
            .field("drift_margin_ms", &self.drift_margin_ms)
            .field("reserve_ahead_ms", &self.reserve_ahead_ms)
            .field("standby", &self.standby)
            .finish_non_exhaustive()
    }
}

impl KeeperConfig {
    /// Defaults for a lease of `ttl_ms`: a drift margin of 2 % (at least 5 ms), a reservation
    /// kept one TTL ahead of the wall clock, refilled at half of that.
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
    /// Microseconds since `base` until which the lease is valid; 0 once it is not.
    deadline_us: AtomicU64,
}

impl Guard {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            deadline_us: AtomicU64::new(0),
        }
    }
    fn set(&self, deadline: Instant) {
        let us = deadline.saturating_duration_since(self.base).as_micros() as u64;
        self.deadline_us.store(us.max(1), Ordering::Release);
    }
    fn clear(&self) {
        self.deadline_us.store(0, Ordering::Release);
    }
    fn is_valid(&self) -> bool {
        let deadline = self.deadline_us.load(Ordering::Acquire);
        deadline != 0 && (self.base.elapsed().as_micros() as u64) < deadline
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
    /// The coordinator's layout name.
    pub layout: String,
    /// Shard length when the coordinator runs a temporal layout.
    pub shard_granularity_ms: Option<u64>,
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

    /// A Snowflake generator builder for this lease: the host id spread over `layout`'s node
    /// fields, the reservation, and the start bound. Add a clock or policy and build.
    pub fn snowflake(&self, layout: Layout) -> Result<SnowflakeBuilder<SystemClock>, LayoutError> {
        let values = node_values(&layout, self.host_id)?;
        let mut b = shardflake::SnowflakeGenerator::builder(layout);
        for (name, v) in values {
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

    /// A temporal generator builder for this lease: the host id and the lease's counter
    /// supplier. Build it, wrap it in an `Arc` and pass it to
    /// [`ActiveLease::attach_temporal`] so that granted blocks reach it.
    pub fn temporal(&self, layout: Layout) -> TemporalBuilder<SystemClock> {
        TemporalGenerator::builder(layout)
            .host(self.host_id as u64)
            .supplier(self.counter_supplier())
    }
}

/// Splits a host id over a layout's node fields, most significant field first.
///
/// ```
/// use shardflake::Layout;
/// use shardflake_client::node_values;
/// let twitter = Layout::preset("twitter").unwrap();
/// assert_eq!(
///     node_values(&twitter, 37).unwrap(),
///     vec![("datacenter".to_string(), 1), ("worker".to_string(), 5)]
/// );
/// assert!(node_values(&twitter, 1024).is_err());
/// ```
pub fn node_values(layout: &Layout, host_id: u32) -> Result<Vec<(String, u64)>, LayoutError> {
    let fields: Vec<_> = layout.node_fields().collect();
    let total: u32 = fields.iter().map(|f| f.bits()).sum();
    let max = if total >= 64 {
        u64::MAX
    } else {
        (1u64 << total) - 1
    };
    if host_id as u64 > max {
        return Err(LayoutError::FieldValue {
            field: fields
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join("+"),
            value: host_id as u64,
            max,
        });
    }
    let mut rest = total;
    Ok(fields
        .iter()
        .map(|f| {
            rest -= f.bits();
            (f.name().to_string(), (host_id as u64 >> rest) & f.max())
        })
        .collect())
}

/// What the node may do, as published by the [`LeaseKeeper`].
#[derive(Debug, Clone)]
pub enum MemberState {
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
        }
    }
}

/// Holds a host-id lease in a background task; see the module docs.
pub struct LeaseKeeper {
    state: watch::Receiver<MemberState>,
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
        let initial = if config.standby {
            MemberState::Standby
        } else {
            MemberState::Acquiring
        };
        let (tx, rx) = watch::channel(initial);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            client,
            reserve_ahead_ms: config.reserve_ahead_ms,
            config,
            tx,
            latencies: VecDeque::new(),
            generation: 0,
            last_host: None,
            promoted: false,
        };
        let handle = tokio::spawn(task.run(stop_rx));
        Self {
            state: rx,
            shutdown: Some(stop_tx),
            task: Some(handle),
        }
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
                if matches!(state, MemberState::Stopped) || rx.changed().await.is_err() {
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
            if matches!(*rx.borrow(), MemberState::Stopped) || rx.changed().await.is_err() {
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
}

enum Renewal {
    Ok(Instant, u64, Option<BlockGrant>),
    Rejected(ClientError),
    Failed(String),
}

struct Task {
    client: Arc<CoordinatorClient>,
    config: KeeperConfig,
    reserve_ahead_ms: u64,
    tx: watch::Sender<MemberState>,
    latencies: VecDeque<Duration>,
    generation: u64,
    last_host: Option<u32>,
    promoted: bool,
}

fn fatal_for_lease(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(codes::STALE_TOKEN | codes::LEASE_EXPIRED | codes::NOT_FOUND | codes::BAD_REQUEST)
    )
}

impl Task {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut backoff = ACQUIRE_RETRY_MS_MIN;
        loop {
            let obtained = tokio::select! {
                r = self.obtain() => r,
                _ = &mut stop => {
                    self.tx.send_replace(MemberState::Stopped);
                    return;
                }
            };
            match obtained {
                Ok((grant, sent)) => {
                    backoff = ACQUIRE_RETRY_MS_MIN;
                    if let Held::Shutdown = self.hold(grant, sent, &mut stop).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = backoff, "cannot obtain a lease");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(backoff)) => {}
                        _ = &mut stop => {
                            self.tx.send_replace(MemberState::Stopped);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(ACQUIRE_RETRY_MS_MAX);
                }
            }
        }
    }

    /// Acquires a lease (as a standby: waits for a failed host first). Returns the grant
    /// and the time the granting request was sent.
    async fn obtain(&mut self) -> Result<(LeaseGrant, Instant), ClientError> {
        let c = &self.config;
        if c.standby && !self.promoted {
            self.tx.send_replace(MemberState::Standby);
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
                        ttl_ms: Some(c.ttl_ms),
                        host_id: Some(host_id),
                        prefer_host_id: None,
                        reserve_ahead_ms: Some(self.reserve_ahead_ms),
                    })
                    .await
                {
                    Ok(g) => {
                        self.promoted = true;
                        tracing::info!(host_id, token = g.token, "standby took over host id");
                        return Ok((g, sent));
                    }
                    Err(e) if e.code() == Some(codes::HOST_BUSY) => continue,
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
                ttl_ms: Some(c.ttl_ms),
                host_id: None,
                prefer_host_id: self.last_host.or(c.prefer_host_id),
                reserve_ahead_ms: Some(self.reserve_ahead_ms),
            })
            .await?;
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
    fn next_renewal(&self, last_send: Instant, deadline: Instant) -> Instant {
        let half = last_send + Duration::from_millis(self.config.ttl_ms / 2);
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

    async fn hold(
        &mut self,
        grant: LeaseGrant,
        sent: Instant,
        stop: &mut oneshot::Receiver<()>,
    ) -> Held {
        let wake = Arc::new(Wake::default());
        let reservation = Arc::new(Reservation::new(
            Arc::new(KeeperReserver(wake.clone())),
            self.config.low_water_ms,
        ));
        self.generation += 1;
        let lease = Arc::new(ActiveLease {
            host_id: grant.host_id,
            token: grant.token,
            ttl_ms: grant.ttl_ms,
            start_above_ms: grant.start_above_ms,
            layout: grant.layout.clone(),
            shard_granularity_ms: grant.shard_granularity_ms,
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
        let mut last_send = sent;
        let mut retry_at: Option<Instant> = None;
        loop {
            let renew_at = retry_at.unwrap_or_else(|| self.next_renewal(last_send, deadline));
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
                _ = tokio::time::sleep_until(renew_at) => {
                    match self.renew_once(&lease, deadline).await {
                        Renewal::Ok(sent, reserved_until_ms, next_block) => {
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
                        Renewal::Failed(why) => {
                            // Retry soon, still bounded by the deadline arm above.
                            let wait = Duration::from_millis((lease.ttl_ms / 20).clamp(10, 200));
                            tracing::debug!(%why, "renewal failed; retrying");
                            retry_at = Some(Instant::now() + wait);
                        }
                    }
                }
                _ = wake.notify.notified() => {
                    if let Err(e) = self.serve_requests(&lease, deadline).await {
                        self.lose(&lease, format!("refused: {e}"));
                        return Held::Lost;
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
            Err(_) => Renewal::Failed("timed out".into()),
            Ok(Ok(resp)) => {
                if self.latencies.len() == LATENCY_SAMPLES_MAX {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(sent.elapsed());
                Renewal::Ok(sent, resp.reserved_until_ms, resp.next_block)
            }
            Ok(Err(e)) if e.code() == Some(codes::RESERVATION_TOO_FAR) => {
                // The coordinator allows less look-ahead than configured: ask for less.
                self.reserve_ahead_ms = (self.reserve_ahead_ms / 2).max(1);
                Renewal::Failed(e.to_string())
            }
            Ok(Err(e)) if fatal_for_lease(&e) => Renewal::Rejected(e),
            Ok(Err(e)) => Renewal::Failed(e.to_string()),
        }
    }

    /// Serves the generator's wake-ups: a reservation extension and counter blocks.
    async fn serve_requests(
        &mut self,
        lease: &ActiveLease,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let needed = lease.wake.needed_ms.load(Ordering::Acquire);
        if needed > lease.reservation.until_ms() && !lease.reservation.is_revoked() {
            let until_ms = needed.max(self.config.clock.now_ms() + self.reserve_ahead_ms);
            let req = ReservationRequest {
                token: lease.token,
                until_ms,
            };
            let call = self.client.extend_reservation(lease.host_id, &req);
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(r)) => {
                    if lease.guard.is_valid() {
                        lease.reservation.extend_to(r.reserved_until_ms);
                    }
                }
                Ok(Err(e)) if fatal_for_lease(&e) => return Err(e),
                Ok(Err(e)) => tracing::warn!(error = %e, "reservation extension failed"),
                Err(_) => {}
            }
        }
        let pending: Vec<(u64, u64)> =
            std::mem::take(&mut *lease.wake.blocks.lock().expect("poisoned"));
        for (shard, after_counter) in pending {
            let req = BlockRequest {
                host_id: lease.host_id,
                token: lease.token,
                shard,
                after_counter,
            };
            let call = self.client.block(&req);
            match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(b)) => {
                    if let (true, Some(link)) = (lease.guard.is_valid(), lease.temporal.get()) {
                        link.install(b);
                    }
                }
                Ok(Err(e)) if fatal_for_lease(&e) => return Err(e),
                Ok(Err(e)) => tracing::warn!(error = %e, shard, "counter block request failed"),
                Err(_) => {}
            }
        }
        Ok(())
    }
}
