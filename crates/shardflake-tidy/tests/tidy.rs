//! The workspace's conventions, checked on every `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

/// A non-test source file longer than this is doing too many things: split it by concern.
const SOURCE_LINES_MAX: usize = 800;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/shardflake-tidy lies two levels below the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `.rs` file of every crate: sources, tests, benches, examples.
fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    files.sort();
    assert!(files.len() > 50, "found only {} files", files.len());
    files
}

/// Files under a crate's `src/` that are not test modules.
fn is_non_test_source(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.contains("/src/") && !s.ends_with("_tests.rs") && !s.contains("/testing/")
}

fn relative(p: &Path) -> String {
    p.strip_prefix(workspace_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn every_source_file_says_what_it_holds() {
    let missing: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            !first.starts_with("//!")
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line saying what they hold: {missing:#?}"
    );
}

#[test]
fn no_source_file_outgrows_one_concern() {
    let long: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| is_non_test_source(p))
        .filter_map(|p| {
            let text = fs::read_to_string(&p).ok()?;
            // Unit tests at the bottom of a file do not count.
            let code = text.split("\n#[cfg(test)]").next().unwrap_or(&text);
            let n = code.lines().count();
            (n > SOURCE_LINES_MAX).then(|| format!("{} ({n} lines)", relative(&p)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "non-test source files over {SOURCE_LINES_MAX} lines: {long:#?}"
    );
}

#[test]
fn no_leftovers_of_debugging_or_unfinished_work() {
    let forbidden = ["dbg!(", "todo!(", "unimplemented!(", "#[ignore]"];
    let mut found = Vec::new();
    for p in all_rust_files() {
        if p.ends_with("tidy.rs") {
            continue;
        }
        let text = fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            for f in forbidden {
                if line.contains(f) {
                    found.push(format!("{}:{}: {}", relative(&p), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let mut missing = Vec::new();
    for e in fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .flatten()
    {
        let manifest = e.path().join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        if !text.contains("[lints]\nworkspace = true") {
            missing.push(relative(&manifest));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn layouts_are_told_apart_by_kind_not_by_name() {
    // What follows from a layout is a method of `Layout` (`is_temporal`, `spec`, the node-id
    // mapping); comparing names misses specs with overrides and custom layouts.
    let mut found = Vec::new();
    for p in all_rust_files()
        .into_iter()
        .filter(|p| is_non_test_source(p))
    {
        let text = fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.contains("name() == \"") || line.contains("== \"temporal\"") {
                found.push(format!("{}:{}: {}", relative(&p), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// `major.minor[.patch]` as numbers, for comparing `rust-version`s.
fn version(text: &str) -> Vec<u64> {
    let mut v: Vec<u64> = text
        .split('.')
        .map(|p| p.trim().parse().unwrap_or(0))
        .collect();
    v.resize(3, 0);
    v
}

/// The `rust-version` a manifest declares, if any.
fn declared_rust_version(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("rust-version")?.trim_start();
        let value = rest.strip_prefix('=')?.trim().trim_matches('"');
        (!value.is_empty() && value.chars().next()?.is_ascii_digit()).then(|| value.to_string())
    })
}

/// The `(name, version)` of every package a build of the workspace compiles (normal and build
/// dependencies, every feature), from `cargo tree`: the ones whose `rust-version` binds a
/// user. Dev-dependencies and `cfg(loom)` ones (only our test runs build them) do not.
fn built_packages(root: &Path) -> Vec<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "tree",
            "--workspace",
            "--locked",
            "--offline",
            "-e",
            "normal,build",
        ])
        .args(["--all-features", "--prefix", "none", "-f", "{p}"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut packages: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, version) = (words.next()?, words.next()?.strip_prefix('v')?);
            // The workspace's own crates name their path: no manifest in the registry.
            (!l.contains('(')).then(|| (name.to_string(), version.to_string()))
        })
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

/// Regression (the workspace said 1.85 while redb needs 1.90, so a user on 1.85 got a
/// confusing build error instead of cargo's clear "requires rustc 1.90"): the workspace's
/// `rust-version` is at least the highest one among the packages its build compiles. Only
/// one toolchain can be installed here, so this reads the manifests cargo unpacked.
#[test]
fn rust_version_is_at_least_every_locked_dependencys() {
    let root = workspace_root();
    let ours = declared_rust_version(&fs::read_to_string(root.join("Cargo.toml")).unwrap())
        .expect("the workspace declares a rust-version");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries: Vec<PathBuf> = fs::read_dir(cargo_home.join("registry/src"))
        .expect("cargo's unpacked registry (the build ran before the tests)")
        .flatten()
        .map(|e| e.path())
        .collect();
    let (mut checked, mut highest) = (0, (Vec::new(), String::new()));
    for (name, ver) in built_packages(&root) {
        let manifest = registries
            .iter()
            .map(|r| r.join(format!("{name}-{ver}/Cargo.toml")))
            .find(|m| m.exists())
            .unwrap_or_else(|| panic!("{name} {ver} is built but not unpacked"));
        checked += 1;
        if let Some(rv) = declared_rust_version(&fs::read_to_string(manifest).unwrap()) {
            if version(&rv) > highest.0 {
                highest = (version(&rv), format!("{name} {ver} needs {rv}"));
            }
        }
    }
    assert!(checked > 100, "read only {checked} dependency manifests");
    assert!(
        version(&ours) >= highest.0,
        "the workspace's rust-version is {ours}, but {}: raise it in Cargo.toml",
        highest.1
    );
}
