//! The table of operations: method, time-out class and whether a call may be repeated.
//! This is the one place that says which calls are retried.

use std::time::Duration;

use reqwest::Method;

use super::config::Timeouts;
use crate::error::WahaError;

/// Every call the client makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Ping,
    Health,
    Version,
    ServerStatus,
    ListSessions,
    GetSession,
    CreateSession,
    UpdateSession,
    DeleteSession,
    StartSession,
    StopSession,
    RestartSession,
    LogoutSession,
    Me,
    QrPng,
    QrBase64,
    QrRaw,
    RequestPairingCode,
    SendText,
    SendSeen,
    StartTyping,
    StopTyping,
}

/// Whether a call may be sent again after a transient failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Never (probes: the caller polls, and a probe must fail fast).
    Never,
    /// Only when the request certainly never reached the server (connect failures): repeating
    /// one that did would act twice.
    IfNotSent,
    /// After any transient failure: repeating ends in the same state.
    Safe,
}

impl Operation {
    /// The name used in logs, metrics and decode errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Health => "health",
            Self::Version => "version",
            Self::ServerStatus => "server_status",
            Self::ListSessions => "list_sessions",
            Self::GetSession => "get_session",
            Self::CreateSession => "create_session",
            Self::UpdateSession => "update_session",
            Self::DeleteSession => "delete_session",
            Self::StartSession => "start_session",
            Self::StopSession => "stop_session",
            Self::RestartSession => "restart_session",
            Self::LogoutSession => "logout_session",
            Self::Me => "me",
            Self::QrPng => "qr_png",
            Self::QrBase64 => "qr_base64",
            Self::QrRaw => "qr_raw",
            Self::RequestPairingCode => "request_pairing_code",
            Self::SendText => "send_text",
            Self::SendSeen => "send_seen",
            Self::StartTyping => "start_typing",
            Self::StopTyping => "stop_typing",
        }
    }

    pub(crate) fn method(self) -> Method {
        match self {
            Self::Ping
            | Self::Health
            | Self::Version
            | Self::ServerStatus
            | Self::ListSessions
            | Self::GetSession
            | Self::Me
            | Self::QrPng
            | Self::QrBase64
            | Self::QrRaw => Method::GET,
            Self::UpdateSession => Method::PUT,
            Self::DeleteSession => Method::DELETE,
            Self::CreateSession
            | Self::StartSession
            | Self::StopSession
            | Self::RestartSession
            | Self::LogoutSession
            | Self::RequestPairingCode
            | Self::SendText
            | Self::SendSeen
            | Self::StartTyping
            | Self::StopTyping => Method::POST,
        }
    }

    pub(crate) fn timeout(self, timeouts: &Timeouts) -> Duration {
        match self {
            Self::Ping | Self::Health => timeouts.probe,
            Self::Version
            | Self::ServerStatus
            | Self::ListSessions
            | Self::GetSession
            | Self::Me => timeouts.read,
            Self::CreateSession
            | Self::UpdateSession
            | Self::DeleteSession
            | Self::StartSession
            | Self::StopSession
            | Self::RestartSession
            | Self::LogoutSession => timeouts.session,
            Self::QrPng | Self::QrBase64 | Self::QrRaw => timeouts.qr,
            Self::RequestPairingCode => timeouts.pairing_code,
            Self::SendText | Self::SendSeen | Self::StartTyping | Self::StopTyping => {
                timeouts.message
            }
        }
    }

    /// Whether this call may be repeated; the reasons are in `docs/waha-client.md`.
    pub(crate) fn repeat(self) -> Repeat {
        match self {
            Self::Ping | Self::Health => Repeat::Never,
            // Repeating these acts twice: a second restart, a logout of a fresh login, a new
            // pairing code, a duplicate message.
            Self::RestartSession
            | Self::LogoutSession
            | Self::RequestPairingCode
            | Self::SendText => Repeat::IfNotSent,
            // Reads; PUT (full replace); DELETE and stop (idempotent: `docs/waha-contract.md`,
            // "Sessions"); create (a repeat of an applied create answers AlreadyExists); start
            // (a repeat answers AlreadyStarted); seen and typing (same end state).
            Self::Version
            | Self::ServerStatus
            | Self::ListSessions
            | Self::GetSession
            | Self::Me
            | Self::QrPng
            | Self::QrBase64
            | Self::QrRaw
            | Self::CreateSession
            | Self::UpdateSession
            | Self::DeleteSession
            | Self::StartSession
            | Self::StopSession
            | Self::SendSeen
            | Self::StartTyping
            | Self::StopTyping => Repeat::Safe,
        }
    }

    /// Whether to retry this call after `err`: the error must be retryable
    /// ([`WahaError::is_retryable`], the one classification) and the call repeatable.
    pub(crate) fn may_retry(self, err: &WahaError) -> bool {
        match self.repeat() {
            Repeat::Never => false,
            Repeat::IfNotSent => err.is_retryable() && err.request_not_sent(),
            Repeat::Safe => err.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransientCause;

    fn transient(cause: TransientCause) -> WahaError {
        WahaError::Transient {
            cause,
            detail: String::new(),
        }
    }

    #[test]
    fn retry_decisions() {
        let refused = transient(TransientCause::Connect);
        let timeout = transient(TransientCause::Timeout);
        let exists = WahaError::AlreadyExists {
            message: String::new(),
        };
        assert!(Operation::CreateSession.may_retry(&timeout));
        assert!(!Operation::CreateSession.may_retry(&exists));
        assert!(Operation::SendText.may_retry(&refused));
        assert!(!Operation::SendText.may_retry(&timeout));
        assert!(!Operation::Ping.may_retry(&refused));
        assert!(
            !Operation::SendText.may_retry(&transient(TransientCause::Unavailable { status: 503 }))
        );
    }
}
