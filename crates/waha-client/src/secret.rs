//! Secret values: the WAHA API key, webhook HMAC keys, proxy passwords and webhook custom header
//! values.
//!
//! Each is its own type around [`secrecy::SecretString`]. `Debug` and `Display` print
//! `<redacted>`, equality is constant-time, and the memory is zeroed on drop. The one way out is
//! `expose_secret()`, plus `Serialize`, which writes the real value **on purpose**: a
//! [`SessionConfig`](crate::SessionConfig) must carry its real proxy password and HMAC key to
//! WAHA. Never serialise a config or a session into a log line.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// What every secret prints instead of its value.
pub const REDACTED: &str = "<redacted>";

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The secret itself. Call it only where the value must leave the process: an HTTP
            /// header, a request body, a MAC computation.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }

            /// Whether the secret is the empty string.
            pub fn is_empty(&self) -> bool {
                self.expose_secret().is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({REDACTED})", stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(REDACTED)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.expose_secret()
                    .as_bytes()
                    .ct_eq(other.expose_secret().as_bytes())
                    .into()
            }
        }

        impl Eq for $name {}

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        /// Writes the real value: WAHA needs it. See the [module docs](crate::secret).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.expose_secret())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_type! {
    /// The WAHA API key, sent as the `X-Api-Key` header.
    ApiKey
}

secret_type! {
    /// The key WAHA signs webhook bodies with (`webhooks[].hmac.key`), and that
    /// [`verify`](crate::webhook::verify) checks them with.
    HmacKey
}

secret_type! {
    /// A proxy password (`proxy.password` in a session config).
    ProxyPassword
}

secret_type! {
    /// The value of a custom header WAHA adds to webhook calls (`customHeaders[].value`). Such
    /// headers usually carry a token for the receiving endpoint, so they are treated as secrets.
    HeaderValueSecret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let key = ApiKey::new("s3cr3t-api-key");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key.to_string(), "<redacted>");
        let password = ProxyPassword::from("hunter2");
        assert!(!format!("{password:?} {password}").contains("hunter2"));
    }

    #[test]
    fn serialising_exposes_and_deserialising_wraps() {
        let key = HmacKey::new("k@y:/x");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"k@y:/x\"");
        let back: HmacKey = serde_json::from_str("\"k@y:/x\"").unwrap();
        assert_eq!(back, key);
        assert_ne!(back, HmacKey::new("other"));
    }
}
