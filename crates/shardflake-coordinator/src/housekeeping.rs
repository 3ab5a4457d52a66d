//! What one coordinator of a store does for all of them: the namespace assignment and the
//! deletion of records that safety no longer needs. The coordinator that holds the
//! maintainer lease (`meta/maintainer`, taken and kept by compare-and-swap, lapsing after
//! [`LEAD_TTL_MS`]) does it; two that both believe they hold it (clocks apart) only repeat
//! work, since every write is a compare-and-swap of its own.
//!
//! # What it costs
//!
//! A [`Housekeeper::pass`] (every [`crate::ASSIGN_INTERVAL_MS`] in a coordinator service)
//! reads the maintainer lease every third of its TTL and, while it holds it, the routing
//! epoch (one read); it assigns namespaces when the epoch moved (a node came or went, a
//! namespace was created or deleted) and every [`crate::ASSIGN_BACKSTOP_MS`] regardless
//! (forecasts move without an epoch write), each pass one scan of the hosts, one of the
//! namespaces and one of the use records; and it collects garbage every [`GC_EVERY_MS`].
//! The number of reads an idle cluster makes is the same at ten hosts and at a thousand.
//!
//! # What is deleted
//!
//! * Temporal counter-block records (`block/{host}/{shard}`, one per host per shard: 86,400
//!   a day per host at one-second shards) of shards older than the current one minus
//!   [`SHARDS_KEPT`]. The host's block floor (`HostRecord::block_floor_shard`) is raised
//!   first, in a compare-and-swap of its record: every block grant compares that record, so
//!   no block of a shard below the floor is granted afterwards, and a grant that read the
//!   record before the raise conflicts. A node whose clock lags that far is refused
//!   (`shard_retired`) rather than granted counters again.
//! * Namespace use records (`nsuse/{name}/{host}`) of host ids whose lease was released or
//!   superseded by a later token (that token can never act again: every fenced call
//!   compares the current token), each deleted only if neither the record nor the host's
//!   lease changed since they were read.

use serde::{Deserialize, Serialize};

use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::records::{self, beat_key, host_key, HostRecord};
use crate::store::{Txn, TxnOutcome, TXN_OPS_MAX};

/// The key of the maintainer lease.
const MAINTAINER_KEY: &str = "meta/maintainer";
/// How long a maintainer lease lasts unless renewed (ms).
pub const LEAD_TTL_MS: u64 = 15_000;
/// Shards behind the current one whose block records are kept.
pub const SHARDS_KEPT: u64 = 2;

/// How often the maintainer deletes records safety no longer needs (ms).
pub const GC_EVERY_MS: u64 = 30_000;

/// One coordinator's share of the housekeeping: [`Housekeeper::pass`] is called every
/// [`crate::ASSIGN_INTERVAL_MS`] (module docs). Times are the coordinator's monotonic clock.
#[derive(Debug)]
pub struct Housekeeper {
    /// This coordinator's name in the maintainer lease.
    me: String,
    leading: bool,
    next_lead_ms: u64,
    next_gc_ms: u64,
    next_assign_ms: u64,
    /// The routing epoch the last assignment pass read.
    assigned_epoch: Option<u64>,
}

impl Housekeeper {
    /// The housekeeping of `c`, under a name of its own.
    pub fn new(c: &Coordinator) -> Self {
        let now = c.time.mono_ms();
        Self {
            me: shardflake::uuid7::Uuid7::random_at(c.time.wall_ms()).to_string(),
            leading: false,
            next_lead_ms: now,
            next_gc_ms: now.saturating_add(GC_EVERY_MS),
            next_assign_ms: now,
            assigned_epoch: None,
        }
    }

    /// Whether this coordinator held the maintainer lease at the last pass.
    pub fn leading(&self) -> bool {
        self.leading
    }

    /// One pass: the maintainer lease when due, then (while held) the assignment when the
    /// routing epoch moved or the backstop is due, and the garbage collection when due.
    pub async fn pass(&mut self, c: &Coordinator) -> Result<(), CoordError> {
        let now = c.time.mono_ms();
        if now >= self.next_lead_ms {
            self.next_lead_ms = now.saturating_add(LEAD_TTL_MS / 3);
            self.leading = c.lead(&self.me).await?;
        }
        if !self.leading {
            self.assigned_epoch = None;
            return Ok(());
        }
        let epoch = c.route_epoch().await?;
        if self.assigned_epoch != Some(epoch) || now >= self.next_assign_ms {
            c.assign_namespaces().await?;
            self.assigned_epoch = Some(epoch);
            self.next_assign_ms = now.saturating_add(crate::ASSIGN_BACKSTOP_MS);
        }
        if now >= self.next_gc_ms {
            self.next_gc_ms = now.saturating_add(GC_EVERY_MS);
            c.collect_garbage().await?;
        }
        Ok(())
    }
}

/// The maintainer lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Maintainer {
    holder: String,
    until_ms: u64,
}

/// What one garbage collection deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Temporal block records.
    pub block_records: u64,
    /// Namespace use records.
    pub use_records: u64,
    /// Host records whose block floor was raised.
    pub floors_raised: u64,
}

impl Coordinator {
    /// Takes or keeps the maintainer lease for `me` (a name unique to this coordinator
    /// process); whether `me` holds it now.
    pub async fn lead(&self, me: &str) -> Result<bool, CoordError> {
        let now = self.time.wall_ms();
        let (current, version) = match self.store.get(MAINTAINER_KEY).await? {
            Some(v) => (
                records::decode::<Maintainer>(MAINTAINER_KEY, &v.value).ok(),
                v.version,
            ),
            None => (None, 0),
        };
        if current
            .as_ref()
            .is_some_and(|m| m.holder != me && m.until_ms > now)
        {
            return Ok(false);
        }
        let next = Maintainer {
            holder: me.to_string(),
            until_ms: now.saturating_add(LEAD_TTL_MS),
        };
        let took = current.as_ref().is_none_or(|m| m.holder != me);
        let txn = Txn::new()
            .compare(MAINTAINER_KEY, version)
            .put(MAINTAINER_KEY, records::encode(&next));
        match self.store.txn(txn).await? {
            TxnOutcome::Committed { .. } => {
                if took {
                    tracing::info!(
                        coordinator = me,
                        "this coordinator maintains the store (assignment, record deletion)"
                    );
                }
                Ok(true)
            }
            TxnOutcome::Conflict { .. } => Ok(false),
        }
    }

    /// Deletes what safety no longer needs (module docs); what it deleted.
    pub async fn collect_garbage(&self) -> Result<Collected, CoordError> {
        self.refuse_if_restored().await?;
        let mut done = Collected::default();
        let hosts = records::load_hosts(self.store.as_ref()).await?;
        if self.config.is_temporal() {
            self.collect_blocks(&hosts, &mut done).await?;
        }
        self.collect_uses(&hosts, &mut done).await?;
        if done != Collected::default() {
            self.metrics.gc_block_records.inc_by(done.block_records);
            self.metrics.gc_use_records.inc_by(done.use_records);
            tracing::debug!(?done, "records safety no longer needs deleted");
        }
        Ok(done)
    }

    /// Raises each host's block floor to the current shard minus [`SHARDS_KEPT`] and deletes
    /// its block records below it.
    async fn collect_blocks(
        &self,
        hosts: &[(HostRecord, u64)],
        done: &mut Collected,
    ) -> Result<(), CoordError> {
        let current = self.config.layout.tick_of(self.time.wall_ms()).unwrap_or(0);
        let floor = current.saturating_sub(SHARDS_KEPT);
        let blocks = records::load_blocks(self.store.as_ref()).await?;
        for (rec, version) in hosts {
            let old: Vec<u64> = blocks
                .iter()
                .filter(|((h, s), _)| *h == rec.host_id && *s < floor)
                .map(|((_, s), _)| *s)
                .collect();
            if rec.block_floor_shard < floor {
                let mut raised = rec.clone();
                raised.block_floor_shard = floor;
                let key = host_key(rec.host_id);
                let txn = Txn::new()
                    .compare(&key, *version)
                    .put(&key, records::encode(&raised));
                match self.store.txn(txn).await? {
                    TxnOutcome::Committed { .. } => done.floors_raised += 1,
                    // A renewal or a grant came first: next pass.
                    TxnOutcome::Conflict { .. } => continue,
                }
            }
            for chunk in old.chunks(TXN_OPS_MAX) {
                let txn = chunk.iter().fold(Txn::new(), |t, &s| {
                    t.delete(records::block_key(rec.host_id, s))
                });
                self.store.txn(txn).await?;
                done.block_records += chunk.len() as u64;
            }
        }
        Ok(())
    }

    /// Deletes the use records of host ids whose lease was released or superseded.
    async fn collect_uses(
        &self,
        hosts: &[(HostRecord, u64)],
        done: &mut Collected,
    ) -> Result<(), CoordError> {
        for (key, host, u, use_version) in records::load_all_ns_uses(self.store.as_ref()).await? {
            let Some((rec, version)) = hosts.iter().find(|(r, _)| r.host_id == host) else {
                continue;
            };
            if !(rec.released || rec.token != u.token) {
                continue;
            }
            let txn = Txn::new()
                .compare(host_key(host), *version)
                .compare(beat_key(host), rec.beat_version)
                .compare(&key, use_version)
                .delete(&key);
            if let TxnOutcome::Committed { .. } = self.store.txn(txn).await? {
                done.use_records += 1;
            }
        }
        Ok(())
    }
}
