//! One WAHA container per tenant, ready before it is used.
//!
//! **Status: planned.** This crate will hold the `ContainerRuntime` trait with Docker (bollard),
//! Docker Swarm and in-memory backends, and the pool that ensures a tenant's container exists
//! and is probed ready (container state, Docker health, authenticated HTTP probe) under one
//! configurable start-up deadline.
