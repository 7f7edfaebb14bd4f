//! PostgreSQL backends (feature `postgres`): embedded migrations, a tenant-scoped handle
//! enforced by row-level security, an explicitly named admin handle, and the tenant directory,
//! quota ledger and send pacer on top of them.
//!
//! Two roles, two pools:
//! - [`AdminDb`] connects as the schema owner (`DATABASE_URL`). It runs
//!   [`migrations`](AdminDb::migrate) and cross-tenant administration. Row-level security is
//!   forced on the owner too; the owner sees every row only through the `chipfleet_admin`
//!   policy that the migration grants to the admin role.
//! - [`TenantDb`] connects as the application role (`APP_DATABASE_URL`, default
//!   `chipfleet_app`), which owns nothing. Its only way to run a statement is
//!   [`TenantDb::scoped`], which opens a transaction and sets `app.tenant_id` first. Before
//!   use, [`TenantDb::verify_role`] (or [`TenantDb::verify_role_with`] and the other
//!   components' sets) checks that the role cannot bypass row-level security and that every
//!   tenant table has it enabled and forced.
//!
//! The PostgreSQL stack of the workspace lives here, and other crates build on it rather than
//! keeping their own: [`build_pool`] and [`PoolOptions`] (clean recycling), the migration runner
//! (a crate declares its migrations as a [`MigrationSet`]; a host applies every component's in
//! one run with [`AdminDb::migrate_with`], or [`run_migrations`] for sets that need no tenant
//! schema), and the retry classification ([`Error::is_retryable`](crate::Error::is_retryable)).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::TenantId;
use crate::error::Error;

mod admin_db;
mod directory;
mod migrations;
mod pacing;
mod quota;
mod records;
mod role_check;
mod tenant_db;

pub use admin_db::AdminDb;
pub use directory::PgTenantDirectory;
pub use migrations::{
    ADVISORY_LOCK_KEY, MIGRATIONS_TABLE, Migration, MigrationConfig, MigrationId, MigrationReport,
    MigrationSet, run_migrations,
};
pub use pacing::PgSendPacer;
pub use quota::PgQuotaLedger;
pub use records::{Expect, StoredRecord};
pub use tenant_db::{TenantDb, TenantTx};

pub use crate::error::MigrationProblem;

/// Re-exports of the PostgreSQL crates, so users need not depend on matching versions.
pub mod reexports {
    pub use deadpool_postgres;
    pub use tokio_postgres;
}

/// Pool settings. Plain data; creating a pool does no I/O.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Maximum connections (default 8).
    pub max_size: usize,
    /// How long to wait for a free connection (default 10 s).
    pub wait_timeout: Duration,
    /// How long to wait for a new connection to be established (default 5 s).
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 8,
            wait_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Builds a pool (no I/O) over plain TCP: the pool every PostgreSQL backend of the workspace
/// uses ([`AdminDb`], [`TenantDb`], and other crates' stores such as proxy-allocator's lease
/// store). For TLS, build your own `deadpool_postgres::Pool` the same way (with
/// [`RecyclingMethod::Clean`]) and use `from_pool`.
///
/// Connections are recycled with [`RecyclingMethod::Clean`] (`RESET ALL`, `DISCARD TEMP`,
/// `pg_advisory_unlock_all()`, ...): whatever session state raw SQL left behind (a
/// session-level `SET app.tenant_id`, a temporary table with a tenant's rows) never reaches the
/// next user of the connection. It costs one round trip per checkout.
///
/// # Errors
/// [`Error::InvalidConfig`] for a URL that is not a PostgreSQL connection string (the URL is
/// never echoed) or pool settings deadpool refuses.
pub fn build_pool(url: &str, options: &PoolOptions) -> Result<Pool, Error> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| Error::InvalidConfig {
        reason: "the database URL is not a valid PostgreSQL connection string".into(),
    })?;
    config.connect_timeout(options.connect_timeout);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        },
    );
    Pool::builder(manager)
        .max_size(options.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| Error::InvalidConfig {
            reason: format!("database pool: {e}"),
        })
}

/// A pooled connection that is discarded (closed, never pooled again) unless disarmed by taking
/// it out: for connections whose session may be in an unknown state (an unfinished transaction,
/// a failed `COMMIT`).
pub(crate) struct DiscardGuard(pub(crate) Option<Object>);

impl Drop for DiscardGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// Maps a database error; a row-level security refusal becomes [`Error::RowSecurityViolation`].
pub(crate) fn db_error(err: tokio_postgres::Error, tenant: Option<&TenantId>) -> Error {
    if let (Some(tenant), Some(db)) = (tenant, err.as_db_error())
        && *db.code() == tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
        && db.message().contains("row-level security")
    {
        metrics::counter!("tenant_isolation_rls_violations_total").increment(1);
        tracing::warn!(tenant = %tenant, "row-level security refused a statement");
        return Error::RowSecurityViolation {
            tenant: tenant.clone(),
            detail: db.message().to_owned(),
        };
    }
    Error::from(err)
}

/// Converts a stored `integer` count or limit.
pub(crate) fn stored_u32(value: i32, what: &str) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::CorruptData {
        detail: format!("{what} is negative ({value})"),
    })
}

/// Converts a limit or count for storage (validated limits always fit).
pub(crate) fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_url() -> String {
        std::env::var("APP_DATABASE_URL").unwrap_or_else(|_| {
            "postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet".into()
        })
    }

    /// Raw SQL through a tenant transaction can leave session state behind (a session-level
    /// `set_config(.., false)`, a temporary table); the next checkout of the same connection
    /// must see none of it.
    #[tokio::test]
    async fn session_state_never_rides_along_on_a_pooled_connection() {
        let options = PoolOptions {
            max_size: 1,
            ..PoolOptions::default()
        };
        let pool = build_pool(&app_url(), &options).expect("valid URL");
        let db = TenantDb::from_pool(pool.clone());
        let tenant = TenantId::new("leak-probe").expect("valid id");
        let tx = db.scoped(&tenant).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is required for this test (APP_DATABASE_URL): {e}")
        });
        let pid: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        tx.query_one(
            "SELECT set_config('app.tenant_id', $1, false)",
            &[&tenant.as_str()],
        )
        .await
        .expect("session-level setting");
        tx.execute("CREATE TEMP TABLE leaked_rows (v text)", &[])
            .await
            .expect("temp table");
        tx.commit().await.expect("commit");

        let conn = pool.get().await.expect("the same connection again");
        let reused: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        assert_eq!(reused, pid, "the test must look at the same connection");
        let setting: Option<String> = conn
            .query_one("SELECT current_setting('app.tenant_id', true)", &[])
            .await
            .expect("setting")
            .get(0);
        assert!(
            setting.as_deref().unwrap_or("").is_empty(),
            "a session-level tenant leaked into the pool: {setting:?}"
        );
        let temp: Option<String> = conn
            .query_one("SELECT to_regclass('pg_temp.leaked_rows')::text", &[])
            .await
            .expect("temp table lookup")
            .get(0);
        assert_eq!(temp, None, "a temporary table survived recycling");
    }
}
