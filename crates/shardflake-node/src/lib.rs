//! The shardflake generator node: `shardflake serve`, an HTTP service that hands out unique,
//! time-sortable 64-bit ids, safe across crashes, restarts and clocks that step.
//!
//! # Endpoints
//!
//! | request | answer |
//! |---|---|
//! | `GET /id` | `{"id": 1790..., "id_str": "1790..."}` |
//! | `GET /ids?count=N` | `1 <= N <= 100000`; JSON `{"ids": [...], "ids_str": [...]}`, or packed 8-byte big-endian ids with `Accept: application/octet-stream`, or one id per line with `Accept: text/plain` |
//! | `GET /inspect/{id}` | the id's fields by name, `timestamp_ms`, `time` |
//! | `GET /ns/{name}/id`, `GET /ns/{name}/ids?count=N` | cluster mode: values of a namespace, unique across the cluster, increasing per node, in the forms of `/id` and `/ids`; `307` to the serving node when another serves it |
//! | `GET /healthz` | `200 {"status": "ok"}` while the process runs |
//! | `GET /readyz` | `200` while the node may issue ids, else `503` with an `error` object saying why (e.g. how far the clock is behind the reserved bound) |
//! | `GET /metrics` | Prometheus text, every series prefixed `shardflake_` |
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with a stable code
//! (see [`shardflake_proto::ErrorCode`] for the table): `400 bad_request`,
//! `400 count_out_of_range`, `400 invalid_id`, `404 not_found`, `405 method_not_allowed`,
//! `406 not_acceptable`, `413 payload_too_large` (no endpoint reads a body; bodies over
//! 1 KiB or chunked are refused), and `503` with `Retry-After` (whole seconds, at least 1) for
//! `clock_behind`, `epoch_in_future`, `reservation_exhausted`, `lease_lost`,
//! `counter_exhausted`, `no_namespace_block`, `request_timeout` and `shutting_down`;
//! `404 unknown_namespace` for a namespace never created; `503 layout_expired` has no
//! `Retry-After` since waiting cannot help.
//!
//! # Restart safety
//!
//! The node never issues a timestamp above a bound it has first written durably to its state
//! file (`<state-dir>/node-<layout>-<node>.state`: write to a temporary file, fsync, rename,
//! fsync the directory). A background keeper keeps the bound [`RESERVE_WINDOW_MS`] ahead of
//! the later of the clock and the last issued timestamp, and extends it when less than
//! [`EXTEND_BELOW_HEADROOM_MS`] is left, or at once when the generator asks. On start the
//! generator begins strictly above the persisted bound, so after `kill -9` — even with the
//! clock set back an hour — no id repeats: with the default clock policy the node waits
//! (not ready, `503 clock_behind`) until the clock passes the bound; with
//! `--clock-policy borrow` it issues above the bound at once, at most
//! `--borrow-ahead-ms-max` ahead of the clock. On SIGTERM the node drains, fences its
//! generator and writes the exact last issued bound. With `--layout temporal` the file holds,
//! per shard, the end of the highest counter block granted (each block is durable before
//! the generator gets it) and the highest shard issued in (the node never goes back to an
//! earlier shard). A corrupt, truncated or foreign state file stops start-up with an error
//! naming the file; a missing one is a first start. A lock file makes a second process with
//! the same layout and node id on the same directory refuse to start.
//!
//! # Cluster mode
//!
//! With `--coordinator URL[,URL]` (`SHARDFLAKE_COORDINATOR`) the node needs no `MACHINE_ID`:
//! a lease keeper (`shardflake-client`) leases a node id from the coordinators, renews it
//! ahead of expiry, and extends the reservation through them (they persist it under the
//! lease's fencing token). Every lease gets its own generator, built strictly above the
//! previous holders' bound and swapped in whole; an id is handed out only if the lease is
//! still valid after it was generated. Without a valid lease the node answers
//! `503 lease_lost` and `/readyz` says why (acquiring, standby, lost). `--standby` waits to
//! take over the node id of a failed node. On SIGTERM the node id is given back.
//!
//! # Clock policies
//!
//! * `wait` (default): a request waits — asynchronously, parking no runtime thread — for a
//!   clock at most `--clock-wait-ms-max` (100 ms) behind; larger steps answer
//!   `503 clock_behind` at once with `Retry-After`, and `/readyz` says how far behind.
//! * `fail`: `503 clock_behind` whenever the clock is behind.
//! * `borrow`: issue on a logical clock at most `--borrow-ahead-ms-max` (default 1 s, at most
//!   24 h) ahead of the wall clock, counted in `shardflake_borrowed_ahead_ms`.
//!
//! Sequence exhaustion inside the generator waits at most one 1 ms tick on the calling
//! thread; requests that could wait longer (more ids than one tick holds, or layouts with
//! 10 ms or 1 s ticks) run on tokio's blocking pool.
//!
//! # Example
//!
//! ```
//! use shardflake_node::{app, AppState, NodeConfig, NodeOptions};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let options = NodeOptions { machine_id: Some(3), state_dir: dir.path().into(), ..NodeOptions::default() };
//! let state = AppState::open(NodeConfig::from_options(&options, 1_790_000_000_000)?)?;
//! let response = app(state)
//!     .oneshot(axum::http::Request::get("/id").body(axum::body::Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod cluster;
mod config;
mod gate;
mod http;
mod issue;
mod metrics;
mod namespaces;
mod observe;
mod openapi;
mod readiness;
mod server;
mod source;
mod standalone;
mod state;
mod state_file;
mod store_generation;

pub use cluster::ClusterHooks;
pub use config::{
    ClientPolicy, ClockPolicyKind, ClusterConfig, ConfigError, NodeClockPolicy, NodeConfig,
    NodeField, NodeOptions, BORROW_AHEAD_MS_MAX_DEFAULT, BORROW_AHEAD_MS_MAX_LIMIT,
    CLIENT_IDS_PER_S_LIMIT, CLOCK_WAIT_MS_MAX_DEFAULT, CLOCK_WAIT_MS_MAX_LIMIT, LAYOUT_DEFAULT,
    LEASE_TTL_MS_DEFAULT, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, MAX_CONNECTIONS_DEFAULT,
    MAX_CONNECTIONS_LIMIT, PORT_DEFAULT, STATE_DIR_DEFAULT,
};
pub use gate::ClientAddr;
pub use http::{app, parse_ids_query, REQUEST_BODY_BYTES_MAX, REQUEST_TIMEOUT_MS};
pub use issue::{EXTENSION_POLL_MS, EXTENSION_WAIT_MS_MAX};
pub use namespaces::{NS_BLOCK_WAIT_MS, NS_STREAMS_MAX, NS_UNKNOWN_TTL_MS, ROUTING_REFRESH_MS};
pub use openapi::openapi;
pub use server::{run, serve_state, RunError, ServeError, SHUTDOWN_DRAIN_MS};
pub use source::DynClock;
pub use standalone::{
    EXTEND_BELOW_HEADROOM_MS, KEEPER_INTERVAL_MS, KEEPER_RETRY_MS_MAX, RESERVE_WINDOW_MS,
    TEMPORAL_BLOCK_MAX, TEMPORAL_BLOCK_MIN, TEMPORAL_BLOCK_TARGET_MS, TEMPORAL_PREFETCH_MS,
};
pub use state::{AppState, StartError, SHUTDOWN_FENCE_WAIT_MS};
pub use state_file::{
    parse_state, seal_state, Reserved, StateError, StateFile, StateIdentity, TemporalState,
};
