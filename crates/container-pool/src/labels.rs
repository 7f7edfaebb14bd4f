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
/// The tenant's incarnation (`tenant_isolation::Incarnation`), minted when the tenant was
/// created: a tenant id reused after a purge gets a new one, so its containers and volumes
/// are told apart from the old tenant's. Not part of the spec hash.
pub const INCARNATION: &str = "io.chipfleet.incarnation";

/// The labels a tenant volume carries, copied from its container's: the pool, the tenant, the
/// slot and the tenant's incarnation. An existing volume is mounted only when it carries
/// every one of these that the container has, with the same values
/// ([`check_volume_labels`]); every runtime creates volumes with them.
pub const VOLUME_LABELS: [&str; 4] = [MANAGED_BY, TENANT, SLOT, INCARNATION];

/// Whether an existing volume `volume`, labelled `found`, may be mounted by a container that
/// wants `wanted` on it (the [`VOLUME_LABELS`] of the container, as
/// [`ContainerSpec::volume_labels`](crate::ContainerSpec::volume_labels) gives them): every
/// wanted label must be there with the same value, or it is
/// [`Error::VolumeConflict`](crate::Error::VolumeConflict) naming what differs. Runtimes call
/// it before mounting a volume that already exists (the conformance suite checks it).
pub fn check_volume_labels(
    volume: &str,
    wanted: &std::collections::BTreeMap<String, String>,
    found: &std::collections::BTreeMap<String, String>,
) -> Result<(), crate::Error> {
    let differences: Vec<String> = wanted
        .iter()
        .filter(|(key, value)| found.get(*key) != Some(*value))
        .map(|(key, value)| match found.get(key) {
            Some(other) => format!("`{key}` is `{other}`, not `{value}`"),
            None => format!("it has no `{key}` label (wanted `{value}`)"),
        })
        .collect();
    if differences.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::VolumeConflict {
            volume: volume.to_owned(),
            reason: differences.join("; "),
        })
    }
}

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Error;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_volume_is_mountable_only_with_every_wanted_label() {
        let wanted = labels(&[(MANAGED_BY, "cf"), (TENANT, "acme"), (INCARNATION, "inc-2")]);
        let mut same = wanted.clone();
        same.insert("other".into(), "x".into());
        check_volume_labels("v", &wanted, &same).unwrap();
        let older = labels(&[(MANAGED_BY, "cf"), (TENANT, "acme"), (INCARNATION, "inc-1")]);
        match check_volume_labels("v", &wanted, &older) {
            Err(Error::VolumeConflict { volume, reason }) => {
                assert_eq!(volume, "v");
                assert!(
                    reason.contains(INCARNATION) && reason.contains("inc-1"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let unlabelled = BTreeMap::new();
        let err = check_volume_labels("v", &wanted, &unlabelled).unwrap_err();
        assert_eq!(err.kind(), "volume_conflict");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(MANAGED_BY), "{err}");
    }
}
