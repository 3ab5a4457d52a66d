//! The etcd [`KvStore`]: the coordinator's keys under one key prefix of an etcd cluster, so
//! that several coordinator processes share one replicated state and any of them can serve
//! any node. Built with the `etcd` feature.
//!
//! The mapping is one to one, because [`KvStore`] was shaped after etcd's API:
//! - a version is etcd's `mod_revision`, and an absent key compares as revision 0;
//! - a [`Txn`] is one etcd `Txn`: `If(ModRevision(k) == v, ...)` `Then(Put/Delete ...)`
//!   `Else(Get k ...)`. The `Else` branch reads the compared keys in the same transaction, so a
//!   conflict names the key that moved and its version as of the failed attempt;
//! - reads are linearizable (etcd's default, served through the leader's read index).
//!
//! The write path is TiKV PD's id allocator (`pkg/id`, `rebaseLocked`): one transaction that
//! checks what it read and writes the new state, so two coordinators racing for the same host
//! id give exactly one grant and the other sees a conflict and starts over.
//!
//! A request that times out may still have been applied by etcd. The coordinator treats such
//! an error as "unknown": the caller retries, and every operation is idempotent on retry
//! (acquire by its request id, renewals and extensions by the token and the bound they set).
//!
//! Besides the key-value contract the store keeps a change feed ([`KvStore::changes`]): one
//! etcd watch on the prefix, restarted with backoff when it breaks, which standby long polls
//! use to look again when any coordinator writes.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use super::etcd_maintenance::{check_alarms, maintain, EtcdState};

mod batch;
use super::{
    check_get_many, BoxFuture, KvStore, Op, StoreError, StoreGauge, StoreHealth, StoreStats, Txn,
    TxnOutcome, Versioned,
};
pub use batch::batch_ops;
use batch::{batcher, Limits};

/// The key prefix when none is given.
pub const ETCD_PREFIX_DEFAULT: &str = "/shardflake/";
/// The most transactions in one batch. What really bounds a batch is etcd's `--max-txn-ops`
/// ([`EtcdOptions::max_txn_ops`]): see [`batch_ops`].
pub const ETCD_BATCH_MAX: usize = 128;
/// Default of [`EtcdOptions::compact_every`].
pub const ETCD_COMPACT_EVERY_DEFAULT: Duration = Duration::from_secs(300);
/// etcd's default `--quota-backend-bytes` (2 GiB), the default of
/// [`EtcdOptions::quota_bytes`].
pub const ETCD_QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's default `--max-txn-ops`, the default of [`EtcdOptions::max_txn_ops`].
pub const ETCD_MAX_TXN_OPS_DEFAULT: usize = 128;
/// The largest batch request, in bytes: well below etcd's default `--max-request-bytes`
/// (1.5 MiB), which also bounds one transaction.
const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Batches in flight at once. On a 3-member loopback cluster 1 and 2 give the largest
/// batches and the best throughput (4 splits the queue into small batches: 5.4k renewals/s
/// against 7.3k); over a network, where a round trip is longer, batches grow on their own.
const BATCHES_IN_FLIGHT: usize = 2;
/// Transactions waiting for a batch at most; callers wait beyond that.
const BATCH_QUEUE_MAX: usize = 4_096;
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take (a leader election in etcd takes about a second).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The change feed's backoff after a broken watch: first and longest wait.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the etcd cluster is and which part of it is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every key is stored under this prefix, so that several clusters can share one etcd.
    /// Must start and end with `/`.
    pub prefix: String,
    /// Most transactions sent as one etcd transaction (group commit; 1 sends each alone).
    pub batch_max: usize,
    /// The members' `--max-txn-ops` (etcd's API does not report it): a batch is sized so
    /// that etcd's count of its operations stays within it ([`batch_ops`]).
    pub max_txn_ops: usize,
    /// Compact etcd's history (one coordinator at a time); off for a shared etcd whose
    /// operator compacts it.
    pub compaction: bool,
    /// How often the history is compacted (keeping one interval of it).
    pub compact_every: Duration,
    /// The members' `--quota-backend-bytes` (etcd 3.4 does not report it): the size is
    /// measured against it.
    pub quota_bytes: u64,
    /// TLS to the members (`https://` endpoints).
    pub tls: Option<EtcdTls>,
    /// User and password, when the cluster has authentication on.
    pub user: Option<EtcdUser>,
}

/// TLS to etcd: the CA that signed the members' certificates, and the client's certificate
/// and key for members that check them (`--client-cert-auth`). PEM, read at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// An etcd user; the password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdUser {
    /// The user name.
    pub name: String,
    password: String,
}

impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// Options for `endpoints` (comma separated allowed) under `prefix`; checks both and
    /// says what is wrong, naming the flag.
    pub fn new(endpoints: &[String], prefix: &str) -> Result<Self, String> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(
                "--etcd needs at least one endpoint URL, e.g. http://127.0.0.1:2379".into(),
            );
        }
        if let Some(bad) = endpoints.iter().find(|e| e.contains(char::is_whitespace)) {
            return Err(format!("--etcd: endpoint `{bad}` contains whitespace"));
        }
        // A prefix that is a prefix of another cluster's ("/a" and "/ab") would mix their
        // keys; one that starts and ends with '/' cannot.
        if prefix.len() < 2 || !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(format!(
                "--etcd-prefix `{prefix}` must start and end with '/' and name something, e.g. {ETCD_PREFIX_DEFAULT}"
            ));
        }
        if prefix.len() > super::KEY_BYTES_MAX / 2 {
            return Err(format!(
                "--etcd-prefix is {} bytes long, above the limit of {}",
                prefix.len(),
                super::KEY_BYTES_MAX / 2
            ));
        }
        Ok(Self {
            endpoints,
            prefix: prefix.to_string(),
            batch_max: 1,
            max_txn_ops: ETCD_MAX_TXN_OPS_DEFAULT,
            compaction: true,
            compact_every: ETCD_COMPACT_EVERY_DEFAULT,
            quota_bytes: ETCD_QUOTA_BYTES_DEFAULT,
            tls: None,
            user: None,
        })
    }

    /// TLS with the CA certificate in `ca` and, for members that check clients, the client
    /// certificate and key in `cert` and `key` (both or neither). Errors name the file.
    pub fn with_tls_files(
        mut self,
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, String> {
        let read = |flag: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
        };
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((read("--etcd-cert", c)?, read("--etcd-key", k)?)),
            (None, None) => None,
            _ => return Err("--etcd-cert and --etcd-key go together".into()),
        };
        self.tls = Some(EtcdTls {
            ca_pem: read("--etcd-cacert", ca)?,
            client,
        });
        Ok(self)
    }

    /// Authenticates as `name` with `password`.
    pub fn with_user(mut self, name: &str, password: &str) -> Self {
        self.user = Some(EtcdUser {
            name: name.to_string(),
            password: password.to_string(),
        });
        self
    }

    /// Checks that the endpoints and TLS agree: `https://` endpoints need a CA, and TLS
    /// needs `https://` endpoints.
    pub fn check(&self) -> Result<(), String> {
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        match (&self.tls, https) {
            (None, n) if n > 0 => Err(
                "--etcd: https:// endpoints need the CA certificate that signed the members' certificates (--etcd-cacert)".into(),
            ),
            (Some(_), n) if n < self.endpoints.len() => Err(
                "--etcd-cacert: give every --etcd endpoint as https://".into(),
            ),
            _ => Ok(()),
        }
    }

    /// Sends up to `batch_max` concurrent transactions as one etcd transaction (group
    /// commit), at most [`ETCD_BATCH_MAX`]; 1 turns it off.
    pub fn with_batch_max(mut self, batch_max: usize) -> Self {
        self.batch_max = batch_max.clamp(1, ETCD_BATCH_MAX);
        self
    }

    /// Compaction on or off, every `every` (`--etcd-compaction`, `--etcd-compact-every`);
    /// the interval must be at least a second.
    pub fn with_compaction(mut self, on: bool, every: Duration) -> Result<Self, String> {
        if every < Duration::from_secs(1) {
            return Err(format!(
                "--etcd-compact-every {} ms is below 1 s",
                every.as_millis()
            ));
        }
        self.compaction = on;
        self.compact_every = every;
        Ok(self)
    }

    /// The members' space quota (`--etcd-quota-bytes`), at least 1 MiB.
    pub fn with_quota_bytes(mut self, bytes: u64) -> Result<Self, String> {
        if bytes < 1024 * 1024 {
            return Err(format!(
                "--etcd-quota-bytes {bytes} is below 1 MiB; give the members' --quota-backend-bytes (default {ETCD_QUOTA_BYTES_DEFAULT})"
            ));
        }
        self.quota_bytes = bytes;
        Ok(self)
    }

    /// The members' `--max-txn-ops` (`--etcd-max-txn-ops`). One transaction of the
    /// coordinator has up to [`super::TXN_OPS_MAX`] operations and must fit a batch of its
    /// own, so a smaller value is refused, naming the flag.
    pub fn with_max_txn_ops(mut self, max_txn_ops: usize) -> Result<Self, String> {
        let min = super::TXN_OPS_MAX + 1;
        if max_txn_ops < min {
            return Err(format!(
                "--etcd-max-txn-ops {max_txn_ops} is below {min}: a coordinator transaction has up to {} operations, and etcd counts one more for the batch that carries it; raise the members' --max-txn-ops (default {ETCD_MAX_TXN_OPS_DEFAULT})",
                super::TXN_OPS_MAX
            ));
        }
        self.max_txn_ops = max_txn_ops;
        Ok(self)
    }
}

/// A [`KvStore`] in etcd; see the module docs.
pub struct EtcdStore {
    client: Client,
    options: EtcdOptions,
    changes: watch::Receiver<u64>,
    feed: JoinHandle<()>,
    /// The group-commit queue, when batching is on.
    batches: Option<mpsc::Sender<Queued>>,
    counts: Arc<Counts>,
    /// Compaction and the size and alarm watch.
    maintenance: JoinHandle<()>,
    etcd_state: Arc<std::sync::Mutex<EtcdState>>,
}

/// Transactions sent, and the etcd transactions that carried them.
#[derive(Debug, Default)]
struct Counts {
    commits: AtomicU64,
    txns: AtomicU64,
    reads: AtomicU64,
}

impl Counts {
    fn add(&self, txns: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.txns.fetch_add(txns as u64, Ordering::Relaxed);
    }
}

/// A transaction waiting for a batch, and where its outcome goes.
struct Queued {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnOutcome, StoreError>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.feed.abort();
        self.maintenance.abort();
    }
}

fn backend(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd {what}: {e}"))
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers (one linearizable read). Needs a
    /// tokio runtime: the change feed runs as a task on it.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        options.check().map_err(StoreError::Backend)?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some(tls) = &options.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                t = t.identity(Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(t);
        }
        if let Some(user) = &options.user {
            connect = connect.with_user(user.name.clone(), user.password.clone());
        }
        let mut client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot connect to etcd at {}: {e}",
                    options.endpoints.join(",")
                ))
            })?;
        client
            .get(options.prefix.as_bytes(), None)
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "etcd at {} does not answer: {e}",
                    options.endpoints.join(",")
                ))
            })?;
        check_alarms(&client).await?;
        let (tx, changes) = watch::channel(0);
        let feed = tokio::spawn(change_feed(client.clone(), options.prefix.clone(), tx));
        let etcd_state = Arc::new(std::sync::Mutex::new(EtcdState::default()));
        let maintenance = tokio::spawn(maintain(
            client.clone(),
            options.clone(),
            etcd_state.clone(),
        ));
        let counts = Arc::new(Counts::default());
        let batches = (options.batch_max > 1).then(|| {
            let (tx, rx) = mpsc::channel(BATCH_QUEUE_MAX);
            tokio::spawn(batcher(
                client.clone(),
                options.prefix.clone(),
                Limits {
                    members: options.batch_max,
                    max_txn_ops: options.max_txn_ops,
                    bytes_max: BATCH_BYTES_MAX,
                },
                rx,
                counts.clone(),
            ));
            tx
        });
        Ok(Self {
            client,
            options,
            changes,
            feed,
            batches,
            counts,
            maintenance,
            etcd_state,
        })
    }

    /// Compactions this coordinator made, and the revision of the last.
    pub fn compactions(&self) -> (u64, u64) {
        let s = self.etcd_state.lock().expect("poisoned");
        (s.compactions, s.compacted_to)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    fn full(&self, key: &str) -> Vec<u8> {
        full(&self.options.prefix, key)
    }

    fn strip<'k>(&self, full: &'k [u8]) -> Result<&'k str, StoreError> {
        full.strip_prefix(self.options.prefix.as_bytes())
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(full).into_owned(),
                reason: format!(
                    "a key outside the prefix `{}` or not UTF-8",
                    self.options.prefix
                ),
            })
    }
}

fn full(prefix: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `txn` as an etcd transaction: `If(compares) Then(writes) Else(read every compared key)`.
fn etcd_txn(prefix: &str, txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<Compare> = txn
        .compares
        .iter()
        .map(|(k, v)| Compare::mod_revision(full(prefix, k), CompareOp::Equal, *v as i64))
        .collect();
    let ops: Vec<TxnOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(full(prefix, key), value.clone(), None),
            Op::Delete { key } => TxnOp::delete(full(prefix, key), None),
        })
        .collect();
    let reads: Vec<TxnOp> = txn
        .compares
        .iter()
        .map(|(k, _)| TxnOp::get(full(prefix, k), None))
        .collect();
    etcd_client::Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(reads)
}

/// What became of `txn`, from etcd's answer: committed at `revision`, or the first compared
/// key whose revision differed (read by the `Else` branch).
fn outcome(
    txn: &Txn,
    succeeded: bool,
    revision: i64,
    reads: Vec<TxnOpResponse>,
) -> Result<TxnOutcome, StoreError> {
    if succeeded {
        return Ok(TxnOutcome::Committed {
            revision: revision.max(0) as u64,
        });
    }
    for ((key, expected), read) in txn.compares.iter().zip(reads) {
        let TxnOpResponse::Get(get) = read else {
            return Err(StoreError::Backend(
                "etcd txn: the failure branch answered something other than a read".into(),
            ));
        };
        let actual = get.kvs().first().map_or(0, |kv| versioned(kv).version);
        if actual != *expected {
            return Ok(TxnOutcome::Conflict {
                key: key.clone(),
                actual_version: actual,
            });
        }
    }
    Err(StoreError::Backend(
        "etcd txn: compares failed but every compared key has its expected revision".into(),
    ))
}

fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        version: kv.mod_revision().max(0) as u64,
    }
}

impl KvStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        Box::pin(async move {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .client
                .kv_client()
                .get(self.full(key), None)
                .await
                .map_err(|e| backend("get", e))?;
            Ok(resp.kvs().first().map(versioned))
        })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<Versioned>>, StoreError>> {
        Box::pin(async move {
            check_get_many(keys)?;
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            // A transaction of reads only: etcd serves it linearizably, like a get, in one
            // round trip.
            let reads: Vec<TxnOp> = keys
                .iter()
                .map(|k| TxnOp::get(self.full(k), None))
                .collect();
            let resp = self
                .client
                .kv_client()
                .txn(etcd_client::Txn::new().and_then(reads))
                .await
                .map_err(|e| backend("read", e))?;
            let answers = resp.op_responses();
            if answers.len() != keys.len() {
                return Err(StoreError::Backend(format!(
                    "etcd read of {} keys answered {} results",
                    keys.len(),
                    answers.len()
                )));
            }
            answers
                .into_iter()
                .map(|a| match a {
                    TxnOpResponse::Get(g) => Ok(g.kvs().first().map(versioned)),
                    _ => Err(StoreError::Backend(
                        "etcd read: a transaction of reads answered something else".into(),
                    )),
                })
                .collect()
        })
    }

    fn scan<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, Versioned)>, StoreError>> {
        Box::pin(async move {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            // etcd answers a range sorted by key, ascending.
            let resp = self
                .client
                .kv_client()
                .get(self.full(prefix), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| backend("scan", e))?;
            resp.kvs()
                .iter()
                .map(|kv| Ok((self.strip(kv.key())?.to_string(), versioned(kv))))
                .collect()
        })
    }

    fn count<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .client
                .kv_client()
                .get(
                    self.full(prefix),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .map_err(|e| backend("count", e))?;
            Ok(resp.count().max(0) as usize)
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            txn.validate()?;
            if let Some(queue) = &self.batches {
                let (reply, answer) = oneshot::channel();
                queue
                    .send(Queued { txn, reply })
                    .await
                    .map_err(|_| StoreError::Closed)?;
                return answer.await.map_err(|_| StoreError::Closed)?;
            }
            let resp = self
                .client
                .kv_client()
                .txn(etcd_txn(&self.options.prefix, &txn))
                .await
                .map_err(|e| backend("txn", e))?;
            self.counts.add(1);
            let revision = resp.header().map_or(0, |h| h.revision());
            outcome(&txn, resp.succeeded(), revision, resp.op_responses())
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            // A linearizable read of one key: its header carries the cluster's revision.
            let resp = self
                .client
                .kv_client()
                .get(
                    self.full("meta/cluster"),
                    Some(GetOptions::new().with_count_only()),
                )
                .await
                .map_err(|e| backend("revision", e))?;
            Ok(resp.header().map_or(0, |h| h.revision().max(0) as u64))
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counts.commits.load(Ordering::Relaxed),
            txns: self.counts.txns.load(Ordering::Relaxed),
            reads: self.counts.reads.load(Ordering::Relaxed),
        }
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }

    fn health(&self) -> BoxFuture<'_, StoreHealth> {
        Box::pin(async move { self.etcd_state.lock().expect("poisoned").health() })
    }

    fn gauges(&self) -> Vec<StoreGauge> {
        let s = self.etcd_state.lock().expect("poisoned");
        vec![
            StoreGauge {
                name: "etcd_db_size_bytes",
                help: "etcd's database size, as allocated on disk",
                value: s.db_size,
            },
            StoreGauge {
                name: "etcd_db_size_in_use_bytes",
                help: "Of etcd's database size, the bytes in use",
                value: s.db_in_use,
            },
            StoreGauge {
                name: "etcd_quota_bytes",
                help: "etcd's space quota (--etcd-quota-bytes)",
                value: self.options.quota_bytes,
            },
            StoreGauge {
                name: "etcd_nospace_alarm",
                help: "1 while etcd's NOSPACE alarm is raised",
                value: u64::from(s.alarm.is_some()),
            },
            StoreGauge {
                name: "etcd_compactions",
                help: "etcd history compactions this coordinator made",
                value: s.compactions,
            },
        ]
    }
}

/// Watches every key under `prefix` and publishes the revision of each change (any
/// coordinator's write) on `tx`. A broken watch is restarted with backoff, logged once when it
/// breaks and once when it is back; after a restart the feed fires once, since changes may
/// have been missed in between.
async fn change_feed(client: Client, prefix: String, tx: watch::Sender<u64>) {
    let mut backoff = WATCH_BACKOFF_MIN;
    let mut broken = false;
    loop {
        let mut error = String::from("the watch stream ended");
        let started = client
            .watch_client()
            .watch(prefix.as_bytes(), Some(WatchOptions::new().with_prefix()))
            .await;
        match started {
            Ok(mut stream) => {
                if broken {
                    tracing::info!(prefix = %prefix, "etcd watch restored");
                    broken = false;
                    tx.send_modify(|r| *r += 1);
                }
                backoff = WATCH_BACKOFF_MIN;
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            if msg.canceled() {
                                error = format!("the watch was canceled: {}", msg.cancel_reason());
                                break;
                            }
                            if !msg.events().is_empty() {
                                let rev = msg.header().map_or(0, |h| h.revision().max(0) as u64);
                                tx.send_modify(|r| *r = (*r + 1).max(rev));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = e.to_string();
                            break;
                        }
                    }
                }
            }
            Err(e) => error = e.to_string(),
        }
        if !broken {
            broken = true;
            tracing::warn!(prefix = %prefix, %error, "etcd watch broken; retrying with backoff, standbys fall back to periodic reads until it is back");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
    }
}
