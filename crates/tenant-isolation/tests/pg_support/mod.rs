//! Shared set-up for the PostgreSQL tests. They FAIL (never skip) when PostgreSQL is missing.
#![allow(dead_code)]

use std::sync::Arc;

pub mod scratch;

use tenant_isolation::pg::reexports::deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, RecyclingMethod,
};
use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{
    AdminDb, MigrationConfig, PgTenantDirectory, PoolOptions, TenantDb, TenantTx,
};
use tenant_isolation::{NewTenant, PlanLimits, TenantDirectory, TenantId, TenantSecrets};

pub const DEFAULT_ADMIN_URL: &str = "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet";
pub const DEFAULT_APP_URL: &str = "postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet";

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into())
}

/// A plain client as the owner role (`DATABASE_URL`), for what tests do around the crate.
pub async fn owner_client() -> tokio_postgres::Client {
    scratch::owner_client(&admin_url()).await
}

pub fn app_url() -> String {
    std::env::var("APP_DATABASE_URL").unwrap_or_else(|_| DEFAULT_APP_URL.into())
}

/// The user name in a PostgreSQL URL.
fn user_of(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("a valid PostgreSQL URL");
    config.get_user().expect("the URL names a user").to_owned()
}

/// The owner role (`DATABASE_URL`'s user).
pub fn admin_role() -> String {
    user_of(&admin_url())
}

/// The application role (`APP_DATABASE_URL`'s user).
pub fn app_role() -> String {
    user_of(&app_url())
}

/// The application role's URL for a scratch database.
pub fn app_url_for(scratch: &scratch::ScratchDb) -> String {
    let base = app_url();
    let (prefix, _) = base.rsplit_once('/').expect("URL has a database");
    format!("{prefix}/{}", scratch.name)
}

pub fn options() -> PoolOptions {
    PoolOptions {
        max_size: 6,
        ..PoolOptions::default()
    }
}

/// The owner pool, migrated. Panics loudly when PostgreSQL is unreachable.
pub async fn admin() -> AdminDb {
    let admin = AdminDb::connect(&admin_url(), &options()).expect("DATABASE_URL is a valid URL");
    admin.migrate(&MigrationConfig::default()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for this test (DATABASE_URL, default 127.0.0.1:5432/chipfleet \
             as chipfleet; start it with scripts/test-env.sh): {e}"
        )
    });
    admin
}

/// The application pool (role chipfleet_app), verified. Panics loudly when unreachable.
pub async fn app() -> TenantDb {
    TenantDb::connect(&app_url(), &options()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for this test (APP_DATABASE_URL, default 127.0.0.1:5432/chipfleet \
             as chipfleet_app): {e}"
        )
    })
}

/// A pool of the application role with one connection at most, so "the next connection" is
/// unambiguous.
pub fn single_connection_pool() -> Pool {
    let config: tokio_postgres::Config = app_url().parse().unwrap();
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager).max_size(1).build().unwrap()
}

/// The backend pid of the connection `tx` runs on.
pub async fn backend_pid(tx: &TenantTx) -> i32 {
    tx.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The pool's next connection, and its backend pid.
pub async fn next_connection(pool: &Pool) -> (Object, i32) {
    let conn = pool.get().await.unwrap();
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    (conn, pid)
}

/// Asserts that a pooled connection carries nothing over from an earlier transaction: no
/// transaction left open, no tenant set, no rows visible.
pub async fn assert_no_tenant_state(conn: &Object) {
    // SAVEPOINT is refused outside a transaction block.
    assert!(
        conn.batch_execute("SAVEPOINT probe").await.is_err(),
        "no transaction is left open"
    );
    let setting: Option<String> = conn
        .query_one("SELECT current_setting('app.tenant_id', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        setting.as_deref().unwrap_or("").is_empty(),
        "tenant leaked into the pool: {setting:?}"
    );
    let n: i64 = conn
        .query_one("SELECT count(*) FROM tenant_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "a connection without a tenant sees no rows");
}

pub async fn directory() -> Arc<PgTenantDirectory> {
    Arc::new(PgTenantDirectory::new(admin().await))
}

pub async fn tenant(directory: &dyn TenantDirectory) -> TenantId {
    let id = TenantId::generate();
    directory
        .create(NewTenant::new(
            id.clone(),
            PlanLimits::new(10, 10, 100),
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .expect("create tenant");
    id
}

/// A role with BYPASSRLS (created by `scripts/test-env.sh`); tenant-scoped access must refuse it.
pub fn bypass_url() -> String {
    std::env::var("BYPASS_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://chipfleet_bypass:chipfleet_bypass@127.0.0.1:5432/chipfleet".into()
    })
}

/// A member of the tables' owner role (created by `scripts/test-env.sh`); must be refused too.
pub fn owner_member_url() -> String {
    std::env::var("OWNER_MEMBER_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://chipfleet_owner_member:chipfleet_owner_member@127.0.0.1:5432/chipfleet".into()
    })
}

/// The role with BYPASSRLS (`BYPASS_DATABASE_URL`'s user).
pub fn bypass_role() -> String {
    user_of(&bypass_url())
}

/// A role without BYPASSRLS of its own that is a member of the BYPASSRLS role through another
/// role (`chipfleet_bypass_member` → `chipfleet_bypass_group` → `chipfleet_bypass`, created by
/// `scripts/test-env.sh`, as the owner role may not create roles); must be refused too.
pub fn bypass_member_url() -> String {
    std::env::var("BYPASS_MEMBER_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://chipfleet_bypass_member:chipfleet_bypass_member@127.0.0.1:5432/chipfleet".into()
    })
}
