//! The store a seed runs on, drawn per seed: the in-memory store, or the embedded store
//! (redb's own code, the coordinator's group-commit writer's decisions) on a simulated disk
//! that can fill up. The store outlives every coordinator process: it is the durable state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardflake_coordinator::store::{DiskFaults, KvStore, MemStore, RedbOptions, RedbStore};

use crate::history::{History, HistoryStore};

/// Which store a seed runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// [`MemStore`]: what etcd promises, without etcd. Backups and restores are of this one.
    Memory,
    /// [`RedbStore`] over an in-memory disk, its writes committed on the caller
    /// (`Driver::Inline`); the disk fills up (`disk_full`).
    Redb,
}

impl StoreKind {
    /// The seed's store: every other seed each.
    pub fn draw(x: u64) -> Self {
        if x.is_multiple_of(2) {
            StoreKind::Memory
        } else {
            StoreKind::Redb
        }
    }

    /// Its name in traces and reports.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redb => "redb",
        }
    }

    /// Whether fault kind `kind` can happen on this store: a full disk only under redb, a
    /// backup put back only on the memory store.
    pub fn hosts_fault(self, kind: &str) -> bool {
        match kind {
            "disk_full" => self == StoreKind::Redb,
            "restore" => self == StoreKind::Memory,
            _ => true,
        }
    }
}

/// The seed's store and what the checker reads.
pub(crate) struct SimStore {
    /// What every process writes through: the store, each committed write judged by the
    /// history checker.
    pub(crate) written: Arc<dyn KvStore>,
    /// What the checker reads: the memory store itself, or a copy of every write the redb
    /// store committed. A redb store refuses reads too while it reopens after a failed
    /// write, and what it committed cannot change meanwhile.
    pub(crate) mirror: Arc<MemStore>,
    redb: Option<Arc<RedbStore>>,
    /// The simulated disk's faults (redb).
    pub(crate) disk: Option<Arc<DiskFaults>>,
}

impl SimStore {
    /// A new store of `kind`; redb's reopen backoff runs on the simulation's clock `sim_ms`.
    pub(crate) fn new(
        kind: StoreKind,
        history: Arc<Mutex<History>>,
        sim_ms: Arc<AtomicU64>,
    ) -> anyhow::Result<Self> {
        let mirror = Arc::new(MemStore::shared());
        Ok(match kind {
            StoreKind::Memory => Self {
                written: Arc::new(HistoryStore::new(mirror.clone(), history, None)),
                mirror,
                redb: None,
                disk: None,
            },
            StoreKind::Redb => {
                let faults = Arc::new(DiskFaults::default());
                let redb = Arc::new(RedbStore::open_in_memory(
                    "the simulated disk",
                    faults.clone(),
                    RedbOptions::default(),
                    Arc::new(move || sim_ms.load(Ordering::Relaxed)),
                )?);
                Self {
                    written: Arc::new(HistoryStore::new(
                        redb.clone(),
                        history,
                        Some(mirror.clone()),
                    )),
                    mirror,
                    redb: Some(redb),
                    disk: Some(faults),
                }
            }
        })
    }

    /// At the end of a run, with the disk healthy: what the redb store holds differs from
    /// what it answered as committed (a key lost, changed or appeared), if it does.
    pub(crate) async fn durable_mismatch(&self) -> Option<String> {
        let redb = self.redb.as_ref()?;
        // A reopen that is due (the disk has room again) is made before the reads.
        redb.health().await;
        let read = |store: Arc<dyn KvStore>| async move {
            store.scan("").await.map(|kvs| {
                kvs.into_iter()
                    .map(|(k, v)| (k, v.value))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let held = match read(redb.clone()).await {
            Ok(h) => h,
            Err(e) => return Some(format!("redb: the store cannot be read at the end: {e}")),
        };
        let answered = read(self.mirror.clone())
            .await
            .expect("the mirror is in memory");
        let differs = held
            .iter()
            .filter(|(k, v)| answered.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(answered.keys().filter(|k| !held.contains_key(*k)))
            .next()?;
        Some(format!(
            "redb: the store holds other than what it answered committed ({} keys held, {} answered; first difference at `{differs}`)",
            held.len(),
            answered.len()
        ))
    }
}
