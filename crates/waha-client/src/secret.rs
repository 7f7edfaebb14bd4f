//! Secret values: the WAHA API key, webhook HMAC keys, proxy passwords and webhook custom header
//! values.
//!
//! They are defined once for the whole workspace, in `fleet-vocab`, and re-exported here so
//! users of this crate need not import it. `Debug` and `Display` print `<redacted>`, equality
//! is constant-time, the memory is zeroed on drop, and the one way out is `expose_secret()`.
//! None of them implements `Serialize`: the few wire fields that must carry a secret to WAHA
//! (a session's proxy password, webhook HMAC key and custom header values) name
//! `serialize_with = "fleet_vocab::expose"` themselves. Never serialise a
//! [`SessionConfig`](crate::SessionConfig) into a log line.

pub use fleet_vocab::{ApiKey, HeaderValueSecret, HmacKey, ProxyPassword, REDACTED, SecretError};
