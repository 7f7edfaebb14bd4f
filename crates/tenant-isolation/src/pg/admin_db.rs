//! The admin handle: cross-tenant administration, explicitly named.

use std::fmt;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::migrations::{self, MigrationConfig, MigrationReport, MigrationSet};
use super::{PoolOptions, build_pool};
use crate::TenantId;
use crate::error::Error;

/// Cross-tenant administration: migrations, the tenant directory, reports, purges.
///
/// It connects as the schema owner (`DATABASE_URL`). Row-level security is `FORCE`d, so the
/// owner is not exempt by ownership; it sees every row through the `chipfleet_admin` policy
/// that [`AdminDb::migrate`] grants to the admin role. Keep this handle out of request paths
/// that act for one tenant: use [`TenantDb`](super::TenantDb) there.
#[derive(Clone)]
pub struct AdminDb {
    pool: Pool,
}

impl fmt::Debug for AdminDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminDb")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl AdminDb {
    /// Wraps an existing pool of owner-role connections (no I/O).
    pub fn from_pool(pool: Pool) -> Self {
        AdminDb { pool }
    }

    /// A pool of owner-role connections to `url` (e.g. `DATABASE_URL`). No I/O until first use.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad URL.
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Self, Error> {
        Ok(AdminDb {
            pool: build_pool(url, options)?,
        })
    }

    /// tenant-isolation's own migrations (component `tenant-isolation`). [`AdminDb::migrate`]
    /// and [`AdminDb::migrate_with`] always apply them first.
    pub const MIGRATIONS: MigrationSet = migrations::OWN;

    /// Applies tenant-isolation's migrations and the access grants: the same as
    /// [`AdminDb::migrate_with`] without other components.
    ///
    /// # Errors
    /// As [`AdminDb::migrate_with`].
    pub async fn migrate(&self, config: &MigrationConfig) -> Result<MigrationReport, Error> {
        self.migrate_with(config, &[]).await
    }

    /// The host's one migration run: tenant-isolation's own migrations
    /// ([`AdminDb::MIGRATIONS`]), then each of `components` in the order given (e.g.
    /// `proxy_allocator::PostgresLeaseStore::MIGRATIONS`, later the supervisor's), then the
    /// access grants for `config`. Safe to call from every replica at start-up, concurrently:
    /// everything runs in one transaction holding `pg_advisory_xact_lock(ADVISORY_LOCK_KEY)`, so
    /// one run applies and the others wait, then find nothing left to do. Versions are recorded
    /// per component, with checksums, in [`MIGRATIONS_TABLE`](super::MIGRATIONS_TABLE); see
    /// [`run_migrations`](super::run_migrations) for what happens when the future is dropped.
    ///
    /// # Errors
    /// [`Error::Migration`] (a migration failed, or an applied one was edited),
    /// [`Error::InvalidConfig`] (unknown role, a component given twice, an invalid set),
    /// [`Error::InvalidId`] (a bad role name), database errors. On error nothing of this run is
    /// applied.
    pub async fn migrate_with(
        &self,
        config: &MigrationConfig,
        components: &[MigrationSet],
    ) -> Result<MigrationReport, Error> {
        let mut sets = Vec::with_capacity(components.len() + 1);
        sets.push(Self::MIGRATIONS);
        sets.extend_from_slice(components);
        migrations::run(&self.pool, &sets, Some(config)).await
    }

    pub(crate) async fn connection(&self) -> Result<Object, Error> {
        Ok(self.pool.get().await?)
    }

    /// Runs a cross-tenant query. Logged at `info` (without parameters).
    ///
    /// # Errors
    /// [`Error::Database`], [`Error::Pool`].
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        tracing::info!(sql, "admin query");
        let conn = self.pool.get().await?;
        Ok(conn.query(sql, params).await?)
    }

    /// Runs a cross-tenant statement; returns the rows affected. Logged at `info`.
    ///
    /// # Errors
    /// [`Error::Database`], [`Error::Pool`].
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        tracing::info!(sql, "admin statement");
        let conn = self.pool.get().await?;
        Ok(conn.execute(sql, params).await?)
    }

    /// Erases a tenant and every row it owns (the directory entry included, so its id could
    /// be created again, as a new [`Incarnation`](crate::Incarnation): prefer
    /// [`TenantStatus::Deleted`](crate::TenantStatus) unless the data must be erased). Returns
    /// whether the tenant existed.
    ///
    /// # Errors
    /// [`Error::Database`], [`Error::Pool`].
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<bool, Error> {
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "DELETE FROM tenants WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await?;
        tracing::warn!(tenant = %tenant, existed = n > 0, "tenant purged");
        Ok(n > 0)
    }
}
