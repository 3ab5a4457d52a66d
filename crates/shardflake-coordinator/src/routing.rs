//! The routing table (`GET /v1/routing`), kept in memory so that what a call costs does not
//! grow with the number of hosts or namespaces.
//!
//! Nodes ask for the table every few seconds and SDKs every ten: at a thousand nodes that is
//! hundreds of calls a second, each of which used to scan every host and namespace record.
//! Now each coordinator builds the table from one scan of each and answers every call from
//! memory, with an `ETag` (`"<epoch>-<digest>"`: the version of the routing epoch key and a
//! digest of the body, so coordinators that see the same table give the same tag) and
//! `304 Not Modified` to a caller that already has it.
//!
//! # When the table is built again
//!
//! What routing depends on changes in three ways, each noticed without a scan:
//!
//! * **A write that changes it** (a new lease or a repeated acquire, which may carry a new
//!   URL; a release; a namespace created or deleted; an assignment that moved): the
//!   coordinator that made it drops its own table at once and, within
//!   [`EPOCH_BUMP_DELAY_MS`], writes the routing epoch key ([`ROUTE_EPOCH_KEY`]); writes
//!   made together share one epoch write, so a burst of grants costs one, and the epoch is
//!   no hot key inside the grants' transactions. The other coordinators read that key at
//!   most once per [`ROUTING_CHECK_MS`] (one read, whatever the cluster's size) and build
//!   again when its version moved.
//! * **A lease that lapses** without a write (a node that died): the table knows when the
//!   earliest of its leases lapses by this coordinator's observation (the monotonic rule of
//!   `leases.rs`) and is built again then. Renewals do not change routing and are not
//!   watched: one build per lease TTL at most, however many hosts renew.
//! * **An epoch write that was lost** (a coordinator stopped between its write and the epoch
//!   write): every table is built again after [`ROUTING_AGE_MAX_MS`] at the latest.
//!
//! Routing is advice (a node that is not assigned a namespace redirects; a client that
//! reaches a dead node tries the next): these delays cost a caller a retry, never a value.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardflake_proto::coord::LeaseState;
use shardflake_proto::ns::{RoutedNamespace, RoutedNode, RoutingTable};

use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::records;
use crate::store::Txn;

/// The routing epoch key: rewritten (its value is the writer's clock, for operators) after
/// every write that changes the routing table.
pub const ROUTE_EPOCH_KEY: &str = "meta/route_epoch";
/// How often a coordinator reads the routing epoch to learn of other coordinators' changes
/// (ms).
pub const ROUTING_CHECK_MS: u64 = 1_000;
/// The oldest a routing table is served (ms).
pub const ROUTING_AGE_MAX_MS: u64 = 30_000;
/// How long a coordinator gathers routing changes into one epoch write (ms).
pub const EPOCH_BUMP_DELAY_MS: u64 = 50;

/// A routing table as served: the table, its JSON body and its entity tag.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The table.
    pub table: RoutingTable,
    /// Its JSON encoding, the body of `GET /v1/routing`.
    pub body: axum::body::Bytes,
    /// Its entity tag, quoted (`"<epoch>-<digest>"`).
    pub etag: String,
}

/// A built table and what it was built from.
struct Built {
    routed: Arc<Routed>,
    /// The version of [`ROUTE_EPOCH_KEY`] read before the scans (0: never written).
    epoch: u64,
    /// The value of [`RoutingCache::changes`] before the scans.
    changes: u64,
    built_mono: u64,
    checked_mono: u64,
    /// When the earliest lease in the table lapses unless renewed (mono ms).
    lapses_mono: u64,
}

/// A coordinator's routing table and what invalidates it.
#[derive(Default)]
pub(crate) struct RoutingCache {
    built: Mutex<Option<Built>>,
    /// One build at a time: callers that find the table stale wait for it.
    building: tokio::sync::Mutex<()>,
    /// Routing changes this coordinator committed.
    changes: AtomicU64,
    /// An epoch write is scheduled.
    bump_pending: Arc<AtomicBool>,
    /// Tables built (for tests and metrics).
    builds: AtomicU64,
}

/// What a cached table needs before it is served.
enum Freshness {
    Fresh(Arc<Routed>),
    /// Served if the epoch still has this version.
    CheckEpoch(u64),
    Stale,
}

impl RoutingCache {
    fn freshness(&self, now_mono: u64) -> Freshness {
        let built = self.built.lock().expect("poisoned");
        let Some(b) = built.as_ref() else {
            return Freshness::Stale;
        };
        if b.changes != self.changes.load(Ordering::Acquire)
            || now_mono >= b.lapses_mono
            || now_mono >= b.built_mono.saturating_add(ROUTING_AGE_MAX_MS)
        {
            return Freshness::Stale;
        }
        if now_mono < b.checked_mono.saturating_add(ROUTING_CHECK_MS) {
            return Freshness::Fresh(b.routed.clone());
        }
        Freshness::CheckEpoch(b.epoch)
    }

    /// Marks the cached table as checked against the epoch at `now_mono`.
    fn checked(&self, now_mono: u64) -> Option<Arc<Routed>> {
        let mut built = self.built.lock().expect("poisoned");
        built.as_mut().map(|b| {
            b.checked_mono = now_mono;
            b.routed.clone()
        })
    }
}

impl Coordinator {
    /// The routing table: the live nodes with an advertised URL, and each namespace's
    /// serving nodes, from memory while nothing it depends on changed (module docs).
    pub async fn routing(&self) -> Result<RoutingTable, CoordError> {
        Ok(self.routed().await?.table.clone())
    }

    /// The routing table as served, with its body and entity tag.
    pub async fn routed(&self) -> Result<Arc<Routed>, CoordError> {
        let cache = &self.routing;
        match cache.freshness(self.time.mono_ms()) {
            Freshness::Fresh(r) => return Ok(r),
            Freshness::CheckEpoch(epoch) => {
                if self.route_epoch().await? == epoch {
                    if let Some(r) = cache.checked(self.time.mono_ms()) {
                        return Ok(r);
                    }
                }
            }
            Freshness::Stale => {}
        }
        let _building = cache.building.lock().await;
        // Another caller may have built it while this one waited.
        if let Freshness::Fresh(r) = cache.freshness(self.time.mono_ms()) {
            return Ok(r);
        }
        self.build_routing().await
    }

    /// Builds the routing table from the store now, and serves it from then on: what every
    /// call did before the table was kept in memory (for benchmarks).
    pub async fn rebuild_routing(&self) -> Result<Arc<Routed>, CoordError> {
        let _building = self.routing.building.lock().await;
        self.build_routing().await
    }

    /// Tables this coordinator built since it started.
    pub fn routing_builds(&self) -> u64 {
        self.routing.builds.load(Ordering::Relaxed)
    }

    /// The version of the routing epoch key (0: never written).
    pub(crate) async fn route_epoch(&self) -> Result<u64, CoordError> {
        Ok(self
            .store
            .get(ROUTE_EPOCH_KEY)
            .await?
            .map_or(0, |v| v.version))
    }

    /// Builds the table from the store: the epoch first, then one scan of the hosts (with
    /// their heartbeats) and one of the namespaces.
    async fn build_routing(&self) -> Result<Arc<Routed>, CoordError> {
        let cache = &self.routing;
        let changes = cache.changes.load(Ordering::Acquire);
        let epoch = self.route_epoch().await?;
        let now_mono = self.time.mono_ms();
        let mut nodes = Vec::new();
        let mut lapses_mono = u64::MAX;
        for (rec, _) in records::load_hosts(self.store.as_ref()).await? {
            let Some(url) = &rec.url else { continue };
            if self.lease_state(&rec, now_mono) != LeaseState::Live {
                continue;
            }
            if let Some(at) = self.expiry_mono(&rec) {
                lapses_mono = lapses_mono.min(at);
            }
            nodes.push(RoutedNode {
                host_id: u64::from(rec.host_id),
                url: url.clone(),
            });
        }
        let namespaces = records::load_namespaces(self.store.as_ref())
            .await?
            .into_iter()
            .map(|(rec, _)| RoutedNamespace {
                serving: rec.serving.iter().map(|&h| u64::from(h)).collect(),
                name: rec.name,
            })
            .collect();
        let table = RoutingTable { nodes, namespaces };
        let body = serde_json::to_vec(&table)
            .map_err(|e| CoordError::BadRequest(format!("routing table encoding: {e}")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let routed = Arc::new(Routed {
            table,
            body: body.into(),
            etag: format!("\"{epoch}-{hex}\""),
        });
        let built_mono = self.time.mono_ms();
        *cache.built.lock().expect("poisoned") = Some(Built {
            routed: routed.clone(),
            epoch,
            changes,
            built_mono,
            checked_mono: built_mono,
            lapses_mono,
        });
        cache.builds.fetch_add(1, Ordering::Relaxed);
        self.metrics.routing_builds.inc();
        Ok(routed)
    }

    /// Notes a committed write that changes the routing table: this coordinator's table is
    /// stale now, and the epoch is written within [`EPOCH_BUMP_DELAY_MS`] for the others
    /// (module docs). Without a tokio runtime the epoch is not written (tests that drive a
    /// coordinator by hand); the own table is dropped all the same.
    pub(crate) fn routing_changed(&self) {
        let cache = &self.routing;
        cache.changes.fetch_add(1, Ordering::AcqRel);
        if cache.bump_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            cache.bump_pending.store(false, Ordering::Release);
            return;
        };
        // Weakly: a coordinator dropped meanwhile lets its store go.
        let store = Arc::downgrade(&self.store);
        let time = self.time.clone();
        let pending = cache.bump_pending.clone();
        rt.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(EPOCH_BUMP_DELAY_MS)).await;
            pending.store(false, Ordering::Release);
            let Some(store) = store.upgrade() else { return };
            let txn = Txn::new().put(ROUTE_EPOCH_KEY, time.wall_ms().to_string().into_bytes());
            if let Err(e) = store.txn(txn).await {
                // The other coordinators notice by the age limit instead.
                tracing::debug!(error = %e, "routing epoch not written");
            }
        });
    }
}
