//! `fork()` copies a process's memory, including the thread-local generators behind
//! `uuid7::next` and `ulid::next` and the coarse clock's last reading, but none of its other
//! threads, so the child has no coarse clock refresher. These tests fork a process that has
//! used a generator and check that the child's ids share nothing with the parent's or a
//! sibling's, and that the child's clock keeps moving.
//!
//! The test harness is multi-threaded, so a child only generates ids, sleeps, writes to a
//! socket created before the fork and leaves with `_exit`; it never returns into the harness.
#![cfg(unix)]
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use shardflake::ulid::{self, Ulid};
use shardflake::uuid7::{self, Uuid7};

/// How many ids each process generates right after the fork.
const IDS: usize = 10_000;

/// How many forks the tests that depend on timing make.
const ATTEMPTS: usize = 10;

/// How long a child sleeps before its last id: long enough for a running clock to move on.
const CHILD_SLEEP: Duration = Duration::from_millis(20);

/// One id as a `u128`, from the generator under test.
type Next = fn() -> u128;

fn uuid7_next() -> u128 {
    uuid7::next().as_u128()
}

fn uuid7_timestamp_ms(id: u128) -> u64 {
    Uuid7::from_u128(id).expect("a UUIDv7").timestamp_ms()
}

fn ulid_next() -> u128 {
    ulid::next().expect("a ULID").as_u128()
}

fn ulid_timestamp_ms(id: u128) -> u64 {
    Ulid::from_u128(id).timestamp_ms()
}

/// A forked child that is generating ids.
struct Child {
    pid: libc::pid_t,
    ids: UnixStream,
}

/// What a child generated.
struct ChildIds {
    /// The ids it generated right after the fork.
    ids: Vec<u128>,
    /// One more id, taken [`CHILD_SLEEP`] after the others.
    late: u128,
}

/// Forks a child that generates [`IDS`] ids with `next`, sleeps for [`CHILD_SLEEP`], takes
/// one more id and sends them all back.
fn fork_child(next: Next) -> Child {
    fork_child_then(|| {}, next)
}

/// [`fork_child`], with the child running `first` before it generates.
fn fork_child_then(first: fn(), next: Next) -> Child {
    let (parent_end, child_end) = UnixStream::pair().expect("a socket pair");
    // Allocated before the fork so that the child needs no memory of its own for the ids.
    let mut buf = vec![0u8; (IDS + 1) * 16];
    // SAFETY: the child runs only code that is sound after a fork from a multi-threaded
    // process here: the generator, a sleep, a write to a socket it inherited, and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let sent = std::panic::catch_unwind(AssertUnwindSafe(|| {
            first();
            run_child(next, &mut buf, child_end)
        }));
        let code = match sent {
            Ok(Ok(())) => 0,
            Ok(Err(_)) => 2,
            Err(_) => 3,
        };
        // SAFETY: `_exit` ends the child at once. It must not return into the test harness,
        // which would go on running tests in the child, nor run the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
    drop(child_end);
    Child {
        pid,
        ids: parent_end,
    }
}

fn run_child(next: Next, buf: &mut [u8], mut out: UnixStream) -> std::io::Result<()> {
    let (ids, late) = buf.split_at_mut(IDS * 16);
    for slot in ids.chunks_exact_mut(16) {
        slot.copy_from_slice(&next().to_le_bytes());
    }
    std::thread::sleep(CHILD_SLEEP);
    late.copy_from_slice(&next().to_le_bytes());
    out.write_all(buf)
}

impl Child {
    /// Reads the child's ids and reaps it.
    fn collect(mut self) -> ChildIds {
        let mut bytes = Vec::with_capacity((IDS + 1) * 16);
        self.ids
            .read_to_end(&mut bytes)
            .expect("reading the child's ids");
        let mut status = 0;
        // SAFETY: waits for a child this process forked and has not reaped yet.
        let reaped = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(
            reaped,
            self.pid,
            "waitpid: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed (wait status {status:#x})"
        );
        assert_eq!(bytes.len(), (IDS + 1) * 16, "the child sent a short answer");
        let mut ids: Vec<u128> = bytes
            .chunks_exact(16)
            .map(|b| u128::from_le_bytes(b.try_into().expect("16 bytes")))
            .collect();
        let late = ids.pop().expect("the late id");
        ChildIds { ids, late }
    }
}

/// Uses the thread-local generator before the fork, as a process that forks workers would.
/// The pause between the two rounds lets the coarse clock's refresher thread publish its
/// readings, so that the fork copies a running clock.
fn warm_up(next: Next) {
    for _ in 0..16 {
        next();
    }
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..16 {
        next();
    }
}

fn assert_disjoint(a_name: &str, a: &[u128], b_name: &str, b: &[u128]) {
    let a_set: HashSet<u128> = a.iter().copied().collect();
    let shared: Vec<u128> = b.iter().copied().filter(|id| a_set.contains(id)).collect();
    assert!(
        shared.is_empty(),
        "{} of the {}'s {} ids are also the {}'s, the first {:032x}",
        shared.len(),
        b_name,
        b.len(),
        a_name,
        shared[0]
    );
}

fn assert_child_ids_are_sound(name: &str, child: &ChildIds, timestamp_ms: fn(u128) -> u64) {
    assert!(
        child.ids.windows(2).all(|w| w[0] < w[1]) && child.ids[IDS - 1] < child.late,
        "the {name}'s ids do not increase"
    );
    let first = timestamp_ms(child.ids[0]);
    let late = timestamp_ms(child.late);
    assert!(
        late > first,
        "the {name}'s clock is frozen: its id taken {CHILD_SLEEP:?} after its first has the \
         same timestamp, {first} ms (the first child id {:032x}, the late one {:032x})",
        child.ids[0],
        child.late
    );
}

/// The parent and a child both generate right after the fork, in the same millisecond.
fn check_parent_and_child(next: Next, timestamp_ms: fn(u128) -> u64) {
    warm_up(next);
    let child = fork_child(next);
    let parent: Vec<u128> = (0..IDS).map(|_| next()).collect();
    let child = child.collect();
    assert_disjoint("parent", &parent, "child", &child.ids);
    assert_child_ids_are_sound("child", &child, timestamp_ms);
}

/// Two children of the same parent generate at about the same time. Their copies of the
/// parent's state are identical, so they must reseed from different entropy; identical seeds
/// only show as shared ids when both children start in the same millisecond, so the test
/// makes several attempts.
fn check_sibling_children(next: Next, timestamp_ms: fn(u128) -> u64) {
    for _ in 0..ATTEMPTS {
        warm_up(next);
        let first = fork_child(next);
        let second = fork_child(next);
        let parent: Vec<u128> = (0..IDS).map(|_| next()).collect();
        let first = first.collect();
        let second = second.collect();
        assert_disjoint("first child", &first.ids, "second child", &second.ids);
        assert_disjoint("parent", &parent, "first child", &first.ids);
        assert_disjoint("parent", &parent, "second child", &second.ids);
        assert_child_ids_are_sound("first child", &first, timestamp_ms);
        assert_child_ids_are_sound("second child", &second, timestamp_ms);
    }
}

#[test]
fn uuid7_child_shares_no_ids_with_its_parent_and_its_clock_runs() {
    check_parent_and_child(uuid7_next, uuid7_timestamp_ms);
}

#[test]
fn ulid_child_shares_no_ids_with_its_parent_and_its_clock_runs() {
    check_parent_and_child(ulid_next, ulid_timestamp_ms);
}

#[test]
fn uuid7_sibling_children_share_no_ids() {
    check_sibling_children(uuid7_next, uuid7_timestamp_ms);
}

#[test]
fn ulid_sibling_children_share_no_ids() {
    check_sibling_children(ulid_next, ulid_timestamp_ms);
}

/// The child first uses `uuid7::next`, which starts the child's coarse clock refresher, and
/// then `ulid::next`, whose copy of the parent's state must not take the fast path now that
/// the clock publishes real readings again. That copy could only take the fast path while
/// the child's clock still reads the millisecond of the parent's last id, so each attempt
/// forks just after the parent's clock moved to a new millisecond, and the test makes
/// several attempts.
#[test]
fn ulid_child_that_restarted_the_clock_through_uuid7_shares_no_ids_with_its_parent() {
    for _ in 0..ATTEMPTS {
        warm_up(ulid_next);
        let last = ulid_timestamp_ms(ulid_next());
        while ulid_timestamp_ms(ulid_next()) == last {}
        let child = fork_child_then(
            || {
                uuid7::next();
                // Time for the child's new refresher to publish a reading.
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_micros(100) {
                    std::thread::yield_now();
                }
            },
            ulid_next,
        );
        let parent: Vec<u128> = (0..IDS).map(|_| ulid_next()).collect();
        let child = child.collect();
        assert_disjoint("parent", &parent, "child", &child.ids);
        assert_child_ids_are_sound("child", &child, ulid_timestamp_ms);
    }
}
