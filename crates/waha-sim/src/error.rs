//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::session::SessionStatus;

/// Everything that can go wrong while configuring, running or driving a simulator.
///
/// Each variant says what the caller can do about it. Messages never carry secrets (API keys,
/// HMAC keys, proxy passwords).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting (builder call or environment variable) has a value the simulator cannot use:
    /// fix the value named in `setting`.
    #[error("invalid simulator setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method or environment variable at fault.
        setting: String,
        /// Why the value was refused.
        reason: String,
    },
    /// The listening socket could not be bound: pick another address or port.
    #[error("could not bind the simulator to {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: std::net::SocketAddr,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The state directory could not be created or read, or an unreadable session file in it
    /// could not be renamed aside: check the path and its permissions.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory (or file inside it) at fault.
        path: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The simulator's own thread or runtime could not be started.
    #[error("could not start the simulator runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No session has this name: create it first.
    #[error("session `{0}` not found")]
    SessionNotFound(String),
    /// The control action does not apply to the session's current status: wait for the
    /// expected status (see `SimulatorControl::wait_for_status`) and try again.
    #[error("session `{session}` is {status}, this action needs {}", expected.join(" or "))]
    InvalidSessionState {
        /// The session's name.
        session: String,
        /// Its status when the action was tried.
        status: SessionStatus,
        /// The statuses the action needs.
        expected: &'static [&'static str],
    },
    /// No sent message has this id (ids are kept for the most recent messages only).
    #[error("message `{0}` not found")]
    MessageNotFound(String),
    /// A wait ended before the condition held.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        after: Duration,
    },
    /// The simulator has been shut down or has crashed: start a new one.
    #[error("the simulator is no longer running")]
    Stopped,
    /// The health probe did not get a 200 from `/ping`.
    #[error("health check failed: {0}")]
    Unhealthy(String),
    /// Building the static binary with cargo failed: read cargo's output above the error.
    #[cfg(feature = "docker")]
    #[error("building the static waha-sim binary failed: {0}")]
    StaticBuild(String),
    /// The Docker daemon refused a request: is it running and reachable?
    #[cfg(feature = "docker")]
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// The Docker image build reported an error.
    #[cfg(feature = "docker")]
    #[error("docker image build failed: {0}")]
    ImageBuild(String),
}

impl SimError {
    pub(crate) fn setting(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidSetting {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}
