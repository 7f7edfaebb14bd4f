//! # chipfleet
//!
//! Run a fleet of WhatsApp numbers ("chips") for many tenants on top of WAHA.
//!
//! This facade crate re-exports the workspace's library crates behind cargo features of the
//! same name (all on by default):
//!
//! | feature | crate | what it holds |
//! |---|---|---|
//! | (always) | [`fleet_vocab`] | the shared vocabulary: secret types, the clock, webhook metadata keys |
//! | `waha-client` | [`waha_client`] | typed WAHA HTTP client, webhook types, HMAC verification |
//! | `tenant-isolation` | [`tenant_isolation`] | tenant ids, session names, quotas, rate limits, PostgreSQL RLS |
//! | `container-pool` | [`container_pool`] | one WAHA container per tenant (Docker, Swarm, in-memory) |
//! | `proxy-allocator` | [`proxy_allocator`] | sticky proxy leases per chip |
//! | `session-supervisor` | [`session_supervisor`] | the controller: lifecycle, reconcile, webhooks, events |
//!
//! See the repository's `README.md` for the status of each crate.

pub use fleet_vocab;

/// The README's code, compiled and run as doctests ("Assemble your own service").
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "waha-client")]
pub use waha_client;

#[cfg(feature = "tenant-isolation")]
pub use tenant_isolation;

#[cfg(feature = "container-pool")]
pub use container_pool;

#[cfg(feature = "proxy-allocator")]
pub use proxy_allocator;

#[cfg(feature = "session-supervisor")]
pub use session_supervisor;
