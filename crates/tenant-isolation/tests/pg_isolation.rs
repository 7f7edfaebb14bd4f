//! Row-level security against the real PostgreSQL (fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use pg_support::{backend_pid, single_connection_pool};
use serde_json::json;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{Expect, PoolOptions, TenantDb};
use tenant_isolation::{Error, TenantDirectory, TenantId};

/// Two tenants, each with one record `note/k1` (same kind and key), committed.
async fn two_tenants() -> (TenantId, TenantId) {
    let directory = pg_support::directory().await;
    let a = pg_support::tenant(directory.as_ref()).await;
    let b = pg_support::tenant(directory.as_ref()).await;
    let db = pg_support::app().await;
    for (t, owner) in [(&a, "a"), (&b, "b")] {
        let tx = db.scoped(t).await.unwrap();
        tx.put_record("note", "k1", &json!({ "owner": owner }), Expect::Absent)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    (a, b)
}

async fn admin_view(b: &TenantId) -> Vec<(String, serde_json::Value, i64)> {
    let admin = pg_support::admin().await;
    admin
        .query(
            "SELECT key, value, version FROM tenant_records WHERE tenant_id = $1 ORDER BY key",
            &[&b.as_str()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn other_tenants_rows_are_invisible_to_select() {
    let (a, b) = two_tenants().await;
    let db = pg_support::app().await;
    let tx = db.scoped(&a).await.unwrap();
    let b_rows = tx
        .query(
            "SELECT key FROM tenant_records WHERE tenant_id = $1",
            &[&b.as_str()],
        )
        .await
        .unwrap();
    assert!(
        b_rows.is_empty(),
        "tenant B's rows must be invisible under A"
    );
    let all = tx
        .query("SELECT tenant_id FROM tenant_records", &[])
        .await
        .unwrap();
    assert!(!all.is_empty());
    assert!(
        all.iter().all(|r| r.get::<_, String>(0) == a.as_str()),
        "an unfiltered SELECT shows only A"
    );
    let tenants = tx
        .query("SELECT tenant_id FROM tenants", &[])
        .await
        .unwrap();
    assert_eq!(tenants.len(), 1, "the directory shows only A's own entry");
    assert_eq!(tx.tenant_record().await.unwrap().id, a);
    let record = tx.get_record("note", "k1").await.unwrap().unwrap();
    assert_eq!(record.value, json!({ "owner": "a" }));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn other_tenants_rows_are_untouched_by_update_and_delete() {
    let (a, b) = two_tenants().await;
    let before = admin_view(&b).await;
    assert_eq!(before.len(), 1);
    let db = pg_support::app().await;
    let tx = db.scoped(&a).await.unwrap();
    let updated = tx
        .execute(
            "UPDATE tenant_records SET value = '{\"owner\":\"mallory\"}' WHERE tenant_id = $1",
            &[&b.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0, "UPDATE of B's rows under A touches nothing");
    let unfiltered = tx
        .execute(
            "UPDATE tenant_records SET value = '{\"owner\":\"a2\"}'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(unfiltered, 1, "an unfiltered UPDATE reaches only A's row");
    let deleted = tx
        .execute(
            "DELETE FROM tenant_records WHERE tenant_id = $1",
            &[&b.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 0, "DELETE of B's rows under A touches nothing");
    tx.commit().await.unwrap();
    assert_eq!(
        admin_view(&b).await,
        before,
        "B's data is exactly as before"
    );
}

#[tokio::test]
async fn inserting_or_moving_rows_into_another_tenant_is_refused() {
    let (a, b) = two_tenants().await;
    let before = admin_view(&b).await;
    let db = pg_support::app().await;
    let tx = db.scoped(&a).await.unwrap();
    let insert = tx
        .execute(
            "INSERT INTO tenant_records (tenant_id, kind, key, value) VALUES ($1, 'note', 'planted', '{}')",
            &[&b.as_str()],
        )
        .await;
    match insert {
        Err(Error::RowSecurityViolation { tenant, .. }) => assert_eq!(tenant, a),
        other => panic!("INSERT with B's tenant_id must be refused, got {other:?}"),
    }
    tx.rollback().await.unwrap();
    let tx = db.scoped(&a).await.unwrap();
    let moved = tx
        .execute(
            "UPDATE tenant_records SET tenant_id = $1 WHERE tenant_id = $2",
            &[&b.as_str(), &a.as_str()],
        )
        .await;
    assert!(
        matches!(moved, Err(Error::RowSecurityViolation { .. })),
        "{moved:?}"
    );
    tx.rollback().await.unwrap();
    let tx = db.scoped(&a).await.unwrap();
    let reserve = tx
        .execute(
            "INSERT INTO quota_reservations (tenant_id, kind, chip_id) VALUES ($1, 'chip', 'x')",
            &[&b.as_str()],
        )
        .await;
    assert!(
        matches!(reserve, Err(Error::RowSecurityViolation { .. })),
        "{reserve:?}"
    );
    drop(tx);
    assert_eq!(admin_view(&b).await, before);
}

#[tokio::test]
async fn without_a_tenant_the_app_role_sees_and_writes_nothing() {
    let (a, _) = two_tenants().await;
    let (client, connection) = tokio_postgres::connect(&pg_support::app_url(), NoTls)
        .await
        .expect("PostgreSQL is required (APP_DATABASE_URL)");
    tokio::spawn(connection);
    let n: i64 = client
        .query_one("SELECT count(*) FROM tenant_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = client
        .query_one("SELECT count(*) FROM tenants", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let insert = client
        .execute(
            "INSERT INTO tenant_records (tenant_id, kind, key, value) VALUES ($1, 'note', 'x', '{}')",
            &[&a.as_str()],
        )
        .await;
    let err = insert.expect_err("no tenant set, no insert");
    let db = err.as_db_error().expect("a server error, not a client one");
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert!(
        db.message().contains("row-level security"),
        "refused by the row-security policy: {}",
        db.message()
    );
    // The app role cannot write the directory at all.
    let grab = client
        .execute(
            "UPDATE tenants SET max_chips = 1000 WHERE tenant_id = $1",
            &[&a.as_str()],
        )
        .await;
    let err = grab.expect_err("the app role has no UPDATE on tenants");
    let db = err.as_db_error().expect("a server error, not a client one");
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert!(
        db.message().contains("permission denied"),
        "refused by the grants: {}",
        db.message()
    );
}

#[tokio::test]
async fn a_pooled_connection_reused_after_commit_sees_no_tenant() {
    let (a, _) = two_tenants().await;
    let pool = single_connection_pool();
    let db = TenantDb::from_pool(pool.clone());
    db.verify_role()
        .await
        .expect("chipfleet_app is a safe role");
    let tx = db.scoped(&a).await.unwrap();
    let pid = backend_pid(&tx).await;
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM tenant_records", &[])
        .await
        .unwrap()
        .get(0);
    assert!(seen > 0);
    tx.commit().await.unwrap();
    assert_clean_reuse(&pool, pid).await;
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_reuse() {
    let (a, _) = two_tenants().await;
    let pool = single_connection_pool();
    let db = TenantDb::from_pool(pool.clone());
    let tx = db.scoped(&a).await.unwrap();
    tx.put_record("note", "uncommitted", &json!(1), Expect::Absent)
        .await
        .unwrap();
    drop(tx); // no commit
    let conn = pool.get().await.unwrap();
    let setting: Option<String> = conn
        .query_one("SELECT current_setting('app.tenant_id', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(setting.as_deref().unwrap_or("").is_empty(), "{setting:?}");
    drop(conn);
    let tx = db.scoped(&a).await.unwrap();
    assert!(
        tx.get_record("note", "uncommitted")
            .await
            .unwrap()
            .is_none(),
        "the write was rolled back"
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn records_have_optimistic_versions() {
    let (a, _) = two_tenants().await;
    let db = pg_support::app().await;
    let tx = db.scoped(&a).await.unwrap();
    assert!(matches!(
        tx.put_record("note", "k1", &json!(0), Expect::Absent).await,
        Err(Error::VersionConflict {
            actual: Some(1),
            ..
        })
    ));
    assert_eq!(
        tx.put_record("note", "k1", &json!(2), Expect::Version(1))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        tx.put_record("note", "k1", &json!(3), Expect::Version(1))
            .await,
        Err(Error::VersionConflict {
            actual: Some(2),
            ..
        })
    ));
    assert_eq!(
        tx.put_record("note", "k1", &json!(3), Expect::Any)
            .await
            .unwrap(),
        3
    );
    assert!(matches!(
        tx.delete_record("note", "k1", Some(2)).await,
        Err(Error::VersionConflict { .. })
    ));
    assert_eq!(tx.list_records("note").await.unwrap().len(), 1);
    assert!(tx.delete_record("note", "k1", Some(3)).await.unwrap());
    assert!(!tx.delete_record("note", "k1", None).await.unwrap());
    assert!(matches!(
        tx.put_record("Bad Kind", "k", &json!(1), Expect::Any).await,
        Err(Error::InvalidId { .. })
    ));
    assert!(matches!(
        tx.get_record("note", "").await,
        Err(Error::InvalidId { .. })
    ));
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn the_owner_role_is_refused_as_a_tenant_pool() {
    match TenantDb::connect(&pg_support::admin_url(), &PoolOptions::default()).await {
        Err(Error::UnsafeDatabaseRole { reason, .. }) => {
            assert!(reason.contains("owns"), "{reason}")
        }
        other => panic!("the owner must not be accepted as the app role: {other:?}"),
    }
}

#[tokio::test]
async fn the_admin_handle_sees_every_tenant() {
    let (a, b) = two_tenants().await;
    let admin = pg_support::admin().await;
    let rows = admin
        .query(
            "SELECT DISTINCT tenant_id FROM tenant_records WHERE tenant_id = ANY($1)",
            &[&vec![a.as_str(), b.as_str()]],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(admin.purge_tenant(&b).await.unwrap());
    assert!(
        admin_view(&b).await.is_empty(),
        "purge cascades to tenant-owned rows"
    );
    let directory = pg_support::directory().await;
    assert!(matches!(
        directory.get(&b).await,
        Err(Error::TenantNotFound { .. })
    ));
}

#[tokio::test]
async fn secrets_do_not_leak_through_debug_or_errors() {
    let directory = pg_support::directory().await;
    let t = pg_support::tenant(directory.as_ref()).await;
    let tenant = directory.get(&t).await.unwrap();
    let key = tenant.secrets.container_api_key.expose_secret().to_owned();
    let hmac = tenant.secrets.webhook_hmac_key.expose_secret().to_owned();
    let text = format!("{tenant:?} {directory:?}");
    assert!(!text.contains(&key) && !text.contains(&hmac), "{text}");
}

#[tokio::test]
async fn a_commit_after_a_failed_statement_rolls_back_and_says_so() {
    let (a, b) = two_tenants().await;
    let pool = single_connection_pool();
    let db = TenantDb::from_pool(pool.clone());
    let tx = db.scoped(&a).await.unwrap();
    tx.put_record("note", "before-failure", &json!(1), Expect::Absent)
        .await
        .unwrap();
    assert!(!tx.is_aborted());
    // The caller catches the refusal and carries on: PostgreSQL has aborted the transaction.
    let planted = tx
        .execute(
            "INSERT INTO tenant_records (tenant_id, kind, key, value) VALUES ($1, 'note', 'x', '{}')",
            &[&b.as_str()],
        )
        .await;
    assert!(matches!(planted, Err(Error::RowSecurityViolation { .. })));
    assert!(tx.is_aborted());
    match tx.commit().await {
        Err(Error::TransactionAborted { tenant }) => assert_eq!(tenant, a),
        other => panic!("commit of an aborted transaction must not report success: {other:?}"),
    }
    // Nothing was written, and the connection is clean and usable.
    let tx = db.scoped(&a).await.unwrap();
    assert!(
        tx.get_record("note", "before-failure")
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
    // A client-side error (no row where one was expected) does not abort the transaction.
    let tx = db.scoped(&a).await.unwrap();
    let none = tx
        .query_one("SELECT 1 FROM tenant_records WHERE false", &[])
        .await;
    assert!(matches!(none, Err(Error::Database(_))), "{none:?}");
    assert!(!tx.is_aborted());
    tx.put_record("note", "after-client-error", &json!(1), Expect::Absent)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = db.scoped(&a).await.unwrap();
    assert!(
        tx.get_record("note", "after-client-error")
            .await
            .unwrap()
            .is_some()
    );
    tx.rollback().await.unwrap();
}

/// The pool's next connection is the one with backend `pid`, and carries nothing over.
async fn assert_clean_reuse(pool: &Pool, pid: i32) {
    let (conn, reused) = pg_support::next_connection(pool).await;
    assert_eq!(reused, pid, "the test must look at the same connection");
    pg_support::assert_no_tenant_state(&conn).await;
}

#[tokio::test]
async fn a_pooled_connection_reused_after_rollback_or_drop_sees_no_tenant() {
    let (a, _) = two_tenants().await;
    let pool = single_connection_pool();
    let db = TenantDb::from_pool(pool.clone());

    // Explicit rollback, after a session-level setting written through raw SQL.
    let tx = db.scoped(&a).await.unwrap();
    let pid = backend_pid(&tx).await;
    tx.query_one(
        "SELECT set_config('app.tenant_id', $1, false)",
        &[&a.as_str()],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_clean_reuse(&pool, pid).await;

    // Dropped unfinished: rolled back in the background before the connection is reused.
    let tx = db.scoped(&a).await.unwrap();
    let pid = backend_pid(&tx).await;
    tx.put_record("note", "dropped", &json!(1), Expect::Any)
        .await
        .unwrap();
    drop(tx);
    assert_clean_reuse(&pool, pid).await;

    // Committed after a session-level setting: reset too.
    let tx = db.scoped(&a).await.unwrap();
    let pid = backend_pid(&tx).await;
    tx.query_one(
        "SELECT set_config('app.tenant_id', $1, false)",
        &[&a.as_str()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_clean_reuse(&pool, pid).await;
}

#[tokio::test]
async fn only_lost_connections_and_transient_server_states_are_retryable() {
    let (a, _) = two_tenants().await;
    let db = pg_support::app().await;
    let tx = db.scoped(&a).await.unwrap();
    let no_row = tx.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
    assert!(
        !no_row.is_retryable(),
        "an unexpected row count fails again: {no_row}"
    );
    let decode = tx
        .query_one("SELECT 'x'::text", &[])
        .await
        .unwrap()
        .try_get::<_, i32>(0)
        .map_err(Error::from)
        .unwrap_err();
    assert!(
        !decode.is_retryable(),
        "a type mismatch fails again: {decode}"
    );
    let syntax = tx.execute("SELEC 1", &[]).await.unwrap_err();
    assert!(!syntax.is_retryable(), "{syntax}");
    tx.rollback().await.unwrap();

    // The server ends the connection: the statement's error and the next one are retryable.
    let tx = db.scoped(&a).await.unwrap();
    let killed = tx
        .query_one("SELECT pg_terminate_backend(pg_backend_pid())", &[])
        .await
        .unwrap_err();
    assert!(killed.is_retryable(), "admin shutdown: {killed:?}");
    let closed = tx.query_one("SELECT 1", &[]).await.unwrap_err();
    match &closed {
        Error::Database(db) => assert!(db.is_connection_lost(), "{db:?}"),
        other => panic!("{other:?}"),
    }
    assert!(closed.is_retryable(), "a closed connection: {closed:?}");
    drop(tx);
}

/// Connecting tenant-scoped access as `url` must be refused with `UnsafeDatabaseRole`, naming
/// `reason`. The schema is migrated first, so the ownership check has tables to look at.
async fn assert_refused(url: String, reason: &str) {
    pg_support::admin().await;
    match TenantDb::connect(&url, &PoolOptions::default()).await {
        Err(Error::UnsafeDatabaseRole { reason: why, .. }) => assert!(
            why.contains(reason),
            "refused for the wrong reason: {why:?} (expected {reason:?})"
        ),
        Err(other) => panic!("expected UnsafeDatabaseRole, got {other}"),
        Ok(_) => panic!("a role that can see every tenant's rows was accepted"),
    }
}

#[tokio::test]
async fn a_role_with_bypassrls_is_refused() {
    assert_refused(pg_support::bypass_url(), "BYPASSRLS").await;
}

#[tokio::test]
async fn a_member_of_the_owner_role_is_refused() {
    assert_refused(
        pg_support::owner_member_url(),
        "is a member of the owner of",
    )
    .await;
}

/// A role with no BYPASSRLS of its own that belongs (through another role) to one that has it
/// could `SET ROLE` to it and read every tenant's rows: it is refused, naming that role.
#[tokio::test]
async fn a_member_of_a_bypassrls_role_is_refused() {
    assert_refused(
        pg_support::bypass_member_url(),
        &format!(
            "is a member of role {:?}, which has BYPASSRLS",
            pg_support::bypass_role()
        ),
    )
    .await;
}
