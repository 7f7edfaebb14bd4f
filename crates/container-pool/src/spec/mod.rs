//! What a runtime is asked to run: [`ContainerSpec`] and its parts.
//!
//! The pool builds specs from its [`PoolConfig`](crate::PoolConfig); runtimes only translate
//! them. A spec's [`hash`](ContainerSpec::spec_hash) is stored as a label, so spec drift (a new
//! image, new limits) is visible on a running container without reading its configuration.

mod env;
mod hash;
mod image;
mod sizing;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub(crate) use env::{API_KEY_VAR, AUTO_START_DELAY_VAR, ENGINE_VAR, WORKER_ID_VAR};
pub use env::{EnvValue, EnvVar, RESERVED_ENV_NAMES};
pub use image::ImageRef;
pub use sizing::{Engine, Resources, SizingPolicy, SizingRow};

/// Where the WAHA server inside the container listens.
pub const WAHA_PORT: u16 = 3000;

/// Where WAHA keeps its session state inside the container (the tenant volume's mount point).
pub const WAHA_SESSIONS_DIR: &str = "/app/.sessions";

/// Everything a runtime needs to create one tenant container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container (or service) name; unique on the host. The pool derives it from its name
    /// prefix, the tenant and the slot.
    pub name: String,
    /// The image to run.
    pub image: ImageRef,
    /// Environment variables, secrets included (their values never print).
    pub env: Vec<EnvVar>,
    /// Labels the pool finds its containers by (see [`labels`](crate::labels)).
    pub labels: BTreeMap<String, String>,
    /// Memory, CPU and process limits.
    pub resources: Resources,
    /// The tenant's named volume, mounted at [`WAHA_SESSIONS_DIR`].
    pub volume: Option<VolumeMount>,
    /// How the pool reaches the container's HTTP port.
    pub addressing: Addressing,
    /// The port WAHA listens on inside the container.
    pub container_port: u16,
    /// What the runtime does when the process exits.
    pub restart: RestartPolicy,
}

impl ContainerSpec {
    /// The labels its volume carries: those of [`labels::VOLUME_LABELS`](crate::labels::VOLUME_LABELS)
    /// that the container has. A runtime creates the volume with them, and mounts an existing
    /// volume only when it carries them all
    /// ([`check_volume_labels`](crate::labels::check_volume_labels)).
    pub fn volume_labels(&self) -> BTreeMap<String, String> {
        crate::labels::VOLUME_LABELS
            .iter()
            .filter_map(|key| {
                self.labels
                    .get(*key)
                    .map(|value| ((*key).to_owned(), value.clone()))
            })
            .collect()
    }

    /// The value of a plain (non-secret) environment variable.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_plain())
    }
}

/// A named volume and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeMount {
    /// Volume name; the pool uses one per tenant and slot so sessions survive re-creation.
    pub name: String,
    /// Mount point inside the container.
    pub target: String,
}

/// How the container's HTTP port is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// Attach to a user-defined network and address the container by its name
    /// (`http://<name>:3000`). The host application must be on the same network. No host port
    /// is used, so there is no port cap.
    NetworkName {
        /// The user-defined network (created when missing).
        network: String,
    },
    /// Attach to a user-defined network and address the container by its IP address there.
    /// For a host application running directly on the Docker host (Linux), which can route to
    /// bridge networks but cannot resolve container names.
    NetworkIp {
        /// The user-defined network (created when missing).
        network: String,
    },
    /// Publish the container port on the host (`http://<bind>:<port>`). For host applications
    /// that run outside Docker's networks.
    HostPort {
        /// The host address to bind, usually `127.0.0.1`.
        bind: IpAddr,
        /// The host port; `0` lets the runtime pick a free one.
        port: u16,
    },
    /// Run on the host's network stack (Docker's `host` network): the server itself listens on
    /// `bind:port` (`http://<bind>:<port>`; `127.0.0.1` when `bind` is unspecified), so it shares
    /// the host's loopback and reaches services there. No network isolation; not on Swarm.
    /// The pool sets [`container_port`](ContainerSpec::container_port) to `port` and tells the
    /// server its address through the environment.
    HostNetwork {
        /// The address the server listens on, usually `127.0.0.1`.
        bind: IpAddr,
        /// The port the server listens on (never 0: the pool allocates it).
        port: u16,
    },
}

impl Addressing {
    /// The short name stored in the addressing label.
    pub fn label_value(&self) -> String {
        match self {
            Self::NetworkName { network } => format!("name:{network}"),
            Self::NetworkIp { network } => format!("ip:{network}"),
            Self::HostPort { bind, port } => format!("host:{bind}:{port}"),
            Self::HostNetwork { bind, port } => format!("hostnet:{bind}:{port}"),
        }
    }

    /// Parses a value written by [`label_value`](Self::label_value).
    pub fn from_label_value(value: &str) -> Option<Self> {
        let (kind, rest) = value.split_once(':')?;
        match kind {
            "name" => Some(Self::NetworkName {
                network: rest.to_owned(),
            }),
            "ip" => Some(Self::NetworkIp {
                network: rest.to_owned(),
            }),
            "host" => {
                let (bind, port) = rest.rsplit_once(':')?;
                Some(Self::HostPort {
                    bind: bind.parse().ok()?,
                    port: port.parse().ok()?,
                })
            }
            "hostnet" => {
                let (bind, port) = rest.rsplit_once(':')?;
                Some(Self::HostNetwork {
                    bind: bind.parse().ok()?,
                    port: port.parse().ok()?,
                })
            }
            _ => None,
        }
    }

    /// The host port it takes: the published port of [`HostPort`](Self::HostPort) (`None` for
    /// `0`, the runtime's choice) or the listening port of [`HostNetwork`](Self::HostNetwork).
    pub fn host_port(&self) -> Option<u16> {
        match self {
            Self::HostPort { port, .. } | Self::HostNetwork { port, .. } => {
                (*port != 0).then_some(*port)
            }
            Self::NetworkName { .. } | Self::NetworkIp { .. } => None,
        }
    }

    /// The user-defined network this addressing attaches to, if any.
    pub fn network(&self) -> Option<&str> {
        match self {
            Self::NetworkName { network } | Self::NetworkIp { network } => Some(network),
            Self::HostPort { .. } | Self::HostNetwork { .. } => None,
        }
    }
}

/// What the runtime does when the container's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart after a failure (non-zero exit), at most this many times (0 = unlimited).
    OnFailure {
        /// Retry cap; 0 means no cap.
        max_retries: u32,
    },
    /// Restart unless someone stopped it (the default: survives daemon restarts, respects an
    /// idle stop).
    #[default]
    UnlessStopped,
    /// Always restart.
    Always,
}

impl RestartPolicy {
    /// Docker's name for the policy.
    pub fn docker_name(&self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure { .. } => "on-failure",
            Self::UnlessStopped => "unless-stopped",
            Self::Always => "always",
        }
    }
}
