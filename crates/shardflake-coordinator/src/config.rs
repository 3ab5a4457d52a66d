//! The coordinator's configuration and the limits it states to nodes.

use shardflake::Layout;
use shardflake_proto::coord::CoordinatorLimits;

/// Default lease TTL, shortest and longest a client may ask for: the one set of TTL bounds
/// of shardflake, shared with the nodes.
pub use shardflake_proto::coord::{
    LEASE_TTL_MS_DEFAULT as TTL_MS_DEFAULT, LEASE_TTL_MS_MAX as TTL_MS_MAX,
    LEASE_TTL_MS_MIN as TTL_MS_MIN,
};
/// Default limit on how far ahead of the coordinator's clock a reservation may reach.
pub const RESERVATION_AHEAD_MS_MAX_DEFAULT: u64 = 60_000;
/// Smallest counter block granted.
pub const BLOCK_MIN_DEFAULT: u64 = 4_096;
/// Default rate one node serves of one namespace before the assignment adds a node (ids/s).
pub const NS_NODE_CAPACITY_PER_S_DEFAULT: u64 = 2_000_000;
/// Largest pool, whatever the layout's host bits allow.
pub const POOL_SIZE_MAX: u32 = 1 << 24;
/// Grants kept in each grant log (per host id, per (host, shard) pair, per namespace) by
/// default: what `shardflake audit` checks beyond the live records.
pub const AUDIT_WINDOW_DEFAULT: usize = 16;
/// The largest audit window: each log lives in a record that its grants rewrite.
pub const AUDIT_WINDOW_MAX: usize = 256;
/// Longest holder or standby name kept, in bytes.
pub(crate) const NAME_BYTES_MAX: usize = 128;

/// The coordinator's limits and layout, validated once at start-up.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The layout whose host ids are leased.
    pub layout: Layout,
    /// Host ids `0..pool_size` are leased.
    pub pool_size: u32,
    /// TTL of a lease whose request names none.
    pub ttl_ms_default: u64,
    /// Shortest TTL accepted.
    pub ttl_ms_min: u64,
    /// Longest TTL accepted.
    pub ttl_ms_max: u64,
    /// How far ahead of the coordinator's wall clock a reservation may reach.
    pub reservation_ahead_ms_max: u64,
    /// Smallest counter block (temporal layouts).
    pub block_min: u64,
    /// Namespaces: a node's block covers this much of its forecast demand (ms).
    pub ns_horizon_ms: u64,
    /// Namespaces: the rate one node serves of one namespace (ids/s) before the assignment
    /// adds a node to it.
    pub ns_node_capacity_per_s: u64,
    /// Grants kept in each grant log (`1..=AUDIT_WINDOW_MAX`).
    pub audit_window: usize,
}

impl CoordinatorConfig {
    /// Defaults for `layout`: the pool holds every value of the layout's node fields.
    ///
    /// ```
    /// use shardflake::Layout;
    /// use shardflake_coordinator::CoordinatorConfig;
    /// let c = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    /// assert_eq!(c.pool_size, 1024); // datacenter 5 bits + worker 5 bits
    /// assert!(!c.is_temporal());
    /// ```
    pub fn new(layout: Layout) -> Self {
        let bits: u32 = layout.node_fields().map(|f| f.bits()).sum();
        let pool_size = if bits >= 24 {
            POOL_SIZE_MAX
        } else {
            1u32 << bits
        };
        Self {
            layout,
            pool_size: pool_size.min(POOL_SIZE_MAX),
            ttl_ms_default: TTL_MS_DEFAULT,
            ttl_ms_min: TTL_MS_MIN,
            ttl_ms_max: TTL_MS_MAX,
            reservation_ahead_ms_max: RESERVATION_AHEAD_MS_MAX_DEFAULT,
            block_min: BLOCK_MIN_DEFAULT,
            ns_horizon_ms: shardflake::SEGMENT_HORIZON_MS_DEFAULT,
            ns_node_capacity_per_s: NS_NODE_CAPACITY_PER_S_DEFAULT,
            audit_window: AUDIT_WINDOW_DEFAULT,
        }
    }

    /// True for the temporal-shard layout, where counter blocks are granted.
    pub fn is_temporal(&self) -> bool {
        self.layout.is_temporal()
    }

    /// The limits stated to nodes with every grant.
    pub fn limits(&self) -> CoordinatorLimits {
        CoordinatorLimits {
            ttl_ms_min: self.ttl_ms_min,
            ttl_ms_max: self.ttl_ms_max,
            ttl_ms_default: self.ttl_ms_default,
            reservation_ahead_ms_max: self.reservation_ahead_ms_max,
        }
    }

    /// A reservation bound no further ahead of the coordinator's clock than allowed. A lower
    /// bound is always safe, so a request beyond the limit is clamped, not refused: the
    /// holder learns the bound from the answer.
    pub(crate) fn clamp_ahead(&self, until_ms: u64, now_ms: u64) -> u64 {
        until_ms.min(now_ms.saturating_add(self.reservation_ahead_ms_max))
    }

    /// The largest counter value of a (shard, host) pair.
    pub(crate) fn counter_max(&self) -> u64 {
        self.layout.sequence_field().max()
    }
}

/// `name` cut to at most [`NAME_BYTES_MAX`] bytes on a character boundary, so a client
/// cannot make the coordinator store (and list) names of any length.
pub(crate) fn truncate_name(s: &str) -> String {
    let mut end = s.len().min(NAME_BYTES_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
