//! Atomics used by the lock-free generators: `loom`'s under `--cfg loom`, std's otherwise,
//! so the compare-and-swap loops can be model-checked unchanged.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
