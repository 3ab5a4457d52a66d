#!/usr/bin/env bash
# Shows that the simulation bites: applies each bug in crates/shardflake-sim/mutants/ (one at
# a time, in a scratch worktree of HEAD), builds the simulation with it, and runs seeds until
# the first violation. Prints a table: the bug, the seed that caught it, and what it saw.
#
#   scripts/sim-mutants.sh [MAX_SEEDS] [PATTERN]   # default 300 seeds per bug, every bug
#
# A bug the simulation misses within MAX_SEEDS is reported as such (the exit status is still
# 0: a miss is a finding about the simulation, not a failure of the product).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
max=${1:-300}
pattern=${2:-}
work=$(mktemp -d /tmp/shardflake-mutants.XXXXXX)
cleanup() {
  git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach -q "$work/tree" HEAD
# One target directory for every mutant: each rebuilds only the crates its patch touches.
export CARGO_TARGET_DIR="$root/target/mutants"

printf '| bug (crates/shardflake-sim/mutants/) | caught at seed | first violation |\n|---|---|---|\n'
for patch in "$root"/crates/shardflake-sim/mutants/*"$pattern"*.patch; do
  name=$(basename "$patch" .patch)
  git -C "$work/tree" checkout -q -- .
  git -C "$work/tree" apply "$patch"
  cargo build -q --release --locked --manifest-path "$work/tree/Cargo.toml" -p shardflake-sim 2>"$work/build.log" || {
    cat "$work/build.log" >&2
    echo "the mutant $name does not build" >&2
    exit 1
  }
  out=$("$CARGO_TARGET_DIR/release/shardflake-sim" --seeds "$max" --stop-on-violation 2>/dev/null || true)
  first=$(grep '^first violation at seed' <<<"$out" || true)
  if [ -n "$first" ]; then
    seed=$(sed -E 's/^first violation at seed ([0-9]+).*/\1/' <<<"$first")
    what=$(sed -E 's/^first violation at seed [0-9]+ \([0-9]+ seeds run\): //' <<<"$first" | cut -c1-140)
    printf '| %s | %s | %s |\n' "$name" "$seed" "$what"
  else
    printf '| %s | not caught in %s seeds | |\n' "$name" "$max"
  fi
done
