//! Sticky, health-checked proxy leases per chip.
//!
//! **Status: planned.** This crate will hold the `ProxySource` and `LeaseStore` traits, static
//! list and rotating-gateway sources, in-memory and PostgreSQL lease stores, the sticky
//! allocation policy, and the proxy health checker.
