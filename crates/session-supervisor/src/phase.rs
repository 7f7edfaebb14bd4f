//! Where a chip is in its life: the few phases of `docs/session-supervisor.md`, section 3.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::chip::Observed;
use crate::policy::{ParkReason, Reason};
use crate::reconcile::StepKind;

/// The phase of a chip, as the owner last recorded it.
///
/// There is no "fake" or "local" phase: a chip is either backed by a session WAHA reports, or
/// visibly in [`Phase::BackingOff`] / [`Phase::Parked`] with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Recorded, not reconciled yet.
    Pending,
    /// On its way through admission, container, proxy, session and start.
    Provisioning {
        /// The step the provisioning table expects next (informative: `decide` reads the world).
        next: StepKind,
    },
    /// WAHA waits for the phone: a QR code to scan, a pairing code to enter, or a passkey.
    AwaitingLogin {
        /// How the phone logs in.
        method: LoginKind,
        /// When this login window was first recorded.
        since: SystemTime,
    },
    /// Logged in and connected.
    Working {
        /// Since when (kept while the chip stays working).
        since: SystemTime,
    },
    /// A failure is being retried after a delay.
    BackingOff {
        /// Why.
        reason: Reason,
        /// Which attempt the next try is (1 for the first retry).
        attempt: u32,
        /// When the next try is due.
        next_try: SystemTime,
    },
    /// WAHA's QR window ran out: the session is stopped and waits for the host (start,
    /// restart or a new pairing code).
    LoginExpired {
        /// Since when.
        since: SystemTime,
    },
    /// Needs a human: banned, replaced by another client, a retry budget spent, ...
    Parked {
        /// Why.
        reason: ParkReason,
        /// Since when.
        since: SystemTime,
    },
    /// Stopped on purpose.
    Stopped {
        /// By whom: the host, or the tenant's suspension. Never [`StopCause::Held`].
        cause: StopCause,
    },
    /// The host deleted the chip; the finalizers still to run are listed.
    Deleting {
        /// What is still to be cleaned up.
        remaining: Finalizers,
    },
}

impl Phase {
    /// The phase's name without its data.
    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Pending => PhaseName::Pending,
            Phase::Provisioning { .. } => PhaseName::Provisioning,
            Phase::AwaitingLogin { .. } => PhaseName::AwaitingLogin,
            Phase::Working { .. } => PhaseName::Working,
            Phase::BackingOff { .. } => PhaseName::BackingOff,
            Phase::LoginExpired { .. } => PhaseName::LoginExpired,
            Phase::Parked { .. } => PhaseName::Parked,
            Phase::Stopped { .. } => PhaseName::Stopped,
            Phase::Deleting { .. } => PhaseName::Deleting,
        }
    }

    /// A short, stable name (`awaiting_login`, `backing_off`, ...), for metric labels.
    pub fn kind(&self) -> &'static str {
        self.name().as_str()
    }

    /// When the next try is due, in [`Phase::BackingOff`].
    pub fn next_try(&self) -> Option<SystemTime> {
        match self {
            Phase::BackingOff { next_try, .. } => Some(*next_try),
            _ => None,
        }
    }

    /// Whether the chip waits for the host ([`Phase::Parked`], [`Phase::LoginExpired`]): its
    /// session must not run until a start or restart.
    pub fn waits_for_host(&self) -> bool {
        matches!(self, Phase::Parked { .. } | Phase::LoginExpired { .. })
    }
}

/// The name of a [`Phase`], without its data (event payloads, metric labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    /// [`Phase::Pending`].
    Pending,
    /// [`Phase::Provisioning`].
    Provisioning,
    /// [`Phase::AwaitingLogin`].
    AwaitingLogin,
    /// [`Phase::Working`].
    Working,
    /// [`Phase::BackingOff`].
    BackingOff,
    /// [`Phase::LoginExpired`].
    LoginExpired,
    /// [`Phase::Parked`].
    Parked,
    /// [`Phase::Stopped`].
    Stopped,
    /// [`Phase::Deleting`].
    Deleting,
}

impl PhaseName {
    /// Every phase name, in the order of the state diagram.
    pub const ALL: [PhaseName; 9] = [
        PhaseName::Pending,
        PhaseName::Provisioning,
        PhaseName::AwaitingLogin,
        PhaseName::Working,
        PhaseName::BackingOff,
        PhaseName::LoginExpired,
        PhaseName::Parked,
        PhaseName::Stopped,
        PhaseName::Deleting,
    ];

    /// The snake-case spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Pending => "pending",
            PhaseName::Provisioning => "provisioning",
            PhaseName::AwaitingLogin => "awaiting_login",
            PhaseName::Working => "working",
            PhaseName::BackingOff => "backing_off",
            PhaseName::LoginExpired => "login_expired",
            PhaseName::Parked => "parked",
            PhaseName::Stopped => "stopped",
            PhaseName::Deleting => "deleting",
        }
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the phone logs in while a chip is in [`Phase::AwaitingLogin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginKind {
    /// Scan the QR code (`qr()` fetches it from WAHA on demand; it is never stored).
    Qr,
    /// Enter the pairing code on the phone.
    PairingCode,
    /// Confirm a passkey (newer servers).
    Passkey,
}

/// Why a session is (to be) stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    /// The host stopped the chip.
    Host,
    /// The tenant is suspended or deleted.
    TenantInactive,
    /// The chip is parked, its login expired or it is temporarily banned: its session must
    /// not run meanwhile. Only a [`Step::StopSession`](crate::Step::StopSession) carries it;
    /// [`Phase::Stopped`] never does.
    Held,
}

/// What a deleted chip still holds (the finalizers of `docs/session-supervisor.md`, rule 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Finalizers {
    /// A WAHA session may still exist.
    pub session: bool,
    /// A proxy lease is held.
    pub proxy: bool,
    /// The quota's running-session slot is held.
    pub running_slot: bool,
    /// The quota's chip slot is held.
    pub chip_slot: bool,
    /// The send pacer knows the chip.
    pub pacer: bool,
}

impl Finalizers {
    /// What `observed` still holds.
    pub fn of(observed: &Observed) -> Self {
        Finalizers {
            session: observed.session.is_some(),
            proxy: observed.proxy.is_some(),
            running_slot: observed.running_slot,
            chip_slot: observed.chip_slot,
            pacer: observed.pacer_activated,
        }
    }

    /// Whether nothing is left but the record itself.
    pub fn is_empty(&self) -> bool {
        !(self.session || self.proxy || self.running_slot || self.chip_slot || self.pacer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn kinds_are_stable_snake_case() {
        let at = UNIX_EPOCH + Duration::from_secs(10);
        let phases = [
            (Phase::Pending, "pending"),
            (
                Phase::Provisioning {
                    next: StepKind::EnsureContainer,
                },
                "provisioning",
            ),
            (
                Phase::AwaitingLogin {
                    method: LoginKind::Qr,
                    since: at,
                },
                "awaiting_login",
            ),
            (Phase::Working { since: at }, "working"),
            (
                Phase::BackingOff {
                    reason: Reason::ConnectionLost,
                    attempt: 1,
                    next_try: at,
                },
                "backing_off",
            ),
            (Phase::LoginExpired { since: at }, "login_expired"),
            (
                Phase::Parked {
                    reason: ParkReason::Replaced,
                    since: at,
                },
                "parked",
            ),
            (
                Phase::Stopped {
                    cause: StopCause::Host,
                },
                "stopped",
            ),
            (
                Phase::Deleting {
                    remaining: Finalizers::default(),
                },
                "deleting",
            ),
        ];
        for (phase, kind) in phases {
            assert_eq!(phase.kind(), kind);
            assert_eq!(phase.name().to_string(), kind);
            let json = serde_json::to_value(phase).unwrap();
            assert_eq!(json["phase"], kind, "the stored tag is the kind");
            assert_eq!(serde_json::from_value::<Phase>(json).unwrap(), phase);
        }
        assert_eq!(
            Phase::BackingOff {
                reason: Reason::Unknown,
                attempt: 2,
                next_try: at
            }
            .next_try(),
            Some(at)
        );
        assert!(
            Phase::Parked {
                reason: ParkReason::Banned,
                since: at
            }
            .waits_for_host()
        );
        assert!(!Phase::Working { since: at }.waits_for_host());
    }
}
