//! The fault schedule of one seed: which fault, where, when, and when it heals. Every fault
//! heals by [`Options::heal_ms`]; the rest of the run is the liveness check.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardflake::FastRng;

use crate::net::MessageFaults;
use crate::node::NodeSlot;
use crate::{Options, COORDINATOR_STEP_MS_MAX};

/// One change the driver makes to the simulated world.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    Crash { host: String },
    Pause { host: String, resume_window_ms: u64 },
    Restart { host: String },
    Partition { a: String, b: String },
    PartitionOneway { from: String, to: String },
    Repair { a: String, b: String },
    Hold { a: String, b: String },
    Release { a: String, b: String },
    Latency { a: String, b: String, max_ms: u64 },
    ClockStep { host: String, by_ms: i64 },
    ClockDrift { host: String, ppm: i64 },
    ClockHeal { host: String },
    Messages { host: String, faults: MessageFaults },
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
        primaries: &[String],
        slots: &BTreeMap<String, Arc<NodeSlot>>,
    ) -> Plan {
        let nodes: Vec<String> = slots.keys().cloned().collect();
        let mut all: Vec<String> = nodes.clone();
        all.extend(coordinators.iter().cloned());
        let _ = primaries;
        let mut p = Plan::default();
        let heal = o.heal_ms;
        let window = heal.saturating_sub(o.faults_from_ms);
        let count = (o.faults_per_minute * window / 60_000).max(1);
        // A host that is down is not crashed or paused again before it is back.
        let mut down_until: BTreeMap<String, u64> = BTreeMap::new();
        for _ in 0..count {
            let at = o.faults_from_ms + below(rng, window);
            let left = heal - at;
            let dur = |rng: &mut FastRng, max: u64| 1 + below(rng, max.min(left).max(1));
            let mut push = |at_ms: u64, fault: Fault| p.events.push(Event { at_ms, fault });
            match below(rng, 11) {
                0 => {
                    let host = pick(rng, &nodes).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    let d = dur(rng, 4 * o.ttl_ms);
                    down_until.insert(host.clone(), at + d);
                    push(at, Fault::Crash { host: host.clone() });
                    push(at + d, Fault::Restart { host });
                }
                1 => {
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
                2 => {
                    let host = pick(rng, coordinators).clone();
                    if down_until.get(&host).is_some_and(|&u| u >= at) {
                        continue;
                    }
                    let d = dur(rng, 3 * o.ttl_ms);
                    down_until.insert(host.clone(), at + d);
                    push(at, Fault::Crash { host: host.clone() });
                    push(at + d, Fault::Restart { host });
                }
                3 => {
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
                4 => {
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
                5 => {
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
                6 => {
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
                7 | 8 => {
                    let host = pick(rng, &all).clone();
                    let mut by_ms = STEPS_MS[below(rng, STEPS_MS.len() as u64) as usize];
                    if coordinators.contains(&host) {
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
                9 => {
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
                _ => {
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
