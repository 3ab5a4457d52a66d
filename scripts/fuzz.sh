#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: id text in every encoding, layout specs, the
# node's state file, the node's /ids query string, the coordinator's request bodies through
# its router) for SECONDS each (default 20) with libFuzzer through cargo-fuzz,
# starting from the corpus kept in fuzz/corpus. New interesting inputs go to a temporary
# directory; keep them with `cargo fuzz cmin -s none TARGET corpus/TARGET` after copying them
# in. A crash stops the script, and the input is left in fuzz/artifacts/TARGET/.
# Installs cargo-fuzz when missing. `-s none`: no sanitizer, so the stable toolchain will do.
#
#   scripts/fuzz.sh [SECONDS]          (CI: 20 s per target; long runs: e.g. 3600)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz --version 0.13.2
fi
cargo fuzz build -s none
new=$(mktemp -d /tmp/shardflake-fuzz.XXXXXX)
trap 'rm -rf "$new"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$new/$target"
  log="$new/$target.log"
  if ! cargo fuzz run -s none "$target" "$new/$target" "corpus/$target" -- \
      -max_total_time="$secs" >"$log" 2>&1; then
    cat "$log" >&2
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1), $(ls "corpus/$target" | wc -l) corpus inputs, $(ls "$new/$target" | wc -l) new"
done
