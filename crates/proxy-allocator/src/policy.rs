//! The allocation policy: caps, country matching, exclusivity and rotation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the allocator treats a chip's country (from [`crate::ChipProxyRequest::country`], or its
/// phone number's calling code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CountryMatch {
    /// Ignore countries.
    Off,
    /// Use an endpoint of the chip's country when one has room, any other otherwise.
    #[default]
    Prefer,
    /// Use only endpoints of the chip's country; a chip whose country is unknown may use any.
    Require,
}

/// Rules for placing chips on endpoints. Plain data; every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllocationPolicy {
    /// The most chips sharing one fixed endpoint (one egress IP). Default 3. Gateways give every
    /// lease its own session, so their limit is the gateway's `max_sessions` instead.
    pub max_chips_per_endpoint: u32,
    /// Never share a fixed endpoint between tenants. Default `false`.
    pub tenant_exclusive: bool,
    /// Country matching. Default [`CountryMatch::Prefer`].
    pub country_match: CountryMatch,
    /// Consecutive failures after which a chip is moved to another endpoint (or, on a gateway,
    /// another session). Default 3.
    pub rotate_after_failures: u32,
    /// A lease younger than this is never rotated, and an endpoint a chip was rotated away from
    /// is avoided for this long. Default 10 minutes.
    #[serde(with = "secs")]
    pub rotation_cooldown: Duration,
}

impl Default for AllocationPolicy {
    fn default() -> Self {
        Self {
            max_chips_per_endpoint: 3,
            tenant_exclusive: false,
            country_match: CountryMatch::Prefer,
            rotate_after_failures: 3,
            rotation_cooldown: Duration::from_secs(600),
        }
    }
}

impl AllocationPolicy {
    pub(crate) fn validate(&self) -> Result<(), crate::ProxyError> {
        if self.max_chips_per_endpoint == 0 {
            return Err(crate::ProxyError::config(
                "max_chips_per_endpoint must be at least 1",
            ));
        }
        if self.rotate_after_failures == 0 {
            return Err(crate::ProxyError::config(
                "rotate_after_failures must be at least 1",
            ));
        }
        // Lease times are added to the cooldown; an absurd value would overflow them.
        if self.rotation_cooldown > MAX_ROTATION_COOLDOWN {
            return Err(crate::ProxyError::config(
                "rotation_cooldown must be at most 365 days",
            ));
        }
        Ok(())
    }
}

/// The longest accepted [`AllocationPolicy::rotation_cooldown`].
const MAX_ROTATION_COOLDOWN: Duration = Duration::from_secs(365 * 24 * 3600);

/// A `Duration` as whole seconds, for configuration files (`#[serde(with = ...)]`).
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_and_huge_cooldowns_are_rejected() {
        let ok = AllocationPolicy::default();
        assert!(ok.validate().is_ok());
        for bad in [
            AllocationPolicy {
                max_chips_per_endpoint: 0,
                ..ok.clone()
            },
            AllocationPolicy {
                rotate_after_failures: 0,
                ..ok.clone()
            },
            serde_json::from_str(r#"{"rotation_cooldown": 18446744073709551615}"#).unwrap(),
        ] {
            assert!(
                matches!(bad.validate(), Err(crate::ProxyError::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
    }
}
