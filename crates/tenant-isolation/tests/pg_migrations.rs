//! Migrations against the real PostgreSQL, in throw-away databases (fails if it is missing).
#![cfg(feature = "postgres")]

mod pg_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tenant_isolation::pg::reexports::tokio_postgres::Client;
use tenant_isolation::pg::{
    AdminDb, MIGRATIONS_TABLE, Migration, MigrationConfig, MigrationId, MigrationProblem,
    MigrationReport, MigrationSet, PgTenantDirectory, TenantDb, build_pool, run_migrations,
};
use tenant_isolation::{ApiKey, Error, RowSecurityProblem, TenantDirectory};

use pg_support::app_url_for;
use pg_support::scratch::{
    MigrationRow, ScratchDb, owner_client, recorded_migrations, recorded_rows,
};

const TENANCY_V1: MigrationId = MigrationId {
    component: "tenant-isolation",
    version: 1,
};
const TENANCY_V2: MigrationId = MigrationId {
    component: "tenant-isolation",
    version: 2,
};

/// Every migration of tenant-isolation's own set, in order.
fn own_ids() -> Vec<MigrationId> {
    AdminDb::MIGRATIONS
        .migrations()
        .iter()
        .map(|m| MigrationId {
            component: "tenant-isolation",
            version: m.version(),
        })
        .collect()
}

/// What a run of `sets` leaves in the migration table, in key order.
fn rows_of(sets: &[MigrationSet]) -> Vec<MigrationRow> {
    let mut rows: Vec<_> = sets.iter().flat_map(recorded_rows).collect();
    rows.sort();
    rows
}

/// Runs the host's migrations on `scratch` as a new build's first start does (the database as
/// the test left it): the owner pool, and what the run did.
async fn upgrade(scratch: &ScratchDb) -> (AdminDb, MigrationReport) {
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let report = admin
        .migrate(&MigrationConfig::default())
        .await
        .expect("the upgrade");
    (admin, report)
}

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
        if report.applied == own_ids() {
            applied += 1;
        } else {
            assert!(report.applied.is_empty(), "{report:?}");
            assert_eq!(report.already_applied, own_ids());
        }
    }
    assert_eq!(applied, 1, "exactly one run applies the migrations");

    let client = owner_client(&scratch.url).await;
    assert_eq!(
        recorded_migrations(&client).await,
        rows_of(&[AdminDb::MIGRATIONS])
    );
    let rls = client
        .query(
            "SELECT relname::text, relrowsecurity, relforcerowsecurity FROM pg_class
              WHERE relname IN ('tenants','quota_usage','quota_reservations','daily_sends',
                                'tenant_records','pacer_tenants','pacer_chips')
                AND relkind = 'r'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rls.len(), 7);
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
    assert_eq!(policies, 7);
    let pk_first: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
              WHERE c.relname IN ('quota_usage','quota_reservations','daily_sends','tenant_records',
                                  'pacer_tenants','pacer_chips')
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
        .batch_execute(&format!(
            "UPDATE {MIGRATIONS_TABLE} SET checksum = 'edited'
              WHERE component = 'tenant-isolation' AND version = 1"
        ))
        .await
        .unwrap();
    let err = admin
        .migrate(&MigrationConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Migration {
                component: "tenant-isolation",
                version: 1,
                problem: MigrationProblem::Edited,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "{err:?}");
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

fn id(component: &'static str, version: i32) -> MigrationId {
    MigrationId { component, version }
}

/// Two other components, declared the way other crates declare theirs: `widgets` (numbered
/// from 1, like tenant-isolation's) and `gadgets`, whose table refers to `widgets`.
const WIDGETS_MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "widgets",
        "CREATE TABLE widgets (id integer PRIMARY KEY)",
    ),
    Migration::new(
        2,
        "widget-names",
        "ALTER TABLE widgets ADD COLUMN name text",
    ),
];
const WIDGETS: MigrationSet = MigrationSet::new("widgets", WIDGETS_MIGRATIONS);
const GADGETS_MIGRATIONS: &[Migration] = &[Migration::new(
    1,
    "gadgets",
    "CREATE TABLE gadgets (widget integer NOT NULL REFERENCES widgets (id))",
)];
const GADGETS: MigrationSet = MigrationSet::new("gadgets", GADGETS_MIGRATIONS);
/// `widgets` in a later build: one version more.
const WIDGETS_LATER_MIGRATIONS: &[Migration] = &[
    WIDGETS_MIGRATIONS[0],
    WIDGETS_MIGRATIONS[1],
    Migration::new(
        3,
        "widget-sizes",
        "ALTER TABLE widgets ADD COLUMN size integer",
    ),
];
const WIDGETS_LATER: MigrationSet = MigrationSet::new("widgets", WIDGETS_LATER_MIGRATIONS);

/// The extension point: a host applies tenant-isolation's set and other components' sets in
/// one run; versions are tracked per component (three components have a version 1), and a later
/// build of one component applies exactly its new version.
#[tokio::test]
async fn components_are_applied_in_one_run_and_tracked_apart() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let config = MigrationConfig::default();
    let report = admin
        .migrate_with(&config, &[WIDGETS, GADGETS])
        .await
        .expect("one run, three components");
    let mut expected = own_ids();
    expected.extend([id("widgets", 1), id("widgets", 2), id("gadgets", 1)]);
    assert_eq!(
        report.applied, expected,
        "every migration once, components in the order given"
    );
    assert!(
        report.already_applied.is_empty() && report.adopted.is_empty(),
        "{report:?}"
    );
    assert!(report.admin_policy_changed);
    let client = owner_client(&scratch.url).await;
    assert_eq!(
        recorded_migrations(&client).await,
        rows_of(&[AdminDb::MIGRATIONS, WIDGETS, GADGETS]),
        "exactly these versions, with their checksums"
    );
    client
        .batch_execute(
            "INSERT INTO widgets (id, name) VALUES (1, 'w'); INSERT INTO gadgets (widget) VALUES (1)",
        )
        .await
        .expect("the components' tables, as migrated");

    // A later build of `widgets`, run on its own (no tenant schema, no grants).
    let pool = build_pool(&scratch.url, &pg_support::options()).unwrap();
    let later = run_migrations(&pool, &[WIDGETS_LATER])
        .await
        .expect("the later build");
    assert_eq!(later.applied, [id("widgets", 3)]);
    assert_eq!(later.already_applied, [id("widgets", 1), id("widgets", 2)]);
    assert!(!later.admin_policy_changed);
    assert_eq!(
        recorded_migrations(&client).await,
        rows_of(&[AdminDb::MIGRATIONS, WIDGETS_LATER, GADGETS])
    );

    // The host's run again: nothing left to do.
    let again = admin
        .migrate_with(&config, &[WIDGETS_LATER, GADGETS])
        .await
        .unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(
        again.already_applied.len(),
        own_ids().len() + 4,
        "{again:?}"
    );

    // A component given twice is refused before anything runs.
    let twice = admin
        .migrate_with(&config, &[AdminDb::MIGRATIONS])
        .await
        .unwrap_err();
    assert!(matches!(twice, Error::InvalidConfig { .. }), "{twice:?}");
    drop((client, admin, pool));
    scratch.drop_db().await;
}

/// A database migrated before the per-component table (versions in
/// `tenant_isolation_migrations`, with checksums) upgrades cleanly: its versions are adopted
/// with their checksum and time, nothing is applied again, later runs adopt nothing, and the
/// earlier table stays for builds that still read it.
#[tokio::test]
async fn the_earlier_version_table_is_adopted_once() {
    let scratch = ScratchDb::create().await;
    let client = owner_client(&scratch.url).await;
    let tenancy = &AdminDb::MIGRATIONS.migrations()[0];
    // What the earlier runner left behind: its version table, migration 0001 and its row.
    client
        .batch_execute(&format!(
            "BEGIN;
             CREATE TABLE tenant_isolation_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             {}
             COMMIT;",
            tenancy.sql()
        ))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO tenant_isolation_migrations (version, name, checksum, applied_at)
             VALUES (1, $1, $2, '2025-01-02 03:04:05+00')",
            &[&tenancy.name(), &tenancy.checksum()],
        )
        .await
        .unwrap();

    let (admin, report) = upgrade(&scratch).await;
    assert_eq!(report.adopted, [TENANCY_V1], "{report:?}");
    assert_eq!(report.already_applied, [TENANCY_V1], "{report:?}");
    assert_eq!(
        report.applied,
        own_ids()[1..],
        "nothing is applied again, only the versions after the earlier runner's: {report:?}"
    );
    assert_eq!(
        recorded_migrations(&client).await,
        rows_of(&[AdminDb::MIGRATIONS])
    );
    let applied_at: String = client
        .query_one(
            &format!(
                "SELECT to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                   FROM {MIGRATIONS_TABLE} WHERE component = 'tenant-isolation' AND version = 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied_at, "2025-01-02 03:04:05",
        "the original time is kept"
    );

    let again = admin.migrate(&MigrationConfig::default()).await.unwrap();
    assert!(
        again.adopted.is_empty() && again.applied.is_empty(),
        "{again:?}"
    );
    let earlier_rows: i64 = client
        .query_one("SELECT count(*) FROM tenant_isolation_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        earlier_rows, 1,
        "the earlier table stays, for builds that still read it"
    );
    drop((client, admin));
    scratch.drop_db().await;
}

/// A migration whose SQL waits for a lock on `lock_probe`.
const WAITS_MIGRATIONS: &[Migration] = &[Migration::new(
    1,
    "waits-for-a-lock",
    "SELECT count(*) FROM lock_probe",
)];
const WAITS: MigrationSet = MigrationSet::new("lock-probe", WAITS_MIGRATIONS);

/// Advisory locks held or awaited in the client's database.
async fn advisory_locks(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts that no advisory lock is held or awaited in the client's database.
async fn assert_no_advisory_lock(client: &Client) {
    assert_eq!(advisory_locks(client).await, 0, "no advisory lock is left");
}

/// Starts a run of `WAITS` (after tenant-isolation's own set) on a task of its own.
fn spawn_waiting_run(admin: &AdminDb) -> tokio::task::JoinHandle<Result<MigrationReport, Error>> {
    let admin = admin.clone();
    tokio::spawn(async move {
        admin
            .migrate_with(&MigrationConfig::default(), &[WAITS])
            .await
    })
}

/// Waits until a session waits for a lock on `lock_probe`; returns its pid.
async fn lock_waiter(client: &Client) -> i32 {
    for _ in 0..400 {
        let waiter = client
            .query_opt(
                "SELECT pid FROM pg_locks
                  WHERE relation = 'lock_probe'::regclass AND NOT granted LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = waiter {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the migration never waited for the lock on lock_probe");
}

/// A migration run abandoned while its SQL waits for a lock that another session holds (its
/// future dropped, or its statement cancelled by the server) leaves no advisory lock behind:
/// the next run gets the migration lock at once, not when the other session lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_migration_leaves_no_lock() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let config = MigrationConfig::default();
    admin.migrate(&config).await.unwrap();
    let observer = owner_client(&scratch.url).await;
    observer
        .batch_execute("CREATE TABLE lock_probe (v integer)")
        .await
        .unwrap();
    // Another session holds the lock for the whole test.
    let blocker = owner_client(&scratch.url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE lock_probe IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    // 1. The run's future is dropped (a start-up timeout, a shutdown) while its SQL waits.
    let run = spawn_waiting_run(&admin);
    lock_waiter(&observer).await;
    assert_eq!(
        advisory_locks(&observer).await,
        1,
        "the waiting run holds the migration lock"
    );
    run.abort();
    assert!(run.await.expect_err("aborted").is_cancelled());
    let next = tokio::time::timeout(Duration::from_secs(10), admin.migrate(&config))
        .await
        .expect("the next run gets the migration lock at once: the abandoned one was cancelled")
        .expect("the next run");
    assert!(next.applied.is_empty(), "{next:?}");
    assert_no_advisory_lock(&observer).await;

    // 2. The server cancels the waiting statement (pg_cancel_backend): the run fails, typed,
    //    and leaves no lock either.
    let run = spawn_waiting_run(&admin);
    let pid = lock_waiter(&observer).await;
    let signalled: bool = observer
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(signalled);
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the cancelled run ends")
        .unwrap()
        .expect_err("a cancelled migration fails");
    match &err {
        Error::Migration {
            component: "lock-probe",
            version: 1,
            problem: MigrationProblem::Refused(db),
            ..
        } => assert_eq!(db.code().map(|c| c.code()), Some("57014"), "{db:?}"),
        other => panic!("expected the migration to fail as cancelled, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), admin.migrate(&config))
        .await
        .expect("the next run gets the migration lock at once")
        .expect("the next run");
    assert_no_advisory_lock(&observer).await;

    // Neither abandoned run recorded anything.
    let probe_rows: i64 = observer
        .query_one(
            &format!("SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE component = 'lock-probe'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(probe_rows, 0);
    blocker.batch_execute("ROLLBACK").await.unwrap();
    drop((observer, blocker, admin));
    scratch.drop_db().await;
}

/// A database at tenant-isolation's version 1 with tenants in it upgrades to incarnations:
/// version 2 gives every existing tenant its own (which the directory reads back as a valid
/// `Incarnation`), and leaves no default behind, so a row that names no incarnation is refused.
#[tokio::test]
async fn existing_tenants_get_their_own_incarnation() {
    let scratch = ScratchDb::create().await;
    // Version 1 alone, as a build from before incarnations left it.
    let v1_only: &'static [Migration] = &AdminDb::MIGRATIONS.migrations()[..1];
    let pool = build_pool(&scratch.url, &pg_support::options()).unwrap();
    run_migrations(&pool, &[MigrationSet::new("tenant-isolation", v1_only)])
        .await
        .expect("version 1");
    let owner = owner_client(&scratch.url).await;
    let key = ApiKey::generate().unwrap();
    let ids = ["old-1", "old-2", "old-3"];
    for tenant in ids {
        // No admin policy yet: the owner writes each row as its tenant.
        owner
            .batch_execute(&format!(
                "BEGIN;
                 SELECT set_config('app.tenant_id', '{tenant}', true);
                 INSERT INTO tenants (tenant_id, max_chips, max_running_sessions,
                                      max_sends_per_day, container_api_key, webhook_hmac_key)
                 VALUES ('{tenant}', 1, 1, 1, '{key}', '{key}');
                 COMMIT;",
                key = key.expose_secret()
            ))
            .await
            .unwrap();
    }

    let (admin, report) = upgrade(&scratch).await;
    assert_eq!(report.already_applied, [TENANCY_V1], "{report:?}");
    assert_eq!(report.applied[0], TENANCY_V2, "{report:?}");
    assert_eq!(
        report.applied,
        own_ids()[1..],
        "version 2 and every later one: {report:?}"
    );
    let tenants = PgTenantDirectory::new(admin.clone())
        .list()
        .await
        .expect("every existing tenant reads back whole");
    assert_eq!(tenants.len(), ids.len());
    let incarnations: HashSet<_> = tenants.iter().map(|t| t.incarnation.clone()).collect();
    assert_eq!(
        incarnations.len(),
        ids.len(),
        "every existing tenant gets its own incarnation"
    );

    let refused = admin
        .execute(
            "INSERT INTO tenants (tenant_id, max_chips, max_running_sessions, max_sends_per_day,
                                  container_api_key, webhook_hmac_key)
             VALUES ('new-1', 1, 1, 1, $1, $1)",
            &[&key.expose_secret()],
        )
        .await;
    match refused {
        Err(Error::Database(db)) => {
            assert_eq!(db.code().map(|c| c.code()), Some("23502"), "{db:?}");
            assert_eq!(db.column(), Some("incarnation"), "{db:?}");
        }
        other => panic!("a tenant without an incarnation must be refused: {other:?}"),
    }
    drop((owner, admin, pool));
    scratch.drop_db().await;
}

/// Another component's tenant table, created the way tenant-isolation's are.
const NOTES_MIGRATIONS: &[Migration] = &[Migration::new(
    1,
    "notes",
    "CREATE TABLE notes (
         tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
         key       text NOT NULL,
         body      text NOT NULL,
         PRIMARY KEY (tenant_id, key)
     );
     ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
     ALTER TABLE notes FORCE ROW LEVEL SECURITY;
     CREATE POLICY tenant_isolation ON notes
       USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text)
       WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::text);",
)];
const NOTES: MigrationSet = MigrationSet::new("notes", NOTES_MIGRATIONS).tenant_tables(&["notes"]);

/// A table another component declares tenant-scoped gets what tenant-isolation's own tenant
/// tables get from the host's run: the application role may use it (its own tenant's rows
/// only) and the admin policy shows the owner every row. `verify_role_with` checks its
/// row-level security (refusing it once it is no longer forced, naming it); `verify_role`, which
/// knows only tenant-isolation's tables, does not look at it.
#[tokio::test]
async fn declared_tenant_tables_are_granted_and_verified() {
    let scratch = ScratchDb::create().await;
    let admin = AdminDb::connect(&scratch.url, &pg_support::options()).unwrap();
    let report = admin
        .migrate_with(&MigrationConfig::default(), &[NOTES])
        .await
        .expect("tenant-isolation and notes in one run");
    assert!(report.applied.contains(&id("notes", 1)), "{report:?}");
    let owner = owner_client(&scratch.url).await;
    let admin_policies: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_policies
              WHERE tablename = 'notes' AND policyname = 'chipfleet_admin'
                AND roles = ARRAY[$1]::name[]",
            &[&pg_support::admin_role()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        admin_policies, 1,
        "the admin policy covers the declared table"
    );

    let directory = PgTenantDirectory::new(admin.clone());
    let a = pg_support::tenant(&directory).await;
    let b = pg_support::tenant(&directory).await;
    let db = TenantDb::connect(&app_url_for(&scratch), &pg_support::options())
        .await
        .expect("the app role on the scratch database");
    db.verify_role_with(&[NOTES])
        .await
        .expect("a declared table with forced row-level security is safe");
    for tenant in [&a, &b] {
        let tx = db.scoped(tenant).await.unwrap();
        tx.execute(
            "INSERT INTO notes (tenant_id, key, body) VALUES ($1, 'k', 'v')",
            &[&tenant.as_str()],
        )
        .await
        .expect("the app role is granted the declared table");
        tx.commit().await.unwrap();
    }
    let tx = db.scoped(&a).await.unwrap();
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 1,
        "row-level security shows a tenant its own rows only"
    );
    tx.commit().await.unwrap();
    let all: i64 = admin
        .query("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(all, 2, "the admin policy shows every tenant's rows");

    owner
        .batch_execute("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    match db.verify_role_with(&[NOTES]).await {
        Err(Error::UnprotectedTable { table, problem }) => {
            assert_eq!(table, "notes");
            assert_eq!(problem, RowSecurityProblem::NotForced);
        }
        other => panic!("a declared table without forced row-level security: {other:?}"),
    }
    db.verify_role()
        .await
        .expect("verify_role checks tenant-isolation's own tables only");
    drop((owner, admin, db, directory));
    scratch.drop_db().await;
}
