//! The error body every shardflake service answers with, and its stable codes.
//!
//! Every non-2xx response carries `{"error": {"code": "...", "message": "..."}}`. The code is
//! stable and meant for programs (retry, fail over, alert); the message is for people and may
//! change. Codes are never renamed or reused; new ones may be added, so a client must treat a
//! code it does not know by its HTTP status ([`ErrorCode::Unknown`] when parsing).

use std::fmt;

use serde::{Deserialize, Serialize};
use shardflake::GenerateError;

/// Defines [`ErrorCode`] from one table: variant, wire code, HTTP status, meaning. Every
/// property of a code is read from this table, so adding a code is one line.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $code:literal, $status:literal; )+) => {
        /// A stable error code of the node and the coordinator: one registry for both.
        ///
        /// | code | status | meaning |
        /// |---|---|---|
        $(
            #[doc = concat!("| `", $code, "` | ", stringify!($status), " | ", $($doc,)+ " |")]
        )+
        ///
        /// Every 503 except `layout_expired` and `cluster_misconfigured`, and every 429, carries
        /// `Retry-After` in whole seconds (at least 1).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                $(#[doc = $doc])+
                #[serde(rename = $code)]
                $variant,
            )+
            /// A code this version does not know (only produced when parsing).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ErrorCode {
            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// Every code a server may send, in the order of the table above.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The HTTP status that goes with the code.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                    ErrorCode::Unknown => 500,
                }
            }

            /// What the code means: its line of the table above (the OpenAPI descriptions
            /// the services serve list it with each status).
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),+).trim_ascii(),)+
                    ErrorCode::Unknown => "A code this version does not know.",
                }
            }
        }
    };
}

error_codes! {
    /// A malformed or unknown query parameter, path segment or body.
    BadRequest = "bad_request", 400;
    /// Node: `count` outside `1..=100000`.
    CountOutOfRange = "count_out_of_range", 400;
    /// Node: `/inspect/{id}`: not a decimal `u64`, or not valid for the layout.
    InvalidId = "invalid_id", 400;
    /// Coordinator: counter blocks asked of a coordinator whose layout is not temporal.
    NotTemporal = "not_temporal", 400;
    /// Coordinator: a `shardflake-generation` stamp this store did not mint (another store's, or altered); the client forgets it.
    ForeignGeneration = "foreign_generation", 400;
    /// The `Authorization` header is missing or holds no credential this service accepts.
    Unauthorized = "unauthorized", 401;
    /// Coordinator: the credential is valid, but its scope (read, node, admin) does not allow this request.
    Forbidden = "forbidden", 403;
    /// Coordinator: the lease secret is not the one the lease was granted with; only the lease's holder can use it.
    LeaseSecretMismatch = "lease_secret_mismatch", 403;
    /// No such endpoint (coordinator: also no lease record for the host id).
    NotFound = "not_found", 404;
    /// A namespace that was never created (`PUT /v1/namespaces/{name}` on the coordinator creates one).
    UnknownNamespace = "unknown_namespace", 404;
    /// The endpoint exists, the method does not.
    MethodNotAllowed = "method_not_allowed", 405;
    /// Node: no representation matches the `Accept` header.
    NotAcceptable = "not_acceptable", 406;
    /// Coordinator: every host id of the pool is leased.
    PoolExhausted = "pool_exhausted", 409;
    /// Coordinator: the host id asked for is leased to someone else (or may still be).
    HostBusy = "host_busy", 409;
    /// Coordinator: the caller's fencing token is not the host id's current token.
    StaleToken = "stale_token", 409;
    /// Coordinator: the lease has expired; the holder must acquire a new one.
    LeaseExpired = "lease_expired", 409;
    /// Coordinator: a block for a shard more than one shard ahead of its clock; retry later.
    ShardTooFarAhead = "shard_too_far_ahead", 409;
    /// Coordinator: the counter range of a (shard, host) pair is used up.
    CounterSpaceExhausted = "counter_space_exhausted", 409;
    /// Coordinator: a counter block for a shard the host no longer gets blocks of (long past, or retired by a repair); blocks of later shards are granted.
    ShardRetired = "shard_retired", 409;
    /// Coordinator: a namespace's `start`, `step` or `offset` differs from what it was created with.
    NamespaceConflict = "namespace_conflict", 409;
    /// Coordinator: the namespace has granted every value up to the largest `u64`.
    NamespaceExhausted = "namespace_exhausted", 409;
    /// Coordinator: a namespace return that is not inside the caller's newest block under its current token; nothing changed.
    ReturnRefused = "return_refused", 409;
    /// Coordinator: the caller gave this namespace's values back under its current lease; a lease takes no block of a namespace after its return.
    NamespaceReturned = "namespace_returned", 409;
    /// Coordinator: a namespace delete while live nodes hold unreturned blocks of it; nothing changed (`force=true` deletes it anyway; the message says what that costs).
    NamespaceBusy = "namespace_busy", 409;
    /// Coordinator: a raise to a value below what was already granted; values only ever go up, and nothing changed.
    WouldLower = "would_lower", 409;
    /// A request body over the service's limit (node: 1 KiB; its endpoints read none).
    PayloadTooLarge = "payload_too_large", 413;
    /// The caller is over its request (coordinator, per credential) or id (node, per client) rate; retry after `Retry-After`.
    RateLimited = "rate_limited", 429;
    /// Node: the wall clock is behind the issued or reserved bound by more than the clock policy allows.
    ClockBehind = "clock_behind", 503;
    /// Node: the wall clock reads a time before the layout's epoch.
    EpochInFuture = "epoch_in_future", 503;
    /// Node: the durable reservation has not been extended yet (disk slow or failing).
    ReservationExhausted = "reservation_exhausted", 503;
    /// Node: no valid lease (acquiring, standby, lost); it issues nothing until it holds one.
    LeaseLost = "lease_lost", 503;
    /// Node, temporal layout: the current counter block, or the shard's whole counter range, is used up.
    CounterExhausted = "counter_exhausted", 503;
    /// Node, temporal layout: no counter block for the current shard has arrived yet.
    NoCounterBlock = "no_counter_block", 503;
    /// Node: no block of the namespace has arrived yet, or the coordinator cannot grant one now.
    NoNamespaceBlock = "no_namespace_block", 503;
    /// Node, cluster mode: coordinators of different stores, or a layout other than the cluster's; the node stops.
    ClusterMisconfigured = "cluster_misconfigured", 503;
    /// The layout's timestamp field has overflowed: waiting does not help.
    LayoutExpired = "layout_expired", 503;
    /// Node: the request took longer than the request timeout.
    RequestTimeout = "request_timeout", 503;
    /// Node: the service is stopping.
    ShuttingDown = "shutting_down", 503;
    /// Coordinator: its store is at an earlier generation than callers have seen (restored from a backup): nothing is granted until an operator repairs it (`shardflake repair`).
    StoreRestored = "store_restored", 503;
    /// Coordinator: the store failed or is overloaded; retry, possibly elsewhere.
    StoreUnavailable = "store_unavailable", 503;
    /// A bug; the message says what.
    Internal = "internal", 500;
}

impl ErrorCode {
    /// True when the same request may succeed later, on this node or another one.
    pub fn is_retryable(self) -> bool {
        match self.http_status() {
            503 => !matches!(
                self,
                ErrorCode::LayoutExpired | ErrorCode::ClusterMisconfigured
            ),
            429 => true,
            _ => false,
        }
    }

    /// The code for a generator error.
    pub fn of_generate_error(e: &GenerateError) -> ErrorCode {
        match e {
            GenerateError::ClockMovedBackwards { .. } => ErrorCode::ClockBehind,
            GenerateError::EpochInFuture { .. } => ErrorCode::EpochInFuture,
            GenerateError::TimestampOverflow { .. } => ErrorCode::LayoutExpired,
            GenerateError::ReservationExhausted { .. } => ErrorCode::ReservationExhausted,
            GenerateError::LeaseLost => ErrorCode::LeaseLost,
            GenerateError::CounterExhausted { .. } | GenerateError::MonotonicOverflow { .. } => {
                ErrorCode::CounterExhausted
            }
            GenerateError::NoCounterBlock { .. } => ErrorCode::NoCounterBlock,
            // A variant added to the core library later: still an operating condition.
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Retry-After` value in whole seconds for a wait of `retry_after_ms`: rounded up, at
/// least 1 (HTTP has no sub-second `Retry-After`, and 0 would invite a busy retry loop).
///
/// ```
/// use shardflake_proto::error::retry_after_secs;
/// assert_eq!(retry_after_secs(1), 1);
/// assert_eq!(retry_after_secs(1_000), 1);
/// assert_eq!(retry_after_secs(1_001), 2);
/// assert_eq!(retry_after_secs(3_600_000), 3_600);
/// ```
pub fn retry_after_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1_000).max(1)
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_under_its_documented_name() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn unknown_codes_parse_as_unknown() {
        let b: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_the_future","message":"m"}}"#).unwrap();
        assert_eq!(b.error.code, ErrorCode::Unknown);
        assert_eq!(b.error.message, "m");
    }

    #[test]
    fn generate_errors_map_to_503_codes() {
        let cases = [
            (
                GenerateError::ClockMovedBackwards { by_ms: 5 },
                ErrorCode::ClockBehind,
            ),
            (
                GenerateError::ReservationExhausted {
                    reserved_until_ms: 1,
                    needed_ms: 2,
                },
                ErrorCode::ReservationExhausted,
            ),
            (GenerateError::LeaseLost, ErrorCode::LeaseLost),
            (
                GenerateError::CounterExhausted {
                    shard: 1,
                    counter: 2,
                },
                ErrorCode::CounterExhausted,
            ),
            (
                GenerateError::NoCounterBlock { shard: 1 },
                ErrorCode::NoCounterBlock,
            ),
            (
                GenerateError::TimestampOverflow {
                    overflow_at: "2080".into(),
                },
                ErrorCode::LayoutExpired,
            ),
            (
                GenerateError::EpochInFuture {
                    epoch_ms: 2,
                    now_ms: 1,
                },
                ErrorCode::EpochInFuture,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(ErrorCode::of_generate_error(&e), code, "{e}");
            assert_eq!(code.http_status(), 503);
        }
        assert!(!ErrorCode::LayoutExpired.is_retryable());
        assert!(!ErrorCode::ClusterMisconfigured.is_retryable());
        assert!(ErrorCode::NoCounterBlock.is_retryable());
        assert!(ErrorCode::LeaseLost.is_retryable());
        assert!(!ErrorCode::BadRequest.is_retryable());
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(!ErrorCode::Forbidden.is_retryable());
    }
}
