//! Wire types of shardflake: the only place its HTTP formats are defined.
//!
//! * [`node`]: what a generator node (`shardflake serve`) answers.
//! * [`auth`]: credential scopes (read, node, admin) and where credentials come from.
//! * [`audit`]: the grant logs of `GET /v1/audit` and the check that no two grants overlap.
//! * [`coord`]: the coordinator's API (leases, reservations, counter blocks, standbys).
//! * [`ns`]: namespaces (segment mode), the routing table and the rendezvous order.
//! * [`secret`]: [`secret::LeaseSecret`], what authorises every call under a lease.
//! * [`generation`]: the store generation every coordinator answer carries, by which a
//!   store restored from a backup is noticed.
//! * [`error`]: the error body `{"error": {"code": "...", "message": "..."}}` and the stable
//!   [`ErrorCode`]s every service uses: one registry for the node and the coordinator.
//! * `ApiError` (feature `axum`): the one error response of every service.
//! * `openapi` (feature `openapi`): every type above as an OpenAPI 3.1 schema, and the
//!   error responses, for the descriptions the node and the coordinator serve at
//!   `GET /openapi.json`.
//!
//! Clients and servers share these types, so a format changes in one place.
//!
//! ```
//! use shardflake_proto::{ErrorBody, ErrorCode};
//!
//! let body: ErrorBody = serde_json::from_str(
//!     r#"{"error":{"code":"clock_behind","message":"clock moved backwards by 5 ms"}}"#,
//! )?;
//! assert_eq!(body.error.code, ErrorCode::ClockBehind);
//! assert_eq!(body.error.code.http_status(), 503);
//! assert!(body.error.code.is_retryable());
//! # Ok::<(), serde_json::Error>(())
//! ```
#![deny(missing_docs)]

pub mod audit;
pub mod auth;
pub mod coord;
pub mod error;
pub mod generation;
pub mod node;
pub mod ns;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "axum")]
mod response;
pub mod secret;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
#[cfg(feature = "axum")]
pub use response::{ApiError, NamePath, RETRY_AFTER_MS_DEFAULT};
