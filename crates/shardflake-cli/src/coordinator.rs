//! `shardflake coordinator`: the coordinator's flags, parsed into [`ServiceOptions`] and
//! validated by [`ServiceConfig::from_options_now`]; logging, the runtime and the signals
//! around `shardflake_coordinator::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use shardflake_coordinator::http::RateLimits;
use shardflake_coordinator::{ServiceConfig, ServiceOptions, BLOCK_MIN_DEFAULT};
use shardflake_proto::auth::Scope;

use crate::security::{accepted, legacy_token_set, ServerTlsArgs};
use crate::service::{init_logging, runtime, shutdown_signal, LogFormat};

/// Options of `shardflake coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory of the store file (created if missing).
    #[arg(long, default_value = "./shardflake-coordinator-data")]
    pub data_dir: PathBuf,
    /// Layout whose host ids are leased: a preset or a spec (`temporal:granularity=5s`). It
    /// is the cluster's layout: nodes started without `--layout` serve it, and nodes whose
    /// layout differs refuse to start. A store keeps the layout it was created with.
    #[arg(long, default_value = "twitter")]
    pub layout: String,
    /// Shard length of the temporal layout (`1h`, `30m`, `5s`, ...); the same as adding
    /// `granularity=` to the spec.
    #[arg(long)]
    pub shard_granularity: Option<String>,
    /// Lease at most this many host ids (default: every value of the layout's node fields).
    #[arg(long)]
    pub max_hosts: Option<u32>,
    /// Lease TTL when a node asks for none.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Shortest lease TTL a node may ask for.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub lease_ttl_min: Duration,
    /// Longest lease TTL a node may ask for.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lease_ttl_max: Duration,
    /// How far ahead of the coordinator's clock a reservation may reach.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reservation_ahead_max: Duration,
    /// Smallest counter block (temporal layout).
    #[arg(long, default_value_t = BLOCK_MIN_DEFAULT)]
    pub block_min: u64,
    /// Namespaces: a node's block covers this much of its forecast demand (100ms..1h).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub ns_horizon: Duration,
    /// Namespaces: ids per second one node serves of one namespace before the assignment
    /// adds a node to it.
    #[arg(long, default_value_t = shardflake_coordinator::NS_NODE_CAPACITY_PER_S_DEFAULT)]
    pub ns_node_capacity: u64,
    /// Most transactions per durable commit (1 turns group commit off). With `--etcd`, most
    /// transactions sent as one etcd transaction, at most 128.
    #[arg(long, default_value_t = shardflake_coordinator::store::GROUP_COMMIT_BATCH_MAX_DEFAULT)]
    pub group_commit_max: usize,
    /// Keep the state in this etcd cluster instead of `--data-dir`: client URLs, comma
    /// separated (`http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379`). Any
    /// number of coordinators may share one etcd prefix; give nodes all their URLs. Needs a
    /// binary built with `--features etcd`.
    #[arg(long, value_delimiter = ',', env = "SHARDFLAKE_ETCD")]
    pub etcd: Vec<String>,
    /// Key prefix of this cluster's state in etcd; clusters sharing one etcd need their own.
    #[arg(long, default_value = "/shardflake/", env = "SHARDFLAKE_ETCD_PREFIX")]
    pub etcd_prefix: String,
    /// The etcd members' `--max-txn-ops` (etcd does not report it): group commit sizes its
    /// batches to fit, counted as etcd counts them. Batches etcd still refuses are split and
    /// sent again.
    #[arg(long, default_value_t = 128, env = "SHARDFLAKE_ETCD_MAX_TXN_OPS")]
    pub etcd_max_txn_ops: usize,
    /// Compact etcd's history, one coordinator at a time, keeping one --etcd-compact-every
    /// of it. `off` for a shared etcd whose operator compacts it (etcd's
    /// --auto-compaction-*): without compaction etcd grows until its quota stops all writes.
    #[arg(
        long,
        value_enum,
        default_value = "on",
        env = "SHARDFLAKE_ETCD_COMPACTION"
    )]
    pub etcd_compaction: OnOff,
    /// How often etcd's history is compacted.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration, env = "SHARDFLAKE_ETCD_COMPACT_EVERY")]
    pub etcd_compact_every: Duration,
    /// The etcd members' --quota-backend-bytes (etcd 3.4 does not report it): the database
    /// size is exported against it and logged above 80%. Bytes, or with KiB, MiB, GiB.
    #[arg(long, value_name = "BYTES", default_value = "2GiB", value_parser = parse_bytes, env = "SHARDFLAKE_ETCD_QUOTA_BYTES")]
    pub etcd_quota_bytes: u64,
    /// CA certificate (PEM) that signed the etcd members' certificates; the endpoints are
    /// then `https://`.
    #[arg(long, env = "SHARDFLAKE_ETCD_CACERT")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd members that check clients (`--client-cert-auth`).
    #[arg(long, env = "SHARDFLAKE_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "SHARDFLAKE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for clusters with authentication on; the password comes from
    /// SHARDFLAKE_ETCD_PASSWORD.
    #[arg(long, env = "SHARDFLAKE_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// Node credentials, one per line (`TOKEN` or `NAME TOKEN`; two while rotating),
    /// reloaded on SIGHUP and change; SHARDFLAKE_NODE_TOKEN adds one (or two,
    /// comma-separated). Nodes lease, renew, take blocks and return values with it.
    #[arg(long, env = "SHARDFLAKE_NODE_TOKEN_FILE")]
    pub node_token_file: Option<PathBuf>,
    /// Read credentials (SDK clients, `fetch`, `audit`, dashboards, Prometheus), as
    /// --node-token-file; SHARDFLAKE_READ_TOKEN adds one or two.
    #[arg(long, env = "SHARDFLAKE_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
    /// Admin credentials (namespaces), as --node-token-file; SHARDFLAKE_ADMIN_TOKEN adds one
    /// or two.
    #[arg(long, env = "SHARDFLAKE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve without authentication (only on a trusted network).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Requests per second per read credential (0: no limit); over it `429` with
    /// Retry-After.
    #[arg(long, env = "SHARDFLAKE_RATE_LIMIT_READ", default_value_t = shardflake_coordinator::http::READ_PER_S_DEFAULT)]
    pub rate_limit_read: u64,
    /// Requests per second per node credential (shared by the nodes holding it).
    #[arg(long, env = "SHARDFLAKE_RATE_LIMIT_NODE", default_value_t = shardflake_coordinator::http::NODE_PER_S_DEFAULT)]
    pub rate_limit_node: u64,
    /// Requests per second per admin credential.
    #[arg(long, env = "SHARDFLAKE_RATE_LIMIT_ADMIN", default_value_t = shardflake_coordinator::http::ADMIN_PER_S_DEFAULT)]
    pub rate_limit_admin: u64,
    /// Requests without a valid credential per second per address (IPv6: per /64); beyond
    /// it they get `429` and stop filling the audit trail.
    #[arg(long, env = "SHARDFLAKE_RATE_LIMIT_AUTH_FAILURES", default_value_t = shardflake_coordinator::http::AUTH_FAILURES_PER_S_DEFAULT)]
    pub rate_limit_auth_failures: u64,
    /// Grants kept in each grant log (per host id, per (host, shard) pair, per namespace)
    /// for `shardflake audit`.
    #[arg(long, env = "SHARDFLAKE_AUDIT_WINDOW", default_value_t = shardflake_coordinator::AUDIT_WINDOW_DEFAULT)]
    pub audit_window: usize,
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Log format on stderr (`RUST_LOG` filters, default `info`).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "SHARDFLAKE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

impl CoordinatorArgs {
    /// The service's options, unvalidated.
    pub fn options(&self) -> ServiceOptions {
        ServiceOptions {
            data_dir: self.data_dir.clone(),
            layout: self.layout.clone(),
            shard_granularity: self.shard_granularity.clone(),
            max_hosts: self.max_hosts,
            lease_ttl: self.lease_ttl,
            lease_ttl_min: self.lease_ttl_min,
            lease_ttl_max: self.lease_ttl_max,
            reservation_ahead_max: self.reservation_ahead_max,
            block_min: self.block_min,
            ns_horizon: self.ns_horizon,
            ns_node_capacity: self.ns_node_capacity,
            group_commit_max: self.group_commit_max,
            etcd: self.etcd.clone(),
            etcd_prefix: self.etcd_prefix.clone(),
            etcd_max_txn_ops: self.etcd_max_txn_ops,
            etcd_compaction: self.etcd_compaction == OnOff::On,
            etcd_compact_every: self.etcd_compact_every,
            etcd_quota_bytes: self.etcd_quota_bytes,
            etcd_cacert: self.etcd_cacert.clone(),
            etcd_cert: self.etcd_cert.clone(),
            etcd_key: self.etcd_key.clone(),
            etcd_user: self.etcd_user.clone(),
            etcd_password: std::env::var(shardflake_coordinator::ETCD_PASSWORD_ENV).ok(),
            credentials: [
                (Scope::Node, &self.node_token_file),
                (Scope::Read, &self.read_token_file),
                (Scope::Admin, &self.admin_token_file),
            ]
            .into_iter()
            .flat_map(|(scope, file)| accepted(scope, file.as_ref()))
            .collect(),
            legacy_cluster_token: legacy_token_set(),
            insecure_no_auth: self.insecure_no_auth,
            tls: self.tls.files(),
            rate_limits: RateLimits {
                read_per_s: self.rate_limit_read,
                node_per_s: self.rate_limit_node,
                admin_per_s: self.rate_limit_admin,
                auth_failures_per_s: self.rate_limit_auth_failures,
            },
            audit_window: self.audit_window,
        }
    }
}

/// Runs `shardflake coordinator`: validates the flags, sets up logging, opens the store,
/// listens, and serves until SIGTERM or SIGINT.
pub fn run(args: CoordinatorArgs) -> Result<()> {
    init_logging(args.log_format)?;
    let config = ServiceConfig::from_options_now(&args.options())?;
    runtime("shardflake-coordinator")?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        shardflake_coordinator::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

/// A switch given as `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// Parses a byte count: a number, optionally with `KiB`, `MiB` or `GiB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count (e.g. 2GiB, 512MiB, 1073741824)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("`{other}` is not a unit: use KiB, MiB or GiB")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod byte_tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_binary_units() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("2GB").unwrap_err().contains("unit"));
        assert!(parse_bytes("lots").is_err());
    }
}
