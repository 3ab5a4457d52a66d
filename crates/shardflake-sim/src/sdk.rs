//! A client application on a host of its own, using the SDK (`IdClient`, its namespace handle
//! and a caller-owned `IdStream`) against the nodes over the simulated network: prefetching
//! buffers, failover between nodes when one is down or cut off, prefetch validity. Every id
//! and value it hands out goes to the checker, and so do the ones still in its buffers when
//! the run ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake::FastRng;
use shardflake_client::IdClient;

use crate::check::Checker;
use crate::net::SimTransport;
use crate::trace::{now_ms, Trace};
use crate::view::StoreView;

/// Largest number of ids the application asks for at once.
const TAKE_MAX: u64 = 100;
/// Ids older than this in a buffer are dropped unused (`IdClientBuilder::validity`).
const VALIDITY_MS: u64 = 5_000;

/// What the SDK host needs.
pub(crate) struct SdkCtx {
    pub(crate) nodes: Vec<String>,
    pub(crate) namespace: String,
    pub(crate) seed: u64,
    /// The application stops asking and drains its buffers at this simulated time (ms).
    pub(crate) drain_at_ms: u64,
    pub(crate) trace: Trace,
    pub(crate) checker: Arc<Mutex<Checker>>,
    pub(crate) view: Arc<StoreView>,
}

/// The SDK host's software.
pub(crate) async fn run(ctx: Arc<SdkCtx>) -> turmoil::Result {
    let mut rng = FastRng::from_seed(ctx.seed);
    let transport = Arc::new(SimTransport::new(
        "sdk",
        Default::default(),
        FastRng::from_seed(ctx.seed ^ 1),
        ctx.trace.clone(),
    ));
    let client = IdClient::builder()
        .nodes(ctx.nodes.clone())
        .transport(transport)
        .prefetch(20, 2_000)
        .validity(Duration::from_millis(VALIDITY_MS))
        .request_timeout(Duration::from_millis(300))
        .call_timeout(Duration::from_millis(1_000))
        .build()?;
    let ns = client.ns(&ctx.namespace)?;
    let mut stream = client.stream();
    let mut last = String::new();
    while now_ms() < ctx.drain_at_ms {
        tokio::time::sleep(Duration::from_millis(1 + rng.next_u64() % 20)).await;
        let n = 1 + (rng.next_u64() % TAKE_MAX) as usize;
        let (what, got) = match rng.next_u64() % 3 {
            0 => ("ids", client.next_ids(n).await),
            1 => ("ns", ns.next_ids(n).await),
            _ => {
                let mut ids = Vec::with_capacity(n);
                let mut err = None;
                for _ in 0..n {
                    match stream.next_id().await {
                        Ok(id) => ids.push(id),
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                ("stream", err.map_or(Ok(ids), Err))
            }
        };
        let state = match got {
            Ok(ids) => {
                hand_over(&ctx, what, ids).await;
                "ok".to_string()
            }
            Err(e) => {
                ctx.checker
                    .lock()
                    .expect("checker")
                    .tally("sdk_call_failed");
                e.kind().to_string()
            }
        };
        if state != last {
            ctx.trace.event("sdk", &format!("{what}: {state}"));
            last = state;
        }
    }
    // What the buffers still hold leaves them now, and is checked like the rest.
    let mut left = Vec::new();
    while let Some(id) = stream.try_next_id() {
        left.push(id);
    }
    hand_over(&ctx, "stream", left).await;
    for (what, buffered) in [
        ("ids", client.stats().buffered),
        ("ns", ns.stats().buffered),
    ] {
        let mut left = buffered;
        while left > 0 {
            let n = left.min(1_000);
            let got = if what == "ids" {
                client.next_ids(n).await
            } else {
                ns.next_ids(n).await
            };
            match got {
                Ok(ids) => hand_over(&ctx, what, ids).await,
                Err(_) => break,
            }
            left -= n;
        }
        ctx.trace.event(
            "sdk",
            &format!("{what}: {buffered} buffered at the end, checked"),
        );
    }
    std::future::pending::<()>().await;
    Ok(())
}

async fn hand_over(ctx: &SdkCtx, what: &str, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    ctx.trace
        .ack("sdk", ids.len(), ids.first().copied().unwrap_or_default());
    if what == "ns" {
        ctx.checker
            .lock()
            .expect("checker")
            .ack_ns_unordered("sdk", &ctx.namespace, ids);
    } else {
        let hosts = ctx.view.hosts().await;
        ctx.checker.lock().expect("checker").ack_sdk(ids, &hosts);
    }
}
