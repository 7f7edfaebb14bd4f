//! The service's configuration, read from the environment ([`ServiceConfig::from_env`]).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `CHIPSERVICE_LISTEN` | `127.0.0.1:8080` | The address the HTTP service listens on (`host:port`; port 0 picks a free one). |
//! | `CHIPSERVICE_ADMIN_TOKEN` | **required** | The admin bearer token (tenant management): at least 32 printable ASCII characters, no spaces, e.g. `openssl rand -hex 32`. The service refuses to start without it; it is kept only as its SHA-256 hash and never logged. |
//! | `CHIPSERVICE_BACKEND` | `embedded` | The backend: `embedded` (in-process WAHA simulators, in-memory stores), `docker` or `swarm` (the [`Production`](crate::Production) backend: WAHA containers on Docker or Docker Swarm, every store in PostgreSQL; the variables below then apply). |
//! | `CHIPSERVICE_LOG` | `info` | The log filter (`tracing-subscriber`'s `EnvFilter` syntax, e.g. `info,session_supervisor=debug`). |
//! | `CHIPSERVICE_LOG_JSON` | `false` | `true` logs one JSON object per line; `false` plain text (to stderr, coloured only on a terminal). |
//! | `CHIPSERVICE_METRICS` | `true` | Whether a Prometheus recorder is installed and `/metrics` served. |
//! | `CHIPSERVICE_DRAIN_TIMEOUT_SECS` | `10` | On SIGTERM or ctrl-c: how long open connections get to finish before they are closed. |
//! | `CHIPSERVICE_EMBEDDED_TIME_SCALE` | `0.1` | The embedded simulators' time scale (`EmbeddedOptions::time_scale`: 0.1 makes WAHA's 60 s QR code last 6 s). |
//!
//!
//! With `CHIPSERVICE_BACKEND=docker` or `swarm` ([`ProductionConfig`]):
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `CHIPSERVICE_DATABASE_URL` | **required** | The owner role's PostgreSQL URL: runs the migrations, owns the tables, holds the tenant directory and the platform tables. Never logged. |
//! | `CHIPSERVICE_APP_DATABASE_URL` | **required** | The application role's URL (a role that owns nothing and cannot bypass row-level security): every tenant-scoped read and write. Never logged. |
//! | `CHIPSERVICE_DATABASE_POOL_SIZE` | `8` | The most connections of each of the three pools (owner, directory, application), 1 to 100; plus one LISTEN connection. |
//! | `CHIPSERVICE_WAHA_IMAGE` | **required** | The WAHA image (`name:tag` or `name@sha256:…`); it must be on the Docker host (nothing is pulled). |
//! | `CHIPSERVICE_WAHA_ENGINE` | `NOWEB` | `NOWEB`, `GOWS` or `WEBJS`. |
//! | `CHIPSERVICE_SESSIONS_PER_CONTAINER` | `10` | Chips per container, 1 to 500; the limits follow WAHA's sizing guide for the engine and this count. |
//! | `CHIPSERVICE_WAHA_STARTUP_DEADLINE_SECS` | `180` | How long a container gets to become ready, 1 to 3600. |
//! | `CHIPSERVICE_DOCKER_ADDRESSING` | `name` | `name` (by container name on the network: chip-service runs in a container on it), `ip` (by IP on the network: chip-service on the Docker host; Docker only), `host-network` (containers on the host's network, on 127.0.0.1; single host and tests; Docker only). |
//! | `CHIPSERVICE_DOCKER_NETWORK` | `chipfleet` | The network of `name` and `ip` (created, labelled, when missing; an overlay network on Swarm). |
//! | `CHIPSERVICE_HOST_PORTS` | `23000-23999` | The ports `host-network` gives containers. |
//! | `CHIPSERVICE_MANAGED_BY` | `chipfleet` | The managed-by label and name prefix of every container and volume (1 to 32 of `a-z0-9-`): the pool touches nothing else. |
//! | `CHIPSERVICE_WEBHOOK_BASE_URL` | **required** | Where the WAHA containers reach this service (`http(s)://host:port`, no credentials, query or fragment); WAHA posts to it plus `/webhooks/{tenant}`. Containers cannot reach the host's `127.0.0.1` unless `host-network`. |
//! | `CHIPSERVICE_PROXIES` | **required** | The proxy list in proxy-allocator's line format (one proxy per line; on one line, entries separated by `;`), or, when the value holds no `://`, the path of a file holding it. Never logged. |
//! | `CHIPSERVICE_PROXY_HEALTH` | `true` | Whether the supervisor checks each working chip's proxy (a tunnel to the target below). |
//! | `CHIPSERVICE_PROXY_HEALTH_TARGET` | `web.whatsapp.com:443` | The `host:port` the proxy-health checks tunnel to. |
//! | `CHIPSERVICE_MAX_CHIPS_PER_PROXY` | `3` | The most chips sharing one proxy endpoint. |
//! | `CHIPSERVICE_FINGERPRINT_SECRET` | unset: random per process | The key-fingerprint secret shared by every replica (at least 32 characters, e.g. `openssl rand -hex 32`). Never logged. |
//! | `CHIPSERVICE_OWNER_ID` | host name, pid and a random suffix | This replica's owner id (printable ASCII, no spaces, up to 128 characters); unique per process. |
//! | `CHIPSERVICE_SWARM_CONSTRAINTS` | none | Comma-separated placement constraints of the tenant services on Swarm (`node.labels.waha==true`). |
//!
//! Booleans accept `1`, `true`, `yes`, `on` and `0`, `false`, `no`, `off` (any case). A
//! refused value is a [`ConfigError`] naming the variable, never repeating a secret.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use container_pool::{Engine, ImageRef, KeyFingerprintSecret};
use tenant_isolation::pg::reexports::tokio_postgres;

use super::auth::AdminToken;
use crate::production::{
    ContainerAddressing, ProductionConfig, ProxyHealth, ProxyList, RuntimeKind,
};

/// The environment variables the service reads.
pub mod vars {
    /// The listen address.
    pub const LISTEN: &str = "CHIPSERVICE_LISTEN";
    /// The admin token (required).
    pub const ADMIN_TOKEN: &str = "CHIPSERVICE_ADMIN_TOKEN";
    /// The backend.
    pub const BACKEND: &str = "CHIPSERVICE_BACKEND";
    /// The log filter.
    pub const LOG: &str = "CHIPSERVICE_LOG";
    /// JSON logs.
    pub const LOG_JSON: &str = "CHIPSERVICE_LOG_JSON";
    /// The Prometheus recorder and `/metrics`.
    pub const METRICS: &str = "CHIPSERVICE_METRICS";
    /// The drain timeout on shutdown, in seconds.
    pub const DRAIN_TIMEOUT_SECS: &str = "CHIPSERVICE_DRAIN_TIMEOUT_SECS";
    /// The embedded simulators' time scale.
    pub const EMBEDDED_TIME_SCALE: &str = "CHIPSERVICE_EMBEDDED_TIME_SCALE";
    /// The owner role's PostgreSQL URL (production backend, required).
    pub const DATABASE_URL: &str = "CHIPSERVICE_DATABASE_URL";
    /// The application role's PostgreSQL URL (production backend, required).
    pub const APP_DATABASE_URL: &str = "CHIPSERVICE_APP_DATABASE_URL";
    /// The size of each database pool.
    pub const DATABASE_POOL_SIZE: &str = "CHIPSERVICE_DATABASE_POOL_SIZE";
    /// The WAHA image (production backend, required).
    pub const WAHA_IMAGE: &str = "CHIPSERVICE_WAHA_IMAGE";
    /// The WhatsApp engine.
    pub const WAHA_ENGINE: &str = "CHIPSERVICE_WAHA_ENGINE";
    /// Chips per container.
    pub const SESSIONS_PER_CONTAINER: &str = "CHIPSERVICE_SESSIONS_PER_CONTAINER";
    /// How long a container gets to become ready, in seconds.
    pub const WAHA_STARTUP_DEADLINE_SECS: &str = "CHIPSERVICE_WAHA_STARTUP_DEADLINE_SECS";
    /// How containers are addressed.
    pub const DOCKER_ADDRESSING: &str = "CHIPSERVICE_DOCKER_ADDRESSING";
    /// The containers' network.
    pub const DOCKER_NETWORK: &str = "CHIPSERVICE_DOCKER_NETWORK";
    /// The ports of host-network addressing.
    pub const HOST_PORTS: &str = "CHIPSERVICE_HOST_PORTS";
    /// The managed-by label and name prefix.
    pub const MANAGED_BY: &str = "CHIPSERVICE_MANAGED_BY";
    /// Where the containers reach this service (production backend, required).
    pub const WEBHOOK_BASE_URL: &str = "CHIPSERVICE_WEBHOOK_BASE_URL";
    /// The proxy list, or its file (production backend, required).
    pub const PROXIES: &str = "CHIPSERVICE_PROXIES";
    /// The proxy-health task.
    pub const PROXY_HEALTH: &str = "CHIPSERVICE_PROXY_HEALTH";
    /// Where the proxy-health checks tunnel to.
    pub const PROXY_HEALTH_TARGET: &str = "CHIPSERVICE_PROXY_HEALTH_TARGET";
    /// The most chips per proxy endpoint.
    pub const MAX_CHIPS_PER_PROXY: &str = "CHIPSERVICE_MAX_CHIPS_PER_PROXY";
    /// The shared key-fingerprint secret.
    pub const FINGERPRINT_SECRET: &str = "CHIPSERVICE_FINGERPRINT_SECRET";
    /// This replica's owner id.
    pub const OWNER_ID: &str = "CHIPSERVICE_OWNER_ID";
    /// Placement constraints on Swarm.
    pub const SWARM_CONSTRAINTS: &str = "CHIPSERVICE_SWARM_CONSTRAINTS";
}

/// Which backend the service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The embedded default: in-process WAHA simulators and in-memory backends
    /// ([`Embedded`](crate::Embedded)). No Docker, no PostgreSQL.
    Embedded,
    /// WAHA containers on one Docker Engine, every store in PostgreSQL
    /// ([`Production`](crate::Production)).
    Docker,
    /// WAHA containers as one-replica Docker Swarm services, every store in PostgreSQL
    /// ([`Production`](crate::Production)).
    Swarm,
}

impl Backend {
    /// The backend's name, as `CHIPSERVICE_BACKEND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Docker => "docker",
            Backend::Swarm => "swarm",
        }
    }
}

/// Why the configuration was refused: names the variable, never repeats a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{variable} is required: {hint}")]
    Missing {
        /// The variable.
        variable: &'static str,
        /// How to set it.
        hint: &'static str,
    },
    /// A variable's value is refused.
    #[error("{variable} {problem}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// What is wrong (the value is repeated only for non-secret variables).
        problem: String,
    },
}

impl ConfigError {
    /// The variable the error is about.
    pub fn variable(&self) -> &'static str {
        match self {
            ConfigError::Missing { variable, .. } | ConfigError::Invalid { variable, .. } => {
                variable
            }
        }
    }
}

/// The service's configuration. `Debug` never shows the admin token.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Where to listen (`CHIPSERVICE_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The admin token (`CHIPSERVICE_ADMIN_TOKEN`, required).
    pub admin_token: AdminToken,
    /// The backend (`CHIPSERVICE_BACKEND`, default `embedded`).
    pub backend: Backend,
    /// The log filter (`CHIPSERVICE_LOG`, default `info`).
    pub log_filter: String,
    /// JSON logs (`CHIPSERVICE_LOG_JSON`, default `false`).
    pub log_json: bool,
    /// Serve `/metrics` (`CHIPSERVICE_METRICS`, default `true`).
    pub metrics: bool,
    /// How long open connections get on shutdown (`CHIPSERVICE_DRAIN_TIMEOUT_SECS`, default
    /// 10 s).
    pub drain_timeout: Duration,
    /// The embedded simulators' time scale (`CHIPSERVICE_EMBEDDED_TIME_SCALE`; `None`: the
    /// [`EmbeddedOptions`](crate::EmbeddedOptions) default, 0.1).
    pub embedded_time_scale: Option<f64>,
    /// The production backend's settings: `Some` exactly when [`backend`](Self::backend) is
    /// [`Backend::Docker`] or [`Backend::Swarm`] (see the module documentation).
    pub production: Option<ProductionConfig>,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token)
            .field("backend", &self.backend)
            .field("log_filter", &self.log_filter)
            .field("log_json", &self.log_json)
            .field("metrics", &self.metrics)
            .field("drain_timeout", &self.drain_timeout)
            .field("embedded_time_scale", &self.embedded_time_scale)
            .field("production", &self.production)
            .finish()
    }
}

impl ServiceConfig {
    /// The default listen address.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";
    /// The default log filter.
    pub const DEFAULT_LOG: &'static str = "info";
    /// The default drain timeout.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

    /// The configuration from the process environment (see the module documentation).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable refused.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// The configuration from `lookup` (a variable's value, `None` when unset): what
    /// [`from_env`](Self::from_env) does, for tests and hosts with their own sources.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable refused.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned());

        let listen_text = get(vars::LISTEN)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| Self::DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Invalid {
            variable: vars::LISTEN,
            problem: format!("must be host:port (an IP address and a port), got {listen_text:?}"),
        })?;

        let admin = lookup(vars::ADMIN_TOKEN)
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing {
                variable: vars::ADMIN_TOKEN,
                hint: "set it to a random secret of at least 32 characters (e.g. `openssl rand -hex 32`); the admin API authenticates with it",
            })?;
        let admin_token = AdminToken::new(&admin).map_err(|problem| ConfigError::Invalid {
            variable: vars::ADMIN_TOKEN,
            problem: problem.to_string(),
        })?;

        let backend = match get(vars::BACKEND)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("embedded") => Backend::Embedded,
            Some("docker") => Backend::Docker,
            Some("swarm") => Backend::Swarm,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    variable: vars::BACKEND,
                    problem: format!(
                        "names an unknown backend {other:?}: `embedded`, `docker` or `swarm`"
                    ),
                });
            }
        };

        let log_filter = get(vars::LOG)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| Self::DEFAULT_LOG.to_owned());
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(ConfigError::Invalid {
                variable: vars::LOG,
                problem: format!("is not a valid log filter: {error}"),
            });
        }

        let log_json = boolean(vars::LOG_JSON, get(vars::LOG_JSON), false)?;
        let metrics = boolean(vars::METRICS, get(vars::METRICS), true)?;

        let drain_timeout = match get(vars::DRAIN_TIMEOUT_SECS).filter(|v| !v.is_empty()) {
            None => Self::DEFAULT_DRAIN_TIMEOUT,
            Some(text) => match text.parse::<u64>() {
                Ok(secs) if secs <= 3_600 => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::Invalid {
                        variable: vars::DRAIN_TIMEOUT_SECS,
                        problem: format!(
                            "must be a whole number of seconds up to 3600, got {text:?}"
                        ),
                    });
                }
            },
        };

        let embedded_time_scale = match get(vars::EMBEDDED_TIME_SCALE).filter(|v| !v.is_empty()) {
            None => None,
            Some(text) => match text.parse::<f64>() {
                Ok(scale) if scale.is_finite() && scale > 0.0 => Some(scale),
                _ => {
                    return Err(ConfigError::Invalid {
                        variable: vars::EMBEDDED_TIME_SCALE,
                        problem: format!("must be a positive number, got {text:?}"),
                    });
                }
            },
        };

        let production = match backend {
            Backend::Embedded => None,
            Backend::Docker => Some(production(RuntimeKind::Docker, &get)?),
            Backend::Swarm => Some(production(RuntimeKind::Swarm, &get)?),
        };

        Ok(ServiceConfig {
            listen,
            admin_token,
            backend,
            log_filter,
            log_json,
            metrics,
            drain_timeout,
            embedded_time_scale,
            production,
        })
    }
}

/// The default of `CHIPSERVICE_DATABASE_POOL_SIZE`.
const DEFAULT_DATABASE_POOL_SIZE: usize = 8;
/// The default of `CHIPSERVICE_SESSIONS_PER_CONTAINER`.
const DEFAULT_SESSIONS_PER_CONTAINER: u32 = 10;
/// The default of `CHIPSERVICE_WAHA_STARTUP_DEADLINE_SECS`.
const DEFAULT_STARTUP_DEADLINE_SECS: u64 = 180;
/// The default of `CHIPSERVICE_DOCKER_NETWORK`.
const DEFAULT_NETWORK: &str = "chipfleet";
/// The default of `CHIPSERVICE_HOST_PORTS`.
const DEFAULT_HOST_PORTS: RangeInclusive<u16> = 23_000..=23_999;
/// The default of `CHIPSERVICE_MANAGED_BY`.
const DEFAULT_MANAGED_BY: &str = "chipfleet";
/// The default of `CHIPSERVICE_PROXY_HEALTH_TARGET`.
const DEFAULT_PROXY_HEALTH_TARGET: (&str, u16) = ("web.whatsapp.com", 443);
/// The default of `CHIPSERVICE_MAX_CHIPS_PER_PROXY` (proxy-allocator's default).
const DEFAULT_MAX_CHIPS_PER_PROXY: u32 = 3;
/// The fewest characters of `CHIPSERVICE_FINGERPRINT_SECRET`.
const MIN_FINGERPRINT_SECRET: usize = 32;

/// A required variable's value.
fn required(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    get(variable)
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing { variable, hint })
}

/// An optional variable's value, `None` when unset or empty.
fn optional(get: &dyn Fn(&str) -> Option<String>, variable: &str) -> Option<String> {
    get(variable).filter(|v| !v.is_empty())
}

/// A whole number in `range` (the default when unset).
fn number<T>(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    range: RangeInclusive<T>,
    default: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(text) = optional(get, variable) else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(ConfigError::Invalid {
            variable,
            problem: format!(
                "must be a whole number from {} to {}, got {text:?}",
                range.start(),
                range.end()
            ),
        }),
    }
}

/// A PostgreSQL URL that names a user; the URL is never repeated (it carries a password).
fn postgres_url(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    let url = required(get, variable, hint)?;
    let parsed: tokio_postgres::Config = url.parse().map_err(|_| ConfigError::Invalid {
        variable,
        problem: "is not a PostgreSQL connection URL (postgres://user:password@host:port/database)"
            .to_owned(),
    })?;
    if parsed.get_user().is_none() {
        return Err(ConfigError::Invalid {
            variable,
            problem: "names no user (postgres://user:password@host:port/database)".to_owned(),
        });
    }
    Ok(url)
}

/// Whether `name` may be a container name prefix and label value: 1 to 32 of `a-z0-9-`, not
/// starting with `-` (container-pool's rule for `name_prefix`).
fn valid_prefix(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The production backend's settings (`CHIPSERVICE_BACKEND=docker` or `swarm`).
fn production(
    runtime: RuntimeKind,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<ProductionConfig, ConfigError> {
    let database_url = postgres_url(
        get,
        vars::DATABASE_URL,
        "set it to the owner role's PostgreSQL URL (postgres://owner:password@host:5432/db): it runs the migrations and holds the tenant directory",
    )?;
    let app_database_url = postgres_url(
        get,
        vars::APP_DATABASE_URL,
        "set it to the application role's PostgreSQL URL (a role that owns nothing and cannot bypass row-level security, e.g. postgres://chipfleet_app:password@host:5432/db)",
    )?;
    let database_pool_size = number(
        get,
        vars::DATABASE_POOL_SIZE,
        1..=100,
        DEFAULT_DATABASE_POOL_SIZE,
    )?;

    let image = required(
        get,
        vars::WAHA_IMAGE,
        "set it to the WAHA image the tenants' containers run (e.g. devlikeapro/waha:latest, pulled onto the Docker host first)",
    )?;
    let waha_image = ImageRef::parse(&image).map_err(|error| ConfigError::Invalid {
        variable: vars::WAHA_IMAGE,
        problem: format!("is not an image reference: {error}"),
    })?;
    let engine = match optional(get, vars::WAHA_ENGINE) {
        None => Engine::Noweb,
        Some(text) => text.parse::<Engine>().map_err(|_| ConfigError::Invalid {
            variable: vars::WAHA_ENGINE,
            problem: format!("must be NOWEB, GOWS or WEBJS, got {text:?}"),
        })?,
    };
    let sessions_per_container = number(
        get,
        vars::SESSIONS_PER_CONTAINER,
        1..=500,
        DEFAULT_SESSIONS_PER_CONTAINER,
    )?;
    let startup_deadline = Duration::from_secs(number(
        get,
        vars::WAHA_STARTUP_DEADLINE_SECS,
        1..=3_600,
        DEFAULT_STARTUP_DEADLINE_SECS,
    )?);

    let addressing = match optional(get, vars::DOCKER_ADDRESSING)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("name") => ContainerAddressing::Name,
        Some("ip") => ContainerAddressing::Ip,
        Some("host-network") => ContainerAddressing::HostNetwork {
            ports: host_ports(get)?,
        },
        Some(other) => {
            return Err(ConfigError::Invalid {
                variable: vars::DOCKER_ADDRESSING,
                problem: format!("must be `name`, `ip` or `host-network`, got {other:?}"),
            });
        }
    };
    if runtime == RuntimeKind::Swarm && addressing != ContainerAddressing::Name {
        return Err(ConfigError::Invalid {
            variable: vars::DOCKER_ADDRESSING,
            problem: format!(
                "`{}` does not work on Swarm (a task may run on any node): use `name`, with                  chip-service attached to the overlay network",
                addressing.as_str()
            ),
        });
    }
    let network = optional(get, vars::DOCKER_NETWORK).unwrap_or_else(|| DEFAULT_NETWORK.to_owned());
    let network_ok = network.len() <= 64
        && network
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !network_ok {
        return Err(ConfigError::Invalid {
            variable: vars::DOCKER_NETWORK,
            problem: format!(
                "must be a Docker network name (letters, digits, `_`, `.`, `-`, up to 64), got {network:?}"
            ),
        });
    }
    let managed_by =
        optional(get, vars::MANAGED_BY).unwrap_or_else(|| DEFAULT_MANAGED_BY.to_owned());
    if !valid_prefix(&managed_by) {
        return Err(ConfigError::Invalid {
            variable: vars::MANAGED_BY,
            problem: format!(
                "must be 1 to 32 of a-z, 0-9 and -, not starting with -, got {managed_by:?}"
            ),
        });
    }

    let webhook_base_url = webhook_base_url(get)?;

    let proxies_value = required(
        get,
        vars::PROXIES,
        "set it to the proxy list (one `scheme://user:pass@host:port country=CC` per line, or `;` between entries) or to the path of a file holding it: every chip needs a proxy",
    )?;
    let proxies = if proxies_value.contains("://") {
        let text = if proxies_value.contains('\n') {
            proxies_value
        } else {
            proxies_value.replace(';', "\n")
        };
        ProxyList::Inline(text)
    } else {
        ProxyList::File(PathBuf::from(proxies_value))
    };
    let proxy_health = if boolean(vars::PROXY_HEALTH, get(vars::PROXY_HEALTH), true)? {
        let (host, port) = match optional(get, vars::PROXY_HEALTH_TARGET) {
            None => (
                DEFAULT_PROXY_HEALTH_TARGET.0.to_owned(),
                DEFAULT_PROXY_HEALTH_TARGET.1,
            ),
            Some(text) => {
                let parsed = text
                    .rsplit_once(':')
                    .filter(|(host, _)| !host.is_empty())
                    .and_then(|(host, port)| {
                        port.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .map(|p| (host.to_owned(), p))
                    });
                parsed.ok_or_else(|| ConfigError::Invalid {
                    variable: vars::PROXY_HEALTH_TARGET,
                    problem: format!("must be host:port, got {text:?}"),
                })?
            }
        };
        ProxyHealth::On { host, port }
    } else {
        ProxyHealth::Off
    };
    let max_chips_per_proxy = number(
        get,
        vars::MAX_CHIPS_PER_PROXY,
        1..=10_000,
        DEFAULT_MAX_CHIPS_PER_PROXY,
    )?;

    let fingerprint_secret = match get(vars::FINGERPRINT_SECRET).filter(|v| !v.is_empty()) {
        None => None,
        Some(secret) => {
            if secret.chars().count() < MIN_FINGERPRINT_SECRET {
                return Err(ConfigError::Invalid {
                    variable: vars::FINGERPRINT_SECRET,
                    problem: format!(
                        "must have at least {MIN_FINGERPRINT_SECRET} characters (e.g. `openssl rand -hex 32`)"
                    ),
                });
            }
            Some(KeyFingerprintSecret::new(secret.as_bytes()).map_err(|_| {
                ConfigError::Invalid {
                    variable: vars::FINGERPRINT_SECRET,
                    problem: "was refused as a key-fingerprint secret".to_owned(),
                }
            })?)
        }
    };
    let owner_id = match optional(get, vars::OWNER_ID) {
        None => None,
        Some(id) if id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => Some(id),
        Some(id) => {
            return Err(ConfigError::Invalid {
                variable: vars::OWNER_ID,
                problem: format!(
                    "must be printable ASCII without spaces, up to 128 characters, got {id:?}"
                ),
            });
        }
    };
    let swarm_constraints = optional(get, vars::SWARM_CONSTRAINTS)
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    Ok(ProductionConfig {
        runtime,
        database_url,
        app_database_url,
        database_pool_size,
        waha_image,
        engine,
        sessions_per_container,
        startup_deadline,
        addressing,
        network,
        managed_by,
        webhook_base_url,
        proxies,
        proxy_health,
        max_chips_per_proxy,
        fingerprint_secret,
        owner_id,
        swarm_constraints,
    })
}

/// `CHIPSERVICE_HOST_PORTS`: `start-end`, both from 1 to 65535, `start <= end`.
fn host_ports(get: &dyn Fn(&str) -> Option<String>) -> Result<RangeInclusive<u16>, ConfigError> {
    let Some(text) = optional(get, vars::HOST_PORTS) else {
        return Ok(DEFAULT_HOST_PORTS);
    };
    let parsed = text.split_once('-').and_then(|(start, end)| {
        let start = start.trim().parse::<u16>().ok()?;
        let end = end.trim().parse::<u16>().ok()?;
        (start > 0 && start <= end).then_some(start..=end)
    });
    parsed.ok_or_else(|| ConfigError::Invalid {
        variable: vars::HOST_PORTS,
        problem: format!("must be a port range `start-end` (1 to 65535), got {text:?}"),
    })
}

/// `CHIPSERVICE_WEBHOOK_BASE_URL`: an http(s) URL with a host and without credentials, query
/// or fragment.
fn webhook_base_url(get: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let text = required(
        get,
        vars::WEBHOOK_BASE_URL,
        "set it to the URL the WAHA containers reach this service at (e.g. http://chip-service:8080 on the containers' network); containers cannot reach the host's 127.0.0.1 unless CHIPSERVICE_DOCKER_ADDRESSING=host-network",
    )?;
    let invalid = |problem: &str| ConfigError::Invalid {
        variable: vars::WEBHOOK_BASE_URL,
        problem: problem.to_owned(),
    };
    let url = reqwest::Url::parse(&text).map_err(|_| invalid("is not a URL (http://host:port)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must have no query and no fragment"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn boolean(
    variable: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            variable,
            problem: format!("must be true or false, got {value:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ADMIN: &str = "0123456789abcdef0123456789abcdef";

    fn config(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServiceConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_apply_and_the_admin_token_is_required() {
        let error = config(&[]).unwrap_err();
        assert_eq!(error.variable(), vars::ADMIN_TOKEN);
        let config = config(&[(vars::ADMIN_TOKEN, ADMIN)]).unwrap();
        assert_eq!(config.listen.to_string(), ServiceConfig::DEFAULT_LISTEN);
        assert_eq!(config.backend, Backend::Embedded);
        assert!(!config.log_json);
        assert!(config.metrics);
        assert_eq!(config.drain_timeout, ServiceConfig::DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(config.embedded_time_scale, None);
        assert!(!format!("{config:?}").contains(ADMIN));
    }

    #[test]
    fn refused_values_name_their_variable_and_never_the_token() {
        let weak = "short-token";
        let error = config(&[(vars::ADMIN_TOKEN, weak)]).unwrap_err();
        assert_eq!(error.variable(), vars::ADMIN_TOKEN);
        assert!(!error.to_string().contains(weak));
        for (variable, value) in [
            (vars::LISTEN, "localhost"),
            (vars::LOG_JSON, "maybe"),
            (vars::METRICS, "2"),
            (vars::DRAIN_TIMEOUT_SECS, "-1"),
            (vars::EMBEDDED_TIME_SCALE, "0"),
            (vars::BACKEND, "kubernetes"),
        ] {
            let error = config(&[(vars::ADMIN_TOKEN, ADMIN), (variable, value)]).unwrap_err();
            assert_eq!(error.variable(), variable, "{error}");
        }
        let ok = config(&[
            (vars::ADMIN_TOKEN, ADMIN),
            (vars::LISTEN, "0.0.0.0:0"),
            (vars::LOG_JSON, "TRUE"),
            (vars::METRICS, "off"),
            (vars::EMBEDDED_TIME_SCALE, "1"),
        ])
        .unwrap();
        assert!(ok.log_json && !ok.metrics);
        assert_eq!(ok.embedded_time_scale, Some(1.0));
        assert!(ok.production.is_none());
    }

    const OWNER_URL: &str = "postgres://owner:owner-password-1@db.internal:5432/chipfleet";
    const APP_URL: &str = "postgres://app:app-password-2@db.internal:5432/chipfleet";
    const PROXY_PASSWORD: &str = "proxy-password-3";
    const FINGERPRINT: &str = "fingerprint-secret-0123456789abcdef0123456789";

    /// The required settings of the production backend, plus `extra`.
    fn production_config(
        backend: &str,
        extra: &[(&str, &str)],
    ) -> Result<ServiceConfig, ConfigError> {
        let proxies = format!("http://user:{PROXY_PASSWORD}@203.0.113.7:3128 country=BR");
        let mut pairs: Vec<(&str, &str)> = vec![
            (vars::ADMIN_TOKEN, ADMIN),
            (vars::BACKEND, backend),
            (vars::DATABASE_URL, OWNER_URL),
            (vars::APP_DATABASE_URL, APP_URL),
            (vars::WAHA_IMAGE, "devlikeapro/waha:latest"),
            (vars::WEBHOOK_BASE_URL, "http://chip-service:8080/"),
            (vars::PROXIES, proxies.as_str()),
        ];
        // Later pairs replace earlier ones (the map keeps the last).
        pairs.extend_from_slice(extra);
        config(&pairs)
    }

    #[test]
    fn the_production_backend_has_documented_defaults_and_hides_its_secrets() {
        let config =
            production_config("docker", &[(vars::FINGERPRINT_SECRET, FINGERPRINT)]).unwrap();
        assert_eq!(config.backend, Backend::Docker);
        let production = config.production.clone().expect("production settings");
        assert_eq!(production.runtime, RuntimeKind::Docker);
        assert_eq!(production.database_pool_size, 8);
        assert_eq!(production.engine, Engine::Noweb);
        assert_eq!(production.sessions_per_container, 10);
        assert_eq!(production.startup_deadline, Duration::from_secs(180));
        assert_eq!(production.addressing, ContainerAddressing::Name);
        assert_eq!(production.network, "chipfleet");
        assert_eq!(production.managed_by, "chipfleet");
        assert_eq!(
            production.webhook_url(),
            "http://chip-service:8080/webhooks/{tenant}"
        );
        assert!(matches!(production.proxies, ProxyList::Inline(_)));
        assert_eq!(
            production.proxy_health,
            ProxyHealth::On {
                host: "web.whatsapp.com".to_owned(),
                port: 443
            }
        );
        assert_eq!(production.max_chips_per_proxy, 3);
        assert!(production.fingerprint_secret.is_some());
        assert_eq!(production.owner_id, None);
        assert!(production.swarm_constraints.is_empty());
        let pool = production.pool_config();
        pool.validate().expect("the pool configuration is valid");
        let supervisor = production.supervisor_config();
        assert!(supervisor.step_timeout > production.startup_deadline);
        assert!(supervisor.monitors.proxy_health.is_on());
        let shown = format!("{config:?}");
        for secret in [
            OWNER_URL,
            APP_URL,
            "owner-password-1",
            "app-password-2",
            PROXY_PASSWORD,
            FINGERPRINT,
            ADMIN,
        ] {
            assert!(!shown.contains(secret), "Debug shows a secret: {shown}");
        }
    }

    #[test]
    fn the_production_backend_reads_every_setting() {
        let config = production_config(
            "SWARM",
            &[
                (vars::DATABASE_POOL_SIZE, "3"),
                (vars::WAHA_ENGINE, "gows"),
                (vars::SESSIONS_PER_CONTAINER, "50"),
                (vars::WAHA_STARTUP_DEADLINE_SECS, "60"),
                (vars::DOCKER_NETWORK, "waha-overlay"),
                (vars::MANAGED_BY, "fleet-eu"),
                (vars::PROXIES, "/etc/chipfleet/proxies.txt"),
                (vars::PROXY_HEALTH, "off"),
                (vars::MAX_CHIPS_PER_PROXY, "5"),
                (vars::OWNER_ID, "replica-1"),
                (
                    vars::SWARM_CONSTRAINTS,
                    "node.labels.waha==true, node.role==worker",
                ),
            ],
        )
        .unwrap();
        let production = config.production.expect("production settings");
        assert_eq!(production.runtime, RuntimeKind::Swarm);
        assert_eq!(production.database_pool_size, 3);
        assert_eq!(production.engine, Engine::Gows);
        assert_eq!(production.sessions_per_container, 50);
        assert_eq!(production.startup_deadline, Duration::from_secs(60));
        assert_eq!(production.network, "waha-overlay");
        assert_eq!(production.managed_by, "fleet-eu");
        assert!(
            matches!(&production.proxies, ProxyList::File(path) if path.to_str() == Some("/etc/chipfleet/proxies.txt"))
        );
        assert_eq!(production.proxy_health, ProxyHealth::Off);
        assert!(!production.supervisor_config().monitors.proxy_health.is_on());
        assert_eq!(production.max_chips_per_proxy, 5);
        assert_eq!(production.owner_id.as_deref(), Some("replica-1"));
        assert_eq!(
            production.swarm_constraints,
            ["node.labels.waha==true", "node.role==worker"]
        );

        let local = production_config(
            "docker",
            &[
                (vars::DOCKER_ADDRESSING, "host-network"),
                (vars::HOST_PORTS, "24000-24099"),
                (vars::PROXY_HEALTH_TARGET, "203.0.113.1:8443"),
                (
                    vars::PROXIES,
                    "http://203.0.113.7:3128 country=BR; socks5://203.0.113.8:1080",
                ),
            ],
        )
        .unwrap()
        .production
        .expect("production settings");
        assert_eq!(
            local.addressing,
            ContainerAddressing::HostNetwork {
                ports: 24_000..=24_099
            }
        );
        assert_eq!(
            local.proxy_health,
            ProxyHealth::On {
                host: "203.0.113.1".to_owned(),
                port: 8443
            }
        );
        match &local.proxies {
            ProxyList::Inline(text) => assert_eq!(text.lines().count(), 2, "{text:?}"),
            other => panic!("an inline list, got {other:?}"),
        }
        local.pool_config().validate().expect("a valid pool");
    }

    #[test]
    fn the_production_backend_refuses_missing_and_bad_settings_without_repeating_secrets() {
        for missing in [
            vars::DATABASE_URL,
            vars::APP_DATABASE_URL,
            vars::WAHA_IMAGE,
            vars::WEBHOOK_BASE_URL,
            vars::PROXIES,
        ] {
            let error = production_config("docker", &[(missing, "")]).unwrap_err();
            assert_eq!(error.variable(), missing, "{error}");
            assert!(matches!(error, ConfigError::Missing { .. }), "{error}");
        }
        for (variable, value) in [
            (vars::DATABASE_URL, "not a url with owner-password-1"),
            (vars::APP_DATABASE_URL, "mysql://app:app-password-2@db/x"),
            (vars::DATABASE_POOL_SIZE, "0"),
            (vars::WAHA_IMAGE, "Not An Image"),
            (vars::WAHA_ENGINE, "CHROME"),
            (vars::SESSIONS_PER_CONTAINER, "0"),
            (vars::WAHA_STARTUP_DEADLINE_SECS, "0"),
            (vars::DOCKER_ADDRESSING, "bridge"),
            (vars::DOCKER_NETWORK, "bad network"),
            (vars::MANAGED_BY, "Fleet"),
            (vars::WEBHOOK_BASE_URL, "ftp://chip-service"),
            (vars::WEBHOOK_BASE_URL, "http://user:pw@chip-service:8080"),
            (vars::WEBHOOK_BASE_URL, "http://chip-service:8080/?token=x"),
            (vars::PROXY_HEALTH, "sometimes"),
            (vars::PROXY_HEALTH_TARGET, "web.whatsapp.com"),
            (vars::MAX_CHIPS_PER_PROXY, "0"),
            (vars::FINGERPRINT_SECRET, "short-secret"),
            (vars::OWNER_ID, "has spaces"),
        ] {
            let error = production_config("docker", &[(variable, value)]).unwrap_err();
            assert_eq!(error.variable(), variable, "{value}: {error}");
            let text = error.to_string();
            for secret in ["owner-password-1", "app-password-2", "short-secret"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        let error = production_config(
            "docker",
            &[
                (vars::DOCKER_ADDRESSING, "host-network"),
                (vars::HOST_PORTS, "30000-20000"),
            ],
        )
        .unwrap_err();
        assert_eq!(error.variable(), vars::HOST_PORTS);
        for addressing in ["ip", "host-network"] {
            let error =
                production_config("swarm", &[(vars::DOCKER_ADDRESSING, addressing)]).unwrap_err();
            assert_eq!(error.variable(), vars::DOCKER_ADDRESSING, "{error}");
        }
    }
}
