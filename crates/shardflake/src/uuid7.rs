//! UUIDv7 (RFC 9562 §5.7), monotonic per RFC 9562 §6.2 Method 1.
//!
//! Layout, most significant bit first:
//!
//! ```text
//! | unix_ts_ms 48 | ver 4 = 0111 | rand_a 12 | var 2 = 10 | rand_b 62 |
//!                                |<-- counter 42 -->|<- random 32 ->|
//! ```
//!
//! Monotonicity follows §6.2 Method 1, "Fixed Bit-Length Dedicated Counter": the 12 bits of
//! `rand_a` and the top 30 bits of `rand_b` form a 42-bit counter, and the low 32 bits of
//! `rand_b` are fresh random bits for every id. When a new millisecond starts the counter is
//! seeded randomly with its top bit cleared (§6.2 "Counter Rollover Guards"), so at least
//! 2^41 ids fit in every millisecond; within a millisecond it is incremented by one. Should
//! it overflow anyway, the generator moves its timestamp one millisecond ahead of the clock
//! (§6.2's counter rollover handling allows this instead of waiting) and counts that in
//! [`Uuid7Generator::borrowed_ms`]. When the clock steps backwards the generator keeps its
//! last timestamp and keeps counting, so ids from one generator always increase.
//!
//! Two ways to generate:
//! - [`Uuid7Generator`]: an instance with an injectable clock and randomness, `&mut self`.
//! - [`next`]: a thread-local generator on the [`CoarseClock`]; the fastest path, with ids
//!   increasing per thread (not across threads).
//!
//! [`next`] is fork-safe on Unix: in a child process it starts over with fresh randomness.
//! A [`Uuid7Generator`] is a plain value that `fork()` copies as is, so a process that forks
//! must not go on using the same generator on both sides.
//!
//! ```
//! use shardflake::uuid7::{self, Uuid7};
//!
//! let a = uuid7::next();
//! let b = uuid7::next();
//! assert!(a < b);
//! assert_eq!(a.version(), 7);
//! let text = a.to_string();
//! assert_eq!(text.len(), 36);
//! assert_eq!(text.parse::<Uuid7>()?, a);
//! # Ok::<(), shardflake::DecodeError>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::str::FromStr;

use crate::clock::{Clock, SystemClock};
use crate::error::{truncate_input, DecodeError};
use crate::fast::{coarse_now_raw, fork_generation, CoarseClock, FastRng, RandomSource, WyRand};
use crate::layout::format_rfc3339_ms;

/// Width of the monotonic counter: all 12 bits of `rand_a` and the top 30 of `rand_b`.
pub const UUID7_COUNTER_BITS: u32 = 42;

/// Top counter bits cleared when the counter is seeded for a new millisecond (RFC 9562 §6.2
/// "Counter Rollover Guards"); with one guard bit at least 2^41 ids fit in a millisecond.
pub const UUID7_GUARD_BITS_DEFAULT: u32 = 1;

/// The largest timestamp a UUIDv7 holds (48 bits of Unix ms, in the year 10889).
pub const UUID7_TIMESTAMP_MAX_MS: u64 = (1 << 48) - 1;

const COUNTER_MAX: u64 = (1 << UUID7_COUNTER_BITS) - 1;
const TAIL_BITS: u32 = 32;
const VERSION_MASK: u128 = 0xf << 76;
const VARIANT_MASK: u128 = 0b11 << 62;
const VERSION_7: u128 = 0x7 << 76;
const VARIANT_RFC: u128 = 0b10 << 62;

/// A UUID version 7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then random bits.
///
/// Always has version 7 and the RFC variant (`10`): the constructors check. Orders by value,
/// which is also time order. Displays in the canonical lowercase 8-4-4-4-12 form; parses
/// that form or the 32-digit form without hyphens, in either case.
///
/// The RFC 9562 Appendix A.6 example:
///
/// ```
/// use shardflake::uuid7::Uuid7;
/// let id: Uuid7 = "017F22E2-79B0-7CC3-98C4-DC0C0C07398F".parse()?;
/// assert_eq!(id.timestamp_ms(), 0x017F_22E2_79B0); // 2022-02-22T19:22:22.000Z
/// assert_eq!(id.version(), 7);
/// assert_eq!(id.variant(), 0b10);
/// assert_eq!(id.to_string(), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
/// let v4 = "919108f7-52d1-4320-9bac-f847db4148a8".parse::<Uuid7>();
/// assert!(v4.unwrap_err().to_string().contains("version 4"));
/// # Ok::<(), shardflake::DecodeError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid7(u128);

impl Uuid7 {
    /// Wraps a 128-bit value, checking its version (7) and variant (`10`).
    pub fn from_u128(value: u128) -> Result<Self, DecodeError> {
        if value & VERSION_MASK != VERSION_7 {
            return Err(DecodeError::WrongKind {
                expected: "UUIDv7",
                reason: format!(
                    "version {} (the version field must be 7)",
                    value >> 76 & 0xf
                ),
            });
        }
        if value & VARIANT_MASK != VARIANT_RFC {
            return Err(DecodeError::WrongKind {
                expected: "UUIDv7",
                reason: format!(
                    "variant bits {:02b} (RFC 9562 UUIDs have variant 10)",
                    value >> 62 & 0b11
                ),
            });
        }
        Ok(Self(value))
    }

    /// From the 16 bytes in network order (RFC 9562 §4), checking version and variant.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, DecodeError> {
        Self::from_u128(u128::from_be_bytes(bytes))
    }

    /// Builds a UUIDv7 from its fields. Bits above each field's width are ignored.
    ///
    /// ```
    /// use shardflake::uuid7::Uuid7;
    /// let id = Uuid7::from_fields(0x017F_22E2_79B0, 0xCC3, 0x18C4_DC0C_0C07_398F);
    /// assert_eq!(id.to_string(), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    /// ```
    pub fn from_fields(unix_ts_ms: u64, rand_a: u16, rand_b: u64) -> Self {
        let ts = u128::from(unix_ts_ms & UUID7_TIMESTAMP_MAX_MS) << 80;
        let a = u128::from(rand_a & 0xfff) << 64;
        let b = u128::from(rand_b & ((1 << 62) - 1));
        Self(ts | VERSION_7 | a | VARIANT_RFC | b)
    }

    /// A UUIDv7 of `unix_ts_ms` with 74 random bits from [`FastRng::from_os`](crate::FastRng::from_os):
    /// for identifiers made now and then on a clock of the caller's (a request id, a store
    /// id), which follow a simulation's seed when it seeds the thread's entropy
    /// ([`crate::seed_thread_entropy`]). Ids made by the million use [`next`] or a
    /// [`Uuid7Generator`].
    ///
    /// ```
    /// use shardflake::uuid7::Uuid7;
    /// let a = Uuid7::random_at(1_700_000_000_000);
    /// assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
    /// assert_ne!(a, Uuid7::random_at(1_700_000_000_000));
    /// ```
    pub fn random_at(unix_ts_ms: u64) -> Self {
        let mut rng = crate::FastRng::from_os();
        Self::from_fields(unix_ts_ms, rng.next_u64() as u16, rng.next_u64())
    }

    /// The 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The 16 bytes in network order (RFC 9562 §4).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The `unix_ts_ms` field: milliseconds since 1970-01-01T00:00:00Z.
    pub const fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// The version field: always 7.
    pub const fn version(self) -> u8 {
        (self.0 >> 76) as u8 & 0xf
    }

    /// The two variant bits: always `0b10`.
    pub const fn variant(self) -> u8 {
        (self.0 >> 62) as u8 & 0b11
    }

    /// The 12-bit `rand_a` field.
    pub const fn rand_a(self) -> u16 {
        (self.0 >> 64) as u16 & 0xfff
    }

    /// The timestamp as RFC 3339 UTC with milliseconds.
    ///
    /// ```
    /// use shardflake::uuid7::Uuid7;
    /// let id = Uuid7::from_fields(0x017F_22E2_79B0, 0, 0);
    /// assert_eq!(id.time(), "2022-02-22T19:22:22.000Z");
    /// ```
    pub fn time(self) -> String {
        format_rfc3339_ms(self.timestamp_ms())
    }

    /// The 62-bit `rand_b` field.
    pub const fn rand_b(self) -> u64 {
        self.0 as u64 & ((1 << 62) - 1)
    }
}

impl fmt::Display for Uuid7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(format_uuid(self.0, &mut [0; 36]))
    }
}

impl fmt::Debug for Uuid7 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid7({self})")
    }
}

impl FromStr for Uuid7 {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_u128(parse_uuid(s)?)
    }
}

impl From<Uuid7> for u128 {
    fn from(id: Uuid7) -> u128 {
        id.0
    }
}

impl TryFrom<u128> for Uuid7 {
    type Error = DecodeError;

    fn try_from(value: u128) -> Result<Self, Self::Error> {
        Self::from_u128(value)
    }
}

/// Writes any UUID in the canonical lowercase 8-4-4-4-12 form into `buf`.
fn format_uuid(value: u128, buf: &mut [u8; 36]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut nibble = 0;
    for (i, b) in buf.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *b = b'-';
        } else {
            *b = HEX[(value >> (124 - 4 * nibble)) as usize & 0xf];
            nibble += 1;
        }
    }
    // Only ASCII was written.
    std::str::from_utf8(buf).expect("ASCII")
}

/// Parses any UUID in the hyphenated 8-4-4-4-12 form or as 32 hex digits, either case.
fn parse_uuid(s: &str) -> Result<u128, DecodeError> {
    let err = |reason: String| DecodeError::Syntax {
        input: truncate_input(s),
        encoding: "UUID",
        reason,
    };
    let hyphenated = match s.len() {
        36 => true,
        32 => false,
        _ => {
            return Err(err(format!(
                "expected 36 characters (8-4-4-4-12) or 32 hex digits, got {}",
                s.chars().count()
            )))
        }
    };
    let mut value: u128 = 0;
    for (i, c) in s.chars().enumerate() {
        if hyphenated && matches!(i, 8 | 13 | 18 | 23) {
            if c != '-' {
                return Err(err(format!(
                    "expected '-' at position {}, found {c:?}",
                    i + 1
                )));
            }
            continue;
        }
        let digit = c
            .to_digit(16)
            .ok_or_else(|| err(format!("invalid character {c:?} at position {}", i + 1)))?;
        value = value << 4 | u128::from(digit);
    }
    Ok(value)
}

/// A monotonic UUIDv7 generator (RFC 9562 §6.2 Method 1; see the [module docs](self)).
///
/// `next_id` takes `&mut self`: the state is a few words and the fast path has no atomic
/// operation. To share one generator between threads put it in a `Mutex`; for the fastest
/// path use one generator per thread, or the thread-local [`next`].
///
/// Random bits come from a [`FastRng`] seeded from the OS (counter seeds, once per
/// millisecond) and a wyrand stream seeded from it (the 32 random bits of every id), or from
/// a function given to [`Uuid7Generator::with_random`] (tests reproduce exact vectors that
/// way).
///
/// Generating the RFC 9562 Appendix A.6 example exactly:
///
/// ```
/// use shardflake::{uuid7::Uuid7Generator, ManualClock};
///
/// let mut g = Uuid7Generator::with_clock(ManualClock::new(0x017F_22E2_79B0))
///     .with_guard_bits(0) // The example's rand_a has its top bit set.
///     .with_random(|| 0xCC3 << 62 | 0x18C4_DC0C_0C07_398F);
/// assert_eq!(g.next_id().to_string(), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
/// ```
#[derive(Debug)]
pub struct Uuid7Generator<C: Clock = SystemClock> {
    clock: C,
    random: RandomSource,
    state: State,
}

/// The monotonic state shared by [`Uuid7Generator`] and the thread-local [`next`]: the last
/// issued id without its 32 random tail bits, as two words laid out like the id, so that the
/// fast path is one compare and one add on the low word.
#[derive(Debug, Clone, Copy)]
struct State {
    /// The first millisecond that starts a fresh counter: one past the last issued
    /// timestamp (0 before the first id, so that any clock reading starts one).
    fresh_from_ms: u64,
    /// `unix_ts_ms | ver | rand_a`: the timestamp and the counter's top 12 bits.
    hi: u64,
    /// `var | rand_b`: the counter's low 30 bits at bits 32..62, tail bits zero.
    lo: u64,
    seed_mask: u64,
    borrowed_ms: u64,
}

/// `lo` when the counter's low 30 bits are all ones: the next increment carries into
/// `rand_a`, which the slow path handles.
const LO_COUNTER_FULL: u64 = 0b10 << 62 | 0x3fff_ffff << TAIL_BITS;

impl State {
    const NEW: State = State {
        fresh_from_ms: 0,
        hi: 0,
        lo: 0,
        seed_mask: COUNTER_MAX >> UUID7_GUARD_BITS_DEFAULT,
        borrowed_ms: 0,
    };

    /// The fast path: the same millisecond (or a clock behind it), and a counter increment
    /// that stays within `rand_b`.
    #[inline(always)]
    fn next_same_ms(&mut self, now_ms: u64, tail: impl FnOnce() -> u64) -> Option<Uuid7> {
        if now_ms < self.fresh_from_ms && self.lo != LO_COUNTER_FULL {
            self.lo += 1 << TAIL_BITS;
            Some(self.id(tail() as u32))
        } else {
            None
        }
    }

    #[inline(always)]
    fn id(&self, tail: u32) -> Uuid7 {
        compose(self.hi, self.lo, tail)
    }

    fn counter(&self) -> u64 {
        (self.hi & 0xfff) << 30 | (self.lo >> TAIL_BITS) & 0x3fff_ffff
    }

    /// A new millisecond, a carry into `rand_a`, or a counter overflow. `bits` is one draw
    /// of 74 random bits: bits 32..74 seed a new counter, bits 0..32 are the tail.
    ///
    /// Takes and returns the state by value so that callers' loops can keep it in registers.
    #[cold]
    #[inline(never)]
    fn next_slow(mut self, now_ms: u64, bits: u128) -> (State, Uuid7) {
        let counter = if now_ms >= self.fresh_from_ms {
            self.fresh_from_ms = now_ms + 1;
            (bits >> TAIL_BITS) as u64 & self.seed_mask
        } else if self.counter() < COUNTER_MAX {
            self.counter() + 1
        } else {
            // The counter ran out within a millisecond: borrow the next millisecond (RFC 9562
            // §6.2 allows moving the timestamp ahead instead of waiting) and reseed.
            self.fresh_from_ms += 1;
            self.borrowed_ms += 1;
            (bits >> TAIL_BITS) as u64 & self.seed_mask
        };
        let ms = self.fresh_from_ms - 1;
        assert!(
            ms <= UUID7_TIMESTAMP_MAX_MS,
            "UUIDv7 timestamp {ms} ms is beyond the 48-bit field"
        );
        self.hi = ms << 16 | 0x7 << 12 | counter >> 30;
        self.lo = 0b10 << 62 | (counter & 0x3fff_ffff) << TAIL_BITS;
        let id = self.id(bits as u32);
        (self, id)
    }
}

#[inline(always)]
fn compose(hi: u64, lo: u64, tail: u32) -> Uuid7 {
    Uuid7(u128::from(hi) << 64 | u128::from(lo | u64::from(tail)))
}

impl Default for Uuid7Generator<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl Uuid7Generator<SystemClock> {
    /// A generator on the system clock with OS-seeded randomness.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }
}

impl<C: Clock> Uuid7Generator<C> {
    /// A generator on `clock` with OS-seeded randomness.
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            random: RandomSource::fast(FastRng::from_os()),
            state: State::NEW,
        }
    }

    /// Replaces the randomness with a [`FastRng`] seeded with `seed`: deterministic ids for
    /// tests and simulations. Never use a fixed seed in production: two generators with the
    /// same seed and clock issue the same ids.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.random = RandomSource::fast(FastRng::from_seed(seed));
        self
    }

    /// Replaces the randomness with `random`, called once per id.
    ///
    /// The low 74 bits of each result are `rand_a` (bits 62..74) and `rand_b` (bits 0..62)
    /// of a fresh id. The generator uses all of them for the first id of a millisecond (after
    /// clearing the counter's guard bits) and only the low 32 bits for an id that continues
    /// a millisecond, whose other 42 random bits are the incremented counter.
    pub fn with_random(mut self, random: impl FnMut() -> u128 + Send + 'static) -> Self {
        self.random = RandomSource::Hook(Box::new(random));
        self
    }

    /// Sets how many top counter bits are cleared when a millisecond starts (default
    /// [`UUID7_GUARD_BITS_DEFAULT`]). More guard bits leave more room to count within a
    /// millisecond at the cost of random bits in the first id; 0 keeps the first id of each
    /// millisecond fully random.
    ///
    /// # Panics
    /// If `bits` is above [`UUID7_COUNTER_BITS`].
    pub fn with_guard_bits(mut self, bits: u32) -> Self {
        assert!(
            bits <= UUID7_COUNTER_BITS,
            "guard bits {bits} out of range 0..={UUID7_COUNTER_BITS}"
        );
        self.state.seed_mask = COUNTER_MAX.checked_shr(bits).unwrap_or(0);
        self
    }

    /// The clock this generator reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The next id: greater than every id this generator issued before.
    ///
    /// # Panics
    /// If the clock reads beyond [`UUID7_TIMESTAMP_MAX_MS`] (the year 10889), where RFC 9562
    /// defines no encoding.
    #[inline]
    pub fn next_id(&mut self) -> Uuid7 {
        let now_ms = self.clock.now_ms();
        let random = &mut self.random;
        if let Some(id) = self.state.next_same_ms(now_ms, || random.next_tail()) {
            return id;
        }
        let bits = self.random.next_u128();
        let id;
        (self.state, id) = self.state.next_slow(now_ms, bits);
        id
    }

    /// The timestamp of the last issued id in Unix ms, or `None` before the first id.
    pub fn last_issued_ms(&self) -> Option<u64> {
        self.state.fresh_from_ms.checked_sub(1)
    }

    /// How far the last issued timestamp is ahead of the clock now, in ms (0 if not ahead).
    /// It is ahead only after counter overflows or when the clock stepped back.
    pub fn ahead_ms(&self) -> u64 {
        self.last_issued_ms()
            .map_or(0, |ms| ms.saturating_sub(self.clock.now_ms()))
    }

    /// How many times a counter overflow moved the timestamp one millisecond ahead.
    pub fn borrowed_ms(&self) -> u64 {
        self.state.borrowed_ms
    }
}

/// The thread-local generator behind [`next`]: initialized at compile time and free of
/// destructors, so reaching it costs no lazy-initialization check, with one `Cell` per word
/// so the fast path loads and stores exactly the words it uses. The RNGs are seeded on the
/// first slow path, which is always the first call, and again on the first call in a forked
/// child.
struct Local {
    fresh_from_ms: Cell<u64>,
    hi: Cell<u64>,
    lo: Cell<u64>,
    tails: Cell<u64>,
    seeds: RefCell<FastRng>,
    /// The fork generation the RNGs were seeded in, or [`NEVER_SEEDED`]. Only the slow path
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
            tails: Cell::new(0),
            seeds: RefCell::new(FastRng::UNSEEDED),
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

/// The next UUIDv7 from this thread's generator on the [`CoarseClock`].
///
/// Ids from one thread strictly increase; ids from different threads are unique (each thread
/// seeds its own generator from the OS) but not ordered with each other. Timestamps may be up
/// to about a millisecond behind the system clock, never ahead of it (except after counter
/// overflow, see the [module docs](self)). No system call per id.
///
/// Fork-safe on Unix: in the child of a `fork()`, the first call starts the thread's
/// generator over as a new one, reseeded from the OS, so the child's ids share nothing with
/// the parent's (they increase from there, not necessarily past the parent's last id), and
/// the child's coarse clock runs on a refresher thread of its own.
///
/// ```
/// let ids: Vec<_> = (0..1000).map(|_| shardflake::uuid7::next()).collect();
/// assert!(ids.windows(2).all(|w| w[0] < w[1]));
/// ```
#[inline]
pub fn next() -> Uuid7 {
    // A parked coarse clock reads above every millisecond, so it takes the slow path.
    let raw_ms = coarse_now_raw();
    LOCAL.with(|local| {
        let lo = local.lo.get();
        if raw_ms < local.fresh_from_ms.get() && lo != LO_COUNTER_FULL {
            let lo = lo + (1 << TAIL_BITS);
            local.lo.set(lo);
            let mut tails = WyRand(local.tails.get());
            let tail = tails.next_u64() as u32;
            local.tails.set(tails.0);
            return compose(local.hi.get(), lo, tail);
        }
        next_local_slow(local)
    })
}

#[cold]
#[inline(never)]
fn next_local_slow(local: &Local) -> Uuid7 {
    let now_ms = CoarseClock.now_ms();
    let mut seeds = local.seeds.borrow_mut();
    let generation = fork_generation();
    if local.seeded_in.get() != generation {
        // This thread's first id, or its first in a forked child, whose state is a copy of
        // the parent's: start over as a new generator, so that no id here derives from
        // random state or a counter the parent also has.
        *seeds = FastRng::from_os();
        local.tails.set(seeds.next_u64());
        local.fresh_from_ms.set(State::NEW.fresh_from_ms);
        local.hi.set(State::NEW.hi);
        local.lo.set(State::NEW.lo);
        local.seeded_in.set(generation);
    }
    let state = State {
        fresh_from_ms: local.fresh_from_ms.get(),
        hi: local.hi.get(),
        lo: local.lo.get(),
        ..State::NEW
    };
    let (state, id) = state.next_slow(now_ms, seeds.next_u128());
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
    fn counter_carries_from_rand_b_into_rand_a() {
        // Seed the counter with its low 30 bits (the top of rand_b) all ones.
        let seed_counter: u128 = 0x5 << 30 | 0x3fff_ffff;
        let mut g = Uuid7Generator::with_clock(ManualClock::new(1_000))
            .with_random(move || seed_counter << TAIL_BITS | 0xdead_beef);
        let a = g.next_id();
        assert_eq!(a.rand_a(), 0x5);
        assert_eq!(a.rand_b(), 0x3fff_ffff << 32 | 0xdead_beef);
        let b = g.next_id();
        assert_eq!(b.rand_a(), 0x6);
        assert_eq!(b.rand_b(), 0xdead_beef);
        assert_eq!(b.variant(), 0b10);
        assert!(a < b);
        let c = g.next_id();
        assert_eq!(c.rand_b(), 1 << 32 | 0xdead_beef);
        assert_eq!(g.borrowed_ms(), 0);
    }

    #[test]
    fn thread_local_ids_are_unique_across_threads() {
        let per_thread = 20_000;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let ids: Vec<Uuid7> = (0..per_thread).map(|_| next()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let all: Vec<u128> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .map(Uuid7::as_u128)
            .collect();
        assert_eq!(all.len(), 4 * per_thread);
        crate::check::check_ids(&all).assert_unique();
    }

    #[test]
    fn counter_increments_within_a_millisecond_and_reseeds_after() {
        let clock = ManualClock::new(1_000);
        let mut g = Uuid7Generator::with_clock(clock.clone()).with_seed(7);
        let a = g.next_id();
        let b = g.next_id();
        let counter =
            |u: Uuid7| (u.as_u128() >> 64 & 0xfff) << 30 | (u.as_u128() >> 32 & 0x3fff_ffff);
        assert_eq!(counter(b), counter(a) + 1);
        assert!(counter(a) < 1 << 41, "guard bit must be clear on seeding");
        clock.advance_ms(1);
        let c = g.next_id();
        assert_eq!(c.timestamp_ms(), 1_001);
        assert!(b < c);
    }

    #[test]
    fn overflow_borrows_the_next_millisecond() {
        let clock = ManualClock::new(5_000);
        let mut g = Uuid7Generator::with_clock(clock)
            .with_guard_bits(0)
            .with_random(|| u128::MAX);
        let a = g.next_id();
        assert_eq!(a.timestamp_ms(), 5_000);
        let b = g.next_id();
        assert_eq!(b.timestamp_ms(), 5_001);
        assert!(a < b);
        assert_eq!(g.borrowed_ms(), 1);
        assert_eq!(g.ahead_ms(), 1);
        assert_eq!(g.last_issued_ms(), Some(5_001));
    }

    #[test]
    fn clock_step_back_keeps_the_last_timestamp() {
        let clock = ManualClock::new(1_700_000_000_000);
        let mut g = Uuid7Generator::with_clock(clock.clone());
        let a = g.next_id();
        clock.step_back_ms(3_600_000);
        let b = g.next_id();
        assert_eq!(b.timestamp_ms(), 1_700_000_000_000);
        assert!(a < b);
        assert_eq!(g.ahead_ms(), 3_600_000);
    }

    #[test]
    fn a_clock_at_zero_still_starts_a_millisecond() {
        let mut g = Uuid7Generator::with_clock(ManualClock::new(0)).with_seed(1);
        assert_eq!(g.last_issued_ms(), None);
        assert_eq!(g.next_id().timestamp_ms(), 0);
        assert_eq!(g.last_issued_ms(), Some(0));
    }

    #[test]
    fn parse_rejects_wrong_variant_and_bad_hyphens() {
        let e = "017f22e2-79b0-7cc3-18c4-dc0c0c07398f"
            .parse::<Uuid7>()
            .unwrap_err();
        assert!(matches!(e, DecodeError::WrongKind { .. }), "{e}");
        let e = "017f22e2_79b0-7cc3-98c4-dc0c0c07398f"
            .parse::<Uuid7>()
            .unwrap_err();
        assert!(e.to_string().contains("expected '-' at position 9"), "{e}");
        assert!("017f22e279b07cc398c4dc0c0c07398f".parse::<Uuid7>().is_ok());
        assert!("".parse::<Uuid7>().is_err());
    }
}
