//! `block-policies`: segment mode's block policies (ours, Leaf's, CosId's, a fixed step) on the
//! same demand traces and fetch latencies, in simulated time; prints one Markdown table row per
//! (trace, policy). The same seed prints the same table.
//!
//! ```sh
//! cargo run --release -p shardflake-bench --bin block-policies
//! cargo run --release -p shardflake-bench --bin block-policies -- --seed 7 --minutes 30
//! ```

use clap::Parser;
use shardflake_bench::blocksim::{compare, table, Latency, Trace};

/// Compare block policies of segment mode in a deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "block-policies", version)]
struct Cli {
    /// Seed of the traces' noise and of the fetch latencies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cut every trace to its first N minutes (default: whole traces, 4 to 24 h).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1440))]
    minutes: Option<u64>,
}

fn main() {
    let cli = Cli::parse();
    let traces: Vec<Trace> = Trace::all(cli.seed)
        .into_iter()
        .map(|t| match cli.minutes {
            Some(m) => t.truncated(m * 60_000),
            None => t,
        })
        .collect();
    let latency = Latency::default();
    println!(
        "seed {}; fetch latency {}-{} ms, {} ms for 1 call in {}; 4 stops per trace\n",
        cli.seed,
        latency.base_ms,
        latency.base_ms + latency.jitter_ms,
        latency.slow_ms,
        latency.slow_one_in
    );
    print!("{}", table(&compare(&traces, latency, cli.seed)));
}
