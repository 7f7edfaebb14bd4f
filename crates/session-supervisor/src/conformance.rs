//! The conformance suite every [`ChipStore`] backend must pass (the contract is in the trait's
//! documentation).
//!
//! Each check takes a store, uses fresh random tenant and chip ids, and panics with a message
//! naming the broken rule. The ownership checks acquire every tenant that has work, so give
//! each check a store of its own (a scratch database for a database backend), as
//! [`chip_store_conformance!`](crate::chip_store_conformance) does:
//!
//! ```
//! mod in_memory {
//!     session_supervisor::chip_store_conformance!(|| async {
//!         std::sync::Arc::new(session_supervisor::MemoryChipStore::new())
//!             as std::sync::Arc<dyn session_supervisor::ChipStore>
//!     });
//! }
//! ```
//!
//! The checks compare times only with the store's own timestamps and with a time a year
//! ahead, so a store on a [`ManualClock`] that shows about the present
//! passes too.
//!
//! A backend whose clock can be injected also runs the checks that move time
//! ([`reads_drop_expired_pairing_codes`]): give the macro `clocked` and a factory that takes
//! the [`ManualClock`] (showing the present) the store must run on:
//!
//! ```
//! mod in_memory_clocked {
//!     use session_supervisor::{ChipStore, ManualClock, MemoryChipStore};
//!
//!     session_supervisor::chip_store_conformance!(clocked |clock: ManualClock| async move {
//!         let store = MemoryChipStore::with_clock(std::sync::Arc::new(clock));
//!         std::sync::Arc::new(store) as std::sync::Arc<dyn ChipStore>
//!     });
//! }
//! ```

use std::time::{Duration, SystemTime};

use fleet_vocab::{Clock, ManualClock};
use tenant_isolation::{ChipId, TenantId};
use waha_client::SessionStatus;

use crate::chip::{
    ChipKey, ChipRecord, ChipSpec, LoginOffer, ObservedPatch, PairingCodeSecret, PhoneNumber,
    RunState, StepEntry, StepOutcome,
};
use crate::phase::Phase;
use crate::policy::Reason;
use crate::reconcile::StepKind;
use crate::signal::SignalBody;
use crate::store::{
    ChipStore, CreateOutcome, Fence, NewChip, OwnerId, StoreError, Trigger, VersionKind,
};

/// Generates one `#[tokio::test]` per conformance check, a fresh store per check.
///
/// - `chip_store_conformance!(make)`: `make`, called with no arguments, returns a future of an
///   `Arc<dyn ChipStore>`. Runs every check that does not move time.
/// - `chip_store_conformance!(clocked make)`: `make`, called with a
///   [`ManualClock`](crate::ManualClock) showing the present, returns a future of an
///   `Arc<dyn ChipStore>` running on that clock. Runs every check, also those that advance the
///   clock.
#[macro_export]
macro_rules! chip_store_conformance {
    (@all $mode:ident $make:expr) => {
        $crate::chip_store_conformance!(@ $mode $make;
            create_is_idempotent_on_the_key, list_is_scoped_and_paged,
            desired_writes_are_compare_and_set, observed_writes_are_fenced_and_compare_and_set,
            the_step_log_keeps_the_newest_entries, signals_are_numbered_bounded_and_trimmed,
            activity_never_pushes_out_a_disconnect, work_keeps_the_earliest_due_time,
            enqueue_ignores_unknown_chips, a_takeover_fences_the_old_owner,
            acquire_skips_live_leases, released_tenants_are_taken_with_a_new_token,
            remove_is_fenced_and_versioned, purge_removes_one_tenant_only);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let make = $make;
                let store = make().await;
                $crate::conformance::$check(&*store).await;
            }
        )*
    };
    (@clocked $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let make = $make;
                let clock = $crate::ManualClock::new(::std::time::SystemTime::now());
                let store = make(clock).await;
                $crate::conformance::$check(&*store).await;
            }
        )*
    };
    (@with_clock $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let make = $make;
                let clock = $crate::ManualClock::new(::std::time::SystemTime::now());
                let store = make(clock.clone()).await;
                $crate::conformance::$check(&*store, &clock).await;
            }
        )*
    };
    (clocked $make:expr) => {
        $crate::chip_store_conformance!(@all clocked $make);
        $crate::chip_store_conformance!(@with_clock $make; reads_drop_expired_pairing_codes);
    };
    ($make:expr) => {
        $crate::chip_store_conformance!(@all tests $make);
    };
}

/// A fresh chip of a fresh tenant.
pub fn unique_key() -> ChipKey {
    ChipKey::new(TenantId::generate(), ChipId::generate())
}

/// A fresh owner id.
pub fn unique_owner() -> OwnerId {
    OwnerId::new(format!("owner-{}", ChipId::generate()))
}

fn new_chip(key: &ChipKey) -> NewChip {
    NewChip {
        key: key.clone(),
        spec: ChipSpec::qr(),
        chip_slot: true,
    }
}

fn year_ahead() -> SystemTime {
    SystemTime::now() + Duration::from_secs(365 * 24 * 3_600)
}

const HOUR: Duration = Duration::from_secs(3_600);

/// Creates a chip that must not exist yet; panics otherwise.
pub async fn create(store: &dyn ChipStore, key: &ChipKey) -> ChipRecord {
    match store.create(new_chip(key)).await {
        Ok(CreateOutcome::Created(record)) => record,
        other => panic!("creating {key}: expected a new chip, got {other:?}"),
    }
}

/// Acquires `tenant` (with any other tenant that has work) for a fresh owner for an hour;
/// panics if `tenant` is not among them.
pub async fn own(store: &dyn ChipStore, tenant: &TenantId) -> Fence {
    fence_for(store, &unique_owner(), tenant, HOUR)
        .await
        .unwrap_or_else(|| panic!("tenant {tenant} has work and no owner: acquire must take it"))
}

async fn fence_for(
    store: &dyn ChipStore,
    owner: &OwnerId,
    tenant: &TenantId,
    ttl: Duration,
) -> Option<Fence> {
    store
        .acquire(owner, 1_000, ttl)
        .await
        .expect("acquire")
        .into_iter()
        .find(|fence| &fence.tenant == tenant)
}

/// An owner write of `record` that only sets `phase`, logged as a `Record` step.
fn patch(record: &ChipRecord, phase: Phase) -> ObservedPatch {
    let mut observed = record.observed.clone();
    observed.phase = phase;
    ObservedPatch {
        observed,
        step: Some(StepEntry::new(
            StepKind::Record,
            StepOutcome::Succeeded,
            record.updated_at,
        )),
    }
}

fn provisioning() -> Phase {
    Phase::Provisioning {
        next: StepKind::PlaceChip,
    }
}

fn disconnect() -> SignalBody {
    SignalBody::Disconnect {
        reason: Reason::ConnectionLost,
        ban_expires: None,
    }
}

fn working() -> SignalBody {
    SignalBody::Status {
        status: SessionStatus::Working,
    }
}

async fn kept_seqs(store: &dyn ChipStore, key: &ChipKey) -> Vec<u64> {
    store
        .signals_after(key, 0)
        .await
        .expect("signals")
        .iter()
        .map(|signal| signal.seq)
        .collect()
}

/// `create` records a new chip as `Pending` with both versions at 1; a second create of the
/// key returns the existing chip unchanged, whatever its spec.
pub async fn create_is_idempotent_on_the_key(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    assert_eq!(
        (created.desired_version, created.observed_version),
        (1, 1),
        "a new chip starts at version 1 twice"
    );
    assert_eq!(created.observed.phase, Phase::Pending);
    assert!(
        created.observed.chip_slot,
        "the caller's chip slot is recorded"
    );
    assert_eq!(created.desired.run, RunState::Running);
    assert!(created.steps.is_empty());

    let phone = PhoneNumber::new("5511999999999").expect("a valid number");
    let other_spec = NewChip {
        spec: ChipSpec::pairing_code(phone),
        ..new_chip(&key)
    };
    match store.create(other_spec).await.expect("create again") {
        CreateOutcome::Existing(existing) => {
            assert_eq!(existing, created, "an existing chip is returned unchanged");
        }
        CreateOutcome::Created(_) => panic!("a second create of {key} created another chip"),
    }
    assert_eq!(store.get(&key).await.expect("get"), Some(created));
    assert_eq!(store.get(&unique_key()).await.expect("get"), None);
}

/// `list` returns one tenant's chips, ordered by chip id, paged by `after` and `limit`.
pub async fn list_is_scoped_and_paged(store: &dyn ChipStore) {
    let tenant = TenantId::generate();
    let other = TenantId::generate();
    for chip in ["c-3", "c-1", "c-2"] {
        let chip = ChipId::new(chip).expect("a chip id");
        create(store, &ChipKey::new(tenant.clone(), chip)).await;
    }
    let chip = ChipId::new("c-1").expect("a chip id");
    create(store, &ChipKey::new(other.clone(), chip)).await;

    let ids = |records: Vec<ChipRecord>| -> Vec<String> {
        records
            .into_iter()
            .inspect(|record| assert_eq!(record.key.tenant, tenant, "another tenant's chip"))
            .map(|record| record.key.chip.into_string())
            .collect()
    };
    let all = store.list(&tenant, None, 10).await.expect("list");
    assert_eq!(ids(all), ["c-1", "c-2", "c-3"]);
    let first = store.list(&tenant, None, 2).await.expect("list");
    assert_eq!(ids(first), ["c-1", "c-2"]);
    let after = ChipId::new("c-2").expect("a chip id");
    let next = store.list(&tenant, Some(&after), 2).await.expect("list");
    assert_eq!(ids(next), ["c-3"]);
    assert_eq!(store.list(&other, None, 10).await.expect("list").len(), 1);
    assert!(
        store
            .list(&TenantId::generate(), None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// `update_desired` is a compare-and-set on `desired_version`; it leaves observed state alone.
pub async fn desired_writes_are_compare_and_set(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let mut desired = created.desired.clone();
    desired.run = RunState::Stopped;
    desired.request_restart();

    let written = store
        .update_desired(&key, 1, desired.clone())
        .await
        .expect("a desired write at the current version");
    assert_eq!(written.desired_version, 2);
    assert_eq!(written.desired, desired);
    assert_eq!(written.observed_version, 1, "observed state is not touched");
    assert_eq!(written.observed, created.observed);

    match store.update_desired(&key, 1, desired.clone()).await {
        Err(StoreError::VersionConflict {
            which: VersionKind::Desired,
            expected: 1,
            actual: 2,
            ..
        }) => {}
        other => panic!("a stale desired write must conflict, got {other:?}"),
    }
    match store.update_desired(&unique_key(), 1, desired).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("a desired write of an unknown chip must be NotFound, got {other:?}"),
    }
}

/// `write_observed` checks the fence first, then `observed_version`; a write bumps only
/// `observed_version` and appends the step.
pub async fn observed_writes_are_fenced_and_compare_and_set(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let fence = own(store, &key.tenant).await;

    let wrong_token = Fence {
        tenant: key.tenant.clone(),
        token: fence.token + 1,
    };
    match store
        .write_observed(&key, 1, patch(&created, provisioning()), &wrong_token)
        .await
    {
        Err(StoreError::StaleOwner { held, current, .. }) => {
            assert_eq!((held, current), (fence.token + 1, fence.token));
        }
        other => panic!("a write under another token must be StaleOwner, got {other:?}"),
    }
    let other_tenant = Fence {
        tenant: TenantId::generate(),
        token: fence.token,
    };
    assert!(
        matches!(
            store
                .write_observed(&key, 1, patch(&created, provisioning()), &other_tenant)
                .await,
            Err(StoreError::StaleOwner { .. })
        ),
        "another tenant's fence never covers this chip"
    );
    match store
        .write_observed(&key, 2, patch(&created, provisioning()), &fence)
        .await
    {
        Err(StoreError::VersionConflict {
            which: VersionKind::Observed,
            expected: 2,
            actual: 1,
            ..
        }) => {}
        other => panic!("a stale observed write must conflict, got {other:?}"),
    }

    let written = store
        .write_observed(&key, 1, patch(&created, provisioning()), &fence)
        .await
        .expect("a fenced write at the current version");
    assert_eq!((written.desired_version, written.observed_version), (1, 2));
    assert_eq!(written.observed.phase, provisioning());
    assert_eq!(written.steps.len(), 1);
    assert_eq!(written.steps.last().map(|entry| entry.seq), Some(1));
    assert_eq!(store.get(&key).await.expect("get"), Some(written));
}

/// The step log keeps the newest 32 entries, numbered on.
pub async fn the_step_log_keeps_the_newest_entries(store: &dyn ChipStore) {
    let key = unique_key();
    let mut record = create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    for _ in 0..40 {
        record = store
            .write_observed(
                &key,
                record.observed_version,
                patch(&record, provisioning()),
                &fence,
            )
            .await
            .expect("write");
    }
    assert_eq!(record.observed_version, 41);
    let seqs: Vec<u64> = record.steps.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, (9..=40).collect::<Vec<u64>>(), "the newest 32 steps");
}

/// Signals are numbered per chip, at most 64 are kept, a write trims the folded ones, and
/// numbers are never reused.
pub async fn signals_are_numbered_bounded_and_trimmed(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    let at = created.created_at;
    for n in 1..=70 {
        let seq = store
            .append_signal(&key, at, working())
            .await
            .expect("append");
        assert_eq!(seq, n, "signals are numbered 1, 2, 3, ...");
    }
    assert_eq!(
        kept_seqs(store, &key).await,
        (7..=70).collect::<Vec<u64>>(),
        "the newest 64 are kept"
    );
    let tail = store.signals_after(&key, 60).await.expect("signals");
    assert_eq!(tail.len(), 10);
    assert!(
        tail.iter()
            .all(|signal| signal.body == working() && signal.at == at),
        "signals are kept as appended"
    );

    let mut observed = created.observed.clone();
    observed.signals_applied = 66;
    let patch = ObservedPatch {
        observed,
        step: None,
    };
    store
        .write_observed(&key, 1, patch, &fence)
        .await
        .expect("write");
    assert_eq!(
        kept_seqs(store, &key).await,
        [67, 68, 69, 70],
        "a write trims the folded signals"
    );
    let next = store
        .append_signal(&key, at, SignalBody::Activity)
        .await
        .expect("append");
    assert_eq!(next, 71, "numbers are never reused");
    match store
        .append_signal(&unique_key(), at, SignalBody::Activity)
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("a signal for an unknown chip must be NotFound, got {other:?}"),
    }
}

/// Activity is coalesced into one pending signal (the newest number, the latest time) and never
/// pushes a pending disconnect out of the 64 kept signals.
pub async fn activity_never_pushes_out_a_disconnect(store: &dyn ChipStore) {
    // A disconnect, then a busy session's 64 events.
    let key = unique_key();
    let created = create(store, &key).await;
    let at = created.created_at;
    let first = store
        .append_signal(&key, at, disconnect())
        .await
        .expect("append");
    let mut last = first;
    for n in 1..=64 {
        last = store
            .append_signal(&key, at + Duration::from_secs(n), SignalBody::Activity)
            .await
            .expect("append");
    }
    assert_eq!(last, first + 64, "every activity is numbered");
    let kept = store.signals_after(&key, 0).await.expect("signals");
    assert_eq!(
        kept.iter().map(|signal| signal.seq).collect::<Vec<u64>>(),
        [first, last],
        "the disconnect stays pending next to one coalesced activity"
    );
    assert_eq!(kept[0].body, disconnect());
    assert_eq!(kept[1].body, SignalBody::Activity);
    assert_eq!(
        kept[1].at,
        at + Duration::from_secs(64),
        "the latest activity"
    );
    // An activity seen earlier than the pending one keeps the later time, under its number.
    let late = store
        .append_signal(&key, at, SignalBody::Activity)
        .await
        .expect("append");
    let kept = store.signals_after(&key, first).await.expect("signals");
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].seq, kept[0].at),
        (late, at + Duration::from_secs(64))
    );

    // Full of a disconnect and statuses: activity makes room with the oldest status.
    let key = unique_key();
    create(store, &key).await;
    store
        .append_signal(&key, at, disconnect())
        .await
        .expect("append");
    for _ in 0..63 {
        store
            .append_signal(&key, at, working())
            .await
            .expect("append");
    }
    for _ in 0..64 {
        store
            .append_signal(&key, at, SignalBody::Activity)
            .await
            .expect("append");
    }
    let mut expected: Vec<u64> = vec![1];
    expected.extend(3..=64);
    expected.push(128);
    assert_eq!(
        kept_seqs(store, &key).await,
        expected,
        "the oldest status made room, the disconnect stayed"
    );

    // Full of disconnects: an activity is numbered but not kept.
    let key = unique_key();
    create(store, &key).await;
    for _ in 0..64 {
        store
            .append_signal(&key, at, disconnect())
            .await
            .expect("append");
    }
    let seq = store
        .append_signal(&key, at, SignalBody::Activity)
        .await
        .expect("append");
    assert_eq!(seq, 65);
    assert_eq!(
        kept_seqs(store, &key).await,
        (1..=64).collect::<Vec<u64>>(),
        "no pending disconnect is dropped for activity"
    );
}

/// `enqueue` keeps the earliest due time; `take_due` takes due chips of owned tenants once.
pub async fn work_keeps_the_earliest_due_time(store: &dyn ChipStore) {
    let key = unique_key();
    create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    let owned = [fence.clone()];
    let t = year_ahead();
    let takes = |keys: Vec<ChipKey>| keys.contains(&key);

    assert!(
        takes(store.take_due(&owned, t, 100).await.expect("take")),
        "a new chip is due at once"
    );
    assert!(
        !takes(store.take_due(&owned, t, 100).await.expect("take")),
        "a taken chip is not taken twice"
    );
    for (offset, trigger) in [
        (10, Trigger::Resync),
        (5, Trigger::Signal),
        (20, Trigger::Api),
    ] {
        store
            .enqueue(&key, t + Duration::from_secs(offset), trigger)
            .await
            .expect("enqueue");
    }
    assert!(!takes(
        store
            .take_due(&owned, t + Duration::from_secs(4), 100)
            .await
            .expect("take")
    ));
    assert!(
        takes(
            store
                .take_due(&owned, t + Duration::from_secs(5), 100)
                .await
                .expect("take")
        ),
        "the earliest due time wins"
    );

    let unowned = unique_key();
    create(store, &unowned).await;
    assert!(
        !store
            .take_due(&owned, t, 100)
            .await
            .expect("take")
            .contains(&unowned),
        "only chips of owned tenants are taken"
    );
}

/// `enqueue` of a chip with no record is ignored: it creates no work, so the tenant of an
/// unknown chip is not acquired and a removed chip is not taken again.
pub async fn enqueue_ignores_unknown_chips(store: &dyn ChipStore) {
    let unknown = unique_key();
    store
        .enqueue(&unknown, SystemTime::now(), Trigger::Pool)
        .await
        .expect("enqueue of an unknown chip is not an error");
    assert_eq!(
        fence_for(store, &unique_owner(), &unknown.tenant, HOUR).await,
        None,
        "a tenant with no chips has no work to acquire"
    );

    let key = unique_key();
    create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    store.remove(&key, 1, &fence).await.expect("remove");
    store
        .enqueue(&key, SystemTime::now(), Trigger::Runtime)
        .await
        .expect("enqueue of a removed chip is not an error");
    assert!(
        !store
            .take_due(std::slice::from_ref(&fence), year_ahead(), 100)
            .await
            .expect("take")
            .contains(&key),
        "a removed chip is not queued again"
    );
}

/// After a lease expires another owner takes the tenant under a higher token and finds every
/// chip due, also those the old owner had taken (in flight); the old owner's writes, removals,
/// renewals and takes are refused.
pub async fn a_takeover_fences_the_old_owner(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let sibling = ChipKey::new(key.tenant.clone(), ChipId::generate());
    create(store, &sibling).await;
    let old_owner = unique_owner();
    let old = fence_for(store, &old_owner, &key.tenant, Duration::ZERO)
        .await
        .expect("the first owner acquires the tenant");
    let t = year_ahead();
    // The old owner takes both chips: they are in flight when it loses the tenant.
    let in_flight = store
        .take_due(std::slice::from_ref(&old), t, 100)
        .await
        .expect("take");
    assert!(
        in_flight.contains(&key) && in_flight.contains(&sibling),
        "the owner takes its due chips (its fence is current until a takeover)"
    );
    let new = fence_for(store, &unique_owner(), &key.tenant, HOUR)
        .await
        .expect("an expired lease is taken over, also with its chips in flight");
    assert!(new.token > old.token, "a new owner gets a higher token");

    match store
        .write_observed(&key, 1, patch(&created, provisioning()), &old)
        .await
    {
        Err(StoreError::StaleOwner { held, current, .. }) => {
            assert_eq!((held, current), (old.token, new.token));
        }
        other => panic!("the old owner's write must be StaleOwner, got {other:?}"),
    }
    assert!(matches!(
        store.remove(&key, 1, &old).await,
        Err(StoreError::StaleOwner { .. })
    ));
    assert!(
        store
            .renew(&old_owner, std::slice::from_ref(&old), HOUR)
            .await
            .expect("renew")
            .is_empty(),
        "a lost tenant is not renewed"
    );
    let stale = store
        .take_due(std::slice::from_ref(&old), t, 100)
        .await
        .expect("take");
    assert!(
        !stale.contains(&key) && !stale.contains(&sibling),
        "the old owner takes nothing"
    );
    let taken = store
        .take_due(std::slice::from_ref(&new), t, 100)
        .await
        .expect("take");
    assert!(
        taken.contains(&key) && taken.contains(&sibling),
        "the new owner finds every chip due, also those the old owner had in flight"
    );
    store
        .write_observed(&key, 1, patch(&created, provisioning()), &new)
        .await
        .expect("the new owner writes");
}

/// `acquire` skips tenants whose lease is live; `renew` keeps them.
pub async fn acquire_skips_live_leases(store: &dyn ChipStore) {
    let key = unique_key();
    create(store, &key).await;
    let owner = unique_owner();
    let held = fence_for(store, &owner, &key.tenant, HOUR)
        .await
        .expect("acquire");
    assert_eq!(
        fence_for(store, &unique_owner(), &key.tenant, HOUR).await,
        None,
        "a live lease is not taken"
    );
    let renewed = store
        .renew(&owner, std::slice::from_ref(&held), HOUR)
        .await
        .expect("renew");
    assert_eq!(renewed, [held]);
}

/// A released tenant is taken at once, under a higher token; only its owner can release it.
pub async fn released_tenants_are_taken_with_a_new_token(store: &dyn ChipStore) {
    let key = unique_key();
    create(store, &key).await;
    let first = unique_owner();
    let held = fence_for(store, &first, &key.tenant, HOUR)
        .await
        .expect("acquire");
    store
        .release(&first, std::slice::from_ref(&held))
        .await
        .expect("release");
    let second = unique_owner();
    let taken = fence_for(store, &second, &key.tenant, HOUR)
        .await
        .expect("a released tenant is taken at once");
    assert!(taken.token > held.token, "tokens are never reused");

    store
        .release(&first, std::slice::from_ref(&taken))
        .await
        .expect("release");
    assert_eq!(
        fence_for(store, &unique_owner(), &key.tenant, HOUR).await,
        None,
        "only the owner releases"
    );
}

/// `remove` is fenced and versioned; it removes the record and its signals.
pub async fn remove_is_fenced_and_versioned(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    store
        .append_signal(&key, created.created_at, SignalBody::Activity)
        .await
        .expect("append");

    match store.remove(&key, 2, &fence).await {
        Err(StoreError::VersionConflict {
            which: VersionKind::Observed,
            expected: 2,
            actual: 1,
            ..
        }) => {}
        other => panic!("a stale removal must conflict, got {other:?}"),
    }
    let wrong_token = Fence {
        tenant: key.tenant.clone(),
        token: fence.token + 1,
    };
    assert!(matches!(
        store.remove(&key, 1, &wrong_token).await,
        Err(StoreError::StaleOwner { .. })
    ));
    store.remove(&key, 1, &fence).await.expect("remove");
    assert_eq!(store.get(&key).await.expect("get"), None);
    assert!(
        store
            .signals_after(&key, 0)
            .await
            .expect("signals")
            .is_empty()
    );
    assert!(matches!(
        store.remove(&key, 1, &fence).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// `purge_tenant` removes one tenant's chips, signals and work and its fence: the old owner's
/// fence is refused from then on, a late `enqueue` brings no work back, and a tenant created
/// again under the same id never gets an old token back.
pub async fn purge_removes_one_tenant_only(store: &dyn ChipStore) {
    let a = unique_key();
    let a2 = ChipKey::new(a.tenant.clone(), ChipId::generate());
    let b = unique_key();
    for key in [&a, &a2, &b] {
        create(store, key).await;
    }
    let before = own(store, &a.tenant).await;
    store
        .append_signal(&a, SystemTime::now(), SignalBody::Activity)
        .await
        .expect("append");

    assert_eq!(store.purge_tenant(&a.tenant).await.expect("purge"), 2);
    assert_eq!(store.get(&a).await.expect("get"), None);
    assert!(
        store
            .list(&a.tenant, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .signals_after(&a, 0)
            .await
            .expect("signals")
            .is_empty()
    );
    assert!(
        store.get(&b).await.expect("get").is_some(),
        "another tenant's chip survives"
    );
    assert_eq!(
        store
            .purge_tenant(&TenantId::generate())
            .await
            .expect("purge"),
        0
    );

    store
        .enqueue(&a2, SystemTime::now(), Trigger::Pool)
        .await
        .expect("enqueue of a purged chip is not an error");
    assert_eq!(
        fence_for(store, &unique_owner(), &a.tenant, HOUR).await,
        None,
        "a late enqueue brings no work back to a purged tenant"
    );

    let recreated = create(store, &a).await;
    match store
        .write_observed(&a, 1, patch(&recreated, provisioning()), &before)
        .await
    {
        Err(StoreError::StaleOwner { held, .. }) => assert_eq!(held, before.token),
        other => panic!("the pre-purge owner's write must be StaleOwner, got {other:?}"),
    }
    assert!(
        !store
            .take_due(std::slice::from_ref(&before), year_ahead(), 100)
            .await
            .expect("take")
            .contains(&a),
        "the pre-purge owner takes nothing"
    );
    let again = own(store, &a.tenant).await;
    assert!(again.token > before.token, "tokens survive a purge");
    assert!(
        store
            .take_due(std::slice::from_ref(&again), year_ahead(), 100)
            .await
            .expect("take")
            .contains(&a),
        "the new owner takes the chip created again"
    );
}

/// Reads show a record as of the store's clock: `get`, `list`, an existing chip's `create` and
/// `update_desired` drop a pairing code that expired after it was written (the fact that one
/// was requested stays). `store` must run on `clock`, which this check advances.
pub async fn reads_drop_expired_pairing_codes(store: &dyn ChipStore, clock: &ManualClock) {
    let key = unique_key();
    let created = create(store, &key).await;
    let fence = own(store, &key.tenant).await;
    let now = clock.now();
    let ttl = Duration::from_secs(150);
    let mut observed = created.observed.clone();
    observed.login = Some(LoginOffer::PairingCode {
        code: Some(PairingCodeSecret::new("ABCD-EFGH")),
        requested_at: now,
        expires_at: now + ttl,
    });
    let patch = ObservedPatch {
        observed,
        step: None,
    };
    let written = store
        .write_observed(&key, 1, patch, &fence)
        .await
        .expect("write");
    let has_code = |record: &ChipRecord| {
        matches!(
            &record.observed.login,
            Some(LoginOffer::PairingCode { code: Some(_), .. })
        )
    };
    let requested = |record: &ChipRecord| {
        matches!(
            &record.observed.login,
            Some(LoginOffer::PairingCode { code: None, .. })
        )
    };
    assert!(has_code(&written), "a live code is written");
    let read = store.get(&key).await.expect("get").expect("the chip");
    assert!(has_code(&read), "a live code is read");

    clock.advance(ttl);
    let read = store.get(&key).await.expect("get").expect("the chip");
    assert!(requested(&read), "get drops an expired code, got {read:?}");
    let listed = store.list(&key.tenant, None, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(requested(&listed[0]), "list drops an expired code");
    match store.create(new_chip(&key)).await.expect("create again") {
        CreateOutcome::Existing(existing) => {
            assert!(requested(&existing), "create drops an expired code");
        }
        CreateOutcome::Created(_) => panic!("a second create of {key} created another chip"),
    }
    let updated = store
        .update_desired(&key, 1, created.desired.clone())
        .await
        .expect("a desired write at the current version");
    assert!(requested(&updated), "update_desired drops an expired code");
}
