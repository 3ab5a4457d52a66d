//! An in-repo driver for `shardflake maelstrom-node`, applying the rules of Jepsen
//! Maelstrom's `unique-ids` checker (Maelstrom itself needs a JVM and its own download): it
//! starts several node processes, sends each `init`, then many `generate` requests from
//! several clients at once, and checks that every request is acknowledged with
//! `generate_ok` (total availability), that replies answer the right request, that stdout
//! carries only protocol messages, that the nodes exit 0 at the end of their input, and, with
//! `shardflake verify` (the one id checker), that no id is acknowledged twice.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const NODES: usize = 5;
const CLIENTS: usize = 4;
const REQUESTS_PER_CLIENT_AND_NODE: u64 = 5_000;

#[test]
fn maelstrom_unique_ids_workload_is_totally_available_without_duplicates() {
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let mut handles = Vec::new();
    // Every node starts generating at once, so their ids share milliseconds: a node field
    // that did not tell them apart would repeat ids.
    let start = std::sync::Arc::new(std::sync::Barrier::new(NODES));
    for name in &names {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardflake"))
            .arg("maelstrom-node")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the node starts");
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (node, names, start) = (name.clone(), names.clone(), start.clone());
        // One writer per node: init, then the clients' requests interleaved.
        let writer = std::thread::spawn(move || {
            let init = json!({"src": "c0", "dest": node, "body": {"type": "init", "msg_id": 0, "node_id": node, "node_ids": names}});
            writeln!(stdin, "{init}").unwrap();
            stdin.flush().unwrap();
            start.wait();
            for k in 0..REQUESTS_PER_CLIENT_AND_NODE {
                for c in 1..=CLIENTS {
                    let m = json!({"src": format!("c{c}"), "dest": node, "body": {"type": "generate", "msg_id": k + 1}});
                    writeln!(stdin, "{m}").unwrap();
                }
            }
            // Dropping stdin ends the node's input.
        });
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map(|l| l.unwrap())
                .collect::<Vec<String>>()
        });
        handles.push((name.clone(), child, writer, reader));
    }

    let mut ids: Vec<u64> = Vec::new();
    for (name, mut child, writer, reader) in handles {
        writer.join().unwrap();
        let lines = reader.join().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{name} exits 0 at the end of its input");
        let mut answered: HashMap<(String, u64), u32> = HashMap::new();
        let mut init_ok = false;
        for line in &lines {
            let m: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} wrote a non-JSON line ({e}): {line}"));
            assert_eq!(m["src"], name.as_str(), "{line}");
            let body = &m["body"];
            match body["type"].as_str() {
                Some("init_ok") => {
                    assert_eq!(m["dest"], "c0");
                    init_ok = true;
                }
                Some("generate_ok") => {
                    let client = m["dest"].as_str().unwrap().to_string();
                    let req = body["in_reply_to"].as_u64().expect("in_reply_to");
                    *answered.entry((client, req)).or_default() += 1;
                    ids.push(body["id"].as_u64().expect("a 64-bit id"));
                }
                _ => panic!("{name}: a request was not acknowledged: {line}"),
            }
        }
        assert!(init_ok, "{name} acknowledged init");
        // Total availability: every request answered once, with generate_ok.
        assert_eq!(
            answered.len() as u64,
            CLIENTS as u64 * REQUESTS_PER_CLIENT_AND_NODE,
            "{name}"
        );
        assert!(
            answered.values().all(|&n| n == 1),
            "{name}: a request answered twice"
        );
    }
    assert_eq!(
        ids.len() as u64,
        (NODES * CLIENTS) as u64 * REQUESTS_PER_CLIENT_AND_NODE
    );

    // No id acknowledged twice, by the same checker every other test uses.
    let mut verify = Command::new(env!("CARGO_BIN_EXE_shardflake"))
        .args(["verify", "--layout", "default"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = verify.stdin.take().unwrap();
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = verify.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "duplicates among {} ids: {}{}",
        ids.len(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "maelstrom unique-ids: {NODES} nodes, {} requests, all acknowledged, no duplicate",
        ids.len()
    );
}
