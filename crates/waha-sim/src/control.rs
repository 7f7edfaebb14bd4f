//! The control handle: what a test does to the simulated phones and network.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::calls::CallRecord;
use crate::faults::Faults;
use crate::session::lifecycle::Refusal;
use crate::session::{AckLevel, DisconnectReason, Me, SessionStatus};
use crate::state::SimState;
use crate::time_scale::deadline_after;
use crate::webhook::WebhookStats;

/// A snapshot of a running simulator (`GET /_sim/stats`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SimStats {
    /// Sessions that exist.
    pub sessions: usize,
    /// Timers waiting in the queue (QR expiries, start-ups, restarts, acks).
    pub pending_timers: usize,
    /// Webhook delivery counters.
    pub webhooks: WebhookStats,
    /// Mutating calls received since the start (see [`SimulatorControl::calls`]).
    pub calls: u64,
}

impl SimState {
    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            sessions: self.session_count(),
            pending_timers: self.scheduler.pending(),
            webhooks: self.webhook_counters.snapshot(),
            calls: self.calls.total(),
        }
    }
}

/// Drives a running simulator: scans QR codes, injects failures and disconnects, acks messages,
/// toggles faults. Cheap to clone; usable from any thread or runtime.
///
/// The same actions are reachable over HTTP under `/_sim/...` (see the crate docs), protected by
/// the simulator's API key.
#[derive(Clone)]
pub struct SimulatorControl {
    pub(crate) state: Arc<SimState>,
}

impl std::fmt::Debug for SimulatorControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorControl")
            .field("sessions", &self.state.session_count())
            .field("running", &self.state.is_running())
            .finish()
    }
}

pub(crate) fn refusal_error(session: &str, refusal: Refusal) -> SimError {
    match refusal {
        Refusal::WrongStatus { status, expected } => SimError::InvalidSessionState {
            session: session.to_owned(),
            status,
            expected,
        },
        Refusal::MessageNotFound => SimError::MessageNotFound(session.to_owned()),
        Refusal::NotFound | Refusal::AlreadyExists | Refusal::AlreadyStarted => {
            SimError::SessionNotFound(session.to_owned())
        }
    }
}

impl SimulatorControl {
    fn running(&self) -> Result<&SimState, SimError> {
        if self.state.is_running() {
            Ok(&self.state)
        } else {
            Err(SimError::Stopped)
        }
    }

    /// Simulates a phone scanning the session's QR code (or entering its pairing code): the
    /// session, which must be in SCAN_QR_CODE, logs in as a generated number and goes WORKING.
    pub fn scan(&self, session: &str) -> Result<(), SimError> {
        self.running()?
            .scan(session, None)
            .map(drop)
            .map_err(|r| refusal_error(session, r))
    }

    /// Like [`SimulatorControl::scan`], logging in as `me`.
    pub fn scan_as(&self, session: &str, me: Me) -> Result<(), SimError> {
        self.running()?
            .scan(session, Some(me))
            .map(drop)
            .map_err(|r| refusal_error(session, r))
    }

    /// The session (STARTING, SCAN_QR_CODE or WORKING) goes FAILED without a word from the
    /// engine, as a blocked account does, and stays so until restarted.
    pub fn fail(&self, session: &str) -> Result<(), SimError> {
        self.running()?
            .fail(session)
            .map(drop)
            .map_err(|r| refusal_error(session, r))
    }

    /// The engine drops the session's connection (STARTING, SCAN_QR_CODE or WORKING) for
    /// `reason`: it says so in its own shape (`engine.event`; `state.change` first on WEBJS),
    /// then WAHA reacts as it does for the simulator's engine: a final FAILED, a reconnect, or
    /// (WEBJS) a FAILED followed by a restart. See [`DisconnectReason`] for every rendition.
    pub fn disconnect(&self, session: &str, reason: DisconnectReason) -> Result<(), SimError> {
        self.running()?
            .disconnect(session, reason)
            .map(drop)
            .map_err(|r| refusal_error(session, r))
    }

    /// The silent-WORKING fault (GOWS before 2026.7.1, after a replaced, banned or outdated
    /// client): the WORKING session keeps reporting WORKING, but nothing is delivered any more
    /// (no webhook at all: incoming messages are swallowed) and sends do not progress
    /// (`sendText` answers 201 with an id, then no ack ever comes). It ends at the session's
    /// next status change: a restart, stop, logout, PUT or [`SimulatorControl::disconnect`].
    pub fn silence(&self, session: &str) -> Result<(), SimError> {
        self.running()?
            .silence(session)
            .map(drop)
            .map_err(|r| refusal_error(session, r))
    }

    /// Emits a `message.ack` at `level` for a message sent through `sendText`.
    pub fn ack(&self, message_id: &str, level: AckLevel) -> Result<(), SimError> {
        self.running()?
            .ack(message_id, level)
            .map_err(|r| refusal_error(message_id, r))
    }

    /// A message from `from` (`<digits>@c.us`) arrives at a WORKING session: emits `message`
    /// and `message.any`. Returns the message id.
    pub fn receive_message(
        &self,
        session: &str,
        from: &str,
        text: &str,
    ) -> Result<String, SimError> {
        self.running()?
            .receive(session, from, text)
            .map_err(|r| refusal_error(session, r))
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Replaces the faults in force (`startup_delay` and `booting` only matter at start; use
    /// [`SimulatorControl::set_booting`] for a booting window now). Faults that carry a seed
    /// restart the webhook faults' random sequence from it; faults without one keep it.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        faults.validate()?;
        self.state.set_faults(faults);
        Ok(())
    }

    /// Starts a booting window of `window` (simulated time) now, or ends it with `None`.
    pub fn set_booting(&self, window: Option<Duration>) {
        self.state.set_booting(window);
    }

    /// Crashes the simulator: in-process the server stops abruptly (connections are cut,
    /// pending state writes are lost); the binary exits.
    pub fn crash(&self) {
        self.state.crash();
    }

    /// Whether the simulator is still serving (false after a crash or shutdown).
    pub fn is_running(&self) -> bool {
        self.state.is_running()
    }

    /// A session's status, if it exists.
    pub fn session_status(&self, session: &str) -> Option<SessionStatus> {
        self.state.status_of(session)
    }

    /// The account a session is logged in as.
    pub fn session_me(&self, session: &str) -> Option<Me> {
        self.state.view(session).and_then(|v| v.me)
    }

    /// How many sessions exist.
    pub fn session_count(&self) -> usize {
        self.state.session_count()
    }

    /// Webhook delivery counters and the number of dispatcher tasks alive.
    pub fn webhook_stats(&self) -> WebhookStats {
        self.state.webhook_counters.snapshot()
    }

    /// Sessions, pending timers, webhook counters and calls received (what `/_sim/stats`
    /// answers).
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// The mutating calls received (the most recent 100 000), oldest first: who, what, when
    /// (see [`CallRecord`]). For example, "at most one create per chip":
    /// `calls().iter().filter(|c| c.is_create() && c.status == 201 && c.session.as_deref() ==
    /// Some(chip))` counts at most one.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.calls.snapshot(None)
    }

    /// The mutating calls about `session`.
    pub fn calls_for(&self, session: &str) -> Vec<CallRecord> {
        self.state.calls.snapshot(Some(session))
    }

    /// Forgets the calls logged so far (their numbering goes on).
    pub fn clear_calls(&self) {
        self.state.calls.clear();
    }

    /// Waits (wall-clock `timeout`) until the session has `status`.
    pub async fn wait_for_status(
        &self,
        session: &str,
        status: SessionStatus,
        timeout: Duration,
    ) -> Result<(), SimError> {
        let reached = self
            .state
            .wait_until(deadline_after(timeout), |s| {
                s.status_of(session) == Some(status)
            })
            .await;
        if reached {
            Ok(())
        } else {
            Err(SimError::Timeout {
                what: format!(
                    "session `{session}` to be {status} (it is {})",
                    self.state
                        .status_of(session)
                        .map_or("missing".to_owned(), |s| s.to_string())
                ),
                after: timeout,
            })
        }
    }
}
