//! The second checker: the store's history. Every committed write to a host record, a
//! temporal block record or a namespace record is judged against everything the store held
//! before it, by the same rules `shardflake audit` applies to the grant logs, but over the
//! whole run rather than the audit window:
//!
//! - a host record's bound rises only under its current token and secret (same token: same
//!   secret, same start, a bound that never falls); a new token is above every token granted
//!   before, carries a new secret, and starts at or above every bound any earlier token of
//!   the host id reserved;
//! - a counter block is granted under the host record's current token and starts at or above
//!   every counter value ever granted for its (host, shard) pair, also after the pair's record
//!   was collected;
//! - a namespace block is granted under its host id's current token and overlaps no value
//!   ever granted in the namespace (values given back excepted); a namespace's next value
//!   goes down only over values given back.
//!
//! The history sees the writes through [`HistoryStore`], the store every simulated process
//! (coordinators, and the operator's reader) writes through. A restore puts the history back
//! with the store ([`History::backup`], [`History::restore`]): what the restored store forgot,
//! the id checker judges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use shardflake_coordinator::store::{
    BoxFuture, KvStore, MemStore, Op, StoreError, StoreGauge, StoreHealth, StoreStats, Txn,
    TxnOutcome, Versioned,
};
use shardflake_coordinator::{BlockRecord, HostRecord, NamespaceRecord};

/// One namespace block as granted, with `end` cut back where its tail was given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Granted {
    end: u64,
    host_id: u32,
    token: u64,
}

/// What the history remembers: the records as the store holds them, and what any write
/// ever granted.
#[derive(Debug, Clone, Default)]
struct State {
    hosts: HashMap<u32, HostRecord>,
    blocks: HashMap<(u32, u64), BlockRecord>,
    namespaces: HashMap<String, NamespaceRecord>,
    /// The highest token any host record ever carried.
    token_max: u64,
    /// Per host id, the highest bound any of its tokens reserved.
    reserved_max: HashMap<u32, u64>,
    /// Per (host, shard), one past the highest counter value ever granted.
    pair_high: HashMap<(u32, u64), u64>,
    /// Per namespace, every block ever granted, by first value.
    ns_granted: HashMap<String, BTreeMap<u64, Granted>>,
}

/// The store's history and what it found.
#[derive(Debug, Default)]
pub struct History {
    state: State,
    backup: Option<State>,
    violations: Vec<String>,
    /// Writes judged, by kind (printed with the run's counts).
    pub(crate) checked: BTreeMap<&'static str, u64>,
}

/// The most violations kept (the count goes on).
const VIOLATIONS_KEPT_MAX: usize = 20;

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("history: {key} does not decode: {e}"))
}

/// The host id of a `host/NNNNNNNNNN` key.
fn host_of(key: &str) -> Option<u32> {
    key.strip_prefix("host/")?.parse().ok()
}

/// The (host, shard) of a `block/HHHHHHHHHH/SSSS…` key.
fn pair_of(key: &str) -> Option<(u32, u64)> {
    let (h, s) = key.strip_prefix("block/")?.split_once('/')?;
    Some((h.parse().ok()?, s.parse().ok()?))
}

impl History {
    /// Judges the writes of one committed transaction, in order.
    pub fn committed(&mut self, ops: &[Op]) {
        // Host records first: a grant writes its host record and its first block together,
        // and the block is judged against the record it was written with.
        let (hosts, rest): (Vec<&Op>, Vec<&Op>) = ops.iter().partition(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => key.starts_with("host/"),
        });
        for op in hosts.into_iter().chain(rest) {
            let result = match op {
                Op::Put { key, value } => self.put(key, value),
                Op::Delete { key } => {
                    self.delete(key);
                    Ok(())
                }
            };
            if let Err(v) = result {
                self.violation(v);
            }
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(what);
        }
        *self.checked.entry("violations").or_default() += 1;
    }

    fn count(&mut self, kind: &'static str) {
        *self.checked.entry(kind).or_default() += 1;
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        if let Some(host_id) = host_of(key) {
            self.count("host_writes");
            let rec: HostRecord = decode(key, value)?;
            let r = self.host(host_id, &rec);
            self.state.token_max = self.state.token_max.max(rec.token);
            let max = self.state.reserved_max.entry(host_id).or_default();
            *max = (*max).max(rec.reserved_until_ms);
            self.state.hosts.insert(host_id, rec);
            r
        } else if let Some(pair) = pair_of(key) {
            let rec: BlockRecord = decode(key, value)?;
            let r = self.block(pair, &rec);
            let high = self.state.pair_high.entry(pair).or_default();
            *high = (*high).max(rec.high_water);
            self.state.blocks.insert(pair, rec);
            r
        } else if let Some(name) = key.strip_prefix("ns/") {
            self.count("namespace_writes");
            let rec: NamespaceRecord = decode(key, value)?;
            let r = self.namespace(name, &rec);
            self.state.namespaces.insert(name.to_string(), rec);
            r
        } else {
            Ok(())
        }
    }

    fn delete(&mut self, key: &str) {
        // What a deleted record granted stays in the `*_max`, `pair_high` and `ns_granted`
        // memories: a later record under the same key is judged against it.
        if let Some(host_id) = host_of(key) {
            self.state.hosts.remove(&host_id);
        } else if let Some(pair) = pair_of(key) {
            self.state.blocks.remove(&pair);
        } else if let Some(name) = key.strip_prefix("ns/") {
            self.state.namespaces.remove(name);
            self.state.ns_granted.remove(name);
        }
    }

    fn host(&mut self, host_id: u32, rec: &HostRecord) -> Result<(), String> {
        let prev = self.state.hosts.get(&host_id).cloned();
        let prev = prev.as_ref();
        let new_token = prev.is_none_or(|p| p.token != rec.token);
        if new_token {
            self.count("host_grants");
            let reserved = self.state.reserved_max.get(&host_id).copied().unwrap_or(0);
            if rec.token <= self.state.token_max {
                return Err(format!(
                    "history: host id {host_id} granted token {} at or below token {} granted before",
                    rec.token, self.state.token_max
                ));
            }
            if rec.start_above_ms < reserved {
                return Err(format!(
                    "history: host id {host_id}'s token {} starts above {} ms, below the bound {} ms an earlier token reserved",
                    rec.token, rec.start_above_ms, reserved
                ));
            }
            // A retried acquire presents its secret again (the answer to the first was lost),
            // and may be granted a new token with it; another holder never knows it.
            if let Some(p) = prev.filter(|p| {
                !p.secret_hash.is_empty()
                    && p.secret_hash == rec.secret_hash
                    && p.holder != rec.holder
            }) {
                return Err(format!(
                    "history: host id {host_id}'s token {} (holder {}) carries the secret of token {} (holder {})",
                    rec.token, rec.holder, p.token, p.holder
                ));
            }
            return Ok(());
        }
        let prev = prev.expect("a record of the same token has a predecessor");
        if rec.secret_hash != prev.secret_hash {
            return Err(format!(
                "history: host id {host_id}'s token {} changed its secret",
                rec.token
            ));
        }
        if rec.start_above_ms != prev.start_above_ms {
            return Err(format!(
                "history: host id {host_id}'s token {} moved its start from {} to {} ms",
                rec.token, prev.start_above_ms, rec.start_above_ms
            ));
        }
        if rec.reserved_until_ms < prev.reserved_until_ms {
            return Err(format!(
                "history: host id {host_id}'s token {} lowered its bound from {} to {} ms",
                rec.token, prev.reserved_until_ms, rec.reserved_until_ms
            ));
        }
        if rec.reserved_until_ms > prev.reserved_until_ms {
            self.count("host_bounds_raised");
        }
        Ok(())
    }

    /// The token host id `host_id` holds in the store now (`None`: no record, or released).
    fn current_token(&self, host_id: u32) -> Option<u64> {
        self.state
            .hosts
            .get(&host_id)
            .filter(|h| !h.released)
            .map(|h| h.token)
    }

    fn block(&mut self, (host_id, shard): (u32, u64), rec: &BlockRecord) -> Result<(), String> {
        let grants_before = self
            .state
            .blocks
            .get(&(host_id, shard))
            .map_or(0, |b| b.grants);
        let high = self
            .state
            .pair_high
            .get(&(host_id, shard))
            .copied()
            .unwrap_or(0);
        if rec.high_water < high {
            return Err(format!(
                "history: the counter of host id {host_id} in shard {shard} went back from {high} to {}",
                rec.high_water
            ));
        }
        if rec.grants <= grants_before && rec.high_water == high {
            return Ok(());
        }
        self.count("counter_blocks");
        if rec.last_start < high || rec.last_end <= rec.last_start {
            return Err(format!(
                "history: counter block {}..{} of host id {host_id} in shard {shard} reaches below {high}, granted before",
                rec.last_start, rec.last_end
            ));
        }
        let current = self.current_token(host_id);
        if current != Some(rec.token) {
            return Err(format!(
                "history: counter block {}..{} of host id {host_id} in shard {shard} granted to token {} while the host record holds {}",
                rec.last_start,
                rec.last_end,
                rec.token,
                current.map_or("no live lease".into(), |t| format!("token {t}"))
            ));
        }
        Ok(())
    }

    fn namespace(&mut self, name: &str, rec: &NamespaceRecord) -> Result<(), String> {
        let prev = self.state.namespaces.get(name).cloned();
        let (prev_granted, prev_next) = prev
            .as_ref()
            .map_or((0, rec.next), |p| (p.blocks_granted, p.next));
        // Tails given back: a logged block of the same start, holder and token that ends
        // earlier than it did.
        if let Some(p) = &prev {
            for b in &rec.recent {
                let Some(old) = p
                    .recent
                    .iter()
                    .find(|o| o.start == b.start && o.host_id == b.host_id && o.token == b.token)
                else {
                    continue;
                };
                if b.end < old.end {
                    self.count("namespace_returns");
                    if let Some(g) = self
                        .state
                        .ns_granted
                        .get_mut(name)
                        .and_then(|m| m.get_mut(&b.start))
                    {
                        g.end = g.end.min(b.end);
                    }
                }
            }
        }
        // New blocks: the last `blocks_granted - before` of the log.
        let new = rec.blocks_granted.saturating_sub(prev_granted) as usize;
        let fresh: Vec<_> = rec.recent[rec.recent.len().saturating_sub(new)..].to_vec();
        for b in fresh {
            self.count("namespace_blocks");
            let current = self.current_token(b.host_id);
            if current != Some(b.token) {
                return Err(format!(
                    "history: block {}..{} of namespace {name} granted to host id {} under token {} while its host record holds {}",
                    b.start,
                    b.end,
                    b.host_id,
                    b.token,
                    current.map_or("no live lease".into(), |t| format!("token {t}"))
                ));
            }
            let granted = self.state.ns_granted.entry(name.to_string()).or_default();
            if let Some((start, g)) = overlapping(granted, b.start, b.end) {
                return Err(format!(
                    "history: block {}..{} of namespace {name} (host id {}, token {}) overlaps {start}..{} granted to host id {} under token {}",
                    b.start, b.end, b.host_id, b.token, g.end, g.host_id, g.token
                ));
            }
            granted.insert(
                b.start,
                Granted {
                    end: b.end,
                    host_id: b.host_id,
                    token: b.token,
                },
            );
        }
        if rec.next < prev_next {
            self.count("namespace_next_lowered");
            if let Some((start, g)) = self
                .state
                .ns_granted
                .get(name)
                .and_then(|m| overlapping(m, rec.next, prev_next))
            {
                return Err(format!(
                    "history: namespace {name}'s next value went back from {prev_next} to {} over {start}..{}, granted to host id {} under token {} and not given back",
                    rec.next, g.end, g.host_id, g.token
                ));
            }
        }
        Ok(())
    }

    /// Keeps the history as it stands, with the store's backup.
    pub fn backup(&mut self) {
        self.backup = Some(self.state.clone());
    }

    /// Puts the history back to the last backup, with the store.
    pub fn restore(&mut self) {
        if let Some(b) = &self.backup {
            self.state = b.clone();
        }
    }

    /// The violations found (the first 20) and how many there were.
    pub fn violations(&self) -> (&[String], u64) {
        (
            &self.violations,
            self.checked.get("violations").copied().unwrap_or(0),
        )
    }
}

/// A block of `granted` that holds a value in `start..end`, if any. The blocks are disjoint
/// and sorted, so only the last one starting below `start` can reach into the range.
fn overlapping(granted: &BTreeMap<u64, Granted>, start: u64, end: u64) -> Option<(u64, Granted)> {
    let before = granted
        .range(..start)
        .next_back()
        .filter(|(_, g)| g.end > start);
    let within = granted.range(start..end).find(|(&s, g)| g.end > s);
    before.or(within).map(|(&s, g)| (s, *g))
}

/// The simulation's store: the store a seed runs on, whose committed writes the [`History`]
/// judges and, where the checker cannot read that store at every moment, a mirror copies.
pub struct HistoryStore {
    inner: Arc<dyn KvStore>,
    history: Arc<Mutex<History>>,
    mirror: Option<Arc<MemStore>>,
}

impl HistoryStore {
    /// Writes through to `inner`, judged by `history`, and each committed write applied to
    /// `mirror` too.
    pub fn new(
        inner: Arc<dyn KvStore>,
        history: Arc<Mutex<History>>,
        mirror: Option<Arc<MemStore>>,
    ) -> Self {
        Self {
            inner,
            history,
            mirror,
        }
    }
}

impl KvStore for HistoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        self.inner.get(key)
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Versioned>>, StoreError>> {
        self.inner.get_many(keys)
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
        self.inner.scan(prefix)
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.inner.count(prefix)
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            let ops = txn.ops.clone();
            // Both stores commit without yielding (the memory store; redb run inline), so
            // no other write lands between the commit and its judgement.
            let outcome = self.inner.txn(txn).await?;
            if let TxnOutcome::Committed { .. } = outcome {
                self.history.lock().expect("history").committed(&ops);
                if let Some(mirror) = &self.mirror {
                    let copied = mirror
                        .txn(Txn {
                            compares: Vec::new(),
                            ops,
                        })
                        .await;
                    assert!(
                        matches!(copied, Ok(TxnOutcome::Committed { .. })),
                        "the mirror takes every committed write: {copied:?}"
                    );
                }
            }
            Ok(outcome)
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.revision()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn health(&self) -> BoxFuture<'_, StoreHealth> {
        self.inner.health()
    }

    fn gauges(&self) -> Vec<StoreGauge> {
        self.inner.gauges()
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardflake_coordinator::LoggedNsBlock;

    fn host(host_id: u32, token: u64, secret: &str, start: u64, until: u64) -> Op {
        let rec = HostRecord {
            host_id,
            token,
            holder: format!("n{host_id}"),
            ttl_ms: 1_000,
            granted_at_ms: 0,
            renewed_at_ms: 0,
            expires_at_ms: 0,
            renewals: 0,
            released: false,
            reserved_until_ms: until,
            start_above_ms: start,
            request_id: None,
            temporal: None,
            url: None,
            secret_hash: secret.into(),
            block_floor_shard: 0,
            beat_version: 0,
        };
        Op::Put {
            key: format!("host/{host_id:010}"),
            value: serde_json::to_vec(&rec).unwrap(),
        }
    }

    fn block(host_id: u32, shard: u64, grants: u64, start: u64, end: u64, token: u64) -> Op {
        let rec = BlockRecord {
            high_water: end,
            last_start: start,
            last_end: end,
            token,
            grants,
            ..BlockRecord::default()
        };
        Op::Put {
            key: format!("block/{host_id:010}/{shard:020}"),
            value: serde_json::to_vec(&rec).unwrap(),
        }
    }

    /// Namespace `ns` with `next` and its log `recent` of (start, end, host, token).
    fn ns(next: u64, granted: u64, recent: &[(u64, u64, u32, u64)]) -> Op {
        let rec = NamespaceRecord {
            name: "ns".into(),
            start: 0,
            step: 1,
            offset: 0,
            block_min: 10,
            block_max: 100,
            next,
            blocks_granted: granted,
            values_returned: 0,
            serving: vec![],
            assigned_at_ms: 0,
            created_at_ms: 0,
            recent: recent
                .iter()
                .map(|&(start, end, host_id, token)| LoggedNsBlock {
                    start,
                    end,
                    host_id,
                    token,
                    at_ms: 0,
                })
                .collect(),
        };
        Op::Put {
            key: "ns/ns".into(),
            value: serde_json::to_vec(&rec).unwrap(),
        }
    }

    fn judged(writes: &[Op]) -> Vec<String> {
        let mut h = History::default();
        for w in writes {
            h.committed(std::slice::from_ref(w));
        }
        h.violations().0.to_vec()
    }

    #[test]
    fn a_history_of_grants_extensions_blocks_and_returns_passes() {
        let found = judged(&[
            host(1, 1, "a", 0, 100),
            host(1, 1, "a", 0, 200),
            block(1, 7, 1, 0, 50, 1),
            block(1, 7, 2, 50, 80, 1),
            // A takeover: a new token and secret above the old bound.
            host(1, 2, "b", 200, 300),
            block(1, 7, 3, 80, 90, 2),
            // A retried acquire of the same holder: a new token, the same secret.
            host(1, 3, "b", 300, 400),
            ns(0, 0, &[]),
            ns(10, 1, &[(0, 10, 1, 3)]),
            // The tail 5..10 given back: next goes back over it, and it is granted again.
            ns(5, 1, &[(0, 5, 1, 3)]),
            ns(15, 2, &[(0, 5, 1, 3), (5, 15, 1, 3)]),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn the_history_finds_bounds_and_blocks_under_the_wrong_token_and_overlaps() {
        let base = [host(1, 5, "a", 0, 100), ns(0, 0, &[])];
        let case = |more: &[Op], expect: &str| {
            let mut writes = base.to_vec();
            writes.extend_from_slice(more);
            let found = judged(&writes);
            assert!(
                found.iter().any(|v| v.contains(expect)),
                "expected `{expect}` in {found:?}"
            );
        };
        case(&[host(1, 6, "b", 50, 150)], "below the bound 100 ms");
        case(&[host(1, 4, "b", 100, 150)], "at or below token 5");
        // The same holder's retried acquire may present its secret again; another may not.
        let mut other = host(1, 6, "a", 100, 150);
        if let Op::Put { value, .. } = &mut other {
            let mut rec: HostRecord = serde_json::from_slice(value).unwrap();
            rec.holder = "someone else".into();
            *value = serde_json::to_vec(&rec).unwrap();
        }
        case(&[other], "carries the secret of token 5");
        case(&[host(1, 5, "x", 0, 150)], "changed its secret");
        case(&[host(1, 5, "a", 0, 90)], "lowered its bound");
        case(
            &[block(1, 3, 1, 0, 10, 5), block(1, 3, 2, 5, 20, 5)],
            "reaches below 10",
        );
        case(
            &[block(1, 3, 1, 0, 10, 4)],
            "while the host record holds token 5",
        );
        case(
            &[
                ns(10, 1, &[(0, 10, 1, 5)]),
                ns(20, 2, &[(0, 10, 1, 5), (5, 20, 1, 5)]),
            ],
            "overlaps 0..10",
        );
        case(
            &[ns(10, 1, &[(0, 10, 1, 4)])],
            "while its host record holds token 5",
        );
        // Next lowered over values no one gave back: the return that reached into a block.
        case(
            &[ns(10, 1, &[(0, 10, 1, 5)]), ns(5, 1, &[(0, 10, 1, 5)])],
            "not given back",
        );
    }

    #[test]
    fn a_restore_puts_the_history_back_with_the_store() {
        let mut h = History::default();
        h.committed(&[host(1, 5, "a", 0, 100)]);
        h.backup();
        h.committed(&[host(1, 6, "b", 100, 300)]);
        h.restore();
        // After the repair, a grant above the restored bound (the store forgot token 6).
        h.committed(&[host(1, 9, "c", 120, 400)]);
        assert!(h.violations().0.is_empty(), "{:?}", h.violations());
    }
}
