//! Building blocks that keep the 128-bit generators free of system calls per id: a coarse
//! clock refreshed by one background thread, and a small PRNG seeded once from the OS.
//!
//! Reading `CLOCK_REALTIME` costs about 20 ns even through the vDSO, which is several times
//! the cost of the rest of a UUIDv7 or ULID. [`CoarseClock`] instead reads an atomic that a
//! background thread refreshes about once a millisecond, and [`FastRng`] draws the random bits
//! with a few arithmetic instructions instead of a cryptographic generator.
//!
//! Both keep state that `fork()` copies into the child process, which gets none of the
//! parent's threads: not the coarse clock's refresher, whose last reading would stay frozen
//! in the child, and a copy of every thread-local generator, which would go on issuing the
//! parent's ids. On Unix a `pthread_atfork` child handler, registered on the coarse clock's
//! first use, parks the child's coarse clock and counts the fork in a process-wide fork
//! generation. The child's next reader starts a refresher of its own, and each thread-local
//! generator starts over with fresh OS randomness on its first id in the new generation.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, SystemClock};

/// How often the coarse clock's background thread refreshes the shared reading, in µs.
pub const COARSE_REFRESH_INTERVAL_US: u64 = 1_000;

/// How long the coarse clock's background thread keeps refreshing after it was last woken,
/// in ms. It then parks itself; the next reader wakes it again. A busy process pays one
/// system clock read and one wake-up per lease, an idle one no wake-ups at all.
pub const COARSE_LEASE_MS: u64 = 1_000;

/// How many fork generations (see [`fork_generation`]) get a coarse clock refresher thread.
/// A process whose generation is this high or higher, which takes a chain of that many
/// forks, has none: its coarse clock stays parked, so every reading comes from the system
/// clock, correct but slower.
const REFRESHER_GENERATIONS: usize = 64;

/// The shared state behind [`CoarseClock`].
///
/// This is process-wide on purpose: one refresher thread serves every generator in the
/// process, so the cost of keeping a millisecond reading fresh is paid once, not per
/// generator or per thread.
struct CoarseState {
    /// The last reading of the system clock in Unix ms, or [`COARSE_PARKED`] while the
    /// refresher is parked (or, in a forked child, not started yet).
    now_ms: AtomicU64,
    /// The refresher thread of each fork generation, started by that generation's first
    /// reader. A child of a fork gets a slot of its own because it cannot reuse its parent's:
    /// that one names a thread the child does not have, and if another thread of the parent
    /// was starting the refresher at the moment of the fork, the child's copy of the slot
    /// stays locked forever. A slot is only ever touched by processes of its own generation,
    /// and every fork moves the child to a later one, so each process starts with its slot
    /// untouched.
    refreshers: [OnceLock<Thread>; REFRESHER_GENERATIONS],
}

/// The value of the shared reading while the refresher is parked. It is above every real
/// reading, so a generator comparing the raw reading against the end of its current
/// millisecond sends a parked clock down its slow path with no extra check.
pub(crate) const COARSE_PARKED: u64 = u64::MAX;

/// The shared reading as stored: Unix ms, or [`COARSE_PARKED`]. The thread-local generators
/// use it on their fast path and call [`CoarseClock`]'s `now_ms` on their slow path.
#[inline(always)]
pub(crate) fn coarse_now_raw() -> u64 {
    COARSE.now_ms.load(Ordering::Relaxed)
}

static COARSE: CoarseState = CoarseState {
    now_ms: AtomicU64::new(COARSE_PARKED),
    refreshers: [const { OnceLock::new() }; REFRESHER_GENERATIONS],
};

/// How many times this crate's fork handler ran in this process's chain of ancestors: 0 in
/// a process that was not forked from one that used the coarse clock, and higher in the
/// child of every fork after that. It changes only in the child handler, which runs before
/// the child has a second thread, so each process sees one value all its life.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether the fork handler is registered, which it must be before this process keeps any
/// state that a fork would duplicate.
static FORK_HANDLER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// This process's fork generation. The thread-local generators record the generation they
/// were seeded in and start over when it differs, which is how a child of a fork notices it
/// holds a copy of its parent's state. The child's first id always gets to that check: the
/// fork handler parks the coarse clock, whose sentinel sends every generator down its slow
/// path, and resets the forking thread's generators so that they go there even once a new
/// refresher publishes real readings.
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A [`Clock`] that reads a shared millisecond value instead of the system clock.
///
/// A single background thread, started on first use, stores the system clock's reading
/// every [`COARSE_REFRESH_INTERVAL_US`]; `now_ms` is one relaxed atomic load. The reading is
/// therefore **never ahead of the system clock and normally at most about 1 ms behind it**
/// (more if the refresher thread is starved of CPU). The thread parks itself after
/// [`COARSE_LEASE_MS`], so an idle process does not wake up a thousand times a second; the
/// first read after that reads the system clock directly and wakes the thread.
///
/// Fork-safe on Unix: in a child process the clock reads the system clock until it has
/// started a refresher thread of its own, instead of repeating the parent's last reading.
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
        match coarse_now_raw() {
            COARSE_PARKED => coarse_wake(),
            ms => ms,
        }
    }

    fn wait_until_ms(&self, target_ms: u64) {
        // First wait on the precise clock, then for the refresher to publish the target.
        SystemClock.wait_until_ms(target_ms);
        while self.now_ms() < target_ms {
            std::thread::sleep(Duration::from_micros(COARSE_REFRESH_INTERVAL_US / 4));
        }
    }
}

/// The coarse clock's slow path: no fresh reading is published (first use, the refresher
/// parked itself, or this is a forked child that has no refresher yet), so read the system
/// clock and make sure the refresher runs.
#[cold]
#[inline(never)]
fn coarse_wake() -> u64 {
    let now_ms = SystemClock.now_ms();
    // Registered before the first reading is published, so that no generator state exists
    // in this process before the handler that resets it in a forked child.
    register_fork_handler_once();
    let generation = usize::try_from(fork_generation()).unwrap_or(usize::MAX);
    let Some(slot) = COARSE.refreshers.get(generation) else {
        // Too many generations of forks: no refresher, every reading is this one.
        return now_ms;
    };
    let refresher = slot.get_or_init(|| {
        std::thread::Builder::new()
            .name("shardflake-coarse-clock".into())
            .spawn(coarse_refresh_loop)
            .expect("spawning the coarse clock thread")
            .thread()
            .clone()
    });
    // An unpark before the thread parks is remembered, so this cannot be lost; repeated
    // unparks while it is already awake cost an atomic swap, not a system call.
    refresher.unpark();
    now_ms
}

/// Makes sure [`after_fork_in_child`] runs in the child of every later fork.
///
/// Threads that race here may each register the handler; it then runs more than once per
/// fork, which only moves the fork generation on by more than one. Letting them race is what
/// keeps this free of locks: a lock (or a `Once`) that a thread of the parent holds at the
/// moment of a fork stays held forever in the child.
fn register_fork_handler_once() {
    if !FORK_HANDLER_REGISTERED.load(Ordering::Acquire) && register_fork_handler() {
        FORK_HANDLER_REGISTERED.store(true, Ordering::Release);
    }
}

/// Registers [`after_fork_in_child`] as a `pthread_atfork` child handler; false if the C
/// library could not (out of memory), in which case the next wake-up tries again.
///
/// The standard library has no hook that runs in the child of a fork, and `pthread_atfork`
/// is the POSIX mechanism for exactly this; the `rand` crate's reseeding `ThreadRng` used it
/// for the same reason, to stop a forked child from repeating its parent's random numbers.
#[cfg(unix)]
#[allow(unsafe_code)]
fn register_fork_handler() -> bool {
    // SAFETY: pthread_atfork only records the function pointer. The handler is a Rust
    // function with the C ABI that takes no arguments, cannot unwind, and stays valid for the
    // life of the process; it performs only atomic stores and stores to thread-locals that
    // need no initialization or destructor, which is sound in a child of a multi-threaded
    // process, where only async-signal-safe operations are allowed.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) == 0 }
}

/// Without `fork()` there is nothing to register.
#[cfg(not(unix))]
fn register_fork_handler() -> bool {
    true
}

/// Runs in the child of a fork, on the thread that called `fork()`, which is the child's only
/// thread. The child has no refresher thread, so the coarse clock must not keep the last
/// reading the parent published: parking it sends the next reader to [`coarse_wake`], which
/// reads the system clock and starts a refresher for the new fork generation. The forking
/// thread's thread-local generators are copies of the parent's; they are the only ones the
/// child has, and resetting them sends their next id down the slow path, where the new fork
/// generation makes them start over. (Threads the child starts later begin with fresh
/// thread-locals anyway.)
///
/// Only stores to memory: no allocation, no locks, no system calls.
#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    COARSE.now_ms.store(COARSE_PARKED, Ordering::Relaxed);
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::uuid7::after_fork_in_child();
    crate::ulid::after_fork_in_child();
}

fn coarse_refresh_loop() {
    let interval = Duration::from_micros(COARSE_REFRESH_INTERVAL_US);
    let lease_ticks = (COARSE_LEASE_MS * 1_000 / COARSE_REFRESH_INTERVAL_US).max(1);
    loop {
        for _ in 0..lease_ticks {
            // The system clock reads at most u64::MAX / 1000 ms, so it never equals the
            // parked marker.
            let now_ms = SystemClock.now_ms();
            COARSE.now_ms.store(now_ms, Ordering::Relaxed);
            std::thread::sleep(interval);
        }
        // A reader that loaded the last value just before this store gets a reading that is
        // one interval old, which the clock's contract allows; the next reader sees the
        // parked marker and wakes this thread.
        COARSE.now_ms.store(COARSE_PARKED, Ordering::Relaxed);
        std::thread::park();
    }
}

thread_local! {
    /// The current thread's seeded entropy ([`seed_thread_entropy`]), if any.
    static THREAD_SEED: std::cell::RefCell<Option<FastRng>> = const { std::cell::RefCell::new(None) };
}

/// Makes every [`FastRng::from_os`] on the current thread (and [`thread_entropy`]) draw
/// from a PRNG seeded with `seed` instead of the operating system, until called again with
/// `None`. For deterministic simulations, which run a whole cluster on one thread and must
/// replay it exactly from a seed: retry jitter, client keys and request ids then follow the
/// seed. Never set it in a service: everything drawn on the thread becomes predictable.
///
/// ```
/// use shardflake::{seed_thread_entropy, FastRng};
/// seed_thread_entropy(Some(7));
/// let a = FastRng::from_os().next_u64();
/// seed_thread_entropy(Some(7));
/// assert_eq!(FastRng::from_os().next_u64(), a);
/// seed_thread_entropy(None);
/// assert_ne!(FastRng::from_os().next_u64(), FastRng::from_os().next_u64());
/// ```
pub fn seed_thread_entropy(seed: Option<u64>) {
    THREAD_SEED.with(|t| *t.borrow_mut() = seed.map(FastRng::from_seed));
}

/// The next 64 bits of the current thread's seeded entropy, or `None` when the thread draws
/// from the operating system (the default). Callers that need cryptographic randomness use
/// their own source unless this answers (a simulation, see [`seed_thread_entropy`]).
pub fn thread_entropy() -> Option<u64> {
    THREAD_SEED.with(|t| t.borrow_mut().as_mut().map(FastRng::next_u64))
}

fn from_thread_seed() -> Option<FastRng> {
    thread_entropy().map(FastRng::from_seed)
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
    /// two generators never share a seed in practice. The process id and the time are mixed
    /// in because `fork()` copies those per-thread keys: without them a forked child and its
    /// parent, or two children of one parent, would draw the same seeds. The thread id and a
    /// stack address are mixed in as well, which costs nothing and helps on platforms with
    /// weak key sources.
    pub fn from_os() -> Self {
        if let Some(seeded) = from_thread_seed() {
            return seeded;
        }
        let marker = 0u8;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut s = [0u64; 4];
        for (i, word) in s.iter_mut().enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u32(std::process::id());
            h.write_u128(now.as_nanos());
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

    /// An all-zero state: the one state xoshiro never reaches, which the thread-local
    /// generators hold until their first id seeds them from the OS, so that their state can
    /// be initialized at compile time.
    pub(crate) const UNSEEDED: FastRng = FastRng { s: [0; 4] };

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

/// wyrand (Wang Yi): one addition and one multiplication per draw. The 128-bit generators
/// use it for the per-id random bits that follow their counters, where a draw sits on the
/// fast path; the per-millisecond seeds come from [`FastRng`], whose 256-bit state makes
/// streams from independently seeded generators practically disjoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WyRand(pub(crate) u64);

impl WyRand {
    #[inline(always)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    }
}

/// Where a 128-bit generator gets its random bits: the fast PRNGs, or a caller's function
/// (tests use one to reproduce published vectors exactly).
pub(crate) enum RandomSource {
    Fast { seeds: FastRng, tails: WyRand },
    Hook(Box<dyn FnMut() -> u128 + Send>),
}

impl RandomSource {
    pub(crate) fn fast(mut seeds: FastRng) -> Self {
        let tails = WyRand(seeds.next_u64());
        RandomSource::Fast { seeds, tails }
    }

    /// Random bits for the first id of a millisecond (counter seed and tail).
    #[inline]
    pub(crate) fn next_u128(&mut self) -> u128 {
        match self {
            RandomSource::Fast { seeds, .. } => seeds.next_u128(),
            RandomSource::Hook(f) => f(),
        }
    }

    /// Random bits for an id that continues a millisecond.
    #[inline(always)]
    pub(crate) fn next_tail(&mut self) -> u64 {
        match self {
            RandomSource::Fast { tails, .. } => tails.next_u64(),
            RandomSource::Hook(f) => f() as u64,
        }
    }
}

impl std::fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RandomSource::Fast { .. } => f.write_str("FastRng"),
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
    fn a_parked_coarse_clock_reads_the_system_clock_and_wakes_its_thread() {
        let _ = CoarseClock.now_ms();
        // Simulate the refresher having parked itself.
        COARSE.now_ms.store(COARSE_PARKED, Ordering::Relaxed);
        let before = SystemClock.now_ms();
        let read = CoarseClock.now_ms();
        assert!(
            read >= before && read <= SystemClock.now_ms(),
            "{read} vs {before}"
        );
        // The woken refresher publishes a real reading again. How soon depends on the
        // scheduler (CI machines are busy), so poll with a generous deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while coarse_now_raw() == COARSE_PARKED {
            assert!(
                std::time::Instant::now() < deadline,
                "the refresher never published after being woken"
            );
            let _ = CoarseClock.now_ms();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn wyrand_draws_differ_and_depend_on_the_seed() {
        let mut a = WyRand(1);
        let mut b = WyRand(2);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_ne!(xs[0], xs[1]);
        assert_ne!(xs[0], b.next_u64());
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
