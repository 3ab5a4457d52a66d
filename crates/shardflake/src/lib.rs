//! Unique id generation: Snowflake-family 64-bit layouts, temporal shards, UUIDv7 and ULID.
//!
//! Everything here runs in-process with no network and no disk I/O. Time comes only through
//! the [`Clock`] trait, so every clock edge case is a plain unit test with a [`ManualClock`].
//!
//! ```
//! use shardflake::{Layout, SnowflakeGenerator};
//!
//! let g = SnowflakeGenerator::builder(Layout::preset("twitter")?)
//!     .node("datacenter", 1)
//!     .node("worker", 7)
//!     .build()?;
//! let id = g.next_id()?;
//! let fields = g.layout().decode(id)?;
//! assert_eq!(fields.field("worker"), Some(7));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod check;
mod clock;
pub mod encode;
mod error;
mod fast;
pub mod forecast;
mod layout;
// Test support for the simulation's mutant table: inert without the `mutants` feature.
#[doc(hidden)]
pub mod mutant;
mod reservation;
mod sizing;
mod snowflake;
mod sync;
mod temporal;
pub mod ulid;
pub mod uuid7;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DecodeError, GenerateError, LayoutError};
pub use fast::{
    seed_thread_entropy, thread_entropy, CoarseClock, FastRng, COARSE_LEASE_MS,
    COARSE_REFRESH_INTERVAL_US,
};
pub use layout::{
    format_rfc3339_ms, parse_time_ms, Decoded, Field, FieldKind, Layout, LayoutBuilder, LayoutKind,
    NodeId, TemporalWidths, JS_MAX_SAFE_INTEGER, PRESETS, SHARDFLAKE_EPOCH_MS,
    TEMPORAL_GRANULARITY_MS_DEFAULT, TEMPORAL_GRANULARITY_MS_MIN, TEMPORAL_LIFETIME_MS_MIN,
    TIME_UNIT_MS_MAX,
};
pub use reservation::{NoReserver, Reservation, Reserver};
pub use sizing::{
    BlockSizing, BlockUse, FORECAST_HEADROOM, SEGMENT_HORIZON_MS_DEFAULT, SEGMENT_PREFETCH_FRACTION,
};
pub use snowflake::{ClockPolicy, IdRange, SnowflakeBuilder, SnowflakeGenerator, SnowflakeStats};
pub use temporal::{
    BlockError, CounterBlock, CounterSupplier, TemporalBuilder, TemporalGenerator, TemporalUsage,
    REFILL_FRACTION_DEFAULT,
};
pub use ulid::{Ulid, UlidGenerator};
pub use uuid7::{Uuid7, Uuid7Generator};
