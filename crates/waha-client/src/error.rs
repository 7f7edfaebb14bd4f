//! The crate's one error type, and the one place that decides whether an error is transient.

use std::fmt;

use crate::model::SessionStatus;

/// Everything that can go wrong talking to WAHA. (A refused webhook delivery is a
/// [`WebhookError`](crate::webhook::WebhookError).)
///
/// Each variant says what the caller can do. Only [`WahaError::Transient`] is worth retrying
/// ([`WahaError::is_retryable`]); the client already retried it where that is safe, within its
/// configured time budget. No variant carries a secret: bodies are redacted before they are
/// stored, and transport errors are stripped of their URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WahaError {
    /// 401/403: the API key is missing or wrong. Fix the key; retrying will not help.
    #[error("unauthorized (HTTP {status}): the WAHA API key is missing or wrong")]
    Unauthorized {
        /// The HTTP status (401 or 403).
        status: u16,
    },

    /// 404: no such session (or the session is not running, for calls that need it running).
    #[error("not found: {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },

    /// 422 "already exists": create it under another name, or update it (`PUT`).
    #[error("already exists: {message}")]
    AlreadyExists {
        /// The server's message.
        message: String,
    },

    /// 422 "is already started": the session runs already; usually the desired state.
    #[error("already started: {message}")]
    AlreadyStarted {
        /// The server's message.
        message: String,
    },

    /// 422 from the QR route: the session is not in a state that has a QR code (yet). Wait for
    /// `SCAN_QR_CODE` (a `session.status` webhook) and ask again, or restart the session.
    #[error("session is not ready: status {}, expected one of [{}]", display_status(status.as_ref()), display_list(expected))]
    NotReady {
        /// The session, when the server named it.
        session: Option<String>,
        /// The session's current status, when the server said.
        status: Option<SessionStatus>,
        /// The statuses the call needs.
        expected: Vec<SessionStatus>,
    },

    /// 400 with validation messages (or a request this client refused to send, or an answer it
    /// refused because a caller-supplied `reqwest::Client` followed a redirect): fix the input.
    #[error("invalid request: {}", messages.join("; "))]
    Invalid {
        /// What is wrong, one message per problem.
        messages: Vec<String>,
    },

    /// Old WAHA Core (before 2026.6) runs only the session named `default`: use that name, or
    /// a current server.
    #[error("the server supports only the `default` session (old WAHA Core): {message}")]
    SingleSessionServer {
        /// The server's message.
        message: String,
    },

    /// The server could not be reached or is not ready: retry later (the client already did,
    /// where it is safe).
    #[error("transient failure ({cause}): {detail}")]
    Transient {
        /// What kind of failure.
        cause: TransientCause,
        /// Details for humans (redacted, without the URL).
        detail: String,
    },

    /// Any other answer WAHA gave: the status and the body, with secrets redacted. This
    /// includes 3xx: redirects are never followed (they would carry the API key and request
    /// bodies elsewhere), so a redirect means the base URL is wrong. Not retried.
    #[error("unexpected answer from WAHA: HTTP {status}: {body}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The body, redacted and truncated.
        body: String,
    },

    /// The answer could not be decoded (also an empty body where a JSON value is expected);
    /// `path` names the JSON field (e.g. `config.proxy.server`), or the missing one
    /// (`payload.from`).
    #[error("could not decode the answer to {operation} at `{path}`: {message}")]
    Decode {
        /// The operation whose answer failed to decode.
        operation: &'static str,
        /// The JSON path of the failing value (`.` for the root).
        path: String,
        /// What was wrong.
        message: String,
    },

    /// The server acknowledged a create with an empty body but has no such session (old WAHA
    /// Core after a DELETE). Use a current server or the `default` session.
    #[error("session {name:?} was acknowledged by the server but does not exist")]
    SessionNotCreated {
        /// The session name.
        name: String,
    },

    /// An answer was larger than [`ClientConfig::max_response_bytes`](crate::ClientConfig):
    /// reading stopped there. Not retried. Raise the limit if the answer is legitimate (a big
    /// session list), otherwise the URL points at something that is not WAHA.
    #[error("the answer to {operation} is larger than the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The operation whose answer was too large.
        operation: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
}

/// Why a [`WahaError::Transient`] happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransientCause {
    /// The connection could not be opened (refused, DNS, connect timeout): the request never
    /// reached the server.
    Connect,
    /// The operation's time-out expired while waiting for the answer.
    Timeout,
    /// The connection broke mid-request (reset, closed): the server may have acted on it.
    Disconnected,
    /// 502, 503 or 504 (or 429): a gateway or the server is overloaded or restarting.
    Unavailable {
        /// The HTTP status.
        status: u16,
    },
    /// A 400 whose body is not a NestJS error body (empty, HTML, plain text, JSON without
    /// `statusCode` or a message list): taken for a server that is still booting (see
    /// `docs/waha-client.md`, "Booting 400").
    Booting,
}

impl TransientCause {
    /// Whether the request certainly did not reach the server, so that even a call which is
    /// not safe to repeat (like `sendText`) may be retried.
    pub fn request_not_sent(self) -> bool {
        matches!(self, Self::Connect)
    }
}

impl fmt::Display for TransientCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("could not connect"),
            Self::Timeout => f.write_str("timed out"),
            Self::Disconnected => f.write_str("connection lost"),
            Self::Unavailable { status } => write!(f, "unavailable, HTTP {status}"),
            Self::Booting => f.write_str("server booting"),
        }
    }
}

impl WahaError {
    /// Whether trying again later can succeed. This is the one place that decides it: only
    /// [`WahaError::Transient`] is retryable. Whether a given *call* may be repeated is a
    /// separate question, answered per operation (see `docs/waha-client.md`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// Whether the failed request certainly never reached the server.
    pub fn request_not_sent(&self) -> bool {
        matches!(self, Self::Transient { cause, .. } if cause.request_not_sent())
    }

    /// A short, stable name of the variant, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::AlreadyStarted { .. } => "already_started",
            Self::NotReady { .. } => "not_ready",
            Self::Invalid { .. } => "invalid",
            Self::SingleSessionServer { .. } => "single_session_server",
            Self::Transient { .. } => "transient",
            Self::Api { .. } => "api",
            Self::Decode { .. } => "decode",
            Self::SessionNotCreated { .. } => "session_not_created",
            Self::ResponseTooLarge { .. } => "response_too_large",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            messages: vec![message.into()],
        }
    }
}

fn display_status(status: Option<&SessionStatus>) -> &str {
    status.map_or("unknown", SessionStatus::as_str)
}

fn display_list(statuses: &[SessionStatus]) -> String {
    statuses
        .iter()
        .map(SessionStatus::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
