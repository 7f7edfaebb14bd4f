//! Tests that need a database of their own (a changed schema, another collation, another
//! admin role): throw-away databases, real PostgreSQL (fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::sync::Arc;

use pg_support::app_url_for;
use pg_support::scratch::{ScratchDb, owner_client};
use tenant_isolation::pg::{
    AdminDb, Expect, MigrationConfig, PgQuotaLedger, PgTenantDirectory, TenantDb,
};
use tenant_isolation::{
    ApiKey, ChipId, Error, HmacKey, NewTenant, PlanLimits, QuotaLedger, RowSecurityProblem,
    SlotKind, SystemClock, TenantDirectory, TenantId, TenantSecrets,
};

async fn migrated(scratch: &ScratchDb, config: &MigrationConfig) -> AdminDb {
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    admin
        .migrate(config)
        .await
        .expect("migrate the scratch database");
    admin
}

#[tokio::test]
async fn database_errors_never_carry_row_contents() {
    let scratch = ScratchDb::create().await;
    let admin = migrated(&scratch, &MigrationConfig::default()).await;
    // A constraint the crate does not check itself: PostgreSQL reports the whole failing row
    // (secrets included) in DETAIL.
    owner_client(&scratch.url)
        .await
        .batch_execute(
            "ALTER TABLE tenants ADD CONSTRAINT no_seven_chips CHECK (max_chips <> 7);
             ALTER TABLE tenants ADD CONSTRAINT no_refused_keys
                 CHECK (container_api_key NOT LIKE 'refused-%')",
        )
        .await
        .unwrap();
    let directory = PgTenantDirectory::new(admin);
    let secrets = TenantSecrets::generate().unwrap();
    let (key, hmac) = (
        secrets.container_api_key.expose_secret().to_owned(),
        secrets.webhook_hmac_key.expose_secret().to_owned(),
    );
    let id = TenantId::new("acme").unwrap();
    let err = directory
        .create(NewTenant::new(
            id.clone(),
            PlanLimits::new(7, 1, 1),
            secrets.clone(),
        ))
        .await
        .unwrap_err();
    let check = |err: &Error, constraint: &str, secrets: &[&str]| {
        let text = format!("{err} | {err:?} | {:?}", std::error::Error::source(err));
        for secret in secrets {
            assert!(!text.contains(secret), "a secret leaked: {text}");
        }
        assert!(!text.contains("Failing row"), "DETAIL leaked: {text}");
        match err {
            Error::Database(db) => {
                assert_eq!(db.constraint(), Some(constraint), "{db:?}");
                assert_eq!(db.table(), Some("tenants"));
                assert_eq!(db.code().map(|c| c.code()), Some("23514"));
            }
            other => panic!("expected a database error, got {other:?}"),
        }
    };
    check(&err, "no_seven_chips", &[&key, &hmac]);

    directory
        .create(NewTenant::new(
            id.clone(),
            PlanLimits::new(1, 1, 1),
            secrets,
        ))
        .await
        .unwrap();
    let refused_key = format!("refused-{}", "k".repeat(24));
    let new_hmac = HmacKey::generate().unwrap();
    let err = directory
        .set_secrets(
            &id,
            TenantSecrets {
                container_api_key: ApiKey::new(refused_key.clone()).unwrap(),
                webhook_hmac_key: new_hmac.clone(),
                previous_webhook_hmac_key: None,
            },
        )
        .await
        .unwrap_err();
    check(
        &err,
        "no_refused_keys",
        &[&refused_key, new_hmac.expose_secret(), &key, &hmac],
    );
    scratch.drop_db().await;
}

#[tokio::test]
async fn listings_are_in_byte_order_whatever_the_collation() {
    // Punctuation-ignoring, case-insensitive-first ordering, like glibc's en_US.
    let scratch = ScratchDb::create_with(
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted'",
    )
    .await;
    let admin = migrated(&scratch, &MigrationConfig::default()).await;
    let directory = Arc::new(PgTenantDirectory::new(admin));
    let ids = ["ab", "a-c", "a0"];
    for id in ids {
        directory
            .create(NewTenant::new(
                TenantId::new(id).unwrap(),
                PlanLimits::new(10, 10, 10),
                TenantSecrets::generate().unwrap(),
            ))
            .await
            .unwrap();
    }
    let mut expected: Vec<&str> = ids.to_vec();
    expected.sort_unstable();
    let listed: Vec<String> = directory
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.as_str().to_owned())
        .collect();
    assert_eq!(listed, expected, "tenants are listed in byte order");

    let db = TenantDb::connect(&app_url_for(&scratch), &pg_support::options())
        .await
        .expect("the app role on the scratch database");
    let ledger = PgQuotaLedger::new(db.clone(), Arc::new(SystemClock));
    let tenant = TenantId::new("ab").unwrap();
    let chips = ["ab", "a-c", "a0", "a"];
    for chip in chips {
        ledger
            .reserve(&tenant, SlotKind::Chip, &ChipId::new(chip).unwrap())
            .await
            .unwrap();
    }
    let mut expected: Vec<&str> = chips.to_vec();
    expected.sort_unstable();
    let holders: Vec<String> = ledger
        .holders(&tenant, SlotKind::Chip)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(holders, expected, "chips are listed in byte order");

    let keys = ["b", "B", "a-c", "ab", "é", "Z"];
    let tx = db.scoped(&tenant).await.unwrap();
    for key in keys {
        tx.put_record("note", key, &serde_json::json!(key), Expect::Absent)
            .await
            .unwrap();
    }
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort_unstable();
    let listed: Vec<String> = tx
        .list_records("note")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(listed, expected, "records are listed in byte order");
    tx.commit().await.unwrap();
    drop((db, ledger, directory));
    scratch.drop_db().await;
}

#[tokio::test]
async fn verify_role_refuses_a_role_the_admin_policy_covers() {
    // The admin policy is granted to chipfleet_app here (the owner plays the app role), so
    // chipfleet_app would see every tenant: it must be refused as a tenant pool.
    let scratch = ScratchDb::create().await;
    let config = MigrationConfig {
        app_role: pg_support::admin_role(),
        admin_role: Some(pg_support::app_role()),
    };
    migrated(&scratch, &config).await;
    match TenantDb::connect(&app_url_for(&scratch), &pg_support::options()).await {
        Err(Error::UnsafeDatabaseRole { reason, .. }) => {
            assert!(reason.contains("admin policy"), "{reason}")
        }
        other => panic!("a role covered by the admin policy must be refused: {other:?}"),
    }
    scratch.drop_db().await;
}

/// `TenantDb::connect` (through `verify_role`) must be refused, naming `table` and `problem`.
async fn assert_unprotected(url: &str, table: &str, problem: RowSecurityProblem) {
    match TenantDb::connect(url, &pg_support::options()).await {
        Err(Error::UnprotectedTable {
            table: got,
            problem: why,
        }) => {
            assert_eq!(got, table, "the refusal names the table");
            assert_eq!(why, problem, "the refusal says what {table} lacks");
        }
        other => panic!("{table} without forced row-level security was accepted: {other:?}"),
    }
}

/// A tenant table whose row-level security was switched off (every row visible), or left on
/// but not forced (its owner exempt), makes `verify_role` refuse tenant-scoped access with
/// `UnprotectedTable` naming the table; so does the directory table. Restored, access is
/// accepted again.
#[tokio::test]
async fn verify_role_refuses_tables_without_forced_row_security() {
    let scratch = ScratchDb::create().await;
    migrated(&scratch, &MigrationConfig::default()).await;
    let app_url = app_url_for(&scratch);
    TenantDb::connect(&app_url, &pg_support::options())
        .await
        .expect("a freshly migrated schema is safe");
    let owner = owner_client(&scratch.url).await;

    owner
        .batch_execute("ALTER TABLE quota_usage DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    assert_unprotected(&app_url, "quota_usage", RowSecurityProblem::NotEnabled).await;

    owner
        .batch_execute(
            "ALTER TABLE quota_usage ENABLE ROW LEVEL SECURITY;
             ALTER TABLE tenant_records NO FORCE ROW LEVEL SECURITY",
        )
        .await
        .unwrap();
    assert_unprotected(&app_url, "tenant_records", RowSecurityProblem::NotForced).await;

    owner
        .batch_execute(
            "ALTER TABLE tenant_records FORCE ROW LEVEL SECURITY;
             ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY",
        )
        .await
        .unwrap();
    assert_unprotected(&app_url, "tenants", RowSecurityProblem::NotForced).await;

    owner
        .batch_execute("ALTER TABLE tenants FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    TenantDb::connect(&app_url, &pg_support::options())
        .await
        .expect("restored, the schema is safe again");
    drop(owner);
    scratch.drop_db().await;
}
