//! The embedded store: one redb file, every commit fsynced, concurrent commits grouped.
//!
//! # Group commit
//!
//! One writer thread owns all writes. Callers send their [`Txn`] over a channel with a
//! one-shot reply slot and wait. The writer takes the first waiting transaction, then every
//! other one already queued (up to [`RedbOptions::batch_max`]), applies them in order inside
//! one redb write transaction (each checks its compares against the state left by the ones
//! before it and gets its own revision), commits once with `Durability::Immediate`, and only
//! then answers every caller in the batch. One fsync thus covers as many transactions as
//! arrived during the previous fsync; no caller waits for a timer, and none is answered before
//! its write is on disk. If the commit fails, every caller in the batch gets the error.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::memory::check_compares;
use super::{BoxFuture, KvStore, Op, StoreError, StoreStats, Txn, TxnOutcome, Versioned};

/// Keys to version-prefixed values: 8 bytes of big-endian version, then the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The store's revision counter under the key `revision`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// Default for [`RedbOptions::batch_max`]: transactions per commit.
pub const GROUP_COMMIT_BATCH_MAX_DEFAULT: usize = 1024;
/// Transactions that may wait for the writer before callers are held back.
const WRITE_QUEUE_MAX: usize = 16 * 1024;

/// Options of the embedded store.
#[derive(Debug, Clone, Copy)]
pub struct RedbOptions {
    /// The most transactions one commit carries; 1 turns group commit off.
    pub batch_max: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            batch_max: GROUP_COMMIT_BATCH_MAX_DEFAULT,
        }
    }
}

type Reply = oneshot::Sender<Result<TxnOutcome, StoreError>>;

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    txns: AtomicU64,
}

/// A [`KvStore`] in one redb file with group commit; see the module docs.
pub struct RedbStore {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<(Txn, Reply)>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("stats", &self.stats())
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode(key: &str, raw: &[u8]) -> Result<Versioned, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            reason: format!("{} bytes, shorter than the 8-byte version", raw.len()),
        });
    }
    let version = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    Ok(Versioned {
        value: raw[8..].to_vec(),
        version,
    })
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    ///
    /// redb locks the file, so a second coordinator on the same file fails here instead of
    /// corrupting it.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, StoreError> {
        let db = Database::create(path.as_ref()).map_err(|e| {
            StoreError::Backend(format!("cannot open {}: {e}", path.as_ref().display()))
        })?;
        // Create the tables up front so that readers never see them missing.
        let w = db.begin_write().map_err(backend)?;
        {
            w.open_table(KV).map_err(backend)?;
            let mut meta = w.open_table(META).map_err(backend)?;
            if meta.get(REVISION_KEY).map_err(backend)?.is_none() {
                meta.insert(REVISION_KEY, 0).map_err(backend)?;
            }
        }
        w.commit().map_err(backend)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let counters = Arc::new(Counters::default());
        let writer = {
            let db = db.clone();
            let counters = counters.clone();
            let batch_max = options.batch_max.max(1);
            std::thread::Builder::new()
                .name("redb-writer".into())
                .spawn(move || writer_loop(&db, rx, batch_max, &counters))
                .map_err(backend)?
        };
        Ok(Self {
            db,
            tx: Some(tx),
            writer: Some(writer),
            counters,
        })
    }

    /// Stops the writer after the queued transactions and releases the file lock.
    pub async fn close(mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop; it is not joined here because drop may
        // run on an async worker thread.
        self.tx.take();
    }
}

fn writer_loop(
    db: &Database,
    mut rx: mpsc::Receiver<(Txn, Reply)>,
    batch_max: usize,
    counters: &Counters,
) {
    let mut batch: Vec<(Txn, Reply)> = Vec::with_capacity(batch_max);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let txns: Vec<Txn> = batch.iter_mut().map(|(t, _)| std::mem::take(t)).collect();
        let result = commit_batch(db, txns);
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters
            .txns
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match result {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }
}

fn commit_batch(db: &Database, txns: Vec<Txn>) -> Result<Vec<TxnOutcome>, StoreError> {
    let mut w = db.begin_write().map_err(backend)?;
    w.set_durability(Durability::Immediate).map_err(backend)?;
    let mut outcomes = Vec::with_capacity(txns.len());
    {
        let mut kv = w.open_table(KV).map_err(backend)?;
        let mut meta = w.open_table(META).map_err(backend)?;
        let mut revision = meta
            .get(REVISION_KEY)
            .map_err(backend)?
            .map(|g| g.value())
            .unwrap_or(0);
        for txn in txns {
            let conflict = check_compares(&txn, |k| {
                Ok(match kv.get(k).map_err(backend)? {
                    Some(g) => decode(k, g.value())?.version,
                    None => 0,
                })
            })?;
            if let Some(c) = conflict {
                outcomes.push(c);
                continue;
            }
            revision += 1;
            for op in txn.ops {
                match op {
                    Op::Put { key, value } => {
                        let mut raw = Vec::with_capacity(8 + value.len());
                        raw.extend_from_slice(&revision.to_be_bytes());
                        raw.extend_from_slice(&value);
                        kv.insert(key.as_str(), raw.as_slice()).map_err(backend)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_str()).map_err(backend)?;
                    }
                }
            }
            outcomes.push(TxnOutcome::Committed { revision });
        }
        meta.insert(REVISION_KEY, revision).map_err(backend)?;
    }
    w.commit().map_err(backend)?;
    Ok(outcomes)
}

impl KvStore for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        let db = self.db.clone();
        let key = key.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let r = db.begin_read().map_err(backend)?;
                let kv = r.open_table(KV).map_err(backend)?;
                match kv.get(key.as_str()).map_err(backend)? {
                    Some(g) => Ok(Some(decode(&key, g.value())?)),
                    None => Ok(None),
                }
            })
            .await
            .map_err(backend)?
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
        let db = self.db.clone();
        let prefix = prefix.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let r = db.begin_read().map_err(backend)?;
                let kv = r.open_table(KV).map_err(backend)?;
                let mut out = Vec::new();
                for item in kv.range(prefix.as_str()..).map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    let k = k.value();
                    if !k.starts_with(prefix.as_str()) {
                        break;
                    }
                    out.push((k.to_string(), decode(k, v.value())?));
                }
                Ok(out)
            })
            .await
            .map_err(backend)?
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.validate()?;
            let tx = self.tx.as_ref().ok_or(StoreError::Closed)?;
            let (reply, rx) = oneshot::channel();
            tx.send((txn, reply))
                .await
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            txns: self.counters.txns.load(Ordering::Relaxed),
        }
    }
}
