//! The fault schedule of one seed: which fault, where, when, and when it heals. Every fault
//! heals by [`Options::heal_ms`]; the rest of the run is the liveness check.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardflake::FastRng;

use crate::net::MessageFaults;
use crate::node::NodeSlot;
use crate::store::StoreKind;
use crate::{Options, COORDINATOR_STEP_MS_MAX};

/// One change the driver makes to the simulated world.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Crash {
        host: String,
    },
    Pause {
        host: String,
        resume_window_ms: u64,
    },
    Restart {
        host: String,
    },
    Partition {
        a: String,
        b: String,
    },
    PartitionOneway {
        from: String,
        to: String,
    },
    Repair {
        a: String,
        b: String,
    },
    Hold {
        a: String,
        b: String,
    },
    Release {
        a: String,
        b: String,
    },
    Latency {
        a: String,
        b: String,
        max_ms: u64,
    },
    ClockStep {
        host: String,
        by_ms: i64,
    },
    /// A step armed to land in the middle of a batch (the next time the node's generator
    /// waits for a tick).
    ClockStepInWait {
        host: String,
        by_ms: i64,
    },
    /// The armed step lands now if no tick wait took it.
    ClockFire {
        host: String,
    },
    /// The answers to the node's renewals lost (the renewals arrive) until its lease runs
    /// out; `lead_ms` before it does, a clock step back armed ([`Fault::ClockStepInWait`]).
    LeaseEndStep {
        host: String,
        lead_ms: u64,
    },
    /// The answers to the node's renewals arrive again.
    RenewalAnswers {
        host: String,
    },
    ClockDrift {
        host: String,
        ppm: i64,
    },
    ClockHeal {
        host: String,
    },
    Messages {
        host: String,
        faults: MessageFaults,
    },
    /// An operator's backup of the store (a copy kept aside).
    Backup,
    /// The store put back to the last backup under the running cluster.
    Restore,
    /// The operator's repair after a restore (`shardflake repair`).
    RepairStore,
    /// SIGTERM of a node: a clean shutdown (lease released, namespace blocks returned),
    /// started again by a later [`Fault::Restart`].
    Terminate {
        host: String,
    },
    /// SIGSTOP of a node for `ms`: its links held, nothing served; SIGCONT at [`Fault::Thaw`].
    Freeze {
        host: String,
        ms: u64,
    },
    Thaw {
        host: String,
    },
    /// A node cut off from every coordinator at once (`after_delay`: right after its links
    /// were slow, so that its last answers arrived late).
    Isolate {
        host: String,
        after_delay: bool,
    },
    Rejoin {
        host: String,
    },
    /// The disk under the embedded store full: every write fails with `ENOSPC`.
    DiskFull,
    /// Space freed on the disk.
    DiskFree,
    /// A coordinator's monotonic clock runs `ppm` fast (negative: slow); 0 heals.
    MonoRate {
        host: String,
        ppm: i64,
    },
}

/// The fault kinds a seed draws from, each with its weight (the odds of a drawn fault being
/// of that kind are its weight over the sum). Printed with every run.
pub const FAULT_WEIGHTS: [(&str, u64); 18] = [
    ("crash", 9),
    ("terminate", 5),
    ("crash_coordinator", 9),
    ("pause", 6),
    ("freeze", 8),
    ("partition", 9),
    ("partition_oneway", 9),
    ("isolate", 6),
    ("isolate_after_delay", 4),
    ("hold", 7),
    ("delay", 7),
    ("clock_step", 14),
    ("clock_drift", 7),
    ("mono_rate", 5),
    ("step_at_lease_end", 6),
    ("messages", 9),
    // The disk under the embedded store (seeds that run on redb).
    ("disk_full", 6),
    // Off by default (`--weight restore=2`): the checker judges who may serve a host id by
    // the store as it stands, which after a restore names the backup's holders, and a node
    // whose fast clock presented a far bound waits for it after the repair (README).
    ("restore", 0),
];

/// The largest rate error of a coordinator's monotonic clock (ppm): within the nodes' drift
/// margin (2 % of the TTL), which is what the lease protocol promises to survive.
pub const MONO_RATE_PPM_MAX: i64 = 15_000;

fn draw_kind(rng: &mut FastRng, weights: &[(&'static str, u64)]) -> &'static str {
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let mut x = below(rng, total);
    for &(kind, w) in weights {
        if x < w {
            return kind;
        }
        x -= w;
    }
    unreachable!("the draw is below the sum of the weights")
}

/// A fault at a time.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) at_ms: u64,
    pub(crate) fault: Fault,
}

/// The schedule, sorted by time.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) events: Vec<Event>,
}

/// Clock steps drawn from: small, a second, a minute, an hour, either way.
const STEPS_MS: [i64; 10] = [
    -3_600_000, -60_000, -5_000, -1_000, -20, 20, 1_000, 5_000, 60_000, 3_600_000,
];

fn below(rng: &mut FastRng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn pick<'a>(rng: &mut FastRng, xs: &'a [String]) -> &'a String {
    &xs[below(rng, xs.len() as u64) as usize]
}

impl Plan {
    pub(crate) fn generate(
        rng: &mut FastRng,
        o: &Options,
        coordinators: &[String],
        temporal: bool,
        store: StoreKind,
        slots: &BTreeMap<String, Arc<NodeSlot>>,
    ) -> Plan {
        // The kinds this seed's store can host.
        let weights: Vec<(&'static str, u64)> = o
            .weights
            .iter()
            .filter(|(k, _)| store.hosts_fault(k))
            .copied()
            .collect();
        let nodes: Vec<String> = slots.keys().cloned().collect();
        let mut all: Vec<String> = nodes.clone();
        all.extend(coordinators.iter().cloned());
        let mut p = Plan::default();
        let heal = o.heal_ms;
        let window = heal.saturating_sub(o.faults_from_ms);
        let count = (o.faults_per_minute * window / 60_000).max(1);
        // A host that is down is not crashed or paused again before it is back.
        let mut down_until: BTreeMap<String, u64> = BTreeMap::new();
        let mut restore_busy_until = 0;
        let mut disk_busy_until = 0;
        for _ in 0..count {
            if weights.iter().all(|(_, w)| *w == 0) {
                break;
            }
            let at = o.faults_from_ms + below(rng, window);
            let left = heal - at;
            let dur = |rng: &mut FastRng, max: u64| 1 + below(rng, max.min(left).max(1));
            let mut push = |at_ms: u64, fault: Fault| p.events.push(Event { at_ms, fault });
            match draw_kind(rng, &weights) {
                "crash" => {
                    let host = pick(rng, &nodes).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    let d = dur(rng, 4 * o.ttl_ms);
                    down_until.insert(host.clone(), at + d);
                    push(at, Fault::Crash { host: host.clone() });
                    push(at + d, Fault::Restart { host });
                }
                "pause" => {
                    let host = pick(rng, &nodes).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    // Beyond the TTL: the lease expires and another holder may take the id.
                    let d = (o.ttl_ms + below(rng, 3 * o.ttl_ms)).min(left.max(1));
                    let resume_window_ms = below(rng, 1_000);
                    down_until.insert(host.clone(), at + d + resume_window_ms);
                    push(
                        at,
                        Fault::Pause {
                            host: host.clone(),
                            resume_window_ms,
                        },
                    );
                    push(at + d, Fault::Restart { host });
                }
                "crash_coordinator" => {
                    let host = pick(rng, coordinators).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    let d = dur(rng, 3 * o.ttl_ms);
                    down_until.insert(host.clone(), at + d);
                    push(at, Fault::Crash { host: host.clone() });
                    push(at + d, Fault::Restart { host });
                }
                "partition" => {
                    let a = pick(rng, &nodes).clone();
                    let b = pick(rng, coordinators).clone();
                    let d = dur(rng, 4 * o.ttl_ms);
                    push(
                        at,
                        Fault::Partition {
                            a: a.clone(),
                            b: b.clone(),
                        },
                    );
                    push(at + d, Fault::Repair { a, b });
                }
                "partition_oneway" => {
                    let n = pick(rng, &nodes).clone();
                    let c = pick(rng, coordinators).clone();
                    let (from, to) = if below(rng, 2) == 0 { (n, c) } else { (c, n) };
                    let d = dur(rng, 4 * o.ttl_ms);
                    push(
                        at,
                        Fault::PartitionOneway {
                            from: from.clone(),
                            to: to.clone(),
                        },
                    );
                    push(at + d, Fault::Repair { a: from, b: to });
                }
                "hold" => {
                    let a = pick(rng, &nodes).clone();
                    let b = pick(rng, coordinators).clone();
                    let d = dur(rng, 2 * o.ttl_ms);
                    push(
                        at,
                        Fault::Hold {
                            a: a.clone(),
                            b: b.clone(),
                        },
                    );
                    push(at + d, Fault::Release { a, b });
                }
                "delay" => {
                    let a = pick(rng, &nodes).clone();
                    let b = pick(rng, coordinators).clone();
                    let max_ms = 10 + below(rng, o.ttl_ms);
                    let d = dur(rng, 5 * o.ttl_ms);
                    push(
                        at,
                        Fault::Latency {
                            a: a.clone(),
                            b: b.clone(),
                            max_ms,
                        },
                    );
                    push(at + d, Fault::Latency { a, b, max_ms: 2 });
                }
                "clock_step" => {
                    let host = pick(rng, &all).clone();
                    let mut by_ms = STEPS_MS[below(rng, STEPS_MS.len() as u64) as usize];
                    // Temporal layouts: nodes' clocks too step by at most a shard's worth.
                    // A node whose clock jumps further ahead enters a shard the coordinators
                    // refuse to grant blocks in (`shard_too_far_ahead`) and stays there, not
                    // serving, until real time reaches it, after the clock is corrected too
                    // (an open finding, README): availability, and beyond the liveness bound.
                    if temporal || coordinators.contains(&host) {
                        let max = COORDINATOR_STEP_MS_MAX as i64;
                        by_ms = by_ms.clamp(-max, max);
                    }
                    let d = dur(rng, 6 * o.ttl_ms);
                    push(
                        at,
                        Fault::ClockStep {
                            host: host.clone(),
                            by_ms,
                        },
                    );
                    push(at + d, Fault::ClockHeal { host });
                }
                "clock_drift" => {
                    let host = pick(rng, &all).clone();
                    // Up to ±5 % for wall clocks (monotonic time is the simulation's own).
                    let ppm = below(rng, 100_001) as i64 - 50_000;
                    let d = dur(rng, 6 * o.ttl_ms);
                    push(
                        at,
                        Fault::ClockDrift {
                            host: host.clone(),
                            ppm,
                        },
                    );
                    push(at + d, Fault::ClockHeal { host });
                }
                "restore" => {
                    // Backup, restore a few seconds later, repair a few seconds after that;
                    // one at a time, all before the faults heal.
                    let to_restore = 1_000 + below(rng, 4_000);
                    let to_repair = 2_000 + below(rng, 4_000);
                    if at < restore_busy_until || at + to_restore + to_repair >= heal {
                        continue;
                    }
                    restore_busy_until = at + to_restore + to_repair + 1;
                    push(at, Fault::Backup);
                    push(at + to_restore, Fault::Restore);
                    push(at + to_restore + to_repair, Fault::RepairStore);
                }
                "terminate" => {
                    let host = pick(rng, &nodes).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    let d = dur(rng, 2 * o.ttl_ms) + 50;
                    down_until.insert(host.clone(), at + d);
                    push(at, Fault::Terminate { host: host.clone() });
                    push(at + d, Fault::Restart { host });
                }
                "freeze" => {
                    let host = pick(rng, &nodes).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    // Mostly shorter than the TTL (the lease survives it and answers in
                    // flight arrive after SIGCONT), sometimes longer.
                    let ms = if below(rng, 4) == 0 {
                        o.ttl_ms + below(rng, 2 * o.ttl_ms)
                    } else {
                        1 + below(rng, o.ttl_ms)
                    }
                    .min(left.max(1));
                    down_until.insert(host.clone(), at + ms);
                    push(
                        at,
                        Fault::Freeze {
                            host: host.clone(),
                            ms,
                        },
                    );
                    push(at + ms, Fault::Thaw { host });
                }
                kind @ ("isolate" | "isolate_after_delay") => {
                    let host = pick(rng, &nodes).clone();
                    let mut start = at;
                    if kind == "isolate_after_delay" {
                        // Slow links first, so that the last answers before the cut arrive
                        // late: a lease measured from the answer would outlive its grant.
                        let slow = (o.ttl_ms / 4 + below(rng, o.ttl_ms / 2)).min(left / 2);
                        let max_ms = o.ttl_ms / 4 + below(rng, o.ttl_ms / 2);
                        for c in coordinators {
                            push(
                                at,
                                Fault::Latency {
                                    a: host.clone(),
                                    b: c.clone(),
                                    max_ms,
                                },
                            );
                            push(
                                at + slow,
                                Fault::Latency {
                                    a: host.clone(),
                                    b: c.clone(),
                                    max_ms: 2,
                                },
                            );
                        }
                        start = at + slow;
                    }
                    let d = 1 + below(rng, (3 * o.ttl_ms).min(heal - start).max(1));
                    push(
                        start,
                        Fault::Isolate {
                            host: host.clone(),
                            after_delay: kind != "isolate",
                        },
                    );
                    push(start + d, Fault::Rejoin { host });
                }
                "step_at_lease_end" => {
                    // Aimed at the end of a node's lease: the answers to its renewals lost
                    // (the coordinators have the renewals) until its lease runs out, and its
                    // clock stepped back (by its longest clock wait) in the middle of a
                    // batch just before. The batch waits for the clock while the lease ends;
                    // the node's new lease is of another host id (the coordinators still
                    // count the old one live), and the batch must not go on with it: the
                    // new generator's ids are lower, its clock being behind.
                    // Nodes that wait for a clock that stepped back: the others refuse at
                    // once, with no batch waiting.
                    let waiting: Vec<String> = slots
                        .iter()
                        .filter(|(_, s)| s.clock_wait_max_ms.is_some())
                        .map(|(n, _)| n.clone())
                        .collect();
                    if waiting.is_empty() {
                        continue;
                    }
                    let host = pick(rng, &waiting).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) || at + 3 * o.ttl_ms >= heal
                    {
                        continue;
                    }
                    down_until.insert(host.clone(), at + o.ttl_ms);
                    push(
                        at,
                        Fault::LeaseEndStep {
                            host,
                            lead_ms: 5 + below(rng, 45),
                        },
                    );
                }
                "mono_rate" => {
                    let host = pick(rng, coordinators).clone();
                    let ppm =
                        below(rng, 2 * MONO_RATE_PPM_MAX as u64 + 1) as i64 - MONO_RATE_PPM_MAX;
                    let d = dur(rng, 10 * o.ttl_ms);
                    push(
                        at,
                        Fault::MonoRate {
                            host: host.clone(),
                            ppm,
                        },
                    );
                    push(at + d, Fault::MonoRate { host, ppm: 0 });
                }
                "messages" => {
                    let host = pick(rng, &nodes).clone();
                    let faults = MessageFaults {
                        lose_request_ppm: below(rng, 200_000) as u32,
                        lose_answer_ppm: below(rng, 200_000) as u32,
                        replay_ppm: below(rng, 300_000) as u32,
                    };
                    let d = dur(rng, 5 * o.ttl_ms);
                    push(
                        at,
                        Fault::Messages {
                            host: host.clone(),
                            faults,
                        },
                    );
                    push(
                        at + d,
                        Fault::Messages {
                            host,
                            faults: MessageFaults::default(),
                        },
                    );
                }
                "disk_full" => {
                    // One at a time: mostly shorter than the TTL, up to a few of them, so
                    // that leases run out while the coordinators cannot write.
                    if at < disk_busy_until {
                        continue;
                    }
                    let d = dur(rng, 5 * o.ttl_ms);
                    disk_busy_until = at + d + 1;
                    push(at, Fault::DiskFull);
                    push(at + d, Fault::DiskFree);
                }
                other => unreachable!("a fault kind without a schedule: {other}"),
            }
        }
        // Everything heals by `heal`: restarts and repairs are scheduled before it, and
        // clocks are corrected there.
        for host in &all {
            p.events.push(Event {
                at_ms: heal,
                fault: Fault::ClockHeal { host: host.clone() },
            });
        }
        p.events.sort_by_key(|e| e.at_ms);
        p
    }
}
