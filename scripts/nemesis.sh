#!/usr/bin/env bash
# The nemesis run: a shardflake cluster as real processes in network namespaces, under a
# client load while a fault schedule breaks it, every acknowledged id checked by
# `shardflake verify`.
#
#   scripts/nemesis.sh [--duration SECONDS] [--ids N] [--layout SPEC] [--etcd] [--seed N]
#                      [--keep]
#
# Defaults: 60 s, 1 000 000 ids, layout twitter. --layout is the coordinators' layout (any
# 64-bit preset or spec with a node field; the nodes serve the cluster's), and the one
# `shardflake verify` reads the ids in; a temporal layout (e.g. temporal:granularity=10s)
# puts shard roll-overs and counter blocks under the faults. Its shard must be longer than
# the largest clock step (4 s; scripts/nemesis.py refuses a shorter one), so that a node
# stepped ahead enters at most the next shard, the one the coordinators grant blocks in.
# Without --etcd: one coordinator over the embedded store; with --etcd: two coordinators
# over a 3-member etcd (scripts/etcd-cluster.sh), every node given both URLs. Either way 4
# nodes and 1 standby (`shardflake serve --coordinator ... --lease-ttl 2s`), each in a
# namespace of its own, under libfaketime with an offset the schedule changes at run time.
# The coordinators (and etcd, on that namespace's loopback) share one namespace. Every
# namespace has a veth into a bridge in the root namespace on a private /24, from where the
# load generator (scripts/nemesis.py) talks to the nodes.
#
# Faults, the first round one after another with a calm between them, later rounds
# shuffled and now and then overlapping: kill -9 of a node and its restart as the standby
# (the waiting standby takes its host id over); node <-> coordinators partition (nftables
# in the node's namespace) beyond the TTL, one way (the coordinators' answers lost) and
# shorter than the TTL; SIGSTOP beyond the lease TTL and SIGCONT; wall clock steps back and
# forward on a node; kill -9 of a coordinator and its restart; with --etcd, kill -9 of the
# etcd leader and its restart, and a partition from one of the two coordinators. --seed
# replays the schedule's choices (not its timing).
#
# Credentials: the coordinators get a random node credential (SHARDFLAKE_NODE_TOKEN, also
# given to the nodes) and a random read credential (SHARDFLAKE_READ_TOKEN), with which
# `shardflake audit --coordinator URLS` checks, once the load stopped, that no two grants of
# the store overlap.
#
# Prints Markdown tables (the layout, ids, duplicates, order violations per host id, on a
# temporal layout the shards served, availability per node, faults, failovers and how long
# each took) and the audit's table, and exits 1 on any duplicate, order violation or mixed
# response, when fewer than N ids were acknowledged, or when `shardflake audit` exits
# non-zero (overlapping grants, or no answer); 2 when the cluster could not be run (or the
# layout cannot be checked). Namespaces, links and processes are removed on exit, whatever
# happens; the work directory (ids per host id, responses.csv, availability.csv, report.md,
# every process's log) is removed after a passing run unless --keep is given, and kept
# otherwise. Names carry a random run id
# (namespaces sfn<id>-*, bridge sfb<id>), so runs side by side do not collide.
#
# Needs root (network namespaces). Installs iproute2, nftables, faketime, python3 and, for
# --etcd, etcd-server and etcd-client when missing (Debian). Builds the binary with
# `cargo build --release -p shardflake-cli --features etcd` unless SHARDFLAKE_BIN names one.
set -euo pipefail
bin=""
if [ -n "${SHARDFLAKE_BIN:-}" ]; then
  bin=$(realpath "$SHARDFLAKE_BIN")
fi
cd "$(dirname "$0")/.."
repo=$(pwd)

usage="usage: scripts/nemesis.sh [--duration SECONDS] [--ids N] [--layout SPEC] [--etcd] [--seed N] [--keep]"
duration=60
ids=1000000
layout=twitter
etcd=0
seed=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?$usage}; shift 2 ;;
    --ids) ids=${2:?$usage}; shift 2 ;;
    --layout) layout=${2:?$usage}; shift 2 ;;
    --etcd) etcd=1; shift ;;
    --seed) seed=${2:?$usage}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "nemesis.sh needs root: it creates network namespaces" >&2
  exit 2
fi

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "$etcd" -eq 1 ]; then
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
fi
if [ -z "$bin" ]; then
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing nemesis dependencies: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
libfaketime=""
for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 \
  /usr/local/lib/faketime/libfaketime.so.1; do
  if [ -f "$f" ]; then
    libfaketime=$f
    break
  fi
done
if [ -z "$libfaketime" ]; then
  echo "libfaketime.so.1 not found (package libfaketime)" >&2
  exit 2
fi

if [ -z "$bin" ]; then
  cargo build --release --locked -p shardflake-cli --features etcd
  bin=$repo/target/release/shardflake
fi

# A run id no namespace or link uses yet, and a /24 no address or route uses.
run=""
for _ in $(seq 1 50); do
  id=$(od -An -N2 -tx2 /dev/urandom | tr -d ' \n')
  if ! ip netns list | grep -q "^sfn$id-" && ! ip link show "sfb$id" >/dev/null 2>&1; then
    run=$id
    break
  fi
done
net=""
for _ in $(seq 1 50); do
  candidate="10.$((RANDOM % 128 + 64)).$((RANDOM % 256))"
  if ! ip -4 -o addr show | grep -qF " $candidate." \
    && ! ip -4 route show | grep -qF "$candidate."; then
    net=$candidate
    break
  fi
done
if [ -z "$run" ] || [ -z "$net" ]; then
  echo "no free run id or /24 found" >&2
  exit 2
fi
bridge="sfb$run"
work=$(mktemp -d "/tmp/shardflake-nemesis-$run.XXXXXX")
namespaces=()
veths=()
forward_rule=0
driver=""
status=2

cleanup() {
  status=$?
  local ns pids
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  for ns in "${namespaces[@]}"; do
    # Until none is left (a dying process still shows), for at most 5 s.
    for _ in $(seq 1 50); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] || break
      # shellcheck disable=SC2086 # one pid per word
      kill -9 $pids 2>/dev/null || true
      sleep 0.1
    done
  done
  # A namespace outlives its name while the kernel still holds sockets of its killed
  # processes; deleting the veths' root ends removes the pairs now.
  for veth in "${veths[@]}"; do
    ip link del "$veth" 2>/dev/null || true
  done
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  if [ "$forward_rule" -eq 1 ]; then
    iptables -D FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null || true
  fi
  if [ "$status" -eq 0 ] && [ "$keep" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "work directory kept: $work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
# Bridged frames pass the root namespace's FORWARD chain where br_netfilter is loaded; a
# DROP policy there (Docker sets one) would cut the nodes off from the coordinators.
if command -v iptables >/dev/null 2>&1 \
  && iptables -S FORWARD 2>/dev/null | grep -q '^-P FORWARD DROP'; then
  iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT
  forward_rule=1
fi

# add_namespace NAME HOST: namespace sfn<run>-NAME with address $net.HOST on its eth0.
add_namespace() {
  local host=$2 ns="sfn$run-$1" veth="sfv$run$1"
  namespaces+=("$ns")
  ip netns add "$ns"
  veths+=("$veth")
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$net.$host/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$net.1"
}

add_namespace c 2
nodes=()
for i in 1 2 3 4; do
  add_namespace "n$i" $((10 + i))
  nodes+=(--node "n$i=sfn$run-n$i=$net.$((10 + i))")
done
add_namespace s 20

echo "nemesis run $run: bridge $bridge on $net.0/24, namespaces ${namespaces[*]}, work $work"
flags=(--bin "$bin" --repo "$repo" --work "$work" --libfaketime "$libfaketime"
  --duration "$duration" --ids "$ids" --layout "$layout"
  --coordinator "sfn$run-c=$net.2" "${nodes[@]}" --standby "s=sfn$run-s=$net.20")
if [ "$etcd" -eq 1 ]; then flags+=(--etcd); fi
if [ -n "$seed" ]; then flags+=(--seed "$seed"); fi
# In the background, so that a signal to this script tears everything down at once.
python3 scripts/nemesis.py "${flags[@]}" &
driver=$!
wait "$driver"
