//! The crate's one error type.

use std::sync::Arc;
use std::time::Duration;

use tenant_isolation::TenantId;

/// Everything that can go wrong in a runtime, the pool or a port store.
///
/// Each variant says what the caller can do about it; [`Error::is_retryable`] is the one place
/// that decides whether retrying the same call later can help. No variant ever carries a
/// secret: API keys travel only in the container's environment.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image is not present on the container host. Build or pull it, or fix the configured
    /// name, tag or digest; retrying does not help.
    #[error("image `{image}` is not present on the container host; build or pull it first")]
    ImageMissing {
        /// The image reference as configured.
        image: String,
    },
    /// The runtime refused to start the container (a bad mount, a port already taken, a
    /// missing entry point). The reason is the runtime's own message.
    #[error("container `{container}` failed to start: {reason}")]
    StartFailed {
        /// Container name or id.
        container: String,
        /// What the runtime said.
        reason: String,
    },
    /// The image's own health check still declared the container unhealthy at the start-up
    /// deadline (before it, unhealthy only means "not ready yet"). Look at the check's output
    /// and the container's logs; the container is left in place.
    #[error("container `{container}` is unhealthy: {last_output}")]
    Unhealthy {
        /// Container name or id.
        container: String,
        /// The last health-check output the runtime kept (may be empty), scrubbed of secrets
        /// like `last_logs`.
        last_output: String,
    },
    /// The container did not pass every readiness check before the start-up deadline. It is
    /// left in place: the next `ensure` probes it again under a fresh deadline.
    #[error(
        "container `{container}` was not ready after {elapsed:?} (deadline {deadline:?}); last probe error: {last_probe_error}"
    )]
    StartupTimeout {
        /// Container name or id.
        container: String,
        /// How long the pool waited.
        elapsed: Duration,
        /// The configured start-up deadline.
        deadline: Duration,
        /// Why the last check failed (container output in it is scrubbed of secrets like
        /// [`Error::Exited`]'s `last_logs`).
        last_probe_error: String,
    },
    /// The container's process exited while the pool waited for it, or a restart policy is
    /// restarting it (a crash loop). The next `ensure` removes an exited container and creates
    /// a new one (the tenant's volume is kept); a crash loop needs its cause fixed (see the
    /// logs; `oom_killed` means the memory limit is too small).
    #[error(
        "container `{container}` exited with code {exit_code:?}{}; last log lines: {last_logs:?}",
        if *oom_killed { " (killed: out of memory)" } else { "" }
    )]
    Exited {
        /// Container name or id.
        container: String,
        /// The exit code, when the runtime knows it.
        exit_code: Option<i64>,
        /// Whether the runtime killed it for exceeding its memory limit.
        oom_killed: bool,
        /// The last lines the container wrote (oldest first), with `<redacted>` in place of the
        /// tenant's API key, every secret [`extra_env`](crate::PoolConfig::extra_env) value,
        /// and the value of every API-key assignment (`WAHA_API_KEY=…`, `WHATSAPP_API_KEY=…`,
        /// `X-Api-Key: …`, `x-api-key=…`) whatever it is, such as a key rotated since.
        last_logs: Vec<String>,
    },
    /// The container answered the readiness probe with 401/403: it does not accept the
    /// tenant's current API key. `ensure` re-creates a container whose key-fingerprint label
    /// shows it was started with another key (a rotation); this error means the label matched,
    /// so the key store and the container disagree some other way. Check the image's
    /// `WAHA_API_KEY` handling; retrying does not help.
    #[error("container `{container}` refused the tenant's API key (HTTP 401/403)")]
    Unauthorized {
        /// Container name or id.
        container: String,
    },
    /// The server answering at the container's address reports another worker id
    /// (`WAHA_WORKER_ID`) than the one the pool gave the container (its name): something else
    /// holds the address (a recycled address or port). The pool sends it nothing more (only
    /// the readiness probe reached it) and returns no endpoint. Find what holds the address;
    /// retrying does not help.
    #[error(
        "the server at container `{container}`'s address reports worker id `{reported}`: another container answers there"
    )]
    WorkerMismatch {
        /// Container name (the worker id the pool expected).
        container: String,
        /// The worker id the server reported (scrubbed of secrets like
        /// [`Error::Exited`]'s `last_logs`).
        reported: String,
    },
    /// An existing volume the container would mount carries labels that are not this
    /// container's: another tenant incarnation (a purged tenant whose id was reused: its
    /// WhatsApp logins are in there), another pool (`managed-by`), or none of the pool's labels
    /// at all. It is never mounted and left untouched, and no container is created. Remove or
    /// rename the volume deliberately (it holds someone's sessions), or restore the tenant it
    /// belongs to; retrying does not help.
    #[error("volume `{volume}` is not this container's: {reason}")]
    VolumeConflict {
        /// The volume's name.
        volume: String,
        /// Which labels differ (their values; labels carry no secret).
        reason: String,
    },
    /// An event stream fell behind and lost events. Re-list what you track (the stream goes on
    /// with newer events).
    #[error("the event stream lost {missed} events because its reader fell behind")]
    EventsLagged {
        /// How many events were lost.
        missed: u64,
    },
    /// No container (or service, or volume) with this id or name exists.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked for: `container`, `volume`, ...
        kind: &'static str,
        /// Its id or name.
        id: String,
    },
    /// A container with this name already exists (someone else created it first). Look it up
    /// by its labels instead of creating it.
    #[error("a container named `{name}` already exists")]
    Conflict {
        /// The contested name.
        name: String,
    },
    /// Every host port in the configured range is allocated. Widen the range or switch to
    /// network addressing, which has no such cap.
    #[error("no free host port in {first}..={last}")]
    PortsExhausted {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The configuration or an argument is invalid; fix it, retrying does not help.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The tenant directory could not answer for this tenant (unknown tenant, store down, pool
    /// time-out). The directory's error is kept as the source, and
    /// [`is_retryable`](Error::is_retryable) is its answer. It never carries a secret. (The
    /// source is shared, so that this error stays `Clone`: downcast it to
    /// `Arc<tenant_isolation::Error>`.)
    #[error("tenant directory failed for tenant `{tenant}`: {source}")]
    TenantDirectory {
        /// The tenant.
        tenant: TenantId,
        /// What the directory said.
        #[source]
        source: Arc<tenant_isolation::Error>,
    },
    /// The container runtime could not be reached (socket missing, daemon down, timeout).
    /// Transient: retry later.
    #[error("container runtime unavailable: {0}")]
    RuntimeUnavailable(String),
    /// The runtime answered an operation with an error this crate has no better name for.
    #[error("container runtime failed to {operation}: {message}")]
    Runtime {
        /// The operation (`create`, `inspect`, ...).
        operation: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The host-port allocation store failed (I/O, corrupt file).
    #[error("port allocation store: {0}")]
    PortStore(String),
}

impl Error {
    /// Whether the same call may succeed later without anyone changing anything: the runtime
    /// was unreachable, the container was not ready in time, or the tenant directory's own
    /// error is retryable (a pool time-out, a lost connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::TenantDirectory { source, .. } => source.is_retryable(),
            _ => matches!(
                self,
                Self::RuntimeUnavailable(_)
                    | Self::StartupTimeout { .. }
                    | Self::Conflict { .. }
                    | Self::EventsLagged { .. }
            ),
        }
    }

    /// A short, stable name of the variant, for metrics labels and progress events.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ImageMissing { .. } => "image_missing",
            Self::StartFailed { .. } => "start_failed",
            Self::Unhealthy { .. } => "unhealthy",
            Self::StartupTimeout { .. } => "startup_timeout",
            Self::Exited { .. } => "exited",
            Self::Unauthorized { .. } => "unauthorized",
            Self::WorkerMismatch { .. } => "worker_mismatch",
            Self::VolumeConflict { .. } => "volume_conflict",
            Self::EventsLagged { .. } => "events_lagged",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::PortsExhausted { .. } => "ports_exhausted",
            Self::InvalidConfig(_) => "invalid_config",
            Self::TenantDirectory { .. } => "tenant_directory",
            Self::RuntimeUnavailable(_) => "runtime_unavailable",
            Self::Runtime { .. } => "runtime",
            Self::PortStore(_) => "port_store",
        }
    }
}
