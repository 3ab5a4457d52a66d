//! `shardflake generate`: ids, one per line, as fast as the layout allows.
//!
//! 64-bit ids are taken in runs with one atomic operation each (`next_range`) and formatted
//! without allocating into a large buffered writer.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use shardflake::encode::encode_u64_to;
use shardflake::{
    ClockPolicy, GenerateError, IdRange, Layout, SnowflakeGenerator, TemporalGenerator,
    UlidGenerator, Uuid7Generator,
};

use crate::kind::{self, Format, IdKind};
use crate::text::{format_dec, DEC_LEN_MAX};

/// Ids taken from the generator per call, and so per flush of the id buffer.
const FILL_CHUNK_IDS: usize = 4096;

/// Size of the stdout buffer.
pub const OUT_BUF_BYTES: usize = 1 << 16;

/// The largest `--borrow-ahead-max`: one minute ahead of the wall clock.
pub const BORROW_AHEAD_MS_LIMIT: u64 = 60_000;

/// Arguments of `shardflake generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[arg(long, default_value = "default", value_name = "NAME",
          help = kind::LAYOUT_HELP)]
    layout: String,
    /// How many ids to generate.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    #[arg(long, value_name = "M", help = kind::MACHINE_ID_HELP)]
    machine_id: Option<u64>,
    #[arg(long, value_name = "D", help = kind::DATACENTER_ID_HELP)]
    datacenter_id: Option<u64>,
    /// Output encoding of 64-bit ids (uuidv7 and ulid always print their canonical text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// Let timestamps run up to this far ahead of the wall clock (`500ms`, `1s`; at most
    /// `1m`) instead of waiting when a tick's sequence runs out. Without it the generator
    /// waits for the next tick, so a layout's rate cap holds (twitter: 4,096,000 ids/s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    borrow_ahead_max: Option<std::time::Duration>,
}

/// Runs `shardflake generate`.
pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let id_kind = IdKind::parse(&args.layout)?;
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(OUT_BUF_BYTES, stdout);
    let written = match &id_kind {
        IdKind::Bits64(layout) => generate_64(&args, layout, &mut out),
        IdKind::Uuidv7 | IdKind::Ulid => {
            if args.format.is_some() {
                bail!(
                    "--format applies to 64-bit layouts only; `{}` ids are always printed in \
                     their canonical text",
                    id_kind.name()
                );
            }
            if args.machine_id.is_some() || args.datacenter_id.is_some() {
                bail!(
                    "--machine-id and --datacenter-id do not apply to `{}`, which has no node \
                     field",
                    id_kind.name()
                );
            }
            if args.borrow_ahead_max.is_some() {
                bail!("--borrow-ahead-max applies to 64-bit layouts only");
            }
            generate_128(&id_kind, args.count, &mut out)
        }
    };
    match written.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A reader that stops early (`| head`) is not an error of ours.
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn policy(borrow_ahead_max: Option<std::time::Duration>) -> Result<ClockPolicy> {
    Ok(
        match borrow_ahead_max.map(|d| d.as_millis().min(u64::MAX as u128) as u64) {
            None => ClockPolicy::default(),
            Some(ms) if ms > BORROW_AHEAD_MS_LIMIT => {
                bail!("--borrow-ahead-max {ms} ms is out of range 0..={BORROW_AHEAD_MS_LIMIT} ms")
            }
            Some(ms) => ClockPolicy::Borrow {
                borrow_ahead_ms_max: ms,
            },
        },
    )
}

fn generate_64(args: &GenerateArgs, layout: &Layout, out: &mut impl Write) -> Result<()> {
    let nodes = kind::node_values(layout, args.machine_id, args.datacenter_id)?;
    let format = args.format.unwrap_or(Format::Dec);
    let cannot = || format!("cannot generate `{}` ids", layout.name());
    if layout.is_temporal() {
        // The temporal layout has its own generator: a counter per shard instead of a
        // sequence per tick, so there is no clock to borrow from.
        if args.borrow_ahead_max.is_some() {
            bail!("--borrow-ahead-max does not apply to layout `temporal`, whose counter does not depend on the clock within a shard");
        }
        let host = nodes[0].1;
        let generator = TemporalGenerator::builder(layout.clone())
            .host(host)
            .build()
            .with_context(cannot)?;
        return write_ids(|max| generator.next_range(max), args.count, format, out);
    }
    let mut builder =
        SnowflakeGenerator::builder(layout.clone()).policy(policy(args.borrow_ahead_max)?);
    for (field, value) in &nodes {
        builder = builder.node(field, *value);
    }
    let generator = builder.build().with_context(cannot)?;
    write_ids(|max| generator.next_range(max), args.count, format, out)?;
    let stats = generator.stats();
    if stats.borrowed_ticks > 0 {
        eprintln!(
            "note: borrowed {} ticks ahead of the wall clock, at most {} ms ahead",
            stats.borrowed_ticks, stats.max_ahead_ms
        );
    }
    Ok(())
}

/// Writes `count` ids taken in runs from `next_range`.
fn write_ids(
    mut next_range: impl FnMut(u64) -> Result<IdRange, GenerateError>,
    count: u64,
    format: Format,
    out: &mut impl Write,
) -> Result<()> {
    let mut ids = vec![0u64; FILL_CHUNK_IDS];
    let mut left = count;
    while left > 0 {
        let chunk = left.min(FILL_CHUNK_IDS as u64) as usize;
        let mut filled = 0;
        while filled < chunk {
            let range = next_range((chunk - filled) as u64)?;
            for id in range {
                ids[filled] = id;
                filled += 1;
            }
        }
        write_chunk(&ids[..chunk], format, out)?;
        left -= chunk as u64;
    }
    Ok(())
}

/// Writes `ids` one per line in `format` (also `fetch`'s output).
pub fn write_chunk(ids: &[u64], format: Format, out: &mut impl Write) -> io::Result<()> {
    if format == Format::Dec {
        // The common case gets a formatter that does two digits per division.
        let mut line = [0u8; DEC_LEN_MAX + 1];
        for &id in ids {
            let mut digits = [0u8; DEC_LEN_MAX];
            let s = format_dec(id, &mut digits);
            let n = s.len();
            line[..n].copy_from_slice(s);
            line[n] = b'\n';
            out.write_all(&line[..=n])?;
        }
        return Ok(());
    }
    let enc = format.encoding();
    let mut text = String::with_capacity(ids.len() * 17);
    for &id in ids {
        encode_u64_to(id, enc, &mut text);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
}

fn generate_128(id_kind: &IdKind, count: u64, out: &mut impl Write) -> Result<()> {
    match id_kind {
        IdKind::Uuidv7 => {
            let mut generator = Uuid7Generator::new();
            for _ in 0..count {
                writeln!(out, "{}", generator.next_id())?;
            }
        }
        IdKind::Ulid => {
            let mut generator = UlidGenerator::new();
            for _ in 0..count {
                writeln!(out, "{}", generator.next_id()?)?;
            }
        }
        IdKind::Bits64(_) => unreachable!("64-bit layouts are handled by generate_64"),
    }
    Ok(())
}
