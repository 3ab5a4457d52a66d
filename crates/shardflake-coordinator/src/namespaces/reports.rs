//! A renewal's namespace usage reports, written after the renewal committed and never a
//! reason for it to fail: by a background writer (or within a short budget when there is
//! none), one transaction of [`USAGE_REPORTS_PER_TXN`] reports at a time; what cannot be
//! written is dropped and counted.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Coordinator {
    /// Takes a renewal's namespace reports into the node's forecasters, after the renewal
    /// committed: each report updates the node's use record of a namespace it holds blocks
    /// of (reports of others, and repeated names, are ignored), in transactions of at most
    /// [`USAGE_REPORTS_PER_TXN`] reports, read with one [`KvStore::get_many`] each and
    /// written one after the other, within `budget_ms`. A chunk that conflicts (a block grant to the same node came
    /// first) is read and tried once more; a chunk that still cannot be written in time is
    /// dropped and counted (`ns_usage_reports_dropped`): a report only moves a forecast, and
    /// the next renewal brings a fresh one.
    ///
    /// [`KvStore::get_many`]: crate::store::KvStore::get_many
    pub(crate) async fn write_usage_reports(
        &self,
        host_id: u32,
        token: u64,
        reports: &[NsUsage],
        budget_ms: u64,
    ) {
        if reports.is_empty() || self.generations.restored().is_some() {
            return;
        }
        let mut seen = std::collections::HashSet::with_capacity(reports.len());
        let unique: Vec<&NsUsage> = reports.iter().filter(|r| seen.insert(&r.name)).collect();
        let chunks: Vec<&[&NsUsage]> = unique.chunks(USAGE_REPORTS_PER_TXN).collect();
        // One chunk at a time: renewals and grants share the store's commit queue (etcd's
        // batches hold only a few chunks each), and a node's thousand reports sent at once
        // would queue every other node's renewal behind them.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(budget_ms);
        let mut results = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let r = match tokio::time::timeout_at(deadline, self.write_usage_chunk(host_id, chunk))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(CoordError::BadRequest(format!(
                    "not written within {budget_ms} ms"
                ))),
            };
            results.push(r);
        }
        let mut dropped = 0;
        let mut error = None;
        for (r, chunk) in results.into_iter().zip(chunks) {
            match r {
                Ok(written) => {
                    self.metrics.ns_usage_reports.inc_by(written as u64);
                }
                Err(e) => {
                    dropped += chunk.len();
                    error = Some(e);
                }
            }
        }
        if let Some(e) = error {
            self.metrics.ns_usage_reports_dropped.inc_by(dropped as u64);
            tracing::debug!(host_id, token, dropped, error = %e,
                "namespace usage reports dropped; the renewal stands");
        }
    }

    /// One chunk of [`Self::write_usage_reports`]: how many reports it wrote.
    pub(crate) async fn write_usage_chunk(
        &self,
        host_id: u32,
        chunk: &[&NsUsage],
    ) -> Result<usize, CoordError> {
        let keys: Vec<String> = chunk.iter().map(|r| ns_use_key(&r.name, host_id)).collect();
        for _ in 0..2 {
            let now_ms = self.time.wall_ms();
            let mut txn = Txn::new();
            let mut written = 0;
            let found = self.store.get_many(&keys).await?;
            for ((r, key), v) in chunk.iter().zip(&keys).zip(found) {
                let Some(v) = v else { continue };
                let mut u: NsUseRecord = records::decode(key, &v.value)?;
                observe(&mut u, r.used, r.over_ms, now_ms);
                txn = txn.compare(key, v.version).put(key, encode(&u));
                written += 1;
            }
            if written == 0 {
                return Ok(0);
            }
            if let TxnOutcome::Committed { .. } = self.store.txn(txn).await? {
                return Ok(written);
            }
            self.metrics.cas_conflicts.inc();
        }
        Err(CoordError::Contended { attempts: 2 })
    }
}

/// Usage reports written in one transaction (two operations each: far below the store's
/// [`crate::store::TXN_OPS_MAX`], so that etcd's group commit can pack several).
pub const USAGE_REPORTS_PER_TXN: usize = 16;
/// How long a renewal's answer waits for its usage reports when they are written before it
/// is answered (no background writer: [`Coordinator::start_report_writer`]), ms; those not
/// written by then are counted as dropped. A renewal must answer well within a lease's TTL.
pub const USAGE_WRITE_BUDGET_MS: u64 = 250;
/// How long the background writer gives one renewal's reports (ms).
pub const USAGE_BACKGROUND_BUDGET_MS: u64 = 5_000;
/// Renewals' reports waiting for the background writer; beyond, they are dropped and
/// counted.
pub const USAGE_JOBS_MAX: usize = 1_024;

/// One renewal's reports, for the background writer.
#[derive(Debug)]
pub(crate) struct ReportJob {
    host_id: u32,
    token: u64,
    reports: Vec<NsUsage>,
}

impl Coordinator {
    /// Writes renewals' usage reports in the background from now on, so that a renewal is
    /// answered as soon as it is durable: a task holding the coordinator weakly (it ends
    /// when the coordinator is dropped). Needs a tokio runtime.
    pub fn start_report_writer(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ReportJob>(USAGE_JOBS_MAX);
        let _ = self.report_writer.set(tx);
        let weak = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Some(c) = weak.upgrade() else { return };
                c.write_usage_reports(
                    job.host_id,
                    job.token,
                    &job.reports,
                    USAGE_BACKGROUND_BUDGET_MS,
                )
                .await;
            }
        })
    }

    /// A renewal's reports, once it committed: to the background writer when there is one
    /// (dropped and counted when it is full), else written now within
    /// [`USAGE_WRITE_BUDGET_MS`].
    pub(crate) async fn take_usage_reports(&self, host_id: u32, token: u64, reports: &[NsUsage]) {
        if reports.is_empty() {
            return;
        }
        let Some(writer) = self.report_writer.get() else {
            return self
                .write_usage_reports(host_id, token, reports, USAGE_WRITE_BUDGET_MS)
                .await;
        };
        let job = ReportJob {
            host_id,
            token,
            reports: reports.to_vec(),
        };
        if writer.try_send(job).is_err() {
            self.metrics
                .ns_usage_reports_dropped
                .inc_by(reports.len() as u64);
        }
    }
}
