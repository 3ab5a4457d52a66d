//! The node's metrics: a per-node `prometheus-client` registry, encoded in the OpenMetrics
//! text format.
//!
//! Each node owns its registry (no process-global recorder), so two nodes in one process (as
//! in the tests) keep their own counts. Request counters and histograms are updated as
//! requests go; the generator-derived series (borrowed ms, headroom, clock regressions, the
//! current shard) are read from the generator at scrape time by a collector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
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
    Namespace,
    OpenApi,
    Other,
}

impl Route {
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/id" => Route::Id,
            "/ids" => Route::Ids,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/openapi.json" => Route::OpenApi,
            p if p.starts_with("/inspect/") => Route::Inspect,
            p if p.starts_with("/ns/") => Route::Namespace,
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
            Route::Namespace => "/ns",
            Route::OpenApi => "/openapi.json",
            Route::Other => "other",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type ClientLabels = [(&'static str, String); 1];

/// A histogram of request latencies with the node's buckets.
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S.iter().copied())
}

/// Counters updated by the node, and the registry they are encoded from.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) ids_id: Counter,
    pub(crate) ids_ids: Counter,
    pub(crate) ids_ns: Counter,
    pub(crate) clock_waits: Counter,
    pub(crate) extension_waits: Counter,
    pub(crate) state_writes: Counter,
    pub(crate) state_write_errors: Counter,
    pub(crate) state_write_last_us: Gauge,
    pub(crate) blocks_granted: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_total: Counter,
    errors: Family<Labels, Counter>,
    /// Id requests refused by the per-client limit: by credential name, or one series
    /// (`per-address`) for address-keyed limits.
    rate_limited: Family<ClientLabels, Counter>,
    /// Id requests without a valid client credential, by reason.
    client_auth_failures: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// What the scrape-time collector reports; set just before each encoding.
    scraped: Arc<Mutex<Option<Snapshot>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let ids = Family::<Labels, Counter>::default();
        registry.register(
            "shardflake_ids_issued",
            "Ids issued, by endpoint",
            ids.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let errors = Family::<Labels, Counter>::default();
        let rate_limited = Family::<ClientLabels, Counter>::default();
        let client_auth_failures = Family::<Labels, Counter>::default();
        let latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let scraped = Arc::new(Mutex::new(None));
        let m = Metrics {
            ids_id: ids.get_or_create_owned(&[("endpoint", "/id")]),
            ids_ids: ids.get_or_create_owned(&[("endpoint", "/ids")]),
            ids_ns: ids.get_or_create_owned(&[("endpoint", "/ns")]),
            clock_waits: counter(
                &mut registry,
                "shardflake_clock_waits",
                "Requests that waited for a clock that stepped back (clock policy wait)",
            ),
            extension_waits: counter(
                &mut registry,
                "shardflake_reservation_waits",
                "Requests that waited for the reservation or a counter block to be extended",
            ),
            blocks_granted: counter(
                &mut registry,
                "shardflake_counter_blocks_granted",
                "Temporal counter blocks made durable and installed",
            ),
            state_writes: counter(
                &mut registry,
                "shardflake_state_writes",
                "Durable writes of the state file",
            ),
            state_write_errors: counter(
                &mut registry,
                "shardflake_state_write_errors",
                "Failed writes of the state file",
            ),
            state_write_last_us: gauge(
                &mut registry,
                "shardflake_state_write_last_us",
                "Duration of the last state file write, in microseconds",
            ),
            connections_open: gauge(
                &mut registry,
                "shardflake_connections_open",
                "Open client connections",
            ),
            connections_total: counter(
                &mut registry,
                "shardflake_connections",
                "Client connections accepted",
            ),
            errors: errors.clone(),
            rate_limited: rate_limited.clone(),
            client_auth_failures: client_auth_failures.clone(),
            latency: latency.clone(),
            scraped: scraped.clone(),
            registry: Registry::default(),
        };
        registry.register("shardflake_http_errors", "Error responses, by code", errors);
        registry.register(
            "shardflake_client_rate_limited",
            "Id requests refused by the per-client limit, by credential name (or per-address)",
            rate_limited,
        );
        registry.register(
            "shardflake_client_auth_failures",
            "Id requests without a valid client credential, by reason",
            client_auth_failures,
        );
        registry.register(
            "shardflake_http_request_duration_seconds",
            "Request latency from routing to response, by route",
            latency,
        );
        registry.register_collector(Box::new(ScrapeCollector(scraped)));
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub(crate) fn observe_request(
        &self,
        route: Route,
        elapsed: Duration,
        error: Option<ErrorCode>,
    ) {
        self.latency
            .get_or_create(&[("route", route.label())])
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            self.errors.get_or_create(&[("code", code.as_str())]).inc();
        }
    }

    /// Counts an id request refused by the per-client limit.
    pub(crate) fn count_rate_limited(&self, client: String) {
        self.rate_limited.get_or_create(&[("client", client)]).inc();
    }

    /// Counts an id request without a valid client credential (`missing`, `unknown`).
    pub(crate) fn count_client_auth_failure(&self, reason: &'static str) {
        self.client_auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Encodes every series, with the scrape-time values of `snap`.
    pub(crate) fn render(&self, snap: &Snapshot) -> String {
        *self.scraped.lock().expect("scrape mutex") = Some(snap.clone());
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// Values read from the generator and the reservation at scrape time.
#[derive(Debug, Clone)]
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

/// Encodes the scrape-time series from the last [`Snapshot`].
#[derive(Debug)]
struct ScrapeCollector(Arc<Mutex<Option<Snapshot>>>);

fn gauge_of(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value as i64);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter_of(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(snap) = self.0.lock().expect("scrape mutex").clone() else {
            return Ok(());
        };
        let e = &mut encoder;
        let info = ConstGauge::new(1i64);
        let mut family = e.encode_descriptor(
            "shardflake_build_info",
            "Version and layout of this node",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("layout", snap.layout.as_str()),
        ])?)?;
        gauge_of(
            e,
            "shardflake_ready",
            "1 while the node may issue ids (as /readyz)",
            u64::from(snap.ready),
        )?;
        counter_of(
            e,
            "shardflake_clock_regressions",
            "Times the wall clock was found behind the last issued timestamp",
            snap.clock_regressions,
        )?;
        gauge_of(
            e,
            "shardflake_clock_behind_ms",
            "How far the wall clock is behind the bound the node must stay above, in ms",
            snap.clock_behind_ms,
        )?;
        gauge_of(
            e,
            "shardflake_borrowed_ahead_ms",
            "How far the last issued timestamp is ahead of the wall clock, in ms",
            snap.borrowed_ahead_ms,
        )?;
        counter_of(
            e,
            "shardflake_borrowed_ticks",
            "Ticks started ahead of the wall clock (clock policy borrow)",
            snap.borrowed_ticks,
        )?;
        counter_of(
            e,
            "shardflake_sequence_exhaustion_waits",
            "Times a tick's sequence ran out and the generator waited for the next tick",
            snap.exhaustion_waits,
        )?;
        if let Some(until) = snap.reserved_until_ms {
            gauge_of(
                e,
                "shardflake_reservation_until_ms",
                "The durable reservation bound, Unix ms",
                until,
            )?;
        }
        if let Some(h) = snap.headroom_ms {
            gauge_of(
                e,
                "shardflake_reservation_headroom_ms",
                "Reserved time left above the later of the clock and the last issued timestamp, in ms",
                h,
            )?;
        }
        if let Some(shard) = snap.shard {
            gauge_of(
                e,
                "shardflake_temporal_shard",
                "The temporal shard ids are issued in",
                shard,
            )?;
        }
        if let Some(left) = snap.block_remaining {
            gauge_of(
                e,
                "shardflake_counter_block_remaining",
                "Counter values left in the current block",
                left,
            )?;
        }
        Ok(())
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
        let b = |le: &str| {
            format!("shardflake_http_request_duration_seconds_bucket{{le=\"{le}\",route=\"/id\"}}")
        };
        assert!(line(&b("0.00005")).ends_with(" 1"));
        assert!(line(&b("0.0025")).ends_with(" 2"));
        assert!(line(&b("5.0")).ends_with(" 2"));
        assert!(line(&b("+Inf")).ends_with(" 3"));
        assert!(
            line("shardflake_http_request_duration_seconds_count{route=\"/id\"}").ends_with(" 3")
        );
        assert!(line("shardflake_http_errors_total{code=\"clock_behind\"}").ends_with(" 1"));
        assert!(line("shardflake_reservation_headroom_ms").ends_with(" 2"));
        assert!(!text.contains("shardflake_counter_block_remaining"));
    }
}
