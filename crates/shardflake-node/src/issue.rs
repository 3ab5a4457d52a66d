//! Issuing: the one function that hands out N ids, or a typed [`Refusal`] saying why not and
//! when to retry. `http.rs` only maps it to a response.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use shardflake::{GenerateError, IdRange};
use shardflake_proto::node::BINARY_ID_BYTES;
use shardflake_proto::{ApiError, ErrorCode};
use tokio::time::Instant;

use crate::config::NodeClockPolicy;
use crate::source::IdSource;
use crate::state::Shared;

/// The longest a request waits in total for the reservation or a counter block.
pub const EXTENSION_WAIT_MS_MAX: u64 = 500;
/// How long a waiting request sleeps before looking again if no extension wakes it.
pub const EXTENSION_POLL_MS: u64 = 5;

/// Why the node does not issue an id now: a stable code, a message for people, and how long
/// to wait before asking again when waiting helps. Requests and `/readyz` refuse alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) retry_after_ms: Option<u64>,
}

impl Refusal {
    pub(crate) fn new(
        code: ErrorCode,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms,
        }
    }

    /// A generator error, with the node's context where it changes the meaning.
    pub(crate) fn of_generate_error(shared: &Shared, e: GenerateError) -> Self {
        if shared.shutting_down.load(Ordering::Acquire) && e == GenerateError::LeaseLost {
            return Refusal::new(
                ErrorCode::ShuttingDown,
                "the node is shutting down",
                Some(1_000),
            );
        }
        if let (GenerateError::NoCounterBlock { shard }, Some(layout)) = (&e, shared.layout()) {
            let (shard, floor) = (*shard, shared.shard_floor());
            if shard < floor {
                let now = shared.clock.now_ms();
                let by = layout.ms_of_tick(floor).saturating_sub(now);
                return Refusal::new(
                    ErrorCode::ClockBehind,
                    format!(
                        "the clock is in shard {shard}, below shard {floor} that ids were \
                         already issued in; shard {floor} starts in {by} ms"
                    ),
                    Some(by),
                );
            }
        }
        Refusal::new(
            ErrorCode::of_generate_error(&e),
            e.to_string(),
            e.retry_after_ms(),
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::new(r.code, r.message).retry_after_ms(r.retry_after_ms)
    }
}

/// Where generated ids go.
pub(crate) enum Sink {
    Ids(Vec<u64>),
    Binary(BytesMut),
}

impl Sink {
    fn len(&self) -> usize {
        match self {
            Sink::Ids(v) => v.len(),
            Sink::Binary(b) => b.len() / BINARY_ID_BYTES,
        }
    }

    fn clear(&mut self) {
        match self {
            Sink::Ids(v) => v.clear(),
            Sink::Binary(b) => b.clear(),
        }
    }

    #[inline]
    fn push(&mut self, range: IdRange) {
        match self {
            Sink::Ids(v) => v.extend(range),
            Sink::Binary(b) => {
                let start = b.len();
                b.resize(start + range.len as usize * BINARY_ID_BYTES, 0);
                for (chunk, id) in b[start..].chunks_exact_mut(BINARY_ID_BYTES).zip(range) {
                    chunk.copy_from_slice(&id.to_be_bytes());
                }
            }
        }
    }
}

/// Takes ids until `sink` holds `count`, keeping what it got if the generator fails.
fn fill(source: Option<&IdSource>, sink: &mut Sink, count: usize) -> Result<(), GenerateError> {
    let Some(source) = source else {
        return Err(GenerateError::LeaseLost);
    };
    while sink.len() < count {
        let range = source.next_range((count - sink.len()) as u64)?;
        sink.push(range);
    }
    Ok(())
}

/// What a request does after a generator error.
enum Wait {
    /// Wait this long for a clock that stepped back (clock policy wait).
    Clock(u64),
    /// Wait for the keeper to extend the reservation or install a block.
    Extension,
}

fn wait_plan(shared: &Shared, e: &GenerateError) -> Option<Wait> {
    match e {
        GenerateError::ClockMovedBackwards { by_ms } => match shared.config.clock_policy {
            NodeClockPolicy::Wait { max_wait_ms } if *by_ms <= max_wait_ms => {
                Some(Wait::Clock(*by_ms))
            }
            _ => None,
        },
        GenerateError::ReservationExhausted { .. } | GenerateError::CounterExhausted { .. } => {
            Some(Wait::Extension)
        }
        GenerateError::NoCounterBlock { shard } if *shard >= shared.shard_floor() => {
            Some(Wait::Extension)
        }
        _ => None,
    }
}

/// Issues `count` ids into `sink`, waiting asynchronously (never parking a runtime thread)
/// for a stepped-back clock within the policy, and for reservation extensions and counter
/// blocks up to [`EXTENSION_WAIT_MS_MAX`]. Requests that may wait more than one 1 ms tick
/// inside the generator run on the blocking pool.
pub(crate) async fn issue(
    shared: &Arc<Shared>,
    mut sink: Sink,
    count: usize,
) -> Result<Sink, Refusal> {
    let started = Instant::now();
    let inline = count as u64 <= shared.inline_count_max.load(Ordering::Relaxed);
    // A response comes from one generator: a batch that waited while the generator was
    // swapped (a new lease, with another host id) must not continue with the new one, or its
    // ids would no longer increase within the response.
    let mut source = shared.source.load_full();
    loop {
        // Without a generator the answer is a refusal: no reason to hop to another thread.
        let result = if inline || source.is_none() {
            fill(source.as_deref(), &mut sink, count)
        } else {
            let source = source.clone();
            let (s, r) = tokio::task::spawn_blocking(move || {
                let r = fill(source.as_deref(), &mut sink, count);
                (sink, r)
            })
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, format!("generator task: {e}"), None))?;
            sink = s;
            r
        };
        let e = match result {
            Ok(()) => return Ok(sink),
            Err(e) => e,
        };
        let waited_ms = started.elapsed().as_millis() as u64;
        match wait_plan(shared, &e) {
            Some(Wait::Clock(by_ms)) if waited_ms + by_ms <= clock_wait_budget_ms(shared) => {
                shared.metrics.clock_waits.inc();
                tokio::time::sleep(Duration::from_millis(by_ms.max(1))).await;
            }
            Some(Wait::Extension) if waited_ms < EXTENSION_WAIT_MS_MAX => {
                shared.metrics.extension_waits.inc();
                // A wake-up that fired before this waiter registered costs one poll interval.
                let _ = tokio::time::timeout(
                    Duration::from_millis(EXTENSION_POLL_MS),
                    shared.extended.notified(),
                )
                .await;
            }
            _ if source.is_none() => return Err(shared.not_issuing()),
            _ => return Err(Refusal::of_generate_error(shared, e)),
        }
        let current = shared.source.load_full();
        let same = match (&current, &source) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            // The old generator's ids are unique but from another lease: drop them and
            // start the batch over on the new one.
            if !shardflake::mutant::active(
                shardflake::mutant::Mutant::ABatchContinuesOnTheNextLeasesGenerator,
            ) {
                sink.clear();
            }
            source = current;
        }
    }
}

fn clock_wait_budget_ms(shared: &Shared) -> u64 {
    match shared.config.clock_policy {
        NodeClockPolicy::Wait { max_wait_ms } => max_wait_ms + EXTENSION_WAIT_MS_MAX,
        _ => 0,
    }
}
