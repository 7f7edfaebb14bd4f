//! `PgOutbox` on PostgreSQL (issue 13, "Sending, paced"): the `Outbox` conformance suite (every
//! check on a scratch database of its own, migrated by the host's one run), then what only the
//! database shows: no text is stored, a record outlives its outbox (a crash, a restart, another
//! replica), racing replicas begin a key once, an ack racing `finish` is never lost, rows are
//! tenant-scoped, statuses and acks are stored as columns, one message id belongs to one
//! record, prune empties both tables, expired early marks leave the table (with the lifetime
//! the outbox is given), and a tenant's erasure takes its outbox with it.
//!
//! Reads `DATABASE_URL` (the owner role, which may create databases) and `APP_DATABASE_URL`
//! (the application role), like `pg_store.rs`. Fails, never skips, when PostgreSQL is
//! unreachable.
#![cfg(feature = "postgres")]

/// The URLs, migration access and scratch databases shared with the other PostgreSQL tests.
mod shared;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::join_all;
use session_supervisor::outbox_conformance::{at, record};
use session_supervisor::{
    Begin, Outbox, OutboxError, OutboxRecord, OutboxStatus, PgOutbox, text_fingerprint,
};
use tenant_isolation::TenantId;
use tenant_isolation::pg::TenantDb;
use waha_client::webhook::MessageAck;

use shared::pg::ScratchPg;

/// Small pools: every check runs on a database of its own, in parallel with the others, under
/// PostgreSQL's connection limit.
const POOL_SIZE: usize = 4;

/// A `PgOutbox` on a fresh scratch database, which goes when the outbox does. As an `Outbox` it
/// creates a tenant in the directory when a call first names it (the conformance checks make up
/// tenant ids; the outbox tables refer to the directory).
struct ScratchOutbox {
    outbox: PgOutbox,
    /// The application role, for reading rows back in a tenant's scope.
    tenant_db: TenantDb,
    /// The tenants known to exist (saves a directory round trip per call).
    tenants: Mutex<HashSet<TenantId>>,
    /// Last: dropped after the pools (its drop drops the database).
    pg: ScratchPg,
}

/// A scratch database migrated as a host does (tenant-isolation's set, then the supervisor's,
/// then the grants, in one run) and an outbox on it.
async fn scratch_outbox() -> ScratchOutbox {
    let pg = ScratchPg::new(POOL_SIZE).await;
    let tenant_db = pg.tenant_db().await;
    ScratchOutbox {
        outbox: PgOutbox::new(tenant_db.clone(), pg.owner_pool()),
        tenant_db,
        tenants: Mutex::new(HashSet::new()),
        pg,
    }
}

impl ScratchOutbox {
    /// Creates `tenant` in the directory unless it exists.
    async fn ensure_tenant(&self, tenant: &TenantId) {
        if self.known().contains(tenant) {
            return;
        }
        self.pg.ensure_tenant(tenant).await;
        self.known().insert(tenant.clone());
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Another `PgOutbox` on the same database, with pools of its own: what a restarted process
    /// or another replica has.
    async fn another_outbox(&self) -> PgOutbox {
        PgOutbox::new(self.pg.tenant_db().await, self.pg.owner_pool())
    }

    /// How many rows of `tenant` `table` holds, read in `tenant`'s scope.
    async fn rows(&self, tenant: &TenantId, table: &str) -> i64 {
        shared::pg::count_rows(&self.tenant_db, tenant, table).await
    }

    /// `tenant`'s stored record of `key`, as JSON text (every column), read in its scope.
    async fn stored_row(&self, tenant: &TenantId, key: &str) -> String {
        let tx = self
            .tenant_db
            .scoped(tenant)
            .await
            .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
        let row = tx
            .query_one(
                "SELECT row_to_json(o)::text AS stored FROM supervisor_outbox o \
                  WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .unwrap_or_else(|err| panic!("reading the outbox: {err}"));
        tx.commit().await.expect("commit of a read");
        row.get("stored")
    }

    /// `tenant`'s stored (status, failure reason, message id, ack) of `key`.
    async fn stored_status(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> (String, Option<String>, Option<String>, Option<i64>) {
        let tx = self
            .tenant_db
            .scoped(tenant)
            .await
            .unwrap_or_else(|err| panic!("a transaction of {tenant}: {err}"));
        let row = tx
            .query_one(
                "SELECT status, failure_reason, message_id, ack FROM supervisor_outbox \
                  WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .unwrap_or_else(|err| panic!("reading the outbox: {err}"));
        tx.commit().await.expect("commit of a read");
        (
            row.get("status"),
            row.get("failure_reason"),
            row.get("message_id"),
            row.get("ack"),
        )
    }
}

#[async_trait]
impl Outbox for ScratchOutbox {
    async fn begin(&self, record: OutboxRecord) -> Result<Begin, OutboxError> {
        self.ensure_tenant(&record.tenant).await;
        self.outbox.begin(record).await
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        self.ensure_tenant(tenant).await;
        self.outbox.get(tenant, key).await
    }

    async fn finish(
        &self,
        tenant: &TenantId,
        key: &str,
        status: OutboxStatus,
        message_id: Option<String>,
        at: SystemTime,
    ) -> Result<OutboxRecord, OutboxError> {
        self.ensure_tenant(tenant).await;
        self.outbox
            .finish(tenant, key, status, message_id, at)
            .await
    }

    async fn abandon(&self, tenant: &TenantId, key: &str) -> Result<bool, OutboxError> {
        self.ensure_tenant(tenant).await;
        self.outbox.abandon(tenant, key).await
    }

    async fn by_message_id(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        self.ensure_tenant(tenant).await;
        self.outbox.by_message_id(tenant, message_id).await
    }

    async fn advance_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
        at: SystemTime,
    ) -> Result<bool, OutboxError> {
        self.ensure_tenant(tenant).await;
        self.outbox.advance_ack(tenant, message_id, ack, at).await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, OutboxError> {
        self.outbox.prune(older_than).await
    }

    async fn prune_marks(&self, now: SystemTime) -> Result<u64, OutboxError> {
        self.outbox.prune_marks(now).await
    }
}

session_supervisor::outbox_conformance!(|| async {
    Arc::new(scratch_outbox().await) as Arc<dyn Outbox>
});

fn sent(ack: MessageAck) -> OutboxStatus {
    OutboxStatus::Sent { ack }
}

#[tokio::test]
async fn no_text_is_stored_only_its_length_and_fingerprint() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    let text = "the customer's confidential message";
    let started = outbox.begin(record(&tenant, "k1", text, 0)).await.unwrap();
    assert!(matches!(started, Begin::Started(_)));
    let row = outbox.stored_row(&tenant, "k1").await;
    assert!(!row.contains("confidential"), "no text in the row: {row}");
    assert!(
        row.contains(&format!("\"text_len\":{}", text.len())),
        "the length: {row}"
    );
    let fingerprint = i64::from_be_bytes(text_fingerprint(text).to_be_bytes());
    assert!(
        row.contains(&format!("\"text_fingerprint\":{fingerprint}")),
        "the fingerprint's 64 bits: {row}"
    );
    let read = outbox.get(&tenant, "k1").await.unwrap().unwrap();
    assert_eq!(read.text_fingerprint, text_fingerprint(text));
    assert_eq!(read.text_len, u64::try_from(text.len()).unwrap());
}

#[tokio::test]
async fn a_record_outlives_its_outbox() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    let first = record(&tenant, "order-42", "hi", 0);
    assert!(matches!(
        outbox.begin(first.clone()).await.unwrap(),
        Begin::Started(_)
    ));

    // The process that began the send stops before it finished: another one (a restart, a
    // replica) never sends the key again.
    let restarted = outbox.another_outbox().await;
    match restarted.begin(record(&tenant, "order-42", "hi", 5)).await {
        Ok(Begin::Existing(existing)) => assert_eq!(existing, first, "the pending record"),
        other => panic!("after a crash the key has its record: {other:?}"),
    }
    let settled = restarted
        .finish(
            &tenant,
            "order-42",
            sent(MessageAck::Server),
            Some("m1".to_owned()),
            at(6),
        )
        .await
        .unwrap();
    assert_eq!(
        outbox.by_message_id(&tenant, "m1").await.unwrap(),
        Some(settled),
        "every outbox on the database sees the settled record"
    );
}

#[tokio::test]
async fn racing_replicas_begin_a_key_once() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    outbox.ensure_tenant(&tenant).await;
    let replicas = [
        outbox.another_outbox().await,
        outbox.another_outbox().await,
        outbox.another_outbox().await,
    ];
    let racing = replicas
        .iter()
        .cycle()
        .zip(0..12)
        .map(|(replica, n)| replica.begin(record(&tenant, "k", "hi", n)));
    let started = join_all(racing)
        .await
        .into_iter()
        .filter(|outcome| match outcome {
            Ok(Begin::Started(_)) => true,
            Ok(Begin::Existing(_)) => false,
            Err(err) => panic!("a racing begin failed: {err}"),
        })
        .count();
    assert_eq!(started, 1, "one key begins once across replicas");
    assert_eq!(outbox.rows(&tenant, "supervisor_outbox").await, 1);
}

#[tokio::test]
async fn an_ack_racing_finish_is_never_lost() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    let other = outbox.another_outbox().await;
    let keys: Vec<String> = (0..16).map(|n| format!("k{n}")).collect();
    let ids: Vec<String> = (0..16).map(|n| format!("m{n}")).collect();
    for key in &keys {
        outbox.begin(record(&tenant, key, "hi", 0)).await.unwrap();
    }
    // The finishes on one replica, the acks on another, all at once.
    let finishes = keys.iter().zip(&ids).map(|(key, id)| {
        outbox.outbox.finish(
            &tenant,
            key,
            sent(MessageAck::Server),
            Some(id.clone()),
            at(1),
        )
    });
    let acks = ids
        .iter()
        .map(|id| other.advance_ack(&tenant, id, MessageAck::Read, at(1)));
    let (finished, acked) = tokio::join!(join_all(finishes), join_all(acks));
    for outcome in finished {
        outcome.unwrap_or_else(|err| panic!("finish failed: {err}"));
    }
    for outcome in acked {
        outcome.unwrap_or_else(|err| panic!("advance_ack failed: {err}"));
    }
    for id in &ids {
        assert_eq!(
            outbox
                .by_message_id(&tenant, id)
                .await
                .unwrap()
                .map(|record| record.status),
            Some(sent(MessageAck::Read)),
            "{id}: the ack was applied, before or after finish"
        );
    }
    assert_eq!(
        outbox.rows(&tenant, "supervisor_outbox_early_acks").await,
        0,
        "every early mark was folded in"
    );
}

#[tokio::test]
async fn rows_are_visible_in_their_tenant_scope_only() {
    let outbox = scratch_outbox().await;
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    outbox.ensure_tenant(&beta).await;
    outbox.begin(record(&acme, "k1", "hi", 0)).await.unwrap();
    assert!(
        !outbox
            .advance_ack(&acme, "m-early", MessageAck::Read, at(1))
            .await
            .unwrap()
    );
    for table in ["supervisor_outbox", "supervisor_outbox_early_acks"] {
        assert_eq!(outbox.rows(&acme, table).await, 1, "acme's {table}");
        assert_eq!(
            outbox.rows(&beta, table).await,
            0,
            "beta sees none of {table}"
        );
    }
    assert_eq!(outbox.get(&beta, "k1").await.unwrap(), None);
}

#[tokio::test]
async fn statuses_and_acks_are_stored_as_columns() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    for key in ["k1", "k2", "k3"] {
        outbox.begin(record(&tenant, key, "hi", 0)).await.unwrap();
    }
    assert_eq!(
        outbox.stored_status(&tenant, "k1").await,
        ("pending".to_owned(), None, None, None)
    );
    outbox
        .finish(
            &tenant,
            "k1",
            sent(MessageAck::Server),
            Some("m1".to_owned()),
            at(1),
        )
        .await
        .unwrap();
    assert!(
        outbox
            .advance_ack(&tenant, "m1", MessageAck::Read, at(2))
            .await
            .unwrap()
    );
    assert_eq!(
        outbox.stored_status(&tenant, "k1").await,
        ("sent".to_owned(), None, Some("m1".to_owned()), Some(3)),
        "the ack as its wire number"
    );
    let refused = OutboxStatus::Failed {
        reason: "http_status".to_owned(),
    };
    outbox
        .finish(&tenant, "k2", refused, None, at(1))
        .await
        .unwrap();
    assert_eq!(
        outbox.stored_status(&tenant, "k2").await,
        (
            "failed".to_owned(),
            Some("http_status".to_owned()),
            None,
            None
        )
    );
    outbox
        .finish(&tenant, "k3", OutboxStatus::Unknown, None, at(1))
        .await
        .unwrap();
    assert_eq!(
        outbox.stored_status(&tenant, "k3").await,
        ("unknown".to_owned(), None, None, None)
    );
}

#[tokio::test]
async fn one_message_id_belongs_to_one_record() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    for key in ["k1", "k2"] {
        outbox.begin(record(&tenant, key, "hi", 0)).await.unwrap();
    }
    outbox
        .finish(
            &tenant,
            "k1",
            sent(MessageAck::Server),
            Some("m1".to_owned()),
            at(1),
        )
        .await
        .unwrap();
    match outbox
        .finish(
            &tenant,
            "k2",
            sent(MessageAck::Server),
            Some("m1".to_owned()),
            at(2),
        )
        .await
    {
        Err(OutboxError::Corrupt { .. }) => {}
        other => panic!("a message id another record holds is refused, got {other:?}"),
    }
    assert_eq!(
        outbox
            .get(&tenant, "k2")
            .await
            .unwrap()
            .map(|record| record.status),
        Some(OutboxStatus::Pending),
        "nothing changed"
    );
    assert_eq!(
        outbox
            .by_message_id(&tenant, "m1")
            .await
            .unwrap()
            .map(|record| record.key),
        Some("k1".to_owned())
    );
}

#[tokio::test]
async fn prune_empties_both_tables() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    outbox.begin(record(&tenant, "old", "hi", 0)).await.unwrap();
    outbox
        .begin(record(&tenant, "new", "hi", 20))
        .await
        .unwrap();
    outbox
        .advance_ack(&tenant, "m-old", MessageAck::Read, at(1))
        .await
        .unwrap();
    outbox
        .advance_ack(&tenant, "m-new", MessageAck::Read, at(20))
        .await
        .unwrap();
    assert_eq!(outbox.prune(at(10)).await.unwrap(), 1);
    assert_eq!(outbox.rows(&tenant, "supervisor_outbox").await, 1);
    assert_eq!(
        outbox.rows(&tenant, "supervisor_outbox_early_acks").await,
        1,
        "the old mark went, the new one stays"
    );
}

#[tokio::test]
async fn expired_marks_leave_the_table_with_the_lifetime_given() {
    let scratch = scratch_outbox().await;
    let outbox = scratch
        .another_outbox()
        .await
        .with_early_ack_ttl(Duration::from_secs(60));
    assert_eq!(outbox.early_ack_ttl(), Duration::from_secs(60));
    let tenant = TenantId::generate();
    scratch.ensure_tenant(&tenant).await;
    outbox.begin(record(&tenant, "k1", "hi", 0)).await.unwrap();
    for (id, secs) in [("m1", 0), ("phone-old", 0), ("phone-new", 30)] {
        assert!(
            !outbox
                .advance_ack(&tenant, id, MessageAck::Read, at(secs))
                .await
                .unwrap()
        );
    }
    let settled = outbox
        .finish(
            &tenant,
            "k1",
            sent(MessageAck::Server),
            Some("m1".to_owned()),
            at(60),
        )
        .await
        .unwrap();
    assert_eq!(
        settled.status,
        sent(MessageAck::Server),
        "a mark a minute old is expired with a one-minute lifetime"
    );
    assert_eq!(
        scratch.rows(&tenant, "supervisor_outbox_early_acks").await,
        2,
        "finish took the expired mark all the same"
    );
    assert_eq!(outbox.prune_marks(at(60)).await.unwrap(), 1);
    assert_eq!(
        scratch.rows(&tenant, "supervisor_outbox_early_acks").await,
        1,
        "the expired mark went, the one seen at 30 s stays"
    );
    assert_eq!(outbox.prune_marks(at(90)).await.unwrap(), 1);
    assert_eq!(
        scratch.rows(&tenant, "supervisor_outbox_early_acks").await,
        0
    );
}

#[tokio::test]
async fn erasing_a_tenant_takes_its_outbox_with_it() {
    let outbox = scratch_outbox().await;
    let tenant = TenantId::generate();
    outbox.begin(record(&tenant, "k1", "hi", 0)).await.unwrap();
    outbox
        .advance_ack(&tenant, "m-early", MessageAck::Read, at(1))
        .await
        .unwrap();
    let existed = outbox
        .pg
        .admin
        .purge_tenant(&tenant)
        .await
        .unwrap_or_else(|err| panic!("purging {tenant}: {err}"));
    assert!(existed, "the tenant existed");
    for table in ["supervisor_outbox", "supervisor_outbox_early_acks"] {
        assert_eq!(outbox.rows(&tenant, table).await, 0, "{table} cascaded");
    }
}
