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
# MAX_SEEDS, seeds run one per CPU at once and the lowest failing one reported), or
# `test PACKAGE TARGET NAME` for a bug the simulation's plan cannot reach (the README's
# simulation section says why): that component test (TARGET `lib`, or an integration test's
# name) must pass as it is and fail with the bug switched on (`SHARDFLAKE_MUTANT`, which the
# test must confirm it turned on). The script exits 1 when a bug is not caught by what
# EXPECTED names, when EXPECTED and the mutants disagree, or when a run cannot be made, so
# that a weakened simulation or a weakened test fails CI.
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
die() {
  echo "$*" >&2
  exit 1
}

cargo build -q --release --locked -p shardflake-sim
sim=target/release/shardflake-sim
mapfile -t mutants < <("$sim" --list-mutants)
[ ${#mutants[@]} -gt 0 ] || die "the simulation lists no mutants"

# EXPECTED and the mutants agree before anything runs: every line names a mutant, once,
# with a known kind, and every mutant has a line.
declare -A by_name=()
while read -r name kind _; do
  case $name in '' | '#'*) continue ;; esac
  [[ " ${mutants[*]} " == *" $name "* ]] || die "$expected lists $name, which is no mutant"
  [ -z "${by_name[$name]:-}" ] || die "$expected lists $name twice"
  case $kind in sim | test) ;; *) die "$expected: $name: \`$kind\` is neither sim nor test" ;; esac
  by_name[$name]=$(awk -v n="$name" '$1 == n { $1 = ""; sub(/^ /, ""); print }' "$expected")
done <"$expected"
for name in "${mutants[@]}"; do
  [ -n "${by_name[$name]:-}" ] || die "$name is not listed in $expected"
done

# The workspace's test executables, one per line: package, target, path, tab-separated
# (each crate lives in crates/<package name>/). Built once, if at all.
tests_list=$(mktemp /tmp/shardflake-mutants.XXXXXX)
build_log=$(mktemp /tmp/shardflake-mutants-build.XXXXXX)
trap 'rm -f "$tests_list" "$build_log"' EXIT
if cargo test --workspace --locked ${features[@]+"${features[@]}"} --no-run \
  --message-format=json 2>"$build_log" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        kind = m["target"]["kind"][0]
        target = "lib" if kind == "lib" else m["target"]["name"]
        print(m["manifest_path"].split("/")[-2], target, m["executable"], sep="\t")
' >"$tests_list"; then
  :
else
  tail -n 30 "$build_log" >&2
  die "the workspace's tests do not build"
fi

missed=()
printf '| bug (`shardflake::mutant`) | must be caught by | caught at seed | first violation |\n|---|---|---|---|\n'
for name in "${mutants[@]}"; do
  if [ -n "$pattern" ] && [[ $name != *"$pattern"* ]]; then
    continue
  fi
  by=${by_name[$name]}
  read -r kind rest <<<"$by"
  if [ "$kind" = test ]; then
    read -r package target test_name <<<"$rest"
    bin=$(awk -F'\t' -v p="$package" -v t="$target" '$1 == p && $2 == t { print $3; exit }' "$tests_list")
    [ -n "$bin" ] && [ -x "$bin" ] || die "the mutant $name: no test executable for $package ($target)"
    # Run where cargo runs it (the package's directory): as it is, then with the bug in.
    clean=$(cd "crates/$package" && "$bin" --exact "$test_name" 2>&1 || true)
    grep -q "^test $test_name ... ok$" <<<"$clean" || {
      echo "$clean" | tail -n 20 >&2
      die "the mutant $name: $test_name in $package ($target) does not pass without the bug"
    }
    out=$(cd "crates/$package" && SHARDFLAKE_MUTANT=$name "$bin" --exact "$test_name" --nocapture 2>&1 || true)
    grep -q "^mutant $name switched on$" <<<"$out" || {
      echo "$out" | tail -n 20 >&2
      die "the mutant $name: $test_name did not switch it on (shardflake::mutant::activate_from_env)"
    }
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
  read -r -a sim_args <<<"$rest"
  rc=0
  out=$("$sim" --seeds "$max" --stop-on-violation --mutant "$name" \
    ${sim_args[@]+"${sim_args[@]}"} 2>"$build_log") || rc=$?
  first=$(grep '^first violation at seed' <<<"$out" || true)
  if [ -n "$first" ]; then
    seed=$(sed -E 's/^first violation at seed ([0-9]+).*/\1/' <<<"$first")
    what=$(sed -E 's/^first violation at seed [0-9]+ \([^)]*\): //' <<<"$first" | cut -c1-140)
    printf '| %s | %s | %s | %s |\n' "$name" "$by" "$seed" "$what"
  elif [ "$rc" -eq 0 ]; then
    printf '| %s | %s | not caught in %s seeds | |\n' "$name" "$by" "$max"
    missed+=("$name")
  else
    tail -n 20 "$build_log" >&2
    die "the mutant $name: the simulation could not run (exit $rc)"
  fi
done
if [ ${#missed[@]} -gt 0 ]; then
  die "bugs not caught by what EXPECTED names: ${missed[*]}"
fi
