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
use shardflake_sim::check::CheckReport;
use shardflake_sim::{run_seed, Options, SeedOutcome};

// Seeds allocate millions of small buffers (requests, answers, batches) on two threads at
// once; mimalloc does that markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// takes to be caught: scripts/sim-mutants.sh). Seeds still run `--jobs` at once; the
    /// seed reported is the lowest that finds one.
    #[arg(long)]
    stop_on_violation: bool,
    /// Faults per simulated minute.
    #[arg(long, default_value_t = 60)]
    faults_per_minute: u64,
    /// Changes a fault kind's weight, `KIND=N` (repeatable; 0 turns a kind off). The kinds
    /// and their default weights are printed with every run.
    #[arg(long = "weight", value_name = "KIND=N")]
    weights: Vec<String>,
    /// With `--seeds`: run every seed twice and compare the two runs (trace digest, ids,
    /// batches, faults); a difference counts as a violation.
    #[arg(long)]
    check_determinism: bool,
    /// Seeds run at once, each in a process of its own (default: the CPUs available). A
    /// seed's outcome does not depend on it; with `--stop-on-violation` the seed reported is
    /// the lowest that finds one.
    #[arg(long)]
    jobs: Option<usize>,
    /// Switches on one re-introduced bug (`shardflake::mutant`, by name or number) in every
    /// seed: how scripts/sim-mutants.sh shows that the simulation catches it.
    #[arg(long, value_name = "NAME")]
    mutant: Option<String>,
    /// Prints the mutants `--mutant` knows, one name per line.
    #[arg(long)]
    list_mutants: bool,
    /// Runs one seed and prints its outcome as one JSON line: how `--seeds` runs each seed in
    /// a fresh process, where it runs exactly as `--seed S` replays it.
    #[arg(long, hide = true, conflicts_with = "seed")]
    child_seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.duration < 40 || args.nodes == 0 || args.coordinators == 0 {
        eprintln!("--duration must be at least 40 s, --nodes and --coordinators at least 1");
        return ExitCode::from(2);
    }
    let duration_ms = args.duration * 1000;
    let mut options = Options {
        nodes: args.nodes,
        coordinators: args.coordinators,
        duration_ms,
        // The last 25 s (the liveness bound and slack) check that service comes back.
        heal_ms: duration_ms - 25_000,
        faults_per_minute: args.faults_per_minute,
        ..Options::default()
    };
    for w in &args.weights {
        let parsed = w
            .split_once('=')
            .and_then(|(k, n)| n.parse::<u64>().ok().map(|n| (k, n)))
            .ok_or_else(|| format!("--weight {w}: expected KIND=N, N a whole number"))
            .and_then(|(k, n)| options.set_weight(k, n));
        if let Err(e) = parsed {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    if options.weights.iter().all(|(_, w)| *w == 0) {
        eprintln!("--weight: at least one fault kind needs a weight above 0");
        return ExitCode::from(2);
    }
    if args.list_mutants {
        for m in shardflake::mutant::Mutant::ALL {
            println!("{}", m.name());
        }
        return ExitCode::SUCCESS;
    }
    if let Some(name) = &args.mutant {
        let switched = shardflake::mutant::Mutant::from_name(name)
            .ok_or_else(|| {
                let names: Vec<&str> = shardflake::mutant::Mutant::ALL
                    .iter()
                    .map(|m| m.name())
                    .collect();
                format!(
                    "--mutant {name}: no such mutant; the mutants: {}",
                    names.join(", ")
                )
            })
            .and_then(shardflake::mutant::activate);
        if let Err(e) = switched {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    if let Some(seed) = args.child_seed {
        let out = run_seed(seed, &options, false);
        println!("{}", outcome_json(&out));
        return ExitCode::SUCCESS;
    }
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
        println!("{}", options.describe());
        for line in &out.trace {
            println!("{line}");
        }
        println!(
            "seed {seed}: {} ids and {} namespace values in {} batches, {} refusals, recovery after healing {} ms (bound {}), faults {}, digest {:016x}",
            out.report.ids,
            out.report.ns_values,
            out.report.acks,
            out.report.refusals,
            out.report.recovery_ms_max,
            options.liveness_bounds(),
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
    let mut ns_values = 0u64;
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut tallies: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = 0u64;
    let mut failed = Vec::new();
    let mut recovery_ms_max = 0;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let seeds = args.first_seed..args.first_seed + args.seeds;
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let stop_at = std::sync::atomic::AtomicU64::new(u64::MAX);
    let mut first_violation: Option<(u64, String)> = None;
    let child_args = child_args(&args);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (tx, next, stop_at, child_args, end) =
                (tx.clone(), &next, &stop_at, &child_args, seeds.end);
            let check_determinism = args.check_determinism;
            scope.spawn(move || loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // With --stop-on-violation, `end` comes down to the lowest seed found
                // violating: the seeds below it still run, so that it is the first.
                if seed >= end.min(stop_at.load(std::sync::atomic::Ordering::Relaxed)) {
                    return;
                }
                // A seed above the lowest one found violating is stopped: it cannot be the
                // first.
                let moot = || seed > stop_at.load(std::sync::atomic::Ordering::Relaxed);
                let Some(mut out) = run_child(seed, child_args, &moot) else {
                    continue;
                };
                if check_determinism {
                    let Some(again) = run_child(seed, child_args, &moot) else {
                        continue;
                    };
                    let a = (out.digest, out.report.ids, out.report.acks, &out.faults);
                    let b = (again.digest, again.report.ids, again.report.acks, &again.faults);
                    if a != b {
                        out.report.violation_count += 1;
                        *out.report.tallies.entry("nondeterministic".into()).or_default() += 1;
                        out.report.violations.push(format!(
                            "not deterministic: two runs gave digests {:016x} and {:016x}, {} and {} ids, {} and {} batches",
                            a.0, b.0, a.1, b.1, a.2, b.2
                        ));
                    }
                }
                // The receiver runs until every worker has returned.
                if tx.send(out).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for out in rx {
            let seed = out.seed;
            ids += out.report.ids;
            ns_values += out.report.ns_values;
            recovery_ms_max = recovery_ms_max.max(out.report.recovery_ms_max);
            for (k, v) in out.faults {
                *faults.entry(k).or_default() += v;
            }
            for (k, v) in out.report.tallies {
                *tallies.entry(k).or_default() += v;
            }
            if out.report.violation_count > 0 {
                violations += out.report.violation_count;
                eprintln!("seed {seed}: {}", out.report.violations.join("; "));
                failed.push(seed);
                if args.stop_on_violation && first_violation.as_ref().is_none_or(|(s, _)| seed < *s)
                {
                    first_violation = Some((
                        seed,
                        out.report.violations.first().cloned().unwrap_or_default(),
                    ));
                    // No seed above it starts; those below it that run finish.
                    stop_at.fetch_min(seed, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    if let Some((seed, what)) = first_violation {
        println!(
            "first violation at seed {seed} ({} seeds from the first): {what}",
            seed - args.first_seed + 1
        );
        return ExitCode::FAILURE;
    }
    failed.sort_unstable();
    println!("{}", options.describe());
    println!(
        "seeds {} ({}..={}), ids checked {ids}, namespace values checked {ns_values}, faults injected {}, violations {violations}{}, slowest recovery {recovery_ms_max} ms (bound {}), {:.0} s, {jobs} seed(s) at once",
        args.seeds,
        args.first_seed,
        args.first_seed + args.seeds - 1,
        faults_text(&faults),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (seeds {failed:?}; replay one with --seed S)")
        },
        options.liveness_bounds(),
        started.elapsed().as_secs_f64()
    );
    let kinds: Vec<String> = tallies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "events: {} (lie_*_refused: the lying client's requests, refused as promised, one accepted is a violation; replayed_capture: requests captured on the wire sent again, judged by the other checks; ns_redirect: namespace requests another node served)",
        kinds.join(" ")
    );
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    println!(
        "{:.0} seeds per minute{}",
        args.seeds as f64 / minutes.max(1e-9),
        match (args.check_determinism, tallies.get("nondeterministic")) {
            (false, _) => String::new(),
            (true, None) =>
                ", each seed run twice (--check-determinism): every pair identical".to_string(),
            (true, Some(n)) =>
                format!(", each seed run twice (--check-determinism): {n} pair(s) differ"),
        }
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

/// The options a seed's process is started with: the plan's, not the batch's.
fn child_args(args: &Args) -> Vec<String> {
    let mut v = vec![
        format!("--duration={}", args.duration),
        format!("--nodes={}", args.nodes),
        format!("--coordinators={}", args.coordinators),
        format!("--faults-per-minute={}", args.faults_per_minute),
    ];
    v.extend(args.weights.iter().map(|w| format!("--weight={w}")));
    v.extend(args.mutant.iter().map(|m| format!("--mutant={m}")));
    v
}

/// Runs `seed` in a process of its own (this program, `--child-seed`), so that nothing a
/// seed run before it left in the process (tokio's task numbers, thread-local state) can
/// change it, and reads its outcome. A process that dies counts as a violation.
fn run_child(seed: u64, args: &[String], moot: &dyn Fn() -> bool) -> Option<SeedOutcome> {
    let replay = format!("replay it with --seed {seed} {}", args.join(" "));
    let failed = |why: String| SeedOutcome {
        seed,
        report: CheckReport {
            violation_count: 1,
            violations: vec![why],
            ..CheckReport::default()
        },
        faults: BTreeMap::new(),
        digest: 0,
        trace: Vec::new(),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return Some(failed(format!(
                "cannot find this program to run the seed: {e}"
            )))
        }
    };
    let mut child = match std::process::Command::new(exe)
        .args(args)
        .arg(format!("--child-seed={seed}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(failed(format!("cannot start the seed's process: {e}"))),
    };
    // Read while it runs (a long outcome would fill the pipe), and wait at most
    // SEED_REAL_TIME_MAX: simulated time stands still in a task that never yields, so a
    // seed caught in a busy loop would otherwise hang the whole run.
    let mut pipe = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if moot() => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) if started.elapsed() < SEED_REAL_TIME_MAX => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(failed(format!(
                    "the seed's process ran for {} s of real time without finishing (simulated time stood still: a task that never yields?), {replay}",
                    SEED_REAL_TIME_MAX.as_secs()
                )));
            }
            Err(e) => {
                let _ = child.kill();
                return Some(failed(format!("waiting for the seed's process: {e}")));
            }
        }
    };
    let stdout = reader.join().unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout);
    Some(
        match (status.success(), stdout.lines().last().map(parse_outcome)) {
            (true, Some(Ok(out))) if out.seed == seed => out,
            (true, Some(Err(e))) => failed(format!("the seed's process printed no outcome: {e}")),
            (ok, _) => failed(format!(
                "the seed's process failed ({}), {replay}",
                if ok {
                    "no outcome".to_string()
                } else {
                    status.to_string()
                }
            )),
        },
    )
}

/// The real time one seed may take (a seed takes a few seconds).
const SEED_REAL_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(300);

fn outcome_json(out: &SeedOutcome) -> String {
    let r = &out.report;
    serde_json::json!({
        "seed": out.seed,
        "digest": out.digest,
        "faults": out.faults,
        "ids": r.ids,
        "ns_values": r.ns_values,
        "acks": r.acks,
        "refusals": r.refusals,
        "recovery_ms_max": r.recovery_ms_max,
        "tallies": r.tallies,
        "violation_count": r.violation_count,
        "violations": r.violations,
    })
    .to_string()
}

fn parse_outcome(line: &str) -> Result<SeedOutcome, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let num = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("no whole number {k:?} in the outcome"))
    };
    let counts = |k: &str| -> Result<BTreeMap<String, u64>, String> {
        serde_json::from_value(v[k].clone()).map_err(|e| format!("{k}: {e}"))
    };
    Ok(SeedOutcome {
        seed: num("seed")?,
        digest: num("digest")?,
        faults: counts("faults")?,
        trace: Vec::new(),
        report: CheckReport {
            ids: num("ids")?,
            ns_values: num("ns_values")?,
            acks: num("acks")?,
            refusals: num("refusals")?,
            recovery_ms_max: num("recovery_ms_max")?,
            tallies: counts("tallies")?,
            violation_count: num("violation_count")?,
            violations: serde_json::from_value(v["violations"].clone())
                .map_err(|e| format!("violations: {e}"))?,
        },
    })
}
