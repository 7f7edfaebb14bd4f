//! Why a step failed or a session stopped working, and why a chip is parked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why something failed, in the supervisor's terms. Engine signals and sibling crates' errors
/// are classified into these; [`Policy::action`](crate::Policy::action) maps each to what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    // --- WAHA signals (docs/session-supervisor.md, 5.1) ---
    /// The phone logged the session out (NOWEB 401, GOWS `LoggedOut{401}`, WEBJS `LOGOUT`).
    LoggedOut,
    /// The account is locked (NOWEB 403, GOWS `LoggedOut{403}`/`ConnectFailure{403}`).
    Forbidden,
    /// The account is banned (NOWEB 406, GOWS `LoggedOut{406}`, WEBJS `TOS_BLOCK`).
    Banned,
    /// A temporary ban (NOWEB 402, GOWS `TemporaryBan`).
    TemporarilyBanned,
    /// The client version is too old (NOWEB 405, GOWS `ClientOutdated`, WEBJS
    /// `DEPRECATED_VERSION`).
    ClientOutdated,
    /// Another client uses the same credentials (NOWEB 440, GOWS `StreamReplaced`, WEBJS
    /// `CONFLICT`).
    Replaced,
    /// Multi-device mismatch (NOWEB 411, GOWS `ConnectFailure{400|411}`, WEBJS `UNPAIRED`).
    MultideviceMismatch,
    /// The stored session is unusable (NOWEB 500, GOWS `ConnectFailure{500}`).
    BadSession,
    /// The connection was lost (NOWEB 408 outside the QR window, GOWS `KeepAliveTimeout`,
    /// WEBJS `TIMEOUT`).
    ConnectionLost,
    /// The connection was closed (NOWEB 428, GOWS `Disconnected`).
    ConnectionClosed,
    /// The proxy blocked or failed the connection (WEBJS `PROXYBLOCK`, a proxy error).
    ProxyFailure,
    /// WhatsApp is unavailable (NOWEB 503, GOWS `ConnectFailure{503}`).
    WaUnavailable,
    /// The server asks for a restart (NOWEB 515, GOWS `StreamError{515}`, WEBJS `UNLAUNCHED`).
    RestartRequired,
    /// WAHA's QR window ran out (NOWEB 408 "QR refs attempts ended", WEBJS "Max qrcode
    /// retries reached", or `FAILED` while awaiting login).
    QrWindowExpired,
    /// `FAILED` with no engine signal within the grace ("a blocked account is just FAILED").
    FailedNoSignal,
    /// A working session sent nothing for too long and a probe failed.
    Silent,
    /// The tenant's container is gone or unreachable.
    ContainerGone,
    /// An engine signal this table does not know.
    Unknown,

    // --- errors of the sibling crates (docs/session-supervisor.md, 5.2) ---
    /// The tenant is suspended or deleted.
    TenantInactive,
    /// The tenant does not exist.
    TenantMissing,
    /// The tenant's running-session quota is full.
    QuotaExceeded,
    /// The chip lost (or never had) its chip slot: reserve it again.
    ChipSlotMissing,
    /// A compare-and-set write lost a race: re-read and decide again.
    VersionConflict,
    /// WAHA's answer says the view was stale (not found, not ready, already exists or
    /// started): re-read and decide again.
    StaleView,
    /// The database or the container runtime is unavailable.
    Infra,
    /// A transient failure while provisioning (start-up deadline, booting server, lost
    /// connection to WAHA, a lagged event stream).
    Transient,
    /// A step did not finish within its deadline.
    StepDeadline,
    /// The container exited, failed to start, is unhealthy or was not found.
    ContainerFailed,
    /// The container image is missing.
    ImageMissing,
    /// The tenant's volume belongs to someone else.
    VolumeConflict,
    /// The container cannot run as configured (worker mismatch, refused key, runtime or port
    /// store failure, invalid configuration).
    ContainerConfig,
    /// No host port is free.
    PortsExhausted,
    /// Every matching proxy is busy.
    ProxyBusy,
    /// The proxy configuration cannot serve the chip (no endpoints, bad URLs or credentials).
    ProxyConfig,
    /// The chip's proxy lease is gone: lease again.
    ProxyLeaseLost,
    /// WAHA refused the tenant's API key.
    Unauthorized,
    /// WAHA refused or garbled a session call (unexpected answer, decode error, session not
    /// created).
    SessionRejected,
    /// WAHA refused the session configuration as invalid.
    InvalidSessionConfig,
    /// The server cannot run chipfleet's sessions (old Core, an answer too large).
    UnsupportedServer,
    /// Stored data or the database setup is broken for this record.
    Corrupt,
    /// This process no longer owns the tenant.
    StaleOwner,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 41] = [
        Reason::LoggedOut,
        Reason::Forbidden,
        Reason::Banned,
        Reason::TemporarilyBanned,
        Reason::ClientOutdated,
        Reason::Replaced,
        Reason::MultideviceMismatch,
        Reason::BadSession,
        Reason::ConnectionLost,
        Reason::ConnectionClosed,
        Reason::ProxyFailure,
        Reason::WaUnavailable,
        Reason::RestartRequired,
        Reason::QrWindowExpired,
        Reason::FailedNoSignal,
        Reason::Silent,
        Reason::ContainerGone,
        Reason::Unknown,
        Reason::TenantInactive,
        Reason::TenantMissing,
        Reason::QuotaExceeded,
        Reason::ChipSlotMissing,
        Reason::VersionConflict,
        Reason::StaleView,
        Reason::Infra,
        Reason::Transient,
        Reason::StepDeadline,
        Reason::ContainerFailed,
        Reason::ImageMissing,
        Reason::VolumeConflict,
        Reason::ContainerConfig,
        Reason::PortsExhausted,
        Reason::ProxyBusy,
        Reason::ProxyConfig,
        Reason::ProxyLeaseLost,
        Reason::Unauthorized,
        Reason::SessionRejected,
        Reason::InvalidSessionConfig,
        Reason::UnsupportedServer,
        Reason::Corrupt,
        Reason::StaleOwner,
    ];

    /// A short, stable snake-case name, for metric labels and the stored record.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LoggedOut => "logged_out",
            Reason::Forbidden => "forbidden",
            Reason::Banned => "banned",
            Reason::TemporarilyBanned => "temporarily_banned",
            Reason::ClientOutdated => "client_outdated",
            Reason::Replaced => "replaced",
            Reason::MultideviceMismatch => "multidevice_mismatch",
            Reason::BadSession => "bad_session",
            Reason::ConnectionLost => "connection_lost",
            Reason::ConnectionClosed => "connection_closed",
            Reason::ProxyFailure => "proxy_failure",
            Reason::WaUnavailable => "wa_unavailable",
            Reason::RestartRequired => "restart_required",
            Reason::QrWindowExpired => "qr_window_expired",
            Reason::FailedNoSignal => "failed_no_signal",
            Reason::Silent => "silent",
            Reason::ContainerGone => "container_gone",
            Reason::Unknown => "unknown",
            Reason::TenantInactive => "tenant_inactive",
            Reason::TenantMissing => "tenant_missing",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::ChipSlotMissing => "chip_slot_missing",
            Reason::VersionConflict => "version_conflict",
            Reason::StaleView => "stale_view",
            Reason::Infra => "infra",
            Reason::Transient => "transient",
            Reason::StepDeadline => "step_deadline",
            Reason::ContainerFailed => "container_failed",
            Reason::ImageMissing => "image_missing",
            Reason::VolumeConflict => "volume_conflict",
            Reason::ContainerConfig => "container_config",
            Reason::PortsExhausted => "ports_exhausted",
            Reason::ProxyBusy => "proxy_busy",
            Reason::ProxyConfig => "proxy_config",
            Reason::ProxyLeaseLost => "proxy_lease_lost",
            Reason::Unauthorized => "unauthorized",
            Reason::SessionRejected => "session_rejected",
            Reason::InvalidSessionConfig => "invalid_session_config",
            Reason::UnsupportedServer => "unsupported_server",
            Reason::Corrupt => "corrupt",
            Reason::StaleOwner => "stale_owner",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a chip is parked: it needs a human (or a fleet upgrade) before it runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "park", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParkReason {
    /// Another client took over the number (never reconnected: that is the 440 loop).
    Replaced,
    /// The account is banned (also a second temporary ban within the ban memory).
    Banned,
    /// The account is locked.
    Forbidden,
    /// The client is outdated; a fleet upgrade unparks.
    ClientOutdated,
    /// The tenant does not exist.
    TenantMissing,
    /// Too many session failures within the loop window.
    Looping {
        /// The last failure.
        last_reason: Reason,
    },
    /// The retry budget of the failure's class is spent (a container crash loop is
    /// `RetryBudgetSpent { last_reason: ContainerFailed }`).
    RetryBudgetSpent {
        /// The last failure.
        last_reason: Reason,
    },
    /// The container image is missing; a fleet upgrade re-queues.
    ImageMissing,
    /// The tenant's volume belongs to someone else.
    VolumeConflict,
    /// The container cannot run as configured.
    ContainerConfig,
    /// WAHA refused the tenant's key even after the container was ensured again.
    Unauthorized,
    /// The proxy configuration cannot serve the chip.
    ProxyConfig,
    /// WAHA refused the session configuration.
    InvalidSessionConfig,
    /// The server cannot run chipfleet's sessions.
    UnsupportedServer,
    /// The record or the database setup is broken.
    Corrupt,
}

impl ParkReason {
    /// A short, stable snake-case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::Replaced => "replaced",
            ParkReason::Banned => "banned",
            ParkReason::Forbidden => "forbidden",
            ParkReason::ClientOutdated => "client_outdated",
            ParkReason::TenantMissing => "tenant_missing",
            ParkReason::Looping { .. } => "looping",
            ParkReason::RetryBudgetSpent { .. } => "retry_budget_spent",
            ParkReason::ImageMissing => "image_missing",
            ParkReason::VolumeConflict => "volume_conflict",
            ParkReason::ContainerConfig => "container_config",
            ParkReason::Unauthorized => "unauthorized",
            ParkReason::ProxyConfig => "proxy_config",
            ParkReason::InvalidSessionConfig => "invalid_session_config",
            ParkReason::UnsupportedServer => "unsupported_server",
            ParkReason::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParkReason::Looping { last_reason } | ParkReason::RetryBudgetSpent { last_reason } => {
                write!(f, "{} (last: {last_reason})", self.as_str())
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_match_serde() {
        let mut seen = HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "{reason} twice");
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        let looping = ParkReason::Looping {
            last_reason: Reason::Replaced,
        };
        assert_eq!(looping.to_string(), "looping (last: replaced)");
        let json = serde_json::to_value(looping).unwrap();
        assert_eq!(json["park"], "looping");
        assert_eq!(json["last_reason"], "replaced");
        assert_eq!(serde_json::from_value::<ParkReason>(json).unwrap(), looping);
    }
}
