//! The `shardflake-bench` binary as it is run: our rows, then every peer's.

use std::process::Command;

#[test]
fn the_table_has_our_rows_and_every_peer_row() {
    // Every row, but each measurement only 20 ms long, so the whole table takes about a
    // second. The numbers are not looked at: benchmarks are not timed assertions.
    let o = Command::new(env!("CARGO_BIN_EXE_shardflake-bench"))
        .args(["--seconds", "0.02", "--runs", "1", "--threads", "2"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8(o.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(o.stderr).expect("utf-8 stderr");
    assert!(o.status.success(), "{stderr}");
    for row in [
        "shardflake twitter next_id, wait",
        "shardflake UlidGenerator (monotonic, per thread)",
        "uuid Uuid::now_v7",
        "uuid new_v7 + ContextV7",
        "ulid Generator",
        "scru128 Generator",
        "ferroid AtomicSnowflakeGenerator twitter",
        "ferroid thread-local Ulid::new_ulid_mono",
        "snowflaked sync::Generator",
    ] {
        assert!(stdout.contains(row), "{row} missing from\n{stdout}");
    }
    assert!(stdout.contains("2 threads"), "{stdout}");
}

#[test]
fn only_applies_to_peer_rows_too() {
    let o = Command::new(env!("CARGO_BIN_EXE_shardflake-bench"))
        .args(["--seconds", "0.01", "--runs", "1", "--threads", "1"])
        .args(["--only", "scru128"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8(o.stdout).expect("utf-8 stdout");
    assert!(o.status.success());
    // The table's rows: after the two header lines, up to the blank line before the notes.
    let rows: Vec<&str> = stdout
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].starts_with("scru128 Generator"), "{stdout}");
}
