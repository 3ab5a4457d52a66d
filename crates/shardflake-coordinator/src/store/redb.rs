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
//!
//! # A failed write
//!
//! After one I/O error (a full disk, typically) redb refuses every later transaction of the
//! same handle. So a commit that fails makes the writer drop the database and open the file
//! again, with backoff, answering `store_unavailable` meanwhile; once the disk takes writes
//! again (space was freed) the reopen succeeds, redb repairs the file to its last durable
//! commit, and the store serves again by itself. [`KvStore::health`] says which state it is
//! in, for `/readyz`. A reopen that fails for another reason than a full disk or a handle
//! still held (the file is gone, unreadable or corrupt) [`REOPEN_ATTEMPTS_MAX`] times in a row
//! makes the store [`StoreHealth::Failed`]: the coordinator then exits, for a supervisor to
//! restart it and an operator to look. The file is only ever opened, never created, on a
//! reopen: a store whose file vanished must not come back empty.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::redb::{
    Builder, Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::memory::check_compares;
use super::{
    check_get_many, BoxFuture, KvStore, Op, StoreError, StoreHealth, StoreStats, Txn, TxnOutcome,
    Versioned,
};

#[cfg(any(test, feature = "testing"))]
mod faults;
#[cfg(any(test, feature = "testing"))]
pub use self::faults::DiskFaults;

/// Keys to version-prefixed values: 8 bytes of big-endian version, then the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// The store's revision counter under the key `revision`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// Default for [`RedbOptions::batch_max`]: transactions per commit.
pub const GROUP_COMMIT_BATCH_MAX_DEFAULT: usize = 1024;
/// Transactions that may wait for the writer before callers are held back.
const WRITE_QUEUE_MAX: usize = 16 * 1024;
/// Reopens in a row that fail for another reason than a full disk before the store gives up
/// ([`StoreHealth::Failed`]).
pub const REOPEN_ATTEMPTS_MAX: u32 = 5;
/// The wait before the first reopen, doubled after each failure up to [`REOPEN_BACKOFF_MAX`].
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two reopens: once the disk has room again, the store serves
/// within this.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a writer waiting to reopen answers the transactions queued meanwhile.
const WEDGED_POLL: Duration = Duration::from_millis(20);

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

/// Opens the database file again after a failed write (never creating it).
type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    txns: AtomicU64,
    reads: AtomicU64,
    reopens: AtomicU64,
}

/// What the writer and the readers share.
struct Shared {
    /// The open database; `None` while the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
    counters: Counters,
    health: Mutex<StoreHealth>,
    path: PathBuf,
    /// Reads run on the caller ([`Driver::Inline`]), not on tokio's blocking pool.
    inline: bool,
}

impl Shared {
    /// The open database, or `Backend` naming why there is none.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.db.read().expect("db lock").as_ref() {
            return Ok(db.clone());
        }
        Err(StoreError::Backend(
            match &*self.health.lock().expect("health lock") {
                StoreHealth::Ready => "the store file is being reopened".to_string(),
                StoreHealth::NotReady(why) | StoreHealth::Failed(why) => why.clone(),
            },
        ))
    }

    fn set_health(&self, health: StoreHealth) {
        *self.health.lock().expect("health lock") = health;
    }
}

/// Where the store's writes and reads run.
#[derive(Clone, Default)]
pub enum Driver {
    /// A writer thread that groups concurrent commits (see the module docs); reads on
    /// tokio's blocking pool. What the coordinator runs.
    #[default]
    Threads,
    /// Each write commits alone on the caller's thread before its call returns, and so does
    /// each read; the reopen backoff after a failed write is timed by `now_ms` (milliseconds
    /// on any monotonic scale) and a reopen is tried by the next call that comes after its
    /// time. For a deterministic simulation on one thread, over an in-memory backend whose
    /// commits take microseconds: nothing runs outside the simulation's steps.
    Inline {
        /// The time for the reopen backoff.
        now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    },
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Threads => "Threads",
            Driver::Inline { .. } => "Inline",
        })
    }
}

/// How writes reach the database.
enum Writing {
    /// Over a channel to the writer thread.
    Thread {
        tx: Option<mpsc::Sender<(Txn, Reply)>>,
        handle: Option<JoinHandle<()>>,
    },
    /// On the caller, one at a time.
    Inline {
        writer: Mutex<Writer>,
        now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    },
}

/// A [`KvStore`] in one redb file with group commit; see the module docs.
pub struct RedbStore {
    shared: Arc<Shared>,
    writing: Writing,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.shared.path)
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

/// Creates the tables if they are missing, so that readers never see them missing.
fn create_tables(db: &Database) -> Result<(), StoreError> {
    let w = db.begin_write().map_err(backend)?;
    {
        w.open_table(KV).map_err(backend)?;
        let mut meta = w.open_table(META).map_err(backend)?;
        if meta.get(REVISION_KEY).map_err(backend)?.is_none() {
            meta.insert(REVISION_KEY, 0).map_err(backend)?;
        }
    }
    w.commit().map_err(backend)
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    ///
    /// redb locks the file, so a second coordinator on the same file fails here instead of
    /// corrupting it.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let reopen_path = path.clone();
        let opener: Opener = Box::new(move || Builder::new().open(&reopen_path));
        Self::start(db, path, options, opener, Driver::Threads)
    }

    fn start(
        db: Database,
        path: PathBuf,
        options: RedbOptions,
        opener: Opener,
        driver: Driver,
    ) -> Result<Self, StoreError> {
        create_tables(&db)?;
        let inline = matches!(driver, Driver::Inline { .. });
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            counters: Counters::default(),
            health: Mutex::new(StoreHealth::Ready),
            path,
            inline,
        });
        let writer = Writer {
            opener,
            wedged: None,
        };
        let writing = match driver {
            Driver::Inline { now_ms } => Writing::Inline {
                writer: Mutex::new(writer),
                now_ms,
            },
            Driver::Threads => {
                let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
                let shared = shared.clone();
                let batch_max = options.batch_max.max(1);
                let handle = std::thread::Builder::new()
                    .name("redb-writer".into())
                    .spawn(move || writer_loop(&shared, writer, rx, batch_max))
                    .map_err(backend)?;
                Writing::Thread {
                    tx: Some(tx),
                    handle: Some(handle),
                }
            }
        };
        Ok(Self { shared, writing })
    }

    /// Times the file was reopened after a failed write.
    pub fn reopens(&self) -> u64 {
        self.shared.counters.reopens.load(Ordering::Relaxed)
    }

    /// Stops the writer after the queued transactions and releases the file lock.
    pub async fn close(mut self) {
        if let Writing::Thread { tx, handle } = &mut self.writing {
            tx.take();
            if let Some(w) = handle.take() {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
        }
    }

    /// Under [`Driver::Inline`], where no writer thread keeps time: the reopen that is due,
    /// tried by whichever call comes first, a read or a write.
    fn drive(&self) {
        if let Writing::Inline { writer, now_ms } = &self.writing {
            writer
                .lock()
                .expect("writer lock")
                .reopen_step(&self.shared, now_ms());
        }
    }

    /// One write on the caller ([`Driver::Inline`]): first a reopen if one is due.
    fn txn_inline(
        &self,
        writer: &Mutex<Writer>,
        now_ms: u64,
        txn: Txn,
    ) -> Result<TxnOutcome, StoreError> {
        let mut writer = writer.lock().expect("writer lock");
        if writer.reopen_step(&self.shared, now_ms) != Step::Open {
            return Err(self.shared.db().err().unwrap_or(StoreError::Closed));
        }
        let mut outcomes = writer.commit(&self.shared, vec![txn], now_ms)?;
        Ok(outcomes.pop().expect("one outcome per transaction"))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop; it is not joined here because drop may
        // run on an async worker thread.
        if let Writing::Thread { tx, .. } = &mut self.writing {
            tx.take();
        }
    }
}

/// The writer's decisions, whichever [`Driver`] runs it: commit; after a failed write, drop
/// the database and open the file again with backoff.
struct Writer {
    opener: Opener,
    wedged: Option<Wedged>,
}

/// A writer whose last write failed, waiting to reopen the file.
struct Wedged {
    cause: String,
    retry_at_ms: u64,
    backoff: Duration,
    /// Reopens in a row that failed for a reason that will not pass by itself.
    fatal: u32,
    attempts: u32,
    last_error: String,
}

/// Where a writer stands.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The database is open: commit.
    Open,
    /// Wedged; the next reopen at this time (ms).
    WaitUntil(u64),
    /// The file cannot be reopened: the store is [`StoreHealth::Failed`].
    Failed,
}

impl Writer {
    /// Commits `txns` in one transaction. A failed commit wedges the writer: callers hear
    /// the error, and every later call the reason, until a reopen succeeds.
    fn commit(
        &mut self,
        shared: &Shared,
        txns: Vec<Txn>,
        now_ms: u64,
    ) -> Result<Vec<TxnOutcome>, StoreError> {
        let n = txns.len() as u64;
        let result = shared.db().and_then(|db| commit_batch(&db, txns));
        let c = &shared.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.txns.fetch_add(n, Ordering::Relaxed);
        result.map_err(|e| {
            let msg = e.to_string();
            // redb refuses every transaction of a handle after an I/O error: open the file
            // again.
            if matches!(e, StoreError::Backend(_))
                && !shardflake::mutant::active(shardflake::mutant::Mutant::AFullDiskIsNotRecovered)
            {
                self.wedge(shared, &msg, now_ms);
            }
            StoreError::Backend(msg)
        })
    }

    /// Drops the database after a failed write; the first reopen comes after
    /// [`REOPEN_BACKOFF_MIN`].
    fn wedge(&mut self, shared: &Shared, cause: &str, now_ms: u64) {
        // Not ready before anyone hears of the failure: a caller refused with
        // `store_unavailable` must not then find `/readyz` still ready.
        shared.set_health(StoreHealth::NotReady(wedged_reason(shared, cause)));
        shared.db.write().expect("db lock").take();
        tracing::error!(
            path = %shared.path.display(),
            error = cause,
            "store write failed; reopening the store file with backoff (is the disk full?)"
        );
        self.wedged = Some(Wedged {
            cause: cause.to_string(),
            retry_at_ms: now_ms + REOPEN_BACKOFF_MIN.as_millis() as u64,
            backoff: REOPEN_BACKOFF_MIN,
            fatal: 0,
            attempts: 0,
            last_error: String::new(),
        });
    }

    /// Where the writer stands at `now_ms`; a wedged writer whose time has come tries to
    /// open the file again first.
    fn reopen_step(&mut self, shared: &Shared, now_ms: u64) -> Step {
        let Some(w) = self.wedged.as_mut() else {
            return Step::Open;
        };
        if w.fatal >= REOPEN_ATTEMPTS_MAX {
            return Step::Failed;
        }
        if now_ms < w.retry_at_ms {
            return Step::WaitUntil(w.retry_at_ms);
        }
        let path = shared.path.display().to_string();
        w.attempts += 1;
        let opened = (self.opener)()
            .map_err(|e| (transient(&e), e.to_string()))
            .and_then(|db| {
                create_tables(&db)
                    .map(|()| db)
                    .map_err(|e| (true, e.to_string()))
            });
        match opened {
            Ok(db) => {
                *shared.db.write().expect("db lock") = Some(Arc::new(db));
                shared.counters.reopens.fetch_add(1, Ordering::Relaxed);
                shared.set_health(StoreHealth::Ready);
                tracing::info!(
                    path,
                    attempts = w.attempts,
                    "store file reopened; serving again"
                );
                self.wedged = None;
                Step::Open
            }
            Err((is_transient, error)) => {
                w.fatal = if is_transient { 0 } else { w.fatal + 1 };
                if error != w.last_error {
                    tracing::warn!(path, %error, transient = is_transient,
                        "the store file does not open yet; retrying with backoff");
                    w.last_error = error.clone();
                }
                if w.fatal >= REOPEN_ATTEMPTS_MAX {
                    let why = format!(
                        "store failed: {path} could not be reopened {} times in a row ({error}); restart the coordinator once the file is repaired or restored",
                        w.fatal
                    );
                    tracing::error!(path, %error, "{why}");
                    shared.set_health(StoreHealth::Failed(why));
                    return Step::Failed;
                }
                shared.set_health(StoreHealth::NotReady(format!(
                    "store wedged: a write to {path} failed ({}); reopening it failed {} time(s), last: {error}",
                    w.cause, w.attempts
                )));
                w.backoff = (w.backoff * 2).min(REOPEN_BACKOFF_MAX);
                w.retry_at_ms = now_ms + w.backoff.as_millis() as u64;
                Step::WaitUntil(w.retry_at_ms)
            }
        }
    }
}

/// The writer thread ([`Driver::Threads`]): takes the first waiting transaction and every
/// other one already queued, commits them together, answers them all; while wedged, answers
/// the queued ones with the reason and reopens at its time.
fn writer_loop(
    shared: &Shared,
    mut writer: Writer,
    mut rx: mpsc::Receiver<(Txn, Reply)>,
    batch_max: usize,
) {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut batch: Vec<(Txn, Reply)> = Vec::with_capacity(batch_max);
    loop {
        match writer.reopen_step(shared, now_ms()) {
            Step::Open => {}
            Step::WaitUntil(at_ms) => {
                if !answer_queued(shared, &mut rx) {
                    return;
                }
                let left = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                std::thread::sleep(left.min(WEDGED_POLL));
                continue;
            }
            Step::Failed => {
                // Answer callers until the store is closed; nothing else can be done.
                while answer_queued(shared, &mut rx) {
                    std::thread::sleep(WEDGED_POLL);
                }
                return;
            }
        }
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let txns: Vec<Txn> = batch.iter_mut().map(|(t, _)| std::mem::take(t)).collect();
        match writer.commit(shared, txns, now_ms()) {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = match e {
                    StoreError::Backend(msg) => msg,
                    other => other.to_string(),
                };
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }
}

/// What `/readyz` says while the store is being reopened after a failed write.
fn wedged_reason(shared: &Shared, cause: &str) -> String {
    format!(
        "store wedged: a write to {} failed ({cause}); reopening it",
        shared.path.display()
    )
}

/// Whether a failed reopen may succeed later by itself: the disk is full (space may be
/// freed), or the old handle is still held by a reader that is finishing.
fn transient(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::DatabaseAlreadyOpen => true,
        DatabaseError::Storage(StorageError::Io(io)) => {
            use std::io::ErrorKind::*;
            matches!(
                io.kind(),
                StorageFull | QuotaExceeded | Interrupted | WouldBlock | TimedOut
            )
        }
        _ => false,
    }
}

/// Answers every queued transaction with the store's state; `false` once the store is
/// closed.
fn answer_queued(shared: &Shared, rx: &mut mpsc::Receiver<(Txn, Reply)>) -> bool {
    loop {
        match rx.try_recv() {
            Ok((_, reply)) => {
                let e = shared.db().err().unwrap_or(StoreError::Closed);
                let _ = reply.send(Err(e));
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
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

/// Runs `read` on a read transaction of the open database: off the async threads, or on
/// the caller under [`Driver::Inline`].
async fn read<T: Send + 'static>(
    shared: &Arc<Shared>,
    read: impl FnOnce(&::redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    shared.counters.reads.fetch_add(1, Ordering::Relaxed);
    let db = shared.db()?;
    let run = move || read(&db.begin_read().map_err(backend)?);
    if shared.inline {
        return run();
    }
    tokio::task::spawn_blocking(run).await.map_err(backend)?
}

/// [`read`] of the key-value table.
async fn read_kv<T: Send + 'static>(
    shared: &Arc<Shared>,
    read_kv: impl FnOnce(&::redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, StoreError>
        + Send
        + 'static,
) -> Result<T, StoreError> {
    read(shared, move |r| {
        read_kv(&r.open_table(KV).map_err(backend)?)
    })
    .await
}

impl KvStore for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        self.drive();
        let key = key.to_string();
        Box::pin(read_kv(&self.shared, move |kv| {
            match kv.get(key.as_str()).map_err(backend)? {
                Some(g) => Ok(Some(decode(&key, g.value())?)),
                None => Ok(None),
            }
        }))
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Versioned>>, StoreError>> {
        self.drive();
        let keys = keys.to_vec();
        Box::pin(async move {
            check_get_many(&keys)?;
            read_kv(&self.shared, move |kv| {
                let mut out = Vec::with_capacity(keys.len());
                for key in &keys {
                    out.push(match kv.get(key.as_str()).map_err(backend)? {
                        Some(g) => Some(decode(key, g.value())?),
                        None => None,
                    });
                }
                Ok(out)
            })
            .await
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
        self.drive();
        let prefix = prefix.to_string();
        Box::pin(read_kv(&self.shared, move |kv| {
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
        }))
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        self.drive();
        let prefix = prefix.to_string();
        Box::pin(read_kv(&self.shared, move |kv| {
            let mut n = 0;
            for item in kv.range(prefix.as_str()..).map_err(backend)? {
                let (k, _) = item.map_err(backend)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                n += 1;
            }
            Ok(n)
        }))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.validate()?;
            let tx = match &self.writing {
                Writing::Thread { tx, .. } => tx.as_ref().ok_or(StoreError::Closed)?,
                Writing::Inline { writer, now_ms } => {
                    return self.txn_inline(writer, now_ms(), txn);
                }
            };
            let (reply, rx) = oneshot::channel();
            tx.send((txn, reply))
                .await
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            txns: c.txns.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
        }
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.drive();
        Box::pin(read(&self.shared, |r| {
            let meta = r.open_table(META).map_err(backend)?;
            Ok(meta
                .get(REVISION_KEY)
                .map_err(backend)?
                .map(|g| g.value())
                .unwrap_or(0))
        }))
    }

    fn health(&self) -> BoxFuture<'_, StoreHealth> {
        self.drive();
        Box::pin(async move { self.shared.health.lock().expect("health lock").clone() })
    }
}
