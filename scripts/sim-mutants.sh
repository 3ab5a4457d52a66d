#!/usr/bin/env bash
# Shows that the simulation bites: applies each bug in crates/shardflake-sim/mutants/ (one at
# a time, in a scratch worktree of HEAD), builds the simulation with it, and runs seeds until
# the first violation. Prints a table: the bug, the seed that caught it, and what it saw.
#
#   scripts/sim-mutants.sh [MAX_SEEDS] [PATTERN]   # default 300 seeds per bug, every bug
#
# crates/shardflake-sim/mutants/EXPECTED says what must catch each bug: `sim` (the
# simulation, within MAX_SEEDS), or `test PACKAGE NAME` for a bug that cannot change what
# the system does (the README gives the argument): that component test must fail with the
# bug in. The script exits 1 when a bug is not caught by what EXPECTED names, so that a
# weakened simulation or a weakened test fails CI.
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
  if [[ $by == test\ * ]]; then
    read -r _ package test_name <<<"$by"
    out=$(cargo test --release --locked --manifest-path "$work/tree/Cargo.toml" -p "$package" --lib -- "$test_name" 2>&1 || true)
    if ! grep -q "^test .*$test_name ... ok$\|^test .*$test_name ... FAILED$" <<<"$out"; then
      echo "$out" | tail -n 20 >&2
      echo "the mutant $name: no test $test_name ran in $package" >&2
      exit 1
    fi
    if grep -q "^test .*$test_name ... FAILED$" <<<"$out"; then
      printf '| %s | %s | the test fails | %s |\n' "$name" "$by" "$(grep -m1 -A1 "panicked at" <<<"$out" | tail -n 1 | cut -c1-140)"
    else
      printf '| %s | %s | not caught: the test passes | |\n' "$name" "$by"
      missed+=("$name")
    fi
    continue
  fi
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
  echo "bugs not caught by what EXPECTED names: ${missed[*]}" >&2
  exit 1
fi
