//! Proxy passwords: redacted everywhere except where a proxy or WAHA needs the real value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A proxy password.
///
/// `Debug` and `Display` print `<redacted>`; the memory is zeroed on drop. [`Serialize`] writes
/// the real value, because the one place this crate serializes a password is the WAHA session
/// `proxy` object ([`crate::WahaProxyConfig`]), which WAHA needs in clear text. Never log a
/// serialized value.
#[derive(Clone)]
pub struct ProxyPassword(SecretString);

impl ProxyPassword {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The real value, for the proxy handshake and the WAHA session body only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for ProxyPassword {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for ProxyPassword {}

impl fmt::Debug for ProxyPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyPassword(<redacted>)")
    }
}

impl fmt::Display for ProxyPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for ProxyPassword {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for ProxyPassword {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl Serialize for ProxyPassword {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for ProxyPassword {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact_but_serialize_keeps_the_value() {
        let password = ProxyPassword::new("p@ss:w/rd");
        assert_eq!(format!("{password:?}"), "ProxyPassword(<redacted>)");
        assert_eq!(password.to_string(), "<redacted>");
        assert_eq!(serde_json::to_string(&password).unwrap(), "\"p@ss:w/rd\"");
        let back: ProxyPassword = serde_json::from_str("\"p@ss:w/rd\"").unwrap();
        assert_eq!(back.expose(), "p@ss:w/rd");
    }
}
