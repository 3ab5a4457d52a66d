//! `shardflake audit`: proves that no two grants a coordinator store holds overlap.
//!
//! It reads `GET /v1/audit` (the read credential is enough): every host id's tokens and the
//! timestamp range each reserved, every (host, shard) pair's counter blocks and every
//! namespace's blocks, as far back as the store's grant logs reach (its audit window), and
//! checks them with `shardflake_proto::audit::find_overlaps`. It prints one row per kind of
//! grant and every overlap found. Exit status: 0 when no two grants overlap, 1 when some do,
//! 2 when the grants could not be read (so a script tells a finding from a failure).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use shardflake_client::{ClientError, CoordinatorClient, Retry};
use shardflake_proto::audit::{find_overlaps, grants_checked, OverlapKind};
use shardflake_proto::auth::READ_TOKEN_ENV;

use crate::security::{sent_token, ClientTlsArgs};

/// Arguments of `shardflake audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Coordinator URLs of one store, comma-separated.
    #[arg(long, value_name = "URL[,URL...]")]
    coordinator: String,
    /// A file whose first line is the read credential; else SHARDFLAKE_READ_TOKEN.
    #[arg(long, env = "SHARDFLAKE_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// How long to keep asking while the coordinators are unavailable (an etcd election, a
    /// restart): the read is retried with backoff until then.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Exit status when the grants could not be read (unreachable, refused, bad flags).
const EXIT_UNREADABLE: u8 = 2;

/// Runs `shardflake audit`: exit 0 when no grants overlap, 1 when some do, 2 when they
/// could not be read.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    match audit(&args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_UNREADABLE))
        }
    }
}

fn audit(args: &AuditArgs) -> Result<ExitCode> {
    let token = sent_token(READ_TOKEN_ENV, args.read_token_file.as_ref())?;
    let mut client =
        CoordinatorClient::new(CoordinatorClient::split_urls(&args.coordinator), None)?
            .with_tls(&args.tls.files())?
            .with_timeout(args.timeout);
    if let Some(t) = token {
        client = client.with_bearer(t);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime
        .block_on(read_report(&client, args.timeout))
        .map_err(|e| anyhow!("cannot read the grants: {e}"))?;
    let overlaps = find_overlaps(&report);
    let checked = grants_checked(&report);
    if args.json {
        let rows: Vec<_> = checked
            .iter()
            .map(|(kind, n)| {
                serde_json::json!({
                    "kind": kind,
                    "grants": n,
                    "overlaps": overlaps.iter().filter(|o| o.kind == *kind).count(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "store_id": report.store_id,
            "window": report.window,
            "kinds": rows,
            "overlaps": overlaps,
        });
        println!("{out}");
    } else {
        print_table(&report.store_id, report.window, &checked, &overlaps);
    }
    Ok(if overlaps.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report, asked again with backoff while the coordinators are unavailable or answer
/// a retryable error (an etcd election, a coordinator restarting), until `timeout`.
async fn read_report(
    client: &CoordinatorClient,
    timeout: Duration,
) -> Result<shardflake_proto::audit::AuditReport, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut retry = Retry::new(
        "reading the grants",
        Duration::from_millis(100),
        Duration::from_secs(2),
    );
    loop {
        match client.audit().await {
            Ok(report) => return Ok(report),
            Err(e) => {
                let transient = match &e {
                    ClientError::Unavailable { .. } => true,
                    ClientError::Api { code, .. } => code.is_retryable(),
                    _ => false,
                };
                let wait = retry.failed(e.kind(), &e);
                if !transient || tokio::time::Instant::now() + wait >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn print_table(
    store_id: &str,
    window: u32,
    checked: &[(OverlapKind, usize)],
    overlaps: &[shardflake_proto::audit::Overlap],
) {
    println!("store {store_id}: the live grants and the last {window} of each grant log");
    println!("{:<26} {:>8} {:>9}", "grants", "checked", "overlaps");
    for (kind, n) in checked {
        let bad = overlaps.iter().filter(|o| o.kind == *kind).count();
        println!("{:<26} {:>8} {:>9}", kind.as_str(), n, bad);
    }
    if overlaps.is_empty() {
        println!("no two grants overlap");
    } else {
        println!("OVERLAPS (values two holders may both have issued):");
        for o in overlaps {
            println!("  {o}");
        }
    }
}
