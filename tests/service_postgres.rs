//! Smoke test: the PostgreSQL server that `scripts/test-env.sh` starts is real and reachable.
//!
//! It fails (never skips) when PostgreSQL is missing: run `scripts/test-env.sh` first.

use tokio_postgres::NoTls;

/// The owner role's URL, as printed by `scripts/test-env.sh`.
fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet".to_owned())
}

/// The non-owner application role's URL, as printed by `scripts/test-env.sh`.
fn app_database_url() -> String {
    std::env::var("APP_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://chipfleet_app:chipfleet_app@127.0.0.1:5432/chipfleet".to_owned()
    })
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and is not reachable ({e}). \
             Run `scripts/test-env.sh` (as root) to install and start it."
            )
        });
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    client
}

#[tokio::test]
async fn postgres_answers_a_query_and_is_version_15() {
    let client = connect(&database_url()).await;
    let row = client
        .query_one(
            "SELECT $1::int4 + 1, current_setting('server_version_num')::int4, current_user::text",
            &[&41_i32],
        )
        .await
        .expect("query");
    let sum: i32 = row.get(0);
    let version: i32 = row.get(1);
    let user: String = row.get(2);
    assert_eq!(sum, 42);
    assert!(
        (150_000..160_000).contains(&version),
        "expected PostgreSQL 15, server_version_num is {version}"
    );
    assert_eq!(user, "chipfleet");
}

#[tokio::test]
async fn the_app_role_logs_in_and_owns_nothing() {
    let client = connect(&app_database_url()).await;
    let row = client
        .query_one(
            "SELECT current_user::text, \
                    (SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
                      WHERE r.rolname = current_user), \
                    (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .expect("query");
    let user: String = row.get(0);
    let owned: i64 = row.get(1);
    let bypasses: bool = row.get(2);
    assert_eq!(user, "chipfleet_app");
    assert_eq!(
        owned, 0,
        "the application role must own no relations, so RLS applies to it"
    );
    assert!(
        !bypasses,
        "the application role must not bypass row-level security"
    );
}
