//! A disk that fails on command under the embedded store: a full disk (`ENOSPC` on every
//! write, sync and growth) or a device that is gone, for the tests of what a failed write
//! costs and for the simulation.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::redb::{Builder, Database, DatabaseError, StorageError};

use super::{Driver, Opener, RedbOptions, RedbStore};
use crate::store::StoreError;

impl RedbStore {
    /// Opens (or creates) the store file at `path` on a backend that fails as `faults` says:
    /// a full disk, or a device that is gone. For tests of what a failed write costs.
    pub fn open_with_faults(
        path: impl AsRef<Path>,
        options: RedbOptions,
        faults: Arc<DiskFaults>,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open = {
            let (path, faults) = (path.clone(), faults.clone());
            move |create: bool| -> Result<Database, DatabaseError> {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| DatabaseError::Storage(StorageError::Io(e)))?;
                let inner = ::redb::backends::FileBackend::new(file)?;
                Builder::new().create_with_backend(FaultyBackend {
                    inner: Arc::new(inner),
                    faults: faults.clone(),
                })
            }
        };
        let db = open(true)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let opener: Opener = Box::new(move || open(false));
        Self::start(db, path, options, opener, Driver::Threads)
    }

    /// Creates a store on a new in-memory disk that fails as `faults` says, run by
    /// [`Driver::Inline`] on the clock `now_ms`; a reopen after a failed write finds the
    /// disk as its last commit left it. For the simulation: redb's own code over a disk it
    /// controls. Inline only: the in-memory disk has no file lock, so a reader on another
    /// thread could hold the old handle while a writer thread opened a second one.
    pub fn open_in_memory(
        name: &str,
        faults: Arc<DiskFaults>,
        options: RedbOptions,
        now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> Result<Self, StoreError> {
        let disk = Arc::new(::redb::backends::InMemoryBackend::new());
        let open = move || {
            Builder::new().create_with_backend(FaultyBackend {
                inner: disk.clone(),
                faults: faults.clone(),
            })
        };
        let db = open().map_err(|e| StoreError::Backend(format!("cannot open {name}: {e}")))?;
        let driver = Driver::Inline { now_ms };
        Self::start(db, PathBuf::from(name), options, Box::new(open), driver)
    }
}

/// Faults of the disk under a store opened with [`RedbStore::open_with_faults`] or
/// [`RedbStore::open_in_memory`], switched on and off while it runs.
#[derive(Debug, Default)]
pub struct DiskFaults {
    full: std::sync::atomic::AtomicBool,
    gone: std::sync::atomic::AtomicBool,
}

impl DiskFaults {
    /// Writes, syncs and growth fail with `ENOSPC` while `full`.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// Every access fails (a device that is gone) while `gone`.
    pub fn set_gone(&self, gone: bool) {
        self.gone.store(gone, Ordering::SeqCst);
    }

    fn check(&self, write: bool) -> std::io::Result<()> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the device is gone (fault injected)"));
        }
        if write && self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

/// A redb backend (a file, or memory) with [`DiskFaults`] in front of it.
#[derive(Debug)]
pub(super) struct FaultyBackend {
    pub(super) inner: Arc<dyn ::redb::StorageBackend>,
    pub(super) faults: Arc<DiskFaults>,
}

impl ::redb::StorageBackend for FaultyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.faults.check(false)?;
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.faults.check(false)?;
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.faults.check(true)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.check(true)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.check(true)?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), ::redb::BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, ::redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
