#!/usr/bin/env bash
# Shows that the simulation bites: applies each bug in crates/shardflake-sim/mutants/ (one at
# a time, in a scratch worktree of HEAD), builds the simulation with it, and runs seeds until
# the first violation. Prints a table: the bug, the seed that caught it, and what it saw.
#
#   scripts/sim-mutants.sh [MAX_SEEDS] [PATTERN]   # default 300 seeds per bug, every bug
#
# crates/shardflake-sim/mutants/EXPECTED says which bugs the simulation must catch (`sim`);
# the script exits 1 when one of those is missed within MAX_SEEDS, so that a weakened
# simulation fails CI. A bug marked otherwise is reported with what catches it instead.
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

expected="$root/crates/shardflake-sim/mutants/EXPECTED"
missed=()
printf '| bug (crates/shardflake-sim/mutants/) | must be caught by | caught at seed | first violation |\n|---|---|---|---|\n'
for patch in "$root"/crates/shardflake-sim/mutants/*"$pattern"*.patch; do
  name=$(basename "$patch" .patch)
  by=$(awk -v n="$name" '$1 == n { $1 = ""; sub(/^ /, ""); print }' "$expected")
  if [ -z "$by" ]; then
    echo "$name is not listed in $expected" >&2
    exit 1
  fi
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
    printf '| %s | %s | %s | %s |\n' "$name" "$by" "$seed" "$what"
  else
    printf '| %s | %s | not caught in %s seeds | |\n' "$name" "$by" "$max"
    if [ "$by" = sim ]; then
      missed+=("$name")
    fi
  fi
done
if [ ${#missed[@]} -gt 0 ]; then
  echo "the simulation missed bugs it must catch: ${missed[*]}" >&2
  exit 1
fi
