//! The event trace of one seed: what the simulation did (faults, restarts) and what the
//! cluster answered (acknowledged batches, refusals), in simulated time, with a digest that
//! two runs of one seed must share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A shared, append-only trace.
#[derive(Debug, Clone, Default)]
pub struct Trace(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    keep_lines: bool,
    lines: Vec<String>,
    faults: BTreeMap<String, u64>,
    digest: u64,
}

/// Simulated milliseconds since the start.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl Trace {
    /// A trace that keeps its lines (`--seed`) or only counts and digests them.
    pub fn new(keep_lines: bool) -> Self {
        let t = Trace::default();
        t.0.lock().expect("trace").keep_lines = keep_lines;
        t
    }

    /// Records an event.
    pub fn event(&self, host: &str, what: &str) {
        self.line(now_ms(), host, what);
    }

    /// Records an event in the digest only (every acknowledged batch: too many to print).
    pub fn quiet(&self, host: &str, what: &str) {
        let keep = std::mem::replace(&mut self.0.lock().expect("trace").keep_lines, false);
        self.line(now_ms(), host, what);
        self.0.lock().expect("trace").keep_lines = keep;
    }

    /// Records an event at a time the caller knows (the driver, outside any host).
    pub fn event_at(&self, at_ms: u64, host: &str, what: &str) {
        self.line(at_ms, host, what);
    }

    /// Records a fault and counts it under its kind, the text before the first `:` or ` `.
    pub fn fault(&self, host: &str, what: &str) {
        self.fault_at(now_ms(), host, what);
    }

    /// [`Trace::fault`] at a given time.
    pub fn fault_at(&self, at_ms: u64, host: &str, what: &str) {
        let kind = what
            .split([':', ' '])
            .next()
            .unwrap_or(what)
            .replace('-', "_");
        *self
            .0
            .lock()
            .expect("trace")
            .faults
            .entry(kind)
            .or_default() += 1;
        self.line(at_ms, host, &format!("FAULT {what}"));
    }

    fn line(&self, at_ms: u64, host: &str, what: &str) {
        let mut t = self.0.lock().expect("trace");
        let line = format!("{:>6}.{:03}s {host:<7} {what}", at_ms / 1000, at_ms % 1000);
        // FNV-1a over every line: equal traces, equal digests.
        t.digest = line.bytes().fold(t.digest ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        if t.keep_lines {
            t.lines.push(line);
        }
    }

    /// The lines kept.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("trace").lines.clone()
    }

    /// Faults injected, by kind.
    pub fn faults(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("trace").faults.clone()
    }

    /// The digest of every line so far.
    pub fn digest(&self) -> u64 {
        self.0.lock().expect("trace").digest
    }
}
