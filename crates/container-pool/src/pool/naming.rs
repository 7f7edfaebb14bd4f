//! Container and volume names, and reading tenant and slot back from labels.

use sha2::{Digest, Sha256};

use crate::{ContainerInfo, TenantId, labels};

/// `<prefix>-<tenant>-<slot>`. Tenant ids are 1-24 characters of `a-z0-9-` and the prefix is
/// checked by [`PoolConfig::validate`](crate::PoolConfig::validate), so the name is valid for
/// Docker containers, volumes and Swarm services (at most 32 + 1 + 24 + 1 + 10 characters).
pub(crate) fn container_name(prefix: &str, tenant: &TenantId, slot: u32) -> String {
    format!("{prefix}-{}-{slot}", tenant.as_str())
}

/// The tenant slot's volume.
pub(crate) fn volume_name(container_name: &str) -> String {
    format!("{container_name}-sessions")
}

/// The slot label of a container.
pub(crate) fn slot_of(info: &ContainerInfo) -> Option<u32> {
    info.label(labels::SLOT)?.parse().ok()
}

/// The tenant label of a container, if it parses as a tenant id.
pub(crate) fn tenant_of(info: &ContainerInfo) -> Option<TenantId> {
    TenantId::new(info.label(labels::TENANT)?).ok()
}

/// A stable number in `0..modulus` derived from a name (for the auto-start stagger).
pub(crate) fn stable_share(name: &str, modulus: u64) -> u64 {
    if modulus == 0 {
        return 0;
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % modulus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_shares_are_stable() {
        let tenant = TenantId::new("acme-01").unwrap();
        assert_eq!(container_name("cf", &tenant, 2), "cf-acme-01-2");
        assert_eq!(volume_name("cf-acme-01-2"), "cf-acme-01-2-sessions");
        assert!(stable_share("x", 30) < 30);
        assert_eq!(stable_share("x", 30), stable_share("x", 30));
        assert_eq!(stable_share("x", 0), 0);
    }
}
