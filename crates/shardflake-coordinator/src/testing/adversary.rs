//! Namespace grants and returns interleaved with callers that are not the holder, and with
//! holders that misreport their own block: [`no_value_is_granted_twice`] runs a sequence of
//! [`Op`]s and checks that no value was issued twice and that no two grants overlap
//! (`shardflake_proto::audit::find_overlaps` over the coordinator's grant logs).
//!
//! Honest nodes behave as `shardflake serve` does: they issue a block's values in order, ask
//! for the next block with the end of their newest one, and at a clean stop give back the
//! unused tail of their newest block only. Foreign callers know a holder's host id and token
//! (`GET /v1/hosts` shows both) but not its secret, or hold a token and secret of an earlier
//! lease, or replay a request they saw. A lying holder presents its own token and secret
//! with a block end or a first unused value that is not its newest block's; the only lie
//! the coordinator cannot tell apart is a first unused value above what the node issued,
//! which wastes values and repeats none.
//!
//! The property test in this crate's tests runs random sequences on the in-memory store;
//! [`crate::store::conformance::run_all`] runs seeded sequences on every backend.

use std::sync::Arc;

use shardflake::FastRng;
use shardflake_proto::audit::find_overlaps;
use shardflake_proto::coord::{AcquireRequest, LeaseSecret, ReleaseRequest};
use shardflake_proto::ns::{NamespaceSpec, NsBlockRequest, NsReturnRequest};

use super::{acquire_req, manual_coordinator};
use crate::store::KvStore;
use crate::{CoordError, Coordinator, CoordinatorConfig};

/// Honest nodes in a sequence.
pub const NODES: u8 = 3;
/// Values per block (the namespace's `block_min` and `block_max`).
const BLOCK: u64 = 10;
/// The namespace's step: values are `1 + k·STEP`.
const STEP: u64 = 3;

/// How a caller that is not the holder tries to return a holder's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// The holder's host id and current token (from `GET /v1/hosts`) with a guessed secret.
    GuessedSecret,
    /// The token and secret of the holder's previous lease on that host id.
    StaleLease,
    /// The holder's last return, sent again.
    Replay,
}

/// How a holder misreports its own block in a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// The end of an older block of its own.
    OlderBlockEnd,
    /// A first unused value below its newest block (reaching into an earlier one).
    BelowBlock,
    /// A first unused value past its newest block's end.
    PastBlock,
    /// A first unused value above what it issued: it gives back less than it could.
    Waste(u8),
}

/// One step of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Node `n` asks for its next block.
    Grant(u8),
    /// Node `n` issues up to `k` values from its blocks, in order.
    Issue(u8, u8),
    /// Node `n` stops cleanly: it returns its newest block's unused tail, releases its
    /// lease and acquires a new one.
    Stop(u8),
    /// Node `n` gives back its newest block's unused tail and keeps its lease: it takes no
    /// block of the namespace under it any more (a replay of the return can then never
    /// meet a new block with the same bounds).
    GiveBack(u8),
    /// Node `n` stops without returning anything (its blocks' values are wasted, as after
    /// `kill -9`) and acquires a new lease. Its old lease is released rather than left to
    /// expire, so that the test's pool of host ids stays bounded without moving the clock.
    Crash(u8),
    /// A foreign caller targets node `n`.
    Foreign(u8, Foreign),
    /// Node `n` lies about its block, then stops.
    Lie(u8, Lie),
}

/// A block a node holds: values from `next` below `end`.
#[derive(Debug, Clone, Copy)]
struct Held {
    start: u64,
    end: u64,
    next: u64,
}

struct Holder {
    name: String,
    host_id: u32,
    token: u64,
    secret: LeaseSecret,
    previous: Option<(u64, LeaseSecret)>,
    blocks: Vec<Held>,
    last_return: Option<NsReturnRequest>,
    /// Gave the namespace back under its current lease: takes no more blocks.
    gave_back: bool,
}

struct World {
    c: Coordinator,
    nodes: Vec<Holder>,
    issued: Vec<u64>,
    secrets: u8,
}

/// The seeded sequence of `len` steps that the backends run (the same for every backend).
pub fn seeded_ops(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = FastRng::from_seed(seed);
    (0..len)
        .map(|_| {
            let r = rng.next_u64();
            let n = (r % u64::from(NODES)) as u8;
            match (r >> 8) % 16 {
                0..=4 => Op::Grant(n),
                5..=9 => Op::Issue(n, ((r >> 16) % 12) as u8),
                10 if (r >> 40).is_multiple_of(2) => Op::Stop(n),
                10 => Op::GiveBack(n),
                11 => Op::Crash(n),
                12 => Op::Foreign(
                    n,
                    [Foreign::GuessedSecret, Foreign::StaleLease, Foreign::Replay]
                        [((r >> 24) % 3) as usize],
                ),
                _ => Op::Lie(
                    n,
                    [
                        Lie::OlderBlockEnd,
                        Lie::BelowBlock,
                        Lie::PastBlock,
                        Lie::Waste(((r >> 32) % 5) as u8),
                    ][((r >> 24) % 4) as usize],
                ),
            }
        })
        .collect()
}

/// Runs `ops` against a coordinator on `store` and checks that no value was issued twice,
/// that every refusal was a refusal, and that no two grants in the logs overlap.
pub async fn no_value_is_granted_twice(store: Arc<dyn KvStore>, ops: &[Op]) {
    let mut config = CoordinatorConfig::new(shardflake::Layout::preset("default").unwrap());
    config.pool_size = 8;
    config.audit_window = crate::AUDIT_WINDOW_MAX;
    let (c, _) = manual_coordinator(store, config).await;
    let spec = NamespaceSpec {
        start: Some(1),
        step: Some(STEP),
        block_min: Some(BLOCK),
        block_max: Some(BLOCK),
        ..Default::default()
    };
    c.put_namespace("p", &spec).await.unwrap();
    let mut w = World {
        c,
        nodes: Vec::new(),
        issued: Vec::new(),
        secrets: 0,
    };
    for i in 0..NODES {
        let h = w.acquire(&format!("n{i}"), None).await;
        w.nodes.push(h);
    }
    for (step, op) in ops.iter().enumerate() {
        w.run(*op)
            .await
            .unwrap_or_else(|e| panic!("step {step} {op:?}: {e}"));
    }
    shardflake::check::check_ids(&w.issued).assert_unique();
    let report = w.c.audit_report().await.unwrap();
    let overlaps = find_overlaps(&report);
    assert!(overlaps.is_empty(), "after {ops:?}: {overlaps:?}");
}

impl World {
    fn next_secret(&mut self) -> LeaseSecret {
        self.secrets = self.secrets.wrapping_add(1);
        LeaseSecret::from_bytes([self.secrets; 16])
    }

    async fn acquire(&mut self, name: &str, previous: Option<(u64, LeaseSecret)>) -> Holder {
        let secret = self.next_secret();
        let g = self
            .c
            .acquire(&AcquireRequest {
                secret: secret.clone(),
                ..acquire_req(name, 600_000)
            })
            .await
            .unwrap();
        Holder {
            name: name.to_string(),
            host_id: g.host_id,
            token: g.token,
            secret,
            previous,
            blocks: Vec::new(),
            last_return: None,
            gave_back: false,
        }
    }

    async fn run(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Grant(n) => self.grant(n as usize).await,
            Op::Issue(n, k) => {
                self.issue(n as usize, u64::from(k));
                Ok(())
            }
            Op::Stop(n) => {
                let req = self.honest_return(n as usize);
                if let Some(req) = req {
                    self.c
                        .return_ns_block("p", &req)
                        .await
                        .map_err(|e| format!("an honest return was refused: {e}"))?;
                    self.nodes[n as usize].last_return = Some(req);
                }
                self.restart(n as usize).await;
                Ok(())
            }
            Op::GiveBack(n) => self.give_back(n as usize).await,
            Op::Crash(n) => {
                self.restart(n as usize).await;
                Ok(())
            }
            Op::Foreign(n, how) => self.foreign(n as usize, how).await,
            Op::Lie(n, lie) => self.lie(n as usize, lie).await,
        }
    }

    async fn grant(&mut self, n: usize) -> Result<(), String> {
        let h = &self.nodes[n];
        if h.gave_back {
            let req = NsBlockRequest {
                host_id: u64::from(h.host_id),
                token: h.token,
                secret: h.secret.clone(),
                ..Default::default()
            };
            return match self.c.grant_ns_block("p", &req).await {
                Err(CoordError::NamespaceReturned { .. }) => Ok(()),
                other => Err(format!(
                    "a block after a return under the same lease: {other:?}"
                )),
            };
        }
        let req = NsBlockRequest {
            host_id: u64::from(h.host_id),
            token: h.token,
            secret: h.secret.clone(),
            after: h.blocks.last().map_or(0, |b| b.end),
            ..Default::default()
        };
        let g = self
            .c
            .grant_ns_block("p", &req)
            .await
            .map_err(|e| format!("an honest grant was refused: {e}"))?;
        let h = &mut self.nodes[n];
        if h.blocks.last().is_none_or(|b| g.end() > b.end) {
            h.blocks.push(Held {
                start: g.start,
                end: g.end(),
                next: g.start,
            });
        }
        Ok(())
    }

    fn issue(&mut self, n: usize, k: u64) {
        let h = &mut self.nodes[n];
        for _ in 0..k {
            let Some(b) = h.blocks.iter_mut().find(|b| b.next < b.end) else {
                return;
            };
            self.issued.push(b.next);
            b.next += STEP;
        }
    }

    /// What `shardflake serve` sends at a clean stop: the unused tail of the newest block.
    fn honest_return(&self, n: usize) -> Option<NsReturnRequest> {
        let h = &self.nodes[n];
        let newest = h.blocks.last()?;
        (newest.next < newest.end).then(|| NsReturnRequest {
            host_id: u64::from(h.host_id),
            token: h.token,
            secret: h.secret.clone(),
            block_end: newest.end,
            unused_from: newest.next,
        })
    }

    /// An honest return that keeps the lease; a taken one ends the node's use of the
    /// namespace under it.
    async fn give_back(&mut self, n: usize) -> Result<(), String> {
        let Some(req) = self.honest_return(n) else {
            return Ok(());
        };
        let r = self
            .c
            .return_ns_block("p", &req)
            .await
            .map_err(|e| format!("an honest return was refused: {e}"))?;
        let h = &mut self.nodes[n];
        if r.returned > 0 {
            // The tail went back: the node issues nothing of it, nor of its older blocks
            // (it is stopping), and takes no new block under this lease.
            h.blocks.clear();
            h.gave_back = true;
        }
        h.last_return = Some(req);
        Ok(())
    }

    /// The node stops, releases its lease and comes back with a new one.
    async fn restart(&mut self, n: usize) {
        let (name, host_id, token, secret) = {
            let h = &self.nodes[n];
            (h.name.clone(), h.host_id, h.token, h.secret.clone())
        };
        let release = ReleaseRequest {
            token,
            secret: secret.clone(),
        };
        self.c.release(host_id, &release).await.unwrap();
        let last_return = self.nodes[n].last_return.take();
        let mut h = self.acquire(&name, Some((token, secret))).await;
        h.last_return = last_return;
        self.nodes[n] = h;
    }

    async fn foreign(&mut self, n: usize, how: Foreign) -> Result<(), String> {
        let guessed = self.next_secret();
        let before = self.c.namespace("p").await.unwrap();
        let h = &self.nodes[n];
        let newest = h.blocks.last().copied();
        let target = |token: u64, secret: LeaseSecret| NsReturnRequest {
            host_id: u64::from(h.host_id),
            token,
            secret,
            block_end: newest.map_or(1, |b| b.end),
            unused_from: newest.map_or(1, |b| b.start),
        };
        let req = match how {
            Foreign::GuessedSecret => {
                let shown = self.c.hosts().await.unwrap();
                let token = shown
                    .hosts
                    .iter()
                    .find(|s| s.host_id == h.host_id)
                    .map_or(h.token, |s| s.token);
                target(token, guessed)
            }
            Foreign::StaleLease => match &h.previous {
                Some((token, secret)) => target(*token, secret.clone()),
                None => target(h.token.saturating_sub(1), guessed),
            },
            Foreign::Replay => match &h.last_return {
                Some(r) => r.clone(),
                None => return Ok(()),
            },
        };
        let outcome = self.c.return_ns_block("p", &req).await;
        let after = self.c.namespace("p").await.unwrap();
        match (how, outcome) {
            (_, Ok(r)) if r.returned > 0 && after.next != before.next => Err(format!(
                "a foreign return ({how:?}) took back {} values: next {} -> {}",
                r.returned, before.next, after.next
            )),
            (Foreign::Replay, _) => Ok(()),
            (_, Ok(r)) => Err(format!("a foreign return ({how:?}) was answered {r:?}")),
            (_, Err(CoordError::SecretMismatch { .. } | CoordError::StaleToken { .. })) => Ok(()),
            (_, Err(e)) => Err(format!(
                "a foreign return ({how:?}) failed for another reason: {e}"
            )),
        }
    }

    async fn lie(&mut self, n: usize, lie: Lie) -> Result<(), String> {
        let h = &self.nodes[n];
        let Some(newest) = h.blocks.last().copied() else {
            return Ok(());
        };
        let mut req = NsReturnRequest {
            host_id: u64::from(h.host_id),
            token: h.token,
            secret: h.secret.clone(),
            block_end: newest.end,
            unused_from: newest.next,
        };
        let refused = match lie {
            Lie::OlderBlockEnd => match h.blocks.len() {
                0 | 1 => return Ok(()),
                len => {
                    req.block_end = h.blocks[len - 2].end;
                    req.unused_from = h.blocks[len - 2].start;
                    true
                }
            },
            Lie::BelowBlock if newest.start > STEP => {
                req.unused_from = newest.start - STEP;
                true
            }
            Lie::BelowBlock => return Ok(()),
            Lie::PastBlock => {
                req.unused_from = newest.end + STEP;
                true
            }
            Lie::Waste(k) => {
                req.unused_from = (newest.next + u64::from(k) * STEP).min(newest.end);
                false
            }
        };
        // A "lie" that repeats the holder's last return exactly (an older block it gave
        // back untouched) is a replay: answered as that return was, 0, taking nothing.
        let replay = self.nodes[n].last_return.as_ref().is_some_and(|l| {
            (l.token, l.block_end, l.unused_from) == (req.token, req.block_end, req.unused_from)
        });
        let outcome = self.c.return_ns_block("p", &req).await;
        match (refused, outcome) {
            (true, Err(CoordError::ReturnRefused { .. })) => Ok(()),
            (true, Ok(r)) if replay && r.returned == 0 => Ok(()),
            (true, other) => Err(format!("a lie ({lie:?}) was not refused: {other:?}")),
            (false, Ok(_)) => {
                self.nodes[n].last_return = Some(req);
                self.restart(n).await;
                Ok(())
            }
            (false, Err(e)) => Err(format!("a return above the cursor was refused: {e}")),
        }
    }
}
