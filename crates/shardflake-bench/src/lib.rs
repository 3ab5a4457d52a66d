//! Throughput of id generators side by side, in one process and one run, so that every row
//! sees the same machine, clock and load.
//!
//! Two commands print the table, with the same flags and columns:
//!
//! * `cargo run --release -p shardflake-bench`: our generators next to peer crates
//!   (ferroid, scru128, snowflaked, uuid, ulid). The peers' rows live in this crate's binary,
//!   and the peer crates are dependencies of that binary only (the default `peers` feature).
//! * `shardflake bench`: our generators only. The `shardflake` command depends on this
//!   library with default features off, so the shipped binary links none of the peers.
//!
//! Each row is measured for `--seconds` on one thread, then on `--threads` threads at once,
//! `--runs` times each; the table shows the median. Generators that are `Sync` are shared by
//! all threads (that is how they are used); the others get one generator per thread. Every
//! id goes through `std::hint::black_box` so that no generator call is optimised away. The
//! last columns show how far the newest id's timestamp was ahead of the wall clock when the
//! run ended (the largest over the runs; negative when behind): a generator that is faster
//! than its layout allows has to borrow time, and this is where it shows. Calls that fail
//! (a generator refusing to issue, e.g. a borrowing generator at its bound) are counted in
//! the last column, not hidden.
//!
//! A caller adds rows of its own next to ours; here, the cost of reading the wall clock:
//!
//! ```
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! use clap::Parser;
//! use shardflake_bench::{BenchArgs, Row};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     bench: BenchArgs,
//! }
//!
//! fn wall_ms() -> u64 {
//!     SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
//! }
//!
//! let clock = Row::per_thread("SystemTime::now", || (), |_| Ok((1, wall_ms())), |ms| ms);
//! let cli = Cli::try_parse_from([
//!     "bench", "--seconds", "0.01", "--runs", "1", "--threads", "1", "--only", "SystemTime",
//! ])?;
//! shardflake_bench::run(&cli.bench, vec![clock])?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The crate also holds the block-policy comparison of segment mode ([`policies`],
//! [`blocksim`]; `cargo run --release -p shardflake-bench --bin block-policies`).
#![deny(missing_docs)]

pub mod blocksim;
mod harness;
mod ours;
pub mod policies;

use std::time::Duration;

use anyhow::{bail, Result};

pub use harness::Row;
use harness::{median, Outcome};

/// Limits of the flags.
const SECONDS_MAX: f64 = 60.0;
const RUNS_MAX: u32 = 99;
const THREADS_MAX: usize = 256;

/// Arguments of `shardflake bench` and of `shardflake-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Length of each measurement, in seconds (at most 60).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Measurements per row and thread count; the table shows the median (at most 99).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Threads for the all-threads column [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// The bound of the borrowing snowflake row, in ms.
    #[arg(long, default_value_t = 1000)]
    borrow_ahead_ms_max: u64,
    /// Only rows whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

fn rate(o: &Outcome) -> String {
    let per_s = o.per_s();
    if per_s >= 1e6 {
        format!("{:.2}M", per_s / 1e6)
    } else {
        format!("{:.0}k", per_s / 1e3)
    }
}

/// Measures our generators and then `others` (the rows `--only` keeps), and prints the table
/// on standard output, one line per row as soon as it is measured.
pub fn run(args: &BenchArgs, others: Vec<Row>) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds <= SECONDS_MAX) {
        bail!(
            "--seconds {} is out of range (0, {SECONDS_MAX}]",
            args.seconds
        );
    }
    if args.runs == 0 || args.runs > RUNS_MAX {
        bail!("--runs {} is out of range 1..={RUNS_MAX}", args.runs);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > THREADS_MAX {
        bail!("--threads {threads} is out of range 1..={THREADS_MAX}");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let rows: Vec<Row> = ours::rows(args.borrow_ahead_ms_max)
        .into_iter()
        .chain(others)
        .filter(|r| args.only.as_deref().is_none_or(|o| r.name().contains(o)))
        .collect();
    if rows.is_empty() {
        bail!("no row matches --only");
    }
    let width = rows.iter().map(|r| r.name().len()).max().unwrap_or(0);
    println!(
        "median of {} runs of {} s; ids/s; ahead = newest id's timestamp minus the wall clock \
         at the end of a run, ms (largest over the runs)",
        args.runs, args.seconds
    );
    println!(
        "{:width$}  {:>10}  {:>10}  {:>9}  {:>9}  {:>6}",
        "generator",
        "1 thread",
        format!("{threads} threads"),
        "ahead 1t",
        format!("ahead {threads}t"),
        "errors",
    );
    for row in &rows {
        let mut single = Vec::new();
        let mut all = Vec::new();
        for _ in 0..args.runs {
            single.push(row.measure(1, duration)?);
            all.push(row.measure(threads, duration)?);
        }
        let (single, all) = (median(single), median(all));
        println!(
            "{:width$}  {:>10}  {:>10}  {:>9}  {:>9}  {:>6}",
            row.name(),
            rate(&single),
            rate(&all),
            single.ahead_ms,
            all.ahead_ms,
            single.errors + all.errors,
        );
    }
    println!();
    println!(
        "errors: ids a generator refused during the runs (a clock behind its bound, a counter \
         used up); 0 is expected on every row"
    );
    if rows.iter().any(|r| r.name().contains("temporal")) {
        println!(
            "temporal ids carry an hourly shard index, not a millisecond: their \"ahead\" is \
             the start of the current shard, up to an hour behind by design"
        );
    }
    Ok(())
}
