//! `shardflake coordinator` as a real process on loopback: authentication, refusal to start
//! without a token, and state that survives `kill -9` with every lease treated as live for a
//! full TTL after the restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "cluster-test-token-0123456789";
/// Every wait in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(30);

fn coordinator_command(data_dir: &Path, flags: &[&str], token: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("coordinator")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .env_remove("SHARDFLAKE_CLUSTER_TOKEN")
        .env_remove("SHARDFLAKE_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        c.env("SHARDFLAKE_CLUSTER_TOKEN", t);
    }
    c
}

/// A running process that logs `listening addr=HOST:PORT`; killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn start(mut c: Command) -> Proc {
        let mut child = c.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    if let Some((_, rest)) = line.split_once(" addr=") {
                        if let Some(a) = rest.split_whitespace().next() {
                            let _ = tx.send(a.to_string());
                        }
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a.parse().expect("a socket address in the listening line"),
            Err(_) => {
                let _ = child.kill();
                panic!("no listening line; log:\n{}", log.lock().unwrap());
            }
        };
        Proc { child, addr, log }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
fn http(
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

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
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
    assert!(err.contains("SHARDFLAKE_CLUSTER_TOKEN"), "{err}");
    assert!(
        !dir.path().join("coordinator.redb").exists(),
        "nothing opened"
    );
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
    assert!(p.log.lock().unwrap().contains("AUTHENTICATION IS OFF"));
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
    p.kill9();
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
}

#[test]
fn temporal_coordinator_grants_rising_blocks_over_http() {
    use shardflake::{Clock, Layout, SystemClock, TemporalWidths, SHARDFLAKE_EPOCH_MS};
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--layout",
        "temporal",
        "--shard-granularity",
        "5s",
        "--block-min",
        "1000",
    ];
    let p = Proc::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    let (s, a) = post(p.addr, "/v1/leases", json!({"name": "t", "ttl_ms": 5000}));
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["shard_granularity_ms"], 5000);
    let (host, token) = (a["host_id"].as_u64().unwrap(), a["token"].as_u64().unwrap());
    let layout = Layout::temporal(5_000, SHARDFLAKE_EPOCH_MS, TemporalWidths::default()).unwrap();
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
}
