//! `shardflake serve`: the flags and environment variables of the generator node, parsed into
//! [`NodeOptions`] and validated by [`NodeConfig::from_options`]; logging, the runtime and
//! the signals around `shardflake_node::run`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use shardflake::{Clock, SystemClock};
use shardflake_node::{
    ClockPolicyKind, NodeConfig, NodeOptions, MAX_CONNECTIONS_DEFAULT, PORT_DEFAULT,
    STATE_DIR_DEFAULT,
};

use shardflake_proto::auth::NODE_TOKEN_ENV;

use crate::security::{
    client_credentials, env_value, legacy_token_set, ClientTlsArgs, ServerTlsArgs,
};
use crate::service::{init_logging, runtime, shutdown_signal, LogFormat};

/// `shardflake serve`: flags, each with its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TCP port to listen on (0: any free port; the `listening` log line names it).
    #[arg(long, env = "PORT", default_value_t = PORT_DEFAULT)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "SHARDFLAKE_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Machine id: sets the layout's least significant node field (twitter: `worker`;
    /// discord: `process`; default: `node`; instagram: `shard`; sonyflake: `machine`;
    /// uidgenerator: `worker`; temporal: `host`). 0 when unset.
    #[arg(long, env = "MACHINE_ID")]
    pub machine_id: Option<u64>,

    /// Datacenter id: sets the node field above the machine field in layouts with two
    /// (twitter: `datacenter`; discord: `worker`). 0 when unset; layouts with one node field
    /// reject a non-zero value.
    #[arg(long, env = "DATACENTER_ID")]
    pub datacenter_id: Option<u64>,

    /// Id layout: a preset (default, twitter, discord, instagram, sonyflake, sonyflake-v2,
    /// uidgenerator, temporal, js-safe) or a spec with overrides (`temporal:granularity=5s`).
    /// Standalone default: twitter. In cluster mode the coordinators' layout is served; a
    /// layout given here must be the same, or the node refuses to start.
    #[arg(long, env = "SHARDFLAKE_LAYOUT")]
    pub layout: Option<String>,

    /// Temporal layout only: length of a time shard (e.g. `1h`, `30m`, `1m`); the same as
    /// adding `granularity=` to the layout spec.
    #[arg(long, env = "SHARDFLAKE_SHARD_GRANULARITY")]
    pub shard_granularity: Option<String>,

    /// Directory of the state file that makes restarts safe; one file per layout and node id.
    #[arg(long, env = "SHARDFLAKE_STATE_DIR", default_value = STATE_DIR_DEFAULT)]
    pub state_dir: PathBuf,

    /// What to do when the wall clock is behind the issued or reserved bound.
    #[arg(long, env = "SHARDFLAKE_CLOCK_POLICY", value_enum, default_value_t = ClockPolicyArg::Wait)]
    pub clock_policy: ClockPolicyArg,

    /// `--clock-policy wait`: the longest a request waits for the clock (default 100ms, at
    /// most 1s). Larger steps answer 503 `clock_behind` at once.
    #[arg(long, env = "SHARDFLAKE_CLOCK_WAIT_MAX", value_parser = humantime::parse_duration)]
    pub clock_wait_max: Option<Duration>,

    /// `--clock-policy borrow`: how far ahead of the wall clock issued timestamps may run
    /// (default 1s, at most 24h).
    #[arg(long, env = "SHARDFLAKE_BORROW_AHEAD_MAX", value_parser = humantime::parse_duration)]
    pub borrow_ahead_max: Option<Duration>,

    /// Open connections at most; further clients wait in the kernel's accept queue.
    #[arg(long, env = "SHARDFLAKE_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS_DEFAULT)]
    pub max_connections: usize,

    /// Log format on stderr; the filter comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "SHARDFLAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Cluster mode: coordinator URLs, comma-separated (`http://10.0.0.1:7070,...`), all of
    /// one store. The node leases its node id from them instead of taking MACHINE_ID and
    /// DATACENTER_ID.
    #[arg(long, env = "SHARDFLAKE_COORDINATOR")]
    pub coordinator: Option<String>,

    /// Cluster mode: start as a standby that takes over the node id of a failed node.
    #[arg(long, env = "SHARDFLAKE_STANDBY")]
    pub standby: bool,

    /// Cluster mode: the lease's time to live (100ms..10m, within the coordinators' range).
    // The default is LEASE_TTL_MS_DEFAULT, written as clap shows it (a test checks they agree).
    #[arg(long, env = "SHARDFLAKE_LEASE_TTL", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub lease_ttl: Duration,

    /// Cluster mode: a file whose first line is the node credential sent to the
    /// coordinators (re-read when it changes); else SHARDFLAKE_NODE_TOKEN.
    #[arg(long, env = "SHARDFLAKE_NODE_TOKEN_FILE")]
    pub node_token_file: Option<PathBuf>,

    /// Require a client credential on the id endpoints: a file of accepted tokens, one per
    /// line (`TOKEN` or `NAME TOKEN`; two while rotating), reloaded on SIGHUP and change.
    /// SHARDFLAKE_CLIENT_TOKEN adds one (or two, comma-separated).
    #[arg(long, env = "SHARDFLAKE_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,

    /// Ids per second per client on the id endpoints (per client credential, else per peer
    /// address), a second's worth at once; over it `429 rate_limited` with Retry-After.
    /// 0: no limit.
    #[arg(long, env = "SHARDFLAKE_CLIENT_IDS_PER_SECOND", default_value_t = 0)]
    pub client_ids_per_second: u64,

    #[command(flatten)]
    pub tls: ServerTlsArgs,

    /// How the node verifies its coordinators (`https://`) and the certificate it shows them.
    #[command(flatten)]
    pub coordinator_tls: ClientTlsArgs,

    /// Cluster mode: where clients reach this node (published in the coordinators' routing
    /// table for namespaces); default http:// and the listening address.
    #[arg(long, env = "SHARDFLAKE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
}

/// `--clock-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClockPolicyArg {
    /// Answer 503 `clock_behind` whenever the clock is behind.
    Fail,
    /// Wait (asynchronously, parking no thread) up to `--clock-wait-max`, then 503.
    Wait,
    /// Issue on a logical clock up to `--borrow-ahead-max` ahead of the wall clock.
    Borrow,
}

impl ServeArgs {
    /// The node's options, unvalidated.
    pub fn options(&self) -> NodeOptions {
        NodeOptions {
            port: self.port,
            bind: self.bind,
            machine_id: self.machine_id,
            datacenter_id: self.datacenter_id,
            layout: self.layout.clone(),
            shard_granularity: self.shard_granularity.clone(),
            state_dir: self.state_dir.clone(),
            clock_policy: match self.clock_policy {
                ClockPolicyArg::Fail => ClockPolicyKind::Fail,
                ClockPolicyArg::Wait => ClockPolicyKind::Wait,
                ClockPolicyArg::Borrow => ClockPolicyKind::Borrow,
            },
            clock_wait_max: self.clock_wait_max,
            borrow_ahead_max: self.borrow_ahead_max,
            max_connections: self.max_connections,
            coordinator: self.coordinator.clone(),
            standby: self.standby,
            lease_ttl: self.lease_ttl,
            node_token: env_value(NODE_TOKEN_ENV),
            node_token_file: self.node_token_file.clone(),
            legacy_cluster_token: legacy_token_set(),
            advertise_url: self.advertise_url.clone(),
            tls: self.tls.files(),
            coordinator_tls: self.coordinator_tls.files(),
            client_credentials: client_credentials(self.client_token_file.as_ref()),
            client_ids_per_second: self.client_ids_per_second,
        }
    }
}

/// Runs `shardflake serve`: validates the flags, sets up logging and a multi-threaded
/// runtime, listens, and serves until SIGTERM or SIGINT, then shuts down cleanly.
pub fn run(args: ServeArgs) -> Result<()> {
    let config = NodeConfig::from_options(&args.options(), SystemClock.now_ms())?;
    init_logging(args.log_format)?;
    runtime("shardflake-node")?.block_on(async move {
        let addr: SocketAddr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        shardflake_node::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shardflake::Layout;
    use shardflake_node::{ConfigError, NodeClockPolicy, NodeConfig};
    use std::path::PathBuf;

    const NOW_MS: u64 = 1_790_000_000_000;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<NodeConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse");
        NodeConfig::from_options(&cli.serve.options(), NOW_MS)
    }

    #[test]
    fn defaults_are_the_seed_service() {
        let c = NodeConfig::from_options(&NodeOptions::default(), NOW_MS).unwrap();
        let parsed = Cli::try_parse_from(["serve"]).unwrap().serve;
        assert_eq!(
            parsed.lease_ttl,
            Duration::from_millis(shardflake_node::LEASE_TTL_MS_DEFAULT)
        );
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.layout.as_ref().unwrap().name(), "twitter");
        assert_eq!(c.node_label(), "datacenter0-worker0");
        assert_eq!(c.clock_policy, NodeClockPolicy::Wait { max_wait_ms: 100 });
        assert_eq!(c.state_dir, PathBuf::from("./shardflake-data"));
    }

    #[test]
    fn node_ids_map_onto_every_preset() {
        let c = parse(&["--machine-id", "31", "--datacenter-id", "2"]).unwrap();
        assert_eq!(c.node_values(), [("datacenter", 2), ("worker", 31)]);
        let c = parse(&[
            "--layout",
            "discord",
            "--machine-id",
            "4",
            "--datacenter-id",
            "3",
        ])
        .unwrap();
        assert_eq!(c.node_values(), [("worker", 3), ("process", 4)]);
        for (layout, field, max) in [
            ("default", "node", 1023),
            ("instagram", "shard", 8191),
            ("sonyflake", "machine", 65535),
            ("sonyflake-v2", "machine", 65535),
            ("temporal", "host", 1023),
            ("js-safe", "node", 63),
        ] {
            let c = parse(&["--layout", layout, "--machine-id", &max.to_string()]).unwrap();
            assert_eq!(c.node_values(), [(field, max)], "{layout}");
            let e =
                parse(&["--layout", layout, "--machine-id", &(max + 1).to_string()]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "MACHINE_ID={} is out of range 0..={max} for layout {layout} (field {field})",
                    max + 1
                )
            );
        }
    }

    #[test]
    fn out_of_range_ids_name_the_variable_and_range() {
        let e = parse(&["--machine-id", "40"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MACHINE_ID=40 is out of range 0..=31 for layout twitter (field worker)"
        );
        let e = parse(&["--datacenter-id", "32"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DATACENTER_ID=32 is out of range 0..=31 for layout twitter (field datacenter)"
        );
        let e = parse(&["--layout", "default", "--datacenter-id", "1"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("DATACENTER_ID=1 is not used by layout default"),
            "{e}"
        );
        // Zero is what "unset" means, so it is accepted for one-field layouts.
        assert!(parse(&["--layout", "default", "--datacenter-id", "0"]).is_ok());
    }

    #[test]
    fn flags_are_checked() {
        let e = parse(&["--layout", "snowflak"]).unwrap_err();
        assert!(e.to_string().contains("unknown layout `snowflak`"), "{e}");
        let e = parse(&["--clock-wait-max", "5s"]).unwrap_err();
        assert!(e.to_string().contains("out of range 0..=1000"), "{e}");
        let e = parse(&[
            "--clock-policy",
            "borrow",
            "--borrow-ahead-max",
            "86400001ms",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("out of range 1..=86400000"), "{e}");
        let e = parse(&["--borrow-ahead-max", "10ms"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("only applies with --clock-policy borrow"),
            "{e}"
        );
        let e = parse(&["--clock-policy", "fail", "--clock-wait-max", "10ms"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("only applies with --clock-policy wait"),
            "{e}"
        );
        let e = parse(&["--shard-granularity", "1m"]).unwrap_err();
        assert!(e.to_string().contains("temporal layouts only"), "{e}");
        let e = parse(&["--layout", "temporal", "--shard-granularity", "10ms"]).unwrap_err();
        assert!(
            e.to_string().contains("below the minimum of 1000 ms"),
            "{e}"
        );
        let e = parse(&["--layout", "temporal", "--shard-granularity", "soon"]).unwrap_err();
        assert!(e.to_string().contains("granularity `soon`"), "{e}");
        let e = parse(&["--max-connections", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-connections"), "{e}");
        let c = parse(&["--clock-policy", "borrow", "--borrow-ahead-max", "1h"]).unwrap();
        assert_eq!(
            c.clock_policy,
            NodeClockPolicy::Borrow {
                borrow_ahead_ms_max: 3_600_000
            }
        );
    }

    #[test]
    fn expired_layouts_are_refused_with_their_overflow_date() {
        // UidGenerator's 28 bits of seconds since 2016-05-20 ran out in 2024.
        let e = parse(&["--layout", "uidgenerator"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("layout uidgenerator:") && e.contains("overflowed on 2024-"),
            "{e}"
        );
        // Temporal widths follow the granularity, so short shards still last for decades.
        let c = parse(&["--layout", "temporal", "--shard-granularity", "1s"]).unwrap();
        assert!(c.layout.unwrap().overflow_ms() > NOW_MS + 10 * 365 * 86_400_000);
        assert!(parse(&["--layout", "temporal", "--shard-granularity", "30m"]).is_ok());
    }

    #[test]
    fn cluster_flags_replace_the_node_id_flags() {
        let c = parse(&[
            "--coordinator",
            "http://a:7070, http://b:7070",
            "--standby",
            "--lease-ttl",
            "2s",
        ])
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.urls, ["http://a:7070", "http://b:7070"]);
        assert!(cluster.standby);
        assert_eq!(cluster.lease_ttl_ms, 2000);
        let e = parse(&["--coordinator", "http://a:7070", "--machine-id", "3"]).unwrap_err();
        assert!(
            e.to_string().contains("MACHINE_ID and DATACENTER_ID"),
            "{e}"
        );
        let e = parse(&["--standby"]).unwrap_err();
        assert!(e.to_string().starts_with("--standby"), "{e}");
        let e = parse(&["--coordinator", "http://a:7070", "--lease-ttl", "5ms"]).unwrap_err();
        assert!(e.to_string().contains("--lease-ttl"), "{e}");
        assert!(parse(&[]).unwrap().cluster.is_none());
        // In cluster mode the layout is the coordinators' unless one is given.
        assert!(parse(&["--coordinator", "http://a:7070"])
            .unwrap()
            .layout
            .is_none());
        let given = parse(&["--coordinator", "http://a:7070", "--layout", "discord"]).unwrap();
        assert_eq!(given.layout.unwrap().name(), "discord");
        let temporal = parse(&[
            "--coordinator",
            "http://a:7070",
            "--shard-granularity",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            temporal.layout.unwrap(),
            Layout::from_spec("temporal:granularity=5s").unwrap()
        );
    }

    #[test]
    fn port_out_of_range_is_a_parse_error() {
        let e = Cli::try_parse_from(["serve", "--port", "70000"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("70000") && e.contains("--port"), "{e}");
    }
}
