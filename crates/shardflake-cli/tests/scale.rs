//! What an operator meets at scale, as real processes: a node serving as many namespaces as
//! a node may (1,024) reports on each with every renewal and keeps one lease for ten TTLs,
//! on the embedded store and on etcd (where one transaction of more than 64 operations was
//! once the renewal, and refused).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster::{
    coordinator_command, http, node_command_ttl, ns_ids, put_namespace, ready, wait_until,
    READ_TOKEN, TOKEN,
};
use crate::process::Process;

/// Namespaces one node may serve (`shardflake_proto::ns::NS_PER_NODE_MAX`).
const NAMESPACES: usize = 1_024;
/// The node's lease TTL in these tests: short enough for ten of them in a CI run, long
/// enough that a machine busy with the rest of the suite does not cost the lease.
const NODE_TTL: Duration = Duration::from_millis(6_000);

/// The test creates its namespaces faster than an operator's default rate allows.
const UNLIMITED_ADMIN: &[&str] = &["--rate-limit-admin", "0"];

/// Runs `f` over `0..n` on eight threads.
fn parallel(n: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

/// The only live lease: `(host_id, token, last heartbeat)`.
fn lease(coordinator: SocketAddr) -> (u64, u64, String) {
    let (s, body) = http(coordinator, "GET", "/v1/hosts", Some(TOKEN), None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let live: Vec<&Value> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "one live lease: {v}");
    let h = live[0];
    (
        h["host_id"].as_u64().unwrap(),
        h["token"].as_u64().unwrap(),
        h["last_heartbeat_ms"].to_string(),
    )
}

fn metric(coordinator: SocketAddr, name: &str) -> u64 {
    let (s, body) = http(coordinator, "GET", "/metrics", Some(READ_TOKEN), None);
    assert_eq!(s, 200, "{body}");
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics")) as u64
}

/// One node takes a block of each of [`NAMESPACES`] namespaces, then keeps its one lease,
/// reporting on every namespace with each renewal, for ten TTLs.
fn every_namespace_on_one_node_keeps_its_lease(coordinator: &Process) {
    let c = coordinator.addr;
    let url = format!("http://{c}");
    parallel(NAMESPACES, |i| {
        put_namespace(
            c,
            &format!("scale-{i:04}"),
            &json!({"block_min": 1000, "block_max": 1000}),
        );
    });
    let node = Process::start(node_command_ttl(
        &url,
        false,
        &[],
        NODE_TTL.as_millis() as u64,
    ));
    wait_until("the node holds a lease", || ready(node.addr));
    parallel(NAMESPACES, |i| {
        let name = format!("scale-{i:04}");
        let got = ns_ids(node.addr, &name, 1);
        assert!(got.is_ok(), "{name}: {got:?}\n{}", node.log());
    });
    let (host, token, _) = lease(c);
    let reports_before = metric(c, "shardflake_coordinator_ns_usage_reports_total");
    // Ten TTLs of load across every namespace, so that each renewal reports on many.
    let until = std::time::Instant::now() + NODE_TTL * 10;
    parallel(4, |t| {
        let mut i = t;
        while std::time::Instant::now() < until {
            let name = format!("scale-{:04}", i % NAMESPACES);
            let got = ns_ids(node.addr, &name, 1);
            assert!(
                got.is_ok(),
                "{name}: {got:?}\nnode:\n{}\ncoordinator:\n{}",
                node.log(),
                coordinator.log()
            );
            i += 4;
        }
    });
    let (host_after, token_after, _) = lease(c);
    assert_eq!(
        (host_after, token_after),
        (host, token),
        "the node kept its one lease for ten TTLs\n{}",
        node.log()
    );
    assert!(
        !node.log().contains("lease lost"),
        "no lease was lost:\n{}",
        node.log()
    );
    let reports = metric(c, "shardflake_coordinator_ns_usage_reports_total") - reports_before;
    assert!(
        reports >= NAMESPACES as u64,
        "renewals carried a report on every namespace: {reports}"
    );
    // A report whose record a block grant to the same node changed first, twice, is
    // dropped (it only moves a forecast): under this load some are, most are not.
    let dropped = metric(c, "shardflake_coordinator_ns_usage_reports_dropped_total");
    assert!(
        dropped < reports,
        "most reports are written: {reports} written, {dropped} dropped"
    );
}

#[test]
fn a_node_serving_1024_namespaces_keeps_its_lease_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(
        dir.path(),
        UNLIMITED_ADMIN,
        Some(TOKEN),
    ));
    every_namespace_on_one_node_keeps_its_lease(&c);
}

#[cfg(feature = "etcd")]
#[test]
fn a_node_serving_1024_namespaces_keeps_its_lease_on_etcd() {
    let endpoints = std::env::var("SHARDFLAKE_TEST_ETCD")
        .expect("SHARDFLAKE_TEST_ETCD: scripts/test.sh starts an etcd cluster for these tests");
    let prefix = format!(
        "/shardflake-scale-{}-{}/",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(
        dir.path(),
        &[
            &["--etcd", &endpoints, "--etcd-prefix", &prefix],
            UNLIMITED_ADMIN,
        ]
        .concat(),
        Some(TOKEN),
    ));
    every_namespace_on_one_node_keeps_its_lease(&c);
}
