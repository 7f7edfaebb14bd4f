//! Translating a [`ContainerSpec`] into a one-replica Swarm service.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, Limit, Mount, MountType, MountVolumeOptions, NetworkAttachmentConfig,
    ResourceObject, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use super::{Reservations, SwarmOptions};
use crate::{Addressing, ContainerSpec, RestartPolicy};

/// The label that keeps the image reference as the spec gave it, when the service runs the
/// image by its local id ([`SwarmOptions::run_local_image_id`]).
pub(super) const IMAGE_LABEL: &str = "io.chipfleet.swarm.image";

/// How long Swarm waits before restarting a task (Docker's own default is 5 s).
const RESTART_DELAY_NANOS: i64 = 1_000_000_000;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn restart_policy(policy: RestartPolicy) -> TaskSpecRestartPolicy {
    let (condition, max_attempts) = match policy {
        RestartPolicy::No => (TaskSpecRestartPolicyConditionEnum::NONE, None),
        RestartPolicy::OnFailure { max_retries } => (
            TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            (max_retries > 0).then_some(i64::from(max_retries)),
        ),
        // Swarm has no "unless stopped": a stop scales the service to 0, so `any` keeps the
        // same meaning (restart whatever ended the process, except an explicit stop).
        RestartPolicy::UnlessStopped | RestartPolicy::Always => {
            (TaskSpecRestartPolicyConditionEnum::ANY, None)
        }
    };
    TaskSpecRestartPolicy {
        condition: Some(condition),
        delay: Some(RESTART_DELAY_NANOS),
        max_attempts,
        ..Default::default()
    }
}

fn resources(spec: &ContainerSpec, reservations: Reservations) -> TaskSpecResources {
    let memory = to_i64(spec.resources.memory_bytes);
    let cpus = to_i64(spec.resources.nano_cpus);
    let reserved = match reservations {
        Reservations::None => None,
        Reservations::Memory => Some(ResourceObject {
            memory_bytes: Some(memory),
            ..Default::default()
        }),
        Reservations::MemoryAndCpu => Some(ResourceObject {
            memory_bytes: Some(memory),
            nano_cpus: Some(cpus),
            ..Default::default()
        }),
    };
    TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: Some(cpus),
            memory_bytes: Some(memory),
            pids: Some(to_i64(spec.resources.pids_limit)),
        }),
        reservations: reserved,
        ..Default::default()
    }
}

/// Network attachment (network addressing) or a host-mode published port (host-port
/// addressing). The ingress routing mesh is never used.
fn addressing(spec: &ContainerSpec) -> (Option<Vec<NetworkAttachmentConfig>>, EndpointSpec) {
    match &spec.addressing {
        Addressing::NetworkName { network } | Addressing::NetworkIp { network } => (
            Some(vec![NetworkAttachmentConfig {
                target: Some(network.clone()),
                aliases: Some(vec![spec.name.clone()]),
                ..Default::default()
            }]),
            EndpointSpec::default(),
        ),
        Addressing::HostPort { port, .. } => (
            None,
            EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(spec.container_port)),
                    // 0: the node picks a free port; the task's port status reports it.
                    published_port: (*port != 0).then_some(i64::from(*port)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ),
        // Refused by `SwarmRuntime::create` before a service is built.
        Addressing::HostNetwork { .. } => (None, EndpointSpec::default()),
    }
}

/// The service for `spec`, with 0 replicas (created, not started). `image` is what the task
/// runs (the spec's reference, or the local image id).
pub(super) fn service_spec(
    spec: &ContainerSpec,
    image: &str,
    options: &SwarmOptions,
) -> ServiceSpec {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(IMAGE_LABEL.to_owned(), spec.image.to_string());
    let (networks, endpoint_spec) = addressing(spec);
    let placement = (!options.constraints.is_empty()).then(|| TaskSpecPlacement {
        constraints: Some(options.constraints.clone()),
        ..Default::default()
    });
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                // Service labels are not copied to task containers: the container events the
                // event stream filters on need them on the container itself.
                labels: Some(labels),
                env: Some(spec.env.iter().map(crate::EnvVar::to_assignment).collect()),
                mounts: spec.volume.as_ref().map(|v| {
                    vec![Mount {
                        target: Some(v.target.clone()),
                        source: Some(v.name.clone()),
                        typ: Some(MountType::VOLUME),
                        // A node that does not have the volume yet creates it with these.
                        volume_options: Some(MountVolumeOptions {
                            labels: Some(spec.volume_labels().into_iter().collect()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            resources: Some(resources(spec, options.reservations)),
            restart_policy: Some(restart_policy(spec.restart)),
            placement,
            networks,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        endpoint_spec: Some(endpoint_spec),
        ..Default::default()
    }
}

/// The replica count of a replicated service.
pub(super) fn replicas(spec: &ServiceSpec) -> i64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
}

/// The named volumes a service mounts.
pub(super) fn mounted_volumes(spec: &ServiceSpec) -> impl Iterator<Item = &str> {
    spec.task_template
        .iter()
        .filter_map(|t| t.container_spec.as_ref())
        .filter_map(|c| c.mounts.as_ref())
        .flatten()
        .filter(|m| m.typ == Some(MountType::VOLUME))
        .filter_map(|m| m.source.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnvVar, ImageRef, Resources, VolumeMount, WAHA_PORT, labels};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "cf-acme-0".into(),
            image: ImageRef::parse("devlikeapro/waha:latest").unwrap(),
            env: vec![
                EnvVar::secret("WAHA_API_KEY", "sekrit-key-123"),
                EnvVar::plain("WHATSAPP_DEFAULT_ENGINE", "NOWEB"),
            ],
            labels: [
                (labels::MANAGED_BY.to_owned(), "cf".to_owned()),
                (labels::TENANT.to_owned(), "acme".to_owned()),
                (labels::SLOT.to_owned(), "0".to_owned()),
            ]
            .into_iter()
            .collect(),
            resources: Resources {
                memory_bytes: 512 << 20,
                nano_cpus: 500_000_000,
                pids_limit: 272,
            },
            volume: Some(VolumeMount {
                name: "cf-acme-0-sessions".into(),
                target: crate::WAHA_SESSIONS_DIR.into(),
            }),
            addressing: Addressing::HostPort {
                bind: "127.0.0.1".parse().unwrap(),
                port: 0,
            },
            container_port: WAHA_PORT,
            restart: RestartPolicy::UnlessStopped,
        }
    }

    #[test]
    fn a_spec_becomes_a_stopped_one_replica_service_with_everything_on_the_task() {
        let s = service_spec(&spec(), "devlikeapro/waha:latest", &SwarmOptions::default());
        assert_eq!(replicas(&s), 0);
        let task = s.task_template.clone().unwrap();
        let container = task.container_spec.unwrap();
        let on_container = container.labels.unwrap();
        for k in [
            labels::MANAGED_BY,
            labels::TENANT,
            labels::SLOT,
            IMAGE_LABEL,
        ] {
            assert!(on_container.contains_key(k), "{k} on the task container");
            assert!(
                s.labels.as_ref().unwrap().contains_key(k),
                "{k} on the service"
            );
        }
        let env = container.env.unwrap();
        assert!(env.contains(&"WAHA_API_KEY=sekrit-key-123".to_owned()));
        let mount = &container.mounts.unwrap()[0];
        assert_eq!(mount.source.as_deref(), Some("cf-acme-0-sessions"));
        assert_eq!(
            mount
                .volume_options
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap()[labels::TENANT],
            "acme"
        );
        let resources = task.resources.unwrap();
        let limits = resources.limits.unwrap();
        assert_eq!(limits.memory_bytes, Some(512 << 20));
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        assert_eq!(limits.pids, Some(272));
        let reserved = resources.reservations.unwrap();
        assert_eq!(reserved.memory_bytes, Some(512 << 20));
        assert_eq!(reserved.nano_cpus, None);
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::ANY)
        );
        assert!(task.placement.is_none());
        assert_eq!(
            mounted_volumes(&s).collect::<Vec<_>>(),
            ["cf-acme-0-sessions"]
        );
        let port = &s.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.target_port, Some(3000));
        assert_eq!(port.published_port, None);
    }

    #[test]
    fn network_addressing_attaches_with_the_name_as_alias_and_constraints_place_it() {
        let mut c = spec();
        c.addressing = Addressing::NetworkName {
            network: "chipfleet".into(),
        };
        c.restart = RestartPolicy::OnFailure { max_retries: 3 };
        let options = SwarmOptions {
            constraints: vec!["node.role==manager".into()],
            reservations: Reservations::None,
            ..Default::default()
        };
        let s = service_spec(&c, "img", &options);
        let task = s.task_template.unwrap();
        let net = &task.networks.unwrap()[0];
        assert_eq!(net.target.as_deref(), Some("chipfleet"));
        assert_eq!(net.aliases.clone().unwrap(), ["cf-acme-0"]);
        assert!(s.endpoint_spec.unwrap().ports.is_none());
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.role==manager"]
        );
        assert!(task.resources.unwrap().reservations.is_none());
        let restart = task.restart_policy.unwrap();
        assert_eq!(
            restart.condition,
            Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE)
        );
        assert_eq!(restart.max_attempts, Some(3));
        assert_eq!(task.container_spec.unwrap().image.as_deref(), Some("img"));
    }
}
