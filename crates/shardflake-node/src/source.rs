//! Where ids come from: a generator (Snowflake-family or temporal) and, in cluster mode, the
//! lease that fences it. The two are independent: any generator runs with or without a lease.

use std::sync::Arc;

use shardflake::{
    Clock, GenerateError, IdRange, SnowflakeGenerator, SnowflakeStats, TemporalGenerator,
};
use shardflake_client::ActiveLease;

/// The clock the node runs on.
pub type DynClock = Arc<dyn Clock>;

/// Runs blocking work (a file written durably) on tokio's blocking pool, off the runtime's
/// threads; in place when the node's clock is not real time ([`Clock::waits_in_real_time`]
/// answers `false`: tests and the simulation), where work on another thread would finish at
/// a moment of the real clock that simulated time does not follow, and a seed would not
/// replay exactly.
pub(crate) async fn off_runtime<T: Send + 'static>(
    clock: &DynClock,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if clock.waits_in_real_time() {
        tokio::task::spawn_blocking(work).await
    } else {
        Ok(work())
    }
}

/// The generator of a node.
// The Snowflake generator stays inline: boxing it would add a pointer chase to every id.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Generator {
    /// A Snowflake-family layout, bounded by its reservation.
    Snowflake(SnowflakeGenerator<DynClock>),
    /// The temporal layout, fed counter blocks (shared with the lease that supplies them).
    Temporal(Arc<TemporalGenerator<DynClock>>),
}

impl Generator {
    #[inline]
    fn next_id(&self) -> Result<u64, GenerateError> {
        match self {
            Generator::Snowflake(g) => g.next_id(),
            Generator::Temporal(g) => g.next_id(),
        }
    }

    #[inline]
    fn next_range(&self, max: u64) -> Result<IdRange, GenerateError> {
        match self {
            Generator::Snowflake(g) => g.next_range(max),
            Generator::Temporal(g) => g.next_range(max),
        }
    }

    /// Slow-path counters of a Snowflake generator.
    pub(crate) fn stats(&self) -> Option<SnowflakeStats> {
        match self {
            Generator::Snowflake(g) => Some(g.stats()),
            Generator::Temporal(_) => None,
        }
    }
}

/// A generator and, in cluster mode, the lease it issues under. Swapped as a whole: every
/// lease gets its own generator, and a node that may not issue has none.
pub(crate) struct IdSource {
    pub(crate) generator: Generator,
    /// Cluster mode: the lease. An id counts only if the lease is still valid *after* it was
    /// generated, so a process paused between the two (GC, `SIGSTOP`) cannot hand out an id
    /// made after its lease ran out.
    pub(crate) lease: Option<Arc<ActiveLease>>,
}

impl IdSource {
    /// A standalone generator.
    pub(crate) fn standalone(generator: Generator) -> Self {
        Self {
            generator,
            lease: None,
        }
    }

    /// The lease's host id, token and secret, while it is valid (cluster mode).
    pub(crate) fn lease_ref(&self) -> Option<crate::namespaces::LeaseRef> {
        self.lease
            .as_ref()
            .filter(|l| l.is_valid())
            .map(|l| crate::namespaces::LeaseRef {
                host_id: l.host_id,
                token: l.token,
                secret: l.secret().clone(),
            })
    }

    /// A generator fenced by `lease`.
    pub(crate) fn leased(generator: Generator, lease: Arc<ActiveLease>) -> Self {
        Self {
            generator,
            lease: Some(lease),
        }
    }

    #[inline]
    pub(crate) fn next_id(&self) -> Result<u64, GenerateError> {
        let id = self.generator.next_id()?;
        self.check_lease()?;
        Ok(id)
    }

    #[inline]
    pub(crate) fn next_range(&self, max: u64) -> Result<IdRange, GenerateError> {
        let r = self.generator.next_range(max)?;
        self.check_lease()?;
        Ok(r)
    }

    #[inline]
    fn check_lease(&self) -> Result<(), GenerateError> {
        match &self.lease {
            Some(lease) => lease.check(),
            None => Ok(()),
        }
    }
}
