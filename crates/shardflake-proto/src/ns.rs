//! Namespaces (segment mode): dense per-name counters served from blocks the coordinator
//! persists before it grants them.
//!
//! A namespace issues the values `v >= start` with `v ≡ offset (mod step)`, in increasing
//! blocks: value `first + i·step` for `i` in `0..count` of a [`NsBlockGrant`]. Wire types of
//! the coordinator's `/v1/namespaces` API and of the routing table, the name rule, and the
//! rendezvous order every client and node uses to pick a namespace's serving node.
//!
//! ```
//! use shardflake_proto::ns::{rendezvous_order, validate_name};
//! assert!(validate_name("orders.eu-1").is_ok());
//! assert!(validate_name("Orders").is_err());
//! let order = rendezvous_order("orders", &[3, 1, 2]);
//! assert_eq!(order.len(), 3);
//! // The order depends on the key and the set of hosts, never on the order they are given in.
//! assert_eq!(order, rendezvous_order("orders", &[2, 3, 1]));
//! ```

use serde::{Deserialize, Serialize};

/// Longest namespace name, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// Checks a namespace name: 1 to [`NAME_LEN_MAX`] bytes of lowercase ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or a digit. The error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a namespace name must not be empty".into());
    }
    if name.len() > NAME_LEN_MAX {
        return Err(format!(
            "namespace name is {} bytes long; at most {NAME_LEN_MAX} are allowed",
            name.len()
        ));
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if let Some(bad) = name.chars().find(|&c| !ok(c)) {
        return Err(format!(
            "namespace name {name:?} contains {bad:?}; use lowercase letters, digits, '.', '_' and '-'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "namespace name {name:?} must start with a letter or a digit"
        ));
    }
    Ok(())
}

/// The hosts in `hosts` ordered by rendezvous (highest random weight) hashing on `key`: the
/// first is the namespace's primary, the rest its fallbacks in order. Adding or removing one
/// host moves only the keys whose first choice it is or becomes.
pub fn rendezvous_order(key: &str, hosts: &[u64]) -> Vec<u64> {
    let mut scored: Vec<(u64, u64)> = hosts.iter().map(|&h| (score(key, h), h)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().map(|(_, h)| h).collect()
}

/// FNV-1a over the key and the host id, then the splitmix64 finalizer: stable across builds,
/// platforms and releases (clients and nodes must agree on it).
fn score(key: &str, host: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(host.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Most namespaces one node serves at once. Every limit that follows from it is derived
/// here: a renewal carries at most one usage report per namespace the node serves
/// ([`USAGE_REPORTS_MAX`]), and the coordinator's request bodies are sized to hold that many
/// ([`crate::coord::REQUEST_BODY_BYTES_MAX`]).
pub const NS_PER_NODE_MAX: usize = 1_024;

/// Most namespace usage reports in one renewal: one per namespace a node serves.
pub const USAGE_REPORTS_MAX: usize = NS_PER_NODE_MAX;

/// The longest usage report in JSON: the name and two 20-digit numbers with their keys,
/// quotes, separators and a little whitespace.
pub const USAGE_REPORT_JSON_BYTES_MAX: usize = NAME_LEN_MAX + 96;

/// The newest block a node holds of one namespace, presented with a renewal that follows a
/// failed one ([`crate::coord::RenewRequest::ns_held`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NsHeld {
    /// The namespace.
    pub name: String,
    /// The end (exclusive, a value) of the newest block held, as in a block request's
    /// `after`.
    pub end: u64,
}

/// The longest held-block entry in JSON: the name and one 20-digit number with their keys,
/// quotes, separators and a little whitespace.
pub const NS_HELD_JSON_BYTES_MAX: usize = NAME_LEN_MAX + 48;

/// A node's consumption of one namespace since its previous report (sent with renewals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NsUsage {
    /// The namespace.
    pub name: String,
    /// Values issued since the previous report.
    pub used: u64,
    /// Over how many milliseconds.
    pub over_ms: u64,
}

/// `PUT /v1/namespaces/{name}`: creates a namespace, or updates its block bounds. `start`,
/// `step` and `offset` are fixed at creation; sending other values later is a conflict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// The first value (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Distance between consecutive values (default 1), to interleave with another sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Values are `offset` modulo `step` (default: `start` modulo `step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Smallest block granted to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_min: Option<u64>,
    /// Largest block granted to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_max: Option<u64>,
}

/// A node's share of a namespace, as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceNode {
    /// The node's host id.
    pub host_id: u64,
    /// Forecast consumption, values per second.
    pub forecast_per_s: f64,
    /// The forecast made for the last observed interval, values per second.
    pub last_forecast_per_s: f64,
    /// The consumption observed over that interval, values per second.
    pub last_actual_per_s: f64,
    /// Values in the last block granted to the node.
    pub last_block: u64,
}

/// A namespace and its state (`GET /v1/namespaces`, and the answer to a `PUT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceStatus {
    /// The name.
    pub name: String,
    /// The first value.
    pub start: u64,
    /// Distance between consecutive values.
    pub step: u64,
    /// Values are `offset` modulo `step`.
    pub offset: u64,
    /// Smallest block.
    pub block_min: u64,
    /// Largest block.
    pub block_max: u64,
    /// The first value of the next block to be granted: every value below it was granted
    /// (or given back).
    pub next: u64,
    /// Blocks granted so far.
    pub blocks_granted: u64,
    /// Values given back by nodes that shut down cleanly.
    pub values_returned: u64,
    /// Host ids serving the namespace, in the order they were assigned.
    pub serving: Vec<u64>,
    /// Per node: forecast against actual consumption.
    pub nodes: Vec<NamespaceNode>,
}

/// `GET /v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceList {
    /// Every namespace, by name.
    pub namespaces: Vec<NamespaceStatus>,
}

/// `POST /v1/namespaces/{name}/blocks`: a node asks for its next block, reporting how many
/// values it used over how long since its previous request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NsBlockRequest {
    /// The caller's host id.
    pub host_id: u64,
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: crate::secret::LeaseSecret,
    /// The end (exclusive, a value) of the newest block the caller holds, 0 for none: a retry
    /// whose answer was lost gets the same block again instead of a second one.
    #[serde(default)]
    pub after: u64,
    /// Values used since the previous request.
    #[serde(default)]
    pub used: u64,
    /// Over how many milliseconds.
    #[serde(default)]
    pub over_ms: u64,
}

/// A block of a namespace: the values `start + i·step` for `i` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NsBlockGrant {
    /// The first value.
    pub start: u64,
    /// Values in the block.
    pub count: u64,
    /// Distance between consecutive values.
    pub step: u64,
}

impl NsBlockGrant {
    /// The value after the last one (`start + count·step`), saturating.
    pub fn end(&self) -> u64 {
        self.start
            .saturating_add(self.count.saturating_mul(self.step))
    }
}

/// `POST /v1/namespaces/{name}/return`: a node that stops gives back the values of its newest
/// blocks it never issued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NsReturnRequest {
    /// The caller's host id.
    pub host_id: u64,
    /// The caller's fencing token.
    pub token: u64,
    /// The lease's secret.
    pub secret: crate::secret::LeaseSecret,
    /// The end (exclusive) of the caller's newest block, granted under `token`.
    pub block_end: u64,
    /// The first value of that block the caller did not issue; every value from here to
    /// `block_end` is unused. It must lie inside the block: a return never reaches into an
    /// earlier block.
    pub unused_from: u64,
}

/// The answer to a return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NsReturnResponse {
    /// Values taken back (0 when a later block was granted meanwhile: they stay unused).
    pub returned: u64,
}

/// `DELETE /v1/namespaces/{name}`: what was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceDeleted {
    /// The name.
    pub name: String,
    /// The namespace's `next` when it was deleted: every value it issued lies below it. A
    /// namespace created again under this name starts where it is told (`start`), so give
    /// it a `start` at or above this value to keep its values unique across both.
    pub next: u64,
    /// Host ids of live leases that still held an unreturned block of it (only with
    /// `force=true`; empty otherwise): they issue what they hold and get no further block.
    pub held_by: Vec<u64>,
}

/// `POST /v1/namespaces/{name}/raise`: moves the namespace's `next` up, so that every value
/// granted from now on is at or above `next_at_least` (a database sequence moving to
/// shardflake: above the highest value already in the application's tables). `next` never
/// goes down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NsRaiseRequest {
    /// Every value granted from now on is at or above this (the first value of the
    /// namespace's progression at or above it).
    pub next_at_least: u64,
}

/// A node in the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutedNode {
    /// Its host id.
    pub host_id: u64,
    /// Where clients reach it (the node's advertised URL).
    pub url: String,
}

/// A namespace in the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutedNamespace {
    /// The name.
    pub name: String,
    /// Host ids assigned to serve it; a client orders them with [`rendezvous_order`].
    pub serving: Vec<u64>,
}

/// `GET /v1/routing`: the nodes holding a live lease and the namespace assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoutingTable {
    /// Live nodes with an advertised URL.
    pub nodes: Vec<RoutedNode>,
    /// Namespaces and their serving nodes.
    pub namespaces: Vec<RoutedNamespace>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_reason() {
        for good in [
            "a",
            "orders",
            "invoice-2026",
            "eu.orders_1",
            &"x".repeat(64),
        ] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("Orders", "'O'"),
            ("a/b", "'/'"),
            ("-a", "start with"),
            (&"x".repeat(65) as &str, "65 bytes"),
            ("ordérs", "'é'"),
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_removed_host() {
        let hosts: Vec<u64> = (0..5).collect();
        let keys: Vec<String> = (0..2_000).map(|i| format!("ns-{i}")).collect();
        let before: Vec<u64> = keys
            .iter()
            .map(|k| rendezvous_order(k, &hosts)[0])
            .collect();
        // Every host is first for some keys, none for most.
        for h in &hosts {
            let n = before.iter().filter(|&&x| x == *h).count();
            assert!((250..550).contains(&n), "host {h}: {n} of 2000");
        }
        let without: Vec<u64> = hosts.iter().copied().filter(|&h| h != 2).collect();
        for (k, first) in keys.iter().zip(&before) {
            let now = rendezvous_order(k, &without);
            if *first != 2 {
                assert_eq!(now[0], *first, "{k} moved although its host stayed");
            } else {
                // Its fallback takes over.
                assert_eq!(now[0], rendezvous_order(k, &hosts)[1], "{k}");
            }
        }
    }

    #[test]
    fn a_grant_ends_after_its_last_value() {
        let g = NsBlockGrant {
            start: 7,
            count: 3,
            step: 5,
        };
        assert_eq!(g.end(), 22); // 7, 12, 17
    }
}
