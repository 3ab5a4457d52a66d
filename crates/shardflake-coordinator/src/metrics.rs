//! The coordinator's metrics: a per-coordinator `prometheus-client` registry, encoded in the
//! OpenMetrics text format.
//!
//! Operation counters are updated as operations commit; the store's commit counters, the live
//! leases and the pool size are read at scrape time by a collector.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use shardflake_proto::ErrorCode;
use std::sync::atomic::AtomicU64;

type Labels = [(&'static str, &'static str); 1];
/// The label of a namespace's series.
pub type NsLabels = [(&'static str, String); 1];
/// The label of a credential's series: its name (`credential="node#1"`).
pub type CredentialLabels = [(&'static str, String); 1];

/// Operation counters for `/metrics`, each in the coordinator's own registry.
#[derive(Debug)]
pub struct Metrics {
    /// Leases granted.
    pub grants: Counter,
    /// Repeated acquire requests answered with their earlier grant.
    pub grants_repeated: Counter,
    /// Leases renewed.
    pub renewals: Counter,
    /// Reservations extended (alone or with a renewal).
    pub extensions: Counter,
    /// Counter blocks granted on request (overflow or start of shard).
    pub blocks_requested: Counter,
    /// Counter blocks prepared ahead of a shard with a renewal.
    pub blocks_prepared: Counter,
    /// Leases released.
    pub releases: Counter,
    /// Host ids offered to standbys.
    pub standby_offers: Counter,
    /// Compare-and-swap conflicts retried.
    pub cas_conflicts: Counter,
    /// Standby long polls woken by the store's change feed (a write by any coordinator).
    pub standby_feed_wakes: Counter,
    /// Namespace blocks granted.
    pub ns_blocks: Counter,
    /// Namespace values given back by nodes that stopped cleanly.
    pub ns_values_returned: Counter,
    /// Changes of a namespace's serving nodes.
    pub ns_assignments: Counter,
    /// Namespace usage reports taken into a node's forecaster.
    pub ns_usage_reports: Counter,
    /// Namespace usage reports dropped because the store could not take them (the
    /// renewal that carried them succeeded regardless).
    pub ns_usage_reports_dropped: Counter,
    /// Per namespace: the forecast consumption of its nodes, ids/s (set by the assignment).
    pub ns_forecast: Family<NsLabels, Gauge<f64, AtomicU64>>,
    /// Per namespace: the consumption its nodes last reported, ids/s.
    pub ns_actual: Family<NsLabels, Gauge<f64, AtomicU64>>,
    /// Fenced calls refused because the lease secret did not match.
    pub secret_mismatches: Counter,
    /// Temporal block records of retired shards deleted.
    pub gc_block_records: Counter,
    /// Namespace use records of released or superseded leases deleted.
    pub gc_use_records: Counter,
    /// Routing tables built from the store (every other `GET /v1/routing` is answered from
    /// memory).
    pub routing_builds: Counter,
    /// Namespace assignment passes (each reads every namespace and use record once).
    pub assign_passes: Counter,
    /// Requests by credential name (never the credential itself).
    pub requests: Family<CredentialLabels, Counter>,
    /// Requests refused by the per-credential rate limit, by credential name.
    pub rate_limited: Family<CredentialLabels, Counter>,
    /// Requests refused by authentication or scope, by reason (`missing`, `unknown`: no or
    /// no valid credential; `scope`: a credential outside its scope).
    pub auth_failures: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    registry: Registry,
    scraped: Arc<Mutex<Option<Scrape>>>,
}

/// What the coordinator reports at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Durable store commits (fsyncs).
    pub store_commits: u64,
    /// Transactions carried by those commits.
    pub store_txns: u64,
    /// Read requests the store answered.
    pub store_reads: u64,
    /// Host ids with a live lease.
    pub live_hosts: u64,
    /// Host ids in the pool.
    pub pool_size: u64,
    /// What the store reports of itself.
    pub store_gauges: Vec<crate::store::StoreGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shardflake_coordinator");
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let grants = counter("grants", "Leases granted");
        let grants_repeated = counter(
            "grants_repeated",
            "Repeated acquire requests answered with their earlier grant",
        );
        let renewals = counter("renewals", "Leases renewed");
        let extensions = counter("extensions", "Reservations extended");
        let blocks_requested = counter("blocks_requested", "Counter blocks granted on request");
        let blocks_prepared = counter(
            "blocks_prepared",
            "Counter blocks prepared ahead of a shard",
        );
        let releases = counter("releases", "Leases released");
        let standby_offers = counter("standby_offers", "Expired host ids offered to standbys");
        let cas_conflicts = counter("cas_conflicts", "Compare-and-swap conflicts retried");
        let standby_feed_wakes = counter(
            "standby_feed_wakes",
            "Standby long polls woken by the store's change feed (a write by any coordinator)",
        );
        let ns_blocks = counter("ns_blocks", "Namespace blocks granted");
        let ns_values_returned = counter(
            "ns_values_returned",
            "Namespace values given back by nodes that stopped cleanly",
        );
        let ns_assignments = counter("ns_assignments", "Changes of a namespace's serving nodes");
        let ns_usage_reports = counter(
            "ns_usage_reports",
            "Namespace usage reports taken into a node's forecaster",
        );
        let ns_usage_reports_dropped = counter(
            "ns_usage_reports_dropped",
            "Namespace usage reports dropped because the store could not take them",
        );
        let secret_mismatches = counter(
            "secret_mismatches",
            "Fenced calls refused because the lease secret did not match",
        );
        let gc_block_records = counter(
            "gc_block_records",
            "Temporal block records of retired shards deleted",
        );
        let gc_use_records = counter(
            "gc_use_records",
            "Namespace use records of released or superseded leases deleted",
        );
        let routing_builds = counter(
            "routing_builds",
            "Routing tables built from the store (the rest are served from memory)",
        );
        let assign_passes = counter(
            "assign_passes",
            "Namespace assignment passes (each reads every namespace and use record once)",
        );
        let ns_forecast = Family::<NsLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "ns_forecast_ids_per_second",
            "Forecast consumption of a namespace's nodes",
            ns_forecast.clone(),
        );
        let ns_actual = Family::<NsLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "ns_actual_ids_per_second",
            "Consumption a namespace's nodes last reported",
            ns_actual.clone(),
        );
        let requests = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "requests",
            "Authenticated requests, by credential name",
            requests.clone(),
        );
        let rate_limited = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by the per-credential rate limit, by credential name",
            rate_limited.clone(),
        );
        let auth_failures = Family::<Labels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authentication (missing, unknown) or scope",
            auth_failures.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register("http_errors", "Error responses, by code", errors.clone());
        let scraped = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(ScrapeCollector(scraped.clone())));
        Self {
            grants,
            grants_repeated,
            renewals,
            extensions,
            blocks_requested,
            blocks_prepared,
            releases,
            standby_offers,
            cas_conflicts,
            standby_feed_wakes,
            ns_blocks,
            ns_values_returned,
            ns_assignments,
            ns_usage_reports,
            ns_usage_reports_dropped,
            ns_forecast,
            ns_actual,
            secret_mismatches,
            gc_block_records,
            gc_use_records,
            routing_builds,
            assign_passes,
            requests,
            rate_limited,
            auth_failures,
            errors,
            registry,
            scraped,
        }
    }
}

impl Metrics {
    /// Counts an error response by its code.
    pub fn count_error(&self, code: ErrorCode) {
        self.errors.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// Encodes every series, with the scrape-time values of `scrape`.
    pub fn render(&self, scrape: Scrape) -> String {
        *self.scraped.lock().expect("scrape mutex") = Some(scrape);
        let mut out = String::with_capacity(4 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// Encodes the scrape-time series from the last [`Scrape`].
#[derive(Debug)]
struct ScrapeCollector(Arc<Mutex<Option<Scrape>>>);

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.lock().expect("scrape mutex").clone() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "store_commits",
                "Durable store commits (fsyncs)",
                s.store_commits,
            ),
            (
                "store_txns",
                "Transactions carried by those commits",
                s.store_txns,
            ),
            (
                "store_reads",
                "Read requests the store answered (a get, a scan or a batch of gets)",
                s.store_reads,
            ),
        ] {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, value) in [
            ("live_hosts", "Host ids with a live lease", s.live_hosts),
            ("pool_size", "Host ids in the pool", s.pool_size),
        ] {
            let g = ConstGauge::new(value as i64);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        for sg in &s.store_gauges {
            let g = ConstGauge::new(sg.value.min(i64::MAX as u64) as i64);
            g.encode(encoder.encode_descriptor(sg.name, sg.help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}
