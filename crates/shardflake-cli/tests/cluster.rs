//! `shardflake coordinator` as a real process on loopback: authentication, refusal to start
//! without a token, and state that survives `kill -9` with every lease treated as live for a
//! full TTL after the restart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::Process;

/// The node credential (the coordinators accept it, the nodes send it).
pub(crate) const TOKEN: &str = "cluster-test-token-0123456789";
/// The read credential (SDK clients, `fetch`, `audit`).
pub(crate) const READ_TOKEN: &str = "cluster-test-read-token-0123";
/// The admin credential (namespaces).
pub(crate) const ADMIN_TOKEN: &str = "cluster-test-admin-token-0123";
/// The lease secret of every lease these tests hold themselves over raw HTTP.
pub(crate) const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
/// Every variable a credential can come from: scrubbed from every process the tests start,
/// so that the caller's environment never leaks in.
pub(crate) const CREDENTIAL_VARS: [&str; 9] = [
    "SHARDFLAKE_CLUSTER_TOKEN",
    "SHARDFLAKE_NODE_TOKEN",
    "SHARDFLAKE_READ_TOKEN",
    "SHARDFLAKE_ADMIN_TOKEN",
    "SHARDFLAKE_CLIENT_TOKEN",
    "SHARDFLAKE_NODE_TOKEN_FILE",
    "SHARDFLAKE_READ_TOKEN_FILE",
    "SHARDFLAKE_ADMIN_TOKEN_FILE",
    "SHARDFLAKE_CLIENT_TOKEN_FILE",
];
/// Every wait in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn coordinator_command(data_dir: &Path, flags: &[&str], token: Option<&str>) -> Command {
    coordinator_command_on("127.0.0.1:0", data_dir, flags, token)
}

pub(crate) fn coordinator_command_on(
    listen: &str,
    data_dir: &Path,
    flags: &[&str],
    token: Option<&str>,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("coordinator")
        .args(["--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .env_remove("SHARDFLAKE_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in CREDENTIAL_VARS {
        c.env_remove(var);
    }
    if let Some(t) = token {
        c.env("SHARDFLAKE_NODE_TOKEN", t)
            .env("SHARDFLAKE_READ_TOKEN", READ_TOKEN)
            .env("SHARDFLAKE_ADMIN_TOKEN", ADMIN_TOKEN);
    }
    c
}

type Proc = Process;

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Small JSON bodies: axum sends them with Content-Length, not chunked.
    (status, body.to_string())
}

/// A node's call: with the node credential, and the test's lease secret in the body unless
/// the body names one (every lease these tests take over raw HTTP is drawn with [`SECRET`]).
fn post(addr: SocketAddr, path: &str, mut body: Value) -> (u16, Value) {
    if let Some(o) = body.as_object_mut() {
        o.entry("secret").or_insert(json!(SECRET));
    }
    let (status, text) = http(addr, "POST", path, Some(TOKEN), Some(&body));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn coordinator_refuses_to_start_without_a_cluster_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = coordinator_command(dir.path(), &[], None)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHARDFLAKE_NODE_TOKEN"), "{err}");
    assert!(
        !dir.path().join("coordinator.redb").exists(),
        "nothing opened"
    );
}

/// The single token of earlier versions is refused by name, with what replaces it, by the
/// coordinator and the node alike: a deployment that still sets it learns what to set.
#[test]
fn the_old_single_cluster_token_is_refused_with_its_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let out = coordinator_command(dir.path(), &[], Some(TOKEN))
        .env("SHARDFLAKE_CLUSTER_TOKEN", TOKEN)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "SHARDFLAKE_CLUSTER_TOKEN",
        "SHARDFLAKE_READ_TOKEN",
        "SHARDFLAKE_ADMIN_TOKEN",
    ] {
        assert!(err.contains(name), "{name}: {err}");
    }
    assert!(
        !err.contains(TOKEN),
        "the token itself is never printed: {err}"
    );
    let out = node_command_urls("http://127.0.0.1:9", false, &[])
        .env("SHARDFLAKE_CLUSTER_TOKEN", TOKEN)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHARDFLAKE_NODE_TOKEN"), "{err}");
}

#[test]
fn coordinator_without_auth_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(coordinator_command(
        dir.path(),
        &["--insecure-no-auth"],
        None,
    ));
    let (status, _) = http(p.addr, "GET", "/v1/hosts", None, None);
    assert_eq!(status, 200);
    assert!(p.log().contains("AUTHENTICATION IS OFF"));
}

#[test]
fn every_route_but_healthz_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    assert_eq!(http(p.addr, "GET", "/healthz", None, None).0, 200);
    let (status, body) = http(
        p.addr,
        "POST",
        "/v1/leases",
        None,
        Some(&json!({"name": "x"})),
    );
    assert_eq!(status, 401);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let (status, _) = http(p.addr, "GET", "/v1/hosts", Some("not-the-token"), None);
    assert_eq!(status, 401);
    assert_eq!(http(p.addr, "GET", "/metrics", Some(TOKEN), None).0, 200);
}

#[test]
fn kill_9_keeps_tokens_reservations_and_live_leases() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--lease-ttl",
        "2s",
        "--layout",
        "twitter",
        "--max-hosts",
        "4",
    ];
    let mut p = Proc::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    let (s, a) = post(
        p.addr,
        "/v1/leases",
        json!({"name": "a", "reserve_ahead_ms": 3000}),
    );
    assert_eq!(s, 200, "{a}");
    let (host, token) = (a["host_id"].as_u64().unwrap(), a["token"].as_u64().unwrap());
    let bound = a["reserved_until_ms"].as_u64().unwrap();
    p.kill_9();
    let restarted_at = Instant::now();
    let p = Proc::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    // The restarted coordinator cannot know whether `a` is still issuing: the id stays
    // leased for a full TTL from the restart.
    let take = json!({"name": "b", "host_id": host});
    let (s, busy) = post(p.addr, "/v1/leases", take.clone());
    assert_eq!(
        (s, busy["error"]["code"].as_str()),
        (409, Some("host_busy")),
        "{busy}"
    );
    // The holder keeps renewing across the restart with its token.
    let (s, r) = post(
        p.addr,
        &format!("/v1/leases/{host}/renew"),
        json!({"token": token}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["reserved_until_ms"].as_u64(), Some(bound));
    // Once it stops, the id is granted again after its TTL, above the persisted bound, with
    // a larger token.
    let granted = loop {
        let (s, g) = post(p.addr, "/v1/leases", take.clone());
        if s == 200 {
            break g;
        }
        assert_eq!(g["error"]["code"], "host_busy");
        assert!(restarted_at.elapsed() < DEADLINE);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(restarted_at.elapsed() >= Duration::from_secs(2));
    assert!(granted["token"].as_u64().unwrap() > token);
    assert_eq!(granted["start_above_ms"].as_u64(), Some(bound));
    let (s, stale) = post(
        p.addr,
        &format!("/v1/leases/{host}/reservation"),
        json!({"token": token, "until_ms": bound + 1}),
    );
    assert_eq!(
        (s, stale["error"]["code"].as_str()),
        (409, Some("stale_token"))
    );
    assert_audit_clean(p.addr);
}

#[test]
fn temporal_coordinator_grants_rising_blocks_over_http() {
    use shardflake::{Clock, Layout, SystemClock, TemporalWidths, SHARDFLAKE_EPOCH_MS};
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--layout",
        "temporal",
        "--shard-granularity",
        "1h",
        "--block-min",
        "1000",
    ];
    let p = Proc::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    let (s, a) = post(p.addr, "/v1/leases", json!({"name": "t", "ttl_ms": 5000}));
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        a["layout_spec"].as_str(),
        Some(Layout::preset("temporal").unwrap().spec().as_str())
    );
    let (host, token) = (a["host_id"].as_u64().unwrap(), a["token"].as_u64().unwrap());
    let layout =
        Layout::temporal(3_600_000, SHARDFLAKE_EPOCH_MS, TemporalWidths::default()).unwrap();
    let shard = layout.tick_of(SystemClock.now_ms()).unwrap();
    let mut after = 0;
    for _ in 0..3 {
        let req = json!({"host_id": host, "token": token, "shard": shard, "after_counter": after});
        let (s, b) = post(p.addr, "/v1/blocks", req);
        assert_eq!(s, 200, "{b}");
        let (start, end) = (b["start"].as_u64().unwrap(), b["end"].as_u64().unwrap());
        assert!(start >= after && end - start >= 1000, "{b}");
        after = end;
    }
    let usage = json!({"token": token, "usage": {"shard": shard, "used_in_shard": after}});
    let (s, r) = post(p.addr, &format!("/v1/leases/{host}/renew"), usage);
    assert_eq!(s, 200, "{r}");
    let (s, hosts) = http(p.addr, "GET", "/v1/hosts", Some(TOKEN), None);
    assert_eq!(s, 200);
    let hosts: Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(
        hosts["hosts"][0]["temporal"]["used_in_shard"].as_u64(),
        Some(after)
    );
    // The three blocks are in the pair's grant log, disjoint.
    assert_audit_clean(p.addr);
}

// ---------------------------------------------------------------------------------------
// A cluster of real processes: coordinator + 3 nodes + 1 standby.

const NODE_TTL_MS: u64 = 1_500;

fn node_command(coordinator: SocketAddr, standby: bool) -> Command {
    node_command_with(coordinator, standby, &["--layout", "twitter"])
}

fn node_command_with(coordinator: SocketAddr, standby: bool, layout_flags: &[&str]) -> Command {
    node_command_urls(&format!("http://{coordinator}"), standby, layout_flags)
}

pub(crate) fn node_command_urls(urls: &str, standby: bool, layout_flags: &[&str]) -> Command {
    node_command_ttl(urls, standby, layout_flags, NODE_TTL_MS)
}

/// [`node_command_urls`] with a lease TTL of `ttl_ms`.
pub(crate) fn node_command_ttl(
    urls: &str,
    standby: bool,
    layout_flags: &[&str],
    ttl_ms: u64,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(layout_flags)
        .arg("--coordinator")
        .arg(urls)
        .arg("--lease-ttl")
        .arg(format!("{ttl_ms}ms"))
        // A state directory of its own (a cluster node keeps the store's generation there),
        // never the working directory.
        .arg("--state-dir")
        .arg(
            tempfile::Builder::new()
                .prefix("shardflake-node-")
                .tempdir()
                .expect("a temporary directory")
                .keep(),
        );
    if standby {
        c.arg("--standby");
    }
    for var in [
        "PORT",
        "MACHINE_ID",
        "DATACENTER_ID",
        "SHARDFLAKE_LAYOUT",
        "SHARDFLAKE_COORDINATOR",
        "SHARDFLAKE_STANDBY",
        "SHARDFLAKE_SHARD_GRANULARITY",
        "SHARDFLAKE_LOG_FORMAT",
        "LD_PRELOAD",
        "FAKETIME",
    ]
    .into_iter()
    .chain(CREDENTIAL_VARS)
    {
        c.env_remove(var);
    }
    c.env("SHARDFLAKE_NODE_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// `PUT /v1/namespaces/{name}` with the admin credential; the namespace as stored.
pub(crate) fn put_namespace(coordinator: SocketAddr, name: &str, spec: &Value) -> Value {
    let path = format!("/v1/namespaces/{name}");
    let (status, body) = http(coordinator, "PUT", &path, Some(ADMIN_TOKEN), Some(spec));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `GET /ns/{name}/ids?count=N&hop=1` on a node (served there, never redirected): the
/// values, or the status and the error code (the body when it is not an error).
pub(crate) fn ns_ids(addr: SocketAddr, name: &str, n: usize) -> Result<Vec<u64>, (u16, String)> {
    let path = format!("/ns/{name}/ids?count={n}&hop=1");
    let (status, body) = http(addr, "GET", &path, None, None);
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status != 200 {
        let code = v["error"]["code"]
            .as_str()
            .map_or(body.clone(), String::from);
        return Err((status, code));
    }
    Ok(v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect())
}

/// `shardflake audit --coordinator` with the read credential: its exit status and output.
pub(crate) fn audit(coordinator: SocketAddr) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.args(["audit", "--coordinator", &format!("http://{coordinator}")]);
    for var in CREDENTIAL_VARS {
        c.env_remove(var);
    }
    let out = c
        .env("SHARDFLAKE_READ_TOKEN", READ_TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("audit runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The end of every real-process test with a coordinator: no two grants overlap.
pub(crate) fn assert_audit_clean(coordinator: SocketAddr) {
    let (status, out) = audit(coordinator);
    assert_eq!(
        status, 0,
        "shardflake audit found overlaps or failed:\n{out}"
    );
    assert!(out.contains("no two grants overlap"), "{out}");
}

/// `(host id, timestamp ms)` of a twitter-layout id.
pub(crate) fn host_and_time(id: u64) -> (u64, u64) {
    let d = shardflake::Layout::preset("twitter")
        .unwrap()
        .decode(id)
        .unwrap();
    (
        (d.field("datacenter").unwrap() << 5) | d.field("worker").unwrap(),
        d.timestamp_ms,
    )
}

/// Ids from `GET /ids?count=N`, or the error code.
pub(crate) fn fetch_ids(addr: SocketAddr, n: usize) -> Result<Vec<u64>, String> {
    let (status, body) = http(addr, "GET", &format!("/ids?count={n}"), None, None);
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if status != 200 {
        return Err(v["error"]["code"].as_str().unwrap_or("?").to_string());
    }
    Ok(v["ids_str"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect())
}

pub(crate) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn ready(addr: SocketAddr) -> bool {
    http(addr, "GET", "/readyz", None, None).0 == 200
}

pub(crate) fn host_record(coordinator: SocketAddr, host: u64) -> Value {
    let (s, body) = http(coordinator, "GET", "/v1/hosts", Some(TOKEN), None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"].as_u64() == Some(host))
        .cloned()
        .unwrap_or_else(|| panic!("no record of host {host}: {v}"))
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.child.id().to_string())
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig}");
}

#[test]
fn cluster_survives_a_crash_a_pause_and_a_coordinator_restart_without_repeating_ids() {
    let dir = tempfile::tempdir().unwrap();
    let coord_flags = [
        "--lease-ttl",
        "1500ms",
        "--layout",
        "twitter",
        "--max-hosts",
        "8",
    ];
    let mut coordinator = Proc::start(coordinator_command(dir.path(), &coord_flags, Some(TOKEN)));
    let caddr = coordinator.addr;
    let mut nodes: Vec<Proc> = (0..3)
        .map(|_| Proc::start(node_command(caddr, false)))
        .collect();
    let standby = Proc::start(node_command(caddr, true));
    for n in &nodes {
        wait_until("every node holds a lease", || ready(n.addr));
    }
    // The standby serves nothing until it takes over.
    let (s, body) = http(standby.addr, "GET", "/id", None, None);
    assert_eq!(s, 503, "{body}");
    assert!(!ready(standby.addr));

    let mut all: Vec<u64> = Vec::new();
    let mut hosts = Vec::new();
    for n in &nodes {
        let ids = fetch_ids(n.addr, 1000).unwrap();
        hosts.push(host_and_time(ids[0]).0);
        all.extend(ids);
    }
    hosts.sort_unstable();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "three distinct host ids");

    // 1. kill -9 a node: the standby takes over its host id above its reserved bound.
    let a_ids = fetch_ids(nodes[0].addr, 100).unwrap();
    let a_host = host_and_time(a_ids[0]).0;
    all.extend(&a_ids);
    nodes[0].kill_9();
    let crashed = Instant::now();
    let mut first = None;
    wait_until("the standby serves", || {
        first = fetch_ids(standby.addr, 1).ok();
        first.is_some()
    });
    let failover = crashed.elapsed();
    let taken = first.unwrap()[0];
    assert_eq!(
        host_and_time(taken).0,
        a_host,
        "the standby took over the crashed node's id"
    );
    assert!(a_ids.iter().all(|&id| id < taken));
    all.push(taken);
    all.extend(fetch_ids(standby.addr, 1000).unwrap());
    eprintln!(
        "failover (kill -9 to the standby serving), lease TTL {NODE_TTL_MS} ms: {failover:?}"
    );

    // 2. SIGSTOP a node for longer than its TTL: after SIGCONT it issues nothing under its
    // old lease (every id it returns lies above the old lease's reserved bound, or carries
    // another host id).
    let b = &nodes[1];
    let b_ids = fetch_ids(b.addr, 100).unwrap();
    let b_host = host_and_time(b_ids[0]).0;
    all.extend(&b_ids);
    signal(b, "STOP");
    let old = host_record(caddr, b_host);
    let old_bound = old["reserved_until_ms"].as_u64().unwrap();
    let old_token = old["token"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(NODE_TTL_MS * 2));
    signal(b, "CONT");
    let resumed = Instant::now();
    let mut after_pause = Vec::new();
    let mut refused = 0;
    while resumed.elapsed() < Duration::from_millis(NODE_TTL_MS) {
        match fetch_ids(b.addr, 10) {
            Ok(ids) => after_pause.extend(ids),
            Err(code) => {
                assert_eq!(code, "lease_lost");
                refused += 1;
            }
        }
    }
    wait_until("the paused node holds a lease again", || ready(b.addr));
    after_pause.extend(fetch_ids(b.addr, 100).unwrap());
    for &id in &after_pause {
        let (host, ts) = host_and_time(id);
        assert!(
            host != b_host || ts > old_bound,
            "id {id} (host {host}, {ts} ms) issued under the expired lease (bound {old_bound})"
        );
    }
    let new = host_record(caddr, host_and_time(*after_pause.last().unwrap()).0);
    assert!(new["token"].as_u64().unwrap() > old_token);
    eprintln!(
        "after SIGCONT: {refused} requests refused with lease_lost, {} ids above the old bound",
        after_pause.len()
    );
    all.extend(after_pause);

    // 3. kill -9 the coordinator and restart it on the same address while the nodes serve:
    // the leases survive (same tokens) and the nodes keep issuing.
    let c_host = host_and_time(fetch_ids(nodes[2].addr, 1).unwrap()[0]).0;
    let c_token = host_record(caddr, c_host)["token"].as_u64().unwrap();
    coordinator.kill_9();
    let listen = caddr.to_string();
    let c = coordinator_command_on(&listen, dir.path(), &coord_flags, Some(TOKEN));
    let coordinator = Proc::start(c);
    assert_eq!(coordinator.addr, caddr);
    let restarted = Instant::now();
    let live = [&nodes[1], &nodes[2], &standby];
    while restarted.elapsed() < Duration::from_millis(NODE_TTL_MS * 3) {
        for n in live {
            all.extend(fetch_ids(n.addr, 100).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in live {
        assert!(ready(n.addr), "{}", n.log());
        all.extend(fetch_ids(n.addr, 100).unwrap());
    }
    assert_eq!(
        host_record(coordinator.addr, c_host)["token"].as_u64(),
        Some(c_token),
        "the lease outlived the coordinator's restart"
    );

    // Every id collected anywhere is unique.
    shardflake::check::check_ids(&all).assert_unique();
    assert!(all.len() > 5_000, "{} ids", all.len());
    assert_audit_clean(coordinator.addr);
}

/// Temporal mode with 2-second shards: the node crosses several shard boundaries while
/// serving, the coordinator grants each (shard, host) rising blocks, and no id repeats.
#[test]
fn temporal_cluster_crosses_shard_boundaries_without_repeating_ids() {
    use shardflake::Layout;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--layout", "temporal", "--shard-granularity", "2s"];
    let coord = Proc::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    let node = Proc::start(node_command_with(coord.addr, false, &flags));
    wait_until("the temporal node is ready", || ready(node.addr));
    let layout = Layout::from_spec("temporal:granularity=2s").unwrap();
    let mut ids = Vec::new();
    let started = Instant::now();
    // Bounded: about 5 s of requests, enough to cross at least two shard boundaries.
    while started.elapsed() < Duration::from_millis(5_200) {
        match fetch_ids(node.addr, 500) {
            Ok(batch) => ids.extend(batch),
            Err(code) => assert!(
                code == "counter_exhausted" || code == "no_counter_block",
                "only a refill may interrupt: {code}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let decoded: Vec<(u64, u64, u64)> = ids
        .iter()
        .map(|&id| {
            let d = layout.decode(id).unwrap();
            let f = |n| d.field(n).unwrap();
            (f("shard"), f("host"), f("counter"))
        })
        .collect();
    let mut shards: Vec<u64> = decoded.iter().map(|d| d.0).collect();
    shards.dedup();
    assert!(shards.len() >= 3, "crossed too few shards: {shards:?}");
    assert!(
        shards.windows(2).all(|w| w[0] < w[1]),
        "shards only move forward"
    );
    let host = decoded[0].1;
    assert!(decoded.iter().all(|d| d.1 == host), "one leased host id");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids from one node strictly increase"
    );
    let record = host_record(coord.addr, host);
    assert_eq!(record["role"].as_str(), Some("primary"), "{record}");
    shardflake::check::check_ids(&ids).assert_unique();
    assert_audit_clean(coord.addr);
}

/// The store id and layout spec a coordinator reports.
/// `js-safe` in a cluster: the coordinator leases host ids from the layout's 6 node bits, and
/// two nodes serve distinct ids that all stay within 2^53 − 1.
#[test]
fn js_safe_cluster_serves_ids_below_two_to_the_53() {
    use shardflake::{Layout, JS_MAX_SAFE_INTEGER};
    let dir = tempfile::tempdir().unwrap();
    let coord = Proc::start(coordinator_command(
        dir.path(),
        &["--layout", "js-safe"],
        Some(TOKEN),
    ));
    let layout = Layout::preset("js-safe").unwrap();
    assert_eq!(cluster_info(coord.addr).1, layout.spec());
    let nodes = [
        Proc::start(node_command_with(
            coord.addr,
            false,
            &["--layout", "js-safe"],
        )),
        Proc::start(node_command_with(coord.addr, false, &[])),
    ];
    let mut all = Vec::new();
    let mut hosts = Vec::new();
    for n in &nodes {
        wait_until("the node is ready", || ready(n.addr));
        let ids = fetch_ids(n.addr, 1000).unwrap();
        for id in &ids {
            assert!(*id <= JS_MAX_SAFE_INTEGER, "{id}");
            let node = layout.decode(*id).unwrap().field("node").unwrap();
            assert!(node < 64);
            hosts.push(node);
        }
        all.extend(ids);
    }
    hosts.sort_unstable();
    hosts.dedup();
    assert_eq!(hosts.len(), 2, "two host ids: {hosts:?}");
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "no id twice");
    assert_audit_clean(coord.addr);
}

pub(crate) fn cluster_info(coordinator: SocketAddr) -> (String, String) {
    let (s, body) = http(coordinator, "GET", "/v1/cluster", Some(TOKEN), None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    (
        v["store_id"].as_str().unwrap().to_string(),
        v["layout_spec"].as_str().unwrap().to_string(),
    )
}

/// Waits for a node to exit on its own; returns its status and log. Fails the test if it is
/// still running at the deadline (a node that serves from a misconfigured cluster).
fn exits_on_its_own(mut p: Proc) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(50));
            return (status, p.log());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the node kept running (ready: {}):\n{}",
            ready(p.addr),
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression (two coordinators with separate stores: a node with `C1,C2` and one with
/// `C2,C1` both held host id 0 and repeated millions of ids): a node given coordinators of
/// two stores refuses to start, naming both store ids.
#[test]
fn a_node_refuses_coordinators_of_two_stores() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c1 = Proc::start(coordinator_command(d1.path(), &[], Some(TOKEN)));
    let c2 = Proc::start(coordinator_command(d2.path(), &[], Some(TOKEN)));
    let (id1, _) = cluster_info(c1.addr);
    let (id2, _) = cluster_info(c2.addr);
    assert_ne!(id1, id2, "every store has its own id");
    for urls in [
        format!("http://{},http://{}", c1.addr, c2.addr),
        format!("http://{},http://{}", c2.addr, c1.addr),
    ] {
        let node = Proc::start(node_command_urls(&urls, false, &[]));
        let (status, log) = exits_on_its_own(node);
        assert!(!status.success(), "{log}");
        assert!(log.contains(&id1) && log.contains(&id2), "{log}");
    }
    // Neither store granted a lease.
    for c in [&c1, &c2] {
        let (_, body) = http(c.addr, "GET", "/v1/hosts", Some(TOKEN), None);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["hosts"].as_array().unwrap().len(), 0, "{v}");
        assert_audit_clean(c.addr);
    }
}

/// Regression (a twitter node served ids under a temporal coordinator's lease; a temporal
/// node under a twitter coordinator was "ready" while failing every request): the
/// coordinator's layout is the cluster's. A node with another layout exits naming both; a
/// node without `--layout` serves the coordinator's.
#[test]
fn the_coordinator_layout_is_the_cluster_layout() {
    use shardflake::Layout;
    let dir = tempfile::tempdir().unwrap();
    let coord = Proc::start(coordinator_command(
        dir.path(),
        &["--layout", "temporal:granularity=5s"],
        Some(TOKEN),
    ));
    let (_, spec) = cluster_info(coord.addr);
    let temporal = Layout::from_spec("temporal:granularity=5s").unwrap();
    assert_eq!(spec, temporal.spec());
    for (flags, theirs) in [
        (
            vec!["--layout", "twitter"],
            Layout::preset("twitter").unwrap(),
        ),
        (
            vec!["--layout", "temporal"],
            Layout::preset("temporal").unwrap(),
        ),
        (
            vec!["--layout", "temporal", "--standby"],
            Layout::preset("temporal").unwrap(),
        ),
    ] {
        let node = Proc::start(node_command_with(coord.addr, false, &flags));
        let (status, log) = exits_on_its_own(node);
        assert!(!status.success(), "{flags:?}: {log}");
        assert!(
            log.contains(&temporal.spec()) && log.contains(&theirs.spec()),
            "{flags:?}: {log}"
        );
    }
    // A temporal node under a coordinator left on its default layout stops too.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Proc::start(coordinator_command(plain_dir.path(), &[], Some(TOKEN)));
    let node = Proc::start(node_command_with(
        plain.addr,
        false,
        &["--layout", "temporal"],
    ));
    let (status, log) = exits_on_its_own(node);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&Layout::preset("twitter").unwrap().spec()),
        "{log}"
    );
    // Without --layout: the coordinator's layout, ready, ids that decode in it.
    let node = Proc::start(node_command_with(coord.addr, false, &[]));
    wait_until("the node is ready", || ready(node.addr));
    let ids = fetch_ids(node.addr, 100).unwrap();
    let d = temporal.decode(ids[0]).unwrap();
    assert_eq!(
        d.field("shard"),
        temporal.tick_of(shardflake::Clock::now_ms(&shardflake::SystemClock))
    );
    let (_, body) = http(node.addr, "GET", "/readyz", None, None);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["layout"], "temporal", "{r}");
    // And a standby of the same layout is accepted.
    let standby = Proc::start(node_command_with(
        coord.addr,
        true,
        &["--layout", "temporal:granularity=5s"],
    ));
    std::thread::sleep(Duration::from_millis(500));
    assert!(standby.child.id() > 0);
    let (_, body) = http(standby.addr, "GET", "/readyz", None, None);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("standby"),
        "{r}"
    );
    assert_audit_clean(coord.addr);
}
