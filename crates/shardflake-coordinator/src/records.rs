//! What the coordinator keeps in the store, and how it is encoded. This is the only module
//! that turns records into bytes and back, so a change of encoding happens in one place.
//!
//! # Keys
//!
//! * `meta/cluster`: the store's identity and layout ([`crate::ClusterRecord`]), written once.
//! * `meta/token`: the last fencing token granted (a decimal number). Every grant increments
//!   it in the same transaction as the lease, so tokens strictly increase across restarts.
//! * `host/{host_id:010}`: the lease and reservation of a host id ([`HostRecord`], JSON). It
//!   outlives the lease: the next holder starts above its `reserved_until_ms`.
//! * `beat/{host_id:010}`: the heartbeat of the host id's lease ([`Beat`]): what a renewal
//!   that raises no bound writes instead of the whole host record. Every coordinator reads
//!   the two together ([`load_host`]), so a lease's `(token, renewals)`, from which expiry is
//!   decided, still changes with every renewal that lands; every write under a lease compares
//!   the host record (the fencing) and a renewal or a takeover compares the heartbeat too, so
//!   a takeover and a renewal racing for one lease still exclude each other.
//! * `block/{host_id:010}/{shard:020}`: the counter blocks granted for a (host, shard) pair
//!   ([`BlockRecord`]): every new block starts at or above its `high_water`.
//! * `ns/{name}`: a namespace ([`NamespaceRecord`]): its parameters, the next value to
//!   grant (every block starts there and moves it up), and its serving nodes.
//! * `nsuse/{name}/{host_id:010}`: one node's use of a namespace ([`NsUseRecord`]): the
//!   forecaster of its rate and its last block (for idempotent retries and returns).
//! * `audit/host/{host_id:010}`: the grant log of a host id ([`HostLog`]): the ranges its
//!   earlier tokens reserved, appended by each grant, at most the audit window long.
//!
//! The grant logs that `shardflake audit` checks live in these records and are bounded by
//! the audit window (`--audit-window`): the last grants of each host id
//! ([`HostLog`]), of each (host, shard) pair ([`BlockRecord::recent`]) and of each namespace
//! ([`NamespaceRecord::recent`]). Each is written by the transaction that makes the grant,
//! so stored state grows with what is live, not with time, and no grant waits on a shared
//! log key.
//!
//! Numbers in keys are zero-padded so that a scan, which is in key order, lists host ids and
//! shards in numeric order.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shardflake_proto::coord::{ShardForecast, ShardUsage};

use crate::store::{KvStore, StoreError};
use shardflake::forecast::Holt;

/// The key of the store's identity.
pub(crate) const CLUSTER_KEY: &str = "meta/cluster";
/// The key of the last fencing token granted.
pub(crate) const TOKEN_KEY: &str = "meta/token";
/// The prefix of every host record's key.
const HOST_PREFIX: &str = "host/";
/// The prefix of every namespace record's key.
pub(crate) const NS_PREFIX: &str = "ns/";
/// The prefix of every host id's grant log.
const HOST_LOG_PREFIX: &str = "audit/host/";

/// The key of `host_id`'s [`HostLog`].
pub(crate) fn host_log_key(host_id: u32) -> String {
    format!("{HOST_LOG_PREFIX}{host_id:010}")
}

/// The key of namespace `name`'s [`NamespaceRecord`].
pub(crate) fn ns_key(name: &str) -> String {
    format!("{NS_PREFIX}{name}")
}

/// The prefix of every [`NsUseRecord`]'s key.
pub(crate) const NS_USE_PREFIX: &str = "nsuse/";

/// The prefix of the [`NsUseRecord`]s of namespace `name`.
pub(crate) fn ns_use_prefix(name: &str) -> String {
    format!("{NS_USE_PREFIX}{name}/")
}

/// The key of `host_id`'s [`NsUseRecord`] of namespace `name`.
pub(crate) fn ns_use_key(name: &str, host_id: u32) -> String {
    format!("{NS_USE_PREFIX}{name}/{host_id:010}")
}

/// The key of `host_id`'s [`HostRecord`].
pub(crate) fn host_key(host_id: u32) -> String {
    format!("host/{host_id:010}")
}

/// The prefix of every heartbeat's key.
const BEAT_PREFIX: &str = "beat/";

/// The key of `host_id`'s [`Beat`].
pub(crate) fn beat_key(host_id: u32) -> String {
    format!("{BEAT_PREFIX}{host_id:010}")
}

/// The heartbeat of a lease: its renewals since the grant, written by every renewal (about
/// 100 bytes, where the host record is several hundred). It counts only for the token it
/// names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Beat {
    /// The token it belongs to.
    pub token: u64,
    /// Renewals under that token.
    pub renewals: u64,
    /// Wall time of the last renewal, Unix ms.
    pub renewed_at_ms: u64,
    /// Wall-clock expiry, Unix ms (for status).
    pub expires_at_ms: u64,
    /// Temporal layouts: the last usage report of the current shard (a report of a later
    /// shard is written to the host record, which closes the shard into the forecaster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ShardUsage>,
}

impl Beat {
    /// The heartbeat of `rec` as it stands.
    pub fn of(rec: &HostRecord, usage: Option<ShardUsage>) -> Self {
        Self {
            token: rec.token,
            renewals: rec.renewals,
            renewed_at_ms: rec.renewed_at_ms,
            expires_at_ms: rec.expires_at_ms,
            usage,
        }
    }
}

/// `rec` with its heartbeat `beat` (if it is of the same token and newer) and the
/// heartbeat's version, which writes that race with a renewal compare.
fn merge(mut rec: HostRecord, beat: Option<(Beat, u64)>) -> HostRecord {
    if let Some((b, version)) = beat {
        rec.beat_version = version;
        if b.token == rec.token && b.renewals >= rec.renewals {
            rec.renewals = b.renewals;
            rec.renewed_at_ms = b.renewed_at_ms;
            rec.expires_at_ms = b.expires_at_ms;
            if let (Some(u), Some(t)) = (b.usage, rec.temporal.as_mut()) {
                if t.reported && u.shard == t.shard {
                    t.used = t.used.max(u.used_in_shard);
                    t.host_predicted = u.predicted_next;
                }
            }
        }
    }
    rec
}

/// The prefix of every block record's key.
const BLOCK_PREFIX: &str = "block/";

/// The key of the [`BlockRecord`] of `(host_id, shard)`.
pub(crate) fn block_key(host_id: u32, shard: u64) -> String {
    format!("{BLOCK_PREFIX}{host_id:010}/{shard:020}")
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
    /// Where clients reach the holder (its advertised URL), for the routing table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// SHA-256 (hex) of the current lease's secret; only the holder knows the secret.
    /// Empty in records written before secrets existed: such a lease must be acquired again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_hash: String,
    /// Temporal layouts: counter blocks are granted for shards from this one on. Raised when
    /// the block records of older shards are deleted, and by a repair.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub block_floor_shard: u64,
    /// The version of the host id's heartbeat key as read (0: none). Not stored: the
    /// compare of a write that races with renewals.
    #[serde(skip)]
    pub beat_version: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Pushes `item` onto `log`, dropping the oldest entries beyond `window` (at least 1).
fn push_bounded<T>(log: &mut Vec<T>, item: T, window: usize) {
    log.push(item);
    let window = window.max(1);
    if log.len() > window {
        log.drain(..log.len() - window);
    }
}

/// What one token of a host id reserved: it issued only timestamps in
/// `start_above_ms < t <= reserved_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRange {
    /// The token.
    pub token: u64,
    /// Its holder's name.
    pub holder: String,
    /// The bound it started above, Unix ms.
    pub start_above_ms: u64,
    /// The highest bound reserved under it, Unix ms.
    pub reserved_until_ms: u64,
    /// Wall time of the grant, Unix ms.
    pub granted_at_ms: u64,
}

impl TokenRange {
    /// The range of `rec`'s current token, as reserved so far.
    pub fn of(rec: &HostRecord) -> Self {
        Self {
            token: rec.token,
            holder: rec.holder.clone(),
            start_above_ms: rec.start_above_ms,
            reserved_until_ms: rec.reserved_until_ms,
            granted_at_ms: rec.granted_at_ms,
        }
    }
}

/// The grant log of one host id: the ranges of its earlier tokens, oldest first, at most
/// the audit window long. The current token's range is in its [`HostRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostLog {
    /// Earlier tokens' ranges.
    pub ranges: Vec<TokenRange>,
}

impl HostLog {
    /// Appends a finished token's range, keeping the last `window`.
    pub fn push(&mut self, range: TokenRange, window: usize) {
        push_bounded(&mut self.ranges, range, window);
    }
}

/// One temporal counter block in a (host, shard) pair's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedBlock {
    /// First counter value.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// The token it was granted to.
    pub token: u64,
    /// Wall time of the grant, Unix ms.
    pub at_ms: u64,
}

/// One namespace block in a namespace's log; `end` is cut back to the first returned value
/// when the block's tail is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedNsBlock {
    /// The first value.
    pub start: u64,
    /// One step past the last value still counted as granted.
    pub end: u64,
    /// The host id it was granted to.
    pub host_id: u32,
    /// Under which token.
    pub token: u64,
    /// Wall time of the grant, Unix ms.
    pub at_ms: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// The last blocks of the pair (the audit window), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<LoggedBlock>,
}

impl BlockRecord {
    /// Records a new block `start..end` and logs it, keeping the last `window` blocks.
    /// Blocks for a pair only move upwards: a block that starts below the high-water mark
    /// would hand out counter values twice, so it is a bug that stops the coordinator.
    pub fn grant(&mut self, start: u64, end: u64, token: u64, now_ms: u64, window: usize) {
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
        let logged = LoggedBlock {
            start,
            end,
            token,
            at_ms: now_ms,
        };
        push_bounded(&mut self.recent, logged, window);
    }
}

/// A namespace (segment mode): values `v >= start` with `v % step == offset`, granted in
/// blocks from `next` upwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// The name.
    pub name: String,
    /// The first value.
    pub start: u64,
    /// Distance between consecutive values.
    pub step: u64,
    /// Values are `offset` modulo `step`.
    pub offset: u64,
    /// Smallest block.
    pub block_min: u64,
    /// Largest block.
    pub block_max: u64,
    /// The first value of the next block: above every value ever granted (except values
    /// given back, which were never issued).
    pub next: u64,
    /// Blocks granted.
    pub blocks_granted: u64,
    /// Values given back.
    pub values_returned: u64,
    /// Host ids assigned to serve the namespace.
    pub serving: Vec<u32>,
    /// Wall time the serving set last changed, Unix ms.
    pub assigned_at_ms: u64,
    /// Wall time of creation, Unix ms.
    pub created_at_ms: u64,
    /// The last blocks granted (the audit window), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<LoggedNsBlock>,
}

impl NamespaceRecord {
    /// Logs a block granted to `host_id` under `token`, keeping the last `window`.
    pub fn log_grant(
        &mut self,
        block: NsBlock,
        host_id: u32,
        token: u64,
        now_ms: u64,
        window: usize,
    ) {
        let logged = LoggedNsBlock {
            start: block.start,
            end: block.end,
            host_id,
            token,
            at_ms: now_ms,
        };
        push_bounded(&mut self.recent, logged, window);
    }

    /// Cuts the logged block `start..end` of `host_id` back to `unused_from`: the values
    /// from there were given back and may be granted again.
    pub fn log_return(&mut self, host_id: u32, block: NsBlock, unused_from: u64) {
        if let Some(b) = self
            .recent
            .iter_mut()
            .rev()
            .find(|b| b.host_id == host_id && b.start == block.start && b.end == block.end)
        {
            b.end = unused_from;
        }
    }
}

/// One block of a namespace, by its values: `start, start + step, ..` below `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NsBlock {
    /// The first value.
    pub start: u64,
    /// One step past the last value.
    pub end: u64,
}

/// One node's use of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NsUseRecord {
    /// The forecaster of the node's consumption rate.
    pub forecast: shardflake::forecast::RateForecast,
    /// The token the last block was granted to.
    pub token: u64,
    /// The last block granted to the node, if it still holds it (cleared when returned).
    pub last: Option<NsBlock>,
    /// Values in the last block.
    pub last_count: u64,
    /// The last return taken, so that a replay of it is answered the same way and changes
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<NsReturned>,
    /// Wall time of the last report or grant, Unix ms.
    pub reported_at_ms: u64,
}

/// A return that was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsReturned {
    /// The token it was made under.
    pub token: u64,
    /// The returned block's end.
    pub block_end: u64,
    /// The first value given back.
    pub unused_from: u64,
    /// How many values came back.
    pub returned: u64,
}

/// A stored value that does not decode: the store is not what this coordinator wrote.
pub(crate) fn corrupt(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// The stored form of a record.
pub(crate) fn encode<T: Serialize>(rec: &T) -> Vec<u8> {
    serde_json::to_vec(rec).expect("a record always serializes to JSON")
}

/// The record stored under `key`, or `Corrupt` naming the key.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

/// The host record of `host_id` with its heartbeat, and the host record's version, if the
/// id was ever leased (one read of both keys).
pub(crate) async fn load_host(
    store: &dyn KvStore,
    host_id: u32,
) -> Result<Option<(HostRecord, u64)>, StoreError> {
    let (key, bkey) = (host_key(host_id), beat_key(host_id));
    let mut found = store
        .get_many(&[key.clone(), bkey.clone()])
        .await?
        .into_iter();
    let (rec, beat) = (found.next().flatten(), found.next().flatten());
    let Some(v) = rec else { return Ok(None) };
    let beat = match beat {
        Some(b) => Some((decode::<Beat>(&bkey, &b.value)?, b.version)),
        None => None,
    };
    Ok(Some((merge(decode(&key, &v.value)?, beat), v.version)))
}

/// Every host record with its heartbeat and its version, in host id order.
pub(crate) async fn load_hosts(store: &dyn KvStore) -> Result<Vec<(HostRecord, u64)>, StoreError> {
    let mut beats = std::collections::HashMap::new();
    for (key, v) in store.scan(BEAT_PREFIX).await? {
        let host = key[BEAT_PREFIX.len()..]
            .parse::<u32>()
            .map_err(|_| corrupt(&key, "no host id after the prefix"))?;
        beats.insert(host, (decode::<Beat>(&key, &v.value)?, v.version));
    }
    let mut out = Vec::new();
    for (key, v) in store.scan(HOST_PREFIX).await? {
        let rec: HostRecord = decode(&key, &v.value)?;
        let beat = beats.remove(&rec.host_id);
        out.push((merge(rec, beat), v.version));
    }
    Ok(out)
}

/// The block record of `(host_id, shard)` and its version; an empty record at version 0 if
/// no block was ever granted for the pair.
pub(crate) async fn load_block(
    store: &dyn KvStore,
    host_id: u32,
    shard: u64,
) -> Result<(BlockRecord, u64), StoreError> {
    let key = block_key(host_id, shard);
    match store.get(&key).await? {
        Some(v) => Ok((decode(&key, &v.value)?, v.version)),
        None => Ok((BlockRecord::default(), 0)),
    }
}

/// The namespace `name` and its version, if it exists.
pub(crate) async fn load_ns(
    store: &dyn KvStore,
    name: &str,
) -> Result<Option<(NamespaceRecord, u64)>, StoreError> {
    let key = ns_key(name);
    match store.get(&key).await? {
        Some(v) => Ok(Some((decode(&key, &v.value)?, v.version))),
        None => Ok(None),
    }
}

/// Every namespace with its version, by name.
pub(crate) async fn load_namespaces(
    store: &dyn KvStore,
) -> Result<Vec<(NamespaceRecord, u64)>, StoreError> {
    let mut out = Vec::new();
    for (key, v) in store.scan(NS_PREFIX).await? {
        out.push((decode(&key, &v.value)?, v.version));
    }
    Ok(out)
}

/// `host_id`'s use of namespace `name` and its version; an empty record at version 0 if the
/// node never had a block of it.
pub(crate) async fn load_ns_use(
    store: &dyn KvStore,
    name: &str,
    host_id: u32,
) -> Result<(NsUseRecord, u64), StoreError> {
    let key = ns_use_key(name, host_id);
    match store.get(&key).await? {
        Some(v) => Ok((decode(&key, &v.value)?, v.version)),
        None => Ok((NsUseRecord::default(), 0)),
    }
}

/// Every node's use of namespace `name`: `(host_id, record)`.
pub(crate) async fn load_ns_uses(
    store: &dyn KvStore,
    name: &str,
) -> Result<Vec<(u32, NsUseRecord)>, StoreError> {
    let mut out = Vec::new();
    for (key, v) in store.scan(&ns_use_prefix(name)).await? {
        let host = key
            .rsplit('/')
            .next()
            .and_then(|h| h.parse::<u32>().ok())
            .ok_or_else(|| corrupt(&key, "no host id at the end of the key"))?;
        out.push((host, decode(&key, &v.value)?));
    }
    Ok(out)
}

/// Every namespace use record: `(key, host_id, record, version)`, in key order.
pub(crate) async fn load_all_ns_uses(
    store: &dyn KvStore,
) -> Result<Vec<(String, u32, NsUseRecord, u64)>, StoreError> {
    let mut out = Vec::new();
    for (key, v) in store.scan(NS_USE_PREFIX).await? {
        let host = key
            .rsplit('/')
            .next()
            .and_then(|h| h.parse::<u32>().ok())
            .ok_or_else(|| corrupt(&key, "no host id at the end of the key"))?;
        let rec = decode(&key, &v.value)?;
        out.push((key, host, rec, v.version));
    }
    Ok(out)
}

/// `host_id`'s grant log and its version; an empty log at version 0 if the id was never
/// granted twice.
pub(crate) async fn load_host_log(
    store: &dyn KvStore,
    host_id: u32,
) -> Result<(HostLog, u64), StoreError> {
    let key = host_log_key(host_id);
    match store.get(&key).await? {
        Some(v) => Ok((decode(&key, &v.value)?, v.version)),
        None => Ok((HostLog::default(), 0)),
    }
}

/// Every host id's grant log: `(host_id, log)`, by host id.
pub(crate) async fn load_host_logs(store: &dyn KvStore) -> Result<Vec<(u32, HostLog)>, StoreError> {
    let mut out = Vec::new();
    for (key, v) in store.scan(HOST_LOG_PREFIX).await? {
        let host = key[HOST_LOG_PREFIX.len()..]
            .parse::<u32>()
            .map_err(|_| corrupt(&key, "no host id after the prefix"))?;
        out.push((host, decode(&key, &v.value)?));
    }
    Ok(out)
}

/// Every temporal block record: `((host_id, shard), record)`, in key order.
pub(crate) async fn load_blocks(
    store: &dyn KvStore,
) -> Result<Vec<((u32, u64), BlockRecord)>, StoreError> {
    let mut out = Vec::new();
    for (key, v) in store.scan(BLOCK_PREFIX).await? {
        let parsed = key[BLOCK_PREFIX.len()..]
            .split_once('/')
            .and_then(|(h, s)| Some((h.parse::<u32>().ok()?, s.parse::<u64>().ok()?)));
        let pair = parsed.ok_or_else(|| corrupt(&key, "not block/{host}/{shard}"))?;
        out.push((pair, decode(&key, &v.value)?));
    }
    Ok(out)
}

/// The last fencing token granted and its version; 0 at version 0 in a new store.
pub(crate) async fn load_token(store: &dyn KvStore) -> Result<(u64, u64), StoreError> {
    match store.get(TOKEN_KEY).await? {
        Some(v) => Ok((
            std::str::from_utf8(&v.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt(TOKEN_KEY, "not a decimal number"))?,
            v.version,
        )),
        None => Ok((0, 0)),
    }
}

/// The stored form of a fencing token: a decimal number, readable with any etcd client.
pub(crate) fn encode_token(token: u64) -> Vec<u8> {
    token.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_record_refuses_to_move_down() {
        let mut b = BlockRecord::default();
        b.grant(0, 10, 1, 0, 4);
        b.grant(10, 20, 1, 0, 4);
        let r = std::panic::catch_unwind(move || {
            let mut b = b;
            b.grant(15, 30, 2, 0, 4)
        });
        assert!(
            r.is_err(),
            "a block below the high-water mark must not be recorded"
        );
    }

    #[test]
    fn grant_logs_keep_the_last_window_entries() {
        let mut b = BlockRecord::default();
        for i in 0..10 {
            b.grant(i * 10, i * 10 + 10, 1, i, 3);
        }
        let starts: Vec<u64> = b.recent.iter().map(|l| l.start).collect();
        assert_eq!(starts, [70, 80, 90]);
        let mut log = HostLog::default();
        for t in 1..=5 {
            let mut rec = HostRecord {
                host_id: 0,
                token: t,
                holder: "n".into(),
                ttl_ms: 1,
                granted_at_ms: 0,
                renewed_at_ms: 0,
                expires_at_ms: 0,
                renewals: 0,
                released: false,
                reserved_until_ms: t * 100,
                start_above_ms: (t - 1) * 100,
                request_id: None,
                temporal: None,
                url: None,
                secret_hash: String::new(),
                block_floor_shard: 0,
                beat_version: 0,
            };
            rec.holder.push_str(&t.to_string());
            log.push(TokenRange::of(&rec), 2);
        }
        let tokens: Vec<u64> = log.ranges.iter().map(|r| r.token).collect();
        assert_eq!(tokens, [4, 5]);
    }
}
