//! PostgreSQL: the roles' URLs, the host's migration access, small pools, and the scratch
//! databases (tenant-isolation's `ScratchDb`, included from its single source).

use session_supervisor::store::PgChipStore;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{
    self, AdminDb, MigrationConfig, MigrationSet, PgTenantDirectory, PoolOptions, TenantDb,
};
use tenant_isolation::{NewTenant, PlanLimits, TenantDirectory, TenantId, TenantSecrets};

/// tenant-isolation's throw-away databases (`ScratchDb`), its owner-role client and its reading
/// of the migration table, shared rather than copied. It reads `admin_url()` from this module.
#[path = "../../../tenant-isolation/tests/pg_support/scratch.rs"]
pub mod scratch;

/// The owner role's URL (`DATABASE_URL`): runs the migrations, owns the tables, creates the
/// scratch databases.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet".into())
}

/// The application role's URL (`APP_DATABASE_URL`): tenant-scoped access only.
pub fn app_url() -> String {
    std::env::var("APP_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet".into()
    })
}

/// `url` pointed at database `name`.
pub fn on_database(url: &str, name: &str) -> String {
    let (prefix, _) = url.rsplit_once('/').expect("the URL names a database");
    format!("{prefix}/{name}")
}

/// The access the host's migration run grants: to `APP_DATABASE_URL`'s role.
pub fn migration_config() -> MigrationConfig {
    let config: tokio_postgres::Config = app_url().parse().expect("APP_DATABASE_URL is valid");
    MigrationConfig {
        app_role: config
            .get_user()
            .expect("APP_DATABASE_URL names a user")
            .to_owned(),
        ..MigrationConfig::default()
    }
}

/// Pools of at most `max_size` connections: tests run in parallel (and processes side by side)
/// under PostgreSQL's connection limit.
pub fn pool_options(max_size: usize) -> PoolOptions {
    PoolOptions {
        max_size,
        ..PoolOptions::default()
    }
}

/// The owner role on the scratch database at `url` (`ScratchDb::url`), after migrating it as a
/// host does: tenant-isolation's set, then `components`, then the grants, in one run. Fails
/// saying how to start PostgreSQL when the migration fails.
pub async fn migrated_admin(
    url: &str,
    options: &PoolOptions,
    components: &[MigrationSet],
) -> AdminDb {
    let admin = AdminDb::connect(url, options).expect("DATABASE_URL is a valid URL");
    admin
        .migrate_with(&migration_config(), components)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is required for this test (DATABASE_URL, default \
                 127.0.0.1:5432/chipfleet as chipfleet; start it with scripts/test-env.sh): \
                 migrating the scratch database failed: {err}"
            )
        });
    admin
}

/// How many rows of `tenant` `table` holds, read in `tenant`'s scope (row-level security
/// applies, so another tenant's rows are never counted).
pub async fn count_rows(db: &TenantDb, tenant: &TenantId, table: &str) -> i64 {
    let tx = db
        .scoped(tenant)
        .await
        .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
    let row = tx
        .query_one(&format!("SELECT count(*) AS n FROM {table}"), &[])
        .await
        .unwrap_or_else(|err| panic!("counting {table}: {err}"));
    tx.commit().await.expect("commit of a read");
    row.get("n")
}

/// The application role on the database at `app_url` (see [`on_database`]); fails saying which
/// setting is used when it cannot connect.
pub async fn app_db(app_url: &str, options: &PoolOptions) -> TenantDb {
    TenantDb::connect(app_url, options)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "PostgreSQL is required for this test (APP_DATABASE_URL, default \
                 127.0.0.1:5432/chipfleet as chipfleet_app): {err}"
            )
        })
}

/// Ends the application role's own connections to the scratch database at `app_url` (the owner
/// may not end them), so that `DROP DATABASE ... WITH (FORCE)` succeeds. Says what failed.
pub async fn try_end_app_connections(app_url: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(app_url, NoTls)
        .await
        .map_err(|err| err.to_string())?;
    let connection = tokio::spawn(connection);
    let ended = client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND usename = current_user \
                AND pid <> pg_backend_pid()",
        )
        .await
        .map_err(|err| err.to_string());
    drop(client);
    // The connection task ends once the client is gone.
    let _ = connection.await;
    ended
}

/// [`try_end_app_connections`], best effort: a failure shows when the database is dropped.
pub async fn end_app_connections(app_url: &str) {
    let _ = try_end_app_connections(app_url).await;
}

/// A scratch database migrated as a host does (tenant-isolation's set, then the supervisor's,
/// then the grants, in one run), with the owner role's directory on it; the pools of the
/// backends under test come from [`ScratchPg::tenant_db`] and [`ScratchPg::owner_pool`]. The
/// database goes when this does: hold it after (declare it below) whatever uses its pools.
pub struct ScratchPg {
    /// The owner role (the directory's), for erasing a tenant.
    pub admin: AdminDb,
    pub directory: PgTenantDirectory,
    /// The application role's URL for the scratch database.
    pub app_url: String,
    /// The size of the pools this hands out.
    max_pool: usize,
    /// Last: dropped after the pools (held for its drop, which drops the database).
    pub db: scratch::ScratchDb,
}

impl ScratchPg {
    /// A fresh scratch database, migrated, whose pools hold at most `max_pool` connections.
    pub async fn new(max_pool: usize) -> Self {
        let db = scratch::ScratchDb::create().await;
        let admin =
            migrated_admin(&db.url, &pool_options(max_pool), &[PgChipStore::MIGRATIONS]).await;
        ScratchPg {
            directory: PgTenantDirectory::new(admin.clone()),
            admin,
            app_url: on_database(&app_url(), &db.name),
            max_pool,
            db,
        }
    }

    /// The pool options of this database's pools.
    pub fn options(&self) -> PoolOptions {
        pool_options(self.max_pool)
    }

    /// The application role on the scratch database, a pool of its own.
    pub async fn tenant_db(&self) -> TenantDb {
        app_db(&self.app_url, &self.options()).await
    }

    /// The owner role on the scratch database, a pool of its own.
    pub fn owner_pool(&self) -> Pool {
        pg::build_pool(&self.db.url, &self.options()).expect("DATABASE_URL is a valid URL")
    }

    /// Creates `tenant` in the directory unless it exists.
    pub async fn ensure_tenant(&self, tenant: &TenantId) {
        match self.directory.create(new_tenant(tenant)).await {
            Ok(_) | Err(tenant_isolation::Error::TenantAlreadyExists { .. }) => {}
            Err(err) => panic!("creating tenant {tenant}: {err}"),
        }
    }

    /// A new tenant in the directory.
    pub async fn create_tenant(&self) -> TenantId {
        let tenant = TenantId::generate();
        self.directory
            .create(new_tenant(&tenant))
            .await
            .unwrap_or_else(|err| panic!("creating tenant {tenant}: {err}"));
        tenant
    }

    /// A plain client of the application role on the scratch database.
    pub async fn app_client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.app_url, NoTls)
            .await
            .unwrap_or_else(|err| panic!("the application role on the scratch database: {err}"));
        tokio::spawn(connection);
        client
    }
}

/// `tenant` as the directory creates it in these tests.
fn new_tenant(tenant: &TenantId) -> NewTenant {
    let secrets = TenantSecrets::generate().expect("tenant secrets");
    NewTenant::new(tenant.clone(), PlanLimits::new(100, 100, 1_000), secrets)
}

impl Drop for ScratchPg {
    /// The scratch database can only be dropped once nobody is connected to it, and the owner
    /// may not end the application role's connections; those of the pools close only when the
    /// test's runtime gets to run again, which the guard's drop (blocking) would prevent. So
    /// the application role ends its own connections here, on a runtime of its own; the
    /// guard's `DROP DATABASE ... WITH (FORCE)` ends the owner's.
    fn drop(&mut self) {
        let url = self.app_url.clone();
        let ended = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(try_end_app_connections(&url))
        })
        .join();
        match ended {
            Ok(Ok(())) => {}
            // The guard's drop then reports the database it could not drop.
            Ok(Err(err)) => eprintln!("could not end the application role's connections: {err}"),
            Err(_) => eprintln!("ending the application role's connections panicked"),
        }
    }
}
