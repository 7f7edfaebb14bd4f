//! The labels every pool-managed container (and volume) carries.
//!
//! Labels are the pool's only state on the container host: `ensure` finds a tenant's container
//! by them, the orphan sweep and idle reaping list by them, and rolling replace compares the
//! spec hash. Nothing is kept only in the pool's memory that a restart would lose.

/// Who manages the container: the pool's [`managed_by`](crate::PoolConfig::managed_by) value.
/// Two pools with different values never touch each other's containers.
pub const MANAGED_BY: &str = "io.chipfleet.managed-by";
/// The tenant id.
pub const TENANT: &str = "io.chipfleet.tenant";
/// The container's slot within its tenant (0, 1, ...): see [`Placement`](crate::Placement).
pub const SLOT: &str = "io.chipfleet.slot";
/// [`ContainerSpec::spec_hash`](crate::ContainerSpec::spec_hash) of the spec it was created from.
pub const SPEC_HASH: &str = "io.chipfleet.spec-hash";
/// A keyed fingerprint of the API key the container was started with
/// ([`KeyFingerprintSecret::fingerprint`](crate::KeyFingerprintSecret::fingerprint)); never the
/// key. Not part of the spec hash: a mismatch is a key rotation, which `ensure` repairs.
pub const KEY_FINGERPRINT: &str = "io.chipfleet.key-fingerprint";
/// How the container is addressed ([`Addressing::label_value`](crate::Addressing::label_value)).
pub const ADDRESSING: &str = "io.chipfleet.addressing";
/// The port WAHA listens on inside the container.
pub const PORT: &str = "io.chipfleet.port";

/// A set of `key=value` labels that must all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, String)>);

impl LabelSelector {
    /// Matches every container carrying `key=value`.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self(vec![(key.into(), value.into())])
    }

    /// Also requires `key=value`.
    pub fn and(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// The required pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Whether `labels` carry every required pair.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}
