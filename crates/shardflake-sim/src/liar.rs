//! A lying client: a holder of the cluster token that is not a lease holder. Now and then it
//! picks a host id from the store and asks the coordinators to renew, extend or release that
//! host id's lease under its current token with a secret it made up, or under the token
//! before it (an old lease's). The coordinators promise to refuse every such request; one
//! that is accepted is a violation. It also replays, verbatim, requests the nodes sent
//! earlier (captured on the wire, secrets included), which the coordinators answer as their
//! rules say; the other checks judge what follows. And with a lease's credentials taken off
//! the wire it asks to return namespace values the return rule never gives back: from below
//! the lease's newest block, or past its end. One such return accepted is a violation too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake::FastRng;
use shardflake_client::CoordinatorClient;
use shardflake_proto::coord::{ReleaseRequest, RenewRequest, ReservationRequest};
use shardflake_proto::ns::NsReturnRequest;
use shardflake_proto::secret::{LeaseSecret, LEASE_SECRET_BYTES};

use crate::check::Checker;
use crate::net::{SimTransport, Wiretap};
use crate::trace::Trace;
use crate::view::StoreView;

/// Longest pause between two lies (ms).
const LIE_PAUSE_MS_MAX: u64 = 1_500;

/// What the lying client needs.
pub(crate) struct LiarCtx {
    pub(crate) urls: Vec<String>,
    pub(crate) token: String,
    pub(crate) seed: u64,
    pub(crate) trace: Trace,
    pub(crate) checker: Arc<Mutex<Checker>>,
    pub(crate) view: Arc<StoreView>,
    pub(crate) wiretap: Wiretap,
}

/// The lying client's host software.
pub(crate) async fn run(ctx: Arc<LiarCtx>) -> turmoil::Result {
    let mut rng = FastRng::from_seed(ctx.seed);
    let transport = Arc::new(SimTransport::new(
        "liar",
        Default::default(),
        FastRng::from_seed(ctx.seed ^ 1),
        ctx.trace.clone(),
    ));
    let client = CoordinatorClient::over(ctx.urls.clone(), Some(ctx.token.clone()), transport)?
        .with_timeout(Duration::from_millis(500));
    loop {
        tokio::time::sleep(Duration::from_millis(
            200 + rng.next_u64() % LIE_PAUSE_MS_MAX,
        ))
        .await;
        match rng.next_u64() % 5 {
            0 => {
                replay(&ctx, &mut rng).await;
                continue;
            }
            1 => {
                return_outside_the_block(&ctx, &client, &mut rng).await;
                continue;
            }
            _ => {}
        }
        let hosts = ctx.view.hosts().await;
        if hosts.hosts.is_empty() {
            continue;
        }
        let h = &hosts.hosts[(rng.next_u64() % hosts.hosts.len() as u64) as usize];
        // The current token with a made-up secret, or the token before it (an old lease).
        let stale = rng.next_u64().is_multiple_of(3) && h.token > 1;
        let token = if stale { h.token - 1 } else { h.token };
        let mut bytes = [0u8; LEASE_SECRET_BYTES];
        for chunk in bytes.chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        let secret = LeaseSecret::from_bytes(bytes);
        let until_ms = h.reserved_until_ms + 60_000;
        let (what, result) = match rng.next_u64() % 3 {
            0 => (
                "renew",
                client
                    .renew(
                        h.host_id,
                        &RenewRequest {
                            token,
                            secret,
                            reserve_until_ms: Some(until_ms),
                            usage: None,
                            namespaces: Vec::new(),
                            ns_held: Vec::new(),
                        },
                        Duration::from_millis(500),
                    )
                    .await
                    .map(|_| ()),
            ),
            1 => (
                "extend",
                client
                    .extend_reservation(
                        h.host_id,
                        &ReservationRequest {
                            token,
                            secret,
                            until_ms,
                        },
                    )
                    .await
                    .map(|_| ()),
            ),
            _ => (
                "release",
                client
                    .release(h.host_id, &ReleaseRequest { token, secret })
                    .await,
            ),
        };
        let lie = format!(
            "{what} of host id {} under {} token {token} with a made-up secret",
            h.host_id,
            if stale { "the previous" } else { "the current" }
        );
        match result {
            Ok(()) => ctx
                .checker
                .lock()
                .expect("checker")
                .violation(format!("a lying client's {lie} was accepted")),
            Err(e) if e.code().is_some() => {
                ctx.trace
                    .event("liar", &format!("{lie}: refused ({})", e.kind()));
                ctx.checker
                    .lock()
                    .expect("checker")
                    .tally(&format!("lie_{what}_refused"));
            }
            // No coordinator answered (crashed, partitioned): nothing was decided.
            Err(e) => ctx
                .trace
                .event("liar", &format!("{lie}: no answer ({})", e.kind())),
        }
    }
}

/// A lease's host id, token and secret, read from a request a node sent (the body of a
/// renewal, extension, release or namespace call, the host id in its path or body).
fn credentials(request: &http::Request<Vec<u8>>) -> Option<(u32, u64, LeaseSecret)> {
    let body: serde_json::Value = serde_json::from_slice(request.body()).ok()?;
    let token = body.get("token")?.as_u64()?;
    let secret: LeaseSecret = serde_json::from_value(body.get("secret")?.clone()).ok()?;
    let host_id = match body.get("host_id").and_then(|h| h.as_u64()) {
        Some(h) => h,
        None => request
            .uri()
            .path()
            .strip_prefix("/v1/leases/")?
            .split('/')
            .next()?
            .parse()
            .ok()?,
    };
    Some((u32::try_from(host_id).ok()?, token, secret))
}

/// With a lease's credentials off the wire, asks to return values of the lease's newest
/// namespace block that the return rule never gives back: from a step below the block
/// (reaching into values issued before it) or from a step past its end.
async fn return_outside_the_block(ctx: &LiarCtx, client: &CoordinatorClient, rng: &mut FastRng) {
    let Some((host_id, token, secret)) = ctx.wiretap.pick(rng).and_then(|r| credentials(&r)) else {
        return;
    };
    let grants = ctx.view.grants().await;
    let newest: Vec<_> = grants
        .namespaces
        .iter()
        .filter_map(|ns| {
            let b = ns
                .blocks
                .iter()
                .rev()
                .find(|b| b.host_id == host_id && b.token == token)?;
            Some((ns.name.clone(), *b, ns.step))
        })
        .collect();
    if newest.is_empty() {
        return;
    }
    let (name, block, step) = newest[(rng.next_u64() % newest.len() as u64) as usize].clone();
    let (unused_from, how) = if block.start >= step && rng.next_u64().is_multiple_of(2) {
        (block.start - step, "below")
    } else {
        (block.end + step, "past the end of")
    };
    let req = NsReturnRequest {
        host_id: u64::from(host_id),
        token,
        secret,
        block_end: block.end,
        unused_from,
    };
    let lie = format!(
        "return of {name} from {unused_from}, {how} host id {host_id}'s newest block {}..{} (token {token}, its secret off the wire)",
        block.start, block.end
    );
    match client.ns_return(&name, &req).await {
        Ok(r) => ctx.checker.lock().expect("checker").violation(format!(
            "a lying client's {lie} was accepted ({} values taken back)",
            r.returned
        )),
        Err(e) if e.code().is_some() => {
            ctx.trace
                .event("liar", &format!("{lie}: refused ({})", e.kind()));
            ctx.checker
                .lock()
                .expect("checker")
                .tally("lie_return_refused");
        }
        Err(e) => ctx
            .trace
            .event("liar", &format!("{lie}: no answer ({})", e.kind())),
    }
}

/// Sends again, verbatim, a request a node sent earlier.
async fn replay(ctx: &LiarCtx, rng: &mut FastRng) {
    let Some(request) = ctx.wiretap.pick(rng) else {
        return;
    };
    let what = format!("{} {}", request.method(), request.uri().path());
    let answer = crate::net::exchange(request).await;
    let outcome = match &answer {
        Ok(r) => r.status().to_string(),
        Err(e) => e.clone(),
    };
    ctx.trace
        .event("liar", &format!("replayed a captured {what}: {outcome}"));
    ctx.checker
        .lock()
        .expect("checker")
        .tally("replayed_capture");
}
