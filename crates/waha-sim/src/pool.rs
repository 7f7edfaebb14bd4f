//! [`SimLauncher`]: container-pool's in-memory runtime starts one in-process simulator per
//! "container" through it (feature `pool`).
//!
//! It lives here, not in container-pool: container-pool is published and may not depend on
//! this unpublished crate, while this crate may depend on container-pool. Behind a feature, so
//! the simulator binary and image never build the library crates.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use container_pool::{Error, LaunchSpec, LaunchedServer, ProcessLauncher, ServerHandle};

use crate::{CrashBehaviour, RunningSimulator, SimulatorBuilder, SimulatorControl};

/// Adjusts the builder every launch starts from.
type Configure = dyn Fn(SimulatorBuilder) -> SimulatorBuilder + Send + Sync;

/// The controls of the simulators running now, by container name.
type Running = Arc<Mutex<HashMap<String, SimulatorControl>>>;

/// Starts a WAHA simulator in-process on `127.0.0.1:0` for each container of an
/// `InMemoryRuntime`, so the pool's readiness gate and clients talk real HTTP to it.
///
/// A launch maps the container's [`LaunchSpec`] to a simulator:
/// - **environment**: the simulator reads it as its binary reads a container's (WAHA's
///   variables such as `WAHA_API_KEY`, `WAHA_WORKER_ID`, `WHATSAPP_DEFAULT_ENGINE`,
///   `WAHA_AUTO_START_DELAY_SECONDS`, and every `SIM_*`, see
///   [`SimulatorBuilder::from_env_vars`]) on top of the launcher's base configuration
///   ([`SimLauncher::configure`]); an unusable value fails the launch naming the variable.
///   `PORT`/`SIM_HOST` are ignored (it always listens on `127.0.0.1:0`) and a crash stops that
///   simulator only, never the process.
/// - **volume**: each volume name has its own state directory under the launcher's root, so a
///   new container on an old volume finds the old sessions (as WAHA's `/app/.sessions` volume
///   does). Without a volume, or with `SIM_STATE_DIR` set to `none` or empty, sessions live in
///   memory only; any other `SIM_STATE_DIR` is ignored (a path inside a container means
///   nothing in-process).
/// - **image**: not interpreted (the runtime's `with_images` decides which images exist).
///
/// ```
/// use std::sync::Arc;
/// use container_pool::InMemoryRuntime;
/// use waha_sim::SimLauncher;
///
/// let launcher = Arc::new(SimLauncher::new().configure(|b| b.time_scale(0.01)));
/// let runtime = InMemoryRuntime::new(launcher.clone());
/// # drop(runtime);
/// ```
pub struct SimLauncher {
    root: PathBuf,
    remove_root: bool,
    configure: Option<Arc<Configure>>,
    running: Running,
}

impl std::fmt::Debug for SimLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLauncher")
            .field("root", &self.root)
            .field("configured", &self.configure.is_some())
            .field("running", &self.lock().len())
            .finish()
    }
}

impl Default for SimLauncher {
    fn default() -> Self {
        Self::new()
    }
}

impl SimLauncher {
    /// A launcher whose volumes live in a fresh directory under the system's temporary
    /// directory, removed when the launcher is dropped.
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(format!(
            "waha-sim-volumes-{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        ));
        Self::on(root, true)
    }

    /// A launcher whose volumes live under `root` (kept when the launcher is dropped, so a
    /// later launcher on the same root sees them).
    pub fn with_state_root(root: impl Into<PathBuf>) -> Self {
        Self::on(root.into(), false)
    }

    fn on(root: PathBuf, remove_root: bool) -> Self {
        Self {
            root,
            remove_root,
            configure: None,
            running: Running::default(),
        }
    }

    /// The base configuration of every launch, applied before the container's environment
    /// (which wins): e.g. `configure(|b| b.time_scale(0.01))` for fast tests.
    pub fn configure(
        mut self,
        configure: impl Fn(SimulatorBuilder) -> SimulatorBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// Where the volumes' state directories are.
    pub fn state_root(&self) -> &Path {
        &self.root
    }

    /// The control handle of the simulator running for the container named `container`.
    pub fn control(&self, container: &str) -> Option<SimulatorControl> {
        self.lock().get(container).cloned()
    }

    /// The names of the containers whose simulators are running.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, SimulatorControl>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state directory of the launch, if it persists.
    fn state_dir(&self, spec: &LaunchSpec) -> Option<PathBuf> {
        let disabled = spec
            .env_value("SIM_STATE_DIR")
            .is_some_and(|dir| dir.trim().is_empty() || dir.trim() == "none");
        if disabled {
            return None;
        }
        let volume = spec.volume.as_deref()?;
        Some(self.root.join(volume_dir(volume)))
    }
}

impl Drop for SimLauncher {
    fn drop(&mut self) {
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A volume's directory name: the name itself when it is a plain Docker volume name, its hex
/// otherwise (so no name can climb out of the root).
fn volume_dir(volume: &str) -> String {
    let plain = !volume.is_empty()
        && !volume.starts_with('.')
        && volume
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        volume.to_owned()
    } else {
        format!("hex-{}", hex::encode(volume))
    }
}

#[async_trait]
impl ProcessLauncher for SimLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchedServer, Error> {
        let failed = |reason: String| Error::StartFailed {
            container: spec.name.clone(),
            reason,
        };
        let base = match &self.configure {
            Some(configure) => configure(SimulatorBuilder::default()),
            None => SimulatorBuilder::default(),
        };
        let mut builder = base
            .apply_env_vars(|name| spec.env_value(name).map(str::to_owned))
            .map_err(|e| failed(e.to_string()))?
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .crash_behaviour(CrashBehaviour::StopServer);
        builder.state_dir = self.state_dir(spec);
        tracing::debug!(container = %spec.name, image = %spec.image, "launching waha-sim in-process");
        let sim = builder.start().await.map_err(|e| failed(e.to_string()))?;
        let url = url::Url::parse(sim.url()).map_err(|e| failed(e.to_string()))?;
        self.lock().insert(spec.name.clone(), sim.control().clone());
        Ok(LaunchedServer {
            url,
            handle: Box::new(SimHandle {
                sim,
                container: spec.name.clone(),
                running: Arc::clone(&self.running),
            }),
        })
    }
}

/// Stops one launched simulator.
struct SimHandle {
    sim: RunningSimulator,
    container: String,
    running: Running,
}

#[async_trait]
impl ServerHandle for SimHandle {
    async fn stop(self: Box<Self>) {
        let Self {
            sim,
            container,
            running,
        } = *self;
        {
            let mut running = running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A newer launch of the same container keeps its entry.
            if running
                .get(&container)
                .is_some_and(|control| Arc::ptr_eq(&control.state, &sim.control().state))
            {
                running.remove(&container);
            }
        }
        sim.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::volume_dir;

    #[test]
    fn volume_names_stay_inside_the_root() {
        assert_eq!(volume_dir("cp-acme-0"), "cp-acme-0");
        assert_eq!(volume_dir(".."), "hex-2e2e");
        assert_eq!(volume_dir("a/b"), "hex-612f62");
        assert_eq!(volume_dir(""), "hex-");
    }
}
