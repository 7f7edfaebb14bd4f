//! Redacting secret types: the container API key and the webhook HMAC key.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// Validates a secret: 16..=256 visible ASCII characters (no spaces or control characters, so
/// it travels safely in an HTTP header or a JSON string).
fn validate_secret(value: &str, what: &'static str) -> Result<(), Error> {
    let reason = if value.len() < 16 {
        "it must have at least 16 characters"
    } else if value.len() > 256 {
        "it must have at most 256 characters"
    } else if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        "it may contain only visible ASCII characters (no spaces or control characters)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidSecret { what, reason })
}

/// 32 bytes from the operating system's CSPRNG, hex encoded (64 characters).
fn random_hex() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Entropy {
        detail: e.to_string(),
    })?;
    Ok(hex::encode(bytes))
}

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Validates and wraps a secret: 16 to 256 visible ASCII characters.
            ///
            /// # Errors
            /// [`Error::InvalidSecret`], which never contains the value.
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                validate_secret(&value, $what)?;
                Ok(Self(SecretString::from(value)))
            }

            /// A fresh random secret: 256 bits from the OS CSPRNG, hex encoded.
            ///
            /// # Errors
            /// [`Error::Entropy`] when the OS random source fails.
            pub fn generate() -> Result<Self, Error> {
                Ok(Self(SecretString::from(random_hex()?)))
            }

            /// The secret in clear text, for the one place that must send or use it.
            /// Never log the result.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }

            /// Compares `candidate` with the secret in constant time.
            pub fn matches(&self, candidate: &[u8]) -> bool {
                self.0.expose_secret().as_bytes().ct_eq(candidate).into()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }

        /// Constant-time comparison.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.matches(other.expose_secret().as_bytes())
            }
        }

        impl Eq for $name {}
    };
}

secret_type!(
    /// The API key of a tenant's WAHA container (`X-Api-Key`). `Debug` and `Display` print
    /// `<redacted>`; it has no `Serialize` impl, so it cannot leak through serialization.
    ///
    /// ```
    /// use tenant_isolation::ApiKey;
    /// let key = ApiKey::new("0123456789abcdef-secret")?;
    /// assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    /// assert!(key.matches(b"0123456789abcdef-secret"));
    /// # Ok::<(), tenant_isolation::Error>(())
    /// ```
    ApiKey,
    "container API key"
);

secret_type!(
    /// The key WAHA signs a tenant's webhooks with (HMAC-SHA512). `Debug` and `Display` print
    /// `<redacted>`; it has no `Serialize` impl.
    HmacKey,
    "webhook HMAC key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_everywhere() {
        let key = ApiKey::new("super-secret-value-123").unwrap();
        let hmac = HmacKey::new("another-secret-value-456").unwrap();
        for text in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{key:#?}"),
            format!("{hmac:?}"),
            format!("{hmac}"),
        ] {
            assert!(!text.contains("secret-value"), "leaked: {text}");
            assert!(text.contains("<redacted>"));
        }
    }

    #[test]
    fn refusals_do_not_echo_the_value() {
        for bad in ["short", "has a space inside it", "tab\tinside-the-secret"] {
            let err = HmacKey::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSecret { .. }));
            let text = format!("{err} {err:?}");
            assert!(!text.contains(bad), "{text}");
        }
        assert!(ApiKey::new("x".repeat(257)).is_err());
    }

    #[test]
    fn generated_keys_are_distinct_and_valid() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose_secret().len(), 64);
        assert!(ApiKey::new(a.expose_secret()).is_ok());
        assert!(!a.matches(b.expose_secret().as_bytes()));
        assert!(!a.matches(b""));
    }
}
