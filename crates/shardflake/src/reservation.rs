//! The reservation bound: the highest timestamp a generator may issue.
//!
//! A generator never issues an id whose timestamp is above [`Reservation::until_ms`]. Whoever
//! owns the durability (a local state file in standalone mode, the coordinator in cluster
//! mode) persists a bound first and only then calls [`Reservation::extend_to`]. The generator
//! asks for more through the [`Reserver`] when headroom runs low, without waiting: the hot
//! path never does I/O.

use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering};

/// Extends reservations on the generator's behalf.
pub trait Reserver: Send + Sync {
    /// Asks for the bound to be extended to at least `needed_until_ms` (Unix ms).
    ///
    /// Called from the id hot path when headroom falls below the low-water mark, so it must
    /// return at once (wake a background task; never block on I/O). Repeated calls with the
    /// same or a lower value are suppressed by the caller.
    fn request_extension(&self, needed_until_ms: u64);
}

/// A reserver that does nothing: the bound only moves when the owner extends it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReserver;

impl Reserver for NoReserver {
    fn request_extension(&self, _needed_until_ms: u64) {}
}

/// A shared, monotonically extended bound on issued timestamps.
///
/// ```
/// use std::sync::Arc;
/// use shardflake::{NoReserver, Reservation};
/// let r = Reservation::new(Arc::new(NoReserver), 500);
/// assert_eq!(r.until_ms(), 0);
/// r.extend_to(10_000);
/// r.extend_to(9_000); // never moves backwards
/// assert_eq!(r.until_ms(), 10_000);
/// r.revoke();
/// assert!(r.is_revoked());
/// r.extend_to(20_000); // a late extension cannot undo a revocation
/// assert!(r.is_revoked());
/// ```
pub struct Reservation {
    /// The bound, or [`REVOKED`]. Revocation lives in the same word as the bound so that an
    /// extension racing with a revocation either lands before it (and is then wiped) or sees
    /// it and does nothing: a revoked reservation never issues again.
    until_ms: AtomicU64,
    requested_ms: AtomicU64,
    low_water_ms: u64,
    reserver: Arc<dyn Reserver>,
}

/// The bound of a revoked reservation. Every real timestamp is above it, so the hot path's
/// single comparison fails; nothing reserved yet is [`NOTHING_RESERVED`], one above it.
const REVOKED: u64 = 0;
/// The bound of a reservation nothing has been reserved under yet (Unix ms 1, long past).
const NOTHING_RESERVED: u64 = 1;

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("until_ms", &self.until_ms())
            .field("revoked", &self.is_revoked())
            .field("low_water_ms", &self.low_water_ms)
            .finish()
    }
}

impl Reservation {
    /// A reservation with nothing reserved yet. When the headroom above the issued
    /// timestamps drops below `low_water_ms`, `reserver` is asked for more.
    pub fn new(reserver: Arc<dyn Reserver>, low_water_ms: u64) -> Self {
        Self {
            until_ms: AtomicU64::new(NOTHING_RESERVED),
            requested_ms: AtomicU64::new(0),
            low_water_ms,
            reserver,
        }
    }

    /// The reserved bound, Unix ms, inclusive (0: nothing reserved, or revoked).
    pub fn until_ms(&self) -> u64 {
        match self.until_ms.load(Ordering::Acquire) {
            NOTHING_RESERVED => 0,
            until => until,
        }
    }

    /// Raises the bound to `until_ms` (never lowers it). Call only after the bound is durable.
    /// Does nothing once the reservation is revoked.
    pub fn extend_to(&self, until_ms: u64) {
        let _ = self
            .until_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                if crate::mutant::active(crate::mutant::Mutant::RevocationIsNotFinal) {
                    return (until_ms > cur || cur == REVOKED).then_some(until_ms);
                }
                (cur != REVOKED && until_ms > cur).then_some(until_ms)
            });
    }

    /// Stops all issuing for good: the lease behind the reservation is gone. A holder that
    /// gets a new lease builds a new generator with a new reservation.
    pub fn revoke(&self) {
        self.until_ms.store(REVOKED, Ordering::Release);
    }

    /// True after [`Reservation::revoke`].
    pub fn is_revoked(&self) -> bool {
        self.until_ms.load(Ordering::Acquire) == REVOKED
    }

    /// The low-water mark in ms.
    pub fn low_water_ms(&self) -> u64 {
        self.low_water_ms
    }

    /// Checks that `ts_ms` may be issued, asking for an extension when headroom is low.
    #[inline]
    pub(crate) fn check(&self, ts_ms: u64) -> Result<(), crate::GenerateError> {
        let until = self.until_ms.load(Ordering::Acquire);
        if ts_ms > until {
            if until == REVOKED {
                return Err(crate::GenerateError::LeaseLost);
            }
            self.request(ts_ms.saturating_add(self.low_water_ms));
            return Err(crate::GenerateError::ReservationExhausted {
                reserved_until_ms: if until == NOTHING_RESERVED { 0 } else { until },
                needed_ms: ts_ms,
            });
        }
        if until - ts_ms < self.low_water_ms {
            self.request(ts_ms.saturating_add(self.low_water_ms));
        }
        Ok(())
    }

    #[cold]
    fn request(&self, needed: u64) {
        if self.requested_ms.fetch_max(needed, Ordering::AcqRel) < needed {
            self.reserver.request_extension(needed);
        }
    }
}
