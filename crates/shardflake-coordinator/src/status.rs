//! What the coordinator shows: the cluster's identity and limits, every host id's lease and
//! forecast, and the standbys. Read-only views; nothing here writes to the store.

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
