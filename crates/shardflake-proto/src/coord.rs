//! The coordinator's HTTP API: request and response bodies, and its stable error codes.
//!
//! Every endpoint except `GET /healthz` and `GET /openapi.json` requires `Authorization:
//! Bearer <token>` with a credential whose scope allows it ([`crate::auth::Scope`]: every
//! credential reads, the node credential leases and takes blocks, the admin credential
//! changes namespaces), and every call under a lease carries the lease's secret
//! ([`LeaseSecret`]), which only the holder drew. All bodies are JSON.
//!
//! | method and path | request | response |
//! |---|---|---|
//! | `POST /v1/leases` | [`AcquireRequest`] | [`LeaseGrant`] |
//! | `POST /v1/leases/{host_id}/renew` | [`RenewRequest`] | [`RenewResponse`] |
//! | `POST /v1/leases/{host_id}/reservation` | [`ReservationRequest`] | [`ReservationResponse`] |
//! | `POST /v1/leases/{host_id}/release` | [`ReleaseRequest`] | `204` |
//! | `POST /v1/blocks` | [`BlockRequest`] | [`BlockGrant`] |
//! | `POST /v1/standby/wait` | [`StandbyWaitRequest`] | [`StandbyWaitResponse`] |
//! | `GET /v1/hosts` | | [`HostsResponse`] |
//! | `GET /v1/cluster` | | [`ClusterInfo`] |
//! | `GET /v1/audit` | | [`crate::audit::AuditReport`] |
//! | `GET /healthz` | | `200 ok` |
//! | `GET /metrics` | | Prometheus text |
//!
//! Every response, errors included, carries the store's identity in the [`STORE_ID_HEADER`]
//! header. A store gets its id once, when it is created; coordinators sharing one store (the
//! normal high-availability setup) answer with the same id. Clients pin the id they see first
//! and never fail over to a coordinator that answers with another: two stores hand out the
//! same host ids, so mixing them repeats ids.
//!
//! Errors have the same shape and the same registry as every shardflake error:
//! `{"error": {"code": "...", "message": "..."}}` ([`crate::ErrorBody`]) with a code from
//! [`crate::ErrorCode`] (`stale_token`, `lease_expired`, `host_busy`, `pool_exhausted`,
//! `shard_too_far_ahead`, `counter_space_exhausted`, `not_temporal`, `unauthorized`,
//! `store_unavailable`, ...).
//!
//! ```
//! use shardflake_proto::{ErrorBody, ErrorCode};
//! let body: ErrorBody = serde_json::from_str(
//!     r#"{"error":{"code":"stale_token","message":"token 3 is not current"}}"#).unwrap();
//! assert_eq!(body.error.code, ErrorCode::StaleToken);
//! assert_eq!(body.error.code.http_status(), 409);
//! ```

use serde::{Deserialize, Serialize};

pub use crate::secret::LeaseSecret;

/// Shortest lease TTL anywhere in shardflake: nodes ask for at least this, coordinators grant
/// at least this (a coordinator may narrow the range; it states its own in every grant).
pub const LEASE_TTL_MS_MIN: u64 = 100;
/// Longest lease TTL anywhere in shardflake.
pub const LEASE_TTL_MS_MAX: u64 = 600_000;
/// The lease TTL nodes ask for and coordinators grant when none is named.
pub const LEASE_TTL_MS_DEFAULT: u64 = 10_000;

/// The response header that carries the coordinator store's identity.
pub const STORE_ID_HEADER: &str = "shardflake-store-id";

/// `POST /v1/repair`: raises a store that went back (restored from a backup) above
/// everything it may have granted since the backup, and lets it grant again. The operator
/// supplies the floors; the repair refuses to run without a time floor and a floor for every
/// namespace, and never lowers anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// The time of the restore or later (Unix ms): every host id's reserved bound is raised
    /// to it plus the reservation look-ahead, and (temporal layouts) every shard up to then
    /// is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_at_least_ms: Option<u64>,
    /// Per namespace: every value granted from now on lies at or above this (the highest
    /// value of it the application holds, plus one).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespaces_at_least: std::collections::BTreeMap<String, u64>,
    /// The floor of every namespace not named in `namespaces_at_least`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_namespaces_at_least: Option<u64>,
}

/// What a repair did to one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NsFloorReport {
    /// The namespace.
    pub name: String,
    /// Its `next` before.
    pub before: u64,
    /// Its `next` after (never below `before`).
    pub after: u64,
    /// The highest block end nodes presented while the store was refused (0: none).
    pub presented: u64,
}

/// The answer to a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairReport {
    /// The store's generation before.
    pub generation_before: u64,
    /// After: above every generation any caller has seen.
    pub generation_after: u64,
    /// Every namespace.
    pub namespaces: Vec<NsFloorReport>,
    /// Host records whose bounds were raised.
    pub hosts_raised: usize,
    /// The fencing token before.
    pub token_before: u64,
    /// After.
    pub token_after: u64,
}

/// What a host does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds a host id and issues ids.
    #[default]
    Primary,
    /// Waits to take over the host id of a failed primary.
    Standby,
}

/// `POST /v1/leases`: asks for a lease on a host id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireRequest {
    /// A name for the holder (host name, address), shown in `/v1/hosts`.
    pub name: String,
    /// The lease's secret, drawn by the holder for this acquisition (a retry with the same
    /// `request_id` sends the same one). Every later call under the lease must present it;
    /// the coordinator stores only its hash.
    pub secret: LeaseSecret,
    /// The lease's time to live; the coordinator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(schema_with = crate::openapi::lease_ttl_ms_schema)
    )]
    pub ttl_ms: Option<u64>,
    /// Exactly this host id, or fail with `host_busy` (a standby taking over a failed host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<u32>,
    /// This host id if it is free, else any free one (a node re-acquiring after a loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_host_id: Option<u32>,
    /// Reserve this far ahead of the coordinator's clock in the same commit (ms; at most
    /// [`CoordinatorLimits::reservation_ahead_ms_max`], larger values are clamped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_ahead_ms: Option<u64>,
    /// Makes the request idempotent: a retry with the same id (after a lost answer) gets the
    /// same grant, renewed, instead of a second host id. At most
    /// [`REQUEST_ID_BYTES_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(schema_with = crate::openapi::request_id_schema)
    )]
    pub request_id: Option<String>,
    /// Where clients reach the node (`--advertise-url`): published in the routing table
    /// (`GET /v1/routing`) while the lease is live. At most [`URL_BYTES_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The longest [`AcquireRequest::request_id`], in bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Longest advertised node URL accepted, in bytes.
pub const URL_BYTES_MAX: usize = 512;

/// Largest request body a coordinator accepts, in bytes: 16 KiB for any request, plus a
/// renewal's usage reports and held blocks of every namespace a node may serve
/// ([`crate::ns::USAGE_REPORTS_MAX`] reports of at most
/// [`crate::ns::USAGE_REPORT_JSON_BYTES_MAX`] bytes, [`crate::ns::NS_PER_NODE_MAX`] held
/// blocks of at most [`crate::ns::NS_HELD_JSON_BYTES_MAX`]).
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024
    + crate::ns::USAGE_REPORTS_MAX * crate::ns::USAGE_REPORT_JSON_BYTES_MAX
    + crate::ns::NS_PER_NODE_MAX * crate::ns::NS_HELD_JSON_BYTES_MAX;

/// The limits a coordinator enforces, stated so that nodes size their requests from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoordinatorLimits {
    /// Shortest lease TTL granted, ms.
    pub ttl_ms_min: u64,
    /// Longest lease TTL granted, ms.
    pub ttl_ms_max: u64,
    /// TTL of a request that names none, ms.
    pub ttl_ms_default: u64,
    /// How far ahead of the coordinator's wall clock a reservation may reach, ms; bounds
    /// asked beyond it are clamped to it.
    pub reservation_ahead_ms_max: u64,
}

/// `GET /v1/cluster`: who this coordinator is and what it enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInfo {
    /// The store's identity (also in the [`STORE_ID_HEADER`] header of every response).
    pub store_id: String,
    /// The layout's fingerprint (`shardflake::Layout::spec`): the cluster's layout.
    pub layout_spec: String,
    /// Number of host ids in the pool.
    pub pool_size: u32,
    /// The limits.
    pub limits: CoordinatorLimits,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseGrant {
    /// The host id, `0..pool_size`.
    pub host_id: u32,
    /// The fencing token: larger than every token granted before, across restarts.
    pub token: u64,
    /// The lease's time to live, measured by the holder from the time it sent the request.
    pub ttl_ms: u64,
    /// The previous holders' reserved bound (Unix ms): issue only timestamps above it.
    pub start_above_ms: u64,
    /// The bound reserved for this holder (Unix ms, inclusive; may equal `start_above_ms`).
    pub reserved_until_ms: u64,
    /// The fingerprint of the layout the host id belongs to (`shardflake::Layout::spec`): a
    /// holder whose generator has another layout must not issue under this grant.
    pub layout_spec: String,
    /// The identity of the store the grant is persisted in.
    pub store_id: String,
    /// Number of host ids in the pool.
    pub pool_size: u32,
    /// The coordinator's limits.
    pub limits: CoordinatorLimits,
}

/// A host's counter usage in temporal mode, reported with each renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardUsage {
    /// The shard the host is issuing in.
    pub shard: u64,
    /// Counter values issued in that shard so far.
    pub used_in_shard: u64,
    /// The host's own forecast of its use in the next shard, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_next: Option<u64>,
}

/// `POST /v1/leases/{host_id}/renew`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewRequest {
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: LeaseSecret,
    /// Also extend the reservation to this bound (Unix ms), in the same commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_until_ms: Option<u64>,
    /// Temporal mode: counter usage in the current shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ShardUsage>,
    /// Namespace consumption since the previous report, at most
    /// [`crate::ns::USAGE_REPORTS_MAX`] entries (the coordinator forecasts from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<crate::ns::NsUsage>,
    /// The newest block the node holds of every namespace it serves, at most
    /// [`crate::ns::NS_PER_NODE_MAX`]: sent only on a renewal that follows a failed one. A
    /// coordinator whose store went back to an earlier generation (restored from a backup)
    /// keeps each as a floor for the repair, so that the repaired store never grants a
    /// block a node still serves from; otherwise they are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ns_held: Vec<crate::ns::NsHeld>,
}

/// The answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewResponse {
    /// The lease's time to live from the request's send time.
    pub ttl_ms: u64,
    /// The reserved bound after this renewal (Unix ms, inclusive).
    pub reserved_until_ms: u64,
    /// Temporal mode: the block for the next shard once the coordinator has prepared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_block: Option<BlockGrant>,
}

/// `POST /v1/leases/{host_id}/reservation`: extends the reserved timestamp bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationRequest {
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: LeaseSecret,
    /// The bound wanted, Unix ms, inclusive.
    pub until_ms: u64,
}

/// The bound after an extension (never lower than before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationResponse {
    /// The persisted bound, Unix ms, inclusive.
    pub reserved_until_ms: u64,
}

/// `POST /v1/leases/{host_id}/release`: gives the host id back before the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRequest {
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: LeaseSecret,
}

/// `POST /v1/blocks`: a counter block for a (shard, host) pair in temporal mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockRequest {
    /// The caller's host id.
    pub host_id: u32,
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: LeaseSecret,
    /// The shard the block is for.
    pub shard: u64,
    /// The caller's high-water mark in the shard: the block must start above it.
    pub after_counter: u64,
}

/// Counter values `start..end` of one shard for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockGrant {
    /// The shard index.
    pub shard: u64,
    /// First counter value.
    pub start: u64,
    /// One past the last counter value.
    pub end: u64,
}

/// `POST /v1/standby/wait`: registers a standby and waits for a failed host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandbyWaitRequest {
    /// The standby's name, shown in `/v1/hosts`.
    pub name: String,
    /// How long to wait before answering with no host (the coordinator caps it).
    pub timeout_ms: u64,
}

/// A host id whose lease has expired, or none when the wait timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandbyWaitResponse {
    /// The host id to take over with [`AcquireRequest::host_id`].
    pub host_id: Option<u32>,
}

/// The state of a host id's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Held and renewed.
    Live,
    /// Not renewed within its TTL; the id may be granted again.
    Expired,
    /// Given back by its holder.
    Released,
}

/// One shard's forecast next to what the host then used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardForecast {
    /// The shard index.
    pub shard: u64,
    /// The coordinator's forecast made before the shard started.
    pub predicted: u64,
    /// Counter values the host reported using in the shard.
    pub actual: u64,
}

/// Temporal-mode figures for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemporalStatus {
    /// The shard of the last usage report.
    pub shard: u64,
    /// Counter values used in it so far.
    pub used_in_shard: u64,
    /// The host's own forecast for the next shard.
    pub host_predicted_next: Option<u64>,
    /// The coordinator's forecast for the next shard.
    pub forecast_next: u64,
    /// Recent shards: forecast against actual use.
    pub history: Vec<ShardForecast>,
}

/// One host id in `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostStatus {
    /// The host id.
    pub host_id: u32,
    /// The current (or last) fencing token.
    pub token: u64,
    /// The holder's name.
    pub holder: String,
    /// Always [`Role::Primary`] for a leased id.
    pub role: Role,
    /// Live, expired or released.
    pub state: LeaseState,
    /// Time since the lease was granted, ms.
    pub lease_age_ms: u64,
    /// The lease's TTL, ms.
    pub ttl_ms: u64,
    /// Reserved bound, Unix ms, inclusive.
    pub reserved_until_ms: u64,
    /// Wall time of the last renewal, Unix ms.
    pub last_heartbeat_ms: u64,
    /// Time since the last renewal, ms.
    pub last_heartbeat_age_ms: u64,
    /// Renewals under the current token (0 right after the grant). With `token` it names the
    /// lease's last heartbeat: the coordinators time the lease from the moment they see it
    /// change.
    #[serde(default)]
    pub renewals: u64,
    /// Temporal mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<TemporalStatus>,
}

/// A registered standby in `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StandbyStatus {
    /// The standby's name.
    pub name: String,
    /// Always [`Role::Standby`].
    pub role: Role,
    /// Time since it last waited, ms.
    pub last_seen_age_ms: u64,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostsResponse {
    /// The store's identity.
    pub store_id: String,
    /// The layout's fingerprint.
    pub layout_spec: String,
    /// Number of host ids in the pool.
    pub pool_size: u32,
    /// Every host id that has ever been leased.
    pub hosts: Vec<HostStatus>,
    /// Standbys that waited recently.
    pub standbys: Vec<StandbyStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

    #[test]
    fn optional_fields_are_omitted_and_defaulted() {
        let r = AcquireRequest {
            name: "n1".into(),
            secret: LeaseSecret::parse(SECRET).unwrap(),
            ..Default::default()
        };
        let text = format!(r#"{{"name":"n1","secret":"{SECRET}"}}"#);
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
        let back: AcquireRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let renew: RenewRequest =
            serde_json::from_str(&format!(r#"{{"token":7,"secret":"{SECRET}"}}"#)).unwrap();
        assert_eq!(renew.usage, None);
        assert_eq!(
            serde_json::to_string(&Role::Standby).unwrap(),
            r#""standby""#
        );
    }

    #[test]
    fn every_call_under_a_lease_needs_a_well_formed_secret() {
        for body in [r#"{"token":7}"#, r#"{"token":7,"secret":"short"}"#] {
            assert!(
                serde_json::from_str::<RenewRequest>(body).is_err(),
                "{body}"
            );
            assert!(
                serde_json::from_str::<ReleaseRequest>(body).is_err(),
                "{body}"
            );
        }
        assert!(serde_json::from_str::<AcquireRequest>(r#"{"name":"n1"}"#).is_err());
    }
}
