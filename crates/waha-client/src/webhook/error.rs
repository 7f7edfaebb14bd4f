//! Why a webhook delivery was refused: the receiving side's error, apart from the errors of
//! calls to WAHA ([`WahaError`](crate::WahaError)).

/// A webhook delivery failed verification or parsing. Answer it with a 4xx and do not act on
/// it; none of these improves by retrying the same bytes. No variant quotes the body, the key
/// or a value under a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// `X-Webhook-Hmac` is missing: configure `hmac.key` on the session, or the sender is not
    /// WAHA.
    #[error("webhook signature header X-Webhook-Hmac is missing")]
    SignatureMissing,
    /// `X-Webhook-Hmac` is not 128 hex digits (or not text).
    #[error("webhook signature is malformed: {reason}")]
    SignatureMalformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature does not match the body and key: forged, altered, or signed with another
    /// key.
    #[error("webhook signature does not match the body")]
    SignatureMismatch,
    /// `X-Webhook-Hmac-Algorithm` names an algorithm other than `sha512`.
    #[error("unsupported webhook signature algorithm {algorithm:?} (only sha512 is supported)")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm the header named (truncated to 32 characters).
        algorithm: String,
    },
    /// The (verified) body is not a webhook this crate can read.
    #[error("webhook body does not decode at {path}: {message}")]
    Decode {
        /// The JSON path of the failing value (`.` for the root), e.g. `payload.status`.
        path: String,
        /// What was wrong (never a string value from the body).
        message: String,
    },
}

impl WebhookError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SignatureMissing => "signature_missing",
            Self::SignatureMalformed { .. } => "signature_malformed",
            Self::SignatureMismatch => "signature_mismatch",
            Self::UnsupportedSignatureAlgorithm { .. } => "unsupported_signature_algorithm",
            Self::Decode { .. } => "decode",
        }
    }

    /// Never: the same bytes fail the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// Whether the delivery failed its signature check (as opposed to decoding after it).
    pub fn is_signature_failure(&self) -> bool {
        !matches!(self, Self::Decode { .. })
    }
}

impl From<crate::WahaError> for WebhookError {
    /// Only decode errors arise while parsing a webhook; anything else is reported as one at
    /// the root, so a parse failure is never mistaken for a signature failure.
    fn from(err: crate::WahaError) -> Self {
        match err {
            crate::WahaError::Decode { path, message, .. } => Self::Decode { path, message },
            other => Self::Decode {
                path: ".".into(),
                message: other.to_string(),
            },
        }
    }
}
