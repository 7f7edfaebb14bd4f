//! The tenant's secret types: defined once for the workspace in `fleet-vocab`, re-exported here.
//!
//! `Debug` and `Display` print `<redacted>`, equality is constant-time, none implements
//! `Serialize`, and the one way out is `expose_secret()`. Keys this crate mints
//! ([`TenantSecrets::generate`](crate::TenantSecrets::generate)) are 32 bytes of the OS CSPRNG;
//! keys from outside (an existing server's key) must be non-empty, with no control characters.

pub use fleet_vocab::{ApiKey, HmacKey, SecretError};
