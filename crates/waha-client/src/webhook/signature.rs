//! HMAC-SHA512 webhook signatures (`X-Webhook-Hmac`), checked over the raw body bytes in
//! constant time, before any JSON is parsed.

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha512;

use super::error::WebhookError;
use crate::secret::HmacKey;

/// The header that carries the signature: lowercase hex HMAC-SHA512 of the raw body.
pub const SIGNATURE_HEADER: &str = "x-webhook-hmac";
/// The header that names the algorithm (`sha512`).
pub const ALGORITHM_HEADER: &str = "x-webhook-hmac-algorithm";

/// The only algorithm WAHA uses.
const SHA512: &str = "sha512";
/// Hex digits in a SHA-512 MAC.
const SIGNATURE_HEX_LEN: usize = 128;

fn mac(key: &HmacKey) -> Hmac<Sha512> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    Hmac::<Sha512>::new_from_slice(key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// The signature WAHA would send for `body`: lowercase hex HMAC-SHA512. Useful for fakes and
/// tests. [`verify`] refuses an empty key, so a signature made with one never verifies.
pub fn sign(key: &HmacKey, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a webhook signature over the exact body bytes, in constant time.
///
/// `signature` is the `X-Webhook-Hmac` value, `algorithm` the `X-Webhook-Hmac-Algorithm` value
/// (absent means `sha512`).
///
/// # Errors
/// [`WebhookError::SignatureMissing`], [`WebhookError::SignatureMalformed`] (not 128 hex digits),
/// [`WebhookError::UnsupportedSignatureAlgorithm`], [`WebhookError::SignatureMismatch`].
pub fn verify(
    key: &HmacKey,
    body: &[u8],
    signature: Option<&str>,
    algorithm: Option<&str>,
) -> Result<(), WebhookError> {
    if let Some(algorithm) = algorithm.map(str::trim)
        && !algorithm.eq_ignore_ascii_case(SHA512)
    {
        return Err(WebhookError::UnsupportedSignatureAlgorithm {
            algorithm: algorithm.chars().take(32).collect(),
        });
    }
    let signature = signature.ok_or(WebhookError::SignatureMissing)?.trim();
    if signature.len() != SIGNATURE_HEX_LEN {
        return Err(WebhookError::SignatureMalformed {
            reason: "expected 128 hex digits (HMAC-SHA512)",
        });
    }
    let expected = hex::decode(signature).map_err(|_| WebhookError::SignatureMalformed {
        reason: "not hexadecimal",
    })?;
    let mut mac = mac(key);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::SignatureMismatch)
}

/// [`verify`] with the signature and algorithm taken from the request headers.
///
/// # Errors
/// As [`verify`]; a header that is not valid text is `SignatureMalformed` (or an unsupported
/// algorithm).
pub fn verify_headers(key: &HmacKey, headers: &HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| WebhookError::SignatureMalformed {
                    reason: "header is not ASCII text",
                })
        })
        .transpose()?;
    let algorithm = headers
        .get(ALGORITHM_HEADER)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| WebhookError::UnsupportedSignatureAlgorithm {
                    algorithm: "<not text>".into(),
                })
        })
        .transpose()?;
    verify(key, body, signature, algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WAHA's published test vector (its webhook docs): the prefix and suffix are from the
    /// docs, the full value was computed once and pinned.
    const VECTOR_BODY: &[u8] = br#"{"event":"message","session":"default","engine":"WEBJS"}"#;
    const VECTOR_SIGNATURE: &str = "208f8a55dde9e05519e898b10b89bf0d0b3b0fdf11fdbf09b6b90476301b98d8097c462b2b17a6ce93b6b47a136cf2e78a33a63f6752c2c1631777076153fa89";

    #[test]
    fn wahas_published_test_vector() {
        let key = HmacKey::new("my-secret-key").unwrap();
        let signature = sign(&key, VECTOR_BODY);
        assert!(signature.starts_with("208f8a55") && signature.ends_with("153fa89"));
        assert_eq!(signature, VECTOR_SIGNATURE);
        verify(&key, VECTOR_BODY, Some(VECTOR_SIGNATURE), Some("sha512")).unwrap();
        verify(&key, VECTOR_BODY, Some(VECTOR_SIGNATURE), None).unwrap();
    }

    #[test]
    fn distinct_errors() {
        let key = HmacKey::new("my-secret-key").unwrap();
        let kind = |signature: Option<&str>, algorithm: Option<&str>, body: &[u8]| {
            verify(&key, body, signature, algorithm).unwrap_err().kind()
        };
        assert_eq!(kind(None, Some("sha512"), VECTOR_BODY), "signature_missing");
        assert_eq!(kind(Some("abc"), None, VECTOR_BODY), "signature_malformed");
        assert_eq!(
            kind(Some(&"zz".repeat(64)), None, VECTOR_BODY),
            "signature_malformed"
        );
        assert_eq!(
            kind(Some(VECTOR_SIGNATURE), Some("sha256"), VECTOR_BODY),
            "unsupported_signature_algorithm"
        );
        assert_eq!(
            kind(Some(VECTOR_SIGNATURE), None, b"{\"event\":\"message\"}"),
            "signature_mismatch"
        );
        let other_key = HmacKey::new("another-key").unwrap();
        assert!(matches!(
            verify(&other_key, VECTOR_BODY, Some(VECTOR_SIGNATURE), None),
            Err(WebhookError::SignatureMismatch)
        ));
    }

    #[test]
    fn an_empty_key_cannot_be_built_so_nothing_verifies_under_it() {
        // Anyone can compute a MAC under the empty key; the key type refuses it up front.
        assert!(HmacKey::new("").is_err());
    }

    #[test]
    fn headers_are_read() {
        let key = HmacKey::new("my-secret-key").unwrap();
        let mut headers = HeaderMap::new();
        assert!(matches!(
            verify_headers(&key, &headers, VECTOR_BODY),
            Err(WebhookError::SignatureMissing)
        ));
        headers.insert("X-Webhook-Hmac", VECTOR_SIGNATURE.parse().unwrap());
        headers.insert("X-Webhook-Hmac-Algorithm", "sha512".parse().unwrap());
        verify_headers(&key, &headers, VECTOR_BODY).unwrap();
    }
}
