//! Deterministic simulation of a shardflake cluster.
//!
//! One seed drives, in one thread, the **real** code: coordinators (`Coordinator` and its HTTP
//! API) over one store, and nodes (`AppState` in cluster mode: the lease keeper, the
//! reservation, the generator, the HTTP router answering `/ids`) whose keepers talk to the
//! coordinators through [`shardflake_client::Transport`] over turmoil's simulated TCP. The
//! seed decides everything else: per-host clock drift and steps, message delay, loss, replay
//! and holds, one-way and two-way partitions, `kill -9` and restarts of nodes and
//! coordinators, and process pauses beyond the lease TTL. The [`check::Checker`] judges every
//! acknowledged batch as it arrives and the whole run at the end.
//!
//! `cargo run --release -p shardflake-sim -- --seeds 500` runs seeds 1..=500 and prints one
//! summary line; `--seed S` replays one seed and prints its trace.

pub mod check;
pub mod clock;
mod faults;
pub mod history;
mod liar;
pub mod net;
mod node;
pub mod plan;
mod sdk;
mod store;
pub mod trace;
mod view;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use shardflake::{Clock, FastRng, Layout};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::{CoordError, Coordinator, CoordinatorConfig, ManualTime};
use shardflake_node::ClockPolicyKind;

use crate::check::{CheckReport, Checker, IdDecoder};
use crate::clock::{HostClock, SimTime};
use crate::faults::{apply, World};
use crate::net::SimListener;
use crate::node::{NodeCtx, NodeSlot};
use crate::plan::{Event, Fault, Plan};
pub use crate::store::StoreKind;
use crate::trace::Trace;

/// The port every simulated coordinator listens on.
const COORDINATOR_PORT: u16 = 7070;
/// The cluster token.
const TOKEN: &str = "sim-cluster-token";
/// Wall time at the start of every simulation: 2030-03-17, a fixed date (no test depends on
/// today's).
const START_UNIX_MS: u64 = 1_900_000_000_000;
/// The largest clock step of a coordinator (ms). A coordinator's wall clock bounds how far
/// ahead reservations go, so a coordinator clock hours fast (with a node's as fast) would make
/// host ids unusable for hours after the clocks are corrected: availability, not safety, and
/// not what the liveness check is about. Nodes' clocks step by up to an hour.
pub const COORDINATOR_STEP_MS_MAX: u64 = 5_000;
/// The layouts a seed picks from.
const LAYOUTS: [&str; 4] = [
    "twitter",
    "twitter:sequence=6",
    "twitter:sequence=3",
    "temporal:granularity=5s",
];
/// The namespaces every seed creates (name, start, step) and the load asks values of.
const NAMESPACES: [(&str, u64, u64); 2] = [("orders", 1_000, 1), ("users", 7, 3)];
/// The clock policies a node picks from.
const POLICIES: [ClockPolicyKind; 3] = [
    ClockPolicyKind::Wait,
    ClockPolicyKind::Borrow,
    ClockPolicyKind::Fail,
];
/// The step back at a lease's end of a node whose clock policy is not `wait`.
const CLOCK_STEP_AT_LEASE_END_MS: u64 = 100;
/// Simulated time per step (ms).
const TICK_MS: u64 = 1;

/// The shape of a simulated cluster and its run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Primary nodes.
    pub nodes: usize,
    /// Standby nodes.
    pub standbys: usize,
    /// Coordinators sharing the store.
    pub coordinators: usize,
    /// Lease TTL (ms).
    pub ttl_ms: u64,
    /// Simulated run time (ms).
    pub duration_ms: u64,
    /// Faults start no earlier than this (ms).
    pub faults_from_ms: u64,
    /// Every fault is healed at this time (ms); the rest of the run checks liveness.
    pub heal_ms: u64,
    /// Faults scheduled per simulated minute of the fault window.
    pub faults_per_minute: u64,
    /// The fault kinds' weights ([`plan::FAULT_WEIGHTS`] unless changed).
    pub weights: Vec<(&'static str, u64)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            standbys: 1,
            coordinators: 2,
            ttl_ms: 2_000,
            duration_ms: 60_000,
            faults_from_ms: 1_000,
            heal_ms: 35_000,
            faults_per_minute: 60,
            weights: plan::FAULT_WEIGHTS.to_vec(),
        }
    }
}

impl Options {
    /// The reservation look-ahead limit the coordinators run with (`--reservation-ahead-max`).
    pub fn reservation_ahead_ms_max(&self) -> u64 {
        2 * self.ttl_ms
    }

    /// The liveness bounds in words: the memory store's, and redb's.
    pub fn liveness_bounds(&self) -> String {
        format!(
            "{} ms, {} ms on redb",
            self.liveness_bound_ms(StoreKind::Memory),
            self.liveness_bound_ms(StoreKind::Redb)
        )
    }

    /// The plan in one line: everything that decides how much a seed does, so that a
    /// seeds-per-minute figure names the work it measured.
    pub fn describe(&self) -> String {
        let weights: Vec<String> = self
            .weights
            .iter()
            .map(|(k, w)| format!("{k}={w}"))
            .collect();
        format!(
            "plan: {} s simulated per seed in {TICK_MS} ms steps, faults from {} s to {} s then healed; \
             {} nodes + {} standby, {} coordinators over one store (in-memory, or redb on a \
             simulated disk: every other seed); lease TTL {} ms; \
             load per node: one request at a time for 1..=min({}, a tick's ids) ids, \
             {}..={} ms apart (0..=2 ms on layouts of fewer ids per tick); layouts {}; \
             {} faults per simulated minute, weights {}",
            self.duration_ms / 1000,
            self.faults_from_ms / 1000,
            self.heal_ms / 1000,
            self.nodes,
            self.standbys,
            self.coordinators,
            self.ttl_ms,
            node::BATCH_MAX,
            0,
            node::LOAD_PAUSE_MS_MAX,
            LAYOUTS.join(", "),
            self.faults_per_minute,
            weights.join(" ")
        )
    }

    /// Sets the weight of fault kind `kind` (`--weight kind=n`).
    pub fn set_weight(&mut self, kind: &str, weight: u64) -> Result<(), String> {
        match self.weights.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, w)) => {
                *w = weight;
                Ok(())
            }
            None => Err(format!(
                "no fault kind `{kind}`; the kinds: {}",
                self.weights
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The liveness bound: once every fault has healed, each node serves again within this.
    /// Stale leases of crashed holders expire one TTL after a (restarted) coordinator first
    /// sees them; a node then needs a failed acquisition's backoff (at most 5 s) and one more
    /// TTL of slack. A host id whose reservation a fast clock pushed ahead is usable once the
    /// corrected clock passes it: the look-ahead limit beyond a coordinator's clock, which is
    /// at most [`COORDINATOR_STEP_MS_MAX`] fast. On `store` redb, whose disk may have been
    /// full until the heal, the store reopens within its longest backoff. Plus 3 s for a replayed
    /// request and the load's own pacing.
    pub fn liveness_bound_ms(&self, store: StoreKind) -> u64 {
        let store_reopen = match store {
            StoreKind::Memory => 0,
            StoreKind::Redb => shardflake_coordinator::store::REOPEN_BACKOFF_MAX.as_millis() as u64,
        };
        2 * self.ttl_ms
            + 5_000
            + self.reservation_ahead_ms_max()
            + COORDINATOR_STEP_MS_MAX
            + store_reopen
            + 3_000
    }
}

/// The outcome of one seed.
#[derive(Debug, Clone, Default)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The checks.
    pub report: CheckReport,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Digest of the event trace (equal for two runs of one seed).
    pub digest: u64,
    /// The trace, if asked for.
    pub trace: Vec<String>,
}

/// Runs one seed. Two runs of a seed on one thread, or in two processes, give the same
/// outcome; runs on two threads of one process at once need not (tokio numbers every task of
/// the process from one counter, and each run starts it at the same place): `--seeds` runs each
/// seed in a process of its own.
pub fn run_seed(seed: u64, options: &Options, keep_trace: bool) -> SeedOutcome {
    align_task_ids();
    let trace = Trace::new(keep_trace);
    // Everything the code draws at random on this thread (retry jitter, request and store
    // ids, client keys, generation keys) follows the seed.
    shardflake::seed_thread_entropy(Some(seed ^ 0xe27_0b1e_5eed));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        simulate(seed, options, &trace)
    }));
    shardflake::seed_thread_entropy(None);
    let report = match result {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => CheckReport {
            violation_count: 1,
            violations: vec![format!("the simulation failed: {e:#}")],
            ..CheckReport::default()
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            CheckReport {
                violation_count: 1,
                violations: vec![format!("panicked: {msg}")],
                ..CheckReport::default()
            }
        }
    };
    SeedOutcome {
        seed,
        report,
        faults: trace.faults(),
        digest: trace.digest(),
        trace: trace.lines(),
    }
}

/// tokio numbers tasks from one process-wide counter, and a runtime keeps its tasks in
/// shards by that number (four on a current-thread runtime, as every simulated host has).
/// When a host crashes, its tasks are dropped shard by shard, so the order in which its
/// connections close, which its peers see, depends on how many tasks the process made before
/// the run: seed 427 ran differently after 2 or 6 tasks than after 0, 1, 3, 4, 5 or 7.
/// Every run therefore starts the counter at the same place modulo [`TASK_ID_ALIGN`] (any
/// shard count up to it is covered), the place it starts at in a fresh process.
fn align_task_ids() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        loop {
            let task = tokio::spawn(async {});
            let id: u64 = task
                .id()
                .to_string()
                .parse()
                .expect("tokio's task id prints as a number");
            let _ = task.await;
            // The counter starts at 1 in a fresh process: the next task is numbered 1 again,
            // modulo the alignment.
            if id.is_multiple_of(TASK_ID_ALIGN) {
                return;
            }
        }
    });
}

/// See [`align_task_ids`]: a power of two, at least the shards of any runtime the simulation
/// builds.
const TASK_ID_ALIGN: u64 = 64;

fn coordinator_name(i: usize) -> String {
    format!("coord{}", i + 1)
}

fn simulate(seed: u64, o: &Options, trace: &Trace) -> anyhow::Result<CheckReport> {
    let mut rng = FastRng::from_seed(seed);
    // Narrow sequences make the load outrun a millisecond: generators wait for the next tick
    // (their host's clock runs ahead) and reach their reservations.
    let layout = Layout::from_spec(LAYOUTS[(rng.next_u64() % LAYOUTS.len() as u64) as usize])?;
    let pool_size = (o.nodes + o.standbys) as u32 + 1;
    // The nodes' state directories (the store generation they remember): this run's own,
    // kept across a node's restarts and removed at the end, so that no run sees another's.
    // In memory where the machine has it (/dev/shm): a node's fsyncs would otherwise stop
    // the whole single-threaded simulation for the disk's time.
    let shm = std::path::Path::new("/dev/shm");
    let state = tempfile::Builder::new()
        .prefix("shardflake-sim-")
        .tempdir_in(if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        })?;
    let mut config = CoordinatorConfig::new(layout.clone());
    config.pool_size = pool_size;
    config.ttl_ms_default = o.ttl_ms;
    config.ttl_ms_min = config.ttl_ms_min.min(o.ttl_ms);
    config.reservation_ahead_ms_max = o.reservation_ahead_ms_max();

    // The store outlives every coordinator process: it is the durable state (etcd, redb).
    // Every process writes through the history checker.
    let store_kind = StoreKind::draw(rng.next_u64());
    let sim_ms = Arc::new(AtomicU64::new(0));
    let history = Arc::new(Mutex::new(history::History::default()));
    let store = store::SimStore::new(store_kind, history.clone(), sim_ms.clone())?;
    let written = store.written.clone();
    // The operator writes through a coordinator of its own, outside the network; the
    // checker reads what the store committed through another.
    let setup = tokio::runtime::Builder::new_current_thread().build()?;
    let open = |kv: Arc<dyn shardflake_coordinator::store::KvStore>| {
        setup.block_on(Coordinator::open(
            kv,
            Arc::new(ManualTime::new(START_UNIX_MS)),
            config.clone(),
        ))
    };
    let operator = Arc::new(open(written.clone())?);
    let reader = match store_kind {
        StoreKind::Memory => operator.clone(),
        StoreKind::Redb => Arc::new(open(store.mirror.clone())?),
    };
    // The namespaces, created as an operator would before the load starts.
    let decoder = IdDecoder::new(&layout, pool_size)?;
    let mut checker = Checker::new(decoder, o.heal_ms);
    for (name, start, step) in NAMESPACES {
        let spec = shardflake_proto::ns::NamespaceSpec {
            start: Some(start),
            step: Some(step),
            ..Default::default()
        };
        setup.block_on(operator.put_namespace(name, &spec))?;
        checker = checker.namespace(
            name,
            check::NsRule {
                start,
                step,
                offset: start % step,
            },
        );
    }
    let view = Arc::new(view::StoreView::new(store.mirror.clone(), reader, operator));
    let checker = Arc::new(Mutex::new(checker));

    trace.event(
        "sim",
        &format!("layout {}, {} store", layout.spec(), store_kind.name()),
    );
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(o.duration_ms + 60_000))
        .tick_duration(Duration::from_millis(TICK_MS))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(2))
        .epoch(UNIX_EPOCH + Duration::from_millis(START_UNIX_MS))
        .rng_seed(rng.next_u64())
        .build();

    let coordinators: Vec<String> = (0..o.coordinators).map(coordinator_name).collect();
    let urls: Vec<String> = coordinators
        .iter()
        .map(|c| format!("http://{c}:{COORDINATOR_PORT}"))
        .collect();
    let mut clocks: BTreeMap<String, Arc<HostClock>> = BTreeMap::new();

    for name in &coordinators {
        let clock = Arc::new(HostClock::new(START_UNIX_MS, sim_ms.clone()));
        clocks.insert(name.clone(), clock.clone());
        let (store, config, trace, host) =
            (written.clone(), config.clone(), trace.clone(), name.clone());
        sim.host(name.as_str(), move || {
            let (store, config, trace, clock, host) = (
                store.clone(),
                config.clone(),
                trace.clone(),
                clock.clone(),
                host.clone(),
            );
            async move {
                let time = Arc::new(SimTime::new(clock));
                // A coordinator that cannot open its store (a full disk) exits, and its
                // supervisor starts it again a second later; any other error ends the seed.
                let mut failed = String::new();
                let coordinator = loop {
                    match Coordinator::open(store.clone(), time.clone(), config.clone()).await {
                        Ok(c) => break Arc::new(c),
                        Err(CoordError::Store(e)) => {
                            if e.to_string() != failed {
                                failed = e.to_string();
                                trace.event(&host, &format!("coordinator start failed: {e}"));
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                };
                trace.event(&host, "coordinator started");
                let app =
                    shardflake_coordinator::http::app(shardflake_coordinator::http::AppState::new(
                        coordinator,
                        shardflake_coordinator::http::Auth::tokens(&[(
                            shardflake_proto::auth::Scope::Node,
                            TOKEN,
                        )])
                        .expect("the simulation's token is well formed"),
                    ));
                let listener =
                    turmoil::net::TcpListener::bind(("0.0.0.0", COORDINATOR_PORT)).await?;
                axum::serve(SimListener(listener), app).await?;
                Ok(())
            }
        });
    }

    let wiretap = net::Wiretap::default();
    let liar = Arc::new(liar::LiarCtx {
        urls: urls.clone(),
        token: TOKEN.into(),
        seed: seed ^ 0x11a2,
        trace: trace.clone(),
        checker: checker.clone(),
        view: view.clone(),
        wiretap: wiretap.clone(),
    });

    let sdk = Arc::new(sdk::SdkCtx {
        nodes: (1..=o.nodes)
            .map(|i| format!("http://node{i}:{}", node::NODE_PORT))
            .collect(),
        namespace: NAMESPACES[0].0.to_string(),
        seed: seed ^ 0x5d4,
        drain_at_ms: o.duration_ms.saturating_sub(500),
        trace: trace.clone(),
        checker: checker.clone(),
        view: view.clone(),
    });
    // The lying client and the SDK's application: two programs on one machine (a host of
    // the simulation costs every step, busy or not).
    sim.host("clients", move || {
        let (liar, sdk) = (liar.clone(), sdk.clone());
        async move {
            tokio::try_join!(liar::run(liar), sdk::run(sdk))?;
            Ok(())
        }
    });

    let mut slots: BTreeMap<String, Arc<NodeSlot>> = BTreeMap::new();
    let mut primaries = Vec::new();
    for i in 0..o.nodes + o.standbys {
        let standby = i >= o.nodes;
        let name = if standby {
            format!("standby{}", i - o.nodes + 1)
        } else {
            format!("node{}", i + 1)
        };
        if !standby {
            primaries.push(name.clone());
        }
        let clock = Arc::new(HostClock::new(START_UNIX_MS, sim_ms.clone()));
        clocks.insert(name.clone(), clock.clone());
        let clock_policy = POLICIES[(rng.next_u64() % POLICIES.len() as u64) as usize];
        // The `wait` policy's default wait for a clock that stepped back, or the longest
        // the node allows.
        let clock_wait_max_ms = if rng.next_u64().is_multiple_of(2) {
            shardflake_node::CLOCK_WAIT_MS_MAX_DEFAULT
        } else {
            shardflake_node::CLOCK_WAIT_MS_MAX_LIMIT
        };
        let waits = (clock_policy == ClockPolicyKind::Wait).then_some(clock_wait_max_ms);
        let slot = Arc::new(NodeSlot::new(waits));
        slots.insert(name.clone(), slot.clone());
        let ctx = Arc::new(NodeCtx {
            name: name.clone(),
            state_dir: state.path().join(&name),
            seed: seed ^ ((i as u64 + 1) << 40),
            standby,
            urls: urls.clone(),
            token: TOKEN.into(),
            ttl_ms: o.ttl_ms,
            clock_policy,
            clock_wait_max_ms,
            batch_max: node::BATCH_MAX.min(layout.ids_per_tick()),
            pause_ms_max: if layout.ids_per_tick() < node::BATCH_MAX {
                2
            } else {
                node::LOAD_PAUSE_MS_MAX
            },
            clock,
            slot,
            trace: trace.clone(),
            checker: checker.clone(),
            view: view.clone(),
            wiretap: wiretap.clone(),
            namespaces: NAMESPACES.iter().map(|(n, _, _)| n.to_string()).collect(),
            temporal: layout.is_temporal(),
        });
        sim.host(name.as_str(), move || node::run(ctx.clone()));
    }

    let plan = Plan::generate(
        &mut rng,
        o,
        &coordinators,
        layout.is_temporal(),
        store_kind,
        &slots,
    );
    let mut pending = plan.events;
    pending.reverse();
    let backup = Mutex::new(None);
    let world = World {
        view: &view,
        backup: &backup,
        history: &history,
        operator: &setup,
        checker: &checker,
        coordinators: &coordinators,
        clocks: &clocks,
        slots: &slots,
        trace,
        ttl_ms: o.ttl_ms,
        disk: store.disk.as_deref(),
    };
    let steps = o.duration_ms / TICK_MS;
    for step in 0..steps {
        let now = step * TICK_MS;
        sim_ms.store(now, Ordering::Relaxed);
        while pending.last().is_some_and(|e| e.at_ms <= now) {
            let e = pending.pop().expect("an event");
            let follow = apply(&mut sim, &e.fault, now, &world);
            if !follow.is_empty() {
                // Faults aimed at a lease's end schedule their own steps; latest first.
                pending.extend(follow);
                pending.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
            }
        }
        sim.step().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let names: Vec<String> = primaries;
    drop(sim);
    let mut checker = Arc::try_unwrap(checker)
        .map_err(|_| anyhow::anyhow!("a host still holds the checker"))?
        .into_inner()
        .expect("checker");
    // What `shardflake audit` checks after every fault test: no two grants in the store's
    // grant logs overlap.
    let report = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(view.reader().audit_report())?;
    for overlap in shardflake_proto::audit::find_overlaps(&report) {
        checker.violation(format!("audit: {overlap}"));
    }
    // The embedded store holds what it answered committed, after every full disk.
    if let Some(lost) = setup.block_on(store.durable_mismatch()) {
        checker.violation(lost);
    }
    checker.tally(&format!("store_{}", store_kind.name()));
    // The store's history: every write judged as it committed.
    let history = history.lock().expect("history");
    let (found, _) = history.violations();
    for v in found {
        checker.violation(v.clone());
    }
    for (kind, n) in &history.checked {
        if *kind != "violations" {
            checker.tally_n(&format!("history_{kind}"), *n);
        }
    }
    Ok(checker.finish(&names, o.liveness_bound_ms(store_kind), o.duration_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_task_id() -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let t = tokio::spawn(async {});
            let id = t.id().to_string().parse().expect("a number");
            let _ = t.await;
            id
        })
    }

    #[test]
    fn every_run_numbers_its_tasks_from_the_same_place() {
        for burn in [0, 1, 2, 5, 63, 64, 65] {
            for _ in 0..burn {
                next_task_id();
            }
            align_task_ids();
            assert_eq!(
                next_task_id() % TASK_ID_ALIGN,
                1,
                "after {burn} other tasks, the next task is numbered as in a fresh process"
            );
        }
    }
}
