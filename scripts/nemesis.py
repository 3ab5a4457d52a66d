#!/usr/bin/env python3
"""The nemesis run's driver (started by scripts/nemesis.sh, which creates the network
namespaces and tears them down): runs a shardflake cluster as real processes, one per
namespace, drives a client load through it while a fault schedule breaks it, checks every
acknowledged id with `shardflake verify` and prints the figures as Markdown tables.

Cluster: one coordinator over the embedded store, or with --etcd two coordinators over a
3-member etcd (scripts/etcd-cluster.sh, on the loopback of the coordinators' namespace);
nodes and one standby, each in its own namespace, all under libfaketime with an offset read
from a file the schedule rewrites.

Layout: --layout SPEC (LAYOUT_DEFAULT when not given) is the coordinators' layout; the
nodes get none and serve the cluster's (a grant carries its fingerprint); `shardflake
inspect` says where the host id (and a temporal layout's shard) lies in its ids, and
`shardflake verify` reads the ids in it. Any 64-bit preset or spec whose node fields are
adjacent (the host id). A temporal layout (`temporal:granularity=10s`) issues
`[shard][host][counter]`: every node enters a new shard each granularity, from a block the
coordinator prepared with a renewal, and takes counter blocks within it, all under the
faults. Its shard must be longer than CLOCK_STEP_S_MAX: the coordinators grant blocks at
most one shard ahead of their clock, and a node stepped further ahead enters a shard they
refuse and stays there until real time reaches it (an open finding, README), so such a
layout is refused before anything starts.

Load: one client stream per node slot, each with one request in flight
(`GET /ids?count=BATCH`, text), paced together to acknowledge about LOAD_MARGIN x --ids
ids over the run and to send at least REQUESTS_PER_S_MIN requests a second. A stream sends
nothing while its node waits as a standby (a load balancer sends no traffic to a node that
is not ready and never was). A request times out after REQUEST_TIMEOUT_S, less than the
lease TTL: a SIGSTOPped node's requests hang. Every request is counted, attempted and
succeeded, per node and per second (availability.csv).

What is checked, with `shardflake verify` (the one id checker):
  * every acknowledged id, all hosts together: count and duplicates;
  * per host id (the node fields of the id), the ids of every response carrying that host
    id, responses in the order they were sent: order violations. Within a response the
    ids must increase; across responses too, because a host id's holders follow one
    another (a new holder starts strictly above the bound its predecessor persisted, and a
    predecessor stops before its successor starts) and each slot has one request in
    flight, so a response sent later was served later. On a temporal layout the shard is
    the id's top field: a generator never goes back a shard (a clock behind keeps it in
    its current one) and a holder's blocks in a shard start above every earlier block of
    that host id and shard, so the order holds as long as no holder starts in a shard
    below its predecessor's last one. Nothing bounds that by design (a new lease starts
    in its clock's shard; a Snowflake grant's start_above_ms has no temporal twin), but
    the schedule does not make it happen: only a lease lost while its node's clock is
    stepped could, and a clock fault claims its node alone (no partition, pause or kill
    of it meanwhile) and ends only after real time passed the node's clock ahead; the
    standby and restarted nodes run on real time.
  * the coordinators' own grants, once the load stopped and before they are stopped:
    `shardflake audit` (with the read credential) proves that no two grants of the store
    overlap; its table is printed, and a non-zero exit fails the run.
A response whose ids carry two host ids, or fewer ids than asked, is counted as well.
On a temporal layout the report also counts the shards each host id served in (from the
ids' shard field): the roll-overs the faults met.

Next to `/ids`, two more loads run through the same faults:
  * namespaces: two are created at the start (`orders` from 1000; `users` from 7 in steps
    of 3), and one stream per node slot asks `GET /ns/NAME/ids` of its node, following the
    307 to the node that serves the namespace. Every value acknowledged is checked here: no
    value twice in a namespace, every value at or above the start and on the step's grid,
    increasing within a response.
  * the SDK: `shardflake fetch --coordinators` (the `IdClient`: routing table, buffers,
    failover between nodes) runs again and again for plain ids and for `orders`; its ids
    join the duplicate check of `shardflake verify` (not the per-host order: an SDK client
    hands out what several nodes answered), its values the namespace checks.
Exit status: 0 when every check passes and at least --ids ids were acknowledged, 1 when a
check fails or too few ids were acknowledged, 2 when the cluster could not be run.

Credentials: the coordinators accept a random node credential (SHARDFLAKE_NODE_TOKEN, which
the nodes send), a random read credential (SHARDFLAKE_READ_TOKEN, which `shardflake audit`
and `shardflake fetch` send) and a random admin credential (SHARDFLAKE_ADMIN_TOKEN, which
creates the namespaces).
"""

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass

TTL_S = 2.0
# Below the TTL: a reply held up past a handover is never acknowledged.
REQUEST_TIMEOUT_S = 1.0
NODE_PORT = 8080
COORDINATOR_PORTS = (7070, 7071)
ETCD_PORT_BASE = 23790
# The coordinators' layout when --layout is not given.
LAYOUT_DEFAULT = "twitter"
# More host ids than processes, few enough that host ids pass from holder to holder.
MAX_HOSTS = 16
# Acknowledge this much more than --ids, for the availability the faults cost.
LOAD_MARGIN = 1.3
# Requests per second across the nodes at least, whatever --ids asks: a node that must stop
# at its lease deadline is asked often around it.
REQUESTS_PER_S_MIN = 80
START_DEADLINE_S = 60.0
BACKOFF_MIN_S = 0.025
BACKOFF_MAX_S = 0.4
WARMUP_S = 3.0
# Calm at the end of the run, after the last fault healed.
TAIL_S = 3.0
# The namespaces served next to /ids: (name, start, step, offset).
NAMESPACES = (("orders", 1000, 1, 0), ("users", 7, 3, 1))
# Small blocks, so that nodes fetch blocks often and faults meet block requests.
NS_BLOCK_MIN, NS_BLOCK_MAX = 100, 2000
NS_BATCH = 50
# Requests per second of each node slot's namespace stream.
NS_REQUESTS_PER_S = 10
# How many ids (and values) one `shardflake fetch` of the SDK load takes, and how long it
# may go without an id before it gives up (every node failing).
SDK_FETCH_IDS = 3000
SDK_FETCH_STALL_S = 5

T0 = time.monotonic()


def now():
    """Seconds since the driver started (monotonic): every time the run records."""
    return time.monotonic() - T0


OUT_LOCK = threading.Lock()
LOG_FILE = None


def say(msg):
    """Prints a progress line with the time since the driver started."""
    line = f"[{now():7.2f}] {msg}"
    with OUT_LOCK:
        print(line, flush=True)
        if LOG_FILE:
            LOG_FILE.write(line + "\n")
            LOG_FILE.flush()


class Backoff:
    """Exponential, jittered, capped waits between failed attempts."""

    def __init__(self, rng, low=BACKOFF_MIN_S, high=BACKOFF_MAX_S):
        self.rng, self.low, self.high, self.next = rng, low, high, low

    def failed(self):
        wait = self.next * self.rng.uniform(0.8, 1.2)
        self.next = min(self.next * 2, self.high)
        return wait

    def succeeded(self):
        self.next = self.low


def retry_until(what, check, deadline_s, rng):
    """Calls check() until it returns a true value or deadline_s pass, backing off and
    logging once per change of what check() reports (check returns (value, state))."""
    backoff = Backoff(rng, 0.02, 0.5)
    start, last_state = now(), None
    while True:
        value, state = check()
        if value:
            return value
        if state != last_state:
            say(f"waiting until {what}: {state}")
            last_state = state
        if now() - start > deadline_s:
            raise RuntimeError(f"timed out after {deadline_s:.0f} s waiting until {what}: {state}")
        time.sleep(backoff.failed())


# ---------------------------------------------------------------------------------------
# Processes


@dataclass
class Event:
    """Something a node logged that the report needs."""

    t: float
    slot: str
    gen: int
    kind: str  # held, lost, takeover, coordinator_failover
    host: int = -1
    token: int = -1
    detail: str = ""


class Service:
    """One service process in a namespace; its stderr is copied to a log file with the
    driver's time in front of every line, and its JSON log lines are parsed for events."""

    def __init__(self, name, ns, argv, env, log_dir, on_record=None):
        self.name, self.ns, self.argv, self.env = name, ns, argv, env
        self.log_dir, self.on_record = log_dir, on_record
        self.proc, self.gen, self.reader = None, 0, None
        self.listening = threading.Event()

    def start(self, argv=None):
        if argv is not None:
            self.argv = argv
        self.gen += 1
        self.listening = threading.Event()
        # `ip netns exec` and `env` exec, so the pid is the service's own.
        cmd = ["ip", "netns", "exec", self.ns, "env"] + self.env + self.argv
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        path = os.path.join(self.log_dir, f"{self.name}.{self.gen}.log")
        self.reader = threading.Thread(
            target=self._read, args=(self.proc, self.gen, path), daemon=True
        )
        self.reader.start()

    def _read(self, proc, gen, path):
        with open(path, "w", encoding="utf-8") as out:
            for raw in proc.stderr:
                t = now()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                out.write(f"{t:.3f} {line}\n")
                out.flush()
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                fields = rec.get("fields", {})
                if fields.get("message") == "listening":
                    self.listening.set()
                if self.on_record:
                    self.on_record(self, gen, t, fields)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self):
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def terminate(self, grace_s=5.0):
        """SIGTERM (after SIGCONT, in case it is stopped), then SIGKILL after grace_s."""
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class Slot:
    """A node's place in the cluster: its namespace, address and clock file; the process
    in it is restarted by the schedule, possibly in another role."""

    name: str
    ns: str
    ip: str
    clock_file: str
    service: Service = None
    standby: bool = False
    # A standby that took over a host id serves like any node.
    promoted: bool = False
    stopped: bool = False
    busy: bool = False  # a fault is applied to it now

    def in_rotation(self):
        return not self.standby or self.promoted


# ---------------------------------------------------------------------------------------
# The cluster


class Cluster:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.log_dir = os.path.join(self.work, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.node_token = "node-" + os.urandom(16).hex()
        self.read_token = "read-" + os.urandom(16).hex()
        self.admin_token = "admin-" + os.urandom(16).hex()
        self.events = []
        self.events_lock = threading.Lock()
        self.coord_ns, self.coord_ip = args.coordinator.split("=")
        self.coordinators = []
        self.slots = {}
        for spec, standby in [(s, False) for s in args.node] + [(args.standby, True)]:
            name, ns, ip = spec.split("=")
            clock = os.path.join(self.work, f"clock-{name}")
            self.write_clock(clock, 0)
            self.slots[name] = Slot(name, ns, ip, clock, standby=standby)
        self.etcd_dir = os.path.join(self.work, "etcd") if args.etcd else None

    # -- time on the nodes ----------------------------------------------------------------

    @staticmethod
    def write_clock(path, offset_s):
        """libfaketime reads the offset from the file at every clock read
        (FAKETIME_NO_CACHE); a rename makes the change atomic."""
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{offset_s:+d}\n")
        os.replace(tmp, path)

    # -- coordinators and etcd ------------------------------------------------------------

    def coordinator_urls(self):
        ports = COORDINATOR_PORTS[: 2 if self.args.etcd else 1]
        return ",".join(f"http://{self.coord_ip}:{p}" for p in ports)

    def coordinator_argv(self, i):
        argv = [
            self.args.bin, "coordinator",
            "--listen", f"{self.coord_ip}:{COORDINATOR_PORTS[i]}",
            "--data-dir", os.path.join(self.work, f"coordinator-{i + 1}"),
            "--layout", self.args.layout,
            "--lease-ttl", f"{int(TTL_S * 1000)}ms",
            "--max-hosts", str(MAX_HOSTS),
            "--log-format", "json",
        ]
        if self.args.etcd:
            argv += ["--etcd", self.etcd_endpoints, "--etcd-prefix", "/shardflake-nemesis/"]
        return argv

    def etcd_script(self, *cmd):
        return subprocess.run(
            ["ip", "netns", "exec", self.coord_ns, "env",
             f"SHARDFLAKE_ETCD_PORT_BASE={ETCD_PORT_BASE}",
             "bash", os.path.join(self.args.repo, "scripts/etcd-cluster.sh"), *cmd],
            check=True, capture_output=True, text=True,
        )

    def etcd_member_endpoint(self, i):
        return f"http://127.0.0.1:{ETCD_PORT_BASE + i}"

    def etcd_leader(self):
        """The member (1..3) that reports itself raft leader, or None."""
        for i in (1, 2, 3):
            out = subprocess.run(
                ["ip", "netns", "exec", self.coord_ns, "env", "ETCDCTL_API=3", "etcdctl",
                 "--endpoints", self.etcd_member_endpoint(i), "--command-timeout=2s",
                 "endpoint", "status", "-w", "json"],
                capture_output=True, text=True,
            )
            try:
                status = json.loads(out.stdout)[0]["Status"]
            except (ValueError, IndexError, KeyError):
                continue
            if status["header"]["member_id"] == status["leader"]:
                return i
        return None

    def etcd_pid(self, i):
        with open(os.path.join(self.etcd_dir, f"m{i}.pid"), encoding="ascii") as f:
            return int(f.read().strip())

    def start_infrastructure(self):
        env = [f"SHARDFLAKE_NODE_TOKEN={self.node_token}",
               f"SHARDFLAKE_READ_TOKEN={self.read_token}",
               f"SHARDFLAKE_ADMIN_TOKEN={self.admin_token}", "RUST_LOG=info"]
        if self.args.etcd:
            out = self.etcd_script("start", self.etcd_dir)
            self.etcd_endpoints = out.stdout.strip()
            say(f"etcd: 3 members in namespace {self.coord_ns}: {self.etcd_endpoints}")
        count = 2 if self.args.etcd else 1
        for i in range(count):
            c = Service(f"coordinator-{i + 1}", self.coord_ns, self.coordinator_argv(i), env,
                        self.log_dir)
            self.coordinators.append(c)
            c.start()
            if not c.listening.wait(START_DEADLINE_S):
                raise RuntimeError(f"{c.name} did not start; see {self.log_dir}")
            say(f"{c.name}: pid {c.pid}, {self.coord_ip}:{COORDINATOR_PORTS[i]}")
        self.create_namespaces()
        for slot in self.slots.values():
            self.start_node(slot, slot.standby)
        for slot in self.slots.values():
            if not slot.service.listening.wait(START_DEADLINE_S):
                raise RuntimeError(f"{slot.name} did not start; see {self.log_dir}")
            if not slot.standby:
                retry_until(f"{slot.name} is ready", lambda s=slot: self.ready(s),
                            START_DEADLINE_S, random.Random(0))
        say("cluster ready: " + ", ".join(
            f"{s.name} ({'standby' if s.standby else 'node'}, {s.ip})"
            for s in self.slots.values()))

    def create_namespaces(self):
        """`PUT /v1/namespaces/NAME` for each of NAMESPACES, with the admin credential."""
        for name, start, step, offset in NAMESPACES:
            body = json.dumps({"start": start, "step": step, "offset": offset,
                               "block_min": NS_BLOCK_MIN, "block_max": NS_BLOCK_MAX})

            def put(name=name, body=body):
                try:
                    conn = http.client.HTTPConnection(self.coord_ip, COORDINATOR_PORTS[0],
                                                      timeout=5)
                    conn.request("PUT", f"/v1/namespaces/{name}", body=body, headers={
                        "Authorization": f"Bearer {self.admin_token}",
                        "Content-Type": "application/json"})
                    r = conn.getresponse()
                    answer = r.read()
                    conn.close()
                except (OSError, http.client.HTTPException) as e:
                    return False, repr(e)
                return r.status in (200, 201), f"{r.status} {answer[:200]!r}"

            retry_until(f"namespace {name} is created", put, START_DEADLINE_S,
                        random.Random(0))
        say("namespaces: " + ", ".join(
            f"{n} (from {start}, step {step})" for n, start, step, _ in NAMESPACES))

    # -- nodes ----------------------------------------------------------------------------

    def node_argv(self, slot, standby):
        """No --layout: a node in a cluster serves the coordinators' (the grant carries its
        fingerprint), the standby too."""
        argv = [
            self.args.bin, "serve",
            "--bind", "0.0.0.0", "--port", str(NODE_PORT),
            "--coordinator", self.coordinator_urls(),
            "--lease-ttl", f"{int(TTL_S * 1000)}ms",
            "--state-dir", os.path.join(self.work, f"state-{slot.name}"),
            "--advertise-url", f"http://{slot.ip}:{NODE_PORT}",
            "--log-format", "json",
        ]
        return argv + (["--standby"] if standby else [])

    def start_node(self, slot, standby):
        self.write_clock(slot.clock_file, 0)
        slot.standby, slot.promoted, slot.stopped = standby, False, False
        argv = self.node_argv(slot, standby)
        if slot.service is None:
            env = [
                f"SHARDFLAKE_NODE_TOKEN={self.node_token}", "RUST_LOG=info",
                f"HOSTNAME={slot.name}",
                f"LD_PRELOAD={self.args.libfaketime}",
                f"FAKETIME_TIMESTAMP_FILE={slot.clock_file}",
                "FAKETIME_NO_CACHE=1",
                "FAKETIME_DONT_FAKE_MONOTONIC=1",
            ]
            slot.service = Service(slot.name, slot.ns, argv, env, self.log_dir,
                                   on_record=lambda svc, gen, t, f, s=slot:
                                   self.on_node_record(s, gen, t, f))
            slot.service.start()
        else:
            slot.service.start(argv)
        say(f"{slot.name}: started{' as the standby' if standby else ''}, "
            f"pid {slot.service.pid} (process {slot.service.gen})")

    def on_node_record(self, slot, gen, t, fields):
        msg = fields.get("message", "")
        ev = None
        if msg == "lease held":
            ev = Event(t, slot.name, gen, "held", fields.get("host_id", -1),
                       fields.get("token", -1))
            say(f"{slot.name}: holds host id {ev.host} (token {ev.token})")
        elif msg.startswith("lease lost"):
            ev = Event(t, slot.name, gen, "lost", fields.get("host_id", -1),
                       fields.get("token", -1), fields.get("reason", ""))
            say(f"{slot.name}: lost host id {ev.host} (token {ev.token}): {ev.detail}")
        elif msg == "standby took over host id":
            ev = Event(t, slot.name, gen, "takeover", fields.get("host_id", -1),
                       fields.get("token", -1))
            if gen == slot.service.gen:
                slot.promoted = True
            say(f"{slot.name}: standby took over host id {ev.host} (token {ev.token})")
        elif msg.startswith("failed over to another coordinator"):
            ev = Event(t, slot.name, gen, "coordinator_failover",
                       detail=f"{fields.get('previous', '?')} -> {fields.get('url', '?')}")
        if ev:
            with self.events_lock:
                self.events.append(ev)

    def ready(self, slot):
        try:
            c = http.client.HTTPConnection(slot.ip, NODE_PORT, timeout=REQUEST_TIMEOUT_S)
            c.request("GET", "/readyz")
            r = c.getresponse()
            body = r.read()
            c.close()
        except (OSError, http.client.HTTPException) as e:
            return False, type(e).__name__
        if r.status == 200:
            return True, "ready"
        try:
            return False, json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return False, f"status {r.status}"

    # -- partitions -----------------------------------------------------------------------

    def nft(self, slot, script):
        subprocess.run(["ip", "netns", "exec", slot.ns, "nft", "-f", "-"], input=script,
                       text=True, check=True)

    def partition(self, slot, inbound, outbound, port=None):
        """Drops the node's traffic with the coordinators' address (optionally one port):
        `inbound` what comes from them, `outbound` what goes to them."""
        match_in = f"ip saddr {self.coord_ip}" + (f" tcp sport {port}" if port else "")
        match_out = f"ip daddr {self.coord_ip}" + (f" tcp dport {port}" if port else "")
        rules = ["table inet nemesis {"]
        if inbound:
            rules.append(f"  chain in {{ type filter hook input priority 0; {match_in} drop; }}")
        if outbound:
            rules.append(f"  chain out {{ type filter hook output priority 0; {match_out} drop; }}")
        rules.append("}")
        self.nft(slot, "\n".join(rules) + "\n")

    def heal(self, slot):
        subprocess.run(["ip", "netns", "exec", slot.ns, "nft", "delete", "table", "inet",
                        "nemesis"], capture_output=True)

    # -- shutdown -------------------------------------------------------------------------

    def stop_all(self):
        for slot in self.slots.values():
            self.heal(slot)
            self.write_clock(slot.clock_file, 0)
            if slot.service:
                slot.service.terminate()
        for c in self.coordinators:
            c.terminate()
        if self.etcd_dir and os.path.isdir(self.etcd_dir):
            try:
                self.etcd_script("stop", self.etcd_dir)
            except subprocess.CalledProcessError as e:
                say(f"etcd stop failed: {e.stderr}")


# ---------------------------------------------------------------------------------------
# Load


@dataclass
class Response:
    t_send: float
    t_ack: float
    slot: str
    gen: int
    host: int
    count: int
    first: int
    last: int
    offset: int
    length: int


@dataclass
class Failure:
    t_send: float
    t_ack: float
    slot: str
    gen: int
    code: str


class Pacer:
    """Spaces the requests of every stream so that about LOAD_MARGIN x target ids are
    acknowledged by t_end, speeding up when faults cost ids, and sends at least
    REQUESTS_PER_S_MIN requests a second."""

    def __init__(self, target, t_end, batch):
        self.target, self.t_end, self.batch = target * LOAD_MARGIN, t_end, batch
        self.rate_min = REQUESTS_PER_S_MIN * batch
        self.lock = threading.Lock()
        self.next_t = 0.0
        self.acked = 0

    def take(self, stop):
        with self.lock:
            t = max(self.next_t, now())
            left = max(self.t_end - t, 1.0)
            rate = max((self.target - self.acked) / left, self.rate_min)
            self.next_t = t + self.batch / rate
        while not stop.is_set():
            wait = t - now()
            if wait <= 0:
                break
            time.sleep(min(wait, 0.05))
        return not stop.is_set()

    def acknowledged(self, n):
        with self.lock:
            self.acked += n


class Load:
    def __init__(self, cluster, batch, target, t_end, rng, shift, mask):
        self.cluster, self.batch = cluster, batch
        self.pacer = Pacer(target, t_end, batch)
        self.shift, self.mask = shift, mask
        self.rng = rng
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.responses, self.failures = [], []
        self.mixed, self.short = [], []
        self.spool_dir = os.path.join(cluster.work, "spool")
        os.makedirs(self.spool_dir, exist_ok=True)
        self.threads = [
            threading.Thread(target=self.stream, args=(s, random.Random(rng.random())),
                             daemon=True)
            for s in cluster.slots.values()
        ]
        # Namespace values per response: (t_send, slot, served by, name, values).
        self.ns_responses = []
        self.ns_failed = self.ns_redirected = 0
        by_ip = {s.ip: s.name for s in cluster.slots.values()}
        self.threads += [
            threading.Thread(target=self.ns_stream,
                             args=(s, random.Random(rng.random()), by_ip), daemon=True)
            for s in cluster.slots.values()
        ]
        # The SDK's ids (a file for `shardflake verify`) and namespace values.
        self.sdk_ids_path = os.path.join(cluster.work, "sdk-ids.txt")
        self.sdk = {"runs": 0, "gave_up": 0, "ids": 0, "values": 0}
        self.threads.append(threading.Thread(target=self.sdk_stream,
                                             args=(random.Random(rng.random()),),
                                             daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def stream(self, slot, rng):
        spool = open(os.path.join(self.spool_dir, f"{slot.name}.txt"), "wb")
        offset, conn = 0, None
        backoff = Backoff(rng)
        state, since, failed_in_state = "ok", now(), 0
        path = f"/ids?count={self.batch}"
        while not self.stop.is_set():
            if not slot.in_rotation():
                # The log says when the standby took a host id over; readiness says it too.
                self.stop.wait(0.2)
                if not slot.in_rotation() and self.cluster.ready(slot)[0]:
                    slot.promoted = True
                continue
            if not self.pacer.take(self.stop):
                break
            gen = slot.service.gen
            t_send = now()
            code, body = None, b""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(slot.ip, NODE_PORT,
                                                      timeout=REQUEST_TIMEOUT_S)
                conn.request("GET", path, headers={"Accept": "text/plain"})
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    try:
                        code = json.loads(body)["error"]["code"]
                    except (ValueError, KeyError, TypeError):
                        code = f"http_{r.status}"
            except (OSError, http.client.HTTPException) as e:
                code = {TimeoutError: "timeout", ConnectionRefusedError: "refused"}.get(
                    type(e), type(e).__name__)
                # A reply that comes late must not be read as the next request's.
                if conn is not None:
                    conn.close()
                conn = None
            t_ack = now()
            if code is None:
                ids = [int(x) for x in body.split()]
                offset = self.record(slot, gen, t_send, t_ack, ids, spool, offset)
                backoff.succeeded()
                if state != "ok":
                    say(f"{slot.name}: serving again after {t_ack - since:.2f} s "
                        f"({failed_in_state} failed requests)")
                    state, since, failed_in_state = "ok", t_ack, 0
                continue
            with self.lock:
                self.failures.append(Failure(t_send, t_ack, slot.name, gen, code))
            if code != state:
                if state == "ok":
                    since = t_send
                say(f"{slot.name}: failing: {code}")
                state = code
            failed_in_state += 1
            wait = backoff.failed()
            self.stop.wait(wait)
        spool.close()
        if conn:
            conn.close()

    @staticmethod
    def get(host, port, path):
        """One GET on a new connection: (status, body, Location); status None when no
        answer came within REQUEST_TIMEOUT_S."""
        conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", path, headers={"Accept": "text/plain"})
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("Location")
        except (OSError, http.client.HTTPException):
            return None, b"", None
        finally:
            conn.close()

    def ns_stream(self, slot, rng, by_ip):
        """Asks the slot's node for values of a namespace, following its 307 to the node
        that serves it, NS_REQUESTS_PER_S times a second."""
        names = [n for n, *_ in NAMESPACES]
        while not self.stop.wait(rng.uniform(0.5, 1.5) / NS_REQUESTS_PER_S):
            if not slot.in_rotation():
                continue
            name = rng.choice(names)
            t_send = now()
            status, body, location = self.get(slot.ip, NODE_PORT,
                                              f"/ns/{name}/ids?count={NS_BATCH}")
            served_by = slot.name
            if status == 307 and location:
                u = urllib.parse.urlsplit(location)
                served_by = by_ip.get(u.hostname, u.hostname)
                status, body, _ = self.get(u.hostname, u.port or 80,
                                           u.path + (f"?{u.query}" if u.query else ""))
            if status != 200:
                with self.lock:
                    self.ns_failed += 1
                continue
            values = [int(x) for x in body.split()]
            with self.lock:
                self.ns_responses.append((t_send, slot.name, served_by, name, values))
                self.ns_redirected += served_by != slot.name

    def sdk_stream(self, rng):
        """`shardflake fetch` through the coordinators' routing table, again and again, for
        plain ids and for `orders`; what it printed before giving up counts too."""
        cluster = self.cluster
        env = dict(os.environ, SHARDFLAKE_READ_TOKEN=cluster.read_token)
        with open(self.sdk_ids_path, "w", encoding="ascii") as out:
            while not self.stop.wait(rng.uniform(0.2, 0.6)):
                ns = rng.choice([None, "orders"])
                argv = [cluster.args.bin, "fetch", "--coordinators", cluster.coordinator_urls(),
                        "-n", str(SDK_FETCH_IDS), "--batch-max", "500",
                        "--timeout", f"{SDK_FETCH_STALL_S}s",
                        "--request-timeout", f"{int(REQUEST_TIMEOUT_S * 1000)}ms"]
                if ns:
                    argv += ["--ns", ns]
                try:
                    r = subprocess.run(argv, env=env, capture_output=True, text=True,
                                       timeout=SDK_FETCH_STALL_S * 4)
                    printed, code = r.stdout, r.returncode
                except subprocess.TimeoutExpired as e:
                    printed, code = (e.stdout or b"").decode(), None
                values = [int(x) for x in printed.split()]
                with self.lock:
                    self.sdk["runs"] += 1
                    if code != 0:
                        self.sdk["gave_up"] += 1
                    if ns:
                        self.sdk["values"] += len(values)
                        self.ns_responses.append((now(), "sdk", "sdk", ns, values))
                    else:
                        self.sdk["ids"] += len(values)
                        out.write("".join(f"{v}\n" for v in values))
                        out.flush()

    def record(self, slot, gen, t_send, t_ack, ids, spool, offset):
        if len(ids) != self.batch:
            with self.lock:
                self.short.append((t_send, slot.name, gen, len(ids)))
        if not ids:
            return offset
        shift, mask = self.shift, self.mask
        groups = {}
        order = []
        for i in ids:
            h = (i >> shift) & mask
            if h not in groups:
                groups[h] = []
                order.append(h)
            groups[h].append(i)
        if len(order) > 1:
            with self.lock:
                self.mixed.append((t_send, slot.name, gen, order))
        entries = []
        for h in order:
            part = groups[h]
            data = ("\n".join(map(str, part)) + "\n").encode()
            spool.write(data)
            entries.append(Response(t_send, t_ack, slot.name, gen, h, len(part), part[0],
                                    part[-1], offset, len(data)))
            offset += len(data)
        spool.flush()
        with self.lock:
            self.responses.extend(entries)
        self.pacer.acknowledged(len(ids))
        return offset


# ---------------------------------------------------------------------------------------
# Faults


@dataclass
class Fault:
    kind: str
    target: str
    t_start: float
    t_end: float = 0.0
    detail: str = ""
    victim_slot: str = ""
    restarted_as_standby: bool = False


# The largest clock step, back or ahead. A temporal layout's shard must be longer (checked
# at the start): a node stepped ahead then enters at most the next shard, which the
# coordinators grant blocks in.
CLOCK_STEP_S_MAX = 4
CLOCK_AHEAD_HOLD_S = 3
# How long after a fault healed its effects are attributed to it (a lease lost at the end of
# a partition is re-acquired within about a TTL).
AFTERMATH_S = 2 * TTL_S + 1
# After the first round, the chance that the next fault starts before this one healed.
OVERLAP_PROBABILITY = 0.3
# Seconds each fault takes from its start to the end of its healing action.
FAULT_LENGTH_S = {
    "kill": 1.0,
    "pause": 2.5 * TTL_S,
    # Shorter than the TTL and than REQUEST_TIMEOUT_S: the lease survives, and the requests
    # in flight are answered after SIGCONT (and checked like any other).
    "pause-short": 0.3 * TTL_S,
    "clock": 2 * CLOCK_STEP_S_MAX + CLOCK_AHEAD_HOLD_S + 1.5,
    "partition": 2.5 * TTL_S,
    "partition-one-way": 2.5 * TTL_S,
    "partition-short": 0.5 * TTL_S,
    "coordinator-kill": 0.5,
    "etcd-leader-kill": 2.0,
    "partition-one-coordinator": 2.5 * TTL_S,
}


class Nemesis:
    def __init__(self, cluster, rng, t_end):
        self.cluster, self.rng, self.t_end = cluster, rng, t_end
        self.faults = []
        self.skipped = []
        self.stop = threading.Event()
        self.error = None
        self.claim = threading.Lock()
        self.infra_busy = set()
        self.thread = threading.Thread(target=self.run, daemon=True)
        # A killed node comes back as the standby, so the partition after the first kill
        # meets a waiting standby (which takes the host id over while the cut-off node
        # still serves its clients until its lease may have expired), and so does the
        # pause after the second.
        kinds = ["kill", "partition", "kill", "pause", "clock", "partition-one-way",
                 "partition-short", "pause-short", "coordinator-kill"]
        if cluster.args.etcd:
            kinds += ["etcd-leader-kill", "partition-one-coordinator"]
        self.kinds = kinds

    def sleep(self, s):
        self.stop.wait(s)

    def kinds_in_order(self):
        return list(dict.fromkeys(self.kinds))

    def victim(self):
        """Claims a node slot that serves, chosen at random (release with s.busy = False)."""
        with self.claim:
            live = [s for s in self.cluster.slots.values()
                    if s.in_rotation() and s.service.alive() and not s.stopped and not s.busy]
            if not live:
                return None
            s = self.rng.choice(live)
            s.busy = True
            return s

    def claim_infra(self, name):
        with self.claim:
            if name in self.infra_busy:
                return False
            self.infra_busy.add(name)
            return True

    def apply(self, kind):
        try:
            getattr(self, "fault_" + kind.replace("-", "_"))()
        except Exception as e:  # a fault that cannot be applied stops the run
            say(f"fault {kind} failed: {e!r}")
            self.error = e

    def run(self):
        self.sleep(WARMUP_S)
        cycle = list(self.kinds)
        first = True
        running = []
        while not self.stop.is_set() and not self.error:
            applied = 0
            for kind in cycle:
                if self.stop.is_set() or self.error:
                    break
                if now() + FAULT_LENGTH_S[kind] + TAIL_S > self.t_end:
                    if first:
                        self.skipped.append(kind)
                    continue
                applied += 1
                t = threading.Thread(target=self.apply, args=(kind,), daemon=True)
                t.start()
                running.append(t)
                # After the first round, now and then the next fault starts while this
                # one is still on.
                if not first and self.rng.random() < OVERLAP_PROBABILITY:
                    self.sleep(self.rng.uniform(0.5, 2.0))
                else:
                    t.join()
                    self.sleep(self.rng.uniform(1.5, 2.5))
            if first and self.skipped:
                say("not applied (the run is too short for them): " + ", ".join(self.skipped))
            if now() + TAIL_S + 1.0 > self.t_end:
                break
            if not applied:
                self.sleep(0.5)
            first = False
            cycle = list(self.kinds)
            self.rng.shuffle(cycle)
        for t in running:
            t.join()

    def begin(self, kind, target, detail="", victim_slot=""):
        f = Fault(kind, target, now(), detail=detail, victim_slot=victim_slot)
        self.faults.append(f)
        say(f"FAULT {kind} on {target}" + (f": {detail}" if detail else ""))
        return f

    def end(self, f, what="healed"):
        f.t_end = now()
        say(f"FAULT {f.kind} on {f.target}: {what}")

    def fault_kill(self):
        s = self.victim()
        if not s:
            return
        f = self.begin("kill", s.name, "kill -9, restart after 1 s as the standby", s.name)
        s.service.kill9()
        self.sleep(FAULT_LENGTH_S["kill"])
        # The waiting standby, if there is one, takes the killed node's host id over; the
        # restarted node waits in its place.
        self.cluster.start_node(s, standby=True)
        f.restarted_as_standby = True
        self.end(f, "restarted as the standby")
        s.busy = False

    def fault_pause(self, kind="pause"):
        s = self.victim()
        if not s:
            return
        s.stopped = True
        length = FAULT_LENGTH_S[kind]
        f = self.begin(kind, s.name, f"SIGSTOP for {length:.1f} s (TTL {TTL_S:.0f} s)",
                       s.name)
        s.service.signal(signal.SIGSTOP)
        self.sleep(length)
        s.service.signal(signal.SIGCONT)
        s.busy = s.stopped = False
        self.end(f, "SIGCONT")

    def fault_pause_short(self):
        self.fault_pause("pause-short")

    def fault_clock(self):
        s = self.victim()
        if not s:
            return
        back = self.rng.randint(1, CLOCK_STEP_S_MAX)
        ahead = self.rng.randint(1, CLOCK_STEP_S_MAX)
        f = self.begin("clock", s.name, f"wall clock -{back} s for {back + 1} s, then "
                       f"+{ahead} s for {CLOCK_AHEAD_HOLD_S} s, then real time", s.name)
        # Behind: the node waits for its clock to pass the ids it issued, then serves (on a
        # temporal layout it keeps issuing in its current shard).
        self.cluster.write_clock(s.clock_file, -back)
        self.sleep(back + 1)
        # Ahead: it issues ids stamped ahead of the others (within its reservation, which
        # it extends from its own clock; on a temporal layout it may enter the next shard
        # early).
        self.cluster.write_clock(s.clock_file, ahead)
        self.sleep(CLOCK_AHEAD_HOLD_S)
        # Back to real time: behind its last ids by `ahead` seconds again.
        self.cluster.write_clock(s.clock_file, 0)
        self.end(f, "clock back to real time")
        self.sleep(ahead + 0.5)
        s.busy = False

    def _partition(self, kind, inbound, outbound, port=None, what=""):
        s = self.victim()
        if not s:
            return
        length = FAULT_LENGTH_S[kind]
        f = self.begin(kind, s.name, f"{what} for {length:.1f} s", s.name)
        self.cluster.partition(s, inbound, outbound, port)
        self.sleep(length)
        self.cluster.heal(s)
        self.end(f)
        s.busy = False

    def fault_partition(self):
        self._partition("partition", True, True, what="node <-> coordinators dropped")

    def fault_partition_one_way(self):
        # The node's requests reach the coordinators, which commit them; every answer is
        # lost on the way back.
        self._partition("partition-one-way", True, False,
                        what="coordinators -> node dropped (node -> coordinators passes)")

    def fault_partition_short(self):
        self._partition("partition-short", True, True,
                        what="node <-> coordinators dropped, shorter than the TTL")

    def fault_partition_one_coordinator(self):
        self._partition("partition-one-coordinator", True, True, port=COORDINATOR_PORTS[0],
                        what="node <-> coordinator-1 dropped (coordinator-2 reachable)")

    def fault_coordinator_kill(self):
        c = self.rng.choice(self.cluster.coordinators)
        if not self.claim_infra(c.name):
            return
        f = self.begin("coordinator-kill", c.name, "kill -9, restart after 0.5 s")
        c.kill9()
        self.sleep(FAULT_LENGTH_S["coordinator-kill"])
        c.start()
        if not c.listening.wait(START_DEADLINE_S):
            raise RuntimeError(f"{c.name} did not restart")
        self.end(f, f"restarted, pid {c.pid}")
        self.infra_busy.discard(c.name)

    def fault_etcd_leader_kill(self):
        if not self.claim_infra("etcd"):
            return
        leader = retry_until("an etcd member is leader",
                             lambda: (self.cluster.etcd_leader(), "no leader"), 30, self.rng)
        f = self.begin("etcd-leader-kill", f"etcd m{leader}", "kill -9, restart after 2 s")
        os.kill(self.cluster.etcd_pid(leader), signal.SIGKILL)
        self.sleep(FAULT_LENGTH_S["etcd-leader-kill"])
        self.cluster.etcd_script("restart", self.cluster.etcd_dir, str(leader))
        self.end(f, "restarted")
        self.infra_busy.discard("etcd")


# ---------------------------------------------------------------------------------------
# Checking and reporting


def inspect_layout(binary, layout):
    """`shardflake inspect --layout LAYOUT --json`: the layout's name, unit and fields.
    Raises RuntimeError for a layout the run cannot check: not a 64-bit layout, no node
    field or node fields that are not adjacent (no host id to group the ids by), or a
    temporal layout whose shard is not longer than CLOCK_STEP_S_MAX."""
    out = subprocess.run([binary, "inspect", "--layout", layout, "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"shardflake inspect --layout {layout}: {out.stderr.strip()}")
    desc = json.loads(out.stdout)
    if desc["bits"] > 64:
        raise RuntimeError(f"layout {layout} is not a 64-bit layout: it has no host id")
    nodes = [f for f in desc["fields"] if f["kind"] == "node"]
    if not nodes:
        raise RuntimeError(f"layout {layout} has no node field: the run groups ids by host id")
    shift = min(f["shift"] for f in nodes)
    if max(f["shift"] + f["bits"] for f in nodes) - shift != sum(f["bits"] for f in nodes):
        raise RuntimeError(f"layout {layout}: its node fields are not adjacent")
    if is_temporal(desc) and desc["time_unit_ms"] <= CLOCK_STEP_S_MAX * 1000:
        raise RuntimeError(
            f"layout {layout}: a shard of {desc['time_unit_ms']} ms is not longer than the "
            f"largest clock step ({CLOCK_STEP_S_MAX} s); the run keeps a node stepped ahead "
            f"within the next shard, the one the coordinators grant blocks in")
    return desc


def is_temporal(desc):
    """True for a temporal layout (`[shard][host][counter]`)."""
    return desc["layout"] == "temporal"


def layout_host_bits(desc):
    """(shift, mask) of the host id in the layout's ids: its node fields, adjacent."""
    nodes = [f for f in desc["fields"] if f["kind"] == "node"]
    shift = min(f["shift"] for f in nodes)
    bits = sum(f["bits"] for f in nodes)
    return shift, (1 << bits) - 1


def layout_shard_bits(desc):
    """(shift, mask) of the shard in a temporal layout's ids (its timestamp field)."""
    (f,) = [f for f in desc["fields"] if f["kind"] == "timestamp"]
    return f["shift"], (1 << f["bits"]) - 1


def verify(binary, layout, paths):
    """`shardflake verify --layout LAYOUT` on the ids of `paths`, one after another: count,
    duplicates, order violations, examples."""
    cat = subprocess.Popen(["cat", *paths], stdout=subprocess.PIPE)
    out = subprocess.run([binary, "verify", "--layout", layout, "-"], stdin=cat.stdout,
                         capture_output=True, text=True)
    cat.stdout.close()
    if cat.wait() != 0 or out.returncode not in (0, 1):
        raise RuntimeError(f"shardflake verify {' '.join(paths)} failed: "
                           f"{out.stderr.strip()}")
    report = {"examples": []}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key == "duplicate":
            report["examples"].append(value)
        else:
            report[key] = int(value)
    return report


AUDIT_TIMEOUT_S = 30


def audit(binary, urls, read_token):
    """`shardflake audit` against the running coordinators: (exit status, its output)."""
    env = dict(os.environ, SHARDFLAKE_READ_TOKEN=read_token)
    try:
        out = subprocess.run([binary, "audit", "--coordinator", urls,
                              "--timeout", f"{AUDIT_TIMEOUT_S}s"],
                             env=env, capture_output=True, text=True,
                             timeout=AUDIT_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired:
        return None, f"shardflake audit did not finish within {AUDIT_TIMEOUT_S + 5} s"
    return out.returncode, (out.stdout + out.stderr).rstrip("\n")


def fmt_int(n):
    return f"{n:,}".replace(",", " ")


def pct(ok, total):
    return f"{100.0 * ok / total:.2f} %" if total else "-"


class Report:
    def __init__(self, args, cluster, load, nemesis, t_start, t_stop, audited, layout):
        self.args, self.cluster, self.load, self.nemesis = args, cluster, load, nemesis
        self.layout = layout
        self.t_start, self.t_stop = t_start, t_stop
        self.audit_status, self.audit_output = audited
        self.responses = sorted(load.responses, key=lambda r: r.t_send)
        self.failures = sorted(load.failures, key=lambda f: f.t_send)
        self.events = sorted(cluster.events, key=lambda e: e.t)
        self.ids_dir = os.path.join(cluster.work, "ids")
        os.makedirs(self.ids_dir, exist_ok=True)
        self.problems = []

    # -- writing the ids for verify -------------------------------------------------------

    def write_ids(self):
        """One file per host id, its responses in the order they were sent; the streams'
        spool files are removed."""
        spools = {name: open(os.path.join(self.load.spool_dir, f"{name}.txt"), "rb")
                  for name in self.cluster.slots}
        self.by_host = {}
        for r in self.responses:
            self.by_host.setdefault(r.host, []).append(r)
        self.host_files = {}
        for host, rs in sorted(self.by_host.items()):
            path = os.path.join(self.ids_dir, f"host-{host}.txt")
            self.host_files[host] = path
            with open(path, "wb") as out:
                for r in rs:
                    spool = spools[r.slot]
                    spool.seek(r.offset)
                    out.write(spool.read(r.length))
        for name, f in spools.items():
            f.close()
            os.remove(os.path.join(self.load.spool_dir, f"{name}.txt"))
        os.rmdir(self.load.spool_dir)

    def check(self):
        binary, layout = self.args.bin, self.args.layout
        self.total = verify(binary, layout,
                            list(self.host_files.values()) + [self.load.sdk_ids_path])
        self.per_host = {h: verify(binary, layout, [p]) for h, p in self.host_files.items()}
        self.order_violations = sum(v["order_violations"] for v in self.per_host.values())
        self.acked = sum(r.count for r in self.responses) + self.load.sdk["ids"]
        if self.total["count"] != self.acked:
            self.problems.append(f"verify read {self.total['count']} ids, "
                                 f"the load acknowledged {self.acked}")
        if self.total["duplicates"]:
            self.problems.append(f"{self.total['duplicates']} duplicate ids")
        if self.order_violations:
            self.problems.append(f"{self.order_violations} order violations within host ids")
        self.count_shards()
        if self.load.mixed:
            self.problems.append(f"{len(self.load.mixed)} responses mixing host ids")
        if self.load.short:
            self.problems.append(f"{len(self.load.short)} responses with fewer ids than asked")
        self.check_namespaces()
        if not self.load.sdk["ids"] or not self.load.sdk["values"]:
            self.problems.append(f"the SDK load handed out {self.load.sdk['ids']} ids and "
                                 f"{self.load.sdk['values']} namespace values")
        if self.acked < self.args.ids:
            self.problems.append(f"only {self.acked} ids acknowledged, {self.args.ids} "
                                 f"requested")
        if self.audit_status != 0:
            # Exit 1 is also how the command reports an error (no coordinator answered, a
            # refused credential): the table's last line tells the two apart.
            if "OVERLAPS" in self.audit_output:
                self.problems.append("shardflake audit found overlapping grants")
            else:
                last = self.audit_output.splitlines()[-1] if self.audit_output else ""
                how = ("timed out" if self.audit_status is None
                       else f"exit {self.audit_status}")
                self.problems.append(f"shardflake audit failed ({how}): {last}")

    def count_shards(self):
        """Temporal layouts: the shards each host id served ids in (self.shards, host id ->
        set of shard indexes), read from every acknowledged id of the nodes' responses."""
        self.shards = {}
        if not is_temporal(self.layout):
            return
        shift, mask = layout_shard_bits(self.layout)
        for host, path in self.host_files.items():
            with open(path, "rb") as f:
                self.shards[host] = {(int(line) >> shift) & mask for line in f}

    def check_namespaces(self):
        """Every namespace value acknowledged (the SDK's too): none twice, each at or above
        the start and on the step's grid, and increasing within a node's response."""
        rules = {name: (start, step, offset) for name, start, step, offset in NAMESPACES}
        self.ns = {name: {"values": 0, "repeated": 0, "off_rule": 0, "not_increasing": 0,
                          "served_by": set()} for name in rules}
        seen = {name: set() for name in rules}
        for _, slot, served_by, name, values in sorted(self.load.ns_responses,
                                                       key=lambda r: r[0]):
            start, step, offset = rules[name]
            v = self.ns[name]
            v["values"] += len(values)
            if slot != "sdk":
                v["served_by"].add(served_by)
                if any(a >= b for a, b in zip(values, values[1:])):
                    v["not_increasing"] += 1
            for x in values:
                if x in seen[name]:
                    v["repeated"] += 1
                else:
                    seen[name].add(x)
                if x < start or x % step != offset % step:
                    v["off_rule"] += 1
        for name, v in self.ns.items():
            if not v["values"]:
                self.problems.append(f"no value of namespace {name} acknowledged")
            for key, what in (("repeated", "values repeated"),
                              ("off_rule", "values below the start or off the step's grid"),
                              ("not_increasing", "responses not increasing")):
                if v[key]:
                    self.problems.append(f"namespace {name}: {v[key]} {what}")

    # -- where a bad id came from ---------------------------------------------------------

    def lease_at(self, slot, gen, t):
        held = [e for e in self.events
                if e.slot == slot and e.gen == gen and e.kind == "held" and e.t <= t]
        return f"host {held[-1].host} token {held[-1].token}" if held else "no lease logged"

    def faults_around(self, t):
        return [f"{f.kind} on {f.target} at {f.t_start:.2f}-{f.t_end:.2f}"
                for f in self.nemesis.faults if f.t_start - 1 <= t <= f.t_end + 2 * TTL_S + 1]

    def describe(self, r):
        return (f"{r.slot} (process {r.gen}, {self.lease_at(r.slot, r.gen, r.t_send)}), "
                f"sent {r.t_send:.3f} s, acknowledged {r.t_ack:.3f} s, {r.count} ids "
                f"{r.first}..{r.last}; faults around: "
                f"{'; '.join(self.faults_around(r.t_send)) or 'none'}")

    def locate(self):
        """Prints the responses behind every duplicate example and the first order
        violations, with the process, its lease and the faults around."""
        lines = []
        for ex in self.total["examples"]:
            dup = int(ex.split()[0])
            lines.append(f"duplicate {ex}:")
            for r in self.responses:
                if r.first <= dup <= r.last:
                    lines.append("  in a response from " + self.describe(r))
        for host, v in self.per_host.items():
            if not v["order_violations"]:
                continue
            prev_r, prev_id, shown = None, None, 0
            with open(self.host_files[host], "rb") as f:
                for r in self.by_host[host]:
                    for _ in range(r.count):
                        i = int(f.readline())
                        if prev_id is not None and i <= prev_id and shown < 5:
                            where = ("within one response" if prev_r is r
                                     else "across responses")
                            lines.append(f"order violation on host {host} ({where}): {i} "
                                         f"after {prev_id}")
                            lines.append("  earlier: " + self.describe(prev_r))
                            lines.append("  later:   " + self.describe(r))
                            shown += 1
                        prev_r, prev_id = r, i
        for t, slot, gen, hosts in self.load.mixed[:5]:
            lines.append(f"response mixing host ids {hosts}: {slot} process {gen}, "
                         f"sent {t:.3f} s")
        for t, slot, gen, n in self.load.short[:5]:
            lines.append(f"response with {n} ids (asked {self.load.batch}): {slot} "
                         f"process {gen}, sent {t:.3f} s")
        return lines

    # -- availability and failovers -------------------------------------------------------

    def first_success(self, slot, after, host=None):
        for r in self.responses:
            if r.slot == slot and r.t_send >= after and (host is None or r.host == host):
                return r.t_ack
        return None

    def failovers(self):
        """Standby takeovers and lease acquisitions after a lost lease or a restart, each
        with the fault it followed and when its node served again."""
        rows = []
        seen_held = set()
        takeovers = {(e.slot, e.gen, e.token) for e in self.events if e.kind == "takeover"}
        for e in self.events:
            if e.kind not in ("held", "takeover"):
                continue
            if e.kind == "held":
                first_of_process = (e.slot, e.gen) not in seen_held
                seen_held.add((e.slot, e.gen))
                if (e.slot, e.gen, e.token) in takeovers:
                    continue
                if first_of_process and e.gen == 1:
                    continue  # the initial lease
                if first_of_process:
                    what = f"{e.slot} (restarted) acquired host id {e.host} (token {e.token})"
                    kind = "restart"
                else:
                    what = f"{e.slot} re-acquired host id {e.host} (token {e.token})"
                    kind = "re-acquisition"
            else:
                seen_held.add((e.slot, e.gen))
                before = [x for x in self.events if x.kind == "held" and x.host == e.host
                          and x.t < e.t and x.token < e.token]
                prev = before[-1].slot if before else None
                what = (f"standby {e.slot} took over host id {e.host}"
                        f"{f' from {prev}' if prev else ''} (token {e.token})")
                kind = "takeover"
            # The fault it followed: one on the node that lost the host id (for a takeover,
            # its previous holder), else one on the coordinators or etcd.
            victim = prev if kind == "takeover" else e.slot
            fault = (self.fault_before(e.t, lambda f: f.victim_slot == victim)
                     or self.fault_before(e.t, lambda f: not f.victim_slot))
            serving = self.first_success(e.slot, e.t)
            rows.append({
                "t": e.t, "kind": kind, "what": what, "fault": fault,
                "after_fault": (serving - fault.t_start) if fault and serving else None,
                "after_event": (serving - e.t) if serving else None,
            })
        return rows

    def fault_before(self, t, which):
        """The last fault that `which` accepts and whose effects may last until t."""
        found = None
        for f in self.nemesis.faults:
            if which(f) and f.t_start <= t <= f.t_end + AFTERMATH_S:
                found = f
        return found

    def fault_rows(self):
        """Per fault: failed requests on its node (all nodes for a coordinator or etcd
        fault) from its start until AFTERMATH_S after it healed, how long its node
        failed requests, and when it served again."""
        rows = []
        faults = self.nemesis.faults

        def under_node_fault(x):
            return any(g.victim_slot == x.slot and g.t_start <= x.t_send <= g.t_end + AFTERMATH_S
                       for g in faults)

        for f in faults:
            # Until the next fault on the same node, at most.
            end = min([f.t_end + AFTERMATH_S] + [
                g.t_start for g in faults
                if g.t_start > f.t_start and g.victim_slot == f.victim_slot])
            # A coordinator or etcd fault counts the failures of nodes no fault of their
            # own explains.
            failed = [x for x in self.failures
                      if f.t_start <= x.t_send <= end
                      and (x.slot == f.victim_slot if f.victim_slot
                           else not under_node_fault(x))]
            row = {"fault": f, "failed": len(failed), "down": None, "back": None, "note": ""}
            on_victim = failed if f.victim_slot else []
            if f.restarted_as_standby:
                row["note"] = "restarted as the standby"
            elif f.victim_slot and not on_victim:
                row["note"] = "no failed request"
                row["down"] = 0.0
            elif f.victim_slot:
                # Each run of failures lasts from its first failed request to the next
                # success.
                spans, t = 0.0, None
                while on_victim:
                    start = on_victim[0].t_send
                    t = self.first_success(f.victim_slot, start)
                    if t is None:
                        break
                    spans += t - start
                    on_victim = [x for x in on_victim if x.t_send > t]
                row["down"] = spans
                if t is None:
                    row["note"] = "not served again before the end"
                else:
                    row["back"] = t - f.t_start
            rows.append(row)
        return rows

    def write_responses(self):
        """responses.csv: every acknowledged response (split by host id if it mixed them),
        in the order sent; the host files hold their ids in this order."""
        path = os.path.join(self.cluster.work, "responses.csv")
        with open(path, "w", encoding="ascii") as f:
            f.write("sent_s,acknowledged_s,node,process,host_id,ids,first,last\n")
            for r in self.responses:
                f.write(f"{r.t_send:.4f},{r.t_ack:.4f},{r.slot},{r.gen},{r.host},{r.count},"
                        f"{r.first},{r.last}\n")

    def availability(self):
        per_slot = {}
        for r in self.responses:
            per_slot.setdefault(r.slot, {"ok": 0, "failed": 0, "ids": 0, "hosts": set()})
        for name in self.cluster.slots:
            per_slot.setdefault(name, {"ok": 0, "failed": 0, "ids": 0, "hosts": set()})
        seen = set()
        for r in self.responses:
            # A response split by host id is one request.
            key = (r.slot, r.gen, r.t_send)
            if key not in seen:
                seen.add(key)
                per_slot[r.slot]["ok"] += 1
            per_slot[r.slot]["ids"] += r.count
            per_slot[r.slot]["hosts"].add(r.host)
        for x in self.failures:
            per_slot[x.slot]["failed"] += 1
        return per_slot

    def timeline(self):
        """availability.csv: per second of load and node, requests attempted and
        succeeded."""
        rows = {}

        def second(t):
            return int(t - self.t_start)

        seen = set()
        for r in self.responses:
            key = (r.slot, r.gen, r.t_send)
            if key in seen:
                continue
            seen.add(key)
            c = rows.setdefault((second(r.t_send), r.slot), [0, 0, 0])
            c[0] += 1
            c[1] += 1
        for x in self.failures:
            c = rows.setdefault((second(x.t_send), x.slot), [0, 0, 0])
            c[0] += 1
        for r in self.responses:
            rows[(second(r.t_send), r.slot)][2] += r.count
        path = os.path.join(self.cluster.work, "availability.csv")
        with open(path, "w", encoding="ascii") as f:
            f.write("second,node,attempted,succeeded,ids\n")
            for (sec, slot), (a, s, n) in sorted(rows.items()):
                f.write(f"{sec},{slot},{a},{s},{n}\n")
        failing_seconds = {sec for (sec, _), (a, s, _) in rows.items() if s < a}
        serving_seconds = {sec for (sec, _), (_, s, _) in rows.items() if s > 0}
        windows = max((sec for sec, _ in rows), default=-1) + 1
        return failing_seconds, serving_seconds, windows

    def print(self):
        out = []
        a = self.availability()
        ok = sum(v["ok"] for v in a.values())
        failed = sum(v["failed"] for v in a.values())
        failing_seconds, serving_seconds, windows = self.timeline()
        seconds = round(self.t_stop - self.t_start)
        failovers = self.failovers()
        takeovers = [x for x in failovers if x["kind"] == "takeover"]
        reacq = [x for x in failovers if x["kind"] == "re-acquisition"]
        restarts = [x for x in failovers if x["kind"] == "restart"]

        def median(xs):
            xs = [x for x in xs if x is not None]
            return f"{statistics.median(xs):.2f} s" if xs else "-"

        self.write_responses()

        moves = [e for e in self.events if e.kind == "coordinator_failover"]
        mode = ("2 coordinators over a 3-member etcd" if self.args.etcd
                else "1 coordinator, embedded store")
        layout = self.args.layout
        if is_temporal(self.layout):
            layout += f" (shards of {self.layout['time_unit_ms'] / 1000:g} s)"
        out.append(f"nemesis run: layout {layout}; {mode}; "
                   f"{len(self.cluster.slots) - 1} nodes and 1 standby, "
                   f"each in its own network namespace; lease TTL {TTL_S:.0f} s; "
                   f"{seconds} s of load, batches of {self.load.batch}; seed {self.args.seed}; "
                   f"times in seconds since the start, load from {self.t_start:.1f} s")
        out.append("")
        out.append("| check | result |")
        out.append("|---|---:|")
        out.append(f"| ids acknowledged (requested at least {fmt_int(self.args.ids)}) | "
                   f"{fmt_int(self.acked)} |")
        out.append(f"| duplicates (`shardflake verify`, every id) | "
                   f"{fmt_int(self.total['duplicates'])} |")
        out.append(f"| order violations (`shardflake verify` per host id, "
                   f"{len(self.per_host)} host ids) | {fmt_int(self.order_violations)} |")
        out.append(f"| responses mixing host ids / short responses | "
                   f"{len(self.load.mixed)} / {len(self.load.short)} |")
        if self.shards:
            every = set().union(*self.shards.values())
            pairs = sum(len(v) for v in self.shards.values())
            out.append(f"| temporal shards with ids (first..last) / host id × shard pairs "
                       f"served | {len(every)} ({min(every)}..{max(every)}) / {pairs} |")
        ns_values = sum(v["values"] for v in self.ns.values())
        ns_ok = sum(1 for r in self.load.ns_responses if r[1] != "sdk")
        out.append(f"| namespace values acknowledged ({', '.join(self.ns)}; the SDK's "
                   f"included) | {fmt_int(ns_values)} |")
        out.append("| namespace values repeated / below the start or off the grid / "
                   "responses not increasing | " + " / ".join(
                       fmt_int(sum(v[k] for v in self.ns.values()))
                       for k in ("repeated", "off_rule", "not_increasing")) + " |")
        out.append(f"| namespace requests succeeded / attempted (served after a 307) | "
                   f"{pct(ns_ok, ns_ok + self.load.ns_failed)} ({fmt_int(ns_ok)} / "
                   f"{fmt_int(ns_ok + self.load.ns_failed)}; "
                   f"{fmt_int(self.load.ns_redirected)}) |")
        out.append(f"| nodes that served each namespace | " + "; ".join(
            f"{n}: {', '.join(sorted(v['served_by']))}" for n, v in self.ns.items()) + " |")
        out.append(f"| SDK (`shardflake fetch`): runs (gave up) / ids / namespace values | "
                   f"{self.load.sdk['runs']} ({self.load.sdk['gave_up']}) / "
                   f"{fmt_int(self.load.sdk['ids'])} / {fmt_int(self.load.sdk['values'])} |")
        out.append(f"| availability (requests succeeded / attempted) | {pct(ok, ok + failed)} "
                   f"({fmt_int(ok)} / {fmt_int(ok + failed)}) |")
        out.append(f"| seconds with a failed request / with ids served | "
                   f"{len(failing_seconds)} / {len(serving_seconds)} of {windows} |")
        out.append(f"| `shardflake audit` of the coordinators' grants (exit status) | "
                   f"{self.audit_status if self.audit_status is not None else 'timed out'} |")
        out.append(f"| faults applied | {len(self.nemesis.faults)} |")
        out.append(f"| standby takeovers (median time from the fault to serving) | "
                   f"{len(takeovers)} ({median(x['after_fault'] for x in takeovers)}) |")
        out.append(f"| lease re-acquisitions (median time from the fault to serving) | "
                   f"{len(reacq)} ({median(x['after_fault'] for x in reacq)}) |")
        if restarts:
            out.append(f"| acquisitions by restarted nodes (median time from the kill to "
                       f"serving) | {len(restarts)} "
                       f"({median(x['after_fault'] for x in restarts)}) |")
        if self.args.etcd:
            out.append(f"| nodes failing over to the other coordinator | {len(moves)} |")
        out.append("")
        out.append("| node | processes | requests ok / attempted | availability | ids | "
                   "host ids served |")
        out.append("|---|---:|---:|---:|---:|---|")
        for name, slot in self.cluster.slots.items():
            v = a[name]
            total = v["ok"] + v["failed"]
            out.append(f"| {name} | {slot.service.gen} | {fmt_int(v['ok'])} / "
                       f"{fmt_int(total)} | {pct(v['ok'], total)} | {fmt_int(v['ids'])} | "
                       f"{', '.join(map(str, sorted(v['hosts'])))} |")
        out.append("")
        out.append("| host id | ids | duplicates | order violations | served by, in turn |")
        out.append("|---:|---:|---:|---:|---|")
        for host, v in sorted(self.per_host.items()):
            holders = []
            for r in self.by_host[host]:
                tag = f"{r.slot}" + (f"#{r.gen}" if r.gen > 1 else "")
                if not holders or holders[-1] != tag:
                    holders.append(tag)
            out.append(f"| {host} | {fmt_int(v['count'])} | {v['duplicates']} | "
                       f"{v['order_violations']} | {' → '.join(holders)} |")
        out.append("")
        rows = self.fault_rows()

        def secs(v):
            return f"{v:.2f} s" if v is not None else "-"

        out.append("| fault | applied | failed requests | applied without a failed request | "
                   "its node unavailable, median (max) | failovers after it | from the fault "
                   "to serving again, median (max) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for kind in self.nemesis.kinds_in_order():
            of_kind = [x for x in rows if x["fault"].kind == kind]
            if not of_kind:
                continue
            downs = [x["down"] for x in of_kind if x["down"] is not None]
            clean = sum(1 for x in of_kind if x["failed"] == 0)
            after = [x for x in failovers if x["fault"] and x["fault"].kind == kind]
            times = [x["after_fault"] for x in after if x["after_fault"] is not None]
            out.append(f"| {kind} | {len(of_kind)} | {sum(x['failed'] for x in of_kind)} | "
                       f"{clean} | {median(downs)} ({secs(max(downs, default=None))}) | "
                       f"{len(after)} | {median(times)} ({secs(max(times, default=None))}) |")
        out.append("")
        out.append("| at (s) | fault | on | failed requests | it was unavailable | it served "
                   "again, from the fault |")
        out.append("|---:|---|---|---:|---:|---:|")
        for x in rows:
            f = x["fault"]
            down = x["note"] if x["note"] and not x["down"] else secs(x["down"])
            back = x["note"] if x["note"] and x["back"] is None else secs(x["back"])
            out.append(f"| {f.t_start:.1f} | {f.kind}: {f.detail} | {f.target} | "
                       f"{x['failed']} | {down} | {back} |")
        out.append("")
        out.append("| at (s) | failover | after the fault | serving again, from the fault |")
        out.append("|---:|---|---|---:|")
        for x in failovers:
            f = x["fault"]
            if f:
                fault = f"{f.kind} on {f.target} at {f.t_start:.1f} s"
            elif x["kind"] == "takeover":
                fault = "none near (a host id left unused since an earlier fault)"
            else:
                fault = "none near"
            if x["after_fault"] is not None:
                after = f"{x['after_fault']:.2f} s"
            elif x["after_event"] is not None:
                after = f"{x['after_event']:.2f} s after the failover"
            else:
                after = "-"
            out.append(f"| {x['t']:.1f} | {x['what']} | {fault} | {after} |")
        if self.nemesis.skipped:
            out.append("")
            out.append("not applied (the run is too short for them): "
                       + ", ".join(self.nemesis.skipped))
        out.append("")
        out.append(f"`shardflake audit --coordinator {self.cluster.coordinator_urls()}` "
                   f"after the load:")
        out.append("")
        out.append("```")
        out.append(self.audit_output)
        out.append("```")
        text = "\n".join(out)
        print()
        print(text)
        with open(os.path.join(self.cluster.work, "report.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        if self.problems:
            print()
            print("FAILED: " + "; ".join(self.problems))
            for line in self.locate():
                print(line)
            print(f"the ids per host id, responses.csv and every process's log are in "
                  f"{self.cluster.work}; the same fault choices again: scripts/nemesis.sh "
                  f"--duration {self.args.duration:g} --ids {self.args.ids} "
                  f"--layout {self.args.layout}"
                  f"{' --etcd' if self.args.etcd else ''} --seed {self.args.seed}")
        else:
            print()
            print(f"PASSED ({self.args.layout}): every acknowledged id is unique, ids "
                  "increase per host id, no two grants of the coordinators overlap")


def main():
    global LOG_FILE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--libfaketime", required=True)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--ids", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--layout", default=LAYOUT_DEFAULT,
                   help="the coordinators' layout, a preset or spec (default: %(default)s)")
    p.add_argument("--etcd", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--coordinator", required=True, help="NAMESPACE=IP")
    p.add_argument("--node", action="append", required=True, help="NAME=NAMESPACE=IP")
    p.add_argument("--standby", required=True, help="NAME=NAMESPACE=IP")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(args.seed)
    LOG_FILE = open(os.path.join(args.work, "nemesis.log"), "w", encoding="utf-8")
    say(f"seed {args.seed}; work directory {args.work}")
    try:
        layout = inspect_layout(args.bin, args.layout)
    except RuntimeError as e:
        say(f"the cluster could not be run: {e}")
        return 2
    shift, mask = layout_host_bits(layout)
    say(f"layout {args.layout}: host id at bits {shift}..={shift + mask.bit_length() - 1}"
        + (f", shards of {layout['time_unit_ms']} ms" if is_temporal(layout) else ""))
    cluster = Cluster(args)
    nemesis = load = None
    try:
        cluster.start_infrastructure()
        t_start = now()
        t_end = t_start + args.duration
        load = Load(cluster, args.batch, args.ids, t_end, rng, shift, mask)
        nemesis = Nemesis(cluster, rng, t_end)
        load.start()
        nemesis.thread.start()
        while now() < t_end:
            time.sleep(0.2)
            if nemesis.error:
                raise RuntimeError(f"the fault schedule stopped: {nemesis.error!r}")
            if not all(t.is_alive() for t in load.threads):
                raise RuntimeError("a load stream stopped (see the traceback above)")
        nemesis.stop.set()
        nemesis.thread.join()
        t_stop = now()
        load.finish()
        say(f"load stopped: {sum(r.count for r in load.responses)} ids acknowledged")
        # Every fault has healed (the schedule restarts what it killed before it returns);
        # the grants are read while the coordinators still run.
        audited = audit(args.bin, cluster.coordinator_urls(), cluster.read_token)
        say(f"shardflake audit: exit {audited[0]}")
    except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
        say(f"the cluster could not be run: {e}")
        if load:
            load.finish()
        return 2
    finally:
        if nemesis:
            nemesis.stop.set()
        cluster.stop_all()
    report = Report(args, cluster, load, nemesis, t_start, t_stop, audited, layout)
    report.write_ids()
    report.check()
    report.print()
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
