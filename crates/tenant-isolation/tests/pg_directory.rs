//! The PostgreSQL tenant directory beyond the conformance suite: a change that cannot be read
//! back whole is not half-applied (real PostgreSQL; fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use pg_support::scratch::{ScratchDb, owner_client};
use tenant_isolation::pg::{AdminDb, MigrationConfig, PgTenantDirectory};
use tenant_isolation::{
    Error, NewTenant, PlanLimits, TenantDirectory, TenantId, TenantSecrets, TenantStatus,
};

/// A stored secret written around the crate (with a control character: no key can hold one) makes `set_limits` fail
/// with `CorruptData`, and the limits stay as they were; `set_secrets` is the repair. Runs in a
/// scratch database, so a failing run never leaves a corrupt tenant in the shared one (where it
/// would break every later `list`).
#[tokio::test]
async fn a_change_to_a_corrupt_tenant_is_rolled_back() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    admin.migrate(&MigrationConfig::default()).await.unwrap();
    let directory = PgTenantDirectory::new(admin);
    let t = pg_support::tenant(&directory).await;
    let owner = owner_client(&scratch.url).await;
    owner
        .execute(
            "UPDATE tenants SET container_api_key = 'hunter' || chr(9) || 'value' WHERE tenant_id = $1",
            &[&t.as_str()],
        )
        .await
        .unwrap();

    let refused = directory.set_limits(&t, PlanLimits::new(1, 1, 1)).await;
    match refused {
        Err(Error::CorruptData { detail }) => {
            assert!(detail.contains("container API key"), "{detail}");
            assert!(
                !detail.contains("hunter"),
                "no stored value in errors: {detail}"
            );
        }
        other => panic!("expected CorruptData, got {other:?}"),
    }
    let row = owner
        .query_one(
            "SELECT max_chips, max_running_sessions, max_sends_per_day
               FROM tenants WHERE tenant_id = $1",
            &[&t.as_str()],
        )
        .await
        .unwrap();
    let stored: (i32, i32, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        stored,
        (10, 10, 100),
        "the refused change left the limits untouched"
    );

    // New secrets repair the row; then limits can change again.
    directory
        .set_secrets(&t, TenantSecrets::generate().unwrap())
        .await
        .expect("set_secrets repairs a corrupt key");
    let changed = directory
        .set_limits(&t, PlanLimits::new(1, 1, 1))
        .await
        .unwrap();
    assert_eq!(changed.limits, PlanLimits::new(1, 1, 1));
    drop((owner, directory));
    scratch.drop_db().await;
}

/// Missing and deleted tenants are told apart.
#[tokio::test]
async fn changes_to_missing_or_deleted_tenants_say_which() {
    let directory = pg_support::directory().await;
    let missing = TenantId::generate();
    assert!(matches!(
        directory
            .set_limits(&missing, PlanLimits::new(1, 1, 1))
            .await,
        Err(Error::TenantNotFound { .. })
    ));
    let t = pg_support::tenant(directory.as_ref()).await;
    directory
        .set_status(&t, TenantStatus::Deleted)
        .await
        .unwrap();
    assert!(matches!(
        directory.set_limits(&t, PlanLimits::new(1, 1, 1)).await,
        Err(Error::TenantDeleted { .. })
    ));
    assert!(matches!(
        directory
            .set_secrets(&t, TenantSecrets::generate().unwrap())
            .await,
        Err(Error::TenantDeleted { .. })
    ));
}

/// Ids are never reused, except after `AdminDb::purge_tenant` erased the tenant: a tenant
/// created again under a purged id is a new incarnation, so nothing labelled with the old one
/// (its container volume) is taken for the new tenant's. The tenant-scoped view of a tenant
/// carries the same incarnation as the directory.
#[tokio::test]
async fn a_tenant_created_again_after_a_purge_is_a_new_incarnation() {
    let admin = pg_support::admin().await;
    let directory = PgTenantDirectory::new(admin.clone());
    let id = TenantId::generate();
    let limits = PlanLimits::new(1, 1, 1);
    let first = directory
        .create(NewTenant::new(
            id.clone(),
            limits,
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .unwrap();
    let db = pg_support::app().await;
    let tx = db.scoped(&id).await.unwrap();
    assert_eq!(
        tx.tenant_record().await.unwrap().incarnation,
        first.incarnation,
        "the tenant-scoped view reads the stored incarnation"
    );
    tx.commit().await.unwrap();

    assert!(admin.purge_tenant(&id).await.unwrap(), "the tenant existed");
    let again = directory
        .create(NewTenant::new(
            id.clone(),
            limits,
            TenantSecrets::generate().unwrap(),
        ))
        .await
        .expect("a purged id can be created again");
    assert_ne!(
        again.incarnation, first.incarnation,
        "a tenant created again after a purge is a new incarnation"
    );
    assert_eq!(
        directory.get(&id).await.unwrap().incarnation,
        again.incarnation
    );
    assert!(admin.purge_tenant(&id).await.unwrap());
}
