//! A simulated node host: the real node (`AppState` in cluster mode and its HTTP router) and
//! a client load that asks it for ids and hands every acknowledged batch to the checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use shardflake::FastRng;
use shardflake_node::{AppState, ClockPolicyKind, ClusterHooks, NodeConfig, NodeOptions};
use shardflake_proto::node::{parse_ids_binary, CONTENT_TYPE_BINARY};
use tower::Service;

use crate::check::{Checker, StoreNow};
use crate::clock::HostClock;
use crate::net::{MessageFaults, SimTransport};
use crate::trace::{now_ms, Trace};
use crate::view::StoreView;

/// Largest batch the load asks for. Never more than one tick's worth of ids: the node fills
/// larger batches on the blocking pool, a real thread outside the simulation's control.
pub(crate) const BATCH_MAX: u64 = 400;
/// Longest pause between two requests of the load (ms).
pub(crate) const LOAD_PAUSE_MS_MAX: u64 = 20;

/// What survives a node's process: nothing, but for a pause, when the frozen process resumes
/// with the state it had.
#[derive(Default)]
pub(crate) struct NodeSlot {
    /// The node's `--clock-wait-max` (ms) if its clock policy is `wait` (what the plan steps
    /// its clock back by at the end of a lease).
    pub(crate) clock_wait_max_ms: Option<u64>,
    /// When the node's last acknowledged acquire or renewal was sent (simulated ms).
    pub(crate) lease_sent_ms: Arc<AtomicU64>,
    /// While set, the answers to the node's lease renewals are lost.
    pub(crate) lose_renewal_answers: Arc<std::sync::atomic::AtomicBool>,
    running: Mutex<Option<AppState>>,
    /// A paused process's state and how long it serves on resuming before its keeper runs.
    frozen: Mutex<Option<(AppState, u64)>>,
    incarnation: AtomicU64,
    faults: Arc<Mutex<MessageFaults>>,
    /// A frozen host (SIGSTOP) serves nothing until this simulated time (ms).
    frozen_until_ms: AtomicU64,
    /// SIGTERM: the process shuts down cleanly (its lease released, its namespace blocks
    /// given back) at the load's next turn.
    stop: std::sync::atomic::AtomicBool,
}

impl NodeSlot {
    /// The slot of a node whose `--clock-wait-max` is `clock_wait_max_ms` (`None`: another
    /// clock policy).
    pub(crate) fn new(clock_wait_max_ms: Option<u64>) -> Self {
        Self {
            clock_wait_max_ms,
            ..Self::default()
        }
    }

    /// `kill -9`: the process's state is gone.
    pub(crate) fn forget(&self) {
        self.running.lock().expect("slot").take();
        self.frozen.lock().expect("slot").take();
    }

    /// `SIGSTOP`: the state is kept; on resuming, requests are served from it for
    /// `resume_window_ms` before the lease keeper runs again.
    pub(crate) fn freeze(&self, resume_window_ms: u64) {
        let state = self.running.lock().expect("slot").take();
        *self.frozen.lock().expect("slot") = state.map(|s| (s, resume_window_ms));
    }

    /// `SIGSTOP` then `SIGCONT` after `for_ms`, the process kept: nothing is served until
    /// then (the driver holds the host's links meanwhile, so that requests in flight are
    /// answered after it resumes).
    pub(crate) fn freeze_for(&self, until_ms: u64) {
        self.frozen_until_ms.store(until_ms, Ordering::Relaxed);
    }

    /// `SIGTERM`: a clean shutdown at the load's next turn.
    pub(crate) fn terminate(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Forgets a SIGTERM the process did not act on (it is being replaced).
    pub(crate) fn clear_terminate(&self) {
        self.stop.store(false, Ordering::Relaxed);
    }

    /// Sets the message faults of the node's traffic to the coordinators.
    pub(crate) fn set_message_faults(&self, f: MessageFaults) {
        *self.faults.lock().expect("faults") = f;
    }
}

/// Everything a node host needs, kept across its restarts.
pub(crate) struct NodeCtx {
    pub(crate) name: String,
    /// The node's state directory, its own within the run.
    pub(crate) state_dir: std::path::PathBuf,
    pub(crate) seed: u64,
    pub(crate) standby: bool,
    pub(crate) urls: Vec<String>,
    pub(crate) token: String,
    pub(crate) ttl_ms: u64,
    pub(crate) clock_policy: ClockPolicyKind,
    /// `--clock-wait-max` (the `wait` policy's longest wait for a clock that stepped back).
    pub(crate) clock_wait_max_ms: u64,
    /// Largest batch: [`BATCH_MAX`], or one tick's worth of ids if less.
    pub(crate) batch_max: u64,
    /// Longest pause between requests (ms): shorter for narrow sequences, so that the load
    /// outruns the clock (a pause of 0 sends the next request in the same millisecond).
    pub(crate) pause_ms_max: u64,
    pub(crate) clock: Arc<HostClock>,
    pub(crate) slot: Arc<NodeSlot>,
    pub(crate) trace: Trace,
    pub(crate) checker: Arc<Mutex<Checker>>,
    pub(crate) view: Arc<StoreView>,
    /// Where the node's requests are captured for the lying client.
    pub(crate) wiretap: crate::net::Wiretap,
    /// The namespaces the load asks for values of.
    pub(crate) namespaces: Vec<String>,
    /// The layout is temporal: ids are checked against counter blocks.
    pub(crate) temporal: bool,
}

/// The port every simulated node serves its HTTP API on (namespace redirects reach it).
pub(crate) const NODE_PORT: u16 = 8080;
/// Largest batch of namespace values the load asks for.
const NS_BATCH_MAX: u64 = 50;

/// The node host's software: resume a paused process if there is one, then start a new one.
pub(crate) async fn run(ctx: Arc<NodeCtx>) -> turmoil::Result {
    let frozen = ctx.slot.frozen.lock().expect("slot").take();
    if let Some((state, window_ms)) = frozen {
        let incarnation = ctx.slot.incarnation.load(Ordering::Relaxed);
        ctx.trace.event(
            &ctx.name,
            &format!("resumed: serving from the state before the pause for {window_ms} ms"),
        );
        let deadline = now_ms() + window_ms;
        load(&ctx, &state, incarnation, None, Some(deadline)).await;
        // The resumed keeper finds its lease deadline passed: the process starts over.
        drop(state);
    }
    let incarnation = ctx.slot.incarnation.fetch_add(1, Ordering::Relaxed) + 1;
    let holder = format!("{}#{incarnation}", ctx.name);
    let options = NodeOptions {
        coordinator: Some(ctx.urls.join(",")),
        node_token: Some(ctx.token.clone()),
        standby: ctx.standby,
        clock_policy: ctx.clock_policy,
        clock_wait_max: (ctx.clock_policy == ClockPolicyKind::Wait)
            .then_some(Duration::from_millis(ctx.clock_wait_max_ms)),
        lease_ttl: Duration::from_millis(ctx.ttl_ms),
        state_dir: ctx.state_dir.clone(),
        advertise_url: Some(format!("http://{}:{NODE_PORT}", ctx.name)),
        ..NodeOptions::default()
    };
    let config = NodeConfig::from_options(&options, shardflake::Clock::now_ms(&*ctx.clock))?;
    let hooks = ClusterHooks {
        transport: Some(Arc::new(
            SimTransport::new(
                &ctx.name,
                ctx.slot.faults.clone(),
                FastRng::from_seed(ctx.seed ^ incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                ctx.trace.clone(),
            )
            .tapped(ctx.wiretap.clone())
            .noting_leases(ctx.slot.lease_sent_ms.clone())
            .losing_renewal_answers(ctx.slot.lose_renewal_answers.clone()),
        )),
        jitter_seed: Some(ctx.seed ^ incarnation),
        // Lease secrets replay with the seed too (they never reach the trace).
        secret_seed: Some(ctx.seed ^ incarnation ^ 0x5ec2_e75e_c2e7_5ec2),
        name: Some(holder.clone()),
    };
    let state = AppState::open_cluster_with(config, ctx.clock.clone(), hooks)?;
    ctx.trace
        .event(&ctx.name, &format!("process {incarnation} started"));
    *ctx.slot.running.lock().expect("slot") = Some(state.clone());
    // The node's API over the simulated network, for the other nodes' redirected requests.
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
    let app = shardflake_node::app(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(crate::net::SimListener(listener), app).await;
    });
    load(&ctx, &state, incarnation, Some(&holder), None).await;
    Ok(())
}

/// Asks `state` for ids until `until_ms` (forever with `None`), checking every answer;
/// `holder` is the process's lease holder name (`None`: resumed from a pause).
async fn load(
    ctx: &NodeCtx,
    state: &AppState,
    incarnation: u64,
    holder: Option<&str>,
    until_ms: Option<u64>,
) {
    let mut router = shardflake_node::app(state.clone());
    let mut rng = FastRng::from_seed(ctx.seed ^ 0x5eed ^ (incarnation << 20) ^ now_ms());
    let mut last_code = String::new();
    while until_ms.is_none_or(|u| now_ms() < u) {
        let frozen_until = ctx.slot.frozen_until_ms.load(Ordering::Relaxed);
        if now_ms() < frozen_until {
            tokio::time::sleep(Duration::from_millis(frozen_until - now_ms())).await;
            continue;
        }
        // A pause of 0 sends the next request within the same millisecond.
        let pause = rng.next_u64() % (ctx.pause_ms_max + 1);
        if pause == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        if holder.is_some() && ctx.slot.stop.swap(false, Ordering::Relaxed) {
            ctx.trace.event(&ctx.name, "SIGTERM: shutting down cleanly");
            let outcome = state.shutdown().await;
            ctx.trace.event(
                &ctx.name,
                &format!(
                    "shut down: {}",
                    if outcome.is_ok() { "ok" } else { "failed" }
                ),
            );
            // The process has exited; the driver starts it again.
            std::future::pending::<()>().await;
        }
        let ns = (!ctx.namespaces.is_empty() && rng.next_u64().is_multiple_of(3)).then(|| {
            ctx.namespaces[(rng.next_u64() % ctx.namespaces.len() as u64) as usize].clone()
        });
        // The binary representation: the load checks ids, not the JSON encoder, and decoding
        // millions of ids from JSON per seed would be most of the simulation's time.
        let path = match &ns {
            Some(name) => format!("/ns/{name}/ids?count={}", 1 + rng.next_u64() % NS_BATCH_MAX),
            None => format!("/ids?count={}", 1 + rng.next_u64() % ctx.batch_max),
        };
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, CONTENT_TYPE_BINARY)
            .body(Body::empty())
            .expect("a valid request");
        let response = match router.call(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let mut status = response.status();
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let mut body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let mut served_by = ctx.name.clone();
        if let (http::StatusCode::TEMPORARY_REDIRECT, Some(location)) = (status, location) {
            // Another node serves the namespace: the same request there, over the network.
            ctx.checker.lock().expect("checker").tally("ns_redirect");
            served_by = location.clone();
            let request = http::Request::get(location.as_str())
                .header(http::header::ACCEPT, CONTENT_TYPE_BINARY)
                .body(Vec::new())
                .expect("a valid request");
            match crate::net::exchange(request).await {
                Ok(r) => {
                    status = r.status();
                    body = r.into_body().into();
                }
                Err(_) => status = http::StatusCode::BAD_GATEWAY,
            }
        }
        if let Some(name) = &ns {
            if status != http::StatusCode::OK {
                ctx.checker.lock().expect("checker").refused();
                continue;
            }
            match parse_ids_binary(&body) {
                Ok(values) => {
                    ctx.trace.ack(
                        &served_by,
                        values.len(),
                        values.first().copied().unwrap_or_default(),
                    );
                    ctx.checker
                        .lock()
                        .expect("checker")
                        .ack_ns(&served_by, name, values);
                }
                Err(e) => ctx.checker.lock().expect("checker").violation(format!(
                    "{served_by}: undecodable /ns/{name}/ids answer: {e}"
                )),
            }
            continue;
        }
        if status != http::StatusCode::OK {
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                .unwrap_or_else(|| status.to_string());
            if code != last_code {
                ctx.trace.event(&ctx.name, &format!("refusing: {code}"));
                if code.starts_with("store_") {
                    // A restore noticed: counted once per change of the node's state.
                    ctx.checker
                        .lock()
                        .expect("checker")
                        .tally(&format!("refused_{code}"));
                }
                last_code = code;
            }
            ctx.checker.lock().expect("checker").refused();
            continue;
        }
        let ids = match parse_ids_binary(&body) {
            Ok(ids) => ids,
            Err(e) => {
                ctx.checker
                    .lock()
                    .expect("checker")
                    .violation(format!("{}: undecodable /ids answer: {e}", ctx.name));
                continue;
            }
        };
        if last_code != "ok" {
            ctx.trace.event(&ctx.name, "serving");
            last_code = "ok".into();
        }
        // The store as it is now: every id must be at or below a bound already durable.
        let hosts = ctx.view.hosts().await;
        let grants = if ctx.temporal {
            Some(ctx.view.grants().await)
        } else {
            None
        };
        let at = now_ms();
        ctx.trace.ack(
            &ctx.name,
            ids.len(),
            ids.first().copied().unwrap_or_default(),
        );
        ctx.checker.lock().expect("checker").ack(
            &ctx.name,
            incarnation,
            ids,
            at,
            holder,
            StoreNow {
                hosts: &hosts,
                grants: grants.as_deref(),
            },
        );
    }
}
