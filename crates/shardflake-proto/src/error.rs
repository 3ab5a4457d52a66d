//! The error body every shardflake service answers with, and its stable codes.
//!
//! Every non-2xx response carries `{"error": {"code": "...", "message": "..."}}`. The code is
//! stable and meant for programs (retry, fail over, alert); the message is for people and may
//! change. Codes are never renamed or reused; new ones may be added, so a client must treat a
//! code it does not know by its HTTP status ([`ErrorCode::Unknown`] when parsing).

use std::fmt;

use serde::{Deserialize, Serialize};
use shardflake::GenerateError;

/// A stable error code.
///
/// | code | status | meaning |
/// |---|---|---|
/// | `bad_request` | 400 | a malformed or unknown query parameter, a bad path segment |
/// | `count_out_of_range` | 400 | `count` outside `1..=100000` |
/// | `invalid_id` | 400 | `/inspect/{id}`: not a decimal `u64`, or not valid for the layout |
/// | `not_found` | 404 | no such endpoint |
/// | `method_not_allowed` | 405 | the endpoint exists, the method does not (see `Allow`) |
/// | `not_acceptable` | 406 | no representation matches `Accept` |
/// | `payload_too_large` | 413 | a request body over the service's limit (node: 1 KiB; its endpoints read none) |
/// | `clock_behind` | 503 | the wall clock is behind the issued or reserved bound by more than the clock policy allows |
/// | `epoch_in_future` | 503 | the wall clock reads a time before the layout's epoch |
/// | `reservation_exhausted` | 503 | the durable reservation has not been extended yet (disk slow or failing) |
/// | `lease_lost` | 503 | the node's lease (and reservation) was revoked; it issues nothing until it holds one again |
/// | `counter_exhausted` | 503 | temporal layout: the current counter block is used up, or every counter value of the shard is |
/// | `no_counter_block` | 503 | temporal layout: no counter block for the current shard has arrived yet |
/// | `cluster_misconfigured` | 503 | cluster mode: the coordinators belong to different stores, or the node's layout is not the cluster's; the node stops (no `Retry-After`) |
/// | `layout_expired` | 503 | the layout's timestamp field has overflowed: waiting does not help (no `Retry-After`) |
/// | `request_timeout` | 503 | the request took longer than the node's request timeout |
/// | `shutting_down` | 503 | the node is stopping |
/// | `internal` | 500 | a bug; the message says what |
///
/// Every 503 except `layout_expired` and `cluster_misconfigured` carries `Retry-After` in whole
/// seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A malformed or unknown query parameter or path segment.
    BadRequest,
    /// `count` outside `1..=IDS_COUNT_MAX`.
    CountOutOfRange,
    /// The id to inspect is not a decimal `u64` or not valid for the layout.
    InvalidId,
    /// No such endpoint.
    NotFound,
    /// The endpoint does not support the method.
    MethodNotAllowed,
    /// No representation matches the `Accept` header.
    NotAcceptable,
    /// The request body is larger than the service accepts.
    PayloadTooLarge,
    /// The wall clock is behind the bound by more than the clock policy allows.
    ClockBehind,
    /// The wall clock reads a time before the layout's epoch.
    EpochInFuture,
    /// The reservation has not been extended in time.
    ReservationExhausted,
    /// The lease behind the reservation is gone.
    LeaseLost,
    /// The temporal counter block is used up.
    CounterExhausted,
    /// No temporal counter block for the current shard has arrived yet.
    NoCounterBlock,
    /// Cluster mode: coordinators of different stores, or a layout other than the cluster's.
    ClusterMisconfigured,
    /// The layout's timestamp field overflowed.
    LayoutExpired,
    /// The request took longer than the request timeout.
    RequestTimeout,
    /// The service is shutting down.
    ShuttingDown,
    /// An internal error (a bug).
    Internal,
    /// A code this version does not know (only produced when parsing).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::CountOutOfRange => "count_out_of_range",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotAcceptable => "not_acceptable",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::ClockBehind => "clock_behind",
            ErrorCode::EpochInFuture => "epoch_in_future",
            ErrorCode::ReservationExhausted => "reservation_exhausted",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::CounterExhausted => "counter_exhausted",
            ErrorCode::NoCounterBlock => "no_counter_block",
            ErrorCode::ClusterMisconfigured => "cluster_misconfigured",
            ErrorCode::LayoutExpired => "layout_expired",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Every code a server may send, in the order of the table above.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::CountOutOfRange,
        ErrorCode::InvalidId,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotAcceptable,
        ErrorCode::PayloadTooLarge,
        ErrorCode::ClockBehind,
        ErrorCode::EpochInFuture,
        ErrorCode::ReservationExhausted,
        ErrorCode::LeaseLost,
        ErrorCode::CounterExhausted,
        ErrorCode::NoCounterBlock,
        ErrorCode::ClusterMisconfigured,
        ErrorCode::LayoutExpired,
        ErrorCode::RequestTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::CountOutOfRange | ErrorCode::InvalidId => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::NotAcceptable => 406,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ClockBehind
            | ErrorCode::EpochInFuture
            | ErrorCode::ReservationExhausted
            | ErrorCode::LeaseLost
            | ErrorCode::CounterExhausted
            | ErrorCode::NoCounterBlock
            | ErrorCode::ClusterMisconfigured
            | ErrorCode::LayoutExpired
            | ErrorCode::RequestTimeout
            | ErrorCode::ShuttingDown => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    /// True when the same request may succeed later, on this node or another one.
    pub fn is_retryable(self) -> bool {
        self.http_status() == 503
            && !matches!(
                self,
                ErrorCode::LayoutExpired | ErrorCode::ClusterMisconfigured
            )
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
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    }
}
