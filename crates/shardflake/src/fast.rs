//! Building blocks that keep the 128-bit generators free of system calls per id: a coarse
//! clock refreshed by one background thread, and a small PRNG seeded once from the OS.
//!
//! Reading `CLOCK_REALTIME` costs about 20 ns even through the vDSO, which is several times
//! the cost of the rest of a UUIDv7 or ULID. [`CoarseClock`] instead reads an atomic that a
//! background thread refreshes about once a millisecond, and [`FastRng`] draws the random bits
//! with a few arithmetic instructions instead of a cryptographic generator.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};

/// How often the coarse clock's background thread refreshes the shared reading, in µs.
pub const COARSE_REFRESH_INTERVAL_US: u64 = 1_000;

/// How long the coarse clock's background thread keeps refreshing without a single reader
/// before it parks itself, in ms. The next reader wakes it again.
pub const COARSE_IDLE_PARK_MS: u64 = 1_000;

/// The shared state behind [`CoarseClock`].
///
/// This is process-wide on purpose: one refresher thread serves every generator in the
/// process, so the cost of keeping a millisecond reading fresh is paid once, not per
/// generator or per thread.
struct CoarseState {
    /// The last reading of the system clock in Unix ms, or 0 while the refresher is parked.
    now_ms: AtomicU64,
    /// Set by readers, cleared by the refresher: tells it whether anyone still reads.
    used: AtomicBool,
    /// The refresher thread, started by the first reader.
    refresher: OnceLock<Thread>,
}

static COARSE: CoarseState = CoarseState {
    now_ms: AtomicU64::new(0),
    used: AtomicBool::new(false),
    refresher: OnceLock::new(),
};

/// A [`Clock`] that reads a shared millisecond value instead of the system clock.
///
/// A single background thread, started on first use, stores the system clock's reading
/// every [`COARSE_REFRESH_INTERVAL_US`]; `now_ms` is one relaxed atomic load. The reading is
/// therefore **never ahead of the system clock and normally at most about 1 ms behind it**
/// (more if the refresher thread is starved of CPU). After [`COARSE_IDLE_PARK_MS`] without
/// readers the thread parks itself, so an idle process does not wake up a thousand times a
/// second; the first read after that reads the system clock directly and wakes the thread.
///
/// Like the system clock, this clock can step backwards when the system clock does; the
/// generators built on it keep their own timestamps monotonic.
///
/// ```
/// use shardflake::{Clock, CoarseClock, SystemClock};
/// let coarse = CoarseClock.now_ms();
/// let system = SystemClock.now_ms();
/// // Never ahead of the system clock (barring a system clock step between the two reads).
/// assert!(coarse <= system);
/// assert!(system - coarse < 1_000);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        let ms = COARSE.now_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return coarse_wake();
        }
        // Only write when the flag is clear, so that readers on many cores share the cache
        // line instead of bouncing it with a store per read.
        if !COARSE.used.load(Ordering::Relaxed) {
            COARSE.used.store(true, Ordering::Relaxed);
        }
        ms
    }

    fn wait_until_ms(&self, target_ms: u64) {
        // First wait on the precise clock, then for the refresher to publish the target.
        SystemClock.wait_until_ms(target_ms);
        while self.now_ms() < target_ms {
            std::thread::sleep(Duration::from_micros(COARSE_REFRESH_INTERVAL_US / 4));
        }
    }
}

/// The coarse clock's slow path: no fresh reading is published (first use, or the refresher
/// parked itself), so read the system clock and make sure the refresher runs.
#[cold]
#[inline(never)]
fn coarse_wake() -> u64 {
    let now_ms = SystemClock.now_ms();
    COARSE.used.store(true, Ordering::Relaxed);
    let refresher = COARSE.refresher.get_or_init(|| {
        std::thread::Builder::new()
            .name("shardflake-coarse-clock".into())
            .spawn(coarse_refresh_loop)
            .expect("spawning the coarse clock thread")
            .thread()
            .clone()
    });
    // An unpark before the thread parks is remembered, so this cannot be lost.
    refresher.unpark();
    now_ms
}

fn coarse_refresh_loop() {
    let interval = Duration::from_micros(COARSE_REFRESH_INTERVAL_US);
    let idle_check_ticks = (COARSE_IDLE_PARK_MS * 1_000 / COARSE_REFRESH_INTERVAL_US).max(1);
    loop {
        let mut ticks = 0;
        loop {
            // 0 means "parked", so a clock reading of 0 (1970) is published as 1.
            let now_ms = SystemClock.now_ms().max(1);
            COARSE.now_ms.store(now_ms, Ordering::Relaxed);
            std::thread::sleep(interval);
            ticks += 1;
            if ticks == idle_check_ticks {
                ticks = 0;
                if !COARSE.used.swap(false, Ordering::Relaxed) {
                    break;
                }
            }
        }
        // A reader that loaded the last value just before this store gets a reading that is
        // one interval old, which the clock's contract allows; the next reader sees 0 and
        // wakes this thread.
        COARSE.now_ms.store(0, Ordering::Relaxed);
        std::thread::park();
    }
}

/// A small, fast PRNG (xoshiro256++, Blackman and Vigna) for the random bits of ids.
///
/// Not cryptographic: ids are unique by construction and random only so that independent
/// generators do not collide, not so that they cannot be guessed (the same trade-off as the
/// `uuid` crate's `fast-rng`). [`FastRng::from_os`] seeds its 256-bit state from the
/// operating system's entropy once; every draw after that is a few arithmetic instructions.
///
/// ```
/// use shardflake::FastRng;
/// let mut a = FastRng::from_seed(42);
/// let mut b = FastRng::from_seed(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert_ne!(FastRng::from_os().next_u64(), FastRng::from_os().next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct FastRng {
    s: [u64; 4],
}

impl FastRng {
    /// A generator whose whole sequence is determined by `seed`: for tests and simulations.
    pub fn from_seed(seed: u64) -> Self {
        // SplitMix64 expands the seed, as the xoshiro authors recommend; it never yields an
        // all-zero state from four consecutive outputs.
        let mut x = seed;
        let mut s = [0u64; 4];
        for word in &mut s {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *word = z ^ (z >> 31);
        }
        Self { s }
    }

    /// A generator seeded from the operating system's entropy.
    ///
    /// The entropy comes from std's `RandomState`, whose keys the standard library draws
    /// from the OS (`getrandom` on Linux) once per thread; each call hashes fresh keys, so
    /// two generators never share a seed in practice. The thread id and a stack address are
    /// mixed in as well, which costs nothing and helps on platforms with weak key sources.
    pub fn from_os() -> Self {
        let marker = 0u8;
        let mut s = [0u64; 4];
        for (i, word) in s.iter_mut().enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_usize(std::ptr::addr_of!(marker) as usize);
            h.write(format!("{:?}", std::thread::current().id()).as_bytes());
            *word = h.finish();
        }
        if s == [0; 4] {
            // The one state xoshiro cannot leave; astronomically unlikely, handled anyway.
            s[0] = 1;
        }
        Self { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The next 128 random bits.
    #[inline]
    pub fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// Where a 128-bit generator gets its random bits: the fast PRNG, or a caller's function
/// (tests use one to reproduce published vectors exactly).
pub(crate) enum RandomSource {
    Fast(FastRng),
    Hook(Box<dyn FnMut() -> u128 + Send>),
}

impl RandomSource {
    #[inline]
    pub(crate) fn next_u128(&mut self) -> u128 {
        match self {
            RandomSource::Fast(rng) => rng.next_u128(),
            RandomSource::Hook(f) => f(),
        }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        match self {
            RandomSource::Fast(rng) => rng.next_u64(),
            RandomSource::Hook(f) => f() as u64,
        }
    }
}

impl std::fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RandomSource::Fast(_) => f.write_str("FastRng"),
            RandomSource::Hook(_) => f.write_str("Hook"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro256plusplus_matches_reference_output() {
        // Reference: xoshiro256plusplus.c (Blackman and Vigna) started from state {1, 2, 3, 4}
        // yields 41943041, 58720359, 3588806011781223, ...
        let mut rng = FastRng { s: [1, 2, 3, 4] };
        assert_eq!(rng.next_u64(), 41_943_041);
        assert_eq!(rng.next_u64(), 58_720_359);
        assert_eq!(rng.next_u64(), 3_588_806_011_781_223);
    }

    #[test]
    fn os_seeded_generators_differ() {
        let a: Vec<u64> = (0..4).map(|_| FastRng::from_os().next_u64()).collect();
        for i in 0..a.len() {
            for j in i + 1..a.len() {
                assert_ne!(a[i], a[j]);
            }
        }
    }

    #[test]
    fn coarse_clock_tracks_the_system_clock() {
        let system_before = SystemClock.now_ms();
        let coarse = CoarseClock.now_ms();
        let system_after = SystemClock.now_ms();
        assert!(
            coarse <= system_after,
            "coarse {coarse} ahead of {system_after}"
        );
        // Generous bound: a loaded CI machine may starve the refresher for a while.
        assert!(
            coarse + 1_000 >= system_before,
            "coarse {coarse} vs {system_before}"
        );
        CoarseClock.wait_until_ms(system_after + 3);
        assert!(CoarseClock.now_ms() >= system_after + 3);
    }
}
