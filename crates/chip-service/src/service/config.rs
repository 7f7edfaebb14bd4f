//! The service's configuration, read from the environment ([`ServiceConfig::from_env`]).
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `CHIPSERVICE_LISTEN` | `127.0.0.1:8080` | The address the HTTP service listens on (`host:port`; port 0 picks a free one). |
//! | `CHIPSERVICE_ADMIN_TOKEN` | **required** | The admin bearer token (tenant management): at least 32 printable ASCII characters, no spaces, e.g. `openssl rand -hex 32`. The service refuses to start without it; it is kept only as its SHA-256 hash and never logged. |
//! | `CHIPSERVICE_BACKEND` | `embedded` | The backend. Only `embedded` (in-process WAHA simulators, in-memory stores) exists for now. |
//! | `CHIPSERVICE_LOG` | `info` | The log filter (`tracing-subscriber`'s `EnvFilter` syntax, e.g. `info,session_supervisor=debug`). |
//! | `CHIPSERVICE_LOG_JSON` | `false` | `true` logs one JSON object per line; `false` plain text (to stderr, coloured only on a terminal). |
//! | `CHIPSERVICE_METRICS` | `true` | Whether a Prometheus recorder is installed and `/metrics` served. |
//! | `CHIPSERVICE_DRAIN_TIMEOUT_SECS` | `10` | On SIGTERM or ctrl-c: how long open connections get to finish before they are closed. |
//! | `CHIPSERVICE_EMBEDDED_TIME_SCALE` | `0.1` | The embedded simulators' time scale (`EmbeddedOptions::time_scale`: 0.1 makes WAHA's 60 s QR code last 6 s). |
//!
//! Booleans accept `1`, `true`, `yes`, `on` and `0`, `false`, `no`, `off` (any case). A
//! refused value is a [`ConfigError`] naming the variable, never repeating a secret.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::auth::AdminToken;

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
}

/// Which backend the service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The embedded default: in-process WAHA simulators and in-memory backends
    /// ([`Embedded`](crate::Embedded)). No Docker, no PostgreSQL.
    Embedded,
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

    /// The configuration from the process environment (see the [module documentation](self)).
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

        let backend = match get(vars::BACKEND).as_deref() {
            None | Some("") | Some("embedded") => Backend::Embedded,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    variable: vars::BACKEND,
                    problem: format!(
                        "names an unknown backend {other:?}: only `embedded` exists for now"
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

        Ok(ServiceConfig {
            listen,
            admin_token,
            backend,
            log_filter,
            log_json,
            metrics,
            drain_timeout,
            embedded_time_scale,
        })
    }
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
            (vars::BACKEND, "docker"),
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
    }
}
