//! A real `shardflake` process for the integration tests: started with piped stderr, its
//! address read from the `listening` log line, killed on drop so a failing test leaves no
//! process behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a process may take to report its listening address.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Spawns `c` (which must pipe stderr) and waits for its `listening` line.
    pub fn start(mut c: Command) -> Process {
        let mut child = c.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Text logs say `addr=HOST:PORT`, JSON logs `"addr":"HOST:PORT"`.
                if line.contains("listening") {
                    let addr = if let Some((_, rest)) = line.split_once(" addr=") {
                        rest.split_whitespace().next()
                    } else if let Some((_, rest)) = line.split_once("\"addr\":\"") {
                        rest.split('"').next()
                    } else {
                        None
                    };
                    if let Some(addr) = addr {
                        let _ = tx.send(addr.to_string());
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(START_DEADLINE) {
            Ok(a) => a.parse().expect("a socket address in the listening line"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the process did not report its address; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Process { child, addr, log }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status (within 30 s, else the test fails).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -TERM {}", self.pid());
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "no exit 30 s after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shardflake serve` standalone on 127.0.0.1 (any free port) with its state in `state_dir`
/// and `flags`; every variable the node reads that is not set here is scrubbed, so the
/// caller's environment never leaks in.
pub fn standalone_node(state_dir: &std::path::Path, flags: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardflake"));
    c.arg("serve")
        .args(["--bind", "127.0.0.1", "--port", "0", "--state-dir"])
        .arg(state_dir)
        .args(flags);
    for var in [
        "PORT",
        "MACHINE_ID",
        "DATACENTER_ID",
        "SHARDFLAKE_LAYOUT",
        "SHARDFLAKE_STATE_DIR",
        "SHARDFLAKE_CLOCK_POLICY",
        "SHARDFLAKE_LOG_FORMAT",
        "FAKETIME",
        "LD_PRELOAD",
    ]
    .into_iter()
    .chain(crate::cluster::CREDENTIAL_VARS)
    {
        c.env_remove(var);
    }
    c.env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}
