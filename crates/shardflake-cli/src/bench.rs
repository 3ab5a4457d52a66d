//! `shardflake bench`: throughput of our generators next to peer crates, in one process and
//! one run, so that every row sees the same machine, clock and load.
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

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use shardflake::{ClockPolicy, Layout, SnowflakeGenerator, TemporalGenerator};

/// Ids issued between two looks at the time, so that reading `Instant` costs little per id.
const CHECK_EVERY_IDS: u64 = 1024;

/// Ids per call on the batch and range rows.
const BATCH_IDS: usize = 4096;

/// Limits of the flags.
const SECONDS_MAX: f64 = 60.0;
const RUNS_MAX: u32 = 99;
const THREADS_MAX: usize = 256;

/// Arguments of `shardflake bench`.
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

/// What one thread did in one measurement.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    ids: u64,
    /// Timestamp of the last id minus the wall clock at the end, in ms.
    ahead_ms: i64,
    /// Calls that returned an error (counted, then the thread carries on).
    errors: u64,
    /// From the start until the last thread stopped.
    elapsed: Duration,
}

impl Outcome {
    fn per_s(&self) -> f64 {
        self.ids as f64 / self.elapsed.as_secs_f64()
    }
}

/// One row of the table: a name and how to measure it on `threads` threads.
struct Row {
    name: String,
    measure: Box<dyn Fn(usize, Duration) -> Result<Outcome>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs `step` on `threads` threads until `duration` is over. Each thread gets the state
/// `make()` returns (an `Arc` of a shared generator, or a generator of its own); `step`
/// issues some ids and returns how many and the last one; `ts_ms` gives an id's Unix ms.
///
/// Generic rather than `dyn`: each row's loop is compiled for its own generator, so the
/// harness adds no indirect call per id and fast generators are not flattened towards the
/// cost of the harness.
fn measure<S, I, M, F, T>(
    threads: usize,
    duration: Duration,
    make: &M,
    step: &F,
    ts_ms: &T,
) -> Result<Outcome>
where
    I: Copy,
    M: Fn() -> S + Sync + ?Sized,
    F: Fn(&mut S) -> Result<(u64, I)> + Sync + ?Sized,
    T: Fn(I) -> u64 + Sync + ?Sized,
{
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<Result<Outcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<Outcome> {
                    // Made on the thread that uses it: some peers' state is not `Send`.
                    let mut state = make();
                    let mut ids = 0;
                    let mut errors = 0;
                    let mut last = None;
                    let mut next_check = CHECK_EVERY_IDS;
                    loop {
                        match step(&mut state) {
                            Ok((n, id)) => {
                                ids += n;
                                last = Some(black_box(id));
                            }
                            Err(_) => errors += 1,
                        }
                        // Counted in ids, not calls, so that batch rows stop on time too.
                        if ids + errors >= next_check {
                            if Instant::now() >= deadline {
                                break;
                            }
                            next_check = ids + errors + CHECK_EVERY_IDS;
                        }
                    }
                    let now = now_ms() as i64;
                    let ahead_ms = last.map_or(0, |id| ts_ms(id) as i64 - now);
                    Ok(Outcome {
                        ids,
                        ahead_ms,
                        errors,
                        elapsed: Duration::ZERO,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .collect()
    });
    // Rates use the time until the last thread stopped, which is a little over `duration`.
    let mut total = Outcome {
        ids: 0,
        ahead_ms: i64::MIN,
        errors: 0,
        elapsed: started.elapsed(),
    };
    for r in results {
        let r = r?;
        total.ids += r.ids;
        total.errors += r.errors;
        total.ahead_ms = total.ahead_ms.max(r.ahead_ms);
    }
    Ok(total)
}

/// A row whose generator is shared by every thread.
fn shared<G, I>(
    name: impl Into<String>,
    make: impl Fn() -> G + 'static,
    step: impl Fn(&G) -> Result<(u64, I)> + Sync + 'static,
    ts_ms: impl Fn(I) -> u64 + Sync + 'static,
) -> Row
where
    G: Send + Sync + 'static,
    I: Copy + 'static,
{
    Row {
        name: name.into(),
        measure: Box::new(move |threads, duration| {
            let g = Arc::new(make());
            let make_ref = move || Arc::clone(&g);
            measure(
                threads,
                duration,
                &make_ref,
                &|g: &mut Arc<G>| step(g),
                &ts_ms,
            )
        }),
    }
}

/// A row whose generator is shared by every thread, each filling a buffer of its own.
fn shared_buffer<G>(
    name: impl Into<String>,
    make: impl Fn() -> G + 'static,
    fill: impl Fn(&G, &mut [u64]) -> Result<()> + Sync + 'static,
    ts_ms: impl Fn(u64) -> u64 + Sync + 'static,
) -> Row
where
    G: Send + Sync + 'static,
{
    Row {
        name: name.into(),
        measure: Box::new(move |threads, duration| {
            let g = Arc::new(make());
            let make_ref = move || (Arc::clone(&g), vec![0u64; BATCH_IDS]);
            measure(
                threads,
                duration,
                &make_ref,
                &|(g, buf): &mut (Arc<G>, Vec<u64>)| {
                    fill(g, buf)?;
                    // Every id written must stay written.
                    black_box(&mut buf[..]);
                    Ok((buf.len() as u64, buf[buf.len() - 1]))
                },
                &ts_ms,
            )
        }),
    }
}

/// A row with one generator per thread.
fn per_thread<G, I>(
    name: impl Into<String>,
    make: impl Fn() -> G + Sync + 'static,
    step: impl Fn(&mut G) -> Result<(u64, I)> + Sync + 'static,
    ts_ms: impl Fn(I) -> u64 + Sync + 'static,
) -> Row
where
    G: 'static,
    I: Copy + 'static,
{
    Row {
        name: name.into(),
        measure: Box::new(move |threads, duration| {
            measure(threads, duration, &make, &step, &ts_ms)
        }),
    }
}

fn twitter(policy: ClockPolicy) -> SnowflakeGenerator {
    SnowflakeGenerator::builder(Layout::preset("twitter").expect("a preset"))
        .node("datacenter", 1)
        .node("worker", 1)
        .policy(policy)
        .build()
        .expect("the twitter epoch is in the past")
}

fn temporal() -> TemporalGenerator {
    TemporalGenerator::builder(Layout::preset("temporal").expect("a preset"))
        .host(1)
        .build()
        .expect("the temporal epoch is in the past")
}

fn rows(borrow_ahead_ms_max: u64) -> Vec<Row> {
    let tw = Layout::preset("twitter").expect("a preset");
    let tw_ms = move |id: u64| tw.ms_of_tick(tw.timestamp_field().get(id));
    let tp = Layout::preset("temporal").expect("a preset");
    // A temporal id carries its shard (an hour), not a millisecond: the "ahead" column shows
    // the start of the shard, so it is up to an hour behind by design.
    let tp_ms = move |id: u64| tp.ms_of_tick(tp.timestamp_field().get(id));
    let uuid_ms = |u: uuid::Uuid| (u.as_u128() >> 80) as u64;
    let mut rows = vec![
        shared(
            "shardflake twitter next_id, wait (capped 4.096M/s)",
            || twitter(ClockPolicy::default()),
            |g| Ok((1, g.next_id()?)),
            tw_ms.clone(),
        ),
        shared(
            format!("shardflake twitter next_id, borrow <= {borrow_ahead_ms_max} ms"),
            move || {
                twitter(ClockPolicy::Borrow {
                    borrow_ahead_ms_max,
                })
            },
            |g| Ok((1, g.next_id()?)),
            tw_ms.clone(),
        ),
        shared_buffer(
            format!("shardflake twitter fill({BATCH_IDS}), wait"),
            || twitter(ClockPolicy::default()),
            |g, buf| Ok(g.fill(buf)?),
            tw_ms.clone(),
        ),
        shared(
            "shardflake temporal next_id (33-bit counter)",
            temporal,
            |g| Ok((1, g.next_id()?)),
            tp_ms.clone(),
        ),
    ];
    rows.push(shared_buffer(
        format!("shardflake temporal ranges into a {BATCH_IDS}-id buffer"),
        temporal,
        |g, buf| {
            let mut i = 0;
            while i < buf.len() {
                for id in g.next_range((buf.len() - i) as u64)? {
                    buf[i] = id;
                    i += 1;
                }
            }
            Ok(())
        },
        tp_ms,
    ));
    rows.push(shared(
        "shardflake uuid7::next (thread-local, monotonic)",
        || (),
        |_| Ok((1, shardflake::uuid7::next())),
        |u: shardflake::Uuid7| u.timestamp_ms(),
    ));
    rows.push(per_thread(
        "shardflake Uuid7Generator (monotonic, per thread)",
        shardflake::Uuid7Generator::new,
        |g| Ok((1, g.next_id())),
        |u: shardflake::Uuid7| u.timestamp_ms(),
    ));
    rows.push(shared(
        "shardflake ulid::next (thread-local, monotonic)",
        || (),
        |_| Ok((1, shardflake::ulid::next()?)),
        |u: shardflake::Ulid| u.timestamp_ms(),
    ));
    rows.push(per_thread(
        "shardflake UlidGenerator (monotonic, per thread)",
        shardflake::UlidGenerator::new,
        |g| Ok((1, g.next_id()?)),
        |u: shardflake::Ulid| u.timestamp_ms(),
    ));
    // Peers.
    rows.push(shared(
        "uuid Uuid::now_v7 (process-wide monotonic context)",
        || (),
        |_| Ok((1, uuid::Uuid::now_v7())),
        uuid_ms,
    ));
    rows.push(per_thread(
        "uuid new_v7 + ContextV7 (monotonic, per thread)",
        uuid::ContextV7::new,
        |ctx| Ok((1, uuid::Uuid::new_v7(uuid::Timestamp::now(&*ctx)))),
        uuid_ms,
    ));
    rows.push(per_thread(
        "ulid Generator (monotonic, per thread)",
        ulid::Generator::new,
        |g| match g.generate() {
            Ok(u) => Ok((1, u)),
            Err(_) => bail!("ulid: monotonic overflow"),
        },
        |u: ulid::Ulid| u.timestamp_ms(),
    ));
    rows.push(per_thread(
        "scru128 Generator (monotonic, per thread)",
        || scru128::Generator::with_rand010(rand::rng()),
        |g| Ok((1, g.generate())),
        |id: scru128::Id| id.timestamp(),
    ));
    rows.push(shared(
        "ferroid AtomicSnowflakeGenerator twitter",
        || {
            ferroid::generator::AtomicSnowflakeGenerator::<ferroid::id::SnowflakeTwitterId, _>::new(
                1,
                ferroid::time::MonotonicClock::<1>::with_epoch(ferroid::time::TWITTER_EPOCH),
            )
        },
        |g| Ok((1, g.next_id(|_| std::thread::yield_now()))),
        |id: ferroid::id::SnowflakeTwitterId| {
            id.timestamp() + ferroid::time::TWITTER_EPOCH.as_millis() as u64
        },
    ));
    rows.push(shared(
        "ferroid thread-local Ulid::new_ulid_mono",
        || (),
        |_| {
            Ok((
                1,
                ferroid::generator::thread_local::Ulid::new_ulid_mono(|_| std::thread::yield_now()),
            ))
        },
        |id: ferroid::id::ULID| id.timestamp() as u64,
    ));
    rows.push(shared(
        "snowflaked sync::Generator (42-bit ms, 1970 epoch)",
        || snowflaked::sync::Generator::new(1),
        |g| Ok((1, g.generate::<u64>())),
        |id: u64| id >> 22,
    ));
    rows
}

fn median(mut v: Vec<Outcome>) -> Outcome {
    v.sort_by(|a, b| a.per_s().total_cmp(&b.per_s()));
    let mid = v[v.len() / 2];
    Outcome {
        ids: mid.ids,
        elapsed: mid.elapsed,
        ahead_ms: v.iter().map(|o| o.ahead_ms).max().unwrap_or(0),
        errors: v.iter().map(|o| o.errors).sum(),
    }
}

fn rate(o: &Outcome) -> String {
    let per_s = o.per_s();
    if per_s >= 1e6 {
        format!("{:.2}M", per_s / 1e6)
    } else {
        format!("{:.0}k", per_s / 1e3)
    }
}

/// Runs `shardflake bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
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
    let rows: Vec<Row> = rows(args.borrow_ahead_ms_max)
        .into_iter()
        .filter(|r| args.only.as_deref().is_none_or(|o| r.name.contains(o)))
        .collect();
    if rows.is_empty() {
        bail!("no row matches --only");
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
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
            single.push((row.measure)(1, duration)?);
            all.push((row.measure)(threads, duration)?);
        }
        let (single, all) = (median(single), median(all));
        println!(
            "{:width$}  {:>10}  {:>10}  {:>9}  {:>9}  {:>6}",
            row.name,
            rate(&single),
            rate(&all),
            single.ahead_ms,
            all.ahead_ms,
            single.errors + all.errors,
        );
    }
    if rows.iter().any(|r| r.name.contains("temporal")) {
        println!(
            "temporal ids carry an hourly shard index, not a millisecond: their \"ahead\" is \
             the start of the current shard, up to an hour behind by design"
        );
    }
    Ok(ExitCode::SUCCESS)
}
