//! [`PgChipStore`]: the [`ChipStore`] in PostgreSQL, on tenant-isolation's PostgreSQL stack
//! (feature `postgres`).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fleet_vocab::{Clock, SystemClock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tenant_isolation::pg::reexports::deadpool_postgres::{self, ClientWrapper, Pool};
use tenant_isolation::pg::reexports::tokio_postgres::Row;
use tenant_isolation::pg::reexports::tokio_postgres::types::{FromSql, ToSql};
use tenant_isolation::pg::{Migration, MigrationSet, TenantDb, TenantTx};
use tenant_isolation::{ChipId, TenantId};

use super::{
    ChipStore, CreateOutcome, Fence, MemoryChipStore, NewChip, OwnerId, StoreError, Trigger,
    VersionKind,
};
use crate::chip::{ChipKey, ChipRecord, Desired, ObservedPatch};
use crate::pg_common::{self, UnsignedError, bigint};
use crate::signal::{Signal, SignalBody};

/// This crate's migrations, in order. Never edit a released one: add a version.
/// Version 2 is the event log of the PostgreSQL event bus (`PgEventBus`), version 3 the
/// durable webhook inbox (`PgInbox`), version 4 the send outbox (`PgOutbox`), version 5 the
/// inbox's applied and claimed marks, version 6 the expiry of stored pairing codes.
const CHIP_MIGRATIONS: &[Migration] = &[
    Migration::new(1, "chips", include_str!("../../migrations/0001_chips.sql")),
    Migration::new(
        2,
        "events",
        include_str!("../../migrations/0002_events.sql"),
    ),
    Migration::new(3, "inbox", include_str!("../../migrations/0003_inbox.sql")),
    Migration::new(
        4,
        "outbox",
        include_str!("../../migrations/0004_outbox.sql"),
    ),
    Migration::new(
        5,
        "inbox_applied",
        include_str!("../../migrations/0005_inbox_applied.sql"),
    ),
    Migration::new(
        6,
        "event_code_expiry",
        include_str!("../../migrations/0006_event_code_expiry.sql"),
    ),
];

/// The tables of [`CHIP_MIGRATIONS`] that hold tenant rows (row-level security forced).
const TENANT_TABLES: &[&str] = &[
    "supervisor_chips",
    "supervisor_signals",
    "supervisor_fences",
    "supervisor_event_seqs",
    "supervisor_events",
    "supervisor_inbox",
    "supervisor_inbox_keys",
    "supervisor_message_acks",
    "supervisor_outbox",
    "supervisor_outbox_early_acks",
];

const CHIPS: &str = "supervisor_chips";
const SIGNALS: &str = "supervisor_signals";
const FENCES: &str = "supervisor_fences";
const LEASES: &str = "supervisor_owner_leases";
const WORK: &str = "supervisor_work";

/// Signals kept per chip: the contract's bound, defined once on the in-memory store.
const SIGNALS_KEPT: i64 = MemoryChipStore::SIGNALS_KEPT as i64;

/// The columns a chip record is read from (see [`record_from_row`]).
macro_rules! chip_columns {
    () => {
        "tenant_id, chip_id, desired, desired_version, observed, observed_version, steps, \
         created_at, updated_at"
    };
}

/// The upsert of a work row (aliased `w`) that keeps the earliest due time: a taken row
/// (`due_at` NULL) is due again at the new time (`LEAST` ignores NULL), and `trigger` names
/// whatever set the due time that stays.
macro_rules! keep_earliest_due {
    () => {
        " ON CONFLICT (tenant_id, chip_id) DO UPDATE SET \
             trigger = CASE WHEN w.due_at IS NULL OR EXCLUDED.due_at < w.due_at \
                            THEN EXCLUDED.trigger ELSE w.trigger END, \
             due_at = LEAST(w.due_at, EXCLUDED.due_at)"
    };
}

/// Makes the owner's transaction act for one tenant (`$1`), so row-level security admits it to
/// that tenant's rows whether or not the owner is the admin role.
const SCOPE: &str = "SELECT set_config('app.tenant_id', $1, true)";

/// Records a chip (`$1`..`$8`: tenant, chip, desired, observed, steps, phase, next try, now)
/// with its work row (due now, trigger `$9`) and its tenant's lease row, in one statement. A key
/// that exists is left alone but locked (`DO UPDATE ... WHERE false`), so the read that follows
/// in the same transaction finds it.
const CREATE_CHIP: &str = concat!(
    "WITH chip AS ( \
         INSERT INTO supervisor_chips AS c \
             (tenant_id, chip_id, desired, desired_version, observed, observed_version, steps, \
              phase, next_try, created_at, updated_at) \
         VALUES ($1, $2, $3, 1, $4, 1, $5, $6, $7, $8, $8) \
         ON CONFLICT (tenant_id, chip_id) DO UPDATE SET desired_version = c.desired_version \
             WHERE false \
         RETURNING ",
    chip_columns!(),
    "), queued AS ( \
         INSERT INTO supervisor_work AS w (tenant_id, chip_id, due_at, trigger) \
         SELECT tenant_id, chip_id, created_at, $9::text FROM chip",
    keep_earliest_due!(),
    "), leased AS ( \
         INSERT INTO supervisor_owner_leases (tenant_id) SELECT tenant_id FROM chip \
         ON CONFLICT (tenant_id) DO NOTHING) \
     SELECT ",
    chip_columns!(),
    " FROM chip"
);

const GET_CHIP: &str = concat!(
    "SELECT ",
    chip_columns!(),
    " FROM supervisor_chips WHERE tenant_id = $1 AND chip_id = $2"
);

const LOCK_CHIP: &str = concat!(
    "SELECT ",
    chip_columns!(),
    " FROM supervisor_chips WHERE tenant_id = $1 AND chip_id = $2 FOR NO KEY UPDATE"
);

/// `$2` is the chip id to list after, `''` for the first page (no chip id is empty, and `''`
/// sorts first in `"C"`).
const LIST_CHIPS: &str = concat!(
    "SELECT ",
    chip_columns!(),
    " FROM supervisor_chips WHERE tenant_id = $1 AND chip_id > $2 ORDER BY chip_id LIMIT $3"
);

const VERSIONS: &str = "SELECT desired_version, observed_version FROM supervisor_chips \
     WHERE tenant_id = $1 AND chip_id = $2";

const UPDATE_DESIRED: &str = concat!(
    "UPDATE supervisor_chips \
        SET desired = $3, desired_version = desired_version + 1, updated_at = $4 \
      WHERE tenant_id = $1 AND chip_id = $2 AND desired_version = $5 \
     RETURNING ",
    chip_columns!()
);

const WRITE_OBSERVED: &str = concat!(
    "UPDATE supervisor_chips \
        SET observed = $3, observed_version = observed_version + 1, steps = $4, phase = $5, \
            next_try = $6, updated_at = $7 \
      WHERE tenant_id = $1 AND chip_id = $2 AND observed_version = $8 \
     RETURNING ",
    chip_columns!()
);

/// The tenant's current token, share-locked until the transaction ends: a new owner's
/// `acquire` (which updates the row) waits for the write in flight, and a write that starts
/// after the takeover reads the new token.
const LOCK_FENCE: &str = "SELECT token FROM supervisor_fences WHERE tenant_id = $1 FOR SHARE";

const TRIM_SIGNALS: &str = "DELETE FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2 AND seq <= $3";

/// The chip's signals go with it (foreign key `ON DELETE CASCADE`).
const REMOVE_CHIP: &str = "DELETE FROM supervisor_chips \
     WHERE tenant_id = $1 AND chip_id = $2 AND observed_version = $3";

const REMOVE_WORK: &str = "DELETE FROM supervisor_work WHERE tenant_id = $1 AND chip_id = $2";

/// Numbers the next signal; the row lock it takes orders the chip's appends (and trims).
const NEXT_SIGNAL_SEQ: &str = "UPDATE supervisor_chips SET last_signal_seq = last_signal_seq + 1 \
     WHERE tenant_id = $1 AND chip_id = $2 RETURNING last_signal_seq";

const TAKE_ACTIVITY: &str = "DELETE FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2 AND kind = 'activity' RETURNING at";

const COUNT_SIGNALS: &str = "SELECT count(*) AS kept FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2";

const EVICT_OLDEST_NOT_DISCONNECT: &str = "DELETE FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2 AND seq = ( \
         SELECT seq FROM supervisor_signals \
          WHERE tenant_id = $1 AND chip_id = $2 AND kind <> 'disconnect' \
          ORDER BY seq LIMIT 1)";

const EVICT_OLDEST: &str = "DELETE FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2 AND seq = ( \
         SELECT seq FROM supervisor_signals WHERE tenant_id = $1 AND chip_id = $2 \
          ORDER BY seq LIMIT 1)";

const INSERT_SIGNAL: &str = "INSERT INTO supervisor_signals \
     (tenant_id, chip_id, seq, at, kind, signal) VALUES ($1, $2, $3, $4, $5, $6)";

const SIGNALS_AFTER: &str = "SELECT seq, at, signal FROM supervisor_signals \
     WHERE tenant_id = $1 AND chip_id = $2 AND seq > $3 ORDER BY seq";

/// Queues an existing chip (`$3` due, `$4` trigger). The chip row is key-share locked, so a
/// removal either waits for this (and then deletes the work row too) or has removed the chip
/// already (and nothing is queued). The tenant's lease row exists since the chip's `create`.
const ENQUEUE: &str = concat!(
    "WITH chip AS ( \
         SELECT tenant_id, chip_id FROM supervisor_chips \
          WHERE tenant_id = $1 AND chip_id = $2 FOR KEY SHARE \
     ), queued AS ( \
         INSERT INTO supervisor_work AS w (tenant_id, chip_id, due_at, trigger) \
         SELECT tenant_id, chip_id, $3::timestamptz, $4::text FROM chip",
    keep_earliest_due!(),
    " RETURNING 1) \
     SELECT count(*) AS queued FROM queued"
);

/// Takes up to `$4` chips due at `$3` of the tenants whose current fence is among `$1`/`$2`
/// (tenants, tokens), earliest first, and marks them taken. The lease rows are share-locked
/// (in tenant order, as every statement that locks several does) and re-checked once locked:
/// a takeover either waits for this statement or has moved the token on. Work rows another
/// transaction holds are skipped, never waited for.
const TAKE_DUE: &str = "WITH owned AS ( \
         SELECT l.tenant_id FROM supervisor_owner_leases l \
           JOIN unnest($1::text[], $2::bigint[]) AS f (tenant_id, token) \
             ON f.tenant_id = l.tenant_id AND f.token = l.token \
          WHERE l.fenced \
          ORDER BY l.tenant_id COLLATE \"C\" \
            FOR SHARE OF l \
     ), due AS ( \
         SELECT w.tenant_id, w.chip_id, w.due_at FROM supervisor_work w \
          WHERE w.tenant_id IN (SELECT tenant_id FROM owned) AND w.due_at <= $3 \
          ORDER BY w.due_at, w.tenant_id COLLATE \"C\", w.chip_id \
          LIMIT $4 \
            FOR UPDATE OF w SKIP LOCKED \
     ) \
     UPDATE supervisor_work w SET due_at = NULL FROM due \
      WHERE w.tenant_id = due.tenant_id AND w.chip_id = due.chip_id \
     RETURNING w.tenant_id, w.chip_id, due.due_at";

/// Up to `$2` tenants that have work and no live owner at `$1`, in tenant order, locked for the
/// takeover; tenants another transaction holds are skipped.
const ACQUIRABLE: &str = "SELECT l.tenant_id FROM supervisor_owner_leases l \
     WHERE (l.owner_id IS NULL OR l.expires_at <= $1) \
       AND EXISTS (SELECT 1 FROM supervisor_work w WHERE w.tenant_id = l.tenant_id) \
     ORDER BY l.tenant_id COLLATE \"C\" \
     LIMIT $2 \
       FOR UPDATE OF l SKIP LOCKED";

/// Deletes the tenant's work rows whose chip is gone (left behind when the tenant's rows were
/// erased by `AdminDb::purge_tenant` without this store's purge) and says whether any work is
/// left. Run in the tenant's scope.
const SWEEP_WORK: &str = "WITH orphaned AS ( \
         DELETE FROM supervisor_work w WHERE w.tenant_id = $1 \
            AND NOT EXISTS (SELECT 1 FROM supervisor_chips c \
                             WHERE c.tenant_id = w.tenant_id AND c.chip_id = w.chip_id)) \
     SELECT EXISTS ( \
         SELECT 1 FROM supervisor_work w WHERE w.tenant_id = $1 \
            AND EXISTS (SELECT 1 FROM supervisor_chips c \
                         WHERE c.tenant_id = w.tenant_id AND c.chip_id = w.chip_id) \
     ) AS has_work";

const TAKE_LEASE: &str = "UPDATE supervisor_owner_leases \
        SET token = token + 1, owner_id = $2, expires_at = $3, renewed_at = $4, fenced = true \
      WHERE tenant_id = $1 RETURNING token";

const SET_FENCE: &str = "INSERT INTO supervisor_fences (tenant_id, token) VALUES ($1, $2) \
     ON CONFLICT (tenant_id) DO UPDATE SET token = EXCLUDED.token";

/// The new owner re-reads every record: all of the tenant's chips are due at `$2`, also those
/// taken (in flight) under the old fence.
const ALL_DUE: &str = "UPDATE supervisor_work SET due_at = LEAST(due_at, $2) WHERE tenant_id = $1";

/// The leases of `$1` still held under the tokens `$2`/`$3` (tenants, tokens), locked in
/// tenant order. Followed by the update (`RENEW`, `RELEASE`).
macro_rules! held_leases {
    () => {
        "WITH held AS ( \
             SELECT l.tenant_id FROM supervisor_owner_leases l \
               JOIN unnest($2::text[], $3::bigint[]) AS h (tenant_id, token) \
                 ON h.tenant_id = l.tenant_id AND h.token = l.token \
              WHERE l.owner_id = $1 \
              ORDER BY l.tenant_id COLLATE \"C\" \
                FOR UPDATE OF l) "
    };
}

const RENEW: &str = concat!(
    held_leases!(),
    "UPDATE supervisor_owner_leases l SET expires_at = $4, renewed_at = $5 FROM held \
      WHERE l.tenant_id = held.tenant_id \
     RETURNING l.tenant_id, l.token"
);

const RELEASE: &str = concat!(
    held_leases!(),
    "UPDATE supervisor_owner_leases l SET owner_id = NULL, expires_at = $4 FROM held \
      WHERE l.tenant_id = held.tenant_id"
);

/// Clears the owner and the fence flag, keeping the token; locks the lease row first.
const PURGE_LEASE: &str = "UPDATE supervisor_owner_leases \
        SET owner_id = NULL, fenced = false, expires_at = $2 WHERE tenant_id = $1";
const PURGE_FENCE: &str = "DELETE FROM supervisor_fences WHERE tenant_id = $1";
/// The chips' signals go with them (foreign key `ON DELETE CASCADE`).
const PURGE_CHIPS: &str = "DELETE FROM supervisor_chips WHERE tenant_id = $1";
const PURGE_WORK: &str = "DELETE FROM supervisor_work WHERE tenant_id = $1";

/// The [`ChipStore`] in PostgreSQL, shared by every replica that uses the same database
/// (`docs/session-supervisor.md`, 7.1). Creating one does no I/O.
///
/// # Schema and roles
/// Its tables come from [`PgChipStore::MIGRATIONS`] (component `session-supervisor`,
/// `migrations/0001_chips.sql`), applied in the host's one migration run next to the other
/// components' sets: `AdminDb::migrate_with(&config, &[PostgresLeaseStore::MIGRATIONS,
/// PgChipStore::MIGRATIONS])`, then `TenantDb::verify_role_with` with the same sets.
/// - Tenant tables, row-level security forced: `supervisor_chips` (records, with a per-chip
///   signal counter), `supervisor_signals` and `supervisor_fences` (each tenant's current
///   fencing token). A chip's tenant must exist in the tenant directory (foreign keys):
///   create the tenant before its chips.
/// - Platform tables, no row-level security: `supervisor_owner_leases` (owner, token, expiry;
///   one row per tenant that ever had a chip, kept across purges so tokens are never reused)
///   and `supervisor_work` (one row per chip: its due time, or taken).
///
/// Two handles, as the design has it: the [`TenantDb`] (application role) for what touches
/// tenant rows only (`get`, `list`, `update_desired`, `write_observed`, `append_signal`,
/// `signals_after`), each call one [`TenantDb::scoped`] transaction under row-level security;
/// and a pool of the owner role (`DATABASE_URL`, the role that ran the migrations) for every
/// call that touches a platform table. The application role may not read platform tables, and
/// a call that touches both kinds (`create`: record and work row; `remove`; `enqueue`, which
/// must see the record; `acquire`, which sets the fence; `purge_tenant`) must be one
/// transaction, so those run on the owner's connection, which first sets `app.tenant_id`
/// (`set_config(.., true)`, transaction-local) for the tenant whose rows it touches: row-level
/// security, forced on the owner too, then admits it to that tenant's rows through the same
/// `tenant_isolation` policy as the application role, whether or not the owner is also the
/// role of the `chipfleet_admin` policy. `renew`, `release` and `take_due` touch platform rows
/// only. A call uses one connection of one pool at a time, so a busy pool never deadlocks it.
///
/// # Consistency
/// Every call is one transaction (`READ COMMITTED`):
/// - An owner write (`write_observed`, `remove`) share-locks the tenant's fence row and reads
///   the token in the transaction of the write; `acquire` updates that row, so a takeover waits
///   for the writes in flight, and every later write of the old owner is
///   [`StoreError::StaleOwner`]. `take_due` share-locks the lease rows it trusts, and
///   `acquire` makes all of a new owner's chips due under the lease row's lock, so no chip
///   stays taken by a lost owner.
/// - Observed writes lock the record, compare `observed_version`, apply the step with
///   [`ChipRecord::commit_observed`] (the step log is the one in [`StepLog`](crate::StepLog))
///   and update `WHERE observed_version = $expected`; desired writes are one
///   compare-and-set `UPDATE`.
/// - Signal numbers come from the record's counter, whose row lock orders a chip's appends;
///   coalescing and making room follow the in-memory store step by step.
/// - Transactions that lock several kinds of rows take them in one order (lease, fence, chip,
///   then signals and work), and statements that lock several rows of a kind lock them in
///   tenant order, so the store's own calls do not deadlock each other. A failure that
///   [`StoreError::is_retryable`] calls retryable (a lost connection, a pool time-out,
///   PostgreSQL's serialization or deadlock errors) can be retried by the caller; the store
///   does not retry by itself.
///
/// # Time
/// Lease expiry, due times and record timestamps follow the injected [`Clock`] (default
/// [`SystemClock`]), never the database's `now()`: every replica compares leases against its
/// own clock, so replicas need synchronized clocks (NTP). Clock skew between replicas eats into
/// the lease's safety margin: a replica whose clock runs ahead sees leases expire early and
/// takes tenants over sooner. Fencing keeps a takeover safe (the old owner's writes are
/// refused), but skew beyond the margin between `renew` and the lease's expiry causes
/// needless takeovers. Timestamps are stored with PostgreSQL's microsecond precision: records
/// and signals read back with times truncated to the microsecond.
///
/// # Purge
/// [`ChipStore::purge_tenant`] removes the tenant's records (their signals cascade), fence and
/// work, and clears its owner, keeping its token. Call it before
/// `AdminDb::purge_tenant`, which erases the tenant and cascades its tenant rows but cannot
/// reach the platform rows; if the order was missed, `acquire` sweeps the work rows left
/// behind.
///
/// ```no_run
/// use std::sync::Arc;
/// use session_supervisor::ChipStore;
/// use session_supervisor::store::PgChipStore;
/// use tenant_isolation::pg::{self, AdminDb, MigrationConfig, PoolOptions, TenantDb};
///
/// # async fn wire() -> Result<(), tenant_isolation::Error> {
/// let options = PoolOptions { max_size: 4, ..PoolOptions::default() };
/// let owner_url = "postgres://chipfleet:secret@127.0.0.1:5432/chipfleet";
/// let admin = AdminDb::connect(owner_url, &options)?;
/// admin.migrate_with(&MigrationConfig::default(), &[PgChipStore::MIGRATIONS]).await?;
/// let app_url = "postgres://chipfleet_app:secret@127.0.0.1:5432/chipfleet";
/// let tenant_db = TenantDb::connect(app_url, &options).await?;
/// tenant_db.verify_role_with(&[PgChipStore::MIGRATIONS]).await?;
/// let owner = pg::build_pool(owner_url, &options)?;
/// let store: Arc<dyn ChipStore> = Arc::new(PgChipStore::new(tenant_db, owner));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgChipStore {
    tenant_db: TenantDb,
    owner: Pool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PgChipStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgChipStore")
            .field("tenant_db", &self.tenant_db)
            .field("owner", &self.owner.status())
            .field("clock", &self.clock)
            .finish()
    }
}

impl PgChipStore {
    /// This crate's migrations (component `session-supervisor`), declaring the tenant tables
    /// `supervisor_chips`, `supervisor_signals`, `supervisor_fences` and the event bus's
    /// `supervisor_event_seqs` and `supervisor_events` (`PgEventBus`, version 2), and the
    /// inbox's `supervisor_inbox`, `supervisor_inbox_keys` and `supervisor_message_acks`
    /// (`PgInbox`, version 3), and the send outbox's `supervisor_outbox` and
    /// `supervisor_outbox_early_acks` (`PgOutbox`, version 4), and the inbox's applied and
    /// claimed marks (version 5, no new table): pass it to
    /// `tenant_isolation::pg::AdminDb::migrate_with` (which grants the application role those
    /// tables and puts them under the admin policy) and to
    /// `tenant_isolation::pg::TenantDb::verify_role_with`.
    pub const MIGRATIONS: MigrationSet =
        MigrationSet::new("session-supervisor", CHIP_MIGRATIONS).tenant_tables(TENANT_TABLES);

    /// A store on the system clock over `tenant_db` (the application role) and `owner`, a pool
    /// of the role that owns the tables (`DATABASE_URL`; build it with
    /// `tenant_isolation::pg::build_pool`, or like it, with `RecyclingMethod::Clean`). No I/O.
    pub fn new(tenant_db: TenantDb, owner: Pool) -> Self {
        PgChipStore {
            tenant_db,
            owner,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same store on `clock`: lease expiry, due times and timestamps follow it (see the
    /// type's documentation for why every replica's clock must be synchronized).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        PgChipStore { clock, ..self }
    }

    /// Runs `body` in one transaction scoped to `tenant` (application role, row-level
    /// security); commits if it succeeds, rolls back otherwise.
    async fn tenant_tx<T>(
        &self,
        tenant: &TenantId,
        body: impl AsyncFnOnce(&TenantTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.tenant_db.scoped(tenant).await.map_err(db)?;
        match body(&tx).await {
            Ok(value) => {
                tx.commit().await.map_err(db)?;
                Ok(value)
            }
            Err(err) => {
                // The call's error matters more; a failed rollback discards the connection.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback of a failed chip store call");
                }
                Err(err)
            }
        }
    }

    /// Runs `body` in one transaction on an owner connection, first scoped to `scope`'s rows
    /// (see the type's documentation); commits if it succeeds. An error drops the transaction,
    /// which rolls it back.
    async fn owner_tx<T>(
        &self,
        scope: Option<&TenantId>,
        body: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.owner.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        if let Some(tenant) = scope {
            scope_to(&tx, tenant).await?;
        }
        let value = body(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(value)
    }
}

/// Statements on a tenant-scoped transaction, an owner transaction or an owner connection
/// (prepared once per connection), with errors as [`StoreError`]s.
trait Sql {
    fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, StoreError>> + Send;

    fn row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, StoreError>> + Send;

    fn exec(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl Sql for TenantTx {
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.query(sql, params).await.map_err(db)
    }

    async fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.query_opt(sql, params).await.map_err(db)
    }

    async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
        self.query_one(sql, params).await.map_err(db)
    }

    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.execute(sql, params).await.map_err(db)
    }
}

/// [`Sql`] for the owner role's transactions and connections, on their statement caches.
macro_rules! owner_sql {
    ($($ty:ty),*) => {$(
        impl Sql for $ty {
            async fn rows(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, StoreError> {
                let statement = self.prepare_cached(sql).await.map_err(db)?;
                self.query(&statement, params).await.map_err(db)
            }

            async fn row_opt(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>, StoreError> {
                let statement = self.prepare_cached(sql).await.map_err(db)?;
                self.query_opt(&statement, params).await.map_err(db)
            }

            async fn row(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Row, StoreError> {
                let statement = self.prepare_cached(sql).await.map_err(db)?;
                self.query_one(&statement, params).await.map_err(db)
            }

            async fn exec(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<u64, StoreError> {
                let statement = self.prepare_cached(sql).await.map_err(db)?;
                self.execute(&statement, params).await.map_err(db)
            }
        }
    )*};
}

owner_sql!(deadpool_postgres::Transaction<'_>, ClientWrapper);

/// A database failure, kept as tenant-isolation's error (retry classification, no row
/// contents).
fn db(err: impl Into<tenant_isolation::Error>) -> StoreError {
    StoreError::Database(err.into())
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { detail }
}

async fn scope_to(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &TenantId,
) -> Result<(), StoreError> {
    tx.row(SCOPE, &[&tenant.as_str()]).await.map(drop)
}

/// A column of `table` as `T`; a type the schema does not promise (or a NULL where it promises
/// none) is corrupt data. The value never reaches the error.
fn column<'a, T: FromSql<'a>>(row: &'a Row, table: &str, name: &str) -> Result<T, StoreError> {
    row.try_get(name)
        .map_err(|_| corrupt(format!("{table}.{name} does not read as the expected type")))
}

/// A stored `bigint` that must not be negative (a version, a token, a signal number).
fn unsigned(row: &Row, table: &str, name: &str) -> Result<u64, StoreError> {
    pg_common::unsigned(row, name).map_err(|err| match err {
        UnsignedError::Unreadable => {
            corrupt(format!("{table}.{name} does not read as the expected type"))
        }
        UnsignedError::Negative(value) => corrupt(format!("{table}.{name} is negative ({value})")),
    })
}

/// A JSON column's value. Serialization only fails for a time before 1970.
fn encode<T: Serialize>(
    value: &T,
    what: &str,
    key: &ChipKey,
) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|_| {
        corrupt(format!(
            "the {what} of chip {key} cannot be stored as JSON (a time before 1970?)"
        ))
    })
}

/// A JSON column as `T`. The decoder's message can quote stored values (a pairing code), so
/// only its category reaches the error.
fn decode<T: DeserializeOwned>(
    row: &Row,
    table: &str,
    name: &str,
    key: &ChipKey,
) -> Result<T, StoreError> {
    let value: serde_json::Value = column(row, table, name)?;
    serde_json::from_value(value).map_err(|err| {
        corrupt(format!(
            "{table}.{name} of chip {key} does not decode ({:?} error)",
            err.classify()
        ))
    })
}

fn tenant_from_row(row: &Row, table: &str) -> Result<TenantId, StoreError> {
    let raw: String = column(row, table, "tenant_id")?;
    TenantId::new(raw).map_err(|err| corrupt(format!("{table}.tenant_id: {err}")))
}

fn key_from_row(row: &Row, table: &str) -> Result<ChipKey, StoreError> {
    let tenant = tenant_from_row(row, table)?;
    let raw: String = column(row, table, "chip_id")?;
    let chip = ChipId::new(raw).map_err(|err| corrupt(format!("{table}.chip_id: {err}")))?;
    Ok(ChipKey::new(tenant, chip))
}

/// A chip record from the columns of `chip_columns!`.
fn record_from_row(row: &Row) -> Result<ChipRecord, StoreError> {
    let key = key_from_row(row, CHIPS)?;
    Ok(ChipRecord {
        created_at: column(row, CHIPS, "created_at")?,
        updated_at: column(row, CHIPS, "updated_at")?,
        desired: decode(row, CHIPS, "desired", &key)?,
        desired_version: unsigned(row, CHIPS, "desired_version")?,
        observed: decode(row, CHIPS, "observed", &key)?,
        observed_version: unsigned(row, CHIPS, "observed_version")?,
        steps: decode(row, CHIPS, "steps", &key)?,
        key,
    })
}

/// `record` as a read at `now` shows it: an expired pairing code is dropped (the stored one
/// goes with the next owner write).
fn as_of(mut record: ChipRecord, now: SystemTime) -> ChipRecord {
    record.observed.login = record.observed.login.map(|offer| offer.scrubbed(now));
    record
}

/// Why a compare-and-set on `key` matched no row: the chip is gone, or has another version.
async fn refusal(sql: &impl Sql, key: &ChipKey, which: VersionKind, expected: u64) -> StoreError {
    let row = match sql
        .row_opt(VERSIONS, &[&key.tenant.as_str(), &key.chip.as_str()])
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return StoreError::NotFound { key: key.clone() },
        Err(err) => return err,
    };
    let name = match which {
        VersionKind::Desired => "desired_version",
        VersionKind::Observed => "observed_version",
    };
    match unsigned(&row, CHIPS, name) {
        Ok(actual) => StoreError::VersionConflict {
            key: key.clone(),
            which,
            expected,
            actual,
        },
        Err(err) => err,
    }
}

/// The tenant's current fence must be `fence` (and exist: token 0 is never valid). Share-locks
/// the fence row for the rest of the transaction (see [`LOCK_FENCE`]).
async fn check_fence(sql: &impl Sql, key: &ChipKey, fence: &Fence) -> Result<(), StoreError> {
    let current = match sql.row_opt(LOCK_FENCE, &[&key.tenant.as_str()]).await? {
        Some(row) => unsigned(&row, FENCES, "token")?,
        None => 0,
    };
    if fence.tenant != key.tenant || current == 0 || fence.token != current {
        return Err(StoreError::StaleOwner {
            tenant: key.tenant.clone(),
            held: fence.token,
            current,
        });
    }
    Ok(())
}

/// The distinct `(tenant, token)` pairs of `fences` as two arrays, for `unnest`; a token beyond
/// `bigint` can be no lease's and is left out.
fn fence_arrays(fences: &[Fence]) -> (Vec<&str>, Vec<i64>) {
    let mut seen = HashSet::new();
    fences
        .iter()
        .filter_map(|fence| Some((fence.tenant.as_str(), i64::try_from(fence.token).ok()?)))
        .filter(|pair| seen.insert(*pair))
        .unzip()
}

/// `now + ttl`, saturating a century ahead.
fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
    now.checked_add(ttl.min(CENTURY)).unwrap_or(now)
}

/// How `supervisor_work.trigger` names a trigger (its serde name).
fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Created => "created",
        Trigger::Api => "api",
        Trigger::Signal => "signal",
        Trigger::Pool => "pool",
        Trigger::Runtime => "runtime",
        Trigger::Quota => "quota",
        Trigger::Monitor => "monitor",
        Trigger::Resync => "resync",
    }
}

/// `supervisor_signals.kind` of a signal.
fn signal_kind(body: &SignalBody) -> &'static str {
    match body {
        SignalBody::Disconnect { .. } => "disconnect",
        SignalBody::Status { .. } => "status",
        SignalBody::Activity => "activity",
    }
}

#[async_trait]
impl ChipStore for PgChipStore {
    async fn create(&self, new: NewChip) -> Result<CreateOutcome, StoreError> {
        let now = self.clock.now();
        let NewChip {
            key,
            spec,
            chip_slot,
        } = new;
        let fresh = ChipRecord::new(key.clone(), spec, chip_slot, now);
        let desired = encode(&fresh.desired, "desired state", &key)?;
        let observed = encode(&fresh.observed, "observed state", &key)?;
        let steps = encode(&fresh.steps, "step log", &key)?;
        let phase = fresh.observed.phase.kind();
        let next_try = fresh.observed.next_try;
        let trigger = trigger_name(Trigger::Created);
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let outcome = self
            .owner_tx(Some(&key.tenant), async |tx| {
                let params: [&(dyn ToSql + Sync); 9] = [
                    &tenant, &chip, &desired, &observed, &steps, &phase, &next_try, &now, &trigger,
                ];
                if let Some(row) = tx.row_opt(CREATE_CHIP, &params).await? {
                    return Ok(CreateOutcome::Created(record_from_row(&row)?));
                }
                // The key exists, and the insert locked its row: this read finds it.
                let row = tx.row(GET_CHIP, &[&tenant, &chip]).await?;
                Ok(CreateOutcome::Existing(as_of(record_from_row(&row)?, now)))
            })
            .await?;
        if matches!(outcome, CreateOutcome::Created(_)) {
            tracing::trace!(chip = %key, trigger = ?Trigger::Created, "queued");
        }
        Ok(outcome)
    }

    async fn get(&self, key: &ChipKey) -> Result<Option<ChipRecord>, StoreError> {
        let now = self.clock.now();
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        self.tenant_tx(&key.tenant, async |tx| {
            tx.row_opt(GET_CHIP, &[&tenant, &chip])
                .await?
                .map(|row| record_from_row(&row).map(|record| as_of(record, now)))
                .transpose()
        })
        .await
    }

    async fn list<'a>(
        &self,
        tenant: &TenantId,
        after: Option<&'a ChipId>,
        limit: u32,
    ) -> Result<Vec<ChipRecord>, StoreError> {
        let now = self.clock.now();
        let tenant_id = tenant.as_str();
        let after = after.map_or("", ChipId::as_str);
        let limit = i64::from(limit);
        self.tenant_tx(tenant, async |tx| {
            tx.rows(LIST_CHIPS, &[&tenant_id, &after, &limit])
                .await?
                .iter()
                .map(|row| record_from_row(row).map(|record| as_of(record, now)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
    }

    async fn update_desired(
        &self,
        key: &ChipKey,
        expected: u64,
        desired: Desired,
    ) -> Result<ChipRecord, StoreError> {
        let now = self.clock.now();
        let desired = encode(&desired, "desired state", key)?;
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let expected_version = bigint(expected, -1);
        self.tenant_tx(&key.tenant, async |tx| {
            let params: [&(dyn ToSql + Sync); 5] =
                [&tenant, &chip, &desired, &now, &expected_version];
            match tx.row_opt(UPDATE_DESIRED, &params).await? {
                Some(row) => Ok(as_of(record_from_row(&row)?, now)),
                None => Err(refusal(tx, key, VersionKind::Desired, expected).await),
            }
        })
        .await
    }

    async fn write_observed(
        &self,
        key: &ChipKey,
        expected: u64,
        patch: ObservedPatch,
        fence: &Fence,
    ) -> Result<ChipRecord, StoreError> {
        let now = self.clock.now();
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let expected_version = bigint(expected, -1);
        self.tenant_tx(&key.tenant, async |tx| {
            check_fence(tx, key, fence).await?;
            let Some(row) = tx.row_opt(LOCK_CHIP, &[&tenant, &chip]).await? else {
                return Err(StoreError::NotFound { key: key.clone() });
            };
            let mut record = record_from_row(&row)?;
            if record.observed_version != expected {
                return Err(StoreError::VersionConflict {
                    key: key.clone(),
                    which: VersionKind::Observed,
                    expected,
                    actual: record.observed_version,
                });
            }
            // The one definition of an owner write: the step log, the version, the scrub.
            record.commit_observed(patch, now);
            let observed = encode(&record.observed, "observed state", key)?;
            let steps = encode(&record.steps, "step log", key)?;
            let phase = record.observed.phase.kind();
            let next_try = record.observed.next_try;
            let params: [&(dyn ToSql + Sync); 8] = [
                &tenant,
                &chip,
                &observed,
                &steps,
                &phase,
                &next_try,
                &now,
                &expected_version,
            ];
            let Some(row) = tx.row_opt(WRITE_OBSERVED, &params).await? else {
                // The row is locked and its version matched; only a broken invariant lands here.
                return Err(refusal(tx, key, VersionKind::Observed, expected).await);
            };
            let written = record_from_row(&row)?;
            let applied = bigint(written.observed.signals_applied, i64::MAX);
            tx.exec(TRIM_SIGNALS, &[&tenant, &chip, &applied]).await?;
            Ok(written)
        })
        .await
    }

    async fn remove(&self, key: &ChipKey, expected: u64, fence: &Fence) -> Result<(), StoreError> {
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let expected_version = bigint(expected, -1);
        self.owner_tx(Some(&key.tenant), async |tx| {
            check_fence(tx, key, fence).await?;
            let removed = tx
                .exec(REMOVE_CHIP, &[&tenant, &chip, &expected_version])
                .await?;
            if removed == 0 {
                return Err(refusal(tx, key, VersionKind::Observed, expected).await);
            }
            tx.exec(REMOVE_WORK, &[&tenant, &chip]).await?;
            Ok(())
        })
        .await
    }

    async fn append_signal(
        &self,
        key: &ChipKey,
        at: SystemTime,
        body: SignalBody,
    ) -> Result<u64, StoreError> {
        let kind = signal_kind(&body);
        let is_activity = matches!(body, SignalBody::Activity);
        let signal = encode(&body, "signal", key)?;
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        self.tenant_tx(&key.tenant, async |tx| {
            let Some(row) = tx.row_opt(NEXT_SIGNAL_SEQ, &[&tenant, &chip]).await? else {
                return Err(StoreError::NotFound { key: key.clone() });
            };
            let seq = unsigned(&row, CHIPS, "last_signal_seq")?;
            let stored_seq = bigint(seq, i64::MAX);
            // A new activity replaces the pending one, keeping the later of their times.
            let mut at = at;
            if is_activity
                && let Some(previous) = tx.row_opt(TAKE_ACTIVITY, &[&tenant, &chip]).await?
            {
                at = at.max(column(&previous, SIGNALS, "at")?);
            }
            let count = tx.row(COUNT_SIGNALS, &[&tenant, &chip]).await?;
            let kept: i64 = column(&count, SIGNALS, "kept")?;
            if kept >= SIGNALS_KEPT {
                // The oldest signal that is not a disconnect makes room; a disconnect only for
                // a newer disconnect or status (an activity that finds only disconnects is
                // numbered but not kept).
                let evicted = tx
                    .exec(EVICT_OLDEST_NOT_DISCONNECT, &[&tenant, &chip])
                    .await?;
                if evicted == 0 {
                    if is_activity {
                        return Ok(seq);
                    }
                    tx.exec(EVICT_OLDEST, &[&tenant, &chip]).await?;
                }
            }
            let params: [&(dyn ToSql + Sync); 6] =
                [&tenant, &chip, &stored_seq, &at, &kind, &signal];
            tx.exec(INSERT_SIGNAL, &params).await?;
            Ok(seq)
        })
        .await
    }

    async fn signals_after(&self, key: &ChipKey, after: u64) -> Result<Vec<Signal>, StoreError> {
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let after = bigint(after, i64::MAX);
        self.tenant_tx(&key.tenant, async |tx| {
            tx.rows(SIGNALS_AFTER, &[&tenant, &chip, &after])
                .await?
                .iter()
                .map(|row| {
                    Ok(Signal {
                        seq: unsigned(row, SIGNALS, "seq")?,
                        at: column(row, SIGNALS, "at")?,
                        body: decode(row, SIGNALS, "signal", key)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
    }

    async fn enqueue(
        &self,
        key: &ChipKey,
        due: SystemTime,
        trigger: Trigger,
    ) -> Result<(), StoreError> {
        let (tenant, chip) = (key.tenant.as_str(), key.chip.as_str());
        let name = trigger_name(trigger);
        let queued: i64 = self
            .owner_tx(Some(&key.tenant), async |tx| {
                let row = tx.row(ENQUEUE, &[&tenant, &chip, &due, &name]).await?;
                column::<i64>(&row, WORK, "queued")
            })
            .await?;
        if queued > 0 {
            tracing::trace!(chip = %key, ?trigger, "queued");
        } else {
            tracing::trace!(chip = %key, ?trigger, "not queued: no such chip");
        }
        Ok(())
    }

    async fn take_due(
        &self,
        owned: &[Fence],
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<ChipKey>, StoreError> {
        let (tenants, tokens) = fence_arrays(owned);
        if tenants.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::from(limit);
        // Decoded inside the transaction: rows that do not decode are not left taken.
        let mut taken = self
            .owner_tx(None, async |tx| {
                tx.rows(TAKE_DUE, &[&tenants, &tokens, &now, &limit])
                    .await?
                    .iter()
                    .map(|row| {
                        let due: SystemTime = column(row, WORK, "due_at")?;
                        Ok((due, key_from_row(row, WORK)?))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        taken.sort();
        Ok(taken.into_iter().map(|(_, key)| key).collect())
    }

    async fn acquire(
        &self,
        owner: &OwnerId,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let expires = expiry(now, ttl);
        let owner_id = owner.as_str();
        let limit = i64::from(limit);
        let acquired = self
            .owner_tx(None, async |tx| {
                let candidates = tx.rows(ACQUIRABLE, &[&now, &limit]).await?;
                let mut acquired = Vec::with_capacity(candidates.len());
                for row in &candidates {
                    let tenant = tenant_from_row(row, LEASES)?;
                    let tenant_id = tenant.as_str();
                    // This tenant's rows only: its records (the sweep), its fence.
                    scope_to(tx, &tenant).await?;
                    let swept = tx.row(SWEEP_WORK, &[&tenant_id]).await?;
                    if !column::<bool>(&swept, WORK, "has_work")? {
                        continue;
                    }
                    let lease = tx
                        .row(TAKE_LEASE, &[&tenant_id, &owner_id, &expires, &now])
                        .await?;
                    let token = unsigned(&lease, LEASES, "token")?;
                    let stored_token = bigint(token, i64::MAX);
                    tx.exec(SET_FENCE, &[&tenant_id, &stored_token]).await?;
                    tx.exec(ALL_DUE, &[&tenant_id, &now]).await?;
                    acquired.push(Fence { tenant, token });
                }
                Ok(acquired)
            })
            .await?;
        for fence in &acquired {
            tracing::debug!(tenant = %fence.tenant, token = fence.token, %owner, "tenant acquired");
        }
        Ok(acquired)
    }

    async fn renew(
        &self,
        owner: &OwnerId,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        let (tenants, tokens) = fence_arrays(held);
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let expires = expiry(now, ttl);
        let owner_id = owner.as_str();
        let client = self.owner.get().await.map_err(db)?;
        let params: [&(dyn ToSql + Sync); 5] = [&owner_id, &tenants, &tokens, &expires, &now];
        let renewed = client
            .rows(RENEW, &params)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    tenant_from_row(row, LEASES)?,
                    unsigned(row, LEASES, "token")?,
                ))
            })
            .collect::<Result<HashSet<(TenantId, u64)>, StoreError>>()?;
        Ok(held
            .iter()
            .filter(|fence| renewed.contains(&(fence.tenant.clone(), fence.token)))
            .cloned()
            .collect())
    }

    async fn release(&self, owner: &OwnerId, held: &[Fence]) -> Result<(), StoreError> {
        let (tenants, tokens) = fence_arrays(held);
        if tenants.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let owner_id = owner.as_str();
        let client = self.owner.get().await.map_err(db)?;
        client
            .exec(RELEASE, &[&owner_id, &tenants, &tokens, &now])
            .await?;
        Ok(())
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let tenant_id = tenant.as_str();
        let removed = self
            .owner_tx(Some(tenant), async |tx| {
                // Lease first (the lock order); the token stays, so a tenant created again
                // under this id never gets an old one. No fence covers the tenant any more:
                // its old owner's writes and takes are refused from here on.
                tx.exec(PURGE_LEASE, &[&tenant_id, &now]).await?;
                tx.exec(PURGE_FENCE, &[&tenant_id]).await?;
                let removed = tx.exec(PURGE_CHIPS, &[&tenant_id]).await?;
                tx.exec(PURGE_WORK, &[&tenant_id]).await?;
                Ok(removed)
            })
            .await?;
        tracing::info!(tenant = %tenant, chips = removed, "tenant purged from the chip store");
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_set_declares_the_tenant_tables() {
        let set = PgChipStore::MIGRATIONS;
        assert_eq!(set.component(), "session-supervisor");
        assert_eq!(set.declared_tenant_tables(), TENANT_TABLES);
        assert_eq!(set.migrations().len(), 6);
        assert_eq!(
            set.migrations().last().map(|migration| migration.version()),
            Some(6),
            "the pairing codes' expiry is version 6"
        );
        for table in TENANT_TABLES {
            assert!(
                set.migrations().iter().any(|migration| migration
                    .sql()
                    .contains(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))),
                "{table} has row-level security forced"
            );
        }
    }

    #[test]
    fn triggers_are_stored_by_their_serde_names() {
        for trigger in [
            Trigger::Created,
            Trigger::Api,
            Trigger::Signal,
            Trigger::Pool,
            Trigger::Runtime,
            Trigger::Quota,
            Trigger::Monitor,
            Trigger::Resync,
        ] {
            assert_eq!(
                serde_json::to_value(trigger).ok(),
                Some(serde_json::Value::from(trigger_name(trigger)))
            );
        }
    }

    #[test]
    fn fences_become_distinct_arrays() {
        let tenant = TenantId::new("acme").unwrap();
        let fence = |token| Fence {
            tenant: tenant.clone(),
            token,
        };
        let fences = [fence(3), fence(3), fence(4), fence(u64::MAX)];
        let (tenants, tokens) = fence_arrays(&fences);
        assert_eq!(tenants, ["acme", "acme"]);
        assert_eq!(tokens, [3, 4]);
    }

    #[test]
    fn expiry_saturates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(expiry(now, Duration::ZERO), now);
        assert!(expiry(now, Duration::MAX) > now);
    }
}
