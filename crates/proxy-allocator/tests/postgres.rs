//! PostgreSQL-only behaviour: stickiness across restarts, atomicity across replicas, migrations.
#![cfg(feature = "postgres")]

/// tenant-isolation's throw-away databases (`ScratchDb`), its owner-role client and its reading
/// of the migration table, shared rather than copied. It reads `admin_url()` from this file.
#[path = "../../tenant-isolation/tests/pg_support/scratch.rs"]
#[allow(dead_code)]
mod scratch;

use std::collections::HashMap;
use std::sync::Arc;

use proxy_allocator::{
    Allocation, AllocationPolicy, AllocationRequest, Candidate, ChipProxyRequest, LeaseStore,
    PostgresLeaseStore, ProxyAddress, ProxyAllocator, ProxyError, ProxyScheme, ProxySource,
    RotatingGatewayConfig, RotatingGatewaySource, StaticListSource, StaticProxyEntry,
    UsernameTemplate,
};
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::pg::{AdminDb, MigrationConfig, MigrationId, MigrationSet, PoolOptions};
use tenant_isolation::{ChipId, TenantId};

/// The owner role's URL (`DATABASE_URL`): the lease store's tables are platform data, owned and
/// used by that role.
fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet".into())
}

/// A store on `DATABASE_URL` with at most `max_connections` connections, migrated.
async fn migrated_store(max_connections: usize) -> PostgresLeaseStore {
    let store = PostgresLeaseStore::from_url(&admin_url(), max_connections).expect("store");
    store.migrate().await.unwrap_or_else(|err| {
        panic!("PostgreSQL must be running (scripts/test-env.sh); migrate failed: {err}")
    });
    store
}

async fn store() -> Arc<PostgresLeaseStore> {
    Arc::new(migrated_store(8).await)
}

/// A candidate endpoint of tier 0 for up to 10 chips, shared, with no session or country.
fn candidate(endpoint: &str) -> Candidate {
    Candidate {
        endpoint: endpoint.parse().expect("id"),
        tier: 0,
        cap: 10,
        exclusive: false,
        session_id: None,
        country: None,
    }
}

fn run() -> String {
    format!("{:010x}", fastrand::u64(..) >> 24)
}

fn static_source(run: &str, count: u16) -> Arc<dyn ProxySource> {
    let entries = (0..count).map(|n| {
        let address = ProxyAddress::new(ProxyScheme::Http, "127.0.0.1", 21_000 + n)
            .expect("address")
            .with_credentials(
                "u",
                Some(proxy_allocator::ProxyPassword::new("p@ss").expect("a valid password")),
            )
            .expect("credentials");
        StaticProxyEntry::new(address)
            .expect("entry")
            .with_id(format!("pg-{run}-{n}").parse().expect("id"))
    });
    Arc::new(StaticListSource::new(entries).expect("source"))
}

fn gateway_source(run: &str) -> Arc<dyn ProxySource> {
    let config = RotatingGatewayConfig::new(
        format!("gw-{run}").parse().expect("id"),
        ProxyAddress::parse("http://acme:s3cret@127.0.0.1:21999").expect("url"),
        UsernameTemplate::parse("{user}_session-{session}[_country-{country}]").expect("template"),
    );
    Arc::new(RotatingGatewaySource::new(config).expect("gateway"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_survive_a_restart() {
    let run = run();
    let tenant = TenantId::generate();
    let requests: Vec<ChipProxyRequest> = (0..30)
        .map(|n| {
            ChipProxyRequest::new(tenant.clone(), ChipId::new(format!("r{n}")).expect("chip"))
                .with_phone("351912345678")
        })
        .collect();
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 2,
        ..AllocationPolicy::default()
    };
    let mut before = Vec::new();
    let mut waha_before = Vec::new();
    {
        let fixed = ProxyAllocator::new(static_source(&run, 10), store().await, policy.clone())
            .expect("allocator");
        let gateway = ProxyAllocator::new(gateway_source(&run), store().await, policy.clone())
            .expect("allocator");
        for (n, request) in requests.iter().enumerate() {
            let allocator = if n % 2 == 0 { &fixed } else { &gateway };
            let lease = allocator.allocate(request).await.expect("allocates");
            waha_before.push(allocator.waha_proxy(&lease).await.expect("waha proxy"));
            before.push(lease);
        }
        // Both allocators (and their pools) are dropped here: a process restart.
    }
    let fixed = ProxyAllocator::new(static_source(&run, 10), store().await, policy.clone())
        .expect("allocator");
    let gateway =
        ProxyAllocator::new(gateway_source(&run), store().await, policy).expect("allocator");
    for (n, request) in requests.iter().enumerate() {
        let allocator = if n % 2 == 0 { &fixed } else { &gateway };
        let lease = allocator.allocate(request).await.expect("allocates");
        assert_eq!(
            lease, before[n],
            "chip {n} lost its lease across the restart"
        );
        assert_eq!(
            allocator.waha_proxy(&lease).await.expect("waha proxy"),
            waha_before[n],
            "chip {n}: same proxy, same gateway session user name"
        );
    }
    let gateway_lease = &before[1];
    let user = waha_before[1].username.as_deref().expect("user name");
    assert_eq!(
        user,
        format!(
            "acme_session-{}_country-pt",
            gateway_lease.session_id.as_deref().expect("session")
        )
    );
    for request in &requests {
        fixed
            .release(&request.tenant, &request.chip)
            .await
            .expect("release");
    }
}

/// Static entries without an explicit id get a default one, which is what the store persists.
/// It must come out the same from the same configuration in a new process (or the chips move),
/// and must not carry the user name (often an account identifier) into the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_ids_survive_a_restart_and_never_store_the_user_name() {
    let run = run();
    let account = format!("acct-{run}");
    // Two accounts on one host:port, and a SOCKS5 proxy; no `id=`.
    let config = format!(
        "http://{account}-a:s3cret@127.0.0.1:22001 country=PT\n\
         http://{account}-b:s3cret@127.0.0.1:22001 country=PT\n\
         socks5://{account}-c:s3cret@127.0.0.1:22002 country=PT\n"
    );
    let source = || -> Arc<dyn ProxySource> {
        Arc::new(StaticListSource::parse(&config).expect("configuration"))
    };
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 2,
        ..AllocationPolicy::default()
    };
    let tenant = TenantId::generate();
    let requests: Vec<ChipProxyRequest> = (0..6)
        .map(|n| ChipProxyRequest::new(tenant.clone(), ChipId::new(format!("d{n}")).expect("chip")))
        .collect();
    let mut before = Vec::new();
    {
        let allocator =
            ProxyAllocator::new(source(), store().await, policy.clone()).expect("allocator");
        for request in &requests {
            before.push(allocator.allocate(request).await.expect("allocates"));
        }
        // The allocator, its source and its pool are dropped here: a process restart.
    }
    let endpoints: std::collections::BTreeSet<String> =
        before.iter().map(|l| l.endpoint.to_string()).collect();
    assert_eq!(
        endpoints.len(),
        3,
        "all three proxies in use: {endpoints:?}"
    );
    for id in &endpoints {
        assert!(
            id.starts_with("http://127.0.0.1:22001#")
                || id.starts_with("socks5://127.0.0.1:22002#"),
            "{id}"
        );
    }

    // A new process parses the same configuration again.
    let allocator = ProxyAllocator::new(source(), store().await, policy).expect("allocator");
    for (request, lease) in requests.iter().zip(&before) {
        assert_eq!(
            &allocator.allocate(request).await.expect("allocates"),
            lease,
            "chip {} lost its proxy across the restart",
            request.chip
        );
    }

    // Nothing the store wrote carries the user name.
    let raw = scratch::owner_client(&admin_url()).await;
    let pattern = format!("%{account}%");
    for (table, column) in [
        ("proxy_endpoints", "id"),
        ("proxy_leases", "endpoint_id"),
        ("proxy_lease_history", "endpoint_id"),
    ] {
        let row = raw
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {column} LIKE $1"),
                &[&pattern],
            )
            .await
            .expect("query");
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "{table}.{column} holds the user name"
        );
    }
    let stored = raw
        .query_one(
            "SELECT count(*) FROM proxy_leases WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .expect("query");
    assert_eq!(stored.get::<_, i64>(0), 6);
    for request in &requests {
        allocator
            .release(&request.tenant, &request.chip)
            .await
            .expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_capacity_atomically() {
    // Three "replicas", each with its own pool, race for 40 slots with 120 chips.
    let run = run();
    let tenant = TenantId::generate();
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 4,
        ..AllocationPolicy::default()
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(
            ProxyAllocator::new(static_source(&run, 10), store().await, policy.clone())
                .expect("allocator"),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..120 {
        let replica = replicas[n % 3].clone();
        let request = ChipProxyRequest::new(
            tenant.clone(),
            ChipId::new(format!("x{}", n % 60)).expect("chip"),
        );
        // Each chip is asked for twice, by different replicas.
        tasks.spawn(async move { (n % 60, replica.allocate(&request).await) });
    }
    let mut won: HashMap<usize, String> = HashMap::new();
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task") {
            (chip, Ok(lease)) => {
                if let Some(previous) = won.insert(chip, lease.endpoint.to_string()) {
                    assert_eq!(
                        previous,
                        lease.endpoint.to_string(),
                        "chip {chip} got two endpoints"
                    );
                }
            }
            (_, Err(ProxyError::NoCapacity { .. })) => refused += 1,
            (_, Err(err)) => panic!("unexpected error: {err}"),
        }
    }
    assert_eq!(won.len(), 40, "exactly the 40 slots are handed out");
    assert!(
        refused >= 20,
        "the other 20 chips are refused (each once or twice)"
    );
    let leases = replicas[0]
        .store()
        .leases(Some(tenant.clone()))
        .await
        .expect("list");
    assert_eq!(leases.len(), 40);
    let mut per_endpoint: HashMap<String, u32> = HashMap::new();
    for lease in &leases {
        *per_endpoint.entry(lease.endpoint.to_string()).or_default() += 1;
    }
    assert!(
        per_endpoint.values().all(|&count| count == 4),
        "{per_endpoint:?}"
    );
    for lease in leases {
        replicas[0]
            .release(&lease.tenant, &lease.chip)
            .await
            .expect("release");
    }
}

const LEASES_V1: MigrationId = MigrationId {
    component: "proxy-allocator",
    version: 1,
};

/// Every migration of `sets`, in `MigrationId` order (component, then version).
fn every_id(sets: &[MigrationSet]) -> Vec<MigrationId> {
    let mut ids: Vec<MigrationId> = sets
        .iter()
        .flat_map(|set| {
            set.migrations().iter().map(move |migration| MigrationId {
                component: set.component(),
                version: migration.version(),
            })
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Four replicas start at once on a fresh database: two migrate the lease store alone, two run
/// a host's single migration run with every component (tenant-isolation's set, then this
/// crate's). Under the one transaction-scoped advisory lock each migration is applied by
/// exactly one run, and the migration table then holds exactly the two components' versions,
/// with their checksums.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_each_version_exactly_once() {
    let scratch = scratch::ScratchDb::create().await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..4 {
        let url = scratch.url.clone();
        tasks.spawn(async move {
            let options = PoolOptions {
                max_size: 2,
                ..PoolOptions::default()
            };
            if n % 2 == 0 {
                let store = PostgresLeaseStore::connect(&url, &options).expect("store");
                store.migrate().await.map_err(|err| err.to_string())
            } else {
                let admin = AdminDb::connect(&url, &options).expect("admin");
                admin
                    .migrate_with(
                        &MigrationConfig::default(),
                        &[PostgresLeaseStore::MIGRATIONS],
                    )
                    .await
                    .map_err(|err| err.to_string())
            }
        });
    }
    let mut applied = Vec::new();
    let mut runs = 0;
    while let Some(joined) = tasks.join_next().await {
        let report = joined
            .expect("task")
            .unwrap_or_else(|err| panic!("every concurrent migration succeeds: {err}"));
        assert!(
            report.adopted.is_empty(),
            "a fresh database has nothing to adopt: {report:?}"
        );
        applied.extend(report.applied);
        runs += 1;
    }
    assert_eq!(runs, 4);
    applied.sort_unstable();
    assert_eq!(
        applied,
        every_id(&[PostgresLeaseStore::MIGRATIONS, AdminDb::MIGRATIONS]),
        "each migration is applied by exactly one run"
    );

    let client = scratch::owner_client(&scratch.url).await;
    assert_eq!(
        scratch::recorded_migrations(&client).await,
        [
            scratch::recorded_rows(&PostgresLeaseStore::MIGRATIONS),
            scratch::recorded_rows(&AdminDb::MIGRATIONS)
        ]
        .concat(),
        "exactly the two components' versions are recorded"
    );
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ('proxy_endpoints', 'proxy_leases', 'proxy_lease_history', \
                               'proxy_chip_generations', 'tenants')",
            &[],
        )
        .await
        .expect("tables")
        .get(0);
    assert_eq!(tables, 5, "both components' tables exist");
    let no_own_table: bool = client
        .query_one(
            "SELECT to_regclass('proxy_allocator_migrations') IS NULL",
            &[],
        )
        .await
        .expect("lookup")
        .get(0);
    assert!(no_own_table, "the crate keeps no version table of its own");

    // Idempotent: a later start applies nothing.
    let again = PostgresLeaseStore::from_url(&scratch.url, 1)
        .expect("store")
        .migrate()
        .await
        .expect("migrate again");
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(
        again.already_applied,
        every_id(&[PostgresLeaseStore::MIGRATIONS])
    );
    drop(client);
    scratch.drop_db().await;
}

/// A scratch database as a build from before the shared runner left it: the lease tables of
/// version 1, recorded in `proxy_allocator_migrations` without a checksum, and `rows` (SQL run
/// in the same transaction).
async fn legacy_database(rows: &str) -> (scratch::ScratchDb, tokio_postgres::Client) {
    let scratch = scratch::ScratchDb::create().await;
    let client = scratch::owner_client(&scratch.url).await;
    client
        .batch_execute(&format!(
            "BEGIN;
             {}
             CREATE TABLE proxy_allocator_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO proxy_allocator_migrations (version) VALUES (1);
             {rows}
             COMMIT;",
            PostgresLeaseStore::MIGRATIONS.migrations()[0].sql()
        ))
        .await
        .expect("the schema as the earlier build left it");
    (scratch, client)
}

/// The versions after 1 of this crate's set: what an upgrade from the per-crate runner applies.
fn versions_after_the_first() -> Vec<MigrationId> {
    every_id(&[PostgresLeaseStore::MIGRATIONS])
        .into_iter()
        .filter(|id| id.version > 1)
        .collect()
}

/// A database migrated by a build from before the shared runner (the lease tables, and version
/// 1 in `proxy_allocator_migrations` without a checksum) upgrades cleanly: the version is
/// adopted with the embedded checksum, only the later versions are applied, a later run adopts
/// and applies nothing, and the store works on the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_per_crate_runner_upgrades_cleanly() {
    let (scratch, client) = legacy_database("").await;
    let store = PostgresLeaseStore::from_url(&scratch.url, 2).expect("store");
    let report = store.migrate().await.expect("upgrade");
    assert_eq!(report.adopted, [LEASES_V1], "{report:?}");
    assert_eq!(report.already_applied, [LEASES_V1], "{report:?}");
    assert_eq!(
        report.applied,
        versions_after_the_first(),
        "version 1 is not applied again: {report:?}"
    );
    assert_eq!(
        scratch::recorded_migrations(&client).await,
        scratch::recorded_rows(&PostgresLeaseStore::MIGRATIONS)
    );
    let again = store.migrate().await.expect("migrate again");
    assert!(
        again.adopted.is_empty() && again.applied.is_empty(),
        "{again:?}"
    );

    let allocation = store
        .allocate(AllocationRequest {
            tenant: TenantId::generate(),
            chip: ChipId::new("upgraded").expect("chip"),
            candidates: vec![candidate("pg-upgraded")],
            replace: None,
            now: std::time::SystemTime::now(),
        })
        .await
        .expect("allocates on the upgraded tables");
    assert!(
        matches!(allocation, Allocation::Created(_)),
        "{allocation:?}"
    );
    drop((store, client));
    scratch.drop_db().await;
}

/// Migration 2 fills `proxy_chip_generations` from what earlier builds wrote (the history and
/// the leases), so that from then on the history may be pruned, or even deleted by hand,
/// without a chip ever getting a generation again: a released chip continues from its last
/// lease, a leased one that an earlier build had restarted at generation 1 moves past the
/// released generation 2, and a lease whose history is gone keeps its own generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_keeps_every_generation_earlier_builds_handed_out() {
    let tenant = TenantId::generate();
    let history = |chip: &str, endpoint: &str, generation: i64, event: &str| {
        format!(
            "INSERT INTO proxy_lease_history \
                 (tenant_id, chip_id, at, endpoint_id, session_id, generation, event) \
             VALUES ('{tenant}', '{chip}', now(), '{endpoint}', NULL, {generation}, \
                     '{{\"kind\":\"{event}\"}}');"
        )
    };
    let lease = |chip: &str, endpoint: &str, generation: i64| {
        format!(
            "INSERT INTO proxy_leases (tenant_id, chip_id, endpoint_id, generation, assigned_at) \
             VALUES ('{tenant}', '{chip}', '{endpoint}', {generation}, now());"
        )
    };
    let rows = [
        "INSERT INTO proxy_endpoints (id) VALUES ('e1'), ('e2'), ('e3');".to_owned(),
        // Released after a rotation: generations 1 and 2, no lease.
        history("released", "e1", 1, "assigned"),
        history("released", "e2", 2, "assigned"),
        history("released", "e2", 2, "released"),
        // Released at 2, then restarted at 1 by an earlier build: history up to 2, lease at 1.
        history("restarted", "e1", 2, "assigned"),
        history("restarted", "e1", 2, "released"),
        history("restarted", "e1", 1, "assigned"),
        lease("restarted", "e1", 1),
        // A lease at 5 whose history was deleted by hand.
        lease("bare", "e3", 5),
    ]
    .concat();
    let (scratch, client) = legacy_database(&rows).await;
    let store = PostgresLeaseStore::from_url(&scratch.url, 2).expect("store");
    let report = store.migrate().await.expect("upgrade");
    assert_eq!(report.applied, versions_after_the_first(), "{report:?}");
    let mut counters: Vec<(String, i64)> = client
        .query(
            "SELECT chip_id, last_generation FROM proxy_chip_generations WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .expect("counters")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    counters.sort();
    assert_eq!(
        counters,
        [
            ("bare".to_owned(), 5),
            ("released".to_owned(), 2),
            ("restarted".to_owned(), 2)
        ]
    );

    // From here on the history may go (a prune, or by hand): generations do not depend on it.
    client
        .execute("DELETE FROM proxy_lease_history", &[])
        .await
        .expect("history deleted");
    let allocate = |chip: &str, endpoint: &str, replace: Option<u64>| AllocationRequest {
        tenant: tenant.clone(),
        chip: ChipId::new(chip).expect("chip"),
        candidates: vec![candidate(endpoint)],
        replace: replace.map(|generation| proxy_allocator::Replace {
            generation,
            reason: "test".into(),
        }),
        now: std::time::SystemTime::now(),
    };
    let released = store
        .allocate(allocate("released", "e1", None))
        .await
        .expect("allocates");
    assert!(matches!(released, Allocation::Created(_)), "{released:?}");
    assert_eq!(
        released.lease().generation,
        3,
        "continues past generation 2"
    );
    let restarted = store
        .allocate(allocate("restarted", "e2", Some(1)))
        .await
        .expect("rotates");
    assert!(matches!(restarted, Allocation::Rotated(_)), "{restarted:?}");
    assert_eq!(
        restarted.lease().generation,
        3,
        "moves past the released generation 2, not to it"
    );
    let bare = ChipId::new("bare").expect("chip");
    store
        .release(&tenant, &bare, std::time::SystemTime::now())
        .await
        .expect("release")
        .expect("the chip held a lease");
    let again = store
        .allocate(allocate("bare", "e3", None))
        .await
        .expect("allocates");
    assert_eq!(again.lease().generation, 6);
    drop((store, client));
    scratch.drop_db().await;
}

#[tokio::test]
async fn bad_database_urls_do_not_leak_the_password() {
    let err =
        PostgresLeaseStore::from_url("postgres://u:hunter2@127.0.0.1:5432/db?sslmode=bogus", 1)
            .expect_err("invalid url");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    assert!(
        matches!(err, ProxyError::InvalidConfig { .. }),
        "a bad URL is configuration: {err:?}"
    );
    assert!(
        !err.is_retryable(),
        "a bad URL stays bad (tenant-isolation's classification): {err:?}"
    );
    let store =
        PostgresLeaseStore::from_url("postgres://u:hunter2@127.0.0.1:1/db", 1).expect("lazy");
    let err = store
        .migrate()
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, ProxyError::Store { .. }));
    let source = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref::<tenant_isolation::Error>())
        .expect("the tenant-isolation error is the source");
    assert!(
        source.is_retryable() && err.is_retryable(),
        "an unreachable database is retryable: {err:?}"
    );
    assert!(!format!("{err} {err:?} {store:?}").contains("hunter2"));
}

/// A chip's first allocation that loses the race to a concurrent one answers with the winner's
/// lease, even on a pool of one connection (it must not ask the pool for a second one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_first_allocation_returns_the_winner_on_a_one_connection_pool() {
    let run = run();
    let store = migrated_store(1).await;
    let (tenant, chip) = (TenantId::generate(), ChipId::new("race").expect("chip"));
    let (winner_endpoint, our_endpoint) = (format!("pg-{run}-winner"), format!("pg-{run}-ours"));

    // The winner: an uncommitted first allocation of the same chip, on another endpoint.
    let mut raw = scratch::owner_client(&admin_url()).await;
    let winner = raw.transaction().await.expect("begin");
    winner
        .execute(
            "INSERT INTO proxy_endpoints (id) VALUES ($1)",
            &[&winner_endpoint],
        )
        .await
        .expect("endpoint");
    winner
        .execute(
            "INSERT INTO proxy_leases (tenant_id, chip_id, endpoint_id, generation, assigned_at) \
             VALUES ($1, $2, $3, 1, now())",
            &[&tenant.as_str(), &chip.as_str(), &winner_endpoint],
        )
        .await
        .expect("winner's lease");

    let request = AllocationRequest {
        tenant: tenant.clone(),
        chip: chip.clone(),
        candidates: vec![candidate(&our_endpoint)],
        replace: None,
        now: std::time::SystemTime::now(),
    };
    let loser = tokio::spawn(async move { store.allocate(request).await });
    // Wait until the loser's insert blocks on the winner's row, then let the winner commit.
    let mut waiting = false;
    for _ in 0..200 {
        // Activity views are snapshotted per transaction; take a fresh look each time.
        winner
            .execute("SELECT pg_stat_clear_snapshot()", &[])
            .await
            .expect("clear snapshot");
        let row = winner
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO proxy_leases%'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, i64>(0) > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waiting, "the second allocation never waited on the first");
    winner.commit().await.expect("commit");

    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), loser)
        .await
        .expect("the losing allocation hangs (did it ask a full pool for a second connection?)")
        .expect("task")
        .expect("allocation");
    let Allocation::Existing(lease) = outcome else {
        panic!("the loser must answer with the winner's lease, got {outcome:?}");
    };
    assert_eq!(lease.endpoint.as_str(), winner_endpoint);
    assert_eq!(lease.generation, 1);
}

/// Rows written before generations were unique across a chip's lease lifetimes stay valid, and
/// new leases move past every generation they hold. Earlier builds restarted a chip at
/// generation 1 after a release, so a chip may hold generation 1 while its history already
/// records generation 2 (its released lease): rotating it must not hand out 2 again, or a late
/// report about the released lease would count against the new one. (The rows are written after
/// migration 2 ran, so the chip has no `proxy_chip_generations` row: its first new generation
/// also looks past its history and its lease.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_written_by_earlier_builds_continue_past_their_history() {
    let run = run();
    let store = store().await;
    let (tenant, chip) = (TenantId::generate(), ChipId::new("legacy").expect("chip"));
    let (e1, e2, e3) = (
        format!("pg-{run}-legacy-1"),
        format!("pg-{run}-legacy-2"),
        format!("pg-{run}-legacy-3"),
    );
    let mut raw = scratch::owner_client(&admin_url()).await;
    let tx = raw.transaction().await.expect("begin");
    tx.execute(
        "INSERT INTO proxy_endpoints (id) VALUES ($1), ($2)",
        &[&e1, &e2],
    )
    .await
    .expect("endpoints");
    // Allocated on e1 (1), rotated to e2 (2), released, allocated again on e1 at generation 1.
    for (endpoint, generation, event) in [
        (&e1, 1_i64, r#"{"kind":"assigned"}"#),
        (
            &e1,
            1,
            r#"{"kind":"rotated_away","reason":"3 consecutive failures"}"#,
        ),
        (&e2, 2, r#"{"kind":"assigned"}"#),
        (&e2, 2, r#"{"kind":"released"}"#),
        (&e1, 1, r#"{"kind":"assigned"}"#),
    ] {
        tx.execute(
            "INSERT INTO proxy_lease_history \
                 (tenant_id, chip_id, at, endpoint_id, session_id, generation, event) \
             VALUES ($1, $2, now(), $3, NULL, $4, $5)",
            &[
                &tenant.as_str(),
                &chip.as_str(),
                endpoint,
                &generation,
                &event,
            ],
        )
        .await
        .expect("history");
    }
    tx.execute(
        "INSERT INTO proxy_leases (tenant_id, chip_id, endpoint_id, generation, assigned_at) \
         VALUES ($1, $2, $3, 1, now())",
        &[&tenant.as_str(), &chip.as_str(), &e1],
    )
    .await
    .expect("lease");
    tx.commit().await.expect("commit");

    let lease = store
        .lease(&tenant, &chip)
        .await
        .expect("the old rows read back")
        .expect("leased");
    assert_eq!(lease.generation, 1);
    assert_eq!(
        store.history(&tenant, &chip).await.expect("history").len(),
        5
    );

    let rotated = store
        .allocate(AllocationRequest {
            tenant: tenant.clone(),
            chip: chip.clone(),
            candidates: vec![candidate(&e3)],
            replace: Some(proxy_allocator::Replace {
                generation: 1,
                reason: "test".into(),
            }),
            now: std::time::SystemTime::now(),
        })
        .await
        .expect("rotates");
    let Allocation::Rotated(rotated) = rotated else {
        panic!("expected a rotation, got {rotated:?}")
    };
    assert_eq!(
        rotated.generation, 3,
        "a rotation moves past the released lease's generation 2 in the history"
    );
    let stale = store
        .record_failure(&tenant, &chip, 2, std::time::SystemTime::now())
        .await
        .expect("stale report");
    assert_eq!(
        stale,
        proxy_allocator::LeaseUpdate::Superseded(rotated.clone()),
        "a report about the released lease is not counted"
    );

    store
        .release(&tenant, &chip, std::time::SystemTime::now())
        .await
        .expect("release");
    let again = store
        .allocate(AllocationRequest {
            tenant: tenant.clone(),
            chip: chip.clone(),
            candidates: vec![candidate(&e1)],
            replace: None,
            now: std::time::SystemTime::now(),
        })
        .await
        .expect("allocates");
    assert!(matches!(again, Allocation::Created(_)), "{again:?}");
    assert_eq!(again.lease().generation, 4);
}
