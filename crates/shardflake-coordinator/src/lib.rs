//! The shardflake coordinator: leases host ids to generator nodes, persists their reservations
//! before they may use them, hands out counter blocks for temporal shards, and promotes
//! standbys when a host fails.
//!
//! * [`store`]: the [`store::KvStore`] trait (compare-and-swap transactions), the embedded
//!   [`store::RedbStore`] with group commit, an in-memory store, and (with the `testing`
//!   feature) the conformance suite every backend must pass.
//! * [`Coordinator`]: the rules, stateless over a store.
//! * [`http`]: the axum API, and its OpenAPI 3.1 description ([`http::openapi`], served at
//!   `GET /openapi.json`).
//! * [`ServiceOptions`], [`ServiceConfig`] and [`run`]: the service `shardflake coordinator`
//!   runs (the binary parses the flags, sets up logging and handles signals).
//!
//! # Why ids stay unique
//!
//! Every grant of a host id comes with a fencing token larger than every token before it
//! (a persisted counter, incremented in the same transaction as the grant). A holder may
//! issue a timestamp (or a counter value) only at or below a bound the coordinator has
//! persisted for it, and the coordinator persists a new bound only in a compare-and-swap
//! transaction that checks the caller's token is still the id's current token, presented
//! with the lease's secret that only its holder knows, and that its lease is live. The next holder of an id starts strictly above the previous holders' persisted
//! bound (counter blocks: above the high-water mark of every block of that shard and host).
//! So a holder that lost its lease — paused, partitioned, or just slow — can still only issue
//! below a bound that its successor starts above, and can never raise that bound again:
//! uniqueness does not depend on any clock. Clocks only decide *when* an id is handed over
//! (availability), and there the rules err on the late side: the holder measures its lease
//! from the send time of its last acknowledged renewal minus a drift margin, the coordinator
//! from after it committed that renewal, and a restarted coordinator treats every lease as
//! live for one full TTL on its monotonic clock, because it cannot know when the last renewal
//! before the crash was acknowledged.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use shardflake::Layout;
//! use shardflake_coordinator::{store::MemStore, Coordinator, CoordinatorConfig, ManualTime};
//! use shardflake_proto::coord::{AcquireRequest, LeaseSecret, ReservationRequest};
//!
//! let time = ManualTime::new(1_800_000_000_000);
//! let c = Coordinator::open(
//!     Arc::new(MemStore::new()),
//!     Arc::new(time.clone()),
//!     CoordinatorConfig::new(Layout::preset("twitter").unwrap()),
//! )
//! .await
//! .unwrap();
//! let secret = LeaseSecret::from_bytes([7; 16]); // drawn at random by a real holder
//! let acquire = AcquireRequest { name: "node-a".into(), secret: secret.clone(), ..Default::default() };
//! let lease = c.acquire(&acquire).await.unwrap();
//! assert_eq!((lease.host_id, lease.token, lease.start_above_ms), (0, 1, 0));
//! let extend = ReservationRequest { token: 1, secret, until_ms: 1_800_000_002_000 };
//! let r = c.extend_reservation(0, &extend).await.unwrap();
//! assert_eq!(r.reserved_until_ms, 1_800_000_002_000);
//! // The host id and the token are public (`GET /v1/hosts`); without the secret they do nothing.
//! let stolen = ReservationRequest { secret: LeaseSecret::from_bytes([8; 16]), ..extend };
//! assert!(c.extend_reservation(0, &stolen).await.is_err());
//! # });
//! ```
#![deny(missing_docs)]

pub mod audit;
mod blocks;
mod config;
mod coordinator;
mod error;
mod fence;
mod generation;
mod housekeeping;
pub mod http;
mod leases;
mod meta;
mod metrics;
mod namespaces;
mod openapi;
mod records;
mod routing;
mod service;
mod standby;
mod status;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod time;

pub use config::{
    CoordinatorConfig, AUDIT_WINDOW_DEFAULT, AUDIT_WINDOW_MAX, BLOCK_MIN_DEFAULT,
    NS_NODE_CAPACITY_PER_S_DEFAULT, POOL_SIZE_MAX, RESERVATION_AHEAD_MS_MAX_DEFAULT,
    TTL_MS_DEFAULT, TTL_MS_MAX, TTL_MS_MIN,
};
pub use coordinator::Coordinator;
pub use error::CoordError;
pub use generation::{HostFloors, Restored, REPAIR_TOKEN_MARGIN};
pub use housekeeping::{Collected, Housekeeper, GC_EVERY_MS, LEAD_TTL_MS, SHARDS_KEPT};
pub use leases::Granted;
pub use meta::ClusterRecord;
pub use metrics::{Metrics, Scrape};
pub use namespaces::{
    assign, ASSIGN_BACKSTOP_MS, ASSIGN_INTERVAL_MS, GROW_AT, NAMESPACES_MAX, NS_BLOCK_LIMIT,
    NS_BLOCK_MAX_DEFAULT, NS_BLOCK_MIN_DEFAULT, SHRINK_AFTER_MS, SHRINK_AT, USAGE_REPORTS_PER_TXN,
};
pub use records::{
    BlockRecord, HostLog, HostRecord, LoggedBlock, LoggedNsBlock, NamespaceRecord, NsBlock,
    NsReturned, NsUseRecord, TemporalRecord, TokenRange,
};
pub use routing::{
    Routed, EPOCH_BUMP_DELAY_MS, ROUTE_EPOCH_KEY, ROUTING_AGE_MAX_MS, ROUTING_CHECK_MS,
};
/// Holt's linear smoothing, the library's one forecaster (block sizing in both modes).
pub use shardflake::forecast;
pub use standby::STANDBY_WAIT_MS_MAX;
#[cfg(any(test, feature = "testing"))]
pub use testing::domain as domain_conformance;
pub use time::{ManualTime, SystemTimeSource, TimeSource};

pub use service::{
    run, run_with_store, serve, RunError, ServiceConfig, ServiceOptions, StoreConfig,
    ETCD_PASSWORD_ENV, NS_HORIZON_MS_MAX, NS_HORIZON_MS_MIN, SHUTDOWN_GRACE_MS, STORE_FILE_NAME,
};
