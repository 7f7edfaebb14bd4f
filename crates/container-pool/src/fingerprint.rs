//! Keyed fingerprints of tenant API keys, stored in the key-fingerprint label.
//!
//! The spec hash leaves secret values out, so a rotated key would not show as drift. Each
//! container instead carries `HMAC-SHA256(secret, api key)` (truncated to 128 bits) in
//! [`labels::KEY_FINGERPRINT`](crate::labels::KEY_FINGERPRINT). The HMAC secret never leaves
//! the pool, so the label tells nothing about the key to anyone who can read container labels.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{ApiKey, Error};

/// Domain separation of the fingerprint's input.
const CONTEXT: &[u8] = b"chipfleet container-pool api-key fingerprint v1\0";

/// The HMAC secret of key fingerprints. `Debug` redacts it.
///
/// Give every replica of a deployment the same secret (from your secret store) so that a
/// restarted host application recognises the fingerprints its containers carry. Without one,
/// each pool draws a random secret: after a restart, fingerprints no longer match, and `ensure`
/// then keeps a container that accepts the current key and re-creates one that refuses it
/// (see `docs/container-pool.md`).
#[derive(Clone)]
pub struct KeyFingerprintSecret(Arc<[u8]>);

impl KeyFingerprintSecret {
    /// The smallest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A secret from bytes (at least [`MIN_LEN`](Self::MIN_LEN)).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, Error> {
        let bytes = bytes.as_ref();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::InvalidConfig(format!(
                "the key fingerprint secret must have at least {} bytes",
                Self::MIN_LEN
            )));
        }
        Ok(Self(Arc::from(bytes)))
    }

    /// 32 random bytes from the operating system.
    pub fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::InvalidConfig(format!("no randomness for the key fingerprint secret: {e}"))
        })?;
        Self::new(bytes)
    }

    /// The fingerprint of `key`: 32 hex characters.
    pub fn fingerprint(&self, key: &ApiKey) -> String {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        mac.update(CONTEXT);
        mac.update(key.expose_secret().as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

impl fmt::Debug for KeyFingerprintSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFingerprintSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_stable_and_reveal_nothing() {
        let a = KeyFingerprintSecret::new([1u8; 32]).unwrap();
        let b = KeyFingerprintSecret::new([2u8; 32]).unwrap();
        let key = ApiKey::new("tenant-key-0123456789").unwrap();
        let fp = a.fingerprint(&key);
        assert_eq!(fp.len(), 32);
        assert_eq!(fp, a.fingerprint(&key), "stable");
        assert_ne!(fp, b.fingerprint(&key), "keyed by the secret");
        assert_ne!(
            fp,
            a.fingerprint(&ApiKey::new("tenant-key-rotated").unwrap())
        );
        assert!(!fp.contains("tenant-key"));
        assert_eq!(format!("{a:?}"), "KeyFingerprintSecret(<redacted>)");
        assert!(KeyFingerprintSecret::new([0u8; 8]).is_err());
        assert_ne!(
            KeyFingerprintSecret::random().unwrap().fingerprint(&key),
            KeyFingerprintSecret::random().unwrap().fingerprint(&key)
        );
    }
}
