//! The store's size under a steady renewal load, for as long as you like: HOSTS simulated
//! nodes (clients of one [`Coordinator`], as in `store_bench`, not processes) each renew
//! their lease every third of its TTL, while the coordinator does its housekeeping (the
//! maintainer lease, the namespace assignment, garbage collection) and, over etcd, compacts
//! history. Every REPORT seconds it prints a row: renewals so far, the database's size and
//! the bytes in use, the number of keys, compactions. At the end it checks the plateau: the
//! bytes in use (etcd) or the file (embedded) at the end are within 25% of what they were
//! after the first compaction (etcd) or a third of the way in (embedded), and the number of
//! keys did not grow; otherwise it exits 1.
//!
//! `cargo run --release -p shardflake-coordinator --features etcd --example soak -- SECONDS HOSTS [COMPACT_EVERY_S]`
//! (`COMPACT_EVERY_S` 0: etcd compaction off, to see the growth it prevents)
//! with `SHARDFLAKE_SOAK_ETCD=URL,...` for etcd (else the embedded store in a temp dir);
//! `scripts/soak.sh` starts a 3-member etcd on loopback and runs both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardflake::Layout;
use shardflake_coordinator::store::{KvStore, RedbOptions, RedbStore};
use shardflake_coordinator::{
    Coordinator, CoordinatorConfig, Housekeeper, SystemTimeSource, ASSIGN_INTERVAL_MS,
};
use shardflake_proto::coord::{AcquireRequest, LeaseSecret, RenewRequest};
use shardflake_proto::ns::NamespaceSpec;

/// The nodes' lease TTL (ms): they renew every third of it.
const TTL_MS: u64 = 9_000;
/// Namespaces in the store (their records and the nodes' use records are part of the size).
const NAMESPACES: usize = 16;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("SECONDS HOSTS [COMPACT_EVERY_S]: whole numbers")
        })
        .collect();
    let seconds = args.first().copied().unwrap_or(600);
    let hosts = args.get(1).copied().unwrap_or(1_000);
    let compact_every = args.get(2).copied().unwrap_or(60);
    assert!((1..=4_096).contains(&hosts), "HOSTS: 1 to 4096");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(soak(seconds, hosts, compact_every));
    std::process::exit(if ok { 0 } else { 1 });
}

/// The store and how to read its size.
struct Sized {
    store: Arc<dyn KvStore>,
    label: String,
    /// The redb file, for the embedded store.
    file: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

async fn open(compact_every: u64) -> Sized {
    let dir = tempfile::tempdir().unwrap();
    if let Ok(urls) = std::env::var("SHARDFLAKE_SOAK_ETCD") {
        #[cfg(feature = "etcd")]
        {
            use shardflake_coordinator::store::{EtcdOptions, EtcdStore};
            let prefix = format!("/soak-{}/", shardflake::uuid7::next());
            let endpoints: Vec<String> = urls.split(',').map(str::to_string).collect();
            // 0: compaction off (what etcd does without it).
            let options = EtcdOptions::new(&endpoints, &prefix)
                .unwrap()
                .with_compaction(compact_every > 0, Duration::from_secs(compact_every.max(1)))
                .unwrap();
            let store = EtcdStore::connect(options).await.unwrap();
            return Sized {
                store: Arc::new(store),
                label: format!("etcd ({} members)", endpoints.len()),
                file: None,
                _dir: dir,
            };
        }
        #[cfg(not(feature = "etcd"))]
        panic!("SHARDFLAKE_SOAK_ETCD={urls}: build with --features etcd");
    }
    let _ = compact_every;
    let file = dir.path().join("soak.redb");
    let store = RedbStore::open(&file, RedbOptions::default()).unwrap();
    Sized {
        store: Arc::new(store),
        label: "embedded".into(),
        file: Some(file),
        _dir: dir,
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
struct Row {
    at_s: u64,
    renewals: u64,
    errors: u64,
    size: u64,
    in_use: u64,
    keys: u64,
    compactions: u64,
}

fn gauge(store: &dyn KvStore, name: &str) -> Option<u64> {
    store
        .gauges()
        .into_iter()
        .find(|g| g.name == name)
        .map(|g| g.value)
}

async fn row(s: &Sized, at_s: u64, renewals: u64, errors: u64) -> Row {
    let keys = s.store.scan("").await.map_or(0, |v| v.len() as u64);
    let (size, in_use) = match &s.file {
        Some(f) => {
            let len = std::fs::metadata(f).map_or(0, |m| m.len());
            (len, len)
        }
        None => (
            gauge(s.store.as_ref(), "etcd_db_size_bytes").unwrap_or(0),
            gauge(s.store.as_ref(), "etcd_db_size_in_use_bytes").unwrap_or(0),
        ),
    };
    Row {
        at_s,
        renewals,
        errors,
        size,
        in_use,
        keys,
        compactions: gauge(s.store.as_ref(), "etcd_compactions").unwrap_or(0),
    }
}

fn mb(b: u64) -> String {
    format!("{:.2}", b as f64 / 1e6)
}

async fn soak(seconds: u64, hosts: u64, compact_every: u64) -> bool {
    let s = open(compact_every).await;
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = 4_096;
    let c = Arc::new(
        Coordinator::open(s.store.clone(), Arc::new(SystemTimeSource::new()), config)
            .await
            .unwrap(),
    );
    for n in 0..NAMESPACES {
        c.put_namespace(&format!("soak-{n}"), &NamespaceSpec::default())
            .await
            .unwrap();
    }
    // Each node takes its lease (eight at a time: a burst of acquires contends on the token
    // key, and each retries with backoff as a node does) and renews it from then on; a lease
    // lost is counted as an error and taken again, as a node would.
    let renewals = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let acquiring = Arc::new(tokio::sync::Semaphore::new(8));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for h in 0..hosts {
        let (c, renewals, errors) = (c.clone(), renewals.clone(), errors.clone());
        let acquiring = acquiring.clone();
        tasks.push(tokio::spawn(async move {
            let secret = LeaseSecret::from_bytes([(h % 251) as u8 + 1; 16]);
            let req = AcquireRequest {
                name: format!("soak-node-{h}"),
                secret: secret.clone(),
                ttl_ms: Some(TTL_MS),
                url: Some(format!("http://soak-node-{h}.test:8080")),
                ..Default::default()
            };
            let acquire = || async {
                let _turn = acquiring.acquire().await.unwrap();
                let mut wait = Duration::from_millis(5);
                loop {
                    match c.acquire(&req).await {
                        Ok(g) => return g,
                        Err(_) => {
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(1));
                        }
                    }
                }
            };
            let mut g = acquire().await;
            let every = Duration::from_millis(TTL_MS / 3);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            while Instant::now() < until {
                tick.tick().await;
                let r = c
                    .renew(
                        g.host_id,
                        &RenewRequest {
                            token: g.token,
                            secret: secret.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
                match r {
                    Ok(_) => {
                        renewals.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("renewal of node {h}: {e}");
                        }
                        if e.code().as_str() != "store_unavailable" {
                            g = acquire().await;
                        }
                    }
                }
            }
        }));
    }
    let keeper = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut k = Housekeeper::new(&c);
            loop {
                let _ = k.pass(&c).await;
                tokio::time::sleep(Duration::from_millis(ASSIGN_INTERVAL_MS)).await;
            }
        })
    };
    let report = (seconds / 20).clamp(5, 30);
    println!(
        "soak: {}, {hosts} nodes renewing every {} ms, {seconds} s, compaction every {compact_every} s",
        s.label,
        TTL_MS / 3
    );
    println!("| s | renewals | errors | db size MB | in use MB | keys | compactions |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let start = Instant::now();
    let mut rows = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(report)).await;
        let r = row(
            &s,
            start.elapsed().as_secs(),
            renewals.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
        )
        .await;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.at_s,
            r.renewals,
            r.errors,
            mb(r.size),
            mb(r.in_use),
            r.keys,
            r.compactions
        );
        rows.push(r);
    }
    for t in tasks {
        let _ = t.await;
    }
    keeper.abort();
    verdict(&rows, s.file.is_some(), compact_every > 0)
}

/// The plateau check (module docs): from the first compaction on (etcd) or from a third of
/// the way in (embedded), the largest size in use and key count of the second half of the
/// rows are within 25% of, and not above, those of the first half.
fn verdict(rows: &[Row], embedded: bool, compacting: bool) -> bool {
    let from = if embedded || !compacting {
        Some(rows.len() / 3)
    } else {
        rows.iter().position(|r| r.compactions > 0)
    };
    let Some(from) = from else {
        println!(
            "verdict: FAIL, no compaction during the run (make it longer than COMPACT_EVERY_S)"
        );
        return false;
    };
    let after = &rows[from..];
    if after.len() < 2 {
        println!("verdict: FAIL, too few rows after the first compaction to tell");
        return false;
    }
    let (first, second) = after.split_at(after.len() / 2);
    let max = |rs: &[Row], f: fn(&Row) -> u64| rs.iter().map(f).max().unwrap_or(0);
    let (in_use_1, in_use_2) = (max(first, |r| r.in_use), max(second, |r| r.in_use));
    let (keys_1, keys_2) = (max(first, |r| r.keys), max(second, |r| r.keys));
    let last = rows[rows.len() - 1];
    let grown = in_use_2 as f64 / in_use_1.max(1) as f64;
    let ok = grown <= 1.25 && keys_2 <= keys_1 && last.errors == 0;
    println!(
        "verdict: {}: largest in use {} MB, then {} MB ({:+.0}%); keys {} then {}; {} renewals, {} errors",
        if ok { "flat" } else { "FAIL" },
        mb(in_use_1),
        mb(in_use_2),
        (grown - 1.0) * 100.0,
        keys_1,
        keys_2,
        last.renewals,
        last.errors
    );
    ok
}
