//! `GET /v1/audit`: the coordinator's live grants and its bounded grant logs, and
//! [`find_overlaps`], the one check that no two grants in them overlap.
//!
//! The coordinator keeps, in the records each grant writes, the last grants of every host id
//! (the timestamp range each token reserved), of every (host, shard) pair (temporal counter
//! blocks) and of every namespace (value blocks, cut back where a tail was returned). How
//! many it keeps is its audit window ([`AuditReport::window`]), so the logs grow with what is
//! live, not with time. `shardflake audit` fetches the report and runs [`find_overlaps`]:
//!
//! ```
//! use shardflake_proto::audit::{find_overlaps, AuditReport, HostGrants, TokenRange};
//! let range = |token, start_above_ms, reserved_until_ms| TokenRange {
//!     token, holder: "n".into(), start_above_ms, reserved_until_ms, granted_at_ms: 0,
//! };
//! let mut r = AuditReport {
//!     store_id: "s".into(), layout_spec: "l".into(), window: 16,
//!     hosts: vec![HostGrants { host_id: 0, ranges: vec![range(1, 0, 100), range(2, 100, 200)] }],
//!     blocks: vec![], namespaces: vec![],
//! };
//! assert!(find_overlaps(&r).is_empty());
//! r.hosts[0].ranges[1].start_above_ms = 90; // token 2 may issue 91..=100, as token 1 did
//! assert_eq!(find_overlaps(&r).len(), 1);
//! ```

use serde::{Deserialize, Serialize};

/// What one token of a host id reserved: its holder issued only timestamps `t` with
/// `start_above_ms < t <= reserved_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRange {
    /// The fencing token.
    pub token: u64,
    /// The holder's name.
    pub holder: String,
    /// The bound the token started above, Unix ms.
    pub start_above_ms: u64,
    /// The highest bound reserved under the token, Unix ms.
    pub reserved_until_ms: u64,
    /// Wall time of the grant, Unix ms.
    pub granted_at_ms: u64,
}

/// A host id's tokens in the window, oldest first; the last is the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostGrants {
    /// The host id.
    pub host_id: u32,
    /// Its tokens' ranges.
    pub ranges: Vec<TokenRange>,
}

/// One counter block of a (host, shard) pair: counter values `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CounterBlock {
    /// First counter value.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// The token it was granted to.
    pub token: u64,
    /// Wall time of the grant, Unix ms.
    pub at_ms: u64,
}

/// The logged counter blocks of one (host, shard) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairBlocks {
    /// The host id.
    pub host_id: u32,
    /// The shard.
    pub shard: u64,
    /// One past the highest counter value ever granted for the pair.
    pub high_water: u64,
    /// The last blocks, oldest first.
    pub blocks: Vec<CounterBlock>,
}

/// One block of a namespace: values `start, start + step, ..` below `end` (cut back to the
/// first returned value when a tail was given back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValueBlock {
    /// The first value.
    pub start: u64,
    /// One step past the last value still granted.
    pub end: u64,
    /// The host id it was granted to.
    pub host_id: u32,
    /// Under which token.
    pub token: u64,
    /// Wall time of the grant, Unix ms.
    pub at_ms: u64,
}

/// A namespace's logged blocks and its next value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceGrants {
    /// The name.
    pub name: String,
    /// The first value of the next block: above every value still granted.
    pub next: u64,
    /// Distance between consecutive values.
    pub step: u64,
    /// The last blocks, oldest first.
    pub blocks: Vec<ValueBlock>,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditReport {
    /// The store's identity.
    pub store_id: String,
    /// The layout's fingerprint.
    pub layout_spec: String,
    /// Grants kept per log (per host id, per (host, shard) pair, per namespace).
    pub window: u32,
    /// Every host id ever leased.
    pub hosts: Vec<HostGrants>,
    /// Every (host, shard) pair with counter blocks in the store.
    pub blocks: Vec<PairBlocks>,
    /// Every namespace.
    pub namespaces: Vec<NamespaceGrants>,
}

/// What kind of grants overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapKind {
    /// Two tokens of a host id reserved overlapping timestamp ranges.
    HostReservation,
    /// Two counter blocks of a (host, shard) pair overlap.
    CounterBlock,
    /// Two blocks of a namespace overlap, or the namespace's next value lies inside a block
    /// still granted.
    NamespaceBlock,
}

impl OverlapKind {
    /// Every kind, in the order the audit table lists them.
    pub const ALL: [OverlapKind; 3] = [
        OverlapKind::HostReservation,
        OverlapKind::CounterBlock,
        OverlapKind::NamespaceBlock,
    ];

    /// The kind as the audit table names it.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapKind::HostReservation => "host reservations",
            OverlapKind::CounterBlock => "temporal counter blocks",
            OverlapKind::NamespaceBlock => "namespace blocks",
        }
    }
}

/// Two grants that overlap: values both holders may have issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    /// The kind of grant.
    pub kind: OverlapKind,
    /// Where: `host 3`, `host 3 shard 17`, `namespace orders`.
    pub subject: String,
    /// The two grants and the values they share.
    pub detail: String,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.kind.as_str(),
            self.subject,
            self.detail
        )
    }
}

/// Grants checked per kind, for the audit table.
pub fn grants_checked(r: &AuditReport) -> [(OverlapKind, usize); 3] {
    [
        (
            OverlapKind::HostReservation,
            r.hosts.iter().map(|h| h.ranges.len()).sum(),
        ),
        (
            OverlapKind::CounterBlock,
            r.blocks.iter().map(|p| p.blocks.len()).sum(),
        ),
        (
            OverlapKind::NamespaceBlock,
            r.namespaces.iter().map(|n| n.blocks.len()).sum(),
        ),
    ]
}

/// Every overlap in the report: tokens of a host id whose timestamp ranges overlap (a later
/// token must start at or above every bound an earlier one reserved), counter blocks of a
/// pair that overlap or lie above its high-water mark, namespace blocks that overlap, and a
/// namespace whose next value lies below a block still granted (its next block would repeat
/// values). Empty when every grant in the window is disjoint.
pub fn find_overlaps(r: &AuditReport) -> Vec<Overlap> {
    let mut out = Vec::new();
    for h in &r.hosts {
        host_overlaps(h, &mut out);
    }
    for p in &r.blocks {
        pair_overlaps(p, &mut out);
    }
    for n in &r.namespaces {
        namespace_overlaps(n, &mut out);
    }
    out
}

fn host_overlaps(h: &HostGrants, out: &mut Vec<Overlap>) {
    let mut ranges: Vec<&TokenRange> = h.ranges.iter().collect();
    ranges.sort_by_key(|r| r.token);
    let subject = format!("host {}", h.host_id);
    // Every earlier token's bound, not only the previous one's: a later token starting
    // below any of them shares timestamps with it.
    let mut highest: Option<&TokenRange> = None;
    for r in ranges {
        if let Some(a) = highest {
            if r.start_above_ms < a.reserved_until_ms {
                out.push(Overlap {
                    kind: OverlapKind::HostReservation,
                    subject: subject.clone(),
                    detail: format!(
                        "token {} ({}) reserved up to {} ms, but token {} ({}) starts above {} ms: both may issue timestamps {}..={}",
                        a.token, a.holder, a.reserved_until_ms, r.token, r.holder,
                        r.start_above_ms, r.start_above_ms + 1, a.reserved_until_ms
                    ),
                });
            }
        }
        if highest.is_none_or(|a| r.reserved_until_ms > a.reserved_until_ms) {
            highest = Some(r);
        }
    }
}

/// A block by its values `start..end`, and what it was granted to.
type Span<T> = (u64, u64, T);

/// Blocks `(start, end, what)` sorted by start, each set against the block with the highest
/// end before it: a block that starts below that end shares values with it (comparing only
/// neighbours would miss a wide block that covers several later ones).
fn overlapping<T>(blocks: &[Span<T>]) -> Vec<(&Span<T>, &Span<T>)> {
    let mut out = Vec::new();
    let mut widest: Option<&Span<T>> = None;
    for b in blocks {
        if let Some(w) = widest {
            if b.0 < w.1 {
                out.push((w, b));
            }
        }
        if widest.is_none_or(|w| b.1 > w.1) {
            widest = Some(b);
        }
    }
    out
}

fn pair_overlaps(p: &PairBlocks, out: &mut Vec<Overlap>) {
    let subject = format!("host {} shard {}", p.host_id, p.shard);
    let mut blocks: Vec<(u64, u64, u64)> =
        p.blocks.iter().map(|b| (b.start, b.end, b.token)).collect();
    blocks.sort_unstable();
    for (a, b) in overlapping(&blocks) {
        out.push(Overlap {
            kind: OverlapKind::CounterBlock,
            subject: subject.clone(),
            detail: format!(
                "blocks {}..{} (token {}) and {}..{} (token {}) share counters {}..{}",
                a.0,
                a.1,
                a.2,
                b.0,
                b.1,
                b.2,
                b.0,
                a.1.min(b.1)
            ),
        });
    }
    if let Some(b) = blocks.iter().find(|b| b.1 > p.high_water) {
        out.push(Overlap {
            kind: OverlapKind::CounterBlock,
            subject,
            detail: format!(
                "block {}..{} (token {}) lies above the high-water mark {}: the next block would repeat its counters",
                b.0, b.1, b.2, p.high_water
            ),
        });
    }
}

fn namespace_overlaps(n: &NamespaceGrants, out: &mut Vec<Overlap>) {
    let subject = format!("namespace {}", n.name);
    let mut blocks: Vec<(u64, u64, (u32, u64))> = n
        .blocks
        .iter()
        .filter(|b| b.end > b.start)
        .map(|b| (b.start, b.end, (b.host_id, b.token)))
        .collect();
    blocks.sort_unstable();
    for (a, b) in overlapping(&blocks) {
        out.push(Overlap {
            kind: OverlapKind::NamespaceBlock,
            subject: subject.clone(),
            detail: format!(
                "block {}..{} of host {} (token {}) and block {}..{} of host {} (token {}) share values {}..{}",
                a.0, a.1, a.2 .0, a.2 .1, b.0, b.1, b.2 .0, b.2 .1, b.0, a.1.min(b.1)
            ),
        });
    }
    if let Some(b) = blocks.iter().find(|b| b.1 > n.next) {
        out.push(Overlap {
            kind: OverlapKind::NamespaceBlock,
            subject,
            detail: format!(
                "next value {} lies inside block {}..{} of host {} (token {}): the next block would repeat its values",
                n.next, b.0, b.1, b.2 .0, b.2 .1
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> AuditReport {
        AuditReport {
            store_id: "s".into(),
            layout_spec: "l".into(),
            window: 16,
            hosts: vec![],
            blocks: vec![],
            namespaces: vec![],
        }
    }

    fn vb(start: u64, end: u64, host_id: u32) -> ValueBlock {
        ValueBlock {
            start,
            end,
            host_id,
            token: 1,
            at_ms: 0,
        }
    }

    #[test]
    fn namespace_blocks_that_share_values_or_sit_above_next_are_reported() {
        let mut r = report();
        r.namespaces.push(NamespaceGrants {
            name: "orders".into(),
            next: 300,
            step: 1,
            blocks: vec![vb(1, 100, 0), vb(100, 200, 1), vb(200, 300, 0)],
        });
        assert_eq!(find_overlaps(&r), vec![]);
        // A returned tail: the block is cut back and `next` went down with it.
        r.namespaces[0].blocks[2].end = 250;
        r.namespaces[0].next = 250;
        assert_eq!(find_overlaps(&r), vec![]);
        // The reproduction of the old return bug: `next` back inside an earlier block.
        r.namespaces[0].next = 1;
        r.namespaces[0].blocks.push(vb(1, 500, 1));
        let found = find_overlaps(&r);
        // (1..100) and (1..500) start together; the wide (1..500) then covers (100..200)
        // and (200..250): every block it shares values with is named.
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().all(|o| o.kind == OverlapKind::NamespaceBlock));
        // An empty block (a tail returned from its start) shares nothing.
        let mut r = report();
        r.namespaces.push(NamespaceGrants {
            name: "n".into(),
            next: 10,
            step: 1,
            blocks: vec![vb(10, 10, 0), vb(1, 10, 1)],
        });
        assert_eq!(find_overlaps(&r), vec![]);
    }

    #[test]
    fn counter_blocks_are_checked_against_each_other_and_the_high_water_mark() {
        let cb = |start, end| CounterBlock {
            start,
            end,
            token: 1,
            at_ms: 0,
        };
        let mut r = report();
        r.blocks.push(PairBlocks {
            host_id: 3,
            shard: 17,
            high_water: 300,
            blocks: vec![cb(0, 100), cb(100, 300)],
        });
        assert_eq!(find_overlaps(&r), vec![]);
        r.blocks[0].blocks.push(cb(250, 400));
        let found = find_overlaps(&r);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].to_string().contains("host 3 shard 17"));
    }

    #[test]
    fn a_token_below_any_earlier_bound_is_an_overlap() {
        let range = |token, start_above_ms, reserved_until_ms| TokenRange {
            token,
            holder: format!("n{token}"),
            start_above_ms,
            reserved_until_ms,
            granted_at_ms: 0,
        };
        let mut r = report();
        r.hosts.push(HostGrants {
            host_id: 0,
            ranges: vec![range(3, 500, 500), range(1, 0, 500), range(2, 500, 500)],
        });
        assert_eq!(find_overlaps(&r), vec![]);
        r.hosts[0].ranges.push(range(4, 400, 900));
        let found = find_overlaps(&r);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("401..=500"), "{}", found[0]);
    }
}
