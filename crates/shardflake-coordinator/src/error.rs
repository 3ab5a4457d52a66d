//! The coordinator's errors, each with its stable API code and HTTP status.

use shardflake_proto::{ApiError, ErrorCode};
use thiserror::Error;

use crate::store::StoreError;

/// Why a coordinator operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoordError {
    /// Every host id of the pool is leased.
    #[error("all {pool_size} host ids are leased; add capacity (--max-hosts, a wider layout) or wait for a lease to expire")]
    PoolExhausted {
        /// The pool's size.
        pool_size: u32,
    },
    /// The host id asked for is leased to someone else, or may still be.
    #[error("host id {host_id} is leased (token {token}) and not expired")]
    HostBusy {
        /// The host id.
        host_id: u32,
        /// Its current token.
        token: u64,
    },
    /// The caller's token is not the host id's current token.
    #[error("token {token} for host id {host_id} is stale: the current token is {current}")]
    StaleToken {
        /// The host id.
        host_id: u32,
        /// The caller's token.
        token: u64,
        /// The current token.
        current: u64,
    },
    /// The lease has expired or was released; the holder must acquire a new one.
    #[error("the lease on host id {host_id} with token {token} has expired")]
    LeaseExpired {
        /// The host id.
        host_id: u32,
        /// The caller's token.
        token: u64,
    },
    /// The lease secret presented is not the lease's: only the holder, who drew the secret
    /// when it acquired the lease, can act under it.
    #[error("the lease secret does not match the secret host id {host_id} was granted with under token {token}; only the lease's holder can use it")]
    SecretMismatch {
        /// The host id.
        host_id: u32,
        /// The caller's token.
        token: u64,
    },
    /// A namespace return outside the rule: it may cover only the caller's newest block,
    /// granted under its current token, from a value inside that block.
    #[error("return refused for namespace `{name}`: {rule}; nothing changed")]
    ReturnRefused {
        /// The namespace.
        name: String,
        /// The rule the return broke, with the numbers.
        rule: String,
    },
    /// A block asked for under a lease that already gave the namespace's values back.
    #[error("host id {host_id} gave namespace `{name}` back under token {token}; a lease takes no block of a namespace after its return (acquire a new lease)")]
    NamespaceReturned {
        /// The namespace.
        name: String,
        /// The host id.
        host_id: u32,
        /// The caller's token.
        token: u64,
    },
    /// No lease record exists for the host id.
    #[error("host id {host_id} has never been leased")]
    UnknownHost {
        /// The host id.
        host_id: u32,
    },
    /// The host id lies outside the pool.
    #[error("host id {host_id} is out of range 0..{pool_size}")]
    HostOutOfRange {
        /// The host id.
        host_id: u32,
        /// The pool's size.
        pool_size: u32,
    },
    /// A TTL outside the allowed range.
    #[error("ttl_ms {ttl_ms} is out of range {min_ms}..={max_ms}")]
    TtlOutOfRange {
        /// The TTL asked for.
        ttl_ms: u64,
        /// Smallest allowed.
        min_ms: u64,
        /// Largest allowed.
        max_ms: u64,
    },
    /// The counter range of a (shard, host) pair is used up.
    #[error("host id {host_id} has used every counter value of shard {shard} (0..={counter_max})")]
    CounterSpaceExhausted {
        /// The host id.
        host_id: u32,
        /// The shard.
        shard: u64,
        /// The largest counter value.
        counter_max: u64,
    },
    /// Counter blocks asked of a coordinator whose layout is not temporal.
    #[error("counter blocks need a temporal layout; this coordinator runs `{layout}`")]
    NotTemporal {
        /// The coordinator's layout.
        layout: String,
    },
    /// A block for a shard too far ahead of the coordinator's clock.
    #[error("shard {shard} is more than {ahead_max} shard(s) ahead of the coordinator's current shard {current}")]
    ShardTooFarAhead {
        /// The shard asked for.
        shard: u64,
        /// The coordinator's current shard.
        current: u64,
        /// The limit.
        ahead_max: u64,
    },
    /// The store was created for another layout than the one this coordinator runs.
    #[error("store {store_id} was created for layout `{stored}`, but this coordinator is configured with `{configured}`; host ids and reservations of one layout mean nothing in another: run with the store's layout, or give this layout its own store")]
    LayoutMismatch {
        /// The store's identity.
        store_id: String,
        /// The layout the store was created for.
        stored: String,
        /// The layout this coordinator was started with.
        configured: String,
    },
    /// A block for a shard the layout's shard field cannot hold: its lifetime is over.
    #[error("shard {shard} does not fit the layout's shard field (0..={shard_max}); the layout overflowed on {overflow_at}")]
    ShardBeyondLayout {
        /// The shard asked for.
        shard: u64,
        /// The largest shard the layout holds.
        shard_max: u64,
        /// When the layout overflowed.
        overflow_at: String,
    },
    /// A namespace that was never created.
    #[error("namespace `{name}` does not exist; create it with PUT /v1/namespaces/{name}")]
    UnknownNamespace {
        /// The name.
        name: String,
    },
    /// A namespace's fixed parameters differ from what it was created with.
    #[error("namespace `{name}` was created with {field} {stored}; it cannot change to {given} (ids already issued follow it)")]
    NamespaceConflict {
        /// The name.
        name: String,
        /// `start`, `step` or `offset`.
        field: &'static str,
        /// The value it was created with.
        stored: u64,
        /// The value asked for.
        given: u64,
    },
    /// Every value of a namespace up to `u64::MAX` was granted.
    #[error("namespace `{name}` has granted every value up to {max}")]
    NamespaceExhausted {
        /// The name.
        name: String,
        /// The largest value.
        max: u64,
    },
    /// A delete of a namespace that live leases still hold unreturned blocks of.
    #[error("namespace `{name}` has unreturned blocks held by the live leases of host ids {held_by:?}; stop serving it first (a node gives its unused tail back when it stops), or delete with force=true: those nodes issue what they hold and get no further block, and a namespace created again under this name must start at or above {next} to keep its values unique")]
    NamespaceBusy {
        /// The name.
        name: String,
        /// Host ids holding blocks.
        held_by: Vec<u32>,
        /// The namespace's next value.
        next: u64,
    },
    /// A raise that would lower a bound.
    #[error("{what} is already {current}; {asked} would lower it, and a bound never goes down (values below it may have been issued)")]
    WouldLower {
        /// What would be lowered.
        what: String,
        /// Its current value.
        current: u64,
        /// What was asked for.
        asked: u64,
    },
    /// The store went back to an earlier generation than callers have seen.
    #[error("the store is at generation {store}, but generation {seen} was seen: it was restored from a backup (or went back) and would grant again what it granted since; no grants until an operator runs `shardflake repair` (docs/operations.md)")]
    StoreRestored {
        /// The highest generation callers presented.
        seen: u64,
        /// The store's generation.
        store: u64,
    },
    /// A generation stamp this store did not mint.
    #[error("{header}: the stamp of generation {generation} was not minted by store {store_id} (another store's, or altered); forget it")]
    ForeignGeneration {
        /// The header's name.
        header: &'static str,
        /// The stamp's generation.
        generation: u64,
        /// This store.
        store_id: String,
    },
    /// A counter block for a shard below the host's block floor.
    #[error("shard {shard} of host id {host_id} is retired (blocks are granted from shard {floor} on): its records were deleted once it lay behind, or a repair retired it")]
    ShardRetired {
        /// The host id.
        host_id: u32,
        /// The shard asked for.
        shard: u64,
        /// The lowest shard still granted.
        floor: u64,
    },
    /// A malformed request the HTTP layer did not catch.
    #[error("{0}")]
    BadRequest(String),
    /// Too many concurrent writers on the same keys; the compare-and-swap loop gave up.
    #[error("gave up after {attempts} conflicting attempts; retry")]
    Contended {
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoordError {
    /// The stable API error code; its HTTP status comes with it ([`ErrorCode::http_status`]).
    pub fn code(&self) -> ErrorCode {
        match self {
            CoordError::PoolExhausted { .. } => ErrorCode::PoolExhausted,
            CoordError::HostBusy { .. } => ErrorCode::HostBusy,
            CoordError::StaleToken { .. } => ErrorCode::StaleToken,
            CoordError::SecretMismatch { .. } => ErrorCode::LeaseSecretMismatch,
            CoordError::ReturnRefused { .. } => ErrorCode::ReturnRefused,
            CoordError::NamespaceReturned { .. } => ErrorCode::NamespaceReturned,
            CoordError::LeaseExpired { .. } => ErrorCode::LeaseExpired,
            CoordError::UnknownHost { .. } => ErrorCode::NotFound,
            CoordError::UnknownNamespace { .. } => ErrorCode::UnknownNamespace,
            CoordError::NamespaceConflict { .. } => ErrorCode::NamespaceConflict,
            CoordError::NamespaceExhausted { .. } => ErrorCode::NamespaceExhausted,
            CoordError::NamespaceBusy { .. } => ErrorCode::NamespaceBusy,
            CoordError::WouldLower { .. } => ErrorCode::WouldLower,
            CoordError::StoreRestored { .. } => ErrorCode::StoreRestored,
            CoordError::ForeignGeneration { .. } => ErrorCode::ForeignGeneration,
            CoordError::ShardRetired { .. } => ErrorCode::ShardRetired,
            CoordError::HostOutOfRange { .. }
            | CoordError::TtlOutOfRange { .. }
            | CoordError::ShardBeyondLayout { .. }
            | CoordError::BadRequest(_) => ErrorCode::BadRequest,
            CoordError::ShardTooFarAhead { .. } => ErrorCode::ShardTooFarAhead,
            CoordError::CounterSpaceExhausted { .. } => ErrorCode::CounterSpaceExhausted,
            CoordError::NotTemporal { .. } => ErrorCode::NotTemporal,
            CoordError::Contended { .. } | CoordError::Store(_) => ErrorCode::StoreUnavailable,
            CoordError::LayoutMismatch { .. } => ErrorCode::Internal,
        }
    }
}

impl From<CoordError> for ApiError {
    fn from(e: CoordError) -> Self {
        let code = e.code();
        if code.http_status() >= 500 {
            tracing::warn!(error = %e, "request failed");
        }
        ApiError::new(code, e.to_string())
    }
}
