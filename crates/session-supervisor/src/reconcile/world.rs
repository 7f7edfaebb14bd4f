//! What a reconcile read before deciding: plain data, no handles.

use std::time::SystemTime;

use container_pool::{ContainerId, ContainerState, Engine, Placement};
use proxy_allocator::ProxyLease;
use tenant_isolation::TenantStatus;
use url::Url;
use waha_client::{Me, SessionStatus};

use crate::signal::Signal;

/// The tenant, as the directory reported it (no secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantSeen {
    /// The read failed: decide nothing but a re-read.
    Unread,
    /// Active.
    Active,
    /// Suspended.
    Suspended,
    /// Deleted.
    Deleted,
    /// Not in the directory.
    Missing,
}

impl From<TenantStatus> for TenantSeen {
    fn from(status: TenantStatus) -> Self {
        match status {
            TenantStatus::Active => TenantSeen::Active,
            TenantStatus::Suspended => TenantSeen::Suspended,
            TenantStatus::Deleted => TenantSeen::Deleted,
        }
    }
}

/// The chip's container slot, as the pool reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerSeen {
    /// The read failed.
    Unread,
    /// No container for the slot.
    Missing,
    /// A container that does not run.
    NotRunning {
        /// Its state.
        state: ContainerState,
    },
    /// A running container.
    Running {
        /// The runtime's id.
        id: ContainerId,
        /// WAHA's base URL.
        base_url: Url,
    },
}

/// The chip's WAHA session, as WAHA reported it (read only while the container runs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionSeen {
    /// Not read (the container does not run, or the read failed).
    Unread,
    /// WAHA has no such session (404).
    Missing,
    /// The session.
    Present {
        /// Its status.
        status: SessionStatus,
        /// Whether its configuration equals the one the chip's plan would send.
        config_equivalent: bool,
        /// The account, when `WORKING`.
        me: Option<Me>,
    },
}

/// Whether a budgeted (re)start may happen now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetSeen {
    /// A token is available in the tenant's and in the global bucket.
    Granted,
    /// Not before this time.
    NextAt(SystemTime),
}

/// Everything one reconcile read, at most five reads, none of them mutating
/// (`docs/session-supervisor.md`, 4.1). A failed read is `Unread`, never an error.
#[derive(Clone, Debug)]
pub struct World {
    /// Now, from the injected clock.
    pub now: SystemTime,
    /// The tenant.
    pub tenant: TenantSeen,
    /// The pool's placement rule.
    pub placement: Placement,
    /// Chips per container slot of this tenant, from the store.
    pub occupancy: Vec<u32>,
    /// The engine the chip runs on (its spec's, else the pool's).
    pub engine: Engine,
    /// The chip's container.
    pub container: ContainerSeen,
    /// The chip's proxy lease (`None`: none, or the read failed: leasing again is sticky).
    pub lease: Option<ProxyLease>,
    /// The chip's session.
    pub session: SessionSeen,
    /// Signals newer than the record's `signals_applied`, oldest first.
    pub signals: Vec<Signal>,
    /// Whether a budgeted (re)start may happen now.
    pub budget: BudgetSeen,
}

impl World {
    /// A world in which nothing was read yet: tenant, container and session `Unread`, no
    /// lease, no signals, the restart budget granted. Callers fill in what they read.
    pub fn new(now: SystemTime, placement: Placement, engine: Engine) -> Self {
        World {
            now,
            tenant: TenantSeen::Unread,
            placement,
            occupancy: Vec::new(),
            engine,
            container: ContainerSeen::Unread,
            lease: None,
            session: SessionSeen::Unread,
            signals: Vec::new(),
            budget: BudgetSeen::Granted,
        }
    }

    /// The status WAHA reported, if the session was read.
    pub fn session_status(&self) -> Option<&SessionStatus> {
        match &self.session {
            SessionSeen::Present { status, .. } => Some(status),
            SessionSeen::Unread | SessionSeen::Missing => None,
        }
    }

    /// Whether the session may be running: WAHA reports anything but `STOPPED` (a `FAILED`
    /// session may be restarted by WAHA itself), or it could not be read while the container
    /// runs. Stopping such a session is always safe (a stop repeats harmlessly).
    pub fn session_may_run(&self) -> bool {
        match &self.session {
            SessionSeen::Present { status, .. } => *status != SessionStatus::Stopped,
            SessionSeen::Unread => matches!(self.container, ContainerSeen::Running { .. }),
            SessionSeen::Missing => false,
        }
    }

    /// The newest signal time, if any signal is pending.
    pub fn last_signal_at(&self) -> Option<SystemTime> {
        self.signals.iter().map(|signal| signal.at).max()
    }

    /// The highest pending signal number.
    pub fn last_signal_seq(&self) -> Option<u64> {
        self.signals.iter().map(|signal| signal.seq).max()
    }
}
