//! Steps, their outcomes and errors.

use std::fmt;
use std::time::{Duration, SystemTime};

use proxy_allocator::{FailureOutcome, ProxyError};
use serde::{Deserialize, Serialize};
use tenant_isolation::SessionName;
use waha_client::{Me, SessionStatus, WahaError};

use crate::chip::{ContainerRef, PairingCodeSecret, ProxyRef, SessionRef};
use crate::phase::{Phase, StopCause};
use crate::policy::{
    Reason, classify_pool_error, classify_proxy_error, classify_store_error, classify_tenant_error,
    classify_waha_error,
};
use crate::store::StoreError;

/// What the executor will send to WAHA when it ensures a chip's session (no secrets: the
/// executor adds the webhook key and the proxy password from their owners).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPlan {
    /// The session name.
    pub name: SessionName,
    /// The proxy generation the configuration carries.
    pub proxy_generation: u64,
}

/// The one next step `decide` chose (`docs/session-supervisor.md`, 4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reserve the quota's chip slot again (repair).
    ReserveChipSlot,
    /// Reserve the quota's running-session slot.
    ReserveRunningSlot,
    /// Place the chip in a container slot (set once, never moved).
    PlaceChip {
        /// The slot.
        slot: u32,
    },
    /// Ensure the tenant's container of this slot runs and is ready.
    EnsureContainer {
        /// The slot.
        slot: u32,
    },
    /// Lease a proxy (sticky).
    LeaseProxy,
    /// Create the session, or update it when its configuration differs.
    EnsureSession {
        /// What to send.
        plan: SessionPlan,
        /// Needs a restart-budget token (a PUT restarts a running session).
        budgeted: bool,
    },
    /// Start the session.
    StartSession {
        /// Needs a restart-budget token (a start after a failure).
        budgeted: bool,
    },
    /// Ask WAHA for a pairing code (never repeated by itself).
    RequestPairingCode,
    /// Read `me`, report the proxy's success, tell the pacer once: the chip works.
    ConfirmWorking,
    /// Restart the session.
    RestartSession {
        /// Needs a restart-budget token (a restart after a failure; a host's restart does not).
        budgeted: bool,
    },
    /// Log the session out (the next login needs a new scan or code).
    LogoutSession {
        /// Needs a restart-budget token (a re-pair after a failure; a host's log-out does
        /// not): WAHA starts the session again.
        budgeted: bool,
    },
    /// Stop the session.
    StopSession {
        /// Why.
        cause: StopCause,
    },
    /// Report a proxy failure to the allocator on this lease generation.
    ReportProxyFailure {
        /// The generation the failure happened on.
        generation: u64,
    },
    /// Read the status and `me` of a silent session.
    Probe,
    /// Write a phase; no effect.
    Record {
        /// The phase.
        phase: Phase,
    },
    /// Nothing to do: requeue at `until`, or on a trigger (`None`).
    Wait {
        /// When to look again.
        until: Option<SystemTime>,
    },
    /// Finalizer: delete the session (logging it out first).
    DeleteSession,
    /// Finalizer: release the proxy lease.
    ReleaseProxy,
    /// Release the running-session slot (also when stopped or parked).
    ReleaseRunningSlot,
    /// Finalizer: release the chip slot.
    ReleaseChipSlot,
    /// Finalizer: make the pacer forget the chip.
    ForgetPacer,
    /// Finalizer: remove the record (`ChipStore::remove`, not a write).
    RemoveRecord,
}

impl Step {
    /// The step's kind, for the log and metric labels.
    pub fn kind(&self) -> StepKind {
        match self {
            Step::ReserveChipSlot => StepKind::ReserveChipSlot,
            Step::ReserveRunningSlot => StepKind::ReserveRunningSlot,
            Step::PlaceChip { .. } => StepKind::PlaceChip,
            Step::EnsureContainer { .. } => StepKind::EnsureContainer,
            Step::LeaseProxy => StepKind::LeaseProxy,
            Step::EnsureSession { .. } => StepKind::EnsureSession,
            Step::StartSession { .. } => StepKind::StartSession,
            Step::RequestPairingCode => StepKind::RequestPairingCode,
            Step::ConfirmWorking => StepKind::ConfirmWorking,
            Step::RestartSession { .. } => StepKind::RestartSession,
            Step::LogoutSession { .. } => StepKind::LogoutSession,
            Step::StopSession { .. } => StepKind::StopSession,
            Step::ReportProxyFailure { .. } => StepKind::ReportProxyFailure,
            Step::Probe => StepKind::Probe,
            Step::Record { .. } => StepKind::Record,
            Step::Wait { .. } => StepKind::Wait,
            Step::DeleteSession => StepKind::DeleteSession,
            Step::ReleaseProxy => StepKind::ReleaseProxy,
            Step::ReleaseRunningSlot => StepKind::ReleaseRunningSlot,
            Step::ReleaseChipSlot => StepKind::ReleaseChipSlot,
            Step::ForgetPacer => StepKind::ForgetPacer,
            Step::RemoveRecord => StepKind::RemoveRecord,
        }
    }

    /// Whether the step needs a restart-budget token before its effect.
    pub fn budgeted(&self) -> bool {
        match self {
            Step::EnsureSession { budgeted, .. }
            | Step::StartSession { budgeted }
            | Step::RestartSession { budgeted }
            | Step::LogoutSession { budgeted } => *budgeted,
            _ => false,
        }
    }

    /// Whether the step (re)starts the session: a start, a restart, a log-out (WAHA starts
    /// the session again), or an ensure (a PUT restarts a running session).
    pub fn starts_session(&self) -> bool {
        matches!(
            self,
            Step::EnsureSession { .. }
                | Step::StartSession { .. }
                | Step::RestartSession { .. }
                | Step::LogoutSession { .. }
        )
    }
}

/// A [`Step`] without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// [`Step::ReserveChipSlot`].
    ReserveChipSlot,
    /// [`Step::ReserveRunningSlot`].
    ReserveRunningSlot,
    /// [`Step::PlaceChip`].
    PlaceChip,
    /// [`Step::EnsureContainer`].
    EnsureContainer,
    /// [`Step::LeaseProxy`].
    LeaseProxy,
    /// [`Step::EnsureSession`].
    EnsureSession,
    /// [`Step::StartSession`].
    StartSession,
    /// [`Step::RequestPairingCode`].
    RequestPairingCode,
    /// [`Step::ConfirmWorking`].
    ConfirmWorking,
    /// [`Step::RestartSession`].
    RestartSession,
    /// [`Step::LogoutSession`].
    LogoutSession,
    /// [`Step::StopSession`].
    StopSession,
    /// [`Step::ReportProxyFailure`].
    ReportProxyFailure,
    /// [`Step::Probe`].
    Probe,
    /// [`Step::Record`].
    Record,
    /// [`Step::Wait`].
    Wait,
    /// [`Step::DeleteSession`].
    DeleteSession,
    /// [`Step::ReleaseProxy`].
    ReleaseProxy,
    /// [`Step::ReleaseRunningSlot`].
    ReleaseRunningSlot,
    /// [`Step::ReleaseChipSlot`].
    ReleaseChipSlot,
    /// [`Step::ForgetPacer`].
    ForgetPacer,
    /// [`Step::RemoveRecord`].
    RemoveRecord,
}

impl StepKind {
    /// The snake-case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::ReserveChipSlot => "reserve_chip_slot",
            StepKind::ReserveRunningSlot => "reserve_running_slot",
            StepKind::PlaceChip => "place_chip",
            StepKind::EnsureContainer => "ensure_container",
            StepKind::LeaseProxy => "lease_proxy",
            StepKind::EnsureSession => "ensure_session",
            StepKind::StartSession => "start_session",
            StepKind::RequestPairingCode => "request_pairing_code",
            StepKind::ConfirmWorking => "confirm_working",
            StepKind::RestartSession => "restart_session",
            StepKind::LogoutSession => "logout_session",
            StepKind::StopSession => "stop_session",
            StepKind::ReportProxyFailure => "report_proxy_failure",
            StepKind::Probe => "probe",
            StepKind::Record => "record",
            StepKind::Wait => "wait",
            StepKind::DeleteSession => "delete_session",
            StepKind::ReleaseProxy => "release_proxy",
            StepKind::ReleaseRunningSlot => "release_running_slot",
            StepKind::ReleaseChipSlot => "release_chip_slot",
            StepKind::ForgetPacer => "forget_pacer",
            StepKind::RemoveRecord => "remove_record",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the proxy allocator did with a reported failure, as far as the record needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyReport {
    /// Counted; the threshold is not reached.
    Counted,
    /// The threshold is reached, but the lease is younger than the cooldown.
    CoolingDown {
        /// When rotation becomes possible.
        until: SystemTime,
    },
    /// The chip moved to another endpoint.
    Rotated {
        /// The new lease.
        to: ProxyRef,
    },
    /// The lease had been rotated already: reconnect through it.
    Superseded {
        /// The current lease.
        current: ProxyRef,
    },
    /// Rotation was due but no other endpoint has room.
    NoAlternative,
}

impl From<&FailureOutcome> for ProxyReport {
    fn from(outcome: &FailureOutcome) -> Self {
        match outcome {
            FailureOutcome::CoolingDown { until, .. } => ProxyReport::CoolingDown { until: *until },
            FailureOutcome::Rotated { to, .. } => ProxyReport::Rotated { to: to.into() },
            FailureOutcome::Superseded { lease } => ProxyReport::Superseded {
                current: lease.into(),
            },
            FailureOutcome::NoAlternative { .. } => ProxyReport::NoAlternative,
            // `Counted`, and any outcome newer than this crate: the lease is kept.
            _ => ProxyReport::Counted,
        }
    }
}

/// What a successful step's effect returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, nothing to report (slots, stops, releases, records).
    Done,
    /// `EnsureContainer`: the ready container.
    Container(ContainerRef),
    /// `LeaseProxy`: the lease.
    Lease(ProxyRef),
    /// `EnsureSession`: the session and its status.
    Session {
        /// The session as ensured.
        session: SessionRef,
        /// Its status.
        status: SessionStatus,
    },
    /// `StartSession`, `RestartSession`, `LogoutSession`: the status WAHA answered.
    Status(SessionStatus),
    /// `RequestPairingCode`: the code and when it stops being offered.
    PairingCode {
        /// The code.
        code: PairingCodeSecret,
        /// When it expires.
        expires_at: SystemTime,
    },
    /// `ConfirmWorking`: the account.
    LoggedIn(Me),
    /// `ReportProxyFailure`: what the allocator did.
    ProxyReport(ProxyReport),
    /// `Probe`: what WAHA answered.
    Probe {
        /// The status.
        status: SessionStatus,
        /// The account (`None`: `me` was empty).
        me: Option<Me>,
    },
}

/// A failed step, classified. Built from a sibling crate's error, whose `Display` never
/// carries a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} ({reason}): {detail}")]
pub struct StepError {
    /// The policy reason.
    pub reason: Reason,
    /// The error's kind (`kind()` of the sibling crate's error).
    pub kind: &'static str,
    /// Details for humans.
    pub detail: String,
}

impl StepError {
    /// An error of `reason` with `kind` and `detail`.
    pub fn new(reason: Reason, kind: &'static str, detail: impl Into<String>) -> Self {
        StepError {
            reason,
            kind,
            detail: detail.into(),
        }
    }

    /// The step did not finish within `after` (retryable, never final).
    pub fn deadline(after: Duration) -> Self {
        StepError::new(
            Reason::StepDeadline,
            "step_deadline",
            format!("the step did not finish within {after:?}"),
        )
    }

    /// A tenant directory or quota ledger error.
    pub fn from_tenant(error: &tenant_isolation::Error) -> Self {
        StepError::new(
            classify_tenant_error(error),
            error.kind(),
            error.to_string(),
        )
    }

    /// A container pool error.
    pub fn from_pool(error: &container_pool::Error) -> Self {
        StepError::new(classify_pool_error(error), error.kind(), error.to_string())
    }

    /// A proxy allocator error.
    pub fn from_proxy(error: &ProxyError) -> Self {
        StepError::new(classify_proxy_error(error), error.kind(), error.to_string())
    }

    /// A WAHA error.
    pub fn from_waha(error: &WahaError) -> Self {
        StepError::new(classify_waha_error(error), error.kind(), error.to_string())
    }

    /// A chip store error.
    pub fn from_store(error: &StoreError) -> Self {
        StepError::new(classify_store_error(error), error.kind(), error.to_string())
    }
}

/// A failure `decide` is acting on: from a pending signal, or from WAHA's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// When it was observed.
    pub at: SystemTime,
    /// When a temporary ban ends, when the engine said.
    pub ban_expires: Option<SystemTime>,
}

/// What `decide` chose, and what `apply` needs to know about why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The step.
    pub step: Step,
    /// The failure the step acts on: a successful write records it (last error, attempt,
    /// failure window, temporary bans) and folds the pending signals.
    pub handles: Option<Failure>,
    /// Whether a successful write folds the pending signals into the record (set when no
    /// disconnect was left unhandled).
    pub folds_signals: bool,
}

impl Decision {
    /// A step that acts on no failure and folds nothing.
    pub fn step(step: Step) -> Self {
        Decision {
            step,
            handles: None,
            folds_signals: false,
        }
    }

    /// A step that acts on `failure` (and folds the signals).
    pub fn handling(step: Step, failure: Failure) -> Self {
        Decision {
            step,
            handles: Some(failure),
            folds_signals: true,
        }
    }

    /// A step taken with no disconnect pending (it folds the signals).
    pub fn folding(step: Step) -> Self {
        Decision {
            step,
            handles: None,
            folds_signals: true,
        }
    }
}
