//! `PgInbox` on PostgreSQL (issue 13, "De-duplicate durably"): the `Inbox` conformance suite
//! (every check on a scratch database of its own, migrated by the host's one run), then what
//! only the database shows: a duplicate leaves no row, rows are tenant-scoped, acks are stored
//! as their wire numbers, a tenant's erasure takes its inbox with it, the applied mark is a
//! column, and a claim skips the rows another transaction holds.
//!
//! Reads `DATABASE_URL` (the owner role, which may create databases) and `APP_DATABASE_URL`
//! (the application role), like `pg_store.rs`. Fails, never skips, when PostgreSQL is
//! unreachable.
#![cfg(feature = "postgres")]

/// The URLs, migration access and scratch databases shared with the other PostgreSQL tests.
mod shared;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use session_supervisor::inbox_conformance::{at, entry};
use session_supervisor::{Admission, EntryId, Inbox, InboxEntry, InboxError, PgInbox};
use tenant_isolation::TenantId;
use tenant_isolation::pg::TenantDb;
use waha_client::webhook::MessageAck;

use shared::pg::ScratchPg;

/// Small pools: every check runs on a database of its own, in parallel with the others, under
/// PostgreSQL's connection limit.
const POOL_SIZE: usize = 4;

/// A `PgInbox` on a fresh scratch database, which goes when the inbox does. As an `Inbox` it
/// creates a tenant in the directory when a call first names it (the conformance checks make up
/// tenant ids; the inbox tables refer to the directory).
struct ScratchInbox {
    inbox: PgInbox,
    /// The application role, for reading rows back in a tenant's scope.
    tenant_db: TenantDb,
    /// Last: dropped after the pools (its drop drops the database).
    pg: ScratchPg,
}

/// A scratch database migrated as a host does (tenant-isolation's set, then the supervisor's,
/// then the grants, in one run) and an inbox on it.
async fn scratch_inbox() -> ScratchInbox {
    let pg = ScratchPg::new(POOL_SIZE).await;
    let tenant_db = pg.tenant_db().await;
    ScratchInbox {
        inbox: PgInbox::new(tenant_db.clone(), pg.owner_pool()),
        tenant_db,
        pg,
    }
}

impl ScratchInbox {
    /// Creates `tenant` in the directory unless it exists.
    async fn ensure_tenant(&self, tenant: &TenantId) {
        self.pg.ensure_tenant(tenant).await;
    }

    /// How many rows of `tenant` `table` holds, read in `tenant`'s scope.
    async fn rows(&self, tenant: &TenantId, table: &str) -> i64 {
        shared::pg::count_rows(&self.tenant_db, tenant, table).await
    }

    /// `tenant`'s stored entries: (body, keys), oldest first.
    async fn entries(&self, tenant: &TenantId) -> Vec<(Vec<u8>, Vec<String>)> {
        let tx = self
            .tenant_db
            .scoped(tenant)
            .await
            .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
        let rows = tx
            .query("SELECT body, keys FROM supervisor_inbox ORDER BY id", &[])
            .await
            .unwrap_or_else(|err| panic!("reading the inbox: {err}"));
        tx.commit().await.expect("commit of a read");
        rows.iter()
            .map(|row| (row.get("body"), row.get("keys")))
            .collect()
    }

    /// The stored ack number of `message_id` of `tenant`, if any.
    async fn stored_ack(&self, tenant: &TenantId, message_id: &str) -> Option<i64> {
        let tx = self
            .tenant_db
            .scoped(tenant)
            .await
            .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
        let row = tx
            .query_opt(
                "SELECT ack FROM supervisor_message_acks WHERE message_id = $1",
                &[&message_id],
            )
            .await
            .unwrap_or_else(|err| panic!("reading the acks: {err}"));
        tx.commit().await.expect("commit of a read");
        row.map(|row| row.get("ack"))
    }
}

#[async_trait]
impl Inbox for ScratchInbox {
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError> {
        self.ensure_tenant(&entry.tenant).await;
        self.inbox.admit(entry).await
    }

    async fn record_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
    ) -> Result<bool, InboxError> {
        self.ensure_tenant(tenant).await;
        self.inbox.record_ack(tenant, message_id, ack).await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, InboxError> {
        self.inbox.prune(older_than).await
    }

    async fn mark_applied(&self, tenant: &TenantId, entry: EntryId) -> Result<(), InboxError> {
        self.inbox.mark_applied(tenant, entry).await
    }

    async fn claim_unapplied(
        &self,
        received_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError> {
        self.inbox
            .claim_unapplied(received_before, now, limit)
            .await
    }
}

impl ScratchInbox {
    /// `tenant`'s stored entries: (id, applied, claimed), oldest first.
    async fn marks(&self, tenant: &TenantId) -> Vec<(i64, bool, Option<SystemTime>)> {
        let tx = self
            .tenant_db
            .scoped(tenant)
            .await
            .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
        let rows = tx
            .query(
                "SELECT id, applied_at IS NOT NULL AS applied, claimed_at \
                   FROM supervisor_inbox ORDER BY id",
                &[],
            )
            .await
            .unwrap_or_else(|err| panic!("reading the marks: {err}"));
        tx.commit().await.expect("commit of a read");
        rows.iter()
            .map(|row| (row.get("id"), row.get("applied"), row.get("claimed_at")))
            .collect()
    }
}

session_supervisor::inbox_conformance!(|| async {
    Arc::new(scratch_inbox().await) as Arc<dyn Inbox>
});

#[tokio::test]
async fn a_duplicate_leaves_no_row_and_a_new_entry_is_stored_as_received() {
    let inbox = scratch_inbox().await;
    let tenant = TenantId::generate();
    let first = entry(&tenant, &["event:e1", "message:m1", "event:e1"], 0);
    let Admission::New { entry: first_id } = inbox.admit(first.clone()).await.unwrap() else {
        panic!("the first delivery is new");
    };
    assert_eq!(inbox.rows(&tenant, "supervisor_inbox").await, 1);
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox_keys").await,
        2,
        "distinct keys"
    );
    assert_eq!(
        inbox.entries(&tenant).await,
        vec![(first.body.clone(), first.keys.clone())],
        "the body byte for byte, the keys as the entry carried them"
    );

    let duplicate = entry(&tenant, &["event:e2", "message:m1", "ack:m1:3"], 1);
    assert_eq!(
        inbox.admit(duplicate.clone()).await.unwrap(),
        Admission::Unapplied {
            entry: first_id,
            received_at: first.received_at,
        },
        "the first entry is not marked applied yet"
    );
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox").await,
        1,
        "no entry row of an unapplied duplicate"
    );
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox_keys").await,
        2,
        "no key row of an unapplied duplicate"
    );
    inbox.mark_applied(&tenant, first_id).await.unwrap();
    assert_eq!(inbox.admit(duplicate).await.unwrap(), Admission::Duplicate);
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox").await,
        1,
        "no entry row of a duplicate"
    );
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox_keys").await,
        2,
        "no key row of a duplicate"
    );

    assert!(matches!(
        inbox.admit(entry(&tenant, &[], 2)).await.unwrap(),
        Admission::New { .. }
    ));
    assert_eq!(inbox.rows(&tenant, "supervisor_inbox").await, 2);
}

#[tokio::test]
async fn rows_are_visible_in_their_tenant_scope_only() {
    let inbox = scratch_inbox().await;
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    inbox.ensure_tenant(&beta).await;
    inbox
        .admit(entry(&acme, &["event:e1", "ack:m1:3"], 0))
        .await
        .unwrap();
    assert!(
        inbox
            .record_ack(&acme, "m1", MessageAck::Read)
            .await
            .unwrap()
    );
    for (table, rows) in [
        ("supervisor_inbox", 1),
        ("supervisor_inbox_keys", 2),
        ("supervisor_message_acks", 1),
    ] {
        assert_eq!(inbox.rows(&acme, table).await, rows, "acme's {table}");
        assert_eq!(
            inbox.rows(&beta, table).await,
            0,
            "beta sees none of {table}"
        );
    }
}

#[tokio::test]
async fn acks_are_stored_as_their_wire_numbers() {
    let inbox = scratch_inbox().await;
    let tenant = TenantId::generate();
    assert_eq!(inbox.stored_ack(&tenant, "m1").await, None);
    assert!(
        inbox
            .record_ack(&tenant, "m1", MessageAck::Error)
            .await
            .unwrap()
    );
    assert_eq!(inbox.stored_ack(&tenant, "m1").await, Some(-1));
    assert!(
        inbox
            .record_ack(&tenant, "m1", MessageAck::Read)
            .await
            .unwrap()
    );
    assert!(
        !inbox
            .record_ack(&tenant, "m1", MessageAck::Server)
            .await
            .unwrap()
    );
    assert_eq!(inbox.stored_ack(&tenant, "m1").await, Some(3));
}

#[tokio::test]
async fn prune_removes_keys_with_their_entries() {
    let inbox = scratch_inbox().await;
    let tenant = TenantId::generate();
    inbox
        .admit(entry(&tenant, &["event:e1", "ack:m1:3"], 0))
        .await
        .unwrap();
    inbox
        .admit(entry(&tenant, &["event:e2"], 20))
        .await
        .unwrap();
    assert!(
        inbox
            .record_ack(&tenant, "m1", MessageAck::Read)
            .await
            .unwrap()
    );
    assert_eq!(inbox.prune(at(10)).await.unwrap(), 1);
    assert_eq!(inbox.rows(&tenant, "supervisor_inbox").await, 1);
    assert_eq!(
        inbox.rows(&tenant, "supervisor_inbox_keys").await,
        1,
        "the old entry's keys went with it"
    );
    assert_eq!(
        inbox.rows(&tenant, "supervisor_message_acks").await,
        0,
        "the mark of a message no key mentions went"
    );
}

#[tokio::test]
async fn erasing_a_tenant_takes_its_inbox_with_it() {
    let inbox = scratch_inbox().await;
    let tenant = TenantId::generate();
    inbox
        .admit(entry(&tenant, &["event:e1", "ack:m1:3"], 0))
        .await
        .unwrap();
    assert!(
        inbox
            .record_ack(&tenant, "m1", MessageAck::Read)
            .await
            .unwrap()
    );
    let existed = inbox
        .pg
        .admin
        .purge_tenant(&tenant)
        .await
        .unwrap_or_else(|err| panic!("purging {tenant}: {err}"));
    assert!(existed, "the tenant existed");
    for table in [
        "supervisor_inbox",
        "supervisor_inbox_keys",
        "supervisor_message_acks",
    ] {
        assert_eq!(inbox.rows(&tenant, table).await, 0, "{table} cascaded");
    }
}

#[tokio::test]
async fn marks_are_columns_and_a_claim_skips_rows_another_transaction_holds() {
    let inbox = scratch_inbox().await;
    let tenant = TenantId::generate();
    let Admission::New { entry: held } = inbox
        .admit(entry(&tenant, &["event:held"], 0))
        .await
        .unwrap()
    else {
        panic!("new");
    };
    let Admission::New { entry: free } = inbox
        .admit(entry(&tenant, &["event:free"], 1))
        .await
        .unwrap()
    else {
        panic!("new");
    };
    let held_id = i64::try_from(held.get()).expect("a bigint id");
    let free_id = i64::try_from(free.get()).expect("a bigint id");
    assert_eq!(
        inbox.marks(&tenant).await,
        [(held_id, false, None), (free_id, false, None)],
        "stored unapplied, never claimed"
    );

    // Another transaction (another replica's sweep, say) holds `held`'s row.
    let other = inbox
        .tenant_db
        .scoped(&tenant)
        .await
        .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
    other
        .query(
            "SELECT id FROM supervisor_inbox WHERE id = $1 FOR UPDATE",
            &[&held_id],
        )
        .await
        .unwrap_or_else(|err| panic!("locking a row: {err}"));
    let claimed = inbox.claim_unapplied(at(10), at(40), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [free],
        "the held row is skipped, not waited for"
    );
    other.rollback().await.expect("rollback");
    let claimed = inbox.claim_unapplied(at(10), at(40), 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [held],
        "released, it is claimed; the other one was claimed already"
    );
    assert_eq!(
        inbox.marks(&tenant).await,
        [
            (held_id, false, Some(at(40))),
            (free_id, false, Some(at(40)))
        ],
        "claimed at the caller's time"
    );

    inbox.mark_applied(&tenant, held).await.unwrap();
    inbox.mark_applied(&tenant, held).await.unwrap();
    let marks = inbox.marks(&tenant).await;
    assert_eq!(marks[0], (held_id, true, Some(at(40))), "applied");
    assert_eq!(marks[1], (free_id, false, Some(at(40))), "still unapplied");
}
