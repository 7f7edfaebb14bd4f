//! Checks of the history's retention, and of generations once the history is gone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tenant_isolation::{ChipId, TenantId};

use super::{
    Scope, assert_stale_reports_change_nothing, leased, request, rotate, rotation, stored_lease, t0,
};
use crate::lease::{Allocation, HistoryEvent, LeaseHealth, ProxyLease};
use crate::retention::HistoryRetention;
use crate::store::LeaseStore;

/// The history's count limit of a store built with the default [`HistoryRetention`].
fn default_keep() -> usize {
    usize::try_from(HistoryRetention::default().max_entries_per_chip).expect("fits")
}

/// Allocates `chip` on endpoint `endpoint` of `s` at `now`.
async fn allocate_at(
    store: &dyn LeaseStore,
    s: &Scope,
    tenant: &TenantId,
    chip: &ChipId,
    endpoint: usize,
    now: SystemTime,
) -> Allocation {
    let mut allocate = request(tenant, chip, vec![s.candidate(endpoint, 5)]);
    allocate.now = now;
    store.allocate(allocate).await.expect("allocates")
}

/// Rotates `chip` away from `generation` to endpoint `endpoint` of `s` at `now`.
async fn rotate_at(
    store: &dyn LeaseStore,
    s: &Scope,
    (tenant, chip): (&TenantId, &ChipId),
    generation: u64,
    endpoint: usize,
    now: SystemTime,
) -> ProxyLease {
    let mut replace = rotation(tenant, chip, vec![s.candidate(endpoint, 5)], generation);
    replace.now = now;
    let rotated = store.allocate(replace).await.expect("rotates");
    assert!(matches!(rotated, Allocation::Rotated(_)), "{rotated:?}");
    rotated.into_lease()
}

/// A chip keeps at most the retention's count of history entries (the checks expect stores
/// built with the default [`HistoryRetention`]: 100), the newest ones, oldest first; the
/// entries beyond it go in the step that appends. Its later leases still continue from its
/// highest generation.
pub async fn history_keeps_the_newest_entries_per_chip(store: Arc<dyn LeaseStore>) {
    let keep = default_keep();
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let lease = leased(&*store, &s, &tenant, &chip).await;
    // The assignment and `keep + 10` verdicts, one second apart: 11 entries too many. The
    // lease's own check marks it unhealthy, its endpoint's check recovers it: both append.
    let verdicts = keep + 10;
    let at = |n: usize| t0() + Duration::from_secs(u64::try_from(n).expect("small"));
    for n in 1..=verdicts {
        if n % 2 == 1 {
            let bad = LeaseHealth::Unhealthy {
                reason: "flapping".into(),
            };
            let update = store
                .set_lease_health(&tenant, &chip, lease.generation, bad, at(n))
                .await
                .expect("verdict");
            assert!(update.is_applied(), "{update:?}");
        } else {
            let changed = store
                .set_endpoint_health(&s.endpoint(1), LeaseHealth::Healthy, at(n))
                .await
                .expect("endpoint verdict");
            assert_eq!(
                changed, 1,
                "the endpoint's verdict recovers the chip's lease"
            );
        }
    }
    let history = store.history(&tenant, &chip).await.expect("history");
    assert_eq!(
        history.len(),
        keep,
        "a chip keeps at most {keep} history entries"
    );
    let times: Vec<SystemTime> = history.iter().map(|h| h.at).collect();
    let newest: Vec<SystemTime> = (verdicts + 1 - keep..=verdicts).map(at).collect();
    assert_eq!(
        times, newest,
        "the newest entries are kept, oldest first (the assignment and the first verdicts went)"
    );
    assert!(
        history
            .iter()
            .all(|h| h.generation == lease.generation && h.event != HistoryEvent::Assigned)
    );

    // The history no longer shows the assignment, yet the chip's next leases continue from
    // its highest generation, through a rotation and through a release.
    let rotated = rotate(&*store, &s, &tenant, &chip, lease.generation).await;
    assert_eq!(rotated.generation, lease.generation + 1);
    store
        .release(&tenant, &chip, t0())
        .await
        .expect("release")
        .expect("the chip held a lease");
    let again = allocate_at(&*store, &s, &tenant, &chip, 1, t0()).await;
    assert!(matches!(again, Allocation::Created(_)), "{again:?}");
    assert_eq!(again.lease().generation, rotated.generation + 1);
    assert_eq!(
        store.history(&tenant, &chip).await.expect("history").len(),
        keep,
        "still at most {keep} entries"
    );
}

/// [`LeaseStore::prune_history`] removes the entries older than the retention's age (the
/// default, 90 days), of released and leased chips, and nothing newer. A chip whose history is
/// gone still never gets a generation it had: after the purge, a released chip allocated again
/// continues from its released lease, a leased one is rotated past its current generation, and
/// reports about the earlier generations are `Superseded`.
pub async fn generations_survive_a_history_purge(store: Arc<dyn LeaseStore>) {
    let max_age = HistoryRetention::default().max_age;
    // Long before what the other checks write (around `t0()` and the present), so that this
    // check's prune removes only its own entries, also on a database the checks share.
    let era = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let at = |hours: u64| era + Duration::from_secs(hours * 3600);
    let s = Scope::new();
    let tenant = s.tenant();

    // Allocated, rotated and released: four entries, at the start of the era.
    let released = s.chip(1);
    let first = allocate_at(&*store, &s, &tenant, &released, 1, at(0))
        .await
        .into_lease();
    let second = rotate_at(
        &*store,
        &s,
        (&tenant, &released),
        first.generation,
        2,
        at(1),
    )
    .await;
    store
        .release(&tenant, &released, at(2))
        .await
        .expect("release")
        .expect("the chip held a lease");
    // Allocated and rotated, still leased: three entries.
    let leased_chip = s.chip(2);
    let old = allocate_at(&*store, &s, &tenant, &leased_chip, 1, at(0))
        .await
        .into_lease();
    let held = rotate_at(
        &*store,
        &s,
        (&tenant, &leased_chip),
        old.generation,
        2,
        at(1),
    )
    .await;
    // Allocated a day and a half later: younger than the cutoff below.
    let recent = s.chip(3);
    allocate_at(&*store, &s, &tenant, &recent, 1, at(36)).await;

    // As of max_age plus a day after the era's start: everything before `at(24)` is old.
    let removed = store
        .prune_history(era + max_age + Duration::from_secs(24 * 3600))
        .await
        .expect("prune");
    assert!(
        removed >= 7,
        "the seven old entries are removed, got {removed}"
    );
    for chip in [&released, &leased_chip] {
        let history = store.history(&tenant, chip).await.expect("history");
        assert!(
            history.is_empty(),
            "{chip}'s old history is gone: {history:?}"
        );
    }
    assert_eq!(
        store
            .history(&tenant, &recent)
            .await
            .expect("history")
            .len(),
        1,
        "an entry younger than max_age stays"
    );
    assert_eq!(
        stored_lease(&*store, &tenant, &leased_chip).await,
        held,
        "pruning history leaves leases alone"
    );

    // The released chip comes back: its generations continue, its history does not count.
    let again = allocate_at(&*store, &s, &tenant, &released, 1, at(72)).await;
    let Allocation::Created(again) = again else {
        panic!("an allocation after release creates a lease, got {again:?}")
    };
    assert_eq!(
        again.generation,
        second.generation + 1,
        "a purged history never lets a generation be handed out again"
    );
    let stale = [first.generation, second.generation];
    assert_stale_reports_change_nothing(&*store, &tenant, &released, &stale, &again, at(73)).await;

    // The leased chip moves on past its current generation, and then past it again after a
    // release.
    let moved = rotate_at(
        &*store,
        &s,
        (&tenant, &leased_chip),
        held.generation,
        1,
        at(72),
    )
    .await;
    assert_eq!(moved.generation, held.generation + 1);
    store
        .release(&tenant, &leased_chip, at(73))
        .await
        .expect("release")
        .expect("the chip held a lease");
    store
        .prune_history(at(74) + max_age)
        .await
        .expect("prune again");
    let back = allocate_at(&*store, &s, &tenant, &leased_chip, 2, at(75))
        .await
        .into_lease();
    assert_eq!(back.generation, moved.generation + 1);
    let stale = [old.generation, held.generation, moved.generation];
    assert_stale_reports_change_nothing(&*store, &tenant, &leased_chip, &stale, &back, at(76))
        .await;
}
