//! ULID (<https://github.com/ulid/spec>): 48 bits of Unix milliseconds and 80 random bits,
//! written as 26 characters of Crockford base32.
//!
//! Monotonic as the spec's "Monotonicity" section describes: within the same millisecond
//! the random component is incremented by one, and if it would overflow "the generation will
//! fail" ([`GenerateError::MonotonicOverflow`]). When the clock steps backwards the generator
//! keeps its last timestamp and increments the same way, so its ids always increase.
//!
//! Two ways to generate:
//! - [`UlidGenerator`]: an instance with an injectable clock and randomness, `&mut self`.
//! - [`next`]: a thread-local generator on the [`CoarseClock`]; the fastest path, with ids
//!   increasing per thread (not across threads).
//!
//! [`next`] is fork-safe on Unix: in a child process it starts over with fresh randomness.
//! A [`UlidGenerator`] is a plain value that `fork()` copies as is, so a process that forks
//! must not go on using the same generator on both sides.
//!
//! ```
//! use shardflake::ulid::{self, Ulid};
//!
//! let a = ulid::next()?;
//! let b = ulid::next()?;
//! assert!(a < b);
//! assert_eq!(b.to_string().len(), 26);
//! assert_eq!(b.to_string().parse::<Ulid>()?, b);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::str::FromStr;

use crate::clock::{Clock, SystemClock};
use crate::encode::{CROCKFORD_ALPHABET, CROCKFORD_STRICT};
use crate::error::{truncate_input, DecodeError, GenerateError};
use crate::fast::{coarse_now_raw, fork_generation, CoarseClock, FastRng, RandomSource};
use crate::layout::format_rfc3339_ms;

/// Width of the random component.
pub const ULID_RANDOM_BITS: u32 = 80;

/// The largest timestamp a ULID holds (48 bits of Unix ms, in the year 10889).
pub const ULID_TIMESTAMP_MAX_MS: u64 = (1 << 48) - 1;

/// Length of the canonical text.
pub const ULID_TEXT_LEN: usize = 26;

const RANDOM_MAX: u128 = (1 << ULID_RANDOM_BITS) - 1;

/// A ULID: 48-bit Unix-millisecond timestamp, 80-bit random component.
///
/// Every 128-bit value is a ULID. Orders by value, which is also time order and the order of
/// the text. Displays as 26 uppercase Crockford base32 characters; parses either case and,
/// as the spec requires, rejects characters outside the alphabet (`I`, `L`, `O`, `U` too)
/// and text above `7ZZZZZZZZZZZZZZZZZZZZZZZZZ`.
///
/// ```
/// use shardflake::ulid::Ulid;
/// // The spec's example ULID and the ulid/javascript README's seed-time example.
/// let id: Ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse()?;
/// assert_eq!(id.timestamp_ms(), 1_469_922_850_259);
/// let seeded: Ulid = "01aryz6s41tsv4rrffq69g5fav".parse()?;
/// assert_eq!(seeded.timestamp_ms(), 1_469_918_176_385);
/// assert_eq!(seeded.random(), id.random());
/// assert_eq!(seeded.to_string(), "01ARYZ6S41TSV4RRFFQ69G5FAV");
/// assert!("81ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<Ulid>().is_err()); // above 2^128 - 1
/// assert!("01ARZ3NDEKTSV4RRFFQ69G5FAU".parse::<Ulid>().is_err()); // U is not base32
/// # Ok::<(), shardflake::DecodeError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(u128);

impl Ulid {
    /// Wraps a 128-bit value.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// From the 16 bytes in network order (the spec's binary layout).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }

    /// Builds a ULID from a timestamp and a random component; bits above each field's width
    /// are ignored.
    ///
    /// ```
    /// use shardflake::ulid::Ulid;
    /// assert_eq!(Ulid::from_parts(1_469_918_176_385, 0).to_string(), "01ARYZ6S410000000000000000");
    /// ```
    pub const fn from_parts(timestamp_ms: u64, random: u128) -> Self {
        Self(
            ((timestamp_ms & ULID_TIMESTAMP_MAX_MS) as u128) << ULID_RANDOM_BITS
                | random & RANDOM_MAX,
        )
    }

    /// The 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The 16 bytes in network order (the spec's binary layout).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub const fn timestamp_ms(self) -> u64 {
        (self.0 >> ULID_RANDOM_BITS) as u64
    }

    /// The 80-bit random component.
    pub const fn random(self) -> u128 {
        self.0 & RANDOM_MAX
    }

    /// The timestamp as RFC 3339 UTC with milliseconds.
    pub fn time(self) -> String {
        format_rfc3339_ms(self.timestamp_ms())
    }
}

impl fmt::Display for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ULID_TEXT_LEN];
        for (i, b) in buf.iter_mut().rev().enumerate() {
            *b = CROCKFORD_ALPHABET[(self.0 >> (5 * i)) as usize & 0x1f];
        }
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&buf).expect("ASCII"))
    }
}

impl fmt::Debug for Ulid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ulid({self})")
    }
}

impl FromStr for Ulid {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| DecodeError::Syntax {
            input: truncate_input(s),
            encoding: "ULID",
            reason,
        };
        if s.len() != ULID_TEXT_LEN {
            return Err(err(format!(
                "expected {ULID_TEXT_LEN} characters, got {}",
                s.chars().count()
            )));
        }
        let mut value: u128 = 0;
        for (i, c) in s.chars().enumerate() {
            let digit = if c.is_ascii() {
                CROCKFORD_STRICT[c as usize]
            } else {
                u8::MAX
            };
            if digit >= 32 {
                return Err(err(format!(
                    "invalid character {c:?} at position {} (Crockford base32 excludes I, L, O, U)",
                    i + 1
                )));
            }
            if i == 0 && digit > 7 {
                return Err(err(format!(
                    "first character {c:?} is above '7': the value would exceed 128 bits"
                )));
            }
            value = value << 5 | u128::from(digit);
        }
        Ok(Self(value))
    }
}

impl From<Ulid> for u128 {
    fn from(id: Ulid) -> u128 {
        id.0
    }
}

impl From<u128> for Ulid {
    fn from(value: u128) -> Ulid {
        Ulid(value)
    }
}

/// A monotonic ULID generator (see the [module docs](self)).
///
/// `next_id` takes `&mut self`: the state is a few words and the fast path has no atomic
/// operation and, within a millisecond, no random draw. To share one generator between
/// threads put it in a `Mutex`; for the fastest path use one per thread, or [`next`].
///
/// Reproducing the spec's monotonicity example:
///
/// ```
/// use shardflake::{ulid::{Ulid, UlidGenerator}, GenerateError, ManualClock};
///
/// let first: Ulid = "01BX5ZZKBKACTAV9WEVGEMMVRZ".parse()?;
/// let mut g = UlidGenerator::with_clock(ManualClock::new(first.timestamp_ms()))
///     .with_random(move || first.random());
/// assert_eq!(g.next_id()?.to_string(), "01BX5ZZKBKACTAV9WEVGEMMVRZ");
/// assert_eq!(g.next_id()?.to_string(), "01BX5ZZKBKACTAV9WEVGEMMVS0");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct UlidGenerator<C: Clock = SystemClock> {
    clock: C,
    random: RandomSource,
    state: State,
}

/// The monotonic state shared by [`UlidGenerator`] and the thread-local [`next`]: the last
/// issued id as two words, so that the fast path touches only the low one.
#[derive(Debug, Clone, Copy)]
struct State {
    /// The first millisecond that starts a fresh random component: one past the last issued
    /// timestamp (0 before the first id, so that any clock reading starts one).
    fresh_from_ms: u64,
    /// The last issued id's top 64 bits: timestamp and the top 16 random bits.
    hi: u64,
    /// The last issued id's low 64 random bits.
    lo: u64,
}

impl State {
    const NEW: State = State {
        fresh_from_ms: 0,
        hi: 0,
        lo: 0,
    };

    /// The fast path: the same millisecond (or a clock behind it), and an increment that
    /// does not carry out of the low word.
    #[inline(always)]
    fn next_same_ms(&mut self, now_ms: u64) -> Option<Ulid> {
        if now_ms < self.fresh_from_ms && self.lo != u64::MAX {
            self.lo += 1;
            Some(self.id())
        } else {
            None
        }
    }

    #[inline(always)]
    fn id(&self) -> Ulid {
        Ulid(u128::from(self.hi) << 64 | u128::from(self.lo))
    }

    /// A new millisecond, a carry into the top random bits, or the spec's overflow error.
    ///
    /// Takes and returns the state by value so that callers' loops can keep it in registers.
    #[cold]
    #[inline(never)]
    fn next_slow(
        mut self,
        now_ms: u64,
        random: impl FnOnce() -> u128,
    ) -> (State, Result<Ulid, GenerateError>) {
        if now_ms < self.fresh_from_ms {
            // Same millisecond. The thread-local `next` also lands here whenever the coarse
            // clock was parked, with the low word anywhere: then a plain increment is right.
            if self.lo != u64::MAX {
                self.lo += 1;
                return (self, Ok(self.id()));
            }
            // The low word is all ones: carry, unless the random component is all ones.
            if self.hi & 0xffff == 0xffff {
                let ms = self.fresh_from_ms - 1;
                return (self, Err(GenerateError::MonotonicOverflow { ms }));
            }
            self.hi += 1;
            self.lo = 0;
            return (self, Ok(self.id()));
        }
        if now_ms > ULID_TIMESTAMP_MAX_MS {
            let overflow_at = format_rfc3339_ms(ULID_TIMESTAMP_MAX_MS + 1);
            return (self, Err(GenerateError::TimestampOverflow { overflow_at }));
        }
        let id = u128::from(now_ms) << ULID_RANDOM_BITS | random() & RANDOM_MAX;
        self.hi = (id >> 64) as u64;
        self.lo = id as u64;
        self.fresh_from_ms = now_ms + 1;
        (self, Ok(Ulid(id)))
    }
}

impl Default for UlidGenerator<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl UlidGenerator<SystemClock> {
    /// A generator on the system clock with OS-seeded randomness.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl<C: Clock> UlidGenerator<C> {
    /// A generator on `clock` with OS-seeded randomness.
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            random: RandomSource::fast(FastRng::from_os()),
            state: State::NEW,
        }
    }

    /// Replaces the randomness with a [`FastRng`] seeded with `seed`: deterministic ids for
    /// tests and simulations only.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.random = RandomSource::fast(FastRng::from_seed(seed));
        self
    }

    /// Replaces the randomness with `random`, called once for each new millisecond; its low
    /// 80 bits are the random component of that millisecond's first id.
    pub fn with_random(mut self, random: impl FnMut() -> u128 + Send + 'static) -> Self {
        self.random = RandomSource::Hook(Box::new(random));
        self
    }

    /// The clock this generator reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The next id: greater than every id this generator issued before.
    ///
    /// Fails with [`GenerateError::MonotonicOverflow`] when the random component is already
    /// all ones within the current millisecond (retry in the next one), and with
    /// [`GenerateError::TimestampOverflow`] if the clock reads beyond the year 10889.
    #[inline]
    pub fn next_id(&mut self) -> Result<Ulid, GenerateError> {
        let now_ms = self.clock.now_ms();
        match self.state.next_same_ms(now_ms) {
            Some(id) => Ok(id),
            None => {
                let id;
                (self.state, id) = self.state.next_slow(now_ms, || self.random.next_u128());
                id
            }
        }
    }

    /// The timestamp of the last issued id in Unix ms, or `None` before the first id.
    pub fn last_issued_ms(&self) -> Option<u64> {
        self.state.fresh_from_ms.checked_sub(1)
    }

    /// How far the last issued timestamp is ahead of the clock now, in ms (0 if not ahead);
    /// ahead only when the clock stepped back.
    pub fn ahead_ms(&self) -> u64 {
        self.last_issued_ms()
            .map_or(0, |ms| ms.saturating_sub(self.clock.now_ms()))
    }
}

/// The thread-local generator behind [`next`]: initialized at compile time and free of
/// destructors, so reaching it costs no lazy-initialization check, with one `Cell` per word
/// so the fast path loads and stores exactly the words it uses. The RNG is seeded on the
/// first slow path, which is always the first call, and again on the first call in a forked
/// child.
struct Local {
    fresh_from_ms: Cell<u64>,
    hi: Cell<u64>,
    lo: Cell<u64>,
    rng: RefCell<FastRng>,
    /// The fork generation the RNG was seeded in, or [`NEVER_SEEDED`]. Only the slow path
    /// reads it.
    seeded_in: Cell<u64>,
}

/// `Local::seeded_in` before the first id: no process reaches this many forks.
const NEVER_SEEDED: u64 = u64::MAX;

thread_local! {
    static LOCAL: Local = const {
        Local {
            fresh_from_ms: Cell::new(State::NEW.fresh_from_ms),
            hi: Cell::new(State::NEW.hi),
            lo: Cell::new(State::NEW.lo),
            rng: RefCell::new(FastRng::UNSEEDED),
            seeded_in: Cell::new(NEVER_SEEDED),
        }
    };
}

/// Called by the fork handler in the child, on the thread that forked: a `fresh_from_ms` of
/// 0 fails the fast path's check whatever the clock reads, so the next id takes the slow
/// path, which sees the new fork generation and starts over. Only a store: the thread-local
/// needs no initialization, so reaching it allocates nothing.
#[cfg(unix)]
pub(crate) fn after_fork_in_child() {
    LOCAL.with(|local| local.fresh_from_ms.set(0));
}

/// The next ULID from this thread's generator on the [`CoarseClock`].
///
/// Ids from one thread strictly increase; ids from different threads are unique (each thread
/// seeds its own generator from the OS) but not ordered with each other. Timestamps may be up
/// to about a millisecond behind the system clock, never ahead. No system call per id.
/// Fails only as [`UlidGenerator::next_id`] does.
///
/// Fork-safe on Unix: in the child of a `fork()`, the first call starts the thread's
/// generator over as a new one, reseeded from the OS, so the child's ids share nothing with
/// the parent's (they increase from there, not necessarily past the parent's last id), and
/// the child's coarse clock runs on a refresher thread of its own.
///
/// ```
/// let ids: Vec<_> = (0..1000).map(|_| shardflake::ulid::next().unwrap()).collect();
/// assert!(ids.windows(2).all(|w| w[0] < w[1]));
/// ```
#[inline]
pub fn next() -> Result<Ulid, GenerateError> {
    // A parked coarse clock reads above every millisecond, so it takes the slow path.
    let raw_ms = coarse_now_raw();
    LOCAL.with(|local| {
        let lo = local.lo.get();
        if raw_ms < local.fresh_from_ms.get() && lo != u64::MAX {
            local.lo.set(lo + 1);
            return Ok(Ulid(u128::from(local.hi.get()) << 64 | u128::from(lo + 1)));
        }
        next_local_slow(local)
    })
}

#[cold]
#[inline(never)]
fn next_local_slow(local: &Local) -> Result<Ulid, GenerateError> {
    let now_ms = CoarseClock.now_ms();
    let mut rng = local.rng.borrow_mut();
    let generation = fork_generation();
    if local.seeded_in.get() != generation {
        // This thread's first id, or its first in a forked child, whose state is a copy of
        // the parent's: start over as a new generator, so that no id here derives from
        // random state or a random component the parent also has.
        *rng = FastRng::from_os();
        local.fresh_from_ms.set(State::NEW.fresh_from_ms);
        local.hi.set(State::NEW.hi);
        local.lo.set(State::NEW.lo);
        local.seeded_in.set(generation);
    }
    let state = State {
        fresh_from_ms: local.fresh_from_ms.get(),
        hi: local.hi.get(),
        lo: local.lo.get(),
    };
    let (state, id) = state.next_slow(now_ms, || rng.next_u128());
    local.fresh_from_ms.set(state.fresh_from_ms);
    local.hi.set(state.hi);
    local.lo.set(state.lo);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn slow_path_in_the_same_millisecond_increments_without_carrying() {
        // What the thread-local `next` does after the coarse clock was parked: the slow path
        // in the millisecond of the last id, with the low word far from all ones.
        let s = State {
            fresh_from_ms: 8_001,
            hi: 8_000 << 16 | 0xffff,
            lo: 41,
        };
        let (s, id) = s.next_slow(8_000, || unreachable!("no new randomness in the same ms"));
        assert_eq!(id.unwrap().random(), 0xffff << 64 | 42);
        assert_eq!((s.hi, s.lo), (8_000 << 16 | 0xffff, 42));
    }

    #[test]
    fn increment_carries_from_the_low_word_into_the_high_word() {
        let start: u128 = 0x1234 << 64 | u128::from(u64::MAX);
        let mut g = UlidGenerator::with_clock(ManualClock::new(7_000)).with_random(move || start);
        assert_eq!(g.next_id().unwrap().random(), start);
        let b = g.next_id().unwrap();
        assert_eq!(b.random(), 0x1235 << 64);
        assert_eq!(b.timestamp_ms(), 7_000);
        assert_eq!(g.next_id().unwrap().random(), 0x1235 << 64 | 1);
    }

    #[test]
    fn thread_local_ids_are_unique_across_threads() {
        let per_thread = 20_000;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let ids: Vec<Ulid> = (0..per_thread).map(|_| next().unwrap()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let all: Vec<u128> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .map(Ulid::as_u128)
            .collect();
        assert_eq!(all.len(), 4 * per_thread);
        crate::check::check_ids(&all).assert_unique();
    }

    #[test]
    fn overflow_fails_until_the_next_millisecond() {
        let clock = ManualClock::new(1_000);
        let mut g = UlidGenerator::with_clock(clock.clone()).with_random(|| RANDOM_MAX);
        assert_eq!(g.next_id().unwrap().random(), RANDOM_MAX);
        assert_eq!(
            g.next_id(),
            Err(GenerateError::MonotonicOverflow { ms: 1_000 })
        );
        assert_eq!(
            g.next_id(),
            Err(GenerateError::MonotonicOverflow { ms: 1_000 })
        );
        clock.advance_ms(1);
        assert_eq!(g.next_id().unwrap().timestamp_ms(), 1_001);
    }

    #[test]
    fn clock_step_back_keeps_the_last_timestamp_and_increments() {
        let clock = ManualClock::new(50_000);
        let mut g = UlidGenerator::with_clock(clock.clone()).with_seed(3);
        let a = g.next_id().unwrap();
        clock.step_back_ms(1_000);
        let b = g.next_id().unwrap();
        assert_eq!(b.timestamp_ms(), 50_000);
        assert_eq!(b.random(), a.random() + 1);
        assert_eq!(g.ahead_ms(), 1_000);
    }

    #[test]
    fn timestamp_beyond_48_bits_is_an_error() {
        let mut g = UlidGenerator::with_clock(ManualClock::new(ULID_TIMESTAMP_MAX_MS + 1));
        assert!(matches!(
            g.next_id(),
            Err(GenerateError::TimestampOverflow { .. })
        ));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = "01ARZ3NDEKTSV4RRFFQ69G5FA".parse::<Ulid>().unwrap_err();
        assert!(
            e.to_string().contains("expected 26 characters, got 25"),
            "{e}"
        );
        let e = "01ARZ3NDEKTSV4RRFFQ69G5FAL".parse::<Ulid>().unwrap_err();
        assert!(e.to_string().contains("'L' at position 26"), "{e}");
        let e = "8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<Ulid>().unwrap_err();
        assert!(e.to_string().contains("above '7'"), "{e}");
        assert_eq!(
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
                .parse::<Ulid>()
                .unwrap()
                .as_u128(),
            u128::MAX
        );
    }
}
