//! Coordinators over a real 3-member etcd cluster, as real processes: two coordinators share
//! one prefix and serve one cluster; a standby polling one coordinator takes over a node that
//! registered through the other; nodes fail over when a coordinator is killed; the etcd
//! leader is killed and a majority is stopped and restored under load. Every id collected is
//! checked for duplicates. Built with the `etcd` feature.
//!
//! Each test starts its own etcd cluster (`scripts/etcd-cluster.sh`, on a port range of its
//! own), so killing members in one test disturbs no other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{
    assert_audit_clean, cluster_info, coordinator_command, fetch_ids, host_and_time, host_record,
    http, node_command_urls, ready, wait_until, TOKEN,
};
use crate::process::Process;

/// A 3-member etcd cluster on loopback, stopped (and its data removed) on drop.
struct Etcd {
    dir: PathBuf,
    base: u16,
    endpoints: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/etcd-cluster.sh")
}

impl Etcd {
    fn start() -> Etcd {
        Self::start_with("")
    }

    /// A cluster whose members get `extra` etcd flags as well.
    fn start_with(extra: &str) -> Etcd {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // A port range per test and process, below the kernel's ephemeral range
        // (32768-60999) so that no outgoing connection holds one of its ports, and away from
        // the suite's shared cluster (scripts/test.sh, 20000-23012).
        for attempt in 0..20u64 {
            let slot = (u64::from(std::process::id()) * 7
                + NEXT.fetch_add(1, Ordering::Relaxed)
                + attempt)
                % 400;
            let base = 24_000 + (slot as u16) * 20;
            // A fresh directory per attempt: a failed attempt leaves nothing behind for the
            // next one to trip over.
            let dir = tempfile::Builder::new()
                .prefix("shardflake-etcd-")
                .tempdir()
                .unwrap()
                .keep();
            let out = Command::new("bash")
                .arg(script())
                .args(["start"])
                .arg(&dir)
                .env("SHARDFLAKE_ETCD_PORT_BASE", base.to_string())
                .env("ETCD_EXTRA_ARGS", extra)
                .output()
                .expect("scripts/etcd-cluster.sh runs");
            if out.status.success() {
                let endpoints = String::from_utf8(out.stdout).unwrap().trim().to_string();
                return Etcd {
                    dir,
                    base,
                    endpoints,
                };
            }
            let err = String::from_utf8_lossy(&out.stderr);
            // The script stops its members and keeps their logs when the cluster does not
            // come up; only a range found busy before anything started is worth another try.
            assert!(
                err.contains("set SHARDFLAKE_ETCD_PORT_BASE to a free range"),
                "etcd cluster did not start: {err}"
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("no free port range for an etcd cluster");
    }

    fn member_endpoint(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + i)
    }

    fn pid(&self, i: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("m{i}.pid")))
            .unwrap()
            .trim()
            .to_string()
    }

    fn kill_9(&self, i: u16) {
        let ok = Command::new("kill")
            .args(["-9", &self.pid(i)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -9 etcd member {i}");
    }

    fn restart(&self, i: u16) {
        let ok = Command::new("bash")
            .arg(script())
            .arg("restart")
            .arg(&self.dir)
            .arg(i.to_string())
            .env("SHARDFLAKE_ETCD_PORT_BASE", self.base.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "restart etcd member {i}");
    }

    /// The member (1..=3) that is the raft leader, as etcd itself reports it.
    fn leader(&self) -> u16 {
        for i in 1..=3 {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.member_endpoint(i)])
                .args(["--command-timeout=2s", "endpoint", "status", "-w", "json"])
                .output()
                .expect("etcdctl runs");
            let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                continue;
            };
            let s = &v[0]["Status"];
            if s["header"]["member_id"].as_u64().is_some()
                && s["header"]["member_id"] == s["leader"]
            {
                return i;
            }
        }
        panic!("no etcd member reports itself leader");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .env("SHARDFLAKE_ETCD_PORT_BASE", self.base.to_string())
            .status();
    }
}

fn coordinator(etcd: &Etcd, data: &Path) -> Process {
    let flags = [
        "--etcd",
        &etcd.endpoints,
        "--etcd-prefix",
        "/shardflake-it/",
        "--lease-ttl",
        "1500ms",
        "--layout",
        "twitter",
        "--max-hosts",
        "8",
    ];
    Process::start(coordinator_command(data, &flags, Some(TOKEN)))
}

fn urls(cs: &[&Process]) -> String {
    cs.iter()
        .map(|c| format!("http://{}", c.addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// Fetches ids from `addr` in a loop until stopped; counts failed requests.
struct Load {
    stop: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<u64>>>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn on(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, i, f) = (stop.clone(), ids.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 20 000 requests of 50 ids.
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                match fetch_ids(addr, 50) {
                    Ok(v) => i.lock().unwrap().extend(v),
                    Err(code) => f.lock().unwrap().push(code),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Load {
            stop,
            ids,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Vec<u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let ids = std::mem::take(&mut *self.ids.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (ids, failed)
    }
}

fn assert_unique(all: Vec<u64>, min: usize) {
    shardflake::check::check_ids(&all).assert_unique();
    assert!(all.len() >= min, "only {} ids collected", all.len());
}

#[test]
fn two_coordinators_over_etcd_share_a_cluster_fail_over_and_hand_standbys_across() {
    let etcd = Etcd::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c1 = coordinator(&etcd, d1.path());
    let c2 = coordinator(&etcd, d2.path());
    // One store: the node may use both as one HA pair.
    assert_eq!(cluster_info(c1.addr).0, cluster_info(c2.addr).0);
    let both = urls(&[&c1, &c2]);
    // Node a knows coordinator c1 only; b prefers c1 and may fail over to c2.
    let a = Process::start(node_command_urls(&urls(&[&c1]), false, &[]));
    let b = Process::start(node_command_urls(&both, false, &[]));
    // The standby talks to the second coordinator only.
    let standby = Process::start(node_command_urls(&urls(&[&c2]), true, &[]));
    wait_until("both nodes hold leases", || ready(a.addr) && ready(b.addr));
    let mut all = Vec::new();

    // 1. kill -9 node a (registered through c1): the standby, polling c2, takes its host id
    // over above every id a issued.
    let mut a = a;
    let a_ids = fetch_ids(a.addr, 500).unwrap();
    let a_host = host_and_time(a_ids[0]).0;
    all.extend(&a_ids);
    a.kill_9();
    // The bound a persisted last, read before anyone can take the id over (one TTL).
    let bound = host_record(c2.addr, a_host)["reserved_until_ms"]
        .as_u64()
        .unwrap();
    let mut first = None;
    wait_until("the standby serves", || {
        first = fetch_ids(standby.addr, 1).ok();
        first.is_some()
    });
    let taken = first.unwrap()[0];
    assert_eq!(host_and_time(taken).0, a_host, "{}", standby.log());
    assert!(a_ids.iter().all(|&id| id < taken));
    assert!(
        host_and_time(taken).1 > bound,
        "the standby starts above a's persisted bound {bound}: {taken}"
    );
    all.push(taken);

    // 2. kill -9 coordinator c1 under load: node b fails over to c2 and no request fails.
    let load = Load::on(b.addr);
    std::thread::sleep(Duration::from_millis(500));
    c1.kill_9();
    std::thread::sleep(Duration::from_millis(4_500));
    let (ids, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "failed requests: {failed:?}\n{}",
        b.log()
    );
    assert!(ready(b.addr), "{}", b.log());
    assert!(
        b.log().contains("failed over to another coordinator"),
        "b renews through c2 after c1 died: {}",
        b.log()
    );
    eprintln!(
        "kill -9 of one coordinator under load: {} ids, 0 failed requests",
        ids.len()
    );
    all.extend(ids);
    all.extend(fetch_ids(standby.addr, 1000).unwrap());
    all.extend(fetch_ids(b.addr, 1000).unwrap());
    assert_unique(all, 3_000);
    assert_audit_clean(c2.addr);
}

#[test]
fn etcd_leader_loss_and_majority_loss_cost_availability_only() {
    let etcd = Etcd::start();
    let d = tempfile::tempdir().unwrap();
    let c = coordinator(&etcd, d.path());
    let node = Process::start(node_command_urls(&urls(&[&c]), false, &[]));
    wait_until("the node holds a lease", || ready(node.addr));
    let mut all = Vec::new();

    // 1. kill -9 the etcd leader under load: no duplicate; after the election the
    // coordinator answers again and the node keeps its lease.
    let load = Load::on(node.addr);
    std::thread::sleep(Duration::from_millis(300));
    let leader = etcd.leader();
    etcd.kill_9(leader);
    let killed = Instant::now();
    wait_until("the coordinator answers after the election", || {
        http(c.addr, "GET", "/v1/hosts", Some(TOKEN), None).0 == 200
    });
    eprintln!(
        "etcd leader (member {leader}) killed: coordinator answering again after {:?}",
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2_000));
    etcd.restart(leader);
    let (ids, failed) = load.finish();
    eprintln!(
        "leader kill under load: {} ids, {} failed requests ({failed:?})",
        ids.len(),
        failed.len()
    );
    all.extend(ids);
    wait_until("the node serves after the election", || ready(node.addr));

    // 2. Stop a majority: the coordinator answers errors, never a wrong answer; the node
    // serves inside its reservation, then stops issuing once its lease may have expired.
    let load = Load::on(node.addr);
    std::thread::sleep(Duration::from_millis(300));
    let keep = etcd.leader();
    let down: Vec<u16> = (1..=3).filter(|&i| i != keep).collect();
    for &i in &down {
        etcd.kill_9(i);
    }
    let (status, body) = http(c.addr, "GET", "/v1/hosts", Some(TOKEN), None);
    assert!(
        status >= 500,
        "without a majority the coordinator answers an error: {status} {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable", "{body}");
    wait_until("the node stops issuing", || {
        fetch_ids(node.addr, 1).is_err()
    });
    // The load's own next request meets the refusal too (it may have been between requests
    // when the probe above saw it).
    wait_until("the load sees a refusal", || {
        !load.failed.lock().unwrap().is_empty()
    });
    let (ids, failed) = load.finish();
    assert!(
        !ids.is_empty(),
        "the node served inside its reservation first"
    );
    assert!(!failed.is_empty());
    eprintln!(
        "majority stopped: {} ids served, then refusals ({:?} ...)",
        ids.len(),
        failed.first()
    );
    all.extend(ids);

    // 3. Restore the majority: service resumes without restarting anything.
    for &i in &down {
        etcd.restart(i);
    }
    let restored = Instant::now();
    wait_until("the node serves again", || ready(node.addr));
    eprintln!(
        "majority restored: node serving again after {:?}",
        restored.elapsed()
    );
    all.extend(fetch_ids(node.addr, 1000).unwrap());
    assert_unique(all, 1_000);
    assert_audit_clean(c.addr);
}

/// A misconfigured `--etcd` stops the coordinator at start with an error naming the problem.
#[test]
fn bad_etcd_flags_and_an_unreachable_etcd_stop_the_coordinator_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str]| {
        let out = coordinator_command(dir.path(), flags, Some(TOKEN))
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{flags:?} must not start");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[
        "--etcd",
        "http://127.0.0.1:1",
        "--etcd-prefix",
        "no-slashes",
    ]);
    assert!(err.contains("must start and end with '/'"), "{err}");
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let err = run(&["--etcd", &url]);
    assert!(
        err.contains(&url[7..]),
        "the error names the endpoint: {err}"
    );
    assert!(
        !dir.path().join("coordinator.redb").exists(),
        "with --etcd no embedded store is created"
    );
}

/// etcd's space quota alarm (NOSPACE): a coordinator refuses to start while it is raised,
/// saying why and what to do, and starts once the operator compacted, defragmented and
/// disarmed it (docs/operations.md).
#[test]
fn a_coordinator_refuses_to_start_while_etcds_quota_alarm_is_raised() {
    let etcd = Etcd::start_with("--quota-backend-bytes 4194304");
    let ctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &etcd.endpoints, "--command-timeout=5s"])
            .args(args)
            .output()
            .expect("etcdctl runs")
    };
    // Fill it: 64 KiB values under a key of the test's own until etcd refuses.
    let value = "x".repeat(64 * 1024);
    let mut refused = false;
    for i in 0..400 {
        let out = ctl(&["put", &format!("/filler/{}", i % 8), &value]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("database space exceeded"), "{err}");
            refused = true;
            break;
        }
    }
    assert!(refused, "etcd never raised NOSPACE under a 4 MiB quota");
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--etcd",
        etcd.endpoints.as_str(),
        "--etcd-prefix",
        "/quota/",
    ];
    // It must exit by itself; one still running after 30 s started (and is killed).
    let mut child = coordinator_command(dir.path(), &flags, Some(TOKEN))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a coordinator started under NOSPACE");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a coordinator started under NOSPACE");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("NOSPACE") && err.contains("docs/operations.md"),
        "the refusal says why and where to look: {err}"
    );
    // The runbook's remedy: compact, defragment, disarm.
    let status = ctl(&["endpoint", "status", "-w", "json"]);
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let revision = v[0]["Status"]["header"]["revision"].as_u64().unwrap();
    assert!(ctl(&["compact", &revision.to_string()]).status.success());
    for i in 1..=3 {
        let one = ctl(&["--endpoints", &etcd.member_endpoint(i), "defrag"]);
        assert!(
            one.status.success(),
            "{}",
            String::from_utf8_lossy(&one.stderr)
        );
    }
    assert!(ctl(&["alarm", "disarm"]).status.success());
    let c = Process::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    wait_until("the coordinator serves once the alarm is disarmed", || {
        http(c.addr, "GET", "/readyz", None, None).0 == 200
    });
}
