//! Client SDK for the shardflake coordinator.
//!
//! * [`CoordinatorClient`]: the coordinator's HTTP API over a list of coordinator URLs, with
//!   failover between them and the cluster token as a bearer token.
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
//!     std::env::var("SHARDFLAKE_CLUSTER_TOKEN").ok(),
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

mod client;
mod keeper;
mod retry;
mod transport;

pub use client::{ClientError, CoordinatorClient, REQUEST_TIMEOUT_MS_DEFAULT, URLS_MAX};
pub use keeper::{
    ActiveLease, KeeperConfig, LeaseKeeper, MemberState, NsUsageSource, TemporalLink,
    LATENCY_MULTIPLIER_DEFAULT, RENEW_MARGIN_MS_DEFAULT, TTL_MS_DEFAULT,
};
pub use retry::Retry;
pub use shardflake_proto::coord as proto;
pub use transport::{ReqwestTransport, Transport, TransportFuture};
