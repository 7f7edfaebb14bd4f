//! The log of mutating calls the simulator received: who called, what, when. Tests read it
//! (`SimulatorControl::calls`, `GET /_sim/calls`) to prove, for example, that a supervisor
//! created each chip's session at most once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Records kept (oldest forgotten first; `seq` shows the gap).
const CAPACITY: usize = 100_000;

/// One mutating call (`POST`, `PUT`, `PATCH`, `DELETE` on WAHA's `/api/...` routes; the
/// `/_sim` control routes are not logged), whatever the answer was: refused calls (401, the
/// booting window, the error-rate fault) are logged too, with their status.
///
/// JSON (`GET /_sim/calls`): `{"seq":1,"method":"POST","route":"/api/sessions",
/// "session":"chip-1","apiKey":"sha256:…","remoteAddr":"127.0.0.1:50000","status":201,
/// "atMs":…,"simMs":…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CallRecord {
    /// Position in the log, from 1 (a gap at the start means old records were forgotten).
    pub seq: u64,
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The route as declared, e.g. `/api/sessions/{session}/start` (the path itself when no
    /// route matched).
    pub route: String,
    /// The session the call was about: the path's `{session}`, or the body's `name` (create) or
    /// `session` (`sendText`, `sendSeen`, typing) as the handler read it, including a name the
    /// server generated. `None` when unknown: a call refused before its body was read (401,
    /// booting, error rate) on a route without the session in its path.
    pub session: Option<String>,
    /// Who called: `sha256:<16 hex>`, a fingerprint of the API key presented (never the key);
    /// `None` when none was presented.
    pub api_key: Option<String>,
    /// The caller's address.
    pub remote_addr: Option<SocketAddr>,
    /// The answer's status code.
    pub status: u16,
    /// When the call arrived: milliseconds since the Unix epoch (wall clock).
    pub at_ms: u64,
    /// When the call arrived in simulated time: milliseconds since the simulator started,
    /// divided by the time scale (so at `time_scale(0.01)` a call 600 ms after start has
    /// `simMs` 60 000).
    pub sim_ms: u64,
}

impl CallRecord {
    /// Who called: the key fingerprint, else the remote address, else `unknown`.
    pub fn caller(&self) -> String {
        match (&self.api_key, self.remote_addr) {
            (Some(key), _) => key.clone(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "unknown".to_owned(),
        }
    }

    /// Whether this is a session create (`POST /api/sessions`).
    pub fn is_create(&self) -> bool {
        self.method == "POST" && self.route == "/api/sessions"
    }
}

/// The bounded log.
#[derive(Debug, Default)]
pub(crate) struct CallLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    records: VecDeque<CallRecord>,
    last_seq: u64,
}

impl CallLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `record`, numbering it.
    pub(crate) fn record(&self, mut record: CallRecord) {
        let mut inner = self.lock();
        inner.last_seq += 1;
        record.seq = inner.last_seq;
        if inner.records.len() >= CAPACITY {
            inner.records.pop_front();
        }
        inner.records.push_back(record);
    }

    /// The records kept, oldest first; only those about `session` when given.
    pub(crate) fn snapshot(&self, session: Option<&str>) -> Vec<CallRecord> {
        self.lock()
            .records
            .iter()
            .filter(|r| session.is_none_or(|s| r.session.as_deref() == Some(s)))
            .cloned()
            .collect()
    }

    /// Forgets every record (numbering goes on).
    pub(crate) fn clear(&self) {
        self.lock().records.clear();
    }

    /// How many calls were logged since the start (cleared ones included).
    pub(crate) fn total(&self) -> u64 {
        self.lock().last_seq
    }
}

/// `sha256:<16 hex>`: names an API key without revealing it.
pub(crate) fn key_fingerprint(key: &str) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("sha256:{}", &digest[..16])
}

/// The `{session}` segment of `path` under the route `template`, percent-decoded (as the
/// handlers' `Path` extractor decodes it).
pub(crate) fn session_in_path(template: &str, path: &str) -> Option<String> {
    let index = template.split('/').position(|s| s == "{session}")?;
    path.split('/').nth(index).map(percent_decode)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' {
            let digit = |at: usize| bytes.get(at).and_then(|&b| hex_digit(b));
            digit(i + 1).zip(digit(i + 2))
        } else {
            None
        };
        match escaped {
            Some((high, low)) => {
                out.push(high * 16 + low);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(session: Option<&str>) -> CallRecord {
        CallRecord {
            seq: 0,
            method: "POST".into(),
            route: "/api/sessions".into(),
            session: session.map(str::to_owned),
            api_key: None,
            remote_addr: None,
            status: 201,
            at_ms: 0,
            sim_ms: 0,
        }
    }

    #[test]
    fn numbers_filters_and_forgets() {
        let log = CallLog::default();
        log.record(record(Some("a")));
        log.record(record(Some("b")));
        log.record(record(None));
        let all = log.snapshot(None);
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(log.snapshot(Some("b")).len(), 1);
        assert!(all[0].is_create());
        log.clear();
        assert!(log.snapshot(None).is_empty());
        log.record(record(Some("a")));
        assert_eq!(log.snapshot(None)[0].seq, 4);
        assert_eq!(log.total(), 4);
    }

    #[test]
    fn path_sessions_decode_like_the_handlers() {
        assert_eq!(
            session_in_path(
                "/api/sessions/{session}/start",
                "/api/sessions/chip-1/start"
            ),
            Some("chip-1".to_owned())
        );
        assert_eq!(
            session_in_path("/api/{session}/auth/qr", "/api/..%2Fx/auth/qr"),
            Some("../x".to_owned())
        );
        assert_eq!(
            session_in_path("/api/sessions/{session}", "/api/sessions/a%20b%"),
            Some("a b%".to_owned())
        );
        assert_eq!(session_in_path("/api/sessions", "/api/sessions"), None);
    }

    #[test]
    fn fingerprints_hide_the_key() {
        let fp = key_fingerprint("a-secret-key-123");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 16, "{fp}");
        assert!(!fp.contains("secret"));
        assert_eq!(fp, key_fingerprint("a-secret-key-123"));
        assert_ne!(fp, key_fingerprint("another-key-456"));
    }
}
