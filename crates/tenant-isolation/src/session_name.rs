//! `SessionName`: the WAHA session name of a chip, `cf_<tenant>_<chip>`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, SessionNameRejection, clip};
use crate::{ChipId, TenantId};

/// The WAHA session name of one chip: `cf_<tenant>_<chip>`.
///
/// - Derived deterministically from ([`TenantId`], [`ChipId`]) by [`SessionName::new`].
/// - Alphabet `a-z`, `0-9`, `-`, `_`; at most 54 characters (WAHA's limit): the prefix is 3,
///   a tenant id at most 24, the separator 1 and a chip id at most 26.
/// - Neither id can contain `_`, so the name splits back into exactly one (tenant, chip) pair:
///   two different pairs never share a name, across tenants or within one.
/// - [`SessionName::parse`] refuses anything else with [`Error::InvalidSessionName`]: foreign
///   sessions (`default`, `test_1`, `chip_test_1`), path tricks (`../x`), spaces, 55 or more
///   characters.
///
/// ```
/// use tenant_isolation::{ChipId, SessionName, TenantId};
/// let name = SessionName::new(&TenantId::new("acme")?, &ChipId::new("sales-1")?);
/// assert_eq!(name.as_str(), "cf_acme_sales-1");
/// let routed = SessionName::parse("cf_acme_sales-1")?;
/// assert_eq!(routed.tenant().as_str(), "acme");
/// assert_eq!(routed.chip().as_str(), "sales-1");
/// assert!(SessionName::parse("chip_test_1").is_err());
/// # Ok::<(), tenant_isolation::Error>(())
/// ```
#[derive(Clone)]
pub struct SessionName {
    name: String,
    tenant: TenantId,
    chip: ChipId,
}

impl SessionName {
    /// The fixed prefix of every chipfleet session name.
    pub const PREFIX: &'static str = "cf_";
    /// The separator between tenant and chip (never part of an id).
    pub const SEPARATOR: char = '_';
    /// WAHA's limit on session names, in characters.
    pub const MAX_LEN: usize = 54;

    /// The session name of `chip` of `tenant`. Infallible: every valid pair fits.
    pub fn new(tenant: &TenantId, chip: &ChipId) -> Self {
        let mut name = String::with_capacity(Self::MAX_LEN);
        name.push_str(Self::PREFIX);
        name.push_str(tenant.as_str());
        name.push(Self::SEPARATOR);
        name.push_str(chip.as_str());
        debug_assert!(name.len() <= Self::MAX_LEN);
        SessionName {
            name,
            tenant: tenant.clone(),
            chip: chip.clone(),
        }
    }

    /// Parses a session name (for example from a webhook) back into its tenant and chip.
    ///
    /// # Errors
    /// [`Error::InvalidSessionName`] for any name [`SessionName::new`] cannot produce; the
    /// rejection is counted in the `tenant_isolation_session_names_rejected_total` metric.
    pub fn parse(input: &str) -> Result<Self, Error> {
        Self::split(input).map_err(|reason| {
            metrics::counter!("tenant_isolation_session_names_rejected_total").increment(1);
            tracing::debug!(session = %clip(input), %reason, "refused a foreign session name");
            Error::InvalidSessionName {
                input: clip(input),
                reason,
            }
        })
    }

    fn split(input: &str) -> Result<Self, SessionNameRejection> {
        let len = input.chars().count();
        if len > Self::MAX_LEN {
            return Err(SessionNameRejection::TooLong { len });
        }
        let rest = input
            .strip_prefix(Self::PREFIX)
            .ok_or(SessionNameRejection::ForeignPrefix)?;
        let (tenant, chip) = rest
            .split_once(Self::SEPARATOR)
            .ok_or(SessionNameRejection::MissingSeparator)?;
        let tenant = TenantId::checked(tenant).map_err(SessionNameRejection::Tenant)?;
        let chip = ChipId::checked(chip).map_err(SessionNameRejection::Chip)?;
        Ok(SessionName::new(&tenant, &chip))
    }

    /// The name as WAHA sees it.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The tenant this session belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The chip this session belongs to.
    pub fn chip(&self) -> &ChipId {
        &self.chip
    }

    /// The (tenant, chip) pair.
    pub fn into_parts(self) -> (TenantId, ChipId) {
        (self.tenant, self.chip)
    }
}

const _: () = assert!(
    SessionName::PREFIX.len() + TenantId::MAX_LEN + 1 + ChipId::MAX_LEN <= SessionName::MAX_LEN
);

impl PartialEq for SessionName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for SessionName {}

impl Hash for SessionName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialOrd for SessionName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SessionName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.name.cmp(&other.name)
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionName({:?})", self.name)
    }
}

impl FromStr for SessionName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for SessionName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl Serialize for SessionName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for SessionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}
