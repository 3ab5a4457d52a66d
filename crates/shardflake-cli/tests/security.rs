//! Trust boundaries over real processes: a return by anyone but the holder repeats nothing;
//! each credential does only what its scope allows and rotates without a restart; TLS on
//! the node and the coordinator (checked with the system's `curl` and `openssl`), mutual TLS
//! between nodes and coordinators, certificates reloaded on SIGHUP; a runaway client is
//! limited while another is served; no token or lease secret is ever stored, logged or
//! answered; and `shardflake audit` finds the overlap in a store seeded with one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use shardflake_runtime::testing::Pki;

use crate::cluster::{
    assert_audit_clean, audit, coordinator_command, http, node_command_urls, ns_ids, put_namespace,
    ready, wait_until, ADMIN_TOKEN, READ_TOKEN, TOKEN,
};
use crate::process::{standalone_node, Process};

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or(body).to_string()
}

/// The host id and fencing token of the node at `node`, as anyone with a read credential
/// sees them (`/v1/routing` names the host id of a URL, `/v1/hosts` its token).
fn stolen_lease(coordinator: SocketAddr, node: SocketAddr) -> (u64, u64) {
    let (_, routing) = http(coordinator, "GET", "/v1/routing", Some(READ_TOKEN), None);
    let routing: Value = serde_json::from_str(&routing).unwrap();
    let host = routing["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["url"] == format!("http://{node}"))
        .and_then(|n| n["host_id"].as_u64())
        .expect("the node is in the routing table");
    let (_, hosts) = http(coordinator, "GET", "/v1/hosts", Some(READ_TOKEN), None);
    let hosts: Value = serde_json::from_str(&hosts).unwrap();
    let token = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host_id"].as_u64() == Some(host))
        .and_then(|h| h["token"].as_u64())
        .unwrap();
    (host, token)
}

/// The review's reproduction: node A holds the namespace's first block and issued 1..=500;
/// a caller with the node credential and A's host id and token (from `/v1/hosts`) returns
/// "A's unused values from 1". It is refused, and node B's values repeat none of A's.
#[test]
fn a_return_by_anyone_but_the_holder_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let url = format!("http://{}", c.addr);
    let spec = json!({"block_min": 1000, "block_max": 1000});
    put_namespace(c.addr, "dup", &spec);
    let a = Process::start(node_command_urls(&url, false, &[]));
    let b = Process::start(node_command_urls(&url, false, &[]));
    wait_until("both nodes hold a lease", || ready(a.addr) && ready(b.addr));
    let from_a = ns_ids(a.addr, "dup", 500).expect("A serves");
    assert_eq!(from_a.first(), Some(&1));
    let (host, token) = stolen_lease(c.addr, a.addr);
    let path = "/v1/namespaces/dup/return";
    let attack = |secret: Option<&str>, credential: &str| {
        let mut body =
            json!({"host_id": host, "token": token, "block_end": 2001, "unused_from": 1});
        if let Some(s) = secret {
            body["secret"] = json!(s);
        }
        http(c.addr, "POST", path, Some(credential), Some(&body))
    };
    // The request as the review sent it: no secret at all.
    let (s, body) = attack(None, TOKEN);
    assert_eq!((s, code(&body).as_str()), (400, "bad_request"), "{body}");
    // With a guessed secret, and with the secret of another lease.
    for guess in [
        "00000000000000000000000000000000",
        "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e",
    ] {
        let (s, body) = attack(Some(guess), TOKEN);
        assert_eq!(
            (s, code(&body).as_str()),
            (403, "lease_secret_mismatch"),
            "{body}"
        );
    }
    // An SDK user's read credential may not return at all.
    let (s, body) = attack(Some("00000000000000000000000000000000"), READ_TOKEN);
    assert_eq!((s, code(&body).as_str()), (403, "forbidden"), "{body}");
    let from_b = ns_ids(b.addr, "dup", 500).expect("B serves");
    let mut all = from_a.clone();
    all.extend(&from_b);
    let report = shardflake::check::check_ids(&all);
    assert_eq!(
        report.duplicates,
        0,
        "B repeated A's values: {:?}",
        &from_b[..5]
    );
    assert!(from_b.iter().all(|v| *v > 1000), "{:?}", &from_b[..5]);
    assert_audit_clean(c.addr);
    // The refusals are in the audit trail, with who made them and never the secret (the
    // log arrives through a pipe: wait for it).
    wait_until("the refusals are in the audit trail", || {
        c.log().contains(r#""event":"refused""#)
    });
    let log = c.log();
    assert!(log.contains("lease_secret_mismatch"), "{log}");
    assert!(!log.contains("00000000000000000000000000000000"));
}

/// Every credential reads; only the node credential leases and takes blocks, only the admin
/// credential creates namespaces.
#[test]
fn each_credential_does_only_what_its_scope_allows() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let lease = json!({"name": "x", "secret": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"});
    let block = json!({"host_id": 0, "token": 1, "secret": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"});
    let spec = json!({"block_min": 10});
    let cases: [(&str, &str, &str, Option<&Value>, u16); 12] = [
        (READ_TOKEN, "GET", "/v1/routing", None, 200),
        (READ_TOKEN, "GET", "/v1/hosts", None, 200),
        (READ_TOKEN, "GET", "/v1/audit", None, 200),
        (READ_TOKEN, "POST", "/v1/leases", Some(&lease), 403),
        (
            READ_TOKEN,
            "POST",
            "/v1/namespaces/n/blocks",
            Some(&block),
            403,
        ),
        (
            READ_TOKEN,
            "POST",
            "/v1/namespaces/n/return",
            Some(&block),
            403,
        ),
        (READ_TOKEN, "PUT", "/v1/namespaces/n", Some(&spec), 403),
        (TOKEN, "PUT", "/v1/namespaces/n", Some(&spec), 403),
        (ADMIN_TOKEN, "POST", "/v1/leases", Some(&lease), 403),
        (ADMIN_TOKEN, "PUT", "/v1/namespaces/n", Some(&spec), 200),
        (TOKEN, "POST", "/v1/leases", Some(&lease), 200),
        (ADMIN_TOKEN, "GET", "/v1/routing", None, 200),
    ];
    for (credential, method, path, body, want) in cases {
        let (s, text) = http(c.addr, method, path, Some(credential), body);
        assert_eq!(s, want, "{method} {path}: {text}");
        if want == 403 {
            assert_eq!(code(&text), "forbidden", "{text}");
        }
    }
    let (s, text) = http(
        c.addr,
        "GET",
        "/v1/routing",
        Some("not-a-credential-at-all"),
        None,
    );
    assert_eq!((s, code(&text).as_str()), (401, "unauthorized"));
}

/// A read credential rotated in its file: the new one works at once beside the old, and the
/// old one is refused once removed (SIGHUP), without a restart.
#[test]
fn a_rotated_credential_works_beside_the_old_then_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("read.tokens");
    std::fs::write(&file, "dashboards old-read-token-0123456789\n").unwrap();
    let flags = ["--read-token-file", file.to_str().unwrap()];
    let c = Process::start(coordinator_command(
        &dir.path().join("data"),
        &flags,
        Some(TOKEN),
    ));
    let status = |t: &str| http(c.addr, "GET", "/v1/hosts", Some(t), None).0;
    assert_eq!(status("old-read-token-0123456789"), 200);
    assert_eq!(status("new-read-token-0123456789"), 401);
    std::fs::write(
        &file,
        "dashboards old-read-token-0123456789\ndashboards-2 new-read-token-0123456789\n",
    )
    .unwrap();
    hup(&c);
    wait_until("the new credential is accepted", || {
        status("new-read-token-0123456789") == 200
    });
    assert_eq!(
        status("old-read-token-0123456789"),
        200,
        "both while rotating"
    );
    std::fs::write(&file, "dashboards-2 new-read-token-0123456789\n").unwrap();
    hup(&c);
    wait_until("the old credential is refused", || {
        status("old-read-token-0123456789") == 401
    });
    assert_eq!(status("new-read-token-0123456789"), 200);
    wait_until("the reloads are logged", || c.log().contains("reloaded"));
    assert!(
        !c.log().contains("read-token-0123456789"),
        "a token in the log"
    );
}

fn hup(p: &Process) {
    let ok = Command::new("kill")
        .args(["-HUP", &p.pid()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs")
}

/// The subject of the certificate a TLS server at `addr` presents, by `openssl s_client`,
/// which must also verify it against `ca`.
fn served_subject(addr: SocketAddr, ca: &Path) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(ca)
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Verification: OK"), "{text}");
    text.lines()
        .find(|l| l.contains("Peer certificate:"))
        .unwrap_or_else(|| panic!("no peer certificate line: {text}"))
        .to_string()
}

/// `curl --cacert` gets an id over HTTPS; `openssl s_client` verifies the certificate; plain
/// HTTP to the TLS port gets a clear JSON 400, not a hang; a replaced certificate is served
/// after SIGHUP, without a restart.
#[test]
fn the_node_serves_https_and_reloads_its_certificate_on_sighup() {
    let pki = Pki::new();
    let first = pki.server("node", "node-first");
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--machine-id",
        "1",
        "--tls-cert",
        first.cert.to_str().unwrap(),
        "--tls-key",
        first.key.to_str().unwrap(),
    ];
    let node = Process::start(standalone_node(dir.path(), &flags));
    let url = format!("https://localhost:{}/id", node.addr.port());
    let ca = pki.ca();
    let out = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["id"].as_u64().map(|i| i.to_string()),
        v["id_str"].as_str().map(String::from)
    );
    // Without the CA the certificate is not trusted.
    assert!(!curl(&[&url]).status.success());
    // Plain HTTP to the TLS port: a clear refusal.
    let (s, body) = http(node.addr, "GET", "/id", None, None);
    assert_eq!((s, code(&body).as_str()), (400, "bad_request"), "{body}");
    assert!(body.contains("https://"), "{body}");
    assert!(served_subject(node.addr, &ca).contains("node-first"));
    // Replace the certificate and key in place, then SIGHUP.
    let second = pki.server("node-next", "node-second");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    hup(&node);
    wait_until("the new certificate is served", || {
        served_subject(node.addr, &ca).contains("node-second")
    });
    let out = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert!(out.status.success(), "served after the reload");
    // The SDK over HTTPS: `fetch` verifies the node against --ca-file.
    let from = format!("https://localhost:{}", node.addr.port());
    let out = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["fetch", "--from", &from, "--count", "1000", "--ca-file"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1000);
    let out = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["fetch", "--from", &from, "--count", "1", "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an untrusted certificate is refused");
}

/// A coordinator listening where other machines reach it, without TLS, says so loudly.
#[test]
fn a_coordinator_reachable_in_clear_warns() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::cluster::coordinator_command_on("0.0.0.0:0", dir.path(), &[], Some(TOKEN));
    let p = Process::start(c);
    assert!(p.log().contains("PLAIN HTTP ON 0.0.0.0"), "{}", p.log());
    let quiet = Process::start(coordinator_command(&dir.path().join("b"), &[], Some(TOKEN)));
    assert!(!quiet.log().contains("PLAIN HTTP"), "{}", quiet.log());
}

/// A coordinator with `--client-ca` and an allow-list: a node without a client certificate,
/// and one whose certificate names another host, never get a lease; a node presenting an
/// allowed certificate does, over HTTPS verified against the CA.
#[test]
fn an_mtls_coordinator_leases_only_to_allowed_client_certificates() {
    let pki = Pki::new();
    let server = pki.server("coordinator", "coordinator");
    let allowed = pki.client("node-1.cluster");
    let intruder = pki.client("intruder.cluster");
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca();
    let flags = [
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
        "--client-ca",
        ca.to_str().unwrap(),
        "--client-names",
        "node-1.cluster",
    ];
    let c = Process::start(coordinator_command(dir.path(), &flags, Some(TOKEN)));
    let url = format!("https://localhost:{}", c.addr.port());
    let node_with = |identity: Option<&shardflake_runtime::testing::Issued>| {
        let mut cmd = node_command_urls(&url, false, &[]);
        cmd.arg("--ca-file").arg(&ca);
        if let Some(i) = identity {
            cmd.arg("--tls-client-cert")
                .arg(&i.cert)
                .arg("--tls-client-key")
                .arg(&i.key);
        }
        Process::start(cmd)
    };
    let good = node_with(Some(&allowed));
    let bare = node_with(None);
    let foreign = node_with(Some(&intruder));
    wait_until("the allowed node holds a lease", || ready(good.addr));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !ready(bare.addr),
        "a node without a client certificate got a lease"
    );
    assert!(
        !ready(foreign.addr),
        "a node with a certificate for another name got a lease"
    );
    // curl without a client certificate is refused too; with the allowed one it reads.
    let plain = curl(&["--cacert", ca.to_str().unwrap(), &format!("{url}/healthz")]);
    assert!(!plain.status.success());
    let with_cert = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        allowed.cert.to_str().unwrap(),
        "--key",
        allowed.key.to_str().unwrap(),
        &format!("{url}/healthz"),
    ]);
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    let hosts = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        allowed.cert.to_str().unwrap(),
        "--key",
        allowed.key.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {READ_TOKEN}"),
        &format!("{url}/v1/hosts"),
    ]);
    let hosts: Value = serde_json::from_slice(&hosts.stdout).unwrap();
    assert_eq!(hosts["hosts"].as_array().unwrap().len(), 1, "{hosts}");
    // The audit trail names the certificate the grant was made to.
    assert!(
        c.log().contains(r#""cert":"node-1.cluster""#),
        "{}",
        c.log()
    );
}

/// One HTTP/1.1 GET from a socket bound to `from` (another loopback address is another
/// peer), with an optional bearer token: the status and the `Retry-After` header.
fn get_from(from: &str, to: SocketAddr, path: &str, token: Option<&str>) -> (u16, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap().into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let retry_after = raw.lines().find_map(|l| {
        l.strip_prefix("retry-after: ")
            .map(str::trim)
            .map(String::from)
    });
    (status, retry_after)
}

/// A node limiting each client to 20 000 ids/s: a runaway client asking for 10 000 ids at a
/// time is told to wait (429, Retry-After) while another client is served — by peer
/// address, and by client credential on a node that requires one.
#[test]
fn a_runaway_client_is_limited_while_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Process::start(standalone_node(
        &dir.path().join("a"),
        &["--machine-id", "1", "--client-ids-per-second", "20000"],
    ));
    let mut limited = None;
    for _ in 0..50 {
        match get_from("127.0.0.1", node.addr, "/ids?count=10000", None) {
            (200, _) => {}
            (429, retry_after) => {
                limited = retry_after;
                break;
            }
            (s, _) => panic!("status {s}"),
        }
    }
    let retry_after = limited.expect("the runaway client was never limited");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert_eq!(
        get_from("127.0.0.2", node.addr, "/ids?count=1000", None).0,
        200
    );
    assert_eq!(
        get_from("127.0.0.1", node.addr, "/ids?count=10000", None).0,
        429,
        "still limited"
    );

    let tokens = dir.path().join("clients.tokens");
    std::fs::write(
        &tokens,
        "batch batch-client-token-0123\nweb web-client-token-01234\n",
    )
    .unwrap();
    let flags = [
        "--machine-id",
        "2",
        "--client-ids-per-second",
        "20000",
        "--client-token-file",
        tokens.to_str().unwrap(),
    ];
    let node = Process::start(standalone_node(&dir.path().join("b"), &flags));
    assert_eq!(get_from("127.0.0.1", node.addr, "/id", None).0, 401);
    assert_eq!(
        get_from("127.0.0.1", node.addr, "/healthz", None).0,
        200,
        "probes stay open"
    );
    let mut limited = false;
    for _ in 0..50 {
        let (s, _) = get_from(
            "127.0.0.1",
            node.addr,
            "/ids?count=10000",
            Some("batch-client-token-0123"),
        );
        if s == 429 {
            limited = true;
            break;
        }
        assert_eq!(s, 200);
    }
    assert!(limited, "the batch client was never limited");
    let (s, _) = get_from(
        "127.0.0.1",
        node.addr,
        "/ids?count=1000",
        Some("web-client-token-01234"),
    );
    assert_eq!(
        s, 200,
        "the other credential is served from the same address"
    );
    let (_, metrics) = http(node.addr, "GET", "/metrics", None, None);
    assert!(
        metrics.contains(r#"shardflake_client_rate_limited_total{client="batch"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("client-token-0123"),
        "a token in the metrics"
    );
}

/// Everything a node and its coordinator say to each other, both ways, through a forwarding
/// proxy: the lease secrets the node sends are read from it.
struct Tap {
    addr: SocketAddr,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_client: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tap = Tap {
            addr: listener.local_addr().unwrap(),
            to_server: Arc::default(),
            to_client: Arc::default(),
        };
        let (up, down) = (tap.to_server.clone(), tap.to_client.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    up.clone(),
                );
                pump(server, client, down.clone());
            }
        });
        tap
    }

    /// The lease secrets the node sent.
    fn secrets(&self) -> Vec<String> {
        let sent = String::from_utf8_lossy(&self.to_server.lock().unwrap()).into_owned();
        let mut out: Vec<String> = sent
            .split(r#""secret":""#)
            .skip(1)
            .map(|rest| rest.chars().take(32).collect())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A node leases, renews, takes namespace blocks and gives its tail back through a tap:
/// the lease secrets it sent appear in no answer, no log line of either process and not in
/// the store file; the credentials appear in no log and not in the store.
#[test]
fn no_secret_is_stored_logged_or_answered() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let spec = json!({"block_min": 100, "block_max": 100});
    put_namespace(c.addr, "orders", &spec);
    let tap = Tap::start(c.addr);
    let mut node = Process::start(node_command_urls(
        &format!("http://{}", tap.addr),
        false,
        &[],
    ));
    wait_until("the node holds a lease", || ready(node.addr));
    assert!(ns_ids(node.addr, "orders", 150).is_ok());
    std::thread::sleep(Duration::from_millis(1_500)); // a renewal or two
    assert!(node.terminate().success());
    // The logs arrive through pipes: let them drain before looking for what must be absent.
    std::thread::sleep(Duration::from_millis(500));
    let secrets = tap.secrets();
    assert!(!secrets.is_empty(), "the tap saw no secret");
    let answers = tap.to_client.lock().unwrap().clone();
    let store = std::fs::read(dir.path().join("coordinator.redb")).unwrap();
    let logs = format!("{}\n{}", c.log(), node.log());
    for secret in &secrets {
        assert_eq!(secret.len(), 32, "{secret}");
        assert!(!contains(&answers, secret), "a secret in an answer");
        assert!(!logs.contains(secret.as_str()), "a secret in a log");
        assert!(!contains(&store, secret), "a secret in the store");
    }
    for token in [TOKEN, READ_TOKEN, ADMIN_TOKEN] {
        assert!(!logs.contains(token), "a credential in a log");
        assert!(!contains(&store, token), "a credential in the store");
    }
    assert_audit_clean(c.addr);
}

/// `shardflake audit` on a store whose namespace log holds two overlapping blocks (as the
/// old return rule could leave): exit 1, naming both blocks.
#[test]
fn audit_reports_the_overlap_in_a_store_seeded_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let spec = json!({"block_min": 1000, "block_max": 1000});
    put_namespace(c.addr, "dup", &spec);
    let (status, out) = audit(c.addr);
    assert_eq!(status, 0, "{out}");
    // A failure to read the grants is not a finding: exit 2, not 1.
    let refused = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["audit", "--coordinator", &format!("http://{}", c.addr)])
        .env("SHARDFLAKE_READ_TOKEN", "not-a-credential-of-it")
        .env_remove("SHARDFLAKE_READ_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert!(c.terminate().success());
    seed_overlap(&dir.path().join("coordinator.redb"));
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let (status, out) = audit(c.addr);
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("namespace dup"), "{out}");
    assert!(
        out.contains("block 1..1001 of host 0") && out.contains("block 1..1001 of host 1"),
        "{out}"
    );
}

/// Rewrites namespace `dup` as the review's reproduction left it: host 1 was granted 1..1001
/// again after host 0's 1..1001, and `next` is back at 1001.
fn seed_overlap(store: &Path) {
    use shardflake_coordinator::store::{KvStore, RedbOptions, RedbStore, Txn};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = RedbStore::open(store, RedbOptions::default()).unwrap();
        let v = s
            .get("ns/dup")
            .await
            .unwrap()
            .expect("the namespace is stored");
        let mut rec: shardflake_coordinator::NamespaceRecord =
            serde_json::from_slice(&v.value).unwrap();
        for host_id in [0, 1] {
            rec.recent.push(shardflake_coordinator::LoggedNsBlock {
                start: 1,
                end: 1001,
                host_id,
                token: u64::from(host_id) + 1,
                at_ms: 0,
            });
        }
        rec.next = 1001;
        let txn = Txn::new()
            .compare("ns/dup", v.version)
            .put("ns/dup", serde_json::to_vec(&rec).unwrap());
        s.txn(txn).await.unwrap();
        s.close().await;
    });
}

/// The audit trail logs each grant once, and a takeover names the token it took over from.
#[test]
fn the_audit_trail_logs_each_grant_once_and_names_a_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let c = Process::start(coordinator_command(dir.path(), &[], Some(TOKEN)));
    let secret = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    let first = json!({"name": "a", "ttl_ms": 200, "request_id": "a-1", "secret": secret});
    for _ in 0..2 {
        // The second is a retry whose answer was "lost": the same grant again.
        let (s, body) = http(c.addr, "POST", "/v1/leases", Some(TOKEN), Some(&first));
        assert_eq!(s, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(400));
    let take = json!({"name": "b", "host_id": 0, "secret": "6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f"});
    wait_until("the expired host id is taken over", || {
        http(c.addr, "POST", "/v1/leases", Some(TOKEN), Some(&take)).0 == 200
    });
    // The log arrives through a pipe: wait for the takeover's line.
    let granted = |log: &str| log.matches(r#""event":"lease_granted""#).count();
    wait_until("the takeover is in the audit trail", || {
        granted(&c.log()) >= 2
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = c.log();
    let grants: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""event":"lease_granted""#))
        .collect();
    assert_eq!(grants.len(), 2, "{log}");
    assert!(!grants[0].contains("previous_token"), "{}", grants[0]);
    assert!(grants[1].contains(r#""previous_token":1"#), "{}", grants[1]);
    assert!(
        grants[1].contains(r#""credential":"node#1""#),
        "{}",
        grants[1]
    );
    assert!(!log.contains(secret), "a secret in the log");
}
