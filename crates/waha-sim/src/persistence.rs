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
    /// renamed aside (`<file>.corrupt-<unix seconds>`, never loaded again) with a warning, so
    /// a later session of the same name cannot overwrite them; if that rename fails, the
    /// directory is refused with [`SimError::StateDir`].
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
                    serde_json::from_slice::<PersistedSession>(&bytes)
                        .map_err(|e| describe_json_error(&e))
                });
            match parsed {
                Ok(session) => sessions.push(session),
                Err(error) => {
                    let aside = move_aside(&path).map_err(|source| SimError::StateDir {
                        path: path.clone(),
                        source,
                    })?;
                    tracing::warn!(
                        path = %path.display(),
                        moved_to = %aside.display(),
                        %error,
                        "unreadable session file moved aside"
                    );
                    fsync_dir(dir).map_err(io)?;
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

    /// Writes every queued session now. A session that cannot be written (or whose file cannot
    /// be removed) is queued again; returns whether everything was written.
    pub(crate) fn flush(&self, state: &SimState) -> bool {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut failed = Vec::new();
        for name in names {
            let record = state.sessions().get(&name).map(|s| PersistedSession {
                name: name.clone(),
                config: s.config.as_deref().cloned(),
                me: s.me.clone(),
                running: s.is_running(),
            });
            let path = self.file_for(&name);
            let result = match record {
                Some(record) => write_atomically(&self.dir, &path, &record),
                None => remove_durably(&self.dir, &path),
            };
            if let Err(error) = result {
                tracing::error!(session = %name, path = %path.display(), %error, "cannot persist session; will retry");
                failed.push(name);
            }
        }
        if failed.is_empty() {
            return true;
        }
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(failed);
        false
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

/// What is logged about a session file that is not valid JSON for [`PersistedSession`]: the
/// category and position only. serde_json's message quotes the offending value, which may be
/// a secret (an HMAC key, a proxy password).
fn describe_json_error(error: &serde_json::Error) -> String {
    let category = match error.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!(
        "{category} at line {} column {}",
        error.line(),
        error.column()
    )
}

/// Renames an unreadable file to `<file>.corrupt-<unix seconds>` (with `-<n>` added if that
/// exists already) and returns the new path.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut base = path.as_os_str().to_owned();
    base.push(format!(".corrupt-{seconds}"));
    let mut aside = PathBuf::from(&base);
    let mut n = 0_u32;
    while aside.symlink_metadata().is_ok() {
        n += 1;
        let mut numbered = base.clone();
        numbered.push(format!("-{n}"));
        aside = PathBuf::from(numbered);
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Makes a rename or removal in `dir` durable.
fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `record` to `path` through a temporary file (fsync, rename, directory fsync). The
/// temporary file is removed if anything fails.
fn write_atomically(dir: &Path, path: &Path, record: &PersistedSession) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    if let Err(error) = write_then_rename(&tmp, path, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    fsync_dir(dir)
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(tmp, path)
}

/// Removes `path` (already gone is fine), then syncs the directory.
fn remove_durably(dir: &Path, path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    fsync_dir(dir)
}

/// The first pause before writes that failed are tried again.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest pause between retries, so a disk that keeps failing is not hammered.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Writes queued sessions as they change, until the simulator stops. Failed writes are
/// retried after a pause that doubles from [`RETRY_MIN`] to [`RETRY_MAX`].
pub(crate) async fn run(state: Arc<SimState>) {
    let Some(persistence) = state.persistence.as_ref() else {
        return;
    };
    let mut backoff = RETRY_MIN;
    loop {
        persistence.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let flush_state = Arc::clone(&state);
        let flushed = tokio::task::spawn_blocking(move || {
            flush_state
                .persistence
                .as_ref()
                .is_none_or(|p| p.flush(&flush_state))
        })
        .await
        .unwrap_or(false);
        if flushed {
            backoff = RETRY_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(RETRY_MAX);
            persistence.wake.notify_one();
        }
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

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("waha-sim-unit-{tag}-{}", ulid::Ulid::generate()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(name: &str) -> PersistedSession {
        PersistedSession {
            name: name.to_owned(),
            config: None,
            me: None,
            running: false,
        }
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = Scratch::new("tmp-cleanup");
        let path = dir.0.join(file_name("blocked"));
        // A directory where the file should go: the rename fails.
        std::fs::create_dir_all(path.join("occupied")).unwrap();
        assert!(write_atomically(&dir.0, &path, &record("blocked")).is_err());
        assert!(
            !path.with_extension("json.tmp").exists(),
            "the temporary file is removed after a failure"
        );
        std::fs::remove_dir_all(&path).unwrap();
        write_atomically(&dir.0, &path, &record("blocked")).unwrap();
        let back: PersistedSession =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.name, "blocked");
        assert!(!path.with_extension("json.tmp").exists());
    }

    /// A `MakeWriter` that appends to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn unreadable_files_are_moved_aside_and_their_values_never_logged() {
        const SECRET: &str = "hmac-key-6b1f-never-log-me";
        let dir = Scratch::new("corrupt-log");
        let bad = dir.0.join(file_name("leaky"));
        // A string where an object is expected: serde_json's own message would quote it.
        let content = format!(
            r#"{{"name":"leaky","config":{{"webhooks":[{{"url":"http://x","events":[],"hmac":"{SECRET}"}}]}},"me":null,"running":false}}"#
        );
        std::fs::write(&bad, &content).unwrap();
        let serde_message = serde_json::from_str::<PersistedSession>(&content)
            .unwrap_err()
            .to_string();
        assert!(
            serde_message.contains(SECRET),
            "the test input must provoke a quoting error"
        );

        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let (_, sessions) =
            tracing::subscriber::with_default(subscriber, || Persistence::open(&dir.0)).unwrap();
        assert!(sessions.is_empty());

        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("moved aside"), "{logs}");
        assert!(!logs.contains(SECRET), "{logs}");
        assert!(
            logs.contains("JSON of the wrong shape at line 1 column"),
            "{logs}"
        );

        assert!(
            !bad.exists(),
            "the bad file is no longer where a session would be written"
        );
        let aside: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        let aside_name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            aside_name.starts_with(&format!("{}.corrupt-", file_name("leaky"))),
            "{aside_name}"
        );
        assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), content);
    }

    #[test]
    fn moving_aside_never_replaces_an_earlier_copy() {
        let dir = Scratch::new("aside-twice");
        let path = dir.0.join("x.json");
        std::fs::write(&path, b"first").unwrap();
        let first = move_aside(&path).unwrap();
        std::fs::write(&path, b"second").unwrap();
        let second = move_aside(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&first).unwrap(), b"first");
        assert_eq!(std::fs::read(&second).unwrap(), b"second");
    }
}
