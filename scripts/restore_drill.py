#!/usr/bin/env python3
"""The restore drill: a coordinator store restored from a backup never leads to a repeated
value.

    scripts/restore-drill.sh [--store embedded|etcd|both] [--rounds N] [--keep]

For each store: a coordinator and two nodes (cluster mode, each with a state directory) on
loopback, one namespace; load through both nodes (snowflake ids and namespace values); a
backup of the store (embedded: the coordinator is stopped and its redb file copied; etcd:
`etcdctl snapshot save` while everything runs); more load; the restore (embedded: the
coordinator is stopped, the copy put back, the coordinator started again; etcd: every member
stopped, `etcdctl snapshot restore` into fresh data directories, the members started again);
the nodes, which remember the store's generation, make the restored store refuse to grant;
`shardflake repair` with the floors the application knows (the highest namespace value it
holds, the time of the restore); more load. Every id and every namespace value collected is
then checked for duplicates (`shardflake verify` for the ids), and the repaired store must
refuse to lower a namespace (`shardflake namespace raise` below its next value).

Prints a table per store and exits 0 when every check holds, 1 when one fails, 2 when the
drill could not run. Needs the binary (`--bin`, built with the etcd feature for --store etcd)
and, for etcd, `etcd` and `etcdctl` (Debian: etcd-server, etcd-client).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

NODE_TOKEN = "drill-node-token-0123456789"
READ_TOKEN = "drill-read-token-0123456789"
ADMIN_TOKEN = "drill-admin-token-0123456789"
NAMESPACE = "orders"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", token=None, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait(what, check, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting until {what}")


class Proc:
    def __init__(self, name, args, env, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env)
        self.p = subprocess.Popen(args, env=full_env, stdout=self.log, stderr=self.log,
                                  stdin=subprocess.DEVNULL)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")


class Drill:
    def __init__(self, args, store, work):
        self.bin = args.bin
        self.store = store
        self.work = work
        self.rounds = args.rounds
        self.procs = []
        self.ids = []
        self.values = []
        self.coordinator = None
        self.c_port = free_port()
        self.c_url = f"http://127.0.0.1:{self.c_port}"
        self.etcd_dir = os.path.join(work, "etcd")
        self.etcd_base = 26000 + (os.getpid() % 300) * 20
        self.rows = []

    # -- processes ---------------------------------------------------------------------

    def env(self):
        return {
            "SHARDFLAKE_NODE_TOKEN": NODE_TOKEN,
            "SHARDFLAKE_READ_TOKEN": READ_TOKEN,
            "SHARDFLAKE_ADMIN_TOKEN": ADMIN_TOKEN,
            "RUST_LOG": "info",
        }

    def start_coordinator(self):
        args = [self.bin, "coordinator", "--listen", f"127.0.0.1:{self.c_port}",
                "--data-dir", os.path.join(self.work, "coordinator"),
                "--lease-ttl", "2s", "--reservation-ahead-max", "3s"]
        if self.store == "etcd":
            args += ["--etcd", self.endpoints(), "--etcd-prefix", "/drill/"]
        self.coordinator = Proc("coordinator", args, self.env(), self.work)
        self.procs.append(self.coordinator)
        wait("the coordinator answers",
             lambda: http(f"{self.c_url}/healthz")[0] == 200)

    def start_node(self, i):
        port = free_port()
        args = [self.bin, "serve", "--bind", "127.0.0.1", "--port", str(port),
                "--coordinator", self.c_url, "--lease-ttl", "2s",
                "--state-dir", os.path.join(self.work, f"node{i}")]
        p = Proc(f"node{i}", args, {"SHARDFLAKE_NODE_TOKEN": NODE_TOKEN, "RUST_LOG": "info"},
                 self.work)
        p.url = f"http://127.0.0.1:{port}"
        self.procs.append(p)
        return p

    def endpoints(self):
        return ",".join(f"http://127.0.0.1:{self.etcd_base + i}" for i in (1, 2, 3))

    def etcd(self, *cmd):
        env = dict(os.environ, SHARDFLAKE_ETCD_PORT_BASE=str(self.etcd_base))
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "etcd-cluster.sh")
        out = subprocess.run(["bash", script, *cmd], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"etcd-cluster.sh {' '.join(cmd)}: {out.stderr}")
        return out.stdout.strip()

    # -- load ------------------------------------------------------------------------------

    def load(self, nodes, what):
        """Takes ids and namespace values through every node until each gave `rounds`."""
        got_ids, got_values = 0, 0
        for n in nodes:
            for _ in range(self.rounds):
                deadline = time.time() + 60
                while True:
                    s1, b1 = http(f"{n.url}/ids?count=500")
                    s2, b2 = http(f"{n.url}/ns/{NAMESPACE}/ids?count=100&hop=1")
                    if s1 == 200 and s2 == 200:
                        ids = json.loads(b1)["ids"]
                        values = json.loads(b2)["ids"]
                        self.ids += ids
                        self.values += values
                        got_ids += len(ids)
                        got_values += len(values)
                        break
                    if time.time() > deadline:
                        raise RuntimeError(f"{what}: {n.name} does not serve: {s1} {b1[:200]} "
                                           f"{s2} {b2[:200]}\n{n.tail()}")
                    time.sleep(0.2)
        self.rows.append((what, got_ids, got_values))

    # -- the drill -------------------------------------------------------------------------

    def run(self):
        if self.store == "etcd":
            os.makedirs(self.etcd_dir, exist_ok=True)
            self.etcd("start", self.etcd_dir)
        self.start_coordinator()
        status, body = http(f"{self.c_url}/v1/namespaces/{NAMESPACE}", "PUT", ADMIN_TOKEN,
                            {"block_min": 1000, "block_max": 1000})
        if status != 200:
            raise RuntimeError(f"namespace: {status} {body}")
        nodes = [self.start_node(1), self.start_node(2)]
        for n in nodes:
            wait(f"{n.name} serves", lambda n=n: http(f"{n.url}/readyz")[0] == 200)
        self.load(nodes, "before the backup")

        # The backup.
        backup = os.path.join(self.work, "backup")
        if self.store == "embedded":
            self.coordinator.stop()
            shutil.copy(os.path.join(self.work, "coordinator", "coordinator.redb"), backup)
            self.start_coordinator()
        else:
            subprocess.run(["etcdctl", "--endpoints", self.endpoints().split(",")[0],
                            "snapshot", "save", backup], check=True, capture_output=True,
                           env=dict(os.environ, ETCDCTL_API="3"))
        # Long enough for every node to renew past the backup, and to keep its generation.
        time.sleep(6)
        self.load(nodes, "after the backup")
        time.sleep(6)

        # The restore.
        restored_at_ms = int(time.time() * 1000)
        if self.store == "embedded":
            self.coordinator.stop()
            shutil.copy(backup, os.path.join(self.work, "coordinator", "coordinator.redb"))
            self.start_coordinator()
        else:
            self.etcd("restore", self.etcd_dir, backup)

        # The nodes tell the restored store what they have seen: it refuses to grant.
        def refused():
            s, b = http(f"{self.c_url}/readyz")
            return s == 503 and "restored" in b
        wait("the restored store refuses to grant", refused)
        s, b = http(f"{self.c_url}/readyz")
        self.rows.append(("restored store noticed", 0, 0))

        # The repair, with the floors the application knows.
        floor = max(self.values) + 1
        out = subprocess.run([self.bin, "repair", "--coordinator", self.c_url,
                              "--time-floor", str(restored_at_ms),
                              "--ns", f"{NAMESPACE}={floor}", "--json"],
                             env=dict(os.environ, SHARDFLAKE_ADMIN_TOKEN=ADMIN_TOKEN),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"repair failed: {out.stderr}")
        report = json.loads(out.stdout)
        wait("the store grants again",
             lambda: http(f"{self.c_url}/readyz")[0] == 200)
        for n in nodes:
            wait(f"{n.name} serves again", lambda n=n: http(f"{n.url}/readyz")[0] == 200, 90)
        self.load(nodes, "after the repair")

        # The repaired store lowers nothing.
        lower = subprocess.run([self.bin, "namespace", "raise", NAMESPACE, "--to", "1",
                                "--coordinator", self.c_url],
                               env=dict(os.environ, SHARDFLAKE_ADMIN_TOKEN=ADMIN_TOKEN),
                               capture_output=True, text=True)
        refuses_to_lower = lower.returncode != 0 and "would_lower" in lower.stderr
        return report, refuses_to_lower

    def verify(self):
        path = os.path.join(self.work, "ids.txt")
        with open(path, "w") as f:
            f.write("\n".join(str(i) for i in self.ids) + "\n")
        out = subprocess.run([self.bin, "verify", "--layout", "twitter", path],
                             capture_output=True, text=True)
        lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
        if "duplicates" not in lines:
            raise RuntimeError(f"shardflake verify: {out.stdout} {out.stderr}")
        id_dups = int(lines["duplicates"])
        value_dups = len(self.values) - len(set(self.values))
        return id_dups, value_dups

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        if self.store == "etcd":
            try:
                self.etcd("stop", self.etcd_dir)
            except RuntimeError:
                pass


def drill(args, store):
    work = tempfile.mkdtemp(prefix=f"shardflake-drill-{store}-")
    d = Drill(args, store, work)
    failed = []
    try:
        report, refuses_to_lower = d.run()
    except Exception as e:  # noqa: BLE001 - any failure ends the drill with its reason
        print(f"## restore drill ({store}): could not run: {e}", file=sys.stderr)
        for p in d.procs:
            print(f"--- {p.name}\n{p.tail()}", file=sys.stderr)
        d.stop()
        print(f"work directory kept: {work}", file=sys.stderr)
        return 2
    d.stop()
    id_dups, value_dups = d.verify()
    print(f"## restore drill: {store} store\n")
    print("| phase | ids | namespace values |")
    print("|---|---:|---:|")
    for what, ids, values in d.rows:
        print(f"| {what} | {ids} | {values} |")
    print(f"| **total** | {len(d.ids)} | {len(d.values)} |\n")
    ns = report["namespaces"][0]
    print(f"repair: generation {report['generation_before']} -> "
          f"{report['generation_after']}, `{ns['name']}` next {ns['before']} -> {ns['after']} "
          f"(nodes presented {ns['presented']}), {report['hosts_raised']} host record(s) "
          f"raised, token {report['token_before']} -> {report['token_after']}\n")
    print(f"duplicate ids: {id_dups}, duplicate namespace values: {value_dups}, "
          f"repair refuses to lower: {'yes' if refuses_to_lower else 'NO'}\n")
    if id_dups != 0:
        failed.append(f"{id_dups} duplicate ids")
    if value_dups != 0:
        failed.append(f"{value_dups} duplicate namespace values")
    if not refuses_to_lower:
        failed.append("a raise below next was not refused")
    if failed:
        print(f"FAILED ({store}): {', '.join(failed)}; work directory kept: {work}")
        return 1
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--store", choices=["embedded", "etcd", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=5,
                    help="requests per node and phase (500 ids and 100 values each)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    stores = ["embedded", "etcd"] if args.store == "both" else [args.store]
    worst = 0
    for s in stores:
        worst = max(worst, drill(args, s))
    sys.exit(worst)


if __name__ == "__main__":
    main()
