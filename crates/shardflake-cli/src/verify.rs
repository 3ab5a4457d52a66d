//! `shardflake verify`: exact duplicate and order checks over a stream of ids.
//!
//! Method: the input is read in 8 MiB blocks and parsed in place (no allocation per line)
//! into a `Vec` of integers, counting order violations (an id not greater than the one on
//! the line before) on the way. A file of 16 MiB or more is split at line ends into one part
//! per core (at most two), read and parsed by one thread each. If there are no order
//! violations the ids are strictly increasing, so all distinct, and nothing more is done.
//! Otherwise each part (or, for standard input, each half) is sorted on its own thread with
//! an LSD radix sort (one byte per pass; passes whose byte is the same in every id are
//! skipped), and one branch-free merge walk over the two sorted runs counts every id equal
//! to the one before it. Nothing is sampled: every id is compared. Memory: 16 bytes per
//! 64-bit id when a sort is needed (the ids and the sort's scratch space), 8 otherwise;
//! twice that for 128-bit ids.
//!
//! Measured on the 2-core, 24 GiB development machine with other builds running (load
//! average about 4), release build, 100 million twitter ids (a 2.0 GB file from
//! `shardflake generate`, in the page cache): 2.4 to 4.3 s when the file is in order,
//! 5.8 to 10 s for the same ids shuffled (`shuf`): reading and parsing 3.6 to 7.0 s, radix
//! sort of two runs 1.3 to 5.7 s, counting 0.3 to 0.5 s. Peak memory 0.8 GB and 1.6 GB.
//! Against `sort_unstable` on the same 100 million ids the radix sort took 2.3 to 2.6 s
//! where `sort_unstable` took 2.5 to 3.0 s (one thread each; two runs in parallel gained
//! little on the loaded machine, whose memory bandwidth the passes share).
//!
//! The sort and the duplicate count are the library's `shardflake::check`, the checker every
//! test that collects ids uses too; this module adds the fast parallel reading.
//!
//! Exit status: 0 when every id is distinct, 1 when there is a duplicate, 2 when the input
//! cannot be read or a line is not an id of the layout (the message names the line).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use shardflake::check::{count_duplicates, radix_sort, RadixKey, RUNS_MAX};
use shardflake::encode::decode_u64;

use crate::kind::{self, Format, IdKind};
use crate::text;

/// Size of each block read from the input.
const READ_BUF_BYTES: usize = 8 << 20;

/// The longest line accepted, in bytes; a longer one cannot be an id of any layout.
const LINE_LEN_MAX: usize = 256;

/// Files at least this large are read by one thread per core, each taking a part.
const PARALLEL_READ_MIN_BYTES: u64 = 16 << 20;

/// Exit status for duplicates.
const EXIT_DUPLICATES: u8 = 1;

/// Exit status for unreadable or unparsable input.
const EXIT_BAD_INPUT: u8 = 2;

/// Arguments of `shardflake verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every id is distinct, 1 when there is a duplicate, 2 when \
                  the input cannot be read or a line is not an id of the layout."
)]
pub struct VerifyArgs {
    #[arg(long, default_value = "default", value_name = "NAME",
          help = kind::LAYOUT_HELP)]
    layout: String,
    /// How 64-bit ids are written [default: dec].
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// Print how long reading, sorting and counting took, to stderr.
    #[arg(long)]
    timings: bool,
    /// File with one id per line (`\n` or `\r\n`); `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    input: Option<String>,
}

/// Runs `shardflake verify`.
pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    match verify(&args) {
        Ok(report) => {
            print!("{report}");
            Ok(if report.duplicates > 0 {
                ExitCode::from(EXIT_DUPLICATES)
            } else {
                ExitCode::SUCCESS
            })
        }
        // Exit 1 is reserved for "duplicates found", so a script can tell the two apart.
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Ids read.
    pub count: u64,
    /// Ids equal to an id that came before them (so `count - duplicates` are distinct).
    pub duplicates: u64,
    /// Lines whose id is not greater than the previous line's.
    pub order_violations: u64,
    /// Some duplicated ids, as text, with how often each occurs.
    pub examples: Vec<(String, u64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "count: {}", self.count)?;
        writeln!(f, "duplicates: {}", self.duplicates)?;
        writeln!(f, "order_violations: {}", self.order_violations)?;
        for (id, times) in &self.examples {
            writeln!(f, "duplicate: {id} ({times} times)")?;
        }
        Ok(())
    }
}

fn verify(args: &VerifyArgs) -> Result<Report> {
    let id_kind = IdKind::parse(&args.layout)?;
    let input = match args.input.as_deref() {
        None | Some("-") => Input::Stdin,
        Some(path) => {
            let file = File::open(path).with_context(|| format!("cannot open {path}"))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            Input::File {
                path: path.into(),
                len,
            }
        }
    };
    let timings = args.timings;
    match id_kind {
        IdKind::Bits64(layout) => {
            let bits = layout.total_bits();
            let name = layout.name().to_string();
            let format = args.format.unwrap_or(Format::Dec);
            let parse = move |line: &[u8]| -> Result<u64, String> {
                // Decimal and hex have allocation-free fast paths; on failure, and for the
                // other encodings, the library's parser does the work and explains errors.
                let fast = match format {
                    Format::Dec => text::parse_dec(line),
                    Format::Hex => text::parse_hex(line),
                    Format::Base32 | Format::Base62 => None,
                };
                let id = match fast {
                    Some(id) => id,
                    None => {
                        let s = std::str::from_utf8(line)
                            .map_err(|_| "the line is not UTF-8".to_string())?;
                        decode_u64(s, format.encoding()).map_err(|e| e.to_string())?
                    }
                };
                if bits < 64 && id >> bits != 0 {
                    return Err(format!(
                        "{id} does not fit layout `{name}`: it has bits set above bit {bits}"
                    ));
                }
                Ok(id)
            };
            // A decimal id is about 20 bytes with its newline; reserving for 16 bytes per id
            // over-reserves for shorter ids, which costs only address space until the
            // pages are touched.
            check(input, 16, parse, |id: u64| id.to_string(), timings)
        }
        IdKind::Uuidv7 | IdKind::Ulid => {
            if args.format.is_some() {
                return Err(anyhow!("--format applies to 64-bit layouts only"));
            }
            let parse = crate::inspect::text_parser_128(&id_kind);
            let show = crate::inspect::text_formatter_128(&id_kind);
            check(input, 27, parse, show, timings)
        }
    }
}

/// Where the ids come from.
enum Input {
    Stdin,
    File { path: std::path::PathBuf, len: u64 },
}

/// What one reader found in its part of the input.
#[derive(Debug)]
struct Part<K> {
    ids: Vec<K>,
    lines: u64,
    violations: u64,
}

/// Why a part could not be read.
#[derive(Debug)]
enum ReadError {
    /// Line `line` (counted from 1 within the part) is not an id.
    Line {
        line: u64,
        why: String,
    },
    Io(io::Error),
}

/// Reads every id, then counts duplicates.
fn check<K: RadixKey>(
    input: Input,
    bytes_per_id: u64,
    parse: impl Fn(&[u8]) -> Result<K, String> + Sync,
    show: impl Fn(K) -> String,
    timings: bool,
) -> Result<Report> {
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(RUNS_MAX);
    let mut parts = match input {
        Input::Stdin => {
            let part = read_ids(io::stdin().lock(), &parse, 0);
            vec![part.map_err(|e| describe(e, 0))?]
        }
        Input::File { path, len } => {
            let threads = if len >= PARALLEL_READ_MIN_BYTES {
                threads
            } else {
                1
            };
            read_file(&path, len, threads, bytes_per_id, &parse)?
        }
    };
    let read_at = started.elapsed();
    let mut report = Report {
        count: parts.iter().map(|p| p.ids.len() as u64).sum(),
        order_violations: parts.iter().map(|p| p.violations).sum(),
        ..Report::default()
    };
    for pair in parts.windows(2) {
        if let (Some(a), Some(b)) = (pair[0].ids.last(), pair[1].ids.first()) {
            report.order_violations += u64::from(b <= a);
        }
    }
    if report.order_violations == 0 {
        if timings {
            eprintln!(
                "read+parse {:.3} s ({} parts); strictly increasing, so no sort was needed",
                read_at.as_secs_f64(),
                parts.len()
            );
        }
        return Ok(report);
    }
    let runs: Vec<&[K]> = if parts.len() == 1 {
        sort_runs(&mut parts[0].ids, threads)
    } else {
        // A part without order violations is strictly increasing: already sorted.
        std::thread::scope(|s| {
            for part in parts.iter_mut().filter(|p| p.violations > 0) {
                s.spawn(|| radix_sort(&mut part.ids));
            }
        });
        parts.iter().map(|p| p.ids.as_slice()).collect()
    };
    let sorted_at = started.elapsed();
    let (duplicates, examples) = count_duplicates(&runs);
    report.duplicates = duplicates;
    report.examples = examples.into_iter().map(|(k, n)| (show(k), n)).collect();
    if timings {
        eprintln!(
            "read+parse {:.3} s, sort {:.3} s ({} runs), count {:.3} s",
            read_at.as_secs_f64(),
            (sorted_at - read_at).as_secs_f64(),
            runs.len(),
            (started.elapsed() - sorted_at).as_secs_f64()
        );
    }
    Ok(report)
}

/// Turns a part's error into a message; `lines_before` is the number of lines in the parts
/// before it, so that the line number counts from the start of the input.
fn describe(e: ReadError, lines_before: u64) -> anyhow::Error {
    match e {
        ReadError::Line { line, why } => anyhow!("line {}: {why}", lines_before + line),
        ReadError::Io(e) => anyhow!(e).context("cannot read the input"),
    }
}

/// Reads a file in `threads` parts at once, split at line ends.
fn read_file<K: RadixKey>(
    path: &std::path::Path,
    len: u64,
    threads: usize,
    bytes_per_id: u64,
    parse: &(impl Fn(&[u8]) -> Result<K, String> + Sync),
) -> Result<Vec<Part<K>>> {
    let open = |offset: u64| -> io::Result<File> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(f)
    };
    let mut bounds = vec![0u64];
    {
        for k in 1..threads as u64 {
            // Each part after the first starts just after a line end.
            let guess = len * k / threads as u64;
            let mut window = Vec::with_capacity(LINE_LEN_MAX + 1);
            open(guess)?
                .take(LINE_LEN_MAX as u64 + 1)
                .read_to_end(&mut window)?;
            match window.iter().position(|&b| b == b'\n') {
                Some(i) if guess + (i as u64) + 1 < len => bounds.push(guess + i as u64 + 1),
                // No line end near the guess: a line that long is an error that the
                // single reader will report with its line number.
                _ => {}
            }
        }
    }
    bounds.push(len);
    bounds.dedup();
    let results: Vec<Result<Part<K>, ReadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (start, end) = (w[0], w[1]);
                s.spawn(move || {
                    let file = open(start).map_err(ReadError::Io)?;
                    let hint = ((end - start) / bytes_per_id) as usize;
                    read_ids(file.take(end - start), parse, hint)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .collect()
    });
    let mut parts = Vec::with_capacity(results.len());
    let mut lines_before = 0;
    for r in results {
        let part = r.map_err(|e| describe(e, lines_before))?;
        lines_before += part.lines;
        parts.push(part);
    }
    Ok(parts)
}

/// Parses every line of `reader`.
fn read_ids<K: RadixKey>(
    mut reader: impl Read,
    parse: &impl Fn(&[u8]) -> Result<K, String>,
    size_hint: usize,
) -> Result<Part<K>, ReadError> {
    let mut ids: Vec<K> = Vec::with_capacity(size_hint);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    // Bytes at the start of `buf` left over from the previous block: a partial line.
    let mut kept = 0;
    let mut line_no: u64 = 0;
    let mut violations = 0;
    let mut prev: Option<K> = None;
    let mut line = |bytes: &[u8], line_no: u64| -> Result<(), ReadError> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let id = parse(bytes).map_err(|why| ReadError::Line { line: line_no, why })?;
        if prev.is_some_and(|p| id <= p) {
            violations += 1;
        }
        prev = Some(id);
        ids.push(id);
        Ok(())
    };
    loop {
        let n = match reader.read(&mut buf[kept..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        let filled = kept + n;
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
            line_no += 1;
            line(&buf[start..start + end], line_no)?;
            start += end + 1;
        }
        kept = filled - start;
        if kept > LINE_LEN_MAX {
            return Err(ReadError::Line {
                line: line_no + 1,
                why: format!("longer than {LINE_LEN_MAX} bytes, so not an id"),
            });
        }
        buf.copy_within(start..filled, 0);
    }
    if kept > 0 {
        line_no += 1;
        line(&buf[..kept], line_no)?;
    }
    Ok(Part {
        ids,
        lines: line_no,
        violations,
    })
}

/// Splits `ids` into `threads` runs (at most [`RUNS_MAX`]) and sorts each on its own thread.
fn sort_runs<K: RadixKey>(ids: &mut [K], threads: usize) -> Vec<&[K]> {
    let run_len = ids.len().div_ceil(threads.clamp(1, RUNS_MAX)).max(1);
    std::thread::scope(|s| {
        for run in ids.chunks_mut(run_len) {
            s.spawn(|| radix_sort(run));
        }
    });
    ids.chunks(run_len).collect()
}

#[cfg(test)]
mod tests {
    use shardflake::check::DUPLICATES_SHOWN_MAX;

    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    }

    #[test]
    fn duplicates_are_counted_across_runs() {
        let mut seed = 11;
        let ids: Vec<u64> = (0..200_000).map(|_| lcg(&mut seed) % 150_000).collect();
        let mut expect = ids.clone();
        expect.sort_unstable();
        let distinct = {
            let mut d = expect.clone();
            d.dedup();
            d.len() as u64
        };
        for threads in [1, 2, 3] {
            let mut v = ids.clone();
            let runs = sort_runs(&mut v, threads);
            let (dups, examples) = count_duplicates(&runs);
            assert_eq!(dups, ids.len() as u64 - distinct, "threads {threads}");
            assert_eq!(examples.len(), DUPLICATES_SHOWN_MAX);
            for (k, times) in examples {
                let real = expect.iter().filter(|&&x| x == k).count() as u64;
                assert_eq!(times, real, "id {k}");
            }
        }
    }

    #[test]
    fn one_id_three_times_across_two_runs() {
        let mut v: Vec<u64> = vec![5, 1, 5, 2, 5, 3, 1];
        let runs = sort_runs(&mut v, 2);
        assert_eq!(runs.len(), 2);
        assert_eq!(count_duplicates(&runs), (3, vec![(1, 2), (5, 3)]));
    }

    #[test]
    fn a_file_read_in_parts_counts_lines_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let parse = |l: &[u8]| text::parse_dec(l).ok_or_else(|| format!("bad {l:?}"));
        let mut text: String = (0..100_000u64).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let len = text.len() as u64;
        let parts = read_file(&path, len, 2, 8, &parse).unwrap();
        assert_eq!(parts.len(), 2);
        let all: Vec<u64> = parts.iter().flat_map(|p| p.ids.iter().copied()).collect();
        assert_eq!(all, (0..100_000).collect::<Vec<u64>>());
        assert!(parts.iter().all(|p| p.violations == 0));
        // A bad line in the second part is numbered from the start of the file.
        text.push_str("x\n");
        std::fs::write(&path, &text).unwrap();
        let e = read_file(&path, len + 2, 2, 8, &parse).unwrap_err();
        assert_eq!(e.to_string(), "line 100001: bad [120]");
    }

    #[test]
    fn reading_counts_violations_and_names_bad_lines() {
        let parse = |l: &[u8]| text::parse_dec(l).ok_or_else(|| "bad".to_string());
        let part = read_ids(&b"1\n2\r\n2\n1\n7"[..], &parse, 0).unwrap();
        assert_eq!(part.ids, [1u64, 2, 2, 1, 7]);
        assert_eq!((part.lines, part.violations), (5, 2));
        let line_of = |input: &[u8]| match read_ids(input, &parse, 0) {
            Err(ReadError::Line { line, .. }) => line,
            _ => panic!("expected a bad line"),
        };
        assert_eq!(line_of(b"1\n2\nx\n"), 3);
        assert_eq!(line_of(b"1\n\n3\n"), 2);
    }
}
