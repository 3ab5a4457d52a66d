//! Conformance suites, compiled only with the `testing` feature (and in this crate's own
//! tests), so that they are no part of the coordinator a binary links.
//!
//! * [`crate::store::conformance`]: what every [`crate::store::KvStore`] backend must do; its
//!   `run_all` also runs [`domain`] on the backend.
//! * [`domain`]: the coordinator's lease, reservation and block rules over any store.
//! * [`namespaces`]: the namespace rules (blocks, returns, forecasts, routing) over any store.
//! * [`adversary`]: grants and returns interleaved with callers that are not the holder and
//!   holders that misreport their block: no value is granted twice.
//!
//! A backend outside this crate enables the feature in its dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! shardflake-coordinator = { path = "...", features = ["testing"] }
//! ```

use std::sync::Arc;

use shardflake_proto::coord::{AcquireRequest, LeaseSecret};

use crate::store::KvStore;
use crate::{Coordinator, CoordinatorConfig, ManualTime};

pub mod adversary;
pub mod domain;
pub mod namespaces;

/// The wall time every suite starts at, Unix ms (2027): a fixed clock, so no check depends
/// on the day it runs.
pub(crate) const T0: u64 = 1_800_000_000_000;

/// A coordinator on `store` whose clock starts at [`T0`] and moves only when told.
pub(crate) async fn manual_coordinator(
    store: Arc<dyn KvStore>,
    config: CoordinatorConfig,
) -> (Coordinator, ManualTime) {
    let time = ManualTime::new(T0);
    let c = Coordinator::open(store, Arc::new(time.clone()), config)
        .await
        .expect("the store opens");
    (c, time)
}

/// The secret the suites' holders present. One secret for every holder keeps the checks
/// about tokens about tokens; the checks about secrets use others.
pub fn secret() -> LeaseSecret {
    LeaseSecret::from_bytes([0x5e; 16])
}

/// An acquire by `name` for a lease of `ttl_ms`.
pub(crate) fn acquire_req(name: &str, ttl_ms: u64) -> AcquireRequest {
    AcquireRequest {
        secret: secret(),
        name: name.into(),
        ttl_ms: Some(ttl_ms),
        ..Default::default()
    }
}
