//! Command-line flags and environment variables, parsed once into a validated [`NodeConfig`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use shardflake::{format_rfc3339_ms, Layout, LayoutError, NodeId};
use thiserror::Error;

/// The default HTTP port (the seed README's).
pub const PORT_DEFAULT: u16 = 8080;
/// The default state directory.
pub const STATE_DIR_DEFAULT: &str = "./shardflake-data";
/// The longest a request may wait, asynchronously, for a clock that stepped back
/// (`--clock-wait-ms-max`): kept well below the request timeout.
pub const CLOCK_WAIT_MS_MAX_LIMIT: u64 = 1_000;
/// The default `--clock-wait-ms-max`.
pub const CLOCK_WAIT_MS_MAX_DEFAULT: u64 = 100;
/// The largest `--borrow-ahead-ms-max`: 24 hours. Ids issued while borrowing carry
/// timestamps up to this far in the future, which their users' clocks may notice.
pub const BORROW_AHEAD_MS_MAX_LIMIT: u64 = 24 * 3_600_000;
/// The default `--borrow-ahead-ms-max` when `--clock-policy borrow` is given without it.
pub const BORROW_AHEAD_MS_MAX_DEFAULT: u64 = 1_000;
/// The default `--max-connections`.
pub const MAX_CONNECTIONS_DEFAULT: usize = 4_096;
/// The largest `--max-connections`.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// The default lease TTL in cluster mode (`--lease-ttl-ms`).
pub const LEASE_TTL_MS_DEFAULT: u64 = 10_000;
/// Shortest `--lease-ttl-ms`.
pub const LEASE_TTL_MS_MIN: u64 = 100;
/// Longest `--lease-ttl-ms`.
pub const LEASE_TTL_MS_MAX: u64 = 600_000;
/// The layout of a standalone node started without `--layout`.
pub const LAYOUT_DEFAULT: &str = "twitter";

/// `shardflake serve`: flags, each with its environment variable.
#[derive(Debug, Clone, Args)]
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
    /// uidgenerator, temporal) or a spec with overrides (`temporal:granularity=5s`).
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

    /// `--clock-policy wait`: the longest a request waits for the clock, in ms
    /// (default 100, at most 1000). Larger steps answer 503 `clock_behind` at once.
    #[arg(long, env = "SHARDFLAKE_CLOCK_WAIT_MS_MAX")]
    pub clock_wait_ms_max: Option<u64>,

    /// `--clock-policy borrow`: how far ahead of the wall clock issued timestamps may run,
    /// in ms (default 1000, at most 86400000 = 24 h).
    #[arg(long, env = "SHARDFLAKE_BORROW_AHEAD_MS_MAX")]
    pub borrow_ahead_ms_max: Option<u64>,

    /// Open connections at most; further clients wait in the kernel's accept queue.
    #[arg(long, env = "SHARDFLAKE_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS_DEFAULT)]
    pub max_connections: usize,

    /// Log format on stderr; the filter comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "SHARDFLAKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Cluster mode: coordinator URLs, comma-separated (`http://10.0.0.1:7070,...`). The node
    /// leases its node id from them instead of taking MACHINE_ID and DATACENTER_ID.
    #[arg(long, env = "SHARDFLAKE_COORDINATOR")]
    pub coordinator: Option<String>,

    /// Cluster mode: start as a standby that takes over the node id of a failed node.
    #[arg(long, env = "SHARDFLAKE_STANDBY")]
    pub standby: bool,

    /// Cluster mode: the lease's time to live, in ms.
    #[arg(long, env = "SHARDFLAKE_LEASE_TTL_MS", default_value_t = LEASE_TTL_MS_DEFAULT)]
    pub lease_ttl_ms: u64,

    /// Cluster mode: the cluster token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "SHARDFLAKE_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

impl Default for ServeArgs {
    /// The flags' defaults, as `shardflake serve` with no arguments and no environment.
    fn default() -> Self {
        Self {
            port: PORT_DEFAULT,
            bind: IpAddr::from([0, 0, 0, 0]),
            machine_id: None,
            datacenter_id: None,
            layout: None,
            shard_granularity: None,
            state_dir: PathBuf::from(STATE_DIR_DEFAULT),
            clock_policy: ClockPolicyArg::Wait,
            clock_wait_ms_max: None,
            borrow_ahead_ms_max: None,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            log_format: LogFormat::Text,
            coordinator: None,
            standby: false,
            lease_ttl_ms: LEASE_TTL_MS_DEFAULT,
            cluster_token: None,
        }
    }
}

/// `--clock-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockPolicyArg {
    /// Answer 503 `clock_behind` whenever the clock is behind.
    Fail,
    /// Wait (asynchronously, parking no thread) up to `--clock-wait-ms-max`, then 503.
    Wait,
    /// Issue on a logical clock up to `--borrow-ahead-ms-max` ahead of the wall clock.
    Borrow,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The node's clock policy, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeClockPolicy {
    /// Fail at once while the clock is behind.
    Fail,
    /// Wait asynchronously for a clock at most `max_wait_ms` behind.
    Wait {
        /// The longest wait.
        max_wait_ms: u64,
    },
    /// Issue ahead of the wall clock by at most `borrow_ahead_ms_max`.
    Borrow {
        /// The bound.
        borrow_ahead_ms_max: u64,
    },
}

impl NodeClockPolicy {
    /// How far the clock may be behind the bound while the node still counts as ready.
    pub fn tolerated_behind_ms(self) -> u64 {
        match self {
            NodeClockPolicy::Fail => 0,
            NodeClockPolicy::Wait { max_wait_ms } => max_wait_ms,
            NodeClockPolicy::Borrow {
                borrow_ahead_ms_max,
            } => borrow_ahead_ms_max,
        }
    }
}

impl fmt::Display for NodeClockPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeClockPolicy::Fail => write!(f, "fail"),
            NodeClockPolicy::Wait { max_wait_ms } => write!(f, "wait (up to {max_wait_ms} ms)"),
            NodeClockPolicy::Borrow {
                borrow_ahead_ms_max,
            } => write!(f, "borrow (up to {borrow_ahead_ms_max} ms ahead)"),
        }
    }
}

/// A node field and the value given for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeField {
    /// The layout's field name (`worker`, `datacenter`, `host`...).
    pub field: String,
    /// The environment variable it comes from (`MACHINE_ID` or `DATACENTER_ID`).
    pub var: &'static str,
    /// The value.
    pub value: u64,
    /// Whether the value was given (false: the default 0).
    pub given: bool,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The id layout; `None` only in cluster mode without `--layout`, where the node serves
    /// the coordinators' layout.
    pub layout: Option<Layout>,
    /// The node field values, most significant first.
    pub node: Vec<NodeField>,
    /// Directory of the state file.
    pub state_dir: PathBuf,
    /// The clock policy.
    pub clock_policy: NodeClockPolicy,
    /// Open connections at most.
    pub max_connections: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Cluster mode: how to reach the coordinators (`None`: standalone).
    pub cluster: Option<ClusterConfig>,
}

/// Cluster mode: the node id is leased from coordinators.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Coordinator base URLs.
    pub urls: Vec<String>,
    /// The cluster token.
    pub token: Option<String>,
    /// Start as a standby.
    pub standby: bool,
    /// Lease TTL, ms.
    pub lease_ttl_ms: u64,
}

/// A flag or environment variable with a value the node cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A node id does not fit its layout field.
    #[error("{var}={value} is out of range 0..={max} for layout {layout} (field {field})")]
    NodeIdOutOfRange {
        /// `MACHINE_ID` or `DATACENTER_ID`.
        var: &'static str,
        /// The value given.
        value: u64,
        /// The largest value the field holds.
        max: u64,
        /// The layout's name.
        layout: String,
        /// The field's name.
        field: String,
    },
    /// A node id was given for a layout that has no field for it.
    #[error("{var}={value} is not used by layout {layout}, whose only node field `{field}` comes from MACHINE_ID; leave {var} unset or 0")]
    NodeIdUnused {
        /// The variable.
        var: &'static str,
        /// The value given.
        value: u64,
        /// The layout's name.
        layout: String,
        /// The layout's node field.
        field: String,
    },
    /// The layout is unknown or invalid.
    #[error("--layout {layout}: {source}")]
    Layout {
        /// The name given.
        layout: String,
        /// Why it is not usable.
        source: LayoutError,
    },
    /// The layout's timestamp field can no longer hold the current time.
    #[error("layout {layout} overflowed on {overflowed_at}: its timestamp field cannot hold the current time {now}")]
    LayoutExpired {
        /// The layout's spec.
        layout: String,
        /// When it overflowed.
        overflowed_at: String,
        /// The clock now.
        now: String,
    },
    /// A numeric flag is outside its range.
    #[error("{flag}={value} is out of range {min}..={max}")]
    OutOfRange {
        /// The flag (and its variable).
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A flag that only applies with another setting.
    #[error("{flag} only applies {when}")]
    NotApplicable {
        /// The flag.
        flag: &'static str,
        /// When it applies.
        when: &'static str,
    },
    /// A duration that does not parse.
    #[error("{flag}: `{value}` is not a duration (e.g. 1h, 30m, 90s): {reason}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// The text given.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
}

impl NodeConfig {
    /// Validates `args` against the layout and every limit; `now_ms` is the wall clock, to
    /// reject layouts whose timestamp field has already overflowed.
    pub fn from_args(args: &ServeArgs, now_ms: u64) -> Result<NodeConfig, ConfigError> {
        let cluster = cluster_from_args(args)?;
        let spec = match (&args.layout, &cluster) {
            (Some(spec), _) => Some(spec.as_str()),
            // Cluster mode: the coordinators' layout, unless a granularity says temporal.
            (None, Some(_)) if args.shard_granularity.is_none() => None,
            (None, Some(_)) => Some("temporal"),
            (None, None) => Some(LAYOUT_DEFAULT),
        };
        let layout = spec
            .map(|spec| layout_from_args(spec, args.shard_granularity.as_deref(), now_ms))
            .transpose()?;
        let node = match (&layout, &cluster) {
            // The coordinator leases the node id; the fields are set per lease.
            (_, Some(_)) | (None, _) => Vec::new(),
            (Some(layout), None) => node_fields(layout, args.machine_id, args.datacenter_id)?,
        };
        let clock_policy = clock_policy_from_args(args)?;
        if args.max_connections == 0 || args.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(ConfigError::OutOfRange {
                flag: "--max-connections (SHARDFLAKE_MAX_CONNECTIONS)",
                value: args.max_connections as u64,
                min: 1,
                max: MAX_CONNECTIONS_LIMIT as u64,
            });
        }
        Ok(NodeConfig {
            listen: SocketAddr::new(args.bind, args.port),
            layout,
            node,
            state_dir: args.state_dir.clone(),
            clock_policy,
            max_connections: args.max_connections,
            log_format: args.log_format,
            cluster,
        })
    }

    /// The node field values as `(field, value)` pairs for the generator builders.
    pub fn node_values(&self) -> Vec<(&str, u64)> {
        self.node
            .iter()
            .map(|n| (n.field.as_str(), n.value))
            .collect()
    }

    /// The node id as it appears in file names and logs: `datacenter1-worker3`
    /// (`leased` in cluster mode).
    pub fn node_label(&self) -> String {
        if self.cluster.is_some() {
            return "leased".into();
        }
        self.node
            .iter()
            .map(|n| format!("{}{}", n.field, n.value))
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The layout's spec, or `(the coordinators')` in cluster mode without `--layout`.
    pub fn layout_label(&self) -> String {
        self.layout
            .as_ref()
            .map_or_else(|| "(the coordinators')".into(), Layout::spec)
    }
}

fn cluster_from_args(args: &ServeArgs) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(list) = &args.coordinator else {
        if args.standby {
            return Err(ConfigError::NotApplicable {
                flag: "--standby (SHARDFLAKE_STANDBY)",
                when: "with --coordinator",
            });
        }
        return Ok(None);
    };
    if args.machine_id.is_some() || args.datacenter_id.is_some() {
        return Err(ConfigError::NotApplicable {
            flag: "MACHINE_ID and DATACENTER_ID",
            when: "without --coordinator (in cluster mode the coordinator leases the node id)",
        });
    }
    if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(&args.lease_ttl_ms) {
        return Err(ConfigError::OutOfRange {
            flag: "--lease-ttl-ms (SHARDFLAKE_LEASE_TTL_MS)",
            value: args.lease_ttl_ms,
            min: LEASE_TTL_MS_MIN,
            max: LEASE_TTL_MS_MAX,
        });
    }
    Ok(Some(ClusterConfig {
        urls: list
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        token: args.cluster_token.clone().filter(|t| !t.is_empty()),
        standby: args.standby,
        lease_ttl_ms: args.lease_ttl_ms,
    }))
}

fn layout_from_args(
    spec: &str,
    granularity: Option<&str>,
    now_ms: u64,
) -> Result<Layout, ConfigError> {
    let layout = Layout::from_spec_and_granularity(spec, granularity).map_err(|source| {
        ConfigError::Layout {
            layout: match granularity {
                Some(g) => format!("{spec} --shard-granularity {g}"),
                None => spec.to_string(),
            },
            source,
        }
    })?;
    if now_ms >= layout.overflow_ms() {
        return Err(ConfigError::LayoutExpired {
            layout: layout.spec(),
            overflowed_at: layout.overflow_time(),
            now: format_rfc3339_ms(now_ms),
        });
    }
    Ok(layout)
}

/// Maps `MACHINE_ID` and `DATACENTER_ID` onto the layout's node fields with the layout's own
/// mapping ([`Layout::node_values_from_ids`]), the one every command uses.
fn node_fields(
    layout: &Layout,
    machine_id: Option<u64>,
    datacenter_id: Option<u64>,
) -> Result<Vec<NodeField>, ConfigError> {
    let values = layout
        .node_values_from_ids(machine_id, datacenter_id)
        .map_err(|e| match e {
            LayoutError::NodeIdOutOfRange {
                id,
                value,
                max,
                layout,
                field,
            } => ConfigError::NodeIdOutOfRange {
                var: id.env_var(),
                value,
                max,
                layout,
                field,
            },
            LayoutError::NodeIdUnused {
                id,
                value,
                layout,
                field,
            } => ConfigError::NodeIdUnused {
                var: id.env_var(),
                value,
                layout,
                field,
            },
            source => ConfigError::Layout {
                layout: layout.name().to_string(),
                source,
            },
        })?;
    let machine = layout.machine_field().map(|f| f.name().to_string());
    Ok(values
        .into_iter()
        .map(|(field, value)| {
            let is_machine = machine.as_deref() == Some(field.as_str());
            let (id, given) = if is_machine {
                (NodeId::Machine, machine_id.is_some())
            } else {
                (NodeId::Datacenter, datacenter_id.is_some())
            };
            NodeField {
                field,
                var: id.env_var(),
                value,
                given,
            }
        })
        .collect())
}

fn clock_policy_from_args(args: &ServeArgs) -> Result<NodeClockPolicy, ConfigError> {
    match args.clock_policy {
        ClockPolicyArg::Fail | ClockPolicyArg::Borrow if args.clock_wait_ms_max.is_some() => {
            Err(ConfigError::NotApplicable {
                flag: "--clock-wait-ms-max (SHARDFLAKE_CLOCK_WAIT_MS_MAX)",
                when: "with --clock-policy wait",
            })
        }
        ClockPolicyArg::Fail | ClockPolicyArg::Wait if args.borrow_ahead_ms_max.is_some() => {
            Err(ConfigError::NotApplicable {
                flag: "--borrow-ahead-ms-max (SHARDFLAKE_BORROW_AHEAD_MS_MAX)",
                when: "with --clock-policy borrow",
            })
        }
        ClockPolicyArg::Fail => Ok(NodeClockPolicy::Fail),
        ClockPolicyArg::Wait => {
            let max_wait_ms = args.clock_wait_ms_max.unwrap_or(CLOCK_WAIT_MS_MAX_DEFAULT);
            if max_wait_ms > CLOCK_WAIT_MS_MAX_LIMIT {
                return Err(ConfigError::OutOfRange {
                    flag: "--clock-wait-ms-max (SHARDFLAKE_CLOCK_WAIT_MS_MAX)",
                    value: max_wait_ms,
                    min: 0,
                    max: CLOCK_WAIT_MS_MAX_LIMIT,
                });
            }
            Ok(NodeClockPolicy::Wait { max_wait_ms })
        }
        ClockPolicyArg::Borrow => {
            let borrow_ahead_ms_max = args
                .borrow_ahead_ms_max
                .unwrap_or(BORROW_AHEAD_MS_MAX_DEFAULT);
            if !(1..=BORROW_AHEAD_MS_MAX_LIMIT).contains(&borrow_ahead_ms_max) {
                return Err(ConfigError::OutOfRange {
                    flag: "--borrow-ahead-ms-max (SHARDFLAKE_BORROW_AHEAD_MS_MAX)",
                    value: borrow_ahead_ms_max,
                    min: 1,
                    max: BORROW_AHEAD_MS_MAX_LIMIT,
                });
            }
            Ok(NodeClockPolicy::Borrow {
                borrow_ahead_ms_max,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const NOW_MS: u64 = 1_790_000_000_000;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<NodeConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("flags parse");
        NodeConfig::from_args(&cli.serve, NOW_MS)
    }

    #[test]
    fn defaults_are_the_seed_service() {
        let c = NodeConfig::from_args(&ServeArgs::default(), NOW_MS).unwrap();
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
        let e = parse(&["--clock-wait-ms-max", "5000"]).unwrap_err();
        assert!(e.to_string().contains("out of range 0..=1000"), "{e}");
        let e = parse(&[
            "--clock-policy",
            "borrow",
            "--borrow-ahead-ms-max",
            "86400001",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("out of range 1..=86400000"), "{e}");
        let e = parse(&["--borrow-ahead-ms-max", "10"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("only applies with --clock-policy borrow"),
            "{e}"
        );
        let e = parse(&["--clock-policy", "fail", "--clock-wait-ms-max", "10"]).unwrap_err();
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
        let c = parse(&[
            "--clock-policy",
            "borrow",
            "--borrow-ahead-ms-max",
            "3600000",
        ])
        .unwrap();
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
            "--lease-ttl-ms",
            "2000",
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
        let e = parse(&["--coordinator", "http://a:7070", "--lease-ttl-ms", "5"]).unwrap_err();
        assert!(e.to_string().contains("--lease-ttl-ms"), "{e}");
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
