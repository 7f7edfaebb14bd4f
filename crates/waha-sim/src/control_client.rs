//! [`SimControlClient`]: the control API (`/_sim/...`) over HTTP, typed, for tests that talk
//! to a simulator they do not hold in-process (a container, another process). In-process,
//! [`crate::SimulatorControl`] does the same synchronously.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_key::ApiKey;
use crate::calls::CallRecord;
use crate::control::SimStats;
use crate::control_wire::{
    AckRequest, BootingRequest, DisconnectRequest, IncomingMessage, MessageCreated, ScanRequest,
};
use crate::faults::Faults;
use crate::session::{AckLevel, DisconnectReason, Me, SessionStatus};
use crate::time_scale::deadline_after;

/// How often [`SimControlClient::wait_for_status`] asks.
const POLL: Duration = Duration::from_millis(20);

/// Time-out of one control request (the control routes skip the latency fault).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A session as the control API reports it (the fields of WAHA's `SessionInfo` a test needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SimSession {
    /// The session's name.
    pub name: String,
    /// Its status.
    pub status: SessionStatus,
    /// The account it is logged in as.
    #[serde(default)]
    pub me: Option<Me>,
}

/// What went wrong talking to a simulator's control API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimControlError {
    /// The base URL is not an `http(s)://host[:port]` URL.
    #[error("invalid simulator URL: {0}")]
    InvalidUrl(String),
    /// No answer: the simulator is not reachable (not started, crashed, wrong address).
    #[error("cannot reach the simulator: {0}")]
    Transport(#[source] reqwest::Error),
    /// 401: the simulator wants another API key.
    #[error("the simulator refused the API key")]
    Unauthorized,
    /// 404: no such session (or message, for an ack).
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: the session's status does not allow the action (e.g. a scan outside
    /// SCAN_QR_CODE): wait for the right status first.
    #[error("refused in the session's current status: {0}")]
    WrongStatus(String),
    /// Any other refusal (a 400 lists the body's problems).
    #[error("the simulator answered {status}: {}", messages.join("; "))]
    Rejected {
        /// The status code.
        status: u16,
        /// The answer's `message` (a list for validation errors).
        messages: Vec<String>,
    },
    /// A success whose body is not what the control API answers.
    #[error("unexpected answer from the simulator: {0}")]
    Decode(String),
    /// [`SimControlClient::wait_for_status`] gave up.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        after: Duration,
    },
}

impl SimControlError {
    /// Reads an error answer (`{"statusCode","message","error"}`; `message` may be a list).
    fn from_answer(status: u16, body: &[u8]) -> Self {
        let messages = match serde_json::from_slice::<Value>(body) {
            Ok(json) => match json.get("message") {
                Some(Value::String(message)) => vec![message.clone()],
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                    .collect(),
                _ => vec![json.to_string()],
            },
            Err(_) => vec![String::from_utf8_lossy(body).into_owned()],
        };
        match status {
            401 => Self::Unauthorized,
            404 => Self::NotFound(messages.join("; ")),
            409 => Self::WrongStatus(messages.join("; ")),
            _ => Self::Rejected { status, messages },
        }
    }
}

/// A typed client of a simulator's control API, behind the simulator's API key.
///
/// ```no_run
/// use std::time::Duration;
/// use waha_sim::{ApiKey, DisconnectReason, Faults, Me, SessionStatus, SimControlClient};
///
/// # async fn demo() -> Result<(), waha_sim::SimControlError> {
/// let sim = SimControlClient::new("http://127.0.0.1:3000", Some(ApiKey::new("my-key-1234")))?;
/// sim.wait_for_status("chip-1", SessionStatus::ScanQrCode, Duration::from_secs(10)).await?;
/// sim.scan_as("chip-1", &Me::phone("5511999990001", "Ana")).await?;
/// sim.disconnect("chip-1", DisconnectReason::ConnectionReplaced).await?;
/// sim.set_faults(&Faults::none().with_webhook_faults(0.1, 0.1, 0.0).with_seed(42)).await?;
/// let creates = sim.calls_for("chip-1").await?.iter().filter(|c| c.is_create()).count();
/// assert!(creates <= 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SimControlClient {
    base: String,
    key: Option<ApiKey>,
    http: reqwest::Client,
}

impl std::fmt::Debug for SimControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimControlClient")
            .field("base", &self.base)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SimControlClient {
    /// A client of the simulator at `base_url` (e.g. `http://127.0.0.1:3000`), sending
    /// `api_key` in `X-Api-Key` when given. It ignores proxy environment variables (a
    /// simulator is local) and bounds each request to 30 s.
    pub fn new(base_url: &str, api_key: Option<ApiKey>) -> Result<Self, SimControlError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(SimControlError::Transport)?;
        Self::with_http_client(base_url, api_key, http)
    }

    /// Like [`SimControlClient::new`], with the caller's HTTP client.
    pub fn with_http_client(
        base_url: &str,
        api_key: Option<ApiKey>,
        http: reqwest::Client,
    ) -> Result<Self, SimControlError> {
        // The URL is never echoed: it could carry credentials.
        let url = url::Url::parse(base_url)
            .map_err(|e| SimControlError::InvalidUrl(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SimControlError::InvalidUrl(
                "expected http(s)://host[:port]".to_owned(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SimControlError::InvalidUrl(
                "the URL must not carry credentials; pass the API key instead".to_owned(),
            ));
        }
        Ok(Self {
            base: url.as_str().trim_end_matches('/').to_owned(),
            key: api_key,
            http,
        })
    }

    /// The simulator's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn keyed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.header("X-Api-Key", key.expose()),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, SimControlError> {
        let response = self
            .keyed(request)
            .send()
            .await
            .map_err(SimControlError::Transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(SimControlError::Transport)?;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| SimControlError::Decode(e.to_string()))
        } else {
            Err(SimControlError::from_answer(status.as_u16(), &body))
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, SimControlError> {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, SimControlError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    fn session_path(session: &str, action: &str) -> String {
        format!("/_sim/sessions/{}{action}", segment(session))
    }

    /// The session's status and account (`GET /_sim/sessions/{name}`).
    pub async fn session(&self, session: &str) -> Result<SimSession, SimControlError> {
        self.get(&Self::session_path(session, "")).await
    }

    /// A phone scans the QR code of a session in SCAN_QR_CODE: it logs in as a generated
    /// number and goes WORKING.
    pub async fn scan(&self, session: &str) -> Result<SimSession, SimControlError> {
        self.post(
            &Self::session_path(session, "/scan"),
            &ScanRequest::default(),
        )
        .await
    }

    /// Like [`SimControlClient::scan`], logging in as `me`.
    pub async fn scan_as(&self, session: &str, me: &Me) -> Result<SimSession, SimControlError> {
        let request = ScanRequest {
            id: Some(me.id.clone()),
            push_name: Some(me.push_name.clone()),
        };
        self.post(&Self::session_path(session, "/scan"), &request)
            .await
    }

    /// The session goes FAILED without an engine event (see
    /// [`SimulatorControl::fail`](crate::SimulatorControl::fail)).
    pub async fn fail(&self, session: &str) -> Result<SimSession, SimControlError> {
        self.post(
            &Self::session_path(session, "/fail"),
            &serde_json::json!({}),
        )
        .await
    }

    /// The engine drops the session for `reason` (see
    /// [`SimulatorControl::disconnect`](crate::SimulatorControl::disconnect)).
    pub async fn disconnect(
        &self,
        session: &str,
        reason: DisconnectReason,
    ) -> Result<SimSession, SimControlError> {
        self.post(
            &Self::session_path(session, "/disconnect"),
            &DisconnectRequest { reason },
        )
        .await
    }

    /// The silent-WORKING fault (see
    /// [`SimulatorControl::silence`](crate::SimulatorControl::silence)).
    pub async fn silence(&self, session: &str) -> Result<SimSession, SimControlError> {
        self.post(
            &Self::session_path(session, "/silence"),
            &serde_json::json!({}),
        )
        .await
    }

    /// A message from `from` (`<digits>@c.us`) arrives at a WORKING session; returns its id.
    pub async fn receive_message(
        &self,
        session: &str,
        from: &str,
        text: &str,
    ) -> Result<String, SimControlError> {
        let message = IncomingMessage {
            from: from.to_owned(),
            text: text.to_owned(),
        };
        let created: MessageCreated = self
            .post(&Self::session_path(session, "/messages"), &message)
            .await?;
        Ok(created.id)
    }

    /// Emits a `message.ack` at `level` for a message sent through `sendText`.
    pub async fn ack(&self, message_id: &str, level: AckLevel) -> Result<(), SimControlError> {
        let path = format!("/_sim/messages/{}/ack", segment(message_id));
        let _: IgnoredAny = self.post(&path, &AckRequest { ack: level.name() }).await?;
        Ok(())
    }

    /// The faults in force (with the seed in use).
    pub async fn faults(&self) -> Result<Faults, SimControlError> {
        self.get("/_sim/faults").await
    }

    /// Replaces the faults; returns those now in force. Faults with a seed restart the webhook
    /// faults' random sequence from it.
    pub async fn set_faults(&self, faults: &Faults) -> Result<Faults, SimControlError> {
        self.send(self.http.put(self.url("/_sim/faults")).json(faults))
            .await
    }

    /// Starts a booting window of `window` (simulated time) now; `Duration::ZERO` ends it.
    pub async fn set_booting(&self, window: Duration) -> Result<(), SimControlError> {
        let request = BootingRequest {
            duration_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        };
        let _: IgnoredAny = self.post("/_sim/booting", &request).await?;
        Ok(())
    }

    /// Crashes the simulator (the binary exits with status 70).
    pub async fn crash(&self) -> Result<(), SimControlError> {
        let _: IgnoredAny = self.post("/_sim/crash", &serde_json::json!({})).await?;
        Ok(())
    }

    /// Sessions, pending timers, webhook counters and calls received.
    pub async fn stats(&self) -> Result<SimStats, SimControlError> {
        self.get("/_sim/stats").await
    }

    /// The mutating calls the simulator received, oldest first (see [`CallRecord`]).
    pub async fn calls(&self) -> Result<Vec<CallRecord>, SimControlError> {
        self.get("/_sim/calls").await
    }

    /// The mutating calls about `session`.
    pub async fn calls_for(&self, session: &str) -> Result<Vec<CallRecord>, SimControlError> {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("session", session)
            .finish();
        self.get(&format!("/_sim/calls?{query}")).await
    }

    /// Forgets the calls logged so far.
    pub async fn clear_calls(&self) -> Result<(), SimControlError> {
        let _: IgnoredAny = self.send(self.http.delete(self.url("/_sim/calls"))).await?;
        Ok(())
    }

    /// Polls (every 20 ms, wall-clock `timeout` at most) until the session has `status`; a
    /// session that does not exist yet is waited for too.
    pub async fn wait_for_status(
        &self,
        session: &str,
        status: SessionStatus,
        timeout: Duration,
    ) -> Result<SimSession, SimControlError> {
        let deadline = deadline_after(timeout);
        loop {
            let seen = match self.session(session).await {
                Ok(current) if current.status == status => return Ok(current),
                Ok(current) => current.status.to_string(),
                Err(SimControlError::NotFound(_)) => "missing".to_owned(),
                Err(error) => return Err(error),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SimControlError::Timeout {
                    what: format!("session `{session}` to be {status} (it is {seen})"),
                    after: timeout,
                });
            }
            tokio::time::sleep(left.min(POLL)).await;
        }
    }
}

/// `text` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (session names may hold `/`, spaces, anything).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("chip-1"), "chip-1");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
        assert_eq!(segment("true_55@c.us_3EB0"), "true_55%40c.us_3EB0");
    }

    #[test]
    fn error_answers_are_typed() {
        let body = br#"{"statusCode":400,"message":["a","b"],"error":"Bad Request"}"#;
        match SimControlError::from_answer(400, body) {
            SimControlError::Rejected { status, messages } => {
                assert_eq!(
                    (status, messages),
                    (400, vec!["a".to_owned(), "b".to_owned()])
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            SimControlError::from_answer(404, br#"{"message":"Session not found"}"#),
            SimControlError::NotFound(m) if m == "Session not found"
        ));
        assert!(matches!(
            SimControlError::from_answer(409, b"{}"),
            SimControlError::WrongStatus(_)
        ));
        assert!(matches!(
            SimControlError::from_answer(401, b""),
            SimControlError::Unauthorized
        ));
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(SimControlClient::new("ftp://x", None).is_err());
        assert!(SimControlClient::new("not a url", None).is_err());
        let client = SimControlClient::new("http://127.0.0.1:3000/", None).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:3000");
    }
}
