//! Generic tenant-owned records (`tenant_records`), with optimistic versions.

use std::time::SystemTime;

use crate::error::{Error, IdKind, IdRejection};

/// A record of the generic tenant-owned table.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The record kind (a namespace within the tenant, e.g. `chip`).
    pub kind: String,
    /// The key, unique within (tenant, kind).
    pub key: String,
    /// The JSON value.
    pub value: serde_json::Value,
    /// Its version: 1 on creation, +1 on every write.
    pub version: i64,
    /// When it was last written.
    pub updated_at: SystemTime,
}

/// The precondition of a record write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there (create or overwrite).
    Any,
    /// Create only: fail with [`Error::VersionConflict`] if the record exists.
    Absent,
    /// Overwrite only this version: fail with [`Error::VersionConflict`] otherwise.
    Version(i64),
}

impl Expect {
    pub(crate) fn describe(self) -> String {
        match self {
            Expect::Any => "any".into(),
            Expect::Absent => "absent".into(),
            Expect::Version(v) => v.to_string(),
        }
    }
}

/// Record kinds: 1..=64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
pub(crate) fn validate_kind(kind: &str) -> Result<(), Error> {
    let fail = |reason| Err(Error::invalid_id(IdKind::RecordKind, kind, reason));
    if kind.is_empty() {
        return fail(IdRejection::Empty);
    }
    let len = kind.chars().count();
    if len > 64 {
        return fail(IdRejection::TooLong { len, max: 64 });
    }
    if let Some((at, ch)) = kind.chars().enumerate().find(|(_, c)| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
    }) {
        return fail(IdRejection::InvalidChar {
            ch,
            at,
            allowed: "a-z, 0-9, '_', '-', '.'",
        });
    }
    Ok(())
}

/// Record keys: 1..=256 bytes without control characters.
pub(crate) fn validate_key(key: &str) -> Result<(), Error> {
    let fail = |reason| Err(Error::invalid_id(IdKind::RecordKey, key, reason));
    if key.is_empty() {
        return fail(IdRejection::Empty);
    }
    if key.len() > 256 {
        return fail(IdRejection::TooManyBytes {
            len: key.len(),
            max: 256,
        });
    }
    if let Some((at, ch)) = key.chars().enumerate().find(|(_, c)| c.is_control()) {
        return fail(IdRejection::InvalidChar {
            ch,
            at,
            allowed: "any character except control characters",
        });
    }
    Ok(())
}

pub(crate) fn record_from_row(row: &tokio_postgres::Row) -> Result<StoredRecord, Error> {
    Ok(StoredRecord {
        kind: row.try_get("kind")?,
        key: row.try_get("key")?,
        value: row.try_get("value")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(result: Result<(), Error>) -> IdRejection {
        match result {
            Err(Error::InvalidId { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn lengths_are_reported_in_the_unit_they_are_checked_in() {
        // 100 two-byte characters: 200 bytes, within the 256-byte key limit.
        assert!(validate_key(&"é".repeat(100)).is_ok());
        // 200 two-byte characters: 400 bytes.
        assert_eq!(
            rejection(validate_key(&"é".repeat(200))),
            IdRejection::TooManyBytes { len: 400, max: 256 }
        );
        assert_eq!(
            rejection(validate_kind(&"a".repeat(65))),
            IdRejection::TooLong { len: 65, max: 64 }
        );
        // 64 non-ASCII characters are within the length and refused for their alphabet.
        assert!(matches!(
            rejection(validate_kind(&"é".repeat(64))),
            IdRejection::InvalidChar {
                ch: 'é', at: 0, ..
            }
        ));
    }
}
