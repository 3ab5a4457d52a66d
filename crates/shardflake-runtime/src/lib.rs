//! What shardflake's services and clients share at run time: TLS for every HTTP surface
//! ([`tls`]), credentials with scopes and rotation ([`credentials`]), per-caller rate limits
//! ([`limit`]) and the reloading of certificate and credential files on `SIGHUP` or change
//! ([`reload`]).
//!
//! The node, the coordinator and the client depend on this crate; it depends on the wire
//! types (`shardflake-proto`) only, so each concept here has one home its users can reach.
#![deny(missing_docs)]

pub mod credentials;
pub mod limit;
pub mod reload;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
