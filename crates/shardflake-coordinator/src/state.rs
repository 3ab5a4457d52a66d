//! The coordinator's rules: leases with fencing tokens, fenced reservations, counter blocks,
//! standby promotion. Stateless over a [`KvStore`]: every operation reads the keys it needs
//! and commits one compare-and-swap transaction, retrying on conflict, so several coordinator
//! processes can share one etcd store.
//!
//! # Keys
//!
//! * `meta/cluster`: the store's identity and layout ([`ClusterRecord`]), written once.
//! * `meta/token`: the last fencing token granted (a decimal number). Every grant increments
//!   it in the same transaction as the lease, so tokens strictly increase across restarts.
//! * `host/{host_id:010}`: the lease and reservation of a host id ([`HostRecord`], JSON). It
//!   outlives the lease: the next holder starts above its `reserved_until_ms`.
//! * `block/{host_id:010}/{shard:020}`: the counter blocks granted for a (host, shard) pair
//!   ([`BlockRecord`]): every new block starts at or above its `high_water`.
//!
//! # Expiry
//!
//! A lease is expired when this process has seen the same `(token, renewals)` for a full TTL
//! on its monotonic clock. A record first seen after a restart therefore counts as live for a
//! full TTL from then, whatever its persisted wall-clock expiry says: the holder's own
//! deadline (send time of its last acknowledged renewal + TTL − drift margin) lies before the
//! crash plus a TTL, so by then it has stopped issuing. The wall-clock expiry is persisted for
//! operators and status; a wall clock that steps cannot shorten a lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shardflake::Layout;
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, BlockRequest, ClusterInfo, CoordinatorLimits, HostStatus,
    HostsResponse, LeaseGrant, LeaseState, ReleaseRequest, RenewRequest, RenewResponse,
    ReservationRequest, ReservationResponse, Role, ShardForecast, ShardUsage, StandbyStatus,
    TemporalStatus, REQUEST_ID_BYTES_MAX,
};
use tokio::sync::Notify;

use crate::error::CoordError;
use crate::forecast::Holt;
use crate::meta::{self, ClusterRecord};
use crate::store::{KvStore, StoreError, Txn, TxnOutcome};
use crate::time::TimeSource;

/// Default lease TTL.
pub const TTL_MS_DEFAULT: u64 = 10_000;
/// Shortest lease TTL a client may ask for.
pub const TTL_MS_MIN: u64 = 100;
/// Longest lease TTL a client may ask for.
pub const TTL_MS_MAX: u64 = 600_000;
/// Default limit on how far ahead of the coordinator's clock a reservation may reach.
pub const RESERVATION_AHEAD_MS_MAX_DEFAULT: u64 = 60_000;
/// Smallest counter block granted.
pub const BLOCK_MIN_DEFAULT: u64 = 4_096;
/// Blocks are the forecast times this factor, so a forecast that is a little low still fits.
pub const BLOCK_HEADROOM: f64 = 1.25;
/// Longest a standby's long poll waits.
pub const STANDBY_WAIT_MS_MAX: u64 = 60_000;
/// Largest pool, whatever the layout's host bits allow.
pub const POOL_SIZE_MAX: u32 = 1 << 24;
/// Longest holder or standby name kept, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Blocks may be asked for at most this many shards ahead of the coordinator's clock.
pub const SHARD_AHEAD_MAX: u64 = 1;
/// A refill block is sized to last at most this long at the current rate (ms).
pub const REFILL_TARGET_MS_MAX: u64 = 10_000;
/// Attempts of one compare-and-swap loop before giving up with `Contended`.
const CAS_ATTEMPTS_MAX: u32 = 64;
/// Shards of forecast-against-actual history kept per host.
const HISTORY_MAX: usize = 8;
/// A standby's wait re-reads the leases at least this often (ms).
const STANDBY_RECHECK_MS_MAX: u64 = 200;
/// A host id offered to one standby is not offered to another for this long (ms).
const OFFER_HOLD_MS: u64 = 5_000;
/// Standbys listed in the status at most (the long poll works for more).
const STANDBYS_MAX: usize = 1_024;
/// A standby not heard from for this long is dropped from the status (ms).
const STANDBY_FORGET_MS: u64 = 120_000;

const TOKEN_KEY: &str = "meta/token";
const HOST_PREFIX: &str = "host/";

fn host_key(host_id: u32) -> String {
    format!("host/{host_id:010}")
}

fn block_key(host_id: u32, shard: u64) -> String {
    format!("block/{host_id:010}/{shard:020}")
}

/// The coordinator's limits and layout, validated once at start-up.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The layout whose host ids are leased.
    pub layout: Layout,
    /// Host ids `0..pool_size` are leased.
    pub pool_size: u32,
    /// TTL of a lease whose request names none.
    pub ttl_ms_default: u64,
    /// Shortest TTL accepted.
    pub ttl_ms_min: u64,
    /// Longest TTL accepted.
    pub ttl_ms_max: u64,
    /// How far ahead of the coordinator's wall clock a reservation may reach.
    pub reservation_ahead_ms_max: u64,
    /// Smallest counter block (temporal layouts).
    pub block_min: u64,
}

impl CoordinatorConfig {
    /// Defaults for `layout`: the pool holds every value of the layout's node fields.
    ///
    /// ```
    /// use shardflake::Layout;
    /// use shardflake_coordinator::CoordinatorConfig;
    /// let c = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    /// assert_eq!(c.pool_size, 1024); // datacenter 5 bits + worker 5 bits
    /// assert!(!c.is_temporal());
    /// ```
    pub fn new(layout: Layout) -> Self {
        let bits: u32 = layout.node_fields().map(|f| f.bits()).sum();
        let pool_size = if bits >= 24 {
            POOL_SIZE_MAX
        } else {
            1u32 << bits
        };
        Self {
            layout,
            pool_size: pool_size.min(POOL_SIZE_MAX),
            ttl_ms_default: TTL_MS_DEFAULT,
            ttl_ms_min: TTL_MS_MIN,
            ttl_ms_max: TTL_MS_MAX,
            reservation_ahead_ms_max: RESERVATION_AHEAD_MS_MAX_DEFAULT,
            block_min: BLOCK_MIN_DEFAULT,
        }
    }

    /// True for the temporal-shard layout, where counter blocks are granted.
    pub fn is_temporal(&self) -> bool {
        self.layout.is_temporal()
    }

    /// The limits stated to nodes with every grant.
    pub fn limits(&self) -> CoordinatorLimits {
        CoordinatorLimits {
            ttl_ms_min: self.ttl_ms_min,
            ttl_ms_max: self.ttl_ms_max,
            ttl_ms_default: self.ttl_ms_default,
            reservation_ahead_ms_max: self.reservation_ahead_ms_max,
        }
    }

    fn counter_max(&self) -> u64 {
        self.layout.sequence_field().max()
    }
}

/// The persisted lease and reservation of one host id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host id.
    pub host_id: u32,
    /// The current (or last) fencing token.
    pub token: u64,
    /// The holder's name.
    pub holder: String,
    /// The lease's TTL.
    pub ttl_ms: u64,
    /// Wall time of the grant, Unix ms.
    pub granted_at_ms: u64,
    /// Wall time of the last renewal, Unix ms.
    pub renewed_at_ms: u64,
    /// Wall-clock expiry, Unix ms (for status; decisions use the monotonic rule).
    pub expires_at_ms: u64,
    /// Renewals under the current token.
    pub renewals: u64,
    /// Given back by its holder.
    pub released: bool,
    /// The highest timestamp any holder of this id may have issued, Unix ms.
    pub reserved_until_ms: u64,
    /// The previous holders' bound when the current token was granted, Unix ms.
    #[serde(default)]
    pub start_above_ms: u64,
    /// The idempotency key of the request that was granted the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Temporal mode: usage reports and the forecaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<TemporalRecord>,
}

/// Usage reports and forecasts of one host id in temporal mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TemporalRecord {
    /// A usage report has been received.
    pub reported: bool,
    /// Shard of the last report.
    pub shard: u64,
    /// Counter values used in it.
    pub used: u64,
    /// The host's own forecast for the next shard.
    pub host_predicted: Option<u64>,
    /// The forecaster over finished shards' usage.
    pub holt: Holt,
    /// Forecasts made for upcoming shards: `(shard, predicted)`.
    pub forecasts: Vec<(u64, u64)>,
    /// Finished shards: forecast against actual.
    pub history: Vec<ShardForecast>,
}

/// The counter blocks granted for one (host, shard) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BlockRecord {
    /// One past the highest counter value ever granted for the pair.
    pub high_water: u64,
    /// The last block's start.
    pub last_start: u64,
    /// The last block's end.
    pub last_end: u64,
    /// The token the last block was granted to.
    pub token: u64,
    /// Blocks granted for the pair.
    pub grants: u64,
    /// Wall time of the last grant, Unix ms.
    #[serde(default)]
    pub granted_at_ms: u64,
}

impl BlockRecord {
    /// Records a new block `start..end`. Blocks for a pair only move upwards: a block that
    /// starts below the high-water mark would hand out counter values twice, so it is a bug
    /// that stops the coordinator.
    pub fn grant(&mut self, start: u64, end: u64, token: u64, now_ms: u64) {
        assert!(
            start >= self.high_water && end > start,
            "block {start}..{end} is not above the high-water mark {}",
            self.high_water
        );
        self.high_water = end;
        self.last_start = start;
        self.last_end = end;
        self.token = token;
        self.grants += 1;
        self.granted_at_ms = now_ms;
    }
}

#[derive(Debug, Clone, Copy)]
struct Observation {
    token: u64,
    renewals: u64,
    since_mono_ms: u64,
}

/// Operation counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Leases granted.
    pub grants: AtomicU64,
    /// Repeated acquire requests answered with their earlier grant.
    pub grants_repeated: AtomicU64,
    /// Leases renewed.
    pub renewals: AtomicU64,
    /// Reservations extended (alone or with a renewal).
    pub extensions: AtomicU64,
    /// Counter blocks granted on request (overflow or start of shard).
    pub blocks_requested: AtomicU64,
    /// Counter blocks prepared ahead of a shard with a renewal.
    pub blocks_prepared: AtomicU64,
    /// Leases released.
    pub releases: AtomicU64,
    /// Host ids offered to standbys.
    pub standby_offers: AtomicU64,
    /// Compare-and-swap conflicts retried.
    pub cas_conflicts: AtomicU64,
}

/// The coordinator: see the module docs.
pub struct Coordinator {
    store: Arc<dyn KvStore>,
    cluster: ClusterRecord,
    time: Arc<dyn TimeSource>,
    config: CoordinatorConfig,
    observed: Mutex<HashMap<u32, Observation>>,
    standbys: Mutex<HashMap<String, u64>>,
    offers: Mutex<HashMap<u32, (String, u64)>>,
    changed: Notify,
    metrics: Metrics,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

fn truncate_name(s: &str) -> String {
    let mut end = s.len().min(NAME_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Coordinator {
    /// A coordinator over `store`, reading the time from `time`. Reads the store's identity,
    /// creating it if the store is new; fails if the store was created for another layout.
    pub async fn open(
        store: Arc<dyn KvStore>,
        time: Arc<dyn TimeSource>,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordError> {
        let cluster = meta::open(store.as_ref(), &config.layout, time.wall_ms()).await?;
        Ok(Self {
            store,
            cluster,
            time,
            config,
            observed: Mutex::new(HashMap::new()),
            standbys: Mutex::new(HashMap::new()),
            offers: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            metrics: Metrics::default(),
        })
    }

    /// The store's identity, sent with every response.
    pub fn store_id(&self) -> &str {
        &self.cluster.store_id
    }

    /// What `GET /v1/cluster` answers: the store's identity, the layout and the limits.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            store_id: self.cluster.store_id.clone(),
            layout_spec: self.cluster.layout_spec.clone(),
            pool_size: self.config.pool_size,
            limits: self.config.limits(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Operation counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    fn check_host(&self, host_id: u32) -> Result<(), CoordError> {
        if host_id >= self.config.pool_size {
            return Err(CoordError::HostOutOfRange {
                host_id,
                pool_size: self.config.pool_size,
            });
        }
        Ok(())
    }

    /// A reservation bound no further ahead of the coordinator's clock than allowed. A lower
    /// bound is always safe, so a request beyond the limit is clamped, not refused: the
    /// holder learns the bound from the answer.
    fn clamp_ahead(&self, until_ms: u64, now_ms: u64) -> u64 {
        until_ms.min(now_ms.saturating_add(self.config.reservation_ahead_ms_max))
    }

    fn grant_of(&self, rec: &HostRecord) -> LeaseGrant {
        LeaseGrant {
            host_id: rec.host_id,
            token: rec.token,
            ttl_ms: rec.ttl_ms,
            start_above_ms: rec.start_above_ms,
            reserved_until_ms: rec.reserved_until_ms,
            layout_spec: self.cluster.layout_spec.clone(),
            store_id: self.cluster.store_id.clone(),
            pool_size: self.config.pool_size,
            limits: self.config.limits(),
        }
    }

    /// Live or expired by the monotonic rule (module docs); released is reported as such.
    fn lease_state(&self, rec: &HostRecord, now_mono: u64) -> LeaseState {
        if rec.released {
            return LeaseState::Released;
        }
        let mut observed = self.observed.lock().expect("poisoned");
        let o = observed.entry(rec.host_id).or_insert(Observation {
            token: rec.token,
            renewals: rec.renewals,
            since_mono_ms: now_mono,
        });
        if o.token != rec.token || o.renewals != rec.renewals {
            *o = Observation {
                token: rec.token,
                renewals: rec.renewals,
                since_mono_ms: now_mono,
            };
        }
        if now_mono >= o.since_mono_ms.saturating_add(rec.ttl_ms) {
            LeaseState::Expired
        } else {
            LeaseState::Live
        }
    }

    /// Mono time at which the lease expires unless renewed.
    fn expiry_mono(&self, rec: &HostRecord) -> Option<u64> {
        let observed = self.observed.lock().expect("poisoned");
        observed
            .get(&rec.host_id)
            .filter(|o| o.token == rec.token && o.renewals == rec.renewals)
            .map(|o| o.since_mono_ms.saturating_add(rec.ttl_ms))
    }

    /// Records that this process committed `rec`: its lease runs a full TTL from now.
    fn observe_commit(&self, rec: &HostRecord) {
        let now_mono = self.time.mono_ms();
        self.observed.lock().expect("poisoned").insert(
            rec.host_id,
            Observation {
                token: rec.token,
                renewals: rec.renewals,
                since_mono_ms: now_mono,
            },
        );
    }

    fn check_current(&self, rec: &HostRecord, token: u64) -> Result<(), CoordError> {
        if rec.token != token {
            return Err(CoordError::StaleToken {
                host_id: rec.host_id,
                token,
                current: rec.token,
            });
        }
        if self.lease_state(rec, self.time.mono_ms()) != LeaseState::Live {
            return Err(CoordError::LeaseExpired {
                host_id: rec.host_id,
                token,
            });
        }
        Ok(())
    }

    async fn load_host(&self, host_id: u32) -> Result<Option<(HostRecord, u64)>, CoordError> {
        let key = host_key(host_id);
        match self.store.get(&key).await? {
            Some(v) => {
                let rec: HostRecord =
                    serde_json::from_slice(&v.value).map_err(|e| corrupt(&key, e))?;
                Ok(Some((rec, v.version)))
            }
            None => Ok(None),
        }
    }

    async fn load_hosts(&self) -> Result<Vec<(HostRecord, u64)>, CoordError> {
        let mut out = Vec::new();
        for (key, v) in self.store.scan(HOST_PREFIX).await? {
            let rec: HostRecord = serde_json::from_slice(&v.value).map_err(|e| corrupt(&key, e))?;
            out.push((rec, v.version));
        }
        Ok(out)
    }

    async fn load_block(&self, host_id: u32, shard: u64) -> Result<(BlockRecord, u64), CoordError> {
        let key = block_key(host_id, shard);
        match self.store.get(&key).await? {
            Some(v) => Ok((
                serde_json::from_slice(&v.value).map_err(|e| corrupt(&key, e))?,
                v.version,
            )),
            None => Ok((BlockRecord::default(), 0)),
        }
    }

    async fn commit(&self, txn: Txn) -> Result<bool, CoordError> {
        match self.store.txn(txn).await? {
            TxnOutcome::Committed { .. } => Ok(true),
            TxnOutcome::Conflict { .. } => {
                self.metrics.cas_conflicts.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    fn is_free(&self, rec: &HostRecord, now_mono: u64) -> bool {
        rec.host_id < self.config.pool_size && self.lease_state(rec, now_mono) != LeaseState::Live
    }

    fn pick_host(
        &self,
        hosts: &[(HostRecord, u64)],
        req: &AcquireRequest,
        now_mono: u64,
    ) -> Result<u32, CoordError> {
        let find = |h: u32| hosts.iter().find(|(r, _)| r.host_id == h).map(|(r, _)| r);
        if let Some(h) = req.host_id {
            return match find(h) {
                Some(r) if !self.is_free(r, now_mono) => Err(CoordError::HostBusy {
                    host_id: h,
                    token: r.token,
                }),
                _ => Ok(h),
            };
        }
        if let Some(h) = req.prefer_host_id {
            if find(h).is_none_or(|r| self.is_free(r, now_mono)) {
                return Ok(h);
            }
        }
        // The lowest free id: a gap in the (sorted) records or a record whose lease is over.
        let mut next = 0u32;
        for (r, _) in hosts {
            if r.host_id > next {
                break;
            }
            if self.is_free(r, now_mono) {
                return Ok(r.host_id);
            }
            next = r.host_id + 1;
        }
        if next < self.config.pool_size {
            Ok(next)
        } else {
            Err(CoordError::PoolExhausted {
                pool_size: self.config.pool_size,
            })
        }
    }

    /// Grants a lease on a free host id (or the one asked for) with a new fencing token.
    ///
    /// With a `request_id`, the request is idempotent: if the current token of some host id
    /// was granted to this request id (the answer was lost and the caller retries), the same
    /// grant is answered again, renewed now, so no second host id is taken and the lease runs
    /// a full TTL from this answer, which is after the retry was sent.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseGrant, CoordError> {
        let ttl_ms = req.ttl_ms.unwrap_or(self.config.ttl_ms_default);
        if ttl_ms < self.config.ttl_ms_min || ttl_ms > self.config.ttl_ms_max {
            return Err(CoordError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.config.ttl_ms_min,
                max_ms: self.config.ttl_ms_max,
            });
        }
        if let Some(id) = &req.request_id {
            if id.is_empty() || id.len() > REQUEST_ID_BYTES_MAX {
                return Err(CoordError::BadRequest(format!(
                    "request_id must be 1..={REQUEST_ID_BYTES_MAX} bytes, got {}",
                    id.len()
                )));
            }
        }
        for h in req.host_id.iter().chain(req.prefer_host_id.iter()) {
            self.check_host(*h)?;
        }
        let holder = truncate_name(&req.name);
        for _ in 0..CAS_ATTEMPTS_MAX {
            let hosts = self.load_hosts().await?;
            let now = self.time.wall_ms();
            let reserve_until = |floor: u64| match req.reserve_ahead_ms {
                Some(a) => floor.max(self.clamp_ahead(now.saturating_add(a), now)),
                None => floor,
            };
            let repeated = req.request_id.as_ref().and_then(|id| {
                hosts.iter().find(|(r, _)| {
                    !r.released && r.holder == holder && r.request_id.as_ref() == Some(id)
                })
            });
            if let Some((prev, version)) = repeated {
                let mut rec = prev.clone();
                rec.renewals += 1;
                rec.renewed_at_ms = now;
                rec.expires_at_ms = now.saturating_add(rec.ttl_ms);
                rec.reserved_until_ms = reserve_until(rec.reserved_until_ms);
                let key = host_key(rec.host_id);
                let txn = Txn::new()
                    .compare(&key, *version)
                    .put(&key, serde_json::to_vec(&rec).expect("serializable"));
                if self.commit(txn).await? {
                    self.observe_commit(&rec);
                    self.metrics.grants_repeated.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(host_id = rec.host_id, token = rec.token, holder = %rec.holder,
                        "repeated acquire: answering the same grant, renewed");
                    return Ok(self.grant_of(&rec));
                }
                continue;
            }
            let host_id = self.pick_host(&hosts, req, self.time.mono_ms())?;
            let prev = hosts.iter().find(|(r, _)| r.host_id == host_id);
            let (last_token, token_version) = match self.store.get(TOKEN_KEY).await? {
                Some(v) => (
                    std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| corrupt(TOKEN_KEY, "not a decimal number"))?,
                    v.version,
                ),
                None => (0, 0),
            };
            let token = last_token + 1;
            let start_above_ms = prev.map_or(0, |(r, _)| r.reserved_until_ms);
            let rec = HostRecord {
                host_id,
                token,
                holder: holder.clone(),
                ttl_ms,
                granted_at_ms: now,
                renewed_at_ms: now,
                expires_at_ms: now.saturating_add(ttl_ms),
                renewals: 0,
                released: false,
                reserved_until_ms: reserve_until(start_above_ms),
                start_above_ms,
                request_id: req.request_id.clone(),
                temporal: prev.and_then(|(r, _)| r.temporal.clone()),
            };
            let key = host_key(host_id);
            let txn = Txn::new()
                .compare(&key, prev.map_or(0, |(_, v)| *v))
                .compare(TOKEN_KEY, token_version)
                .put(&key, serde_json::to_vec(&rec).expect("serializable"))
                .put(TOKEN_KEY, token.to_string().into_bytes());
            if self.commit(txn).await? {
                self.observe_commit(&rec);
                self.offers.lock().expect("poisoned").remove(&host_id);
                self.metrics.grants.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host_id, token, holder = %rec.holder, start_above_ms, "lease granted");
                return Ok(self.grant_of(&rec));
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }

    /// Renews a lease (and optionally extends its reservation and reports temporal usage).
    pub async fn renew(
        &self,
        host_id: u32,
        req: &RenewRequest,
    ) -> Result<RenewResponse, CoordError> {
        self.check_host(host_id)?;
        if req.usage.is_some() && !self.config.is_temporal() {
            return Err(CoordError::NotTemporal {
                layout: self.config.layout.name().to_string(),
            });
        }
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (mut rec, version) = self
                .load_host(host_id)
                .await?
                .ok_or(CoordError::UnknownHost { host_id })?;
            self.check_current(&rec, req.token)?;
            let now = self.time.wall_ms();
            let extended = match req.reserve_until_ms.map(|u| self.clamp_ahead(u, now)) {
                Some(until) if until > rec.reserved_until_ms => {
                    rec.reserved_until_ms = until;
                    true
                }
                _ => false,
            };
            rec.renewed_at_ms = now;
            rec.expires_at_ms = now.saturating_add(rec.ttl_ms);
            rec.renewals += 1;
            let key = host_key(host_id);
            let mut txn = Txn::new().compare(&key, version);
            let mut next_block = None;
            let mut prepared = false;
            if let Some(usage) = req.usage {
                update_usage(&mut rec, usage);
                let next_start = self.config.layout.ms_of_tick(usage.shard + 1);
                let lead =
                    (self.config.layout.time_unit_ms() / 2).min(rec.ttl_ms.saturating_mul(3));
                // No block for a shard the layout cannot hold: the layout's life ends there.
                let fits = usage.shard < self.config.layout.timestamp_field().max();
                if fits && now.saturating_add(lead) >= next_start {
                    let forecast = self.forecast_next(&rec, now);
                    let size = self.block_size(forecast);
                    let shard = usage.shard + 1;
                    let (grant, write) =
                        self.plan_block(host_id, req.token, shard, 0, size).await?;
                    if let Some((bkey, bversion, brec)) = write {
                        txn = txn
                            .compare(&bkey, bversion)
                            .put(&bkey, serde_json::to_vec(&brec).expect("serializable"));
                        let t = rec.temporal.get_or_insert_with(Default::default);
                        t.forecasts.retain(|(s, _)| *s != shard);
                        t.forecasts.push((shard, forecast));
                        if t.forecasts.len() > HISTORY_MAX {
                            t.forecasts.remove(0);
                        }
                        prepared = true;
                    }
                    next_block = Some(grant);
                }
            }
            txn = txn.put(&key, serde_json::to_vec(&rec).expect("serializable"));
            if self.commit(txn).await? {
                self.observe_commit(&rec);
                self.metrics.renewals.fetch_add(1, Ordering::Relaxed);
                if extended {
                    self.metrics.extensions.fetch_add(1, Ordering::Relaxed);
                }
                if prepared {
                    self.metrics.blocks_prepared.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(RenewResponse {
                    ttl_ms: rec.ttl_ms,
                    reserved_until_ms: rec.reserved_until_ms,
                    next_block,
                });
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }

    /// Persists a higher reservation bound, only for the current token of a live lease.
    pub async fn extend_reservation(
        &self,
        host_id: u32,
        req: &ReservationRequest,
    ) -> Result<ReservationResponse, CoordError> {
        self.check_host(host_id)?;
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (mut rec, version) = self
                .load_host(host_id)
                .await?
                .ok_or(CoordError::UnknownHost { host_id })?;
            self.check_current(&rec, req.token)?;
            let until_ms = self.clamp_ahead(req.until_ms, self.time.wall_ms());
            if until_ms <= rec.reserved_until_ms {
                // Already persisted: answering with the current bound is idempotent.
                return Ok(ReservationResponse {
                    reserved_until_ms: rec.reserved_until_ms,
                });
            }
            rec.reserved_until_ms = until_ms;
            let key = host_key(host_id);
            let txn = Txn::new()
                .compare(&key, version)
                .put(&key, serde_json::to_vec(&rec).expect("serializable"));
            if self.commit(txn).await? {
                self.metrics.extensions.fetch_add(1, Ordering::Relaxed);
                return Ok(ReservationResponse {
                    reserved_until_ms: rec.reserved_until_ms,
                });
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }

    /// Gives a host id back; the next holder may take it at once (above its reservation).
    pub async fn release(&self, host_id: u32, req: &ReleaseRequest) -> Result<(), CoordError> {
        self.check_host(host_id)?;
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (mut rec, version) = self
                .load_host(host_id)
                .await?
                .ok_or(CoordError::UnknownHost { host_id })?;
            if rec.token != req.token {
                return Err(CoordError::StaleToken {
                    host_id,
                    token: req.token,
                    current: rec.token,
                });
            }
            if rec.released {
                return Ok(());
            }
            rec.released = true;
            rec.expires_at_ms = self.time.wall_ms();
            let key = host_key(host_id);
            let txn = Txn::new()
                .compare(&key, version)
                .put(&key, serde_json::to_vec(&rec).expect("serializable"));
            if self.commit(txn).await? {
                self.metrics.releases.fetch_add(1, Ordering::Relaxed);
                self.changed.notify_waiters();
                tracing::info!(host_id, token = req.token, "lease released");
                return Ok(());
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }

    /// Grants a counter block for `(shard, host)` above every earlier one (temporal mode).
    pub async fn grant_block(&self, req: &BlockRequest) -> Result<BlockGrant, CoordError> {
        if !self.config.is_temporal() {
            return Err(CoordError::NotTemporal {
                layout: self.config.layout.name().to_string(),
            });
        }
        self.check_host(req.host_id)?;
        let shard_max = self.config.layout.timestamp_field().max();
        if req.shard > shard_max {
            return Err(CoordError::ShardBeyondLayout {
                shard: req.shard,
                shard_max,
                overflow_at: self.config.layout.overflow_time(),
            });
        }
        let current = self.config.layout.tick_of(self.time.wall_ms()).unwrap_or(0);
        if req.shard > current + SHARD_AHEAD_MAX {
            return Err(CoordError::ShardTooFarAhead {
                shard: req.shard,
                current,
                ahead_max: SHARD_AHEAD_MAX,
            });
        }
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (rec, version) =
                self.load_host(req.host_id)
                    .await?
                    .ok_or(CoordError::UnknownHost {
                        host_id: req.host_id,
                    })?;
            self.check_current(&rec, req.token)?;
            let (last, _) = self.load_block(req.host_id, req.shard).await?;
            let now = self.time.wall_ms();
            let size = self.refill_size(&rec, &last, now);
            let (grant, write) = self
                .plan_block(req.host_id, req.token, req.shard, req.after_counter, size)
                .await?;
            let Some((bkey, bversion, brec)) = write else {
                return Ok(grant);
            };
            // Comparing the host record fences the grant: it commits only if the token is
            // still current when the block is written.
            let txn = Txn::new()
                .compare(host_key(req.host_id), version)
                .compare(&bkey, bversion)
                .put(&bkey, serde_json::to_vec(&brec).expect("serializable"));
            if self.commit(txn).await? {
                self.metrics
                    .blocks_requested
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(grant);
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }

    /// The block to answer with, and the record to write if it is a new one.
    async fn plan_block(
        &self,
        host_id: u32,
        token: u64,
        shard: u64,
        after_counter: u64,
        size: u64,
    ) -> Result<(BlockGrant, Option<(String, u64, BlockRecord)>), CoordError> {
        let (mut rec, version) = self.load_block(host_id, shard).await?;
        if rec.grants > 0 && rec.token == token && rec.last_start >= after_counter {
            // The caller already holds the last block or its answer was lost: same block.
            return Ok((
                BlockGrant {
                    shard,
                    start: rec.last_start,
                    end: rec.last_end,
                },
                None,
            ));
        }
        let counter_max = self.config.counter_max();
        let start = rec.high_water.max(after_counter);
        if start > counter_max {
            return Err(CoordError::CounterSpaceExhausted {
                host_id,
                shard,
                counter_max,
            });
        }
        let end = start.saturating_add(size.max(1)).min(counter_max + 1);
        rec.grant(start, end, token, self.time.wall_ms());
        Ok((
            BlockGrant { shard, start, end },
            Some((block_key(host_id, shard), version, rec)),
        ))
    }

    fn forecast_next(&self, rec: &HostRecord, now_ms: u64) -> u64 {
        let Some(t) = &rec.temporal else {
            return 0;
        };
        let granularity = self.config.layout.time_unit_ms();
        let shard_start = self.config.layout.ms_of_tick(t.shard);
        let elapsed = now_ms.saturating_sub(shard_start).clamp(1, granularity);
        // Extrapolate the current shard's rate over a whole shard.
        let rate_based = (t.used as u128 * granularity as u128 / elapsed as u128) as u64;
        let holt = t.holt.forecast(1).round() as u64;
        holt.max(rate_based).max(t.host_predicted.unwrap_or(0))
    }

    /// Size of a block asked for during a shard: sized so that, at the rate the last block
    /// was used, the next one lasts about [`REFILL_TARGET_MS_MAX`] (or an eighth of a shard),
    /// changing by at most a factor of two per block; the first block of a shard follows the
    /// forecast.
    fn refill_size(&self, rec: &HostRecord, last: &BlockRecord, now_ms: u64) -> u64 {
        if last.grants == 0 {
            return self.block_size(self.forecast_next(rec, now_ms));
        }
        let last_len = last.last_end - last.last_start;
        let target_ms = (self.config.layout.time_unit_ms() / 8).clamp(1, REFILL_TARGET_MS_MAX);
        let elapsed_ms = now_ms.saturating_sub(last.granted_at_ms).max(1);
        let scaled = (last_len as u128 * target_ms as u128 / elapsed_ms as u128) as u64;
        scaled
            .clamp(last_len / 2, last_len.saturating_mul(2))
            .max(self.config.block_min)
            .min(self.config.counter_max().saturating_add(1))
    }

    fn block_size(&self, forecast: u64) -> u64 {
        let sized = (forecast as f64 * BLOCK_HEADROOM).ceil() as u64;
        sized
            .max(self.config.block_min)
            .min(self.config.counter_max().saturating_add(1))
    }

    /// Long-polls for a host id whose lease expired without being released, registering
    /// `name` as a standby. Returns `None` when `timeout_ms` passes first.
    pub async fn standby_wait(
        &self,
        name: &str,
        timeout_ms: u64,
    ) -> Result<Option<u32>, CoordError> {
        let name = truncate_name(name);
        let deadline = self
            .time
            .mono_ms()
            .saturating_add(timeout_ms.min(STANDBY_WAIT_MS_MAX));
        loop {
            let now_mono = self.time.mono_ms();
            {
                let mut standbys = self.standbys.lock().expect("poisoned");
                standbys.retain(|_, seen| now_mono.saturating_sub(*seen) < STANDBY_FORGET_MS);
                if standbys.len() < STANDBYS_MAX || standbys.contains_key(&name) {
                    standbys.insert(name.clone(), now_mono);
                }
            }
            let hosts = self.load_hosts().await?;
            let mut next_check = now_mono + STANDBY_RECHECK_MS_MAX;
            for (rec, _) in &hosts {
                if rec.host_id >= self.config.pool_size {
                    continue;
                }
                match self.lease_state(rec, now_mono) {
                    LeaseState::Expired => {
                        let mut offers = self.offers.lock().expect("poisoned");
                        let taken = offers
                            .get(&rec.host_id)
                            .is_some_and(|(who, until)| *who != name && *until > now_mono);
                        if !taken {
                            offers.insert(rec.host_id, (name.clone(), now_mono + OFFER_HOLD_MS));
                            self.metrics.standby_offers.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(host_id = rec.host_id, standby = %name, "offering expired host id to standby");
                            return Ok(Some(rec.host_id));
                        }
                    }
                    LeaseState::Live => {
                        if let Some(at) = self.expiry_mono(rec) {
                            next_check = next_check.min(at);
                        }
                    }
                    LeaseState::Released => {}
                }
            }
            if now_mono >= deadline {
                return Ok(None);
            }
            let sleep_ms = next_check.min(deadline).saturating_sub(now_mono).max(1);
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => {}
                _ = self.changed.notified() => {}
            }
        }
    }

    /// Every host id ever leased, and the standbys heard from recently.
    pub async fn hosts(&self) -> Result<HostsResponse, CoordError> {
        let now = self.time.wall_ms();
        let now_mono = self.time.mono_ms();
        let hosts = self
            .load_hosts()
            .await?
            .into_iter()
            .map(|(rec, _)| {
                let state = self.lease_state(&rec, now_mono);
                HostStatus {
                    host_id: rec.host_id,
                    token: rec.token,
                    holder: rec.holder.clone(),
                    role: Role::Primary,
                    state,
                    lease_age_ms: now.saturating_sub(rec.granted_at_ms),
                    ttl_ms: rec.ttl_ms,
                    reserved_until_ms: rec.reserved_until_ms,
                    last_heartbeat_ms: rec.renewed_at_ms,
                    last_heartbeat_age_ms: now.saturating_sub(rec.renewed_at_ms),
                    temporal: rec.temporal.as_ref().map(|t| TemporalStatus {
                        shard: t.shard,
                        used_in_shard: t.used,
                        host_predicted_next: t.host_predicted,
                        forecast_next: self.forecast_next(&rec, now),
                        history: t.history.clone(),
                    }),
                }
            })
            .collect();
        let mut standbys = self.standbys.lock().expect("poisoned");
        standbys.retain(|_, seen| now_mono.saturating_sub(*seen) < STANDBY_FORGET_MS);
        let mut standbys: Vec<StandbyStatus> = standbys
            .iter()
            .map(|(name, seen)| StandbyStatus {
                name: name.clone(),
                role: Role::Standby,
                last_seen_age_ms: now_mono.saturating_sub(*seen),
            })
            .collect();
        standbys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(HostsResponse {
            store_id: self.cluster.store_id.clone(),
            layout_spec: self.cluster.layout_spec.clone(),
            pool_size: self.config.pool_size,
            hosts,
            standbys,
        })
    }

    /// Number of live leases, for metrics.
    pub async fn live_hosts(&self) -> Result<usize, CoordError> {
        let now_mono = self.time.mono_ms();
        Ok(self
            .load_hosts()
            .await?
            .iter()
            .filter(|(r, _)| self.lease_state(r, now_mono) == LeaseState::Live)
            .count())
    }
}

fn update_usage(rec: &mut HostRecord, usage: ShardUsage) {
    let t = rec.temporal.get_or_insert_with(Default::default);
    if !t.reported || usage.shard > t.shard {
        // A shard closes into the forecaster when the next one is reported; a report from
        // far away (a host that just started, or was idle) says nothing about a whole shard.
        if t.reported && (t.used > 0 || usage.shard == t.shard + 1) {
            // The previous shard is over: its last report is its actual use.
            t.holt.observe(t.used as f64);
            let predicted = t
                .forecasts
                .iter()
                .find(|(s, _)| *s == t.shard)
                .map_or(0, |(_, p)| *p);
            t.history.push(ShardForecast {
                shard: t.shard,
                predicted,
                actual: t.used,
            });
            if t.history.len() > HISTORY_MAX {
                t.history.remove(0);
            }
        }
        t.reported = true;
        t.shard = usage.shard;
        t.used = usage.used_in_shard;
    } else if usage.shard == t.shard {
        t.used = t.used.max(usage.used_in_shard);
    }
    t.host_predicted = usage.predicted_next;
}

/// Lease, reservation and block rules checked over any store; part of
/// [`crate::store::conformance::run_all`] and of this crate's unit tests.
pub mod conformance {
    use super::*;
    use crate::time::ManualTime;

    const T0: u64 = 1_800_000_000_000;

    async fn coordinator(store: Arc<dyn KvStore>, layout: Layout) -> (Coordinator, ManualTime) {
        let time = ManualTime::new(T0);
        let mut config = CoordinatorConfig::new(layout);
        config.pool_size = config.pool_size.min(4);
        let c = Coordinator::open(store, Arc::new(time.clone()), config)
            .await
            .expect("the store opens");
        (c, time)
    }

    fn req(name: &str, ttl_ms: u64) -> AcquireRequest {
        AcquireRequest {
            name: name.into(),
            ttl_ms: Some(ttl_ms),
            ..Default::default()
        }
    }

    /// Grant, renew, stale token, expiry, takeover above the bound, pool exhaustion.
    pub async fn grant_renew_expire_takeover(store: Arc<dyn KvStore>) {
        let (c, time) = coordinator(store, Layout::preset("default").unwrap()).await;
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        assert_eq!((a.host_id, a.start_above_ms), (0, 0));
        let b = c.acquire(&req("b", 1_000)).await.unwrap();
        assert_eq!(b.host_id, 1);
        assert!(b.token > a.token, "tokens increase");
        let r = c
            .renew(
                0,
                &RenewRequest {
                    token: a.token,
                    reserve_until_ms: Some(T0 + 5_000),
                    usage: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(r.reserved_until_ms, T0 + 5_000);
        // B goes silent; A keeps renewing.
        time.advance_ms(600);
        c.renew(
            0,
            &RenewRequest {
                token: a.token,
                reserve_until_ms: None,
                usage: None,
            },
        )
        .await
        .unwrap();
        let busy = c
            .acquire(&AcquireRequest {
                host_id: Some(1),
                ..req("s", 1_000)
            })
            .await
            .unwrap_err();
        assert!(
            matches!(busy, CoordError::HostBusy { host_id: 1, .. }),
            "{busy}"
        );
        time.advance_ms(500);
        let exp = c
            .renew(
                1,
                &RenewRequest {
                    token: b.token,
                    reserve_until_ms: None,
                    usage: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(exp, CoordError::LeaseExpired { .. }), "{exp}");
        let ext = c
            .extend_reservation(
                1,
                &ReservationRequest {
                    token: b.token,
                    until_ms: T0 + 9_000,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(ext.code().as_str(), "lease_expired");
        // A standby takes over B's id, strictly above B's bound.
        let b2 = c
            .acquire(&AcquireRequest {
                host_id: Some(1),
                ..req("s", 10_000)
            })
            .await
            .unwrap();
        assert!(b2.token > b.token);
        assert_eq!(b2.start_above_ms, b.reserved_until_ms);
        // B comes back: its token is stale for renewals, reservations and blocks.
        let stale = c
            .renew(
                1,
                &RenewRequest {
                    token: b.token,
                    reserve_until_ms: None,
                    usage: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, CoordError::StaleToken { current, .. } if current == b2.token));
        // A reserved up to T0 + 5 s; after A expires the next holder starts above that.
        time.advance_ms(2_000);
        let a2 = c
            .acquire(&AcquireRequest {
                prefer_host_id: Some(0),
                ..req("a2", 1_000)
            })
            .await
            .unwrap();
        assert_eq!((a2.host_id, a2.start_above_ms), (0, T0 + 5_000));
        // Reservations reach at most the stated limit ahead of the coordinator's clock: a
        // request beyond it is clamped, and the answer says how far it got.
        let ahead_max = a2.limits.reservation_ahead_ms_max;
        assert_eq!(ahead_max, c.config().reservation_ahead_ms_max);
        let far = c
            .extend_reservation(
                0,
                &ReservationRequest {
                    token: a2.token,
                    until_ms: time.wall_ms() + ahead_max + 1_000,
                },
            )
            .await
            .unwrap();
        assert_eq!(far.reserved_until_ms, time.wall_ms() + ahead_max);
        let renewed = c
            .renew(
                0,
                &RenewRequest {
                    token: a2.token,
                    reserve_until_ms: Some(time.wall_ms() + 10 * ahead_max),
                    usage: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(renewed.reserved_until_ms, time.wall_ms() + ahead_max);
        // Fill the pool of 4.
        c.acquire(&req("c", 1_000)).await.unwrap();
        c.acquire(&req("d", 1_000)).await.unwrap();
        let full = c.acquire(&req("e", 1_000)).await.unwrap_err();
        assert!(
            matches!(full, CoordError::PoolExhausted { pool_size: 4 }),
            "{full}"
        );
        // A release frees an id at once; the reservation carries over.
        let held = c.hosts().await.unwrap();
        let h3 = held.hosts.iter().find(|h| h.host_id == 3).unwrap();
        c.release(3, &ReleaseRequest { token: h3.token })
            .await
            .unwrap();
        let e = c.acquire(&req("e", 1_000)).await.unwrap();
        assert_eq!(e.host_id, 3);
    }

    /// Regression: a grant whose answer was lost left a ghost lease that blocked its host
    /// id (and standbys) for a TTL. A retry with the same request id gets the same grant,
    /// renewed from the retry on.
    pub async fn repeated_acquire_answers_the_same_grant(store: Arc<dyn KvStore>) {
        let (c, time) = coordinator(store, Layout::preset("default").unwrap()).await;
        let first = AcquireRequest {
            request_id: Some("node-a-1".into()),
            ..req("a", 1_000)
        };
        let a = c.acquire(&first).await.unwrap();
        time.advance_ms(800);
        let again = c.acquire(&first).await.unwrap();
        assert_eq!(again, a, "the same host id, token and bounds");
        // One lease, not two: the next caller gets the next host id.
        let b = c.acquire(&req("b", 1_000)).await.unwrap();
        assert_eq!(b.host_id, a.host_id + 1);
        // The repeated answer renewed the lease: it runs a full TTL from the repeat.
        time.advance_ms(900);
        let take = AcquireRequest {
            host_id: Some(a.host_id),
            ..req("standby", 1_000)
        };
        assert_eq!(c.acquire(&take).await.unwrap_err().code().as_str(), "host_busy");
        // Another holder's request id does not match; an empty or long one is refused.
        let other = AcquireRequest {
            request_id: Some("node-a-1".into()),
            ..req("someone-else", 1_000)
        };
        assert_ne!(c.acquire(&other).await.unwrap().host_id, a.host_id);
        for bad in [String::new(), "x".repeat(65)] {
            let e = c
                .acquire(&AcquireRequest {
                    request_id: Some(bad),
                    ..req("a", 1_000)
                })
                .await
                .unwrap_err();
            assert_eq!(e.code().as_str(), "bad_request");
        }
        // After a release, the same request id starts a new lease.
        c.release(a.host_id, &ReleaseRequest { token: a.token })
            .await
            .unwrap();
        let fresh = c.acquire(&first).await.unwrap();
        assert!(fresh.token > a.token);
    }

    /// Blocks for one (shard, host) pair only move upwards, across holders and restarts.
    pub async fn blocks_only_move_upwards(store: Arc<dyn KvStore>) {
        let layout = Layout::from_spec("temporal:granularity=5s").unwrap();
        let (c, time) = coordinator(store.clone(), layout.clone()).await;
        let shard = layout.tick_of(T0).unwrap();
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        let mut seen: Vec<BlockGrant> = Vec::new();
        let mut after = 0;
        for _ in 0..4 {
            let g = c
                .grant_block(&BlockRequest {
                    host_id: a.host_id,
                    token: a.token,
                    shard,
                    after_counter: after,
                })
                .await
                .unwrap();
            // Asking again with the same high-water mark returns the same block.
            let again = c
                .grant_block(&BlockRequest {
                    host_id: a.host_id,
                    token: a.token,
                    shard,
                    after_counter: after,
                })
                .await
                .unwrap();
            assert_eq!(g, again);
            seen.push(g);
            after = g.end;
        }
        // A takeover continues above everything granted to the previous holder.
        time.advance_ms(1_500);
        let b = c
            .acquire(&AcquireRequest {
                host_id: Some(a.host_id),
                ..req("b", 10_000)
            })
            .await
            .unwrap();
        let stale = c
            .grant_block(&BlockRequest {
                host_id: a.host_id,
                token: a.token,
                shard,
                after_counter: after,
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code().as_str(), "stale_token");
        let g = c
            .grant_block(&BlockRequest {
                host_id: b.host_id,
                token: b.token,
                shard,
                after_counter: 0,
            })
            .await
            .unwrap();
        seen.push(g);
        // A coordinator restarted over the same store continues above too.
        let (c2, time2) = coordinator(store, layout.clone()).await;
        time2.advance_ms(1_500);
        let last = *seen.last().unwrap();
        let same = c2
            .grant_block(&BlockRequest {
                host_id: b.host_id,
                token: b.token,
                shard,
                after_counter: 0,
            })
            .await
            .unwrap();
        assert_eq!(
            same, last,
            "a repeated request (lost answer) gets the same block"
        );
        // The restarted coordinator still sees B's lease as live (restart rule) and B's
        // token as current, so once B has used its block it grants above the high-water mark.
        let g = c2
            .grant_block(&BlockRequest {
                host_id: b.host_id,
                token: b.token,
                shard,
                after_counter: last.end,
            })
            .await
            .unwrap();
        seen.push(g);
        for w in seen.windows(2) {
            assert!(
                w[1].start >= w[0].end,
                "block {:?} is not above {:?}",
                w[1],
                w[0]
            );
        }
        for g in &seen {
            assert!(g.end > g.start && g.shard == shard);
        }
        // Renewals near the end of the shard prepare the next shard's block, once per token.
        let next_start = layout.ms_of_tick(shard + 1);
        let now = time2.wall_ms();
        time2.advance_ms(next_start.saturating_sub(now).saturating_sub(400));
        let usage = ShardUsage {
            shard,
            used_in_shard: 50_000,
            predicted_next: None,
        };
        let r = c2
            .renew(
                b.host_id,
                &RenewRequest {
                    token: b.token,
                    reserve_until_ms: None,
                    usage: Some(usage),
                },
            )
            .await
            .unwrap();
        let nb = r.next_block.expect("next shard's block is prepared");
        assert_eq!(nb.shard, shard + 1);
        assert!(
            nb.end - nb.start >= 50_000,
            "sized from the forecast: {nb:?}"
        );
        let r2 = c2
            .renew(
                b.host_id,
                &RenewRequest {
                    token: b.token,
                    reserve_until_ms: None,
                    usage: Some(usage),
                },
            )
            .await
            .unwrap();
        assert_eq!(r2.next_block, Some(nb));
        // A shard the layout cannot hold gets no block: its lifetime is over there.
        let beyond = c2
            .grant_block(&BlockRequest {
                host_id: b.host_id,
                token: b.token,
                shard: layout.timestamp_field().max() + 1,
                after_counter: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(beyond.code().as_str(), "bad_request");
        assert!(
            beyond.to_string().contains(&layout.overflow_time()),
            "{beyond}"
        );
        // Not a temporal coordinator: blocks are refused.
        let (plain, _) = coordinator(
            Arc::new(crate::store::MemStore::new()),
            Layout::preset("default").unwrap(),
        )
        .await;
        let err = plain
            .grant_block(&BlockRequest {
                host_id: 0,
                token: 1,
                shard: 0,
                after_counter: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code().as_str(), "not_temporal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use crate::time::ManualTime;

    const T0: u64 = 1_800_000_000_000;

    async fn with_time(store: Arc<dyn KvStore>, layout: Layout) -> (Coordinator, ManualTime) {
        let time = ManualTime::new(T0);
        let c = Coordinator::open(
            store,
            Arc::new(time.clone()),
            CoordinatorConfig::new(layout),
        )
        .await
        .expect("the store opens");
        (c, time)
    }

    fn req(name: &str, ttl_ms: u64) -> AcquireRequest {
        AcquireRequest {
            name: name.into(),
            ttl_ms: Some(ttl_ms),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn domain_rules_hold_on_the_memory_store() {
        conformance::grant_renew_expire_takeover(Arc::new(MemStore::new())).await;
        conformance::repeated_acquire_answers_the_same_grant(Arc::new(MemStore::new())).await;
        conformance::blocks_only_move_upwards(Arc::new(MemStore::new())).await;
    }

    #[tokio::test]
    async fn restarted_coordinator_treats_every_lease_as_live_for_one_ttl() {
        let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
        let (c, _) = with_time(store.clone(), Layout::preset("default").unwrap()).await;
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        drop(c);
        // The restarted process reads a wall clock far past the persisted expiry.
        let (c2, time) = with_time(store, Layout::preset("default").unwrap()).await;
        time.step_wall_forward_ms(3_600_000);
        let take = AcquireRequest {
            host_id: Some(a.host_id),
            ..req("b", 1_000)
        };
        let busy = c2.acquire(&take).await.unwrap_err();
        assert!(matches!(busy, CoordError::HostBusy { token, .. } if token == a.token));
        time.advance_ms(999);
        assert_eq!(c2.acquire(&take).await.unwrap_err().code().as_str(), "host_busy");
        time.advance_ms(1);
        let b = c2.acquire(&take).await.unwrap();
        assert!(b.token > a.token, "tokens increase across restarts");
    }

    #[tokio::test]
    async fn wall_clock_steps_neither_expire_nor_extend_a_lease() {
        let (c, time) = with_time(
            Arc::new(MemStore::new()),
            Layout::preset("default").unwrap(),
        )
        .await;
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        let take = AcquireRequest {
            host_id: Some(a.host_id),
            ..req("b", 1_000)
        };
        time.step_wall_forward_ms(10_000_000);
        assert_eq!(c.acquire(&take).await.unwrap_err().code().as_str(), "host_busy");
        time.step_wall_back_ms(20_000_000);
        time.advance_ms(1_000);
        assert!(c.acquire(&take).await.is_ok());
    }

    #[tokio::test]
    async fn ttl_and_host_limits_are_enforced() {
        let (c, _) = with_time(
            Arc::new(MemStore::new()),
            Layout::preset("twitter").unwrap(),
        )
        .await;
        let e = c.acquire(&req("a", 10)).await.unwrap_err();
        assert!(
            matches!(e, CoordError::TtlOutOfRange { ttl_ms: 10, .. }),
            "{e}"
        );
        let e = c
            .acquire(&AcquireRequest {
                host_id: Some(1024),
                ..req("a", 1_000)
            })
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            CoordError::HostOutOfRange {
                host_id: 1024,
                pool_size: 1024
            }
        ));
        let e = c
            .renew(
                5,
                &RenewRequest {
                    token: 1,
                    reserve_until_ms: None,
                    usage: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CoordError::UnknownHost { host_id: 5 }));
        let usage = ShardUsage {
            shard: 1,
            used_in_shard: 1,
            predicted_next: None,
        };
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        let e = c
            .renew(
                a.host_id,
                &RenewRequest {
                    token: a.token,
                    reserve_until_ms: None,
                    usage: Some(usage),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code().as_str(), "not_temporal");
    }

    #[tokio::test]
    async fn forecasts_follow_usage_and_history_records_predicted_against_actual() {
        let granularity = 10_000;
        let layout = Layout::from_spec("temporal:granularity=10s").unwrap();
        assert_eq!(layout.time_unit_ms(), granularity);
        let (c, time) = with_time(Arc::new(MemStore::new()), layout.clone()).await;
        let a = c.acquire(&req("a", 2_000)).await.unwrap();
        let first = layout.tick_of(T0).unwrap();
        let mut sizes = Vec::new();
        // Usage grows by 100k per shard; renew every second with a running count.
        for k in 0..6u64 {
            let shard = first + k;
            let total = 100_000 * (k + 1);
            for step in 1..=10u64 {
                let usage = ShardUsage {
                    shard,
                    used_in_shard: total * step / 10,
                    predicted_next: None,
                };
                let r = c
                    .renew(
                        a.host_id,
                        &RenewRequest {
                            token: a.token,
                            reserve_until_ms: None,
                            usage: Some(usage),
                        },
                    )
                    .await
                    .unwrap();
                if let Some(b) = r.next_block {
                    assert_eq!(b.shard, shard + 1);
                    if step == 10 {
                        sizes.push(b.end - b.start);
                    }
                }
                time.advance_ms(1_000);
            }
        }
        // Blocks grow with the demand and cover the next shard's use with headroom.
        for (k, w) in sizes.windows(2).enumerate() {
            assert!(w[1] > w[0], "block sizes {sizes:?} at {k}");
        }
        let hosts = c.hosts().await.unwrap();
        let t = hosts.hosts[0].temporal.clone().unwrap();
        assert!(t.history.len() >= 4, "{t:?}");
        for h in &t.history[1..] {
            assert!(h.predicted > 0, "{h:?}");
            let err = (h.predicted as f64 - h.actual as f64).abs() / h.actual as f64;
            assert!(err < 0.5, "forecast {h:?} is off by {err}");
        }
    }

    #[tokio::test]
    async fn standby_wait_returns_an_expired_host_once_and_times_out_otherwise() {
        let (c, time) = with_time(
            Arc::new(MemStore::new()),
            Layout::preset("default").unwrap(),
        )
        .await;
        let c = Arc::new(c);
        assert_eq!(c.standby_wait("s1", 0).await.unwrap(), None);
        let a = c.acquire(&req("a", 1_000)).await.unwrap();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.standby_wait("s1", 50_000).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the lease is live: the standby waits"
        );
        time.advance_ms(1_000);
        assert_eq!(waiter.await.unwrap().unwrap(), Some(a.host_id));
        // The same id is not offered to a second standby while the first takes it over.
        assert_eq!(c.standby_wait("s2", 0).await.unwrap(), None);
        let status = c.hosts().await.unwrap();
        assert_eq!(status.standbys.len(), 2);
        assert_eq!(status.hosts[0].state, LeaseState::Expired);
    }

    #[test]
    fn block_record_refuses_to_move_down() {
        let mut b = BlockRecord::default();
        b.grant(0, 10, 1, 0);
        b.grant(10, 20, 1, 0);
        let r = std::panic::catch_unwind(move || {
            let mut b = b;
            b.grant(15, 30, 2, 0)
        });
        assert!(
            r.is_err(),
            "a block below the high-water mark must not be recorded"
        );
    }
}
