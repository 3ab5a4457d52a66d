//! `shardflake fetch`: ids from running nodes through the client SDK, one per line, for
//! scripts.
//!
//! The SDK's [`BlockingIdClient`] does the work: a buffer refilled ahead of need and failover
//! between the nodes, so a node that dies mid-run costs no error while another one serves.
//! Ids are written as they arrive, a chunk at a time, so memory does not grow with `--count`.
//! The exit status is 0 only when all `--count` ids were written, or when the reader
//! closed the pipe first (`| head`), as for `generate`.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;

use shardflake_client::{BearerToken, BlockingIdClient, IdClient};
use shardflake_proto::auth::{CLIENT_TOKEN_ENV, READ_TOKEN_ENV};
use shardflake_proto::node::IDS_COUNT_MAX;
use tracing_subscriber::filter::LevelFilter;

use crate::generate::{is_broken_pipe, write_chunk, OUT_BUF_BYTES};
use crate::kind::Format;
use crate::security::{sent_token, ClientTlsArgs};
use crate::service::{init_logging_at, LogFormat};

/// Ids written per chunk.
const CHUNK_IDS: usize = 4_096;

/// Arguments of `shardflake fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Node URLs, comma-separated (`http://10.0.0.1:8080,http://10.0.0.2:8080`).
    #[arg(
        long,
        value_name = "URL[,URL...]",
        required_unless_present = "coordinators"
    )]
    from: Option<String>,
    /// Coordinator URLs, comma-separated: find the nodes (and which serve `--ns`) in their
    /// routing table instead of `--from`.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "from")]
    coordinators: Option<String>,
    /// A file whose first line is the read credential sent to `--coordinators`; else
    /// SHARDFLAKE_READ_TOKEN. It can read the routing table and nothing else.
    #[arg(long, env = "SHARDFLAKE_READ_TOKEN_FILE")]
    read_token_file: Option<PathBuf>,
    /// A file whose first line is the client credential nodes ask for on their id
    /// endpoints, if they do; else SHARDFLAKE_CLIENT_TOKEN.
    #[arg(long, env = "SHARDFLAKE_CLIENT_TOKEN_FILE")]
    client_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Ids of this namespace (`GET /ns/NAME/ids`) instead of plain ids.
    #[arg(long, value_name = "NAME")]
    ns: Option<String>,
    /// How many ids to print.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Output encoding, as `generate` has it.
    #[arg(long, value_enum, default_value = "dec")]
    format: Format,
    /// Give up when no id arrived for this long (every node failing), e.g. `10s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Time limit of one request to one node, e.g. `2s`.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Most ids asked of a node per request (1..=100000).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    batch_max: usize,
    /// Log format on stderr (warnings only, unless RUST_LOG says otherwise).
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "SHARDFLAKE_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// Runs `shardflake fetch`.
pub fn run(args: FetchArgs) -> Result<ExitCode> {
    init_logging_at(args.log_format, LevelFilter::WARN)?;
    if !(1..=IDS_COUNT_MAX as usize).contains(&args.batch_max) {
        bail!(
            "--batch-max {} is out of range 1..={IDS_COUNT_MAX}",
            args.batch_max
        );
    }
    // The first refill covers the whole run when it fits in one request: a script asking for
    // 100 ids makes one request of 100, not a slow start from a small batch.
    let first = args.count.min(args.batch_max as u64) as usize;
    let mut builder = IdClient::builder()
        .prefetch(first, args.batch_max)
        .call_timeout(args.timeout)
        .request_timeout(args.request_timeout)
        .tls(args.tls.files());
    if let Some(t) = sent_token(CLIENT_TOKEN_ENV, args.client_token_file.as_ref())? {
        builder = builder.node_token(bare(&t));
    }
    builder = match (&args.from, &args.coordinators) {
        (Some(nodes), None) => builder.nodes([nodes.as_str()]),
        (None, Some(coordinators)) => {
            let token = sent_token(READ_TOKEN_ENV, args.read_token_file.as_ref())?.ok_or_else(|| {
                anyhow!("--coordinators needs the read credential: {READ_TOKEN_ENV} or --read-token-file")
            })?;
            builder
                .coordinators([coordinators.as_str()])
                .token(bare(&token))
        }
        _ => bail!("give the nodes with --from or the coordinators with --coordinators"),
    };
    let client = BlockingIdClient::build(builder).context("cannot start the id client")?;
    let mut stream = match &args.ns {
        Some(name) => client.ns(name)?.stream(),
        None => client.stream(),
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(OUT_BUF_BYTES, stdout);
    let mut ids = Vec::with_capacity(CHUNK_IDS);
    let mut written = 0u64;
    while written < args.count {
        let chunk = (args.count - written).min(CHUNK_IDS as u64) as usize;
        ids.clear();
        for _ in 0..chunk {
            match stream.next_id() {
                Ok(id) => ids.push(id),
                Err(e) => {
                    // What arrived is printed; the status says the run is incomplete.
                    let _ = write_chunk(&ids, args.format, &mut out).and_then(|()| out.flush());
                    let got = written + ids.len() as u64;
                    bail!("fetched {got} of {} ids: {e}", args.count);
                }
            }
        }
        if let Err(e) = write_chunk(&ids, args.format, &mut out) {
            return output_error(e.into(), written, args.count);
        }
        written += chunk as u64;
    }
    if let Err(e) = out.flush() {
        return output_error(e.into(), written, args.count);
    }
    Ok(ExitCode::SUCCESS)
}

/// The token itself, for the SDK's builder.
fn bare(t: &BearerToken) -> String {
    t.header().trim_start_matches("Bearer ").to_string()
}

/// How a failed write of the output ends the run: a reader that stopped early (`| head`)
/// is the normal end of a pipeline, as for `seq | head` and `generate`: status 0, quietly.
fn output_error(e: anyhow::Error, written: u64, count: u64) -> Result<ExitCode> {
    if is_broken_pipe(&e) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e.context(format!("cannot write ids ({written} of {count} written)")))
    }
}
