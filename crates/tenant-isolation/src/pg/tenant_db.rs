//! The tenant-scoped handle: the only way the application reaches tenant data.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::directory::{TENANT_COLUMNS, tenant_from_row};
use super::migrations::MigrationSet;
use super::records::{Expect, StoredRecord, record_from_row, validate_key, validate_kind};
use super::{DiscardGuard, PoolOptions, build_pool, db_error, role_check};
use crate::error::{Error, IdKind};
use crate::{Tenant, TenantId};

/// A pool of application-role connections whose only entry point is [`TenantDb::scoped`].
///
/// Connect it as a role that owns none of the tables, is not a superuser, has no `BYPASSRLS`,
/// belongs to no role that is or has either, and is not the admin role:
/// [`TenantDb::verify_role`] checks exactly that (and that the tables have row-level security
/// forced) and [`TenantDb::connect`] calls it.
#[derive(Clone)]
pub struct TenantDb {
    pool: Pool,
}

impl fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDb")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl TenantDb {
    /// Wraps an existing pool (no I/O, no checks; call [`TenantDb::verify_role`] yourself).
    pub fn from_pool(pool: Pool) -> Self {
        TenantDb { pool }
    }

    /// Connects to `url` (the application role, e.g. `APP_DATABASE_URL`) and verifies the role.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad URL, [`Error::Pool`] when the database is
    /// unreachable, [`Error::UnsafeDatabaseRole`] when the role could see other tenants.
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self, Error> {
        let db = TenantDb {
            pool: build_pool(url, options)?,
        };
        db.verify_role().await?;
        Ok(db)
    }

    /// Checks that the pool's role cannot bypass row-level security through tenant-isolation's
    /// tables: the same as [`TenantDb::verify_role_with`] without other components.
    ///
    /// # Errors
    /// As [`TenantDb::verify_role_with`].
    pub async fn verify_role(&self) -> Result<(), Error> {
        self.verify_role_with(&[]).await
    }

    /// Checks that the pool's role cannot see other tenants' rows through tenant-isolation's
    /// tables or the tenant tables `components` declare
    /// ([`MigrationSet::tenant_tables`]; pass the sets given to
    /// [`AdminDb::migrate_with`](super::AdminDb::migrate_with)): it is not a superuser, has no
    /// `BYPASSRLS`, is no member (directly or through other roles) of a role that is or has
    /// either, owns none of the tables (nor is a member of their owner), and is not covered by
    /// the admin policy; and every one of the tables has row-level security enabled and forced.
    ///
    /// # Errors
    /// [`Error::UnsafeDatabaseRole`] saying why the role is unsafe, [`Error::UnprotectedTable`]
    /// naming a table without forced row-level security; database errors otherwise.
    pub async fn verify_role_with(&self, components: &[MigrationSet]) -> Result<(), Error> {
        let conn = self.pool.get().await?;
        role_check::verify_app_role(&conn, components).await
    }

    /// Opens a transaction scoped to `tenant`: `BEGIN` and `SET LOCAL app.tenant_id` (the same
    /// as `set_config('app.tenant_id', tenant, true)`), in one round trip, before anything else
    /// can run. Row-level security then shows and accepts only `tenant`'s rows. The setting is
    /// transaction-local: it ends with the transaction, so a pooled connection never carries it
    /// to the next user.
    ///
    /// # Errors
    /// [`Error::Pool`] or [`Error::Database`].
    pub async fn scoped(&self, tenant: &TenantId) -> Result<TenantTx, Error> {
        let begin = begin_scoped(tenant)?;
        let conn = self.pool.get().await?;
        // From here on, a failure drops the TenantTx, which rolls back or discards the connection.
        let tx = TenantTx {
            conn: Some(conn),
            tenant: tenant.clone(),
            aborted: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        };
        tx.conn()?
            .batch_execute(&begin)
            .await
            .map_err(|e| tx.map(e))?;
        Ok(tx)
    }
}

/// The statement that opens a tenant-scoped transaction: `BEGIN` and the transaction-local
/// tenant setting in **one** simple-query message, so one round trip instead of two.
///
/// Why this is as safe as the two statements it replaces:
/// - Order: the server runs the statements of one simple-query message one after the other,
///   and `BEGIN` comes first, so the setting is always made inside the transaction block
///   (`SET LOCAL`, like `set_config(.., true)`, ends with the transaction: `COMMIT` and
///   `ROLLBACK` clear it, and a pooled connection never carries it). Nothing relies on
///   the client pipelining two requests in order.
/// - All or nothing: if either statement fails, `scoped` returns the error and the dropped
///   `TenantTx` rolls back (or discards the connection); no statement of the caller runs.
/// - The value: the simple-query protocol takes no parameters, so the tenant id is written as
///   a string literal. A [`TenantId`] is validated on every way in (1 to 24 of `a-z`, `0-9`,
///   `-`), so it can hold neither a quote nor a backslash and cannot end the literal; it is
///   checked again here, where it becomes SQL text, so this never depends on a distant
///   invariant alone.
fn begin_scoped(tenant: &TenantId) -> Result<String, Error> {
    let id = tenant.as_str();
    TenantId::checked(id).map_err(|reason| Error::invalid_id(IdKind::Tenant, id, reason))?;
    Ok(format!("BEGIN; SET LOCAL app.tenant_id = '{id}'"))
}

/// How long `commit`/`rollback`/drop wait to deliver the cancel request for an abandoned
/// statement before they close the connection anyway.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// An open transaction scoped to one tenant. Finish it with [`commit`](TenantTx::commit) or
/// [`rollback`](TenantTx::rollback); dropping it rolls back (in a background task, or by
/// discarding the connection when no Tokio runtime is available): an unfinished transaction
/// never goes back to the pool.
///
/// Dropping a statement's future before its answer came back (a time-out around `query`, a
/// `select!`) leaves the statement's outcome unknown: the transaction can then no longer
/// commit ([`is_aborted`](TenantTx::is_aborted) says so, [`commit`](TenantTx::commit)
/// answers [`Error::TransactionAborted`]) and its connection is closed, not pooled.
///
/// Statements run with row-level security on: other tenants' rows are invisible to `SELECT`,
/// untouched by `UPDATE`/`DELETE`, and refused on `INSERT` ([`Error::RowSecurityViolation`]).
pub struct TenantTx {
    conn: Option<Object>,
    tenant: TenantId,
    /// Set when a statement failed on the server: PostgreSQL has then aborted the transaction
    /// and would turn `COMMIT` into a silent `ROLLBACK`.
    aborted: AtomicBool,
    /// Set (for good) when a statement's future was dropped after the statement started and
    /// before its answer came back (see `InFlight`): the transaction is in an unknown state.
    abandoned: AtomicBool,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .field("open", &self.conn.is_some())
            .field("aborted", &self.aborted.load(Ordering::Relaxed))
            .field("abandoned", &self.abandoned.load(Ordering::Relaxed))
            .finish()
    }
}

/// One statement of a [`TenantTx`] on its way: made just before the statement is prepared and
/// sent, and marked [`landed`](InFlight::landed) once its answer (rows or error) is back.
///
/// Dropped without landing, which happens when the statement's future is dropped mid-flight
/// (a `tokio::time::timeout`, a `select!`, an aborted task), it marks the transaction
/// abandoned. The statement may then still be running on the server, may still fail there
/// (which aborts the transaction, unseen by the client) or may succeed and keep a write its
/// caller believes cancelled. The mark is never cleared: a later statement that completes
/// proves nothing about the abandoned one's effects. A guard per statement (rather than one
/// shared "running" flag) stays right when several statements of the transaction are in
/// flight at once. A future that is dropped before its first poll sends nothing and never
/// makes a guard.
struct InFlight<'a> {
    abandoned: &'a AtomicBool,
    landed: bool,
}

impl InFlight<'_> {
    /// The statement's answer came back: nothing is left running on its account.
    fn landed(mut self) {
        self.landed = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// Ends a transaction and resets any session state raw SQL may have set (a session-level
/// `SET app.tenant_id`, `SET ROLE`), also on pools built without clean recycling.
const COMMIT: &str = "COMMIT; RESET ALL";
/// See [`COMMIT`].
const ROLLBACK: &str = "ROLLBACK; RESET ALL";

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut guard = DiscardGuard(Some(conn));
        let abandoned = self.abandoned.load(Ordering::Relaxed);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if abandoned {
                    // A `ROLLBACK` would wait behind the abandoned statement (maybe a lock wait
                    // with no end); the connection is never pooled again anyway.
                    cancel_and_discard(guard).await;
                    return;
                }
                let rolled_back = match guard.0.as_ref() {
                    Some(conn) => conn.batch_execute(ROLLBACK).await.is_ok(),
                    None => false,
                };
                if rolled_back {
                    // Back to the pool, clean.
                    drop(guard.0.take());
                }
            });
        }
    }
}

/// Closes a connection whose transaction had a statement abandoned mid-flight: asks the server
/// to cancel whatever the connection is still running (a cancel request on a new connection,
/// best effort, at most [`CANCEL_TIMEOUT`]), then discards the connection (never pooled again).
///
/// No `COMMIT` is sent: the session ends, and PostgreSQL rolls back the open transaction of a
/// session that ends. The cancel only makes that prompt (the client closes the session once the
/// abandoned statement's answer is in); without it a lock wait could hold the session, and the
/// transaction's locks, until the lock is granted. The connection is not reused even after a
/// successful `ROLLBACK` would have been possible, because a cancel request is asynchronous and
/// could land on the next user's statement.
///
/// The request goes over plain TCP (`NoTls`), whatever the pool's TLS: against a server that
/// requires TLS it fails (logged) and the session ends when the abandoned statement does.
async fn cancel_and_discard(guard: DiscardGuard) {
    let token = guard.0.as_ref().map(|conn| conn.cancel_token());
    if let Some(token) = token {
        match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(
                error = %Error::from(err),
                "could not cancel an abandoned statement; its connection closes when it ends"
            ),
            Err(_) => tracing::warn!(
                "cancelling an abandoned statement timed out; its connection closes when it ends"
            ),
        }
    }
    // Discarded, not pooled.
    drop(guard);
}

impl TenantTx {
    fn conn(&self) -> Result<&Object, Error> {
        // `conn` is only None after commit/rollback, which consume `self`.
        self.conn.as_ref().ok_or_else(|| Error::InvalidConfig {
            reason: "the tenant transaction is already finished".into(),
        })
    }

    fn map(&self, err: tokio_postgres::Error) -> Error {
        // Any error the server raised (and a lost connection) aborts the transaction;
        // client-side errors (row count, decoding) do not.
        if err.as_db_error().is_some() || err.is_closed() {
            self.aborted.store(true, Ordering::Relaxed);
        }
        db_error(err, Some(&self.tenant))
    }

    /// Marks a statement as started; see [`InFlight`].
    fn start(&self) -> InFlight<'_> {
        InFlight {
            abandoned: &self.abandoned,
            landed: false,
        }
    }

    /// Whether this transaction can no longer commit: a statement of it failed on the server
    /// (PostgreSQL has then aborted the transaction, and further statements fail), or a
    /// statement's future was dropped before its answer came back (its outcome is unknown).
    /// [`commit`](TenantTx::commit) then writes nothing and answers
    /// [`Error::TransactionAborted`].
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed) || self.abandoned.load(Ordering::Relaxed)
    }

    /// The tenant this transaction is scoped to. Use it as the `tenant_id` of rows you insert.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Runs a query (prepared and cached per connection) and returns its rows.
    ///
    /// # Errors
    /// [`Error::RowSecurityViolation`] when RLS refuses a row, [`Error::Database`] otherwise.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let conn = self.conn()?;
        let in_flight = self.start();
        let outcome = async {
            let statement = conn.prepare_cached(sql).await?;
            conn.query(&statement, params).await
        }
        .await;
        in_flight.landed();
        outcome.map_err(|e| self.map(e))
    }

    /// Runs a query that returns at most one row.
    ///
    /// # Errors
    /// As [`TenantTx::query`]; [`Error::Database`] when more than one row comes back.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let conn = self.conn()?;
        let in_flight = self.start();
        let outcome = async {
            let statement = conn.prepare_cached(sql).await?;
            conn.query_opt(&statement, params).await
        }
        .await;
        in_flight.landed();
        outcome.map_err(|e| self.map(e))
    }

    /// Runs a query that returns exactly one row.
    ///
    /// # Errors
    /// As [`TenantTx::query`]; [`Error::Database`] unless exactly one row comes back.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let conn = self.conn()?;
        let in_flight = self.start();
        let outcome = async {
            let statement = conn.prepare_cached(sql).await?;
            conn.query_one(&statement, params).await
        }
        .await;
        in_flight.landed();
        outcome.map_err(|e| self.map(e))
    }

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Errors
    /// As [`TenantTx::query`].
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let conn = self.conn()?;
        let in_flight = self.start();
        let outcome = async {
            let statement = conn.prepare_cached(sql).await?;
            conn.execute(&statement, params).await
        }
        .await;
        in_flight.landed();
        outcome.map_err(|e| self.map(e))
    }

    /// This tenant's own directory entry (row-level security shows no other).
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] if it does not exist.
    pub async fn tenant_record(&self) -> Result<Tenant, Error> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1");
        match self.query_opt(&sql, &[&self.tenant.as_str()]).await? {
            Some(row) => tenant_from_row(&row),
            None => Err(Error::TenantNotFound {
                tenant: self.tenant.clone(),
            }),
        }
    }

    /// One generic record of this tenant.
    ///
    /// # Errors
    /// [`Error::InvalidId`] for a bad kind or key; database errors.
    pub async fn get_record(&self, kind: &str, key: &str) -> Result<Option<StoredRecord>, Error> {
        validate_kind(kind)?;
        validate_key(key)?;
        let row = self
            .query_opt(
                "SELECT kind, key, value, version, updated_at FROM tenant_records
                  WHERE tenant_id = $1 AND kind = $2 AND key = $3",
                &[&self.tenant.as_str(), &kind, &key],
            )
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// All generic records of one kind of this tenant, ordered by key in byte order (`COLLATE
    /// "C"`, the order of Rust's `str`, whatever the database's collation).
    ///
    /// # Errors
    /// [`Error::InvalidId`] for a bad kind; database errors.
    pub async fn list_records(&self, kind: &str) -> Result<Vec<StoredRecord>, Error> {
        validate_kind(kind)?;
        let rows = self
            .query(
                "SELECT kind, key, value, version, updated_at FROM tenant_records
                  WHERE tenant_id = $1 AND kind = $2 ORDER BY key COLLATE \"C\"",
                &[&self.tenant.as_str(), &kind],
            )
            .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Writes a generic record of this tenant under a precondition; returns the new version.
    ///
    /// # Errors
    /// [`Error::VersionConflict`] when the precondition fails (nothing is written);
    /// [`Error::InvalidId`] for a bad kind or key; database errors.
    pub async fn put_record(
        &self,
        kind: &str,
        key: &str,
        value: &serde_json::Value,
        expect: Expect,
    ) -> Result<i64, Error> {
        validate_kind(kind)?;
        validate_key(key)?;
        let tenant = self.tenant.as_str();
        let row = match expect {
            Expect::Any => self
                .query_opt(
                    "INSERT INTO tenant_records (tenant_id, kind, key, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant_id, kind, key) DO UPDATE
                        SET value = EXCLUDED.value, version = tenant_records.version + 1,
                            updated_at = now()
                     RETURNING version",
                    &[&tenant, &kind, &key, value],
                )
                .await?,
            Expect::Absent => self
                .query_opt(
                    "INSERT INTO tenant_records (tenant_id, kind, key, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant_id, kind, key) DO NOTHING RETURNING version",
                    &[&tenant, &kind, &key, value],
                )
                .await?,
            Expect::Version(version) => self
                .query_opt(
                    "UPDATE tenant_records SET value = $4, version = version + 1, updated_at = now()
                      WHERE tenant_id = $1 AND kind = $2 AND key = $3 AND version = $5
                     RETURNING version",
                    &[&tenant, &kind, &key, value, &version],
                )
                .await?,
        };
        match row {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(self.conflict(kind, key, expect).await?),
        }
    }

    /// Deletes a generic record of this tenant; `expected_version` guards against deleting a
    /// newer write. Returns whether a record was deleted.
    ///
    /// # Errors
    /// [`Error::VersionConflict`] when the record exists at another version.
    pub async fn delete_record(
        &self,
        kind: &str,
        key: &str,
        expected_version: Option<i64>,
    ) -> Result<bool, Error> {
        validate_kind(kind)?;
        validate_key(key)?;
        let tenant = self.tenant.as_str();
        let deleted = match expected_version {
            None => {
                self.execute(
                    "DELETE FROM tenant_records WHERE tenant_id = $1 AND kind = $2 AND key = $3",
                    &[&tenant, &kind, &key],
                )
                .await?
            }
            Some(version) => {
                let n = self
                    .execute(
                        "DELETE FROM tenant_records
                          WHERE tenant_id = $1 AND kind = $2 AND key = $3 AND version = $4",
                        &[&tenant, &kind, &key, &version],
                    )
                    .await?;
                if n == 0 && self.get_record(kind, key).await?.is_some() {
                    return Err(self.conflict(kind, key, Expect::Version(version)).await?);
                }
                n
            }
        };
        Ok(deleted > 0)
    }

    async fn conflict(&self, kind: &str, key: &str, expect: Expect) -> Result<Error, Error> {
        let actual = self.get_record(kind, key).await?.map(|r| r.version);
        Ok(Error::VersionConflict {
            kind: kind.to_owned(),
            key: key.to_owned(),
            expected: expect.describe(),
            actual,
        })
    }

    /// Commits. The connection goes back to the pool with no tenant set.
    ///
    /// If a statement of this transaction failed (even one whose error the caller caught and
    /// ignored, such as [`Error::RowSecurityViolation`]), PostgreSQL has aborted the
    /// transaction and would silently turn `COMMIT` into `ROLLBACK`: `commit` then rolls back
    /// and answers [`Error::TransactionAborted`], so lost writes are never reported as saved.
    ///
    /// If a statement's future was dropped before its answer came back (a cancelled statement:
    /// a time-out, a `select!`), the transaction's state is unknown: the statement may still
    /// run, fail (aborting the transaction) or keep a write its caller believes cancelled.
    /// `commit` then sends no `COMMIT`: it cancels what still runs, closes the connection
    /// (never pooled again; the server rolls the transaction back when the session ends) and
    /// answers [`Error::TransactionAborted`].
    ///
    /// # Errors
    /// [`Error::TransactionAborted`] (nothing was written); [`Error::Database`] when `COMMIT`
    /// fails (the connection is then discarded, not pooled).
    pub async fn commit(mut self) -> Result<(), Error> {
        if self.abandoned.load(Ordering::Relaxed) {
            self.close_abandoned().await;
            tracing::warn!(
                tenant = %self.tenant,
                "commit after an abandoned statement: connection closed, nothing committed"
            );
            return Err(Error::TransactionAborted {
                tenant: self.tenant.clone(),
            });
        }
        if self.aborted.load(Ordering::Relaxed) {
            // The rollback's own failure (which discards the connection) matters less than
            // telling the caller that nothing was committed.
            let _ = self.finish(ROLLBACK).await;
            tracing::warn!(tenant = %self.tenant, "commit of an aborted transaction: rolled back");
            return Err(Error::TransactionAborted {
                tenant: self.tenant.clone(),
            });
        }
        self.finish(COMMIT).await
    }

    /// Rolls back. The connection goes back to the pool with no tenant set.
    ///
    /// After an abandoned statement (see [`commit`](TenantTx::commit)) it does not wait
    /// behind that statement: it cancels it and closes the connection (never pooled again),
    /// which ends the session and so rolls the transaction back.
    ///
    /// # Errors
    /// [`Error::Database`] (the connection is then discarded, not pooled).
    pub async fn rollback(mut self) -> Result<(), Error> {
        if self.abandoned.load(Ordering::Relaxed) {
            self.close_abandoned().await;
            return Ok(());
        }
        self.finish(ROLLBACK).await
    }

    /// Ends a transaction with an abandoned statement; see [`cancel_and_discard`].
    async fn close_abandoned(&mut self) {
        if let Some(conn) = self.conn.take() {
            cancel_and_discard(DiscardGuard(Some(conn))).await;
        }
    }

    /// Commits if `result` is `Ok`, rolls back otherwise, and returns `result`.
    ///
    /// # Errors
    /// `result`'s error, or the commit's.
    pub async fn finish_with<T>(self, result: Result<T, Error>) -> Result<T, Error> {
        match result {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(err) => {
                // The original error matters more than a failed rollback (which discards the
                // connection anyway).
                let _ = self.rollback().await;
                Err(err)
            }
        }
    }

    async fn finish(&mut self, sql: &str) -> Result<(), Error> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let mut guard = DiscardGuard(Some(conn));
        let outcome = match guard.0.as_ref() {
            Some(conn) => conn.batch_execute(sql).await,
            None => return Ok(()),
        };
        match outcome {
            Ok(()) => {
                drop(guard.0.take());
                Ok(())
            }
            Err(err) => Err(self.map(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_opens_the_transaction_before_it_sets_the_tenant_in_one_message() {
        let tenant = TenantId::new("acme-2").expect("valid id");
        assert_eq!(
            begin_scoped(&tenant).expect("a valid id is accepted"),
            "BEGIN; SET LOCAL app.tenant_id = 'acme-2'"
        );
        let longest = TenantId::new("a".repeat(TenantId::MAX_LEN)).expect("valid id");
        assert!(begin_scoped(&longest).is_ok());
    }
}
