#!/usr/bin/env bash
# The restore drill: a coordinator store restored from a backup (a copied redb file, an
# etcd snapshot) never leads to a repeated value; see scripts/restore_drill.py.
#
#   scripts/restore-drill.sh [--store embedded|etcd|both] [--rounds N] [--keep]
#
# Builds the binary with `cargo build --release -p shardflake-cli --features etcd` unless
# SHARDFLAKE_BIN names one. Installs etcd-server and etcd-client (Debian) when missing and
# the drill runs over etcd. Budget in CI (`--rounds 2`, both stores): about a minute.
set -euo pipefail
bin=""
if [ -n "${SHARDFLAKE_BIN:-}" ]; then
  bin=$(realpath "$SHARDFLAKE_BIN")
fi
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
if [ -z "$bin" ]; then
  cargo build --release --locked -p shardflake-cli --features etcd
  bin=target/release/shardflake
fi
exec python3 scripts/restore_drill.py --bin "$bin" "$@"
