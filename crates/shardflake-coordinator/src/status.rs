//! What the coordinator shows: the cluster's identity and limits, every host id's lease and
//! forecast, the standbys, and the grant logs for `shardflake audit`. Read-only views;
//! nothing here writes to the store.

use shardflake_proto::audit::{
    AuditReport, CounterBlock, HostGrants, NamespaceGrants, PairBlocks, TokenRange, ValueBlock,
};
use shardflake_proto::coord::{
    ClusterInfo, HostStatus, HostsResponse, LeaseState, Role, TemporalStatus,
};

use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::records;

impl Coordinator {
    /// What `GET /v1/cluster` answers: the store's identity, the layout and the limits.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            store_id: self.cluster.store_id.clone(),
            layout_spec: self.cluster.layout_spec.clone(),
            pool_size: self.config.pool_size,
            limits: self.config.limits(),
        }
    }

    /// Every host id ever leased, and the standbys heard from recently.
    pub async fn hosts(&self) -> Result<HostsResponse, CoordError> {
        let now = self.time.wall_ms();
        let now_mono = self.time.mono_ms();
        let hosts = records::load_hosts(self.store.as_ref())
            .await?
            .into_iter()
            .map(|(rec, _)| {
                let state = self.lease_state(&rec, now_mono);
                HostStatus {
                    host_id: rec.host_id,
                    token: rec.token,
                    holder: rec.holder.clone(),
                    role: Role::Primary,
                    state,
                    lease_age_ms: now.saturating_sub(rec.granted_at_ms),
                    ttl_ms: rec.ttl_ms,
                    reserved_until_ms: rec.reserved_until_ms,
                    last_heartbeat_ms: rec.renewed_at_ms,
                    last_heartbeat_age_ms: now.saturating_sub(rec.renewed_at_ms),
                    renewals: rec.renewals,
                    temporal: rec.temporal.as_ref().map(|t| TemporalStatus {
                        shard: t.shard,
                        used_in_shard: t.used,
                        host_predicted_next: t.host_predicted,
                        forecast_next: self.forecast_of(&rec, now),
                        history: t.history.clone(),
                    }),
                }
            })
            .collect();
        Ok(HostsResponse {
            store_id: self.cluster.store_id.clone(),
            layout_spec: self.cluster.layout_spec.clone(),
            pool_size: self.config.pool_size,
            hosts,
            standbys: self.standby_statuses(now_mono),
        })
    }

    /// Number of live leases, for metrics.
    pub async fn live_hosts(&self) -> Result<usize, CoordError> {
        let now_mono = self.time.mono_ms();
        Ok(records::load_hosts(self.store.as_ref())
            .await?
            .iter()
            .filter(|(r, _)| self.lease_state(r, now_mono) == LeaseState::Live)
            .count())
    }
}

impl Coordinator {
    /// What `GET /v1/audit` answers: every host id's tokens in the window (the grant log and
    /// the current token), the logged counter blocks of each host's last `audit_window`
    /// shards, and every namespace's logged blocks and next value. `shardflake audit` checks that none overlap
    /// (`shardflake_proto::audit::find_overlaps`).
    pub async fn audit_report(&self) -> Result<AuditReport, CoordError> {
        let store = self.store.as_ref();
        let mut logs: std::collections::HashMap<u32, records::HostLog> =
            records::load_host_logs(store).await?.into_iter().collect();
        let hosts = records::load_hosts(store)
            .await?
            .into_iter()
            .map(|(rec, _)| {
                let mut ranges: Vec<TokenRange> = logs
                    .remove(&rec.host_id)
                    .unwrap_or_default()
                    .ranges
                    .into_iter()
                    .map(token_range)
                    .collect();
                ranges.push(token_range(records::TokenRange::of(&rec)));
                HostGrants {
                    host_id: rec.host_id,
                    ranges,
                }
            })
            .collect();
        let window = self.config.audit_window;
        let blocks = last_shards_per_host(records::load_blocks(store).await?, window)
            .into_iter()
            .map(|((host_id, shard), b)| PairBlocks {
                host_id,
                shard,
                high_water: b.high_water,
                blocks: b
                    .recent
                    .iter()
                    .map(|l| CounterBlock {
                        start: l.start,
                        end: l.end,
                        token: l.token,
                        at_ms: l.at_ms,
                    })
                    .collect(),
            })
            .collect();
        let namespaces = records::load_namespaces(store)
            .await?
            .into_iter()
            .map(|(ns, _)| NamespaceGrants {
                blocks: ns
                    .recent
                    .iter()
                    .map(|l| ValueBlock {
                        start: l.start,
                        end: l.end,
                        host_id: l.host_id,
                        token: l.token,
                        at_ms: l.at_ms,
                    })
                    .collect(),
                name: ns.name,
                next: ns.next,
                step: ns.step,
            })
            .collect();
        Ok(AuditReport {
            store_id: self.cluster.store_id.clone(),
            layout_spec: self.cluster.layout_spec.clone(),
            window: self.config.audit_window as u32,
            hosts,
            blocks,
            namespaces,
        })
    }
}

/// The block records of each host's last `window` shards (`pairs` is in key order: by host,
/// then shard), so the report stays as long as the window however many shards have passed.
fn last_shards_per_host(
    pairs: Vec<((u32, u64), records::BlockRecord)>,
    window: usize,
) -> Vec<((u32, u64), records::BlockRecord)> {
    let mut out: Vec<((u32, u64), records::BlockRecord)> = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        let host = pair.0 .0;
        let later_of_same_host = pairs[i + 1..]
            .iter()
            .take(window)
            .take_while(|p| p.0 .0 == host)
            .count();
        if later_of_same_host < window {
            out.push(pair.clone());
        }
    }
    out
}

fn token_range(r: records::TokenRange) -> TokenRange {
    TokenRange {
        token: r.token,
        holder: r.holder,
        start_above_ms: r.start_above_ms,
        reserved_until_ms: r.reserved_until_ms,
        granted_at_ms: r.granted_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_keeps_each_hosts_last_shards() {
        let pair = |h, s| ((h, s), records::BlockRecord::default());
        let pairs = vec![
            pair(0, 1),
            pair(0, 2),
            pair(0, 3),
            pair(1, 7),
            pair(2, 1),
            pair(2, 9),
        ];
        let kept: Vec<(u32, u64)> = last_shards_per_host(pairs, 2)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, [(0, 2), (0, 3), (1, 7), (2, 1), (2, 9)]);
    }
}
