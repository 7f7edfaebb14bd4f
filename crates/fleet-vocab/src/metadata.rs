//! The keys chipfleet writes into a WAHA session's `config.metadata`.
//!
//! WAHA echoes a session's metadata in every webhook it sends for that session, so these keys
//! let the receiver cross-check the session name it parsed against the tenant and chip it was
//! created for. WAHA accepts string values only.

/// The tenant id (`TenantId` as text).
pub const TENANT: &str = "tenant";

/// The chip id (`ChipId` as text).
pub const CHIP: &str = "chip";
