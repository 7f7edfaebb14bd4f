//! Environment variables, some of them secret.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::{ApiKey, Error};

/// `WAHA_API_KEY`: the tenant's API key (a secret).
pub(crate) const API_KEY_VAR: &str = "WAHA_API_KEY";
/// `WHATSAPP_DEFAULT_ENGINE`: the configured engine.
pub(crate) const ENGINE_VAR: &str = "WHATSAPP_DEFAULT_ENGINE";
/// `WAHA_WORKER_ID`: the container name.
pub(crate) const WORKER_ID_VAR: &str = "WAHA_WORKER_ID";
/// `WAHA_AUTO_START_DELAY_SECONDS`: the auto-start stagger.
pub(crate) const AUTO_START_DELAY_VAR: &str = "WAHA_AUTO_START_DELAY_SECONDS";

/// Variables [`PoolConfig::extra_env`](crate::PoolConfig::extra_env) may not set: the ones the
/// pool sets itself, and WAHA's older key variable and its switch that turns the key off
/// (either would replace or disable the tenant's key).
pub const RESERVED_ENV_NAMES: &[&str] = &[
    API_KEY_VAR,
    "WHATSAPP_API_KEY",
    "WAHA_NO_API_KEY",
    ENGINE_VAR,
    WORKER_ID_VAR,
    AUTO_START_DELAY_VAR,
];

/// One environment variable of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: EnvValue,
}

impl EnvVar {
    /// A variable whose value may be logged and hashed.
    pub fn plain(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: EnvValue::Plain(value.into()),
        }
    }

    /// A variable whose value is a secret (an API key): it never prints and is not part of the
    /// spec hash.
    pub fn secret(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: EnvValue::Secret(SecretString::from(value.into())),
        }
    }

    /// The tenant's API key as a variable: kept as the [`ApiKey`] itself (never exposed to be
    /// wrapped again); it never prints and is not part of the spec hash.
    pub fn api_key(name: impl Into<String>, key: ApiKey) -> Self {
        Self {
            name: name.into(),
            value: EnvValue::ApiKey(key),
        }
    }

    /// Checks that the variable can be passed to a container: a non-empty name without `=` or
    /// NUL, and a value without NUL. The error names the variable, never a secret value.
    pub fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(Error::InvalidConfig(
                "an environment variable has an empty name".into(),
            ));
        }
        if self.name.contains(['=', '\0']) {
            return Err(Error::InvalidConfig(format!(
                "environment variable name {:?} must not contain `=` or NUL",
                self.name
            )));
        }
        if self.value.expose_secret().contains('\0') {
            return Err(Error::InvalidConfig(format!(
                "the value of environment variable `{}` must not contain NUL",
                self.name
            )));
        }
        Ok(())
    }

    /// `NAME=value`, as container runtimes take it. The result holds the secret in clear text:
    /// pass it straight to the runtime, never to a log.
    pub fn to_assignment(&self) -> String {
        format!("{}={}", self.name, self.value.expose_secret())
    }
}

/// The value of an [`EnvVar`].
#[derive(Clone)]
pub enum EnvValue {
    /// An ordinary value.
    Plain(String),
    /// A secret; `Debug` prints `<redacted>`.
    Secret(SecretString),
    /// The tenant's API key; `Debug` prints `<redacted>`.
    ApiKey(ApiKey),
}

impl EnvValue {
    /// The plain value, or `None` for a secret.
    pub fn as_plain(&self) -> Option<&str> {
        match self {
            Self::Plain(v) => Some(v),
            Self::Secret(_) | Self::ApiKey(_) => None,
        }
    }

    /// The value itself, secret or not. Only runtimes call this, to hand it to the process.
    pub fn expose_secret(&self) -> &str {
        match self {
            Self::Plain(v) => v,
            Self::Secret(s) => s.expose_secret(),
            Self::ApiKey(key) => key.expose_secret(),
        }
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(v) => f.debug_tuple("Plain").field(v).finish(),
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::ApiKey(key) => write!(f, "{key:?}"),
        }
    }
}

impl PartialEq for EnvValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Plain(a), Self::Plain(b)) => a == b,
            (Self::Secret(a), Self::Secret(b)) => a.expose_secret() == b.expose_secret(),
            (Self::ApiKey(a), Self::ApiKey(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for EnvValue {}
