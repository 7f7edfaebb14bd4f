//! HMAC-SHA512 signing of webhook bodies.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

/// `X-Webhook-Hmac`: lowercase hex HMAC-SHA512 of the raw body bytes.
pub(crate) fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waha_documentation_vector() {
        let mac = sign(
            b"my-secret-key",
            br#"{"event":"message","session":"default","engine":"WEBJS"}"#,
        );
        assert_eq!(
            mac,
            "208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8\
             097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89"
        );
        assert_eq!(mac, mac.to_lowercase());
    }
}
