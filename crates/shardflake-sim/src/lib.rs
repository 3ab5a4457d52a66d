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
pub mod net;
mod node;
mod plan;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use shardflake::{Clock, FastRng, Layout};
use shardflake_coordinator::store::MemStore;
use shardflake_coordinator::{Coordinator, CoordinatorConfig, ManualTime};
use shardflake_node::ClockPolicyKind;

use crate::check::{CheckReport, Checker, IdDecoder};
use crate::clock::{HostClock, SimTime};
use crate::net::SimListener;
use crate::node::{NodeCtx, NodeSlot};
use crate::plan::{Fault, Plan};
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
const LAYOUTS: [&str; 3] = ["twitter", "twitter:sequence=6", "twitter:sequence=3"];
/// The clock policies a node picks from.
const POLICIES: [ClockPolicyKind; 3] = [
    ClockPolicyKind::Wait,
    ClockPolicyKind::Borrow,
    ClockPolicyKind::Fail,
];
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
        }
    }
}

impl Options {
    /// The reservation look-ahead limit the coordinators run with (`--reservation-ahead-max`).
    pub fn reservation_ahead_ms_max(&self) -> u64 {
        2 * self.ttl_ms
    }

    /// The liveness bound: once every fault has healed, each node serves again within this.
    /// Stale leases of crashed holders expire one TTL after a (restarted) coordinator first
    /// sees them; a node then needs a failed acquisition's backoff (at most 5 s) and one more
    /// TTL of slack. A host id whose reservation a fast clock pushed ahead is usable once the
    /// corrected clock passes it: the look-ahead limit beyond a coordinator's clock, which is
    /// at most [`COORDINATOR_STEP_MS_MAX`] fast. Plus 3 s for a replayed request and the load's
    /// own pacing.
    pub fn liveness_bound_ms(&self) -> u64 {
        2 * self.ttl_ms + 5_000 + self.reservation_ahead_ms_max() + COORDINATOR_STEP_MS_MAX + 3_000
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

/// Runs one seed.
pub fn run_seed(seed: u64, options: &Options, keep_trace: bool) -> SeedOutcome {
    let trace = Trace::new(keep_trace);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        simulate(seed, options, &trace)
    }));
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
    let store = Arc::new(MemStore::shared());
    // The checker reads the store through a coordinator of its own, outside the network.
    let reader = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(Coordinator::open(
            store.clone(),
            Arc::new(ManualTime::new(START_UNIX_MS)),
            config.clone(),
        ))?;
    let reader = Arc::new(reader);
    let decoder = IdDecoder::new(&layout, pool_size)?;
    let checker = Arc::new(Mutex::new(Checker::new(decoder, o.heal_ms)));

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
    let sim_ms = Arc::new(AtomicU64::new(0));

    for name in &coordinators {
        let clock = Arc::new(HostClock::new(START_UNIX_MS, sim_ms.clone()));
        clocks.insert(name.clone(), clock.clone());
        let (store, config, trace, host) =
            (store.clone(), config.clone(), trace.clone(), name.clone());
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
                let coordinator = Arc::new(Coordinator::open(store, time, config).await?);
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
        let slot = Arc::new(NodeSlot::default());
        slots.insert(name.clone(), slot.clone());
        let ctx = Arc::new(NodeCtx {
            name: name.clone(),
            state_dir: state.path().join(&name),
            seed: seed ^ ((i as u64 + 1) << 40),
            standby,
            urls: urls.clone(),
            token: TOKEN.into(),
            ttl_ms: o.ttl_ms,
            clock_policy: POLICIES[(rng.next_u64() % POLICIES.len() as u64) as usize],
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
            reader: reader.clone(),
        });
        sim.host(name.as_str(), move || node::run(ctx.clone()));
    }

    let plan = Plan::generate(&mut rng, o, &coordinators, &primaries, &slots);
    let mut pending = plan.events;
    pending.reverse();
    let steps = o.duration_ms / TICK_MS;
    for step in 0..steps {
        let now = step * TICK_MS;
        sim_ms.store(now, Ordering::Relaxed);
        while pending.last().is_some_and(|e| e.at_ms <= now) {
            let e = pending.pop().expect("an event");
            apply(&mut sim, &e.fault, now, &clocks, &slots, trace);
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
        .block_on(reader.audit_report())?;
    for overlap in shardflake_proto::audit::find_overlaps(&report) {
        checker.violation(format!("audit: {overlap}"));
    }
    Ok(checker.finish(&names, o.liveness_bound_ms(), o.duration_ms))
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    now: u64,
    clocks: &BTreeMap<String, Arc<HostClock>>,
    slots: &BTreeMap<String, Arc<NodeSlot>>,
    trace: &Trace,
) {
    match fault {
        Fault::Crash { host } => {
            if let Some(slot) = slots.get(host) {
                slot.forget();
            }
            sim.crash(host.as_str());
            trace.fault_at(now, host, "crash: kill -9");
        }
        Fault::Pause {
            host,
            resume_window_ms,
        } => {
            if let Some(slot) = slots.get(host) {
                slot.freeze(*resume_window_ms);
            }
            sim.crash(host.as_str());
            trace.fault_at(now, host, "pause: SIGSTOP");
        }
        Fault::Restart { host } => {
            sim.bounce(host.as_str());
            trace.event_at(now, host, "started (restart or SIGCONT)");
        }
        Fault::Partition { a, b } => {
            sim.partition(a.as_str(), b.as_str());
            trace.fault_at(now, a, &format!("partition: from {b}, both ways"));
        }
        Fault::PartitionOneway { from, to } => {
            sim.partition_oneway(from.as_str(), to.as_str());
            trace.fault_at(
                now,
                from,
                &format!("partition_oneway: nothing reaches {to}"),
            );
        }
        Fault::Repair { a, b } => {
            sim.repair(a.as_str(), b.as_str());
            trace.event_at(now, a, &format!("link to {b} repaired"));
        }
        Fault::Hold { a, b } => {
            sim.hold(a.as_str(), b.as_str());
            trace.fault_at(now, a, &format!("hold: messages to and from {b} held"));
        }
        Fault::Release { a, b } => {
            sim.release(a.as_str(), b.as_str());
            trace.event_at(now, a, &format!("messages to and from {b} released"));
        }
        Fault::Latency { a, b, max_ms } => {
            sim.set_link_max_message_latency(
                a.as_str(),
                b.as_str(),
                Duration::from_millis(*max_ms),
            );
            if *max_ms > 2 {
                trace.fault_at(now, a, &format!("delay: up to {max_ms} ms to {b}"));
            }
        }
        Fault::ClockStep { host, by_ms } => {
            clocks[host].step(*by_ms);
            trace.fault_at(now, host, &format!("clock_step: {by_ms:+} ms"));
        }
        Fault::ClockDrift { host, ppm } => {
            clocks[host].set_drift_ppm(*ppm);
            trace.fault_at(now, host, &format!("clock_drift: {ppm:+} ppm"));
        }
        Fault::ClockHeal { host } => {
            let c = &clocks[host];
            c.set_drift_ppm(0);
            let error = c.now_ms() as i64 - (START_UNIX_MS + now) as i64;
            c.step(-error);
            trace.event_at(now, host, &format!("clock corrected by {:+} ms", -error));
        }
        Fault::Messages { host, faults } => {
            if let Some(slot) = slots.get(host) {
                slot.set_message_faults(*faults);
            }
            if faults.lose_request_ppm + faults.lose_answer_ppm + faults.replay_ppm > 0 {
                trace.fault_at(
                    now,
                    host,
                    &format!(
                        "messages: lose requests {} ppm, lose answers {} ppm, replay {} ppm",
                        faults.lose_request_ppm, faults.lose_answer_ppm, faults.replay_ppm
                    ),
                );
            }
        }
    }
}
