//! The Docker Swarm runtime: each tenant container is a one-replica service.
//!
//! - `create` makes the service with 0 replicas (created, not started); `start` scales it to 1
//!   (or, when its restart policy gave up on a failed task, forces a new task); `stop` scales it
//!   to 0 with the given grace and waits until its task stopped; `remove` deletes it and waits
//!   until its task containers are gone (so the volume is free).
//! - Limits, reservations ([`Reservations`]), restart condition, labels (on the service *and*
//!   its task containers), env (the API key included: Swarm's env is the transport, as on
//!   Docker), the named volume (created with its labels on whichever node runs the task) and
//!   optional placement constraints come from the spec and [`SwarmOptions`].
//! - Host-port addressing publishes in Swarm's `host` mode (no routing mesh): the node running
//!   the task binds the port on all its interfaces (Swarm has no host-IP setting), and the URL
//!   uses the spec's bind address (`127.0.0.1` when unspecified) for a task on this node, the
//!   node's address for a task elsewhere. Network addressing attaches the task to an attachable
//!   overlay network (created when missing) with the service name as alias. Host-network
//!   addressing is refused by `create` ([`Error::InvalidConfig`]).
//! - Health: Swarm reports a task `running` only after the image's health check passed
//!   (`starting` before); for a task on this node the container's own health is read.
//! - `logs_tail` reads the service's logs (every node); `stats` and the event stream's
//!   container events cover tasks on this node only.

mod events;
mod service_spec;
mod task_state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{Service, ServiceSpecMode, ServiceSpecModeReplicated, Task};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    LogsOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use tokio::sync::OnceCell;
use tracing::debug;

use super::docker::{docker_error, label_filters, last_lines};
use super::{
    ContainerId, ContainerInfo, ContainerRuntime, ContainerState, ContainerStats, DockerRuntime,
    HealthStatus, RuntimeEvent, VolumeInfo,
};
use crate::{Addressing, ContainerSpec, Error, LabelSelector, WAHA_PORT, labels};
use events::SERVICE_ID_LABEL;
use service_spec::{IMAGE_LABEL, mounted_volumes, replicas, service_spec};
use task_state::{ended, index, is_up, observe, restarts};

/// What Swarm reserves on a node for each tenant service (the limits always apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reservations {
    /// Nothing: the scheduler may overcommit nodes.
    None,
    /// Reserve the memory limit, so the scheduler never places more tenants on a node than its
    /// memory holds; CPU may be overcommitted (it only slows down).
    #[default]
    Memory,
    /// Reserve the memory and the CPU limits.
    MemoryAndCpu,
}

/// How [`SwarmRuntime`] places and builds services. Plain data; `Default` is documented per
/// field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwarmOptions {
    /// Placement constraints of every tenant service (`node.labels.waha==true`, ...). Default:
    /// none. Volumes are node-local: pin tenants to nodes, or keep sessions in WAHA's
    /// PostgreSQL store, when tasks may move.
    pub constraints: Vec<String>,
    /// What to reserve per service. Default: [`Reservations::Memory`].
    pub reservations: Reservations,
    /// Run the image by its local image id instead of its reference. Swarm then uses the image
    /// on this node as it is and never contacts a registry (it tries to pull a tag before
    /// every task, ignoring failures). Only for single-node swarms or images present under
    /// the same id on every node (local builds, tests). Default: `false`.
    pub run_local_image_id: bool,
    /// How long `stop` and `remove` wait for the task container to go, on top of the grace
    /// period. Default: 30 s.
    pub settle_timeout: Duration,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            reservations: Reservations::default(),
            run_local_image_id: false,
            settle_timeout: Duration::from_secs(30),
        }
    }
}

/// A [`ContainerRuntime`] on a Docker Swarm manager: tenant containers are one-replica
/// services, so placement spans the swarm's nodes. See the module documentation for the
/// mapping and `docs/container-pool.md` for what was verified.
///
/// [`ContainerId`]s are service ids.
#[derive(Debug, Clone)]
pub struct SwarmRuntime {
    docker: DockerRuntime,
    options: SwarmOptions,
    node_id: OnceCell<String>,
}

impl SwarmRuntime {
    /// Connects to the local daemon (which must be a swarm manager) with default options.
    pub async fn connect() -> Result<Self, Error> {
        Ok(Self::new(
            DockerRuntime::connect().await?,
            SwarmOptions::default(),
        ))
    }

    /// Uses an existing Docker runtime's client.
    pub fn new(docker: DockerRuntime, options: SwarmOptions) -> Self {
        Self {
            docker,
            options,
            node_id: OnceCell::new(),
        }
    }

    /// The options this runtime was built with.
    pub fn options(&self) -> &SwarmOptions {
        &self.options
    }

    /// The bollard client (the escape hatch for anything this runtime does not cover).
    pub fn client(&self) -> &Docker {
        self.docker.client()
    }

    async fn local_node_id(&self) -> Result<&str, Error> {
        self.node_id
            .get_or_try_init(|| async {
                let info = self
                    .client()
                    .info()
                    .await
                    .map_err(|e| docker_error("read daemon info", e))?;
                info.swarm
                    .and_then(|s| s.node_id)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        Error::InvalidConfig("the Docker daemon is not in a swarm".into())
                    })
            })
            .await
            .map(String::as_str)
    }

    async fn service(&self, id: &ContainerId) -> Result<Service, Error> {
        self.client()
            .inspect_service(id.as_str(), None)
            .await
            .map_err(|e| not_found_as(docker_error("inspect service", e), id))
    }

    /// The tasks of these services, each service's sorted by version index.
    async fn tasks(&self, services: &[&str]) -> Result<HashMap<String, Vec<Task>>, Error> {
        let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
        if services.is_empty() {
            return Ok(by_service);
        }
        let filters = HashMap::from([(
            "service".to_owned(),
            services.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )]);
        let options = ListTasksOptionsBuilder::new().filters(&filters).build();
        let tasks = self
            .client()
            .list_tasks(Some(options))
            .await
            .map_err(|e| docker_error("list tasks", e))?;
        for t in tasks {
            if let Some(s) = t.service_id.clone() {
                by_service.entry(s).or_default().push(t);
            }
        }
        for tasks in by_service.values_mut() {
            tasks.sort_by_key(index);
        }
        Ok(by_service)
    }

    async fn update<F>(&self, id: &ContainerId, change: F) -> Result<(), Error>
    where
        F: Fn(&mut bollard::models::ServiceSpec),
    {
        for _ in 0..5 {
            let (mut spec, version) = editable(self.service(id).await?, id)?;
            change(&mut spec);
            let options = UpdateServiceOptionsBuilder::new()
                .version(i32::try_from(version).unwrap_or(i32::MAX))
                .build();
            match self
                .client()
                .update_service(id.as_str(), spec, options, None)
                .await
            {
                Ok(_) => return Ok(()),
                // "update out of sequence": someone updated it in between; read it again.
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    if message.contains("out of sequence") => {}
                Err(e) => return Err(not_found_as(docker_error("update service", e), id)),
            }
        }
        Err(Error::Conflict {
            name: format!("service {id} (concurrent updates)"),
        })
    }

    async fn info(&self, service: Service, tasks: &[Task]) -> ContainerInfo {
        let id = service.id.clone().unwrap_or_default();
        let service_index = service.version.and_then(|v| v.index).unwrap_or(0);
        let spec = service.spec.unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = spec
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let image = labels.remove(IMAGE_LABEL).unwrap_or_else(|| {
            spec.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        });
        let (state, task) = observe(replicas(&spec), service_index, tasks);
        let last_ended = tasks.iter().rev().find(|t| ended(t));
        let mut info = ContainerInfo {
            id: ContainerId::new(id),
            name,
            image,
            state,
            exit_code: last_ended.and_then(task_state::exit_code),
            restart_count: restarts(tasks),
            ..Default::default()
        };
        match (&info.state, task) {
            (ContainerState::Running, Some(task)) => {
                let local = self.local_container(task).await;
                info.health = health(task, local.as_ref());
                info.health_failing_streak = local.map_or(0, |c| c.health_failing_streak);
                info.url = self.url(&labels, &info.name, task).await;
            }
            _ => {
                if let Some(t) = last_ended {
                    info.oom_killed = self.local_container(t).await.is_some_and(|c| c.oom_killed);
                }
            }
        }
        info.labels = labels;
        info
    }

    /// The task's container, when it is on this node.
    async fn local_container(&self, task: &Task) -> Option<ContainerInfo> {
        self.docker
            .inspect(&ContainerId::new(container_of(task)?))
            .await
            .ok()
    }

    async fn url(
        &self,
        labels: &BTreeMap<String, String>,
        name: &str,
        task: &Task,
    ) -> Option<url::Url> {
        let addressing = Addressing::from_label_value(labels.get(labels::ADDRESSING)?)?;
        let port = labels
            .get(labels::PORT)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(WAHA_PORT);
        let text = match addressing {
            // Swarm's DNS resolves the service name (and its alias) on the overlay network.
            Addressing::NetworkName { .. } => format!("http://{name}:{port}"),
            Addressing::NetworkIp { network } => {
                let container = container_of(task)?;
                let inspect = self
                    .client()
                    .inspect_container(&container, None)
                    .await
                    .ok()?;
                let ip = inspect
                    .network_settings?
                    .networks?
                    .remove(&network)?
                    .ip_address
                    .filter(|ip| !ip.is_empty())?;
                format!("http://{ip}:{port}")
            }
            Addressing::HostPort { bind, .. } => {
                let published = task
                    .status
                    .as_ref()?
                    .port_status
                    .as_ref()?
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|p| p.target_port == Some(i64::from(port)))?
                    .published_port?;
                let here = match (self.local_node_id().await, task.node_id.as_deref()) {
                    (Ok(local), Some(node)) => local == node,
                    _ => true,
                };
                let host = if !here {
                    let node = self
                        .client()
                        .inspect_node(task.node_id.as_deref()?)
                        .await
                        .ok()?;
                    node.status?.addr?
                } else if bind.is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    bind.to_string()
                };
                format!("http://{host}:{published}")
            }
            // `create` refuses it: no service of this runtime has it.
            Addressing::HostNetwork { .. } => return None,
        };
        url::Url::parse(&text).ok()
    }

    async fn service_tasks(&self, id: &ContainerId) -> Result<Vec<Task>, Error> {
        Ok(self
            .tasks(&[id.as_str()])
            .await?
            .remove(id.as_str())
            .unwrap_or_default())
    }

    /// Polls the service's tasks until `done`, for at most `limit`.
    async fn wait_for(
        &self,
        id: &ContainerId,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Task]) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.service_tasks(id).await?) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Runtime {
                    operation: "wait for service tasks",
                    message: format!("service {id}: {what} not done within {limit:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn task_containers_left(&self, id: &ContainerId) -> Result<bool, Error> {
        let filters =
            HashMap::from([("label".to_owned(), vec![format!("{SERVICE_ID_LABEL}={id}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let left = self
            .client()
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("list containers", e))?;
        Ok(!left.is_empty())
    }

    /// The image reference the task runs: the spec's, or its local id.
    async fn task_image(&self, spec: &ContainerSpec) -> Result<String, Error> {
        let image = spec.image.to_string();
        self.docker.ensure_image(&image).await?;
        if !self.options.run_local_image_id {
            return Ok(image);
        }
        let inspect = self
            .client()
            .inspect_image(&image)
            .await
            .map_err(|e| docker_error("inspect image", e))?;
        inspect.id.ok_or(Error::ImageMissing { image })
    }
}

/// Host-network addressing is refused with [`Error::InvalidConfig`]: a task may run on any
/// node, and the URL it implies (the node's own loopback) only reaches a task on this node, so
/// the pool could not address tenants reliably; Swarm's host network also gives no isolation
/// between services. Use host-port or network addressing.
fn supported(addressing: &Addressing) -> Result<(), Error> {
    match addressing {
        Addressing::HostNetwork { .. } => Err(Error::InvalidConfig(
            "host-network addressing is not supported by the Swarm runtime (a task may run on \
             any node, whose loopback is not this host's); use host-port or network addressing"
                .into(),
        )),
        Addressing::NetworkName { .. }
        | Addressing::NetworkIp { .. }
        | Addressing::HostPort { .. } => Ok(()),
    }
}

/// The task container's health when it is on this node; otherwise what Swarm's task state
/// says (`starting` = the health check has not passed yet).
fn health(task: &Task, local: Option<&ContainerInfo>) -> HealthStatus {
    match local {
        Some(c) if c.health != HealthStatus::None => c.health.clone(),
        _ if task.status.as_ref().and_then(|s| s.state)
            == Some(bollard::models::TaskState::STARTING) =>
        {
            HealthStatus::Starting
        }
        _ => HealthStatus::None,
    }
}

fn container_of(task: &Task) -> Option<String> {
    task.status
        .as_ref()?
        .container_status
        .as_ref()?
        .container_id
        .clone()
        .filter(|c| !c.is_empty())
}

/// The spec and version an update starts from. A service the daemon reported without them is
/// an error: writing back a default spec would wipe the service's image, env, mounts and
/// labels.
fn editable(
    service: Service,
    id: &ContainerId,
) -> Result<(bollard::models::ServiceSpec, u64), Error> {
    let missing = |what: &str| Error::Runtime {
        operation: "update service",
        message: format!("the daemon reported service {id} without its {what}"),
    };
    let version = service
        .version
        .and_then(|v| v.index)
        .ok_or_else(|| missing("version"))?;
    let spec = service.spec.ok_or_else(|| missing("spec"))?;
    Ok((spec, version))
}

fn not_found_as(e: Error, id: &ContainerId) -> Error {
    match e {
        Error::NotFound { .. } => Error::NotFound {
            kind: "service",
            id: id.to_string(),
        },
        other => other,
    }
}

fn set_replicas(spec: &mut bollard::models::ServiceSpec, n: i64) {
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(n) }),
        ..Default::default()
    });
}

#[async_trait]
impl ContainerRuntime for SwarmRuntime {
    fn backend(&self) -> &'static str {
        "swarm"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, Error> {
        supported(&spec.addressing)?;
        let image = self.task_image(spec).await?;
        let owner = spec
            .labels
            .get(labels::MANAGED_BY)
            .cloned()
            .unwrap_or_default();
        if let Some(network) = spec.addressing.network() {
            self.docker
                .ensure_network(network, "overlay", &owner)
                .await?;
        }
        self.docker.ensure_volume(spec).await?;
        let service = service_spec(spec, &image, &self.options);
        match self.client().create_service(service, None).await {
            Ok(created) => {
                let id = created.id.unwrap_or_default();
                debug!(service = %spec.name, %id, "created service");
                Ok(ContainerId::new(id))
            }
            Err(e) => Err(match docker_error("create service", e) {
                Error::Conflict { .. } => Error::Conflict {
                    name: spec.name.clone(),
                },
                other => other,
            }),
        }
    }

    async fn start(&self, id: &ContainerId) -> Result<(), Error> {
        let service = self.service(id).await?;
        let service_index = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        let n = service.spec.as_ref().map(replicas).unwrap_or(0);
        let tasks = self.service_tasks(id).await?;
        let state = observe(n, service_index, &tasks).0;
        let result = if n > 0 && !state.is_terminal() {
            // Running, or on its way there.
            return Ok(());
        } else if n > 0 {
            // The restart policy gave up on the last task: a forced update makes a new one.
            self.update(id, |s| {
                if let Some(t) = s.task_template.as_mut() {
                    t.force_update = Some(t.force_update.unwrap_or(0) + 1);
                }
            })
            .await
        } else {
            self.update(id, |s| set_replicas(s, 1)).await
        };
        match result {
            Ok(()) => {}
            Err(Error::Runtime { message, .. }) => {
                return Err(Error::StartFailed {
                    container: id.to_string(),
                    reason: message,
                });
            }
            Err(e) => return Err(e),
        }
        // The orchestrator makes the task within milliseconds; until then `inspect` would
        // still see the stopped one.
        let before = tasks.iter().map(index).max().unwrap_or(0);
        let wanted = |ts: &[Task]| {
            ts.iter().any(|t| {
                index(t) > before
                    && !matches!(
                        t.desired_state,
                        Some(
                            bollard::models::TaskState::SHUTDOWN
                                | bollard::models::TaskState::REMOVE
                        )
                    )
            })
        };
        self.wait_for(id, "scheduling a task", self.options.settle_timeout, wanted)
            .await
            .map_err(|e| Error::StartFailed {
                container: id.to_string(),
                reason: e.to_string(),
            })
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, Error> {
        let service = self.service(id).await?;
        let tasks = self.service_tasks(id).await?;
        Ok(self.info(service, &tasks).await)
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), Error> {
        let grace_nanos = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
        let service = self.service(id).await?;
        let spec = service.spec.unwrap_or_default();
        let current_grace = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.stop_grace_period);
        if replicas(&spec) > 0 || current_grace != Some(grace_nanos) {
            self.update(id, |s| {
                set_replicas(s, 0);
                if let Some(c) = s
                    .task_template
                    .as_mut()
                    .and_then(|t| t.container_spec.as_mut())
                {
                    c.stop_grace_period = Some(grace_nanos);
                }
            })
            .await?;
        }
        self.wait_for(
            id,
            "stopping its task",
            grace + self.options.settle_timeout,
            |tasks| !tasks.iter().any(is_up),
        )
        .await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), Error> {
        match self.client().delete_service(id.as_str()).await {
            Ok(()) => debug!(%id, "removed service"),
            Err(e) => match docker_error("remove service", e) {
                // Already gone; its task containers may still be going.
                Error::NotFound { .. } => {}
                other => return Err(other),
            },
        }
        // Wait until the task containers (on this node) are gone, so the volume is free.
        let deadline = Instant::now() + self.options.settle_timeout;
        while self.task_containers_left(id).await? {
            if Instant::now() >= deadline {
                return Err(Error::Runtime {
                    operation: "remove service",
                    message: format!(
                        "task containers of {id} still exist after {:?}",
                        self.options.settle_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<ContainerInfo>, Error> {
        let filters = label_filters(selector);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let services = self
            .client()
            .list_services(Some(options))
            .await
            .map_err(|e| docker_error("list services", e))?;
        let ids: Vec<&str> = services.iter().filter_map(|s| s.id.as_deref()).collect();
        let mut tasks = self.tasks(&ids).await?;
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            let own =
                s.id.as_ref()
                    .and_then(|id| tasks.remove(id))
                    .unwrap_or_default();
            out.push(self.info(s, &own).await);
        }
        Ok(out)
    }

    async fn logs_tail(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>, Error> {
        self.service(id).await?;
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<_> = self
            .client()
            .service_logs(id.as_str(), Some(options))
            .try_collect()
            .await
            .map_err(|e| not_found_as(docker_error("read service logs", e), id))?;
        Ok(last_lines(&chunks, lines))
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        let service = self.service(id).await?;
        let limit = service
            .spec
            .and_then(|s| s.task_template)
            .and_then(|t| t.resources)
            .and_then(|r| r.limits)
            .and_then(|l| l.memory_bytes)
            .and_then(|m| u64::try_from(m).ok());
        let configured = ContainerStats {
            memory_limit_bytes: limit,
            ..Default::default()
        };
        let tasks = self.service_tasks(id).await?;
        let Some(container) = tasks.iter().rev().find(|t| is_up(t)).and_then(container_of) else {
            return Ok(configured);
        };
        match self.docker.stats(&ContainerId::new(container)).await {
            Ok(stats) => Ok(stats),
            // The task runs on another node: only the configured limit is known here.
            Err(Error::NotFound { .. }) => Ok(configured),
            Err(e) => Err(e),
        }
    }

    async fn events(
        &self,
        selector: &LabelSelector,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, Error>>, Error> {
        let filters = label_filters(selector);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let known: HashSet<String> = self
            .client()
            .list_services(Some(options))
            .await
            .map_err(|e| docker_error("list services", e))?
            .into_iter()
            .filter_map(|s| s.id)
            .collect();
        Ok(events::stream(
            self.client().clone(),
            selector.clone(),
            known,
        ))
    }

    /// Whether the image is on this node (where `create` looks for it; other nodes pull it).
    async fn has_image(&self, image: &crate::ImageRef) -> Result<bool, Error> {
        self.docker.has_image(image).await
    }

    async fn list_volumes(&self, selector: &LabelSelector) -> Result<Vec<VolumeInfo>, Error> {
        self.docker.list_volumes(selector).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        // A service that mounts the volume would re-create it on its next task: in use, even
        // while it has no container.
        let services = self
            .client()
            .list_services(None::<bollard::query_parameters::ListServicesOptions>)
            .await
            .map_err(|e| docker_error("list services", e))?;
        let in_use = services.iter().any(|s| {
            s.spec
                .as_ref()
                .is_some_and(|spec| mounted_volumes(spec).any(|v| v == name))
        });
        if in_use {
            return Err(Error::Conflict {
                name: name.to_owned(),
            });
        }
        self.docker.remove_volume(name).await
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ObjectVersion, ServiceSpec};

    use super::*;

    #[test]
    fn host_network_addressing_is_a_config_error_on_swarm() {
        let host_network = Addressing::HostNetwork {
            bind: "127.0.0.1".parse().unwrap(),
            port: 4100,
        };
        match supported(&host_network) {
            Err(Error::InvalidConfig(message)) => {
                assert!(message.contains("host-network"), "{message}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        for ok in [
            Addressing::HostPort {
                bind: "127.0.0.1".parse().unwrap(),
                port: 0,
            },
            Addressing::NetworkName {
                network: "chipfleet".into(),
            },
        ] {
            supported(&ok).unwrap();
        }
    }

    #[test]
    fn an_update_never_starts_from_a_spec_or_version_the_daemon_left_out() {
        let id = ContainerId::new("svc1");
        let spec = ServiceSpec {
            name: Some("cp-acme-0".into()),
            ..Default::default()
        };
        let version = Some(ObjectVersion { index: Some(7) });
        let full = Service {
            spec: Some(spec.clone()),
            version: version.clone(),
            ..Default::default()
        };
        assert_eq!(editable(full, &id).unwrap(), (spec.clone(), 7));
        for partial in [
            Service {
                version,
                ..Default::default()
            },
            Service {
                spec: Some(spec),
                ..Default::default()
            },
        ] {
            match editable(partial, &id) {
                Err(Error::Runtime { operation, message }) => {
                    assert_eq!(operation, "update service");
                    assert!(message.contains("svc1"), "{message}");
                }
                other => panic!("expected a runtime error, got {other:?}"),
            }
        }
    }
}
