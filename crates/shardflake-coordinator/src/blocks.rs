//! Counter blocks for temporal shards, and how large they are.
//!
//! A block of `(shard, host)` always starts at or above the high-water mark of every earlier
//! block of the pair ([`BlockRecord::grant`]), and is written in a transaction that also
//! compares the host's record, so only the current token of a live lease gets one.
//!
//! Sizing is a handful of pure functions of explicit inputs (the usage reports, the last
//! block, the shard length, [`sizing`]): the first block of a shard follows the forecast
//! ([`forecast_next`], with Holt's method from [`crate::forecast`]), a refill during a shard
//! follows the rate at which the last block was used ([`refill_size`]).

use shardflake::{BlockSizing, BlockUse};
use shardflake_proto::coord::{BlockGrant, BlockRequest, ShardForecast, ShardUsage};

use crate::coordinator::{Coordinator, Step};
use crate::error::CoordError;
use crate::fence::Liveness;
use crate::records::{self, block_key, encode, host_key, BlockRecord, HostRecord, TemporalRecord};
use crate::store::Txn;

/// Blocks may be asked for at most this many shards ahead of the coordinator's clock.
pub(crate) const SHARD_AHEAD_MAX: u64 = 1;
/// A refill block is sized to last at most this long at the current rate (ms).
pub(crate) const REFILL_TARGET_MS_MAX: u64 = 10_000;
/// Shards of forecast-against-actual history (and of pending forecasts) kept per host.
const HISTORY_MAX: usize = 8;

/// A block asked for under a lease whose fencing was checked: by a node (`POST /v1/blocks`)
/// or by its renewal (the next shard's block, prepared ahead).
struct BlockAsk {
    host_id: u32,
    token: u64,
    shard: u64,
    after_counter: u64,
}

/// The block to answer with, and the record to write if it is a new one.
pub(crate) struct PlannedBlock {
    pub(crate) grant: BlockGrant,
    pub(crate) write: Option<BlockWrite>,
}

/// A new block's record, to be written only if the pair's record is still at `version`.
pub(crate) struct BlockWrite {
    key: String,
    version: u64,
    rec: BlockRecord,
}

impl BlockWrite {
    /// `txn` with this write and the compare that keeps it from overwriting a concurrent one.
    pub(crate) fn add_to(&self, txn: Txn) -> Txn {
        txn.compare(&self.key, self.version)
            .put(&self.key, encode(&self.rec))
    }
}

/// Counter values a host is expected to use in the next shard: the largest of Holt's
/// forecast over finished shards, the current shard's rate extrapolated over a whole shard,
/// and the host's own forecast. `shard_start_ms` is the wall time the reported shard began.
pub(crate) fn forecast_next(
    t: &TemporalRecord,
    shard_ms: u64,
    shard_start_ms: u64,
    now_ms: u64,
) -> u64 {
    let elapsed = now_ms.saturating_sub(shard_start_ms).clamp(1, shard_ms);
    let rate_based = (t.used as u128 * shard_ms as u128 / elapsed as u128) as u64;
    let holt = t.holt.forecast(1).round() as u64;
    holt.max(rate_based).max(t.host_predicted.unwrap_or(0))
}

/// The block sizes of a coordinator: the library's one rule ([`BlockSizing`]). A refill is
/// sized to last an eighth of a shard (at most [`REFILL_TARGET_MS_MAX`]) at the rate the
/// last block was used, and changes by at most a factor of two per block: a block
/// oversized by one odd interval costs a round trip less than it wastes.
pub(crate) fn sizing(block_min: u64, counter_max: u64, shard_ms: u64) -> BlockSizing {
    BlockSizing {
        min: block_min,
        max: counter_max.saturating_add(1),
        target_ms: (shard_ms / 8).clamp(1, REFILL_TARGET_MS_MAX),
        change_factor_max: 2,
    }
}

/// The size of a block asked for during a shard: a refill after `last`, or, for the first
/// block of a shard, the `forecast` with headroom.
pub(crate) fn refill_size(
    last: &BlockRecord,
    forecast: u64,
    sizing: BlockSizing,
    now_ms: u64,
) -> u64 {
    if last.grants == 0 {
        return sizing.for_forecast(forecast);
    }
    sizing.refill(Some(BlockUse {
        len: last.last_end - last.last_start,
        lasted_ms: now_ms.saturating_sub(last.granted_at_ms),
    }))
}

/// Refuses a block of a shard below `rec`'s block floor: its record may be gone, so a block
/// of it could repeat counter values.
fn check_floor(rec: &HostRecord, shard: u64) -> Result<(), CoordError> {
    if shard < rec.block_floor_shard {
        return Err(CoordError::ShardRetired {
            host_id: rec.host_id,
            shard,
            floor: rec.block_floor_shard,
        });
    }
    Ok(())
}

/// Takes a usage report into the host's temporal record: a report of a later shard closes
/// the previous one into the forecaster and the history.
pub(crate) fn update_usage(t: &mut TemporalRecord, usage: ShardUsage) {
    if !t.reported || usage.shard > t.shard {
        // A shard closes into the forecaster when the next one is reported; a report from
        // far away (a host that just started, or was idle) says nothing about a whole shard.
        if t.reported && (t.used > 0 || t.shard.checked_add(1) == Some(usage.shard)) {
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

/// Remembers the forecast a block for `shard` was sized from, to be set against the actual
/// use once the shard is over.
fn record_forecast(t: &mut TemporalRecord, shard: u64, forecast: u64) {
    t.forecasts.retain(|(s, _)| *s != shard);
    t.forecasts.push((shard, forecast));
    if t.forecasts.len() > HISTORY_MAX {
        t.forecasts.remove(0);
    }
}

impl Coordinator {
    /// Grants a counter block for `(shard, host)` above every earlier one (temporal mode).
    pub async fn grant_block(&self, req: &BlockRequest) -> Result<BlockGrant, CoordError> {
        self.grant_block_granting(req).await.map(|(g, _)| g)
    }

    /// [`Self::grant_block`], and whether the block is new (not one granted before and
    /// answered again): the audit trail logs each grant once.
    pub async fn grant_block_granting(
        &self,
        req: &BlockRequest,
    ) -> Result<(BlockGrant, bool), CoordError> {
        if !self.config.is_temporal() {
            return Err(CoordError::NotTemporal {
                layout: self.config.layout.name().to_string(),
            });
        }
        self.check_host(req.host_id)?;
        self.check_shard(req.shard)?;
        let current = self.config.layout.tick_of(self.time.wall_ms()).unwrap_or(0);
        if req.shard > current + SHARD_AHEAD_MAX {
            return Err(CoordError::ShardTooFarAhead {
                shard: req.shard,
                current,
                ahead_max: SHARD_AHEAD_MAX,
            });
        }
        self.cas_loop(|| Box::pin(self.grant_block_step(req))).await
    }

    /// `ShardBeyondLayout` for a shard the layout's shard field cannot hold.
    pub(crate) fn check_shard(&self, shard: u64) -> Result<(), CoordError> {
        let shard_max = self.config.layout.timestamp_field().max();
        if shard > shard_max {
            return Err(CoordError::ShardBeyondLayout {
                shard,
                shard_max,
                overflow_at: self.config.layout.overflow_time(),
            });
        }
        Ok(())
    }

    /// One attempt of [`Self::grant_block`]: the block the caller holds, or a new one above it.
    async fn grant_block_step(
        &self,
        req: &BlockRequest,
    ) -> Result<Step<'_, (BlockGrant, bool)>, CoordError> {
        let (rec, version) = self
            .fenced(req.host_id, req.token, &req.secret, Liveness::Required)
            .await?;
        check_floor(&rec, req.shard)?;
        let last = records::load_block(self.store.as_ref(), req.host_id, req.shard).await?;
        let now = self.time.wall_ms();
        let size = refill_size(&last.0, self.forecast_of(&rec, now), self.sizing(), now);
        let ask = BlockAsk {
            host_id: req.host_id,
            token: req.token,
            shard: req.shard,
            after_counter: req.after_counter,
        };
        let planned = self.plan_block(&ask, last, size, now)?;
        let Some(write) = planned.write else {
            return Ok(Step::Answer((planned.grant, false)));
        };
        // Comparing the host record fences the grant: it commits only if the token is
        // still current when the block is written.
        let txn = write.add_to(Txn::new().compare(host_key(req.host_id), version));
        Ok(Step::commit(txn, move || {
            self.metrics.blocks_requested.inc();
            (planned.grant, true)
        }))
    }

    /// With a renewal's usage report: takes the report into `rec` and, once the next shard
    /// is near, plans its block, so the host has it before the shard starts. A new block's
    /// forecast is recorded in `rec`; the caller writes the block with the renewal.
    pub(crate) async fn next_shard_block(
        &self,
        rec: &mut HostRecord,
        token: u64,
        usage: ShardUsage,
        now_ms: u64,
    ) -> Result<Option<PlannedBlock>, CoordError> {
        update_usage(rec.temporal.get_or_insert_with(Default::default), usage);
        let layout = &self.config.layout;
        // No block for a shard the layout cannot hold: the layout's life ends there.
        if usage.shard >= layout.timestamp_field().max() {
            return Ok(None);
        }
        let next_start = layout.ms_of_tick(usage.shard + 1);
        let lead = (layout.time_unit_ms() / 2).min(rec.ttl_ms.saturating_mul(3));
        if now_ms.saturating_add(lead) < next_start {
            return Ok(None);
        }
        let forecast = self.forecast_of(rec, now_ms);
        let size = self.sizing().for_forecast(forecast);
        let req = BlockAsk {
            host_id: rec.host_id,
            token,
            shard: usage.shard + 1,
            after_counter: 0,
        };
        if req.shard < rec.block_floor_shard {
            return Ok(None);
        }
        let last = records::load_block(self.store.as_ref(), req.host_id, req.shard).await?;
        let planned = self.plan_block(&req, last, size, now_ms)?;
        if planned.write.is_some() {
            let t = rec.temporal.get_or_insert_with(Default::default);
            record_forecast(t, req.shard, forecast);
        }
        Ok(Some(planned))
    }

    /// The block to answer `req` with, given the pair's `last` record and its version: the
    /// last block again if the caller already holds it (or lost the answer), else a new one
    /// of `size` values above the high-water mark.
    fn plan_block(
        &self,
        req: &BlockAsk,
        (mut last, version): (BlockRecord, u64),
        size: u64,
        now_ms: u64,
    ) -> Result<PlannedBlock, CoordError> {
        let shard = req.shard;
        if last.grants > 0 && last.token == req.token && last.last_start >= req.after_counter {
            return Ok(PlannedBlock {
                grant: BlockGrant {
                    shard,
                    start: last.last_start,
                    end: last.last_end,
                },
                write: None,
            });
        }
        let counter_max = self.config.counter_max();
        let start = last.high_water.max(req.after_counter);
        if start > counter_max {
            return Err(CoordError::CounterSpaceExhausted {
                host_id: req.host_id,
                shard,
                counter_max,
            });
        }
        let end = start.saturating_add(size.max(1)).min(counter_max + 1);
        last.grant(start, end, req.token, now_ms, self.config.audit_window);
        Ok(PlannedBlock {
            grant: BlockGrant { shard, start, end },
            write: Some(BlockWrite {
                key: block_key(req.host_id, shard),
                version,
                rec: last,
            }),
        })
    }

    /// The forecast of `rec`'s next shard; 0 before its first usage report.
    pub(crate) fn forecast_of(&self, rec: &HostRecord, now_ms: u64) -> u64 {
        rec.temporal.as_ref().map_or(0, |t| {
            forecast_next(
                t,
                self.config.layout.time_unit_ms(),
                self.config.layout.ms_of_tick(t.shard),
                now_ms,
            )
        })
    }

    fn sizing(&self) -> BlockSizing {
        sizing(
            self.config.block_min,
            self.config.counter_max(),
            self.config.layout.time_unit_ms(),
        )
    }
}
