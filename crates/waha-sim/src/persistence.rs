//! The optional state directory (WAHA's `/app/.sessions` volume): one JSON file per session,
//! written atomically (temporary file, fsync, rename), loaded at start-up.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::SimError;
use crate::session::Me;
use crate::state::SimState;
use crate::wire::SessionConfig;

/// How long changes are gathered before being written.
const COALESCE: Duration = Duration::from_millis(10);

/// A session as stored on disk (secrets included, as in WAHA's own volume).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PersistedSession {
    pub(crate) name: String,
    pub(crate) config: Option<SessionConfig>,
    pub(crate) me: Option<Me>,
    /// Whether the session was started (it is started again at boot).
    pub(crate) running: bool,
}

/// The state directory and the sessions waiting to be written.
#[derive(Debug)]
pub(crate) struct Persistence {
    dir: PathBuf,
    dirty: Mutex<HashSet<String>>,
    /// Held for a whole flush, so the final flush at shutdown waits for one in progress.
    flushing: Mutex<()>,
    wake: Notify,
}

impl Persistence {
    /// Creates the directory if needed and reads every stored session. Unreadable files are
    /// left in place and skipped with a warning.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<PersistedSession>), SimError> {
        let io = |source| SimError::StateDir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut sessions = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<PersistedSession>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(session) => sessions.push(session),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable session file");
                }
            }
        }
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        let persistence = Self {
            dir: dir.to_owned(),
            dirty: Mutex::new(HashSet::new()),
            flushing: Mutex::new(()),
            wake: Notify::new(),
        };
        Ok((persistence, sessions))
    }

    /// Queues a session to be written (or removed, if it no longer exists).
    pub(crate) fn mark(&self, name: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
        self.wake.notify_one();
    }

    fn file_for(&self, name: &str) -> PathBuf {
        self.dir.join(file_name(name))
    }

    /// Writes every queued session now.
    pub(crate) fn flush(&self, state: &SimState) {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for name in names {
            let record = state.sessions().get(&name).map(|s| PersistedSession {
                name: name.clone(),
                config: s.config.as_deref().cloned(),
                me: s.me.clone(),
                running: s.is_running(),
            });
            let path = self.file_for(&name);
            let result = match record {
                Some(record) => write_atomically(&path, &record),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(error) = result {
                tracing::error!(session = %name, path = %path.display(), %error, "cannot persist session");
            }
        }
    }
}

/// Names longer than this (in UTF-8 bytes) are stored under a digest: 54 UTF-16 units can be
/// 162 bytes, whose hex would pass the usual 255-byte limit on file names.
const MAX_HEX_NAME_BYTES: usize = 100;

/// The file a session is stored in. Names may hold any character (`../x` passes WAHA's
/// validation), so they never reach the file system as they are: short names as hex, long
/// ones as a SHA-256 digest (the name itself is inside the file).
fn file_name(name: &str) -> String {
    if name.len() <= MAX_HEX_NAME_BYTES {
        format!("{}.json", hex::encode(name.as_bytes()))
    } else {
        format!(
            "sha256-{}.json",
            hex::encode(Sha256::digest(name.as_bytes()))
        )
    }
}

fn write_atomically(path: &Path, record: &PersistedSession) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes queued sessions as they change, until the simulator stops.
pub(crate) async fn run(state: Arc<SimState>) {
    let Some(persistence) = state.persistence.as_ref() else {
        return;
    };
    loop {
        persistence.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let state = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = state.persistence.as_ref() {
                p.flush(&state);
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_short_and_distinct() {
        assert_eq!(file_name("../x"), "2e2e2f78.json");
        let long = "会".repeat(54);
        let longer = "会".repeat(53) + "x";
        for name in [long.as_str(), longer.as_str(), &"a".repeat(54)] {
            let file = file_name(name);
            assert!(file.len() + ".tmp".len() <= 255, "{file}");
            assert!(
                file.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            );
        }
        assert_ne!(file_name(&long), file_name(&longer));
    }
}
