//! The Docker Engine runtime, through bollard.

mod convert;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tracing::debug;

pub(crate) use convert::{docker_error, event_from_message, label_filters, last_lines};
use convert::{info_from_inspect, info_from_summary, stats_from_response};

use super::{
    ContainerId, ContainerInfo, ContainerRuntime, ContainerStats, RuntimeEvent, VolumeInfo,
};
use crate::{Addressing, ContainerSpec, Error, LabelSelector, RestartPolicy, labels};

/// A [`ContainerRuntime`] on one Docker Engine.
///
/// Containers get the spec's limits, labels, restart policy and named volume; with network
/// addressing they join the user-defined bridge network (created, labelled, when missing) and
/// are reachable by name from other containers on it; with host-port addressing they publish
/// the WAHA port on the configured address; with host-network addressing they run on the
/// host's network (`network_mode: host`, nothing published) and their server listens on the
/// spec's address and port itself.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connects to the local daemon (`DOCKER_HOST`, else `/var/run/docker.sock`) and negotiates
    /// the API version (the daemons this project targets speak 1.41).
    pub async fn connect() -> Result<Self, Error> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| Error::RuntimeUnavailable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| Error::RuntimeUnavailable(e.to_string()))?;
        Ok(Self { docker })
    }

    /// Uses an existing bollard client as it is.
    pub fn from_client(docker: Docker) -> Self {
        Self { docker }
    }

    /// The bollard client (the escape hatch for anything this runtime does not cover).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub(crate) async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => match docker_error("inspect image", e) {
                Error::NotFound { .. } => Err(Error::ImageMissing {
                    image: image.to_owned(),
                }),
                other => Err(other),
            },
        }
    }

    pub(crate) async fn ensure_network(
        &self,
        name: &str,
        driver: &str,
        owner: &str,
    ) -> Result<(), Error> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => return Ok(()),
            Err(e) => match docker_error("inspect network", e) {
                Error::NotFound { .. } => {}
                other => return Err(other),
            },
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some(driver.to_owned()),
            attachable: Some(true),
            labels: Some(HashMap::from([(
                labels::MANAGED_BY.to_owned(),
                owner.to_owned(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created concurrently by someone else.
            Err(e) => match docker_error("create network", e) {
                Error::Conflict { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Creates the spec's volume with its [volume labels](ContainerSpec::volume_labels), or
    /// checks that the volume already there carries them
    /// ([`labels::check_volume_labels`]): a volume of another tenant incarnation or another
    /// pool is never mounted ([`Error::VolumeConflict`]) and is left as it is.
    pub(crate) async fn ensure_volume(&self, spec: &ContainerSpec) -> Result<(), Error> {
        let Some(volume) = &spec.volume else {
            return Ok(());
        };
        let wanted = spec.volume_labels();
        let found = match self.docker.inspect_volume(&volume.name).await {
            Ok(found) => found,
            Err(e) => match docker_error("inspect volume", e) {
                Error::NotFound { .. } => self
                    .docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(volume.name.clone()),
                        labels: Some(wanted.clone().into_iter().collect()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| docker_error("create volume", e))?,
                other => return Err(other),
            },
        };
        // Creating a volume someone else created meanwhile returns theirs, labels and all:
        // checked like one found.
        labels::check_volume_labels(&volume.name, &wanted, &found.labels.into_iter().collect())
    }
}

/// Docker's network mode for [`Addressing::HostNetwork`].
const HOST_NETWORK_MODE: &str = "host";

fn restart_policy(policy: RestartPolicy) -> DockerRestart {
    let (name, retries) = match policy {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            Some(i64::from(max_retries)),
        ),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
    };
    DockerRestart {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    fn backend(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, Error> {
        let image = spec.image.to_string();
        self.ensure_image(&image).await?;
        let owner = spec
            .labels
            .get(labels::MANAGED_BY)
            .cloned()
            .unwrap_or_default();
        if let Some(network) = spec.addressing.network() {
            self.ensure_network(network, "bridge", &owner).await?;
        }
        self.ensure_volume(spec).await?;
        let port_key = format!("{}/tcp", spec.container_port);
        let (network_mode, port_bindings, networking_config) = match &spec.addressing {
            Addressing::NetworkName { network } | Addressing::NetworkIp { network } => (
                Some(network.clone()),
                None,
                Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings {
                            aliases: Some(vec![spec.name.clone()]),
                            ..Default::default()
                        },
                    )])),
                }),
            ),
            Addressing::HostPort { bind, port } => {
                let binding = PortBinding {
                    host_ip: Some(bind.to_string()),
                    host_port: Some(if *port == 0 {
                        String::new()
                    } else {
                        port.to_string()
                    }),
                };
                (
                    None,
                    Some(HashMap::from([(port_key.clone(), Some(vec![binding]))])),
                    None,
                )
            }
            // The host's network stack: no port to publish, the server binds its own.
            Addressing::HostNetwork { .. } => (Some(HOST_NETWORK_MODE.to_owned()), None, None),
        };
        let host_network = matches!(spec.addressing, Addressing::HostNetwork { .. });
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(spec.env.iter().map(crate::EnvVar::to_assignment).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!host_network).then(|| vec![port_key]),
            host_config: Some(HostConfig {
                memory: Some(to_i64(spec.resources.memory_bytes)),
                nano_cpus: Some(to_i64(spec.resources.nano_cpus)),
                pids_limit: Some(to_i64(spec.resources.pids_limit)),
                restart_policy: Some(restart_policy(spec.restart)),
                mounts: spec.volume.as_ref().map(|v| {
                    vec![Mount {
                        target: Some(v.target.clone()),
                        source: Some(v.name.clone()),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    }]
                }),
                network_mode,
                port_bindings,
                ..Default::default()
            }),
            networking_config,
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => {
                debug!(container = %spec.name, id = %created.id, "created");
                Ok(ContainerId::new(created.id))
            }
            Err(e) => Err(match docker_error("create container", e) {
                Error::Conflict { .. } => Error::Conflict {
                    name: spec.name.clone(),
                },
                // A 404 is the image only if the image is really gone (removed since the check
                // above); a network or volume that vanished is reported as it is.
                Error::NotFound { id: message, .. } => {
                    let present = self.has_image(&spec.image).await?;
                    create_not_found(present, image, message)
                }
                other => other,
            }),
        }
    }

    async fn start(&self, id: &ContainerId) -> Result<(), Error> {
        match self.docker.start_container(id.as_str(), None).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(match docker_error("start container", e) {
                Error::Runtime { message, .. } | Error::Conflict { name: message } => {
                    Error::StartFailed {
                        container: id.to_string(),
                        reason: message,
                    }
                }
                Error::NotFound { .. } => Error::NotFound {
                    kind: "container",
                    id: id.to_string(),
                },
                other => other,
            }),
        }
    }

    async fn inspect(&self, id: &ContainerId) -> Result<ContainerInfo, Error> {
        match self.docker.inspect_container(id.as_str(), None).await {
            Ok(response) => Ok(info_from_inspect(response)),
            Err(e) => Err(not_found_as(docker_error("inspect container", e), id)),
        }
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<(), Error> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(t).build();
        match self.docker.stop_container(id.as_str(), Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(not_found_as(docker_error("stop container", e), id)),
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        match self
            .docker
            .remove_container(id.as_str(), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match docker_error("remove container", e) {
                // Already gone, or already being removed.
                Error::NotFound { .. } | Error::Conflict { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<ContainerInfo>, Error> {
        let filters = label_filters(selector);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error("list containers", e))?;
        Ok(summaries.into_iter().map(info_from_summary).collect())
    }

    async fn logs_tail(&self, id: &ContainerId, lines: usize) -> Result<Vec<String>, Error> {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<_> = self
            .docker
            .logs(id.as_str(), Some(options))
            .try_collect()
            .await
            .map_err(|e| not_found_as(docker_error("read logs", e), id))?;
        Ok(last_lines(&chunks, lines))
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats, Error> {
        let options = StatsOptionsBuilder::new().stream(false).build();
        let mut stream = self.docker.stats(id.as_str(), Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(stats_from_response(&response)),
            Some(Err(e)) => Err(not_found_as(docker_error("read stats", e), id)),
            None => Err(Error::Runtime {
                operation: "read stats",
                message: "empty stats stream".into(),
            }),
        }
    }

    async fn events(
        &self,
        selector: &LabelSelector,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, Error>>, Error> {
        let mut filters = label_filters(selector);
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        // `since` now: the stream connects when first polled, and events between this call and
        // that moment must not be lost.
        let options = EventsOptionsBuilder::new()
            .since(&now_since())
            .filters(&filters)
            .build();
        Ok(runtime_events(self.docker.events(Some(options))))
    }

    async fn has_image(&self, image: &crate::ImageRef) -> Result<bool, Error> {
        match self.ensure_image(&image.to_string()).await {
            Ok(()) => Ok(true),
            Err(Error::ImageMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_volumes(&self, selector: &LabelSelector) -> Result<Vec<VolumeInfo>, Error> {
        let filters = label_filters(selector);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let response = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| docker_error("list volumes", e))?;
        Ok(response
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let options = RemoveVolumeOptionsBuilder::new().force(false).build();
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => match docker_error("remove volume", e) {
                Error::NotFound { .. } => Ok(()),
                Error::Conflict { .. } => Err(Error::Conflict {
                    name: name.to_owned(),
                }),
                other => Err(other),
            },
        }
    }
}

/// Docker's event stream as the runtime's: container events translated (others skipped), and a
/// stream error yielded as an `Err` item that ends the stream.
pub(crate) fn runtime_events<S>(docker_events: S) -> BoxStream<'static, Result<RuntimeEvent, Error>>
where
    S: futures::Stream<Item = Result<bollard::models::EventMessage, bollard::errors::Error>>
        + Send
        + 'static,
{
    docker_events
        .scan(false, |failed, item| {
            let next = if *failed {
                None
            } else {
                match item {
                    Ok(message) => Some(event_from_message(message).map(Ok)),
                    Err(e) => {
                        *failed = true;
                        Some(Some(Err(docker_error("watch events", e))))
                    }
                }
            };
            futures::future::ready(next)
        })
        .filter_map(futures::future::ready)
        .boxed()
}

/// What a 404 from `create container` means: the image when it is absent, else whatever the
/// daemon named (a network or volume removed meanwhile).
fn create_not_found(image_present: bool, image: String, message: String) -> Error {
    if image_present {
        Error::Runtime {
            operation: "create container",
            message,
        }
    } else {
        Error::ImageMissing { image }
    }
}

/// The current time as Docker's `since` parameter (`<seconds>.<nanoseconds>`).
pub(crate) fn now_since() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

fn not_found_as(e: Error, id: &ContainerId) -> Error {
    match e {
        Error::NotFound { .. } => Error::NotFound {
            kind: "container",
            id: id.to_string(),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_from_create_is_image_missing_only_when_the_image_is_absent() {
        let network_gone =
            create_not_found(true, "img:1".into(), "network cp-net not found".into());
        assert!(
            matches!(&network_gone, Error::Runtime { message, .. } if message.contains("network")),
            "{network_gone:?}"
        );
        assert!(matches!(
            create_not_found(false, "img:1".into(), "No such image: img:1".into()),
            Error::ImageMissing { image } if image == "img:1"
        ));
    }

    #[tokio::test]
    async fn an_event_stream_error_is_yielded_and_ends_the_stream() {
        let start = bollard::models::EventMessage {
            action: Some("start".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: None,
            }),
            ..Default::default()
        };
        let items = vec![
            Ok(start),
            Err(bollard::errors::Error::RequestTimeoutError),
            Ok(bollard::models::EventMessage::default()),
        ];
        let out: Vec<_> = runtime_events(futures::stream::iter(items)).collect().await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Ok(e) if e.id.as_str() == "abc"));
        assert!(matches!(&out[1], Err(Error::RuntimeUnavailable(m)) if m.contains("watch events")));
    }
}
