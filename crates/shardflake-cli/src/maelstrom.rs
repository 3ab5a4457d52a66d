//! `shardflake maelstrom-node`: a node for Maelstrom's `unique-ids` workload (Jepsen's
//! Maelstrom, <https://github.com/jepsen-io/maelstrom>), speaking its protocol on stdin and
//! stdout: one JSON message per line, `{"src", "dest", "body"}`.
//!
//! - `init` (`node_id`, `node_ids`) → `init_ok`. The node's host id is the position of its
//!   `node_id` in the sorted `node_ids`, so every node of the run has its own node field
//!   without talking to the others; a run with more nodes than the layout's node field holds
//!   is refused at `init`.
//! - `generate` → `generate_ok` with `id`: one id from the snowflake generator (64-bit, the
//!   default layout), whose uniqueness across nodes comes from the node field.
//! - Anything else gets an `error` body with Maelstrom's codes: 10 `not-supported` for an
//!   unknown type, 12 `malformed-request` for a message that does not parse or lacks a field,
//!   11 `temporarily-unavailable` for `generate` before `init` or when the clock policy
//!   refuses (the client may retry).
//!
//! Logs go to stderr only; the process exits 0 at the end of its input. Nothing is persisted:
//! Maelstrom's `unique-ids` workload does not restart nodes (the HTTP node is the restart-safe
//! service).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use shardflake::{ClockPolicy, Layout, SnowflakeGenerator};

/// Maelstrom's error codes (`maelstrom/doc/protocol.md`).
mod code {
    pub const TEMPORARILY_UNAVAILABLE: u64 = 11;
    pub const NOT_SUPPORTED: u64 = 10;
    pub const MALFORMED_REQUEST: u64 = 12;
}

/// How long `generate` may wait for a clock that stepped back (ms).
const CLOCK_WAIT_MS_MAX: u64 = 100;

/// Options of `shardflake maelstrom-node`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaelstromArgs {
    /// Layout of the ids: a 64-bit preset or spec with node fields.
    #[arg(long, default_value = "default")]
    pub layout: String,
}

/// One node's state: its Maelstrom name, the next message id, and the generator after `init`.
struct Node {
    layout: Layout,
    name: Option<String>,
    next_msg_id: u64,
    generator: Option<SnowflakeGenerator>,
}

impl Node {
    fn new(layout: Layout) -> Self {
        Self {
            layout,
            name: None,
            next_msg_id: 1,
            generator: None,
        }
    }

    /// The reply to one input line, if it deserves one.
    fn handle(&mut self, line: &str) -> Option<Value> {
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("maelstrom-node: dropping a line that is not JSON ({e}): {line}");
                return None;
            }
        };
        let src = msg["src"].as_str()?.to_string();
        let body = &msg["body"];
        let in_reply_to = body["msg_id"].as_u64();
        let reply_body = match body["type"].as_str() {
            Some("init") => self.init(body),
            Some("generate") => self.generate(),
            Some(other) => Err((
                code::NOT_SUPPORTED,
                format!("message type `{other}` is not supported (this node serves `unique-ids`)"),
            )),
            None => Err((
                code::MALFORMED_REQUEST,
                "the body has no `type` string".to_string(),
            )),
        };
        let mut reply_body = reply_body
            .unwrap_or_else(|(code, text)| json!({"type": "error", "code": code, "text": text}));
        if let Some(id) = in_reply_to {
            reply_body["in_reply_to"] = json!(id);
        }
        reply_body["msg_id"] = json!(self.next_msg_id);
        self.next_msg_id += 1;
        Some(json!({
            "src": self.name.clone().unwrap_or_default(),
            "dest": src,
            "body": reply_body,
        }))
    }

    fn init(&mut self, body: &Value) -> Result<Value, (u64, String)> {
        let malformed = |what: &str| (code::MALFORMED_REQUEST, what.to_string());
        let name = body["node_id"]
            .as_str()
            .ok_or_else(|| malformed("init needs a `node_id` string"))?;
        let mut names: Vec<&str> = body["node_ids"]
            .as_array()
            .ok_or_else(|| malformed("init needs a `node_ids` array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| malformed("`node_ids` holds strings"))
            })
            .collect::<Result<_, _>>()?;
        names.sort_unstable();
        names.dedup();
        let host = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| malformed("`node_id` is not in `node_ids`"))? as u64;
        let values = self.layout.node_values_of_host(host).map_err(|e| {
            (
                code::MALFORMED_REQUEST,
                format!(
                    "{} nodes do not fit the layout's node fields ({} bits): {e}",
                    names.len(),
                    self.layout.host_id_bits()
                ),
            )
        })?;
        let mut builder =
            SnowflakeGenerator::builder(self.layout.clone()).policy(ClockPolicy::Wait {
                max_wait_ms: CLOCK_WAIT_MS_MAX,
            });
        for (field, value) in &values {
            builder = builder.node(field, *value);
        }
        let generator = builder
            .build()
            .map_err(|e| (code::TEMPORARILY_UNAVAILABLE, e.to_string()))?;
        eprintln!("maelstrom-node: {name} is host {host} of {}", names.len());
        self.name = Some(name.to_string());
        self.generator = Some(generator);
        Ok(json!({"type": "init_ok"}))
    }

    fn generate(&mut self) -> Result<Value, (u64, String)> {
        let g = self.generator.as_ref().ok_or_else(|| {
            (
                code::TEMPORARILY_UNAVAILABLE,
                "generate before init".to_string(),
            )
        })?;
        let id = g
            .next_id()
            .map_err(|e| (code::TEMPORARILY_UNAVAILABLE, e.to_string()))?;
        Ok(json!({"type": "generate_ok", "id": id}))
    }
}

/// Runs `shardflake maelstrom-node` until the end of stdin.
pub fn run(args: MaelstromArgs) -> Result<ExitCode> {
    let layout = Layout::from_spec(&args.layout)?;
    let mut node = Node::new(layout);
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(reply) = node.handle(&line) {
            serde_json::to_writer(&mut stdout, &reply).context("writing stdout")?;
            stdout.write_all(b"\n").context("writing stdout")?;
            stdout.flush().context("writing stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node::new(Layout::preset("default").unwrap())
    }

    fn init(n: &mut Node, id: &str, ids: &[&str]) -> Value {
        let m = json!({"src": "c0", "dest": id, "body": {"type": "init", "msg_id": 1, "node_id": id, "node_ids": ids}});
        n.handle(&m.to_string()).unwrap()
    }

    #[test]
    fn init_then_generate_answers_in_reply_to() {
        let mut n = node();
        let r = init(&mut n, "n2", &["n1", "n2", "n3"]);
        assert_eq!(r["body"]["type"], "init_ok");
        assert_eq!(r["body"]["in_reply_to"], 1);
        assert_eq!(r["src"], "n2");
        assert_eq!(r["dest"], "c0");
        let g = json!({"src": "c1", "dest": "n2", "body": {"type": "generate", "msg_id": 7}});
        let a = n.handle(&g.to_string()).unwrap();
        let b = n.handle(&g.to_string()).unwrap();
        assert_eq!(a["body"]["type"], "generate_ok");
        assert_eq!(a["body"]["in_reply_to"], 7);
        assert_eq!(a["dest"], "c1");
        assert_ne!(a["body"]["id"], b["body"]["id"]);
        assert_ne!(a["body"]["msg_id"], b["body"]["msg_id"]);
        // Host 1 of the sorted names.
        let id = a["body"]["id"].as_u64().unwrap();
        let layout = Layout::preset("default").unwrap();
        let d = layout.decode(id).unwrap();
        let host: u64 = layout
            .node_fields()
            .map(|f| d.field(f.name()).unwrap())
            .sum();
        assert_eq!(host, 1);
    }

    #[test]
    fn errors_carry_maelstrom_codes() {
        let mut n = node();
        let early = json!({"src": "c1", "dest": "n1", "body": {"type": "generate", "msg_id": 1}});
        let r = n.handle(&early.to_string()).unwrap();
        assert_eq!(r["body"]["type"], "error");
        assert_eq!(r["body"]["code"], code::TEMPORARILY_UNAVAILABLE);
        init(&mut n, "n1", &["n1"]);
        let unknown = json!({"src": "c1", "dest": "n1", "body": {"type": "echo", "msg_id": 2}});
        let r = n.handle(&unknown.to_string()).unwrap();
        assert_eq!(r["body"]["code"], code::NOT_SUPPORTED);
        assert_eq!(r["body"]["in_reply_to"], 2);
        let untyped = json!({"src": "c1", "dest": "n1", "body": {"msg_id": 3}});
        assert_eq!(
            n.handle(&untyped.to_string()).unwrap()["body"]["code"],
            code::MALFORMED_REQUEST
        );
        let bad_init = json!({"src": "c0", "dest": "n1", "body": {"type": "init", "msg_id": 4, "node_id": "n9", "node_ids": ["n1"]}});
        assert_eq!(
            n.handle(&bad_init.to_string()).unwrap()["body"]["code"],
            code::MALFORMED_REQUEST
        );
        assert!(n.handle("not json").is_none());
    }

    #[test]
    fn more_nodes_than_the_node_field_holds_are_refused() {
        let mut n = Node::new(
            Layout::from_spec("uidgenerator:timestamp=30,worker=2,epoch=2025-01-01").unwrap(),
        );
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = init(&mut n, "n4", &names);
        assert_eq!(r["body"]["code"], code::MALFORMED_REQUEST, "{r}");
        assert!(
            r["body"]["text"].as_str().unwrap().contains("do not fit"),
            "{r}"
        );
    }
}
