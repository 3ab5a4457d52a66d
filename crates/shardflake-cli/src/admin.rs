//! An operator's writes to a coordinator store, with the admin credential
//! (`SHARDFLAKE_ADMIN_TOKEN` or `--admin-token-file`):
//!
//! * `shardflake repair`: raises a store restored from a backup above everything it may have
//!   granted since the backup was taken, and lets it grant again (`POST /v1/repair`);
//! * `shardflake namespace delete NAME [--force]` (`DELETE /v1/namespaces/{name}`);
//! * `shardflake namespace raise NAME --to VALUE` (`POST /v1/namespaces/{name}/raise`).
//!
//! Each prints what it did (`--json`: one JSON object) and exits 0, or prints the
//! coordinator's refusal and exits 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use shardflake_client::CoordinatorClient;
use shardflake_proto::auth::ADMIN_TOKEN_ENV;
use shardflake_proto::coord::RepairRequest;

use crate::security::{sent_token, ClientTlsArgs};

/// Where the coordinators are and how to reach them as an operator.
#[derive(Debug, clap::Args)]
pub struct AdminConnection {
    /// Coordinator URLs of one store, comma-separated.
    #[arg(long, value_name = "URL[,URL...]")]
    coordinator: String,
    /// A file whose first line is the admin credential; else SHARDFLAKE_ADMIN_TOKEN.
    #[arg(long, env = "SHARDFLAKE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Time limit of the request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl AdminConnection {
    fn client(&self) -> Result<CoordinatorClient> {
        let token = sent_token(ADMIN_TOKEN_ENV, self.admin_token_file.as_ref())?;
        let mut client =
            CoordinatorClient::new(CoordinatorClient::split_urls(&self.coordinator), None)?
                .with_tls(&self.tls.files())?
                .with_timeout(self.timeout);
        if let Some(t) = token {
            client = client.with_bearer(t);
        }
        Ok(client)
    }
}

/// Arguments of `shardflake repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    #[command(flatten)]
    connection: AdminConnection,
    /// The time of the restore or later: RFC 3339 (`2026-12-06T10:00:00Z`), Unix
    /// milliseconds, or `now`. Every host id's bound is raised above it (plus the
    /// reservation look-ahead); temporal layouts retire every shard up to it.
    #[arg(long, value_name = "TIME")]
    time_floor: String,
    /// A namespace's floor, `NAME=VALUE`: every value granted from now on is at or above
    /// VALUE (the highest value of it the application holds, plus one). Repeat per namespace.
    #[arg(long = "ns", value_name = "NAME=VALUE")]
    ns: Vec<String>,
    /// The floor of every namespace not named with --ns.
    #[arg(long, value_name = "VALUE")]
    all_namespaces_at_least: Option<u64>,
}

/// Arguments of `shardflake namespace`.
#[derive(Debug, clap::Args)]
pub struct NamespaceArgs {
    #[command(subcommand)]
    command: NamespaceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NamespaceCommand {
    /// Delete a namespace; refused while live nodes hold blocks of it, unless --force.
    Delete {
        /// The namespace.
        name: String,
        /// Delete even while live nodes hold blocks of it: they issue what they hold and get
        /// no further block. Create it again only with a start at or above the `next` printed.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        connection: AdminConnection,
    },
    /// Raise a namespace's next value: every value granted from now on is at or above VALUE
    /// (moving a database sequence: above the highest value the application holds). Never
    /// lowers it.
    Raise {
        /// The namespace.
        name: String,
        /// The new floor.
        #[arg(long, value_name = "VALUE")]
        to: u64,
        #[command(flatten)]
        connection: AdminConnection,
    },
}

/// Parses `--time-floor`: RFC 3339, Unix ms, or `now`.
fn parse_time(text: &str) -> Result<u64> {
    if text == "now" {
        return Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0));
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339(text).map_err(|e| {
        anyhow!("--time-floor `{text}` is neither RFC 3339 (2026-12-06T10:00:00Z), Unix ms nor `now`: {e}")
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

/// Parses the `--ns NAME=VALUE` floors.
fn parse_floors(pairs: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--ns `{p}` is not NAME=VALUE"))?;
        let value: u64 = value
            .parse()
            .map_err(|_| anyhow!("--ns `{p}`: `{value}` is not a number"))?;
        if out.insert(name.to_string(), value).is_some() {
            bail!("--ns names `{name}` twice");
        }
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// Runs `shardflake repair`.
pub fn repair(args: RepairArgs) -> Result<ExitCode> {
    let req = RepairRequest {
        time_at_least_ms: Some(parse_time(&args.time_floor)?),
        namespaces_at_least: parse_floors(&args.ns)?,
        all_namespaces_at_least: args.all_namespaces_at_least,
    };
    let client = args.connection.client()?;
    let report = runtime()?
        .block_on(client.repair(&req))
        .map_err(|e| anyhow!("repair refused: {e}"))?;
    if args.connection.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "store repaired: generation {} -> {}, fencing token {} -> {}, {} host record(s) raised",
        report.generation_before,
        report.generation_after,
        report.token_before,
        report.token_after,
        report.hosts_raised
    );
    println!(
        "{:<32} {:>20} {:>20} {:>20}",
        "namespace", "next before", "next after", "presented"
    );
    for n in &report.namespaces {
        println!(
            "{:<32} {:>20} {:>20} {:>20}",
            n.name, n.before, n.after, n.presented
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `shardflake namespace ...`.
pub fn namespace(args: NamespaceArgs) -> Result<ExitCode> {
    match args.command {
        NamespaceCommand::Delete {
            name,
            force,
            connection,
        } => {
            let client = connection.client()?;
            let d = runtime()?
                .block_on(client.delete_namespace(&name, force))
                .map_err(|e| anyhow!("delete refused: {e}"))?;
            if connection.json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                println!(
                    "namespace {} deleted; its next value was {}: create it again only with start >= {}",
                    d.name, d.next, d.next
                );
                if !d.held_by.is_empty() {
                    println!(
                        "host ids {:?} still held blocks of it: they issue what they hold and get no further block",
                        d.held_by
                    );
                }
            }
        }
        NamespaceCommand::Raise {
            name,
            to,
            connection,
        } => {
            let client = connection.client()?;
            let s = runtime()?
                .block_on(client.raise_namespace(&name, to))
                .map_err(|e| anyhow!("raise refused: {e}"))?;
            if connection.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("namespace {}: next value {}", s.name, s.next);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_floors_and_namespace_floors_parse_or_say_what_is_wrong() {
        assert_eq!(parse_time("1800000000000").unwrap(), 1_800_000_000_000);
        assert_eq!(
            parse_time("2027-01-15T08:00:00Z").unwrap(),
            1_800_000_000_000
        );
        assert!(parse_time("now").unwrap() > 0);
        let e = parse_time("yesterday").unwrap_err().to_string();
        assert!(e.contains("--time-floor"), "{e}");
        let f = parse_floors(&["a=1".into(), "b=20".into()]).unwrap();
        assert_eq!(f.get("b"), Some(&20));
        assert!(parse_floors(&["a".into()]).is_err());
        assert!(parse_floors(&["a=x".into()]).is_err());
        assert!(parse_floors(&["a=1".into(), "a=2".into()]).is_err());
    }
}
