//! The in-memory runtime: containers are records, "processes" are servers started in-process
//! by a [`ProcessLauncher`].
//!
//! This is the embedded default and what tests use. With a launcher that starts a
//! WAHA-compatible server on `127.0.0.1:0` (the project's tests use `waha-sim`), the pool's
//! readiness gate runs against real HTTP, exactly as with Docker. The runtime itself depends on
//! no server crate.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use url::Url;

use super::{
    ContainerId, ContainerInfo, ContainerRuntime, ContainerState, ContainerStats, HealthStatus,
    RuntimeEvent, RuntimeEventKind, VolumeInfo,
};
use crate::{ContainerSpec, EnvVar, Error, LabelSelector, labels};

/// What a [`ProcessLauncher`] is asked to start: the parts of a [`ContainerSpec`] a process
/// sees.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The container's name.
    pub name: String,
    /// The image, as configured; a launcher may refuse images it cannot imitate.
    pub image: String,
    /// The environment (the API key included; `Debug` redacts it).
    pub env: Vec<EnvVar>,
    /// The tenant volume's name, if any: a launcher keeps state per volume name, so a new
    /// "container" on an old volume sees the old state.
    pub volume: Option<String>,
}

impl LaunchSpec {
    /// The value of an environment variable, secret or not (for the launcher to configure the
    /// server with; never log it).
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.expose_secret())
    }
}

/// A running in-process server.
pub struct LaunchedServer {
    /// Its base URL (on `127.0.0.1`).
    pub url: Url,
    /// Stops it.
    pub handle: Box<dyn ServerHandle>,
}

impl std::fmt::Debug for LaunchedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchedServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Stops a launched server.
#[async_trait]
pub trait ServerHandle: Send + Sync {
    /// Stops the server and waits until it no longer answers.
    async fn stop(self: Box<Self>);
}

/// Starts the "process" of an in-memory container.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ProcessLauncher: Send + Sync {
    /// Starts a server for `spec` and returns where it listens. An error is reported as
    /// [`Error::StartFailed`].
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchedServer, Error>;
}

struct Record {
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
    launch: LaunchSpec,
    memory_limit: u64,
    state: ContainerState,
    exit_code: Option<i64>,
    launching: bool,
    url: Option<Url>,
    server: Option<Box<dyn ServerHandle>>,
    logs: Vec<String>,
}

impl Record {
    fn info(&self, id: &ContainerId) -> ContainerInfo {
        ContainerInfo {
            id: id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            labels: self.labels.clone(),
            state: self.state.clone(),
            health: HealthStatus::None,
            url: self.url.clone(),
            exit_code: self.exit_code,
            ..ContainerInfo::default()
        }
    }
}

#[derive(Default)]
struct State {
    containers: BTreeMap<ContainerId, Record>,
    volumes: BTreeMap<String, BTreeMap<String, String>>,
    next_id: u64,
}

#[derive(Clone)]
struct LabelledEvent {
    labels: BTreeMap<String, String>,
    event: RuntimeEvent,
}

/// A [`ContainerRuntime`] that keeps containers in memory and runs each one's server
/// in-process through a [`ProcessLauncher`].
///
/// Volumes are records with labels, kept when their container goes, and checked like Docker's
/// before they are mounted again ([`labels::check_volume_labels`]); the launcher keeps the
/// state per volume name.
///
/// Differences from Docker, all documented in `docs/container-pool.md`: no image health
/// checks ([`HealthStatus::None`]), no restart policy (a killed server stays exited), no
/// resource enforcement (the memory limit is reported in [`ContainerStats`]), and the
/// addressing mode is ignored: [`ContainerInfo::url`] is always the launched server's loopback
/// URL.
pub struct InMemoryRuntime {
    launcher: Arc<dyn ProcessLauncher>,
    images: Option<HashSet<String>>,
    state: Mutex<State>,
    events: broadcast::Sender<LabelledEvent>,
}

impl std::fmt::Debug for InMemoryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryRuntime")
            .field("images", &self.images)
            .finish_non_exhaustive()
    }
}

impl InMemoryRuntime {
    /// A runtime that accepts any image and starts every container through `launcher`.
    pub fn new(launcher: Arc<dyn ProcessLauncher>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            launcher,
            images: None,
            state: Mutex::new(State::default()),
            events,
        }
    }

    /// Accepts only these images (as `name:tag` or `name@digest`); others are
    /// [`Error::ImageMissing`] on `create`, as on a host where they were never built.
    pub fn with_images<I: IntoIterator<Item = S>, S: Into<String>>(mut self, images: I) -> Self {
        self.images = Some(images.into_iter().map(Into::into).collect());
        self
    }

    /// Simulates the container's process dying with `exit_code` (a crash, an OOM kill): the
    /// server is stopped and the container is left exited. No restart follows.
    pub async fn kill(&self, id: &ContainerId, exit_code: i64) -> Result<(), Error> {
        let (server, labels) = {
            let mut state = self.lock();
            let rec = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            rec.state = ContainerState::Exited {
                exit_code: Some(exit_code),
            };
            rec.exit_code = Some(exit_code);
            rec.url = None;
            rec.logs
                .push(format!("process killed, exit code {exit_code}"));
            (rec.server.take(), rec.labels.clone())
        };
        if let Some(server) = server {
            server.stop().await;
        }
        self.emit(
            labels,
            id,
            RuntimeEventKind::Died {
                exit_code: Some(exit_code),
            },
        );
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, labels: BTreeMap<String, String>, id: &ContainerId, kind: RuntimeEventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(LabelledEvent {
            labels,
            event: RuntimeEvent {
                id: id.clone(),
                kind,
            },
        });
    }
}

/// Clears `launching` when a `start` is dropped before its launch finished.
struct LaunchGuard<'a> {
    runtime: &'a InMemoryRuntime,
    id: &'a ContainerId,
    armed: bool,
}

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(rec) = self.runtime.lock().containers.get_mut(self.id)
        {
            rec.launching = false;
            rec.logs.push("launch cancelled".to_owned());
        }
    }
}

fn not_found(id: &ContainerId) -> Error {
    Error::NotFound {
        kind: "container",
        id: id.to_string(),
    }
}

#[async_trait]
impl ContainerRuntime for InMemoryRuntime {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, Error> {
        let image = spec.image.to_string();
        if self
            .images
            .as_ref()
            .is_some_and(|known| !known.contains(&image))
        {
            return Err(Error::ImageMissing { image });
        }
        let id = {
            let mut state = self.lock();
            if state.containers.values().any(|r| r.name == spec.name) {
                return Err(Error::Conflict {
                    name: spec.name.clone(),
                });
            }
            // An existing volume is mounted only when it is this container's (same pool,
            // tenant, slot and incarnation); otherwise nothing is created.
            if let Some(v) = &spec.volume {
                let wanted = spec.volume_labels();
                match state.volumes.entry(v.name.clone()) {
                    Entry::Occupied(found) => {
                        labels::check_volume_labels(&v.name, &wanted, found.get())?;
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(wanted);
                    }
                }
            }
            state.next_id += 1;
            let id = ContainerId::new(format!("mem-{:08}", state.next_id));
            state.containers.insert(
                id.clone(),
                Record {
                    name: spec.name.clone(),
                    image,
                    labels: spec.labels.clone(),
                    launch: LaunchSpec {
                        name: spec.name.clone(),
                        image: spec.image.to_string(),
                        env: spec.env.clone(),
                        volume: spec.volume.as_ref().map(|v| v.name.clone()),
                    },
                    memory_limit: spec.resources.memory_bytes,
                    state: ContainerState::Created,
                    exit_code: None,
                    launching: false,
                    url: None,
                    server: None,
                    logs: vec![format!("created {}", spec.name)],
                },
            );
            id
        };
        self.emit(spec.labels.clone(), &id, RuntimeEventKind::Created);
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), Error> {
        let launch = {
            let mut state = self.lock();
            let rec = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if rec.launching || rec.state == ContainerState::Running {
                return Ok(());
            }
            rec.launching = true;
            rec.launch.clone()
        };
        // A caller cancelled during the launch must not leave `launching` set, or every later
        // `start` would return at once and the container would stay created forever.
        let mut guard = LaunchGuard {
            runtime: self,
            id,
            armed: true,
        };
        let result = self.launcher.launch(&launch).await;
        guard.armed = false;
        drop(guard);
        let mut orphan = None;
        let outcome = {
            let mut state = self.lock();
            match (state.containers.get_mut(id), result) {
                (Some(rec), Ok(server)) => {
                    rec.launching = false;
                    rec.state = ContainerState::Running;
                    rec.logs.push(format!("listening on {}", server.url));
                    rec.url = Some(server.url);
                    rec.server = Some(server.handle);
                    Ok(rec.labels.clone())
                }
                (Some(rec), Err(e)) => {
                    rec.launching = false;
                    rec.state = ContainerState::Exited { exit_code: Some(1) };
                    rec.exit_code = Some(1);
                    let reason = match e {
                        Error::StartFailed { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    rec.logs.push(format!("launch failed: {reason}"));
                    Err(Error::StartFailed {
                        container: rec.name.clone(),
                        reason,
                    })
                }
                (None, Ok(server)) => {
                    // Removed while launching: do not leak the server.
                    orphan = Some(server.handle);
                    Err(not_found(id))
                }
                (None, Err(_)) => Err(not_found(id)),
            }
        };
        if let Some(server) = orphan {
            server.stop().await;
        }
        let labels = outcome?;
        self.emit(labels, id, RuntimeEventKind::Started);
        Ok(())
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, Error> {
        let state = self.lock();
        state
            .containers
            .get(id)
            .map(|r| r.info(id))
            .ok_or_else(|| not_found(id))
    }

    async fn stop(&self, id: &ContainerId, _grace: Duration) -> Result<(), Error> {
        let (server, labels) = {
            let mut state = self.lock();
            let rec = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if rec.state != ContainerState::Running {
                return Ok(());
            }
            rec.state = ContainerState::Exited { exit_code: Some(0) };
            rec.exit_code = Some(0);
            rec.url = None;
            rec.logs.push("stopped".to_owned());
            (rec.server.take(), rec.labels.clone())
        };
        if let Some(server) = server {
            server.stop().await;
        }
        self.emit(labels, id, RuntimeEventKind::Died { exit_code: Some(0) });
        Ok(())
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), Error> {
        let Some(rec) = self.lock().containers.remove(id) else {
            return Ok(());
        };
        if let Some(server) = rec.server {
            server.stop().await;
        }
        self.emit(rec.labels, id, RuntimeEventKind::Removed);
        Ok(())
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<ContainerInfo>, Error> {
        let state = self.lock();
        Ok(state
            .containers
            .iter()
            .filter(|(_, r)| selector.matches(&r.labels))
            .map(|(id, r)| r.info(id))
            .collect())
    }

    async fn logs_tail(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>, Error> {
        let state = self.lock();
        let rec = state.containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(rec.logs[rec.logs.len().saturating_sub(lines)..].to_vec())
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        let state = self.lock();
        let rec = state.containers.get(id).ok_or_else(|| not_found(id))?;
        Ok(ContainerStats {
            memory_limit_bytes: Some(rec.memory_limit),
            ..ContainerStats::default()
        })
    }

    async fn events(
        &self,
        selector: &LabelSelector,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, Error>>, Error> {
        let selector = selector.clone();
        let rx = self.events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(e) => Some((Ok(e), rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((Err(Error::EventsLagged { missed }), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .filter_map(move |e| {
            let item = match e {
                Ok(e) => selector.matches(&e.labels).then_some(Ok(e.event)),
                Err(e) => Some(Err(e)),
            };
            async move { item }
        });
        Ok(stream.boxed())
    }

    async fn has_image(&self, image: &crate::ImageRef) -> Result<bool, Error> {
        Ok(self
            .images
            .as_ref()
            .is_none_or(|known| known.contains(&image.to_string())))
    }

    async fn list_volumes(&self, selector: &LabelSelector) -> Result<Vec<VolumeInfo>, Error> {
        let state = self.lock();
        Ok(state
            .volumes
            .iter()
            .filter(|(_, l)| selector.matches(l))
            .map(|(name, labels)| VolumeInfo {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let mut state = self.lock();
        let in_use = state
            .containers
            .values()
            .any(|r| r.launch.volume.as_deref() == Some(name));
        if in_use {
            return Err(Error::Conflict {
                name: name.to_owned(),
            });
        }
        state.volumes.remove(name);
        Ok(())
    }
}
