//! What a scheduled fault does to the simulated world: hosts crashed, paused, cut off or
//! restarted, clocks stepped or skewed, messages lost or held, the store backed up and put
//! back, the disk filled up.

use super::*;

/// The simulated world a fault is applied to.
pub(crate) struct World<'a> {
    /// The store as the checker and the operator see it, the last backup, and a runtime
    /// for the operator's own calls (a repair).
    pub(crate) view: &'a view::StoreView,
    pub(crate) backup: &'a Mutex<Option<MemStore>>,
    /// The store's history, backed up and restored with it.
    pub(crate) history: &'a Mutex<history::History>,
    pub(crate) operator: &'a tokio::runtime::Runtime,
    pub(crate) checker: &'a Mutex<Checker>,
    pub(crate) coordinators: &'a [String],
    pub(crate) clocks: &'a BTreeMap<String, Arc<HostClock>>,
    pub(crate) slots: &'a BTreeMap<String, Arc<NodeSlot>>,
    pub(crate) trace: &'a Trace,
    pub(crate) ttl_ms: u64,
    /// The simulated disk under a redb store.
    pub(crate) disk: Option<&'a shardflake_coordinator::store::DiskFaults>,
}

/// Applies `fault`; returns the events it schedules in turn.
pub(crate) fn apply(
    sim: &mut turmoil::Sim<'_>,
    fault: &Fault,
    now: u64,
    w: &World<'_>,
) -> Vec<Event> {
    let World {
        view,
        backup,
        history,
        operator,
        checker,
        coordinators,
        clocks,
        slots,
        trace,
        ttl_ms,
        disk,
    } = *w;
    match fault {
        Fault::Crash { host } => {
            if let Some(slot) = slots.get(host) {
                slot.forget();
                trace.fault_at(now, host, "crash: kill -9");
            } else {
                trace.fault_at(now, host, "crash_coordinator: kill -9");
            }
            sim.crash(host.as_str());
        }
        Fault::Backup => {
            *backup.lock().expect("backup") = Some(view.store().copy());
            history.lock().expect("history").backup();
            trace.event_at(now, "operator", "backup of the store taken");
        }
        Fault::Restore => {
            if let Some(b) = &*backup.lock().expect("backup") {
                view.store().restore_from(b);
                history.lock().expect("history").restore();
                view.invalidate();
                trace.fault_at(now, "operator", "restore: the store put back to its backup");
            }
        }
        Fault::RepairStore => {
            // As the runbook says: the time of the restore or later (with the coordinators'
            // largest clock error), and per namespace the highest value the applications
            // hold, plus one.
            let floors = checker.lock().expect("checker").ns_highest();
            let req = shardflake_proto::coord::RepairRequest {
                time_at_least_ms: Some(START_UNIX_MS + now + 2 * COORDINATOR_STEP_MS_MAX),
                namespaces_at_least: floors.into_iter().map(|(k, v)| (k, v + 1)).collect(),
                all_namespaces_at_least: None,
            };
            let outcome = operator.block_on(view.operator().repair(&req));
            view.invalidate();
            let what = match outcome {
                Ok(r) => format!(
                    "repair: token {} -> {}, generation {} -> {}",
                    r.token_before, r.token_after, r.generation_before, r.generation_after
                ),
                Err(e) => format!("repair failed: {e}"),
            };
            trace.event_at(now, "operator", &what);
        }
        Fault::DiskFull => {
            if let Some(disk) = disk {
                disk.set_full(true);
                trace.fault_at(now, "disk", "disk_full: writes fail with ENOSPC");
            }
        }
        Fault::DiskFree => {
            if let Some(disk) = disk {
                disk.set_full(false);
                trace.event_at(now, "disk", "disk space freed");
            }
        }
        Fault::Terminate { host } => {
            slots[host].terminate();
            trace.fault_at(now, host, "terminate: SIGTERM, a clean shutdown");
        }
        Fault::Freeze { host, ms } => {
            slots[host].freeze_for(now + ms);
            for c in coordinators {
                sim.hold(host.as_str(), c.as_str());
            }
            let vs = if *ms < ttl_ms { "shorter" } else { "longer" };
            trace.fault_at(
                now,
                host,
                &format!("freeze: SIGSTOP for {ms} ms, {vs} than the TTL; its links held"),
            );
        }
        Fault::Thaw { host } => {
            for c in coordinators {
                sim.release(host.as_str(), c.as_str());
            }
            trace.event_at(now, host, "SIGCONT: held messages delivered");
        }
        Fault::Isolate { host, after_delay } => {
            for c in coordinators {
                sim.partition(host.as_str(), c.as_str());
            }
            let kind = if *after_delay {
                "isolate_after_delay"
            } else {
                "isolate"
            };
            trace.fault_at(
                now,
                host,
                &format!("{kind}: cut off from every coordinator"),
            );
        }
        Fault::Rejoin { host } => {
            for c in coordinators {
                sim.repair(host.as_str(), c.as_str());
            }
            trace.event_at(now, host, "links to every coordinator repaired");
        }
        Fault::MonoRate { host, ppm } => {
            clocks[host].set_mono_rate_ppm(*ppm);
            if *ppm == 0 {
                trace.event_at(now, host, "monotonic clock at the true rate again");
            } else {
                trace.fault_at(
                    now,
                    host,
                    &format!("mono_rate: monotonic clock {ppm:+} ppm"),
                );
            }
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
            // A SIGTERM the old process did not get to is not the new process's.
            if let Some(slot) = slots.get(host) {
                slot.clear_terminate();
            }
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
        Fault::ClockStepInWait { host, by_ms } => {
            clocks[host].arm_step(*by_ms);
            trace.event_at(
                now,
                host,
                &format!("clock step of {by_ms:+} ms armed for the next wait for a tick"),
            );
        }
        Fault::LeaseEndStep { host, lead_ms } => {
            let slot = &slots[host];
            slot.lose_renewal_answers.store(true, Ordering::Relaxed);
            // The keeper's deadline: a TTL less its drift margin after the last acked renewal.
            let end = slot.lease_sent_ms.load(Ordering::Relaxed) + ttl_ms - (ttl_ms / 50).max(5);
            let at = |at_ms, fault| Event { at_ms, fault };
            let host = host.clone();
            if end <= now + lead_ms {
                trace.fault_at(
                    now,
                    &host,
                    "step_at_lease_end: no lease; answers to renewals lost for a TTL",
                );
                return vec![at(now + ttl_ms, Fault::RenewalAnswers { host })];
            }
            trace.fault_at(
                now,
                &host,
                &format!(
                    "step_at_lease_end: answers to renewals lost; the lease ends at {:.3}s",
                    end as f64 / 1000.0
                ),
            );
            let by_ms = slot.clock_wait_max_ms.unwrap_or(CLOCK_STEP_AT_LEASE_END_MS);
            return vec![
                at(
                    end - lead_ms,
                    Fault::ClockStepInWait {
                        host: host.clone(),
                        by_ms: -(by_ms as i64),
                    },
                ),
                at(end - lead_ms + 50, Fault::ClockFire { host: host.clone() }),
                at(end + 1, Fault::RenewalAnswers { host: host.clone() }),
                at(end + by_ms + 1_000, Fault::ClockHeal { host }),
            ];
        }
        Fault::RenewalAnswers { host } => {
            slots[host]
                .lose_renewal_answers
                .store(false, Ordering::Relaxed);
            trace.event_at(now, host, "answers to renewals arrive again");
        }
        Fault::ClockFire { host } => {
            if clocks[host].fire_pending() {
                trace.event_at(
                    now,
                    host,
                    "no tick wait came: the armed clock step lands now",
                );
            }
        }
        Fault::ClockDrift { host, ppm } => {
            clocks[host].set_drift_ppm(*ppm);
            trace.fault_at(now, host, &format!("clock_drift: {ppm:+} ppm"));
        }
        Fault::ClockHeal { host } => {
            let c = &clocks[host];
            c.set_drift_ppm(0);
            c.set_mono_rate_ppm(0);
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
    Vec::new()
}
