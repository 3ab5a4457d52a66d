//! The simulation's checker. On every acknowledged batch it checks, against the store as it
//! is at that moment, that no id was issued above its host id's durable reservation; that the
//! batch comes from one generator (one host id, increasing); per node process that each host
//! id's ids strictly increase; at the end every id goes
//! through the library's one checker ([`shardflake::check::check_ids`]) for duplicates, and
//! every node must have served again within the liveness bound after the faults healed.

use std::collections::HashMap;

use shardflake::Layout;
use shardflake_proto::coord::HostsResponse;

/// At most this many violations are kept with their details.
const VIOLATIONS_KEPT_MAX: usize = 20;

/// What the checker saw.
#[derive(Debug)]
pub struct Checker {
    decoder: IdDecoder,
    /// When every fault has healed (ms): liveness is measured from here.
    heal_ms: u64,
    ids: Vec<u64>,
    /// Last id per (node, process incarnation, host id).
    last: HashMap<(String, u64, u32), u64>,
    /// First acknowledgement per node at or after the heal time.
    recovered_at: HashMap<String, u64>,
    violations: Vec<String>,
    violation_count: u64,
    refusals: u64,
    acks: u64,
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
            ids: Vec::new(),
            last: HashMap::new(),
            recovered_at: HashMap::new(),
            violations: Vec::new(),
            violation_count: 0,
            refusals: 0,
            acks: 0,
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
        ids: &[u64],
        at_ms: u64,
        holder: Option<&str>,
        store: &HostsResponse,
    ) {
        self.acks += 1;
        let decoder = &self.decoder;
        let mut found = Vec::new();
        let mut first_last: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
        if at_ms >= self.heal_ms {
            self.recovered_at.entry(node.to_string()).or_insert(at_ms);
        }
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
        // Across the process's responses, each host id's ids go on increasing.
        for (host, (first, last)) in first_last {
            if let Some(prev) = self
                .last
                .insert((node.to_string(), incarnation, host), last)
            {
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
        self.ids.extend_from_slice(ids);
    }

    /// Counts a refused request (503 and friends): availability, not safety.
    pub fn refused(&mut self) {
        self.refusals += 1;
    }

    /// Runs the final checks: duplicates over every id, and liveness of `nodes` after the heal
    /// time within `bound_ms` (the simulation ran until `end_ms`). Returns the report.
    pub fn finish(mut self, nodes: &[String], bound_ms: u64, end_ms: u64) -> CheckReport {
        let heal_ms = self.heal_ms;
        let report = shardflake::check::check_ids(&self.ids);
        if report.duplicates > 0 {
            let shown: Vec<String> = report
                .examples
                .iter()
                .take(5)
                .map(|(id, n)| format!("{id}×{n}"))
                .collect();
            self.violation(format!(
                "{} duplicate ids (e.g. {})",
                report.duplicates,
                shown.join(", ")
            ));
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
            ids: self.ids.len() as u64,
            acks: self.acks,
            refusals: self.refusals,
            recovery_ms_max,
            violation_count: self.violation_count,
            violations: self.violations,
        }
    }
}

/// The outcome of one seed's checks.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Ids acknowledged.
    pub ids: u64,
    /// Batches acknowledged.
    pub acks: u64,
    /// Requests refused.
    pub refusals: u64,
    /// The longest time a node took to serve again after the faults healed (ms).
    pub recovery_ms_max: u64,
    /// Violations found.
    pub violation_count: u64,
    /// The first few, described.
    pub violations: Vec<String>,
}
