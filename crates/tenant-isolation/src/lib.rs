//! Tenant identity, quotas, rate limits and PostgreSQL row-level security.
//!
//! **Status: in progress.** This crate will hold `TenantId`, `ChipId` and `SessionName`, the
//! tenant directory, atomic quota admission, anti-ban send pacing, per-tenant namespaces, and a
//! PostgreSQL store whose only path to tenant data is a tenant-scoped, RLS-enforced handle.
