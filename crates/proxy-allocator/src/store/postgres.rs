//! The PostgreSQL lease store: survives restarts, allocates atomically across replicas.
//!
//! It is built on tenant-isolation's PostgreSQL stack (`tenant_isolation::pg`), not a stack of
//! its own: the pool ([`pg::build_pool`], [`PoolOptions`], clean recycling), the migration
//! runner (its migrations are the [`MigrationSet`] [`PostgresLeaseStore::MIGRATIONS`], applied
//! under the one transaction-scoped advisory lock with checksums), and the retry
//! classification (every database failure is a [`ProxyError::Store`] whose source is the
//! [`tenant_isolation::Error`], so [`ProxyError::is_retryable`] delegates to it).
//!
//! # How allocation stays atomic
//! One transaction per allocation: it locks the chip's lease row (`SELECT ... FOR UPDATE`, for
//! rotations), makes sure every candidate has a row in `proxy_endpoints`, then locks all
//! candidate endpoint rows **in id order** (`ORDER BY id FOR UPDATE`, so two allocations never
//! wait on each other in opposite orders), counts the active leases on them, applies the choice
//! rule and inserts (or, for a rotation, updates in place) the lease. Any other allocation that
//! could touch one of those endpoints waits for the locks, so the cap and tenant exclusivity
//! hold across any number of replicas. A second, concurrent first allocation of the same chip is
//! caught by the primary key (`INSERT ... ON CONFLICT DO NOTHING`) and answered with the lease
//! that won. Failures that tenant-isolation classifies as retryable (serialization failures,
//! deadlocks, possible between a rotation and an endpoint health update, lost connections, pool
//! time-outs) are retried with backoff, on the operations that are safe to repeat.
//!
//! The new lease's generation is taken from the chip's row in `proxy_chip_generations` (the
//! highest generation the chip ever had, kept apart from the history), in the allocating
//! transaction, by one upsert that increments it under the row's lock: it is never one the chip
//! had before, even after a release or after its history was pruned.
//!
//! # Schema
//! Tables `proxy_endpoints`, `proxy_leases` and `proxy_lease_history`
//! (`migrations/0001_leases.sql`), `proxy_chip_generations` and an index on the history's
//! times (`migrations/0002_chip_generations.sql`), recorded as component `proxy-allocator` in
//! tenant-isolation's migration table. Platform data, not tenant rows: no row-level security;
//! connect as the role that owns the tables (`DATABASE_URL`), never as the tenant-scoped
//! application role.
//!
//! # History retention
//! Every statement that appends to a chip's history also drops the chip's oldest entries beyond
//! the store's [`HistoryRetention`] count (one statement: the insert is a data-modifying `WITH`
//! of the delete); [`LeaseStore::prune_history`] deletes entries older than its age, in batches.
//!
//! # Tenant purge
//! [`LeaseStore::purge_tenant`] deletes the tenant's `proxy_leases` and `proxy_lease_history`
//! rows in one transaction, retried like the other writes; `proxy_chip_generations` keeps its
//! rows, so a tenant id created again never sees a generation reused. A purge hook, not a
//! foreign key: these tables reference no `tenants` table (see `docs/proxy-allocator.md`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use tenant_isolation::pg::reexports::tokio_postgres::Row;
use tenant_isolation::pg::reexports::tokio_postgres::types::ToSql;
use tenant_isolation::pg::reexports::{deadpool_postgres, tokio_postgres};
use tenant_isolation::pg::{self, Migration, MigrationReport, MigrationSet, PoolOptions};

use crate::endpoint::EndpointId;
use crate::error::ProxyError;
use crate::lease::{
    Allocation, AllocationRequest, EgressIpChange, EgressIpUpdate, EndpointLoad, HistoryEvent,
    LeaseHealth, LeaseUpdate, ProxyHistoryEntry, ProxyLease,
};
use crate::retention::HistoryRetention;
use crate::store::{CandidateState, LeaseStore, all_busy, choose, not_leased};
use tenant_isolation::{ChipId, TenantId};

/// This crate's migrations, in order. Never edit a released one: add a version.
const LEASE_MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "leases",
        include_str!("../../migrations/0001_leases.sql"),
    ),
    Migration::new(
        2,
        "chip generations",
        include_str!("../../migrations/0002_chip_generations.sql"),
    ),
];

/// Takes the generation of the chip's next lease (`$1` tenant, `$2` chip, `$3` the generation
/// of the lease being replaced, or 0) and records it: one more than the highest the chip ever
/// had, from its row in `proxy_chip_generations`, which neither release nor the history's
/// retention touches. So a report about an earlier lease (rotated away, or released before the
/// chip was allocated again) never matches the new one.
///
/// The upsert increments the row under its lock, on the latest committed version (`ON CONFLICT
/// DO UPDATE`), so two transactions never take the same value; it runs in the allocating
/// transaction right before the lease is written, so a lost race (the lease's primary key) or
/// any later failure rolls it back. A chip without a row yet (its first lease, or one whose
/// rows an earlier build wrote after migration 2 ran) starts past its history and `$3`.
const NEXT_GENERATION: &str = "INSERT INTO proxy_chip_generations AS g \
         (tenant_id, chip_id, last_generation) \
     VALUES ($1, $2, GREATEST($3::bigint, \
         (SELECT COALESCE(max(generation), 0) FROM proxy_lease_history \
          WHERE tenant_id = $1 AND chip_id = $2)) + 1) \
     ON CONFLICT (tenant_id, chip_id) DO UPDATE \
         SET last_generation = GREATEST(g.last_generation + 1, EXCLUDED.last_generation) \
     RETURNING last_generation";

/// Appends one history entry (`$1`..`$7`: tenant, chip, at, endpoint, session, generation,
/// event) and drops the chip's oldest entries beyond the retention's count (`$8`: the count
/// minus one). One statement: the insert is a data-modifying `WITH`, whose row the delete
/// does not see (both run on the statement's snapshot), so the delete keeps the newest `$8`
/// entries that were there before, and the new one makes the count.
const APPEND_HISTORY: &str = "WITH added AS ( \
         INSERT INTO proxy_lease_history \
             (tenant_id, chip_id, at, endpoint_id, session_id, generation, event) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)) \
     DELETE FROM proxy_lease_history \
     WHERE tenant_id = $1 AND chip_id = $2 \
       AND id <= (SELECT id FROM proxy_lease_history \
                  WHERE tenant_id = $1 AND chip_id = $2 \
                  ORDER BY id DESC OFFSET $8 LIMIT 1)";

/// History rows deleted per statement by [`LeaseStore::prune_history`], so a large backlog is
/// removed in short transactions.
const PRUNE_BATCH: i64 = 10_000;

const COLUMNS: &str = "tenant_id, chip_id, endpoint_id, session_id, country, generation, \
     assigned_at, healthy, health_reason, consecutive_failures, last_failure_at, egress_ip";

/// Leases in PostgreSQL, shared by every replica that uses the same database.
///
/// Creating one does no I/O. Its tables come from [`PostgresLeaseStore::MIGRATIONS`]: a host
/// that also uses tenant-isolation's tables applies both in its one migration run
/// (`AdminDb::migrate_with(&config, &[PostgresLeaseStore::MIGRATIONS])`); a host that uses only
/// this store calls [`PostgresLeaseStore::migrate`] once at start-up. Both are idempotent and
/// safe to run from several replicas at once. Connect as the role that owns the tables
/// (`DATABASE_URL`): the tables are platform data, without row-level security.
#[derive(Clone)]
pub struct PostgresLeaseStore {
    pool: deadpool_postgres::Pool,
    retention: HistoryRetention,
}

impl std::fmt::Debug for PostgresLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLeaseStore")
            .field("pool", &self.pool.status())
            .field("retention", &self.retention)
            .finish()
    }
}

impl PostgresLeaseStore {
    /// This crate's migrations (component `proxy-allocator`), for the host's one migration run
    /// next to the other components' sets. Databases migrated by builds before the shared
    /// runner kept these versions in `proxy_allocator_migrations`; that table is adopted.
    pub const MIGRATIONS: MigrationSet = MigrationSet::new("proxy-allocator", LEASE_MIGRATIONS)
        .adopting("proxy_allocator_migrations");

    /// A store on an existing pool, with the default [`HistoryRetention`]. Build the pool like
    /// [`pg::build_pool`] does (in particular with `RecyclingMethod::Clean`), e.g. for TLS.
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self {
            pool,
            retention: HistoryRetention::default(),
        }
    }

    /// The same store keeping history within `retention` (default
    /// [`HistoryRetention::default`]). Every replica should use the same retention.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] from [`HistoryRetention::validate`].
    pub fn with_retention(self, retention: HistoryRetention) -> Result<Self, ProxyError> {
        retention.validate()?;
        Ok(Self { retention, ..self })
    }

    /// `$8` of [`APPEND_HISTORY`]: the newest entries kept besides the one appended.
    fn history_keep(&self) -> i64 {
        i64::from(self.retention.max_entries_per_chip.max(1)) - 1
    }

    /// A store with its own pool to `url` (`postgres://user:password@host:port/db`), built by
    /// [`pg::build_pool`] with `options`. Connects lazily.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] for an invalid URL (never echoed) or pool settings.
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Self, ProxyError> {
        pg::build_pool(url, options)
            .map(Self::new)
            .map_err(|err| match err {
                tenant_isolation::Error::InvalidConfig { reason } => {
                    ProxyError::InvalidConfig { reason }
                }
                other => store_error("build the connection pool", other),
            })
    }

    /// [`PostgresLeaseStore::connect`] with at most `max_connections` connections (at least
    /// one) and the other [`PoolOptions`] defaults. Errors never contain the URL.
    ///
    /// # Errors
    /// As [`PostgresLeaseStore::connect`].
    pub fn from_url(url: &str, max_connections: usize) -> Result<Self, ProxyError> {
        Self::connect(
            url,
            &PoolOptions {
                max_size: max_connections.max(1),
                ..PoolOptions::default()
            },
        )
    }

    /// Creates or upgrades this store's tables alone: [`pg::run_migrations`] with
    /// [`PostgresLeaseStore::MIGRATIONS`] (one transaction under the shared transaction-scoped
    /// advisory lock; already-applied versions are skipped, an edited one is refused). A host
    /// that migrates tenant-isolation too should apply both in one run instead (see the type's
    /// documentation).
    ///
    /// # Errors
    /// [`ProxyError::Store`] whose source is the [`tenant_isolation::Error`] (a failed or
    /// edited migration is `tenant_isolation::Error::Migration`).
    pub async fn migrate(&self) -> Result<MigrationReport, ProxyError> {
        pg::run_migrations(&self.pool, &[Self::MIGRATIONS])
            .await
            .map_err(|err| store_error("migrate", err))
    }

    async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object, ProxyError> {
        self.pool
            .get()
            .await
            .map_err(|err| store_error(operation, err))
    }

    /// Runs `body` in a transaction on a pooled connection and commits it. An error from
    /// `body` drops the transaction, which rolls it back. `operation` names the step in errors.
    async fn in_transaction<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, ProxyError>,
    ) -> Result<T, ProxyError> {
        let mut client = self.client(operation).await?;
        let tx = client.transaction().await.map_err(store_err(operation))?;
        let value = body(&tx).await?;
        tx.commit().await.map_err(store_err(operation))?;
        Ok(value)
    }

    /// Applies `assignments` (`column = expression` pairs) to the chip's lease if it has
    /// `generation` (see [`LeaseUpdate`]). One statement: every row it touches is locked, and
    /// the generation is compared on the locked row, so the check and the update are atomic.
    /// Parameters: `$1` tenant, `$2` chip, `$3` generation, `$4`... `extra`.
    async fn update_generation(
        &self,
        operation: &'static str,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        assignments: &[(&str, &str)],
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<LeaseUpdate, ProxyError> {
        let set = assignments
            .iter()
            .map(|(column, value)| {
                format!("{column} = CASE WHEN generation = $3 THEN {value} ELSE {column} END")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Stored generations are positive i64s: one beyond that range matches no lease.
        let generation = i64::try_from(generation).unwrap_or(0);
        let (tenant_id, chip_id) = (tenant.as_str(), chip.as_str());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant_id, &chip_id, &generation];
        params.extend_from_slice(extra);
        let client = self.client(operation).await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE proxy_leases SET {set} WHERE tenant_id = $1 AND chip_id = $2 \
                     RETURNING {COLUMNS}, generation = $3 AS applied"
                ),
                &params,
            )
            .await
            .map_err(store_err(operation))?
            .ok_or_else(|| not_leased(tenant, chip))?;
        let lease = lease_from_row(&row)?;
        Ok(if row.get::<_, bool>("applied") {
            LeaseUpdate::Applied(lease)
        } else {
            LeaseUpdate::Superseded(lease)
        })
    }

    async fn try_allocate(&self, request: &AllocationRequest) -> Result<Allocation, ProxyError> {
        let mut client = self.client("allocate").await?;
        let tx = client
            .transaction()
            .await
            .map_err(store_err("begin allocation"))?;
        let tenant = request.tenant.as_str();
        let chip = request.chip.as_str();
        let existing = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM proxy_leases \
                     WHERE tenant_id = $1 AND chip_id = $2 FOR UPDATE"
                ),
                &[&tenant, &chip],
            )
            .await
            .map_err(store_err("read the chip's lease"))?
            .map(|row| lease_from_row(&row))
            .transpose()?;
        match (&existing, &request.replace) {
            (Some(lease), None) => return Ok(Allocation::Existing(lease.clone())),
            (Some(lease), Some(replace)) if lease.generation != replace.generation => {
                return Ok(Allocation::Existing(lease.clone()));
            }
            (None, Some(_)) => return Err(not_leased(&request.tenant, &request.chip)),
            _ => {}
        }
        let mut ids: Vec<&str> = request
            .candidates
            .iter()
            .map(|c| c.endpoint.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        tx.execute(
            "INSERT INTO proxy_endpoints (id) SELECT unnest($1::text[]) ON CONFLICT (id) DO NOTHING",
            &[&ids],
        )
        .await
        .map_err(store_err("register endpoints"))?;
        let locked = tx
            .query(
                "SELECT id, healthy FROM proxy_endpoints WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(store_err("lock endpoints"))?;
        let loads = tx
            .query(
                "SELECT endpoint_id, count(*), count(*) FILTER (WHERE tenant_id <> $2) \
                 FROM proxy_leases \
                 WHERE endpoint_id = ANY($1) AND NOT (tenant_id = $2 AND chip_id = $3) \
                 GROUP BY endpoint_id",
                &[&ids, &tenant, &chip],
            )
            .await
            .map_err(store_err("count leases"))?;
        let mut states: std::collections::HashMap<String, CandidateState> = locked
            .iter()
            .map(|row| {
                let id: String = row.get(0);
                let healthy: bool = row.get(1);
                (
                    id,
                    CandidateState {
                        unhealthy: !healthy,
                        ..CandidateState::default()
                    },
                )
            })
            .collect();
        for row in &loads {
            let id: String = row.get(0);
            let total: i64 = row.get(1);
            let others: i64 = row.get(2);
            let state = states.entry(id).or_default();
            state.leases = u32::try_from(total).unwrap_or(u32::MAX);
            state.other_tenant_leases = u32::try_from(others).unwrap_or(u32::MAX);
        }
        let candidate = choose(&request.candidates, |id| {
            states.get(id.as_str()).copied().unwrap_or_default()
        })
        .ok_or_else(|| all_busy(&request.tenant, &request.chip))?;
        let country = candidate.country.map(|c| c.to_string());
        let endpoint = candidate.endpoint.as_str();
        let keep = self.history_keep();
        let replaced = existing
            .as_ref()
            .map_or(0, |old| i64::try_from(old.generation).unwrap_or(i64::MAX));
        let generation: i64 = tx
            .query_one(NEXT_GENERATION, &[&tenant, &chip, &replaced])
            .await
            .map_err(store_err("take the next generation"))?
            .get(0);
        let allocation = match (&existing, &request.replace) {
            (Some(old), Some(replace)) => {
                insert_history(
                    &tx,
                    old,
                    request.now,
                    &HistoryEvent::RotatedAway {
                        reason: replace.reason.clone(),
                    },
                    keep,
                )
                .await?;
                let row = tx
                    .query_one(
                        &format!(
                            "UPDATE proxy_leases SET endpoint_id = $3, session_id = $4, \
                             country = $5, generation = $6, \
                             assigned_at = $7, healthy = true, \
                             health_reason = NULL, consecutive_failures = 0, \
                             last_failure_at = NULL, egress_ip = NULL \
                             WHERE tenant_id = $1 AND chip_id = $2 RETURNING {COLUMNS}"
                        ),
                        &[
                            &tenant,
                            &chip,
                            &endpoint,
                            &candidate.session_id,
                            &country,
                            &generation,
                            &request.now,
                        ],
                    )
                    .await
                    .map_err(store_err("rotate the lease"))?;
                Allocation::Rotated(lease_from_row(&row)?)
            }
            _ => {
                let row = tx
                    .query_opt(
                        &format!(
                            "INSERT INTO proxy_leases (tenant_id, chip_id, endpoint_id, \
                             session_id, country, generation, assigned_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) \
                             ON CONFLICT (tenant_id, chip_id) DO NOTHING RETURNING {COLUMNS}"
                        ),
                        &[
                            &tenant,
                            &chip,
                            &endpoint,
                            &candidate.session_id,
                            &country,
                            &generation,
                            &request.now,
                        ],
                    )
                    .await
                    .map_err(store_err("insert the lease"))?;
                match row {
                    Some(row) => Allocation::Created(lease_from_row(&row)?),
                    None => {
                        // A concurrent first allocation of this chip won (the insert waited
                        // for it to commit). Read its lease on this same connection: a second
                        // pool connection could wait forever on a fully used pool.
                        let lease = read_lease(&tx, &request.tenant, &request.chip).await?;
                        tx.rollback()
                            .await
                            .map_err(store_err("end the lost allocation"))?;
                        return lease
                            .map(Allocation::Existing)
                            .ok_or_else(|| not_leased(&request.tenant, &request.chip));
                    }
                }
            }
        };
        insert_history(
            &tx,
            allocation.lease(),
            request.now,
            &HistoryEvent::Assigned,
            keep,
        )
        .await?;
        tx.commit().await.map_err(store_err("commit allocation"))?;
        Ok(allocation)
    }

    async fn try_set_endpoint_health(
        &self,
        endpoint: &EndpointId,
        health: &LeaseHealth,
        now: SystemTime,
    ) -> Result<u64, ProxyError> {
        let (healthy, reason) = split_health(health);
        let event = event_json(&HistoryEvent::health_change(health))?;
        let keep = self.history_keep();
        self.in_transaction("set endpoint health", async |tx| {
            tx.execute(
                "INSERT INTO proxy_endpoints (id, healthy, health_reason, checked_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
                 SET healthy = $2, health_reason = $3, checked_at = $4",
                &[&endpoint.as_str(), &healthy, &reason, &now],
            )
            .await
            .map_err(store_err("record endpoint health"))?;
            // As in APPEND_HISTORY, the trim does not see the rows `added` inserts: it keeps
            // the newest `$6` each chip had, and the new one makes the count.
            let changed: i64 = tx
                .query_one(
                    "WITH changed AS ( \
                         UPDATE proxy_leases SET healthy = $2, health_reason = $3 \
                         WHERE endpoint_id = $1 \
                           AND (healthy <> $2 OR health_reason IS DISTINCT FROM $3) \
                         RETURNING tenant_id, chip_id, endpoint_id, session_id, generation), \
                     added AS ( \
                         INSERT INTO proxy_lease_history \
                             (tenant_id, chip_id, at, endpoint_id, session_id, generation, event) \
                         SELECT tenant_id, chip_id, $4, endpoint_id, session_id, generation, $5 \
                         FROM changed), \
                     trimmed AS ( \
                         DELETE FROM proxy_lease_history AS h USING changed AS c \
                         WHERE h.tenant_id = c.tenant_id AND h.chip_id = c.chip_id \
                           AND h.id <= (SELECT x.id FROM proxy_lease_history AS x \
                                        WHERE x.tenant_id = c.tenant_id \
                                          AND x.chip_id = c.chip_id \
                                        ORDER BY x.id DESC OFFSET $6 LIMIT 1)) \
                     SELECT count(*) FROM changed",
                    &[&endpoint.as_str(), &healthy, &reason, &now, &event, &keep],
                )
                .await
                .map_err(store_err("mark leases"))?
                .get(0);
            Ok(u64::try_from(changed).unwrap_or_default())
        })
        .await
    }

    /// Locks the chip's lease row (in `tx`) and returns it: the generation check of a fenced
    /// update and the update itself then see the same row, with no rotation in between.
    async fn lock_lease(
        tx: &deadpool_postgres::Transaction<'_>,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ProxyLease, ProxyError> {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM proxy_leases \
                     WHERE tenant_id = $1 AND chip_id = $2 FOR UPDATE"
                ),
                &[&tenant.as_str(), &chip.as_str()],
            )
            .await
            .map_err(store_err("read the chip's lease"))?
            .ok_or_else(|| not_leased(tenant, chip))?;
        lease_from_row(&row)
    }

    async fn try_set_lease_health(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        health: &LeaseHealth,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        let (healthy, reason) = split_health(health);
        let keep = self.history_keep();
        self.in_transaction("set lease health", async |tx| {
            let lease = Self::lock_lease(tx, tenant, chip).await?;
            if lease.generation != generation {
                return Ok(LeaseUpdate::Superseded(lease));
            }
            if lease.health == *health {
                return Ok(LeaseUpdate::Applied(lease));
            }
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE proxy_leases SET healthy = $3, health_reason = $4 \
                         WHERE tenant_id = $1 AND chip_id = $2 RETURNING {COLUMNS}"
                    ),
                    &[&tenant.as_str(), &chip.as_str(), &healthy, &reason],
                )
                .await
                .map_err(store_err("set lease health"))?;
            let lease = lease_from_row(&row)?;
            insert_history(tx, &lease, now, &HistoryEvent::health_change(health), keep).await?;
            Ok(LeaseUpdate::Applied(lease))
        })
        .await
    }

    async fn try_record_egress_ip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        ip: IpAddr,
        now: SystemTime,
    ) -> Result<EgressIpUpdate, ProxyError> {
        let keep = self.history_keep();
        self.in_transaction("record egress ip", async |tx| {
            let lease = Self::lock_lease(tx, tenant, chip).await?;
            if lease.generation != generation {
                return Ok(EgressIpUpdate::Superseded(lease));
            }
            let change = EgressIpChange::observe(lease.egress_ip, ip);
            if matches!(change, EgressIpChange::Unchanged(_)) {
                return Ok(EgressIpUpdate::Applied { change, lease });
            }
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE proxy_leases SET egress_ip = $3 \
                         WHERE tenant_id = $1 AND chip_id = $2 RETURNING {COLUMNS}"
                    ),
                    &[&tenant.as_str(), &chip.as_str(), &ip],
                )
                .await
                .map_err(store_err("record egress ip"))?;
            let updated = lease_from_row(&row)?;
            insert_history(
                tx,
                &updated,
                now,
                &HistoryEvent::EgressIpChanged {
                    from: lease.egress_ip,
                    to: ip,
                },
                keep,
            )
            .await?;
            Ok(EgressIpUpdate::Applied {
                change,
                lease: updated,
            })
        })
        .await
    }

    /// Deletes up to [`PRUNE_BATCH`] history rows recorded before `cutoff`; returns how many.
    async fn prune_batch(&self, cutoff: SystemTime) -> Result<u64, ProxyError> {
        let client = self.client("prune history").await?;
        client
            .execute(
                "DELETE FROM proxy_lease_history WHERE id IN \
                 (SELECT id FROM proxy_lease_history WHERE at < $1 LIMIT $2)",
                &[&cutoff, &PRUNE_BATCH],
            )
            .await
            .map_err(store_err("prune history"))
    }

    /// One attempt of [`LeaseStore::purge_tenant`]: the tenant's leases, then its history, in
    /// one transaction (the order in which allocation, release and the health updates lock a
    /// chip's rows). `proxy_chip_generations` is left alone.
    async fn try_purge_tenant(&self, tenant: &TenantId) -> Result<u64, ProxyError> {
        self.in_transaction("purge tenant", async |tx| {
            let leases = tx
                .execute(
                    "DELETE FROM proxy_leases WHERE tenant_id = $1",
                    &[&tenant.as_str()],
                )
                .await
                .map_err(store_err("delete the tenant's leases"))?;
            tx.execute(
                "DELETE FROM proxy_lease_history WHERE tenant_id = $1",
                &[&tenant.as_str()],
            )
            .await
            .map_err(store_err("delete the tenant's history"))?;
            Ok(leases)
        })
        .await
    }

    async fn try_release(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        now: SystemTime,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        let keep = self.history_keep();
        self.in_transaction("release", async |tx| {
            let row = tx
                .query_opt(
                    &format!(
                        "DELETE FROM proxy_leases WHERE tenant_id = $1 AND chip_id = $2 \
                         RETURNING {COLUMNS}"
                    ),
                    &[&tenant.as_str(), &chip.as_str()],
                )
                .await
                .map_err(store_err("delete the lease"))?;
            let lease = row.map(|row| lease_from_row(&row)).transpose()?;
            if let Some(lease) = &lease {
                insert_history(tx, lease, now, &HistoryEvent::Released, keep).await?;
            }
            Ok(lease)
        })
        .await
    }
}

/// Runs a write that is safe to repeat, retrying it a few times with jittered exponential
/// backoff while it fails with a store error that tenant-isolation classifies as retryable
/// (serialization failures, deadlocks, lost connections, pool time-outs; see
/// [`ProxyError::is_retryable`]). Other errors, including a retryable `NoCapacity`, which is a
/// verdict rather than a failure, are returned at once.
async fn retrying<T, F, Fut>(f: F) -> Result<T, ProxyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProxyError>>,
{
    f.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(200))
            .with_max_times(6)
            .with_jitter(),
    )
    .when(|err| matches!(err, ProxyError::Store { .. }) && err.is_retryable())
    .await
}

/// A failed step of the store: the tenant-isolation error (a PostgreSQL error reduced to what
/// carries no row contents, a pool failure, a migration failure) becomes the source, which
/// [`ProxyError::is_retryable`] asks.
fn store_error(operation: &'static str, err: impl Into<tenant_isolation::Error>) -> ProxyError {
    ProxyError::Store {
        operation,
        source: Box::new(err.into()),
    }
}

/// [`store_error`] for `map_err` on a statement.
fn store_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> ProxyError {
    move |err| store_error(operation, err)
}

fn split_health(health: &LeaseHealth) -> (bool, Option<String>) {
    match health {
        LeaseHealth::Healthy => (true, None),
        LeaseHealth::Unhealthy { reason } => (false, Some(reason.clone())),
    }
}

fn event_json(event: &HistoryEvent) -> Result<String, ProxyError> {
    serde_json::to_string(event).map_err(|e| ProxyError::Corrupt {
        reason: format!("cannot encode a history event: {e}"),
    })
}

/// Appends one entry to the lease's chip's history and drops the chip's oldest entries beyond
/// the retention's count (`keep`: see [`PostgresLeaseStore::history_keep`]).
async fn insert_history(
    tx: &deadpool_postgres::Transaction<'_>,
    lease: &ProxyLease,
    at: SystemTime,
    event: &HistoryEvent,
    keep: i64,
) -> Result<(), ProxyError> {
    let generation = i64::try_from(lease.generation).unwrap_or(i64::MAX);
    tx.execute(
        APPEND_HISTORY,
        &[
            &lease.tenant.as_str(),
            &lease.chip.as_str(),
            &at,
            &lease.endpoint.as_str(),
            &lease.session_id,
            &generation,
            &event_json(event)?,
            &keep,
        ],
    )
    .await
    .map_err(store_err("append history"))?;
    Ok(())
}

async fn read_lease(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &TenantId,
    chip: &ChipId,
) -> Result<Option<ProxyLease>, ProxyError> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM proxy_leases WHERE tenant_id = $1 AND chip_id = $2"),
            &[&tenant.as_str(), &chip.as_str()],
        )
        .await
        .map_err(store_err("read the chip's lease"))?
        .map(|row| lease_from_row(&row))
        .transpose()
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> ProxyError {
    ProxyError::Corrupt {
        reason: format!("{what}: {err}"),
    }
}

fn lease_from_row(row: &Row) -> Result<ProxyLease, ProxyError> {
    let health = if row.get::<_, bool>("healthy") {
        LeaseHealth::Healthy
    } else {
        LeaseHealth::Unhealthy {
            reason: row
                .get::<_, Option<String>>("health_reason")
                .unwrap_or_default(),
        }
    };
    Ok(ProxyLease {
        tenant: TenantId::new(row.get::<_, String>("tenant_id"))
            .map_err(|e| corrupt("tenant id", e))?,
        chip: ChipId::new(row.get::<_, String>("chip_id")).map_err(|e| corrupt("chip id", e))?,
        endpoint: EndpointId::new(row.get::<_, String>("endpoint_id"))
            .map_err(|e| corrupt("endpoint id", e))?,
        session_id: row.get("session_id"),
        country: row
            .get::<_, Option<String>>("country")
            .map(|c| c.parse())
            .transpose()
            .map_err(|e| corrupt("country", e))?,
        generation: u64::try_from(row.get::<_, i64>("generation"))
            .map_err(|e| corrupt("generation", e))?,
        assigned_at: row.get("assigned_at"),
        health,
        consecutive_failures: u32::try_from(row.get::<_, i32>("consecutive_failures"))
            .map_err(|e| corrupt("consecutive_failures", e))?,
        last_failure_at: row.get("last_failure_at"),
        egress_ip: row.get("egress_ip"),
    })
}

#[async_trait]
impl LeaseStore for PostgresLeaseStore {
    async fn lease(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        let client = self.client("read lease").await?;
        read_lease(&client, tenant, chip).await
    }

    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, ProxyError> {
        retrying(|| self.try_allocate(&request)).await
    }

    async fn release(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        now: SystemTime,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        retrying(|| self.try_release(tenant, chip, now)).await
    }

    async fn record_failure(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.update_generation(
            "record failure",
            tenant,
            chip,
            generation,
            &[
                (
                    "consecutive_failures",
                    "LEAST(consecutive_failures, 2147483646) + 1",
                ),
                ("last_failure_at", "$4"),
            ],
            &[&now],
        )
        .await
    }

    async fn record_success(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.update_generation(
            "record success",
            tenant,
            chip,
            generation,
            &[("consecutive_failures", "0")],
            &[],
        )
        .await
    }

    async fn set_lease_health(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        retrying(|| self.try_set_lease_health(tenant, chip, generation, &health, now)).await
    }

    async fn set_endpoint_health(
        &self,
        endpoint: &EndpointId,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<u64, ProxyError> {
        retrying(|| self.try_set_endpoint_health(endpoint, &health, now)).await
    }

    async fn record_egress_ip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        generation: u64,
        ip: IpAddr,
        now: SystemTime,
    ) -> Result<EgressIpUpdate, ProxyError> {
        retrying(|| self.try_record_egress_ip(tenant, chip, generation, ip, now)).await
    }

    async fn leases(&self, tenant: Option<TenantId>) -> Result<Vec<ProxyLease>, ProxyError> {
        let client = self.client("list leases").await?;
        let tenant = tenant.as_ref().map(TenantId::as_str);
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM proxy_leases \
                     WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, chip_id"
                ),
                &[&tenant],
            )
            .await
            .map_err(store_err("list leases"))?
            .iter()
            .map(lease_from_row)
            .collect()
    }

    async fn leases_on_endpoint(
        &self,
        endpoint: &EndpointId,
    ) -> Result<Vec<ProxyLease>, ProxyError> {
        let client = self.client("list leases").await?;
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM proxy_leases WHERE endpoint_id = $1 \
                     ORDER BY tenant_id, chip_id"
                ),
                &[&endpoint.as_str()],
            )
            .await
            .map_err(store_err("list leases"))?
            .iter()
            .map(lease_from_row)
            .collect()
    }

    async fn endpoint_loads(&self) -> Result<Vec<EndpointLoad>, ProxyError> {
        let client = self.client("endpoint loads").await?;
        let rows = client
            .query(
                "SELECT e.id, e.healthy, e.health_reason, count(l.chip_id), \
                        count(DISTINCT l.tenant_id) \
                 FROM proxy_endpoints e LEFT JOIN proxy_leases l ON l.endpoint_id = e.id \
                 GROUP BY e.id ORDER BY e.id",
                &[],
            )
            .await
            .map_err(store_err("endpoint loads"))?;
        rows.iter()
            .map(|row| {
                let health = if row.get::<_, bool>(1) {
                    LeaseHealth::Healthy
                } else {
                    LeaseHealth::Unhealthy {
                        reason: row.get::<_, Option<String>>(2).unwrap_or_default(),
                    }
                };
                Ok(EndpointLoad {
                    endpoint: EndpointId::new(row.get::<_, String>(0))
                        .map_err(|e| corrupt("endpoint id", e))?,
                    leases: u32::try_from(row.get::<_, i64>(3)).unwrap_or(u32::MAX),
                    tenants: u32::try_from(row.get::<_, i64>(4)).unwrap_or(u32::MAX),
                    health,
                })
            })
            .collect()
    }

    async fn history(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Vec<ProxyHistoryEntry>, ProxyError> {
        let client = self.client("read history").await?;
        let rows = client
            .query(
                "SELECT at, endpoint_id, session_id, generation, event FROM proxy_lease_history \
                 WHERE tenant_id = $1 AND chip_id = $2 ORDER BY id",
                &[&tenant.as_str(), &chip.as_str()],
            )
            .await
            .map_err(store_err("read history"))?;
        rows.iter()
            .map(|row| {
                Ok(ProxyHistoryEntry {
                    at: row.get(0),
                    endpoint: EndpointId::new(row.get::<_, String>(1))
                        .map_err(|e| corrupt("endpoint id", e))?,
                    session_id: row.get(2),
                    generation: u64::try_from(row.get::<_, i64>(3))
                        .map_err(|e| corrupt("generation", e))?,
                    event: serde_json::from_str(row.get::<_, &str>(4))
                        .map_err(|e| corrupt("history event", e))?,
                })
            })
            .collect()
    }

    async fn prune_history(&self, now: SystemTime) -> Result<u64, ProxyError> {
        let Some(cutoff) = self.retention.cutoff(now) else {
            return Ok(0);
        };
        // In batches, each its own short statement: a large backlog (the first prune after an
        // upgrade) never holds many row locks for long. Deleting is idempotent, so a batch that
        // fails with a retryable error (a deadlock with a writer trimming the same chip) is
        // retried.
        let mut removed = 0_u64;
        loop {
            let batch = retrying(|| self.prune_batch(cutoff)).await?;
            removed = removed.saturating_add(batch);
            if batch < PRUNE_BATCH.unsigned_abs() {
                return Ok(removed);
            }
        }
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, ProxyError> {
        // Deleting is idempotent, so a transaction that fails with a retryable error (a
        // deadlock with `set_endpoint_health` updating the same leases) is retried; a retry
        // after a lost COMMIT reply finds nothing left and answers 0.
        retrying(|| self.try_purge_tenant(tenant)).await
    }
}
