//! The keeper task: learns the cluster, acquires a lease (or waits as a standby), renews it
//! ahead of expiry, and gives it up when it may have expired.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shardflake::{Layout, Reservation};
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, LeaseGrant, ReleaseRequest, RenewRequest, StandbyWaitRequest,
};
use shardflake_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::supply::supply;
use super::*;
use crate::client::{ClientError, CoordinatorClient};

enum Held {
    Lost,
    Shutdown,
    /// A grant that this node must not use: stop for good.
    Failed(String),
}

enum Renewal {
    Ok(Instant, u64, Option<BlockGrant>),
    Rejected(ClientError),
    Failed(ClientError),
}

/// Why the coordinators could not be used yet.
enum Resolve {
    /// Retry later (no coordinator answered, ...).
    Retry(ClientError),
    /// A configuration error: stop.
    Fatal(String),
}

pub(super) struct Task {
    pub(super) client: Arc<CoordinatorClient>,
    pub(super) config: KeeperConfig,
    /// The TTL asked for: the configured one within the coordinators' limits.
    pub(super) ttl_ms: u64,
    /// How far ahead of the clock reservations are asked for, within the coordinators' limit.
    pub(super) reserve_ahead_ms: u64,
    pub(super) tx: watch::Sender<MemberState>,
    pub(super) layout: Arc<OnceLock<Layout>>,
    pub(super) latencies: VecDeque<Duration>,
    pub(super) generation: u64,
    pub(super) last_host: Option<u32>,
    pub(super) promoted: bool,
    /// The idempotency key of the acquisition in progress and the secret drawn for it, kept
    /// across its retries (a retry must present the same secret to get the same grant).
    pub(super) request_id: Option<(String, LeaseSecret)>,
    /// Acquisitions started, for drawing each its own secret.
    pub(super) acquisitions: u64,
}

/// Errors after which the lease cannot be used any more: another holder has the id, the
/// coordinator considers the lease over, or it has no record of it. Everything else
/// (unavailable coordinators, a shard the coordinator's clock has not reached, a used-up
/// counter range) is retried or waited out with the lease kept.
pub(super) fn fatal_for_lease(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(
            ErrorCode::StaleToken
                | ErrorCode::LeaseExpired
                | ErrorCode::NotFound
                | ErrorCode::LeaseSecretMismatch
        )
    )
}

/// `fut`'s output, or `None` if `stop` fires first.
async fn unless_stopped<T>(
    fut: impl std::future::Future<Output = T>,
    stop: &mut oneshot::Receiver<()>,
) -> Option<T> {
    // Biased: the stop request first, then the operation; a fixed order also keeps a
    // simulation's replay of one seed exact.
    tokio::select! {
        biased;
        _ = stop => None,
        out = fut => Some(out),
    }
}

/// Aborts a task when dropped, so a lease's helper task never outlives the lease.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Task {
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut retry = self.config.retry(
            "contacting the coordinators",
            Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
            Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
        );
        loop {
            let Some(resolved) = unless_stopped(self.resolve(), &mut stop).await else {
                return self.stopped();
            };
            let e = match resolved {
                Ok(()) => {
                    retry.succeeded();
                    break;
                }
                Err(Resolve::Fatal(reason)) => return self.failed(reason),
                Err(Resolve::Retry(e)) => e,
            };
            let wait = retry.failed(e.kind(), &e);
            if unless_stopped(tokio::time::sleep(wait), &mut stop)
                .await
                .is_none()
            {
                return self.stopped();
            }
        }
        let mut retry = self.config.retry(
            "acquiring a lease",
            Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
            Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
        );
        loop {
            let Some(obtained) = unless_stopped(self.obtain(), &mut stop).await else {
                return self.stopped();
            };
            let e = match obtained {
                Ok((grant, secret, sent)) => {
                    retry.succeeded();
                    match self.hold(grant, secret, sent, &mut stop).await {
                        Held::Lost => continue,
                        Held::Shutdown => return,
                        Held::Failed(reason) => return self.failed(reason),
                    }
                }
                Err(e @ ClientError::StoreMismatch { .. }) => return self.failed(e.to_string()),
                Err(e) => e,
            };
            let wait = retry.failed(e.kind(), &e);
            if unless_stopped(tokio::time::sleep(wait), &mut stop)
                .await
                .is_none()
            {
                return self.stopped();
            }
        }
    }

    fn stopped(&self) {
        self.tx.send_replace(MemberState::Stopped);
    }

    /// Stops for good on a configuration error.
    fn failed(&self, reason: String) {
        tracing::error!("{reason}");
        self.tx.send_replace(MemberState::Failed { reason });
    }

    /// Learns the cluster's store, layout and limits from every reachable coordinator, and
    /// checks them against this node's configuration.
    async fn resolve(&mut self) -> Result<(), Resolve> {
        let info = self.client.probe().await.map_err(|e| match e {
            ClientError::StoreMismatch { .. } => Resolve::Fatal(e.to_string()),
            e => Resolve::Retry(e),
        })?;
        let theirs = Layout::from_spec(&info.layout_spec).map_err(|e| {
            Resolve::Fatal(format!(
                "the coordinators run layout `{}`, which this node cannot build: {e}",
                info.layout_spec
            ))
        })?;
        if let Some(mine) = &self.config.layout {
            if *mine != theirs {
                return Err(Resolve::Fatal(format!(
                    "this node's layout `{}` differs from the cluster's layout `{}` (store {}); \
                     a node must issue ids in the layout its host id is leased for: start it \
                     without --layout to serve the cluster's, or with the same layout",
                    mine.spec(),
                    theirs.spec(),
                    info.store_id
                )));
            }
        }
        let _ = self.layout.set(theirs);
        let l = info.limits;
        self.ttl_ms = self.config.ttl_ms.clamp(l.ttl_ms_min, l.ttl_ms_max);
        if self.ttl_ms != self.config.ttl_ms {
            tracing::warn!(
                asked_ms = self.config.ttl_ms,
                using_ms = self.ttl_ms,
                "the lease TTL is outside the coordinators' range {}..={} ms; using {} ms",
                l.ttl_ms_min,
                l.ttl_ms_max,
                self.ttl_ms
            );
        }
        self.apply_reservation_limit(l.reservation_ahead_ms_max);
        tracing::info!(store_id = %info.store_id, layout = %info.layout_spec,
            ttl_ms = self.ttl_ms, reserve_ahead_ms = self.reserve_ahead_ms, "coordinators reached");
        Ok(())
    }

    fn apply_reservation_limit(&mut self, ahead_max_ms: u64) {
        self.reserve_ahead_ms = self.config.reserve_ahead_ms.min(ahead_max_ms).max(1);
    }

    /// Acquires a lease (as a standby: waits for a failed host first). Returns the grant
    /// and the time the granting request was sent.
    async fn obtain(&mut self) -> Result<(LeaseGrant, LeaseSecret, Instant), ClientError> {
        // One idempotency key and secret per acquisition, kept across retries: a grant whose
        // answer was lost is answered again instead of leaving a ghost lease behind.
        if self.request_id.is_none() {
            self.acquisitions += 1;
            let secret = self.config.draw_secret(self.acquisitions);
            let id = shardflake::uuid7::Uuid7::random_at(self.config.clock.now_ms());
            self.request_id = Some((id.to_string(), secret));
        }
        let (request_id, secret) = self.request_id.clone().expect("set above");
        let c = &self.config;
        if c.standby && !self.promoted {
            self.tx.send_replace(MemberState::Standby);
            let mut busy = self.config.retry(
                "taking over a failed host id",
                Duration::from_millis(ACQUIRE_RETRY_MS_MIN),
                Duration::from_millis(ACQUIRE_RETRY_MS_MAX),
            );
            loop {
                let offered = self
                    .client
                    .standby_wait(&StandbyWaitRequest {
                        name: c.name.clone(),
                        timeout_ms: STANDBY_POLL_MS,
                    })
                    .await?;
                let Some(host_id) = offered.host_id else {
                    continue;
                };
                let sent = Instant::now();
                match self
                    .client
                    .acquire(&AcquireRequest {
                        name: c.name.clone(),
                        secret: secret.clone(),
                        ttl_ms: Some(self.ttl_ms),
                        host_id: Some(host_id),
                        prefer_host_id: None,
                        reserve_ahead_ms: Some(self.reserve_ahead_ms),
                        request_id: Some(request_id.clone()),
                        url: c.url.clone(),
                    })
                    .await
                {
                    Ok(g) => {
                        self.promoted = true;
                        self.request_id = None;
                        tracing::info!(host_id, token = g.token, "standby took over host id");
                        return Ok((g, secret, sent));
                    }
                    Err(e) if e.code() == Some(ErrorCode::HostBusy) => {
                        // Another standby took it first: wait for the next failure.
                        tokio::time::sleep(busy.failed(e.kind(), &e)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !matches!(*self.tx.borrow(), MemberState::Lost { .. }) {
            self.tx.send_replace(MemberState::Acquiring);
        }
        let sent = Instant::now();
        let g = self
            .client
            .acquire(&AcquireRequest {
                name: c.name.clone(),
                secret: secret.clone(),
                ttl_ms: Some(self.ttl_ms),
                host_id: None,
                prefer_host_id: self.last_host.or(c.prefer_host_id),
                reserve_ahead_ms: Some(self.reserve_ahead_ms),
                request_id: Some(request_id),
                url: c.url.clone(),
            })
            .await?;
        self.request_id = None;
        Ok((g, secret, sent))
    }

    fn p99(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let mut v: Vec<Duration> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        let idx = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx]
    }

    /// When to send the next renewal: once the time left is under k·p99 + margin, and never
    /// later than half the TTL after the last acknowledged renewal was sent.
    fn next_renewal(&self, last_send: Instant, deadline: Instant, ttl_ms: u64) -> Instant {
        let half = last_send + Duration::from_millis(ttl_ms / 2);
        let lead = self.p99().mul_f64(self.config.latency_multiplier)
            + Duration::from_millis(self.config.renew_margin_ms);
        let predictive = deadline
            .checked_sub(lead)
            .unwrap_or(last_send)
            .max(last_send);
        half.min(predictive)
    }

    fn lose(&mut self, lease: &ActiveLease, reason: String) {
        lease.reservation.revoke();
        lease.guard.clear();
        self.last_host = Some(lease.host_id);
        tracing::warn!(host_id = lease.host_id, token = lease.token, %reason, "lease lost; stopped issuing");
        self.tx.send_replace(MemberState::Lost {
            host_id: lease.host_id,
            token: lease.token,
            reason,
        });
    }

    fn deadline_after(&self, sent: Instant, ttl_ms: u64) -> Instant {
        sent + Duration::from_millis(ttl_ms.saturating_sub(self.config.drift_margin_ms))
    }

    /// Checks a grant against the cluster this keeper resolved: the layout's fingerprint and
    /// the store. A grant that fails is given back and never used.
    async fn check_grant(
        &self,
        grant: &LeaseGrant,
        secret: &LeaseSecret,
    ) -> Result<Layout, String> {
        let expected = self.layout.get().expect("resolved before acquiring");
        let problem = match Layout::from_spec(&grant.layout_spec) {
            Ok(l) if l == *expected => None,
            Ok(l) => Some(format!(
                "the grant of host id {} is for layout `{}`, but this node runs `{}`",
                grant.host_id,
                l.spec(),
                expected.spec()
            )),
            Err(e) => Some(format!(
                "the grant of host id {} names layout `{}`, which this node cannot build: {e}",
                grant.host_id, grant.layout_spec
            )),
        }
        .or_else(|| {
            let pinned = self.client.store_id();
            (pinned.as_deref() != Some(grant.store_id.as_str())).then(|| {
                format!(
                    "the grant of host id {} comes from store {}, but this node uses store {}",
                    grant.host_id,
                    grant.store_id,
                    pinned.unwrap_or_default()
                )
            })
        });
        match problem {
            None => Ok(expected.clone()),
            Some(p) => {
                let req = ReleaseRequest {
                    token: grant.token,
                    secret: secret.clone(),
                };
                let release = self.client.release(grant.host_id, &req);
                let _ =
                    tokio::time::timeout(Duration::from_millis(RELEASE_TIMEOUT_MS), release).await;
                Err(format!("{p}; refused the grant and gave the host id back"))
            }
        }
    }

    async fn hold(
        &mut self,
        grant: LeaseGrant,
        secret: LeaseSecret,
        sent: Instant,
        stop: &mut oneshot::Receiver<()>,
    ) -> Held {
        let layout = match self.check_grant(&grant, &secret).await {
            Ok(l) => l,
            Err(reason) => return Held::Failed(reason),
        };
        self.apply_reservation_limit(grant.limits.reservation_ahead_ms_max);
        let wake = Arc::new(Wake::default());
        // The generator asks for more once its headroom is under the low-water mark; it must
        // stay below the look-ahead, or every id would ask.
        let low_water_ms = self.config.low_water_ms.min(self.reserve_ahead_ms / 2);
        let reservation = Arc::new(Reservation::new(
            Arc::new(KeeperReserver(wake.clone())),
            low_water_ms,
        ));
        self.generation += 1;
        let lease = Arc::new(ActiveLease {
            host_id: grant.host_id,
            token: grant.token,
            secret,
            ttl_ms: grant.ttl_ms,
            start_above_ms: grant.start_above_ms,
            layout,
            store_id: grant.store_id.clone(),
            generation: self.generation,
            reservation: reservation.clone(),
            guard: Guard::new(),
            wake: wake.clone(),
            temporal: OnceLock::new(),
        });
        let mut deadline = self.deadline_after(sent, grant.ttl_ms);
        if Instant::now() >= deadline {
            self.lose(
                &lease,
                "the grant arrived after the lease's deadline".into(),
            );
            return Held::Lost;
        }
        lease.guard.set(deadline);
        reservation.extend_to(grant.reserved_until_ms);
        tracing::info!(
            host_id = grant.host_id,
            token = grant.token,
            start_above_ms = grant.start_above_ms,
            "lease held"
        );
        self.tx.send_replace(MemberState::Active(lease.clone()));
        // Extensions and blocks run beside the renewals; a refusal that ends the lease comes
        // back through `refused`.
        let (refused_tx, mut refused) = mpsc::channel::<ClientError>(1);
        let _supply = AbortOnDrop(tokio::spawn(supply(
            self.client.clone(),
            lease.clone(),
            self.reserve_ahead_ms,
            self.config.clock.clone(),
            self.config.retry(
                "extending the reservation and fetching counter blocks",
                Duration::from_millis(SUPPLY_RETRY_MS_MIN),
                Duration::from_millis(SUPPLY_RETRY_MS_MAX),
            ),
            refused_tx,
        )));
        let mut retry = self.config.retry(
            "renewing the lease",
            Duration::from_millis(RENEW_RETRY_MS_MIN),
            Duration::from_millis((lease.ttl_ms / 10).max(2 * RENEW_RETRY_MS_MIN)),
        );
        let mut last_send = sent;
        let mut retry_at: Option<Instant> = None;
        // After a failed renewal the next presents the namespace blocks the node holds: the
        // failure may be a store restored from a backup, whose repair must know them.
        let mut present_held = false;
        loop {
            let renew_at =
                retry_at.unwrap_or_else(|| self.next_renewal(last_send, deadline, lease.ttl_ms));
            tokio::select! {
                biased;
                _ = &mut *stop => {
                    reservation.revoke();
                    lease.guard.clear();
                    let req = ReleaseRequest {
                        token: lease.token,
                        secret: lease.secret.clone(),
                    };
                    let release = self.client.release(lease.host_id, &req);
                    match tokio::time::timeout(Duration::from_millis(RELEASE_TIMEOUT_MS), release).await {
                        Ok(Ok(())) => tracing::info!(host_id = lease.host_id, "lease released"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "release failed; the lease will expire"),
                        Err(_) => tracing::warn!("release timed out; the lease will expire"),
                    }
                    self.tx.send_replace(MemberState::Stopped);
                    return Held::Shutdown;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.lose(&lease, "no renewal acknowledged before the deadline".into());
                    return Held::Lost;
                }
                Some(e) = refused.recv() => {
                    self.lose(&lease, format!("refused: {e}"));
                    return Held::Lost;
                }
                _ = tokio::time::sleep_until(renew_at) => {
                    match self.renew_once(&lease, deadline, present_held).await {
                        Renewal::Ok(sent, reserved_until_ms, next_block) => {
                            retry.succeeded();
                            retry_at = None;
                            present_held = false;
                            last_send = sent;
                            deadline = self.deadline_after(
                                if shardflake::mutant::active(
                                    shardflake::mutant::Mutant::LeaseMeasuredFromTheAnswerNotTheRequest,
                                ) {
                                    Instant::now()
                                } else {
                                    sent
                                },
                                lease.ttl_ms,
                            );
                            if Instant::now() >= deadline {
                                self.lose(&lease, "the renewal was acknowledged after its deadline".into());
                                return Held::Lost;
                            }
                            lease.guard.set(deadline);
                            reservation.extend_to(reserved_until_ms);
                            if let (Some(b), Some(link)) = (next_block, lease.temporal.get()) {
                                link.install(b);
                            }
                        }
                        Renewal::Rejected(e) => {
                            self.lose(&lease, format!("renewal refused: {e}"));
                            return Held::Lost;
                        }
                        Renewal::Failed(e) => {
                            // Retry soon, still bounded by the deadline arm above.
                            retry_at = Some(Instant::now() + retry.failed(e.kind(), &e));
                            present_held = true;
                        }
                    }
                }
            }
        }
    }

    async fn renew_once(
        &mut self,
        lease: &ActiveLease,
        deadline: Instant,
        present_held: bool,
    ) -> Renewal {
        let sent = Instant::now();
        let req = RenewRequest {
            token: lease.token,
            secret: lease.secret.clone(),
            reserve_until_ms: Some(self.config.clock.now_ms() + self.reserve_ahead_ms),
            usage: lease.temporal.get().and_then(|t| t.usage()),
            namespaces: self.config.ns_usage.as_ref().map_or_else(Vec::new, |f| f()),
            ns_held: match &self.config.ns_held {
                Some(f) if present_held => f(),
                _ => Vec::new(),
            },
        };
        let left = deadline.saturating_duration_since(sent);
        let call = self.client.renew(lease.host_id, &req, left);
        match tokio::time::timeout_at(deadline, call).await {
            Err(_) => Renewal::Failed(ClientError::Unavailable {
                tried: 0,
                last: "the renewal timed out at the lease deadline".into(),
            }),
            Ok(Ok(resp)) => {
                if self.latencies.len() == LATENCY_SAMPLES_MAX {
                    self.latencies.pop_front();
                }
                self.latencies.push_back(sent.elapsed());
                Renewal::Ok(sent, resp.reserved_until_ms, resp.next_block)
            }
            Ok(Err(e)) if fatal_for_lease(&e) => Renewal::Rejected(e),
            Ok(Err(e)) => Renewal::Failed(e),
        }
    }
}
