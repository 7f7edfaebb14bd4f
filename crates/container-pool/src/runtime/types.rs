//! Data the runtimes return.

use std::collections::BTreeMap;
use std::fmt;

use url::Url;

/// A runtime's id for a container (Docker container id, in-memory id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    /// Wraps a runtime id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as the runtime knows it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The lifecycle state of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// The process runs.
    Running,
    /// The runtime is restarting it after an exit (restart policy).
    Restarting,
    /// Paused.
    Paused,
    /// The process exited (or was stopped).
    Exited {
        /// Its exit code, when known.
        exit_code: Option<i64>,
    },
    /// The runtime gave up on it.
    Dead,
    /// Being removed.
    Removing,
}

impl ContainerState {
    /// Whether the process has ended and will not come back by itself.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Exited { .. } | Self::Dead | Self::Removing)
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::Running => f.write_str("running"),
            Self::Restarting => f.write_str("restarting"),
            Self::Paused => f.write_str("paused"),
            Self::Exited { exit_code: Some(c) } => write!(f, "exited ({c})"),
            Self::Exited { exit_code: None } => f.write_str("exited"),
            Self::Dead => f.write_str("dead"),
            Self::Removing => f.write_str("removing"),
        }
    }
}

/// The result of the image's own health check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthStatus {
    /// The image has no health check (or the backend cannot see it).
    #[default]
    None,
    /// Within the health check's start period, or not yet checked.
    Starting,
    /// The last checks passed.
    Healthy,
    /// The check failed its retries.
    Unhealthy {
        /// The last check's output, if the runtime kept it.
        last_output: String,
    },
}

/// One container as a runtime sees it.
///
/// Build one with struct-update syntax from [`Default`] (`ContainerInfo { id, state,
/// ..Default::default() }`), so that fields added later keep custom runtimes compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The runtime's id.
    pub id: ContainerId,
    /// The container's name.
    pub name: String,
    /// The image it runs, as given at creation.
    pub image: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Health-check status.
    pub health: HealthStatus,
    /// Where its HTTP port is reachable from this process, while it runs.
    pub url: Option<Url>,
    /// The exit code of the process's last run, when it has exited at least once (also while
    /// a restart policy restarts it).
    pub exit_code: Option<i64>,
    /// How often the runtime restarted the process under its restart policy (0 when the
    /// backend does not count restarts).
    pub restart_count: u64,
    /// Whether the last run was killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// Consecutive failed runs of the image's health check (0 when it has not failed since it
    /// last passed, or when the backend cannot see it).
    pub health_failing_streak: u32,
}

impl Default for ContainerInfo {
    /// An unnamed container in state [`ContainerState::Created`], with no labels, health
    /// check, address, exit or restart.
    fn default() -> Self {
        Self {
            id: ContainerId::new(String::new()),
            name: String::new(),
            image: String::new(),
            labels: BTreeMap::new(),
            state: ContainerState::Created,
            health: HealthStatus::None,
            url: None,
            exit_code: None,
            restart_count: 0,
            oom_killed: false,
            health_failing_streak: 0,
        }
    }
}

impl ContainerInfo {
    /// The value of one label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Resource usage of one container. Fields a backend cannot measure are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerStats {
    /// CPU use since the previous sample, in percent of one CPU (may exceed 100 on many cores).
    pub cpu_percent: Option<f64>,
    /// Memory in use, in bytes.
    pub memory_bytes: Option<u64>,
    /// The memory limit, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

/// A lifecycle event of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The container.
    pub id: ContainerId,
    /// What happened.
    pub kind: RuntimeEventKind,
}

/// What happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeEventKind {
    /// Created.
    Created,
    /// Started.
    Started,
    /// Its process ended.
    Died {
        /// Exit code, when known.
        exit_code: Option<i64>,
    },
    /// Its health status changed.
    Health(HealthStatus),
    /// Removed.
    Removed,
}

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Its name.
    pub name: String,
    /// Its labels (the pool's volumes carry the managed-by, tenant and slot labels).
    pub labels: BTreeMap<String, String>,
}
