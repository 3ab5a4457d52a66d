//! The supply task of a lease: reservation extensions and counter blocks, which the
//! generator asks for from its hot path, served beside the renewals.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use shardflake::Clock;
use shardflake_proto::coord::{BlockRequest, ReservationRequest};
use shardflake_proto::ErrorCode;
use tokio::sync::mpsc;

use super::task::fatal_for_lease;
use super::ActiveLease;
use crate::client::{ClientError, CoordinatorClient};
use crate::retry::Retry;

/// Serves the generator's wake-ups for one lease: reservation extensions and counter blocks.
/// Runs beside the renewals until the lease ends (the keeper aborts it); reports a refusal
/// that ends the lease through `refused`.
pub(super) async fn supply(
    client: Arc<CoordinatorClient>,
    lease: Arc<ActiveLease>,
    reserve_ahead_ms: u64,
    clock: Arc<dyn Clock>,
    mut retry: Retry,
    refused: mpsc::Sender<ClientError>,
) {
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut pace = Pace::default();
    loop {
        match pace.not_before {
            // An extension put off: served at its time, or earlier for a counter block.
            Some(at) => tokio::select! {
                () = lease.wake.notify.notified() => {}
                () = tokio::time::sleep_until(at) => {}
            },
            None => lease.wake.notify.notified().await,
        }
        // Serve, and after a failure wait out the backoff before trying again: the generator
        // asks again on every id it cannot issue, and those asks must not turn into requests.
        loop {
            let once = supply_once(
                &client,
                &lease,
                reserve_ahead_ms,
                &clock,
                &mut pending,
                &mut pace,
            );
            match once.await {
                Ok(()) => {
                    retry.succeeded();
                    break;
                }
                Err(e) if fatal_for_lease(&e) => {
                    let _ = refused.send(e).await;
                    return;
                }
                Err(e) => tokio::time::sleep(retry.failed(e.kind(), &e)).await,
            }
        }
    }
}

/// One pass over what the generator asked for. Block requests that fail stay in `pending`.
async fn supply_once(
    client: &CoordinatorClient,
    lease: &ActiveLease,
    reserve_ahead_ms: u64,
    clock: &Arc<dyn Clock>,
    pending: &mut Vec<(u64, u64)>,
    pace: &mut Pace,
) -> Result<(), ClientError> {
    let needed = lease.wake.needed_ms.load(Ordering::Acquire);
    let low_water_ms = lease.reservation.low_water_ms();
    // Where the generator issues: its clock, or ahead of it when it borrows ticks (it asks
    // for its low-water mark past that).
    let at_ms = clock.now_ms().max(needed.saturating_sub(low_water_ms));
    // A generator that used up the headroom granted before its time came (it borrowed
    // ticks faster than its clock moved) may ask again at once; one given none waits.
    let exhausted = at_ms > lease.reservation.until_ms();
    let put_off = pace
        .not_before
        .is_some_and(|at| tokio::time::Instant::now() < at)
        && !(exhausted && pace.backoff_ms == 0);
    if !put_off {
        // Its time came: the next answer says whether to put one off again.
        pace.not_before = None;
    }
    if needed > lease.reservation.until_ms() && !lease.reservation.is_revoked() && !put_off {
        let until_ms = needed.max(clock.now_ms() + reserve_ahead_ms);
        let req = ReservationRequest {
            token: lease.token,
            secret: lease.secret().clone(),
            until_ms,
        };
        if shardflake::mutant::active(
            shardflake::mutant::Mutant::KeeperRaisesTheReservationBeforeItIsDurable,
        ) {
            lease.reservation.extend_to(until_ms);
        }
        let r = client.extend_reservation(lease.host_id, &req).await?;
        // A revoked reservation ignores the extension, so an answer that arrives after the
        // lease was lost changes nothing.
        lease.reservation.extend_to(r.reserved_until_ms);
        pace.answered(lease.host_id, until_ms, r.reserved_until_ms, at_ms);
    }
    for request in std::mem::take(&mut *lease.wake.blocks.lock().expect("poisoned")) {
        if !pending.contains(&request) {
            pending.push(request);
        }
    }
    // Requests for shards the generator has left are moot.
    let current = lease
        .temporal
        .get()
        .and_then(|t| t.usage())
        .map_or(0, |u| u.shard);
    pending.retain(|(shard, _)| *shard >= current);
    while let Some(&(shard, after_counter)) = pending.first() {
        let req = BlockRequest {
            host_id: lease.host_id,
            token: lease.token,
            secret: lease.secret().clone(),
            shard,
            after_counter,
        };
        match client.block(&req).await {
            Ok(b) => {
                if let (true, Some(link)) = (lease.guard.is_valid(), lease.temporal.get()) {
                    link.install(b);
                }
            }
            // Nothing left to grant in this shard (or no blocks at all): asking again cannot
            // help; the generator moves on with the next shard.
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        ErrorCode::CounterSpaceExhausted
                            | ErrorCode::ShardRetired
                            | ErrorCode::NotTemporal
                            | ErrorCode::BadRequest
                    )
                ) =>
            {
                tracing::warn!(shard, error = %e, "counter block refused; not asking again for this request");
            }
            Err(e) => return Err(e),
        }
        pending.remove(0);
    }
    Ok(())
}

/// The pace of reservation extensions while the coordinators grant less than asked.
///
/// A coordinator reserves at most its `--reservation-ahead-max` past its own clock. A node
/// whose clock is ahead of the coordinators' by more than that less its look-ahead (or
/// whose generator borrows ticks that far ahead, or whose look-ahead is above that limit)
/// gets less than it asks for, and its generator, finding the headroom under its low-water
/// mark on every id, would ask again as soon as each answer arrived: an extension, and a
/// write to the store, per round trip for as long as it lasts. Instead, after an answer
/// short of the ask the next extension waits until half the headroom granted past where the
/// generator issues is used (at least `SUPPLY_RETRY_MS_MIN`; a generator that uses it all
/// sooner may ask at once), or, with no headroom at all (the generator past everything the
/// coordinators grant: it serves nothing until their clocks catch up), for a backoff
/// doubling up to `SUPPLY_RETRY_MS_MAX`, so a node whose clock was corrected may wait up to
/// that long to serve again. Logged once when it starts and once when it ends.
#[derive(Debug, Default)]
pub(super) struct Pace {
    /// No extension before then.
    not_before: Option<tokio::time::Instant>,
    /// The wait after an answer with no headroom; 0 when the last one had some.
    backoff_ms: u64,
    /// Whether the last answer was short of the ask (for logging once per change).
    short: bool,
}

impl Pace {
    /// Takes an extension's answer into account: `asked_ms` asked for, `granted_ms` granted,
    /// the generator issuing at `at_ms`.
    fn answered(&mut self, host_id: u32, asked_ms: u64, granted_ms: u64, at_ms: u64) {
        if granted_ms >= asked_ms {
            if self.short {
                tracing::info!(
                    host_id,
                    granted_ms,
                    "reservation extensions granted in full again"
                );
            }
            *self = Pace::default();
            return;
        }
        let headroom_ms = granted_ms.saturating_sub(at_ms);
        let wait_ms = if headroom_ms == 0 {
            self.backoff_ms =
                (self.backoff_ms * 2).clamp(super::SUPPLY_RETRY_MS_MIN, super::SUPPLY_RETRY_MS_MAX);
            self.backoff_ms
        } else {
            self.backoff_ms = 0;
            (headroom_ms / 2).max(super::SUPPLY_RETRY_MS_MIN)
        };
        if !self.short {
            tracing::warn!(
                host_id,
                asked_ms,
                granted_ms,
                short_by_ms = asked_ms - granted_ms,
                headroom_ms,
                "the coordinators reserve less than asked: this node's clock is ahead of theirs, or its generator borrows ticks ahead of its clock, by more than their look-ahead limit (--reservation-ahead-max) allows; extensions are spaced out until one is granted in full"
            );
        }
        self.short = true;
        self.not_before =
            Some(tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms));
    }
}
