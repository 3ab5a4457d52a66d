//! Namespaces over real processes: a coordinator and nodes on loopback serve one namespace;
//! values are unique across nodes, strictly increasing per node and at or above `start`; a
//! node that is not assigned the namespace redirects to one that is; a node killed with
//! `kill -9` wastes its blocks, one stopped with SIGTERM gives its unused tail back and the
//! next node continues there.

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::cluster::{
    assert_audit_clean, coordinator_command, http, node_command_urls, ns_ids, put_namespace, ready,
    wait_until, ADMIN_TOKEN, READ_TOKEN, TOKEN,
};
use crate::process::Process;

fn namespace(c: SocketAddr, name: &str) -> Value {
    let (status, body) = http(c, "GET", "/v1/namespaces", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no namespace {name} in {v}"))
}

fn rising(values: &[u64]) -> bool {
    values.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn namespace_values_are_unique_rising_redirected_and_tails_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let url = format!("http://{}", c.addr);

    // Create it; names and fixed parameters are checked.
    let spec = json!({"start": 1000, "block_min": 200, "block_max": 5000});
    let v = put_namespace(c.addr, "orders", &spec);
    assert_eq!(
        (v["next"].as_u64(), v["step"].as_u64()),
        (Some(1000), Some(1)),
        "{v}"
    );
    let (status, body) = http(
        c.addr,
        "PUT",
        "/v1/namespaces/Orders!",
        Some(ADMIN_TOKEN),
        Some(&spec),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        c.addr,
        "PUT",
        "/v1/namespaces/orders",
        Some(ADMIN_TOKEN),
        Some(&json!({"step": 2})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("namespace_conflict"), "{body}");

    let a = Process::start(node_command_urls(&url, false, &[]));
    let mut b = Process::start(node_command_urls(&url, false, &[]));
    wait_until("both nodes hold a lease", || ready(a.addr) && ready(b.addr));
    assert_eq!(
        ns_ids(a.addr, "nope", 1),
        Err((404, "unknown_namespace".into()))
    );
    assert_eq!(ns_ids(a.addr, "BAD", 1).unwrap_err().0, 400);

    // Both nodes, interleaved: every value once, each node's rising, all at or above start.
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        from_a.extend(ns_ids(a.addr, "orders", 150).unwrap());
        from_b.extend(ns_ids(b.addr, "orders", 150).unwrap());
    }
    assert!(
        rising(&from_a) && rising(&from_b),
        "each node's values rise"
    );
    let mut all: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    assert!(all.iter().all(|&v| v >= 1000));
    shardflake::check::check_ids(&all).assert_unique();
    let (status, body) = http(a.addr, "GET", "/ns/orders/id?hop=1", None, None);
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert!(
        one["id"].as_u64().unwrap() > *from_a.last().unwrap(),
        "{one}"
    );
    all.push(one["id"].as_u64().unwrap());

    // The assignment gives the namespace one node; the other redirects to it.
    wait_until("a node is assigned the namespace", || {
        let (_, body) = http(c.addr, "GET", "/v1/routing", Some(TOKEN), None);
        let t: Value = serde_json::from_str(&body).unwrap();
        t["namespaces"][0]["serving"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    });
    let redirected_by = |n: &Process| {
        let (status, _) = http(n.addr, "GET", "/ns/orders/ids?count=3", None, None);
        status == 307
    };
    wait_until("the node not assigned redirects", || {
        redirected_by(&a) || redirected_by(&b)
    });

    // kill -9: b's blocks stay unused. Then a takes more than it holds, so its newest block
    // is the namespace's newest, and a SIGTERM gives its tail back.
    b.kill_9();
    for _ in 0..10 {
        all.extend(ns_ids(a.addr, "orders", 1_000).unwrap());
    }
    let before = namespace(c.addr, "orders");
    assert!(before["blocks_granted"].as_u64().unwrap() >= 4, "{before}");
    let nodes = before["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n["last_actual_per_s"].as_f64().unwrap() > 0.0),
        "forecast against actual: {before}"
    );
    let mut a = a;
    assert!(a.terminate().success(), "{}", a.log());
    let after = namespace(c.addr, "orders");
    let returned = after["values_returned"].as_u64().unwrap();
    assert!(
        returned > 0,
        "a's unused tail came back: {after}\n{}",
        a.log()
    );
    let next = after["next"].as_u64().unwrap();
    assert!(
        next > *all.iter().max().unwrap(),
        "nothing issued lies at or above next"
    );

    // The next node continues at the returned tail, above everything issued.
    let d = Process::start(node_command_urls(&url, false, &[]));
    wait_until("the new node holds a lease", || ready(d.addr));
    let more = ns_ids(d.addr, "orders", 10).unwrap();
    assert_eq!(
        more[0], next,
        "the first value after the return is where it ended"
    );
    all.extend(more);
    shardflake::check::check_ids(&all).assert_unique();
    assert_audit_clean(c.addr);
}

/// `shardflake fetch --coordinators .. --ns` streams a namespace from a cluster of three nodes
/// while the node serving it is `kill -9`ed: no caller-visible error, every value once.
#[test]
fn fetch_streams_a_namespace_while_its_serving_node_is_killed() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let url = format!("http://{}", c.addr);
    let spec = json!({"start": 1, "block_min": 500, "block_max": 5000});
    put_namespace(c.addr, "orders", &spec);
    let mut nodes: Vec<Process> = (0..3)
        .map(|_| Process::start(node_command_urls(&url, false, &[])))
        .collect();
    wait_until("every node holds a lease", || {
        nodes.iter().all(|n| ready(n.addr))
    });
    // The serving node, once assigned and routed.
    let mut serving = None;
    wait_until("the namespace is assigned to a routed node", || {
        let (_, body) = http(c.addr, "GET", "/v1/routing", Some(TOKEN), None);
        let t: Value = serde_json::from_str(&body).unwrap();
        let Some(host) = t["namespaces"][0]["serving"][0].as_u64() else {
            return false;
        };
        let Some(node_url) = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["host_id"].as_u64() == Some(host))
            .and_then(|n| n["url"].as_str().map(str::to_string))
        else {
            return false;
        };
        serving = nodes
            .iter()
            .position(|n| node_url == format!("http://{}", n.addr));
        serving.is_some()
    });
    let serving = serving.unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["fetch", "--coordinators", &url, "--ns", "orders"])
        .args(["--count", &N.to_string(), "--batch-max", "1000"])
        .env("SHARDFLAKE_READ_TOKEN", READ_TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fetch starts");
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let parse = |l: std::io::Result<String>| -> u64 { l.unwrap().parse().unwrap() };
    let mut values: Vec<u64> = lines.by_ref().take(10_000).map(parse).collect();
    nodes[serving].kill_9();
    values.extend(lines.map(parse));
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        status.success(),
        "fetch failed: {status}; stderr:\n{errors}"
    );
    assert_eq!(values.len(), N, "stderr:\n{errors}");
    assert!(values.iter().all(|&v| v >= 1));
    shardflake::check::check_ids(&values).assert_unique();
    // Until the kill, one node served: the values rose.
    assert!(rising(&values[..10_000]));
    assert_audit_clean(c.addr);
}
