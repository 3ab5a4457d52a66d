//! The `shardflake` binary as users run it: `generate`, `inspect`, `verify` and `bench`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn shardflake() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardflake"))
}

fn run(args: &[&str]) -> Output {
    shardflake().args(args).output().expect("the binary runs")
}

fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = shardflake()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    // Feed stdin from a thread so that a large input cannot deadlock against stdout.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("the binary finishes");
    feeder.join().expect("the feeder thread");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A layout, the flags given to `generate`, the node fields they must set, the time unit in ms.
type RoundTrip<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, u64)], u64);

#[test]
fn generate_then_inspect_round_trips_every_preset() {
    let cases: &[RoundTrip] = &[
        (
            "twitter",
            &["--machine-id", "7", "--datacenter-id", "3"],
            &[("worker", 7), ("datacenter", 3)],
            1,
        ),
        (
            "discord",
            // The same mapping as `serve`: the machine id sets the lowest node field.
            &["--machine-id", "31", "--datacenter-id", "2"],
            &[("worker", 2), ("process", 31)],
            1,
        ),
        (
            "instagram",
            &["--machine-id", "8191"],
            &[("shard", 8191)],
            1,
        ),
        (
            "sonyflake",
            &["--machine-id", "65535"],
            &[("machine", 65535)],
            10,
        ),
        (
            "sonyflake-v2",
            &["--machine-id", "12"],
            &[("machine", 12)],
            10,
        ),
        ("default", &["--machine-id", "1023"], &[("node", 1023)], 1),
        ("js-safe", &["--machine-id", "63"], &[("node", 63)], 1),
        (
            "temporal",
            &["--machine-id", "5"],
            &[("host", 5)],
            3_600_000,
        ),
    ];
    for (layout, flags, fields, unit_ms) in cases {
        let before = now_ms();
        let mut args = vec!["generate", "--layout", layout, "--count", "5"];
        args.extend_from_slice(flags);
        let gen = run(&args);
        assert!(gen.status.success(), "{layout}: {}", stderr(&gen));
        let after = now_ms();
        let ids: Vec<String> = stdout(&gen).lines().map(String::from).collect();
        assert_eq!(ids.len(), 5, "{layout}");
        let numbers: Vec<u64> = ids.iter().map(|s| s.parse().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{layout}: {numbers:?}"
        );

        let mut args = vec!["inspect", "--layout", layout, "--json"];
        args.extend(ids.iter().map(String::as_str));
        let insp = run(&args);
        assert!(insp.status.success(), "{layout}: {}", stderr(&insp));
        let objects = json_lines(&insp);
        assert_eq!(objects.len(), 5, "{layout}");
        for (obj, id) in objects.iter().zip(&numbers) {
            assert_eq!(obj["id"].as_u64(), Some(*id), "{layout}");
            assert_eq!(obj["id_str"].as_str(), Some(id.to_string().as_str()));
            assert_eq!(obj["layout"].as_str(), Some(*layout));
            for (field, value) in *fields {
                assert_eq!(obj[*field].as_u64(), Some(*value), "{layout} {field}");
            }
            let ts = obj["timestamp_ms"].as_u64().unwrap();
            assert!(
                ts + unit_ms > before && ts <= after,
                "{layout}: timestamp {ts} outside [{before}, {after}] for a {unit_ms} ms unit"
            );
            assert!(obj["time"].as_str().unwrap().ends_with('Z'));
        }
    }
}

/// `js-safe` ids stay within 2^53 − 1 and read back exactly as the double `JSON.parse` makes
/// of them, in every format a JSON reader sees: the decimal number and `id_str`.
#[test]
fn js_safe_ids_survive_json_numbers() {
    let gen = run(&[
        "generate",
        "--layout",
        "js-safe",
        "--count",
        "1000",
        "--machine-id",
        "63",
    ]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    let ids: Vec<u64> = stdout(&gen).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    for id in &ids {
        assert!(*id <= shardflake::JS_MAX_SAFE_INTEGER, "{id}");
        assert_eq!(*id as f64 as u64, *id);
    }
    let insp = run(&[
        "inspect",
        "--layout",
        "js-safe",
        "--json",
        &ids[999].to_string(),
    ]);
    assert!(insp.status.success(), "{}", stderr(&insp));
    let v = &json_lines(&insp)[0];
    assert_eq!(v["id"].as_f64().map(|f| f as u64), Some(ids[999]));
    assert_eq!(v["id_str"].as_str(), Some(ids[999].to_string().as_str()));
    assert_eq!(v["node"].as_u64(), Some(63));
}

#[test]
fn generate_fails_once_a_layout_has_overflowed() {
    // Baidu's default UidGenerator layout has 28 bits of seconds from 2016-05-20: it ran out
    // on 2024-11-20, which is why its users change the widths.
    let o = run(&[
        "generate",
        "--layout",
        "uidgenerator",
        "--machine-id",
        "4194303",
    ]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("overflowed on 2024-11-20T21:24:16.000Z"),
        "{}",
        stderr(&o)
    );
}

/// Regression: a temporal layout whose shard field had run out printed ids with the sign bit
/// set and exited 0.
#[test]
fn generate_refuses_a_temporal_layout_whose_shard_field_ran_out() {
    let spec = "temporal:granularity=1s,shard=20,host=10,counter=33";
    let o = run(&["generate", "--layout", spec, "--count", "3"]);
    assert!(!o.status.success(), "exit 0 with: {}", stdout(&o));
    assert!(o.stdout.is_empty(), "printed: {}", stdout(&o));
    assert!(
        stderr(&o).contains("overflowed on 2025-01-13T03:16:16.000Z"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn inspect_json_decodes_discords_documented_example() {
    // Discord API reference, "Snowflakes": 175928847299117063 was created at
    // 2016-04-30 11:18:25.796 UTC by worker 1, process 0, increment 7.
    let o = run(&[
        "inspect",
        "--layout",
        "discord",
        "--json",
        "175928847299117063",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["timestamp_ms"].as_u64(), Some(1462015105796));
    assert_eq!(v["time"].as_str(), Some("2016-04-30T11:18:25.796Z"));
    assert_eq!(v["worker"].as_u64(), Some(1));
    assert_eq!(v["process"].as_u64(), Some(0));
    assert_eq!(v["increment"].as_u64(), Some(7));
    assert_eq!(v["id_str"].as_str(), Some("175928847299117063"));
    // The same id in hexadecimal decodes the same way.
    let o = run(&[
        "inspect",
        "--layout",
        "discord",
        "--json",
        "0x271065ac1020007",
    ]);
    assert_eq!(json_lines(&o)[0]["increment"].as_u64(), Some(7));
    assert_eq!(json_lines(&o)[0]["id"].as_u64(), Some(175928847299117063));
}

#[test]
fn inspect_json_names_fields_per_preset() {
    // Id 0 is the epoch with every field zero; the keys are each preset's field names.
    let expect: &[(&str, &[&str], u64)] = &[
        (
            "twitter",
            &["timestamp", "datacenter", "worker", "sequence"],
            1288834974657,
        ),
        (
            "discord",
            &["timestamp", "worker", "process", "increment"],
            1420070400000,
        ),
        (
            "instagram",
            &["timestamp", "shard", "sequence"],
            1314220021721,
        ),
        (
            "sonyflake",
            &["timestamp", "sequence", "machine"],
            1409529600000,
        ),
        (
            "uidgenerator",
            &["timestamp", "worker", "sequence"],
            1463702400000,
        ),
        ("temporal", &["shard", "host", "counter"], 1735689600000),
        ("js-safe", &["timestamp", "node", "sequence"], 1735689600000),
    ];
    for (layout, fields, epoch) in expect {
        let o = run(&["inspect", "--layout", layout, "--json", "0"]);
        let v = &json_lines(&o)[0];
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        for f in *fields {
            assert!(keys.contains(f), "{layout}: {keys:?}");
        }
        assert_eq!(obj.len(), 5 + fields.len(), "{layout}: {keys:?}");
        assert_eq!(v["timestamp_ms"].as_u64(), Some(*epoch), "{layout}");
    }
}

#[test]
fn inspect_plain_shows_fields_and_the_overflow_date() {
    let o = run(&["inspect", "--layout", "twitter", "1050118621198921728"]);
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(s.contains("2018-10-10T20:19:24."), "{s}");
    assert!(s.contains("overflows     2080-07-10T17:30:30.209Z"), "{s}");
    // Without ids: a description of the layout, with its overflow date.
    let o = run(&["inspect", "--layout", "sonyflake"]);
    let s = stdout(&o);
    assert!(s.contains("unit       10 ms"), "{s}");
    assert!(s.contains("overflows  2188-"), "{s}");
    assert!(s.contains("machine"), "{s}");
    let o = run(&["inspect", "--layout", "uidgenerator", "--json"]);
    let v = &json_lines(&o)[0];
    assert_eq!(
        v["overflow_time"].as_str(),
        Some("2024-11-20T21:24:16.000Z")
    );
    assert_eq!(v["fields"][1]["name"].as_str(), Some("worker"));
    assert_eq!(v["fields"][1]["max"].as_u64(), Some(4194303));
}

#[test]
fn unknown_layout_is_rejected_with_the_known_names() {
    for sub in ["generate", "inspect", "verify"] {
        let o = run(&[sub, "--layout", "snowflak"]);
        assert!(!o.status.success(), "{sub}");
        let e = stderr(&o);
        assert!(e.contains("`snowflak`"), "{sub}: {e}");
        assert!(e.contains("twitter"), "{sub}: {e}");
    }
}

#[test]
fn out_of_range_node_ids_name_the_flag_and_the_range() {
    let o = run(&["generate", "--layout", "twitter", "--machine-id", "32"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("--machine-id 32 is out of range for layout `twitter`: it sets field `worker`, which holds 0..=31"),
        "{}",
        stderr(&o)
    );
    let o = run(&["generate", "--layout", "discord", "--datacenter-id", "99"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--datacenter-id 99"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`worker`, which holds 0..=31"),
        "{}",
        stderr(&o)
    );
    let o = run(&["generate", "--layout", "sonyflake", "--datacenter-id", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--datacenter-id does not apply"),
        "{}",
        stderr(&o)
    );
    let o = run(&["generate", "--machine-id=-1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--machine-id"), "{}", stderr(&o));
}

#[test]
fn unparsable_or_too_wide_ids_fail_inspect_with_the_reason() {
    let o = run(&["inspect", "--layout", "twitter", "12x4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`12x4` is not a valid `twitter` id: `12x4` is not valid decimal: invalid character 'x' at position 3"),
        "{}",
        stderr(&o)
    );
    let o = run(&["inspect", "--layout", "twitter", "9223372036854775808"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bits set above bit 63"),
        "{}",
        stderr(&o)
    );
    let o = run(&["inspect", "--layout", "twitter", "18446744073709551616"]);
    assert!(
        stderr(&o).contains("does not fit in 64 bits"),
        "{}",
        stderr(&o)
    );
    // A bad id among good ones: the good ones are still decoded, the exit is non-zero.
    let o = run(&["inspect", "--layout", "twitter", "1", "nope", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).matches("(twitter)").count(), 2);
}

fn report(o: &Output) -> (u64, u64, u64) {
    let s = stdout(o);
    let get = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {s}"))
            .trim()
            .parse()
            .unwrap()
    };
    (get("count:"), get("duplicates:"), get("order_violations:"))
}

#[test]
fn verify_detects_a_duplicate_and_counts_order_violations() {
    let o = run_with_stdin(
        &["verify", "--layout", "twitter", "-"],
        b"1\n2\n2\n5\n3\n9\n",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(report(&o), (6, 1, 2));
    assert!(
        stdout(&o).contains("duplicate: 2 (2 times)"),
        "{}",
        stdout(&o)
    );

    // Out of order but distinct: exit 0, violations counted.
    let o = run_with_stdin(&["verify", "--layout", "twitter"], b"3\r\n1\r\n2\r\n");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o), (3, 0, 1));
}

#[test]
fn verify_finds_duplicates_among_many_shuffled_ids() {
    // Enough ids to take the radix sort and the per-core runs, with duplicates spread out.
    let n: u64 = 300_000;
    let mut input = Vec::new();
    let mut repeats = Vec::new();
    for i in 0..n {
        // Multiplying by an odd number permutes the residues modulo a power of two, so
        // these ids are distinct and shuffled.
        let id = (i * 2_654_435_761) % (1 << 19);
        input.extend_from_slice(format!("{id}\n").as_bytes());
        if i % 1000 == 999 {
            repeats.push(id);
        }
    }
    // Every 1000th id again, at the end and in reverse order.
    for id in repeats.iter().rev() {
        input.extend_from_slice(format!("{id}\n").as_bytes());
    }
    let o = run_with_stdin(&["verify"], &input);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (count, dups, _) = report(&o);
    assert_eq!((count, dups), (n + n / 1000, n / 1000));
}

#[test]
fn verify_accepts_a_file_of_generated_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.txt");
    let gen = run(&["generate", "--layout", "twitter", "--count", "100000"]);
    assert!(gen.status.success());
    std::fs::write(&path, &gen.stdout).unwrap();
    let o = run(&["verify", "--layout", "twitter", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o), (100_000, 0, 0));
    // The same file twice over: every id is a duplicate.
    let mut twice = gen.stdout.clone();
    twice.extend_from_slice(&gen.stdout);
    std::fs::write(&path, &twice).unwrap();
    let o = run(&["verify", "--layout", "twitter", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(report(&o), (200_000, 100_000, 1));
}

#[test]
fn verify_names_the_unparsable_line() {
    let o = run_with_stdin(&["verify", "--layout", "twitter"], b"1\n2\nthree\n4\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 3: `three` is not valid decimal"),
        "{}",
        stderr(&o)
    );
    let o = run_with_stdin(
        &["verify", "--layout", "twitter"],
        b"1\n9223372036854775808\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2:"), "{}", stderr(&o));
    let o = run(&["verify", "/nonexistent/ids.txt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/ids.txt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn generate_stops_quietly_when_the_reader_goes_away() {
    let mut child = shardflake()
        .args(["generate", "--layout", "temporal", "--count", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.trim().parse::<u64>().is_ok(), "{first}");
    // Dropping the reader closes the pipe: the next write fails with EPIPE.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn generate_hex_matches_decimal() {
    let o = run(&[
        "generate", "--layout", "default", "--count", "3", "--format", "hex",
    ]);
    assert!(o.status.success());
    for line in stdout(&o).lines() {
        let id = u64::from_str_radix(line, 16).unwrap();
        let back = run(&["inspect", "--json", &format!("0x{line}")]);
        assert_eq!(json_lines(&back)[0]["id"].as_u64(), Some(id));
    }
}

#[test]
fn borrowing_is_bounded_by_the_flag() {
    let o = run(&[
        "generate",
        "--layout",
        "twitter",
        "--count",
        "10",
        "--borrow-ahead-max",
        "60001ms",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--borrow-ahead-max 60001 ms is out of range 0..=60000 ms"));
}

#[test]
fn bench_prints_one_row_per_generator_of_ours_only() {
    let o = run(&[
        "bench",
        "--seconds",
        "0.02",
        "--runs",
        "1",
        "--threads",
        "2",
        "--only",
        "twitter",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for row in [
        "shardflake twitter next_id, wait",
        "shardflake twitter next_id, borrow",
        "shardflake twitter fill(4096)",
    ] {
        assert!(s.contains(row), "{row} missing from\n{s}");
    }
    // The peer crates are measured by `shardflake-bench`; this binary does not link them.
    assert!(!s.contains("ferroid"), "{s}");
    // Two header lines and three rows, then the notes after a blank line.
    assert_eq!(
        s.lines().take_while(|l| !l.is_empty()).count(),
        2 + 3,
        "{s}"
    );
    assert!(s.contains("2 threads"), "{s}");
}

#[test]
fn uuidv7_and_ulid_round_trip_in_canonical_text() {
    for layout in ["uuidv7", "ulid"] {
        let before = now_ms();
        let gen = run(&["generate", "--layout", layout, "--count", "50"]);
        assert!(gen.status.success(), "{layout}: {}", stderr(&gen));
        let after = now_ms();
        let ids: Vec<String> = stdout(&gen).lines().map(String::from).collect();
        assert_eq!(ids.len(), 50);
        // Canonical text sorts like the value, so monotonic ids are sorted as strings.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{layout}: {ids:?}");
        for id in &ids {
            match layout {
                "uuidv7" => {
                    assert_eq!(id.len(), 36, "{id}");
                    assert_eq!(&id[14..15], "7", "{id}");
                    assert_eq!(id.to_lowercase(), *id);
                }
                _ => assert_eq!(id.len(), 26, "{id}"),
            }
        }
        let mut args = vec!["inspect", "--layout", layout, "--json"];
        args.extend(ids.iter().map(String::as_str));
        let insp = run(&args);
        assert!(insp.status.success(), "{layout}: {}", stderr(&insp));
        for (obj, id) in json_lines(&insp).iter().zip(&ids) {
            assert_eq!(obj["id"].as_str(), Some(id.as_str()));
            assert_eq!(obj["layout"].as_str(), Some(layout));
            let ts = obj["timestamp_ms"].as_u64().unwrap();
            assert!(
                ts <= after && ts + 2 >= before,
                "{ts} vs [{before}, {after}]"
            );
        }
        let mut lines = ids.join("\n").into_bytes();
        lines.push(b'\n');
        let o = run_with_stdin(&["verify", "--layout", layout], &lines);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(report(&o), (50, 0, 0));
        // The first id again at the end: one duplicate, one order violation.
        lines.extend_from_slice(format!("{}\n", ids[0]).as_bytes());
        let o = run_with_stdin(&["verify", "--layout", layout], &lines);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(report(&o), (51, 1, 1));
        assert!(stdout(&o).contains(&format!("duplicate: {} (2 times)", ids[0])));
    }
}

#[test]
fn inspect_uuidv7_decodes_the_rfc_example() {
    // RFC 9562 Appendix A.6: 017F22E2-79B0-7CC3-98C4-DC0C0C07398F, created at
    // Tuesday, February 22, 2022 2:22:22.00 PM GMT-05:00.
    let o = run(&[
        "inspect",
        "--layout",
        "uuidv7",
        "--json",
        "017F22E2-79B0-7CC3-98C4-DC0C0C07398F",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(
        v["id"].as_str(),
        Some("017f22e2-79b0-7cc3-98c4-dc0c0c07398f")
    );
    assert_eq!(v["timestamp_ms"].as_u64(), Some(0x017F_22E2_79B0));
    assert_eq!(v["time"].as_str(), Some("2022-02-22T19:22:22.000Z"));
    assert_eq!(v["version"].as_u64(), Some(7));
    assert_eq!(v["variant"].as_u64(), Some(2));
    assert_eq!(v["rand_a"].as_u64(), Some(0xCC3));
    assert_eq!(v["rand_b"].as_u64(), Some(0x18C4_DC0C_0C07_398F));
    // A version 4 UUID is not a UUIDv7, and the message says which version it has.
    let o = run(&[
        "inspect",
        "--layout",
        "uuidv7",
        "919108f7-52d1-4320-9bac-f847db4148a8",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("version 4"), "{}", stderr(&o));
}

#[test]
fn inspect_ulid_decodes_the_spec_example() {
    // ULID spec README: 01ARZ3NDEKTSV4RRFFQ69G5FAV, timestamp 01ARZ3NDEK, randomness
    // TSV4RRFFQ69G5FAV. Parsing is case-insensitive.
    let o = run(&[
        "inspect",
        "--layout",
        "ulid",
        "--json",
        "01arz3ndektsv4rrffq69g5fav",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["id"].as_str(), Some("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    assert_eq!(v["timestamp_ms"].as_u64(), Some(1_469_922_850_259));
    assert_eq!(v["randomness"].as_str(), Some("TSV4RRFFQ69G5FAV"));
    let o = run(&["inspect", "--layout", "ulid", "01ARZ3NDEKTSV4RRFFQ69G5FAU"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("position 26"), "{}", stderr(&o));
}

#[test]
fn format_flag_round_trips_and_is_refused_for_128_bit_ids() {
    for format in ["dec", "hex", "base32", "base62"] {
        let o = run(&[
            "generate", "--layout", "twitter", "--count", "20", "--format", format,
        ]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        let ids: Vec<String> = stdout(&o).lines().map(String::from).collect();
        // Every encoding but decimal is fixed-width, so the text sorts like the numbers.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{format}: {ids:?}");
        let mut args = vec![
            "inspect", "--layout", "twitter", "--json", "--format", format,
        ];
        args.extend(ids.iter().map(String::as_str));
        let insp = run(&args);
        assert!(insp.status.success(), "{format}: {}", stderr(&insp));
        assert_eq!(json_lines(&insp).len(), 20);
        let input = stdout(&o);
        let v = run_with_stdin(
            &["verify", "--layout", "twitter", "--format", format],
            input.as_bytes(),
        );
        assert_eq!(v.status.code(), Some(0), "{format}: {}", stderr(&v));
        assert_eq!(report(&v), (20, 0, 0));
    }
    let o = run(&["generate", "--layout", "ulid", "--format", "hex"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--format applies to 64-bit layouts only"));
}

#[test]
fn verify_reads_a_large_file_in_parts_and_finds_a_duplicate_across_them() {
    // Over 16 MiB, so the file is split between reader threads.
    let gen = run(&["generate", "--layout", "temporal", "--count", "1200000"]);
    assert!(gen.status.success(), "{}", stderr(&gen));
    assert!(gen.stdout.len() > 16 << 20, "{}", gen.stdout.len());
    let first_line = stdout(&gen).lines().next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.txt");
    let mut content = gen.stdout.clone();
    std::fs::write(&path, &content).unwrap();
    let o = run(&["verify", "--layout", "temporal", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(report(&o), (1_200_000, 0, 0));
    // The first id again at the very end: a duplicate of an id in the other part.
    content.extend_from_slice(format!("{first_line}\n").as_bytes());
    std::fs::write(&path, &content).unwrap();
    let o = run(&["verify", "--layout", "temporal", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(report(&o), (1_200_001, 1, 1));
    assert!(stdout(&o).contains(&format!("duplicate: {first_line} (2 times)")));
    // A bad last line is reported with its line number counted from the start of the file.
    content.extend_from_slice(b"oops\n");
    std::fs::write(&path, &content).unwrap();
    let o = run(&["verify", "--layout", "temporal", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 1200002: `oops`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn layout_specs_override_widths_and_epoch() {
    // UidGenerator's default time field ran out in 2024; users widen it and move the epoch.
    let spec = "uidgenerator:timestamp=30,worker=20,epoch=2025-01-01";
    let o = run(&[
        "generate",
        "--layout",
        spec,
        "--count",
        "3",
        "--machine-id",
        "1000000",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 3);
    let mut args = vec!["inspect", "--layout", spec, "--json"];
    args.extend(ids.iter().map(String::as_str));
    let o = run(&args);
    for v in json_lines(&o) {
        assert_eq!(v["worker"].as_u64(), Some(1_000_000));
        assert!(v["timestamp_ms"].as_u64().unwrap() > 1_735_689_600_000);
    }
    // The widened field's range is what the error quotes.
    let o = run(&["generate", "--layout", spec, "--machine-id", "1048576"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("0..=1048575"));
    let o = run(&["generate", "--layout", "twitter:colour=3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown key `colour`"));
}
