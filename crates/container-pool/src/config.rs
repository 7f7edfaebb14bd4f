//! The pool's configuration: plain data with documented defaults, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Engine, Error, ImageRef, KeyFingerprintSecret, Placement, PortAllocationStore, RestartPolicy,
    SizingPolicy,
};

/// How the pool addresses tenant containers.
#[derive(Clone)]
pub enum AddressingPolicy {
    /// By container name on a user-defined network (the default, network `chipfleet`): no host
    /// ports, no cap. The host application must be attached to the same network.
    NetworkName {
        /// The network (created when missing).
        network: String,
    },
    /// By IP address on a user-defined network: for a host application on the Docker host
    /// itself (Linux routes to bridge networks) that cannot resolve container names.
    NetworkIp {
        /// The network (created when missing).
        network: String,
    },
    /// Through published host ports.
    HostPort {
        /// The host address ports are bound to (default `127.0.0.1`).
        bind: IpAddr,
        /// Which host ports.
        ports: HostPorts,
    },
}

/// Which host ports [`AddressingPolicy::HostPort`] uses.
#[derive(Clone)]
pub enum HostPorts {
    /// A free port chosen by the runtime at each creation (tests, single-use hosts).
    Ephemeral,
    /// One port per container from `range`, kept in `store` so a re-created container gets the
    /// same port.
    Range {
        /// The ports the pool may use.
        range: RangeInclusive<u16>,
        /// Where allocations persist.
        store: Arc<dyn PortAllocationStore>,
    },
}

impl fmt::Debug for HostPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ephemeral => f.write_str("Ephemeral"),
            Self::Range { range, .. } => f
                .debug_struct("Range")
                .field("range", range)
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for AddressingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NetworkName { network } => f
                .debug_struct("NetworkName")
                .field("network", network)
                .finish(),
            Self::NetworkIp { network } => f
                .debug_struct("NetworkIp")
                .field("network", network)
                .finish(),
            Self::HostPort { bind, ports } => f
                .debug_struct("HostPort")
                .field("bind", bind)
                .field("ports", ports)
                .finish(),
        }
    }
}

impl AddressingPolicy {
    /// Published ports on `127.0.0.1`, chosen by the runtime.
    pub fn loopback_ephemeral() -> Self {
        Self::HostPort {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: HostPorts::Ephemeral,
        }
    }
}

/// What idle reaping does to a container that ran no chip for [`PoolConfig::idle_ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleAction {
    /// Stop it (the default); the next `ensure` brings it back.
    #[default]
    Stop,
    /// Remove it (its volume stays).
    Remove,
}

/// How often `WAHA_AUTO_START_DELAY_SECONDS` delays session restarts after a container start,
/// so that containers restarted together (a host reboot) do not reconnect every session at once.
///
/// Each container gets `base` plus a share of `spread` derived from its name (stable, so it is
/// part of the spec hash without causing drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoStartStagger {
    /// The delay every container waits at least.
    pub base: Duration,
    /// The extra delay, spread across containers.
    pub spread: Duration,
}

impl Default for AutoStartStagger {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(0),
            spread: Duration::from_secs(30),
        }
    }
}

/// Everything the pool needs to know, with defaults from [`PoolConfig::new`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The value of the managed-by label: the pool only ever touches containers carrying it.
    /// Default `chipfleet`. Give each deployment (and each test run) its own.
    pub managed_by: String,
    /// Prefix of container and volume names. Default `chipfleet`.
    pub name_prefix: String,
    /// The WAHA image.
    pub image: ImageRef,
    /// The WhatsApp engine (default NOWEB).
    pub engine: Engine,
    /// Sessions (chips) per container, the capacity cap. Default 10.
    pub sessions_per_container: u32,
    /// Limits by engine and sessions. Default: WAHA's sizing guide.
    pub sizing: SizingPolicy,
    /// How containers are addressed. Default: by name on network `chipfleet`.
    pub addressing: AddressingPolicy,
    /// Restart policy. Default `unless-stopped`.
    pub restart: RestartPolicy,
    /// One deadline for a container to pass every readiness check. Default 180 s: real WAHA
    /// containers have needed more than 60 s.
    pub startup_deadline: Duration,
    /// Time between readiness polls. Default 100 ms.
    pub poll_interval: Duration,
    /// Time limit of one HTTP probe (further capped by the time left). Default 2 s.
    pub probe_timeout: Duration,
    /// Session auto-start stagger.
    pub auto_start: AutoStartStagger,
    /// Extra plain environment variables for every container (not secrets).
    pub extra_env: Vec<(String, String)>,
    /// Whether each tenant slot gets a named volume for WAHA's session state. Default true.
    pub volumes: bool,
    /// Grace period of a stop before the process is killed. Default 10 s.
    pub stop_grace: Duration,
    /// How many log lines an [`Error::Exited`] carries. Default 20.
    pub exit_log_lines: usize,
    /// Idle time after which [`reap_idle`](crate::TenantPool::reap_idle) acts. Default 30 min.
    pub idle_ttl: Duration,
    /// What idle reaping does. Default: stop.
    pub idle_action: IdleAction,
    /// The HMAC secret of the key-fingerprint label. Default `None`: each pool draws a random
    /// one (see [`KeyFingerprintSecret`] for why a deployment should set a shared one).
    pub key_fingerprint_secret: Option<KeyFingerprintSecret>,
}

impl PoolConfig {
    /// Defaults for `image`, as documented on each field.
    pub fn new(image: ImageRef) -> Self {
        Self {
            managed_by: "chipfleet".into(),
            name_prefix: "chipfleet".into(),
            image,
            engine: Engine::default(),
            sessions_per_container: 10,
            sizing: SizingPolicy::default(),
            addressing: AddressingPolicy::NetworkName {
                network: "chipfleet".into(),
            },
            restart: RestartPolicy::default(),
            startup_deadline: Duration::from_secs(180),
            poll_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(2),
            auto_start: AutoStartStagger::default(),
            extra_env: Vec::new(),
            volumes: true,
            stop_grace: Duration::from_secs(10),
            exit_log_lines: 20,
            idle_ttl: Duration::from_secs(30 * 60),
            idle_action: IdleAction::default(),
            key_fingerprint_secret: None,
        }
    }

    /// Checks the values that have no meaningful zero or empty form.
    pub fn validate(&self) -> Result<Placement, Error> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !name_ok(&self.name_prefix) {
            return Err(Error::InvalidConfig(format!(
                "name_prefix `{}` must be 1-32 characters of a-z, 0-9 and -",
                self.name_prefix
            )));
        }
        if self.managed_by.is_empty() {
            return Err(Error::InvalidConfig("managed_by must not be empty".into()));
        }
        if self.startup_deadline.is_zero()
            || self.poll_interval.is_zero()
            || self.probe_timeout.is_zero()
        {
            return Err(Error::InvalidConfig(
                "startup_deadline, poll_interval and probe_timeout must be positive".into(),
            ));
        }
        if let AddressingPolicy::HostPort {
            ports: HostPorts::Range { range, .. },
            ..
        } = &self.addressing
            && (range.is_empty() || *range.start() == 0)
        {
            return Err(Error::InvalidConfig(format!(
                "invalid host port range {range:?}"
            )));
        }
        Placement::new(self.sessions_per_container)
    }
}
