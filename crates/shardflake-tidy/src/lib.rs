//! Conventions of the shardflake workspace, checked by this crate's tests (`tests/tidy.rs`),
//! in the spirit of rust-analyzer's `xtask/src/tidy.rs`: what reviewers would otherwise have
//! to remember.
