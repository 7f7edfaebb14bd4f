//! The conformance suite every [`Inbox`] backend must pass (the contract is in the trait's
//! documentation).
//!
//! Each check takes an inbox, uses fresh random tenant ids, and panics with a message naming
//! the broken rule. Only behaviour observable through the trait is checked: that nothing of a
//! duplicate is stored shows as its other keys staying unseen. The prune checks count what
//! [`Inbox::prune`] removed, so give each check an inbox of its own (a scratch database for a
//! database backend), as [`inbox_conformance!`](macro@crate::inbox_conformance) does:
//!
//! ```
//! mod in_memory {
//!     session_supervisor::inbox_conformance!(|| async {
//!         std::sync::Arc::new(session_supervisor::MemoryInbox::new())
//!             as std::sync::Arc<dyn session_supervisor::Inbox>
//!     });
//! }
//! ```
//!
//! A backend whose rows refer to a tenant directory creates a tenant when an inbox call first
//! names it (a wrapper in the test, as `tests/pg_inbox.rs` does).
//!
//! Entries are received at fixed times around [`base_time`] (November 2023): the checks never
//! depend on the present, and no backend may compare `received_at` with its own clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

use crate::inbox::{Admission, Inbox, InboxEntry};

/// Generates one `#[tokio::test]` per conformance check, a fresh inbox per check.
///
/// `inbox_conformance!(make)`: `make`, called with no arguments, returns a future of an
/// `Arc<dyn Inbox>`.
#[macro_export]
macro_rules! inbox_conformance {
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let make = $make;
                let inbox = make().await;
                $crate::inbox_conformance::$check(&*inbox).await;
            }
        )*
    };
    ($make:expr) => {
        $crate::inbox_conformance!(@tests $make;
            a_retry_is_a_duplicate, another_delivery_of_a_message_is_a_duplicate,
            nothing_of_a_duplicate_is_stored, keys_are_per_tenant,
            entries_without_keys_are_always_new, repeated_keys_count_once,
            concurrent_identical_admits_make_one_new, acks_move_forward_only,
            acks_follow_the_total_order, acks_are_per_tenant_and_message,
            prune_forgets_old_keys_and_keeps_newer, prune_forgets_acks_no_entry_mentions);
    };
}

/// The time the checks' entries are received around: 2023-11-14T22:13:20Z.
pub fn base_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// [`base_time`] plus `secs` seconds.
pub fn at(secs: u64) -> SystemTime {
    base_time() + Duration::from_secs(secs)
}

/// An entry of `tenant` with `keys`, received at [`at`]`(secs)`, from chip `sales-1`, with a
/// small body.
pub fn entry(tenant: &TenantId, keys: &[&str], secs: u64) -> InboxEntry {
    InboxEntry {
        tenant: tenant.clone(),
        chip: ChipId::new("sales-1").unwrap_or_else(|err| panic!("a valid chip id: {err}")),
        keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        received_at: at(secs),
        body: br#"{"event":"message","payload":{"body":"hello"}}"#.to_vec(),
    }
}

/// Admits `entry`; panics naming `what` when the inbox fails.
async fn admit(inbox: &dyn Inbox, entry: InboxEntry, what: &str) -> Admission {
    inbox
        .admit(entry)
        .await
        .unwrap_or_else(|err| panic!("{what}: admit failed: {err}"))
}

/// Records an ack; panics naming `what` when the inbox fails.
async fn ack(inbox: &dyn Inbox, tenant: &TenantId, message_id: &str, level: MessageAck) -> bool {
    inbox
        .record_ack(tenant, message_id, level)
        .await
        .unwrap_or_else(|err| panic!("record_ack({message_id}, {level:?}) failed: {err}"))
}

/// Prunes; panics when the inbox fails.
async fn prune(inbox: &dyn Inbox, older_than: SystemTime) -> u64 {
    inbox
        .prune(older_than)
        .await
        .unwrap_or_else(|err| panic!("prune failed: {err}"))
}

/// A retry (the same keys) is a duplicate, a third time too.
pub async fn a_retry_is_a_duplicate(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let keys = ["event:evt_1", "message:m1"];
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 0), "first delivery").await,
        Admission::New,
        "a delivery none of whose keys was seen is new"
    );
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 1), "retry").await,
        Admission::Duplicate,
        "a retry carries the same keys: a duplicate"
    );
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 2), "second retry").await,
        Admission::Duplicate,
        "every later retry is a duplicate too"
    );
}

/// NOWEB's double delivery: another event id, the same message key, is a duplicate; so is the
/// same message as `message.any` (another event id again).
pub async fn another_delivery_of_a_message_is_a_duplicate(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:evt_1", "message:m1"], 0),
            "first"
        )
        .await,
        Admission::New
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:evt_2", "message:m1"], 0),
            "NOWEB's second delivery"
        )
        .await,
        Admission::Duplicate,
        "one seen key (the message id) makes a duplicate, whatever the event id"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["message:m1", "event:evt_3"], 1),
            "message.any"
        )
        .await,
        Admission::Duplicate,
        "the order of the keys does not matter"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:evt_4", "message:m2"], 1),
            "another message"
        )
        .await,
        Admission::New,
        "another message is new"
    );
}

/// A duplicate stores none of its keys: its own event id stays unseen.
pub async fn nothing_of_a_duplicate_is_stored(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    admit(
        inbox,
        entry(&tenant, &["event:e1", "message:m1"], 0),
        "first",
    )
    .await;
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:e2", "message:m1", "ack:m1:3"], 0),
            "duplicate"
        )
        .await,
        Admission::Duplicate
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:e2"], 1),
            "its event id alone"
        )
        .await,
        Admission::New,
        "a duplicate's other keys were not stored"
    );
    assert_eq!(
        admit(inbox, entry(&tenant, &["ack:m1:3"], 1), "its ack key alone").await,
        Admission::New,
        "a duplicate's other keys were not stored"
    );
}

/// One tenant's keys never make another tenant's delivery a duplicate.
pub async fn keys_are_per_tenant(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    let keys = ["event:evt_1", "message:m1"];
    assert_eq!(
        admit(inbox, entry(&acme, &keys, 0), "acme").await,
        Admission::New
    );
    assert_eq!(
        admit(inbox, entry(&beta, &keys, 0), "beta").await,
        Admission::New,
        "another tenant's ids are its own"
    );
    assert_eq!(
        admit(inbox, entry(&beta, &keys, 1), "beta again").await,
        Admission::Duplicate
    );
    assert_eq!(
        admit(inbox, entry(&acme, &keys, 1), "acme again").await,
        Admission::Duplicate
    );
}

/// An entry without keys is always new (an old server's `session.status`).
pub async fn entries_without_keys_are_always_new(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    for n in 0..3 {
        assert_eq!(
            admit(inbox, entry(&tenant, &[], n), "no keys").await,
            Admission::New,
            "an entry without keys is never a duplicate"
        );
    }
}

/// A key repeated within one entry is one key: the entry is new, its retry a duplicate.
pub async fn repeated_keys_count_once(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let keys = ["event:e1", "message:m1", "event:e1"];
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 0), "repeated key").await,
        Admission::New,
        "a key repeated in one entry does not make it a duplicate of itself"
    );
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 1), "retry").await,
        Admission::Duplicate
    );
}

/// Identical deliveries at the same time, and deliveries of one message (under other event ids,
/// keys in other orders) at the same time: exactly one is new.
pub async fn concurrent_identical_admits_make_one_new(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let identical = (0..8).map(|_| inbox.admit(entry(&tenant, &["event:e1", "message:m1"], 0)));
    let outcomes = join_all(identical).await;
    let new = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(admission) => *admission,
            Err(err) => panic!("concurrent admit failed: {err}"),
        })
        .filter(|admission| *admission == Admission::New)
        .count();
    assert_eq!(
        new, 1,
        "identical concurrent deliveries: exactly one is new"
    );

    let orders: [&[&str]; 4] = [
        &["event:e2", "message:m2", "ack:m2:3"],
        &["ack:m2:3", "message:m2", "event:e3"],
        &["message:m2", "event:e4"],
        &["ack:m2:3", "event:e5", "message:m2"],
    ];
    let overlapping = orders
        .iter()
        .cycle()
        .take(8)
        .map(|keys| inbox.admit(entry(&tenant, keys, 1)));
    let outcomes = join_all(overlapping).await;
    let new = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(admission) => *admission,
            Err(err) => panic!("concurrent overlapping admit failed: {err}"),
        })
        .filter(|admission| *admission == Admission::New)
        .count();
    assert_eq!(
        new, 1,
        "deliveries sharing a key (in any order) at the same time: exactly one is new"
    );
}

/// A message's first ack is recorded; later ones only when they move it forward.
pub async fn acks_move_forward_only(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    assert!(
        ack(inbox, &tenant, "m1", MessageAck::Read).await,
        "a first ack"
    );
    assert!(
        !ack(inbox, &tenant, "m1", MessageAck::Device).await,
        "3 then 2: a regression changes nothing"
    );
    assert!(
        !ack(inbox, &tenant, "m1", MessageAck::Read).await,
        "an equal ack is a repeat"
    );
    assert!(
        ack(inbox, &tenant, "m2", MessageAck::Device).await,
        "a first ack"
    );
    assert!(
        ack(inbox, &tenant, "m2", MessageAck::Read).await,
        "2 then 3 moves forward"
    );
    assert!(
        !ack(inbox, &tenant, "m2", MessageAck::Device).await,
        "the regression was not recorded over the higher mark"
    );
    assert!(
        ack(inbox, &tenant, "m2", MessageAck::Played).await,
        "3 then 4 moves forward"
    );
}

/// The order is [`MessageAck::supersedes`]'s: `Pending < Error < Server < Device < Read <
/// Played < Other(n > 4)`, failures below `-1` ranking as `Error`.
pub async fn acks_follow_the_total_order(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    // A failure after Pending is believed; Pending after it is not.
    assert!(ack(inbox, &tenant, "a", MessageAck::Pending).await);
    assert!(
        ack(inbox, &tenant, "a", MessageAck::Error).await,
        "Error after Pending"
    );
    assert!(
        !ack(inbox, &tenant, "a", MessageAck::Pending).await,
        "Pending after Error"
    );
    assert!(
        !ack(inbox, &tenant, "a", MessageAck::Other(-7)).await,
        "an unknown failure ranks as Error"
    );
    assert!(
        ack(inbox, &tenant, "a", MessageAck::Server).await,
        "a positive ack after Error"
    );
    assert!(
        !ack(inbox, &tenant, "a", MessageAck::Error).await,
        "a late Error once the server has it"
    );
    // Newer states rank above Played, by their number, up to the largest.
    assert!(ack(inbox, &tenant, "b", MessageAck::Played).await);
    assert!(
        ack(inbox, &tenant, "b", MessageAck::Other(7)).await,
        "Other(7) after Played"
    );
    assert!(
        !ack(inbox, &tenant, "b", MessageAck::Other(5)).await,
        "Other(5) after Other(7)"
    );
    assert!(
        ack(inbox, &tenant, "b", MessageAck::Other(i64::MAX)).await,
        "the largest number"
    );
    assert!(
        !ack(inbox, &tenant, "b", MessageAck::Other(i64::MAX - 1)).await,
        "just below the largest number"
    );
    // An unknown failure first, then Error (equal rank), then Pending (lower).
    assert!(ack(inbox, &tenant, "c", MessageAck::Other(i64::MIN)).await);
    assert!(
        !ack(inbox, &tenant, "c", MessageAck::Error).await,
        "Error ranks as any failure"
    );
    assert!(
        !ack(inbox, &tenant, "c", MessageAck::Pending).await,
        "Pending after a failure"
    );
    // Every pair, against supersedes itself.
    let levels = [
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
    for (i, old) in levels.iter().enumerate() {
        for (j, new) in levels.iter().enumerate() {
            let message = format!("pair-{i}-{j}");
            assert!(ack(inbox, &tenant, &message, *old).await, "a first ack");
            assert_eq!(
                ack(inbox, &tenant, &message, *new).await,
                MessageAck::supersedes(*old, *new),
                "{new:?} after {old:?} follows MessageAck::supersedes"
            );
        }
    }
}

/// Marks are per tenant and per message id (ids may contain `:`).
pub async fn acks_are_per_tenant_and_message(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    let id = "true_5511999999999@c.us_3EB0:ABC";
    assert!(ack(inbox, &acme, id, MessageAck::Read).await);
    assert!(
        ack(inbox, &beta, id, MessageAck::Server).await,
        "another tenant's message of the same id has its own mark"
    );
    assert!(
        ack(inbox, &beta, id, MessageAck::Device).await,
        "and moves on its own"
    );
    assert!(
        ack(
            inbox,
            &acme,
            "true_5511999999999@c.us_3EB0",
            MessageAck::Server
        )
        .await,
        "another message id (a prefix) has its own mark"
    );
    assert!(
        !ack(inbox, &acme, id, MessageAck::Device).await,
        "acme's mark is still Read"
    );
}

/// Prune removes the entries received before the cutoff (strictly) with their keys, and keeps
/// the others.
pub async fn prune_forgets_old_keys_and_keeps_newer(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    admit(
        inbox,
        entry(&acme, &["event:old", "message:m-old"], 0),
        "old",
    )
    .await;
    admit(inbox, entry(&beta, &["event:old"], 1), "beta's old").await;
    admit(inbox, entry(&acme, &[], 2), "old without keys").await;
    admit(inbox, entry(&acme, &["event:cut"], 10), "at the cutoff").await;
    admit(inbox, entry(&acme, &["event:new"], 20), "new").await;

    assert_eq!(
        prune(inbox, at(10)).await,
        3,
        "the entries received before the cutoff, of every tenant, with or without keys"
    );
    assert_eq!(
        prune(inbox, at(10)).await,
        0,
        "pruning again removes nothing"
    );

    assert_eq!(
        admit(inbox, entry(&acme, &["event:old"], 30), "old again").await,
        Admission::New,
        "a pruned key is forgotten"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&acme, &["message:m-old"], 30),
            "old message again"
        )
        .await,
        Admission::New,
        "every key of a pruned entry is forgotten"
    );
    assert_eq!(
        admit(inbox, entry(&beta, &["event:old"], 30), "beta's old again").await,
        Admission::New,
        "every tenant is pruned"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&acme, &["event:cut"], 30),
            "at the cutoff again"
        )
        .await,
        Admission::Duplicate,
        "an entry received at the cutoff stays"
    );
    assert_eq!(
        admit(inbox, entry(&acme, &["event:new"], 30), "new again").await,
        Admission::Duplicate,
        "a newer entry stays"
    );
}

/// Prune removes the ack marks of messages no remaining entry mentions (by an `ack:` key) and
/// keeps the others.
pub async fn prune_forgets_acks_no_entry_mentions(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    admit(
        inbox,
        entry(&tenant, &["event:e1", "ack:m:1:3"], 0),
        "old ack",
    )
    .await;
    admit(
        inbox,
        entry(&tenant, &["event:e2", "ack:n:3"], 20),
        "new ack",
    )
    .await;
    assert!(ack(inbox, &tenant, "m:1", MessageAck::Read).await);
    assert!(ack(inbox, &tenant, "n", MessageAck::Read).await);

    assert_eq!(prune(inbox, at(10)).await, 1);
    assert!(
        ack(inbox, &tenant, "m:1", MessageAck::Device).await,
        "no entry mentions m:1 any more: its mark is forgotten, any ack is a first one"
    );
    assert!(
        !ack(inbox, &tenant, "n", MessageAck::Device).await,
        "an entry still mentions n: its mark stays"
    );
}
