//! Group commit over etcd: concurrent transactions on disjoint keys sent as one etcd
//! transaction, each batch sized to etcd's `--max-txn-ops` as etcd counts it (members plus
//! the largest member's operations) and to a byte limit, split in halves and sent again
//! when etcd still refuses it as too large.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What bounds a batch: the most members, and the members' `--max-txn-ops`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) members: usize,
    pub(super) max_txn_ops: usize,
    pub(super) bytes_max: usize,
}

/// What etcd counts of one transaction against `--max-txn-ops`: the longest of its compare
/// list, its success branch (the writes) and its failure branch (a read per compare).
fn txn_ops(txn: &Txn) -> usize {
    txn.compares.len().max(txn.ops.len())
}

/// What etcd counts of a batch of transactions whose `txn_ops` are `ops` against
/// `--max-txn-ops`: etcd checks the outer transaction's branch length (the number of
/// members), and each nested transaction against what is left (`checkRequestOp(u,
/// maxTxnOps-opc)` in etcd's `v3rpc/key.go`), so a batch fits when its members plus its
/// largest member's operations do.
pub fn batch_ops(ops: impl IntoIterator<Item = usize>) -> usize {
    let (members, largest) = ops
        .into_iter()
        .fold((0, 0), |(n, max), o| (n + 1, usize::max(max, o)));
    members + largest
}

/// Roughly the bytes `txn` adds to a request: each key goes out up to three times (compare,
/// write, read back on failure), each value once, with a few bytes of framing each.
fn txn_bytes(prefix: &str, txn: &Txn) -> usize {
    let compares: usize = txn
        .compares
        .iter()
        .map(|(k, _)| 2 * (prefix.len() + k.len() + 16))
        .sum();
    let ops: usize = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => prefix.len() + key.len() + value.len() + 16,
            Op::Delete { key } => prefix.len() + key.len() + 16,
        })
        .sum();
    compares + ops + 16
}

/// The keys `txn` compares or writes.
fn txn_keys(txn: &Txn) -> impl Iterator<Item = &str> + Clone {
    txn.compares
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(txn.ops.iter().map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => key.as_str(),
        }))
}

/// Picks from `held` (in queue order) the transactions of the next batch: keys disjoint from
/// every one already taken, at most `limits.members` of them, etcd's count of the batch's
/// operations within `limits.max_txn_ops` ([`batch_ops`]) and its bytes within
/// `limits.bytes_max`. The first transaction is always taken (alone, it fits: its options
/// were checked).
fn pick_batch(prefix: &str, held: &[&Txn], limits: Limits) -> Vec<usize> {
    let mut keys: HashSet<&str> = HashSet::new();
    let mut take = Vec::new();
    let (mut largest, mut bytes) = (0, 0);
    for (i, txn) in held.iter().enumerate() {
        if take.len() == limits.members {
            break;
        }
        let (ops, size) = (txn_ops(txn), txn_bytes(prefix, txn));
        let fits = take.is_empty()
            || (take.len() + 1 + largest.max(ops) <= limits.max_txn_ops
                && bytes + size <= limits.bytes_max);
        let mut own = txn_keys(txn);
        if fits && own.clone().all(|k| !keys.contains(k)) {
            keys.extend(&mut own);
            take.push(i);
            largest = largest.max(ops);
            bytes += size;
        }
    }
    take
}

/// Group commit for etcd: takes the transactions queued, packs those [`pick_batch`] chooses
/// into one etcd transaction of nested ones (no compares of its own, so each nested
/// transaction succeeds or fails on its own compares, all evaluated against the state before
/// the batch), and answers each caller from its nested answer. Transactions whose keys
/// overlap one already in the batch wait for a later batch: etcd refuses a transaction that
/// writes a key twice, and a nested read would otherwise see a neighbour's write. Up to
/// [`BATCHES_IN_FLIGHT`] batches are in flight; concurrent transactions may commit in any
/// order, as they may without batching.
pub(super) async fn batcher(
    client: Client,
    prefix: String,
    limits: Limits,
    mut rx: mpsc::Receiver<Queued>,
    counts: Arc<Counts>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let learned = Arc::new(Learned::new(limits.max_txn_ops));
    let mut held: VecDeque<Queued> = VecDeque::new();
    loop {
        if held.is_empty() {
            match rx.recv().await {
                Some(q) => held.push_back(q),
                None => return,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        while held.len() < limits.members * 4 {
            match rx.try_recv() {
                Ok(q) => held.push_back(q),
                Err(_) => break,
            }
        }
        let txns: Vec<&Txn> = held.iter().map(|q| &q.txn).collect();
        let take = pick_batch(&prefix, &txns, learned.apply(limits));
        let mut batch = Vec::with_capacity(take.len());
        for i in take.into_iter().rev() {
            batch.push(held.remove(i).expect("an index just seen"));
        }
        batch.reverse();
        let (client, prefix, counts, learned) = (
            client.clone(),
            prefix.clone(),
            counts.clone(),
            learned.clone(),
        );
        tokio::spawn(async move {
            commit_batch(&client, &prefix, batch, &counts, &learned).await;
            drop(permit);
        });
    }
}

/// What etcd's refusals taught: the operations and bytes a batch may really have. They
/// start at the configured limits and only go down, each change logged once.
#[derive(Debug)]
struct Learned {
    max_txn_ops: std::sync::atomic::AtomicUsize,
    bytes_max: std::sync::atomic::AtomicUsize,
}

impl Learned {
    fn new(max_txn_ops: usize) -> Self {
        Self {
            max_txn_ops: max_txn_ops.into(),
            bytes_max: BATCH_BYTES_MAX.into(),
        }
    }

    /// `limits` within what etcd was found to take.
    fn apply(&self, limits: Limits) -> Limits {
        Limits {
            members: limits.members,
            max_txn_ops: limits
                .max_txn_ops
                .min(self.max_txn_ops.load(Ordering::Relaxed)),
            bytes_max: limits.bytes_max.min(self.bytes_max.load(Ordering::Relaxed)),
        }
    }

    /// etcd refused `batch` with `e`: batches stay below its size from now on.
    fn refused(&self, prefix: &str, batch: &[Queued], e: &etcd_client::Error) {
        // Never below what one transaction may have: a single transaction always goes out
        // alone, and gets etcd's own answer.
        let (what, limit, size, floor) = if e.to_string().contains("too many operations") {
            let ops = batch_ops(batch.iter().map(|q| txn_ops(&q.txn)));
            (
                "operations",
                &self.max_txn_ops,
                ops,
                crate::store::TXN_OPS_MAX + 1,
            )
        } else {
            let bytes = batch.iter().map(|q| txn_bytes(prefix, &q.txn)).sum();
            (
                "bytes",
                &self.bytes_max,
                bytes,
                crate::store::VALUE_BYTES_MAX,
            )
        };
        let below = size.saturating_sub(1).max(floor);
        if limit.fetch_min(below, Ordering::Relaxed) > below {
            tracing::warn!(members = batch.len(), what, size, now_at_most = below, error = %e,
                "etcd refused a batch as too large; its parts are sent again in halves, and batches stay below that size from now on (set --etcd-max-txn-ops to the members' --max-txn-ops)");
        }
    }
}

/// Whether `e` is etcd refusing a request for its size (`--max-txn-ops` or
/// `--max-request-bytes`). etcd checks both before it applies anything, so the request had
/// no effect and its parts may be sent again on their own.
fn refused_as_too_large(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("too many operations in txn request") || text.contains("request is too large")
}

/// Sends `batch` as one etcd transaction and answers every caller. A batch etcd refuses as
/// too large (its `--max-txn-ops` is below `--etcd-max-txn-ops`, or the request is above
/// its `--max-request-bytes`) is split in halves and each half sent again, down to single
/// transactions, which get etcd's error.
async fn commit_batch(
    client: &Client,
    prefix: &str,
    batch: Vec<Queued>,
    counts: &Counts,
    learned: &Learned,
) {
    let mut pending = vec![batch];
    while let Some(mut batch) = pending.pop() {
        let nested: Vec<TxnOp> = batch
            .iter()
            .map(|q| TxnOp::txn(etcd_txn(prefix, &q.txn)))
            .collect();
        let answer = client
            .kv_client()
            .txn(etcd_client::Txn::new().and_then(nested))
            .await;
        let resp = match answer {
            Ok(r) => r,
            Err(e) if batch.len() > 1 && refused_as_too_large(&e) => {
                learned.refused(prefix, &batch, &e);
                let second = batch.split_off(batch.len() / 2);
                pending.push(second);
                pending.push(batch);
                continue;
            }
            Err(e) => {
                let msg = format!("etcd txn (batch of {}): {e}", batch.len());
                for q in batch {
                    let _ = q.reply.send(Err(StoreError::Backend(msg.clone())));
                }
                continue;
            }
        };
        counts.add(batch.len());
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut answers = resp.op_responses().into_iter();
        for q in batch {
            let result = match answers.next() {
                Some(TxnOpResponse::Txn(r)) => {
                    outcome(&q.txn, r.succeeded(), revision, r.op_responses())
                }
                _ => Err(StoreError::Backend(
                    "etcd txn: a batch answered without a nested answer per transaction".into(),
                )),
            };
            let _ = q.reply.send(result);
        }
    }
}
