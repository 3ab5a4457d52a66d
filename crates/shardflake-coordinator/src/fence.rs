//! The one check before anything is done under a lease: [`Coordinator::fenced`].
//!
//! A fenced operation (renewal, reservation extension, release, counter block, namespace
//! block, namespace return) names a host id, a fencing token and the lease's secret. The
//! token orders grants: only the host id's current token may act, so a holder that lost its
//! lease to a successor can never raise a bound the successor starts above. The secret says
//! who may act: the holder drew it when it acquired the lease, the coordinator stored only its
//! hash, and nobody else was ever shown it, so a caller that read the host id and the token
//! from `GET /v1/hosts` still cannot renew, extend, take blocks or return values for it. Every
//! fenced operation goes through this one function; none re-types the checks.

use ring::digest;
use shardflake_proto::coord::{LeaseSecret, LeaseState};
use subtle::ConstantTimeEq;

use crate::coordinator::Coordinator;
use crate::error::CoordError;
use crate::records::HostRecord;

/// Whether a fenced operation needs the lease to be live, or only its own token and secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Writes a bound or grants values: the lease must be live.
    Required,
    /// Gives something back (a release, a namespace return): the holder may do it just
    /// after its lease expired, which only frees things sooner.
    NotRequired,
}

/// The stored form of a secret: SHA-256 of its text, in hex. A secret has 128 random bits,
/// so a fast hash is enough: there is nothing to guess from a dictionary.
pub(crate) fn secret_hash(secret: &LeaseSecret) -> String {
    let d = digest::digest(&digest::SHA256, secret.expose().as_bytes());
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `secret` is the one `rec`'s current lease was granted with, compared in constant
/// time. A record without a hash (written before secrets existed) matches nothing: its
/// holder must acquire again.
pub(crate) fn secret_matches(rec: &HostRecord, secret: &LeaseSecret) -> bool {
    if !secret.is_valid() || rec.secret_hash.is_empty() {
        return false;
    }
    let given = secret_hash(secret);
    bool::from(given.as_bytes().ct_eq(rec.secret_hash.as_bytes()))
}

impl Coordinator {
    /// Loads `host_id`'s record and checks, in this order, that `token` is its current token
    /// (`StaleToken`), that `secret` is the lease's (`SecretMismatch`) and, when `liveness`
    /// asks for it, that the lease is live (`LeaseExpired`). Returns the record and the
    /// version every write of the operation must be conditioned on, so that the checks still
    /// hold when it commits.
    pub(crate) async fn fenced(
        &self,
        host_id: u32,
        token: u64,
        secret: &LeaseSecret,
        liveness: Liveness,
    ) -> Result<(HostRecord, u64), CoordError> {
        let (rec, version) = self.current_host(host_id).await?;
        if rec.token != token {
            return Err(CoordError::StaleToken {
                host_id,
                token,
                current: rec.token,
            });
        }
        if !secret_matches(&rec, secret)
            && !shardflake::mutant::active(shardflake::mutant::Mutant::TheLeaseSecretIsNotChecked)
        {
            self.metrics.secret_mismatches.inc();
            return Err(CoordError::SecretMismatch { host_id, token });
        }
        if liveness == Liveness::Required
            && self.lease_state(&rec, self.time.mono_ms()) != LeaseState::Live
        {
            return Err(CoordError::LeaseExpired { host_id, token });
        }
        Ok((rec, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_of_the_text_and_matches_only_its_secret() {
        let s = LeaseSecret::from_bytes([0; 16]);
        // `printf 00000000000000000000000000000000 | sha256sum`
        assert_eq!(
            secret_hash(&s),
            "84e0c0eafaa95a34c293f278ac52e45ce537bab5e752a00e6959a13ae103b65a"
        );
        let other = LeaseSecret::from_bytes([1; 16]);
        assert_ne!(secret_hash(&s), secret_hash(&other));
    }
}
