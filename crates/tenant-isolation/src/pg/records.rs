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
    if kind.len() > 64 {
        return fail(IdRejection::TooLong {
            len: kind.chars().count(),
            max: 64,
        });
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
        return fail(IdRejection::TooLong {
            len: key.chars().count(),
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

pub(crate) fn record_from_row(row: &tokio_postgres::Row) -> StoredRecord {
    StoredRecord {
        kind: row.get("kind"),
        key: row.get("key"),
        value: row.get("value"),
        version: row.get("version"),
        updated_at: row.get("updated_at"),
    }
}
