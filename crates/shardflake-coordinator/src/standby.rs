//! Standbys: processes that wait for a host id whose holder stopped renewing, to take it
//! over. A standby long-polls ([`Coordinator::standby_wait`]); when a lease expires without
//! being released, its host id is offered to one standby at a time, which then acquires it
//! like any other node (strictly above the previous holder's reservation).

use std::collections::HashMap;
use std::sync::Mutex;

use shardflake_proto::coord::{LeaseState, Role, StandbyStatus};
use tokio::sync::Notify;

use crate::config::truncate_name;
use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::records;

/// Longest a standby's long poll waits.
pub const STANDBY_WAIT_MS_MAX: u64 = 60_000;
/// A standby's wait re-reads the leases at least this often (ms) when the store has no change
/// feed: a lease granted after the wait's last read is otherwise unknown to it.
const STANDBY_RECHECK_MS_MAX: u64 = 200;
/// The same when the store has a change feed (etcd), which wakes the wait on every write by
/// any coordinator: the re-read is only a safety net for a broken feed (ms).
const STANDBY_RECHECK_FEED_MS: u64 = 2_000;
/// After the change feed fires, the wait lets further writes gather this long before it
/// reads, so a burst of renewals costs one read per standby (ms).
const FEED_COALESCE_MS: u64 = 20;
/// A host id offered to one standby is not offered to another for this long (ms).
const OFFER_HOLD_MS: u64 = 5_000;
/// Standbys listed in the status at most (the long poll works for more).
const STANDBYS_MAX: usize = 1_024;
/// A standby not heard from for this long is dropped from the status (ms).
const STANDBY_FORGET_MS: u64 = 120_000;

/// What this process knows of standbys, kept in memory only: an offer is advice that spares
/// standbys a race, while `acquire` alone decides who gets a host id.
#[derive(Debug, Default)]
pub(crate) struct Standbys {
    /// Standby name → mono time it last polled.
    seen: Mutex<HashMap<String, u64>>,
    /// Host id → the standby it was offered to, and until when (mono ms).
    offers: Mutex<HashMap<u32, (String, u64)>>,
    /// Woken when a lease is released, so waiting standbys look at once.
    changed: Notify,
}

impl Coordinator {
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
        let mut feed = self.store.changes();
        if let Some(f) = feed.as_mut() {
            f.borrow_and_update();
        }
        loop {
            let now_mono = self.time.mono_ms();
            {
                let mut seen = self.standby.seen.lock().expect("poisoned");
                seen.retain(|_, at| now_mono.saturating_sub(*at) < STANDBY_FORGET_MS);
                if seen.len() < STANDBYS_MAX || seen.contains_key(&name) {
                    seen.insert(name.clone(), now_mono);
                }
            }
            let hosts = records::load_hosts(self.store.as_ref()).await?;
            let recheck_ms = if feed.is_some() {
                STANDBY_RECHECK_FEED_MS
            } else {
                STANDBY_RECHECK_MS_MAX
            };
            let mut next_check = now_mono + recheck_ms;
            for (rec, _) in &hosts {
                if rec.host_id >= self.config.pool_size {
                    continue;
                }
                match self.lease_state(rec, now_mono) {
                    LeaseState::Expired => {
                        let mut offers = self.standby.offers.lock().expect("poisoned");
                        let taken = offers
                            .get(&rec.host_id)
                            .is_some_and(|(who, until)| *who != name && *until > now_mono);
                        if !taken {
                            offers.insert(rec.host_id, (name.clone(), now_mono + OFFER_HOLD_MS));
                            self.metrics.standby_offers.inc();
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
            let feed_changed = async {
                match feed.as_mut() {
                    Some(f) => f.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            // Biased (a fixed order keeps a simulation's replay exact): whatever woke the poll,
            // it reads the records again.
            let woke_by_feed = tokio::select! {
                biased;
                _ = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => None,
                _ = self.standby.changed.notified() => None,
                ok = feed_changed => Some(ok),
            };
            match woke_by_feed {
                // The feed's store is gone: fall back to re-reading on the timer.
                Some(false) => feed = None,
                Some(true) => {
                    self.metrics.standby_feed_wakes.inc();
                    tokio::time::sleep(std::time::Duration::from_millis(FEED_COALESCE_MS)).await;
                    if let Some(f) = feed.as_mut() {
                        f.borrow_and_update();
                    }
                }
                None => {}
            }
        }
    }

    /// A host id was granted: its offer to a standby is void.
    pub(crate) fn withdraw_offer(&self, host_id: u32) {
        self.standby
            .offers
            .lock()
            .expect("poisoned")
            .remove(&host_id);
    }

    /// A lease was released: waiting standbys look again now rather than at their next
    /// re-check.
    pub(crate) fn wake_standbys(&self) {
        self.standby.changed.notify_waiters();
    }

    /// The standbys heard from recently, by name, as of mono time `now_mono`.
    pub(crate) fn standby_statuses(&self, now_mono: u64) -> Vec<StandbyStatus> {
        let mut seen = self.standby.seen.lock().expect("poisoned");
        seen.retain(|_, at| now_mono.saturating_sub(*at) < STANDBY_FORGET_MS);
        let mut standbys: Vec<StandbyStatus> = seen
            .iter()
            .map(|(name, at)| StandbyStatus {
                name: name.clone(),
                role: Role::Standby,
                last_seen_age_ms: now_mono.saturating_sub(*at),
            })
            .collect();
        standbys.sort_by(|a, b| a.name.cmp(&b.name));
        standbys
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shardflake::Layout;

    use crate::store::MemStore;
    use crate::testing::{acquire_req as req, manual_coordinator};
    use crate::CoordinatorConfig;

    use super::*;

    #[tokio::test]
    async fn standby_wait_returns_an_expired_host_once_and_times_out_otherwise() {
        let (c, time) = manual_coordinator(
            Arc::new(MemStore::new()),
            CoordinatorConfig::new(Layout::preset("default").unwrap()),
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
}
