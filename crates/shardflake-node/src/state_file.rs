//! The standalone node's durable state: the reserved timestamp bound (and, for the temporal
//! layout, the counter high-water mark per shard), one file per layout and node id.
//!
//! Format (version 1), three lines of text:
//!
//! ```text
//! shardflake-node-state 1
//! {"identity":{"layout":"twitter","epoch_ms":1288834974657,"time_unit_ms":1,"node":{"datacenter":0,"worker":1}},"reserved":{"reserved_until_ms":1790000002000,...}}
//! fnv1a64 5b2c0e1a9f6d7743
//! ```
//!
//! The checksum is FNV-1a (64 bit) over the first two lines including their newlines: it
//! catches truncation and torn or flipped bytes (it is not a defence against tampering). Every
//! write goes to `<file>.tmp`, is fsynced, renamed over the file, and the directory is fsynced,
//! so a crash leaves either the old or the new state, never a mix. The file is read once at
//! start; a file that is unreadable, truncated, fails its checksum, has another version or
//! belongs to another layout or node id stops start-up with an error naming the file.
//!
//! `<file>.lock` is held with an exclusive `flock` for the life of the process, so a second
//! process with the same layout and node id on the same directory refuses to start. The lock
//! is a separate file because the state file's inode changes with every rename.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// The first line of a version 1 state file.
const MAGIC_V1: &str = "shardflake-node-state 1";
/// The prefix of the first line of every version.
const MAGIC_PREFIX: &str = "shardflake-node-state ";
/// The prefix of the checksum line.
const CHECKSUM_PREFIX: &str = "fnv1a64 ";
/// A state file is a few hundred bytes; anything this large is not one.
const STATE_FILE_BYTES_MAX: u64 = 1 << 20;

/// Why the state file could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StateError {
    /// An I/O operation failed.
    #[error("state file {path}: {op} failed: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("state file {path} is locked by another process: a node with the same layout and node id is already running on this state directory")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The file exists but cannot be trusted.
    #[error("state file {path} is corrupt: {problem}; refusing to start (a node that started from zero could repeat ids). Restore the file from a backup, or remove it only if no ids from this node id can exist")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file belongs to another configuration.
    #[error("state file {path} does not belong to this node: {problem}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
}

impl StateError {
    /// A short name of the failure, for logging retries once per kind.
    pub fn kind(&self) -> &'static str {
        match self {
            StateError::Io { op, .. } => op,
            StateError::Locked { .. } => "locked",
            StateError::Corrupt { .. } => "corrupt",
            StateError::Mismatch { .. } => "mismatch",
        }
    }
}

/// Who the state belongs to; checked on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateIdentity {
    /// The layout's name.
    pub layout: String,
    /// The layout's epoch, Unix ms.
    pub epoch_ms: u64,
    /// The layout's time unit (the shard granularity for temporal layouts), ms.
    pub time_unit_ms: u64,
    /// Node field values by name.
    pub node: Map<String, Value>,
    /// The layout's fingerprint (`Layout::spec`: every field width). Files written before it
    /// was recorded lack it and are matched on the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
}

impl StateIdentity {
    /// True if a file written for `stored` belongs to this identity.
    fn accepts(&self, stored: &StateIdentity) -> bool {
        self.layout == stored.layout
            && self.epoch_ms == stored.epoch_ms
            && self.time_unit_ms == stored.time_unit_ms
            && self.node == stored.node
            && (stored.spec.is_none() || stored.spec == self.spec)
    }
}

/// Creates `dir` and its missing parents, and fsyncs the parent of every directory it
/// creates. Without that, a power loss after the first state write can drop the new
/// directory, and with it the file, and the next start would look like a first start.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir.to_path_buf();
    while fs::symlink_metadata(&cur).is_err() {
        missing.push(cur.clone());
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p.to_path_buf(),
            _ => break,
        }
    }
    fs::create_dir_all(dir)?;
    // Parents first, so each fsync makes an entry durable inside an already durable parent.
    for created in missing.iter().rev() {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Counter high-water marks of the temporal layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemporalState {
    /// The highest shard ids were issued in: shards below it are never issued in again, so
    /// ids keep increasing across restarts even when the clock steps back.
    pub shard_floor: u64,
    /// Per shard at or above the floor: the end (exclusive) of the highest counter block
    /// granted. A restart continues at or above it.
    pub counters: BTreeMap<u64, u64>,
}

/// The reservation, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// Timestamp layouts: every issued id's tick starts at or below this, Unix ms.
    pub reserved_until_ms: u64,
    /// Temporal layout: counter high-water marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal: Option<TemporalState>,
    /// True when written by a clean shutdown, with the bound lowered to the exact last
    /// issued tick.
    #[serde(default)]
    pub clean_shutdown: bool,
    /// When the file was written (wall clock, informational), Unix ms.
    #[serde(default)]
    pub written_at_ms: u64,
}

// Nested, not flattened: serde's flatten buffers the input and then cannot read the
// counters' integer map keys back from JSON strings.
#[derive(Serialize, Deserialize)]
struct Payload {
    identity: StateIdentity,
    reserved: Reserved,
}

/// FNV-1a, 64 bit (Fowler, Noll, Vo; the IETF draft-eastlake-fnv parameters).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An open, locked state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    identity: StateIdentity,
    // Held for the flock; released when the process exits, even on SIGKILL.
    _lock: File,
}

impl StateFile {
    /// The state file's name for a layout and node label.
    pub fn file_name(layout: &str, node_label: &str) -> String {
        format!("node-{layout}-{node_label}.state")
    }

    /// Creates `dir` if needed, takes the lock and reads the state (`None`: first start).
    pub fn open(
        dir: &Path,
        node_label: &str,
        identity: StateIdentity,
    ) -> Result<(StateFile, Option<Reserved>), StateError> {
        create_dir_durably(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            op: "creating the state directory",
            source,
        })?;
        let name = Self::file_name(&identity.layout, node_label);
        let path = dir.join(&name);
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::Io {
                path: lock_path.clone(),
                op: "opening the lock file",
                source,
            })?;
        match lock.try_lock_exclusive() {
            Ok(true) => {}
            Ok(false) => return Err(StateError::Locked { path: lock_path }),
            Err(source) => {
                return Err(StateError::Io {
                    path: lock_path,
                    op: "locking",
                    source,
                })
            }
        }
        let file = StateFile {
            tmp: dir.join(format!("{name}.tmp")),
            dir: dir.to_path_buf(),
            path,
            identity,
            _lock: lock,
        };
        let state = file.load()?;
        Ok((file, state))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Option<Reserved>, StateError> {
        let bytes = match fs::metadata(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    op: "reading metadata",
                    source,
                })
            }
            Ok(m) if m.len() > STATE_FILE_BYTES_MAX => {
                return Err(self.corrupt(format!(
                    "it has {} bytes; a state file has at most {STATE_FILE_BYTES_MAX}",
                    m.len()
                )))
            }
            Ok(_) => fs::read(&self.path).map_err(|source| StateError::Io {
                path: self.path.clone(),
                op: "reading",
                source,
            })?,
        };
        let reserved = self.parse(&bytes)?;
        Ok(Some(reserved))
    }

    fn corrupt(&self, problem: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            problem,
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<Reserved, StateError> {
        parse_state(&self.path, &self.identity, bytes)
    }

    /// The exact bytes of a state file holding `reserved`.
    fn render(&self, reserved: &Reserved) -> Vec<u8> {
        let payload = Payload {
            identity: self.identity.clone(),
            reserved: reserved.clone(),
        };
        let mut out = format!("{MAGIC_V1}\n").into_bytes();
        serde_json::to_writer(&mut out, &payload).expect("state payload serializes");
        out.push(b'\n');
        seal_state(&out)
    }

    /// Writes `reserved` durably: temporary file, fsync, rename, fsync of the directory.
    /// Only after this returns may the reservation be raised.
    pub fn store(&self, reserved: &Reserved) -> Result<(), StateError> {
        let bytes = self.render(reserved);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, op, source }
        };
        let mut f = File::create(&self.tmp).map_err(io("creating", &self.tmp))?;
        f.write_all(&bytes).map_err(io("writing", &self.tmp))?;
        f.sync_all().map_err(io("fsync", &self.tmp))?;
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(io("renaming into place", &self.path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync of the directory", &self.dir))?;
        Ok(())
    }
}

/// Decodes the bytes of a state file read from `path` (which errors name) for a node of
/// `identity`: magic line, checksum, payload, identity. Every problem is a `Corrupt` or
/// `Mismatch` error, never a panic (fuzzed: `fuzz/fuzz_targets/state_file.rs`).
pub fn parse_state(
    path: &Path,
    identity: &StateIdentity,
    bytes: &[u8],
) -> Result<Reserved, StateError> {
    let corrupt = |problem: String| StateError::Corrupt {
        path: path.to_path_buf(),
        problem,
    };
    let text =
        std::str::from_utf8(bytes).map_err(|e| corrupt(format!("it is not UTF-8 text ({e})")))?;
    if text.is_empty() {
        return Err(corrupt("it is empty (truncated)".into()));
    }
    let mut lines = text.split_inclusive('\n');
    let magic = lines.next().unwrap_or_default();
    let magic_line = magic.trim_end_matches('\n');
    if magic_line != MAGIC_V1 {
        if let Some(v) = magic_line.strip_prefix(MAGIC_PREFIX) {
            return Err(corrupt(format!(
                "format version {v} is not supported by this version (it reads version 1)"
            )));
        }
        return Err(corrupt(format!(
            "the first line is not `{MAGIC_V1}` (found `{}`)",
            magic_line.chars().take(40).collect::<String>()
        )));
    }
    let payload = lines.next().unwrap_or_default();
    let Some(sum_line) = lines.next() else {
        return Err(corrupt("the checksum line is missing (truncated)".into()));
    };
    if !sum_line.ends_with('\n') || lines.next().is_some() {
        return Err(corrupt("it does not end after the checksum line".into()));
    }
    let stored = sum_line
        .trim_end_matches('\n')
        .strip_prefix(CHECKSUM_PREFIX)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("the checksum line is malformed".into()))?;
    let covered = magic.len() + payload.len();
    let computed = fnv1a64(&bytes[..covered]);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:016x}, computed {computed:016x})"
        )));
    }
    let p: Payload = serde_json::from_str(payload.trim_end_matches('\n'))
        .map_err(|e| corrupt(format!("the payload is not valid: {e}")))?;
    if !identity.accepts(&p.identity) {
        return Err(StateError::Mismatch {
            path: path.to_path_buf(),
            problem: format!(
                "it was written for {}, this node is {}",
                serde_json::to_string(&p.identity).unwrap_or_default(),
                serde_json::to_string(&identity).unwrap_or_default()
            ),
        });
    }
    Ok(p.reserved)
}

/// `body` (the magic line and the payload line) followed by its checksum line: the bytes of a
/// state file whose checksum holds, for tests and the fuzz targets.
pub fn seal_state(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let sum = fnv1a64(&out);
    out.extend_from_slice(format!("{CHECKSUM_PREFIX}{sum:016x}\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> StateIdentity {
        let mut node = Map::new();
        node.insert("datacenter".into(), 1.into());
        node.insert("worker".into(), 2.into());
        StateIdentity {
            layout: "twitter".into(),
            epoch_ms: 1_288_834_974_657,
            time_unit_ms: 1,
            node,
            spec: Some(shardflake::Layout::preset("twitter").unwrap().spec()),
        }
    }

    fn reserved(until: u64) -> Reserved {
        Reserved {
            reserved_until_ms: until,
            temporal: None,
            clean_shutdown: false,
            written_at_ms: 5,
        }
    }

    #[test]
    fn fnv_matches_the_published_vectors() {
        // draft-eastlake-fnv, test vectors for FNV-1a 64.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn missing_file_is_a_first_start_and_stores_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (f, state) = StateFile::open(dir.path(), "dc1-w2", identity()).unwrap();
        assert_eq!(state, None);
        let mut r = reserved(1_790_000_000_000);
        r.temporal = Some(TemporalState {
            shard_floor: 3,
            counters: [(3, 100), (4, 7)].into_iter().collect(),
        });
        f.store(&r).unwrap();
        assert!(!dir.path().join("node-twitter-dc1-w2.state.tmp").exists());
        drop(f);
        let (_f, state) = StateFile::open(dir.path(), "dc1-w2", identity()).unwrap();
        assert_eq!(state, Some(r));
    }

    #[test]
    fn a_second_holder_of_the_same_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_held, _) = StateFile::open(dir.path(), "dc1-w2", identity()).unwrap();
        let e = StateFile::open(dir.path(), "dc1-w2", identity()).unwrap_err();
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
        assert!(
            e.to_string().contains("node-twitter-dc1-w2.state.lock"),
            "{e}"
        );
        // Another node id shares the directory.
        StateFile::open(dir.path(), "dc1-w3", identity()).unwrap();
    }

    fn corrupt_with(edit: impl Fn(&mut Vec<u8>)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = StateFile::open(dir.path(), "n", identity()).unwrap();
        f.store(&reserved(1_790_000_000_000)).unwrap();
        let mut bytes = fs::read(f.path()).unwrap();
        edit(&mut bytes);
        fs::write(f.path(), &bytes).unwrap();
        drop(f);
        let e = StateFile::open(dir.path(), "n", identity()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("node-twitter-n.state"), "{msg}");
        msg
    }

    #[test]
    fn corruption_is_detected_and_names_the_file() {
        let m = corrupt_with(|b| b.truncate(b.len() - 10));
        assert!(m.contains("checksum"), "{m}");
        let m = corrupt_with(|b| b.truncate(40));
        assert!(m.contains("checksum line is missing"), "{m}");
        let m = corrupt_with(|b| b.clear());
        assert!(m.contains("empty"), "{m}");
        // One flipped digit in the reserved bound.
        let m = corrupt_with(|b| {
            let i = b.windows(4).position(|w| w == b"1790").unwrap();
            b[i + 3] = b'1';
        });
        assert!(m.contains("checksum mismatch"), "{m}");
        let m = corrupt_with(|b| b[22] = b'9');
        assert!(m.contains("format version 9 is not supported"), "{m}");
        let m = corrupt_with(|b| b.extend_from_slice(b"junk\n"));
        assert!(m.contains("does not end after the checksum line"), "{m}");
    }

    #[test]
    fn a_file_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = StateFile::open(dir.path(), "n", identity()).unwrap();
        f.store(&reserved(1)).unwrap();
        drop(f);
        let mut other = identity();
        other.node.insert("worker".into(), 9.into());
        let e = StateFile::open(dir.path(), "n", other).unwrap_err();
        assert!(matches!(e, StateError::Mismatch { .. }), "{e}");
        // Same name, epoch and unit, other field widths: another layout.
        let mut wider = identity();
        wider.spec = Some("twitter:timestamp=40,datacenter=6,worker=5,sequence=12".into());
        let e = StateFile::open(dir.path(), "n", wider).unwrap_err();
        assert!(matches!(e, StateError::Mismatch { .. }), "{e}");
        // A file written before the fingerprint was recorded still opens.
        let mut unversioned = identity();
        unversioned.spec = None;
        let (f, _) = StateFile::open(dir.path(), "old", unversioned).unwrap();
        f.store(&reserved(7)).unwrap();
        drop(f);
        let (_f, state) = StateFile::open(dir.path(), "old", identity()).unwrap();
        assert_eq!(state.unwrap().reserved_until_ms, 7);
    }

    #[test]
    fn missing_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        let (f, _) = StateFile::open(&nested, "n", identity()).unwrap();
        f.store(&reserved(1)).unwrap();
        assert!(nested.join("node-twitter-n.state").exists());
    }
}
