//! The etcd backend against a real etcd cluster: the store conformance suite unchanged, the
//! coordinator's domain checks (one test body per backend), and two coordinators sharing one
//! prefix. Built with the `etcd` feature; the cluster's client URLs come from
//! `SHARDFLAKE_TEST_ETCD` (scripts/test.sh starts a 3-member cluster on loopback and sets
//! it). Without it these tests fail rather than pass unchecked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardflake::Layout;
use shardflake_coordinator::store::{conformance, EtcdOptions, EtcdStore, KvStore, ETCD_BATCH_MAX};
use shardflake_coordinator::{CoordError, Coordinator, CoordinatorConfig, ManualTime};

/// The environment variable with the test cluster's client URLs.
const ENDPOINTS_ENV: &str = "SHARDFLAKE_TEST_ETCD";

fn endpoints() -> Vec<String> {
    let v = std::env::var(ENDPOINTS_ENV).unwrap_or_else(|_| {
        panic!(
            "{ENDPOINTS_ENV} is not set: these tests need an etcd cluster \
             (scripts/test.sh starts one; or scripts/etcd-cluster.sh start DIR)"
        )
    });
    vec![v]
}

/// A prefix no other test (or earlier run) has used.
fn fresh_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "/shardflake-test/{}-{nanos}-{}/",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn store_on(prefix: &str) -> EtcdStore {
    store_batching(prefix, 1).await
}

/// A store that sends up to `batch_max` concurrent transactions as one etcd transaction.
async fn store_batching(prefix: &str, batch_max: usize) -> EtcdStore {
    EtcdStore::connect(
        EtcdOptions::new(&endpoints(), prefix)
            .unwrap()
            .with_batch_max(batch_max),
    )
    .await
    .expect("the test etcd cluster answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    conformance::run_all(|| async { store_on(&fresh_prefix()).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_with_group_commit_conforms() {
    conformance::run_all(|| async { store_batching(&fresh_prefix(), 128).await }).await;
}

/// Concurrent transactions on disjoint keys share etcd transactions, each with its own
/// outcome; transactions on one key are never in one batch, so none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_each_transaction_on_its_own() {
    use shardflake_coordinator::store::{Txn, TxnOutcome};
    let s = Arc::new(store_batching(&fresh_prefix(), 128).await);
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k/{:03}", i % 16);
            let mut commits = 0u32;
            // Every task creates its key if absent; of each key's four tasks, one wins.
            match s
                .txn(
                    Txn::new()
                        .compare(&key, 0)
                        .put(&key, i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap()
            {
                TxnOutcome::Committed { .. } => commits += 1,
                TxnOutcome::Conflict {
                    key: k,
                    actual_version,
                } => {
                    assert_eq!(k, key);
                    assert!(actual_version > 0);
                }
            }
            commits
        }));
    }
    let mut commits = 0;
    for t in tasks {
        commits += t.await.unwrap();
    }
    assert_eq!(commits, 16, "one create per key");
    assert_eq!(s.scan("k/").await.unwrap().len(), 16);
    let stats = s.stats();
    assert_eq!(stats.txns, 64);
    assert!(
        stats.commits < stats.txns,
        "transactions shared etcd transactions: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_shared_by_two_coordinators_conforms() {
    // One coordinator sends each transaction alone, the other batches.
    conformance::run_shared(|| async {
        let prefix = fresh_prefix();
        let a: Arc<dyn KvStore> = Arc::new(store_on(&prefix).await);
        let b: Arc<dyn KvStore> = Arc::new(store_batching(&prefix, ETCD_BATCH_MAX).await);
        (a, b)
    })
    .await;
}

/// The store identity is one per prefix: coordinators on one prefix share it, another prefix
/// of the same etcd is another cluster, and a coordinator with another layout is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_identity_is_one_per_prefix() {
    let open = |prefix: String, layout: &'static str| async move {
        Coordinator::open(
            Arc::new(store_on(&prefix).await),
            Arc::new(ManualTime::new(1_800_000_000_000)),
            CoordinatorConfig::new(Layout::preset(layout).unwrap()),
        )
        .await
    };
    let p = fresh_prefix();
    let a = open(p.clone(), "default").await.unwrap();
    let b = open(p.clone(), "default").await.unwrap();
    assert_eq!(a.store_id(), b.store_id());
    let other = open(fresh_prefix(), "default").await.unwrap();
    assert_ne!(a.store_id(), other.store_id());
    let err = open(p, "twitter").await.unwrap_err();
    assert!(matches!(err, CoordError::LayoutMismatch { .. }), "{err}");
}

/// Keys outside the prefix are neither read nor written: two clusters share one etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_do_not_see_each_other() {
    use shardflake_coordinator::store::Txn;
    let (a, b) = (
        store_on(&fresh_prefix()).await,
        store_on(&fresh_prefix()).await,
    );
    a.txn(Txn::new().put("host/0001", b"a".to_vec()))
        .await
        .unwrap();
    assert_eq!(b.get("host/0001").await.unwrap(), None);
    assert!(b.scan("host/").await.unwrap().is_empty());
    assert_eq!(a.scan("").await.unwrap().len(), 1);
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let e = |eps: &[&str], prefix: &str| {
        let eps: Vec<String> = eps.iter().map(|s| s.to_string()).collect();
        EtcdOptions::new(&eps, prefix).unwrap_err().to_string()
    };
    assert!(e(&[], "/a/").contains("at least one endpoint"));
    assert!(e(&[" , "], "/a/").contains("at least one endpoint"));
    for bad in ["", "/", "a/", "/a"] {
        assert!(
            e(&["http://127.0.0.1:2379"], bad).contains("must start and end with '/'"),
            "{bad}"
        );
    }
    let ok = EtcdOptions::new(&["http://a:1,http://b:2".into()], "/x/").unwrap();
    assert_eq!(ok.endpoints, ["http://a:1", "http://b:2"]);
    assert_eq!(ok.batch_max, 1);
    assert_eq!(ok.clone().with_batch_max(0).batch_max, 1);
    assert_eq!(ok.with_batch_max(100_000).batch_max, ETCD_BATCH_MAX);
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error() {
    // A port nothing listens on (the etcd client retries inside its timeouts).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err =
        EtcdStore::connect(EtcdOptions::new(&[format!("http://127.0.0.1:{port}")], "/x/").unwrap())
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// A single etcd member with TLS and client-certificate authentication, on free loopback
/// ports, with certificates made by `openssl` for this test; killed on drop.
struct TlsEtcd {
    _etcd: KillOnDrop,
    dir: tempfile::TempDir,
    url: String,
}

/// Starts a single etcd member with its data and working directory in `dir`, clients on
/// `scheme://127.0.0.1:<free port>`, and `extra` flags; returns it and its client URL.
fn single_member(dir: &std::path::Path, scheme: &str, extra: &[&str]) -> (KillOnDrop, String) {
    let (client, peer) = (free_port(), free_port());
    let url = format!("{scheme}://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new("etcd")
        .args(["--name", "m", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m={peer_url}")])
        .args(extra)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd runs (scripts/test.sh installs it)");
    (KillOnDrop(child), url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsEtcd {
    fn start() -> TlsEtcd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=shardflake-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, usage) in [
            ("server", "serverAuth,clientAuth"),
            ("client", "clientAuth"),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            std::fs::write(
                d.join(format!("{name}.ext")),
                format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "30",
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        let (etcd, url) = single_member(
            d,
            "https",
            &[
                "--cert-file",
                "server.pem",
                "--key-file",
                "server.key",
                "--trusted-ca-file",
                "ca.pem",
                "--client-cert-auth",
            ],
        );
        TlsEtcd {
            dir,
            _etcd: etcd,
            url,
        }
    }

    fn options(&self, client_cert: bool) -> EtcdOptions {
        let d = self.dir.path();
        let (cert, key) = (d.join("client.pem"), d.join("client.key"));
        EtcdOptions::new(std::slice::from_ref(&self.url), &fresh_prefix())
            .unwrap()
            .with_tls_files(
                &d.join("ca.pem"),
                client_cert.then_some(cert.as_path()),
                client_cert.then_some(key.as_path()),
            )
            .unwrap()
    }

    /// Connects, retrying while the member starts.
    async fn connect(&self, options: EtcdOptions) -> Result<EtcdStore, String> {
        let mut last = String::new();
        for _ in 0..100 {
            match EtcdStore::connect(options.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(last)
    }
}

/// A single plain-text etcd member with authentication on: user `root`, password `pw`.
fn start_etcd_with_auth() -> (tempfile::TempDir, KillOnDrop, String) {
    let dir = tempfile::tempdir().unwrap();
    let (guard, url) = single_member(dir.path(), "http", &[]);
    let etcdctl = |args: &[&str]| {
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &url])
            .args(args)
            .output()
            .expect("etcdctl runs (scripts/test.sh installs it)")
    };
    let mut ok = false;
    for _ in 0..100 {
        if etcdctl(&["user", "add", "root", "--new-user-password", "pw"])
            .status
            .success()
        {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ok, "etcdctl user add");
    let out = etcdctl(&["auth", "enable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, guard, url)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With authentication on, the right user and password work and a wrong one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_authentication_needs_the_user() {
    let (_dir, _etcd, url) = start_etcd_with_auth();
    let options = |user: Option<(&str, &str)>| {
        let o = EtcdOptions::new(std::slice::from_ref(&url), &fresh_prefix()).unwrap();
        match user {
            Some((u, p)) => o.with_user(u, p),
            None => o,
        }
    };
    let s = EtcdStore::connect(options(Some(("root", "pw"))))
        .await
        .expect("the right password");
    use shardflake_coordinator::store::{Txn, TxnOutcome};
    let out = s.txn(Txn::new().put("k", b"v".to_vec())).await.unwrap();
    assert!(matches!(out, TxnOutcome::Committed { .. }));
    assert!(!format!("{:?}", options(Some(("root", "pw")))).contains("pw\""));
    let err = EtcdStore::connect(options(Some(("root", "wrong"))))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "{err}");
    let err = EtcdStore::connect(options(None))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("user name is empty") || err.contains("permission denied"),
        "{err}"
    );
}

/// TLS with client certificates: the store conforms over it; without a client certificate,
/// or with a CA but plain-text endpoints, it refuses with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates_conforms() {
    let etcd = TlsEtcd::start();
    let store = etcd.connect(etcd.options(true)).await.expect("TLS connect");
    drop(store);
    conformance::run_all(|| async { etcd.connect(etcd.options(true)).await.unwrap() }).await;
    let err = EtcdStore::connect(etcd.options(false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not answer") || err.contains("cannot connect"),
        "{err}"
    );
    let plain = EtcdOptions::new(&["http://127.0.0.1:1".into()], "/x/")
        .unwrap()
        .with_tls_files(&etcd.dir.path().join("ca.pem"), None, None)
        .unwrap();
    assert!(plain.check().unwrap_err().contains("https://"));
    let no_ca = EtcdOptions::new(&["https://127.0.0.1:1".into()], "/x/").unwrap();
    assert!(no_ca.check().unwrap_err().contains("--etcd-cacert"));
    let missing = EtcdOptions::new(&["https://127.0.0.1:1".into()], "/x/")
        .unwrap()
        .with_tls_files(std::path::Path::new("/nonexistent/ca.pem"), None, None)
        .unwrap_err();
    assert!(
        missing.contains("--etcd-cacert /nonexistent/ca.pem"),
        "{missing}"
    );
}

/// `count` leases on one coordinator, then one renewal of each, all at once: the burst that
/// follows an etcd election, a coordinator failover or a healed partition. Returns the
/// renewals that failed, with their errors.
async fn renewal_burst(store: EtcdStore, count: u32) -> Vec<String> {
    use shardflake_coordinator::testing::secret;
    use shardflake_proto::coord::{AcquireRequest, RenewRequest};
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = 1024;
    let c = Arc::new(
        Coordinator::open(Arc::new(store), Arc::new(ManualTime::new(1)), config)
            .await
            .unwrap(),
    );
    let mut grants = Vec::new();
    for i in 0..count {
        let g = c
            .acquire(&AcquireRequest {
                secret: secret(),
                name: format!("n{i}"),
                ttl_ms: Some(60_000),
                ..Default::default()
            })
            .await
            .unwrap();
        grants.push((g.host_id, g.token));
    }
    let tasks: Vec<_> = grants
        .into_iter()
        .map(|(host_id, token)| {
            let c = c.clone();
            tokio::spawn(async move {
                c.renew(
                    host_id,
                    &RenewRequest {
                        secret: secret(),
                        token,
                        reserve_until_ms: Some(10_000),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("host {host_id}: {e}"))
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failed.push(e);
        }
    }
    failed
}

/// A burst of 500 concurrent renewals of disjoint leases through group commit against the
/// 3-member cluster: etcd counts a batch as its members plus its largest member's
/// operations against `--max-txn-ops`, and batches are sized so, so none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_renewals_is_answered_without_an_error() {
    let store = store_batching(&fresh_prefix(), ETCD_BATCH_MAX).await;
    let failed = renewal_burst(store, 500).await;
    assert!(
        failed.is_empty(),
        "{} of 500 renewals failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

/// A member whose `--max-txn-ops` is below what the coordinator was told refuses the first
/// full batches; they are split and sent again, and every renewal of the burst succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_etcd_refuses_as_too_large_are_split_and_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, url) = single_member(dir.path(), "http", &["--max-txn-ops", "24"]);
    let options = EtcdOptions::new(std::slice::from_ref(&url), &fresh_prefix())
        .unwrap()
        .with_batch_max(ETCD_BATCH_MAX);
    let mut store = None;
    for _ in 0..100 {
        match EtcdStore::connect(options.clone()).await {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let store = store.expect("the single member answers");
    let failed = renewal_burst(store, 200).await;
    assert!(
        failed.is_empty(),
        "{} of 200 renewals failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
}

#[test]
fn a_batch_counts_its_members_plus_its_largest_member() {
    use shardflake_coordinator::store::batch_ops;
    assert_eq!(batch_ops([2, 2, 2]), 5);
    assert_eq!(batch_ops([1; 127]), 128);
    assert_eq!(
        batch_ops([1; 128]),
        129,
        "a full batch of 128 does not fit 128"
    );
    assert_eq!(batch_ops([]), 0);
    let too_small = EtcdOptions::new(&["http://127.0.0.1:1".into()], "/p/")
        .unwrap()
        .with_max_txn_ops(64)
        .unwrap_err();
    assert!(too_small.contains("--etcd-max-txn-ops 64"), "{too_small}");
}

/// The coordinators compact etcd's history themselves: with compaction every second, a
/// compaction happens within a few intervals, to a revision one interval old, and what was
/// written stays readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_by_the_coordinator_holding_the_compactor_key() {
    use shardflake_coordinator::store::Txn;
    let store = EtcdStore::connect(
        EtcdOptions::new(&endpoints(), &fresh_prefix())
            .unwrap()
            .with_compaction(true, std::time::Duration::from_secs(1))
            .unwrap(),
    )
    .await
    .unwrap();
    let mut first = 0;
    for i in 0..20u32 {
        let t = store
            .txn(Txn::new().put("k", i.to_string().into_bytes()))
            .await
            .unwrap();
        if first == 0 {
            if let shardflake_coordinator::store::TxnOutcome::Committed { revision } = t {
                first = revision;
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The first compaction may reach a revision from before the writes (the one seen an
    // interval before it); a later one passes them.
    while store.compactions().1 < first {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction past revision {first} within 20 s: {:?}",
            store.compactions()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let v = store.get("k").await.unwrap().unwrap();
    assert_eq!(v.value, b"19");
    let g = store
        .gauges()
        .into_iter()
        .find(|g| g.name == "etcd_compactions")
        .unwrap();
    assert!(g.value >= 1);
}
