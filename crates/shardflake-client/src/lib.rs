//! Client SDK of shardflake: ids from the nodes, and the coordinator's API.
//!
//! * [`IdClient`] (and [`BlockingIdClient`]): ids from the nodes (`shardflake serve`), plain
//!   or per namespace, prefetched ahead of need from a forecast of the caller's rate, with
//!   failover between nodes; nodes given as URLs or discovered from the coordinators'
//!   routing table. [`IdStream`] is its lock-free fast path.
//! * [`CoordinatorClient`]: the coordinator's HTTP API over a list of coordinator URLs, with
//!   failover between them, a scoped credential as a bearer token, and TLS.
//! * [`LeaseKeeper`]: holds a host-id lease for a generator node: acquires it (or waits as a
//!   standby), renews it predictively, extends the reservation ahead of need, and fences the
//!   node itself when the lease may have expired.
//!
//! A node in cluster mode:
//!
//! ```no_run
//! # async fn node() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use shardflake::Layout;
//! use shardflake_client::{CoordinatorClient, KeeperConfig, LeaseKeeper};
//!
//! let client = CoordinatorClient::new(
//!     CoordinatorClient::split_urls("http://10.0.0.1:7070,http://10.0.0.2:7070"),
//!     std::env::var("SHARDFLAKE_NODE_TOKEN").ok(), // the node credential
//! )?;
//! let keeper = LeaseKeeper::start(Arc::new(client), KeeperConfig::new("node-a", 10_000));
//! let lease = keeper.wait_active().await.expect("keeper running");
//! let generator = lease.snowflake()?.build()?; // the cluster's layout, the leased host id
//! let id = generator.next_id()?;
//! lease.check()?; // after generating: discard the id if the lease ran out meanwhile
//! # let _ = id;
//! keeper.shutdown().await; // stops issuing, then releases the host id
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod blocking;
mod client;
mod ids;
mod keeper;
mod retry;
mod transport;

pub use blocking::{BlockingIdClient, BlockingIdStream, BlockingNamespace};
pub use client::{ClientError, CoordinatorClient, REQUEST_TIMEOUT_MS_DEFAULT, URLS_MAX};
pub use ids::{
    IdClient, IdClientBuilder, IdError, IdStream, Namespace, NodeFailure, StreamStats,
    CALL_TIMEOUT_MS_DEFAULT, LOCAL_CHUNK_MAX, NAMESPACES_MAX, NEXT_IDS_MAX, NODES_MAX,
    NODE_REQUEST_TIMEOUT_MS_DEFAULT, PREFETCH_HORIZON_MS_DEFAULT, PREFETCH_MAX_DEFAULT,
    PREFETCH_MIN_DEFAULT, ROUTING_REFRESH_MS_DEFAULT, TIMEOUT_MS_MAX,
};
pub use keeper::{
    ActiveLease, KeeperConfig, LeaseKeeper, MemberState, NsHeldSource, NsUsageSource, TemporalLink,
    LATENCY_MULTIPLIER_DEFAULT, RENEW_MARGIN_MS_DEFAULT, TTL_MS_DEFAULT,
};
pub use retry::Retry;
pub use shardflake_proto::coord as proto;
pub use shardflake_runtime::credentials::BearerToken;
pub use transport::{
    install_default_provider, ClientTlsFiles, ReqwestTransport, Transport, TransportFuture,
};
