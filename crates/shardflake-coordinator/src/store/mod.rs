//! The storage interface: a small key-value store with compare-and-swap transactions.
//!
//! The coordinator's whole state is a handful of keys per host id, and every change is one
//! [`Txn`]: "if these keys still have these versions, write these values". That is exactly
//! what etcd's `Txn(If(ModRevision(k) == v)).Then(Put..)` offers, so an etcd backend only has
//! to implement [`KvStore`]; the lease, reservation and block rules live above it in
//! [`crate::Coordinator`] and are shared by every backend.
//!
//! Versions follow etcd's `mod_revision`: the store keeps one revision counter that every
//! committed transaction increases by one, and every key written by a transaction gets that
//! revision as its version. An absent key has version 0. Revisions never go backwards, also
//! across restarts.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_maintenance;
mod memory;
mod redb;

#[cfg(feature = "etcd")]
pub use self::etcd::{
    batch_ops, EtcdOptions, EtcdStore, EtcdTls, EtcdUser, ETCD_BATCH_MAX,
    ETCD_COMPACT_EVERY_DEFAULT, ETCD_MAX_TXN_OPS_DEFAULT, ETCD_PREFIX_DEFAULT,
    ETCD_QUOTA_BYTES_DEFAULT,
};
pub use self::memory::MemStore;
#[cfg(any(test, feature = "testing"))]
pub use self::redb::DiskFaults;
pub use self::redb::{
    Driver, RedbOptions, RedbStore, GROUP_COMMIT_BATCH_MAX_DEFAULT, REOPEN_ATTEMPTS_MAX,
    REOPEN_BACKOFF_MAX,
};

/// A boxed future, so that [`KvStore`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The longest key a store must accept, in bytes.
pub const KEY_BYTES_MAX: usize = 256;
/// The largest value a store must accept, in bytes (etcd's default request limit is 1.5 MiB).
pub const VALUE_BYTES_MAX: usize = 64 * 1024;
/// The most compares plus operations in one transaction (etcd's default `--max-txn-ops` is 128).
pub const TXN_OPS_MAX: usize = 64;
/// The most keys one [`KvStore::get_many`] reads.
pub const GET_MANY_MAX: usize = 64;

/// A value and the revision of the transaction that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision that wrote them (never 0).
    pub version: u64,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (a no-op if it is absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// "If every compared key has the expected version, apply every op", atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// `(key, expected version)`; version 0 means "the key is absent".
    pub compares: Vec<(String, u64)>,
    /// Writes applied only if all compares hold.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a compare: `key` must have `version` (0: absent).
    pub fn compare(mut self, key: impl Into<String>, version: u64) -> Self {
        self.compares.push((key.into(), version));
        self
    }
    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }
    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Checks the limits every backend enforces.
    pub fn validate(&self) -> Result<(), StoreError> {
        let n = self.compares.len() + self.ops.len();
        if n > TXN_OPS_MAX {
            return Err(StoreError::TooLarge {
                what: "transaction operations",
                size: n,
                max: TXN_OPS_MAX,
            });
        }
        for key in self
            .compares
            .iter()
            .map(|c| &c.0)
            .chain(self.ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            }))
        {
            if key.len() > KEY_BYTES_MAX {
                return Err(StoreError::TooLarge {
                    what: "key bytes",
                    size: key.len(),
                    max: KEY_BYTES_MAX,
                });
            }
        }
        for op in &self.ops {
            if let Op::Put { value, .. } = op {
                if value.len() > VALUE_BYTES_MAX {
                    return Err(StoreError::TooLarge {
                        what: "value bytes",
                        size: value.len(),
                        max: VALUE_BYTES_MAX,
                    });
                }
            }
        }
        Ok(())
    }
}

/// What became of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// All compares held; the ops are durable with this revision.
    Committed {
        /// The revision every written key now has.
        revision: u64,
    },
    /// A compare failed; nothing was written.
    Conflict {
        /// The first key whose version differed.
        key: String,
        /// Its actual version (0: absent).
        actual_version: u64,
    },
}

/// Counters a backend keeps about its commits and reads, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable commits (fsyncs) made.
    pub commits: u64,
    /// Transactions carried by those commits (committed or conflicting).
    pub txns: u64,
    /// Read requests answered: a get, a scan or a [`KvStore::get_many`] counts one each,
    /// whatever it returns.
    pub reads: u64,
}

/// A value a backend reports at scrape time (`shardflake_coordinator_<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGauge {
    /// The series' name, without the prefix.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its value.
    pub value: u64,
}

/// Whether a store can serve, for `/readyz` and `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// It serves.
    Ready,
    /// It does not serve now and recovers by itself (a wedged file being reopened, an
    /// unreachable etcd, a quota alarm); the reason says which.
    NotReady(String),
    /// It cannot recover by itself: the process should exit, for a supervisor to restart it.
    Failed(String),
}

/// A storage failure. Every variant is an operating condition: the request fails with
/// `store_unavailable` and the caller retries, possibly at another coordinator.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend reported an error.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The backend's writer has stopped (shutting down or crashed).
    #[error("the store is closed")]
    Closed,
    /// A key, value or transaction exceeds a limit.
    #[error("{what}: {size} is above the limit of {max}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A stored value does not decode.
    #[error("stored value under `{key}` is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Refuses a [`KvStore::get_many`] of more than [`GET_MANY_MAX`] keys.
pub(crate) fn check_get_many(keys: &[String]) -> Result<(), StoreError> {
    if keys.len() > GET_MANY_MAX {
        return Err(StoreError::TooLarge {
            what: "keys in one read",
            size: keys.len(),
            max: GET_MANY_MAX,
        });
    }
    Ok(())
}

/// A key-value store with compare-and-swap transactions; see the module docs.
///
/// Every method must be linearizable: a read that starts after a transaction's answer has
/// been received sees it, and a committed transaction is durable before it is answered.
pub trait KvStore: Send + Sync + 'static {
    /// The value and version of `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>>;
    /// The values of `keys` (at most [`GET_MANY_MAX`]), in the same order: one request where
    /// the backend can (an etcd transaction of reads), so that a caller that needs many
    /// records pays one round trip, not one per key.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Versioned>>, StoreError>> {
        Box::pin(async move {
            check_get_many(keys)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(self.get(k).await?);
            }
            Ok(out)
        })
    }
    /// Every key starting with `prefix`, in ascending key order.
    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>>;
    /// How many keys start with `prefix` (linearizable, like a scan), without fetching
    /// their values where the backend can (etcd's count-only range).
    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move { Ok(self.scan(prefix).await?.len()) })
    }
    /// Applies `txn` atomically if its compares hold.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>>;
    /// The store's revision now (linearizable, like a read): the revision of the last
    /// committed transaction, 0 for a new store.
    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Commit counters (zero for backends that do not count).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
    /// Whether the store serves ([`StoreHealth`]); cheap enough for a readiness probe.
    fn health(&self) -> BoxFuture<'_, StoreHealth> {
        Box::pin(async { StoreHealth::Ready })
    }
    /// Values the backend reports for `/metrics` (etcd: its database size and alarms).
    fn gauges(&self) -> Vec<StoreGauge> {
        Vec::new()
    }
    /// A feed that changes whenever any writer commits, this process or another sharing the
    /// store; `None` when only this process writes (the coordinator then wakes its own
    /// waiters). Standby long polls wait on it rather than re-reading on a timer.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
