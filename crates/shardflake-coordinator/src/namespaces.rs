//! Namespaces (segment mode): dense per-name counters, granted to nodes in blocks.
//!
//! A namespace issues the values `v >= start` with `v % step == offset`. Every block starts
//! at the namespace's `next` value and moves it up in the same compare-and-swap transaction,
//! which also compares the caller's host record: only the current token of a live lease gets
//! a block, and two blocks of a namespace never overlap, whoever asks and whichever
//! coordinator answers. A node issues a block's values in order, and its later blocks lie
//! above its earlier ones, so its ids strictly increase.
//!
//! **Sizing.** Each (namespace, node) pair has a [`shardflake::forecast::RateForecast`] (Holt's linear smoothing,
//! the library's one forecaster) fed by the node's consumption reports, sent with its
//! renewals and with its block requests. A block covers `ns_horizon_ms` of the forecast
//! demand with the forecast headroom, within the namespace's `block_min..=block_max`.
//!
//! **Returns.** A node that stops cleanly gives back the values of its newest block it never
//! issued. A return is fenced like a grant (the host id's current token and the lease's
//! secret, [`Coordinator::fenced`]) and covers at most the caller's newest block granted
//! under that token: `block_end` must be that block's end and `unused_from` a value inside
//! it, or the return is refused (`return_refused`) and nothing changes. It never reaches
//! into an earlier block, whose values the caller may have issued, and it ends the lease's
//! use of the namespace: no block of it is granted under that token afterwards
//! (`namespace_returned`), so a replayed return can never meet a new block with the same
//! bounds. It is taken only while no block of the namespace was granted after that one (`next` is still its end): then
//! `next` goes back down to `unused_from`, and no value anyone else holds lies at or above
//! it; otherwise the values stay unused (`returned: 0`). A return is taken once (it clears
//! the node's record of its block); a replay of it is answered the same and changes
//! nothing. So a caller without the secret cannot return anything, and a holder that
//! misreports its own block can only waste values of that block, never hand out a value
//! that another holder was granted.
//!
//! **Assignment.** [`assign`] decides which live nodes serve a namespace from the sum of
//! their forecasts, growing at once and shrinking only after a quiet period and well below
//! the threshold (hysteresis), keeping the nodes it has and adding new ones in rendezvous
//! order. Clients and nodes route by the same rendezvous order over the serving set.

use std::collections::HashMap;

use shardflake::BlockSizing;
use shardflake_proto::coord::LeaseState;
use shardflake_proto::ns::{
    rendezvous_order, validate_name, NamespaceList, NamespaceNode, NamespaceSpec, NamespaceStatus,
    NsBlockGrant, NsBlockRequest, NsHeld, NsReturnRequest, NsReturnResponse, NsUsage,
    NS_PER_NODE_MAX, USAGE_REPORTS_MAX,
};

use crate::coordinator::{Coordinator, Step};
use crate::error::CoordError;
use crate::fence::Liveness;
use crate::generation::Floor;
use crate::records::{
    self, encode, host_key, ns_key, ns_use_key, NamespaceRecord, NsBlock, NsReturned, NsUseRecord,
    NS_USE_PREFIX,
};
use crate::store::{Txn, TxnOutcome};

/// Smallest block of a namespace created without `block_min`.
pub const NS_BLOCK_MIN_DEFAULT: u64 = 1_000;
/// Largest block of a namespace created without `block_max`.
pub const NS_BLOCK_MAX_DEFAULT: u64 = 10_000_000;
/// The largest `block_max` accepted.
pub const NS_BLOCK_LIMIT: u64 = 1 << 40;
/// Most namespaces one store holds.
pub const NAMESPACES_MAX: usize = 10_000;
/// A node's forecast counts towards the assignment while its last report is this recent.
const REPORT_FRESH_MS: u64 = 60_000;
/// A serving set shrinks only after it has not changed for this long (ms).
pub const SHRINK_AFTER_MS: u64 = 60_000;
/// A namespace gets another node once its forecast passes this share of what its nodes serve.
pub const GROW_AT: f64 = 0.8;
/// It gives one back only when the forecast is below this share of what one node fewer serves.
pub const SHRINK_AT: f64 = 0.5;

/// The smallest value `>= start` that is `offset` modulo `step`, if there is one.
fn first_value(start: u64, step: u64, offset: u64) -> Option<u64> {
    let add = (offset + step - start % step) % step;
    start.checked_add(add)
}

/// [`first_value`], for the repair: the first value of a progression at or above `floor`.
pub(crate) fn first_value_at_or_above(floor: u64, step: u64, offset: u64) -> Option<u64> {
    first_value(floor, step, offset)
}

/// The block of `count` values from `start`: its end (exclusive, saturating at `u64::MAX`;
/// no value is `u64::MAX`, which marks a namespace whose values are all granted).
fn block_end(start: u64, count: u64, step: u64) -> u64 {
    (u128::from(start) + u128::from(count) * u128::from(step)).min(u128::from(u64::MAX)) as u64
}

/// Values `start, start + step, ..` below `u64::MAX`.
fn values_left(start: u64, step: u64) -> u64 {
    (u64::MAX - start).div_ceil(step)
}

/// The serving set of namespace `name` after one evaluation, or `None` if it stays as is.
///
/// `current` is the set now (in the order nodes were added), `live` the nodes holding a live
/// lease with an advertised URL, `forecast_per_s` the namespace's total forecast demand,
/// `capacity_per_s` what one node serves of it, `stable_ms` how long the set has not changed.
/// Nodes that are gone are replaced at once; the set grows as soon as the forecast passes
/// [`GROW_AT`] of its capacity, and shrinks by one only after [`SHRINK_AFTER_MS`] of no change
/// and with the forecast under [`SHRINK_AT`] of what the smaller set serves.
pub fn assign(
    name: &str,
    current: &[u32],
    live: &[u32],
    forecast_per_s: f64,
    capacity_per_s: f64,
    stable_ms: u64,
) -> Option<Vec<u32>> {
    let capacity = capacity_per_s.max(1.0);
    let want = ((forecast_per_s / (capacity * GROW_AT)).ceil() as usize).max(1);
    let mut target = current.len().max(1);
    if want > target {
        target = want;
    } else if target > 1
        && forecast_per_s < SHRINK_AT * (target - 1) as f64 * capacity
        && stable_ms >= SHRINK_AFTER_MS
    {
        target -= 1;
    }
    let target = target.min(live.len());
    let mut next: Vec<u32> = current
        .iter()
        .copied()
        .filter(|h| live.contains(h))
        .take(target)
        .collect();
    let live64: Vec<u64> = live.iter().map(|&h| u64::from(h)).collect();
    for h in rendezvous_order(name, &live64) {
        if next.len() >= target {
            break;
        }
        let h = h as u32;
        if !next.contains(&h) {
            next.push(h);
        }
    }
    (next != current).then_some(next)
}

/// What a block grant or a return reads: the caller's host record, the namespace and the
/// caller's use of it, each with the version its write is conditioned on.
struct NsRead {
    host_id: u32,
    host_version: u64,
    ns: NamespaceRecord,
    ns_version: u64,
    u: NsUseRecord,
    use_version: u64,
}

impl NsRead {
    /// The transaction writing `ns` and `u` back: it commits only if the caller's host
    /// record (its lease and token: the fencing), the namespace (no overlapping blocks) and
    /// the caller's use are unchanged since they were read.
    fn write(&self) -> Txn {
        let (nk, uk) = (
            ns_key(&self.ns.name),
            ns_use_key(&self.ns.name, self.host_id),
        );
        Txn::new()
            .compare(host_key(self.host_id), self.host_version)
            .compare(&nk, self.ns_version)
            .compare(&uk, self.use_version)
            .put(&nk, encode(&self.ns))
            .put(&uk, encode(&self.u))
    }
}

fn bad(message: String) -> CoordError {
    CoordError::BadRequest(message)
}

fn check_name(name: &str) -> Result<(), CoordError> {
    validate_name(name).map_err(bad)
}

fn host_of(host_id: u64) -> Result<u32, CoordError> {
    u32::try_from(host_id).map_err(|_| bad(format!("host_id {host_id} is not a host id")))
}

/// Checks the block bounds of a namespace.
fn check_bounds(block_min: u64, block_max: u64) -> Result<(), CoordError> {
    if block_min == 0 || block_min > block_max || block_max > NS_BLOCK_LIMIT {
        return Err(bad(format!(
            "block_min {block_min} and block_max {block_max} must satisfy 1 <= block_min <= block_max <= {NS_BLOCK_LIMIT}"
        )));
    }
    Ok(())
}

/// A new namespace record from `spec`, checked.
fn create(name: &str, spec: &NamespaceSpec, now_ms: u64) -> Result<NamespaceRecord, CoordError> {
    let start = spec.start.unwrap_or(1);
    let step = spec.step.unwrap_or(1);
    if step == 0 {
        return Err(bad("step must be at least 1".into()));
    }
    let offset = spec.offset.unwrap_or(start % step);
    if offset >= step {
        return Err(bad(format!("offset {offset} must be below step {step}")));
    }
    let block_min = spec.block_min.unwrap_or(NS_BLOCK_MIN_DEFAULT);
    let block_max = spec
        .block_max
        .unwrap_or(NS_BLOCK_MAX_DEFAULT.max(block_min));
    check_bounds(block_min, block_max)?;
    let next = first_value(start, step, offset)
        .filter(|&v| v < u64::MAX)
        .ok_or_else(|| {
            bad(format!(
                "no value at or above start {start} is {offset} modulo {step}"
            ))
        })?;
    Ok(NamespaceRecord {
        name: name.to_string(),
        start,
        step,
        offset,
        block_min,
        block_max,
        next,
        blocks_granted: 0,
        values_returned: 0,
        serving: Vec::new(),
        assigned_at_ms: now_ms,
        created_at_ms: now_ms,
        recent: Vec::new(),
    })
}

/// `rec` updated by `spec` (block bounds only), or the conflict with its fixed parameters.
fn update(rec: &NamespaceRecord, spec: &NamespaceSpec) -> Result<NamespaceRecord, CoordError> {
    let fixed = [
        ("start", rec.start, spec.start),
        ("step", rec.step, spec.step),
        ("offset", rec.offset, spec.offset),
    ];
    for (field, stored, given) in fixed {
        if let Some(given) = given.filter(|&g| g != stored) {
            return Err(CoordError::NamespaceConflict {
                name: rec.name.clone(),
                field,
                stored,
                given,
            });
        }
    }
    let mut next = rec.clone();
    next.block_min = spec.block_min.unwrap_or(rec.block_min);
    next.block_max = spec.block_max.unwrap_or(rec.block_max);
    check_bounds(next.block_min, next.block_max)?;
    Ok(next)
}

fn grant_of(block: NsBlock, step: u64) -> NsBlockGrant {
    NsBlockGrant {
        start: block.start,
        count: (block.end - block.start).div_ceil(step),
        step,
    }
}

fn status_of(rec: &NamespaceRecord, uses: &[(u32, NsUseRecord)]) -> NamespaceStatus {
    NamespaceStatus {
        name: rec.name.clone(),
        start: rec.start,
        step: rec.step,
        offset: rec.offset,
        block_min: rec.block_min,
        block_max: rec.block_max,
        next: rec.next,
        blocks_granted: rec.blocks_granted,
        values_returned: rec.values_returned,
        serving: rec.serving.iter().map(|&h| u64::from(h)).collect(),
        nodes: uses
            .iter()
            .map(|(host, u)| {
                let (last_forecast_per_s, last_actual_per_s) = u.forecast.last();
                NamespaceNode {
                    host_id: u64::from(*host),
                    forecast_per_s: u.forecast.per_s(),
                    last_forecast_per_s,
                    last_actual_per_s,
                    last_block: u.last_count,
                }
            })
            .collect(),
    }
}

/// The caller's newest block if `req` may return its tail: the block was granted under the
/// caller's current token, ends at `req.block_end`, and `req.unused_from` is one of its
/// values or its end. Anything else is refused, naming the rule.
fn check_return(
    name: &str,
    ns: &NamespaceRecord,
    u: &NsUseRecord,
    req: &NsReturnRequest,
) -> Result<NsBlock, CoordError> {
    let refuse = |rule: String| CoordError::ReturnRefused {
        name: name.to_string(),
        rule,
    };
    let Some(last) = u.last else {
        return Err(refuse(format!(
            "host id {} holds no unreturned block of it",
            req.host_id
        )));
    };
    if u.token != req.token {
        return Err(refuse(format!(
            "the newest block of host id {} was granted under token {}, not {}: a return covers only a block of the caller's current lease",
            req.host_id, u.token, req.token
        )));
    }
    if last.end != req.block_end {
        return Err(refuse(format!(
            "block_end {} is not the end of the caller's newest block ({}..{}): a return covers only the newest block",
            req.block_end, last.start, last.end
        )));
    }
    let aligned = req.unused_from == last.end || req.unused_from % ns.step == ns.offset;
    let below = req.unused_from < last.start
        && !shardflake::mutant::active(
            shardflake::mutant::Mutant::AReturnReachesBelowTheNewestBlock,
        );
    if below || req.unused_from > last.end || !aligned {
        return Err(refuse(format!(
            "unused_from {} is not a value of the caller's newest block {}..{} (step {}): a return never reaches into an earlier block",
            req.unused_from, last.start, last.end, ns.step
        )));
    }
    Ok(last)
}

/// Takes a consumption report into a node's record.
fn observe(u: &mut NsUseRecord, used: u64, over_ms: u64, now_ms: u64) {
    if used > 0 || over_ms > 0 {
        u.forecast.observe(used, over_ms);
        u.reported_at_ms = now_ms;
    }
}

impl Coordinator {
    /// Creates namespace `name`, or updates its block bounds.
    pub async fn put_namespace(
        &self,
        name: &str,
        spec: &NamespaceSpec,
    ) -> Result<NamespaceStatus, CoordError> {
        check_name(name)?;
        self.cas_loop(|| Box::pin(self.put_ns_step(name, spec)))
            .await?;
        self.namespace(name).await
    }

    async fn put_ns_step(
        &self,
        name: &str,
        spec: &NamespaceSpec,
    ) -> Result<Step<'_, ()>, CoordError> {
        let key = ns_key(name);
        let (rec, version) = match records::load_ns(self.store.as_ref(), name).await? {
            Some((old, version)) => {
                let rec = update(&old, spec)?;
                if rec == old {
                    return Ok(Step::Answer(()));
                }
                (rec, version)
            }
            None => {
                let count = self.store.count(records::NS_PREFIX).await?;
                if count >= NAMESPACES_MAX {
                    return Err(bad(format!(
                        "the store holds {count} namespaces, the most allowed ({NAMESPACES_MAX})"
                    )));
                }
                (create(name, spec, self.time.wall_ms())?, 0)
            }
        };
        let created = version == 0;
        let txn = Txn::new().compare(&key, version).put(&key, encode(&rec));
        Ok(Step::commit(txn, move || {
            if created {
                self.routing_changed();
            }
            tracing::info!(namespace = %rec.name, created, start = rec.start, step = rec.step,
                offset = rec.offset, block_min = rec.block_min, block_max = rec.block_max,
                "namespace written");
        }))
    }

    /// Namespace `name` and its nodes' forecasts.
    pub async fn namespace(&self, name: &str) -> Result<NamespaceStatus, CoordError> {
        let (rec, _) = records::load_ns(self.store.as_ref(), name)
            .await?
            .ok_or_else(|| CoordError::UnknownNamespace {
                name: name.to_string(),
            })?;
        let uses = records::load_ns_uses(self.store.as_ref(), name).await?;
        Ok(status_of(&rec, &uses))
    }

    /// Every namespace and its nodes' forecasts.
    pub async fn namespaces(&self) -> Result<NamespaceList, CoordError> {
        let mut namespaces = Vec::new();
        for (rec, _) in records::load_namespaces(self.store.as_ref()).await? {
            let uses = records::load_ns_uses(self.store.as_ref(), &rec.name).await?;
            namespaces.push(status_of(&rec, &uses));
        }
        Ok(NamespaceList { namespaces })
    }

    /// Reads namespace `name` (`UnknownNamespace` if it was never created) and `host_id`'s
    /// use of it, for a write conditioned on `host_version` too.
    async fn read_ns(
        &self,
        name: &str,
        host_id: u32,
        host_version: u64,
    ) -> Result<NsRead, CoordError> {
        let (ns, ns_version) = records::load_ns(self.store.as_ref(), name)
            .await?
            .ok_or_else(|| CoordError::UnknownNamespace {
                name: name.to_string(),
            })?;
        let (u, use_version) = records::load_ns_use(self.store.as_ref(), name, host_id).await?;
        Ok(NsRead {
            host_id,
            host_version,
            ns,
            ns_version,
            u,
            use_version,
        })
    }

    /// Grants the caller its next block of namespace `name`, above every earlier block.
    pub async fn grant_ns_block(
        &self,
        name: &str,
        req: &NsBlockRequest,
    ) -> Result<NsBlockGrant, CoordError> {
        self.grant_ns_block_granting(name, req)
            .await
            .map(|(g, _)| g)
    }

    /// [`Self::grant_ns_block`], and whether the block is new (not one granted before and
    /// answered again): the audit trail logs each grant once.
    pub async fn grant_ns_block_granting(
        &self,
        name: &str,
        req: &NsBlockRequest,
    ) -> Result<(NsBlockGrant, bool), CoordError> {
        check_name(name)?;
        let host_id = host_of(req.host_id)?;
        self.check_host(host_id)?;
        if self
            .keeps_presentation(host_id, req.token, &req.secret)
            .await
        {
            // Refused below; what the node holds is a floor for the repair.
            self.note_floor(Floor::Namespace {
                name,
                end: req.after,
            })
            .await;
        }
        self.cas_loop(|| Box::pin(self.grant_ns_step(name, host_id, req)))
            .await
    }

    async fn grant_ns_step(
        &self,
        name: &str,
        host_id: u32,
        req: &NsBlockRequest,
    ) -> Result<Step<'_, (NsBlockGrant, bool)>, CoordError> {
        let (_, host_version) = self
            .fenced(host_id, req.token, &req.secret, Liveness::Required)
            .await?;
        let mut r = self.read_ns(name, host_id, host_version).await?;
        let (ns, u) = (&mut r.ns, &mut r.u);
        // A return ends the lease's use of the namespace. Were a new block granted under
        // the same token, it could have the returned block's bounds (the namespace's next
        // value went back to them), and a replay of the return would then take it back
        // while its holder issues from it. A return answered 0 took nothing back: the
        // holder goes on, and a replay of it is answered 0 again (`return_ns_step`).
        if u.returned
            .is_some_and(|d| d.token == req.token && d.returned > 0)
        {
            return Err(CoordError::NamespaceReturned {
                name: name.to_string(),
                host_id,
                token: req.token,
            });
        }
        // A retry whose answer was lost: the newest block granted under this token lies
        // above what the caller holds. Answer it again.
        if let Some(last) = u.last.filter(|l| u.token == req.token && l.end > req.after) {
            return Ok(Step::Answer((grant_of(last, ns.step), false)));
        }
        let now = self.time.wall_ms();
        observe(u, req.used, req.over_ms, now);
        let sizing = BlockSizing {
            min: ns.block_min,
            max: ns.block_max,
            target_ms: self.config.ns_horizon_ms,
            change_factor_max: 1,
        };
        let left = values_left(ns.next, ns.step);
        if left == 0 {
            return Err(CoordError::NamespaceExhausted {
                name: name.to_string(),
                max: u64::MAX - 1,
            });
        }
        let count = u
            .forecast
            .block_size(&sizing, self.config.ns_horizon_ms)
            .min(left);
        let block = NsBlock {
            start: ns.next,
            end: block_end(ns.next, count, ns.step),
        };
        ns.next = block.end;
        ns.blocks_granted += 1;
        ns.log_grant(block, host_id, req.token, now, self.config.audit_window);
        u.last = Some(block);
        u.token = req.token;
        u.last_count = count;
        u.reported_at_ms = now;
        let step = ns.step;
        let txn = r.write();
        Ok(Step::commit(txn, move || {
            self.metrics.ns_blocks.inc();
            (grant_of(block, step), true)
        }))
    }

    /// Takes back the unused tail of the caller's newest block of namespace `name`, if no
    /// later block was granted (module docs).
    pub async fn return_ns_block(
        &self,
        name: &str,
        req: &NsReturnRequest,
    ) -> Result<NsReturnResponse, CoordError> {
        check_name(name)?;
        let host_id = host_of(req.host_id)?;
        self.check_host(host_id)?;
        if self
            .keeps_presentation(host_id, req.token, &req.secret)
            .await
        {
            self.note_floor(Floor::Namespace {
                name,
                end: req.block_end,
            })
            .await;
        }
        self.cas_loop(|| Box::pin(self.return_ns_step(name, host_id, req)))
            .await
    }

    async fn return_ns_step(
        &self,
        name: &str,
        host_id: u32,
        req: &NsReturnRequest,
    ) -> Result<Step<'_, NsReturnResponse>, CoordError> {
        let (_, host_version) = self
            .fenced(host_id, req.token, &req.secret, Liveness::NotRequired)
            .await?;
        let mut r = self.read_ns(name, host_id, host_version).await?;
        let (ns, u) = (&mut r.ns, &mut r.u);
        if let Some(done) = u.returned.filter(|d| {
            (d.token, d.block_end, d.unused_from) == (req.token, req.block_end, req.unused_from)
        }) {
            // A replay of the return answered last (its answer was lost, or someone replays
            // it): the same answer, whatever happened since. A return answered 0 is never
            // taken later: its holder was told the values stay with it.
            return Ok(Step::Answer(NsReturnResponse {
                returned: done.returned,
            }));
        }
        let last = check_return(name, ns, u, req)?;
        if ns.next != last.end {
            // A later block was granted (to another node): values at or above `unused_from`
            // may be in it. They stay unused, and the holder may go on issuing them; the
            // answer is recorded so that a replay of this return is answered the same even
            // once `next` is back at this block's end (the later block returned).
            u.returned = Some(NsReturned {
                token: req.token,
                block_end: req.block_end,
                unused_from: req.unused_from,
                returned: 0,
            });
            let txn = r.write();
            return Ok(Step::commit(txn, || NsReturnResponse { returned: 0 }));
        }
        let returned = (last.end - req.unused_from).div_ceil(ns.step);
        ns.next = req.unused_from;
        ns.values_returned += returned;
        ns.log_return(host_id, last, req.unused_from);
        u.last = None;
        u.returned = Some(NsReturned {
            token: req.token,
            block_end: req.block_end,
            unused_from: req.unused_from,
            returned,
        });
        let txn = r.write();
        let name = name.to_string();
        let (token, unused_from, block_end) = (req.token, req.unused_from, req.block_end);
        Ok(Step::commit(txn, move || {
            self.metrics.ns_values_returned.inc_by(returned);
            tracing::info!(namespace = %name, host_id, token, unused_from, block_end, returned,
                "unused values given back");
            NsReturnResponse { returned }
        }))
    }

    /// Checks a renewal's namespace reports before anything is read.
    /// Checks a renewal's held blocks: at most one per namespace a node may serve, each
    /// named validly.
    pub(crate) fn check_held(&self, held: &[NsHeld]) -> Result<(), CoordError> {
        if held.len() > NS_PER_NODE_MAX {
            return Err(bad(format!(
                "{} held namespace blocks; at most {NS_PER_NODE_MAX} per renewal",
                held.len()
            )));
        }
        for h in held {
            check_name(&h.name)?;
        }
        Ok(())
    }

    pub(crate) fn check_usage_reports(&self, reports: &[NsUsage]) -> Result<(), CoordError> {
        if reports.len() > USAGE_REPORTS_MAX {
            return Err(bad(format!(
                "{} namespace usage reports; at most {USAGE_REPORTS_MAX} per renewal",
                reports.len()
            )));
        }
        for r in reports {
            check_name(&r.name)?;
        }
        Ok(())
    }

    /// Evaluates every namespace's serving set ([`assign`]) and writes the ones that
    /// change. Returns how many changed. It reads the hosts, the namespaces and every use
    /// record in one scan each, whatever their number; only a namespace whose serving set
    /// moves is read again, for its compare-and-swap.
    pub async fn assign_namespaces(&self) -> Result<usize, CoordError> {
        let now_mono = self.time.mono_ms();
        let mut live = Vec::new();
        for (rec, _) in records::load_hosts(self.store.as_ref()).await? {
            if rec.url.is_some() && self.lease_state(&rec, now_mono) == LeaseState::Live {
                live.push(rec.host_id);
            }
        }
        let namespaces = records::load_namespaces(self.store.as_ref()).await?;
        let mut uses: HashMap<String, Vec<NsUseRecord>> = HashMap::new();
        for (key, _, u, _) in records::load_all_ns_uses(self.store.as_ref()).await? {
            if let Some(name) = key
                .strip_prefix(NS_USE_PREFIX)
                .and_then(|k| k.rsplit_once('/'))
                .map(|(name, _)| name)
            {
                uses.entry(name.to_string()).or_default().push(u);
            }
        }
        self.metrics.assign_passes.inc();
        let now = self.time.wall_ms();
        let mut changed = 0;
        for (rec, _) in namespaces {
            let name = rec.name.clone();
            let forecast = self.forecast(&name, uses.get(&name).into_iter().flatten(), now);
            let moves = assign(
                &name,
                &rec.serving,
                &live,
                forecast,
                self.config.ns_node_capacity_per_s as f64,
                now.saturating_sub(rec.assigned_at_ms),
            );
            if moves.is_none() {
                continue;
            }
            let live = &live;
            let moved = self
                .cas_loop(|| Box::pin(self.assign_step(&name, live)))
                .await?;
            changed += usize::from(moved);
        }
        Ok(changed)
    }

    /// The forecast consumption of namespace `name` (ids/s) from its nodes' fresh reports,
    /// also set as its gauges with the consumption last reported.
    fn forecast<'a>(
        &self,
        name: &str,
        uses: impl Iterator<Item = &'a NsUseRecord> + Clone,
        now: u64,
    ) -> f64 {
        let fresh = uses.filter(|u| now.saturating_sub(u.reported_at_ms) <= REPORT_FRESH_MS);
        let forecast: f64 = fresh.clone().map(|u| u.forecast.per_s()).sum();
        let actual: f64 = fresh.map(|u| u.forecast.last().1).sum();
        let label = [("namespace", name.to_string())];
        self.metrics.ns_forecast.get_or_create(&label).set(forecast);
        self.metrics.ns_actual.get_or_create(&label).set(actual);
        forecast
    }

    async fn assign_step(&self, name: &str, live: &[u32]) -> Result<Step<'_, bool>, CoordError> {
        let Some((mut ns, version)) = records::load_ns(self.store.as_ref(), name).await? else {
            return Ok(Step::Answer(false));
        };
        let now = self.time.wall_ms();
        let uses = records::load_ns_uses(self.store.as_ref(), name).await?;
        let forecast = self.forecast(name, uses.iter().map(|(_, u)| u), now);
        let Some(serving) = assign(
            name,
            &ns.serving,
            live,
            forecast,
            self.config.ns_node_capacity_per_s as f64,
            now.saturating_sub(ns.assigned_at_ms),
        ) else {
            return Ok(Step::Answer(false));
        };
        let before = std::mem::replace(&mut ns.serving, serving);
        ns.assigned_at_ms = now;
        let key = ns_key(name);
        let txn = Txn::new().compare(&key, version).put(&key, encode(&ns));
        Ok(Step::commit(txn, move || {
            self.metrics.ns_assignments.inc();
            self.routing_changed();
            tracing::info!(namespace = %ns.name, ?before, serving = ?ns.serving,
                forecast_per_s = forecast.round(), "namespace assignment changed");
            true
        }))
    }
}

/// How often the maintaining coordinator reads the routing epoch, to assign namespaces when
/// it moved (ms).
pub const ASSIGN_INTERVAL_MS: u64 = 1_000;
/// How often the maintaining coordinator assigns namespaces when the routing epoch stays
/// (ms): forecasts move with load, without an epoch write.
pub const ASSIGN_BACKSTOP_MS: u64 = 10_000;

mod lifecycle;
mod reports;
pub(crate) use reports::ReportJob;
pub use reports::USAGE_REPORTS_PER_TXN;
#[cfg(test)]
mod tests;
