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

    /// Records an acknowledged batch (`count` ids from `first`) in the digest only: there are
    /// too many to print, and formatting each would cost more than checking it.
    pub fn ack(&self, host: &str, count: usize, first: u64) {
        let at = now_ms();
        let mut t = self.0.lock().expect("trace");
        let fields = [at, count as u64, first];
        t.digest = fnv(
            host.bytes()
                .chain(fields.iter().flat_map(|f| f.to_le_bytes())),
            t.digest,
        );
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
        t.digest = fnv(line.bytes(), t.digest);
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

/// FNV-1a over `bytes`, continuing from `digest`: equal traces, equal digests.
fn fnv(bytes: impl Iterator<Item = u8>, digest: u64) -> u64 {
    bytes.fold(digest ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
