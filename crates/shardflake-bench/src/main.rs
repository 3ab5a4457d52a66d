//! `shardflake-bench`: the throughput table of shardflake's generators next to peer crates
//! (uuid, ulid, scru128, ferroid, snowflaked), measured in the same run.
//!
//! ```sh
//! cargo run --release -p shardflake-bench                  # every row, median of 3 runs of 1 s
//! cargo run --release -p shardflake-bench -- --only ferroid --seconds 1 --runs 1
//! ```
//!
//! The harness, the flags and our rows are the library's (`shardflake bench` prints the same
//! table without the peers); this binary adds the peers' rows. They live here so that the
//! shipped `shardflake` binary links none of the peer crates.

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use shardflake_bench::{BenchArgs, Row};

/// Measure the throughput of shardflake's generators next to peer crates, in-process.
#[derive(Debug, Parser)]
#[command(name = "shardflake-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn peer_rows() -> Vec<Row> {
    let uuid_ms = |u: uuid::Uuid| (u.as_u128() >> 80) as u64;
    vec![
        Row::shared(
            "uuid Uuid::now_v7 (process-wide monotonic context)",
            || (),
            |_| Ok((1, uuid::Uuid::now_v7())),
            uuid_ms,
        ),
        Row::per_thread(
            "uuid new_v7 + ContextV7 (monotonic, per thread)",
            uuid::ContextV7::new,
            |ctx| Ok((1, uuid::Uuid::new_v7(uuid::Timestamp::now(&*ctx)))),
            uuid_ms,
        ),
        Row::per_thread(
            "ulid Generator (monotonic, per thread)",
            ulid::Generator::new,
            |g| match g.generate() {
                Ok(u) => Ok((1, u)),
                Err(_) => bail!("ulid: monotonic overflow"),
            },
            |u: ulid::Ulid| u.timestamp_ms(),
        ),
        Row::per_thread(
            "scru128 Generator (monotonic, per thread)",
            || scru128::Generator::with_rand010(rand::rng()),
            |g| Ok((1, g.generate())),
            |id: scru128::Id| id.timestamp(),
        ),
        Row::shared(
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
        ),
        Row::shared(
            "ferroid thread-local Ulid::new_ulid_mono",
            || (),
            |_| {
                Ok((
                    1,
                    ferroid::generator::thread_local::Ulid::new_ulid_mono(|_| {
                        std::thread::yield_now()
                    }),
                ))
            },
            |id: ferroid::id::ULID| id.timestamp() as u64,
        ),
        Row::shared(
            "snowflaked sync::Generator (42-bit ms, 1970 epoch)",
            || snowflaked::sync::Generator::new(1),
            |g| Ok((1, g.generate::<u64>())),
            |id: u64| id >> 22,
        ),
    ]
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match shardflake_bench::run(&cli.bench, peer_rows()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
