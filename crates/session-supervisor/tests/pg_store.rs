//! `PgChipStore` on PostgreSQL: the `ChipStore` conformance suite (every check on a scratch
//! database of its own, migrated by the host's one run), row-level security on the tenant
//! tables, and a takeover racing a write in flight.
//!
//! Reads `DATABASE_URL` (the owner role, which may create databases) and `APP_DATABASE_URL`
//! (the application role), defaulting like the other crates' PostgreSQL tests to the settings
//! `scripts/test-env.sh` prints. Fails, never skips, when PostgreSQL is unreachable.
#![cfg(feature = "postgres")]

/// The URLs, migration access and scratch databases (tenant-isolation's `ScratchDb`, its
/// owner-role client and its reading of the migration table) shared with the Docker tests.
mod shared;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use session_supervisor::conformance::unique_key;
use session_supervisor::store::PgChipStore;
use session_supervisor::{
    ChipKey, ChipRecord, ChipSpec, ChipStore, CreateOutcome, Desired, Fence, ManualClock, NewChip,
    ObservedPatch, OwnerId, Signal, SignalBody, StoreError, Trigger,
};
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::pg::reexports::tokio_postgres::error::SqlState;
use tenant_isolation::pg::{AdminDb, PoolOptions, TenantDb};
use tenant_isolation::{ChipId, TenantId};

use shared::pg::{ScratchPg, migration_config, pool_options, scratch};

/// The tables the store's migration declares tenant-scoped.
const TENANT_TABLES: [&str; 3] = [
    "supervisor_chips",
    "supervisor_signals",
    "supervisor_fences",
];
/// Its platform tables.
const PLATFORM_TABLES: [&str; 2] = ["supervisor_owner_leases", "supervisor_work"];

/// Small pools: every check runs on databases of its own, in parallel with the others, under
/// PostgreSQL's connection limit.
const POOL_SIZE: usize = 4;

fn options() -> PoolOptions {
    pool_options(POOL_SIZE)
}

/// A `PgChipStore` on a fresh scratch database, which goes when the store does. As a
/// `ChipStore` it creates a chip's tenant in the directory first (the conformance checks make
/// up tenant ids; the tenant tables refer to the directory).
struct ScratchStore {
    store: PgChipStore,
    /// Last: dropped after the pools (its drop drops the database).
    pg: ScratchPg,
}

/// A scratch database migrated as a host does (tenant-isolation's set, then the store's, then
/// the grants, in one run) and a store on it running on `clock`.
async fn scratch_store(clock: ManualClock) -> ScratchStore {
    let pg = ScratchPg::new(POOL_SIZE).await;
    ScratchStore {
        store: PgChipStore::new(pg.tenant_db().await, pg.owner_pool()).with_clock(Arc::new(clock)),
        pg,
    }
}

impl ScratchStore {
    /// Creates `tenant` in the directory unless it exists.
    async fn ensure_tenant(&self, tenant: &TenantId) {
        self.pg.ensure_tenant(tenant).await;
    }

    /// A plain client of the application role on the scratch database.
    async fn app_client(&self) -> tokio_postgres::Client {
        self.pg.app_client().await
    }
}

#[async_trait]
impl ChipStore for ScratchStore {
    async fn create(&self, new: NewChip) -> Result<CreateOutcome, StoreError> {
        self.ensure_tenant(&new.key.tenant).await;
        self.store.create(new).await
    }

    async fn get(&self, key: &ChipKey) -> Result<Option<ChipRecord>, StoreError> {
        self.store.get(key).await
    }

    async fn list<'a>(
        &self,
        tenant: &TenantId,
        after: Option<&'a ChipId>,
        limit: u32,
    ) -> Result<Vec<ChipRecord>, StoreError> {
        self.store.list(tenant, after, limit).await
    }

    async fn update_desired(
        &self,
        key: &ChipKey,
        expected: u64,
        desired: Desired,
    ) -> Result<ChipRecord, StoreError> {
        self.store.update_desired(key, expected, desired).await
    }

    async fn write_observed(
        &self,
        key: &ChipKey,
        expected: u64,
        patch: ObservedPatch,
        fence: &Fence,
    ) -> Result<ChipRecord, StoreError> {
        self.store.write_observed(key, expected, patch, fence).await
    }

    async fn remove(&self, key: &ChipKey, expected: u64, fence: &Fence) -> Result<(), StoreError> {
        self.store.remove(key, expected, fence).await
    }

    async fn append_signal(
        &self,
        key: &ChipKey,
        at: SystemTime,
        body: SignalBody,
    ) -> Result<u64, StoreError> {
        self.store.append_signal(key, at, body).await
    }

    async fn signals_after(&self, key: &ChipKey, after: u64) -> Result<Vec<Signal>, StoreError> {
        self.store.signals_after(key, after).await
    }

    async fn enqueue(
        &self,
        key: &ChipKey,
        due: SystemTime,
        trigger: Trigger,
    ) -> Result<(), StoreError> {
        self.store.enqueue(key, due, trigger).await
    }

    async fn take_due(
        &self,
        owned: &[Fence],
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<ChipKey>, StoreError> {
        self.store.take_due(owned, now, limit).await
    }

    async fn acquire(
        &self,
        owner: &OwnerId,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        self.store.acquire(owner, limit, ttl).await
    }

    async fn renew(
        &self,
        owner: &OwnerId,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        self.store.renew(owner, held, ttl).await
    }

    async fn release(&self, owner: &OwnerId, held: &[Fence]) -> Result<(), StoreError> {
        self.store.release(owner, held).await
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.store.purge_tenant(tenant).await
    }
}

session_supervisor::chip_store_conformance!(clocked |clock: ManualClock| async move {
    Arc::new(scratch_store(clock).await) as Arc<dyn ChipStore>
});

fn new_chip(key: &ChipKey) -> NewChip {
    NewChip {
        key: key.clone(),
        spec: ChipSpec::qr(),
        chip_slot: true,
    }
}

/// The SQL state of a failed statement.
fn code(result: Result<u64, tokio_postgres::Error>) -> Option<SqlState> {
    result.err().and_then(|err| err.code().cloned())
}

/// The host's migration run records the store's migration once (with its checksum), a second
/// run applies nothing, and the application role passes `verify_role_with` the store's set:
/// row-level security is enabled and forced on the three tenant tables, and not on the
/// platform tables.
#[tokio::test]
async fn the_migration_protects_the_tenant_tables() {
    let store = scratch_store(ManualClock::new(SystemTime::now())).await;
    let tenant_db = TenantDb::connect(&store.pg.app_url, &options())
        .await
        .expect("the application role on the scratch database");
    tenant_db
        .verify_role_with(&[PgChipStore::MIGRATIONS])
        .await
        .expect("the tenant tables have row-level security forced");

    let owner = scratch::owner_client(&store.pg.db.url).await;
    let recorded = scratch::recorded_migrations(&owner).await;
    for row in scratch::recorded_rows(&PgChipStore::MIGRATIONS) {
        assert!(recorded.contains(&row), "{row:?} is recorded: {recorded:?}");
    }
    let admin = AdminDb::connect(&store.pg.db.url, &options()).expect("valid URL");
    let again = admin
        .migrate_with(&migration_config(), &[PgChipStore::MIGRATIONS])
        .await
        .expect("a second run");
    assert!(again.applied.is_empty(), "{again:?}");

    for table in TENANT_TABLES.iter().chain(&PLATFORM_TABLES) {
        let row = owner
            .query_one(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class \
                  WHERE oid = to_regclass($1)",
                &[table],
            )
            .await
            .unwrap_or_else(|err| panic!("{table} exists: {err}"));
        let (enabled, forced): (bool, bool) = (row.get(0), row.get(1));
        let tenant_table = TENANT_TABLES.contains(table);
        assert_eq!(
            (enabled, forced),
            (tenant_table, tenant_table),
            "{table}: row-level security enabled and forced exactly on tenant tables"
        );
    }
    drop((owner, admin, tenant_db));
}

/// Through the application role, a transaction scoped to tenant B sees none of tenant A's
/// chips, signals or fence, cannot write rows for A, and cannot read the platform tables at
/// all.
#[tokio::test]
async fn another_tenant_sees_none_of_the_rows() {
    let store = scratch_store(ManualClock::new(SystemTime::now())).await;
    let (a, b) = (unique_key(), unique_key());
    let mut records = Vec::new();
    for key in [&a, &b] {
        let created = store.create(new_chip(key)).await.expect("create");
        let record = created.record().clone();
        store
            .append_signal(key, record.created_at, SignalBody::Activity)
            .await
            .expect("append");
        records.push(record);
    }
    let owner = OwnerId::new("rls-probe");
    let fences = store
        .acquire(&owner, 10, Duration::from_secs(60))
        .await
        .expect("acquire");
    assert_eq!(
        fences.len(),
        2,
        "both tenants are owned: both have a fence row"
    );

    let client = store.app_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL app.tenant_id = '{}'",
            b.tenant.as_str()
        ))
        .await
        .expect("a transaction scoped to B");
    for table in TENANT_TABLES {
        let all: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(all, 1, "{table}: B sees its own row only");
        let theirs: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
                &[&a.tenant.as_str()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(theirs, 0, "{table}: B sees none of A's rows");
    }
    let touched = client
        .execute(
            "UPDATE supervisor_fences SET token = token + 100 WHERE tenant_id = $1",
            &[&a.tenant.as_str()],
        )
        .await
        .expect("an update of rows B cannot see");
    assert_eq!(touched, 0, "B's update reaches none of A's rows");
    let forged = client
        .execute(
            "INSERT INTO supervisor_signals (tenant_id, chip_id, seq, at, kind, signal) \
             VALUES ($1, $2, 1000, now(), 'activity', '{}')",
            &[&a.tenant.as_str(), &a.chip.as_str()],
        )
        .await;
    assert_eq!(
        code(forged),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "B cannot write a row of A"
    );
    client.batch_execute("ROLLBACK").await.expect("rollback");

    for table in PLATFORM_TABLES {
        let denied = client
            .execute(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
            .await;
        assert_eq!(
            code(denied),
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{table} is the owner's alone"
        );
    }
    let fence_of_a = fences
        .iter()
        .find(|fence| fence.tenant == a.tenant)
        .expect("A's fence");
    let patch = ObservedPatch {
        observed: records[0].observed.clone(),
        step: None,
    };
    store
        .write_observed(&a, 1, patch, fence_of_a)
        .await
        .expect("A's fence is unchanged: its owner still writes");
    assert_eq!(
        store.signals_after(&a, 0).await.expect("signals").len(),
        1,
        "A's signals are as A left them"
    );
    drop(client);
}

/// A takeover waits for an owner write in flight (a transaction holding the fence row `FOR
/// SHARE`, as `write_observed` does), and the old owner's writes after it are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_the_write_in_flight() {
    let clock = ManualClock::new(SystemTime::now());
    let store = Arc::new(scratch_store(clock.clone()).await);
    let key = unique_key();
    let created = store
        .create(new_chip(&key))
        .await
        .expect("create")
        .record()
        .clone();
    let ttl = Duration::from_secs(30);
    let old = store
        .acquire(&OwnerId::new("old"), 10, ttl)
        .await
        .expect("acquire")
        .into_iter()
        .find(|fence| fence.tenant == key.tenant)
        .expect("the tenant has work and no owner");

    // The old owner's write in flight: its transaction holds the fence row.
    let client = store.app_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL app.tenant_id = '{tenant}'; \
             SELECT token FROM supervisor_fences WHERE tenant_id = '{tenant}' FOR SHARE",
            tenant = key.tenant.as_str()
        ))
        .await
        .expect("the fence row, share-locked");

    clock.advance(ttl + Duration::from_secs(1));
    let takeover = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.acquire(&OwnerId::new("new"), 10, ttl).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover waits for the write in flight"
    );
    client
        .batch_execute("COMMIT")
        .await
        .expect("the write lands");
    let new = takeover
        .await
        .expect("the takeover task")
        .expect("acquire")
        .into_iter()
        .find(|fence| fence.tenant == key.tenant)
        .expect("the expired lease is taken over");
    assert_eq!(new.token, old.token + 1, "the next token");

    let patch = ObservedPatch {
        observed: created.observed.clone(),
        step: None,
    };
    match store.write_observed(&key, 1, patch.clone(), &old).await {
        Err(StoreError::StaleOwner { held, current, .. }) => {
            assert_eq!((held, current), (old.token, new.token));
        }
        other => panic!("the old owner's write after the takeover must be StaleOwner: {other:?}"),
    }
    store
        .write_observed(&key, 1, patch, &new)
        .await
        .expect("the new owner writes");
    drop(client);
}
