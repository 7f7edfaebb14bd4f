//! Checks of [`LeaseStore::purge_tenant`]: a purged tenant's leases and history go, everything
//! else stays, and its chips' generations go on past the purge.

use std::sync::Arc;
use std::time::Duration;

use tenant_isolation::{ChipId, TenantId};

use super::{Scope, assert_stale_reports_change_nothing, leased, request, rotate, t0};
use crate::allocator::{ChipProxyRequest, ProxyAllocator};
use crate::lease::{Allocation, HistoryEvent, ProxyHistoryEntry, ProxyLease};
use crate::policy::AllocationPolicy;
use crate::store::LeaseStore;

/// Every history entry of each of `chips` of `tenant`, chip by chip.
async fn histories(
    store: &dyn LeaseStore,
    tenant: &TenantId,
    chips: &[&ChipId],
) -> Vec<Vec<ProxyHistoryEntry>> {
    let mut all = Vec::with_capacity(chips.len());
    for chip in chips {
        all.push(store.history(tenant, chip).await.expect("history"));
    }
    all
}

/// The active leases of `tenant`.
async fn leases_of(store: &dyn LeaseStore, tenant: &TenantId) -> Vec<ProxyLease> {
    store
        .leases(Some(tenant.clone()))
        .await
        .expect("list leases")
}

/// [`LeaseStore::purge_tenant`] removes every lease and every history entry of the purged
/// tenant (leased chips and released ones), frees the capacity its leases held, leaves another
/// tenant's leases and history (on the same endpoints, under the same chip ids) exactly as they
/// were, and keeps the chips' generations: a chip of the purged tenant allocated again gets a
/// generation higher than any it had, and reports about its purged leases are `Superseded`.
/// Purging again, or purging a tenant the store never saw, removes nothing and returns 0; so
/// does [`ProxyAllocator::purge_tenant`], which delegates.
pub async fn purging_a_tenant_removes_only_its_leases_and_history(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (purged, kept) = (s.tenant(), s.tenant());
    let (rotated_chip, released_chip, leased_chip) = (s.chip(1), s.chip(2), s.chip(3));

    // The purged tenant: a chip rotated from endpoint 1 to 2 (generations 1 and 2), a chip
    // allocated and released (history only), a chip leased on endpoint 1.
    let first = leased(&*store, &s, &purged, &rotated_chip).await;
    let second = rotate(&*store, &s, &purged, &rotated_chip, first.generation).await;
    let gone = leased(&*store, &s, &purged, &released_chip).await;
    store
        .release(&purged, &released_chip, t0())
        .await
        .expect("release")
        .expect("the chip held a lease");
    leased(&*store, &s, &purged, &leased_chip).await;

    // The other tenant, on the same endpoints and under one of the same chip ids: a chip
    // rotated (history on both endpoints) and a chip leased.
    let other_chip = s.chip(4);
    let theirs = leased(&*store, &s, &kept, &rotated_chip).await;
    rotate(&*store, &s, &kept, &rotated_chip, theirs.generation).await;
    leased(&*store, &s, &kept, &other_chip).await;
    let kept_chips = [&rotated_chip, &other_chip];
    let kept_leases = leases_of(&*store, &kept).await;
    let kept_history = histories(&*store, &kept, &kept_chips).await;
    assert_eq!(kept_leases.len(), 2, "{kept_leases:?}");
    assert!(kept_history.iter().all(|entries| !entries.is_empty()));
    // Endpoint 1 holds the purged tenant's leased chip and the other tenant's second chip: at
    // a cap of 2 it takes no more.
    let full = vec![s.candidate(1, 2)];
    assert!(
        store
            .allocate(request(&kept, &s.chip(5), full.clone()))
            .await
            .is_err(),
        "endpoint 1 is full before the purge"
    );

    let removed = store.purge_tenant(&purged).await.expect("purge");
    assert_eq!(
        removed, 2,
        "the purge removes the tenant's two active leases (the released chip held none)"
    );
    assert!(
        leases_of(&*store, &purged).await.is_empty(),
        "no lease of the purged tenant is left"
    );
    let purged_chips = [&rotated_chip, &released_chip, &leased_chip];
    for chip in purged_chips {
        assert!(
            store.lease(&purged, chip).await.expect("read").is_none(),
            "{chip} of the purged tenant holds no lease"
        );
        let history = store.history(&purged, chip).await.expect("history");
        assert!(
            history.is_empty(),
            "{chip}'s history is gone with its tenant: {history:?}"
        );
    }
    for endpoint in [s.endpoint(1), s.endpoint(2)] {
        let on = store.leases_on_endpoint(&endpoint).await.expect("read");
        assert!(
            on.iter().all(|lease| lease.tenant == kept),
            "only the other tenant's leases are left on {endpoint}: {on:?}"
        );
    }
    assert_eq!(
        leases_of(&*store, &kept).await,
        kept_leases,
        "the other tenant's leases are untouched"
    );
    assert_eq!(
        histories(&*store, &kept, &kept_chips).await,
        kept_history,
        "the other tenant's history is untouched"
    );

    // Nothing left to purge, and a tenant the store never saw has nothing either.
    assert_eq!(store.purge_tenant(&purged).await.expect("purge again"), 0);
    assert_eq!(
        store
            .purge_tenant(&s.tenant())
            .await
            .expect("purge unknown"),
        0
    );

    // The capacity the purged lease held is free.
    let newcomer = store
        .allocate(request(&kept, &s.chip(5), full))
        .await
        .expect("the purged lease's slot is free");
    assert_eq!(newcomer.lease().endpoint, s.endpoint(1));

    // The tenant id comes back: its chips continue past every generation they had.
    let later = t0() + Duration::from_secs(60);
    let again = store
        .allocate(request(&purged, &rotated_chip, vec![s.candidate(1, 5)]))
        .await
        .expect("allocates again");
    let Allocation::Created(again) = again else {
        panic!("an allocation after the purge creates a lease, got {again:?}")
    };
    assert!(
        again.generation > second.generation,
        "a purge never lets a generation be handed out again: {again:?} after {second:?}"
    );
    assert_eq!(
        again.generation,
        second.generation + 1,
        "the chip continues from its highest generation"
    );
    let stale = [first.generation, second.generation];
    assert_stale_reports_change_nothing(&*store, &purged, &rotated_chip, &stale, &again, later)
        .await;
    let back = store
        .allocate(request(&purged, &released_chip, vec![s.candidate(2, 5)]))
        .await
        .expect("allocates again")
        .into_lease();
    assert!(
        back.generation > gone.generation,
        "the released chip continues past its purged history too: {back:?} after {gone:?}"
    );
    let events: Vec<(u64, HistoryEvent)> = store
        .history(&purged, &rotated_chip)
        .await
        .expect("history")
        .into_iter()
        .map(|entry| (entry.generation, entry.event))
        .collect();
    assert_eq!(
        events,
        [(again.generation, HistoryEvent::Assigned)],
        "the chip's history starts afresh"
    );

    // Through the allocator: the same purge, for the tenant of a chip it allocated.
    let allocator = ProxyAllocator::new(
        s.static_source(2),
        store.clone(),
        AllocationPolicy::default(),
    )
    .expect("policy");
    let chip = ChipProxyRequest::new(s.tenant(), s.chip(6));
    allocator.allocate(&chip).await.expect("allocates");
    assert_eq!(
        allocator.purge_tenant(&chip.tenant).await.expect("purge"),
        1
    );
    assert!(
        allocator
            .lease(&chip.tenant, &chip.chip)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        allocator
            .history(&chip.tenant, &chip.chip)
            .await
            .expect("history")
            .is_empty()
    );
    assert_eq!(
        allocator.purge_tenant(&chip.tenant).await.expect("purge"),
        0
    );
    assert_eq!(
        leases_of(&*store, &kept).await.len(),
        3,
        "the other tenant still holds its leases"
    );
}
