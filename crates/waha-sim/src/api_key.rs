//! The server's API key and how a presented key is checked.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::SimError;

/// Keys that WAHA considers too weak: it replaces them with a random key at start-up, so a
/// client presenting one of them is refused.
const WEAK_KEYS: &[&str] = &[
    "123", "1234", "12345", "123456", "321", "admin", "waha", "password", "secret", "key",
    "apikey", "api-key", "qwerty", "test",
];

/// An API key. Its `Debug` output is redacted; the value is reachable only through
/// [`ApiKey::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key in clear text (for sending it in `X-Api-Key`; never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn random() -> Self {
        Self(format!("{:032x}", fastrand::u128(..)))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How the server checks the key presented in `X-Api-Key` (or the `x-api-key` query parameter).
#[derive(Clone)]
pub(crate) enum KeyCheck {
    /// `WAHA_NO_API_KEY=true` or no key configured: every call is accepted.
    Disabled,
    /// Compare the presented key with this one, in constant time.
    Plain(ApiKey),
    /// `sha512:<hex>`: compare sha512(presented key) with this digest, in constant time.
    Sha512([u8; 64]),
}

impl std::fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => f.write_str("Disabled"),
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Sha512(_) => f.write_str("Sha512(<redacted>)"),
        }
    }
}

impl KeyCheck {
    /// Interprets a configured value the way WAHA does: `sha512:<hex>` is a digest, a weak key is
    /// replaced by a random one (with a warning that does not show either key).
    pub(crate) fn from_setting(setting: &str, raw: &str) -> Result<Self, SimError> {
        if let Some(hex_digest) = raw.strip_prefix("sha512:") {
            let bytes = hex::decode(hex_digest.trim()).map_err(|_| {
                SimError::setting(setting, "`sha512:` must be followed by a hex digest")
            })?;
            let digest: [u8; 64] = bytes.try_into().map_err(|_| {
                SimError::setting(setting, "a sha512 digest has 128 hex characters")
            })?;
            return Ok(Self::Sha512(digest));
        }
        if raw.is_empty() {
            return Err(SimError::setting(setting, "the API key is empty"));
        }
        if WEAK_KEYS.contains(&raw.to_ascii_lowercase().as_str()) {
            tracing::warn!(
                setting,
                "weak API key replaced by a random one, as WAHA does: clients using it will get 401"
            );
            return Ok(Self::Plain(ApiKey::random()));
        }
        Ok(Self::Plain(ApiKey::new(raw)))
    }

    /// Whether a presented key (if any) opens the API.
    pub(crate) fn accepts(&self, presented: Option<&str>) -> bool {
        match self {
            Self::Disabled => true,
            Self::Plain(key) => presented.is_some_and(|p| {
                let (a, b) = (p.as_bytes(), key.expose().as_bytes());
                a.len() == b.len() && bool::from(a.ct_eq(b))
            }),
            Self::Sha512(digest) => presented.is_some_and(|p| {
                let got = Sha512::digest(p.as_bytes());
                bool::from(got.as_slice().ct_eq(digest.as_slice()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_key_is_compared_exactly() {
        let check = KeyCheck::from_setting("k", "s3cret-key").unwrap();
        assert!(check.accepts(Some("s3cret-key")));
        assert!(!check.accepts(Some("s3cret-kez")));
        assert!(!check.accepts(Some("s3cret")));
        assert!(!check.accepts(None));
    }

    #[test]
    fn sha512_form_compares_the_digest() {
        let digest = hex::encode(Sha512::digest(b"hunter22-long"));
        let check = KeyCheck::from_setting("k", &format!("sha512:{digest}")).unwrap();
        assert!(check.accepts(Some("hunter22-long")));
        assert!(!check.accepts(Some(&format!("sha512:{digest}"))));
        assert!(KeyCheck::from_setting("k", "sha512:abc").is_err());
        assert!(KeyCheck::from_setting("k", "sha512:zz").is_err());
    }

    #[test]
    fn weak_keys_are_replaced() {
        let check = KeyCheck::from_setting("k", "admin").unwrap();
        assert!(!check.accepts(Some("admin")));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("very-secret-value");
        assert!(!format!("{key:?}").contains("very-secret"));
        let check = KeyCheck::from_setting("k", "very-secret-value").unwrap();
        assert!(!format!("{check:?}").contains("very-secret"));
    }
}
