#!/usr/bin/env bash
# Runs the whole test suite: unit, property, doc, in-process HTTP, real-process and loom tests.
# Installs the system packages the tests use when they are missing (Debian; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace --locked

# The generator's compare-and-swap loop under every interleaving (loom), in its own target
# directory because `--cfg loom` changes every crate's fingerprint.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test --locked -p shardflake --test loom --release
