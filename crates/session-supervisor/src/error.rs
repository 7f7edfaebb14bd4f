//! What the supervisor's API can refuse.

use std::fmt;

use tenant_isolation::{QuotaLimit, TenantStatus};

use crate::chip::{ChipKey, ChipSpec};
use crate::config::ConfigError;
use crate::events::BusError;
use crate::phase::PhaseName;
use crate::store::StoreError;

/// Everything the [`Supervisor`](crate::Supervisor)'s methods can refuse. Messages never
/// carry a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// No such chip.
    #[error("chip {key} not found")]
    ChipNotFound {
        /// The chip.
        key: ChipKey,
    },
    /// A chip with this id exists with another spec.
    #[error("chip {key} exists with another spec")]
    ChipConflict {
        /// The chip.
        key: ChipKey,
        /// The spec it has (boxed: specs are large).
        existing: Box<ChipSpec>,
    },
    /// A chip with this id is being deleted (its finalizers run); create it again once it is
    /// gone.
    #[error("chip {key} is being deleted; try again once it is gone")]
    BeingDeleted {
        /// The chip.
        key: ChipKey,
    },
    /// The tenant's plan does not allow another chip.
    #[error("tenant {tenant}: {limit} is {max}, {in_use} in use")]
    QuotaExceeded {
        /// The tenant.
        tenant: tenant_isolation::TenantId,
        /// The limit reached.
        limit: QuotaLimit,
        /// The plan's maximum.
        max: u32,
        /// How many are in use.
        in_use: u32,
    },
    /// The tenant is suspended or deleted.
    #[error("tenant {tenant} is {status:?}")]
    TenantInactive {
        /// The tenant.
        tenant: tenant_isolation::TenantId,
        /// Its status.
        status: TenantStatus,
    },
    /// The request is malformed (an engine the pool does not run, for example).
    #[error("invalid chip spec: {problem}")]
    InvalidSpec {
        /// What is wrong.
        problem: String,
    },
    /// What was asked for is not available in the chip's phase (a QR code outside a QR
    /// login window).
    #[error("chip {key} is {phase}: {what} is not available")]
    NotReady {
        /// The chip.
        key: ChipKey,
        /// Its phase.
        phase: PhaseName,
        /// What was asked for.
        what: &'static str,
    },
    /// Concurrent writes kept winning the compare-and-set; try again.
    #[error("chip {key} is being changed concurrently; try again")]
    Busy {
        /// The chip.
        key: ChipKey,
    },
    /// The supervisor is shutting down.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// Offboarding waited for the tenant's chips to be deleted and some remain (their owner
    /// is still running their finalizers, or no supervisor runs): call it again.
    #[error("tenant {tenant}: {remaining} chips are still being deleted")]
    OffboardIncomplete {
        /// The tenant.
        tenant: tenant_isolation::TenantId,
        /// Chips left.
        remaining: usize,
    },
    /// `run()` was called on a supervisor that runs already.
    #[error("the supervisor runs already")]
    AlreadyRunning,
    /// The call acts on a tenant's containers, which only the tenant's owner may do, and this
    /// process does not own the tenant now (another replica does, or none yet): call it on
    /// every replica, or again later.
    #[error("tenant {tenant} is not owned by this process")]
    NotOwned {
        /// The tenant.
        tenant: tenant_isolation::TenantId,
    },
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The chip store failed.
    #[error("chip store: {0}")]
    Store(#[source] StoreError),
    /// The tenant directory or quota ledger failed.
    #[error("tenant directory: {0}")]
    Tenant(#[source] tenant_isolation::Error),
    /// The container pool failed.
    #[error("container pool: {0}")]
    Pool(#[source] container_pool::Error),
    /// The proxy allocator failed.
    #[error("proxy allocator: {0}")]
    Proxy(#[source] proxy_allocator::ProxyError),
    /// WAHA failed.
    #[error("WAHA: {0}")]
    Waha(#[source] waha_client::WahaError),
    /// The event bus failed.
    #[error("event bus: {0}")]
    Bus(#[source] BusError),
}

impl SupervisorError {
    /// A short, stable name of the variant, for metric labels and HTTP mappings.
    pub fn kind(&self) -> &'static str {
        match self {
            SupervisorError::ChipNotFound { .. } => "chip_not_found",
            SupervisorError::ChipConflict { .. } => "chip_conflict",
            SupervisorError::BeingDeleted { .. } => "being_deleted",
            SupervisorError::QuotaExceeded { .. } => "quota_exceeded",
            SupervisorError::TenantInactive { .. } => "tenant_inactive",
            SupervisorError::InvalidSpec { .. } => "invalid_spec",
            SupervisorError::NotReady { .. } => "not_ready",
            SupervisorError::Busy { .. } => "busy",
            SupervisorError::ShuttingDown => "shutting_down",
            SupervisorError::OffboardIncomplete { .. } => "offboard_incomplete",
            SupervisorError::AlreadyRunning => "already_running",
            SupervisorError::NotOwned { .. } => "not_owned",
            SupervisorError::Config(_) => "config",
            SupervisorError::Store(_) => "store",
            SupervisorError::Tenant(_) => "tenant",
            SupervisorError::Pool(_) => "pool",
            SupervisorError::Proxy(_) => "proxy",
            SupervisorError::Waha(_) => "waha",
            SupervisorError::Bus(_) => "bus",
        }
    }

    /// Whether the same call may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        match self {
            SupervisorError::Busy { .. }
            | SupervisorError::BeingDeleted { .. }
            | SupervisorError::OffboardIncomplete { .. }
            | SupervisorError::NotOwned { .. } => true,
            SupervisorError::Store(e) => e.is_retryable(),
            SupervisorError::Tenant(e) => e.is_retryable(),
            SupervisorError::Pool(e) => e.is_retryable(),
            SupervisorError::Proxy(e) => e.is_retryable(),
            SupervisorError::Waha(e) => e.is_retryable(),
            SupervisorError::Bus(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<StoreError> for SupervisorError {
    fn from(error: StoreError) -> Self {
        SupervisorError::Store(error)
    }
}

impl From<BusError> for SupervisorError {
    fn from(error: BusError) -> Self {
        SupervisorError::Bus(error)
    }
}

impl From<waha_client::WahaError> for SupervisorError {
    fn from(error: waha_client::WahaError) -> Self {
        SupervisorError::Waha(error)
    }
}

impl From<container_pool::Error> for SupervisorError {
    fn from(error: container_pool::Error) -> Self {
        SupervisorError::Pool(error)
    }
}

impl From<proxy_allocator::ProxyError> for SupervisorError {
    fn from(error: proxy_allocator::ProxyError) -> Self {
        SupervisorError::Proxy(error)
    }
}

impl From<tenant_isolation::Error> for SupervisorError {
    /// Quota refusals and inactive tenants become their own variants; the rest is wrapped.
    fn from(error: tenant_isolation::Error) -> Self {
        match error {
            tenant_isolation::Error::QuotaExceeded {
                tenant,
                limit,
                max,
                in_use,
            } => SupervisorError::QuotaExceeded {
                tenant,
                limit,
                max,
                in_use,
            },
            tenant_isolation::Error::TenantSuspended { tenant } => {
                SupervisorError::TenantInactive {
                    tenant,
                    status: TenantStatus::Suspended,
                }
            }
            tenant_isolation::Error::TenantDeleted { tenant } => SupervisorError::TenantInactive {
                tenant,
                status: TenantStatus::Deleted,
            },
            other => SupervisorError::Tenant(other),
        }
    }
}

/// What `shutdown` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Reconciles that finished within the grace.
    pub finished: usize,
    /// Reconciles dropped when the grace ran out (safe: effects are idempotent).
    pub abandoned: usize,
    /// Tenants whose ownership was released.
    pub released_tenants: usize,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reconciles finished, {} abandoned, {} tenants released",
            self.finished, self.abandoned, self.released_tenants
        )
    }
}
