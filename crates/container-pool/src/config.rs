//! The pool's configuration: plain data with documented defaults, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use fleet_vocab::{Clock, SystemClock};

use crate::{
    Engine, EnvVar, Error, ImageRef, KeyFingerprintSecret, Placement, PortAllocationStore,
    RESERVED_ENV_NAMES, RestartPolicy, SizingPolicy,
};

/// How the pool addresses tenant containers.
///
/// Which one suits where (see `docs/container-pool.md`):
/// - [`NetworkName`](Self::NetworkName): production on one host, the host application in a
///   container on the same network; no port cap.
/// - [`NetworkIp`](Self::NetworkIp) or [`HostPort`](Self::HostPort): a host application that
///   runs outside Docker.
/// - [`HostNetwork`](Self::HostNetwork): tests and single-host setups whose containers must
///   reach services on the host's loopback (a webhook receiver on `127.0.0.1`); no network
///   isolation between containers.
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
        /// The host address ports are bound to (default `127.0.0.1`); an IPv4 address
        /// ([`PoolConfig::validate`] refuses an IPv6 one).
        bind: IpAddr,
        /// Which host ports.
        ports: HostPorts,
    },
    /// On the host's network (Docker's `host` network, no network namespace of its own): each
    /// container's server listens on `bind` at its own port from `range`, allocated like
    /// [`HostPorts::Range`] (kept in `store`, so a re-created container keeps it; ports
    /// another process already listens on are skipped). The container shares the host's
    /// loopback, so its webhooks reach a receiver on `127.0.0.1`; the pool reaches it at
    /// `http://<bind>:<port>` (`127.0.0.1` when `bind` is unspecified).
    ///
    /// The port and address reach the server through the environment: `PORT` and
    /// `WHATSAPP_API_PORT` (WAHA reads either) and `SIM_HOST` (the `waha-sim` image's listening
    /// address; WAHA documents no such variable, so assume a real WAHA container listens on
    /// every interface: its port is then open on all the host's addresses, guarded by its API
    /// key only).
    /// [`PoolConfig::validate`] rejects these names in [`extra_env`](PoolConfig::extra_env).
    ///
    /// For tests and single-host setups only: containers are not isolated from each other or
    /// from the host's services. Not supported by the Swarm runtime
    /// ([`Error::InvalidConfig`] from `create`).
    HostNetwork {
        /// The address each server listens on (`127.0.0.1` from
        /// [`loopback_host_network`](AddressingPolicy::loopback_host_network)); an IPv4
        /// address ([`PoolConfig::validate`] refuses an IPv6 one).
        bind: IpAddr,
        /// The ports the pool may use.
        range: RangeInclusive<u16>,
        /// Where allocations persist.
        store: Arc<dyn PortAllocationStore>,
    },
}

/// The variables that tell a host-network container its port (WAHA reads `WHATSAPP_API_PORT`
/// and `PORT`, the simulator `PORT`).
pub(crate) const HOST_NETWORK_PORT_VARS: [&str; 2] = ["PORT", "WHATSAPP_API_PORT"];

/// The variable that tells the `waha-sim` image the address to listen on.
pub(crate) const HOST_NETWORK_BIND_VAR: &str = "SIM_HOST";

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
            Self::HostNetwork { bind, range, .. } => f
                .debug_struct("HostNetwork")
                .field("bind", bind)
                .field("range", range)
                .finish_non_exhaustive(),
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

    /// [`HostNetwork`](Self::HostNetwork) with every server listening on `127.0.0.1`, on a port
    /// from `range` kept in `store`.
    pub fn loopback_host_network(
        range: RangeInclusive<u16>,
        store: Arc<dyn PortAllocationStore>,
    ) -> Self {
        Self::HostNetwork {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            range,
            store,
        }
    }

    /// The range and store of the modes that allocate host ports from one
    /// ([`HostPorts::Range`], [`HostNetwork`](Self::HostNetwork)).
    pub(crate) fn port_allocation(
        &self,
    ) -> Option<(&RangeInclusive<u16>, &Arc<dyn PortAllocationStore>)> {
        match self {
            Self::HostPort {
                ports: HostPorts::Range { range, store },
                ..
            }
            | Self::HostNetwork { range, store, .. } => Some((range, store)),
            Self::HostPort {
                ports: HostPorts::Ephemeral,
                ..
            }
            | Self::NetworkName { .. }
            | Self::NetworkIp { .. } => None,
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
    /// Extra environment variables for every container: [`EnvVar::plain`] for ordinary values,
    /// [`EnvVar::secret`] for secrets (their `Debug` prints `<redacted>`, and they are
    /// replaced by `<redacted>` in the container output the pool reports). Plain values are
    /// part of the spec hash, so changing one is drift; a secret's name is, its value is not
    /// (re-create the containers, e.g. with [`remove_tenant`](crate::TenantPool::remove_tenant),
    /// to roll a new secret value out). [`validate`](Self::validate) rejects empty names, names
    /// with `=` or NUL, values with NUL, a name given twice and the
    /// [reserved names](crate::RESERVED_ENV_NAMES).
    pub extra_env: Vec<EnvVar>,
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
    /// The clock idle times are measured with (the workspace's one [`Clock`]). Default
    /// [`SystemClock`]; tests inject a `ManualClock` to reach the idle TTL without sleeping.
    pub clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
        }
    }

    /// Checks the values that have no meaningful zero or empty form, and those that cannot
    /// work: a name prefix that is not a valid start of a container name, an empty network
    /// name, an IPv6 host bind address, an empty host port range or one starting at 0, a bad or reserved
    /// [`extra_env`](Self::extra_env) variable (with [`AddressingPolicy::HostNetwork`] also the
    /// variables that carry its port and address), limits too large for a container runtime
    /// (see [`SizingPolicy::try_resources`]) and an auto-start stagger whose `base + spread`
    /// overflows. All are [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<Placement, Error> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !name_ok(&self.name_prefix) {
            return Err(Error::InvalidConfig(format!(
                "name_prefix `{}` must be 1-32 characters of a-z, 0-9 and -, not starting with -",
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
        if let AddressingPolicy::NetworkName { network } | AddressingPolicy::NetworkIp { network } =
            &self.addressing
            && network.is_empty()
        {
            return Err(Error::InvalidConfig(
                "the addressing network name must not be empty".into(),
            ));
        }
        if let AddressingPolicy::HostPort { bind, .. } | AddressingPolicy::HostNetwork { bind, .. } =
            &self.addressing
            && bind.is_ipv6()
        {
            return Err(Error::InvalidConfig(format!(
                "the host bind address `{bind}` is IPv6, which host-port and host-network addressing do not support (the Docker runtime addresses a container by its IPv4 port binding, and the waha-sim image's health check probes 127.0.0.1): bind 127.0.0.1 (or 0.0.0.0), or use network addressing"
            )));
        }
        if let Some((range, _)) = self.addressing.port_allocation()
            && (range.is_empty() || *range.start() == 0)
        {
            return Err(Error::InvalidConfig(format!(
                "invalid host port range {range:?}"
            )));
        }
        validate_extra_env(&self.extra_env)?;
        if matches!(self.addressing, AddressingPolicy::HostNetwork { .. })
            && let Some(var) = self.extra_env.iter().find(|var| {
                HOST_NETWORK_PORT_VARS.contains(&var.name.as_str())
                    || var.name == HOST_NETWORK_BIND_VAR
            })
        {
            return Err(Error::InvalidConfig(format!(
                "extra_env must not set `{}` with host-network addressing: the pool sets {} and {} to the container's port and address",
                var.name,
                HOST_NETWORK_PORT_VARS.join(", "),
                HOST_NETWORK_BIND_VAR
            )));
        }
        self.sizing
            .try_resources(self.engine, self.sessions_per_container)?;
        self.auto_start.max_delay_secs()?;
        Placement::new(self.sessions_per_container)
    }
}

impl AutoStartStagger {
    /// `base + spread` in whole seconds, the longest delay a container can get;
    /// [`Error::InvalidConfig`] when it does not fit in a `u64`.
    pub(crate) fn max_delay_secs(&self) -> Result<u64, Error> {
        self.base
            .as_secs()
            .checked_add(self.spread.as_secs())
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "auto_start base {:?} + spread {:?} is too long",
                    self.base, self.spread
                ))
            })
    }
}

fn validate_extra_env(extra_env: &[EnvVar]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for var in extra_env {
        var.validate()?;
        if RESERVED_ENV_NAMES.contains(&var.name.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "extra_env must not set `{}`: the pool sets it, or it would replace or disable the tenant's API key (reserved: {})",
                var.name,
                RESERVED_ENV_NAMES.join(", ")
            )));
        }
        if !seen.insert(var.name.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "extra_env sets `{}` twice",
                var.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PoolConfig {
        PoolConfig::new(ImageRef::parse("chipfleet/waha-sim:dev").unwrap())
    }

    fn invalid(config: &PoolConfig) -> String {
        match config.validate() {
            Err(Error::InvalidConfig(msg)) => msg,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn rejects_a_name_prefix_starting_with_a_dash_and_empty_network_names() {
        let mut c = config();
        c.name_prefix = "-cp".into();
        assert!(invalid(&c).contains("name_prefix"));
        for addressing in [
            AddressingPolicy::NetworkName {
                network: String::new(),
            },
            AddressingPolicy::NetworkIp {
                network: String::new(),
            },
        ] {
            let mut c = config();
            c.addressing = addressing;
            assert!(invalid(&c).contains("network"));
        }
    }

    #[test]
    fn rejects_bad_duplicate_and_reserved_extra_env_without_quoting_secrets() {
        let bad = [
            EnvVar::plain("", "x"),
            EnvVar::plain("A=B", "x"),
            EnvVar::plain("A\0B", "x"),
            EnvVar::plain("PLAIN", "nul\0inside"),
            EnvVar::secret("TOKEN", "secret-value-with\0nul"),
        ];
        for var in bad {
            let mut c = config();
            c.extra_env = vec![var];
            assert!(!invalid(&c).contains("secret-value"));
        }
        for name in RESERVED_ENV_NAMES {
            let mut c = config();
            c.extra_env = vec![EnvVar::secret(*name, "reserved-secret-value")];
            let msg = invalid(&c);
            assert!(msg.contains(name), "{msg}");
            assert!(!msg.contains("reserved-secret-value"), "{msg}");
        }
        for reserved in [
            "WAHA_API_KEY",
            "WHATSAPP_API_KEY",
            "WAHA_WORKER_ID",
            "WHATSAPP_DEFAULT_ENGINE",
            "WAHA_AUTO_START_DELAY_SECONDS",
        ] {
            assert!(RESERVED_ENV_NAMES.contains(&reserved), "{reserved}");
        }
        let mut c = config();
        c.extra_env = vec![EnvVar::plain("SAME", "1"), EnvVar::secret("SAME", "2")];
        assert!(invalid(&c).contains("twice"));
        c.extra_env = vec![
            EnvVar::plain("WAHA_LOG_LEVEL", "debug"),
            EnvVar::secret("WAHA_DASHBOARD_PASSWORD", "hunter2-dashboard"),
        ];
        c.validate().unwrap();
    }

    #[test]
    fn host_network_needs_a_usable_range_and_owns_its_listen_variables() {
        let store: Arc<dyn PortAllocationStore> = Arc::new(crate::InMemoryPortStore::new());
        let mut c = config();
        c.addressing = AddressingPolicy::loopback_host_network(4100..=4199, store.clone());
        c.validate().unwrap();
        let text = format!("{:?}", c.addressing);
        assert!(
            text.contains("HostNetwork") && text.contains("127.0.0.1"),
            "{text}"
        );
        #[allow(clippy::reversed_empty_ranges)]
        let bad_ranges = [0..=10, 10..=9];
        for range in bad_ranges {
            c.addressing = AddressingPolicy::loopback_host_network(range, store.clone());
            assert!(invalid(&c).contains("port range"));
        }
        c.addressing = AddressingPolicy::loopback_host_network(4100..=4199, store.clone());
        for name in ["PORT", "WHATSAPP_API_PORT", "SIM_HOST"] {
            c.extra_env = vec![EnvVar::plain(name, "1")];
            let msg = invalid(&c);
            assert!(msg.contains(name) && msg.contains("host-network"), "{msg}");
        }
        // Other modes leave them to the caller, as before.
        c.addressing = AddressingPolicy::loopback_ephemeral();
        c.extra_env = vec![EnvVar::plain("SIM_HOST", "127.0.0.1")];
        c.validate().unwrap();
    }

    #[test]
    fn an_ipv6_host_bind_address_is_refused_with_a_clear_message() {
        let store: Arc<dyn PortAllocationStore> = Arc::new(crate::InMemoryPortStore::new());
        for bind in ["::1", "::", "::ffff:127.0.0.1"] {
            let bind: IpAddr = bind.parse().unwrap();
            for addressing in [
                AddressingPolicy::HostPort {
                    bind,
                    ports: HostPorts::Ephemeral,
                },
                AddressingPolicy::HostPort {
                    bind,
                    ports: HostPorts::Range {
                        range: 4100..=4199,
                        store: store.clone(),
                    },
                },
                AddressingPolicy::HostNetwork {
                    bind,
                    range: 4100..=4199,
                    store: store.clone(),
                },
            ] {
                let mut c = config();
                c.addressing = addressing;
                let msg = invalid(&c);
                assert!(
                    msg.contains("IPv6") && msg.contains(&bind.to_string()),
                    "{msg}"
                );
            }
        }
        // IPv4 binds, loopback or every interface, are fine.
        for bind in ["127.0.0.1", "0.0.0.0"] {
            let mut c = config();
            c.addressing = AddressingPolicy::HostPort {
                bind: bind.parse().unwrap(),
                ports: HostPorts::Ephemeral,
            };
            c.validate().unwrap();
        }
    }

    #[test]
    fn secret_extra_env_values_are_redacted_in_debug_output() {
        let mut c = config();
        c.extra_env = vec![EnvVar::secret(
            "WAHA_DASHBOARD_PASSWORD",
            "hunter2-dashboard",
        )];
        let text = format!("{c:?}");
        assert!(text.contains("WAHA_DASHBOARD_PASSWORD"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn rejects_limits_and_staggers_that_overflow() {
        let mut c = config();
        c.sizing.pids_base = u64::MAX;
        assert!(invalid(&c).contains("too large"));
        let mut c = config();
        c.engine = Engine::Webjs;
        c.sizing.pids_per_session_webjs = u64::MAX / 2;
        assert!(invalid(&c).contains("too large"));
        let mut c = config();
        c.auto_start.base = Duration::from_secs(u64::MAX);
        assert!(invalid(&c).contains("auto_start"));
        // The longest stagger that fits is fine.
        let mut c = config();
        c.auto_start.spread = Duration::from_secs(u64::MAX);
        c.validate().unwrap();
    }
}
