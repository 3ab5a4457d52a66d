#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, for tests and benchmarks.
#
#   scripts/etcd-cluster.sh start DIR   start members m1..m3 with data under DIR; prints the
#                                       client URLs (comma separated) and writes them to
#                                       DIR/endpoints once the cluster answers
#   scripts/etcd-cluster.sh stop DIR    kill the members and remove DIR
#   scripts/etcd-cluster.sh restore DIR SNAPSHOT
#                                       stop the members, restore SNAPSHOT (`etcdctl snapshot
#                                       save`) into fresh data directories, start them again
#
# Ports: clients on BASE+1..BASE+3, peers on BASE+11..BASE+13, with BASE from
# SHARDFLAKE_ETCD_PORT_BASE (default 23790; keep BASE+13 below the kernel's ephemeral port range,
# 32768 and up on Linux, or an outgoing connection may hold a member's port). Member i's pid is in DIR/m<i>.pid and its log in
# DIR/m<i>.log, so fault tests can kill and restart single members
# (`scripts/etcd-cluster.sh restart DIR i`).
set -euo pipefail

cmd=${1:?usage: etcd-cluster.sh start|stop|restart DIR [member]}
dir=${2:?usage: etcd-cluster.sh start|stop|restart DIR [member]}
base=${SHARDFLAKE_ETCD_PORT_BASE:-23790}
etcd_bin=${ETCD_BIN:-etcd}
# etcd's own history compaction (every 5 minutes) unless ETCD_AUTO_COMPACTION=off (the soak
# measures the coordinators' compaction alone); ETCD_EXTRA_ARGS go to every member as they
# are (e.g. `--quota-backend-bytes 2097152` for the quota alarm test).
compaction=(--auto-compaction-mode periodic --auto-compaction-retention 5m)
if [ "${ETCD_AUTO_COMPACTION:-on}" = off ]; then
  compaction=()
fi

cluster=""
for i in 1 2 3; do
  cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 + i))"
done
endpoints="http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2)),http://127.0.0.1:$((base + 3))"

start_member() {
  local i=$1 state=$2
  # setsid: the member outlives this script's process group, and a test's kill -9 of one
  # member touches nothing else.
  setsid "$etcd_bin" --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" \
    --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$cluster" --initial-cluster-token shardflake-test \
    --initial-cluster-state "$state" \
    --heartbeat-interval 50 --election-timeout 500 \
    "${compaction[@]}" ${ETCD_EXTRA_ARGS:-} \
    >>"$dir/m$i.log" 2>&1 </dev/null &
  echo $! >"$dir/m$i.pid"
}

wait_healthy() {
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" --command-timeout=1s \
      endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "etcd cluster in $dir did not become healthy; logs:" >&2
  tail -n 20 "$dir"/m*.log >&2
  # Leave nothing running: a caller that retries on another port range starts clean.
  for i in 1 2 3; do
    if [ -f "$dir/m$i.pid" ]; then kill -9 "$(cat "$dir/m$i.pid")" 2>/dev/null || true; fi
  done
  return 1
}

case "$cmd" in
  start)
    for p in $((base + 1)) $((base + 2)) $((base + 3)) $((base + 11)) $((base + 12)) $((base + 13)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "port $p is in use: set SHARDFLAKE_ETCD_PORT_BASE to a free range" >&2
        exit 1
      fi
    done
    mkdir -p "$dir"
    for i in 1 2 3; do start_member "$i" new; done
    wait_healthy
    echo "$endpoints" >"$dir/endpoints"
    echo "$endpoints"
    ;;
  restart)
    i=${3:?usage: etcd-cluster.sh restart DIR member}
    start_member "$i" existing
    ;;
  stop)
    for i in 1 2 3; do
      if [ -f "$dir/m$i.pid" ]; then kill -9 "$(cat "$dir/m$i.pid")" 2>/dev/null || true; fi
    done
    rm -rf "$dir"
    ;;
  restore)
    snapshot=${3:?usage: etcd-cluster.sh restore DIR SNAPSHOT}
    for i in 1 2 3; do
      if [ -f "$dir/m$i.pid" ]; then kill -9 "$(cat "$dir/m$i.pid")" 2>/dev/null || true; fi
    done
    sleep 0.5
    for i in 1 2 3; do
      rm -rf "$dir/m$i"
      ETCDCTL_API=3 etcdctl snapshot restore "$snapshot" --name "m$i" \
        --data-dir "$dir/m$i" --initial-cluster "$cluster" \
        --initial-cluster-token shardflake-test \
        --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" >>"$dir/restore.log" 2>&1
    done
    for i in 1 2 3; do start_member "$i" existing; done
    wait_healthy
    ;;
  *)
    echo "unknown command $cmd (start, stop, restart, restore)" >&2
    exit 2
    ;;
esac
