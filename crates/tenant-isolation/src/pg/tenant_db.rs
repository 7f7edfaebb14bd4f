//! The tenant-scoped handle: the only way the application reaches tenant data.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::directory::{TENANT_COLUMNS, tenant_from_row};
use super::migrations::{ADMIN_POLICY, TABLES};
use super::records::{Expect, StoredRecord, record_from_row, validate_key, validate_kind};
use super::{DiscardGuard, PoolOptions, build_pool, db_error};
use crate::error::Error;
use crate::{Tenant, TenantId};

/// A pool of application-role connections whose only entry point is [`TenantDb::scoped`].
///
/// Connect it as a role that owns none of the tables, is not a superuser, has no `BYPASSRLS`
/// and is not the admin role: [`TenantDb::verify_role`] checks exactly that and
/// [`TenantDb::connect`] calls it.
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

    /// Checks that the pool's role cannot bypass row-level security: it is not a superuser,
    /// has no `BYPASSRLS`, owns none of this crate's tables (nor is a member of their owner),
    /// and is not covered by the admin policy.
    ///
    /// # Errors
    /// [`Error::UnsafeDatabaseRole`] saying which; database errors otherwise.
    pub async fn verify_role(&self) -> Result<(), Error> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT current_user::text, r.rolsuper, r.rolbypassrls
                   FROM pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await?;
        let role: String = row.try_get(0)?;
        let unsafe_role = |reason: String| {
            Err(Error::UnsafeDatabaseRole {
                role: role.clone(),
                reason,
            })
        };
        if row.try_get::<_, bool>(1)? {
            return unsafe_role("it is a superuser".into());
        }
        if row.try_get::<_, bool>(2)? {
            return unsafe_role("it has BYPASSRLS".into());
        }
        let tables: Vec<&str> = TABLES.to_vec();
        let owned = conn
            .query(
                "SELECT c.relname::text FROM pg_class c
                  WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                    AND c.relname = ANY($1)
                    AND pg_has_role(current_user, c.relowner, 'MEMBER')",
                &[&tables],
            )
            .await?;
        if let Some(table) = owned.first() {
            return unsafe_role(format!(
                "it owns (or is a member of the owner of) table {}",
                table.try_get::<_, String>(0)?
            ));
        }
        let admin = conn
            .query(
                "SELECT p.tablename::text FROM pg_policies p
                  WHERE p.schemaname = current_schema() AND p.policyname = $1
                    AND EXISTS (SELECT 1 FROM unnest(p.roles) AS r(name)
                                 WHERE CASE WHEN r.name = 'public' THEN true
                                            ELSE pg_has_role(current_user, r.name, 'MEMBER') END)",
                &[&ADMIN_POLICY],
            )
            .await?;
        if let Some(table) = admin.first() {
            return unsafe_role(format!(
                "the admin policy on {} applies to it",
                table.try_get::<_, String>(0)?
            ));
        }
        Ok(())
    }

    /// Opens a transaction scoped to `tenant`: `BEGIN`, then
    /// `set_config('app.tenant_id', tenant, true)`, before anything else can run. Row-level
    /// security then shows and accepts only `tenant`'s rows. The setting is transaction-local:
    /// it ends with the transaction, so a pooled connection never carries it to the next user.
    ///
    /// # Errors
    /// [`Error::Pool`] or [`Error::Database`].
    pub async fn scoped(&self, tenant: &TenantId) -> Result<TenantTx, Error> {
        let conn = self.pool.get().await?;
        // From here on, a failure drops the TenantTx, which rolls back or discards the connection.
        let tx = TenantTx {
            conn: Some(conn),
            tenant: tenant.clone(),
            aborted: AtomicBool::new(false),
        };
        tx.conn()?.batch_execute("BEGIN").await?;
        let statement = tx
            .conn()?
            .prepare_cached("SELECT set_config('app.tenant_id', $1, true)")
            .await?;
        tx.conn()?
            .query_one(&statement, &[&tenant.as_str()])
            .await?;
        Ok(tx)
    }
}

/// An open transaction scoped to one tenant. Finish it with [`commit`](TenantTx::commit) or
/// [`rollback`](TenantTx::rollback); dropping it rolls back (in a background task, or by
/// discarding the connection when no Tokio runtime is available): an unfinished transaction
/// never goes back to the pool.
///
/// Statements run with row-level security on: other tenants' rows are invisible to `SELECT`,
/// untouched by `UPDATE`/`DELETE`, and refused on `INSERT` ([`Error::RowSecurityViolation`]).
pub struct TenantTx {
    conn: Option<Object>,
    tenant: TenantId,
    /// Set when a statement failed on the server: PostgreSQL has then aborted the transaction
    /// and would turn `COMMIT` into a silent `ROLLBACK`.
    aborted: AtomicBool,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant", &self.tenant)
            .field("open", &self.conn.is_some())
            .field("aborted", &self.is_aborted())
            .finish()
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
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
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

    /// Whether a statement of this transaction failed on the server. PostgreSQL has then
    /// aborted the transaction: further statements fail, and [`commit`](TenantTx::commit)
    /// rolls back and answers [`Error::TransactionAborted`].
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
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
        let statement = conn.prepare_cached(sql).await.map_err(|e| self.map(e))?;
        conn.query(&statement, params)
            .await
            .map_err(|e| self.map(e))
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
        let statement = conn.prepare_cached(sql).await.map_err(|e| self.map(e))?;
        conn.query_opt(&statement, params)
            .await
            .map_err(|e| self.map(e))
    }

    /// Runs a query that returns exactly one row.
    ///
    /// # Errors
    /// As [`TenantTx::query`]; [`Error::Database`] unless exactly one row comes back.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let conn = self.conn()?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| self.map(e))?;
        conn.query_one(&statement, params)
            .await
            .map_err(|e| self.map(e))
    }

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Errors
    /// As [`TenantTx::query`].
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let conn = self.conn()?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| self.map(e))?;
        conn.execute(&statement, params)
            .await
            .map_err(|e| self.map(e))
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
    /// # Errors
    /// [`Error::TransactionAborted`] (nothing was written); [`Error::Database`] when `COMMIT`
    /// fails (the connection is then discarded, not pooled).
    pub async fn commit(mut self) -> Result<(), Error> {
        if self.is_aborted() {
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
    /// # Errors
    /// [`Error::Database`] (the connection is then discarded, not pooled).
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.finish(ROLLBACK).await
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
