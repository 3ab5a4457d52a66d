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
    loop {
        lease.wake.notify.notified().await;
        // Serve, and after a failure wait out the backoff before trying again: the generator
        // asks again on every id it cannot issue, and those asks must not turn into requests.
        loop {
            match supply_once(&client, &lease, reserve_ahead_ms, &clock, &mut pending).await {
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
) -> Result<(), ClientError> {
    let needed = lease.wake.needed_ms.load(Ordering::Acquire);
    if needed > lease.reservation.until_ms() && !lease.reservation.is_revoked() {
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
