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
//! ahead, so a store on a [`ManualClock`](crate::ManualClock) that shows about the present
//! passes too.

use std::time::{Duration, SystemTime};

use tenant_isolation::{ChipId, TenantId};

use crate::chip::{
    ChipKey, ChipRecord, ChipSpec, ObservedPatch, PhoneNumber, RunState, StepEntry, StepOutcome,
};
use crate::phase::Phase;
use crate::reconcile::StepKind;
use crate::signal::SignalBody;
use crate::store::{
    ChipStore, CreateOutcome, Fence, NewChip, OwnerId, StoreError, Trigger, VersionKind,
};

/// Generates one `#[tokio::test]` per conformance check. The argument is an expression that,
/// called with no arguments, returns a future of an `Arc<dyn ChipStore>`: a fresh store per
/// check.
#[macro_export]
macro_rules! chip_store_conformance {
    ($make:expr) => {
        $crate::chip_store_conformance!(@tests $make;
            create_is_idempotent_on_the_key, list_is_scoped_and_paged,
            desired_writes_are_compare_and_set, observed_writes_are_fenced_and_compare_and_set,
            the_step_log_keeps_the_newest_entries, signals_are_numbered_bounded_and_trimmed,
            work_keeps_the_earliest_due_time, a_takeover_fences_the_old_owner,
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
            .append_signal(&key, at, SignalBody::Activity)
            .await
            .expect("append");
        assert_eq!(seq, n, "signals are numbered 1, 2, 3, ...");
    }
    let kept = store.signals_after(&key, 0).await.expect("signals");
    let seqs: Vec<u64> = kept.iter().map(|signal| signal.seq).collect();
    assert_eq!(
        seqs,
        (7..=70).collect::<Vec<u64>>(),
        "the newest 64 are kept"
    );
    let tail = store.signals_after(&key, 60).await.expect("signals");
    assert_eq!(tail.len(), 10);

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
    let left: Vec<u64> = store
        .signals_after(&key, 0)
        .await
        .expect("signals")
        .iter()
        .map(|signal| signal.seq)
        .collect();
    assert_eq!(left, [67, 68, 69, 70], "a write trims the folded signals");
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

/// After a lease expires another owner takes the tenant under a higher token; the old owner's
/// writes, removals, renewals and takes are refused.
pub async fn a_takeover_fences_the_old_owner(store: &dyn ChipStore) {
    let key = unique_key();
    let created = create(store, &key).await;
    let old_owner = unique_owner();
    let old = fence_for(store, &old_owner, &key.tenant, Duration::ZERO)
        .await
        .expect("the first owner acquires the tenant");
    let new = fence_for(store, &unique_owner(), &key.tenant, HOUR)
        .await
        .expect("an expired lease is taken over");
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
    let t = year_ahead();
    assert!(
        !store
            .take_due(std::slice::from_ref(&old), t, 100)
            .await
            .expect("take")
            .contains(&key)
    );
    assert!(
        store
            .take_due(std::slice::from_ref(&new), t, 100)
            .await
            .expect("take")
            .contains(&key),
        "the new owner finds every chip due"
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

/// `purge_tenant` removes one tenant's chips, signals and work; a tenant created again under
/// the same id never gets an old token back.
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

    create(store, &a).await;
    let again = own(store, &a.tenant).await;
    assert!(again.token > before.token, "tokens survive a purge");
}
