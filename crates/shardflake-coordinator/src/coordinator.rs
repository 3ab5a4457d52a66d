//! The [`Coordinator`]: stateless over a [`KvStore`], so several coordinator processes can
//! share one etcd store. Every operation reads the keys it needs, decides, and commits one
//! compare-and-swap transaction through [`Coordinator::cas_loop`], which starts over from a
//! fresh read when another writer came first.
//!
//! The rules live beside it by concern: `leases.rs` (grants, renewals, reservations, the
//! expiry rule), `blocks.rs` (counter blocks and their sizing), `standby.rs` (the standby
//! long poll), `status.rs` (what operators and nodes are shown); `records.rs` is what is
//! stored and how.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::CoordinatorConfig;
use crate::error::CoordError;
use crate::generation::Generations;
use crate::leases::Observation;
use crate::meta::{self, ClusterRecord};
use crate::metrics::Metrics;
use crate::standby::Standbys;
use crate::store::{BoxFuture, KvStore, Txn, TxnOutcome};
use crate::time::TimeSource;

/// Attempts of one compare-and-swap loop before giving up with `Contended`.
const CAS_ATTEMPTS_MAX: u32 = 64;

/// The coordinator: leases with fencing tokens, fenced reservations, counter blocks and
/// standby promotion over a [`KvStore`].
pub struct Coordinator {
    pub(crate) store: Arc<dyn KvStore>,
    pub(crate) cluster: ClusterRecord,
    pub(crate) time: Arc<dyn TimeSource>,
    pub(crate) config: CoordinatorConfig,
    /// What this process has seen of every lease, for the monotonic expiry rule.
    pub(crate) observed: Mutex<HashMap<u32, Observation>>,
    pub(crate) standby: Standbys,
    pub(crate) metrics: Metrics,
    pub(crate) generations: Generations,
    /// The routing table, kept in memory.
    pub(crate) routing: crate::routing::RoutingCache,
    /// The background writer of usage reports, once started.
    pub(crate) report_writer:
        std::sync::OnceLock<tokio::sync::mpsc::Sender<crate::namespaces::ReportJob>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one attempt of an operation decided from what it read.
pub(crate) enum Step<'a, T> {
    /// The store already holds what was asked for: answer without writing.
    Answer(T),
    /// Commit the transaction; once its compares have held, run the closure (the effects of
    /// the write: metrics, the lease observation, logs) and answer with what it returns.
    Commit(Txn, Box<dyn FnOnce() -> T + Send + 'a>),
}

impl<'a, T> Step<'a, T> {
    /// Commit `txn`, then answer with `then()`.
    pub(crate) fn commit(txn: Txn, then: impl FnOnce() -> T + Send + 'a) -> Self {
        Step::Commit(txn, Box::new(then))
    }
}

impl Coordinator {
    /// A coordinator over `store`, reading the time from `time`. Reads the store's identity,
    /// creating it if the store is new; fails if the store was created for another layout.
    pub async fn open(
        store: Arc<dyn KvStore>,
        time: Arc<dyn TimeSource>,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordError> {
        let cluster = meta::open(store.as_ref(), &config.layout, time.wall_ms()).await?;
        let generations =
            Generations::load(store.as_ref(), &cluster.store_id, &cluster.generation_key).await?;
        Ok(Self {
            store,
            cluster,
            time,
            config,
            observed: Mutex::new(HashMap::new()),
            standby: Standbys::default(),
            metrics: Metrics::default(),
            generations,
            routing: crate::routing::RoutingCache::default(),
            report_writer: std::sync::OnceLock::new(),
        })
    }

    /// The store's identity, sent with every response.
    pub fn store_id(&self) -> &str {
        &self.cluster.store_id
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Operation counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Why the coordinator cannot serve grants now, if it cannot (empty: ready): what the
    /// store says of itself ([`crate::store::StoreHealth`]).
    pub async fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(r) = self.generations.restored() {
            problems.push(format!(
                "store restored: it is at generation {}, but generation {} was seen; no grants until `shardflake repair`",
                r.store_generation, r.seen_generation
            ));
        }
        match self.store.health().await {
            crate::store::StoreHealth::Ready => {}
            crate::store::StoreHealth::NotReady(why) | crate::store::StoreHealth::Failed(why) => {
                problems.push(why)
            }
        }
        problems
    }

    /// Refuses a host id outside the pool before anything is read.
    pub(crate) fn check_host(&self, host_id: u32) -> Result<(), CoordError> {
        if host_id >= self.config.pool_size {
            return Err(CoordError::HostOutOfRange {
                host_id,
                pool_size: self.config.pool_size,
            });
        }
        Ok(())
    }

    /// Runs `step` (read, check, decide) and commits the transaction it returns. A
    /// transaction whose compares fail was overtaken by another writer, possibly another
    /// coordinator on the same store, so `step` runs again on a fresh read; after
    /// [`CAS_ATTEMPTS_MAX`] conflicts the operation fails with `Contended` and the caller
    /// retries later. An error from `step` ends the loop at once: it is an answer (a stale
    /// token, an expired lease), not a conflict.
    pub(crate) async fn cas_loop<'a, T>(
        &'a self,
        mut step: impl FnMut() -> BoxFuture<'a, Result<Step<'a, T>, CoordError>>,
    ) -> Result<T, CoordError> {
        self.refuse_if_restored().await?;
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (txn, then) = match step().await? {
                Step::Answer(value) => return Ok(value),
                Step::Commit(txn, then) => (txn, then),
            };
            let floor = self.generations.revision();
            match self.store.txn(txn).await? {
                TxnOutcome::Committed { revision } => {
                    if !self.generations.observe_revision(floor, revision) {
                        // The store went back under this coordinator (an etcd restored from
                        // a snapshot): what it just granted may have been granted before.
                        // It is not answered, so it is never used.
                        let seen = self.generations.current();
                        let now = self.generations.at(revision);
                        self.store_went_back(seen, now).await?;
                    }
                    return Ok(then());
                }
                TxnOutcome::Conflict { .. } => {
                    self.metrics.cas_conflicts.inc();
                }
            }
        }
        Err(CoordError::Contended {
            attempts: CAS_ATTEMPTS_MAX,
        })
    }
}
