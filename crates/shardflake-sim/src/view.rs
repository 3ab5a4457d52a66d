//! The checker's view of the store: the host records as they are now, read again only when
//! the store's revision moved (a read per acknowledged batch would be most of a seed's time).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::Coordinator;
use shardflake_proto::audit::{AuditReport, CounterBlock, PairBlocks};
use shardflake_proto::coord::{HostStatus, HostsResponse};

/// The host records of one store, cached by revision.
pub(crate) struct StoreView {
    store: Arc<MemStore>,
    reader: Arc<Coordinator>,
    operator: Arc<Coordinator>,
    cache: Mutex<Option<(u64, Arc<HostsResponse>)>>,
    grants: Mutex<Option<(u64, Arc<AuditReport>)>>,
    /// The highest bound seen durable per host id, and every counter block seen granted.
    high: Mutex<HashMap<u32, u64>>,
    /// Per host id, the record of the newest token seen.
    latest: Mutex<HashMap<u32, HostStatus>>,
    blocks_ever: Mutex<BTreeMap<(u32, u64), Vec<CounterBlock>>>,
}

impl StoreView {
    /// A view of `store` (what the store committed), read through `reader` (a coordinator
    /// over it, outside the simulated network); `operator` writes as an operator would,
    /// through the store every process writes through.
    pub(crate) fn new(
        store: Arc<MemStore>,
        reader: Arc<Coordinator>,
        operator: Arc<Coordinator>,
    ) -> Self {
        Self {
            store,
            reader,
            operator,
            cache: Mutex::new(None),
            grants: Mutex::new(None),
            high: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            blocks_ever: Mutex::new(BTreeMap::new()),
        }
    }

    /// The host records now. The revision is read first: a write that lands during the read
    /// leaves a newer revision behind, and the next call reads again.
    pub(crate) async fn hosts(&self) -> Arc<HostsResponse> {
        let revision = match self.store.revision().await {
            Ok(r) => r,
            Err(e) => panic!("reading the simulated store's revision: {e}"),
        };
        if let Some((r, hosts)) = &*self.cache.lock().expect("view") {
            if *r == revision {
                return hosts.clone();
            }
        }
        let mut hosts = match self.reader.hosts().await {
            Ok(h) => h,
            Err(e) => panic!("reading the simulated store: {e}"),
        };
        // A bound once durable stays the judge of what was issued under it, even after the
        // store is put back to a backup that predates it: ids issued from it are not repeats
        // (a repair raises every bound above it).
        let mut high = self.high.lock().expect("view");
        // So does the newest lease seen: a store put back to a backup names the backup's
        // holders, but a lease granted since was granted, and its holder may issue until it
        // finds out (its renewals refused), within a TTL of its last heartbeat.
        let mut latest = self.latest.lock().expect("view");
        // Host ids the restored store has no record of at all.
        for (id, newer) in latest.iter() {
            if !hosts.hosts.iter().any(|h| h.host_id == *id) {
                hosts.hosts.push(newer.clone());
            }
        }
        hosts.hosts.sort_by_key(|h| h.host_id);
        for h in &mut hosts.hosts {
            match latest.get(&h.host_id) {
                Some(newer) if newer.token > h.token => *h = newer.clone(),
                _ => {
                    latest.insert(h.host_id, h.clone());
                }
            }
            let seen = high.entry(h.host_id).or_insert(0);
            *seen = (*seen).max(h.reserved_until_ms);
            h.reserved_until_ms = *seen;
        }
        let hosts = Arc::new(hosts);
        *self.cache.lock().expect("view") = Some((revision, hosts.clone()));
        hosts
    }

    /// The grants logged in the store now (counter blocks per host and shard, namespace
    /// blocks), read again only when the revision moved.
    pub(crate) async fn grants(&self) -> Arc<AuditReport> {
        let revision = match self.store.revision().await {
            Ok(r) => r,
            Err(e) => panic!("reading the simulated store's revision: {e}"),
        };
        if let Some((r, grants)) = &*self.grants.lock().expect("view") {
            if *r == revision {
                return grants.clone();
            }
        }
        let mut grants = match self.reader.audit_report().await {
            Ok(g) => g,
            Err(e) => panic!("reading the simulated store's grants: {e}"),
        };
        // Every counter block ever seen granted stays granted for the checks (the store's
        // log keeps a window of them, and a restore takes the newest away).
        let mut ever = self.blocks_ever.lock().expect("view");
        for pair in &grants.blocks {
            let known = ever.entry((pair.host_id, pair.shard)).or_default();
            for b in &pair.blocks {
                if !known.contains(b) {
                    known.push(*b);
                }
            }
        }
        grants.blocks = ever
            .iter()
            .map(|(&(host_id, shard), blocks)| PairBlocks {
                host_id,
                shard,
                high_water: blocks.iter().map(|b| b.end).max().unwrap_or(0),
                blocks: blocks.clone(),
            })
            .collect();
        let grants = Arc::new(grants);
        *self.grants.lock().expect("view") = Some((revision, grants.clone()));
        grants
    }

    /// Forgets what was read: the store was restored, and its revisions will be reused.
    pub(crate) fn invalidate(&self) {
        self.cache.lock().expect("view").take();
        self.grants.lock().expect("view").take();
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<MemStore> {
        &self.store
    }

    /// The operator's coordinator, for a repair.
    pub(crate) fn operator(&self) -> &Coordinator {
        &self.operator
    }

    /// The reader, for the end-of-run audit.
    pub(crate) fn reader(&self) -> &Coordinator {
        &self.reader
    }
}
