//! `TenantId`, `ChipId` and a tenant's `Incarnation`: small, validated, cheap to clone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, IdKind, IdRejection};

/// The alphabet of tenant and chip ids, as shown in errors.
pub(crate) const ID_ALPHABET: &str = "a-z, 0-9 and '-' (not first or last)";

/// Validates an id: 1..=max characters of `[a-z0-9-]`, starting and ending with `[a-z0-9]`.
pub(crate) fn validate_id(input: &str, max: usize) -> Result<(), IdRejection> {
    if input.is_empty() {
        return Err(IdRejection::Empty);
    }
    let len = input.chars().count();
    if len > max {
        return Err(IdRejection::TooLong { len, max });
    }
    for (at, ch) in input.chars().enumerate() {
        if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
            return Err(IdRejection::InvalidChar {
                ch,
                at,
                allowed: ID_ALPHABET,
            });
        }
    }
    if input.starts_with('-') || input.ends_with('-') {
        return Err(IdRejection::BadEdge);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The maximum length in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps an id.
            ///
            /// # Errors
            /// [`Error::InvalidId`] when the input is empty, too long, or has a character
            /// outside `a-z`, `0-9`, `-` (or starts or ends with `-`). Upper case is refused,
            /// not folded, so one id has exactly one spelling.
            pub fn new(input: impl Into<String>) -> Result<Self, Error> {
                let input = input.into();
                Self::checked(&input).map_err(|reason| Error::invalid_id($kind, &input, reason))
            }

            /// Validates and wraps an id, answering only why it was refused.
            pub(crate) fn checked(input: &str) -> Result<Self, IdRejection> {
                validate_id(input, Self::MAX_LEN)?;
                Ok(Self(input.to_owned()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;

            fn try_from(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant (customer) id: 1 to 24 characters of `a-z`, `0-9` and `-`, starting and ending
    /// with a letter or digit.
    ///
    /// It never contains `_`, which is what keeps [`SessionName`](crate::SessionName)s and
    /// [`TenantNamespace`](crate::TenantNamespace) names unambiguous.
    ///
    /// ```
    /// use tenant_isolation::TenantId;
    /// let id: TenantId = "acme-2".parse()?;
    /// assert_eq!(id.as_str(), "acme-2");
    /// assert!(TenantId::new("Acme").is_err());
    /// assert!(TenantId::new("a_b").is_err());
    /// # Ok::<(), tenant_isolation::Error>(())
    /// ```
    TenantId,
    IdKind::Tenant,
    24
);

id_type!(
    /// A chip (WhatsApp number slot) id, unique within its tenant: 1 to 26 characters of `a-z`,
    /// `0-9` and `-`, starting and ending with a letter or digit. 26 fits a lower-case ULID,
    /// which is what [`ChipId::generate`] returns.
    ///
    /// ```
    /// use tenant_isolation::ChipId;
    /// let chip = ChipId::generate();
    /// assert_eq!(chip.as_str().len(), 26);
    /// assert!(ChipId::new("../x").is_err());
    /// ```
    ChipId,
    IdKind::Chip,
    26
);

const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

impl TenantId {
    /// A fresh random tenant id: `t` followed by 16 base-32 characters (80 random bits).
    /// Ids are not secrets, so a fast non-cryptographic generator is used.
    pub fn generate() -> Self {
        let mut id = String::with_capacity(17);
        id.push('t');
        for _ in 0..16 {
            id.push(char::from(BASE32[fastrand::usize(..32)]));
        }
        TenantId(id)
    }
}

impl ChipId {
    /// A fresh chip id: a lower-case ULID (time-ordered, 26 characters).
    pub fn generate() -> Self {
        ChipId(ulid::Ulid::generate().to_string().to_ascii_lowercase())
    }
}

/// Which life of a tenant id this is: an id minted when the tenant is created, stored with it,
/// and never changed while the tenant exists (status, limits and secret changes keep it).
///
/// A host that purges a tenant and later creates one under the same [`TenantId`] gets a new
/// incarnation ([`NewTenant::new`](crate::NewTenant::new) mints one), so anything labelled with
/// the old one (a container volume holding the old customer's WhatsApp logins, say) can be told
/// apart and refused. Restoring a tenant from a backup keeps its incarnation
/// ([`NewTenant::with_incarnation`](crate::NewTenant::with_incarnation)).
///
/// [`Incarnation::generate`] returns a ULID (26 characters, upper-case Crockford base-32).
/// [`Incarnation::parse`] accepts 1 to 64 characters of `A-Z`, `a-z`, `0-9` and `-` (so the
/// UUIDs PostgreSQL filled in for tenants created before incarnations existed parse too).
///
/// ```
/// use tenant_isolation::Incarnation;
/// let minted = Incarnation::generate();
/// assert_eq!(minted.as_str().len(), 26);
/// assert_ne!(minted, Incarnation::generate());
/// let restored: Incarnation = minted.as_str().parse()?;
/// assert_eq!(restored, minted);
/// assert!(Incarnation::parse("a_b").is_err());
/// # Ok::<(), tenant_isolation::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Incarnation(String);

impl Incarnation {
    /// The maximum length in characters.
    pub const MAX_LEN: usize = 64;

    /// A fresh incarnation: a ULID (time-ordered, 26 characters).
    pub fn generate() -> Self {
        Incarnation(ulid::Ulid::generate().to_string())
    }

    /// Validates and wraps a stored or restored incarnation.
    ///
    /// # Errors
    /// [`Error::InvalidId`] with [`IdKind::Incarnation`] when the input is empty, longer than
    /// 64 characters, or has a character outside `A-Z`, `a-z`, `0-9`, `-`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        Self::checked(input).map_err(|reason| Error::invalid_id(IdKind::Incarnation, input, reason))
    }

    fn checked(input: &str) -> Result<Self, IdRejection> {
        if input.is_empty() {
            return Err(IdRejection::Empty);
        }
        let len = input.chars().count();
        if len > Self::MAX_LEN {
            return Err(IdRejection::TooLong {
                len,
                max: Self::MAX_LEN,
            });
        }
        if let Some((at, ch)) = input
            .chars()
            .enumerate()
            .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || *ch == '-'))
        {
            return Err(IdRejection::InvalidChar {
                ch,
                at,
                allowed: "A-Z, a-z, 0-9 and '-'",
            });
        }
        Ok(Incarnation(input.to_owned()))
    }

    /// The incarnation as a string slice (e.g. for a container volume label).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Incarnation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl AsRef<str> for Incarnation {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Incarnation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Incarnation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_are_minted_fresh_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let minted = Incarnation::generate();
            assert_eq!(minted.as_str().len(), 26, "a ULID");
            assert_eq!(Incarnation::parse(minted.as_str()).unwrap(), minted);
            assert_eq!(minted.to_string(), minted.as_str());
            assert!(seen.insert(minted), "every incarnation is new");
        }
        // What PostgreSQL filled in for tenants from before incarnations.
        Incarnation::parse("0f531ded-c090-4c35-a4fb-7d4528c5808a").unwrap();
        Incarnation::parse(&"A".repeat(64)).unwrap();
    }

    #[test]
    fn incarnation_refusals_are_typed() {
        let reason = |input: &str| match Incarnation::parse(input) {
            Err(Error::InvalidId {
                kind: IdKind::Incarnation,
                reason,
                ..
            }) => reason,
            other => panic!("expected an invalid incarnation, got {other:?}"),
        };
        assert_eq!(reason(""), IdRejection::Empty);
        assert_eq!(
            reason(&"a".repeat(65)),
            IdRejection::TooLong { len: 65, max: 64 }
        );
        assert!(matches!(
            reason("a_b"),
            IdRejection::InvalidChar { ch: '_', at: 1, .. }
        ));
        assert!(matches!(
            reason("ab c"),
            IdRejection::InvalidChar { ch: ' ', at: 2, .. }
        ));
        assert!(matches!(
            reason("é"),
            IdRejection::InvalidChar {
                ch: 'é', at: 0, ..
            }
        ));
        assert!("x/y".parse::<Incarnation>().is_err());
    }

    #[test]
    fn incarnation_serde_validates() {
        let minted = Incarnation::generate();
        let json = serde_json::to_string(&minted).unwrap();
        assert_eq!(json, format!("\"{minted}\""));
        assert_eq!(serde_json::from_str::<Incarnation>(&json).unwrap(), minted);
        assert!(serde_json::from_str::<Incarnation>("\"../x\"").is_err());
        assert!(serde_json::from_str::<Incarnation>("\"\"").is_err());
    }

    #[test]
    fn generated_ids_are_valid() {
        for _ in 0..100 {
            let t = TenantId::generate();
            assert_eq!(TenantId::new(t.as_str()).unwrap(), t);
            let c = ChipId::generate();
            assert_eq!(ChipId::new(c.as_str()).unwrap(), c);
        }
    }

    #[test]
    fn refusals_say_why() {
        let err = TenantId::new("").unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidId {
                reason: IdRejection::Empty,
                ..
            }
        ));
        let err = TenantId::new("a".repeat(25)).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidId {
                reason: IdRejection::TooLong { len: 25, max: 24 },
                ..
            }
        ));
        let err = ChipId::new("-a").unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidId {
                kind: IdKind::Chip,
                reason: IdRejection::BadEdge,
                ..
            }
        ));
        let err = ChipId::new("a b").unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidId {
                reason: IdRejection::InvalidChar { ch: ' ', at: 1, .. },
                ..
            }
        ));
        assert!(err.to_string().contains("' '"));
    }

    #[test]
    fn serde_validates() {
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acme\"");
        assert!(serde_json::from_str::<TenantId>("\"../x\"").is_err());
        assert!(serde_json::from_str::<ChipId>("\"UPPER\"").is_err());
    }
}
