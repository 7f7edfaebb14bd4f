//! One WAHA container per tenant, ready before it is used.
//!
//! [`TenantPool::ensure`] returns a tenant's [`TenantEndpoint`] (base URL and API key) once its
//! container runs, passed the image's health check and answered an authenticated HTTP probe,
//! all under one configurable start-up deadline (default 180 s), with progress events and
//! distinct errors for a missing image, a failed start, an unhealthy container, a start-up
//! timeout and an exit. It is idempotent and single-flight per tenant.
//!
//! The pool drives a [`ContainerRuntime`]: [`InMemoryRuntime`] (always compiled; runs servers
//! in-process through a [`ProcessLauncher`]), `DockerRuntime` (feature `docker`) or
//! `SwarmRuntime` (feature `swarm`: tenant containers as Swarm services, for fleets that
//! outgrow one host). Here the in-memory runtime runs the project's WAHA simulator in-process
//! (`waha_sim::SimLauncher`, from the unpublished `waha-sim` crate, a dev-dependency of this
//! one: a host passes its own [`ProcessLauncher`]), so the readiness gate talks real HTTP:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use container_pool::*;
//!
//! /// Every tenant's container key and incarnation (a real host passes its `TenantDirectory`).
//! struct Keys;
//! #[async_trait]
//! impl TenantKeys for Keys {
//!     async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error> {
//!         Ok(ApiKey::new(format!("key-of-{tenant}-0123456789")).unwrap())
//!     }
//!     async fn incarnation(&self, tenant: &TenantId) -> Result<Incarnation, Error> {
//!         // A directory mints it when the tenant is created, and keeps it.
//!         Ok(Incarnation::parse(&format!("first-life-of-{tenant}")).unwrap())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One WAHA simulator per "container", on 127.0.0.1, configured by its environment.
//! let runtime = Arc::new(InMemoryRuntime::new(Arc::new(waha_sim::SimLauncher::new())));
//! let probe = Arc::new(WahaHealthProbe::new(Duration::from_secs(2))?);
//! let mut config = PoolConfig::new(ImageRef::parse("devlikeapro/waha:latest")?);
//! config.volumes = false;
//! let pool = TenantPool::new(runtime, Arc::new(Keys), probe, config)?;
//!
//! let mut progress = pool.subscribe();
//! let acme = TenantId::new("acme")?;
//! let endpoint = pool.ensure(&acme).await?;
//! assert_eq!(endpoint.base_url.host_str(), Some("127.0.0.1"));
//! assert!(matches!(progress.recv().await?.kind, PoolEventKind::Creating));
//!
//! // Idempotent: the same container again.
//! assert_eq!(pool.ensure(&acme).await?.container, endpoint.container);
//! pool.remove_tenant(&acme, true).await?; // explicit, async; nothing happens in Drop
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/container-pool.md` for the design: readiness order, placement rule, lifecycle,
//! addressing modes and what differs between the runtimes.

mod config;
pub mod conformance;
mod endpoint;
mod error;
mod events;
mod fingerprint;
pub mod labels;
mod placement;
mod pool;
mod ports;
mod readiness;
pub mod runtime;
mod spec;
mod tenant;

pub use config::{AddressingPolicy, AutoStartStagger, HostPorts, IdleAction, PoolConfig};
pub use endpoint::TenantEndpoint;
pub use error::Error;
pub use events::{PoolEvent, PoolEventKind, ReadinessCheck};
pub use fingerprint::KeyFingerprintSecret;
pub use fleet_vocab::{Clock, ManualClock, SystemClock};
pub use labels::LabelSelector;
pub use placement::Placement;
pub use pool::{
    Drift, ReapReport, RolloutOptions, RolloutReport, SlotStats, SweepReport, TenantPool,
};
pub use ports::{FilePortStore, InMemoryPortStore, PortAllocationStore};
pub use readiness::{ProbeError, ReadinessProbe, WahaHealthProbe};
#[cfg(feature = "docker")]
pub use runtime::DockerRuntime;
pub use runtime::{
    ContainerId, ContainerInfo, ContainerRuntime, ContainerState, ContainerStats, HealthStatus,
    InMemoryRuntime, LaunchSpec, LaunchedServer, ProcessLauncher, RuntimeEvent, RuntimeEventKind,
    ServerHandle, VolumeInfo,
};
#[cfg(feature = "swarm")]
pub use runtime::{Reservations, SwarmOptions, SwarmRuntime};
pub use spec::{
    Addressing, ContainerSpec, Engine, EnvValue, EnvVar, ImageRef, RESERVED_ENV_NAMES, Resources,
    RestartPolicy, SizingPolicy, SizingRow, VolumeMount, WAHA_PORT, WAHA_SESSIONS_DIR,
};
pub use tenant::{
    ApiKey, ChipActivity, Incarnation, TenantExists, TenantId, TenantKeys, keys_from_directory,
};
