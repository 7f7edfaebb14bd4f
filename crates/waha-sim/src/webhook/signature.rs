//! HMAC-SHA512 signing of webhook bodies.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

/// `X-Webhook-Hmac`: lowercase hex HMAC-SHA512 of the raw body bytes.
///
/// `None` if the HMAC cannot be keyed with `key`. HMAC takes keys of any length, so this does
/// not happen with the `hmac` crate; the key comes from a request, so it is still handled
/// without a panic, and the caller then sends nothing rather than an unsigned delivery.
pub(crate) fn sign(key: &[u8], body: &[u8]) -> Option<String> {
    let mut mac = match <Hmac<Sha512> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return None,
    };
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waha_documentation_vector() {
        let mac = sign(
            b"my-secret-key",
            br#"{"event":"message","session":"default","engine":"WEBJS"}"#,
        )
        .unwrap();
        assert_eq!(
            mac,
            "208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8\
             097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89"
        );
        assert_eq!(mac, mac.to_lowercase());
    }

    #[test]
    fn keys_of_any_length_sign() {
        // Empty, shorter than, equal to and longer than SHA-512's 128-byte block.
        for len in [0, 1, 127, 128, 129, 1000] {
            let key = vec![0x5a; len];
            let mac = sign(&key, b"body").unwrap();
            assert_eq!(mac.len(), 128, "{len}");
            assert_ne!(mac, sign(&[0x5b; 3], b"body").unwrap());
        }
    }
}
