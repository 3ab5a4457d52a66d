//! Namespaces on a cluster node: dense per-name counters served from blocks the coordinator
//! grants (`GET /ns/{name}/id`, `GET /ns/{name}/ids`).
//!
//! Each namespace the node serves is a [`Stream`] with a current block and, fetched in the
//! background once the current one has [`SEGMENT_PREFETCH_FRACTION`] left, the next one
//! (double buffering): in steady state a request takes values from memory and never waits on
//! the network. Blocks are used in the order they were granted and every block lies above
//! the node's earlier ones, so the node's values strictly increase; blocks never overlap
//! across nodes, so values are unique per namespace.
//!
//! Consumption since the last report goes to the coordinator with the next renewal or block
//! request, whichever comes first (each value counted once), and the coordinator sizes
//! blocks from its forecast of it. At a clean shutdown the node stops taking values, then
//! gives back the unused tail of its newest block; the coordinator takes it only if no
//! later block was granted meanwhile.
//!
//! A background task keeps the coordinators' routing table; a node that is not among a
//! namespace's serving nodes redirects (`307`) to the first of them in rendezvous order,
//! unless the request was redirected already (`hop=1`), so a disagreement between two
//! nodes' tables costs order, never a loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use shardflake::SEGMENT_PREFETCH_FRACTION;
use shardflake_client::{ClientError, CoordinatorClient, Retry};
use shardflake_proto::coord::LeaseSecret;
use shardflake_proto::ns::{
    rendezvous_order, NsBlockGrant, NsBlockRequest, NsHeld, NsReturnRequest, NsUsage, RoutingTable,
};
use shardflake_proto::{ApiError, ErrorCode};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

/// The longest a request waits for a namespace's block (the first one, or after a burst
/// drained both buffers) before it is answered `503 no_namespace_block`.
pub const NS_BLOCK_WAIT_MS: u64 = 2_000;
/// How long an unknown namespace is remembered before the coordinator is asked again.
pub const NS_UNKNOWN_TTL_MS: u64 = 1_000;
/// How often the routing table is refreshed.
pub const ROUTING_REFRESH_MS: u64 = 2_000;
/// How long a clean shutdown waits for a block fetch in flight before it gives back the
/// unused values (ms).
pub const GIVE_BACK_WAIT_MS: u64 = 1_000;
/// A namespace that issued nothing is reported at most this often (ms): a renewal carries
/// the namespaces in use, and the idle ones now and then, so that their forecasts decay.
pub const IDLE_REPORT_EVERY_MS: u64 = 10_000;
/// Most namespaces one node serves at once (the protocol's one limit,
/// [`shardflake_proto::ns::NS_PER_NODE_MAX`]: a renewal reports on each of them).
pub const NS_STREAMS_MAX: usize = shardflake_proto::ns::NS_PER_NODE_MAX;

/// A block being issued: `next`, `next + step`, .. below `end`, granted under the lease
/// of fencing token `token`.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u64,
    end: u64,
    step: u64,
    count: u64,
    token: u64,
}

impl Cursor {
    fn of(g: &NsBlockGrant, token: u64) -> Self {
        Self {
            next: g.start,
            end: g.end(),
            step: g.step.max(1),
            count: g.count,
            token,
        }
    }

    fn left(&self) -> u64 {
        self.end.saturating_sub(self.next).div_ceil(self.step)
    }
}

/// A namespace's blocks and what is owed to the coordinator.
struct Blocks {
    current: Option<Cursor>,
    next: Option<Cursor>,
    /// End of the newest block held (the `after` of the next request).
    newest_end: u64,
    fetching: bool,
    /// No fetch before this (backoff after a failure, or an unknown namespace).
    quiet_until: Option<Instant>,
    /// Why the last fetch failed, for the answer to a waiting request.
    last_error: Option<(ErrorCode, String)>,
    /// Values issued since the last report, and since when.
    used: u64,
    since: Instant,
    retry: Retry,
    /// Given back at shutdown: nothing more is taken.
    closed: bool,
}

/// One namespace on this node.
pub(crate) struct Stream {
    name: String,
    blocks: Mutex<Blocks>,
    /// Woken when a fetch ends (a block installed, or a failure).
    changed: Notify,
}

/// A request's refusal, or the ids.
type Taken = Result<Vec<u64>, ApiError>;

impl Stream {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            blocks: Mutex::new(Blocks {
                current: None,
                next: None,
                newest_end: 0,
                fetching: false,
                quiet_until: None,
                last_error: None,
                used: 0,
                since: Instant::now(),
                retry: Retry::new(
                    "fetching a namespace block",
                    Duration::from_millis(50),
                    Duration::from_millis(2_000),
                ),
                closed: false,
            }),
            changed: Notify::new(),
        }
    }

    /// Takes up to `want - out.len()` values into `out` from the blocks granted under the
    /// lease of token `token` (the node's lease now); says whether a fetch should start.
    fn take(&self, out: &mut Vec<u64>, want: usize, token: u64) -> Result<bool, ApiError> {
        let mut b = self.blocks.lock().expect("namespace mutex");
        if b.closed {
            return Err(
                ApiError::new(ErrorCode::ShuttingDown, "the node is shutting down")
                    .retry_after_ms(Some(1_000)),
            );
        }
        // The blocks of an earlier lease are dropped, never served: a store restored from a
        // backup may have forgotten them, and its repair raises each namespace above the
        // blocks live leases presented, not above those of a lease that ended.
        if b.current.is_some_and(|c| c.token != token) {
            b.current = None;
        }
        if b.next.is_some_and(|c| c.token != token) {
            b.next = None;
        }
        let before = out.len();
        while out.len() < want {
            let Some(c) = b.current.as_mut().filter(|c| c.next < c.end) else {
                match b.next.take() {
                    Some(n) => {
                        b.current = Some(n);
                        continue;
                    }
                    None => break,
                }
            };
            let k = (want - out.len()).min(usize::try_from(c.left()).unwrap_or(usize::MAX));
            let (mut v, step) = (c.next, c.step);
            for _ in 0..k {
                out.push(v);
                v = v.saturating_add(step);
            }
            c.next = if v >= c.end { c.end } else { v };
        }
        b.used += (out.len() - before) as u64;
        let quiet = b.quiet_until.is_some_and(|t| Instant::now() < t);
        if out.len() < want && quiet && b.current.is_none() && b.next.is_none() {
            if let Some((code, message)) = &b.last_error {
                return Err(refusal(&self.name, Some((*code, message))));
            }
        }
        let low = match (&b.current, &b.next) {
            (_, Some(_)) => false,
            (None, None) => true,
            (Some(c), None) => (c.left() as f64) <= SEGMENT_PREFETCH_FRACTION * c.count as f64,
        };
        let start = low && !b.fetching && !quiet;
        if start {
            b.fetching = true;
        }
        Ok(start)
    }

    /// The refusal for a request that waited for a block in vain.
    fn refusal(&self) -> ApiError {
        let b = self.blocks.lock().expect("namespace mutex");
        refusal(
            &self.name,
            b.last_error.as_ref().map(|(c, m)| (*c, m.as_str())),
        )
    }

    /// Usage since the last report, reset. Unless `always` (a block request reports every
    /// time), `None` for a namespace that issued nothing since its last report less than
    /// [`IDLE_REPORT_EVERY_MS`] ago: its idle time is reported later, in one report.
    fn drain_usage(b: &mut Blocks, always: bool) -> Option<(u64, u64)> {
        let now = Instant::now();
        let over = now.duration_since(b.since).as_millis() as u64;
        if !always && b.used == 0 && over < IDLE_REPORT_EVERY_MS {
            return None;
        }
        let used = std::mem::take(&mut b.used);
        b.since = now;
        Some((used, over))
    }
}

/// The answer to a request that found no block, from the last fetch's failure.
fn refusal(name: &str, last_error: Option<(ErrorCode, &str)>) -> ApiError {
    match last_error {
        Some((ErrorCode::UnknownNamespace, m)) => ApiError::new(ErrorCode::UnknownNamespace, m),
        Some((code @ (ErrorCode::ShuttingDown | ErrorCode::LeaseLost), m)) => {
            ApiError::new(code, m).retry_after_ms(Some(1_000))
        }
        Some((_, m)) => ApiError::new(
            ErrorCode::NoNamespaceBlock,
            format!("no block of namespace `{name}` yet: {m}"),
        )
        .retry_after_ms(Some(1_000)),
        None => ApiError::new(
            ErrorCode::NoNamespaceBlock,
            format!("no block of namespace `{name}` arrived within {NS_BLOCK_WAIT_MS} ms"),
        )
        .retry_after_ms(Some(1_000)),
    }
}

/// The lease a namespace request runs under.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRef {
    pub(crate) host_id: u32,
    pub(crate) token: u64,
    pub(crate) secret: LeaseSecret,
}

/// Every namespace this node serves, the coordinators, and the routing table.
pub(crate) struct Namespaces {
    client: Arc<CoordinatorClient>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    routing: ArcSwap<RoutingTable>,
    /// The task keeping `routing` fresh: started by the first namespace request (a node
    /// that serves no namespace never asks), stopped at shutdown.
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
    /// Block fetches in flight at most ([`NS_FETCHES_MAX`]): a node serving a thousand
    /// namespaces that all want their next block at once must not bury its own lease
    /// renewal, nor the coordinator, under a thousand requests.
    fetches: tokio::sync::Semaphore,
}

/// Namespace block fetches one node has in flight at most; the others wait their turn.
pub const NS_FETCHES_MAX: usize = 16;

/// Where a namespace request goes.
pub(crate) enum Route {
    /// Serve it here.
    Here,
    /// Redirect to this node URL.
    There(String),
}

impl Namespaces {
    pub(crate) fn new(client: Arc<CoordinatorClient>) -> Arc<Self> {
        Arc::new(Self {
            client,
            streams: RwLock::new(BTreeMap::new()),
            routing: ArcSwap::from_pointee(RoutingTable::default()),
            refresher: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            fetches: tokio::sync::Semaphore::new(NS_FETCHES_MAX),
        })
    }

    /// Starts the routing table's refresher once.
    pub(crate) fn start_routing(self: &Arc<Self>) {
        let mut r = self.refresher.lock().expect("refresher mutex");
        if r.is_none() && !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            *r = Some(tokio::spawn(self.clone().refresh_routing()));
        }
    }

    fn stream(&self, name: &str) -> Result<Arc<Stream>, ApiError> {
        if let Some(s) = self.streams.read().expect("streams lock").get(name) {
            return Ok(s.clone());
        }
        let mut w = self.streams.write().expect("streams lock");
        if w.len() >= NS_STREAMS_MAX && !w.contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("this node serves {NS_STREAMS_MAX} namespaces already, the most it serves"),
            ));
        }
        Ok(w.entry(name.to_string())
            .or_insert_with(|| Arc::new(Stream::new(name)))
            .clone())
    }

    /// Where a request for `name` goes: here, unless the routing table names serving nodes
    /// and this node (`me`) is not one of them.
    pub(crate) fn route(&self, name: &str, me: Option<u32>, hopped: bool) -> Route {
        let table = self.routing.load();
        let Some(ns) = table.namespaces.iter().find(|n| n.name == name) else {
            return Route::Here;
        };
        if hopped || ns.serving.is_empty() || me.is_some_and(|h| ns.serving.contains(&u64::from(h)))
        {
            return Route::Here;
        }
        let first = rendezvous_order(name, &ns.serving)[0];
        match table.nodes.iter().find(|n| n.host_id == first) {
            Some(n) => Route::There(n.url.clone()),
            None => Route::Here,
        }
    }

    /// `count` values of namespace `name`, increasing. Waits for blocks at most
    /// [`NS_BLOCK_WAIT_MS`] (only when both buffers are empty: the first request, or a burst).
    pub(crate) async fn take(
        self: &Arc<Self>,
        name: &str,
        count: usize,
        lease: impl Fn() -> Option<LeaseRef> + Send + Sync + Clone + 'static,
    ) -> Taken {
        let stream = self.stream(name)?;
        // Values come only from blocks of the lease the node holds now.
        let Some(token) = lease().map(|l| l.token) else {
            return Err(ApiError::new(
                ErrorCode::LeaseLost,
                format!("namespace `{name}`: the node holds no lease; it serves values again once it does"),
            )
            .retry_after_ms(Some(1_000)));
        };
        let mut out = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_millis(NS_BLOCK_WAIT_MS);
        loop {
            let changed = stream.changed.notified();
            let fetch = stream.take(&mut out, count, token)?;
            if fetch {
                tokio::spawn(fetch_block(self.clone(), stream.clone(), lease.clone()));
            }
            if out.len() == count {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                // The values taken so far are never handed out: wasted, never repeated.
                return Err(stream.refusal());
            }
            let b = stream.blocks.lock().expect("namespace mutex");
            if let Some((ErrorCode::UnknownNamespace, _)) = &b.last_error {
                drop(b);
                return Err(stream.refusal());
            }
        }
    }

    /// Each namespace's consumption since its last report, for a renewal: the namespaces in
    /// use, and an idle one at most every [`IDLE_REPORT_EVERY_MS`].
    pub(crate) fn usage(&self) -> Vec<NsUsage> {
        let streams = self.streams.read().expect("streams lock");
        streams
            .values()
            .filter_map(|s| {
                let mut b = s.blocks.lock().expect("namespace mutex");
                let (used, over_ms) = Stream::drain_usage(&mut b, false)?;
                Some(NsUsage {
                    name: s.name.clone(),
                    used,
                    over_ms,
                })
            })
            .collect()
    }

    /// The newest block held of every namespace that has one (at most
    /// [`shardflake_proto::ns::NS_PER_NODE_MAX`]), for a renewal that follows a failed one.
    pub(crate) fn held(&self) -> Vec<NsHeld> {
        let streams = self.streams.read().expect("streams lock");
        streams
            .values()
            .filter_map(|s| {
                let end = s.blocks.lock().expect("namespace mutex").newest_end;
                (end > 0).then(|| NsHeld {
                    name: s.name.clone(),
                    end,
                })
            })
            .take(shardflake_proto::ns::NS_PER_NODE_MAX)
            .collect()
    }

    /// Stops every namespace and gives back the unused tail of its newest block under
    /// `lease` (clean shutdown).
    pub(crate) async fn give_back(&self, lease: Option<LeaseRef>) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(r) = self.refresher.lock().expect("refresher mutex").take() {
            r.abort();
        }
        let streams: Vec<Arc<Stream>> = self
            .streams
            .read()
            .expect("streams lock")
            .values()
            .cloned()
            .collect();
        for s in streams {
            // A block asked for just before the shutdown is the newest the coordinator
            // granted: wait (bounded) for it, or the return would not be taken.
            let deadline = Instant::now() + Duration::from_millis(GIVE_BACK_WAIT_MS);
            let tail = loop {
                let changed = s.changed.notified();
                {
                    let mut b = s.blocks.lock().expect("namespace mutex");
                    b.closed = true;
                    if !b.fetching || Instant::now() >= deadline {
                        let (cur, next) = (b.current.take(), b.next.take());
                        // Only the newest block can be given back: the coordinator takes
                        // nothing from an earlier one (the values of the current block
                        // left unissued while a next block waits are wasted).
                        let newest = match (cur, next) {
                            (_, Some(n)) => Some(n),
                            (Some(c), None) if c.next < c.end => Some(c),
                            _ => None,
                        };
                        // A block of an earlier lease is not the lease's to give back.
                        break newest
                            .filter(|c| lease.as_ref().is_some_and(|l| l.token == c.token))
                            .map(|c| (c.end, c.next));
                    }
                }
                let _ = tokio::time::timeout_at(deadline, changed).await;
            };
            let (Some((block_end, unused_from)), Some(l)) = (tail, lease.as_ref()) else {
                continue;
            };
            let req = NsReturnRequest {
                host_id: u64::from(l.host_id),
                token: l.token,
                secret: l.secret.clone(),
                block_end,
                unused_from,
            };
            match self.client.ns_return(&s.name, &req).await {
                Ok(r) => {
                    info!(namespace = %s.name, returned = r.returned, "namespace: unused values given back")
                }
                Err(e) => {
                    warn!(namespace = %s.name, error = %e, "namespace: could not give unused values back; they stay unused")
                }
            }
        }
    }

    /// Keeps the routing table fresh until the task is aborted; a failing coordinator backs
    /// the loop off and is logged once per change of state.
    pub(crate) async fn refresh_routing(self: Arc<Self>) {
        let base = Duration::from_millis(ROUTING_REFRESH_MS);
        let mut retry = Retry::new("fetching the routing table", base, Duration::from_secs(30));
        loop {
            let pause = match self.client.routing().await {
                Ok(t) => {
                    retry.succeeded();
                    self.routing.store(Arc::new(t));
                    base
                }
                Err(e) => retry.failed(e.kind(), &e),
            };
            tokio::time::sleep(pause).await;
        }
    }
}

/// Fetches the next block of `stream` and installs it.
async fn fetch_block(
    ns: Arc<Namespaces>,
    stream: Arc<Stream>,
    lease: impl Fn() -> Option<LeaseRef>,
) {
    // Never closed: a permit always comes.
    let _turn = ns.fetches.acquire().await;
    let mut token = 0;
    let outcome = match lease() {
        None => Err((
            ErrorCode::LeaseLost,
            "the node holds no lease; it asks for blocks once it does".to_string(),
        )),
        Some(l) => {
            token = l.token;
            let req = {
                let mut b = stream.blocks.lock().expect("namespace mutex");
                let (used, over_ms) = Stream::drain_usage(&mut b, true).unwrap_or_default();
                NsBlockRequest {
                    host_id: u64::from(l.host_id),
                    token: l.token,
                    secret: l.secret.clone(),
                    after: b.newest_end,
                    used,
                    over_ms,
                }
            };
            ns.client
                .ns_block(&stream.name, &req)
                .await
                .map_err(|e| match &e {
                    ClientError::Api { code, message, .. } => (*code, message.clone()),
                    other => (ErrorCode::StoreUnavailable, other.to_string()),
                })
        }
    };
    let mut forget = false;
    {
        let mut b = stream.blocks.lock().expect("namespace mutex");
        b.fetching = false;
        match outcome {
            // Installed even when the node is stopping: the return at shutdown counts it.
            Ok(g) if g.end() > b.newest_end && g.count > 0 => {
                b.newest_end = g.end();
                let c = Cursor::of(&g, token);
                if b.current.is_some_and(|c| c.next < c.end) {
                    b.next = Some(c);
                } else {
                    b.current = Some(c);
                }
                b.last_error = None;
                b.quiet_until = None;
                b.retry.succeeded();
            }
            Ok(_) => {}
            Err((code, message)) => {
                let pause = if code == ErrorCode::UnknownNamespace {
                    forget = true;
                    Duration::from_millis(NS_UNKNOWN_TTL_MS)
                } else {
                    b.retry.failed(code.as_str(), &message)
                };
                b.quiet_until = Some(Instant::now() + pause);
                b.last_error = Some((code, message));
            }
        }
    }
    if forget {
        // Forgotten at once (after the stream's lock is released: the table's lock comes
        // first everywhere), so that names nobody created fill no table; the requests
        // waiting on it still see the answer.
        ns.streams
            .write()
            .expect("streams lock")
            .remove(&stream.name);
    }
    stream.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_with(start: u64, count: u64, token: u64) -> Stream {
        let s = Stream::new("orders");
        let g = NsBlockGrant {
            start,
            count,
            step: 1,
        };
        {
            let mut b = s.blocks.lock().unwrap();
            b.current = Some(Cursor::of(&g, token));
            b.newest_end = g.end();
        }
        s
    }

    #[test]
    fn a_block_of_an_earlier_lease_is_never_served() {
        let s = stream_with(100, 10, 7);
        let mut out = Vec::new();
        // Under the lease that was granted the block: its values.
        s.take(&mut out, 3, 7).unwrap();
        assert_eq!(out, vec![100, 101, 102]);
        // Under a later lease: the block is dropped (a restored store may have granted its
        // values again), and a fetch starts.
        let mut out = Vec::new();
        let fetch = s.take(&mut out, 3, 8).unwrap();
        assert!(out.is_empty(), "served {out:?} from another lease's block");
        assert!(fetch, "a node with no block of its lease asks for one");
        // The old lease's block does not come back either.
        let mut out = Vec::new();
        s.take(&mut out, 3, 7).unwrap();
        assert!(out.is_empty(), "served {out:?} from a dropped block");
    }
}
