//! The node's metrics: a small registry of atomics, rendered in the Prometheus text format.
//!
//! Hand-rolled rather than the `metrics` facade because that facade routes every update
//! through a process-global recorder: two nodes in one process (as in the tests) would share
//! counters, and the house rule is no globals. The node needs a dozen fixed series; each
//! update is one relaxed atomic add, and the generator-derived gauges (borrowed ms, headroom,
//! clock regressions) are read from the generator at scrape time instead of being pushed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shardflake_proto::ErrorCode;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0,
];

/// The routes that get their own latency series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Id,
    Ids,
    Inspect,
    Healthz,
    Readyz,
    Metrics,
    Other,
}

impl Route {
    const ALL: [Route; 7] = [
        Route::Id,
        Route::Ids,
        Route::Inspect,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Other,
    ];

    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/id" => Route::Id,
            "/ids" => Route::Ids,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            p if p.starts_with("/inspect/") => Route::Inspect,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Id => "/id",
            Route::Ids => "/ids",
            Route::Inspect => "/inspect",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

#[derive(Default)]
struct Histogram {
    // Per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Counters updated by the node; gauges are computed at scrape time.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) ids_id: AtomicU64,
    pub(crate) ids_ids: AtomicU64,
    pub(crate) clock_waits: AtomicU64,
    pub(crate) extension_waits: AtomicU64,
    pub(crate) state_writes: AtomicU64,
    pub(crate) state_write_errors: AtomicU64,
    pub(crate) state_write_last_us: AtomicU64,
    pub(crate) blocks_granted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    latency: [Histogram; Route::ALL.len()],
}

impl Metrics {
    pub(crate) fn observe_request(
        &self,
        route: Route,
        elapsed: Duration,
        error: Option<ErrorCode>,
    ) {
        self.latency[route as usize].observe(elapsed);
        if let Some(code) = error {
            if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
                self.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Values read from the generator and the reservation at scrape time.
pub(crate) struct Snapshot {
    pub(crate) layout: String,
    pub(crate) ready: bool,
    pub(crate) clock_regressions: u64,
    pub(crate) exhaustion_waits: u64,
    pub(crate) borrowed_ticks: u64,
    pub(crate) borrowed_ahead_ms: u64,
    pub(crate) clock_behind_ms: u64,
    pub(crate) reserved_until_ms: Option<u64>,
    pub(crate) headroom_ms: Option<u64>,
    pub(crate) block_remaining: Option<u64>,
    pub(crate) shard: Option<u64>,
}

fn series(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    series(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

impl Metrics {
    /// Renders every series in the Prometheus text format 0.0.4.
    pub(crate) fn render(&self, snap: &Snapshot) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(8 * 1024);
        series(
            &mut out,
            "shardflake_build_info",
            "gauge",
            "Version and layout of this node.",
        );
        let _ = writeln!(
            out,
            "shardflake_build_info{{version=\"{}\",layout=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            snap.layout
        );
        one(
            &mut out,
            "shardflake_ready",
            "gauge",
            "1 while the node may issue ids (as /readyz).",
            u64::from(snap.ready),
        );
        series(
            &mut out,
            "shardflake_ids_issued_total",
            "counter",
            "Ids issued, by endpoint.",
        );
        let _ = writeln!(
            out,
            "shardflake_ids_issued_total{{endpoint=\"/id\"}} {}",
            load(&self.ids_id)
        );
        let _ = writeln!(
            out,
            "shardflake_ids_issued_total{{endpoint=\"/ids\"}} {}",
            load(&self.ids_ids)
        );
        one(
            &mut out,
            "shardflake_clock_regressions_total",
            "counter",
            "Times the wall clock was found behind the last issued timestamp.",
            snap.clock_regressions,
        );
        one(
            &mut out,
            "shardflake_clock_behind_ms",
            "gauge",
            "How far the wall clock is behind the bound the node must stay above, in ms.",
            snap.clock_behind_ms,
        );
        one(
            &mut out,
            "shardflake_clock_waits_total",
            "counter",
            "Requests that waited for a clock that stepped back (clock policy wait).",
            load(&self.clock_waits),
        );
        one(
            &mut out,
            "shardflake_borrowed_ahead_ms",
            "gauge",
            "How far the last issued timestamp is ahead of the wall clock, in ms.",
            snap.borrowed_ahead_ms,
        );
        one(
            &mut out,
            "shardflake_borrowed_ticks_total",
            "counter",
            "Ticks started ahead of the wall clock (clock policy borrow).",
            snap.borrowed_ticks,
        );
        one(
            &mut out,
            "shardflake_sequence_exhaustion_waits_total",
            "counter",
            "Times a tick's sequence ran out and the generator waited for the next tick.",
            snap.exhaustion_waits,
        );
        one(
            &mut out,
            "shardflake_reservation_waits_total",
            "counter",
            "Requests that waited for the reservation or a counter block to be extended.",
            load(&self.extension_waits),
        );
        if let Some(until) = snap.reserved_until_ms {
            one(
                &mut out,
                "shardflake_reservation_until_ms",
                "gauge",
                "The durable reservation bound, Unix ms.",
                until,
            );
        }
        if let Some(h) = snap.headroom_ms {
            one(
                &mut out,
                "shardflake_reservation_headroom_ms",
                "gauge",
                "Reserved ms left above the later of the clock and the last issued timestamp.",
                h,
            );
        }
        if let Some(s) = snap.shard {
            one(
                &mut out,
                "shardflake_temporal_shard",
                "gauge",
                "The temporal shard ids are issued in.",
                s,
            );
        }
        if let Some(b) = snap.block_remaining {
            one(
                &mut out,
                "shardflake_counter_block_remaining",
                "gauge",
                "Counter values left in the current block (temporal layout).",
                b,
            );
        }
        one(
            &mut out,
            "shardflake_counter_blocks_granted_total",
            "counter",
            "Counter blocks persisted and installed (temporal layout).",
            load(&self.blocks_granted),
        );
        one(
            &mut out,
            "shardflake_state_writes_total",
            "counter",
            "Durable state file writes (each: write, fsync, rename, fsync of the directory).",
            load(&self.state_writes),
        );
        one(
            &mut out,
            "shardflake_state_write_errors_total",
            "counter",
            "Failed state file writes.",
            load(&self.state_write_errors),
        );
        one(
            &mut out,
            "shardflake_state_write_last_us",
            "gauge",
            "Duration of the last state file write, in microseconds.",
            load(&self.state_write_last_us),
        );
        one(
            &mut out,
            "shardflake_connections_open",
            "gauge",
            "Open HTTP connections.",
            load(&self.connections_open),
        );
        one(
            &mut out,
            "shardflake_connections_total",
            "counter",
            "HTTP connections accepted.",
            load(&self.connections_total),
        );
        series(
            &mut out,
            "shardflake_http_errors_total",
            "counter",
            "Error responses, by stable error code.",
        );
        for (code, n) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "shardflake_http_errors_total{{code=\"{code}\"}} {}",
                load(n)
            );
        }
        series(
            &mut out,
            "shardflake_http_request_duration_seconds",
            "histogram",
            "Request latency from routing to response, by route.",
        );
        for (route, h) in Route::ALL.iter().zip(&self.latency) {
            let name = "shardflake_http_request_duration_seconds";
            let label = route.label();
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                cumulative += load(&h.buckets[i]);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{label}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += load(&h.buckets[LATENCY_BUCKETS_S.len()]);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{label}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{label}\"}} {}",
                load(&h.sum_ns) as f64 / 1e9
            );
            let _ = writeln!(out, "{name}_count{{route=\"{label}\"}} {}", load(&h.count));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_errors_counted() {
        let m = Metrics::default();
        m.observe_request(Route::Id, Duration::from_micros(30), None);
        m.observe_request(Route::Id, Duration::from_millis(2), None);
        m.observe_request(
            Route::Id,
            Duration::from_secs(9),
            Some(ErrorCode::ClockBehind),
        );
        let snap = Snapshot {
            layout: "twitter".into(),
            ready: true,
            clock_regressions: 0,
            exhaustion_waits: 0,
            borrowed_ticks: 0,
            borrowed_ahead_ms: 0,
            clock_behind_ms: 0,
            reserved_until_ms: Some(5),
            headroom_ms: Some(2),
            block_remaining: None,
            shard: None,
        };
        let text = m.render(&snap);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        let b = "shardflake_http_request_duration_seconds_bucket{route=\"/id\"";
        assert!(line(&format!("{b},le=\"0.00005\"}}")).ends_with(" 1"));
        assert!(line(&format!("{b},le=\"0.0025\"}}")).ends_with(" 2"));
        assert!(line(&format!("{b},le=\"5\"}}")).ends_with(" 2"));
        assert!(line(&format!("{b},le=\"+Inf\"}}")).ends_with(" 3"));
        assert!(
            line("shardflake_http_request_duration_seconds_count{route=\"/id\"}").ends_with(" 3")
        );
        assert!(line("shardflake_http_errors_total{code=\"clock_behind\"}").ends_with(" 1"));
        assert!(line("shardflake_reservation_headroom_ms").ends_with(" 2"));
        assert!(!text.contains("shardflake_counter_block_remaining"));
    }
}
