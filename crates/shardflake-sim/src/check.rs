//! The simulation's checker. On every acknowledged batch it checks, against the store as it
//! is at that moment, that no id was issued above its host id's durable reservation; that a
//! running process issues only under a host id the store names it the holder of, and no later
//! than a TTL after the lease's last heartbeat appeared in the store; that the
//! batch comes from one generator (one host id, increasing); per node process that each host
//! id's ids strictly increase; at the end every id is checked for duplicates (the library's
//! radix sort and count, over the runs of values whose ranges overlap), and
//! every node must have served again within the liveness bound after the faults healed.

use std::collections::HashMap;

use shardflake::Layout;
use shardflake_proto::audit::AuditReport;
use shardflake_proto::coord::HostsResponse;

/// At most this many violations are kept with their details.
const VIOLATIONS_KEPT_MAX: usize = 20;

/// What the checker saw.
#[derive(Debug)]
pub struct Checker {
    decoder: IdDecoder,
    /// When every fault has healed (ms): liveness is measured from here.
    heal_ms: u64,
    /// Every acknowledged id, as runs of consecutive ids.
    ids: Runs,
    /// Last id per (node, process incarnation, host id); nodes by their number in `names`.
    last: HashMap<(usize, u64, u32), u64>,
    /// The names of the nodes and clients seen, numbered in order of appearance.
    names: Vec<String>,
    /// First acknowledgement per node at or after the heal time.
    recovered_at: HashMap<String, u64>,
    violations: Vec<String>,
    violation_count: u64,
    refusals: u64,
    acks: u64,
    tallies: std::collections::BTreeMap<String, u64>,
    /// The namespaces' rules, and every value acknowledged per namespace, as runs a step
    /// apart.
    ns_rules: HashMap<String, NsRule>,
    ns_values: std::collections::BTreeMap<String, Runs>,
    /// Who served each batch of `ns_values`, and when (simulated ms).
    ns_servers: std::collections::BTreeMap<String, Vec<(usize, u64)>>,
    /// Per host id, the lease's last heartbeat the store showed and when it was first seen.
    lease_seen: HashMap<u32, LeaseSeen>,
}

/// A lease's last heartbeat (its token and renewals under it) and the simulated time the
/// checker first saw it in the store. The coordinators time the lease from when they commit
/// or see that heartbeat, which is no later than this; the holder times it from when it sent
/// the request, earlier still, less its drift margin. So a running holder that issues more
/// than a TTL after `since_ms` did not stop when its lease may have expired.
#[derive(Debug, Clone, Copy)]
struct LeaseSeen {
    token: u64,
    renewals: u64,
    since_ms: u64,
}

/// The store as it is when a batch is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct StoreNow<'a> {
    /// The host records.
    pub hosts: &'a HostsResponse,
    /// The grants logged (temporal layouts: the counter blocks the ids must lie in).
    pub grants: Option<&'a AuditReport>,
}

/// What every value of a namespace must be: at least `start`, and on the grid of `step`
/// through `offset` (`value % step == offset % step`).
#[derive(Debug, Clone, Copy)]
pub struct NsRule {
    /// The first value.
    pub start: u64,
    /// Distance between values.
    pub step: u64,
    /// Values are `offset` modulo `step`.
    pub offset: u64,
}

/// Maps an id to its host id and millisecond, for one layout and pool.
#[derive(Debug, Clone)]
pub struct IdDecoder {
    layout: Layout,
    node_mask: u64,
    hosts: HashMap<u64, u32>,
}

impl IdDecoder {
    /// The decoder of `layout` for host ids `0..pool_size`.
    pub fn new(layout: &Layout, pool_size: u32) -> anyhow::Result<Self> {
        let node_mask = layout
            .node_fields()
            .fold(0u64, |m, f| m | (f.max() << f.shift()));
        let mut hosts = HashMap::new();
        for h in 0..pool_size {
            let values = layout.node_values_of_host(u64::from(h))?;
            let pairs: Vec<(&str, u64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            hosts.insert(layout.node_bits(&pairs)?, h);
        }
        Ok(Self {
            layout: layout.clone(),
            node_mask,
            hosts,
        })
    }

    /// `(host id, unix ms)` of `id`, or `None` for a node value outside the pool.
    pub fn decode(&self, id: u64) -> Option<(u32, u64)> {
        let host = *self.hosts.get(&(id & self.node_mask))?;
        let tick = self.layout.timestamp_field().get(id);
        Some((host, self.layout.ms_of_tick(tick)))
    }
}

impl Checker {
    /// A checker of ids decoded by `decoder`, for faults that heal at `heal_ms`.
    pub fn new(decoder: IdDecoder, heal_ms: u64) -> Self {
        Self {
            decoder,
            heal_ms,
            ids: Runs::new(1),
            last: HashMap::new(),
            recovered_at: HashMap::new(),
            names: Vec::new(),
            violations: Vec::new(),
            violation_count: 0,
            refusals: 0,
            acks: 0,
            tallies: Default::default(),
            ns_rules: HashMap::new(),
            ns_values: Default::default(),
            ns_servers: Default::default(),
            lease_seen: HashMap::new(),
        }
    }

    /// Notes every lease whose heartbeat changed since the last look, as seen at `at_ms`.
    fn observe_leases(&mut self, store: &HostsResponse, at_ms: u64) {
        for h in &store.hosts {
            let seen = LeaseSeen {
                token: h.token,
                renewals: h.renewals,
                since_ms: at_ms,
            };
            let e = self.lease_seen.entry(h.host_id).or_insert(seen);
            if (e.token, e.renewals) != (h.token, h.renewals) {
                *e = seen;
            }
        }
    }

    /// When the lease of `record` ran out at the latest (simulated ms): a TTL after its last
    /// heartbeat was first seen.
    fn lease_ran_out_ms(&self, record: &shardflake_proto::coord::HostStatus) -> Option<u64> {
        self.lease_seen
            .get(&record.host_id)
            .filter(|s| (s.token, s.renewals) == (record.token, record.renewals))
            .map(|s| s.since_ms.saturating_add(record.ttl_ms))
    }

    /// Also checks the values of namespace `name` against `rule`.
    pub fn namespace(mut self, name: &str, rule: NsRule) -> Self {
        self.ns_rules.insert(name.to_string(), rule);
        self
    }

    /// The highest value acknowledged per namespace so far (what an operator's applications
    /// hold, for a repair's floors).
    pub fn ns_highest(&self) -> std::collections::BTreeMap<String, u64> {
        self.ns_values
            .iter()
            .filter_map(|(name, runs)| Some((name.clone(), runs.highest()?)))
            .collect()
    }

    /// Checks and records ids an SDK client handed out (taken from its buffers, which hold
    /// the answers of several nodes): every id at or below its host id's durable reservation
    /// in `store` as it is now, and unique with every other id of the run.
    pub fn ack_sdk(&mut self, ids: Vec<u64>, store: &HostsResponse) {
        self.acks += 1;
        // Temporal ids are judged by their counter blocks, at the nodes' acknowledgements.
        let timed = !self.decoder.layout.is_temporal();
        for &id in ids.iter().filter(|_| timed) {
            let bound = self.decoder.decode(id).and_then(|(host, ms)| {
                store
                    .hosts
                    .iter()
                    .find(|h| h.host_id == host)
                    .map(|r| (host, ms, r.reserved_until_ms))
            });
            match bound {
                Some((_, ms, b)) if ms <= b => {}
                Some((host, ms, b)) => {
                    self.violation(format!(
                        "sdk: id {id} (host id {host}, {ms} ms) handed out above the durable reservation {b} ms"
                    ));
                    break;
                }
                None => {
                    self.violation(format!("sdk: id {id} of a host id the store never leased"));
                    break;
                }
            }
        }
        let mask = self.decoder.node_mask;
        self.ids.push(&ids, |id| id & mask);
    }

    /// [`Checker::ack_ns`] for values an SDK client handed out: increasing only within each
    /// node's answer, so not checked for order.
    pub fn ack_ns_unordered(&mut self, node: &str, name: &str, values: Vec<u64>) {
        for run in runs(values, |a, b| a < b) {
            self.ack_ns(node, name, run);
        }
    }

    /// Checks and records a batch of `values` of namespace `name` that `node` served: one
    /// increasing batch, every value at or above the start and on the step's grid.
    pub fn ack_ns(&mut self, node: &str, name: &str, values: Vec<u64>) {
        self.acks += 1;
        let Some(rule) = self.ns_rules.get(name).copied() else {
            self.violation(format!(
                "{node}: values of a namespace never created: {name}"
            ));
            return;
        };
        if let Some(w) = values.windows(2).find(|w| w[0] >= w[1]) {
            self.violation(format!(
                "{node}: a batch of {name} is not increasing: {} then {}",
                w[0], w[1]
            ));
        }
        let step = rule.step.max(1);
        if let Some(v) = values
            .iter()
            .find(|&&v| v < rule.start || v % step != rule.offset % step)
        {
            self.violation(format!(
                "{node}: value {v} of {name} is off its grid (start {}, step {step}, offset {})",
                rule.start, rule.offset
            ));
        }
        if !values.is_empty() {
            let server = (self.number(node), crate::trace::now_ms());
            if !self.ns_values.contains_key(name) {
                self.ns_values.insert(name.to_string(), Runs::new(step));
                self.ns_servers.insert(name.to_string(), Vec::new());
            }
            self.ns_servers
                .get_mut(name)
                .expect("inserted")
                .push(server);
            self.ns_values
                .get_mut(name)
                .expect("inserted")
                .push(&values, |_| 0);
        }
    }

    /// The number of node or client `name`, given on first sight.
    fn number(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    /// Records a violation.
    pub fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(what);
        }
    }

    /// Checks and records a batch node `node` (process `incarnation`) acknowledged at `at_ms`,
    /// given the store's host records read at that moment. `holder` is the name the process's
    /// keeper leases under, `None` for a process resumed from a pause: a running process
    /// fences itself before the coordinators can hand its host id to another holder, so the
    /// store must still name it as the holder of every host id it issues for. A paused one
    /// cannot, and is covered by the durable bound alone.
    pub fn ack(
        &mut self,
        node: &str,
        incarnation: u64,
        ids: Vec<u64>,
        at_ms: u64,
        holder: Option<&str>,
        now: StoreNow<'_>,
    ) {
        let store = now.hosts;
        self.acks += 1;
        self.observe_leases(store, at_ms);
        if at_ms >= self.heal_ms && !self.recovered_at.contains_key(node) {
            self.recovered_at.insert(node.to_string(), at_ms);
        }
        if self.decoder.layout.is_temporal()
            || !self.ack_usual(node, incarnation, &ids, at_ms, holder, store)
        {
            self.ack_in_detail(node, incarnation, &ids, at_ms, holder, now);
        }
        let mask = self.decoder.node_mask;
        self.ids.push(&ids, |id| id & mask);
    }

    /// The usual batch, checked in one pass: one host id in the pool, strictly increasing
    /// (so the last id carries the latest millisecond), the store naming this process, its
    /// lease not run out, and a bound at or above that millisecond, and above the process's
    /// previous id of the host id. Returns false, having recorded nothing, when any of it does not hold: then
    /// [`Checker::ack_in_detail`] finds and describes what is wrong.
    fn ack_usual(
        &mut self,
        node: &str,
        incarnation: u64,
        ids: &[u64],
        at_ms: u64,
        holder: Option<&str>,
        store: &HostsResponse,
    ) -> bool {
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return true;
        };
        let mask = self.decoder.node_mask;
        let bits = first & mask;
        if ids.windows(2).any(|w| w[0] >= w[1] || w[1] & mask != bits) {
            return false;
        }
        let Some((host, ms)) = self.decoder.decode(last) else {
            return false;
        };
        let Some(record) = store.hosts.iter().find(|h| h.host_id == host) else {
            return false;
        };
        if ms > record.reserved_until_ms || holder.is_some_and(|name| record.holder != name) {
            return false;
        }
        if holder.is_some() && self.lease_ran_out_ms(record).is_some_and(|end| at_ms > end) {
            return false;
        }
        let key = (self.number(node), incarnation, host);
        if self.last.get(&key).is_some_and(|&prev| prev >= first) {
            return false;
        }
        self.last.insert(key, last);
        true
    }

    /// [`Checker::ack`] one id at a time, describing every violation.
    fn ack_in_detail(
        &mut self,
        node: &str,
        incarnation: u64,
        ids: &[u64],
        at_ms: u64,
        holder: Option<&str>,
        now: StoreNow<'_>,
    ) {
        let StoreNow {
            hosts: store,
            grants,
        } = now;
        let decoder = &self.decoder;
        let temporal = decoder.layout.is_temporal();
        let mut found = Vec::new();
        let mut first_last: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
        // A response comes from one generator: one host id, increasing.
        let hosts_in_batch: std::collections::BTreeSet<u32> = ids
            .iter()
            .filter_map(|&id| decoder.decode(id))
            .map(|(h, _)| h)
            .collect();
        if hosts_in_batch.len() > 1 {
            found.push(format!(
                "{node}: one response mixes host ids {hosts_in_batch:?}"
            ));
        }
        if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
            found.push(format!(
                "{node}: one response is not increasing: {} then {}",
                w[0], w[1]
            ));
        }
        for &id in ids {
            let Some((host, ms)) = decoder.decode(id) else {
                found.push(format!(
                    "{node}: id {id} carries a node value outside the pool"
                ));
                continue;
            };
            let record = store.hosts.iter().find(|h| h.host_id == host);
            if let (Some(name), Some(r)) = (holder, record) {
                if r.holder != name && first_last.is_empty() {
                    found.push(format!(
                        "{node}: id {id} of host id {host} acknowledged while the store names {} (token {}) its holder, not this process ({name}): it did not fence itself",
                        r.holder, r.token
                    ));
                }
                match self.lease_ran_out_ms(r) {
                    Some(end) if at_ms > end && first_last.is_empty() => found.push(format!(
                        "{node}: id {id} of host id {host} acknowledged at {at_ms} ms, {} ms after its lease (token {}) ran out: no heartbeat for a TTL ({} ms) since {} ms; it did not stop when its lease may have expired",
                        at_ms - end,
                        r.token,
                        r.ttl_ms,
                        end - r.ttl_ms
                    )),
                    _ => {}
                }
            }
            if temporal {
                // Temporal ids: the counter lies in a block the store granted to the host
                // id for the id's shard before the id was served.
                let shard = decoder.layout.timestamp_field().get(id);
                let counter = decoder.layout.sequence_field().get(id);
                let granted = grants.is_some_and(|g| {
                    g.blocks
                        .iter()
                        .filter(|p| p.host_id == host && p.shard == shard)
                        .flat_map(|p| &p.blocks)
                        .any(|b| b.start <= counter && counter < b.end)
                });
                if !granted && found.len() < 3 {
                    found.push(format!(
                        "{node}: id {id} (host id {host}, shard {shard}, counter {counter}) outside every counter block the store granted"
                    ));
                }
                let span = first_last.entry(host).or_insert((id, id));
                span.1 = id;
                continue;
            }
            match record.map(|h| h.reserved_until_ms) {
                None => found.push(format!(
                    "{node}: id {id} of host id {host}, which the store never leased"
                )),
                Some(b) if ms > b => found.push(format!(
                    "{node}: id {id} (host id {host}, {ms} ms) acknowledged above the durable reservation {b} ms"
                )),
                Some(_) => {}
            }
            let span = first_last.entry(host).or_insert((id, id));
            span.1 = id;
        }
        // Across the process's responses, each host id's ids go on increasing (temporal
        // layouts: within one generator only, which the batch check covers; a new lease's
        // generator starts in its clock's shard, which may be below the last one's).
        let number = self.number(node);
        for (host, (first, last)) in first_last.into_iter().filter(|_| !temporal) {
            if let Some(prev) = self.last.insert((number, incarnation, host), last) {
                if prev >= first {
                    found.push(format!(
                        "{node} (process {incarnation}): id {first} of host id {host} after {prev}: not increasing"
                    ));
                }
            }
        }
        for v in found {
            self.violation(v);
        }
    }

    /// Counts one event of `kind` (a lie refused as promised, a captured request replayed).
    pub fn tally(&mut self, kind: &str) {
        *self.tallies.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts `n` events of `kind`.
    pub fn tally_n(&mut self, kind: &str, n: u64) {
        *self.tallies.entry(kind.to_string()).or_default() += n;
    }

    /// Counts a refused request (503 and friends): availability, not safety.
    pub fn refused(&mut self) {
        self.refusals += 1;
    }

    /// Runs the final checks: duplicates over every id, and liveness of `nodes` after the heal
    /// time within `bound_ms` (the simulation ran until `end_ms`). Returns the report.
    pub fn finish(mut self, nodes: &[String], bound_ms: u64, end_ms: u64) -> CheckReport {
        let heal_ms = self.heal_ms;
        let count = self.ids.count();
        let mask = self.decoder.node_mask;
        let (duplicates, examples) = self.ids.duplicates(|id| id & mask);
        if duplicates > 0 {
            let shown: Vec<String> = examples
                .iter()
                .take(5)
                .map(|(id, n)| format!("{id}×{n}"))
                .collect();
            self.violation(format!(
                "{duplicates} duplicate ids (e.g. {})",
                shown.join(", ")
            ));
        }
        let mut ns_values = 0;
        for (name, runs) in std::mem::take(&mut self.ns_values) {
            ns_values += runs.count();
            let (n, examples) = runs.duplicates(|_| 0);
            if n > 0 {
                let shown: Vec<String> = examples
                    .iter()
                    .take(5)
                    .map(|(v, n)| format!("{v}×{n}"))
                    .collect();
                let first = examples[0].0;
                let servers = &self.ns_servers[&name];
                let by: Vec<String> = runs
                    .batches_holding(first)
                    .map(|b| format!("{}@{}", self.names[servers[b].0], servers[b].1))
                    .collect();
                self.violation(format!(
                    "{n} duplicate values of namespace {name} (e.g. {}; {first} served by {})",
                    shown.join(", "),
                    by.join(" and ")
                ));
            }
        }
        let mut recovery_ms_max = 0;
        for n in nodes {
            match self.recovered_at.get(n) {
                Some(&t) => {
                    let took = t - heal_ms;
                    recovery_ms_max = recovery_ms_max.max(took);
                    if took > bound_ms {
                        self.violation(format!(
                            "{n} served again {took} ms after the faults healed (bound {bound_ms} ms)"
                        ));
                    }
                }
                None => self.violation(format!(
                    "{n} served nothing in the {} ms after the faults healed (bound {bound_ms} ms)",
                    end_ms.saturating_sub(heal_ms)
                )),
            }
        }
        CheckReport {
            ids: count,
            ns_values,
            acks: self.acks,
            refusals: self.refusals,
            recovery_ms_max,
            tallies: self.tallies,
            violation_count: self.violation_count,
            violations: self.violations,
        }
    }
}

/// Splits `ids` into maximal runs in which every two neighbours satisfy `together`.
fn runs(ids: Vec<u64>, together: impl Fn(u64, u64) -> bool) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some(run) if run.last().is_some_and(|&last| together(last, id)) => run.push(id),
            _ => out.push(vec![id]),
        }
    }
    out
}

/// Acknowledged values, kept as runs of values `stride` apart (consecutive ids of one
/// millisecond; a namespace block's values, a step apart): a tenth of the memory of every
/// value, which a seed would otherwise spend most of its time allocating and zeroing.
#[derive(Debug)]
struct Runs {
    stride: u64,
    runs: Vec<Run>,
    batches: u32,
}

/// `len` values from `start`, `stride` apart, of acknowledged batch number `batch`.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    len: u32,
    batch: u32,
}

impl Runs {
    fn new(stride: u64) -> Self {
        Self {
            stride: stride.max(1),
            runs: Vec::new(),
            batches: 0,
        }
    }

    fn last_of(&self, r: &Run) -> u64 {
        r.start + (u64::from(r.len) - 1) * self.stride
    }

    /// Records one batch, in its order: a run ends where the next value is not the stride
    /// above it or lies in another `part`.
    fn push(&mut self, values: &[u64], part: impl Fn(u64) -> u64) {
        if values.is_empty() {
            return;
        }
        let (stride, batch) = (self.stride, self.batches);
        self.batches += 1;
        let mut from = 0;
        for (at, pair) in values.windows(2).enumerate() {
            let cut = pair[0].checked_add(stride) != Some(pair[1])
                || part(pair[0]) != part(pair[1])
                || at + 1 - from == u32::MAX as usize;
            if cut {
                self.runs.push(Run {
                    start: values[from],
                    len: (at + 1 - from) as u32,
                    batch,
                });
                from = at + 1;
            }
        }
        self.runs.push(Run {
            start: values[from],
            len: (values.len() - from) as u32,
            batch,
        });
    }

    fn count(&self) -> u64 {
        self.runs.iter().map(|r| u64::from(r.len)).sum()
    }

    fn highest(&self) -> Option<u64> {
        self.runs.iter().map(|r| self.last_of(r)).max()
    }

    fn values(&self, r: &Run) -> impl Iterator<Item = u64> + use<> {
        let (start, stride) = (r.start, self.stride);
        (0..u64::from(r.len)).map(move |k| start + k * stride)
    }

    /// The batches (numbered in arrival order) that hold `v`.
    fn batches_holding(&self, v: u64) -> impl Iterator<Item = usize> + '_ {
        let mut seen = Vec::new();
        self.runs
            .iter()
            .filter(move |r| {
                v >= r.start && v <= self.last_of(r) && (v - r.start).is_multiple_of(self.stride)
            })
            .filter(move |r| {
                let new = !seen.contains(&r.batch);
                if new {
                    seen.push(r.batch);
                }
                new
            })
            .map(|r| r.batch as usize)
    }

    /// Counts the values that equal a value before them, with up to
    /// [`shardflake::check::DUPLICATES_SHOWN_MAX`] examples. Two equal values agree in every
    /// bit, so in their `part` too (an id's node bits: its host id), and runs of different
    /// parts, or whose ranges do not overlap, cannot share a value. A run holds no value
    /// twice, so in a correct run (one generator's ids increase; a host id's next holder
    /// starts above its predecessor's bound) the check sorts nothing: only the values of runs
    /// of one part whose ranges overlap are merged and sorted (the library's radix sort and
    /// count).
    fn duplicates(&self, part: impl Fn(u64) -> u64) -> (u64, Vec<(u64, u64)>) {
        let mut order: Vec<(u64, u64, u64, usize)> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (part(r.start), r.start, self.last_of(r), i))
            .collect();
        order.sort_unstable();
        let mut total = 0;
        let mut examples = Vec::new();
        let mut group: Vec<usize> = Vec::new();
        let mut flush = |group: &mut Vec<usize>| {
            if group.len() > 1 {
                let mut values: Vec<u64> = group
                    .iter()
                    .flat_map(|&i| self.values(&self.runs[i]))
                    .collect();
                shardflake::check::radix_sort(&mut values);
                let (n, shown) = shardflake::check::count_duplicates(&[&values]);
                total += n;
                examples.extend(shown);
            }
            group.clear();
        };
        let (mut group_part, mut group_hi) = (0, 0);
        for (p, lo, hi, i) in order {
            if !group.is_empty() && (p != group_part || lo > group_hi) {
                flush(&mut group);
            }
            if group.is_empty() {
                (group_part, group_hi) = (p, hi);
            }
            group_hi = group_hi.max(hi);
            group.push(i);
        }
        flush(&mut group);
        examples.truncate(shardflake::check::DUPLICATES_SHOWN_MAX);
        (total, examples)
    }
}

/// The outcome of one seed's checks.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Ids acknowledged.
    pub ids: u64,
    /// Namespace values acknowledged.
    pub ns_values: u64,
    /// Batches acknowledged.
    pub acks: u64,
    /// Requests refused.
    pub refusals: u64,
    /// The longest time a node took to serve again after the faults healed (ms).
    pub recovery_ms_max: u64,
    /// Events by kind: lies refused as promised (`lie_renew_refused`, …), captured requests
    /// replayed.
    pub tallies: std::collections::BTreeMap<String, u64>,
    /// Violations found.
    pub violation_count: u64,
    /// The first few, described.
    pub violations: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::Runs;

    fn runs(stride: u64, batches: &[Vec<u64>], part: impl Fn(u64) -> u64) -> Runs {
        let mut r = Runs::new(stride);
        for b in batches {
            r.push(b, &part);
        }
        r
    }

    #[test]
    fn duplicates_are_found_within_each_part_and_across_batches() {
        // The low byte as the part (a host id's node bits).
        let part = |id: u64| id & 0xff;
        let id = |t: u64, host: u64| (t << 8) | host;
        let dups = |batches: &[Vec<u64>]| runs(1, batches, part).duplicates(part);
        // Two hosts' batches interleave in value and share no id.
        let a: Vec<u64> = (1..100).map(|t| id(t, 1)).collect();
        let b: Vec<u64> = (1..100).map(|t| id(t, 2)).collect();
        assert_eq!(dups(&[a.clone(), b.clone()]).0, 0);
        // A batch of host 1 whose range overlaps another's, with one id repeated.
        let (n, shown) = dups(&[a.clone(), b, vec![id(50, 1), id(200, 1)]]);
        assert_eq!((n, shown[0].0), (1, id(50, 1)));
        // A batch mixing two hosts' ids, one of them repeating another batch's.
        assert_eq!(dups(&[a, vec![id(7, 2), id(7, 1)]]).0, 1);
        // A repeat within one batch.
        assert_eq!(runs(1, &[vec![5, 3, 5]], |_| 0).duplicates(|_| 0).0, 1);
    }

    #[test]
    fn runs_keep_every_value_in_a_few_ranges() {
        // Consecutive ids form one run; overlapping runs are found value by value.
        let r = runs(1, &[(10..20).collect(), (30..35).collect()], |_| 0);
        assert_eq!((r.runs.len(), r.count(), r.highest()), (2, 15, Some(34)));
        assert_eq!(r.duplicates(|_| 0).0, 0);
        let r = runs(1, &[(10..20).collect(), (15..25).collect()], |_| 0);
        assert_eq!(
            r.duplicates(|_| 0),
            (5, vec![(15, 2), (16, 2), (17, 2), (18, 2), (19, 2)])
        );
        // Values a step apart: a namespace's grid. Runs that overlap in range without
        // sharing a value are no duplicates; a value served twice is found with its batches.
        let r = runs(
            3,
            &[vec![7, 10, 13], vec![16, 19], vec![8, 11], vec![13, 16]],
            |_| 0,
        );
        assert_eq!(r.runs.len(), 4);
        assert_eq!(r.duplicates(|_| 0).0, 2);
        assert_eq!(r.batches_holding(13).collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(r.batches_holding(12).count(), 0);
    }
}
