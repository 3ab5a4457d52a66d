//! Reloading certificate and credential files while serving: on `SIGHUP`, and when a
//! watched file changes (its modification time or length), so that a certificate renewed by
//! a tool that does not signal (cert-manager, certbot hooks, a mounted secret) is picked up
//! without a restart.
//!
//! Whatever reloads ([`Reload`]) keeps what it had when the new files are broken; the
//! reloader logs each outcome once per change (a file left broken is reported once, not at
//! every poll).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

/// How often watched files are checked for changes by default.
pub const POLL_MS_DEFAULT: u64 = 2_000;

/// Something read from files that can be read again.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for the log (`TLS certificate`, `node credentials`).
    fn what(&self) -> String;
    /// The files it is read from.
    fn files(&self) -> Vec<PathBuf>;
    /// Reads the files again; on an error what was read before stays in use.
    fn reload(&self) -> Result<(), String>;
}

impl Reload for crate::credentials::Credentials {
    fn what(&self) -> String {
        "credentials".to_string()
    }
    fn files(&self) -> Vec<PathBuf> {
        crate::credentials::Credentials::files(self)
    }
    fn reload(&self) -> Result<(), String> {
        crate::credentials::Credentials::reload(self).map_err(|e| e.to_string())
    }
}

impl Reload for crate::credentials::BearerToken {
    fn what(&self) -> String {
        "client token".to_string()
    }
    fn files(&self) -> Vec<PathBuf> {
        self.file()
            .map(|f| vec![f.to_path_buf()])
            .unwrap_or_default()
    }
    fn reload(&self) -> Result<(), String> {
        crate::credentials::BearerToken::reload(self).map_err(|e| e.to_string())
    }
}

impl Reload for crate::tls::ServerTls {
    fn what(&self) -> String {
        "TLS certificate".to_string()
    }
    fn files(&self) -> Vec<PathBuf> {
        crate::tls::ServerTls::files(self)
    }
    fn reload(&self) -> Result<(), String> {
        crate::tls::ServerTls::reload(self).map_err(|e| e.to_string())
    }
}

/// When to reload.
#[derive(Debug, Clone, Copy)]
pub struct Triggers {
    /// On `SIGHUP` (the services; not in-process tests, which share one process).
    pub sighup: bool,
    /// Check the files this often.
    pub poll: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            sighup: true,
            poll: Duration::from_millis(POLL_MS_DEFAULT),
        }
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

struct Watched {
    item: Arc<dyn Reload>,
    files: Vec<PathBuf>,
    stamp: Stamp,
    /// The last reload error, so each is logged once.
    failing: Option<String>,
}

impl Watched {
    fn reload(&mut self, why: &str) {
        match self.item.reload() {
            Ok(()) => {
                self.failing = None;
                tracing::info!(what = %self.item.what(), why, "reloaded");
            }
            Err(e) => {
                if self.failing.as_deref() != Some(e.as_str()) {
                    tracing::error!(what = %self.item.what(), why, error = %e,
                        "reload failed; still using what was loaded before");
                    self.failing = Some(e);
                }
            }
        }
    }
}

/// Starts the task that reloads `items` on the `triggers`; it runs until aborted. Items
/// without files are skipped; with none left the task ends at once.
pub fn spawn(items: Vec<Arc<dyn Reload>>, triggers: Triggers) -> JoinHandle<()> {
    let mut watched: Vec<Watched> = items
        .into_iter()
        .filter_map(|item| {
            let files = item.files();
            (!files.is_empty()).then(|| Watched {
                stamp: stamp(&files),
                files,
                item,
                failing: None,
            })
        })
        .collect();
    tokio::spawn(async move {
        if watched.is_empty() {
            return;
        }
        let mut hup = if triggers.sighup { sighup() } else { None };
        let mut tick = tokio::time::interval(triggers.poll.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = recv(&mut hup) => true,
            };
            for w in &mut watched {
                let now = stamp(&w.files);
                if signalled {
                    w.stamp = now;
                    w.reload("SIGHUP");
                } else if now != w.stamp {
                    w.stamp = now;
                    w.reload("file changed");
                }
            }
        }
    })
}

#[cfg(unix)]
type Hup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hup = ();

#[cfg(unix)]
fn sighup() -> Option<Hup> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files are still reloaded when they change");
            None
        }
    }
}

#[cfg(not(unix))]
fn sighup() -> Option<Hup> {
    None
}

/// The next `SIGHUP`, or never without a signal stream.
async fn recv(hup: &mut Option<Hup>) -> Option<()> {
    #[cfg(unix)]
    if let Some(h) = hup {
        return h.recv().await;
    }
    let _ = hup;
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{CredentialSource, Credentials};
    use shardflake_proto::auth::Scope;

    #[tokio::test]
    async fn a_changed_credential_file_is_reloaded_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.tokens");
        std::fs::write(&path, "first-token-0123456789\n").unwrap();
        let c = Credentials::load(vec![CredentialSource::file(Scope::Node, &path)]).unwrap();
        let task = spawn(
            vec![Arc::new(c.clone())],
            Triggers {
                sighup: false,
                poll: Duration::from_millis(20),
            },
        );
        let ok = |t: &str| c.authenticate(Some(&format!("Bearer {t}"))).is_ok();
        std::fs::write(&path, "second-token-0123456789 and more\n").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            ok("first-token-0123456789"),
            "a broken file changes nothing"
        );
        std::fs::write(&path, "second-token-0123456789\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !ok("second-token-0123456789") {
            assert!(tokio::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!ok("first-token-0123456789"));
        task.abort();
    }
}
