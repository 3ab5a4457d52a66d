#!/usr/bin/env bash
# Checks formatting, lints and docs, then runs the whole test suite: unit, property, doc,
# in-process HTTP, real-process, tidy and loom tests,
# then the library, node and client test binaries again with the clock shifted one and ten
# years ahead, to prove that no test (and no id) depends on today's date; then the API tests
# against the OpenAPI descriptions, the nemesis runs, the deterministic simulation and its
# mutant table, the fuzz targets and loom.
# Installs the system packages the tests use when they are missing (Debian; needs root):
# faketime (libfaketime), strace (watches the node's fsyncs), procps (pkill), etcd-server and
# etcd-client (a 3-member etcd cluster on loopback for the etcd backend's tests, started here
# and torn down on exit), protobuf-compiler (protoc, which the etcd client's build needs),
# openssl (certificates for the etcd TLS test; `openssl s_client` checks the services' TLS),
# curl (the services' HTTPS, from the system's client; the documentation's commands) and xxd
# (a command the node's README shows).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's start, with the time since the start of the run, so that a CI log shows where
# the time goes.
step() { printf '== %dm%02ds %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

missing=()
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v pkill >/dev/null 2>&1 || missing+=(procps)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v xxd >/dev/null 2>&1 || missing+=(xxd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Everything is built and tested with the etcd backend; the build without it (the README's
# run command, which needs no protoc) is linted too.
features=(--features shardflake-cli/etcd)

# The habits first: formatting, lints and docs without warnings (the tidy conventions run
# with the tests, crates/shardflake-tidy).
step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo clippy --workspace --all-targets --locked --features shardflake-cli/etcd -- -D warnings"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings
# The library alone, without the `mutants` feature the workspace unifies in (the simulation
# asks for it): the build every user of the library gets.
step "cargo clippy -p shardflake --all-targets --locked -- -D warnings"
cargo clippy -p shardflake --all-targets --locked -- -D warnings
step "RUSTDOCFLAGS=-D warnings cargo doc --workspace --no-deps --locked --features shardflake-cli/etcd"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked "${features[@]}"

# The etcd backend's tests run against a real 3-member cluster on loopback.
etcd_dir=$(mktemp -d /tmp/shardflake-etcd.XXXXXX)
export SHARDFLAKE_ETCD_PORT_BASE=${SHARDFLAKE_ETCD_PORT_BASE:-$((20000 + RANDOM % 3000))}
trap 'scripts/etcd-cluster.sh stop "$etcd_dir"' EXIT
SHARDFLAKE_TEST_ETCD=$(scripts/etcd-cluster.sh start "$etcd_dir")
export SHARDFLAKE_TEST_ETCD
echo "etcd test cluster: $SHARDFLAKE_TEST_ETCD"

step "cargo test --workspace --locked --features shardflake-cli/etcd"
cargo test --workspace --locked "${features[@]}"

# The same test binaries (no rebuild: the JSON lists what the run above built), run with the
# wall clock one and ten years ahead. Monotonic time stays real so timeouts keep their length.
mapfile -t shifted < <(
  cargo test --workspace --locked "${features[@]}" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
crates = ("/crates/shardflake/Cargo.toml", "/crates/shardflake-node/Cargo.toml",
          "/crates/shardflake-client/Cargo.toml")
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test")
            and m.get("executable") and m.get("manifest_path", "").endswith(crates)):
        print(m["executable"])
'
)
if [ ${#shifted[@]} -lt 5 ]; then
  echo "expected the library, node and client test binaries, found: ${shifted[*]}" >&2
  exit 1
fi
# libfaketime is preloaded directly rather than through the `faketime` wrapper: the wrapper
# creates a named semaphore per process id in /dev/shm and refuses to start ("sem_open: File
# exists") when a previous run on the machine left one behind under a reused id.
libfaketime=""
for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
  if [ -e "$f" ]; then
    libfaketime=$f
    break
  fi
done
if [ -z "$libfaketime" ]; then
  echo "libfaketime.so.1 not found (Debian package faketime)" >&2
  exit 1
fi
step "the test binaries with the clock shifted"
for offset in +365d +3650d; do
  echo "== test binaries with the clock shifted ${offset}"
  for bin in "${shifted[@]}"; do
    LD_PRELOAD="$libfaketime" FAKETIME="$offset" FAKETIME_DONT_FAKE_MONOTONIC=1 "$bin" -q
  done
done

# The HTTP APIs against their OpenAPI descriptions: schemathesis against a live node and a
# live coordinator, with the debug binary the tests above built (overflow checks on).
step "SHARDFLAKE_BIN=target/debug/shardflake scripts/api-test.sh"
SHARDFLAKE_BIN=target/debug/shardflake scripts/api-test.sh

# The nemesis run: the cluster as real processes, each node in a network namespace of its
# own, under client load while nodes are killed, paused, partitioned and their clocks
# stepped, and coordinators (and the etcd leader) killed; every acknowledged id through
# `shardflake verify`. One short run per store, with the debug binary the tests above built
# (etcd backend): the embedded store's on the temporal layout, the etcd one's on twitter.
# Temporal with 10 s shards: a 60 s run crosses about six shard boundaries on every node
# (blocks for the next shard prepared with renewals, counter blocks within a shard, both
# under the faults), and the nemesis's clock steps (at most 4 s) stay under half a shard,
# so a node stepped ahead enters at most the next shard, the one the coordinators grant
# blocks in (a node further ahead waits, unserved, for real time: an open finding, README).
# Needs root; scripts/nemesis.sh installs iproute2, nftables and faketime when missing.
step "SHARDFLAKE_BIN=target/debug/shardflake scripts/nemesis.sh --duration 60 --ids 1000000"
SHARDFLAKE_BIN=target/debug/shardflake scripts/nemesis.sh --duration 60 --ids 1000000 \
  --layout temporal:granularity=10s
step "SHARDFLAKE_BIN=target/debug/shardflake scripts/nemesis.sh --duration 75 --ids 1000000 --et"
SHARDFLAKE_BIN=target/debug/shardflake scripts/nemesis.sh --duration 75 --ids 1000000 --etcd

# The restore drill: load through two nodes, a backup (a copied redb file; an etcd
# snapshot), more load, the restore, the refusal, `shardflake repair`, more load, and every
# id through `shardflake verify`: 0 duplicates. Two rounds per store; budget: 2 minutes.
step "SHARDFLAKE_BIN=target/debug/shardflake scripts/restore-drill.sh --store both --rounds 2"
SHARDFLAKE_BIN=target/debug/shardflake scripts/restore-drill.sh --store both --rounds 2

# The store-size soak in short: 200 simulated nodes renewing for a minute against a fresh
# 3-member etcd compacting every 10 s, then against the embedded store; fails unless the
# size in use and the number of keys stay flat. Debug profile (the tests' build); budget:
# 3 minutes. The runbook's figures come from `scripts/soak.sh 600 1000 60`.
step "SOAK_PROFILE=debug scripts/soak.sh 60 200 10"
SOAK_PROFILE=debug scripts/soak.sh 60 200 10

# The deterministic simulation: the real coordinators, nodes (leases, namespaces, temporal
# layouts; the memory store or redb on a simulated disk), an SDK client and a lying client
# over a simulated network under seeded faults,
# 400 seeds, each in a process of its own, one per CPU at once (`--seeds N` for more,
# `--seed S` for one seed's trace), then a sample of 20 more seeds each run twice and
# compared (`--check-determinism`); exits non-zero on any violation or difference. Budget:
# about 5 minutes after the release build (about 100 seeds a minute on a 2-core machine).
step "cargo run --release --locked -p shardflake-sim -- --seeds 400"
cargo run --release --locked -p shardflake-sim -- --seeds 400
step "cargo run --release --locked -p shardflake-sim -- --seeds 20 --first-seed 401 --check-dete"
cargo run --release --locked -p shardflake-sim -- --seeds 20 --first-seed 401 --check-determinism

# The mutant table: every re-introduced bug of `shardflake::mutant` switched on in turn in
# the simulation built above (no build of its own), or for a bug out of its reach, in the
# component test that crates/shardflake-sim/mutants/EXPECTED names (from the test build
# above); fails when one is not caught within 150 seeds. Budget: about 2 minutes (1 here).
step "SHARDFLAKE_TEST_FEATURES=shardflake-cli/etcd scripts/sim-mutants.sh 150"
SHARDFLAKE_TEST_FEATURES=shardflake-cli/etcd scripts/sim-mutants.sh 150

# Every parser under libFuzzer for a short while (scripts/fuzz.sh runs longer on request).
step "scripts/fuzz.sh 20"
scripts/fuzz.sh 20

# The generator's compare-and-swap loop under every interleaving (loom), in its own target
# directory because `--cfg loom` changes every crate's fingerprint.
step "RUSTFLAGS=--cfg loom CARGO_TARGET_DIR=target/loom"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test --locked -p shardflake --test loom --release

# Every shell command the documentation shows (README.md, docs/*.md, the crates' READMEs), in
# order, each file in a scratch directory, with the binary built above; a block that cannot
# run here says why in the Markdown source (scripts/readme_test.py). Budget: about 5 minutes.
step "python3 scripts/readme_test.py --self-test"
python3 scripts/readme_test.py --self-test
step "python3 scripts/readme_test.py --bin target/debug/shardflake"
python3 scripts/readme_test.py --bin target/debug/shardflake
step "done"
