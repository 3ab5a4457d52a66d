//! Readiness: whether a request would be served now, and if not, the [`Refusal`] saying
//! why; the `/readyz` report and the metrics snapshot built on it.

use serde_json::Value;
use shardflake::{format_rfc3339_ms, Layout, Reservation, SnowflakeGenerator, TemporalGenerator};
use shardflake_client::ActiveLease;
use shardflake_proto::node::{NodeMode, ReadyResponse};
use shardflake_proto::{ErrorCode, ErrorDetail};
use tracing::{info, warn};

use crate::config::NodeClockPolicy;
use crate::issue::Refusal;
use crate::metrics::Snapshot;
use crate::source::{DynClock, Generator};
use crate::state::Shared;

impl Shared {
    /// Why the node cannot issue ids now, if it cannot. `Ok` means the next request is
    /// served: a lease is held (cluster mode), the clock is within the policy's bound, the
    /// reservation covers the clock, and a temporal generator has a counter block for the
    /// shard it issues in.
    pub(crate) fn check_ready(&self) -> Result<(), Refusal> {
        if self.is_shutting_down() {
            return Err(Refusal::new(
                ErrorCode::ShuttingDown,
                "the node is shutting down",
                Some(1_000),
            ));
        }
        if let Some(reason) = self.failure() {
            return Err(Refusal::new(ErrorCode::ClusterMisconfigured, reason, None));
        }
        let Some(layout) = self.layout() else {
            return Err(self.not_issuing());
        };
        let now_ms = self.clock.now_ms();
        if now_ms < layout.epoch_ms() {
            return Err(Refusal::new(
                ErrorCode::EpochInFuture,
                format!(
                    "the clock reads {}, before the layout's epoch {}",
                    format_rfc3339_ms(now_ms),
                    format_rfc3339_ms(layout.epoch_ms())
                ),
                Some(layout.epoch_ms() - now_ms),
            ));
        }
        if now_ms >= layout.overflow_ms() {
            return Err(Refusal::new(
                ErrorCode::LayoutExpired,
                format!(
                    "layout {} overflowed on {}",
                    layout.spec(),
                    layout.overflow_time()
                ),
                None,
            ));
        }
        let Some(source) = self.source.load_full() else {
            return Err(self.not_issuing());
        };
        if let Some(lease) = &source.lease {
            if !lease.is_valid() {
                return Err(lease_lost(lease));
            }
        }
        let write_error = || {
            self.standalone()
                .map(|s| s.write_error_note())
                .unwrap_or_default()
        };
        match &source.generator {
            Generator::Snowflake(g) => {
                let r = g
                    .reservation()
                    .expect("a node's generator has a reservation");
                self.check_snowflake_ready(g, r, now_ms, &write_error)
            }
            Generator::Temporal(g) => {
                let floor = self.shard_floor();
                let now_shard = layout.tick_of(now_ms).unwrap_or(0);
                if now_shard < floor {
                    let by = layout.ms_of_tick(floor) - now_ms;
                    return Err(Refusal::new(
                        ErrorCode::ClockBehind,
                        format!(
                            "the clock ({}) is in shard {now_shard}, below shard {floor} that \
                             ids were already issued in; shard {floor} starts in {by} ms",
                            format_rfc3339_ms(now_ms)
                        ),
                        Some(by),
                    ));
                }
                check_temporal_ready(g, layout, now_ms, floor, &write_error)
            }
        }
    }

    /// Readiness of a timestamp generator bounded by `r`.
    fn check_snowflake_ready(
        &self,
        g: &SnowflakeGenerator<DynClock>,
        r: &Reservation,
        now_ms: u64,
        write_error: &dyn Fn() -> String,
    ) -> Result<(), Refusal> {
        if r.is_revoked() {
            return Err(Refusal::new(
                ErrorCode::LeaseLost,
                "the reservation was revoked",
                Some(1_000),
            ));
        }
        let policy = self.config.clock_policy;
        let issued = g.last_issued_ms();
        let behind = issued.saturating_sub(now_ms);
        let tolerated = policy.tolerated_behind_ms();
        if behind > tolerated {
            return Err(Refusal::new(
                ErrorCode::ClockBehind,
                format!(
                    "the clock ({}) is {behind} ms behind the reserved bound {}; \
                     clock policy {policy} tolerates {tolerated} ms; waiting for the clock \
                     to catch up",
                    format_rfc3339_ms(now_ms),
                    format_rfc3339_ms(issued),
                ),
                Some(behind - tolerated),
            ));
        }
        let until = r.until_ms();
        if until < now_ms.max(issued) {
            return Err(Refusal::new(
                ErrorCode::ReservationExhausted,
                format!(
                    "the reservation (until {}) has not been extended{}",
                    format_rfc3339_ms(until),
                    write_error()
                ),
                Some(1_000),
            ));
        }
        Ok(())
    }

    /// The readiness report served at `/readyz`.
    pub(crate) fn readiness(&self) -> ReadyResponse {
        let check = self.check_ready();
        let now_ms = self.clock.now_ms();
        let mut r = ReadyResponse {
            ready: check.is_ok(),
            error: check.err().map(|nr| ErrorDetail {
                code: nr.code,
                message: nr.message,
            }),
            mode: if self.cluster().is_some() {
                NodeMode::Cluster
            } else {
                NodeMode::Standalone
            },
            layout: self
                .layout()
                .map_or_else(String::new, |l| l.name().to_string()),
            node: self
                .standalone()
                .map(|s| s.node_json.clone())
                .unwrap_or_default(),
            reserved_until_ms: None,
            headroom_ms: None,
            last_issued_ms: None,
            clock_behind_ms: None,
            borrowed_ahead_ms: None,
            shard: None,
            block_remaining: None,
        };
        let Some(source) = self.source.load_full() else {
            return r;
        };
        if let Some(lease) = &source.lease {
            if let Ok(values) = lease.node_values() {
                r.node = values
                    .into_iter()
                    .map(|(field, v)| (field, Value::from(v)))
                    .collect();
            }
        }
        match &source.generator {
            Generator::Snowflake(g) => {
                let until = g.reservation().map_or(0, |r| r.until_ms());
                let issued = g.last_issued_ms();
                r.reserved_until_ms = Some(until);
                r.headroom_ms = Some(until.saturating_sub(now_ms.max(issued)));
                r.last_issued_ms = Some(issued);
                r.clock_behind_ms = Some(issued.saturating_sub(now_ms));
                if matches!(self.config.clock_policy, NodeClockPolicy::Borrow { .. }) {
                    r.borrowed_ahead_ms = Some(g.ahead_ms());
                }
            }
            Generator::Temporal(g) => {
                let u = g.usage();
                let floor = self.shard_floor();
                r.shard = Some(u.shard.max(floor));
                r.block_remaining = Some(u.block_end.saturating_sub(u.next_counter));
                if source.lease.is_none() {
                    r.clock_behind_ms = Some(g.layout().ms_of_tick(floor).saturating_sub(now_ms));
                }
            }
        }
        r
    }

    /// Logs readiness transitions (at warn when the node becomes unready).
    pub(crate) fn log_readiness_change(&self) {
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

    /// What `/metrics` reports besides the counters.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let r = self.readiness();
        let stats = self.source.load_full().and_then(|s| s.generator.stats());
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

fn lease_lost(lease: &ActiveLease) -> Refusal {
    Refusal::new(
        ErrorCode::LeaseLost,
        format!(
            "the lease on node id {} (token {}) may have expired; renewing or acquiring a new one",
            lease.host_id, lease.token
        ),
        Some(1_000),
    )
}

/// Readiness of a temporal generator: it has a counter block for the shard it issues in
/// (the later of the clock's shard, the generator's own and `floor`).
fn check_temporal_ready(
    g: &TemporalGenerator<DynClock>,
    layout: &Layout,
    now_ms: u64,
    floor: u64,
    write_error: &dyn Fn() -> String,
) -> Result<(), Refusal> {
    let u = g.usage();
    let now_shard = layout.tick_of(now_ms).unwrap_or(0);
    let shard = now_shard.max(u.shard).max(floor);
    if g.has_block_for(shard) {
        return Ok(());
    }
    let counter_end = layout.sequence_field().max() + 1;
    if u.shard == shard && u.next_counter >= counter_end {
        let next_ms = layout.ms_of_tick(shard + 1);
        return Err(Refusal::new(
            ErrorCode::CounterExhausted,
            format!(
                "every counter value of shard {shard} is used; the next shard starts in {} ms",
                next_ms.saturating_sub(now_ms)
            ),
            Some(next_ms.saturating_sub(now_ms).max(1)),
        ));
    }
    Err(Refusal::new(
        ErrorCode::NoCounterBlock,
        format!(
            "no counter block for shard {shard} yet; one has been requested{}",
            write_error()
        ),
        Some(1_000),
    ))
}
