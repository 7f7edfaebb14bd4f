//! The vocabulary chipfleet's crates share, in one leaf crate that depends on no sibling.
//!
//! - [`ApiKey`], [`HmacKey`], [`ProxyPassword`], [`HeaderValueSecret`]: secret values whose
//!   `Debug` and `Display` print `<redacted>`, compared in constant time, zeroed on drop, with
//!   one accessor ([`ApiKey::expose_secret`]) and no `Serialize`.
//! - [`Clock`], [`SystemClock`], [`ManualClock`]: injectable time, so cooldowns, quotas and
//!   backoff are tested without sleeping.
//! - [`metadata`]: the keys chipfleet writes into a WAHA session's `metadata`, which WAHA echoes
//!   in every webhook of that session.
//!
//! `waha-client` and `tenant-isolation` both use these types and stay independent of each
//! other (the client knows no tenants); each re-exports what its users need, so nobody has to
//! import this crate by hand.
//!
//! ```
//! use fleet_vocab::{ApiKey, HmacKey};
//! let minted = ApiKey::generate()?; // 64 hex characters from the OS CSPRNG
//! assert_eq!(format!("{minted:?}"), "ApiKey(<redacted>)");
//! let from_outside = HmacKey::new("an existing server's key")?;
//! assert!(from_outside.matches(b"an existing server's key"));
//! assert!(HmacKey::new("").is_err());
//! # Ok::<(), fleet_vocab::SecretError>(())
//! ```

mod clock;
pub mod metadata;
mod secret;

#[cfg(feature = "mock")]
pub use clock::MockClock;
pub use clock::{Clock, ManualClock, SystemClock};
pub use secret::{
    ApiKey, HeaderValueSecret, HmacKey, MAX_LEN, ProxyPassword, REDACTED, SecretError, SecretValue,
    expose, expose_option,
};
