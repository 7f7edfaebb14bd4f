//! Progress events a host can display while tenant containers come up.

use std::time::Duration;

use crate::TenantId;

/// One step in making a tenant container ready, or its failure.
///
/// Subscribe with [`TenantPool::subscribe`](crate::TenantPool::subscribe) (a
/// `tokio::sync::broadcast` channel: a slow subscriber loses the oldest events, never blocks
/// the pool).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEvent {
    /// The tenant.
    pub tenant: TenantId,
    /// The container's slot within the tenant.
    pub slot: u32,
    /// The container's name.
    pub container: String,
    /// What happened.
    pub kind: PoolEventKind,
}

/// Which readiness check a container is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessCheck {
    /// The container's process is not running yet.
    Running,
    /// The image's health check has not passed yet.
    DockerHealth,
    /// The authenticated HTTP probe (`/health`, else `/ping`) has not answered yet.
    Http,
}

/// What happened to a tenant container.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolEventKind {
    /// No container was found; one is being created.
    Creating,
    /// The container is being started.
    Starting,
    /// Still waiting (emitted about once a second while waiting).
    WaitingForHealth {
        /// Time since the wait began.
        elapsed: Duration,
        /// The first check that has not passed.
        check: ReadinessCheck,
        /// Why it has not passed (health-check output and probe errors in it are scrubbed of
        /// secrets like [`Error::Exited`](crate::Error::Exited)'s `last_logs`).
        detail: String,
    },
    /// The container passed every readiness check.
    Ready {
        /// Time from the start of the wait to ready.
        took: Duration,
    },
    /// The container could not be made ready.
    Failed {
        /// [`Error::kind`](crate::Error::kind) of the error `ensure` returned.
        error: &'static str,
        /// The error's message.
        reason: String,
    },
    /// The container was removed (replaced, reaped, orphaned, or the tenant removed).
    Removed {
        /// Why.
        reason: String,
    },
    /// The container was stopped because it was idle.
    Stopped,
}
