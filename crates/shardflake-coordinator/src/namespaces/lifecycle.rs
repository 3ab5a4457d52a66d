//! A namespace's life cycle beyond creation: deleting it, and raising its `next` value
//! (moving a database sequence to shardflake: every value granted from then on lies above
//! the highest the application already holds). Both are admin operations; neither ever
//! lowers a bound.

use shardflake_proto::coord::LeaseState;
use shardflake_proto::ns::{NamespaceDeleted, NamespaceStatus};

use super::{check_name, first_value, NsUseRecord};
use crate::coordinator::{Coordinator, Step};
use crate::error::CoordError;
use crate::records::{self, encode, host_key, ns_key, ns_use_key, HostRecord};
use crate::store::{Txn, TxnOutcome, GET_MANY_MAX, TXN_OPS_MAX};

/// Use records deleted per transaction.
const DELETES_PER_TXN: usize = TXN_OPS_MAX / 2;

impl Coordinator {
    /// Deletes namespace `name` and every node's use record of it. While live leases hold
    /// an unreturned block of it, the delete is refused (`NamespaceBusy`) unless `force`:
    /// those nodes then issue what they hold and get no further block. The answer carries
    /// the namespace's `next`, at or above which a namespace created again under the name
    /// must start to keep values unique across both.
    pub async fn delete_namespace(
        &self,
        name: &str,
        force: bool,
    ) -> Result<NamespaceDeleted, CoordError> {
        check_name(name)?;
        self.refuse_if_restored().await?;
        loop {
            let Some((ns, version)) = records::load_ns(self.store.as_ref(), name).await? else {
                return Err(CoordError::UnknownNamespace {
                    name: name.to_string(),
                });
            };
            let uses = records::load_ns_uses(self.store.as_ref(), name).await?;
            let held_by = self.holding(&uses).await?;
            if !held_by.is_empty() && !force {
                return Err(CoordError::NamespaceBusy {
                    name: name.to_string(),
                    held_by,
                    next: ns.next,
                });
            }
            // The use records go first: should this stop half way, the namespace is still
            // there, and a missing use record only costs a node its forecast (a retried
            // block is granted anew, a return is refused: both safe).
            let keys: Vec<String> = uses.iter().map(|(h, _)| ns_use_key(name, *h)).collect();
            for chunk in keys.chunks(DELETES_PER_TXN) {
                let txn = chunk.iter().fold(Txn::new(), |t, k| t.delete(k));
                self.store.txn(txn).await?;
            }
            let key = ns_key(name);
            let txn = Txn::new().compare(&key, version).delete(&key);
            match self.store.txn(txn).await? {
                TxnOutcome::Committed { .. } => {
                    self.routing_changed();
                    tracing::warn!(
                        namespace = name,
                        next = ns.next,
                        forced = force,
                        ?held_by,
                        "namespace deleted"
                    );
                    return Ok(NamespaceDeleted {
                        name: name.to_string(),
                        next: ns.next,
                        held_by: held_by.into_iter().map(u64::from).collect(),
                    });
                }
                // A block was granted meanwhile: look again.
                TxnOutcome::Conflict { .. } => {
                    self.metrics.cas_conflicts.inc();
                }
            }
        }
    }

    /// The host ids whose live lease holds an unreturned block recorded in `uses`.
    async fn holding(&self, uses: &[(u32, NsUseRecord)]) -> Result<Vec<u32>, CoordError> {
        let with_block: Vec<&(u32, NsUseRecord)> =
            uses.iter().filter(|(_, u)| u.last.is_some()).collect();
        let mut held_by = Vec::new();
        let now_mono = self.time.mono_ms();
        for chunk in with_block.chunks(GET_MANY_MAX) {
            let keys: Vec<String> = chunk.iter().map(|(h, _)| host_key(*h)).collect();
            for ((host, u), v) in chunk.iter().zip(self.store.get_many(&keys).await?) {
                let Some(v) = v else { continue };
                let rec: HostRecord = records::decode(&host_key(*host), &v.value)?;
                if rec.token == u.token && self.lease_state(&rec, now_mono) == LeaseState::Live {
                    held_by.push(*host);
                }
            }
        }
        Ok(held_by)
    }

    /// Raises namespace `name`'s `next` to the first of its values at or above
    /// `next_at_least`: every block granted from now on lies above it. Refused
    /// (`WouldLower`) if that is below `next`; the same value again changes nothing.
    pub async fn raise_namespace(
        &self,
        name: &str,
        next_at_least: u64,
    ) -> Result<NamespaceStatus, CoordError> {
        check_name(name)?;
        self.cas_loop(|| Box::pin(self.raise_step(name, next_at_least)))
            .await?;
        self.namespace(name).await
    }

    async fn raise_step(&self, name: &str, at_least: u64) -> Result<Step<'_, ()>, CoordError> {
        let Some((mut ns, version)) = records::load_ns(self.store.as_ref(), name).await? else {
            return Err(CoordError::UnknownNamespace {
                name: name.to_string(),
            });
        };
        let next = first_value(at_least, ns.step, ns.offset)
            .filter(|&v| v < u64::MAX)
            .ok_or_else(|| {
                CoordError::BadRequest(format!(
                    "no value of namespace `{name}` ({} modulo {}) lies at or above {at_least} and below {}",
                    ns.offset,
                    ns.step,
                    u64::MAX
                ))
            })?;
        if next < ns.next {
            return Err(CoordError::WouldLower {
                what: format!("namespace `{name}`'s next value"),
                current: ns.next,
                asked: at_least,
            });
        }
        if next == ns.next {
            return Ok(Step::Answer(()));
        }
        let before = std::mem::replace(&mut ns.next, next);
        let key = ns_key(name);
        let txn = Txn::new().compare(&key, version).put(&key, encode(&ns));
        let name = name.to_string();
        Ok(Step::commit(txn, move || {
            tracing::warn!(namespace = %name, before, next, "namespace next raised");
        }))
    }
}
