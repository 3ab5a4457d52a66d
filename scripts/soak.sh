#!/usr/bin/env bash
# The store-size soak: a simulated cluster of HOSTS nodes renewing their leases (clients of
# one coordinator, as in the store bench; not processes) for SECONDS against a 3-member etcd
# on loopback (started here, torn down on exit), then against the embedded store. Each run
# prints a table of the database size, the bytes in use and the number of keys, and fails
# unless they are flat once history is compacted (crates/shardflake-coordinator/examples/
# soak.rs). Installs etcd-server, etcd-client and protobuf-compiler when missing (Debian).
#
#   scripts/soak.sh [SECONDS HOSTS COMPACT_EVERY_S]   (default 600 s, 1000 nodes, 60 s;
#   COMPACT_EVERY_S 0 turns etcd compaction off, to see what it prevents)
#
# The figures in docs/high-availability.md come from `scripts/soak.sh 600 1000 60`; CI runs
# `scripts/soak.sh 60 200 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
hosts=${2:-1000}
compact_every=${3:-60}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

profile=${SOAK_PROFILE:-release}
flags=(--locked -p shardflake-coordinator --features etcd --example soak)
if [ "$profile" = release ]; then flags+=(--release); fi
cargo build -q "${flags[@]}"
dir=$(mktemp -d /tmp/shardflake-soak.XXXXXX)
# Ports of its own (not SHARDFLAKE_ETCD_PORT_BASE, which scripts/test.sh's cluster holds).
export SHARDFLAKE_ETCD_PORT_BASE=${SOAK_ETCD_PORT_BASE:-$((24000 + RANDOM % 1900))}
trap 'scripts/etcd-cluster.sh stop "$dir"' EXIT
# etcd's own compaction off: what keeps the size flat is the coordinators' compaction.
SHARDFLAKE_SOAK_ETCD=$(ETCD_AUTO_COMPACTION=off scripts/etcd-cluster.sh start "$dir")
SHARDFLAKE_SOAK_ETCD=$SHARDFLAKE_SOAK_ETCD cargo run -q "${flags[@]}" -- "$seconds" "$hosts" "$compact_every"
cargo run -q "${flags[@]}" -- "$seconds" "$hosts" "$compact_every"
