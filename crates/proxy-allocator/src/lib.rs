//! Sticky, health-checked proxy leases per chip.
//!
//! A WhatsApp number that changes IP on every reconnect looks like a stolen account. This crate
//! treats a proxy as a leased resource: each chip holds one lease that survives restarts and
//! reconciles, endpoints carry a capped number of chips, chips are matched to proxies of their
//! phone number's country, and a chip is moved only after repeated failures, with a cooldown and
//! a recorded history.
//!
//! ```
//! use std::sync::Arc;
//! use proxy_allocator::{
//!     AllocationPolicy, ChipProxyRequest, InMemoryLeaseStore, ProxyAllocator, StaticListSource,
//! };
//! use tenant_isolation::{ChipId, TenantId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = StaticListSource::parse(
//!     "http://user:p%40ss%3Aw%2Frd%25@203.0.113.7:3128 country=BR\n\
//!      socks5://user:secret@198.51.100.2:1080 country=PT\n",
//! )?;
//! let allocator = ProxyAllocator::new(
//!     Arc::new(source),
//!     Arc::new(InMemoryLeaseStore::new()),
//!     AllocationPolicy::default(),
//! )?;
//!
//! let chip = ChipProxyRequest::new(TenantId::new("acme")?, ChipId::new("chip-1")?)
//!     .with_phone("+55 11 99999-9999");
//! let lease = allocator.allocate(&chip).await?;
//! // The Brazilian proxy. Default ids are `scheme://host:port`, plus `#` and a hash when the
//! // URL has a user name (never the user name itself).
//! assert!(lease.endpoint.as_str().starts_with("http://203.0.113.7:3128#"));
//! assert_eq!(allocator.allocate(&chip).await?, lease); // sticky
//!
//! // The WAHA session `proxy` object: the password arrives decoded and intact.
//! let proxy = allocator.waha_proxy(&lease).await?;
//! assert_eq!(proxy.server, "203.0.113.7:3128");
//! assert_eq!(proxy.password.as_ref().map(|p| p.expose_secret()), Some("p@ss:w/rd%"));
//! assert!(!format!("{proxy:?}").contains("p@ss")); // redacted in Debug
//! # Ok(()) }
//! ```
//!
//! # Parts
//! - [`ProxySource`]: where endpoints come from: [`StaticListSource`] (URLs from configuration
//!   or a file), [`RotatingGatewaySource`] (sticky sessions encoded in the user name through a
//!   [`UsernameTemplate`]), [`ChainedSource`] to combine them.
//! - [`LeaseStore`]: [`InMemoryLeaseStore`] (always compiled) and, with the `postgres` feature,
//!   `PostgresLeaseStore`, which survives restarts and allocates atomically across replicas.
//!   [`conformance`] is the suite both pass. Each chip's history is kept within a
//!   [`HistoryRetention`] (a count per chip on write, an age through
//!   [`LeaseStore::prune_history`]); generations never depend on it.
//! - [`ProxyAllocator`] applies the [`AllocationPolicy`]: stickiness, a cap per endpoint,
//!   country matching ([`country_for_phone`]), optional tenant exclusivity, release on chip
//!   deletion, rotation after repeated failures with a cooldown, and
//!   [`ProxyAllocator::purge_tenant`], which erases a purged tenant's leases and history
//!   (before `AdminDb::purge_tenant`; generations are kept).
//! - Health: [`TunnelHealthChecker`] opens an HTTP `CONNECT` or SOCKS5 tunnel through a proxy to
//!   a target you choose and measures the latency; [`HttpEchoProbe`] reads the egress IP from an
//!   echo URL you supply. [`ProxyAllocator::check_endpoints`] and
//!   [`ProxyAllocator::check_lease`] record the verdicts.
//! - [`ProxyAddress::waha_proxy`]: the WAHA session `proxy` object (`waha_client::ProxyConfig`) for a lease (HTTP proxies only: WAHA
//!   tunnels with HTTP `CONNECT`).
//!
//! # Secrets
//! Passwords live in [`ProxyPassword`], whose `Debug` and `Display` print `<redacted>`.
//! [`ProxyAddress`] shows only `scheme://host:port` (`Display`) or the scheme, host, port and
//! whether there are credentials (`Debug`: never the user name, which on a gateway carries the
//! session id); errors and log lines name proxies by endpoint id or `host:port` and never echo
//! a URL.
//!
//! # Features
//! - `postgres`: `PostgresLeaseStore` (deadpool-postgres, tokio-postgres).
//! - `mock`: mockall mocks `MockProxySource`, `MockLeaseStore`, `MockHealthChecker`,
//!   `MockEgressIpProbe`.

mod address;
mod allocator;
mod clock;
pub mod conformance;
mod country;
mod endpoint;
mod error;
mod health;
mod lease;
mod policy;
mod retention;
mod secret;
mod source;
mod store;
mod waha;

pub use address::{ProxyAddress, ProxyScheme};
pub use allocator::{ChipProxyRequest, EndpointCheck, FailureOutcome, LeaseCheck, ProxyAllocator};
pub use clock::{Clock, ManualClock, SystemClock};
#[allow(deprecated)] // `CALLING_CODES` stays exported for code that names it.
pub use country::{CALLING_CODES, CountryCode, country_for_phone};
pub use endpoint::{EndpointId, EndpointKind, ProxyEndpoint};
pub use error::{CredentialProblem, NoCapacityReason, ProxyError};
pub use health::{
    EgressIpProbe, HealthChecker, HealthReport, HttpEchoProbe, TargetAddr, TunnelHealthChecker,
};
#[cfg(feature = "mock")]
pub use health::{MockEgressIpProbe, MockHealthChecker};
pub use lease::{
    Allocation, AllocationRequest, Candidate, EgressIpChange, EgressIpUpdate, EndpointLoad,
    HistoryEvent, LeaseHealth, LeaseUpdate, ProxyHistoryEntry, ProxyLease, Replace,
};
pub use policy::{AllocationPolicy, CountryMatch};
pub use retention::HistoryRetention;
pub use secret::ProxyPassword;
#[cfg(feature = "mock")]
pub use source::MockProxySource;
pub use source::ProxySource;
pub use source::chained::ChainedSource;
pub use source::gateway::{
    GatewayEndpoint, RotatingGatewayConfig, RotatingGatewaySource, UsernameTemplate,
};
pub use source::static_list::{StaticListSource, StaticProxyEntry};
pub use store::LeaseStore;
#[cfg(feature = "mock")]
pub use store::MockLeaseStore;
pub use store::memory::{InMemoryLeaseStore, InMemoryStoreSize};
#[cfg(feature = "postgres")]
pub use store::postgres::PostgresLeaseStore;
