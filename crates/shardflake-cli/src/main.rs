//! The `shardflake` command.
//!
//! This binary only parses arguments and calls into libraries: each subcommand is one variant
//! of [`Command`] and one match arm in [`main`]. The subcommands that need no service live in
//! their own modules here (`generate`, `inspect`, `verify`, and `fetch`, a client of running
//! nodes through the SDK); `bench` runs the harness of `shardflake-bench` on our generators
//! only (the table next to peer crates is `cargo run --release -p shardflake-bench`, so this
//! binary links none of them).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod audit;
mod coordinator;
mod fetch;
mod generate;
mod inspect;
mod kind;
mod maelstrom;
mod security;
mod serve;
mod service;
mod text;
mod verify;

/// Unique 64- and 128-bit ids: Snowflake-family layouts, temporal shards, UUIDv7 and ULID.
#[derive(Debug, Parser)]
#[command(name = "shardflake", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate ids, one per line.
    Generate(generate::GenerateArgs),
    /// Decode ids into their fields, or describe a layout when no id is given.
    Inspect(inspect::InspectArgs),
    /// Count ids, exact duplicates and order violations in a stream of ids.
    Verify(verify::VerifyArgs),
    /// Measure the throughput of our generators, in-process.
    Bench(shardflake_bench::BenchArgs),
    /// Fetch ids from running nodes (through the client SDK, with failover), one per line.
    Fetch(fetch::FetchArgs),
    /// Check that no two grants of a coordinator store overlap (exit 1 if any do).
    Audit(audit::AuditArgs),
    /// Repair a coordinator store restored from a backup: raise every bound above what it may
    /// have granted since, then let it grant again (admin credential).
    Repair(admin::RepairArgs),
    /// Delete a namespace or raise its next value (admin credential).
    Namespace(admin::NamespaceArgs),
    /// Run the generator node: an HTTP id service (PORT, MACHINE_ID, DATACENTER_ID).
    Serve(serve::ServeArgs),
    /// Run the coordinator: leases host ids, persists reservations, promotes standbys.
    Coordinator(coordinator::CoordinatorArgs),
    /// A node for Maelstrom's `unique-ids` workload, on stdin and stdout.
    MaelstromNode(maelstrom::MaelstromArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Bench(args) => {
            shardflake_bench::run(&args, Vec::new()).map(|()| ExitCode::SUCCESS)
        }
        Command::Fetch(args) => fetch::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Repair(args) => admin::repair(args),
        Command::Namespace(args) => admin::namespace(args),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Coordinator(args) => coordinator::run(args).map(|()| ExitCode::SUCCESS),
        Command::MaelstromNode(args) => maelstrom::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
