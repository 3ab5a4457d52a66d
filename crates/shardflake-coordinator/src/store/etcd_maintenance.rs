//! What keeps an etcd store within its space: history compaction, by one coordinator at a
//! time, and a watch on the database's size and etcd's alarms.
//!
//! etcd keeps every revision of every key until it is compacted, and each renewal adds one
//! (a heartbeat of about 100 bytes, plus the revision's own overhead). Unless its operator
//! runs etcd with `--auto-compaction-*`, nothing else removes them, and the database grows
//! until etcd's space quota (`--quota-backend-bytes`, 2 GiB by default) raises the NOSPACE
//! alarm, after which etcd refuses every write of every tenant.
//!
//! Every [`EtcdOptions::compact_every`] each coordinator looks at the compactor key
//! (`meta/compactor`): the one that holds it (a lease of three intervals, taken over by
//! compare-and-swap when it lapses) compacts the history up to the revision it saw one
//! interval earlier, so one interval of history stays for watches that lag. A shared etcd
//! whose operator compacts it turns this off (`--etcd-compaction off`).
//!
//! Every [`STATUS_EVERY`] the store asks etcd for its database size (total and in use) and
//! its alarms: exported as metrics, logged once when the size passes
//! [`QUOTA_WARN_SHARE`] of the quota the operator gives (`--etcd-quota-bytes`; etcd 3.4 does
//! not report its own), and turned into readiness problems while NOSPACE is raised or etcd
//! does not answer. A coordinator does not start while NOSPACE is raised
//! ([`check_alarms`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, Client, Compare, CompareOp, TxnOp};
use serde::{Deserialize, Serialize};

use super::etcd::EtcdOptions;
use super::{StoreError, StoreHealth};

/// How often the database size and the alarms are read.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Share of the quota at which the size is logged as a warning.
pub const QUOTA_WARN_SHARE: f64 = 0.8;
/// The compactor key, under the store's prefix.
const COMPACTOR_KEY: &str = "meta/compactor";

/// What the store last learned of etcd's state.
#[derive(Debug, Clone, Default)]
pub(crate) struct EtcdState {
    /// Database size in bytes (as allocated on disk).
    pub db_size: u64,
    /// Of which in use (what compaction and defragmentation bring it down to).
    pub db_in_use: u64,
    /// A raised alarm, described.
    pub alarm: Option<String>,
    /// Why etcd did not answer the last status read.
    pub unreachable: Option<String>,
    /// Compactions this coordinator made.
    pub compactions: u64,
    /// The revision of the last compaction this coordinator made.
    pub compacted_to: u64,
}

impl EtcdState {
    /// The state as readiness sees it.
    pub(crate) fn health(&self) -> StoreHealth {
        if let Some(a) = &self.alarm {
            return StoreHealth::NotReady(a.clone());
        }
        if let Some(u) = &self.unreachable {
            return StoreHealth::NotReady(format!("etcd does not answer: {u}"));
        }
        StoreHealth::Ready
    }
}

/// The compactor lease.
#[derive(Debug, Serialize, Deserialize)]
struct Compactor {
    holder: String,
    until_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn nospace(alarms: &etcd_client::AlarmResponse) -> Option<String> {
    let members: Vec<String> = alarms
        .alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| format!("{:x}", a.member_id()))
        .collect();
    (!members.is_empty()).then(|| {
        format!(
            "etcd's space quota alarm (NOSPACE) is raised on member(s) {}: etcd refuses every write until it is compacted, defragmented and disarmed (docs/operations.md)",
            members.join(",")
        )
    })
}

/// Refuses to start on an etcd whose NOSPACE alarm is raised.
pub(crate) async fn check_alarms(client: &Client) -> Result<(), StoreError> {
    let alarms = client
        .maintenance_client()
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(|e| StoreError::Backend(format!("etcd alarm list: {e}")))?;
    match nospace(&alarms) {
        Some(why) => Err(StoreError::Backend(why)),
        None => Ok(()),
    }
}

/// Reads the size and the alarms every [`STATUS_EVERY`], and compacts when this coordinator
/// holds the compactor key.
pub(crate) async fn maintain(client: Client, options: EtcdOptions, state: Arc<Mutex<EtcdState>>) {
    let me = shardflake::uuid7::next().to_string();
    let mut warned_size = false;
    let mut previous_revision: Option<u64> = None;
    let mut last_compaction = tokio::time::Instant::now();
    let mut compact_failing = false;
    loop {
        status(&client, &options, &state, &mut warned_size).await;
        let due = last_compaction.elapsed() >= options.compact_every;
        if options.compaction && due {
            last_compaction = tokio::time::Instant::now();
            match compact_if_holder(&client, &options, &me, &mut previous_revision).await {
                Ok(Some(rev)) => {
                    let mut s = state.lock().expect("poisoned");
                    s.compactions += 1;
                    s.compacted_to = rev;
                    if std::mem::take(&mut compact_failing) {
                        tracing::info!("etcd compaction works again");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !std::mem::replace(&mut compact_failing, true) {
                        tracing::warn!(error = %e, "etcd compaction failed; trying again next interval");
                    }
                }
            }
        }
        tokio::time::sleep(STATUS_EVERY.min(options.compact_every)).await;
    }
}

/// One status read: sizes, alarms, the quota warning.
async fn status(
    client: &Client,
    options: &EtcdOptions,
    state: &Mutex<EtcdState>,
    warned_size: &mut bool,
) {
    let mut m = client.maintenance_client();
    let read = async {
        let st = m.status().await?;
        let alarms = m.alarm(AlarmAction::Get, AlarmType::None, None).await?;
        Ok::<_, etcd_client::Error>((st, alarms))
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok((st, alarms))) => {
            let alarm = nospace(&alarms);
            let mut s = state.lock().expect("poisoned");
            if s.alarm.is_none() {
                if let Some(a) = &alarm {
                    tracing::error!("{a}");
                }
            } else if alarm.is_none() {
                tracing::info!("etcd's NOSPACE alarm is cleared");
            }
            if s.unreachable.take().is_some() {
                tracing::info!("etcd answers its status again");
            }
            s.db_size = st.db_size().max(0) as u64;
            s.db_in_use = st.raft_used_db_size().max(0) as u64;
            s.alarm = alarm;
            let share = s.db_size as f64 / options.quota_bytes.max(1) as f64;
            if share >= QUOTA_WARN_SHARE && !*warned_size {
                *warned_size = true;
                tracing::warn!(db_size = s.db_size, db_in_use = s.db_in_use, quota = options.quota_bytes,
                    "etcd's database is above {:.0}% of its quota: compact and defragment it (docs/operations.md) before etcd raises NOSPACE", QUOTA_WARN_SHARE * 100.0);
            } else if share < QUOTA_WARN_SHARE && *warned_size {
                *warned_size = false;
                tracing::info!(
                    db_size = s.db_size,
                    "etcd's database is back below the warning share of its quota"
                );
            }
        }
        Ok(Err(e)) => unreachable_now(state, e.to_string()),
        Err(_) => unreachable_now(state, "no status answer within 5 s".into()),
    }
}

fn unreachable_now(state: &Mutex<EtcdState>, why: String) {
    let mut s = state.lock().expect("poisoned");
    if s.unreachable.is_none() {
        tracing::warn!(error = %why, "etcd does not answer its status");
    }
    s.unreachable = Some(why);
}

/// Takes or keeps the compactor key; when held, compacts to the revision seen one interval
/// ago. Returns the revision compacted to, if it compacted.
async fn compact_if_holder(
    client: &Client,
    options: &EtcdOptions,
    me: &str,
    previous_revision: &mut Option<u64>,
) -> Result<Option<u64>, etcd_client::Error> {
    let key = format!("{}{COMPACTOR_KEY}", options.prefix);
    let mut kv = client.kv_client();
    let resp = kv.get(key.as_bytes(), None).await?;
    let now = now_ms();
    let revision = resp.header().map_or(0, |h| h.revision().max(0) as u64);
    let (held_by_other, mod_revision) = match resp.kvs().first() {
        Some(kv) => {
            let c: Option<Compactor> = serde_json::from_slice(kv.value()).ok();
            let other = c.is_some_and(|c| c.holder != me && c.until_ms > now);
            (other, kv.mod_revision())
        }
        None => (false, 0),
    };
    if held_by_other {
        *previous_revision = None;
        return Ok(None);
    }
    let lease = Compactor {
        holder: me.to_string(),
        until_ms: now + 3 * options.compact_every.as_millis() as u64,
    };
    let take = etcd_client::Txn::new()
        .when([Compare::mod_revision(
            key.as_bytes(),
            CompareOp::Equal,
            mod_revision,
        )])
        .and_then([TxnOp::put(
            key.as_bytes(),
            serde_json::to_vec(&lease).expect("serializes"),
            None,
        )]);
    if !kv.txn(take).await?.succeeded() {
        // Another coordinator took it first.
        *previous_revision = None;
        return Ok(None);
    }
    // Compact to what was current one interval ago: the last interval's history stays.
    let target = previous_revision.replace(revision);
    let Some(target) = target.filter(|&t| t > 0) else {
        return Ok(None);
    };
    match kv.compact(target as i64, None).await {
        Ok(_) => {
            tracing::debug!(revision = target, "etcd history compacted");
            Ok(Some(target))
        }
        // etcd's own periodic compaction (or another tool) got there first.
        Err(e) if e.to_string().contains("compacted") => Ok(None),
        Err(e) => Err(e),
    }
}
