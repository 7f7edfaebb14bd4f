//! Migrations against the real PostgreSQL, in throw-away databases (fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;

use tenant_isolation::Error;
use tenant_isolation::pg::{AdminDb, MigrationConfig};

use pg_support::scratch::{ScratchDb, owner_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let scratch = ScratchDb::create().await;
    let url = Arc::new(scratch.url.clone());
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // One pool per "replica".
                let admin = AdminDb::connect(&url, &pg_support::options()).unwrap();
                admin.migrate(&MigrationConfig::default()).await
            })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        let report = run
            .await
            .unwrap()
            .expect("every concurrent migration succeeds");
        if report.applied == vec![1] {
            applied += 1;
        } else {
            assert_eq!(report.already_applied, vec![1]);
        }
    }
    assert_eq!(applied, 1, "exactly one run applies the migration");

    let client = owner_client(&scratch.url).await;
    let versions: i64 = client
        .query_one("SELECT count(*) FROM tenant_isolation_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
    let rls = client
        .query(
            "SELECT relname::text, relrowsecurity, relforcerowsecurity FROM pg_class
              WHERE relname IN ('tenants','quota_usage','quota_reservations','daily_sends','tenant_records')
                AND relkind = 'r'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rls.len(), 5);
    for row in &rls {
        let table: String = row.get(0);
        assert!(
            row.get::<_, bool>(1) && row.get::<_, bool>(2),
            "{table}: RLS enabled and forced"
        );
    }
    let policies: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_policies WHERE policyname = 'tenant_isolation'
                AND qual ILIKE '%nullif%' AND with_check ILIKE '%nullif%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(policies, 5);
    let pk_first: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
              WHERE c.relname IN ('quota_usage','quota_reservations','daily_sends','tenant_records')
                AND a.attname <> 'tenant_id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pk_first, 0,
        "tenant_id is first in every key and index of tenant-owned tables"
    );

    // Idempotent: a later run applies nothing and changes no policy.
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let again = admin.migrate(&MigrationConfig::default()).await.unwrap();
    assert!(again.applied.is_empty());
    assert!(!again.admin_policy_changed);
    drop(client);
    drop(admin);
    scratch.drop_db().await;
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    admin.migrate(&MigrationConfig::default()).await.unwrap();
    let client = owner_client(&scratch.url).await;
    client
        .batch_execute(
            "UPDATE tenant_isolation_migrations SET checksum = 'edited' WHERE version = 1",
        )
        .await
        .unwrap();
    let err = admin
        .migrate(&MigrationConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Migration { version: 1, .. }),
        "{err:?}"
    );
    drop(client);
    drop(admin);
    scratch.drop_db().await;
}

#[tokio::test]
async fn bad_role_configuration_is_refused_and_applies_nothing() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let unknown = MigrationConfig {
        app_role: "no_such_role_here".into(),
        admin_role: None,
    };
    assert!(matches!(
        admin.migrate(&unknown).await,
        Err(Error::InvalidConfig { .. })
    ));
    let same = MigrationConfig {
        app_role: "chipfleet_app".into(),
        admin_role: Some("chipfleet_app".into()),
    };
    assert!(matches!(
        admin.migrate(&same).await,
        Err(Error::InvalidConfig { .. })
    ));
    let injection = MigrationConfig {
        app_role: "x\"; DROP TABLE tenants; --".into(),
        admin_role: None,
    };
    assert!(matches!(
        admin.migrate(&injection).await,
        Err(Error::InvalidId { .. })
    ));
    let client = owner_client(&scratch.url).await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'tenants'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a refused run leaves nothing behind");
    drop(client);
    drop(admin);
    scratch.drop_db().await;
}
