//! Re-introduced bugs, one switch each, for the simulation's mutant table
//! (`scripts/sim-mutants.sh`): the table proves that the simulation (or a named component
//! test) catches every bug a fix once removed, and so fails CI when the proof weakens.
//!
//! A switch exists only in a build with the `mutants` feature, which only the simulation
//! asks for. Without it, [`active`] is the constant `false` and every site compiles to the
//! correct code alone. With it, every switch is off until a process turns one on: the
//! simulation with `--mutant NAME`, a component test with [`activate_from_env`]. Nothing in
//! the node's or the coordinator's programs turns one on.

/// The table: each bug's doc, variant, number and name, written once.
macro_rules! mutants {
    ($($(#[doc = $doc:literal])+ $variant:ident = $n:literal, $name:literal;)+) => {
        /// A bug the mutant table re-introduces. The number and name are the table's row.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum Mutant {
            $($(#[doc = $doc])+ $variant = $n,)+
        }

        impl Mutant {
            /// Every mutant, in the table's order.
            pub const ALL: &'static [Mutant] = &[$(Mutant::$variant),+];

            /// The table's name: the number and the bug in words, `4-a-batch-continues-on-…`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Mutant::$variant => concat!(stringify!($n), "-", $name),)+
                }
            }
        }
    };
}

mutants! {
    /// The lease keeper raises its local reservation before the coordinator made the
    /// extension durable.
    KeeperRaisesTheReservationBeforeItIsDurable = 1,
        "keeper-raises-the-reservation-before-it-is-durable";
    /// A successor lease's generator starts at its predecessor's bound, not above it.
    SuccessorStartsAtTheBoundNotAboveIt = 2, "successor-starts-at-the-bound-not-above-it";
    /// A takeover grant starts above the previous holder's last renewal, not its bound.
    TakeoverGrantStartsAboveTheLastRenewalNotTheBound = 3,
        "takeover-grant-starts-above-the-last-renewal-not-the-bound";
    /// A batch interrupted by a lease change keeps the old generator's ids.
    ABatchContinuesOnTheNextLeasesGenerator = 4,
        "a-batch-continues-on-the-next-leases-generator";
    /// An extension is answered with the bound asked for, not the one persisted.
    CoordinatorAnswersTheAskedBoundNotThePersistedOne = 5,
        "coordinator-answers-the-asked-bound-not-the-persisted-one";
    /// A revoked reservation is extended again by a late answer.
    RevocationIsNotFinal = 6, "revocation-is-not-final";
    /// An extension is not fenced by the lease's token (nor its secret).
    ExtensionsAreNotFencedByTheToken = 7, "extensions-are-not-fenced-by-the-token";
    /// The keeper measures a lease from the renewal's answer, not from its request.
    LeaseMeasuredFromTheAnswerNotTheRequest = 8,
        "lease-measured-from-the-answer-not-the-request";
    /// The coordinator expires leases on its wall clock, not its monotonic clock.
    CoordinatorExpiresLeasesOnItsWallClock = 9,
        "coordinator-expires-leases-on-its-wall-clock";
    /// The lease secret is not checked.
    TheLeaseSecretIsNotChecked = 10, "the-lease-secret-is-not-checked";
    /// A namespace return may reach below the caller's newest block.
    AReturnReachesBelowTheNewestBlock = 11, "a-return-reaches-below-the-newest-block";
    /// A renewal's usage reports go to the store in one transaction, before the renewal is
    /// answered, and their failure fails it.
    UsageReportsFailTheRenewal = 12, "usage-reports-fail-the-renewal";
    /// A store put back to an earlier snapshot is not noticed: neither a caller's generation
    /// stamp above the store's nor a commit revision at or below one seen before.
    ARestoreIsNotDetected = 13, "a-restore-is-not-detected";
    /// The embedded store keeps its database handle after a failed write (a full disk), so
    /// it refuses every write after the disk has room again.
    AFullDiskIsNotRecovered = 14, "a-full-disk-is-not-recovered";
}

impl Mutant {
    /// The mutant named `name` (its full name, or its number alone).
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL
            .iter()
            .copied()
            .find(|m| m.name() == name || (*m as u32).to_string() == name)
    }
}

#[cfg(feature = "mutants")]
static ACTIVE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether the bug `m` is switched on in this process: always `false` without the
/// `mutants` feature.
#[inline(always)]
pub fn active(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == m as u32
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

/// Switches the bug `m` on for the rest of this process (one at a time).
///
/// # Errors
/// Without the `mutants` feature: there is no switch to turn.
pub fn activate(m: Mutant) -> Result<(), String> {
    #[cfg(feature = "mutants")]
    {
        ACTIVE.store(m as u32, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    #[cfg(not(feature = "mutants"))]
    {
        Err(format!(
            "cannot switch on the mutant {}: built without the `mutants` feature",
            m.name()
        ))
    }
}

/// For a component test that catches a mutant: switches on the bug that
/// `SHARDFLAKE_MUTANT` names, if any (how `scripts/sim-mutants.sh` runs the test with the bug
/// in). Panics on a name that is no mutant, or when the build cannot switch it on.
pub fn activate_from_env() {
    let Ok(name) = std::env::var("SHARDFLAKE_MUTANT") else {
        return;
    };
    let m = Mutant::from_name(&name)
        .unwrap_or_else(|| panic!("SHARDFLAKE_MUTANT={name}: no such mutant"));
    activate(m).unwrap_or_else(|e| panic!("SHARDFLAKE_MUTANT={name}: {e}"));
    // scripts/sim-mutants.sh requires this line: a test that fails for another reason is
    // not a catch.
    eprintln!("mutant {} switched on", m.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_is_found_by_its_name_and_its_number() {
        for (i, &m) in Mutant::ALL.iter().enumerate() {
            assert_eq!(m as usize, i + 1, "the table is in number order");
            assert_eq!(Mutant::from_name(m.name()), Some(m));
            assert_eq!(Mutant::from_name(&(i + 1).to_string()), Some(m));
            assert!(m.name().starts_with(&format!("{}-", i + 1)), "{}", m.name());
        }
        assert_eq!(
            Mutant::from_name(&(Mutant::ALL.len() + 1).to_string()),
            None
        );
        assert_eq!(Mutant::from_name("revocation-is-not-final"), None);
    }
}
