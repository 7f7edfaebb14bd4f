//! [`PgInbox`]: the [`Inbox`] in PostgreSQL for several replicas (feature `postgres`, issue 13,
//! "De-duplicate durably"): deliveries and their de-duplication keys stored per tenant under
//! row-level security, admitted in one transaction whose unique key decides between concurrent
//! deliveries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::Row;
use tenant_isolation::pg::{TenantDb, TenantTx};
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

use crate::inbox::{ACK_KEY_PREFIX, Admission, EntryId, Inbox, InboxEntry, InboxError};
use crate::pg_common::{UnsignedError, ack_rank, bigint, db_reason, tenants_to_prune, unsigned};

/// Stores an entry (`$1` tenant, `$2` chip, `$3` received at, `$4` body, `$5` its keys as it
/// carries them), unapplied, and claims its distinct keys (`$6`, sorted; `$7` the message id of
/// each ack key, else NULL), in one statement; answers the entry's id and how many keys it
/// claimed. A key that exists is skipped (`DO NOTHING`); one that another transaction is
/// inserting makes this statement wait for that transaction, then skip (it committed) or claim
/// (it rolled back). Keys are inserted
/// in byte order, so two admissions of overlapping keys wait for each other in one order and
/// never deadlock. The entry's row is inserted first (the keys refer to it); a duplicate's
/// transaction rolls back, taking it away again.
const ADMIT: &str = "WITH entry AS ( \
         INSERT INTO supervisor_inbox (tenant_id, chip_id, received_at, body, keys) \
         VALUES ($1::text, $2::text, $3::timestamptz, $4::bytea, $5::text[]) \
         RETURNING id \
     ), claimed AS ( \
         INSERT INTO supervisor_inbox_keys (tenant_id, key, entry_id, ack_message_id) \
         SELECT $1::text, k.key, entry.id, k.ack_message_id \
           FROM entry, unnest($6::text[], $7::text[]) AS k (key, ack_message_id) \
          ORDER BY k.key COLLATE \"C\" \
         ON CONFLICT (tenant_id, key) DO NOTHING \
         RETURNING 1 \
     ) \
     SELECT (SELECT id FROM entry) AS entry_id, (SELECT count(*) FROM claimed) AS claimed";

/// Stores an entry without keys (`$1`..`$4` as in [`ADMIT`]), unapplied: never a duplicate.
/// Answers its id.
const ADMIT_WITHOUT_KEYS: &str = "INSERT INTO supervisor_inbox \
         (tenant_id, chip_id, received_at, body, keys) \
     VALUES ($1::text, $2::text, $3::timestamptz, $4::bytea, '{}'::text[]) \
     RETURNING id AS entry_id";

/// Of a duplicate's keys (`$2`, of tenant `$1`), the lowest-numbered entry that brought one of
/// them and is not marked applied, if any; `$3` is the duplicate's own (rolled back) entry,
/// whose keys this transaction inserted and which never counts. Run in the admission's
/// transaction, after [`ADMIT`]: the keys it conflicted with are committed (it waited for
/// them), so this statement's snapshot sees them.
const UNAPPLIED_OF_KEYS: &str = "SELECT e.id AS entry_id, e.received_at \
       FROM supervisor_inbox_keys k \
       JOIN supervisor_inbox e ON e.tenant_id = k.tenant_id AND e.id = k.entry_id \
      WHERE k.tenant_id = $1::text AND k.key = ANY($2::text[]) AND k.entry_id <> $3::bigint \
        AND e.applied_at IS NULL \
      ORDER BY e.id \
      LIMIT 1";

/// This transaction's commit does not wait for its WAL record to reach the disk
/// (`synchronous_commit`): for writes whose loss in a crash is harmless.
const RELAXED_COMMIT: &str = "SELECT set_config('synchronous_commit', 'off', true)";

/// Marks entry `$2` of tenant `$1` applied (the database's clock: informational only). An
/// entry already marked, or absent, is left alone.
const MARK_APPLIED: &str = "UPDATE supervisor_inbox SET applied_at = now() \
      WHERE tenant_id = $1::text AND id = $2::bigint AND applied_at IS NULL";

/// The sweep's candidates of tenant `$1`: up to `$3` entries not marked applied, received
/// before `$2` and not claimed at or after `$2`, oldest first (no lock: [`CLAIM`] checks again).
const UNAPPLIED: &str = "SELECT id, received_at FROM supervisor_inbox \
      WHERE tenant_id = $1::text AND applied_at IS NULL AND received_at < $2::timestamptz \
        AND (claimed_at IS NULL OR claimed_at < $2::timestamptz) \
      ORDER BY received_at, id \
      LIMIT $3::bigint";

/// Claims the entries `$4` of tenant `$1` that still qualify (as in [`UNAPPLIED`], `$2` the
/// cut-off) and that no other transaction holds (`SKIP LOCKED`: a concurrent sweep's claim is
/// never waited for), stamping `claimed_at = $3`; returns them whole, oldest first.
const CLAIM: &str = "WITH claimed AS ( \
         UPDATE supervisor_inbox e SET claimed_at = $3::timestamptz \
          WHERE e.tenant_id = $1::text AND e.id IN ( \
                SELECT c.id FROM supervisor_inbox c \
                 WHERE c.tenant_id = $1::text AND c.id = ANY($4::bigint[]) \
                   AND c.applied_at IS NULL AND c.received_at < $2::timestamptz \
                   AND (c.claimed_at IS NULL OR c.claimed_at < $2::timestamptz) \
                 ORDER BY c.received_at, c.id \
                 LIMIT $5::bigint \
                   FOR UPDATE SKIP LOCKED) \
         RETURNING e.id, e.chip_id, e.received_at, e.body, e.keys \
     ) \
     SELECT id, chip_id, received_at, body, keys FROM claimed ORDER BY received_at, id";

/// Records `$3` as the highest ack of message `$2` of tenant `$1` if it moves the message
/// forward (or is its first), in one statement: the row lock of the conflict serializes
/// concurrent acks of one message, and the `WHERE` compares with the committed mark. Affects one
/// row when it did, none when it did not.
const RECORD_ACK: &str = concat!(
    "INSERT INTO supervisor_message_acks AS m (tenant_id, message_id, ack, updated_at) \
     VALUES ($1::text, $2::text, $3::bigint, now()) \
     ON CONFLICT (tenant_id, message_id) DO UPDATE \
        SET ack = EXCLUDED.ack, updated_at = EXCLUDED.updated_at \
      WHERE ",
    ack_rank!("m.ack"),
    " < ",
    ack_rank!("EXCLUDED.ack")
);

/// Deletes the tenant's (`$1`) entries received before `$2` (their keys cascade); returns them.
const PRUNE_ENTRIES: &str = "WITH gone AS ( \
         DELETE FROM supervisor_inbox WHERE tenant_id = $1 AND received_at < $2 RETURNING 1 \
     ) \
     SELECT count(*) AS gone FROM gone";

/// Deletes the tenant's (`$1`) ack marks of messages no remaining key mentions (run after
/// [`PRUNE_ENTRIES`], in its transaction, so it sees the keys that cascaded away).
const PRUNE_ACKS: &str = "DELETE FROM supervisor_message_acks a \
     WHERE a.tenant_id = $1 \
       AND NOT EXISTS (SELECT 1 FROM supervisor_inbox_keys k \
                        WHERE k.tenant_id = a.tenant_id AND k.ack_message_id = a.message_id)";

/// The tenants that may have inbox rows, read by the owner role: the tenant directory (all of
/// it where the owner is the admin role, the default) and those that ever had a chip (the
/// platform lease table, whatever the owner's policy; a webhook comes from a chip).
const TENANTS: &str = "SELECT tenant_id FROM tenants \
     UNION SELECT tenant_id FROM supervisor_owner_leases";

/// The [`Inbox`] in PostgreSQL, shared by every replica on the same database (issue 13,
/// webhook ingest step 6; `docs/ingest.md`).
///
/// # Storage
/// Its tables come with [`PgChipStore::MIGRATIONS`](crate::PgChipStore::MIGRATIONS) (version
/// 3, `migrations/0003_inbox.sql`; version 5, `migrations/0005_inbox_applied.sql`, adds the
/// applied and claimed marks), all tenant tables under forced row-level security with a
/// foreign key to the tenant directory (admit for tenants that exist):
/// - `supervisor_inbox`: one row per admitted delivery (chip, time received, raw body, keys),
///   with `applied_at` (NULL until [`mark_applied`](Inbox::mark_applied)) and `claimed_at`
///   (the last [`claim_unapplied`](Inbox::claim_unapplied), the caller's time), and a partial
///   index on the unapplied rows for the sweep;
/// - `supervisor_inbox_keys`: the de-duplication keys, primary key `(tenant_id, key)`, each
///   pointing at the entry that brought it (and going with it);
/// - `supervisor_message_acks`: each message's highest ack, as its wire number.
///
/// # Consistency
/// Every call runs in transactions scoped to one tenant ([`TenantDb::scoped`], application
/// role), `READ COMMITTED`:
/// - [`admit`](Inbox::admit) inserts the entry and its keys in one statement, the keys with
///   `ON CONFLICT (tenant_id, key) DO NOTHING`. If fewer keys went in than the entry has
///   (distinct), one was already seen: the same transaction then looks for the lowest-numbered
///   unapplied entry among those its keys point at ([`Admission::Unapplied`]; none:
///   [`Admission::Duplicate`]) and rolls back, so nothing of a duplicate stays; otherwise it
///   commits and the answer is [`Admission::New`] with the entry's id. Two identical
///   deliveries at the same time (on any replicas) give exactly one `New`: the second one's
///   key insert waits for the first transaction on the primary key, then conflicts (or, if
///   the first rolled back, goes in). Keys are inserted in byte order, so overlapping
///   admissions never deadlock. An entry without keys is always new.
/// - [`mark_applied`](Inbox::mark_applied) is one `UPDATE` of one row that sets `applied_at`
///   (the database's clock, informational) where it is NULL.
/// - [`claim_unapplied`](Inbox::claim_unapplied) spans tenants, so it works as
///   [`prune`](Inbox::prune) does: it reads the tenants with the owner pool, then reads each
///   tenant's oldest candidates (unapplied, received before the cut-off, not claimed since) in
///   a transaction of its own, without locks, through the partial index; of all of them it
///   keeps the `limit` oldest, and claims those tenant by tenant with one
///   `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …` that checks
///   the conditions again and stamps `claimed_at`. A row another replica's sweep is claiming
///   is skipped, never waited for; one it claimed a moment ago no longer qualifies (its
///   `claimed_at` is past the cut-off). One tenant transaction per tenant and sweep, even when
///   nothing is pending: a sweep costs a round trip or three per tenant.
/// - [`record_ack`](Inbox::record_ack) is one conditional upsert: the mark moves only when the
///   new ack's rank is higher, in the order of [`MessageAck::supersedes`] (computed in SQL
///   from the stored number).
/// - A failed commit may still have committed (the connection broke): a retried admission is
///   then answered `Unapplied` (the entry is stored and not marked), which the ingest applies
///   and marks; the delivery is stored either way.
///
/// # Retention
/// Entries stay until [`prune`](Inbox::prune) removes those received before the cutoff, with
/// their keys (a key forgotten lets the same delivery in again), and then the ack marks of
/// messages no remaining key mentions, as [`MemoryInbox`](crate::MemoryInbox) does. The host
/// calls it through [`Ingest::prune_inbox`](crate::Ingest::prune_inbox) (7 days by default). It
/// reads the tenants with the owner pool (the directory, and the platform lease table) and
/// prunes each in a transaction of its own. Bodies hold message text and personal data: they
/// are kept in their tenant's rows only, never logged nor quoted in an error, and go with
/// retention; when the tenant is erased from the directory its rows cascade. Unlike
/// `MemoryInbox` there is no capacity: the database's size is the bound, and
/// [`InboxError::Full`] never comes from it.
///
/// # Errors
/// Every database failure is [`InboxError::Unavailable`] (retryable: the ingest answers
/// "retry later"), its reason the database's message without row contents.
///
/// ```no_run
/// use std::sync::Arc;
/// use session_supervisor::{Inbox, PgChipStore, PgInbox};
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
/// let inbox: Arc<dyn Inbox> = Arc::new(PgInbox::new(tenant_db, owner));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgInbox {
    tenant_db: TenantDb,
    owner: Pool,
}

impl fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgInbox")
            .field("tenant_db", &self.tenant_db)
            .field("owner", &self.owner.status())
            .finish()
    }
}

impl PgInbox {
    /// An inbox over `tenant_db` (the application role: every read and write of inbox rows is
    /// scoped to one tenant) and `owner`, a pool of the role that owns the tables (only
    /// [`prune`](Inbox::prune) and [`claim_unapplied`](Inbox::claim_unapplied) use it, to find
    /// the tenants). No I/O.
    pub fn new(tenant_db: TenantDb, owner: Pool) -> Self {
        PgInbox { tenant_db, owner }
    }

    /// The tenants [`prune`](Inbox::prune) and [`claim_unapplied`](Inbox::claim_unapplied)
    /// visit.
    async fn tenants(&self) -> Result<Vec<TenantId>, InboxError> {
        tenants_to_prune(&self.owner, TENANTS, "webhook inbox", unavailable, || {
            corrupt("a tenant id does not read as text")
        })
        .await
    }

    /// Prunes one tenant in one transaction; answers how many entries went.
    async fn prune_tenant(
        &self,
        tenant: &TenantId,
        older_than: SystemTime,
    ) -> Result<u64, InboxError> {
        let tx = self.tenant_db.scoped(tenant).await.map_err(unavailable)?;
        let pruned = async {
            let row = tx
                .query_one(PRUNE_ENTRIES, &[&tenant.as_str(), &older_than])
                .await?;
            tx.execute(PRUNE_ACKS, &[&tenant.as_str()]).await?;
            Ok::<_, tenant_isolation::Error>(row)
        }
        .await;
        let row = tx.finish_with(pruned).await.map_err(unavailable)?;
        count(&row, "gone")
    }

    /// Up to `limit` of `tenant`'s sweep candidates ([`UNAPPLIED`]): received time and id,
    /// oldest first.
    async fn candidates(
        &self,
        tenant: &TenantId,
        received_before: SystemTime,
        limit: usize,
    ) -> Result<Vec<(SystemTime, i64)>, InboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let tx = self.tenant_db.scoped(tenant).await.map_err(unavailable)?;
        let rows = tx
            .query(UNAPPLIED, &[&tenant.as_str(), &received_before, &limit])
            .await;
        let rows = tx.finish_with(rows).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| -> Result<(SystemTime, i64), InboxError> {
                let received_at: SystemTime = row
                    .try_get("received_at")
                    .map_err(|_| corrupt("a received time does not read as timestamptz"))?;
                let id: i64 = row
                    .try_get("id")
                    .map_err(|_| corrupt("an entry id does not read as bigint"))?;
                Ok((received_at, id))
            })
            .collect()
    }

    /// Claims `ids` of `tenant` ([`CLAIM`]) in one transaction; answers those it claimed.
    async fn claim_tenant(
        &self,
        tenant: &TenantId,
        ids: &[i64],
        received_before: SystemTime,
        now: SystemTime,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError> {
        let limit = i64::try_from(ids.len()).unwrap_or(i64::MAX);
        let tx = self.tenant_db.scoped(tenant).await.map_err(unavailable)?;
        let rows = tx
            .query(
                CLAIM,
                &[&tenant.as_str(), &received_before, &now, &ids, &limit],
            )
            .await;
        let rows = tx.finish_with(rows).await.map_err(unavailable)?;
        rows.iter().map(|row| claimed_entry(tenant, row)).collect()
    }
}

#[async_trait]
impl Inbox for PgInbox {
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError> {
        let tenant = entry.tenant.as_str();
        let chip = entry.chip.as_str();
        // Distinct, in byte order (the order the statement inserts them in).
        let keys: Vec<&str> = entry
            .keys
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .collect();
        let tx = self
            .tenant_db
            .scoped(&entry.tenant)
            .await
            .map_err(unavailable)?;
        if keys.is_empty() {
            let stored = tx
                .query_one(
                    ADMIT_WITHOUT_KEYS,
                    &[&tenant, &chip, &entry.received_at, &entry.body],
                )
                .await;
            let row = tx.finish_with(stored).await.map_err(unavailable)?;
            return Ok(Admission::New {
                entry: entry_id(&row)?,
            });
        }
        let ack_messages: Vec<Option<&str>> =
            keys.iter().map(|key| ack_key_message_id(key)).collect();
        let admitted = tx
            .query_one(
                ADMIT,
                &[
                    &tenant,
                    &chip,
                    &entry.received_at,
                    &entry.body,
                    &entry.keys,
                    &keys,
                    &ack_messages,
                ],
            )
            .await
            .map_err(unavailable)
            .and_then(|row| -> Result<(EntryId, u64), InboxError> {
                Ok((entry_id(&row)?, count(&row, "claimed")?))
            });
        let (stored, claimed) = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                rollback(tx).await;
                return Err(err);
            }
        };
        if claimed == u64::try_from(keys.len()).unwrap_or(u64::MAX) {
            tx.commit().await.map_err(unavailable)?;
            return Ok(Admission::New { entry: stored });
        }
        // A key was seen: is every entry that brought one applied? Asked in this transaction
        // (one round trip less), excluding its own entry; then nothing of this delivery stays
        // (a failed rollback discards the connection, which ends the transaction all the same).
        let earlier = tx
            .query_opt(
                UNAPPLIED_OF_KEYS,
                &[&tenant, &keys, &bigint(stored.get(), -1)],
            )
            .await
            .map_err(unavailable);
        rollback(tx).await;
        match earlier? {
            Some(row) => Ok(Admission::Unapplied {
                entry: entry_id(&row)?,
                received_at: row
                    .try_get("received_at")
                    .map_err(|_| corrupt("an entry's received_at does not read as timestamptz"))?,
            }),
            None => Ok(Admission::Duplicate),
        }
    }

    async fn mark_applied(&self, tenant: &TenantId, entry: EntryId) -> Result<(), InboxError> {
        let Ok(id) = i64::try_from(entry.get()) else {
            // No row has such an id.
            return Ok(());
        };
        let tx = self.tenant_db.scoped(tenant).await.map_err(unavailable)?;
        // A mark lost in a crash only makes the sweep apply the entry once more, which the
        // ingest tolerates (at least once): this commit need not wait for the WAL flush.
        let relaxed = tx.execute(RELAXED_COMMIT, &[]).await.map(|_| ());
        let marked = match relaxed {
            Ok(()) => tx.execute(MARK_APPLIED, &[&tenant.as_str(), &id]).await,
            Err(error) => Err(error),
        };
        tx.finish_with(marked).await.map_err(unavailable)?;
        Ok(())
    }

    async fn record_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
    ) -> Result<bool, InboxError> {
        let tx = self.tenant_db.scoped(tenant).await.map_err(unavailable)?;
        let written = tx
            .execute(
                RECORD_ACK,
                &[&tenant.as_str(), &message_id, &i64::from(ack)],
            )
            .await;
        let written = tx.finish_with(written).await.map_err(unavailable)?;
        Ok(written > 0)
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, InboxError> {
        let mut removed = 0;
        for tenant in self.tenants().await? {
            let gone = self.prune_tenant(&tenant, older_than).await?;
            if gone > 0 {
                tracing::debug!(tenant = %tenant, entries = gone, "old inbox entries pruned");
            }
            removed += gone;
        }
        Ok(removed)
    }

    async fn claim_unapplied(
        &self,
        received_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // 1. Every tenant's oldest candidates, read without locks; the `limit` oldest of all.
        let mut candidates: Vec<(SystemTime, i64, TenantId)> = Vec::new();
        for tenant in self.tenants().await? {
            for (received_at, id) in self.candidates(&tenant, received_before, limit).await? {
                candidates.push((received_at, id, tenant.clone()));
            }
        }
        candidates.sort_unstable_by_key(|a| (a.0, a.1));
        candidates.truncate(limit);
        let mut chosen: BTreeMap<TenantId, Vec<i64>> = BTreeMap::new();
        for (_, id, tenant) in candidates {
            chosen.entry(tenant).or_default().push(id);
        }
        // 2. Claim them, tenant by tenant: what another sweep claimed in between is skipped.
        let mut claimed = Vec::new();
        for (tenant, ids) in chosen {
            match self.claim_tenant(&tenant, &ids, received_before, now).await {
                Ok(entries) => claimed.extend(entries),
                Err(err) if claimed.is_empty() => return Err(err),
                Err(err) => {
                    // Hand out what is claimed already; the rest is claimed one grace later.
                    tracing::warn!(tenant = %tenant, error = %err, "claiming unapplied inbox entries failed; the others are handed out");
                    break;
                }
            }
        }
        claimed.sort_unstable_by_key(|a| (a.1.received_at, a.0));
        Ok(claimed)
    }
}

/// The message id of an ack key (`ack:<message id>:<level>`; the id may itself contain `:`,
/// the level never does), as [`MemoryInbox`](crate::MemoryInbox) reads it.
fn ack_key_message_id(key: &str) -> Option<&str> {
    key.strip_prefix(ACK_KEY_PREFIX)
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(message_id, _level)| message_id)
}

/// Rolls back; a failure is only logged (it discards the connection, which ends the
/// transaction all the same, and the caller's answer matters more).
async fn rollback(tx: TenantTx) {
    if let Err(err) = tx.rollback().await {
        tracing::debug!(error = %err, "rollback of a failed webhook inbox call");
    }
}

/// The `entry_id` column: an entry's id.
fn entry_id(row: &Row) -> Result<EntryId, InboxError> {
    unsigned(row, "entry_id")
        .map(EntryId::new)
        .map_err(|err| match err {
            UnsignedError::Unreadable => corrupt("an entry id does not read as bigint"),
            UnsignedError::Negative(_) => corrupt("an entry id is negative"),
        })
}

/// An entry of `tenant` as [`CLAIM`] returns it.
fn claimed_entry(tenant: &TenantId, row: &Row) -> Result<(EntryId, InboxEntry), InboxError> {
    let id: i64 = row
        .try_get("id")
        .map_err(|_| corrupt("an entry id does not read as bigint"))?;
    let id = u64::try_from(id).map_err(|_| corrupt("an entry id is negative"))?;
    let chip: String = row
        .try_get("chip_id")
        .map_err(|_| corrupt("a chip id does not read as text"))?;
    let chip = ChipId::new(chip).map_err(|_| corrupt("a stored chip id is not valid"))?;
    let entry = InboxEntry {
        tenant: tenant.clone(),
        chip,
        keys: row
            .try_get("keys")
            .map_err(|_| corrupt("the keys do not read as text[]"))?,
        received_at: row
            .try_get("received_at")
            .map_err(|_| corrupt("a received time does not read as timestamptz"))?,
        body: row
            .try_get("body")
            .map_err(|_| corrupt("a body does not read as bytea"))?,
    };
    Ok((EntryId::new(id), entry))
}

/// A `count(*)` column.
fn count(row: &Row, name: &str) -> Result<u64, InboxError> {
    unsigned(row, name).map_err(|err| match err {
        UnsignedError::Unreadable => corrupt("a count does not read as bigint"),
        UnsignedError::Negative(_) => corrupt("a count is negative"),
    })
}

/// A database failure, without row contents (the database's message and SQL state only).
fn unavailable(err: impl Into<tenant_isolation::Error>) -> InboxError {
    InboxError::Unavailable {
        reason: db_reason("webhook inbox store", err),
    }
}

fn corrupt(detail: &str) -> InboxError {
    InboxError::Unavailable {
        reason: format!("webhook inbox data is corrupt: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_keys_name_their_message() {
        assert_eq!(ack_key_message_id("ack:m1:3"), Some("m1"));
        assert_eq!(
            ack_key_message_id("ack:true_5511@c.us_ABC:-1"),
            Some("true_5511@c.us_ABC")
        );
        assert_eq!(ack_key_message_id("ack:a:b:2"), Some("a:b"));
        assert_eq!(ack_key_message_id("message:m1"), None);
        assert_eq!(ack_key_message_id("event:evt_1"), None);
    }

    #[test]
    fn the_ack_rank_compares_the_stored_marks() {
        assert_eq!(
            ack_rank!("m.ack"),
            "(CASE WHEN m.ack < 0 THEN 1::numeric ELSE m.ack::numeric * 2 END)"
        );
        assert!(RECORD_ACK.ends_with(
            "WHERE (CASE WHEN m.ack < 0 THEN 1::numeric ELSE m.ack::numeric * 2 END) < \
             (CASE WHEN EXCLUDED.ack < 0 THEN 1::numeric ELSE EXCLUDED.ack::numeric * 2 END)"
        ));
    }
}
