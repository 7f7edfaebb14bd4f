//! The crate's one error type and the reasons it carries.

use std::fmt;

use crate::{ChipId, QuotaLimit, TenantId, TenantStatus};

#[cfg(feature = "postgres")]
pub use database::DatabaseError;

#[cfg(feature = "postgres")]
mod database;

/// Everything that can go wrong in this crate.
///
/// Each variant says what the caller can do about it. Bad input is always refused with a typed
/// variant before anything is stored; secret values never appear in any variant or message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier or name failed validation. Fix the input; nothing was stored.
    #[error("invalid {kind} {input:?}: {reason}")]
    InvalidId {
        /// Which kind of identifier was refused.
        kind: IdKind,
        /// The refused input (clipped to 64 characters).
        input: String,
        /// Why it was refused.
        reason: IdRejection,
    },
    /// A session name is not one this crate generated (a foreign session such as `default`,
    /// `test_1` or `chip_test_1`, or a malformed one). Do not route it to any tenant.
    #[error("session name {input:?} is not a chipfleet session name: {reason}")]
    InvalidSessionName {
        /// The refused name (clipped to 64 characters).
        input: String,
        /// Why it was refused.
        reason: SessionNameRejection,
    },
    /// A secret was refused (empty, control characters) or could not be minted (the OS
    /// random source failed). The value itself is never included.
    #[error(transparent)]
    Secret(#[from] fleet_vocab::SecretError),
    /// A configuration value is out of range or inconsistent. Fix the configuration.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The tenant does not exist (or is not visible to this handle).
    #[error("tenant {tenant} does not exist")]
    TenantNotFound {
        /// The tenant that was asked for.
        tenant: TenantId,
    },
    /// A tenant with this id exists or existed; ids are never reused, even after deletion.
    #[error("tenant {tenant} already exists (tenant ids are never reused, even after deletion)")]
    TenantAlreadyExists {
        /// The id that is taken.
        tenant: TenantId,
    },
    /// The tenant is suspended: its operations are refused until an administrator reactivates it.
    #[error("tenant {tenant} is suspended; its operations are refused until it is reactivated")]
    TenantSuspended {
        /// The suspended tenant.
        tenant: TenantId,
    },
    /// The tenant is deleted: its operations are refused for good.
    #[error("tenant {tenant} is deleted; its operations are refused for good")]
    TenantDeleted {
        /// The deleted tenant.
        tenant: TenantId,
    },
    /// The requested status change is not allowed (a deleted tenant stays deleted).
    #[error("tenant {tenant} cannot go from {from} to {to}")]
    InvalidStatusTransition {
        /// The tenant.
        tenant: TenantId,
        /// Its current status.
        from: TenantStatus,
        /// The refused target status.
        to: TenantStatus,
    },
    /// Admission refused: the tenant's plan limit is reached. Free a slot or raise the limit.
    #[error("tenant {tenant} reached its {limit} limit ({in_use} of {max} in use)")]
    QuotaExceeded {
        /// The tenant.
        tenant: TenantId,
        /// Which plan limit was hit.
        limit: QuotaLimit,
        /// The limit's value.
        max: u32,
        /// How many were in use when the request was refused.
        in_use: u32,
    },
    /// A compare-and-set of a tenant's secrets found other secrets than expected (another
    /// rotation ran in between): re-read them and decide again. Nothing changed.
    #[error("the secrets of tenant {tenant} changed since they were read")]
    SecretsChanged {
        /// The tenant.
        tenant: TenantId,
    },
    /// An optimistic write lost a race: re-read the record and retry with its current version.
    #[error("record {kind}/{key} is at version {actual:?}, not the expected {expected}")]
    VersionConflict {
        /// The record kind.
        kind: String,
        /// The record key.
        key: String,
        /// What the caller expected (`absent` or a version number).
        expected: String,
        /// The version found (`None`: the record does not exist).
        actual: Option<i64>,
    },
    /// PostgreSQL row-level security refused a row: the statement tried to write another
    /// tenant's data through a tenant-scoped handle. This is a bug in the caller.
    #[error("row-level security refused the statement for tenant {tenant}: {detail}")]
    RowSecurityViolation {
        /// The tenant the handle is scoped to.
        tenant: TenantId,
        /// The database's message.
        detail: String,
    },
    /// The database role of a tenant-scoped pool could see other tenants' rows (it owns the
    /// tables, is a superuser, bypasses RLS, is a member (directly or through other roles) of
    /// a superuser or `BYPASSRLS` role, or is covered by the admin policy). Connect the
    /// application as a role that owns nothing and belongs to no such role.
    #[error("database role {role:?} is unsafe for tenant-scoped access: {reason}")]
    UnsafeDatabaseRole {
        /// The role.
        role: String,
        /// Why it is unsafe.
        reason: String,
    },
    /// A table that tenant-scoped access relies on (tenant-isolation's `tenants`, or a table a
    /// registered migration set declares tenant-scoped with
    /// [`MigrationSet::tenant_tables`](crate::pg::MigrationSet::tenant_tables)) is missing or
    /// not protected by row-level security, so the application role could read or write other
    /// tenants' rows through it. Tenant-scoped access is refused until the schema is fixed (run
    /// the migrations; restore `ENABLE`/`FORCE ROW LEVEL SECURITY`).
    #[error(
        "table {table:?} is declared tenant-scoped but {problem}; tenant-scoped access is refused"
    )]
    UnprotectedTable {
        /// The table.
        table: String,
        /// What is wrong with it.
        problem: RowSecurityProblem,
    },
    /// A schema migration failed, or an applied migration differs from the embedded one
    /// ([`MigrationProblem::Edited`]). Nothing of the run was applied (one transaction).
    #[error("migration {version} ({name}) of {component}: {problem}")]
    Migration {
        /// The component whose migration it is (`tenant-isolation`, `proxy-allocator`, ...).
        component: &'static str,
        /// The migration's version within its component.
        version: i32,
        /// The migration's name.
        name: &'static str,
        /// What is wrong.
        #[source]
        problem: MigrationProblem,
    },
    /// Stored data does not pass validation (it was written around this crate). The value is
    /// left untouched; repair it by hand.
    #[error("stored data is corrupt: {detail}")]
    CorruptData {
        /// What is wrong (never a secret value).
        detail: String,
    },
    /// A statement inside a tenant-scoped transaction failed earlier (PostgreSQL then aborts
    /// the whole transaction), so [`commit`](crate::pg::TenantTx::commit) rolled it back
    /// instead: none of the transaction's writes were kept. Redo the whole transaction.
    #[error(
        "the transaction of tenant {tenant} was rolled back, not committed: a statement in it \
         had failed, which aborts the whole transaction; redo it"
    )]
    TransactionAborted {
        /// The tenant the transaction was scoped to.
        tenant: TenantId,
    },
    /// A running-session slot was asked for a chip that holds no chip slot. Reserve
    /// [`SlotKind::Chip`](crate::SlotKind::Chip) for the chip first.
    #[error("chip {chip} of tenant {tenant} holds no chip slot; reserve its chip slot first")]
    ChipSlotRequired {
        /// The tenant.
        tenant: TenantId,
        /// The chip without a chip slot.
        chip: ChipId,
    },
    /// A PostgreSQL error, reduced to what cannot carry row contents (no `DETAIL`, `HINT`
    /// or context; see [`DatabaseError`]). [`Error::is_retryable`] tells whether retrying can
    /// help.
    #[cfg(feature = "postgres")]
    #[error("database error: {0}")]
    Database(#[source] DatabaseError),
    /// No pooled PostgreSQL connection could be obtained (timeout or connect failure).
    #[cfg(feature = "postgres")]
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl Error {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidId { .. } => "invalid_id",
            Error::InvalidSessionName { .. } => "invalid_session_name",
            Error::Secret(_) => "secret",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::TenantNotFound { .. } => "tenant_not_found",
            Error::TenantAlreadyExists { .. } => "tenant_already_exists",
            Error::TenantSuspended { .. } => "tenant_suspended",
            Error::TenantDeleted { .. } => "tenant_deleted",
            Error::InvalidStatusTransition { .. } => "invalid_status_transition",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::VersionConflict { .. } => "version_conflict",
            Error::SecretsChanged { .. } => "secrets_changed",
            Error::RowSecurityViolation { .. } => "row_security_violation",
            Error::UnsafeDatabaseRole { .. } => "unsafe_database_role",
            Error::UnprotectedTable { .. } => "unprotected_table",
            Error::Migration { .. } => "migration",
            Error::CorruptData { .. } => "corrupt_data",
            Error::TransactionAborted { .. } => "transaction_aborted",
            Error::ChipSlotRequired { .. } => "chip_slot_required",
            #[cfg(feature = "postgres")]
            Error::Database(_) => "database",
            #[cfg(feature = "postgres")]
            Error::Pool(_) => "pool",
        }
    }

    /// Whether retrying the same operation later can succeed without changing anything:
    /// pool time-outs and connect failures, and database errors that
    /// `DatabaseError::is_retryable` classifies as retryable (lost or closed connections,
    /// serialization failures, deadlocks, server shut-downs, "too many connections"), also when
    /// a migration's SQL failed that way. Client-side errors without an SQL state (a row count
    /// or a column type that does not match, a value that cannot be encoded) are not retryable:
    /// they would fail again. Other crates' PostgreSQL stores delegate to this predicate.
    pub fn is_retryable(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Error::Database(err)
            | Error::Migration {
                problem: MigrationProblem::Refused(err),
                ..
            } => err.is_retryable(),
            // A pool time-out (busy database) or a connection that could not be opened
            // (refused, lost) is worth retrying; a refused password or a missing database is
            // not, nor is a closed pool.
            #[cfg(feature = "postgres")]
            Error::Pool(err) => match err {
                deadpool_postgres::PoolError::Timeout(_) => true,
                deadpool_postgres::PoolError::Backend(err) => {
                    database::driver_error_is_retryable(err)
                }
                _ => false,
            },
            _ => false,
        }
    }

    pub(crate) fn invalid_id(kind: IdKind, input: &str, reason: IdRejection) -> Self {
        Error::InvalidId {
            kind,
            input: clip(input),
            reason,
        }
    }
}

/// Why [`Error::Migration`] was returned. The whole migration run was rolled back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationProblem {
    /// The migration was changed after it had been applied: the SHA-256 of its embedded SQL
    /// differs from the one recorded when it was applied. Add a new migration instead.
    #[error(
        "it was changed after it had been applied (its checksum differs); add a new migration \
         instead of editing an applied one"
    )]
    Edited,
    /// PostgreSQL refused the migration's SQL (or the statement was cancelled).
    /// [`Error::is_retryable`] follows [`DatabaseError::is_retryable`].
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL refused it: {0}")]
    Refused(#[source] DatabaseError),
}

/// Why [`Error::UnprotectedTable`] was returned: what a tenant-scoped table lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RowSecurityProblem {
    /// The table does not exist in the current schema (the migrations that create it have not
    /// run on this database).
    Missing,
    /// Row-level security is not enabled on it: every row is visible to every role with access.
    NotEnabled,
    /// Row-level security is enabled but not forced: the table's owner (and its members) are
    /// exempt from the policies.
    NotForced,
}

impl fmt::Display for RowSecurityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RowSecurityProblem::Missing => "it does not exist in the current schema",
            RowSecurityProblem::NotEnabled => "row-level security is not enabled on it",
            RowSecurityProblem::NotForced => {
                "row-level security is enabled but not forced on it (its owner is exempt)"
            }
        })
    }
}

/// Clips untrusted input for inclusion in an error message.
pub(crate) fn clip(input: &str) -> String {
    const MAX: usize = 64;
    if input.chars().count() <= MAX {
        input.to_owned()
    } else {
        let mut clipped: String = input.chars().take(MAX).collect();
        clipped.push('…');
        clipped
    }
}

/// The kind of identifier in [`Error::InvalidId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdKind {
    /// A [`TenantId`](crate::TenantId).
    Tenant,
    /// A [`ChipId`](crate::ChipId).
    Chip,
    /// A store name given to [`TenantNamespace`](crate::TenantNamespace).
    StoreName,
    /// A namespaced name read back from an external store.
    ScopedName,
    /// The kind of a tenant-owned record.
    RecordKind,
    /// The key of a tenant-owned record.
    RecordKey,
    /// A PostgreSQL role name.
    Role,
    /// A tenant [`Incarnation`](crate::Incarnation).
    Incarnation,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Tenant => "tenant id",
            IdKind::Chip => "chip id",
            IdKind::StoreName => "store name",
            IdKind::ScopedName => "namespaced name",
            IdKind::RecordKind => "record kind",
            IdKind::RecordKey => "record key",
            IdKind::Role => "role name",
            IdKind::Incarnation => "tenant incarnation",
        })
    }
}

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdRejection {
    /// It is empty.
    Empty,
    /// It has more than `max` characters.
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// It has more than `max` bytes (UTF-8), for limits counted in bytes.
    TooManyBytes {
        /// Its length in bytes.
        len: usize,
        /// The maximum, in bytes.
        max: usize,
    },
    /// It contains a character outside the allowed alphabet.
    InvalidChar {
        /// The character.
        ch: char,
        /// Its position (in characters, from 0).
        at: usize,
        /// The allowed alphabet.
        allowed: &'static str,
    },
    /// It starts or ends with `-` or `_`.
    BadEdge,
    /// It does not start with the expected prefix.
    MissingPrefix {
        /// The prefix that was expected.
        expected: &'static str,
    },
}

impl fmt::Display for IdRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRejection::Empty => f.write_str("it is empty"),
            IdRejection::TooLong { len, max } => {
                write!(f, "it has {len} characters, at most {max} are allowed")
            }
            IdRejection::TooManyBytes { len, max } => {
                write!(f, "it has {len} bytes, at most {max} are allowed")
            }
            IdRejection::InvalidChar { ch, at, allowed } => {
                write!(
                    f,
                    "character {ch:?} at position {at} is not allowed (allowed: {allowed})"
                )
            }
            IdRejection::BadEdge => f.write_str("it must start and end with a letter or digit"),
            IdRejection::MissingPrefix { expected } => {
                write!(f, "it does not start with {expected:?}")
            }
        }
    }
}

/// Why a session name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionNameRejection {
    /// Longer than WAHA's limit of 54 characters.
    TooLong {
        /// Its length in characters.
        len: usize,
    },
    /// It does not start with `cf_`: not generated by chipfleet.
    ForeignPrefix,
    /// There is no `_` between the tenant and the chip.
    MissingSeparator,
    /// The tenant part is not a valid tenant id.
    Tenant(IdRejection),
    /// The chip part is not a valid chip id.
    Chip(IdRejection),
}

impl fmt::Display for SessionNameRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionNameRejection::TooLong { len } => {
                write!(f, "it has {len} characters, WAHA allows at most 54")
            }
            SessionNameRejection::ForeignPrefix => f.write_str("it does not start with \"cf_\""),
            SessionNameRejection::MissingSeparator => {
                f.write_str("it has no '_' between the tenant and the chip")
            }
            SessionNameRejection::Tenant(r) => write!(f, "the tenant part is invalid: {r}"),
            SessionNameRejection::Chip(r) => write!(f, "the chip part is invalid: {r}"),
        }
    }
}
