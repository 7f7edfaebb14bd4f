//! The seam between the pool and a container engine: [`ContainerRuntime`].
//!
//! Backends: [`InMemoryRuntime`] (always compiled; runs servers in-process through a
//! [`ProcessLauncher`]), `DockerRuntime` (feature `docker`) and `SwarmRuntime` (feature `swarm`:
//! one-replica Swarm services). [`conformance`](crate::conformance) checks that a backend keeps this contract.

#[cfg(feature = "docker")]
mod docker;
mod memory;
#[cfg(feature = "swarm")]
mod swarm;
mod types;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

#[cfg(feature = "docker")]
pub use docker::DockerRuntime;
pub use memory::{InMemoryRuntime, LaunchSpec, LaunchedServer, ProcessLauncher, ServerHandle};
#[cfg(feature = "swarm")]
pub use swarm::{Reservations, SwarmOptions, SwarmRuntime};
pub use types::{
    ContainerId, ContainerInfo, ContainerState, ContainerStats, HealthStatus, RuntimeEvent,
    RuntimeEventKind, VolumeInfo,
};

use crate::{ContainerSpec, Error, ImageRef, LabelSelector};

/// A container engine, as the pool needs it.
///
/// The contract every backend keeps (checked by [`conformance`](crate::conformance)):
/// - `create` makes a container in state [`ContainerState::Created`] (and the spec's volume and
///   network when missing). A missing image is [`Error::ImageMissing`]; a name already in use
///   is [`Error::Conflict`]. Nothing is started.
/// - A volume `create` makes carries the spec's
///   [volume labels](crate::ContainerSpec::volume_labels); a volume that already exists is
///   mounted only when it carries all of them with the same values
///   ([`labels::check_volume_labels`](crate::labels::check_volume_labels)), otherwise `create`
///   is [`Error::VolumeConflict`], creates nothing and leaves the volume as it is (a reused
///   tenant id never gets the earlier tenant's volume).
/// - `start` starts a created or exited container; a container that cannot start is
///   [`Error::StartFailed`]. Starting a running container is not an error.
/// - `inspect`, `logs_tail` and `stats` of an unknown id are [`Error::NotFound`].
/// - `stop` and `remove` are idempotent: stopping a stopped container and removing a missing
///   one succeed. `remove` forces (a running container is killed first) and keeps volumes.
/// - `list` returns every container (running or not) whose labels match the selector.
/// - [`ContainerInfo::url`] is where the container's HTTP port is reachable from this process,
///   as far as the backend knows; it is `None` while not running.
/// - `events` yields lifecycle events of matching containers from the moment it is called. A
///   problem with the stream itself is an `Err` item, never a silent end: lost events are
///   [`Error::EventsLagged`] (the stream goes on), a broken connection is the runtime's error
///   (the stream ends after it).
/// - `has_image` tells whether `create` would find the image (a backend that cannot tell
///   before creating keeps the default, `Ok(true)`, and reports [`Error::ImageMissing`] from
///   `create`).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// A short name of the backend (`memory`, `docker`, ...) for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Creates a container (not started) from `spec`.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, Error>;

    /// Starts a created or stopped container.
    async fn start(&self, id: &ContainerId) -> Result<(), Error>;

    /// The container's current state, health and address.
    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, Error>;

    /// Stops the container, killing it after `grace`.
    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), Error>;

    /// Removes the container (forcefully), keeping its volume.
    async fn remove(&self, id: &ContainerId) -> Result<(), Error>;

    /// Every container whose labels match `selector`.
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<ContainerInfo>, Error>;

    /// The last `lines` lines of the container's output (stdout and stderr, oldest first).
    async fn logs_tail(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>, Error>;

    /// Current resource usage.
    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats, Error>;

    /// Lifecycle events of containers matching `selector`, from now on; `Err` items report
    /// lost events or a broken stream.
    async fn events(
        &self,
        selector: &LabelSelector,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, Error>>, Error>;

    /// Whether `image` is present where `create` looks for it. Rolling replace checks it before
    /// removing anything. The default says yes (for backends that cannot tell in advance).
    async fn has_image(&self, image: &ImageRef) -> Result<bool, Error> {
        let _ = image;
        Ok(true)
    }

    /// Volumes carrying the selector's labels, with all their labels.
    async fn list_volumes(&self, selector: &LabelSelector) -> Result<Vec<VolumeInfo>, Error>;

    /// Removes a volume; removing a missing one succeeds. A volume still in use is
    /// [`Error::Conflict`].
    async fn remove_volume(&self, name: &str) -> Result<(), Error>;
}
