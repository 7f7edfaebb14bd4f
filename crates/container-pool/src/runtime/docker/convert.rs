//! Translating bollard's types and errors into the runtime's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse, ContainerSummary,
    ContainerSummaryStateEnum, EventMessage, HealthStatusEnum,
};
use url::Url;

use crate::runtime::{
    ContainerId, ContainerInfo, ContainerState, ContainerStats, HealthStatus, RuntimeEvent,
    RuntimeEventKind,
};
use crate::{Addressing, Error, LabelSelector, WAHA_PORT, labels};

/// Maps a bollard error: 404 → `NotFound`, 409 → `Conflict`, transport failures →
/// `RuntimeUnavailable`, anything else → `Runtime`.
pub(crate) fn docker_error(operation: &'static str, e: bollard::errors::Error) -> Error {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code: 404,
            message,
        } => Error::NotFound {
            kind: "object",
            id: message,
        },
        B::DockerResponseServerError {
            status_code: 409,
            message,
        } => Error::Conflict { name: message },
        B::DockerResponseServerError { message, .. } => Error::Runtime { operation, message },
        B::IOError { err } => Error::RuntimeUnavailable(format!("{operation}: {err}")),
        B::RequestTimeoutError => {
            Error::RuntimeUnavailable(format!("{operation}: request timed out"))
        }
        B::HyperResponseError { err } => Error::RuntimeUnavailable(format!("{operation}: {err}")),
        B::HyperLegacyError { err } => Error::RuntimeUnavailable(format!("{operation}: {err}")),
        B::SocketNotFoundError(path) => {
            Error::RuntimeUnavailable(format!("{operation}: no Docker socket at {path}"))
        }
        other => Error::Runtime {
            operation,
            message: other.to_string(),
        },
    }
}

/// `label=k=v` filters for the Docker API.
pub(crate) fn label_filters(selector: &LabelSelector) -> HashMap<String, Vec<String>> {
    let pairs = selector
        .pairs()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    HashMap::from([("label".to_owned(), pairs)])
}

fn container_port(labels: &BTreeMap<String, String>) -> u16 {
    labels
        .get(labels::PORT)
        .and_then(|p| p.parse().ok())
        .unwrap_or(WAHA_PORT)
}

/// Where a running container is reachable, from its addressing label (a host-network
/// container at its own address and port: nothing is published).
pub(crate) fn url_for(
    labels: &BTreeMap<String, String>,
    name: &str,
    published: &[(String, u16)],
    network_ips: &HashMap<String, String>,
) -> Option<Url> {
    let addressing = Addressing::from_label_value(labels.get(labels::ADDRESSING)?)?;
    let port = container_port(labels);
    let text = match addressing {
        Addressing::NetworkName { .. } => format!("http://{name}:{port}"),
        Addressing::NetworkIp { network } => {
            let ip = network_ips.get(&network).filter(|ip| !ip.is_empty())?;
            format!("http://{ip}:{port}")
        }
        Addressing::HostPort { bind, .. } => {
            let (host_ip, host_port) = published.iter().find(|(ip, _)| !ip.contains(':'))?;
            let host = if host_ip.is_empty() || host_ip == "0.0.0.0" {
                if bind.is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    bind.to_string()
                }
            } else {
                host_ip.clone()
            };
            format!("http://{host}:{host_port}")
        }
        // The server listens on the host itself; an unspecified address is reached on loopback.
        Addressing::HostNetwork { bind, port } => {
            let host = if bind.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                bind
            };
            format!("http://{}", SocketAddr::new(host, port))
        }
    };
    Url::parse(&text).ok()
}

pub(crate) fn info_from_inspect(r: ContainerInspectResponse) -> ContainerInfo {
    let labels: BTreeMap<String, String> = r
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let name = r
        .name
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let st = r.state.clone().unwrap_or_default();
    let state = match st.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Exited {
            exit_code: st.exit_code,
        },
    };
    let failing_streak = st
        .health
        .as_ref()
        .and_then(|h| h.failing_streak)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let health = match st.health {
        None => HealthStatus::None,
        Some(h) => match h.status {
            Some(HealthStatusEnum::STARTING) => HealthStatus::Starting,
            Some(HealthStatusEnum::HEALTHY) => HealthStatus::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => HealthStatus::Unhealthy {
                last_output: h
                    .log
                    .and_then(|l| l.last().and_then(|r| r.output.clone()))
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            },
            _ => HealthStatus::None,
        },
    };
    let port_key = format!("{}/tcp", container_port(&labels));
    let settings = r.network_settings.unwrap_or_default();
    let published: Vec<(String, u16)> = settings
        .ports
        .and_then(|mut p| p.remove(&port_key))
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|b| Some((b.host_ip.unwrap_or_default(), b.host_port?.parse().ok()?)))
        .collect();
    let ips: HashMap<String, String> = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(n, e)| (n, e.ip_address.unwrap_or_default()))
        .collect();
    let url = (state == ContainerState::Running)
        .then(|| url_for(&labels, &name, &published, &ips))
        .flatten();
    let started_once = st
        .started_at
        .as_deref()
        .is_some_and(|s| !s.starts_with("0001-"));
    ContainerInfo {
        id: ContainerId::new(r.id.unwrap_or_default()),
        name,
        image: r.config.and_then(|c| c.image).unwrap_or_default(),
        labels,
        exit_code: st
            .exit_code
            .filter(|_| started_once && state != ContainerState::Running),
        restart_count: r
            .restart_count
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        oom_killed: st.oom_killed.unwrap_or(false),
        health_failing_streak: failing_streak,
        state,
        health,
        url,
    }
}

/// The exit code in a status such as `Exited (137) 3 seconds ago`.
fn exit_code_in(status: &str) -> Option<i64> {
    let open = status.find('(')?;
    let close = status[open..].find(')')? + open;
    status[open + 1..close].parse().ok()
}

fn health_in(status: &str) -> HealthStatus {
    if status.contains("(healthy)") {
        HealthStatus::Healthy
    } else if status.contains("(unhealthy)") {
        HealthStatus::Unhealthy {
            last_output: String::new(),
        }
    } else if status.contains("(health: starting)") {
        HealthStatus::Starting
    } else {
        HealthStatus::None
    }
}

pub(crate) fn info_from_summary(s: ContainerSummary) -> ContainerInfo {
    let labels: BTreeMap<String, String> = s.labels.unwrap_or_default().into_iter().collect();
    let name = s
        .names
        .and_then(|n| n.into_iter().next())
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let status = s.status.unwrap_or_default();
    let state = match s.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Exited {
            exit_code: exit_code_in(&status),
        },
    };
    let port = container_port(&labels);
    let published: Vec<(String, u16)> = s
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.private_port == port)
        .filter_map(|p| Some((p.ip.unwrap_or_default(), p.public_port?)))
        .collect();
    let ips: HashMap<String, String> = s
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, e)| (n, e.ip_address.unwrap_or_default()))
        .collect();
    let health = if state == ContainerState::Running {
        health_in(&status)
    } else {
        HealthStatus::None
    };
    let url = (state == ContainerState::Running)
        .then(|| url_for(&labels, &name, &published, &ips))
        .flatten();
    let exit_code = match &state {
        ContainerState::Exited { exit_code } => *exit_code,
        _ => None,
    };
    ContainerInfo {
        id: ContainerId::new(s.id.unwrap_or_default()),
        name,
        image: s.image.unwrap_or_default(),
        labels,
        state,
        health,
        url,
        exit_code,
        // A listing does not carry restarts, OOM kills or the health streak: `inspect` does.
        ..ContainerInfo::default()
    }
}

pub(crate) fn stats_from_response(r: &ContainerStatsResponse) -> ContainerStats {
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
    };
    let system = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref().and_then(|c| c.system_cpu_usage)
    };
    let cpu_percent = match (
        total(&r.cpu_stats),
        total(&r.precpu_stats),
        system(&r.cpu_stats),
        system(&r.precpu_stats),
    ) {
        (Some(t), Some(pt), Some(s), Some(ps)) if s > ps && t >= pt => {
            let cpus = r
                .cpu_stats
                .as_ref()
                .and_then(|c| c.online_cpus)
                .unwrap_or(1)
                .max(1);
            Some((t - pt) as f64 / (s - ps) as f64 * f64::from(cpus) * 100.0)
        }
        _ => None,
    };
    ContainerStats {
        cpu_percent,
        memory_bytes: r.memory_stats.as_ref().and_then(|m| m.usage),
        memory_limit_bytes: r.memory_stats.as_ref().and_then(|m| m.limit),
        pids: r.pids_stats.as_ref().and_then(|p| p.current),
    }
}

pub(crate) fn event_from_message(m: EventMessage) -> Option<RuntimeEvent> {
    let actor = m.actor?;
    let id = ContainerId::new(actor.id?);
    let action = m.action?;
    let kind = match action.as_str() {
        "create" => RuntimeEventKind::Created,
        "start" => RuntimeEventKind::Started,
        "die" => RuntimeEventKind::Died {
            exit_code: actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("exitCode"))
                .and_then(|c| c.parse().ok()),
        },
        "destroy" => RuntimeEventKind::Removed,
        "health_status: healthy" => RuntimeEventKind::Health(HealthStatus::Healthy),
        "health_status: unhealthy" => RuntimeEventKind::Health(HealthStatus::Unhealthy {
            last_output: String::new(),
        }),
        "health_status: starting" => RuntimeEventKind::Health(HealthStatus::Starting),
        _ => return None,
    };
    Some(RuntimeEvent { id, kind })
}

/// The last `lines` lines of a container's or service's log chunks (stdout and stderr, in the
/// order the daemon sent them).
pub(crate) fn last_lines(chunks: &[bollard::container::LogOutput], lines: usize) -> Vec<String> {
    let text: String = chunks.iter().map(ToString::to_string).collect();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::container::LogOutput;

    #[test]
    fn last_lines_joins_chunks_before_taking_the_tail() {
        // The daemon splits output into frames that need not end at a line break.
        let chunks = vec![
            LogOutput::StdOut {
                message: "one\ntw".into(),
            },
            LogOutput::StdErr {
                message: "o\nthree\n".into(),
            },
            LogOutput::StdOut {
                message: "four".into(),
            },
        ];
        assert_eq!(last_lines(&chunks, 2), ["three", "four"]);
        assert_eq!(last_lines(&chunks, 3), ["two", "three", "four"]);
        assert_eq!(last_lines(&chunks, 10), ["one", "two", "three", "four"]);
        assert!(last_lines(&chunks, 0).is_empty());
        assert!(last_lines(&[], 5).is_empty());
    }

    #[test]
    fn parses_summary_statuses() {
        assert_eq!(exit_code_in("Exited (137) 3 seconds ago"), Some(137));
        assert_eq!(exit_code_in("Created"), None);
        assert_eq!(
            health_in("Up 2 seconds (health: starting)"),
            HealthStatus::Starting
        );
        assert_eq!(health_in("Up 1 minute (healthy)"), HealthStatus::Healthy);
        assert!(matches!(
            health_in("Up 1 minute (unhealthy)"),
            HealthStatus::Unhealthy { .. }
        ));
        assert_eq!(health_in("Up 1 minute"), HealthStatus::None);
    }

    #[test]
    fn builds_urls_per_addressing_mode() {
        let mut l = BTreeMap::from([(labels::ADDRESSING.to_owned(), "name:chipfleet".to_owned())]);
        assert_eq!(
            url_for(&l, "cf-a-0", &[], &HashMap::new())
                .unwrap()
                .as_str(),
            "http://cf-a-0:3000/"
        );
        l.insert(labels::ADDRESSING.to_owned(), "ip:chipfleet".to_owned());
        let ips = HashMap::from([("chipfleet".to_owned(), "172.20.0.5".to_owned())]);
        assert_eq!(
            url_for(&l, "x", &[], &ips).unwrap().as_str(),
            "http://172.20.0.5:3000/"
        );
        assert_eq!(url_for(&l, "x", &[], &HashMap::new()), None);
        l.insert(labels::ADDRESSING.to_owned(), "host:127.0.0.1:0".to_owned());
        let published = vec![("::".to_owned(), 4001), ("127.0.0.1".to_owned(), 4000)];
        assert_eq!(
            url_for(&l, "x", &published, &HashMap::new())
                .unwrap()
                .as_str(),
            "http://127.0.0.1:4000/"
        );
        l.insert(labels::ADDRESSING.to_owned(), "host:0.0.0.0:0".to_owned());
        let any = vec![("0.0.0.0".to_owned(), 4002)];
        assert_eq!(
            url_for(&l, "x", &any, &HashMap::new()).unwrap().as_str(),
            "http://127.0.0.1:4002/"
        );
        // Host network: the label's own address and port, whatever Docker reports.
        for (label, url) in [
            ("hostnet:127.0.0.1:4100", "http://127.0.0.1:4100/"),
            ("hostnet:0.0.0.0:4101", "http://127.0.0.1:4101/"),
            ("hostnet:::1:4102", "http://[::1]:4102/"),
        ] {
            l.insert(labels::ADDRESSING.to_owned(), label.to_owned());
            l.insert(labels::PORT.to_owned(), "4100".to_owned());
            assert_eq!(
                url_for(&l, "x", &published, &ips).unwrap().as_str(),
                url,
                "{label}"
            );
            let parsed = Addressing::from_label_value(label).unwrap();
            assert!(matches!(parsed, Addressing::HostNetwork { .. }), "{label}");
            assert_eq!(parsed.label_value(), label);
            assert_eq!(parsed.network(), None);
        }
    }
}
