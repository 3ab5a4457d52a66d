//! The node's options, validated once into a [`NodeConfig`].
//!
//! [`NodeOptions`] holds what `shardflake serve` was given, flag by flag and unvalidated (the
//! CLI parses the flags and environment variables into it); [`NodeConfig::from_options`]
//! checks every value against the layout and every limit, with errors that name the flag,
//! its variable, the value and the range.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use shardflake::{format_rfc3339_ms, Layout, LayoutError, NodeId};
use shardflake_proto::auth::NODE_TOKEN_ENV;
use shardflake_proto::coord::URL_BYTES_MAX;
use shardflake_runtime::credentials::{BearerToken, CredentialSource, Credentials};
use shardflake_runtime::reload::Triggers;
use shardflake_runtime::tls::{ClientTlsFiles, ServerTls, ServerTlsFiles};
use thiserror::Error;

pub use crate::gate::{ClientPolicy, CLIENT_IDS_PER_S_LIMIT};

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
pub use shardflake_proto::coord::{LEASE_TTL_MS_DEFAULT, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN};
/// The layout of a standalone node started without `--layout`.
pub const LAYOUT_DEFAULT: &str = "twitter";

/// What `shardflake serve` was given, before validation: one field per flag (each flag also
/// has an environment variable, named in the CLI's help and in every error).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `--port` (`PORT`): TCP port; 0 for any free port.
    pub port: u16,
    /// `--bind` (`SHARDFLAKE_BIND`): address to listen on.
    pub bind: IpAddr,
    /// `--machine-id` (`MACHINE_ID`).
    pub machine_id: Option<u64>,
    /// `--datacenter-id` (`DATACENTER_ID`).
    pub datacenter_id: Option<u64>,
    /// `--layout` (`SHARDFLAKE_LAYOUT`): a preset or a spec; standalone default twitter, in
    /// cluster mode the coordinators'.
    pub layout: Option<String>,
    /// `--shard-granularity` (`SHARDFLAKE_SHARD_GRANULARITY`): temporal layout only.
    pub shard_granularity: Option<String>,
    /// `--state-dir` (`SHARDFLAKE_STATE_DIR`).
    pub state_dir: PathBuf,
    /// `--clock-policy` (`SHARDFLAKE_CLOCK_POLICY`).
    pub clock_policy: ClockPolicyKind,
    /// `--clock-wait-max` (`SHARDFLAKE_CLOCK_WAIT_MAX`): `wait` policy only.
    pub clock_wait_max: Option<Duration>,
    /// `--borrow-ahead-max` (`SHARDFLAKE_BORROW_AHEAD_MAX`): `borrow` policy only.
    pub borrow_ahead_max: Option<Duration>,
    /// `--max-connections` (`SHARDFLAKE_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// `--coordinator` (`SHARDFLAKE_COORDINATOR`): comma-separated URLs; cluster mode.
    pub coordinator: Option<String>,
    /// `--standby` (`SHARDFLAKE_STANDBY`).
    pub standby: bool,
    /// `--lease-ttl` (`SHARDFLAKE_LEASE_TTL`).
    pub lease_ttl: Duration,
    /// `SHARDFLAKE_NODE_TOKEN`: the node credential sent to the coordinators.
    pub node_token: Option<String>,
    /// `--node-token-file` (`SHARDFLAKE_NODE_TOKEN_FILE`): the node credential from a file
    /// (its first line), re-read when it changes.
    pub node_token_file: Option<PathBuf>,
    /// `SHARDFLAKE_CLUSTER_TOKEN` is set: the single token of earlier versions, refused with a
    /// message naming its replacement.
    pub legacy_cluster_token: bool,
    /// `--advertise-url` (`SHARDFLAKE_ADVERTISE_URL`): where clients reach this node, for the
    /// coordinators' routing table; cluster mode.
    pub advertise_url: Option<String>,
    /// `--tls-cert`, `--tls-key`, `--client-ca`, `--client-names`: serve HTTPS.
    pub tls: Option<ServerTlsFiles>,
    /// `--ca-file`, `--tls-client-cert`, `--tls-client-key`: how the node verifies the
    /// coordinators and, for mutual TLS, the certificate it presents to them.
    pub coordinator_tls: ClientTlsFiles,
    /// `SHARDFLAKE_CLIENT_TOKEN` and `--client-token-file`: client credentials the id
    /// endpoints require (none: open).
    pub client_credentials: Vec<CredentialSource>,
    /// `--client-ids-per-second` (`SHARDFLAKE_CLIENT_IDS_PER_SECOND`): ids per second per
    /// client (per credential, else per peer address); 0: no limit.
    pub client_ids_per_second: u64,
}

impl Default for NodeOptions {
    /// What `shardflake serve` with no arguments and no environment means.
    fn default() -> Self {
        Self {
            port: PORT_DEFAULT,
            bind: IpAddr::from([0, 0, 0, 0]),
            machine_id: None,
            datacenter_id: None,
            layout: None,
            shard_granularity: None,
            state_dir: PathBuf::from(STATE_DIR_DEFAULT),
            clock_policy: ClockPolicyKind::Wait,
            clock_wait_max: None,
            borrow_ahead_max: None,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            coordinator: None,
            standby: false,
            lease_ttl: Duration::from_millis(LEASE_TTL_MS_DEFAULT),
            node_token: None,
            node_token_file: None,
            legacy_cluster_token: false,
            advertise_url: None,
            tls: None,
            coordinator_tls: ClientTlsFiles::default(),
            client_credentials: Vec::new(),
            client_ids_per_second: 0,
        }
    }
}

/// `--clock-policy`: which policy, before its bound is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockPolicyKind {
    /// Answer 503 `clock_behind` whenever the clock is behind.
    Fail,
    /// Wait (asynchronously, parking no thread) up to `--clock-wait-max`, then 503.
    Wait,
    /// Issue on a logical clock up to `--borrow-ahead-max` ahead of the wall clock.
    Borrow,
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
    /// Cluster mode: how to reach the coordinators (`None`: standalone).
    pub cluster: Option<ClusterConfig>,
    /// HTTPS, when configured.
    pub tls: Option<ServerTls>,
    /// Who may take ids, and how fast.
    pub clients: ClientPolicy,
    /// When certificate and credential files are read again.
    pub reload: Triggers,
}

/// Cluster mode: the node id is leased from coordinators.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Coordinator base URLs.
    pub urls: Vec<String>,
    /// The node credential (`None`: the coordinators run without authentication).
    pub token: Option<BearerToken>,
    /// How the coordinators are verified, and the certificate shown to them.
    pub tls: ClientTlsFiles,
    /// Start as a standby.
    pub standby: bool,
    /// Lease TTL, ms.
    pub lease_ttl_ms: u64,
    /// Where clients reach this node; `None`: from the listening address
    /// ([`ClusterConfig::advertised`]).
    pub advertise_url: Option<String>,
}

impl ClusterConfig {
    /// The URL published for this node: `--advertise-url`, else `http://` and the listening
    /// address, with a wildcard address replaced by `$HOSTNAME` (or `127.0.0.1` without
    /// one).
    pub fn advertised(&self, listen: SocketAddr) -> String {
        if let Some(u) = &self.advertise_url {
            return u.clone();
        }
        if listen.ip().is_unspecified() {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "127.0.0.1".into());
            format!("http://{host}:{}", listen.port())
        } else {
            format!("http://{listen}")
        }
    }
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
    /// A URL flag that is not an `http://` or `https://` URL.
    #[error("{flag}={value:?} is not usable: {reason}")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A credential could not be read or is malformed (the message names its variable or
    /// file, never the token).
    #[error("{0}")]
    Credentials(String),
    /// A certificate, key or CA file could not be used (the message names the file).
    #[error("{0}")]
    Tls(String),
    /// The single token of earlier versions is set.
    #[error("SHARDFLAKE_CLUSTER_TOKEN is no longer read: give nodes SHARDFLAKE_NODE_TOKEN (or --node-token-file) and SDK clients SHARDFLAKE_READ_TOKEN, then unset SHARDFLAKE_CLUSTER_TOKEN")]
    LegacyClusterToken,
    /// A duration flag is outside its range.
    #[error("{flag}={value_ms} ms is out of range {min_ms}..={max_ms} ms")]
    DurationOutOfRange {
        /// The flag (and its variable).
        flag: &'static str,
        /// The value given, ms.
        value_ms: u64,
        /// Shortest allowed, ms.
        min_ms: u64,
        /// Longest allowed, ms.
        max_ms: u64,
    },
}

impl NodeConfig {
    /// Validates `args` against the layout and every limit; `now_ms` is the wall clock, to
    /// reject layouts whose timestamp field has already overflowed.
    pub fn from_options(args: &NodeOptions, now_ms: u64) -> Result<NodeConfig, ConfigError> {
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
            cluster,
            tls: args
                .tls
                .clone()
                .map(ServerTls::load)
                .transpose()
                .map_err(|e| ConfigError::Tls(e.to_string()))?,
            clients: clients_from_args(args)?,
            reload: Triggers::default(),
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

/// The id endpoints' client credentials and rate.
fn clients_from_args(args: &NodeOptions) -> Result<ClientPolicy, ConfigError> {
    if args.client_ids_per_second > CLIENT_IDS_PER_S_LIMIT {
        return Err(ConfigError::OutOfRange {
            flag: "--client-ids-per-second (SHARDFLAKE_CLIENT_IDS_PER_SECOND)",
            value: args.client_ids_per_second,
            min: 0,
            max: CLIENT_IDS_PER_S_LIMIT,
        });
    }
    let credentials = if args.client_credentials.is_empty() {
        None
    } else {
        Some(
            Credentials::load(args.client_credentials.clone())
                .map_err(|e| ConfigError::Credentials(e.to_string()))?,
        )
    };
    Ok(ClientPolicy {
        credentials,
        ids_per_second: args.client_ids_per_second,
    })
}

fn cluster_from_args(args: &NodeOptions) -> Result<Option<ClusterConfig>, ConfigError> {
    if args.legacy_cluster_token {
        return Err(ConfigError::LegacyClusterToken);
    }
    let Some(list) = &args.coordinator else {
        return no_cluster_flags(args).map(|()| None);
    };
    if let Some(u) = &args.advertise_url {
        check_advertise_url(u)?;
    }
    if args.machine_id.is_some() || args.datacenter_id.is_some() {
        return Err(ConfigError::NotApplicable {
            flag: "MACHINE_ID and DATACENTER_ID",
            when: "without --coordinator (in cluster mode the coordinator leases the node id)",
        });
    }
    let lease_ttl_ms = duration_ms(
        "--lease-ttl (SHARDFLAKE_LEASE_TTL)",
        args.lease_ttl,
        LEASE_TTL_MS_MIN,
        LEASE_TTL_MS_MAX,
    )?;
    Ok(Some(ClusterConfig {
        urls: list
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        token: BearerToken::from_env_or_file(
            NODE_TOKEN_ENV,
            args.node_token.as_deref(),
            args.node_token_file.as_deref(),
        )
        .map_err(|e| ConfigError::Credentials(e.to_string()))?,
        tls: args.coordinator_tls.clone(),
        standby: args.standby,
        lease_ttl_ms,
        advertise_url: args.advertise_url.clone(),
    }))
}

/// A standalone node refuses the flags that only mean something with `--coordinator`.
fn no_cluster_flags(args: &NodeOptions) -> Result<(), ConfigError> {
    let given = [
        (
            args.node_token.is_some() || args.node_token_file.is_some(),
            "SHARDFLAKE_NODE_TOKEN and --node-token-file",
        ),
        (
            args.coordinator_tls != ClientTlsFiles::default(),
            "--ca-file, --tls-client-cert and --tls-client-key",
        ),
        (args.standby, "--standby (SHARDFLAKE_STANDBY)"),
        (
            args.advertise_url.is_some(),
            "--advertise-url (SHARDFLAKE_ADVERTISE_URL)",
        ),
    ];
    match given.into_iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(ConfigError::NotApplicable {
            flag,
            when: "with --coordinator",
        }),
        None => Ok(()),
    }
}

/// An advertised URL is where clients are sent: `http(s)://`, bounded, no spaces, no
/// trailing slash.
fn check_advertise_url(u: &str) -> Result<(), ConfigError> {
    let scheme = u.starts_with("http://") || u.starts_with("https://");
    let reason = if !scheme {
        Some("it must start with http:// or https://".to_string())
    } else if u.len() > URL_BYTES_MAX {
        Some(format!("it is longer than {URL_BYTES_MAX} bytes"))
    } else if u.chars().any(char::is_whitespace) || u.ends_with('/') {
        Some("it must have no spaces and no trailing slash".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::BadUrl {
            flag: "--advertise-url (SHARDFLAKE_ADVERTISE_URL)",
            value: u.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `d` in whole milliseconds, if it lies within `min_ms..=max_ms`.
fn duration_ms(
    flag: &'static str,
    d: Duration,
    min_ms: u64,
    max_ms: u64,
) -> Result<u64, ConfigError> {
    let value_ms = d.as_millis().min(u64::MAX as u128) as u64;
    if !(min_ms..=max_ms).contains(&value_ms) {
        return Err(ConfigError::DurationOutOfRange {
            flag,
            value_ms,
            min_ms,
            max_ms,
        });
    }
    Ok(value_ms)
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

fn clock_policy_from_args(args: &NodeOptions) -> Result<NodeClockPolicy, ConfigError> {
    match args.clock_policy {
        ClockPolicyKind::Fail | ClockPolicyKind::Borrow if args.clock_wait_max.is_some() => {
            Err(ConfigError::NotApplicable {
                flag: "--clock-wait-max (SHARDFLAKE_CLOCK_WAIT_MAX)",
                when: "with --clock-policy wait",
            })
        }
        ClockPolicyKind::Fail | ClockPolicyKind::Wait if args.borrow_ahead_max.is_some() => {
            Err(ConfigError::NotApplicable {
                flag: "--borrow-ahead-max (SHARDFLAKE_BORROW_AHEAD_MAX)",
                when: "with --clock-policy borrow",
            })
        }
        ClockPolicyKind::Fail => Ok(NodeClockPolicy::Fail),
        ClockPolicyKind::Wait => Ok(NodeClockPolicy::Wait {
            max_wait_ms: duration_ms(
                "--clock-wait-max (SHARDFLAKE_CLOCK_WAIT_MAX)",
                args.clock_wait_max
                    .unwrap_or(Duration::from_millis(CLOCK_WAIT_MS_MAX_DEFAULT)),
                0,
                CLOCK_WAIT_MS_MAX_LIMIT,
            )?,
        }),
        ClockPolicyKind::Borrow => Ok(NodeClockPolicy::Borrow {
            borrow_ahead_ms_max: duration_ms(
                "--borrow-ahead-max (SHARDFLAKE_BORROW_AHEAD_MAX)",
                args.borrow_ahead_max
                    .unwrap_or(Duration::from_millis(BORROW_AHEAD_MS_MAX_DEFAULT)),
                1,
                BORROW_AHEAD_MS_MAX_LIMIT,
            )?,
        }),
    }
}
