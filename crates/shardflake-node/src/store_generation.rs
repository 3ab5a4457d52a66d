//! The highest coordinator-store generation a cluster node has seen, kept in its state
//! directory across restarts (`store-generation.json`), so that a store restored from a
//! backup is noticed even after every node restarted: the node tells the coordinators, which
//! then refuse to grant until the store is repaired
//! ([`shardflake_proto::generation`]).
//!
//! The file is rewritten (temporary file, fsync, rename, fsync of the directory) at most
//! every [`KEEP_EVERY_MS`] while the generation rises, and at a clean shutdown. A file that
//! lags behind only weakens the check to restores older than it; a corrupt one stops the
//! start with an error naming it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardflake_client::CoordinatorClient;
use shardflake_proto::generation::GenerationStamp;

use crate::source::{off_runtime, DynClock};
use crate::state::StartError;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "store-generation.json";
/// How often a rising generation is written.
pub const KEEP_EVERY_MS: u64 = 5_000;
/// The file is a few hundred bytes; anything this large is not one.
const FILE_BYTES_MAX: u64 = 64 * 1024;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    /// The store the generation is of (informational: a stamp of another store is refused by
    /// its coordinators, and then forgotten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store_id: Option<String>,
    /// The highest generation seen, with its proof.
    generation: GenerationStamp,
}

/// The file in `dir`.
pub(crate) fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The generation kept in `dir`, if any; a file that does not parse is an error naming it.
pub(crate) fn load(dir: &Path) -> Result<Option<GenerationStamp>, StartError> {
    let path = path_in(dir);
    let bad = |problem: String| {
        StartError::Cluster(format!(
            "{}: {problem}; refusing to start (it is what tells a restored coordinator store from the one this node used). Restore it, or remove it only if the coordinators' store was not restored",
            path.display()
        ))
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    };
    if meta.len() > FILE_BYTES_MAX {
        return Err(bad(format!("{} bytes, not a generation file", meta.len())));
    }
    let bytes = fs::read(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let r: Remembered =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("it does not parse: {e}")))?;
    Ok(Some(r.generation))
}

/// Writes `stamp` of `store_id` to `dir` durably.
pub(crate) fn store(
    dir: &Path,
    stamp: &GenerationStamp,
    store_id: Option<String>,
) -> std::io::Result<()> {
    crate::state_file::create_dir_durably(dir)?;
    let path = path_in(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let body = serde_json::to_vec(&Remembered {
        store_id,
        generation: stamp.clone(),
    })
    .expect("a generation serializes");
    let mut f = File::create(&tmp)?;
    f.write_all(&body)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Keeps `client`'s generation in `dir`: every [`KEEP_EVERY_MS`] while it rises. A failed
/// write is logged once per change of state and tried again.
pub(crate) fn spawn_keeper(
    dir: PathBuf,
    client: Arc<CoordinatorClient>,
    mut written: Option<u64>,
    clock: DynClock,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(Duration::from_millis(KEEP_EVERY_MS)).await;
            let Some(stamp) = client.generation() else {
                continue;
            };
            if written.is_some_and(|w| w >= stamp.generation) {
                continue;
            }
            let (d, s, id) = (dir.clone(), stamp.clone(), client.store_id());
            match off_runtime(&clock, move || store(&d, &s, id)).await {
                Ok(Ok(())) => {
                    written = Some(stamp.generation);
                    if std::mem::take(&mut failing) {
                        tracing::info!(dir = %dir.display(), "store generation written again");
                    }
                }
                Ok(Err(e)) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(dir = %dir.display(), error = %e,
                            "cannot write the store generation; retrying");
                    }
                }
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_generation_round_trips_and_a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None, "no file: nothing kept");
        let stamp = GenerationStamp::parse(&format!("77.{}", "0f".repeat(32))).unwrap();
        store(dir.path(), &stamp, Some("store-a".into())).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(stamp));
        fs::write(path_in(dir.path()), b"{\"generation\":\"77\"}").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("does not parse"), "{e}");
    }
}
