//! Secret values: the WAHA API key, the webhook HMAC key, proxy passwords and webhook custom
//! header values.
//!
//! Each is its own type around [`secrecy::SecretString`]:
//! - `Debug` prints `Name(<redacted>)` and `Display` prints `<redacted>`;
//! - equality is constant-time and the memory is zeroed on drop;
//! - the one way out is `expose_secret()`, called only where the value must leave the process
//!   (the places are listed in `docs/architecture.md`, "Where a secret is exposed");
//! - no secret type implements `Serialize`: a wire model that must send one names
//!   [`expose`] or [`expose_option`] in `#[serde(serialize_with = ...)]` at that one field.
//!
//! Validation: a value from outside ([`ApiKey::new`] and friends: an existing server's key, a
//! proxy password) must be non-empty, at most [`MAX_LEN`] bytes, with no control characters.
//! Keys the project mints ([`ApiKey::generate`], [`HmacKey::generate`]) are 32 bytes of the
//! operating system's CSPRNG, hex encoded (64 characters).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serializer};
use subtle::ConstantTimeEq;

/// What every secret prints instead of its value.
pub const REDACTED: &str = "<redacted>";

/// The longest secret accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// A secret value was refused, or could not be generated. Never contains the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value failed validation. Fix the input; nothing was stored.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which secret (for example `API key`).
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The operating system's random number source failed while minting a key.
    #[error("random number source failed: {detail}")]
    Entropy {
        /// The OS error.
        detail: String,
    },
}

impl SecretError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_secret",
            Self::Entropy { .. } => "entropy",
        }
    }

    /// Never: a refused value is refused again, and a failing OS random source is not
    /// expected to recover by itself.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn validate(value: &str, what: &'static str) -> Result<(), SecretError> {
    let reason = if value.is_empty() {
        "it must not be empty"
    } else if value.len() > MAX_LEN {
        "it must have at most 4096 bytes"
    } else if value.chars().any(char::is_control) {
        "it must not contain control characters"
    } else {
        return Ok(());
    };
    Err(SecretError::Invalid { what, reason })
}

/// 32 bytes from the operating system's CSPRNG, hex encoded (64 characters).
fn random_hex() -> Result<String, SecretError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Entropy {
        detail: e.to_string(),
    })?;
    Ok(hex::encode(bytes))
}

/// The one accessor every secret type shares, so serializers and generic code can take any of
/// them. Each type also has it as an inherent method, so callers need not import this trait.
pub trait SecretValue: sealed::Sealed {
    /// The secret in clear text. Call it only where the value must leave the process.
    fn expose_secret(&self) -> &str;
}

mod sealed {
    pub trait Sealed {}
}

/// `#[serde(serialize_with = "fleet_vocab::expose")]`: writes the secret's real value. Use it
/// only on the one field of a wire model that must carry it to its receiver.
///
/// # Errors
/// Whatever the serializer returns.
pub fn expose<T: SecretValue, S: Serializer>(secret: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// [`expose`] for an optional secret (use it with `skip_serializing_if = "Option::is_none"`).
///
/// # Errors
/// Whatever the serializer returns.
pub fn expose_option<T: SecretValue, S: Serializer>(
    secret: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose_secret()),
        None => serializer.serialize_none(),
    }
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Validates and wraps a value from outside: non-empty, at most [`MAX_LEN`] bytes,
            /// no control characters.
            ///
            /// # Errors
            /// [`SecretError::Invalid`], which never contains the value.
            pub fn new(value: impl Into<String>) -> Result<Self, SecretError> {
                let value = value.into();
                validate(&value, $what)?;
                Ok(Self(SecretString::from(value)))
            }

            /// The secret in clear text, for the one place that must send or use it (the
            /// places are listed in `docs/architecture.md`). Never log the result.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }

            /// Compares `candidate` with the secret in constant time (for equal lengths).
            pub fn matches(&self, candidate: &[u8]) -> bool {
                self.expose_secret().as_bytes().ct_eq(candidate).into()
            }
        }

        impl sealed::Sealed for $name {}

        impl SecretValue for $name {
            fn expose_secret(&self) -> &str {
                self.0.expose_secret()
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

        /// Constant-time comparison.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.matches(other.expose_secret().as_bytes())
            }
        }

        impl Eq for $name {}

        impl TryFrom<String> for $name {
            type Error = SecretError;

            fn try_from(value: String) -> Result<Self, SecretError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = SecretError;

            fn try_from(value: &str) -> Result<Self, SecretError> {
                Self::new(value)
            }
        }

        /// Validates as [`new`](Self::new) does; the error never quotes the value.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! minted {
    ($name:ident) => {
        impl $name {
            /// A fresh key minted by the project: 32 bytes (256 bits) of the operating system's
            /// CSPRNG, hex encoded (64 characters).
            ///
            /// # Errors
            /// [`SecretError::Entropy`] when the OS random source fails.
            pub fn generate() -> Result<Self, SecretError> {
                Ok(Self(SecretString::from(random_hex()?)))
            }
        }
    };
}

secret_type!(
    /// The API key of a WAHA server (`X-Api-Key`, and `WAHA_API_KEY` in its container).
    ///
    /// ```
    /// use fleet_vocab::ApiKey;
    /// let key = ApiKey::new("0123456789abcdef-secret")?;
    /// assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    /// assert_eq!(key.to_string(), "<redacted>");
    /// assert!(key.matches(b"0123456789abcdef-secret"));
    /// # Ok::<(), fleet_vocab::SecretError>(())
    /// ```
    ApiKey,
    "API key"
);
minted!(ApiKey);

secret_type!(
    /// The key WAHA signs a session's webhook bodies with (HMAC-SHA512, `webhooks[].hmac.key`),
    /// and that the receiver verifies them with.
    HmacKey,
    "webhook HMAC key"
);
minted!(HmacKey);

secret_type!(
    /// A proxy password (`proxy.password` in a WAHA session config, Basic or SOCKS5
    /// credentials of a proxy).
    ProxyPassword,
    "proxy password"
);

secret_type!(
    /// The value of a custom header WAHA adds to webhook calls (`customHeaders[].value`). Such
    /// headers usually carry a token for the receiving endpoint, so they are secrets.
    HeaderValueSecret,
    "webhook header value"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let key = ApiKey::new("super-secret-value-123").unwrap();
        let hmac = HmacKey::new("another-secret-value-456").unwrap();
        let password = ProxyPassword::new("p@ss:w/rd secret-value").unwrap();
        let header = HeaderValueSecret::new("Bearer secret-value").unwrap();
        for text in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{key:#?}"),
            format!("{hmac:?} {hmac}"),
            format!("{password:?} {password}"),
            format!("{header:?} {header}"),
        ] {
            assert!(!text.contains("secret-value"), "leaked: {text}");
            assert!(text.contains(REDACTED), "{text}");
        }
        assert_eq!(format!("{password:?}"), "ProxyPassword(<redacted>)");
    }

    #[test]
    fn values_from_outside_are_non_empty_without_control_characters() {
        assert!(
            ProxyPassword::new("p").is_ok(),
            "short outside values are accepted"
        );
        assert!(ProxyPassword::new("p ã @:/%").is_ok());
        for bad in [
            String::new(),
            "tab\there".into(),
            "nl\nx".into(),
            "del\u{7f}".into(),
            "c1\u{85}".into(),
            "x".repeat(MAX_LEN + 1),
        ] {
            let err = ApiKey::new(bad.clone()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SecretError::Invalid {
                        what: "API key",
                        ..
                    }
                ),
                "{err:?}"
            );
            let text = format!("{err} {err:?}");
            assert!(bad.is_empty() || !text.contains(&bad), "{text}");
            assert_eq!(err.kind(), "invalid_secret");
            assert!(!err.is_retryable());
        }
        assert!(ApiKey::new("x".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn minted_keys_are_64_hex_characters_and_distinct() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose_secret().len(), 64);
        assert!(a.expose_secret().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(HmacKey::generate().unwrap().expose_secret().len() >= 16);
        assert!(!a.matches(b.expose_secret().as_bytes()));
        assert!(!a.matches(b""));
    }

    #[test]
    fn deserializing_validates_and_serializing_needs_expose() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Wire {
            #[serde(serialize_with = "expose")]
            key: HmacKey,
            #[serde(
                default,
                serialize_with = "expose_option",
                skip_serializing_if = "Option::is_none"
            )]
            password: Option<ProxyPassword>,
        }
        let wire: Wire = serde_json::from_str(r#"{"key":"k@y:/x","password":"p:/@"}"#).unwrap();
        assert_eq!(wire.key, HmacKey::new("k@y:/x").unwrap());
        assert_eq!(
            serde_json::to_string(&wire).unwrap(),
            r#"{"key":"k@y:/x","password":"p:/@"}"#
        );
        let err = serde_json::from_str::<Wire>("{\"key\":\"bad\\u0000value\"}").unwrap_err();
        assert!(!err.to_string().contains("bad"), "{err}");
        assert!(serde_json::from_str::<Wire>(r#"{"key":""}"#).is_err());
    }
}
