//! A PostgreSQL error reduced to what cannot carry row contents.

use std::fmt;

use tokio_postgres::error::SqlState;

use super::Error;

/// A PostgreSQL error without the parts that can carry row values.
///
/// PostgreSQL puts row contents into an error's `DETAIL` (`Failing row contains (...)`,
/// `Key (...)=(...) already exists`), and `tokio_postgres::Error` prints `DETAIL` in `Display`
/// and every field in `Debug`. A `tenants` row holds the tenant's secrets, so this type keeps
/// only the SQL state, the severity and primary message, and the names of the schema objects
/// involved (constraint, table, column); `DETAIL`, `HINT`, `WHERE`, the internal query and the
/// original error are dropped for server errors. Client-side errors keep `tokio_postgres`'s
/// description (`connection closed`, `error deserializing column 2`, ...); only I/O errors keep
/// their cause and source, because a conversion error's cause can quote the value.
pub struct DatabaseError {
    // Boxed: keeps `Error` (and every `Result` of the crate) small.
    inner: Box<Inner>,
}

struct Inner {
    code: Option<SqlState>,
    message: String,
    constraint: Option<String>,
    table: Option<String>,
    column: Option<String>,
    connection_lost: bool,
    source: Option<tokio_postgres::Error>,
}

impl DatabaseError {
    /// The SQL state (`None` for client-side errors such as a lost connection).
    pub fn code(&self) -> Option<&SqlState> {
        self.inner.code.as_ref()
    }

    /// The message: severity and primary message for server errors, the client's description
    /// otherwise. Never the server's `DETAIL`, `HINT` or context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The constraint involved, if the server named one.
    pub fn constraint(&self) -> Option<&str> {
        self.inner.constraint.as_deref()
    }

    /// The table involved, if the server named one.
    pub fn table(&self) -> Option<&str> {
        self.inner.table.as_deref()
    }

    /// The column involved, if the server named one.
    pub fn column(&self) -> Option<&str> {
        self.inner.column.as_deref()
    }

    /// Whether the connection was closed or failed at the I/O level (the statement's outcome
    /// is then unknown; the connection is not reused).
    pub fn is_connection_lost(&self) -> bool {
        self.inner.connection_lost
    }

    /// Whether retrying the same operation later can succeed without changing anything: a
    /// lost or closed connection, or an SQL state that says so: serialization failure (40001),
    /// deadlock (40P01), admin shutdown (57P01), cannot connect now (57P03), too many
    /// connections (53300). The one place that classifies PostgreSQL errors for retries;
    /// [`Error::is_retryable`] and other crates' stores delegate to it. Client-side errors
    /// without an SQL state (a row count or a column type that does not match, a value that
    /// cannot be encoded) are not retryable: they would fail again.
    ///
    /// "Retryable" says the failure was transient, not that repeating is harmless: a lost
    /// connection during `COMMIT` leaves the outcome unknown, so only repeat operations that
    /// are idempotent.
    pub fn is_retryable(&self) -> bool {
        retryable(self.code(), self.is_connection_lost())
    }
}

/// The rule of [`DatabaseError::is_retryable`], on the parts it looks at.
fn retryable(code: Option<&SqlState>, connection_lost: bool) -> bool {
    match code {
        Some(code) => {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        None => connection_lost,
    }
}

/// Whether a connection was lost or could not be opened at the I/O level.
fn is_lost(err: &tokio_postgres::Error) -> bool {
    err.is_closed()
        || std::error::Error::source(err)
            .is_some_and(|c| c.downcast_ref::<std::io::Error>().is_some())
}

/// [`DatabaseError::is_retryable`] for a driver error the pool reports by reference (a
/// connection that could not be opened: refused is retryable, a wrong password is not).
pub(crate) fn driver_error_is_retryable(err: &tokio_postgres::Error) -> bool {
    retryable(err.code(), is_lost(err))
}

impl From<tokio_postgres::Error> for DatabaseError {
    fn from(err: tokio_postgres::Error) -> Self {
        let inner = match err.as_db_error() {
            Some(db) => Inner {
                code: Some(db.code().clone()),
                message: format!("{}: {}", db.severity(), db.message()),
                constraint: db.constraint().map(str::to_owned),
                table: db.table().map(str::to_owned),
                column: db.column().map(str::to_owned),
                connection_lost: false,
                source: None,
            },
            None => {
                let cause = std::error::Error::source(&err);
                let connection_lost = is_lost(&err);
                let mut message = err.to_string();
                if !connection_lost && let Some(cause) = cause {
                    // A conversion error's cause can quote the value (e.g. JSON decoding):
                    // keep only tokio_postgres's own description ("error deserializing
                    // column 2").
                    let suffix = format!(": {cause}");
                    if let Some(kind) = message.strip_suffix(&suffix) {
                        message = kind.to_owned();
                    }
                }
                Inner {
                    code: None,
                    message,
                    constraint: None,
                    table: None,
                    column: None,
                    connection_lost,
                    source: connection_lost.then_some(err),
                }
            }
        };
        DatabaseError {
            inner: Box::new(inner),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        Error::Database(DatabaseError::from(err))
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(code) = &self.inner.code {
            write!(f, " (SQLSTATE {})", code.code())?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseError")
            .field("code", &self.inner.code.as_ref().map(SqlState::code))
            .field("message", &self.inner.message)
            .field("constraint", &self.inner.constraint)
            .field("table", &self.inner.table)
            .field("column", &self.inner.column)
            .field("connection_lost", &self.inner.connection_lost)
            .finish()
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
