//! The conformance suite every [`Inbox`] backend must pass (the contract is in the trait's
//! documentation).
//!
//! Each check takes an inbox, uses fresh random tenant ids, and panics with a message naming
//! the broken rule. Only behaviour observable through the trait is checked: that nothing of a
//! duplicate is stored shows as its other keys staying unseen. The prune checks count what
//! [`Inbox::prune`] removed, and the claim checks see every tenant's entries, so give each
//! check an inbox of its own (a scratch database for a database backend), as
//! [`inbox_conformance!`](macro@crate::inbox_conformance) does:
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

use crate::inbox::{Admission, EntryId, Inbox, InboxEntry};

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
            prune_forgets_old_keys_and_keeps_newer, prune_forgets_acks_no_entry_mentions,
            a_duplicate_of_an_unapplied_entry_names_it,
            a_duplicate_is_unapplied_while_any_matching_entry_is,
            marks_are_idempotent_and_per_tenant, claims_take_the_oldest_unapplied_before_the_cutoff,
            a_claim_is_not_handed_out_again_within_its_grace, pruned_entries_are_not_claimed);
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

/// Admits `entry`, which must be new; answers its number.
async fn admit_new(inbox: &dyn Inbox, entry: InboxEntry, what: &str) -> EntryId {
    match admit(inbox, entry, what).await {
        Admission::New { entry } => entry,
        other => panic!("{what}: a delivery none of whose keys was seen is new, not {other:?}"),
    }
}

/// Admits `entry`, which must be new, and marks it applied (what the ingest does once it acted
/// on it); answers its number.
async fn admit_applied(inbox: &dyn Inbox, entry: InboxEntry, what: &str) -> EntryId {
    let tenant = entry.tenant.clone();
    let id = admit_new(inbox, entry, what).await;
    mark(inbox, &tenant, id, what).await;
    id
}

/// Marks `entry` of `tenant` applied; panics naming `what` when the inbox fails.
async fn mark(inbox: &dyn Inbox, tenant: &TenantId, entry: EntryId, what: &str) {
    inbox
        .mark_applied(tenant, entry)
        .await
        .unwrap_or_else(|err| panic!("{what}: mark_applied({entry}) failed: {err}"));
}

/// Claims; panics when the inbox fails.
async fn claim(
    inbox: &dyn Inbox,
    received_before: SystemTime,
    now: SystemTime,
    limit: usize,
) -> Vec<(EntryId, InboxEntry)> {
    inbox
        .claim_unapplied(received_before, now, limit)
        .await
        .unwrap_or_else(|err| panic!("claim_unapplied failed: {err}"))
}

/// The numbers of claimed entries, in the order claimed.
fn ids(claimed: &[(EntryId, InboxEntry)]) -> Vec<EntryId> {
    claimed.iter().map(|(id, _)| *id).collect()
}

/// Whether an admission is [`Admission::New`].
fn is_new(admission: &Admission) -> bool {
    matches!(admission, Admission::New { .. })
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
    admit_applied(inbox, entry(&tenant, &keys, 0), "first delivery").await;
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
    admit_applied(
        inbox,
        entry(&tenant, &["event:evt_1", "message:m1"], 0),
        "first",
    )
    .await;
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
    assert!(
        is_new(
            &admit(
                inbox,
                entry(&tenant, &["event:evt_4", "message:m2"], 1),
                "another message"
            )
            .await
        ),
        "another message is new"
    );
}

/// A duplicate stores none of its keys: its own event id stays unseen.
pub async fn nothing_of_a_duplicate_is_stored(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    admit_applied(
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
    assert!(
        is_new(
            &admit(
                inbox,
                entry(&tenant, &["event:e2"], 1),
                "its event id alone"
            )
            .await
        ),
        "a duplicate's other keys were not stored"
    );
    assert!(
        is_new(&admit(inbox, entry(&tenant, &["ack:m1:3"], 1), "its ack key alone").await),
        "a duplicate's other keys were not stored"
    );
}

/// One tenant's keys never make another tenant's delivery a duplicate.
pub async fn keys_are_per_tenant(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    let keys = ["event:evt_1", "message:m1"];
    admit_applied(inbox, entry(&acme, &keys, 0), "acme").await;
    // Another tenant's ids are its own: new.
    admit_applied(inbox, entry(&beta, &keys, 0), "beta").await;
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
    let mut seen: Vec<EntryId> = Vec::new();
    for n in 0..3 {
        let admission = admit(inbox, entry(&tenant, &[], n), "no keys").await;
        let Admission::New { entry: id } = admission else {
            panic!("an entry without keys is never a duplicate, not {admission:?}");
        };
        assert!(!seen.contains(&id), "each entry has a number of its own");
        seen.push(id);
    }
}

/// A key repeated within one entry is one key: the entry is new, its retry a duplicate.
pub async fn repeated_keys_count_once(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let keys = ["event:e1", "message:m1", "event:e1"];
    // A key repeated in one entry does not make it a duplicate of itself.
    admit_applied(inbox, entry(&tenant, &keys, 0), "repeated key").await;
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
        .filter(is_new)
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
        .filter(is_new)
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
    admit_applied(
        inbox,
        entry(&acme, &["event:old", "message:m-old"], 0),
        "old",
    )
    .await;
    admit_applied(inbox, entry(&beta, &["event:old"], 1), "beta's old").await;
    admit_applied(inbox, entry(&acme, &[], 2), "old without keys").await;
    admit_applied(inbox, entry(&acme, &["event:cut"], 10), "at the cutoff").await;
    admit_applied(inbox, entry(&acme, &["event:new"], 20), "new").await;

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

    assert!(
        is_new(&admit(inbox, entry(&acme, &["event:old"], 30), "old again").await),
        "a pruned key is forgotten"
    );
    assert!(
        is_new(
            &admit(
                inbox,
                entry(&acme, &["message:m-old"], 30),
                "old message again"
            )
            .await
        ),
        "every key of a pruned entry is forgotten"
    );
    assert!(
        is_new(&admit(inbox, entry(&beta, &["event:old"], 30), "beta's old again").await),
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

/// A duplicate of an entry not marked applied names that entry and stores nothing (its other
/// keys stay unseen); once the entry is marked, a duplicate is [`Admission::Duplicate`].
pub async fn a_duplicate_of_an_unapplied_entry_names_it(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let keys = ["event:evt_1", "message:m1"];
    let first = admit_new(inbox, entry(&tenant, &keys, 0), "first delivery").await;
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 1), "retry before the mark").await,
        Admission::Unapplied {
            entry: first,
            received_at: at(0)
        },
        "a retry of an entry not marked applied names that entry"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &["event:evt_2", "message:m1", "ack:m1:3"], 1),
            "another delivery of the message before the mark"
        )
        .await,
        Admission::Unapplied {
            entry: first,
            received_at: at(0)
        },
        "one seen key of an unapplied entry is enough"
    );
    mark(inbox, &tenant, first, "the first delivery").await;
    assert_eq!(
        admit(inbox, entry(&tenant, &keys, 2), "retry after the mark").await,
        Admission::Duplicate,
        "once applied, a retry is a duplicate"
    );
    assert_eq!(
        admit(
            inbox,
            entry(&tenant, &keys, 3),
            "second retry after the mark"
        )
        .await,
        Admission::Duplicate,
        "and stays one"
    );
    assert!(
        is_new(
            &admit(
                inbox,
                entry(&tenant, &["event:evt_2"], 4),
                "its event id alone"
            )
            .await
        ),
        "an unapplied duplicate's other keys were not stored"
    );
    assert!(
        is_new(&admit(inbox, entry(&tenant, &["ack:m1:3"], 4), "its ack key alone").await),
        "an unapplied duplicate's other keys were not stored"
    );
}

/// A delivery whose keys were brought by several entries is [`Admission::Unapplied`] while any
/// of them is not marked applied (naming an unapplied one), and a duplicate once all are.
pub async fn a_duplicate_is_unapplied_while_any_matching_entry_is(inbox: &dyn Inbox) {
    let tenant = TenantId::generate();
    let one = admit_new(inbox, entry(&tenant, &["event:e1", "message:m1"], 0), "one").await;
    let two = admit_new(inbox, entry(&tenant, &["event:e2", "message:m2"], 1), "two").await;
    let both = ["message:m1", "message:m2", "event:e3"];
    let admission = admit(inbox, entry(&tenant, &both, 2), "both, none applied").await;
    assert!(
        admission
            == Admission::Unapplied {
                entry: one,
                received_at: at(0)
            }
            || admission
                == Admission::Unapplied {
                    entry: two,
                    received_at: at(1)
                },
        "a duplicate of two unapplied entries names one of them, not {admission:?}"
    );
    mark(inbox, &tenant, one, "one").await;
    assert_eq!(
        admit(inbox, entry(&tenant, &both, 3), "both, one applied").await,
        Admission::Unapplied {
            entry: two,
            received_at: at(1)
        },
        "the entry still unapplied"
    );
    mark(inbox, &tenant, two, "two").await;
    assert_eq!(
        admit(inbox, entry(&tenant, &both, 4), "both, both applied").await,
        Admission::Duplicate,
        "every matching entry is applied"
    );
}

/// Marking is idempotent, an unknown entry is no error, and a mark names the tenant's entry:
/// another tenant's mark of the same number changes nothing.
pub async fn marks_are_idempotent_and_per_tenant(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    let keys = ["event:evt_1", "message:m1"];
    let acme_entry = admit_new(inbox, entry(&acme, &keys, 0), "acme").await;
    let beta_entry = admit_new(inbox, entry(&beta, &keys, 0), "beta").await;
    assert_ne!(acme_entry, beta_entry, "numbers are unique across tenants");

    mark(inbox, &beta, acme_entry, "acme's entry under beta").await;
    assert_eq!(
        admit(inbox, entry(&acme, &keys, 1), "acme's retry").await,
        Admission::Unapplied {
            entry: acme_entry,
            received_at: at(0)
        },
        "another tenant's mark does not reach acme's entry"
    );

    mark(inbox, &acme, acme_entry, "acme").await;
    mark(inbox, &acme, acme_entry, "acme again").await;
    assert_eq!(
        admit(inbox, entry(&acme, &keys, 2), "acme's retry after the mark").await,
        Admission::Duplicate
    );
    assert_eq!(
        admit(inbox, entry(&beta, &keys, 2), "beta's retry").await,
        Admission::Unapplied {
            entry: beta_entry,
            received_at: at(0)
        },
        "acme's mark does not reach beta's entry"
    );

    inbox
        .mark_applied(&acme, EntryId::new(u64::MAX))
        .await
        .unwrap_or_else(|err| panic!("marking an unknown entry is no error: {err}"));
    inbox
        .mark_applied(&TenantId::generate(), beta_entry)
        .await
        .unwrap_or_else(|err| panic!("marking for a tenant without entries is no error: {err}"));
    assert_eq!(
        admit(inbox, entry(&beta, &keys, 3), "beta's retry again").await,
        Admission::Unapplied {
            entry: beta_entry,
            received_at: at(0)
        },
        "still not applied"
    );
}

/// [`Inbox::claim_unapplied`] hands out the unapplied entries of every tenant received before
/// the cut-off (strictly), oldest first, at most `limit`, each with its body and keys.
pub async fn claims_take_the_oldest_unapplied_before_the_cutoff(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let beta = TenantId::generate();
    let applied = admit_applied(inbox, entry(&acme, &["event:applied"], 0), "applied").await;
    let a5 = entry(&acme, &["event:a5", "message:m5"], 5);
    let b1 = entry(&beta, &["event:b1"], 1);
    let a3 = entry(&acme, &[], 3);
    let a7 = entry(&acme, &["event:a7"], 7);
    let a10 = entry(&acme, &["event:a10"], 10);
    let a5_id = admit_new(inbox, a5.clone(), "a5").await;
    let b1_id = admit_new(inbox, b1.clone(), "b1").await;
    let a3_id = admit_new(inbox, a3.clone(), "a3").await;
    let a7_id = admit_new(inbox, a7.clone(), "a7").await;
    let a10_id = admit_new(inbox, a10, "a10").await;

    assert!(
        claim(inbox, at(10), at(100), 0).await.is_empty(),
        "a limit of 0 claims nothing"
    );
    let first = claim(inbox, at(10), at(100), 2).await;
    assert_eq!(
        ids(&first),
        [b1_id, a3_id],
        "the two oldest unapplied entries, of any tenant, oldest first"
    );
    assert_eq!(
        first
            .iter()
            .map(|(_, entry)| entry.clone())
            .collect::<Vec<_>>(),
        [b1, a3],
        "each claimed entry as it was admitted"
    );
    let rest = claim(inbox, at(10), at(100), 10).await;
    assert_eq!(
        ids(&rest),
        [a5_id, a7_id],
        "the others received before the cut-off; not the applied one, not one received at \
         the cut-off, not those claimed already"
    );
    assert_eq!(rest[0].1, a5, "the body and keys as admitted");
    assert!(!ids(&rest).contains(&applied));
    assert!(
        !ids(&rest).contains(&a10_id),
        "received at the cut-off: not before it"
    );
    assert_eq!(rest[1].1, a7);
}

/// An entry claimed at `now` is not handed out again while the cut-off is not past `now`, and
/// is handed out again once it is (the claimer died); a mark ends its claims.
pub async fn a_claim_is_not_handed_out_again_within_its_grace(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let first = admit_new(inbox, entry(&acme, &["event:first"], 0), "first").await;
    let second = admit_new(inbox, entry(&acme, &["event:second"], 1), "second").await;

    assert_eq!(
        ids(&claim(inbox, at(10), at(40), 10).await),
        [first, second]
    );
    assert!(
        claim(inbox, at(10), at(40), 10).await.is_empty(),
        "claimed after the cut-off: not again"
    );
    assert!(
        claim(inbox, at(40), at(70), 10).await.is_empty(),
        "claimed at the cut-off: not again"
    );
    mark(inbox, &acme, first, "first").await;
    assert_eq!(
        ids(&claim(inbox, at(41), at(71), 10).await),
        [second],
        "claimed before the cut-off and still unapplied: handed out again; applied: never"
    );
    assert!(
        claim(inbox, at(50), at(80), 10).await.is_empty(),
        "claimed again at 71"
    );
    mark(inbox, &acme, second, "second").await;
    assert!(
        claim(inbox, at(1_000), at(1_000), 10).await.is_empty(),
        "every entry is applied"
    );
}

/// Prune takes unapplied entries too (retention wins): they are not claimed any more, and a
/// mark of a pruned entry is no error.
pub async fn pruned_entries_are_not_claimed(inbox: &dyn Inbox) {
    let acme = TenantId::generate();
    let gone = admit_new(inbox, entry(&acme, &["event:gone"], 0), "gone").await;
    let kept = admit_new(inbox, entry(&acme, &["event:kept"], 20), "kept").await;
    assert_eq!(prune(inbox, at(10)).await, 1);
    assert_eq!(ids(&claim(inbox, at(30), at(30), 10).await), [kept]);
    mark(inbox, &acme, gone, "a pruned entry").await;
}
