//! `shardflake fetch` against real `shardflake serve` processes: every id exactly once while
//! the node serving the run is `kill -9`ed mid-stream, the formats of `generate`, and a clear
//! failure when no node answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardflake::check::check_ids;

use crate::process::{standalone_node, Process};

fn node(state_dir: &Path, machine_id: u32) -> Process {
    Process::start(standalone_node(
        state_dir,
        &["--machine-id", &machine_id.to_string()],
    ))
}

fn fetch(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("fetch").args(args);
    for var in crate::cluster::CREDENTIAL_VARS {
        c.env_remove(var);
    }
    c.env_remove("SHARDFLAKE_LOG_FORMAT")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// `shardflake_ids_issued_total{endpoint="/ids"}` of a node.
fn ids_issued(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).expect("the node listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("shardflake_ids_issued_total{endpoint=\"/ids\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn fetch_prints_every_id_once_while_the_serving_node_is_killed_mid_run() {
    const N: usize = 200_000;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Process> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| node(d.path(), 11 + i as u32))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    let from = urls.join(",");
    let count = N.to_string();
    let mut child = fetch(&["--from", &from, "--count", &count, "--batch-max", "2000"])
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
    let mut ids = Vec::with_capacity(N);
    let parse = |l: std::io::Result<String>| -> u64 {
        let l = l.expect("a line");
        l.parse().unwrap_or_else(|_| panic!("not an id: {l:?}"))
    };
    // The first ids; then the fetch blocks on the full pipe (a few thousand ids written
    // ahead, a few thousand buffered) while the node serving it is found and killed.
    ids.extend(lines.by_ref().take(20_000).map(parse));
    let issued: Vec<u64> = nodes.iter().map(|n| ids_issued(n.addr)).collect();
    let serving = (0..3).max_by_key(|&i| issued[i]).unwrap();
    assert!(issued[serving] >= 20_000, "{issued:?}");
    nodes[serving].kill_9();
    ids.extend(lines.map(parse));
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    assert!(
        status.success(),
        "fetch failed: {status}; stderr:\n{errors}"
    );
    assert_eq!(ids.len(), N, "stderr:\n{errors}");
    let report = check_ids(&ids);
    assert_eq!(report.duplicates, 0, "{report:?}");
    // The rest came from the other nodes, and the failover was logged once, not per request.
    let after: u64 = (0..3)
        .filter(|&i| i != serving)
        .map(|i| ids_issued(nodes[i].addr))
        .sum();
    assert!(after as usize >= N - 40_000, "{after}; stderr:\n{errors}");
    let mentions = errors.matches(urls[serving].as_str()).count();
    assert!(
        (1..=3).contains(&mentions),
        "{mentions} log lines name the killed node:\n{errors}"
    );
}

#[test]
fn fetch_prints_the_formats_generate_has_and_fails_clearly_without_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 21);
    let url = format!("http://{}", n.addr);
    let out = fetch(&["--from", &url, "--count", "5", "--format", "hex"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text
        .lines()
        .all(|l| l.len() == 16 && l.bytes().all(|b| b.is_ascii_hexdigit())));
    // A namespace this node does not know: the node's 404, at once.
    let out = fetch(&["--from", &url, "--count", "5", "--ns", "orders"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fetched 0 of 5 ids") && err.contains("404"),
        "{err}"
    );
    // No node answers: a non-zero exit naming the node, within the time limit.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = fetch(&["--from", &dead, "--count", "10", "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fetched 0 of 10 ids") && err.contains(&dead),
        "{err}"
    );
}

/// Regression (`shardflake fetch ... | head` exited 1, "stdout was closed"): a reader that
/// stops early is the normal end of a pipeline, as for `seq | head` and `generate`.
#[test]
fn fetch_into_a_pipe_closed_early_ends_quietly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 22);
    let url = format!("http://{}", n.addr);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' fetch --from {url} --count 1000000 | head -n 3",
            env!("CARGO_BIN_EXE_shardflake")
        ))
        .env_remove("SHARDFLAKE_CLIENT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
