//! [`PgOutbox`]: the [`Outbox`] in PostgreSQL for several replicas (feature `postgres`, issue 13,
//! "Sending, paced"): one record per (tenant, idempotency key) stored under row-level security
//! before any WAHA call, so one key never sends twice, also across a crash.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::Row;
use tenant_isolation::pg::reexports::tokio_postgres::error::SqlState;
use tenant_isolation::pg::reexports::tokio_postgres::types::FromSql;
use tenant_isolation::pg::{TenantDb, TenantTx};
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

use crate::outbox::{
    Begin, MemoryOutbox, Outbox, OutboxError, OutboxRecord, OutboxStatus, mark_expired,
};
use crate::pg_common::{ack_rank, db_reason, tenants_to_prune};

/// The columns a record is read from (see [`record_from_row`]), as a literal for `concat!`.
macro_rules! record_columns {
    () => {
        "tenant_id, idempotency_key, chip_id, chat, text_len, text_fingerprint, status, \
         failure_reason, message_id, ack, created_at, updated_at"
    };
}

/// Stores a `Pending` record (`$1` tenant, `$2` key, `$3` chip, `$4` chat, `$5` text length,
/// `$6` fingerprint, `$7` created at, `$8` updated at) unless the tenant has one with the key;
/// returns it when it did. A key another transaction is inserting makes this statement wait for
/// that transaction, then skip (it committed) or insert (it rolled back).
const INSERT: &str = concat!(
    "INSERT INTO supervisor_outbox \
         (tenant_id, idempotency_key, chip_id, chat, text_len, text_fingerprint, status, \
          created_at, updated_at) \
     VALUES ($1::text, $2::text, $3::text, $4::text, $5::bigint, $6::bigint, 'pending', \
             $7::timestamptz, $8::timestamptz) \
     ON CONFLICT (tenant_id, idempotency_key) DO NOTHING \
     RETURNING ",
    record_columns!()
);

/// The record of key `$2` of tenant `$1`.
const GET: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM supervisor_outbox WHERE tenant_id = $1::text AND idempotency_key = $2::text"
);

/// [`GET`], locking the row until the transaction ends (settles wait for each other).
const GET_FOR_UPDATE: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM supervisor_outbox WHERE tenant_id = $1::text AND idempotency_key = $2::text \
     FOR UPDATE"
);

/// The record holding message id `$2` of tenant `$1`.
const BY_MESSAGE_ID: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM supervisor_outbox WHERE tenant_id = $1::text AND message_id = $2::text"
);

/// Whether a record of tenant `$1` holds message id `$2`.
const HOLDS_MESSAGE_ID: &str =
    "SELECT 1 AS held FROM supervisor_outbox WHERE tenant_id = $1::text AND message_id = $2::text";

/// Serializes, until the transaction ends, every `finish` and `advance_ack` of message id `$2`
/// of tenant `$1` (a transaction-scoped advisory lock in a key space of its own, on a hash of
/// both; a collision of two hashes only makes two calls wait for each other). Without it an ack
/// could land as an early mark just after `finish` looked for one, and never be applied.
const LOCK_MESSAGE_ID: &str =
    "SELECT pg_advisory_xact_lock(1869574008, hashtext($1::text || ':' || $2::text))";

/// Takes (deletes) the early ack mark of message id `$2` of tenant `$1`; returns its ack and
/// when it last moved (an expired mark is taken too, and not folded in).
const TAKE_EARLY_ACK: &str = "DELETE FROM supervisor_outbox_early_acks \
     WHERE tenant_id = $1::text AND message_id = $2::text RETURNING ack, seen_at";

/// Settles the `Pending` record of key `$2` of tenant `$1`: `$3` status, `$4` failure reason,
/// `$5` message id, `$6` ack, `$7` updated at; returns it.
const SETTLE: &str = concat!(
    "UPDATE supervisor_outbox \
        SET status = $3::text, failure_reason = $4::text, message_id = $5::text, \
            ack = $6::bigint, updated_at = $7::timestamptz \
      WHERE tenant_id = $1::text AND idempotency_key = $2::text AND status = 'pending' \
     RETURNING ",
    record_columns!()
);

/// Removes the record of key `$2` of tenant `$1` if it is `Pending`.
const ABANDON: &str = "DELETE FROM supervisor_outbox \
     WHERE tenant_id = $1::text AND idempotency_key = $2::text AND status = 'pending'";

/// Moves the `Sent` record holding message id `$2` of tenant `$1` to ack `$3` at `$4` if that
/// ranks higher than its ack (one conditional update: the row lock serializes concurrent acks,
/// the `WHERE` compares with the committed ack). Affects one row when it did, none otherwise.
const ADVANCE_ACK: &str = concat!(
    "UPDATE supervisor_outbox AS o SET ack = $3::bigint, updated_at = $4::timestamptz \
      WHERE o.tenant_id = $1::text AND o.message_id = $2::text AND o.status = 'sent' \
        AND ",
    ack_rank!("o.ack"),
    " < ",
    ack_rank!("$3::bigint")
);

/// Records ack `$3` seen at `$4` as the early mark of message id `$2` of tenant `$1` if it is the
/// first, replaces an expired mark (last moved at or before `$5`, `$4` minus the mark lifetime;
/// NULL: none is), or moves the mark forward (one conditional upsert).
const MARK_EARLY_ACK: &str = concat!(
    "INSERT INTO supervisor_outbox_early_acks AS m (tenant_id, message_id, ack, seen_at) \
     VALUES ($1::text, $2::text, $3::bigint, $4::timestamptz) \
     ON CONFLICT (tenant_id, message_id) DO UPDATE \
        SET ack = EXCLUDED.ack, seen_at = EXCLUDED.seen_at \
      WHERE m.seen_at <= $5::timestamptz OR ",
    ack_rank!("m.ack"),
    " < ",
    ack_rank!("EXCLUDED.ack")
);

/// Deletes the tenant's (`$1`) records created before `$2`; returns how many.
const PRUNE_RECORDS: &str = "WITH gone AS ( \
         DELETE FROM supervisor_outbox \
          WHERE tenant_id = $1::text AND created_at < $2::timestamptz RETURNING 1 \
     ) \
     SELECT count(*) AS gone FROM gone";

/// Deletes the tenant's (`$1`) early ack marks last moved before `$2`.
const PRUNE_EARLY_ACKS: &str = "DELETE FROM supervisor_outbox_early_acks \
     WHERE tenant_id = $1::text AND seen_at < $2::timestamptz";

/// Deletes the tenant's (`$1`) expired early ack marks: last moved at or before `$2` (now minus
/// the mark lifetime); returns how many.
const PRUNE_EXPIRED_MARKS: &str = "WITH gone AS ( \
         DELETE FROM supervisor_outbox_early_acks \
          WHERE tenant_id = $1::text AND seen_at <= $2::timestamptz RETURNING 1 \
     ) \
     SELECT count(*) AS gone FROM gone";

/// The tenants that may have outbox rows, read by the owner role: the tenant directory (all of
/// it where the owner is the admin role, the default) and those that ever had a chip (the
/// platform lease table, whatever the owner's policy; a send comes from a chip).
const TENANTS: &str = "SELECT tenant_id FROM tenants \
     UNION SELECT tenant_id FROM supervisor_owner_leases";

/// The unique index on `(tenant_id, message_id)` (migration 4).
const MESSAGE_ID_INDEX: &str = "supervisor_outbox_message";

/// How many times [`Outbox::begin`] inserts again when the record it conflicted with went
/// before it could read it (abandoned in between).
const BEGIN_ATTEMPTS: usize = 3;

/// The send [`Outbox`] in PostgreSQL, shared by every replica on the same database (issue 13,
/// "Sending, paced"; `docs/ingest.md`): one idempotency key never sends twice, also across a
/// crash or a restart of every replica. Hand it to the supervisor with
/// [`SupervisorBuilder::outbox`](crate::SupervisorBuilder::outbox).
///
/// # Storage
/// Its tables come with [`PgChipStore::MIGRATIONS`](crate::PgChipStore::MIGRATIONS) (version
/// 4, `migrations/0004_outbox.sql`), both tenant tables under forced row-level security with a
/// foreign key to the tenant directory (sends for tenants that exist):
/// - `supervisor_outbox`: one row per (tenant, idempotency key), primary key
///   `(tenant_id, idempotency_key)`: chip, chat, the text's length and fingerprint (the text
///   itself is never stored: [`OutboxRecord`] does not carry it), the status (its name, the
///   failure reason of `failed`, the ack of `sent` as its wire number), WAHA's message id
///   (unique per tenant where set), created and updated times;
/// - `supervisor_outbox_early_acks`: the early ack marks (see [`Outbox`]), primary key
///   `(tenant_id, message_id)`, each with its ack and when it last moved.
///
/// Times are stored to the microsecond (PostgreSQL's `timestamptz`): a record reads back with
/// its times truncated to whole microseconds. The text length and fingerprint (`u64`) are
/// stored as the `bigint`s of the same 64 bits.
///
/// # Consistency
/// Every call runs in one transaction scoped to one tenant ([`TenantDb::scoped`], application
/// role), `READ COMMITTED`, as [`MemoryOutbox`](crate::MemoryOutbox) behaves:
/// - [`begin`](Outbox::begin) is `INSERT … ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
///   RETURNING`; when nothing was inserted it reads the existing record ([`Begin::Existing`])
///   in a second statement (a fresh snapshot, which sees the row it conflicted with). Of any
///   number of racing calls with one key (on any replicas) exactly one gets
///   [`Begin::Started`]: the others' inserts wait for its transaction on the primary key, then
///   conflict. If the conflicting record was abandoned before it could be read, it inserts
///   again (a few times).
/// - [`finish`](Outbox::finish) locks the record (`SELECT … FOR UPDATE`); a record that is no
///   longer `Pending` (or a `Pending` status) is answered as it is. A `Sent` status takes the
///   early ack mark of its message id, if any, and unless it expired keeps the higher of the
///   two acks (in [`MessageAck::supersedes`]' order); then one
///   `UPDATE … WHERE status = 'pending'`.
/// - [`abandon`](Outbox::abandon) is one `DELETE … WHERE status = 'pending'`.
/// - [`advance_ack`](Outbox::advance_ack) is one conditional `UPDATE` of the `Sent` row with
///   the message id, moving its ack only to a higher rank (computed in SQL from the stored
///   number, `CASE WHEN ack < 0 THEN 1 ELSE ack * 2 END`); when no record holds the id, one
///   conditional upsert of its early mark, moving forward only too (or replacing an expired
///   mark).
/// - `finish` (with a message id) and `advance_ack` of one message id take one
///   transaction-scoped advisory lock first, so an ack arriving while `finish` stores the id is
///   either applied to the record or kept as a mark that `finish` folds in, never lost.
/// - A message id another record of the tenant already holds makes `finish` fail
///   ([`OutboxError::Corrupt`], nothing changed): WAHA's ids are unique, so that is a bug
///   elsewhere, and the index keeps acks pointing at one record.
///
/// # Retention
/// Records stay until [`prune`](Outbox::prune) removes those created before the cutoff,
/// whatever their status (the idempotency guarantee holds for the retention), and the early
/// ack marks last moved before it, as `MemoryOutbox` does. It reads the tenants with the owner
/// pool (the directory, and the platform lease table) and prunes each in a transaction of its
/// own. When a tenant is erased from the directory its rows cascade. Unlike `MemoryOutbox`
/// there is no capacity: the database's size is the bound, and [`OutboxError::Full`] never
/// comes from it.
///
/// Early ack marks live [`early_ack_ttl`](PgOutbox::early_ack_ttl) from their last move
/// ([`PgOutbox::DEFAULT_EARLY_ACK_TTL`], 10 minutes, unless
/// [`with_early_ack_ttl`](PgOutbox::with_early_ack_ttl); see [`Outbox`]): `finish` takes an
/// expired mark without folding it in, `advance_ack` replaces one (the same upsert, its `WHERE`
/// also admitting a mark last moved at or before the ack's time minus the lifetime), and
/// [`prune_marks`](Outbox::prune_marks) deletes the expired marks, tenant by tenant like
/// `prune`, one `DELETE` on `(tenant_id, seen_at)` each. Times are compared to the
/// microsecond (as stored).
///
/// # Errors
/// Database failures are [`OutboxError::Unavailable`] (retryable), their reason the database's
/// message without row contents; a row that does not read back as a record is
/// [`OutboxError::Corrupt`] (its column named, never a value). Keys, chats and message ids are
/// never logged nor quoted in an error.
///
/// ```no_run
/// use std::sync::Arc;
/// use session_supervisor::{Outbox, PgChipStore, PgOutbox};
/// use tenant_isolation::pg::{self, AdminDb, MigrationConfig, PoolOptions, TenantDb};
///
/// # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
/// let options = PoolOptions::default();
/// let owner_url = "postgres://chipfleet:secret@127.0.0.1:5432/chipfleet";
/// let admin = AdminDb::connect(owner_url, &options)?;
/// admin.migrate_with(&MigrationConfig::default(), &[PgChipStore::MIGRATIONS]).await?;
/// let app_url = "postgres://chipfleet_app:secret@127.0.0.1:5432/chipfleet";
/// let tenant_db = TenantDb::connect(app_url, &options).await?;
/// let owner = pg::build_pool(owner_url, &options)?;
/// let outbox: Arc<dyn Outbox> = Arc::new(PgOutbox::new(tenant_db, owner));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgOutbox {
    tenant_db: TenantDb,
    owner: Pool,
    early_ack_ttl: Duration,
}

impl fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOutbox")
            .field("tenant_db", &self.tenant_db)
            .field("owner", &self.owner.status())
            .field("early_ack_ttl", &self.early_ack_ttl)
            .finish()
    }
}

impl PgOutbox {
    /// How long an early ack mark lives by default, from its last move: 10 minutes, as
    /// [`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`] (where the choice is explained).
    pub const DEFAULT_EARLY_ACK_TTL: Duration = MemoryOutbox::DEFAULT_EARLY_ACK_TTL;

    /// An outbox over `tenant_db` (the application role: every read and write of outbox rows
    /// is scoped to one tenant) and `owner`, a pool of the role that owns the tables (only
    /// [`prune`](Outbox::prune) and [`prune_marks`](Outbox::prune_marks) use it, to find the
    /// tenants), its early ack marks living [`PgOutbox::DEFAULT_EARLY_ACK_TTL`]. No I/O.
    pub fn new(tenant_db: TenantDb, owner: Pool) -> Self {
        PgOutbox {
            tenant_db,
            owner,
            early_ack_ttl: Self::DEFAULT_EARLY_ACK_TTL,
        }
    }

    /// The same outbox whose early ack marks live `ttl` from their last move (see
    /// [`Outbox`]); `Duration::ZERO` keeps no mark alive (early acks are then never applied).
    /// Give every replica the same lifetime.
    #[must_use]
    pub fn with_early_ack_ttl(self, ttl: Duration) -> Self {
        PgOutbox {
            early_ack_ttl: ttl,
            ..self
        }
    }

    /// How long an early ack mark lives from its last move.
    pub fn early_ack_ttl(&self) -> Duration {
        self.early_ack_ttl
    }

    /// The time at or before which a mark last moved is expired at `now` (`None`: none is,
    /// `now` minus the lifetime being before `SystemTime`'s range).
    fn mark_cutoff(&self, now: SystemTime) -> Option<SystemTime> {
        now.checked_sub(self.early_ack_ttl)
    }

    /// A transaction scoped to `tenant`.
    async fn scoped(&self, tenant: &TenantId) -> Result<TenantTx, OutboxError> {
        self.tenant_db.scoped(tenant).await.map_err(unavailable)
    }

    /// The tenants [`prune`](Outbox::prune) visits.
    async fn tenants(&self) -> Result<Vec<TenantId>, OutboxError> {
        tenants_to_prune(&self.owner, TENANTS, "send outbox", unavailable, || {
            corrupt("column tenant_id does not read back")
        })
        .await
    }

    /// Prunes one tenant in one transaction; answers how many records went.
    async fn prune_tenant(
        &self,
        tenant: &TenantId,
        older_than: SystemTime,
    ) -> Result<u64, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = prune_in(&tx, tenant, older_than).await;
        end(tx, outcome).await
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn begin(&self, record: OutboxRecord) -> Result<Begin, OutboxError> {
        let tx = self.scoped(&record.tenant).await?;
        let outcome = begin_in(&tx, &record).await;
        end(tx, outcome).await
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = read_one(&tx, GET, tenant, key).await;
        end(tx, outcome).await
    }

    async fn finish(
        &self,
        tenant: &TenantId,
        key: &str,
        status: OutboxStatus,
        message_id: Option<String>,
        at: SystemTime,
    ) -> Result<OutboxRecord, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = finish_in(
            &tx,
            tenant,
            key,
            status,
            message_id.as_deref(),
            at,
            self.early_ack_ttl,
        )
        .await;
        end(tx, outcome).await
    }

    async fn abandon(&self, tenant: &TenantId, key: &str) -> Result<bool, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = tx
            .execute(ABANDON, &[&tenant.as_str(), &key])
            .await
            .map_err(unavailable);
        let removed = end(tx, outcome).await?;
        Ok(removed > 0)
    }

    async fn by_message_id(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = read_one(&tx, BY_MESSAGE_ID, tenant, message_id).await;
        end(tx, outcome).await
    }

    async fn advance_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
        at: SystemTime,
    ) -> Result<bool, OutboxError> {
        let tx = self.scoped(tenant).await?;
        let outcome = advance_in(&tx, tenant, message_id, ack, at, self.mark_cutoff(at)).await;
        end(tx, outcome).await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, OutboxError> {
        let mut removed = 0;
        for tenant in self.tenants().await? {
            let gone = self.prune_tenant(&tenant, older_than).await?;
            if gone > 0 {
                tracing::debug!(tenant = %tenant, records = gone, "old send outbox records pruned");
            }
            removed += gone;
        }
        Ok(removed)
    }

    async fn prune_marks(&self, now: SystemTime) -> Result<u64, OutboxError> {
        let Some(cutoff) = self.mark_cutoff(now) else {
            return Ok(0);
        };
        let mut removed = 0;
        for tenant in self.tenants().await? {
            let tx = self.scoped(&tenant).await?;
            let outcome = prune_marks_in(&tx, &tenant, cutoff).await;
            let gone = end(tx, outcome).await?;
            if gone > 0 {
                tracing::debug!(tenant = %tenant, marks = gone, "expired early ack marks pruned");
            }
            removed += gone;
        }
        Ok(removed)
    }
}

/// [`Outbox::begin`] in `tx`.
async fn begin_in(tx: &TenantTx, record: &OutboxRecord) -> Result<Begin, OutboxError> {
    let tenant = record.tenant.as_str();
    let key = record.key.as_str();
    let text_len = to_bigint(record.text_len);
    let fingerprint = to_bigint(record.text_fingerprint);
    for _ in 0..BEGIN_ATTEMPTS {
        let inserted = tx
            .query_opt(
                INSERT,
                &[
                    &tenant,
                    &key,
                    &record.chip.as_str(),
                    &record.chat.as_str(),
                    &text_len,
                    &fingerprint,
                    &record.created_at,
                    &record.updated_at,
                ],
            )
            .await
            .map_err(unavailable)?;
        if let Some(row) = inserted {
            return record_from_row(&row).map(Begin::Started);
        }
        // A fresh snapshot: it sees the record the insert conflicted with (committed).
        if let Some(existing) = read_one(tx, GET, &record.tenant, key).await? {
            return Ok(Begin::Existing(existing));
        }
        // That record was abandoned in between: the key is free again.
    }
    Err(OutboxError::Unavailable {
        reason: "send outbox store: the key's record kept changing; retry".to_owned(),
    })
}

/// [`Outbox::finish`] in `tx`, early ack marks living `mark_ttl`.
async fn finish_in(
    tx: &TenantTx,
    tenant: &TenantId,
    key: &str,
    mut status: OutboxStatus,
    message_id: Option<&str>,
    at: SystemTime,
    mark_ttl: Duration,
) -> Result<OutboxRecord, OutboxError> {
    if let Some(id) = message_id {
        lock_message_id(tx, tenant, id).await?;
    }
    let current = tx
        .query_opt(GET_FOR_UPDATE, &[&tenant.as_str(), &key])
        .await
        .map_err(unavailable)?
        .ok_or(OutboxError::NotFound)?;
    let current = record_from_row(&current)?;
    if current.status != OutboxStatus::Pending || status == OutboxStatus::Pending {
        return Ok(current);
    }
    // The mark is taken either way; an expired one is not folded in.
    if let (OutboxStatus::Sent { ack }, Some(id)) = (&mut status, message_id)
        && let Some((early, seen)) = take_early_ack(tx, tenant, id).await?
        && !mark_expired(seen, mark_ttl, at)
        && MessageAck::supersedes(*ack, early)
    {
        *ack = early;
    }
    let (name, reason, ack) = status_columns(&status);
    let settled = tx
        .query_opt(
            SETTLE,
            &[
                &tenant.as_str(),
                &key,
                &name,
                &reason,
                &message_id,
                &ack,
                &at,
            ],
        )
        .await
        .map_err(settle_error)?;
    match settled {
        Some(row) => record_from_row(&row),
        // The row is locked and was pending: only a broken invariant lands here.
        None => Err(OutboxError::Unavailable {
            reason: "send outbox store: a locked pending record changed".to_owned(),
        }),
    }
}

/// [`Outbox::advance_ack`] in `tx`; a mark last moved at or before `expired_by` is expired.
async fn advance_in(
    tx: &TenantTx,
    tenant: &TenantId,
    message_id: &str,
    ack: MessageAck,
    at: SystemTime,
    expired_by: Option<SystemTime>,
) -> Result<bool, OutboxError> {
    lock_message_id(tx, tenant, message_id).await?;
    let ack = i64::from(ack);
    let moved = tx
        .execute(ADVANCE_ACK, &[&tenant.as_str(), &message_id, &ack, &at])
        .await
        .map_err(unavailable)?;
    if moved > 0 {
        return Ok(true);
    }
    let held = tx
        .query_opt(HOLDS_MESSAGE_ID, &[&tenant.as_str(), &message_id])
        .await
        .map_err(unavailable)?;
    if held.is_none() {
        // An ack ahead of `finish`: keep the highest one for it (an expired one is replaced).
        tx.execute(
            MARK_EARLY_ACK,
            &[&tenant.as_str(), &message_id, &ack, &at, &expired_by],
        )
        .await
        .map_err(unavailable)?;
    }
    Ok(false)
}

/// [`Outbox::prune`] of one tenant in `tx`: its old records, then its old early ack marks.
async fn prune_in(
    tx: &TenantTx,
    tenant: &TenantId,
    older_than: SystemTime,
) -> Result<u64, OutboxError> {
    let row = tx
        .query_one(PRUNE_RECORDS, &[&tenant.as_str(), &older_than])
        .await
        .map_err(unavailable)?;
    tx.execute(PRUNE_EARLY_ACKS, &[&tenant.as_str(), &older_than])
        .await
        .map_err(unavailable)?;
    let gone: i64 = column(&row, "gone")?;
    u64::try_from(gone).map_err(|_| corrupt("a count is negative"))
}

/// [`Outbox::prune_marks`] of one tenant in `tx`: its marks last moved at or before `cutoff`.
async fn prune_marks_in(
    tx: &TenantTx,
    tenant: &TenantId,
    cutoff: SystemTime,
) -> Result<u64, OutboxError> {
    let row = tx
        .query_one(PRUNE_EXPIRED_MARKS, &[&tenant.as_str(), &cutoff])
        .await
        .map_err(unavailable)?;
    let gone: i64 = column(&row, "gone")?;
    u64::try_from(gone).map_err(|_| corrupt("a count is negative"))
}

/// The record `sql` selects by tenant (`$1`) and `value` (`$2`), if any.
async fn read_one(
    tx: &TenantTx,
    sql: &str,
    tenant: &TenantId,
    value: &str,
) -> Result<Option<OutboxRecord>, OutboxError> {
    let row = tx
        .query_opt(sql, &[&tenant.as_str(), &value])
        .await
        .map_err(unavailable)?;
    row.as_ref().map(record_from_row).transpose()
}

/// Takes the advisory lock of `message_id` of `tenant` (see [`LOCK_MESSAGE_ID`]).
async fn lock_message_id(
    tx: &TenantTx,
    tenant: &TenantId,
    message_id: &str,
) -> Result<(), OutboxError> {
    tx.execute(LOCK_MESSAGE_ID, &[&tenant.as_str(), &message_id])
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Takes the early ack mark of `message_id`, if any: its ack and when it last moved.
async fn take_early_ack(
    tx: &TenantTx,
    tenant: &TenantId,
    message_id: &str,
) -> Result<Option<(MessageAck, SystemTime)>, OutboxError> {
    let row = tx
        .query_opt(TAKE_EARLY_ACK, &[&tenant.as_str(), &message_id])
        .await
        .map_err(unavailable)?;
    match row {
        Some(row) => {
            let ack: i64 = column(&row, "ack")?;
            let seen: SystemTime = column(&row, "seen_at")?;
            Ok(Some((MessageAck::from(ack), seen)))
        }
        None => Ok(None),
    }
}

/// Commits `tx` after `outcome` succeeded, rolls it back otherwise; answers `outcome`. A failed
/// rollback is only logged (it discards the connection, which ends the transaction all the
/// same, and the caller's answer matters more).
async fn end<T>(tx: TenantTx, outcome: Result<T, OutboxError>) -> Result<T, OutboxError> {
    match outcome {
        Ok(value) => {
            tx.commit().await.map_err(unavailable)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback of a failed send outbox call");
            }
            Err(err)
        }
    }
}

/// The stored form of `status`: its name, the failure reason, the ack's wire number.
fn status_columns(status: &OutboxStatus) -> (&'static str, Option<&str>, Option<i64>) {
    let name = status.as_str();
    match status {
        OutboxStatus::Pending | OutboxStatus::Unknown => (name, None, None),
        OutboxStatus::Sent { ack } => (name, None, Some(i64::from(*ack))),
        OutboxStatus::Failed { reason } => (name, Some(reason.as_str()), None),
    }
}

/// The status of its stored form (the inverse of [`status_columns`]).
fn status_from_columns(
    name: &str,
    reason: Option<String>,
    ack: Option<i64>,
) -> Result<OutboxStatus, OutboxError> {
    match (name, reason, ack) {
        ("pending", None, None) => Ok(OutboxStatus::Pending),
        ("sent", None, Some(ack)) => Ok(OutboxStatus::Sent {
            ack: MessageAck::from(ack),
        }),
        ("unknown", None, None) => Ok(OutboxStatus::Unknown),
        ("failed", Some(reason), None) => Ok(OutboxStatus::Failed { reason }),
        _ => Err(corrupt(
            "a status does not match its failure reason and ack columns",
        )),
    }
}

/// A record of a row read with the columns of `record_columns!`.
fn record_from_row(row: &Row) -> Result<OutboxRecord, OutboxError> {
    let tenant: String = column(row, "tenant_id")?;
    let chip: String = column(row, "chip_id")?;
    let name: String = column(row, "status")?;
    let text_len: i64 = column(row, "text_len")?;
    let fingerprint: i64 = column(row, "text_fingerprint")?;
    Ok(OutboxRecord {
        tenant: TenantId::new(tenant).map_err(|_| corrupt("a tenant id is not valid"))?,
        key: column(row, "idempotency_key")?,
        chip: ChipId::new(chip).map_err(|_| corrupt("a chip id is not valid"))?,
        chat: column(row, "chat")?,
        text_len: from_bigint(text_len),
        text_fingerprint: from_bigint(fingerprint),
        status: status_from_columns(&name, column(row, "failure_reason")?, column(row, "ack")?)?,
        message_id: column(row, "message_id")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
    })
}

/// Column `name` of `row` (a [`OutboxError::Corrupt`] naming the column, never its value, when
/// it does not read as `T`).
fn column<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, OutboxError> {
    row.try_get(name)
        .map_err(|_| corrupt(&format!("column {name} does not read back")))
}

/// A `u64` as the `bigint` of the same 64 bits.
fn to_bigint(value: u64) -> i64 {
    i64::from_be_bytes(value.to_be_bytes())
}

/// The `u64` of a `bigint`'s 64 bits (the inverse of [`to_bigint`]).
fn from_bigint(value: i64) -> u64 {
    u64::from_be_bytes(value.to_be_bytes())
}

/// A failure of [`SETTLE`]: a message id another record holds is [`OutboxError::Corrupt`];
/// anything else is [`unavailable`].
fn settle_error(err: tenant_isolation::Error) -> OutboxError {
    if let tenant_isolation::Error::Database(db) = &err
        && db.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && db.constraint() == Some(MESSAGE_ID_INDEX)
    {
        return corrupt("WAHA's message id is already held by another record of the tenant");
    }
    unavailable(err)
}

/// A database failure, without row contents (the database's message and SQL state only).
fn unavailable(err: impl Into<tenant_isolation::Error>) -> OutboxError {
    OutboxError::Unavailable {
        reason: db_reason("send outbox store", err),
    }
}

fn corrupt(detail: &str) -> OutboxError {
    OutboxError::Corrupt {
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_bits_round_trip_through_bigint() {
        for value in [0, 1, 42, u64::from(u32::MAX), 1 << 63, u64::MAX] {
            assert_eq!(from_bigint(to_bigint(value)), value);
        }
        assert_eq!(to_bigint(7), 7);
        assert_eq!(to_bigint(u64::MAX), -1);
    }

    #[test]
    fn statuses_round_trip_through_their_columns() {
        for status in [
            OutboxStatus::Pending,
            OutboxStatus::Sent {
                ack: MessageAck::Read,
            },
            OutboxStatus::Sent {
                ack: MessageAck::Other(-7),
            },
            OutboxStatus::Unknown,
            OutboxStatus::Failed {
                reason: "http_status".to_owned(),
            },
        ] {
            let (name, reason, ack) = status_columns(&status);
            let read = status_from_columns(name, reason.map(str::to_owned), ack);
            assert_eq!(read.ok(), Some(status));
        }
        assert_eq!(
            status_from_columns("sent", None, None).map_err(|err| err.kind()),
            Err("corrupt"),
            "a sent status without an ack"
        );
        assert_eq!(
            status_from_columns("queued", None, None).map_err(|err| err.kind()),
            Err("corrupt"),
            "an unknown status"
        );
    }

    #[test]
    fn the_ack_rank_compares_the_stored_acks() {
        assert!(ADVANCE_ACK.ends_with(
            "AND (CASE WHEN o.ack < 0 THEN 1::numeric ELSE o.ack::numeric * 2 END) < \
             (CASE WHEN $3::bigint < 0 THEN 1::numeric ELSE $3::bigint::numeric * 2 END)"
        ));
        assert!(MARK_EARLY_ACK.ends_with(
            "WHERE m.seen_at <= $5::timestamptz OR \
             (CASE WHEN m.ack < 0 THEN 1::numeric ELSE m.ack::numeric * 2 END) < \
             (CASE WHEN EXCLUDED.ack < 0 THEN 1::numeric ELSE EXCLUDED.ack::numeric * 2 END)"
        ));
    }
}
