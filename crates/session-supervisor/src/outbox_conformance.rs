//! The conformance suite every [`Outbox`] backend must pass (the contract is in the trait's
//! documentation, [`MemoryOutbox`] its reference behaviour).
//!
//! Each check takes an outbox, uses fresh random tenant ids, and panics with a message naming
//! the broken rule. Only behaviour observable through the trait is checked. The prune check
//! counts what [`Outbox::prune`] removed, so give each check an outbox of its own (a scratch
//! database for a database backend), as [`outbox_conformance!`](macro@crate::outbox_conformance)
//! does:
//!
//! ```
//! mod in_memory {
//!     session_supervisor::outbox_conformance!(|| async {
//!         std::sync::Arc::new(session_supervisor::MemoryOutbox::new())
//!             as std::sync::Arc<dyn session_supervisor::Outbox>
//!     });
//! }
//! ```
//!
//! A backend whose rows refer to a tenant directory creates a tenant when an outbox call first
//! names it (a wrapper in the test, as `tests/pg_outbox.rs` does).
//!
//! Records are created, settled and acked at whole seconds around [`base_time`] (November
//! 2023): the checks never depend on the present, no backend may compare the times with its
//! own clock, and a backend storing times to the microsecond reads them back unchanged.
//!
//! Early ack marks are checked with the default lifetime
//! ([`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`], [`MARK_TTL_SECS`]): hand the suite outboxes built
//! without `with_early_ack_ttl`.

use std::time::SystemTime;

use futures::future::join_all;
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

use crate::outbox::{Begin, MemoryOutbox, Outbox, OutboxError, OutboxRecord, OutboxStatus};

/// Generates one `#[tokio::test]` per conformance check, a fresh outbox per check.
///
/// `outbox_conformance!(make)`: `make`, called with no arguments, returns a future of an
/// `Arc<dyn Outbox>`.
#[macro_export]
macro_rules! outbox_conformance {
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let make = $make;
                let outbox = make().await;
                $crate::outbox_conformance::$check(&*outbox).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::outbox_conformance!(@tests $make;
            begin_twice_answers_the_existing_record, keys_are_per_tenant,
            concurrent_begins_start_once, finish_settles_once_and_by_message_id_finds_it,
            early_acks_are_applied_forward_only, advance_ack_follows_supersedes,
            early_marks_follow_supersedes, advance_ack_moves_only_sent_records,
            abandon_frees_only_pending_keys, prune_removes_old_records_and_marks,
            early_marks_expire);
    };
}

/// The time the checks' records are created around (2023-11-14T22:13:20Z), and that plus
/// `secs` seconds: the inbox suite's, one definition.
pub use crate::inbox_conformance::{at, base_time};

/// The chat every check sends to.
pub const CHAT: &str = "5511999999999@c.us";

/// The early ack mark lifetime the checks assume, in seconds: the default,
/// [`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`].
pub const MARK_TTL_SECS: u64 = MemoryOutbox::DEFAULT_EARLY_ACK_TTL.as_secs();

/// A `Pending` record of `tenant` under `key`: a send of `text` from chip `sales-1` to
/// [`CHAT`], created at [`at`]`(secs)`.
pub fn record(tenant: &TenantId, key: &str, text: &str, secs: u64) -> OutboxRecord {
    OutboxRecord::pending(
        tenant.clone(),
        key,
        ChipId::new("sales-1").unwrap_or_else(|err| panic!("a valid chip id: {err}")),
        CHAT,
        text,
        at(secs),
    )
}

/// `Sent` with `ack`.
fn sent(ack: MessageAck) -> OutboxStatus {
    OutboxStatus::Sent { ack }
}

/// The acks the pairwise checks combine: every named one, an unknown failure and two states
/// newer than this crate.
const LEVELS: [MessageAck; 9] = [
    MessageAck::Other(-2),
    MessageAck::Error,
    MessageAck::Pending,
    MessageAck::Server,
    MessageAck::Device,
    MessageAck::Read,
    MessageAck::Played,
    MessageAck::Other(5),
    MessageAck::Other(9),
];

/// Begins `record`; panics naming `what` when the outbox fails.
async fn begin(outbox: &dyn Outbox, record: OutboxRecord, what: &str) -> Begin {
    outbox
        .begin(record)
        .await
        .unwrap_or_else(|err| panic!("{what}: begin failed: {err}"))
}

/// Begins `record`, which must start; answers the stored record.
async fn start(outbox: &dyn Outbox, record: OutboxRecord, what: &str) -> OutboxRecord {
    match begin(outbox, record, what).await {
        Begin::Started(started) => started,
        Begin::Existing(existing) => {
            panic!("{what}: a key no record has must start, found {existing:?}")
        }
    }
}

/// Begins `record`, which must find an existing one; answers it.
async fn existing(outbox: &dyn Outbox, record: OutboxRecord, what: &str) -> OutboxRecord {
    match begin(outbox, record, what).await {
        Begin::Existing(existing) => existing,
        Begin::Started(started) => {
            panic!("{what}: a key with a record must not start again, started {started:?}")
        }
    }
}

/// The record of `key`; panics when the outbox fails.
async fn get(outbox: &dyn Outbox, tenant: &TenantId, key: &str) -> Option<OutboxRecord> {
    outbox
        .get(tenant, key)
        .await
        .unwrap_or_else(|err| panic!("get failed: {err}"))
}

/// Finishes `key`; panics naming the call when the outbox fails.
async fn finish(
    outbox: &dyn Outbox,
    tenant: &TenantId,
    key: &str,
    status: OutboxStatus,
    message_id: Option<&str>,
    secs: u64,
) -> OutboxRecord {
    outbox
        .finish(
            tenant,
            key,
            status.clone(),
            message_id.map(str::to_owned),
            at(secs),
        )
        .await
        .unwrap_or_else(|err| panic!("finish({status}, {message_id:?}) failed: {err}"))
}

/// The record holding `message_id`; panics when the outbox fails.
async fn by_message_id(
    outbox: &dyn Outbox,
    tenant: &TenantId,
    message_id: &str,
) -> Option<OutboxRecord> {
    outbox
        .by_message_id(tenant, message_id)
        .await
        .unwrap_or_else(|err| panic!("by_message_id({message_id}) failed: {err}"))
}

/// Advances the ack of `message_id`; panics when the outbox fails.
async fn advance(
    outbox: &dyn Outbox,
    tenant: &TenantId,
    message_id: &str,
    ack: MessageAck,
    secs: u64,
) -> bool {
    outbox
        .advance_ack(tenant, message_id, ack, at(secs))
        .await
        .unwrap_or_else(|err| panic!("advance_ack({message_id}, {ack:?}) failed: {err}"))
}

/// Abandons `key`; panics when the outbox fails.
async fn abandon(outbox: &dyn Outbox, tenant: &TenantId, key: &str) -> bool {
    outbox
        .abandon(tenant, key)
        .await
        .unwrap_or_else(|err| panic!("abandon failed: {err}"))
}

/// Prunes; panics when the outbox fails.
async fn prune(outbox: &dyn Outbox, older_than: SystemTime) -> u64 {
    outbox
        .prune(older_than)
        .await
        .unwrap_or_else(|err| panic!("prune failed: {err}"))
}

/// Prunes the expired early ack marks; panics when the outbox fails.
async fn prune_marks(outbox: &dyn Outbox, now: SystemTime) -> u64 {
    outbox
        .prune_marks(now)
        .await
        .unwrap_or_else(|err| panic!("prune_marks failed: {err}"))
}

/// A key begins once: the first `begin` stores the record as given (`Pending`, no message id)
/// and answers it; every later one answers the stored record (as it stands), whatever it
/// carries, and stores nothing.
pub async fn begin_twice_answers_the_existing_record(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    let first = record(&tenant, "order-1", "hello", 0);
    let started = start(outbox, first.clone(), "first").await;
    assert_eq!(started, first, "the record is stored as given");
    assert_eq!(
        get(outbox, &tenant, "order-1").await,
        Some(first.clone()),
        "get answers the stored record"
    );

    let retry = record(&tenant, "order-1", "hello", 5);
    let found = existing(outbox, retry.clone(), "retry").await;
    assert_eq!(found, first, "the stored record, not the retry's");
    assert!(found.same_request(&retry), "a retry is the same request");

    let other = record(&tenant, "order-1", "another text", 6);
    let found = existing(outbox, other.clone(), "another request under the key").await;
    assert_eq!(found, first, "nothing of another request is stored");
    assert!(
        !found.same_request(&other),
        "the stored record tells another text apart"
    );

    let settled = finish(
        outbox,
        &tenant,
        "order-1",
        sent(MessageAck::Server),
        Some("m-1"),
        7,
    )
    .await;
    assert_eq!(
        existing(outbox, retry, "retry after the send").await,
        settled,
        "Existing answers the record as it stands"
    );

    let mut with_status = record(&tenant, "order-2", "hi", 8);
    with_status.status = sent(MessageAck::Read);
    with_status.message_id = Some("m-2".to_owned());
    let started = start(outbox, with_status, "a record carrying a status").await;
    assert_eq!(
        started.status,
        OutboxStatus::Pending,
        "begin stores Pending"
    );
    assert_eq!(started.message_id, None, "begin stores no message id");
    assert_eq!(
        by_message_id(outbox, &tenant, "m-2").await,
        None,
        "a message id handed to begin is not stored"
    );
}

/// One tenant's keys, message ids and early acks are its own.
pub async fn keys_are_per_tenant(outbox: &dyn Outbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    start(outbox, record(&acme, "k", "hi", 0), "acme").await;
    let beta_record = start(
        outbox,
        record(&beta, "k", "another text", 0),
        "beta, the same key",
    )
    .await;

    finish(outbox, &acme, "k", sent(MessageAck::Server), Some("m1"), 1).await;
    assert_eq!(
        get(outbox, &beta, "k").await,
        Some(beta_record),
        "settling acme's record leaves beta's as it was"
    );
    assert_eq!(
        by_message_id(outbox, &beta, "m1").await,
        None,
        "acme's message id is not beta's"
    );

    assert!(
        !advance(outbox, &beta, "m1", MessageAck::Read, 2).await,
        "beta holds no record of m1: the ack is beta's early mark"
    );
    assert_eq!(
        get(outbox, &acme, "k").await.map(|record| record.status),
        Some(sent(MessageAck::Server)),
        "another tenant's ack does not move acme's record"
    );
    let beta_sent = finish(outbox, &beta, "k", sent(MessageAck::Server), Some("m1"), 3).await;
    assert_eq!(
        beta_sent.status,
        sent(MessageAck::Read),
        "beta's early mark is folded into beta's record (the same message id in another tenant)"
    );
    assert_eq!(
        by_message_id(outbox, &acme, "m1").await.map(|r| r.status),
        Some(sent(MessageAck::Server)),
        "and acme's stays"
    );

    start(outbox, record(&acme, "k2", "hi", 4), "acme k2").await;
    start(outbox, record(&beta, "k2", "hi", 4), "beta k2").await;
    assert!(abandon(outbox, &beta, "k2").await);
    assert!(
        get(outbox, &acme, "k2").await.is_some(),
        "abandoning beta's key leaves acme's record"
    );
}

/// Any number of racing `begin`s of one key: exactly one starts, the others answer its record.
pub async fn concurrent_begins_start_once(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    let racing = (0..8).map(|n| outbox.begin(record(&tenant, "k", "hi", n)));
    let outcomes: Vec<Begin> = join_all(racing)
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|err| panic!("concurrent begin failed: {err}")))
        .collect();
    let started: Vec<&OutboxRecord> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Begin::Started(started) => Some(started),
            Begin::Existing(_) => None,
        })
        .collect();
    assert_eq!(
        started.len(),
        1,
        "racing begins of one key: exactly one starts"
    );
    for outcome in &outcomes {
        if let Begin::Existing(existing) = outcome {
            assert_eq!(existing, started[0], "the others answer the started record");
        }
    }
    assert_eq!(
        get(outbox, &tenant, "k").await.as_ref(),
        Some(started[0]),
        "the started record is stored"
    );
}

/// `finish` settles a `Pending` record once (status, message id, updated time), which
/// `by_message_id` then finds; a settled record is never settled again, a `Pending` status
/// changes nothing, and a key without a record is [`OutboxError::NotFound`].
pub async fn finish_settles_once_and_by_message_id_finds_it(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    let mut expected = start(outbox, record(&tenant, "k1", "hi", 0), "k1").await;
    let settled = finish(
        outbox,
        &tenant,
        "k1",
        sent(MessageAck::Server),
        Some("m1"),
        1,
    )
    .await;
    expected.status = sent(MessageAck::Server);
    expected.message_id = Some("m1".to_owned());
    expected.updated_at = at(1);
    assert_eq!(
        settled, expected,
        "status, message id and updated time change; the rest stays"
    );
    assert_eq!(get(outbox, &tenant, "k1").await, Some(settled.clone()));
    assert_eq!(
        by_message_id(outbox, &tenant, "m1").await,
        Some(settled.clone()),
        "the record holding m1"
    );
    assert_eq!(by_message_id(outbox, &tenant, "m2").await, None);

    assert_eq!(
        finish(outbox, &tenant, "k1", OutboxStatus::Unknown, None, 2).await,
        settled,
        "a settled record is never settled again"
    );
    assert_eq!(
        finish(outbox, &tenant, "k1", sent(MessageAck::Read), Some("m9"), 2).await,
        settled,
        "not with another message id either"
    );
    assert_eq!(by_message_id(outbox, &tenant, "m9").await, None);

    let pending = start(outbox, record(&tenant, "k2", "hi", 3), "k2").await;
    assert_eq!(
        finish(outbox, &tenant, "k2", OutboxStatus::Pending, None, 4).await,
        pending,
        "finishing with Pending changes nothing"
    );
    let unknown = finish(outbox, &tenant, "k2", OutboxStatus::Unknown, None, 5).await;
    assert_eq!(
        (
            unknown.status.clone(),
            unknown.message_id.clone(),
            unknown.updated_at
        ),
        (OutboxStatus::Unknown, None, at(5))
    );
    assert_eq!(get(outbox, &tenant, "k2").await, Some(unknown));

    start(outbox, record(&tenant, "k3", "hi", 6), "k3").await;
    let refused = OutboxStatus::Failed {
        reason: "http_status".to_owned(),
    };
    let failed = finish(outbox, &tenant, "k3", refused.clone(), None, 7).await;
    assert_eq!(failed.status, refused, "the failure reason is kept");
    assert_eq!(get(outbox, &tenant, "k3").await, Some(failed));

    match outbox
        .finish(
            &tenant,
            "never-begun",
            sent(MessageAck::Server),
            Some("m4".to_owned()),
            at(8),
        )
        .await
    {
        Err(OutboxError::NotFound) => {}
        other => panic!("finishing a key without a record is NotFound, got {other:?}"),
    }
}

/// An ack for a message id no record holds yet is kept (answering `false`) and folded into the
/// record by `finish`, forward only: the highest of several marks, never a lower one; after
/// that, acks move the record forward only.
pub async fn early_acks_are_applied_forward_only(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    start(outbox, record(&tenant, "k1", "hi", 0), "k1").await;
    assert!(
        !advance(outbox, &tenant, "m1", MessageAck::Device, 1).await,
        "no record holds m1 yet: nothing moved"
    );
    let settled = finish(
        outbox,
        &tenant,
        "k1",
        sent(MessageAck::Server),
        Some("m1"),
        2,
    )
    .await;
    assert_eq!(
        settled.status,
        sent(MessageAck::Device),
        "the early Device ack supersedes sendText's Server"
    );
    assert_eq!(settled.updated_at, at(2));
    assert!(
        !advance(outbox, &tenant, "m1", MessageAck::Server, 3).await,
        "a regression"
    );
    assert!(
        advance(outbox, &tenant, "m1", MessageAck::Read, 4).await,
        "forward"
    );
    let read = by_message_id(outbox, &tenant, "m1").await;
    assert_eq!(
        read.map(|record| (record.status, record.updated_at)),
        Some((sent(MessageAck::Read), at(4)))
    );

    start(outbox, record(&tenant, "k2", "hi", 5), "k2").await;
    assert!(!advance(outbox, &tenant, "m2", MessageAck::Error, 6).await);
    assert_eq!(
        finish(
            outbox,
            &tenant,
            "k2",
            sent(MessageAck::Server),
            Some("m2"),
            7
        )
        .await
        .status,
        sent(MessageAck::Server),
        "a late Error mark does not lower a Server ack"
    );

    start(outbox, record(&tenant, "k3", "hi", 8), "k3").await;
    for ack in [MessageAck::Device, MessageAck::Read, MessageAck::Server] {
        assert!(!advance(outbox, &tenant, "m3", ack, 9).await);
    }
    assert_eq!(
        finish(
            outbox,
            &tenant,
            "k3",
            sent(MessageAck::Server),
            Some("m3"),
            10
        )
        .await
        .status,
        sent(MessageAck::Read),
        "the highest mark is kept (Read), not the last (Server)"
    );

    start(outbox, record(&tenant, "k4", "hi", 11), "k4").await;
    assert_eq!(
        finish(
            outbox,
            &tenant,
            "k4",
            sent(MessageAck::Server),
            Some("m4"),
            12
        )
        .await
        .status,
        sent(MessageAck::Server),
        "another message's marks are not folded in"
    );
}

/// A `Sent` record's ack moves from every level to every other exactly when
/// [`MessageAck::supersedes`] says so (and its updated time with it).
pub async fn advance_ack_follows_supersedes(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    for (i, old) in LEVELS.iter().enumerate() {
        for (j, new) in LEVELS.iter().enumerate() {
            let key = format!("pair-{i}-{j}");
            let message_id = format!("m-{i}-{j}");
            start(outbox, record(&tenant, &key, "hi", 0), &key).await;
            finish(outbox, &tenant, &key, sent(*old), Some(&message_id), 1).await;
            let moved = advance(outbox, &tenant, &message_id, *new, 2).await;
            assert_eq!(
                moved,
                MessageAck::supersedes(*old, *new),
                "{new:?} after {old:?} follows MessageAck::supersedes"
            );
            let (ack, updated) = if moved { (*new, 2) } else { (*old, 1) };
            assert_eq!(
                by_message_id(outbox, &tenant, &message_id)
                    .await
                    .map(|record| (record.status, record.updated_at)),
                Some((sent(ack), at(updated))),
                "{new:?} after {old:?}: the stored ack and updated time"
            );
        }
    }
}

/// Early marks move forward only too, along [`MessageAck::supersedes`]: two acks before
/// `finish`, from every level to every other, leave the higher one, which `finish` folds into a
/// `Sent { ack: Pending }` when it supersedes `Pending`.
pub async fn early_marks_follow_supersedes(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    for (i, old) in LEVELS.iter().enumerate() {
        for (j, new) in LEVELS.iter().enumerate() {
            let key = format!("early-{i}-{j}");
            let message_id = format!("e-{i}-{j}");
            assert!(!advance(outbox, &tenant, &message_id, *old, 1).await);
            assert!(
                !advance(outbox, &tenant, &message_id, *new, 2).await,
                "an early ack never moves a record"
            );
            let mark = if MessageAck::supersedes(*old, *new) {
                *new
            } else {
                *old
            };
            let expected = if MessageAck::supersedes(MessageAck::Pending, mark) {
                mark
            } else {
                MessageAck::Pending
            };
            start(outbox, record(&tenant, &key, "hi", 3), &key).await;
            let settled = finish(
                outbox,
                &tenant,
                &key,
                sent(MessageAck::Pending),
                Some(&message_id),
                4,
            )
            .await;
            assert_eq!(
                settled.status,
                sent(expected),
                "marks {old:?} then {new:?}, folded into Pending"
            );
        }
    }
}

/// Acks move `Sent` records only: a record settled `Unknown` or `Failed` with a message id
/// keeps its status (and such an ack is no early mark for a later record either).
pub async fn advance_ack_moves_only_sent_records(outbox: &dyn Outbox) {
    let tenant = TenantId::generate();
    start(outbox, record(&tenant, "k1", "hi", 0), "k1").await;
    let unknown = finish(outbox, &tenant, "k1", OutboxStatus::Unknown, Some("m1"), 1).await;
    assert!(
        !advance(outbox, &tenant, "m1", MessageAck::Read, 2).await,
        "an Unknown record does not move"
    );
    assert_eq!(by_message_id(outbox, &tenant, "m1").await, Some(unknown));

    start(outbox, record(&tenant, "k2", "hi", 3), "k2").await;
    let refused = OutboxStatus::Failed {
        reason: "http_status".to_owned(),
    };
    let failed = finish(outbox, &tenant, "k2", refused, Some("m2"), 4).await;
    assert!(
        !advance(outbox, &tenant, "m2", MessageAck::Server, 5).await,
        "a Failed record does not move"
    );
    assert_eq!(by_message_id(outbox, &tenant, "m2").await, Some(failed));
}

/// `abandon` removes a `Pending` record (the key may be begun again) and nothing else.
pub async fn abandon_frees_only_pending_keys(outbox: &dyn Outbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    start(outbox, record(&acme, "k1", "hi", 0), "k1").await;
    assert!(abandon(outbox, &acme, "k1").await, "a pending record goes");
    assert_eq!(get(outbox, &acme, "k1").await, None);
    assert!(
        !abandon(outbox, &acme, "k1").await,
        "no record: nothing to remove"
    );
    let again = record(&acme, "k1", "another text", 1);
    assert_eq!(
        start(outbox, again.clone(), "k1 again").await,
        again,
        "an abandoned key begins again, with the new request"
    );

    finish(outbox, &acme, "k1", OutboxStatus::Unknown, None, 2).await;
    assert!(
        !abandon(outbox, &acme, "k1").await,
        "an Unknown record stays"
    );
    start(outbox, record(&acme, "k2", "hi", 3), "k2").await;
    finish(outbox, &acme, "k2", sent(MessageAck::Server), Some("m2"), 4).await;
    assert!(!abandon(outbox, &acme, "k2").await, "a Sent record stays");
    start(outbox, record(&acme, "k3", "hi", 5), "k3").await;
    let refused = OutboxStatus::Failed {
        reason: "http_status".to_owned(),
    };
    finish(outbox, &acme, "k3", refused, None, 6).await;
    assert!(!abandon(outbox, &acme, "k3").await, "a Failed record stays");
    for key in ["k1", "k2", "k3"] {
        assert!(
            get(outbox, &acme, key).await.is_some(),
            "{key}: a settled record is kept"
        );
    }
    assert!(by_message_id(outbox, &acme, "m2").await.is_some());

    assert!(!abandon(outbox, &acme, "never-begun").await);
    start(outbox, record(&beta, "k4", "hi", 7), "beta's k4").await;
    assert!(
        !abandon(outbox, &acme, "k4").await,
        "acme cannot abandon beta's key"
    );
    assert!(get(outbox, &beta, "k4").await.is_some());
}

/// `prune` removes the records created before the cutoff (strictly), of every tenant and
/// whatever their status, freeing their keys and message ids, and the early ack marks that last
/// moved before it; it keeps the others.
pub async fn prune_removes_old_records_and_marks(outbox: &dyn Outbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    start(outbox, record(&acme, "old-pending", "hi", 0), "old pending").await;
    start(outbox, record(&acme, "old-sent", "hi", 1), "old sent").await;
    finish(
        outbox,
        &acme,
        "old-sent",
        sent(MessageAck::Server),
        Some("m-old"),
        15,
    )
    .await;
    start(outbox, record(&beta, "old", "hi", 2), "beta's old").await;
    start(outbox, record(&acme, "cut", "hi", 10), "at the cutoff").await;
    start(outbox, record(&acme, "new", "hi", 20), "new").await;
    assert!(!advance(outbox, &acme, "early-old", MessageAck::Read, 3).await);
    assert!(!advance(outbox, &acme, "early-new", MessageAck::Read, 20).await);
    assert!(!advance(outbox, &acme, "early-moved", MessageAck::Server, 4).await);
    assert!(!advance(outbox, &acme, "early-moved", MessageAck::Device, 12).await);

    assert_eq!(
        prune(outbox, at(10)).await,
        3,
        "the records created before the cutoff, of every tenant, whatever their status"
    );
    assert_eq!(
        prune(outbox, at(10)).await,
        0,
        "pruning again removes nothing"
    );

    assert_eq!(get(outbox, &acme, "old-pending").await, None);
    assert_eq!(
        get(outbox, &acme, "old-sent").await,
        None,
        "created before the cutoff (whenever it was settled)"
    );
    assert_eq!(by_message_id(outbox, &acme, "m-old").await, None);
    assert_eq!(
        get(outbox, &beta, "old").await,
        None,
        "every tenant is pruned"
    );
    assert!(
        get(outbox, &acme, "cut").await.is_some(),
        "a record created at the cutoff stays"
    );
    assert!(get(outbox, &acme, "new").await.is_some());
    start(
        outbox,
        record(&acme, "old-sent", "hi", 30),
        "a pruned key again",
    )
    .await;

    for (key, message_id, kept) in [
        ("k-early-old", "early-old", MessageAck::Server),
        ("k-early-new", "early-new", MessageAck::Read),
        ("k-early-moved", "early-moved", MessageAck::Device),
    ] {
        start(outbox, record(&acme, key, "hi", 30), key).await;
        let settled = finish(
            outbox,
            &acme,
            key,
            sent(MessageAck::Server),
            Some(message_id),
            31,
        )
        .await;
        assert_eq!(
            settled.status,
            sent(kept),
            "{message_id}: a mark last moved before the cutoff is gone, a later one stays"
        );
    }
}

/// An early ack mark lives [`MARK_TTL_SECS`] from its last move: `finish` folds in a mark
/// younger than that and not one as old or older (whose ack is not applied to a send recorded
/// that late); an ack after a mark expired starts a new mark (the expired level is forgotten);
/// `prune_marks(now)` removes the expired marks of every tenant, only those, counting them.
pub async fn early_marks_expire(outbox: &dyn Outbox) {
    let ttl = MARK_TTL_SECS;
    let acme = TenantId::generate();
    let beta = TenantId::generate();

    start(outbox, record(&acme, "fresh", "hi", 0), "fresh").await;
    assert!(!advance(outbox, &acme, "m-fresh", MessageAck::Device, 1).await);
    assert_eq!(
        finish(
            outbox,
            &acme,
            "fresh",
            sent(MessageAck::Server),
            Some("m-fresh"),
            ttl,
        )
        .await
        .status,
        sent(MessageAck::Device),
        "a mark one second short of its lifetime is folded in"
    );

    start(outbox, record(&acme, "late", "hi", 0), "late").await;
    assert!(!advance(outbox, &acme, "m-late", MessageAck::Read, 2).await);
    assert_eq!(
        finish(
            outbox,
            &acme,
            "late",
            sent(MessageAck::Server),
            Some("m-late"),
            2 + ttl,
        )
        .await
        .status,
        sent(MessageAck::Server),
        "an expired mark is not applied to a send recorded later"
    );

    assert!(!advance(outbox, &acme, "m-again", MessageAck::Read, 3).await);
    assert!(
        !advance(outbox, &acme, "m-again", MessageAck::Server, 3 + ttl).await,
        "an ack after the mark expired"
    );
    start(outbox, record(&acme, "again", "hi", 3 + ttl), "again").await;
    assert_eq!(
        finish(
            outbox,
            &acme,
            "again",
            sent(MessageAck::Pending),
            Some("m-again"),
            4 + ttl,
        )
        .await
        .status,
        sent(MessageAck::Server),
        "the later ack replaced the expired Read mark (a kept Read would show, an ignored \
         Server would leave Pending)"
    );

    // Every mark so far was taken by `finish`. Marks of two tenants, one moved late.
    let base = 10 * ttl;
    assert!(!advance(outbox, &acme, "p-old", MessageAck::Read, base).await);
    assert!(!advance(outbox, &beta, "p-old", MessageAck::Read, base + 1).await);
    assert!(!advance(outbox, &acme, "p-moved", MessageAck::Server, base).await);
    assert!(!advance(outbox, &acme, "p-moved", MessageAck::Device, base + 50).await);
    assert!(!advance(outbox, &acme, "p-new", MessageAck::Read, base + 100).await);
    let now = at(base + 1 + ttl);
    assert_eq!(
        prune_marks(outbox, base_time()).await,
        0,
        "nothing expired long before"
    );
    assert_eq!(
        prune_marks(outbox, now).await,
        2,
        "the marks last moved a lifetime or more before now, of every tenant"
    );
    assert_eq!(
        prune_marks(outbox, now).await,
        0,
        "pruning again removes nothing"
    );
    for (key, message_id, kept) in [
        ("k-moved", "p-moved", MessageAck::Device),
        ("k-new", "p-new", MessageAck::Read),
    ] {
        start(outbox, record(&acme, key, "hi", base + 1 + ttl), key).await;
        let settled = finish(
            outbox,
            &acme,
            key,
            sent(MessageAck::Server),
            Some(message_id),
            base + 1 + ttl,
        )
        .await;
        assert_eq!(
            settled.status,
            sent(kept),
            "{message_id}: a mark younger than its lifetime stays through prune_marks"
        );
    }
}
