//! The standalone backing: the state file and the keeper that makes every reservation and
//! counter block durable in it before the generator may use it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use shardflake::{
    format_rfc3339_ms, BlockSizing, BlockUse, CounterBlock, CounterSupplier, Layout, Reservation,
    Reserver, SnowflakeGenerator, TemporalGenerator,
};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::source::{DynClock, Generator, IdSource};
use crate::state::{generator_policy, Shared, StartError};
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

/// Block sizes of the standalone keeper: blocks follow the observed rate closely (a state
/// write is cheap next to a coordinator round trip), so a block may grow a thousandfold at
/// once when a burst starts.
const TEMPORAL_SIZING: BlockSizing = BlockSizing {
    min: TEMPORAL_BLOCK_MIN,
    max: TEMPORAL_BLOCK_MAX,
    target_ms: TEMPORAL_BLOCK_TARGET_MS,
    change_factor_max: 1_024,
};

/// Wakes the keeper from the hot path without blocking: the generator's [`Reserver`] and the
/// temporal generator's [`CounterSupplier`].
#[derive(Default)]
pub(crate) struct Wake {
    pub(crate) notify: Notify,
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

/// Block sizing and prefetch bookkeeping of the temporal keeper.
#[derive(Default)]
struct TemporalKeeper {
    /// Per shard: when its last block was granted and how large it was.
    last_grant: BTreeMap<u64, (Instant, u64)>,
    /// Shards this process has installed a block for (so the prefetch runs once per shard).
    installed: BTreeSet<u64>,
}

/// A standalone node's backing: the state file and what the keeper knows.
pub(crate) struct Standalone {
    file: StateFile,
    persisted: Mutex<Reserved>,
    /// The Snowflake generator's reservation (`None` for the temporal layout).
    pub(crate) reservation: Option<Arc<Reservation>>,
    pub(crate) wake: Arc<Wake>,
    /// Temporal layout: the persisted shard floor, readable without the state mutex (which
    /// is held across fsyncs).
    floor: AtomicU64,
    pub(crate) node_json: Map<String, Value>,
    temporal: Mutex<TemporalKeeper>,
    last_write_error: Mutex<Option<String>>,
}

/// Locks and reads the state file and builds the generator strictly above the persisted
/// bound. The caller persists the first reservation before serving.
pub(crate) fn open(
    config: &NodeConfig,
    clock: &DynClock,
) -> Result<(Standalone, IdSource), StartError> {
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
    let (generator, reservation) = if layout.is_temporal() {
        let g = TemporalGenerator::builder(layout.clone())
            .host(config.node[0].value)
            .clock(clock.clone())
            .supplier(wake.clone())
            .build()?;
        (Generator::Temporal(Arc::new(g)), None)
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
        (Generator::Snowflake(b.build()?), Some(reservation))
    };
    let floor = prior.temporal.as_ref().map_or(0, |t| t.shard_floor);
    let standalone = Standalone {
        file,
        persisted: Mutex::new(prior),
        reservation,
        wake,
        floor: AtomicU64::new(floor),
        node_json,
        temporal: Mutex::new(TemporalKeeper::default()),
        last_write_error: Mutex::new(None),
    };
    Ok((standalone, IdSource::standalone(generator)))
}

impl Standalone {
    /// The state file's path.
    pub(crate) fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// The lowest temporal shard ids may be issued in (0 for other layouts).
    pub(crate) fn shard_floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// `; last state write failed: ...` after a failed write, for readiness messages.
    pub(crate) fn write_error_note(&self) -> String {
        self.last_write_error
            .lock()
            .expect("error mutex")
            .clone()
            .map(|e| format!("; last state write failed: {e}"))
            .unwrap_or_default()
    }

    /// Applies `change` to a copy of the persisted state, writes it durably, and only then
    /// makes it the persisted state. Blocking: call from a blocking context.
    fn persist(
        &self,
        clock: &DynClock,
        metrics: &Metrics,
        change: impl FnOnce(&mut Reserved),
    ) -> Result<Reserved, StateError> {
        let mut persisted = self.persisted.lock().expect("persisted state mutex");
        let mut next = persisted.clone();
        change(&mut next);
        next.written_at_ms = clock.now_ms();
        let started = Instant::now();
        let r = self.file.store(&next);
        metrics
            .state_write_last_us
            .set(started.elapsed().as_micros().min(i64::MAX as u128) as i64);
        match r {
            Ok(()) => {
                metrics.state_writes.inc();
                *persisted = next.clone();
                Ok(next)
            }
            Err(e) => {
                metrics.state_write_errors.inc();
                Err(e)
            }
        }
    }

    /// One keeper pass that records its outcome for `/readyz`. Blocking.
    pub(crate) fn keep(
        &self,
        shared: &Shared,
        source: &IdSource,
        force: bool,
    ) -> Result<bool, StateError> {
        let r = match &source.generator {
            Generator::Snowflake(g) => self.keep_snowflake(shared, g, force),
            Generator::Temporal(g) => self.keep_temporal(shared, g),
        };
        *self.last_write_error.lock().expect("error mutex") =
            r.as_ref().err().map(|e| e.to_string());
        r
    }

    fn keep_snowflake(
        &self,
        shared: &Shared,
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
        let base = shared.clock.now_ms().max(g.last_issued_ms());
        let until = r.until_ms();
        let requested = self.wake.requested_until_ms.load(Ordering::Acquire);
        if !force && until >= base + EXTEND_BELOW_HEADROOM_MS && requested <= until {
            return Ok(false);
        }
        let target = base.max(requested) + RESERVE_WINDOW_MS;
        let written = self.persist(&shared.clock, &shared.metrics, |st| {
            st.reserved_until_ms = st.reserved_until_ms.max(target);
            st.clean_shutdown = false;
        })?;
        // Durable now: the generator may issue up to it.
        r.extend_to(written.reserved_until_ms);
        debug!(until = written.reserved_until_ms, "reservation extended");
        Ok(true)
    }

    fn keep_temporal(
        &self,
        shared: &Shared,
        g: &TemporalGenerator<DynClock>,
    ) -> Result<bool, StateError> {
        let layout: &Layout = g.layout();
        let counter_end = layout.sequence_field().max() + 1;
        let now_ms = shared.clock.now_ms();
        let now_shard = layout.tick_of(now_ms).unwrap_or(0);
        let usage = g.usage();
        let requests: Vec<(u64, u64)> = {
            let mut b = self.wake.blocks.lock().expect("block request mutex");
            std::mem::take(&mut *b).into_iter().collect()
        };
        let mut keeper = self.temporal.lock().expect("temporal keeper mutex");
        let prior = self
            .persisted
            .lock()
            .expect("persisted state mutex")
            .temporal
            .clone()
            .unwrap_or_default();
        let mut t = prior.clone();
        // The generator never goes back to an earlier shard in-process; the floor carries
        // that across restarts.
        let mut floor = t.shard_floor.max(usage.shard);
        let mut grants: Vec<CounterBlock> = Vec::new();
        // The previous block of this shard, or of the last shard that had one: its size and
        // how long it lasted size the next one.
        let last_use = |keeper: &TemporalKeeper, shard: u64| {
            keeper
                .last_grant
                .get(&shard)
                .or_else(|| keeper.last_grant.range(..shard).next_back().map(|(_, v)| v))
                .map(|(at, len)| BlockUse {
                    len: *len,
                    lasted_ms: at.elapsed().as_millis() as u64,
                })
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
            let size = TEMPORAL_SIZING.refill(last_use(&keeper, shard));
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
        self.persist(&shared.clock, &shared.metrics, |st| {
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
                    shared.metrics.blocks_granted.inc();
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

    /// Writes the final state after the generator has been fenced. `exact`: no generator
    /// call is in flight any more, so the last issued values are final.
    pub(crate) fn persist_final(
        &self,
        shared: &Shared,
        old: Option<&IdSource>,
        exact: bool,
    ) -> Result<Reserved, StateError> {
        self.persist(&shared.clock, &shared.metrics, |st| {
            match old.map(|s| &s.generator) {
                Some(Generator::Snowflake(g)) if exact => {
                    // Nothing can be issued any more and no call is in flight: the last
                    // issued tick is the exact bound.
                    st.reserved_until_ms = g.last_issued_ms();
                    st.clean_shutdown = true;
                }
                Some(Generator::Temporal(g)) if exact => {
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
            }
        })
    }
}
