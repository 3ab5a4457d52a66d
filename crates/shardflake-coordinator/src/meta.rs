//! The store's identity and its layout, written once when the store is created.
//!
//! Two stores lease the same host ids to different nodes, so ids are unique only among nodes
//! served from one store. Every store therefore gets an id once, at creation, and every
//! coordinator response carries it; clients pin the first id they see and refuse any other
//! (see `shardflake_client::CoordinatorClient`). The layout is recorded with it: host ids,
//! reservations and counter blocks only mean something in the layout they were granted for,
//! so a coordinator configured with another layout refuses to serve the store.

use serde::{Deserialize, Serialize};
use shardflake::Layout;

use crate::error::CoordError;
use crate::records::{decode, encode, CLUSTER_KEY};
use crate::store::{KvStore, Txn, TxnOutcome};

/// Attempts to read or create the record before giving up (it is written once, so a second
/// attempt always finds it).
const CREATE_ATTEMPTS_MAX: u32 = 8;

/// What a store is: written once, when the first coordinator opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The store's identity (a UUIDv7).
    pub store_id: String,
    /// The layout's fingerprint ([`Layout::spec`]).
    pub layout_spec: String,
    /// When the store was created, Unix ms.
    pub created_at_ms: u64,
    /// The key of the store's generation proofs (hex; see `crate::generation`). Added to
    /// stores created before it on first open.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generation_key: String,
}

/// Reads the store's record, creating it on first use. Fails if the store was created for
/// another layout.
pub(crate) async fn open(
    store: &dyn KvStore,
    layout: &Layout,
    now_ms: u64,
) -> Result<ClusterRecord, CoordError> {
    for _ in 0..CREATE_ATTEMPTS_MAX {
        if let Some(v) = store.get(CLUSTER_KEY).await? {
            let mut rec: ClusterRecord = decode(CLUSTER_KEY, &v.value)?;
            if rec.layout_spec != layout.spec() {
                return Err(CoordError::LayoutMismatch {
                    store_id: rec.store_id,
                    stored: rec.layout_spec,
                    configured: layout.spec(),
                });
            }
            if !rec.generation_key.is_empty() {
                return Ok(rec);
            }
            // A store created before generations: give it its key, once.
            rec.generation_key = crate::generation::new_key();
            let txn = Txn::new()
                .compare(CLUSTER_KEY, v.version)
                .put(CLUSTER_KEY, encode(&rec));
            if let TxnOutcome::Committed { .. } = store.txn(txn).await? {
                return Ok(rec);
            }
            continue;
        }
        let rec = ClusterRecord {
            store_id: shardflake::uuid7::Uuid7::random_at(now_ms).to_string(),
            layout_spec: layout.spec(),
            created_at_ms: now_ms,
            generation_key: crate::generation::new_key(),
        };
        let txn = Txn::new()
            .compare(CLUSTER_KEY, 0)
            .put(CLUSTER_KEY, encode(&rec));
        match store.txn(txn).await? {
            TxnOutcome::Committed { .. } => {
                tracing::info!(store_id = %rec.store_id, layout = %rec.layout_spec, "new store: identity created");
                return Ok(rec);
            }
            // Another coordinator created it first: read theirs.
            TxnOutcome::Conflict { .. } => continue,
        }
    }
    Err(CoordError::Contended {
        attempts: CREATE_ATTEMPTS_MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[tokio::test]
    async fn the_identity_is_created_once_and_the_layout_is_checked() {
        let store = MemStore::new();
        let twitter = Layout::preset("twitter").unwrap();
        let a = open(&store, &twitter, 1).await.unwrap();
        let b = open(&store, &twitter, 2).await.unwrap();
        assert_eq!(a, b, "a second open reads the same identity");
        assert_eq!(a.layout_spec, twitter.spec());
        let other = open(&MemStore::new(), &twitter, 1).await.unwrap();
        assert_ne!(other.store_id, a.store_id, "every store has its own id");
        let temporal = Layout::preset("temporal").unwrap();
        let e = open(&store, &temporal, 3).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&a.store_id)
                && msg.contains(&twitter.spec())
                && msg.contains(&temporal.spec()),
            "{msg}"
        );
    }
}
