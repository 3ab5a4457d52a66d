//! `shardflake-sim`: runs seeds of the deterministic cluster simulation and reports.
//!
//! ```text
//! cargo run --release -p shardflake-sim -- --seeds 500          # seeds 1..=500, one summary line
//! cargo run --release -p shardflake-sim -- --seed 42            # one seed, its event trace
//! RUST_LOG=info cargo run --release -p shardflake-sim -- --seed 42   # and the code's own logs
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use shardflake_sim::{run_seed, Options};

/// Deterministic simulation of a shardflake cluster under faults: exits non-zero on any
/// violation.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Run this many seeds, from `--first-seed` on, and print one summary line.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Replay one seed and print its event trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated seconds per seed.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Primary nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Coordinators sharing the store.
    #[arg(long, default_value_t = 2)]
    coordinators: usize,
    /// With `--seeds`: stop at the first seed that finds a violation (how many seeds a bug
    /// takes to be caught: scripts/sim-mutants.sh).
    #[arg(long)]
    stop_on_violation: bool,
    /// Faults per simulated minute.
    #[arg(long, default_value_t = 60)]
    faults_per_minute: u64,
    /// Seeds run at once, each on a thread of its own (default: the CPUs available). A seed's
    /// outcome does not depend on it; `--stop-on-violation` runs one at a time, so that the
    /// first violation is the lowest seed's.
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.duration < 40 || args.nodes == 0 || args.coordinators == 0 {
        eprintln!("--duration must be at least 40 s, --nodes and --coordinators at least 1");
        return ExitCode::from(2);
    }
    let duration_ms = args.duration * 1000;
    let options = Options {
        nodes: args.nodes,
        coordinators: args.coordinators,
        duration_ms,
        // The last 25 s (the liveness bound and slack) check that service comes back.
        heal_ms: duration_ms - 25_000,
        faults_per_minute: args.faults_per_minute,
        ..Options::default()
    };
    if let Some(seed) = args.seed {
        // With RUST_LOG set, the real code's own logs go to stderr, stamped with simulated
        // time and the host (turmoil's `node` span).
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_timer(SimTimer)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
        }
        let out = run_seed(seed, &options, true);
        for line in &out.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} ids in {} batches, {} refusals, recovery after healing {} ms (bound {} ms), faults {}, digest {:016x}",
            out.report.ids,
            out.report.acks,
            out.report.refusals,
            out.report.recovery_ms_max,
            options.liveness_bound_ms(),
            faults_text(&out.faults),
            out.digest
        );
        for v in &out.report.violations {
            println!("VIOLATION: {v}");
        }
        return if out.report.violation_count == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let started = Instant::now();
    let mut ids = 0u64;
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = 0u64;
    let mut failed = Vec::new();
    let mut recovery_ms_max = 0;
    let jobs = if args.stop_on_violation {
        1
    } else {
        args.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 64)
    };
    let seeds = args.first_seed..args.first_seed + args.seeds;
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (tx, next, options, end) = (tx.clone(), &next, &options, seeds.end);
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                // A send fails only once the receiver stopped early (stop on violation).
                if tx.send(run_seed(seed, options, false)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for out in rx {
            let seed = out.seed;
            ids += out.report.ids;
            recovery_ms_max = recovery_ms_max.max(out.report.recovery_ms_max);
            for (k, v) in out.faults {
                *faults.entry(k).or_default() += v;
            }
            if out.report.violation_count > 0 {
                violations += out.report.violation_count;
                eprintln!("seed {seed}: {}", out.report.violations.join("; "));
                failed.push(seed);
                if args.stop_on_violation {
                    println!(
                        "first violation at seed {seed} ({} seeds run): {}",
                        seed - args.first_seed + 1,
                        out.report.violations.first().map_or("", String::as_str)
                    );
                    // The workers stop at their next send.
                    next.store(seeds.end, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    if args.stop_on_violation && !failed.is_empty() {
        return ExitCode::FAILURE;
    }
    failed.sort_unstable();
    println!(
        "seeds {} ({}..={}), ids checked {ids}, faults injected {}, violations {violations}{}, slowest recovery {recovery_ms_max} ms (bound {} ms), {:.0} s on {jobs} thread(s)",
        args.seeds,
        args.first_seed,
        args.first_seed + args.seeds - 1,
        faults_text(&faults),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (seeds {failed:?}; replay one with --seed S)")
        },
        options.liveness_bound_ms(),
        started.elapsed().as_secs_f64()
    );
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Log timestamps in simulated time.
struct SimTimer;

impl tracing_subscriber::fmt::time::FormatTime for SimTimer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let ms = shardflake_sim::trace::now_ms();
        write!(w, "{:>6}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn faults_text(faults: &BTreeMap<String, u64>) -> String {
    let total: u64 = faults.values().sum();
    let kinds: Vec<String> = faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{total} ({})", kinds.join(" "))
}
