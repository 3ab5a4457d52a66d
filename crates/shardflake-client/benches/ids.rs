//! How fast ids leave an [`IdClient`]'s buffer on one thread: the [`IdStream`] fast path and
//! the shared path, in ids per second.
//!
//! `cargo bench -p shardflake-client --bench ids`
//!
//! The node is an in-memory [`Transport`] that answers `GET /ids?count=N` with N sequential
//! ids in the node's JSON, so the figure is the client's own cost, not a network's. Each round
//! waits (untimed) until a refill has landed, then times taking ids until the buffer is empty;
//! the refill task keeps running on the runtime's worker thread meanwhile, as in production.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardflake_client::{IdClient, Transport, TransportFuture};
use shardflake_proto::node::write_ids_json;

/// Rounds per measurement.
const ROUNDS: usize = 100;
/// Ids per refill (a node's largest batch).
const REFILL: usize = 100_000;

#[derive(Debug, Default)]
struct MemoryNode {
    next: AtomicU64,
}

impl Transport for MemoryNode {
    fn send(&self, request: http::Request<Vec<u8>>) -> TransportFuture<'_> {
        let count: u64 = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("count="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let first = self.next.fetch_add(count, Ordering::Relaxed) + 1;
        let ids: Vec<u64> = (first..first + count).collect();
        let mut body = Vec::with_capacity(ids.len() * 24);
        write_ids_json(&mut body, &ids);
        Box::pin(async move {
            http::Response::builder()
                .status(200)
                .body(body)
                .map_err(|e| e.to_string())
        })
    }
}

async fn wait_full(client: &IdClient) {
    while client.stats().buffered < REFILL {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = IdClient::builder()
            .nodes(["http://memory"])
            .transport(Arc::new(MemoryNode::default()))
            .prefetch(REFILL, REFILL)
            .build()
            .unwrap();
        client.next_id().await.unwrap();

        // The fast path: a caller-owned stream, ids from its local chunk.
        let mut stream = client.stream();
        let (mut ids, mut busy) = (0u64, Duration::ZERO);
        for _ in 0..ROUNDS {
            wait_full(&client).await;
            let start = Instant::now();
            let mut n = 0u64;
            let mut sum = 0u64;
            while let Some(id) = stream.try_next_id() {
                sum = sum.wrapping_add(id);
                n += 1;
            }
            busy += start.elapsed();
            black_box(sum);
            ids += n;
        }
        report("IdStream::try_next_id (local chunk)", ids, busy);

        // The shared path: every call takes the stream's lock.
        let (mut ids, mut busy) = (0u64, Duration::ZERO);
        for _ in 0..ROUNDS / 10 {
            wait_full(&client).await;
            let start = Instant::now();
            let target = client.stats().buffered.min(REFILL);
            for _ in 0..target {
                black_box(client.next_id().await.unwrap());
            }
            busy += start.elapsed();
            ids += target as u64;
        }
        report("IdClient::next_id (shared buffer)", ids, busy);
    });
}

fn report(what: &str, ids: u64, busy: Duration) {
    let rate = ids as f64 / busy.as_secs_f64();
    println!(
        "{what:<40} {:>10.1} M ids/s  ({ids} ids in {:.1} ms)",
        rate / 1e6,
        busy.as_secs_f64() * 1e3
    );
}
