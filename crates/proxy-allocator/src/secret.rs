//! Proxy passwords: defined once for the workspace in `fleet-vocab`, re-exported here.
//!
//! `Debug` and `Display` print `<redacted>`, the memory is zeroed on drop, and the one way out
//! is `expose_secret()`, called for the proxy handshake (health checks) and, through
//! `waha_client::ProxyConfig`, for the WAHA session body. No secret type implements `Serialize`.
//! A password must be non-empty with no control characters.

pub use fleet_vocab::ProxyPassword;
