//! PostgreSQL: the roles' URLs, the host's migration access, small pools, and the scratch
//! databases (tenant-isolation's `ScratchDb`, included from its single source).

use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{AdminDb, MigrationConfig, MigrationSet, PoolOptions, TenantDb};

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
