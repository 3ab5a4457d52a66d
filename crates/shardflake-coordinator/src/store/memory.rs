//! An in-memory [`KvStore`] for unit tests and simulation. Nothing survives the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{
    check_get_many, BoxFuture, KvStore, Op, StoreError, StoreStats, Txn, TxnOutcome, Versioned,
};

/// A [`KvStore`] in a `BTreeMap` behind a mutex.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
    txns: AtomicU64,
    reads: AtomicU64,
    /// The change feed of a store shared by several coordinators ([`MemStore::shared`]).
    feed: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct MemInner {
    revision: u64,
    map: BTreeMap<String, Versioned>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the store as it is now, revision included: a backup, to be opened later as
    /// a restored store (tests of what a restore costs).
    pub fn copy(&self) -> Self {
        let inner = self.inner.lock().expect("poisoned");
        Self {
            inner: Mutex::new(MemInner {
                revision: inner.revision,
                map: inner.map.clone(),
            }),
            ..Self::default()
        }
    }

    /// Puts the contents and revision of `backup` back in place, as restoring a backup under
    /// running coordinators does (an etcd snapshot restored, a redb file copied back): the
    /// revision goes back with it. For simulations of a restore.
    pub fn restore_from(&self, backup: &MemStore) {
        let (revision, map) = {
            let b = backup.inner.lock().expect("poisoned");
            (b.revision, b.map.clone())
        };
        {
            let mut inner = self.inner.lock().expect("poisoned");
            inner.revision = revision;
            inner.map = map;
        }
        if let Some(feed) = &self.feed {
            feed.send_replace(revision);
        }
    }

    /// An empty store for several coordinators in one process (a simulation): like etcd, it
    /// offers a change feed ([`KvStore::changes`]), so that a standby long poll on one
    /// coordinator wakes on another's writes.
    pub fn shared() -> Self {
        Self {
            feed: Some(tokio::sync::watch::channel(0).0),
            ..Self::default()
        }
    }
}

/// Applies `txn` to `map` if its compares hold; shared by the memory and redb backends' logic.
pub(crate) fn check_compares<F>(
    txn: &Txn,
    mut version_of: F,
) -> Result<Option<TxnOutcome>, StoreError>
where
    F: FnMut(&str) -> Result<u64, StoreError>,
{
    for (key, expected) in &txn.compares {
        let actual = version_of(key)?;
        if actual != *expected {
            return Ok(Some(TxnOutcome::Conflict {
                key: key.clone(),
                actual_version: actual,
            }));
        }
    }
    Ok(None)
}

impl KvStore for MemStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.inner.lock().expect("poisoned").map.get(key).cloned())
        })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Versioned>>, StoreError>> {
        Box::pin(async move {
            check_get_many(keys)?;
            self.reads.fetch_add(1, Ordering::Relaxed);
            let inner = self.inner.lock().expect("poisoned");
            Ok(keys.iter().map(|k| inner.map.get(k).cloned()).collect())
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let inner = self.inner.lock().expect("poisoned");
            Ok(inner
                .map
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        })
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let inner = self.inner.lock().expect("poisoned");
            Ok(inner
                .map
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .count())
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.validate()?;
            self.txns.fetch_add(1, Ordering::Relaxed);
            let mut inner = self.inner.lock().expect("poisoned");
            let map = &inner.map;
            if let Some(conflict) =
                check_compares(&txn, |k| Ok(map.get(k).map_or(0, |v| v.version)))?
            {
                return Ok(conflict);
            }
            inner.revision += 1;
            let revision = inner.revision;
            for op in txn.ops {
                match op {
                    Op::Put { key, value } => {
                        inner.map.insert(
                            key,
                            Versioned {
                                value,
                                version: revision,
                            },
                        );
                    }
                    Op::Delete { key } => {
                        inner.map.remove(&key);
                    }
                }
            }
            drop(inner);
            if let Some(feed) = &self.feed {
                feed.send_replace(revision);
            }
            Ok(TxnOutcome::Committed { revision })
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.inner.lock().expect("poisoned").revision)
        })
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.feed.as_ref().map(|f| f.subscribe())
    }

    fn stats(&self) -> StoreStats {
        let txns = self.txns.load(Ordering::Relaxed);
        StoreStats {
            commits: txns,
            txns,
            reads: self.reads.load(Ordering::Relaxed),
        }
    }
}
