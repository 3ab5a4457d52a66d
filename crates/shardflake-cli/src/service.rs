//! What the two services share in the binary: the log format and its set-up, the runtime,
//! and the signals that stop them.

use std::io::IsTerminal;

use anyhow::{anyhow, Context, Result};
use shardflake_coordinator::audit::TARGET as AUDIT_TARGET;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// `--log-format` of `serve` and `coordinator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) -> Result<()> {
    init_logging_at(format, LevelFilter::INFO)
}

/// [`init_logging`] with another default level (`fetch` logs only warnings by default).
///
/// The coordinator's audit trail (target `shardflake::audit`) is written as JSON lines
/// whatever the format, so it can be shipped and searched as it is; `RUST_LOG` does not hide
/// it.
pub fn init_logging_at(format: LogFormat, default: LevelFilter) -> Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .from_env()
        .map_err(|e| anyhow!("RUST_LOG is invalid: {e}"))?;
    let not_audit = filter_fn(|m| m.target() != AUDIT_TARGET);
    let only_audit = filter_fn(|m| m.target() == AUDIT_TARGET);
    // Colour only on a terminal: escape codes in files and container logs hide the fields.
    let ansi = std::io::stderr().is_terminal();
    let main = match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .with_filter(not_audit)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .with_filter(not_audit)
            .boxed(),
    };
    let audit = fmt::layer()
        .json()
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::INFO)
        .with_filter(only_audit);
    tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init()
        .map_err(|e| anyhow!("logging: {e}"))
}

/// A multi-threaded tokio runtime for a service.
pub fn runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("cannot start the runtime")
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), logging which.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
