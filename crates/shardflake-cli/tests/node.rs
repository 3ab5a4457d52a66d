//! `shardflake serve` as a real process on loopback: fetch ids over HTTP, `kill -9` it,
//! restart it with the clock set back an hour (libfaketime, Debian package `faketime`),
//! SIGTERM, a corrupt state file, a second holder of the same node id.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Process;

const HOUR_MS: u64 = 3_600_000;
/// Every wait in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(30);

/// The preload library Debian's `faketime` wrapper uses (`$LIB` is expanded by ld.so).
/// The wrapper itself forks, so the test preloads the library directly: then the process
/// it starts is the node, and `kill -9` reaches it.
const LIBFAKETIME: &str = "/usr/$LIB/faketime/libfaketime.so.1";

fn libfaketime_installed() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .any(|d| Path::new(d).join("faketime/libfaketime.so.1").exists())
}

fn command(state_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = crate::process::standalone_node(state_dir, flags);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn with_clock_back_an_hour(c: &mut Command) {
    assert!(
        libfaketime_installed(),
        "these tests need libfaketime: apt-get install faketime"
    );
    c.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", "-1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// A running node.
struct Node(Process);

impl std::ops::Deref for Node {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Node {
    fn start(c: Command) -> Node {
        Node(Process::start(c))
    }

    /// `kill -9`: no shutdown code runs.
    fn kill_9(mut self) {
        self.0.kill_9();
    }

    /// SIGTERM, then the exit status (bounded wait).
    fn terminate(mut self) -> (ExitStatus, String) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        let status = wait_bounded(&mut self.child);
        // Let the reader thread drain the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }

    fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, None)
    }

    fn get_binary(&self, path: &str) -> Vec<u64> {
        let r = http(self.addr, "GET", path, Some("application/octet-stream"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.body
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Polls `/readyz` until it answers at all; returns the first answer.
    fn first_readiness(&self) -> Response {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = try_http(self.addr, "GET", "/readyz", None) {
                return r;
            }
            assert!(Instant::now() < until, "no answer from /readyz");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/readyz` until it is 200 (bounded).
    fn wait_ready(&self) {
        let until = Instant::now() + DEADLINE;
        loop {
            let r = self.first_readiness();
            if r.status == 200 {
                return;
            }
            assert!(
                Instant::now() < until,
                "not ready in time: {}\nlog:\n{}",
                r.text(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_bounded(child: &mut Child) -> ExitStatus {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the process did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command that must fail at start-up; returns (status, stderr). Bounded.
fn run_to_exit(mut c: Command) -> (ExitStatus, String) {
    let mut child = c.spawn().expect("the binary starts");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child);
    (status, reader.join().unwrap())
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Response {
    try_http(addr, method, path, accept).expect("HTTP request")
}

fn state_payload(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).expect("state file");
    serde_json::from_str(text.lines().nth(1).expect("payload line")).expect("payload JSON")
}

fn twitter_ms(id: u64) -> u64 {
    (id >> 22) + 1_288_834_974_657
}

fn collect_ids(node: &Node) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(node.get_binary("/ids?count=1000"));
    }
    for _ in 0..10 {
        let r = node.get("/id");
        assert_eq!(r.status, 200);
        let v = r.json();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(v["id_str"], id.to_string());
        ids.push(id);
    }
    ids
}

#[test]
fn node_restarted_after_kill_9_with_the_clock_an_hour_back_never_goes_below_old_ids() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--machine-id", "1", "--datacenter-id", "2"];
    let file = "node-twitter-datacenter2-worker1.state";

    let a = Node::start(command(dir.path(), &flags, &[]));
    a.wait_ready();
    let old = collect_ids(&a);
    assert!(old.windows(2).all(|w| w[0] < w[1]));
    let max_old = *old.iter().max().unwrap();
    let reserved = state_payload(dir.path(), file)["reserved"]["reserved_until_ms"]
        .as_u64()
        .unwrap();
    assert!(reserved >= twitter_ms(max_old));
    a.kill_9();

    // Default clock policy: not ready, 503 with how far behind, and a warning in the log.
    let mut c = command(dir.path(), &flags, &[]);
    with_clock_back_an_hour(&mut c);
    let b = Node::start(c);
    let r = b.first_readiness();
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert_eq!(v["error"]["code"], "clock_behind");
    // The node sees the faked clock: about an hour behind the bound.
    let behind = v["clock_behind_ms"].as_u64().unwrap();
    assert!(
        (HOUR_MS - 60_000..=HOUR_MS + 60_000).contains(&behind),
        "clock_behind_ms {behind}"
    );
    let r = b.get("/id");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "clock_behind");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 3_500, "Retry-After {retry}");
    assert_eq!(http(b.addr, "GET", "/ids?count=10", None).status, 503);
    let log = b.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("ms behind the reserved bound")),
        "{log}"
    );
    b.kill_9();

    // Borrowing allowed: serves above the bound at once.
    let borrow = [
        &flags[..],
        &["--clock-policy", "borrow", "--borrow-ahead-max", "2h"],
    ]
    .concat();
    let mut c = command(dir.path(), &borrow, &[]);
    with_clock_back_an_hour(&mut c);
    let c = Node::start(c);
    c.wait_ready();
    let borrowed = collect_ids(&c);
    assert!(
        borrowed.iter().all(|id| *id > max_old),
        "an id at or below the old maximum after the restart"
    );
    let ahead = c.get("/readyz").json()["borrowed_ahead_ms"]
        .as_u64()
        .unwrap();
    assert!(ahead >= HOUR_MS - 60_000, "borrowed_ahead_ms {ahead}");
    let last = *borrowed.last().unwrap();

    // SIGTERM: exit 0, the exact last issued tick persisted.
    let (status, log) = c.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("state persisted"), "{log}");
    let payload = state_payload(dir.path(), file);
    assert_eq!(payload["reserved"]["clean_shutdown"], true);
    assert!(payload["reserved"]["reserved_until_ms"].as_u64().unwrap() >= twitter_ms(last));

    // The real clock again: above everything so far.
    let d = Node::start(command(dir.path(), &flags, &[]));
    d.wait_ready();
    let newest = collect_ids(&d);
    assert!(newest.iter().all(|id| *id > last));
    let (status, _) = d.terminate();
    assert!(status.success());
}

#[test]
fn temporal_node_continues_above_its_persisted_counter_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--layout", "temporal", "--machine-id", "3"];
    let a = Node::start(command(dir.path(), &flags, &[]));
    a.wait_ready();
    let old = a.get_binary("/ids?count=100000");
    assert!(old.windows(2).all(|w| w[0] < w[1]));
    a.kill_9();

    let b = Node::start(command(dir.path(), &flags, &[]));
    b.wait_ready();
    let new = b.get_binary("/ids?count=1000");
    // Same hour, same shard (unless the test straddles an hour boundary, when the shard
    // is higher): every new id is above every old one.
    assert!(new[0] > *old.last().unwrap());
    b.kill_9();

    let mut c = command(dir.path(), &flags, &[]);
    with_clock_back_an_hour(&mut c);
    let c = Node::start(c);
    let r = c.first_readiness();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "clock_behind");
    assert_eq!(c.get("/id").status, 503);
}

#[test]
fn sigterm_exits_0_and_a_restart_is_ready_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(command(dir.path(), &["--machine-id", "5"], &[]));
    a.wait_ready();
    let ids = collect_ids(&a);
    let (status, log) = a.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    let payload = state_payload(dir.path(), "node-twitter-datacenter0-worker5.state");
    assert_eq!(payload["reserved"]["clean_shutdown"], true);
    assert_eq!(
        payload["reserved"]["reserved_until_ms"],
        twitter_ms(*ids.last().unwrap())
    );
    // The exact bound is in the past: the restarted node need not wait out a window.
    let b = Node::start(command(dir.path(), &["--machine-id", "5"], &[]));
    let r = b.first_readiness();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(collect_ids(&b)[0] > *ids.last().unwrap());
}

#[test]
fn a_corrupt_state_file_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(command(dir.path(), &["--machine-id", "6"], &[]));
    a.wait_ready();
    collect_ids(&a);
    a.kill_9();
    let file = dir.path().join("node-twitter-datacenter0-worker6.state");
    let mut bytes = std::fs::read(&file).unwrap();
    let i = bytes.iter().position(|b| b.is_ascii_digit()).unwrap() + 30;
    bytes[i] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let (status, stderr) = run_to_exit(command(dir.path(), &["--machine-id", "6"], &[]));
    assert!(!status.success());
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");

    // Truncated to nothing: also refused, never a silent first start.
    std::fs::write(&file, b"").unwrap();
    let (status, stderr) = run_to_exit(command(dir.path(), &["--machine-id", "6"], &[]));
    assert!(!status.success());
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
}

#[test]
fn one_node_id_runs_once_per_state_dir_and_other_ids_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(command(
        dir.path(),
        &["--log-format", "json"],
        &[("MACHINE_ID", "7")],
    ));
    a.wait_ready();
    // JSON logs: one object per line.
    let log = a.log();
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first["level"].is_string(), "{first}");

    let (status, stderr) = run_to_exit(command(dir.path(), &[], &[("MACHINE_ID", "7")]));
    assert!(!status.success());
    assert!(stderr.contains("locked by another process"), "{stderr}");

    let b = Node::start(command(dir.path(), &[], &[("MACHINE_ID", "8")]));
    b.wait_ready();
    let x = a.get("/id").json()["id"].as_u64().unwrap();
    let y = b.get("/id").json()["id"].as_u64().unwrap();
    assert_ne!(x, y);
    assert_eq!((x >> 12) & 31, 7);
    assert_eq!((y >> 12) & 31, 8);
}

#[test]
fn invalid_flags_and_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(command(dir.path(), &[], &[("MACHINE_ID", "40")]));
    assert!(!status.success());
    assert!(
        stderr.contains("MACHINE_ID=40 is out of range 0..=31 for layout twitter (field worker)"),
        "{stderr}"
    );
    let (status, stderr) = run_to_exit(command(
        dir.path(),
        &["--layout", "sonyflake"],
        &[("DATACENTER_ID", "3")],
    ));
    assert!(!status.success());
    assert!(
        stderr.contains("DATACENTER_ID=3 is not used by layout sonyflake"),
        "{stderr}"
    );
    // A temporal layout whose shard field has run out does not start (it would wrap).
    let (status, stderr) = run_to_exit(command(
        dir.path(),
        &[
            "--layout",
            "temporal:granularity=1s,shard=20,host=10,counter=33",
        ],
        &[],
    ));
    assert!(!status.success());
    assert!(
        stderr.contains("overflowed on 2025-01-13T03:16:16.000Z"),
        "{stderr}"
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("serve")
        .arg("--state-dir")
        .arg(dir.path())
        .env("PORT", "65536")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (status, stderr) = run_to_exit(c);
    assert!(!status.success());
    assert!(
        stderr.contains("65536") && stderr.contains("--port"),
        "{stderr}"
    );
}

#[test]
fn inspect_endpoint_matches_inspect_json() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(command(
        dir.path(),
        &[
            "--layout",
            "discord",
            "--machine-id",
            "3",
            "--datacenter-id",
            "4",
        ],
        &[],
    ));
    n.wait_ready();
    let id = n.get("/id").json()["id"].as_u64().unwrap();
    let served = n.get(&format!("/inspect/{id}"));
    assert_eq!(served.status, 200);
    let cli = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["inspect", "--layout", "discord", "--json", &id.to_string()])
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(
        served.text(),
        String::from_utf8(cli.stdout).unwrap().trim_end()
    );
    assert_eq!(served.json()["process"], 3);
    assert_eq!(served.json()["worker"], 4);
}

#[test]
fn serve_with_no_arguments_listens_on_8080_with_the_default_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in [
        "PORT",
        "MACHINE_ID",
        "DATACENTER_ID",
        "SHARDFLAKE_STATE_DIR",
        "SHARDFLAKE_BIND",
    ] {
        c.env_remove(var);
    }
    let n = Node::start(c);
    assert_eq!(n.addr.port(), 8080);
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let until = Instant::now() + DEADLINE;
    while try_http(addr, "GET", "/readyz", None)
        .ok()
        .map(|r| r.status)
        != Some(200)
    {
        assert!(Instant::now() < until, "not ready:\n{}", n.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = http(addr, "GET", "/id", None).json()["id"]
        .as_u64()
        .unwrap();
    assert!(id > 0);
    let log = n.log();
    assert!(log.contains("MACHINE_ID is not set"), "{log}");
    let state: PathBuf = dir
        .path()
        .join("shardflake-data/node-twitter-datacenter0-worker0.state");
    assert!(state.exists());
    let (status, _) = n.terminate();
    assert!(status.success());
}

/// Regression (`generate` and `serve` mapped `--machine-id` / `MACHINE_ID` onto different
/// fields for discord): both take the mapping from the layout.
#[test]
fn generate_and_serve_set_the_same_fields_from_the_node_ids() {
    for layout in ["discord", "twitter"] {
        let gen = Command::new(env!("CARGO_BIN_EXE_shardflake"))
            .args(["generate", "--layout", layout, "--machine-id", "4"])
            .args(["--datacenter-id", "2"])
            .output()
            .unwrap();
        assert!(
            gen.status.success(),
            "{}",
            String::from_utf8_lossy(&gen.stderr)
        );
        let generated: u64 = String::from_utf8(gen.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = Node::start(command(
            dir.path(),
            &["--layout", layout],
            &[("MACHINE_ID", "4"), ("DATACENTER_ID", "2")],
        ));
        n.wait_ready();
        let served = n.get("/id").json()["id"].as_u64().unwrap();
        let l = shardflake::Layout::preset(layout).unwrap();
        let (a, b) = (l.decode(generated).unwrap(), l.decode(served).unwrap());
        for f in l.node_fields() {
            assert_eq!(
                a.field(f.name()),
                b.field(f.name()),
                "{layout}: field `{}` differs between generate and serve",
                f.name()
            );
        }
        assert_eq!(a.field(l.machine_field().unwrap().name()), Some(4));
    }
}

/// Regression (the state directory was created without fsyncing its parent, so a power loss
/// could make the next start look like a first start): every directory the node creates is
/// made durable in its parent before the first state write. Watched with strace.
#[test]
fn a_new_state_directory_is_fsynced_into_its_parent() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "this test needs strace: apt-get install strace"
    );
    let root = tempfile::tempdir().unwrap();
    let state_dir = root.path().join("a/b");
    let trace = root.path().join("trace");
    let inner = command(&state_dir, &[], &[]);
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-y",
        "-e",
        "trace=mkdir,mkdirat,fsync,fdatasync",
        "-o",
    ])
    .arg(&trace)
    .arg(inner.get_program())
    .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut n = Node::start(c);
    n.wait_ready();
    // SIGTERM to the node itself (strace's child); strace exits when it does.
    let ok = Command::new("pkill")
        .args(["-TERM", "-P", &n.pid()])
        .status()
        .expect("pkill runs");
    assert!(ok.success());
    assert!(wait_bounded(&mut n.child).success());
    let log = std::fs::read_to_string(&trace).unwrap();
    let root_path = root.path().to_str().unwrap();
    let mut created: Vec<String> = Vec::new();
    let mut synced: Vec<String> = Vec::new();
    let mut first_state_fsync = None;
    for (i, line) in log.lines().enumerate() {
        if let Some(rest) = line.split("mkdir(\"").nth(1) {
            if line.trim_end().ends_with("= 0") {
                created.push(rest.split('"').next().unwrap().to_string());
            }
        } else if let Some(rest) = line.split("fsync(").nth(1) {
            let path = rest.split('<').nth(1).and_then(|p| p.split('>').next());
            if let Some(p) = path {
                if p.ends_with(".state.tmp") && first_state_fsync.is_none() {
                    first_state_fsync = Some(i);
                }
                if first_state_fsync.is_none() {
                    synced.push(p.to_string());
                }
            }
        }
    }
    assert!(
        created.iter().any(|d| d.ends_with("/a/b")),
        "strace saw no mkdir of the state directory:\n{log}"
    );
    for dir in created.iter().filter(|d| d.starts_with(root_path)) {
        let parent = Path::new(dir).parent().unwrap().to_str().unwrap();
        assert!(
            synced.iter().any(|s| s == parent),
            "{dir} was created but {parent} was not fsynced before the first state write:\n{log}"
        );
    }
}
