//! A stream's shared state, the task that refills it ahead of need, and [`IdStream`], the
//! caller-owned fast path.
//!
//! Callers take ids from the shared [`Buffer`] under a mutex. The refill task is woken when a
//! take leaves less than one forecast refill buffered (or a caller waits), asks the router for
//! the next refill, and adds what comes back; it is the only code that waits on the network.
//! Failures of a whole round (every node) are recorded with the time the round started, so a
//! waiting caller sees them only if they happened during its own call, and the task backs off
//! on the [`Retry`] schedule.
//!
//! [`IdStream`] moves ids out of the shared buffer a chunk at a time into a slice it owns, so
//! that its `try_next_id` is an index increment and one relaxed atomic load (the highest
//! expired batch): no lock, no clock read, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::buffer::{Buffer, Prefetch};
use super::route::{stream_name, Router};
use super::{IdClient, IdError};
use crate::Retry;

/// Backoff of a stream whose every node failed.
const ROUND_RETRY_MIN: Duration = Duration::from_millis(50);
const ROUND_RETRY_MAX: Duration = Duration::from_secs(2);
/// Largest chunk an [`IdStream`] moves out of the shared buffer at once.
pub const LOCAL_CHUNK_MAX: usize = 4_096;
/// An [`IdStream`] whose chunk lasted less than this doubles its next one; one that lasted
/// more than ten times this halves it. A chunk thus holds about this much of the caller's use,
/// so few ids sit outside the shared buffer (where expiry and the forecast see them).
const LOCAL_CHUNK_LASTS: Duration = Duration::from_millis(1);

/// A failure of the last refill.
#[derive(Debug, Clone)]
struct Failure {
    /// When the failed round started.
    at: Instant,
    error: IdError,
}

#[derive(Debug)]
struct State {
    buffer: Buffer,
    failure: Option<Failure>,
}

/// One stream: the default one or a namespace.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The namespace, `None` for plain ids.
    pub ns: Option<String>,
    state: Mutex<State>,
    /// The highest expired batch sequence number, for [`IdStream`]'s lock-free check.
    expired_through: AtomicU64,
    /// Wakes the refill task.
    want: Notify,
    /// Bumped whenever ids arrive or a refill fails; waiting callers watch it.
    events: watch::Sender<u64>,
}

/// Removes a waiting caller's demand however its call ends (also when its future is dropped).
struct Demand<'a> {
    stream: &'a Stream,
    n: usize,
}

impl Drop for Demand<'_> {
    fn drop(&mut self) {
        let mut s = self.stream.lock();
        s.buffer.demand = s.buffer.demand.saturating_sub(self.n);
    }
}

impl Stream {
    pub fn new(ns: Option<String>, prefetch: Prefetch) -> Self {
        Self {
            ns,
            state: Mutex::new(State {
                buffer: Buffer::new(prefetch, Instant::now()),
                failure: None,
            }),
            expired_through: AtomicU64::new(0),
            want: Notify::new(),
            events: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("poisoned")
    }

    /// Ids buffered, the forecast rate (ids/s) and ids dropped by expiry.
    pub fn stats(&self) -> (usize, f64, u64) {
        let s = self.lock();
        (
            s.buffer.buffered(),
            s.buffer.forecast_per_s(),
            s.buffer.expired_ids(),
        )
    }

    /// Wakes the refill task if the buffer fell under its mark.
    fn nudge(&self, s: &mut State, now: Instant) {
        self.expired_through
            .store(s.buffer.expired_through(), Ordering::Relaxed);
        if s.buffer.refill_size(now).is_some() {
            self.want.notify_one();
        }
    }

    /// Takes `n` ids, waiting up to `timeout` for them.
    pub async fn take(&self, n: usize, timeout: Duration) -> Result<Vec<u64>, IdError> {
        let started = Instant::now();
        let mut events = self.events.subscribe();
        {
            let mut s = self.lock();
            if let Some(ids) = s.buffer.take(n, started) {
                self.nudge(&mut s, started);
                return Ok(ids);
            }
            s.buffer.demand += n;
        }
        let _demand = Demand { stream: self, n };
        self.want.notify_one();
        let deadline = started + timeout;
        loop {
            let woke = tokio::time::timeout_at(deadline, events.changed()).await;
            let now = Instant::now();
            let mut s = self.lock();
            if let Some(ids) = s.buffer.take(n, now) {
                self.nudge(&mut s, now);
                return Ok(ids);
            }
            match (&s.failure, woke) {
                // A round that started during this call failed on every node (or an API
                // error that every node would repeat): that is the answer.
                (Some(f), _) if f.at >= started => return Err(f.error.clone()),
                (failure, Err(_)) => {
                    return Err(IdError::Timeout {
                        stream: stream_name(self.ns.as_deref()),
                        waited_ms: timeout.as_millis() as u64,
                        last: failure.as_ref().map(|f| Box::new(f.error.clone())),
                    })
                }
                _ => {}
            }
        }
    }

    /// Takes one id, waiting up to `timeout` for it.
    pub async fn take_one(&self, timeout: Duration) -> Result<u64, IdError> {
        let now = Instant::now();
        {
            let mut s = self.lock();
            if let Some(id) = s.buffer.take_one(now) {
                self.nudge(&mut s, now);
                return Ok(id);
            }
        }
        Ok(self.take(1, timeout).await?[0])
    }

    /// Moves up to `max` ids into `out`; the batch's sequence number, if any were buffered.
    fn take_chunk(&self, max: usize, out: &mut Vec<u64>) -> Option<u64> {
        let now = Instant::now();
        let mut s = self.lock();
        let seq = s.buffer.take_chunk(max, now, out);
        self.nudge(&mut s, now);
        seq
    }

    /// The refill task of this stream: runs until the client is dropped (it is aborted then).
    pub async fn refill(self: Arc<Self>, router: Arc<Router>) {
        let what = if self.ns.is_some() {
            "namespace ids prefetch"
        } else {
            "ids prefetch"
        };
        let mut retry = Retry::new(what, ROUND_RETRY_MIN, ROUND_RETRY_MAX);
        let mut served_by: Option<String> = None;
        loop {
            let now = Instant::now();
            let (size, expiry) = {
                let mut s = self.lock();
                let size = s.buffer.refill_size(now);
                self.expired_through
                    .store(s.buffer.expired_through(), Ordering::Relaxed);
                (size, s.buffer.next_expiry())
            };
            let Some(count) = size else {
                let expiry = async {
                    match expiry {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = self.want.notified() => {}
                    () = expiry => {}
                }
                continue;
            };
            let sent = Instant::now();
            match router.fetch(self.ns.as_deref(), count).await {
                Ok((ids, url)) => {
                    retry.succeeded();
                    if served_by.as_deref() != Some(url.as_str()) {
                        // Once per change of node, not per request.
                        tracing::info!(stream = %stream_name(self.ns.as_deref()), node = %url, previous = ?served_by, "ids now come from this node");
                        served_by = Some(url);
                    }
                    let mut s = self.lock();
                    s.buffer.push(ids, sent);
                    s.failure = None;
                    drop(s);
                    self.events.send_modify(|g| *g += 1);
                }
                Err(error) => {
                    let delay = retry.failed(error.kind(), &error);
                    // A refusal (a 4xx: an unknown namespace) is not retried for its own sake:
                    // after the backoff, only a caller asking again sends another request.
                    let refused = matches!(error, IdError::Api { .. });
                    self.lock().failure = Some(Failure { at: sent, error });
                    self.events.send_modify(|g| *g += 1);
                    tokio::time::sleep(delay).await;
                    if refused {
                        self.want.notified().await;
                    }
                }
            }
        }
    }
}

/// A caller-owned handle on a stream with a local slice of ids: the fast path.
///
/// [`IdStream::try_next_id`] hands out ids from a chunk it took from the client's shared
/// buffer; it takes the lock only once per chunk (up to [`LOCAL_CHUNK_MAX`] ids, sized to
/// about a millisecond of this handle's use). Ids in the chunk obey the validity like the
/// buffer's, and ids left in it when the handle is dropped are discarded, never handed out
/// again.
///
/// ```no_run
/// # async fn f() -> Result<(), shardflake_client::IdError> {
/// let client = shardflake_client::IdClient::builder()
///     .nodes(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
///     .build()?;
/// let mut ids = client.stream();
/// for _ in 0..1_000_000 {
///     let id = ids.next_id().await?; // no lock, no syscall while the chunk lasts
///     # let _ = id;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct IdStream {
    client: IdClient,
    stream: Arc<Stream>,
    local: Vec<u64>,
    pos: usize,
    /// The shared batch the local ids came from.
    seq: u64,
    chunk: usize,
    filled_at: Instant,
}

impl IdStream {
    pub(crate) fn new(client: IdClient, stream: Arc<Stream>) -> Self {
        Self {
            client,
            stream,
            local: Vec::with_capacity(LOCAL_CHUNK_MAX),
            pos: 0,
            seq: 0,
            chunk: 1,
            filled_at: Instant::now(),
        }
    }

    /// The next id if one is buffered, without waiting: `None` means the buffer is empty (the
    /// refill task has been asked for more).
    #[inline]
    pub fn try_next_id(&mut self) -> Option<u64> {
        if let Some(&id) = self.local.get(self.pos) {
            if self.seq > self.stream.expired_through.load(Ordering::Relaxed) {
                self.pos += 1;
                return Some(id);
            }
        }
        self.next_chunk()
    }

    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) -> Option<u64> {
        let now = Instant::now();
        let lasted = now.saturating_duration_since(self.filled_at);
        if self.pos >= self.local.len() && lasted < LOCAL_CHUNK_LASTS {
            self.chunk = (self.chunk * 2).min(LOCAL_CHUNK_MAX);
        } else if lasted > LOCAL_CHUNK_LASTS * 10 {
            self.chunk = (self.chunk / 2).max(1);
        }
        self.pos = 0;
        match self.stream.take_chunk(self.chunk, &mut self.local) {
            Some(seq) => {
                self.seq = seq;
                self.filled_at = now;
                self.pos = 1;
                Some(self.local[0])
            }
            None => {
                self.local.clear();
                None
            }
        }
    }

    /// The next id: from the local chunk, else the shared buffer, else waiting for a refill
    /// up to the client's call timeout (see [`IdClient::next_id`] for the errors).
    pub async fn next_id(&mut self) -> Result<u64, IdError> {
        if let Some(id) = self.try_next_id() {
            return Ok(id);
        }
        self.stream
            .take_one(self.client.inner.config.call_timeout)
            .await
    }

    /// The namespace of this stream, `None` for plain ids.
    pub fn namespace(&self) -> Option<&str> {
        self.stream.ns.as_deref()
    }
}
