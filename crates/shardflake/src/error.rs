//! Error types. Each says what happened and carries the numbers needed to act on it.

use thiserror::Error;

use crate::layout::NodeId;

/// An invalid layout or an out-of-range field value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A field's width is outside what the layout can hold.
    #[error("field `{field}`: width {bits} bits is out of range {min}..={max}")]
    FieldWidth {
        /// The field's name.
        field: String,
        /// The width asked for.
        bits: u32,
        /// Smallest allowed width.
        min: u32,
        /// Largest allowed width.
        max: u32,
    },
    /// The fields add up to more bits than allowed.
    #[error("fields use {bits} bits in total; at most {max} are allowed (the sign bit stays 0)")]
    TooWide {
        /// Sum of the field widths.
        bits: u32,
        /// The allowed total.
        max: u32,
    },
    /// The layout's structure is wrong (missing or repeated timestamp/sequence, order).
    #[error("invalid layout: {0}")]
    Structure(String),
    /// Two fields share a name.
    #[error("field name `{0}` is used twice")]
    DuplicateField(String),
    /// The time unit is zero or absurdly large.
    #[error("time unit {unit_ms} ms is out of range 1..={max_ms} ms")]
    TimeUnit {
        /// The unit asked for.
        unit_ms: u64,
        /// The largest allowed unit.
        max_ms: u64,
    },
    /// A node field value does not fit its width.
    #[error("field `{field}`: value {value} is out of range 0..={max}")]
    FieldValue {
        /// The field's name.
        field: String,
        /// The value given.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// A value was given for a field the layout does not have, or a node field was left out.
    #[error("{0}")]
    UnknownField(String),
    /// The layout's epoch is later than the clock's current time.
    #[error("epoch {epoch_ms} is in the future (now {now_ms}, Unix ms)")]
    EpochInFuture {
        /// The epoch, Unix ms.
        epoch_ms: u64,
        /// The clock's reading, Unix ms.
        now_ms: u64,
    },
    /// The layout's timestamp (or shard) field can no longer hold the current time.
    #[error("layout `{layout}` overflowed on {overflow_at}: its timestamp field cannot hold the current time")]
    Expired {
        /// The layout's name.
        layout: String,
        /// RFC 3339 time at which the field overflowed.
        overflow_at: String,
    },
    /// A machine or datacenter id does not fit the node field it sets.
    #[error("{id} {value} is out of range 0..={max} for layout `{layout}` (field `{field}`)")]
    NodeIdOutOfRange {
        /// Which id.
        id: NodeId,
        /// The value given.
        value: u64,
        /// The largest value the field holds.
        max: u64,
        /// The layout's name.
        layout: String,
        /// The field the id sets.
        field: String,
    },
    /// A datacenter id was given for a layout with a single node field.
    #[error("{id} {value} is not used by layout `{layout}`: its only node field `{field}` is set by the machine id; leave the {id} unset or 0")]
    NodeIdUnused {
        /// Which id.
        id: NodeId,
        /// The value given.
        value: u64,
        /// The layout's name.
        layout: String,
        /// The layout's only node field.
        field: String,
    },
    /// A layout spec (`preset:key=value,...`) could not be parsed.
    #[error("layout spec `{spec}`: {reason}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No preset has this name.
    #[error("unknown layout `{name}`; known layouts: {known}")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
}

/// Why a generator could not issue an id. Every variant is an operating condition the caller
/// can handle (retry later, alert, fail over); none of them means an id was issued twice.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The wall clock is behind the last issued timestamp by more than the clock policy
    /// allows to wait or borrow.
    #[error("clock moved backwards by {by_ms} ms (more than the clock policy allows)")]
    ClockMovedBackwards {
        /// How far the wall clock is behind the last issued timestamp.
        by_ms: u64,
    },
    /// The layout's epoch is later than the current time.
    #[error("layout epoch {epoch_ms} is in the future (now {now_ms}, Unix ms)")]
    EpochInFuture {
        /// The epoch, Unix ms.
        epoch_ms: u64,
        /// The clock's reading, Unix ms.
        now_ms: u64,
    },
    /// The timestamp no longer fits its field: the layout's lifetime is over.
    #[error("timestamp field overflowed on {overflow_at}: the layout's lifetime is over")]
    TimestampOverflow {
        /// RFC 3339 time at which the field overflowed.
        overflow_at: String,
    },
    /// The next id would carry a timestamp above the reserved bound; the reserver has been
    /// asked to extend it.
    #[error("reservation exhausted: next timestamp {needed_ms} is above the reserved bound {reserved_until_ms} (Unix ms)")]
    ReservationExhausted {
        /// The reserved bound, Unix ms, inclusive.
        reserved_until_ms: u64,
        /// The timestamp the next id needs.
        needed_ms: u64,
    },
    /// The generator's lease (and with it its reservation) was revoked.
    #[error("lease lost: this generator may not issue ids until it holds a lease again")]
    LeaseLost,
    /// The temporal-shard counter reached the end of its block; a fresh block was requested.
    #[error("counter exhausted in shard {shard} at {counter}; a fresh block has been requested")]
    CounterExhausted {
        /// The shard index.
        shard: u64,
        /// The counter value that could not be issued.
        counter: u64,
    },
    /// No counter block has been supplied for the current shard yet.
    #[error("no counter block for shard {shard} yet")]
    NoCounterBlock {
        /// The shard index.
        shard: u64,
    },
    /// A 128-bit generator's per-millisecond counter overflowed (ULID spec: generation fails).
    #[error("monotonic counter overflowed within millisecond {ms}")]
    MonotonicOverflow {
        /// The millisecond, Unix ms.
        ms: u64,
    },
}

impl GenerateError {
    /// A hint for how long to wait before retrying, if waiting can help.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            GenerateError::ClockMovedBackwards { by_ms } => Some(*by_ms),
            GenerateError::ReservationExhausted { .. }
            | GenerateError::CounterExhausted { .. }
            | GenerateError::NoCounterBlock { .. }
            | GenerateError::LeaseLost => Some(100),
            GenerateError::MonotonicOverflow { .. } => Some(1),
            GenerateError::EpochInFuture { epoch_ms, now_ms } => Some(epoch_ms - now_ms),
            GenerateError::TimestampOverflow { .. } => None,
        }
    }
}

/// Why a string or number is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text is not a number in the expected encoding.
    #[error("`{input}` is not valid {encoding}: {reason}")]
    Syntax {
        /// The offending input (truncated to 64 characters).
        input: String,
        /// The encoding tried.
        encoding: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The id has bits set above the layout's width.
    #[error("id {id} does not fit layout `{layout}`: it has bits set above bit {bits}")]
    TooWide {
        /// The id.
        id: u64,
        /// The layout's name.
        layout: String,
        /// The layout's total width.
        bits: u32,
    },
    /// The id's version or variant bits are not those of the expected format.
    #[error("not a {expected}: {reason}")]
    WrongKind {
        /// The expected kind of id.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
}

pub(crate) fn truncate_input(s: &str) -> String {
    s.chars().take(64).collect()
}
