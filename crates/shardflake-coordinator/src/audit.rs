//! The audit trail: one structured line per grant, return, takeover, release, namespace
//! change and refusal of a credential or a lease secret, under the tracing target
//! [`TARGET`]. Each says who (credential name, peer address, certificate name), what (host
//! id, token, range) and, through the subscriber's timestamp, when. The binary writes these
//! lines as JSON whatever the log format (`shardflake coordinator`), so they can be shipped
//! and searched as they are. No line carries a credential or a lease secret (the `token`
//! field is the fencing token, which orders grants and authorises nothing).
//!
//! Reservation extensions and renewals are not audited line by line (a node renews every
//! few seconds); the range each token reserved is in the grant log (`GET /v1/audit`).

use axum::http::Method;
use shardflake_proto::auth::Scope;
use shardflake_proto::coord::{BlockGrant, LeaseGrant, RepairReport};
use shardflake_proto::ns::{NamespaceDeleted, NsBlockGrant};
use shardflake_proto::ErrorCode;

use crate::http::Caller;

/// The tracing target of every audit line.
pub const TARGET: &str = "shardflake::audit";

/// A new lease; `previous_token` is the host id's earlier token when it had one (a standby
/// taking over, a restart, a replacement), so a takeover reads as one.
pub(crate) fn lease_granted(c: &Caller, g: &LeaseGrant, holder: &str, previous_token: Option<u64>) {
    tracing::info!(target: TARGET, event = "lease_granted",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        host_id = g.host_id, token = g.token, previous_token, holder,
        start_above_ms = g.start_above_ms, reserved_until_ms = g.reserved_until_ms);
}

/// A lease given back.
pub(crate) fn lease_released(c: &Caller, host_id: u32, token: u64) {
    tracing::info!(target: TARGET, event = "lease_released",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(), host_id, token);
}

/// A temporal counter block granted.
pub(crate) fn counter_block(c: &Caller, host_id: u32, token: u64, b: &BlockGrant) {
    tracing::info!(target: TARGET, event = "counter_block",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        host_id, token, shard = b.shard, start = b.start, end = b.end);
}

/// A namespace block granted.
pub(crate) fn namespace_block(c: &Caller, name: &str, host_id: u64, token: u64, g: &NsBlockGrant) {
    tracing::info!(target: TARGET, event = "namespace_block",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        namespace = name, host_id, token, start = g.start, end = g.end(), step = g.step);
}

/// A namespace return answered (`returned` may be 0: nothing taken back).
pub(crate) fn namespace_return(
    c: &Caller,
    name: &str,
    host_id: u64,
    token: u64,
    (unused_from, block_end): (u64, u64),
    returned: u64,
) {
    tracing::info!(target: TARGET, event = "namespace_return",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        namespace = name, host_id, token, unused_from, block_end, returned);
}

/// A namespace created or changed.
pub(crate) fn namespace_written(c: &Caller, name: &str, block_min: u64, block_max: u64) {
    tracing::info!(target: TARGET, event = "namespace_written",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        namespace = name, block_min, block_max);
}

/// A namespace deleted (`forced`: while live leases held blocks of it).
pub(crate) fn namespace_deleted(c: &Caller, d: &NamespaceDeleted, forced: bool) {
    tracing::warn!(target: TARGET, event = "namespace_deleted",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        namespace = %d.name, next = d.next, forced, held_by = ?d.held_by);
}

/// A namespace's next value raised.
pub(crate) fn namespace_raised(c: &Caller, name: &str, asked: u64, next: u64) {
    tracing::info!(target: TARGET, event = "namespace_raised",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        namespace = name, asked, next);
}

/// A store repaired after it went back.
pub(crate) fn store_repaired(c: &Caller, r: &RepairReport) {
    tracing::warn!(target: TARGET, event = "store_repaired",
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        generation_before = r.generation_before, generation_after = r.generation_after,
        namespaces = r.namespaces.len(), hosts_raised = r.hosts_raised,
        token_before = r.token_before, token_after = r.token_after);
}

/// A request without a valid credential.
pub(crate) fn auth_failed(c: &Caller, reason: &str, method: &Method, path: &str) {
    tracing::warn!(target: TARGET, event = "auth_failed", reason,
        peer = %c.peer_text(), cert = %c.cert_text(), method = %method, path);
}

/// A credential used outside its scope.
pub(crate) fn forbidden(c: &Caller, needed: Scope, method: &Method, path: &str) {
    tracing::warn!(target: TARGET, event = "forbidden",
        credential = %c.credential, scope = ?c.scope, needed = %needed,
        peer = %c.peer_text(), cert = %c.cert_text(), method = %method, path);
}

/// A fenced call refused for a reason that points at a caller that is not the holder, or a
/// holder that misreports its block: a wrong secret, a stale token, a return outside its
/// block.
pub(crate) fn refused(c: &Caller, code: ErrorCode, method: &Method, path: &str) {
    tracing::warn!(target: TARGET, event = "refused", code = %code,
        credential = %c.credential, peer = %c.peer_text(), cert = %c.cert_text(),
        method = %method, path);
}
