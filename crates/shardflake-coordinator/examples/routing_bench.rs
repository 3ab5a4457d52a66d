//! What `GET /v1/routing` and the namespace assignment cost on an idle cluster of 10, 100
//! and 1,000 simulated hosts and 10,000 namespaces, before and after the routing table was
//! kept in memory: the time of one call and the store reads per second.
//!
//! * **Before** every call built the table from the store: its latency is that of a build
//!   ([`Coordinator::rebuild_routing`], one scan of the hosts, their heartbeats and the
//!   namespaces). Its reads per second are those of the code it replaced: each of the N
//!   nodes asking every 2 s read the store twice (hosts, namespaces) and every coordinator
//!   assigned every second with two scans and two reads per namespace, so N + 2 + 2 x
//!   namespaces per second (the issue that retired it measured ~20,000 at 10,000
//!   namespaces).
//! * **After** a call is answered from memory ([`Coordinator::routed`]), measured through
//!   the HTTP router (authentication and all, without the network), with and without the
//!   `If-None-Match` of a caller that holds the table; the reads per second
//!   are counted with the store's read counter over a simulated idle minute in which every
//!   node asks every 2 s and the housekeeping runs every second.
//!
//! `cargo run --release -p shardflake-coordinator --example routing_bench [-- NAMESPACES]`

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use shardflake::Layout;
use shardflake_coordinator::http::{app, AppState, Auth, RateLimits};
use shardflake_coordinator::store::{KvStore, MemStore};
use shardflake_coordinator::{Coordinator, CoordinatorConfig, Housekeeper, ManualTime};
use shardflake_proto::auth::Scope;
use shardflake_proto::coord::{AcquireRequest, LeaseSecret};
use shardflake_proto::ns::NamespaceSpec;
use tower::ServiceExt;

const T0: u64 = 1_800_000_000_000;
/// How often each node asks for the routing table (ms).
const ROUTING_EVERY_MS: u64 = 2_000;

fn main() {
    let namespaces: usize = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("NAMESPACES: a whole number"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(namespaces));
}

async fn run(namespaces: usize) {
    let store = Arc::new(MemStore::new());
    let time = ManualTime::new(T0);
    let mut config = CoordinatorConfig::new(Layout::preset("twitter").unwrap());
    config.pool_size = 1_024;
    let c = Arc::new(
        Coordinator::open(store.clone(), Arc::new(time.clone()), config)
            .await
            .unwrap(),
    );
    let auth = Auth::tokens(&[(Scope::Read, "bench-read-token-0123456789")]).unwrap();
    // No rate limit (0): the bench measures the call, not the limiter's answer.
    let limits = RateLimits {
        read_per_s: 0,
        ..RateLimits::default()
    };
    let app = app(AppState::with_limits(c.clone(), auth, limits));
    let started = Instant::now();
    for n in 0..namespaces {
        c.put_namespace(&format!("ns-{n:05}"), &NamespaceSpec::default())
            .await
            .unwrap();
    }
    eprintln!(
        "{namespaces} namespaces created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("Idle cluster, {namespaces} namespaces, in-memory store (release build):");
    println!();
    println!("| hosts | before: a call (build) | before: reads/s | after: a call over HTTP | after: a call, 304 | after: reads/s | body |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut hosts = 0u32;
    let mut keeper = Housekeeper::new(&c);
    for target in [10u32, 100, 1_000] {
        while hosts < target {
            c.acquire(&AcquireRequest {
                name: format!("node-{hosts}"),
                secret: LeaseSecret::from_bytes([7; 16]),
                // Longer than the measurement: no renewal is due while the cluster idles.
                ttl_ms: Some(600_000),
                url: Some(format!("http://node-{hosts}.test:8080")),
                ..Default::default()
            })
            .await
            .unwrap();
            hosts += 1;
        }
        for _ in 0..3 {
            keeper.pass(&c).await.unwrap();
            c.routing().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(
                shardflake_coordinator::EPOCH_BUMP_DELAY_MS * 3,
            ))
            .await;
            time.advance_ms(1_000);
        }
        // Before: a build per call.
        let builds = 20;
        let t = Instant::now();
        for _ in 0..builds {
            c.rebuild_routing().await.unwrap();
        }
        let build = t.elapsed() / builds;
        let before_reads = u64::from(target) * 1_000 / ROUTING_EVERY_MS + 2 + 2 * namespaces as u64;
        // After: from memory, through the router (authentication, the generation stamp,
        // the body), without and with the tag the caller holds.
        let get = |tag: Option<&str>| {
            let mut r = Request::builder()
                .uri("/v1/routing")
                .header("authorization", "Bearer bench-read-token-0123456789");
            if let Some(t) = tag {
                r = r.header("if-none-match", t);
            }
            app.clone().oneshot(r.body(Body::empty()).unwrap())
        };
        let first = get(None).await.unwrap();
        let tag = first.headers()["etag"].to_str().unwrap().to_string();
        let body = first.into_body().collect().await.unwrap().to_bytes().len();
        let calls = 2_000u32;
        let t = Instant::now();
        for _ in 0..calls {
            let r = get(None).await.unwrap();
            r.into_body().collect().await.unwrap();
        }
        let full = t.elapsed() / calls;
        let t = Instant::now();
        for _ in 0..calls {
            let r = get(Some(&tag)).await.unwrap();
            assert_eq!(r.status(), 304);
        }
        let not_modified = t.elapsed() / calls;
        let reads = idle_minute(&c, &time, &mut keeper, store.as_ref(), target).await;
        println!(
            "| {target} | {:.2} ms | {before_reads} | {:.1} µs | {:.1} µs | {:.1} | {:.0} KB |",
            build.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e6,
            not_modified.as_secs_f64() * 1e6,
            reads as f64 / 60.0,
            body as f64 / 1e3,
        );
    }
}

/// Store reads in a simulated idle minute: each of `hosts` nodes asks for the table every
/// 2 s, the housekeeping runs every second.
async fn idle_minute(
    c: &Coordinator,
    time: &ManualTime,
    keeper: &mut Housekeeper,
    store: &dyn KvStore,
    hosts: u32,
) -> u64 {
    let before = store.stats().reads;
    for step in 0..600u64 {
        time.advance_ms(100);
        let now = step * 100;
        if now.is_multiple_of(1_000) {
            keeper.pass(c).await.unwrap();
        }
        for h in 0..u64::from(hosts) {
            if (now + h * ROUTING_EVERY_MS / u64::from(hosts)) % ROUTING_EVERY_MS < 100 {
                c.routed().await.unwrap();
            }
        }
    }
    store.stats().reads - before
}
