#!/usr/bin/env bash
# Shows that the simulation bites: switches on each re-introduced bug of `shardflake::mutant`
# (crates/shardflake/src/mutant.rs) in turn and runs what must catch it. Prints a table: the
# bug, what must catch it, the seed that caught it, and what it saw.
#
#   scripts/sim-mutants.sh [MAX_SEEDS] [PATTERN]   # default 300 seeds per bug, every bug
#
# One build for every bug: the switches are compiled into the simulation (the `mutants`
# feature, off until `--mutant NAME` turns one on), so the table costs the seeds it runs.
# crates/shardflake-sim/mutants/EXPECTED says what must catch each bug: `sim [ARGS]` (the
# simulation, with ARGS such as `--weight restore=2` for a fault kind off by default, within
# MAX_SEEDS, seeds run one per CPU at once and the lowest failing one reported), or `test PACKAGE TARGET NAME` for a bug the simulation's plan cannot reach (the
# README's simulation section says why): that component test (TARGET `lib`, or an
# integration test's name) must fail with the bug in (`SHARDFLAKE_MUTANT`). The script exits
# 1 when a bug is not caught by what EXPECTED names, or a mutant is missing from EXPECTED,
# so that a weakened simulation or a weakened test fails CI.
#
# The component tests run from the workspace's test build, with the features in
# SHARDFLAKE_TEST_FEATURES (scripts/test.sh passes its own, so nothing is built again).
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-300}
pattern=${2:-}
features=()
if [ -n "${SHARDFLAKE_TEST_FEATURES:-}" ]; then
  features=(--features "$SHARDFLAKE_TEST_FEATURES")
fi
expected=crates/shardflake-sim/mutants/EXPECTED

cargo build -q --release --locked -p shardflake-sim
sim=target/release/shardflake-sim
mapfile -t mutants < <("$sim" --list-mutants)
if [ ${#mutants[@]} -eq 0 ]; then
  echo "the simulation lists no mutants" >&2
  exit 1
fi

# The workspace's test executables, by package and target (built once, if at all).
tests_json=$(mktemp /tmp/shardflake-mutants.XXXXXX)
trap 'rm -f "$tests_json"' EXIT
test_bin() { # PACKAGE TARGET
  if [ ! -s "$tests_json" ]; then
    cargo test --workspace --locked "${features[@]}" --no-run --message-format=json 2>/dev/null |
      python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        # Each crate lives in crates/<package name>/.
        name = m["manifest_path"].split("/")[-2]
        kind = m["target"]["kind"][0]
        target = "lib" if kind == "lib" else m["target"]["name"]
        print(name, target, m["executable"])
' >"$tests_json"
  fi
  awk -v p="$1" -v t="$2" '$1 == p && $2 == t { print $3; exit }' "$tests_json"
}

missed=()
printf '| bug (`shardflake::mutant`) | must be caught by | caught at seed | first violation |\n|---|---|---|---|\n'
for name in "${mutants[@]}"; do
  if [ -n "$pattern" ] && [[ $name != *"$pattern"* ]]; then
    continue
  fi
  by=$(awk -v n="$name" '$1 == n { $1 = ""; sub(/^ /, ""); print }' "$expected")
  if [ -z "$by" ]; then
    echo "$name is not listed in $expected" >&2
    exit 1
  fi
  if [[ $by == test\ * ]]; then
    read -r _ package target test_name <<<"$by"
    bin=$(test_bin "$package" "$target")
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
      echo "the mutant $name: no test executable for $package ($target)" >&2
      exit 1
    fi
    out=$(SHARDFLAKE_MUTANT=$name "$bin" --exact "$test_name" 2>&1 || true)
    if ! grep -q "^test $test_name ... ok$\|^test $test_name ... FAILED$" <<<"$out"; then
      echo "$out" | tail -n 20 >&2
      echo "the mutant $name: no test $test_name ran in $package ($target)" >&2
      exit 1
    fi
    if grep -q "^test $test_name ... FAILED$" <<<"$out"; then
      printf '| %s | %s | the test fails | %s |\n' "$name" "$by" \
        "$(grep -m1 -A1 "panicked at" <<<"$out" | tail -n 1 | cut -c1-140)"
    else
      printf '| %s | %s | not caught: the test passes | |\n' "$name" "$by"
      missed+=("$name")
    fi
    continue
  fi
  # `sim ARGS...`: the simulation with ARGS (a fault kind that is off by default, turned on).
  read -r -a sim_args <<<"${by#sim}"
  out=$("$sim" --seeds "$max" --stop-on-violation --mutant "$name" "${sim_args[@]}" 2>/dev/null || true)
  first=$(grep '^first violation at seed' <<<"$out" || true)
  if [ -n "$first" ]; then
    seed=$(sed -E 's/^first violation at seed ([0-9]+).*/\1/' <<<"$first")
    what=$(sed -E 's/^first violation at seed [0-9]+ \([^)]*\): //' <<<"$first" | cut -c1-140)
    printf '| %s | %s | %s | %s |\n' "$name" "$by" "$seed" "$what"
  else
    printf '| %s | %s | not caught in %s seeds | |\n' "$name" "$by" "$max"
    missed+=("$name")
  fi
done
# Every line of EXPECTED names a mutant that exists.
while read -r name _; do
  case $name in '' | '#'*) continue ;; esac
  if ! printf '%s\n' "${mutants[@]}" | grep -qx "$name"; then
    echo "$expected lists $name, which is no mutant" >&2
    exit 1
  fi
done <"$expected"
if [ ${#missed[@]} -gt 0 ]; then
  echo "bugs not caught by what EXPECTED names: ${missed[*]}" >&2
  exit 1
fi
