#!/usr/bin/env bash
# The coordinator's store benchmark, side by side in one run: the embedded store with and
# without group commit and a 3-member etcd cluster on loopback (started here, torn down on
# exit). Installs etcd-server, etcd-client and protobuf-compiler when missing (Debian; root).
#
#   scripts/bench-coordinator.sh [SECONDS CLIENTS]     (default 3 s per cell, 64 clients)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked -p shardflake-coordinator --features etcd --example store_bench
dir=$(mktemp -d /tmp/shardflake-bench-etcd.XXXXXX)
export SHARDFLAKE_ETCD_PORT_BASE=${SHARDFLAKE_ETCD_PORT_BASE:-$((20000 + RANDOM % 3000))}
trap 'scripts/etcd-cluster.sh stop "$dir"' EXIT
SHARDFLAKE_BENCH_ETCD=$(scripts/etcd-cluster.sh start "$dir")
export SHARDFLAKE_BENCH_ETCD
# The etcd members write their logs under $dir on the same disk as the redb files.
cargo run --release --locked -q -p shardflake-coordinator --features etcd --example store_bench -- "$@"
