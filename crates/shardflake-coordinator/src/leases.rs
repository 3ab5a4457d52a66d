//! Leases on host ids with fencing tokens, and the reservations persisted under them.
//!
//! Every grant takes a fencing token larger than every earlier one, and starts above the
//! reservation of the id's previous holders, and is bound to the secret its holder sent
//! (stored as a hash). A reservation is raised only for the current token of a live lease,
//! presented with its secret ([`Coordinator::fenced`]), and never further ahead of the
//! coordinator's clock than the configured look-ahead ([`Coordinator::raise_reservation`]).
//!
//! Every grant appends the previous holder's range to the host id's bounded grant log
//! (`audit/host/..`), which `GET /v1/audit` shows and `shardflake audit` checks.
//!
//! # Expiry
//!
//! A lease is expired when this process has seen the same `(token, renewals)` for a full TTL
//! on its monotonic clock. A record first seen after a restart therefore counts as live for a
//! full TTL from then, whatever its persisted wall-clock expiry says: the holder's own
//! deadline (send time of its last acknowledged renewal + TTL − drift margin) lies before the
//! crash plus a TTL, so by then it has stopped issuing. The wall-clock expiry is persisted for
//! operators and status; a wall clock that steps cannot shorten a lease.

use shardflake_proto::coord::{
    AcquireRequest, LeaseGrant, LeaseState, ReleaseRequest, RenewRequest, RenewResponse,
    ReservationRequest, ReservationResponse, ShardUsage, REQUEST_ID_BYTES_MAX, URL_BYTES_MAX,
};

use crate::config::truncate_name;
use crate::coordinator::{Coordinator, Step};
use crate::error::CoordError;
use crate::fence::{secret_hash, secret_matches, Liveness};
use crate::generation::{load_host_floors, Floor};
use crate::records::{
    self, beat_key, encode, encode_token, host_key, host_log_key, Beat, HostRecord, TokenRange,
    TOKEN_KEY,
};
use crate::store::Txn;

/// What an acquire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// A new token; `previous_token` is the host id's earlier one, if it had one (a
    /// takeover, a restart, a replacement).
    New {
        /// The host id's token before this grant.
        previous_token: Option<u64>,
    },
    /// The same grant again, for a repeated request id.
    Repeated,
}

/// What this process last saw of a lease, and since when on its monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observation {
    token: u64,
    renewals: u64,
    since_mono_ms: u64,
}

impl Observation {
    fn of(rec: &HostRecord, now_mono_ms: u64) -> Self {
        Self {
            token: rec.token,
            renewals: rec.renewals,
            since_mono_ms: now_mono_ms,
        }
    }

    fn is_of(&self, rec: &HostRecord) -> bool {
        self.token == rec.token && self.renewals == rec.renewals
    }
}

/// Records a renewal at wall time `now_ms` on `rec`: one more renewal under its token, and a
/// wall-clock expiry (for status) one TTL from now.
fn mark_renewed(rec: &mut HostRecord, now_ms: u64) {
    rec.renewals += 1;
    rec.renewed_at_ms = now_ms;
    rec.expires_at_ms = now_ms.saturating_add(rec.ttl_ms);
}

/// `txn` with `rec`'s heartbeat written, conditioned on the heartbeat read with it (a
/// renewal or takeover that came first makes it conflict).
fn with_beat(txn: Txn, rec: &HostRecord, usage: Option<ShardUsage>) -> Txn {
    let key = beat_key(rec.host_id);
    txn.compare(&key, rec.beat_version)
        .put(&key, encode(&Beat::of(rec, usage)))
}

/// An advertised URL must be an `http://` or `https://` URL of at most [`URL_BYTES_MAX`]
/// bytes: clients are sent there.
fn check_url(url: &str) -> Result<(), CoordError> {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.len() > URL_BYTES_MAX || url.chars().any(|c| c.is_whitespace()) {
        return Err(CoordError::BadRequest(format!(
            "url must be an http:// or https:// URL of at most {URL_BYTES_MAX} bytes without spaces, got {url:?}"
        )));
    }
    Ok(())
}

impl Coordinator {
    /// Grants a lease on a free host id (or the one asked for) with a new fencing token.
    ///
    /// With a `request_id`, the request is idempotent: if the current token of some host id
    /// was granted to this request id (the answer was lost and the caller retries), the same
    /// grant is answered again, renewed now, so no second host id is taken and the lease runs
    /// a full TTL from this answer, which is after the retry was sent.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseGrant, CoordError> {
        self.acquire_granting(req).await.map(|(g, _)| g)
    }

    /// [`Self::acquire`], and what it did: a new grant (over which earlier token, if the host
    /// id had one) or the same grant again. The audit trail logs each grant once.
    pub async fn acquire_granting(
        &self,
        req: &AcquireRequest,
    ) -> Result<(LeaseGrant, Granted), CoordError> {
        let ttl_ms = self.check_acquire(req)?;
        let holder = truncate_name(&req.name);
        self.cas_loop(|| Box::pin(self.acquire_step(req, &holder, ttl_ms)))
            .await
    }

    /// Checks an acquire before anything is read; its TTL.
    fn check_acquire(&self, req: &AcquireRequest) -> Result<u64, CoordError> {
        let ttl_ms = req.ttl_ms.unwrap_or(self.config.ttl_ms_default);
        if ttl_ms < self.config.ttl_ms_min || ttl_ms > self.config.ttl_ms_max {
            return Err(CoordError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.config.ttl_ms_min,
                max_ms: self.config.ttl_ms_max,
            });
        }
        if let Some(id) = &req.request_id {
            if id.is_empty() || id.len() > REQUEST_ID_BYTES_MAX {
                return Err(CoordError::BadRequest(format!(
                    "request_id must be 1..={REQUEST_ID_BYTES_MAX} bytes, got {}",
                    id.len()
                )));
            }
        }
        if !req.secret.is_valid() {
            return Err(CoordError::BadRequest(
                "secret must be 32 lowercase hexadecimal digits (128 random bits drawn by the holder)".into(),
            ));
        }
        if let Some(url) = &req.url {
            check_url(url)?;
        }
        for h in req.host_id.iter().chain(req.prefer_host_id.iter()) {
            self.check_host(*h)?;
        }
        Ok(ttl_ms)
    }

    /// One attempt of [`Self::acquire`]: the same grant again for a repeated request id, or
    /// a new token on a free host id.
    async fn acquire_step(
        &self,
        req: &AcquireRequest,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Step<'_, (LeaseGrant, Granted)>, CoordError> {
        let hosts = records::load_hosts(self.store.as_ref()).await?;
        let repeated = req.request_id.as_ref().and_then(|id| {
            hosts.iter().find(|(r, _)| {
                !r.released && r.holder == holder && r.request_id.as_ref() == Some(id)
            })
        });
        match repeated {
            Some((prev, version)) => self.repeat_grant(req, prev, *version),
            None => self.new_grant(req, holder, ttl_ms, &hosts).await,
        }
    }

    /// A repeated acquire: the grant of `prev` again, renewed from now.
    fn repeat_grant(
        &self,
        req: &AcquireRequest,
        prev: &HostRecord,
        version: u64,
    ) -> Result<Step<'_, (LeaseGrant, Granted)>, CoordError> {
        // A retry sends the secret of the request it repeats; another secret is another
        // caller that learned the request id, and gets nothing.
        if !secret_matches(prev, &req.secret) {
            return Err(CoordError::SecretMismatch {
                host_id: prev.host_id,
                token: prev.token,
            });
        }
        let now = self.time.wall_ms();
        let mut rec = prev.clone();
        mark_renewed(&mut rec, now);
        if let Some(ahead_ms) = req.reserve_ahead_ms {
            self.raise_reservation(&mut rec, now.saturating_add(ahead_ms), now);
        }
        let key = host_key(rec.host_id);
        let txn = with_beat(
            Txn::new().compare(&key, version).put(&key, encode(&rec)),
            &rec,
            None,
        );
        Ok(Step::commit(txn, move || {
            self.observe_commit(&rec);
            self.routing_changed();
            self.metrics.grants_repeated.inc();
            tracing::info!(host_id = rec.host_id, token = rec.token, holder = %rec.holder,
                "repeated acquire: answering the same grant, renewed");
            (self.grant_of(&rec), Granted::Repeated)
        }))
    }

    /// A new token on a free host id, above the previous holders' bound; the previous
    /// holder's range goes to the host id's grant log in the same transaction.
    async fn new_grant(
        &self,
        req: &AcquireRequest,
        holder: &str,
        ttl_ms: u64,
        hosts: &[(HostRecord, u64)],
    ) -> Result<Step<'_, (LeaseGrant, Granted)>, CoordError> {
        let now = self.time.wall_ms();
        let host_id = self.pick_host(hosts, req, self.time.mono_ms())?;
        let prev = hosts.iter().find(|(r, _)| r.host_id == host_id);
        let (last_token, token_version) = records::load_token(self.store.as_ref()).await?;
        let token = last_token + 1;
        // Above the previous holders' bound, and above what a repair set for every host id.
        let floors = load_host_floors(self.store.as_ref()).await?;
        let start_above_ms = prev
            .map_or(0, |(r, _)| {
                if shardflake::mutant::active(
                    shardflake::mutant::Mutant::TakeoverGrantStartsAboveTheLastRenewalNotTheBound,
                ) {
                    r.renewed_at_ms
                } else {
                    r.reserved_until_ms
                }
            })
            .max(floors.reserved_until_ms);
        let mut rec = HostRecord {
            host_id,
            token,
            holder: holder.to_string(),
            ttl_ms,
            granted_at_ms: now,
            renewed_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            renewals: 0,
            released: false,
            reserved_until_ms: start_above_ms,
            start_above_ms,
            request_id: req.request_id.clone(),
            temporal: prev.and_then(|(r, _)| r.temporal.clone()),
            url: req.url.clone(),
            secret_hash: secret_hash(&req.secret),
            // Shards retired for the host id stay retired for every later holder.
            block_floor_shard: prev
                .map_or(0, |(r, _)| r.block_floor_shard)
                .max(floors.block_floor_shard),
            // The previous holder's heartbeat: a renewal of it landing meanwhile makes this
            // grant conflict and look again.
            beat_version: prev.map_or(0, |(r, _)| r.beat_version),
        };
        if let Some(ahead_ms) = req.reserve_ahead_ms {
            self.raise_reservation(&mut rec, now.saturating_add(ahead_ms), now);
        }
        let key = host_key(host_id);
        let mut txn = with_beat(
            Txn::new()
                .compare(&key, prev.map_or(0, |(_, v)| *v))
                .compare(TOKEN_KEY, token_version)
                .put(&key, encode(&rec))
                .put(TOKEN_KEY, encode_token(token)),
            &rec,
            None,
        );
        if let Some((p, _)) = prev {
            // The previous holder's range is final now: only its token could raise it.
            let (mut log, log_version) =
                records::load_host_log(self.store.as_ref(), host_id).await?;
            log.push(TokenRange::of(p), self.config.audit_window);
            let log_key = host_log_key(host_id);
            txn = txn
                .compare(&log_key, log_version)
                .put(&log_key, encode(&log));
        }
        let previous_token = prev.map(|(p, _)| p.token);
        Ok(Step::commit(txn, move || {
            self.observe_commit(&rec);
            self.routing_changed();
            self.withdraw_offer(host_id);
            self.metrics.grants.inc();
            tracing::info!(host_id, token, holder = %rec.holder, start_above_ms, "lease granted");
            (self.grant_of(&rec), Granted::New { previous_token })
        }))
    }

    /// Renews a lease (and optionally extends its reservation and reports temporal usage);
    /// then takes the renewal's namespace usage reports, which cannot make it fail.
    pub async fn renew(
        &self,
        host_id: u32,
        req: &RenewRequest,
    ) -> Result<RenewResponse, CoordError> {
        self.renew_granting(host_id, req).await.map(|(r, _)| r)
    }

    /// [`Self::renew`], and whether the renewal granted the next shard's counter block (as
    /// opposed to answering one granted before): the audit trail logs each grant once.
    pub async fn renew_granting(
        &self,
        host_id: u32,
        req: &RenewRequest,
    ) -> Result<(RenewResponse, bool), CoordError> {
        self.check_host(host_id)?;
        if let Some(usage) = req.usage {
            if !self.config.is_temporal() {
                return Err(CoordError::NotTemporal {
                    layout: self.config.layout.name().to_string(),
                });
            }
            // A shard the layout cannot hold was never issued in: the report is malformed.
            self.check_shard(usage.shard)?;
        }
        self.check_usage_reports(&req.namespaces)?;
        self.check_held(&req.ns_held)?;
        if self
            .keeps_presentation(host_id, req.token, &req.secret)
            .await
        {
            // Refused below; the bound the holder asks for, and the namespace blocks it
            // holds, are floors for the repair.
            self.note_floor(Floor::Host {
                host_id,
                token: req.token,
                reserved_until_ms: req.reserve_until_ms.unwrap_or(0),
            })
            .await;
            for h in &req.ns_held {
                self.note_floor(Floor::Namespace {
                    name: &h.name,
                    end: h.end,
                })
                .await;
            }
        }
        if shardflake::mutant::active(shardflake::mutant::Mutant::UsageReportsFailTheRenewal)
            && !req.namespaces.is_empty()
        {
            let all: Vec<&shardflake_proto::ns::NsUsage> = req.namespaces.iter().collect();
            self.write_usage_chunk(host_id, &all).await?;
        }
        let renewed = self
            .cas_loop(|| Box::pin(self.renew_step(host_id, req)))
            .await?;
        // The lease is renewed and durable. The namespace reports go in transactions of
        // their own, after it: however many they are, and whatever becomes of them, they
        // are never a reason for a renewal to fail.
        self.take_usage_reports(host_id, req.token, &req.namespaces)
            .await;
        Ok(renewed)
    }

    /// One attempt of [`Self::renew`].
    async fn renew_step(
        &self,
        host_id: u32,
        req: &RenewRequest,
    ) -> Result<Step<'_, (RenewResponse, bool)>, CoordError> {
        let (mut rec, version) = self
            .fenced(host_id, req.token, &req.secret, Liveness::Required)
            .await?;
        let now = self.time.wall_ms();
        let extended = req
            .reserve_until_ms
            .is_some_and(|until_ms| self.raise_on_renewal(&mut rec, until_ms, now));
        mark_renewed(&mut rec, now);
        let key = host_key(host_id);
        let mut txn = Txn::new().compare(&key, version);
        let persisted = rec.temporal.clone();
        let next = match req.usage {
            Some(usage) => {
                self.next_shard_block(&mut rec, req.token, usage, now)
                    .await?
            }
            None => None,
        };
        let mut prepared = false;
        if let Some(write) = next.as_ref().and_then(|n| n.write.as_ref()) {
            txn = write.add_to(txn);
            prepared = true;
        }
        // The host record is rewritten only when a bound rose or the forecaster moved (a
        // shard closed, a forecast was made); otherwise the heartbeat alone carries the
        // renewal, and the current shard's usage.
        let forecaster_moved = match (&persisted, &rec.temporal) {
            (Some(before), Some(after)) => {
                let mut after = after.clone();
                after.used = before.used;
                after.host_predicted = before.host_predicted;
                &after != before
            }
            (None, None) => false,
            _ => true,
        };
        let beat_usage = req.usage.filter(|_| !forecaster_moved);
        if extended || forecaster_moved || rec.beat_version == 0 {
            txn = txn.put(&key, encode(&rec));
        }
        let txn = with_beat(txn, &rec, beat_usage);
        Ok(Step::commit(txn, move || {
            self.observe_commit(&rec);
            self.metrics.renewals.inc();
            if extended {
                self.metrics.extensions.inc();
            }
            if prepared {
                self.metrics.blocks_prepared.inc();
            }
            let response = RenewResponse {
                ttl_ms: rec.ttl_ms,
                reserved_until_ms: rec.reserved_until_ms,
                next_block: next.map(|n| n.grant),
            };
            (response, prepared)
        }))
    }

    /// Persists a higher reservation bound, only for the current token of a live lease.
    pub async fn extend_reservation(
        &self,
        host_id: u32,
        req: &ReservationRequest,
    ) -> Result<ReservationResponse, CoordError> {
        self.check_host(host_id)?;
        if self
            .keeps_presentation(host_id, req.token, &req.secret)
            .await
        {
            self.note_floor(Floor::Host {
                host_id,
                token: req.token,
                reserved_until_ms: req.until_ms,
            })
            .await;
        }
        self.cas_loop(|| Box::pin(self.extend_step(host_id, req)))
            .await
    }

    /// One attempt of [`Self::extend_reservation`].
    async fn extend_step(
        &self,
        host_id: u32,
        req: &ReservationRequest,
    ) -> Result<Step<'_, ReservationResponse>, CoordError> {
        let (mut rec, version) = if shardflake::mutant::active(
            shardflake::mutant::Mutant::ExtensionsAreNotFencedByTheToken,
        ) {
            self.current_host(host_id).await?
        } else {
            self.fenced(host_id, req.token, &req.secret, Liveness::Required)
                .await?
        };
        let raised = self.raise_reservation(&mut rec, req.until_ms, self.time.wall_ms());
        let answer = ReservationResponse {
            reserved_until_ms: if shardflake::mutant::active(
                shardflake::mutant::Mutant::CoordinatorAnswersTheAskedBoundNotThePersistedOne,
            ) {
                req.until_ms.max(rec.reserved_until_ms)
            } else {
                rec.reserved_until_ms
            },
        };
        if !raised {
            // Already persisted: answering with the current bound is idempotent.
            return Ok(Step::Answer(answer));
        }
        let key = host_key(host_id);
        let txn = Txn::new().compare(&key, version).put(&key, encode(&rec));
        Ok(Step::commit(txn, move || {
            self.metrics.extensions.inc();
            answer
        }))
    }

    /// Gives a host id back; the next holder may take it at once (above its reservation).
    pub async fn release(&self, host_id: u32, req: &ReleaseRequest) -> Result<(), CoordError> {
        self.check_host(host_id)?;
        self.cas_loop(|| Box::pin(self.release_step(host_id, req)))
            .await
    }

    /// One attempt of [`Self::release`].
    async fn release_step(
        &self,
        host_id: u32,
        req: &ReleaseRequest,
    ) -> Result<Step<'_, ()>, CoordError> {
        let (mut rec, version) = self
            .fenced(host_id, req.token, &req.secret, Liveness::NotRequired)
            .await?;
        if rec.released {
            return Ok(Step::Answer(()));
        }
        rec.released = true;
        rec.expires_at_ms = self.time.wall_ms();
        let key = host_key(host_id);
        let txn = Txn::new().compare(&key, version).put(&key, encode(&rec));
        let token = req.token;
        Ok(Step::commit(txn, move || {
            self.metrics.releases.inc();
            self.routing_changed();
            self.wake_standbys();
            tracing::info!(host_id, token, "lease released");
        }))
    }

    /// The host record of `host_id` and its version; `UnknownHost` if it was never leased.
    pub(crate) async fn current_host(&self, host_id: u32) -> Result<(HostRecord, u64), CoordError> {
        records::load_host(self.store.as_ref(), host_id)
            .await?
            .ok_or(CoordError::UnknownHost { host_id })
    }

    /// A renewal's reservation raise: only once less than half of the look-ahead it asks for
    /// is left, so that most renewals leave the bound (and the host record) as it is and
    /// write only their heartbeat. The holder keeps at least half its look-ahead; it asks for
    /// an extension of its own (never held back) when its generator needs more.
    fn raise_on_renewal(&self, rec: &mut HostRecord, until_ms: u64, now_ms: u64) -> bool {
        let until_ms = self.config.clamp_ahead(until_ms, now_ms);
        let asked = until_ms.saturating_sub(now_ms);
        let left = rec.reserved_until_ms.saturating_sub(now_ms);
        if left > asked / 2 {
            return false;
        }
        self.raise_reservation(rec, until_ms, now_ms)
    }

    /// Raises `rec`'s reservation to `until_ms`, clamped to the look-ahead limit from wall
    /// time `now_ms`. A reservation never goes down: a holder may already have issued up to
    /// it. Returns whether it rose.
    fn raise_reservation(&self, rec: &mut HostRecord, until_ms: u64, now_ms: u64) -> bool {
        let until_ms = self.config.clamp_ahead(until_ms, now_ms);
        if until_ms > rec.reserved_until_ms {
            rec.reserved_until_ms = until_ms;
            true
        } else {
            false
        }
    }

    /// Live or expired by the monotonic rule (module docs); released is reported as such.
    pub(crate) fn lease_state(&self, rec: &HostRecord, now_mono: u64) -> LeaseState {
        if rec.released {
            return LeaseState::Released;
        }
        let mut observed = self.observed.lock().expect("poisoned");
        let o = observed
            .entry(rec.host_id)
            .or_insert(Observation::of(rec, now_mono));
        if !o.is_of(rec) {
            *o = Observation::of(rec, now_mono);
        }
        let expired = if shardflake::mutant::active(
            shardflake::mutant::Mutant::CoordinatorExpiresLeasesOnItsWallClock,
        ) {
            self.time.wall_ms() >= rec.expires_at_ms
        } else {
            now_mono >= o.since_mono_ms.saturating_add(rec.ttl_ms)
        };
        if expired {
            LeaseState::Expired
        } else {
            LeaseState::Live
        }
    }

    /// Mono time at which the lease expires unless renewed.
    pub(crate) fn expiry_mono(&self, rec: &HostRecord) -> Option<u64> {
        let observed = self.observed.lock().expect("poisoned");
        observed
            .get(&rec.host_id)
            .filter(|o| o.is_of(rec))
            .map(|o| o.since_mono_ms.saturating_add(rec.ttl_ms))
    }

    /// Records that this process committed `rec`: its lease runs a full TTL from now.
    fn observe_commit(&self, rec: &HostRecord) {
        let now_mono = self.time.mono_ms();
        self.observed
            .lock()
            .expect("poisoned")
            .insert(rec.host_id, Observation::of(rec, now_mono));
    }

    fn is_free(&self, rec: &HostRecord, now_mono: u64) -> bool {
        rec.host_id < self.config.pool_size && self.lease_state(rec, now_mono) != LeaseState::Live
    }

    /// The host id to grant: the one asked for (if free), else the preferred one (if free),
    /// else the lowest free id.
    fn pick_host(
        &self,
        hosts: &[(HostRecord, u64)],
        req: &AcquireRequest,
        now_mono: u64,
    ) -> Result<u32, CoordError> {
        let find = |h: u32| hosts.iter().find(|(r, _)| r.host_id == h).map(|(r, _)| r);
        if let Some(h) = req.host_id {
            return match find(h) {
                Some(r) if !self.is_free(r, now_mono) => Err(CoordError::HostBusy {
                    host_id: h,
                    token: r.token,
                }),
                _ => Ok(h),
            };
        }
        if let Some(h) = req.prefer_host_id {
            if find(h).is_none_or(|r| self.is_free(r, now_mono)) {
                return Ok(h);
            }
        }
        // The lowest free id: a gap in the (sorted) records or a record whose lease is over.
        let mut next = 0u32;
        for (r, _) in hosts {
            if r.host_id > next {
                break;
            }
            if self.is_free(r, now_mono) {
                return Ok(r.host_id);
            }
            next = r.host_id + 1;
        }
        if next < self.config.pool_size {
            Ok(next)
        } else {
            Err(CoordError::PoolExhausted {
                pool_size: self.config.pool_size,
            })
        }
    }

    fn grant_of(&self, rec: &HostRecord) -> LeaseGrant {
        LeaseGrant {
            host_id: rec.host_id,
            token: rec.token,
            ttl_ms: rec.ttl_ms,
            start_above_ms: rec.start_above_ms,
            reserved_until_ms: rec.reserved_until_ms,
            layout_spec: self.cluster.layout_spec.clone(),
            store_id: self.cluster.store_id.clone(),
            pool_size: self.config.pool_size,
            limits: self.config.limits(),
        }
    }
}
