//! The conformance suite every [`LeaseStore`] backend must pass.
//!
//! Each check takes a store, uses fresh random tenant, chip and endpoint ids (so checks may run
//! in parallel against one shared database, and re-runs do not collide), and panics with a
//! message naming the broken rule. Run them all with [`lease_store_conformance!`]:
//!
//! ```
//! mod in_memory {
//!     proxy_allocator::lease_store_conformance!(|| async {
//!         std::sync::Arc::new(proxy_allocator::InMemoryLeaseStore::new())
//!             as std::sync::Arc<dyn proxy_allocator::LeaseStore>
//!     });
//! }
//! ```
//!
//! The checks need a multi-threaded tokio runtime (the macro's tests use one), and a store
//! built with the default [`HistoryRetention`](crate::HistoryRetention) (the history checks
//! count on its limits).
//!
//! [`lease_store_conformance!`]: crate::lease_store_conformance

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tenant_isolation::{ChipId, TenantId};

use crate::allocator::{ChipProxyRequest, FailureOutcome, LeaseCheck, ProxyAllocator};
use crate::endpoint::{EndpointId, EndpointKind};
use crate::error::{NoCapacityReason, ProxyError};
use crate::health::{EgressIpProbe, HealthChecker, HealthReport};
use crate::lease::{
    Allocation, AllocationRequest, Candidate, EgressIpChange, EgressIpUpdate, HistoryEvent,
    LeaseHealth, LeaseUpdate, ProxyLease, Replace,
};
use crate::policy::AllocationPolicy;
use crate::source::ProxySource;
use crate::source::gateway::{RotatingGatewayConfig, RotatingGatewaySource, UsernameTemplate};
use crate::source::static_list::{StaticListSource, StaticProxyEntry};
use crate::store::LeaseStore;
use crate::{ProxyAddress, ProxyScheme};

mod purge;
mod retention;

pub use purge::purging_a_tenant_removes_only_its_leases_and_history;
pub use retention::{
    generations_survive_a_history_purge, history_keeps_the_newest_entries_per_chip,
};

/// Generates one `#[tokio::test]` per conformance check. The argument is an expression that,
/// called with no arguments, returns a future of an `Arc<dyn LeaseStore>`.
#[macro_export]
macro_rules! lease_store_conformance {
    ($make:expr) => {
        $crate::lease_store_conformance!(@tests $make;
            sticky_allocation, cap_and_least_loaded, tiers_are_preferred, tenant_exclusivity,
            release_frees_capacity_and_keeps_history, rotation_is_atomic_and_fenced,
            failures_and_successes, reports_are_fenced_by_generation,
            generations_are_never_reused_after_release,
            concurrent_failure_reports_rotate_once, endpoint_health_marks_leases,
            egress_ip_changes_are_recorded, health_and_egress_ip_are_fenced_by_generation,
            lease_checks_are_fenced_by_generation,
            chips_without_lease_are_not_leased, parallel_allocation_respects_cap_and_stickiness,
            oversubscription_gives_exactly_the_capacity, parallel_exclusivity_keeps_tenants_apart,
            gateway_sessions_are_distinct_and_sticky, history_keeps_the_newest_entries_per_chip,
            generations_survive_a_history_purge,
            purging_a_tenant_removes_only_its_leases_and_history);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let make = $make;
                $crate::conformance::$check(make().await).await;
            }
        )*
    };
}

/// A fresh scope of ids for one check.
struct Scope {
    run: String,
}

impl Scope {
    fn new() -> Self {
        Self {
            run: format!("{:012x}", fastrand::u64(..) >> 16),
        }
    }

    fn tenant(&self) -> TenantId {
        TenantId::generate()
    }

    fn chip(&self, n: usize) -> ChipId {
        ChipId::new(format!("c{}-{n}", &self.run[..8])).expect("valid chip id")
    }

    fn endpoint(&self, n: usize) -> EndpointId {
        EndpointId::new(format!("conf-{}-{n}", self.run)).expect("valid endpoint id")
    }

    fn candidate(&self, n: usize, cap: u32) -> Candidate {
        Candidate {
            endpoint: self.endpoint(n),
            tier: 0,
            cap,
            exclusive: false,
            session_id: None,
            country: None,
        }
    }

    /// A static source of `count` endpoints on unused loopback ports (never contacted).
    fn static_source(&self, count: usize) -> Arc<dyn ProxySource> {
        let entries = (0..count).map(|n| {
            let address = ProxyAddress::new(ProxyScheme::Http, "127.0.0.1", 20_000 + n as u16)
                .expect("valid address")
                .with_credentials(
                    "u",
                    Some(crate::ProxyPassword::new("p").expect("a valid password")),
                )
                .expect("valid credentials");
            StaticProxyEntry::new(address)
                .expect("valid entry")
                .with_id(self.endpoint(n))
        });
        Arc::new(StaticListSource::new(entries).expect("unique ids"))
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn request(tenant: &TenantId, chip: &ChipId, candidates: Vec<Candidate>) -> AllocationRequest {
    AllocationRequest {
        tenant: tenant.clone(),
        chip: chip.clone(),
        candidates,
        replace: None,
        now: t0(),
    }
}

/// A request that rotates `chip` away from `generation` to one of `candidates`.
fn rotation(
    tenant: &TenantId,
    chip: &ChipId,
    candidates: Vec<Candidate>,
    generation: u64,
) -> AllocationRequest {
    let mut rotate = request(tenant, chip, candidates);
    rotate.replace = Some(Replace {
        generation,
        reason: "test".into(),
    });
    rotate
}

/// Allocates `chip` on endpoint 1 of `s` and returns its lease.
async fn leased(store: &dyn LeaseStore, s: &Scope, tenant: &TenantId, chip: &ChipId) -> ProxyLease {
    store
        .allocate(request(tenant, chip, vec![s.candidate(1, 5)]))
        .await
        .expect("allocates")
        .into_lease()
}

/// Rotates `chip` away from `generation` to endpoint 2 of `s` and returns the new lease.
async fn rotate(
    store: &dyn LeaseStore,
    s: &Scope,
    tenant: &TenantId,
    chip: &ChipId,
    generation: u64,
) -> ProxyLease {
    store
        .allocate(rotation(tenant, chip, vec![s.candidate(2, 5)], generation))
        .await
        .expect("rotates")
        .into_lease()
}

/// The lease `chip` holds in `store`.
async fn stored_lease(store: &dyn LeaseStore, tenant: &TenantId, chip: &ChipId) -> ProxyLease {
    store
        .lease(tenant, chip)
        .await
        .expect("read")
        .expect("leased")
}

/// Reports a failure and then a success about each of the `stale` generations, none of which
/// `chip` holds: each report must be [`LeaseUpdate::Superseded`] with `current`, and the stored
/// lease must still be `current` (nothing counted, nothing reset).
async fn assert_stale_reports_change_nothing(
    store: &dyn LeaseStore,
    tenant: &TenantId,
    chip: &ChipId,
    stale: &[u64],
    current: &ProxyLease,
    now: SystemTime,
) {
    for &generation in stale {
        let failure = store
            .record_failure(tenant, chip, generation, now)
            .await
            .expect("stale failure");
        assert_eq!(
            failure,
            LeaseUpdate::Superseded(current.clone()),
            "a failure about generation {generation}, which the chip does not hold, is not \
             counted and returns the current lease"
        );
        let success = store
            .record_success(tenant, chip, generation)
            .await
            .expect("stale success");
        assert_eq!(
            success,
            LeaseUpdate::Superseded(current.clone()),
            "a success about generation {generation}, which the chip does not hold, resets nothing"
        );
    }
    assert_eq!(
        store.lease(tenant, chip).await.expect("read").as_ref(),
        Some(current),
        "stale reports left the lease as it was"
    );
}

/// A chip keeps its lease whatever the later candidates are; the lease reads back equal.
pub async fn sticky_allocation(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let first = store
        .allocate(request(
            &tenant,
            &chip,
            vec![s.candidate(1, 5), s.candidate(2, 5)],
        ))
        .await
        .expect("allocation succeeds");
    let Allocation::Created(lease) = first else {
        panic!("a first allocation must create a lease, got {first:?}")
    };
    assert_eq!(lease.generation, 1, "a new lease starts at generation 1");
    assert_eq!(
        lease.endpoint,
        s.endpoint(1),
        "ties go to the first candidate"
    );
    assert_eq!(lease.consecutive_failures, 0);
    assert!(lease.health.is_healthy());
    let again = store
        .allocate(request(&tenant, &chip, vec![s.candidate(3, 5)]))
        .await
        .expect("allocation succeeds");
    assert_eq!(
        again,
        Allocation::Existing(lease.clone()),
        "stickiness: same lease back"
    );
    let read = stored_lease(&*store, &tenant, &chip).await;
    assert_eq!(read, lease, "the stored lease equals the returned one");
}

/// Leases spread to the least-loaded candidate and never exceed a candidate's cap.
pub async fn cap_and_least_loaded(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let tenant = s.tenant();
    let candidates = vec![s.candidate(1, 2), s.candidate(2, 2)];
    let mut placed = Vec::new();
    for n in 0..4 {
        let lease = store
            .allocate(request(&tenant, &s.chip(n), candidates.clone()))
            .await
            .expect("room for four")
            .into_lease();
        placed.push(lease.endpoint);
    }
    assert_eq!(placed[0], s.endpoint(1));
    assert_eq!(
        placed[1],
        s.endpoint(2),
        "the second chip goes to the emptier endpoint"
    );
    let err = store
        .allocate(request(&tenant, &s.chip(5), candidates))
        .await
        .expect_err("both endpoints are full");
    assert!(
        matches!(
            err,
            ProxyError::NoCapacity {
                reason: NoCapacityReason::AllBusy,
                ..
            }
        ),
        "full endpoints give NoCapacity/AllBusy, got {err:?}"
    );
    assert!(
        store
            .lease(&tenant, &s.chip(5))
            .await
            .expect("read")
            .is_none()
    );
    for n in [1, 2] {
        let on = store
            .leases_on_endpoint(&s.endpoint(n))
            .await
            .expect("read");
        assert_eq!(on.len(), 2, "endpoint {n} carries exactly its cap");
    }
}

/// A lower tier is filled before a higher one is used.
pub async fn tiers_are_preferred(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let tenant = s.tenant();
    let mut preferred = s.candidate(2, 1);
    preferred.tier = 0;
    let mut fallback = s.candidate(1, 5);
    fallback.tier = 1;
    let candidates = vec![fallback, preferred];
    let a = store
        .allocate(request(&tenant, &s.chip(1), candidates.clone()))
        .await
        .expect("allocates")
        .into_lease();
    assert_eq!(
        a.endpoint,
        s.endpoint(2),
        "tier 0 wins although listed second"
    );
    let b = store
        .allocate(request(&tenant, &s.chip(2), candidates))
        .await
        .expect("allocates")
        .into_lease();
    assert_eq!(
        b.endpoint,
        s.endpoint(1),
        "tier 1 is used once tier 0 is full"
    );
}

/// An exclusive candidate is never given to a second tenant.
pub async fn tenant_exclusivity(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (a, b) = (s.tenant(), s.tenant());
    let mut shared = s.candidate(1, 10);
    shared.exclusive = true;
    store
        .allocate(request(&a, &s.chip(1), vec![shared.clone()]))
        .await
        .expect("tenant a gets the endpoint");
    store
        .allocate(request(&a, &s.chip(2), vec![shared.clone()]))
        .await
        .expect("tenant a may put a second chip there");
    let err = store
        .allocate(request(&b, &s.chip(3), vec![shared.clone()]))
        .await
        .expect_err("tenant b must not share an exclusive endpoint");
    assert!(matches!(err, ProxyError::NoCapacity { .. }), "{err:?}");
    let lease = store
        .allocate(request(
            &b,
            &s.chip(3),
            vec![shared.clone(), s.candidate(2, 10)],
        ))
        .await
        .expect("tenant b gets another endpoint")
        .into_lease();
    assert_eq!(lease.endpoint, s.endpoint(2));
    for chip in [s.chip(1), s.chip(2)] {
        store.release(&a, &chip, t0()).await.expect("release");
    }
    store
        .allocate(request(&b, &s.chip(4), vec![shared]))
        .await
        .expect("once tenant a left, tenant b may use it");
}

/// Release frees the slot, is idempotent and keeps the history.
pub async fn release_frees_capacity_and_keeps_history(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let tenant = s.tenant();
    let only = vec![s.candidate(1, 1)];
    store
        .allocate(request(&tenant, &s.chip(1), only.clone()))
        .await
        .expect("allocates");
    assert!(
        store
            .allocate(request(&tenant, &s.chip(2), only.clone()))
            .await
            .is_err()
    );
    let released = store
        .release(&tenant, &s.chip(1), t0())
        .await
        .expect("release");
    assert_eq!(released.map(|l| l.endpoint), Some(s.endpoint(1)));
    assert!(
        store
            .release(&tenant, &s.chip(1), t0())
            .await
            .expect("release")
            .is_none(),
        "a second release finds nothing"
    );
    assert!(
        store
            .lease(&tenant, &s.chip(1))
            .await
            .expect("read")
            .is_none()
    );
    store
        .allocate(request(&tenant, &s.chip(2), only))
        .await
        .expect("the freed slot is reusable");
    let history = store.history(&tenant, &s.chip(1)).await.expect("history");
    let events: Vec<_> = history.iter().map(|h| h.event.clone()).collect();
    assert_eq!(events, vec![HistoryEvent::Assigned, HistoryEvent::Released]);
}

/// Rotation replaces the named generation only, atomically, and records both ends.
pub async fn rotation_is_atomic_and_fenced(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let lease = leased(&*store, &s, &tenant, &chip).await;
    store
        .record_failure(&tenant, &chip, lease.generation, t0())
        .await
        .expect("failure");
    let mut rotate = rotation(&tenant, &chip, vec![s.candidate(2, 5)], lease.generation);
    rotate.now = t0() + Duration::from_secs(60);
    let rotated = store.allocate(rotate.clone()).await.expect("rotates");
    let Allocation::Rotated(new) = rotated else {
        panic!("expected a rotation, got {rotated:?}")
    };
    assert_eq!(new.endpoint, s.endpoint(2));
    assert_eq!(new.generation, lease.generation + 1);
    assert_eq!(new.consecutive_failures, 0, "a rotation resets failures");
    assert!(
        store
            .leases_on_endpoint(&s.endpoint(1))
            .await
            .expect("read")
            .is_empty()
    );
    let stale = store.allocate(rotate).await.expect("stale rotation");
    assert_eq!(
        stale,
        Allocation::Existing(new.clone()),
        "a stale generation rotates nothing"
    );
    let orphan = rotation(&tenant, &s.chip(9), vec![s.candidate(2, 5)], 1);
    assert!(matches!(
        store.allocate(orphan).await,
        Err(ProxyError::NotLeased { .. })
    ));
    let no_room = rotation(&tenant, &chip, vec![], new.generation);
    assert!(
        store.allocate(no_room).await.is_err(),
        "no candidate, no rotation"
    );
    assert_eq!(
        store.lease(&tenant, &chip).await.expect("read"),
        Some(new),
        "a failed rotation keeps the lease"
    );
    let events: Vec<_> = store
        .history(&tenant, &chip)
        .await
        .expect("history")
        .into_iter()
        .map(|h| (h.endpoint, h.event))
        .collect();
    assert_eq!(
        events,
        vec![
            (s.endpoint(1), HistoryEvent::Assigned),
            (
                s.endpoint(1),
                HistoryEvent::RotatedAway {
                    reason: "test".into()
                }
            ),
            (s.endpoint(2), HistoryEvent::Assigned),
        ]
    );
}

/// Failures count up, a success resets them.
pub async fn failures_and_successes(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let generation = leased(&*store, &s, &tenant, &chip).await.generation;
    for expected in 1..=3 {
        let update = store
            .record_failure(&tenant, &chip, generation, t0())
            .await
            .expect("failure");
        let LeaseUpdate::Applied(lease) = update else {
            panic!("a failure on the current generation is counted, got {update:?}")
        };
        assert_eq!(lease.consecutive_failures, expected);
        assert_eq!(lease.last_failure_at, Some(t0()));
    }
    let update = store
        .record_success(&tenant, &chip, generation)
        .await
        .expect("success");
    assert!(update.is_applied(), "{update:?}");
    assert_eq!(update.lease().consecutive_failures, 0);
}

/// Failure and success reports are fenced on the generation they name: once the chip was
/// rotated, a report about the old generation changes nothing and returns the current lease.
pub async fn reports_are_fenced_by_generation(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let old = leased(&*store, &s, &tenant, &chip).await;
    let new = rotate(&*store, &s, &tenant, &chip, old.generation).await;
    assert_eq!(new.generation, old.generation + 1);

    // A failure (or success) seen on the old proxy is not the new proxy's.
    let later = t0() + Duration::from_secs(5);
    assert_stale_reports_change_nothing(&*store, &tenant, &chip, &[old.generation], &new, later)
        .await;
    let counted = store
        .record_failure(&tenant, &chip, new.generation, later)
        .await
        .expect("failure");
    let LeaseUpdate::Applied(counted) = counted else {
        panic!("a failure on the current generation is counted, got {counted:?}")
    };
    assert_eq!(counted.consecutive_failures, 1);
    assert_eq!(counted.last_failure_at, Some(later));

    // Nor does a success on the old proxy reset the new one's count; nor does a report about a
    // generation the chip never had (ahead of it, or beyond what a store can hold) count.
    let stale = [old.generation, new.generation + 1, u64::MAX];
    assert_stale_reports_change_nothing(&*store, &tenant, &chip, &stale, &counted, later).await;
    let reset = store
        .record_success(&tenant, &chip, new.generation)
        .await
        .expect("success");
    assert_eq!(reset.lease().consecutive_failures, 0);
    assert!(reset.is_applied());
}

/// A chip deleted (lease released) and allocated again gets a generation it never had before,
/// so a late report about the released lease (or an earlier one) is
/// [`LeaseUpdate::Superseded`] and counts nothing against the new lease, in the store and
/// through [`ProxyAllocator::report_failure`] ([`FailureOutcome::Superseded`]).
pub async fn generations_are_never_reused_after_release(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let first = leased(&*store, &s, &tenant, &chip).await;
    let rotated = rotate(&*store, &s, &tenant, &chip, first.generation).await;
    let released = store
        .release(&tenant, &chip, t0())
        .await
        .expect("release")
        .expect("the chip held a lease");
    assert_eq!(released.generation, rotated.generation);
    let again = store
        .allocate(request(&tenant, &chip, vec![s.candidate(1, 5)]))
        .await
        .expect("allocates again");
    let Allocation::Created(new) = again else {
        panic!("an allocation after release creates a lease, got {again:?}")
    };
    assert_eq!(
        new.generation,
        released.generation + 1,
        "a lease allocated after a release continues from the chip's last generation"
    );

    // Reports about a released lease are not counted against the chip's new lease.
    let later = t0() + Duration::from_secs(5);
    let stale = [first.generation, released.generation];
    assert_stale_reports_change_nothing(&*store, &tenant, &chip, &stale, &new, later).await;
    let counted = store
        .record_failure(&tenant, &chip, new.generation, later)
        .await
        .expect("failure");
    assert!(counted.is_applied(), "{counted:?}");
    assert_eq!(counted.lease().consecutive_failures, 1);
    let generations: Vec<u64> = store
        .history(&tenant, &chip)
        .await
        .expect("history")
        .iter()
        .filter(|h| h.event == HistoryEvent::Assigned)
        .map(|h| h.generation)
        .collect();
    assert_eq!(
        generations,
        vec![first.generation, rotated.generation, new.generation],
        "every lease lifetime of the chip has its own generation"
    );

    // Through the allocator, with a policy that would rotate on the first counted failure: a
    // report about the released lease must neither count nor rotate.
    let policy = AllocationPolicy {
        rotate_after_failures: 1,
        rotation_cooldown: Duration::ZERO,
        ..AllocationPolicy::default()
    };
    let allocator = ProxyAllocator::new(s.static_source(2), store.clone(), policy).expect("policy");
    let request = ChipProxyRequest::new(tenant.clone(), s.chip(2));
    let old = allocator.allocate(&request).await.expect("allocates");
    allocator
        .release(&request.tenant, &request.chip)
        .await
        .expect("release")
        .expect("the chip held a lease");
    let current = allocator.allocate(&request).await.expect("allocates again");
    assert!(
        current.generation > old.generation,
        "{current:?} after {old:?}"
    );
    let outcome = allocator
        .report_failure(&request, old.generation)
        .await
        .expect("report");
    assert_eq!(
        outcome,
        FailureOutcome::Superseded {
            lease: current.clone()
        },
        "a failure about the released lease is not the new lease's"
    );
    assert_eq!(
        store.lease(&tenant, &request.chip).await.expect("read"),
        Some(current),
        "nothing was counted or rotated"
    );
}

/// Two replicas report the same failing connection at once, each past the threshold: the chip
/// is rotated once, exactly one report says [`FailureOutcome::Rotated`], and the other says
/// [`FailureOutcome::Superseded`] with the lease the first one created, whichever order the
/// store sees them in.
pub async fn concurrent_failure_reports_rotate_once(store: Arc<dyn LeaseStore>) {
    const ROUNDS: usize = 8;
    let s = Scope::new();
    let policy = AllocationPolicy {
        rotate_after_failures: 1,
        rotation_cooldown: Duration::ZERO,
        ..AllocationPolicy::default()
    };
    let replica = || {
        // Room for every chip twice over (cap 3 by default), so a rotation always finds one.
        ProxyAllocator::new(s.static_source(6), store.clone(), policy.clone())
            .map(Arc::new)
            .expect("policy")
    };
    let (a, b) = (replica(), replica());
    let tenant = s.tenant();
    for round in 0..ROUNDS {
        let chip = ChipProxyRequest::new(tenant.clone(), s.chip(round));
        let lease = a.allocate(&chip).await.expect("allocates");
        let report = |replica: Arc<ProxyAllocator>| {
            let chip = chip.clone();
            tokio::spawn(async move { replica.report_failure(&chip, lease.generation).await })
        };
        let (first, second) = (report(a.clone()), report(b.clone()));
        let outcomes = [
            first.await.expect("task").expect("report"),
            second.await.expect("task").expect("report"),
        ];
        let current = stored_lease(&*store, &tenant, &chip.chip).await;
        assert_eq!(
            current.generation,
            lease.generation + 1,
            "round {round}: one failing connection rotates the chip once: {outcomes:?}"
        );
        let rotated: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                FailureOutcome::Rotated { from, to } => Some((from, to)),
                _ => None,
            })
            .collect();
        assert_eq!(
            rotated.len(),
            1,
            "round {round}: exactly one report did the rotation: {outcomes:?}"
        );
        assert_eq!(rotated[0].0.generation, lease.generation);
        assert_eq!(rotated[0].1, &current);
        assert!(
            outcomes.iter().any(
                |o| matches!(o, FailureOutcome::Superseded { lease } if lease.generation == current.generation)
            ),
            "round {round}: the other report learns the chip moved: {outcomes:?}"
        );
        let rotations = store
            .history(&tenant, &chip.chip)
            .await
            .expect("history")
            .iter()
            .filter(|h| matches!(h.event, HistoryEvent::RotatedAway { .. }))
            .count();
        assert_eq!(rotations, 1, "round {round}: one rotation in the history");
    }
}

/// An unhealthy endpoint marks its leases and gets no new ones until it recovers.
pub async fn endpoint_health_marks_leases(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let tenant = s.tenant();
    let candidates = vec![s.candidate(1, 5), s.candidate(2, 5)];
    for n in 0..2 {
        leased(&*store, &s, &tenant, &s.chip(n)).await;
    }
    let bad = LeaseHealth::Unhealthy {
        reason: "proxy 127.0.0.1:1 is unreachable".into(),
    };
    let changed = store
        .set_endpoint_health(&s.endpoint(1), bad.clone(), t0())
        .await
        .expect("set health");
    assert_eq!(changed, 2, "both leases on the failing endpoint change");
    assert_eq!(
        store
            .set_endpoint_health(&s.endpoint(1), bad.clone(), t0())
            .await
            .expect("again"),
        0,
        "no change, no count"
    );
    let lease = stored_lease(&*store, &tenant, &s.chip(0)).await;
    assert_eq!(lease.health, bad);
    let placed = store
        .allocate(request(&tenant, &s.chip(5), candidates.clone()))
        .await
        .expect("allocates")
        .into_lease();
    assert_eq!(
        placed.endpoint,
        s.endpoint(2),
        "an unhealthy endpoint is skipped"
    );
    store
        .set_endpoint_health(&s.endpoint(1), LeaseHealth::Healthy, t0())
        .await
        .expect("recover");
    let lease = stored_lease(&*store, &tenant, &s.chip(0)).await;
    assert!(lease.health.is_healthy());
    let events: Vec<_> = store
        .history(&tenant, &s.chip(0))
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.event)
        .collect();
    assert_eq!(
        events,
        vec![
            HistoryEvent::Assigned,
            HistoryEvent::MarkedUnhealthy {
                reason: "proxy 127.0.0.1:1 is unreachable".into()
            },
            HistoryEvent::Recovered,
        ]
    );
    let generation = stored_lease(&*store, &tenant, &s.chip(1)).await.generation;
    let single = store
        .set_lease_health(&tenant, &s.chip(1), generation, bad.clone(), t0())
        .await
        .expect("lease health");
    assert!(single.is_applied(), "{single:?}");
    assert_eq!(single.lease().health, bad);
    let loads = store.endpoint_loads().await.expect("loads");
    let load = loads
        .iter()
        .find(|l| l.endpoint == s.endpoint(1))
        .expect("known endpoint");
    assert_eq!((load.leases, load.tenants), (2, 1));
    assert!(load.health.is_healthy());
}

/// Egress IP observations report first, unchanged and changed; changes enter the history.
pub async fn egress_ip_changes_are_recorded(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let generation = leased(&*store, &s, &tenant, &chip).await.generation;
    let a: IpAddr = "203.0.113.1".parse().expect("ip");
    let b: IpAddr = "2001:db8::2".parse().expect("ip");
    let record = async |ip| {
        let update = store
            .record_egress_ip(&tenant, &chip, generation, ip, t0())
            .await
            .expect("records");
        assert_eq!(update.lease().egress_ip, Some(ip), "{update:?}");
        update.change().expect("applied on the current generation")
    };
    assert_eq!(record(a).await, EgressIpChange::First(a));
    assert_eq!(record(a).await, EgressIpChange::Unchanged(a));
    assert_eq!(record(b).await, EgressIpChange::Changed { from: a, to: b });
    let lease = stored_lease(&*store, &tenant, &chip).await;
    assert_eq!(lease.egress_ip, Some(b));
    let changes: Vec<_> = store
        .history(&tenant, &chip)
        .await
        .expect("history")
        .into_iter()
        .filter_map(|h| match h.event {
            HistoryEvent::EgressIpChanged { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec![(None, a), (Some(a), b)]);
}

/// A health verdict or an egress IP about a generation the chip has left changes nothing:
/// the current lease keeps its health and IP, and no history is written for it.
pub async fn health_and_egress_ip_are_fenced_by_generation(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let old = leased(&*store, &s, &tenant, &chip).await;
    let a: IpAddr = "203.0.113.1".parse().expect("ip");
    let b: IpAddr = "198.51.100.2".parse().expect("ip");
    let recorded = store
        .record_egress_ip(&tenant, &chip, old.generation, a, t0())
        .await
        .expect("records");
    assert_eq!(recorded.change(), Some(EgressIpChange::First(a)));
    let new = rotate(&*store, &s, &tenant, &chip, old.generation).await;
    assert_eq!((new.egress_ip, new.health.is_healthy()), (None, true));
    let history_before = store.history(&tenant, &chip).await.expect("history");

    let bad = LeaseHealth::Unhealthy {
        reason: "proxy 127.0.0.1:1 is unreachable".into(),
    };
    let later = t0() + Duration::from_secs(5);
    // Neither on the superseded generation, nor on one the chip never had (ahead of it, or
    // beyond what a store can hold).
    for stale in [old.generation, new.generation + 1, u64::MAX] {
        let update = store
            .set_lease_health(&tenant, &chip, stale, bad.clone(), later)
            .await
            .expect("stale verdict");
        assert_eq!(
            update,
            LeaseUpdate::Superseded(new.clone()),
            "a verdict on generation {stale} is not applied and returns the current lease"
        );
        let update = store
            .record_egress_ip(&tenant, &chip, stale, b, later)
            .await
            .expect("stale egress ip");
        assert_eq!(
            update,
            EgressIpUpdate::Superseded(new.clone()),
            "an egress IP seen through generation {stale} is not the new lease's"
        );
    }
    assert_eq!(
        store.lease(&tenant, &chip).await.expect("read"),
        Some(new.clone()),
        "stale verdicts and IPs left the lease as it was"
    );
    assert_eq!(
        store.history(&tenant, &chip).await.expect("history"),
        history_before,
        "stale verdicts and IPs write no history"
    );

    // The current generation's are applied.
    let applied = store
        .set_lease_health(&tenant, &chip, new.generation, bad.clone(), later)
        .await
        .expect("verdict");
    let LeaseUpdate::Applied(marked) = applied else {
        panic!("a verdict on the current generation is applied, got {applied:?}")
    };
    assert_eq!(marked.health, bad);
    let applied = store
        .record_egress_ip(&tenant, &chip, new.generation, b, later)
        .await
        .expect("egress ip");
    assert_eq!(applied.change(), Some(EgressIpChange::First(b)));
    assert_eq!(applied.lease().egress_ip, Some(b));
    assert_eq!(applied.lease().health, bad);
    let tail: Vec<_> = store
        .history(&tenant, &chip)
        .await
        .expect("history")
        .into_iter()
        .skip(history_before.len())
        .map(|h| (h.generation, h.event))
        .collect();
    assert_eq!(
        tail,
        vec![
            (
                new.generation,
                HistoryEvent::MarkedUnhealthy {
                    reason: "proxy 127.0.0.1:1 is unreachable".into()
                }
            ),
            (
                new.generation,
                HistoryEvent::EgressIpChanged { from: None, to: b }
            ),
        ]
    );
}

/// Rotates the chip to another of `candidates`, as another replica would, while a check runs.
struct RotatingDuringCheck {
    store: Arc<dyn LeaseStore>,
    candidates: Vec<Candidate>,
    tenant: TenantId,
    chip: ChipId,
    /// What the check (or the egress probe) answers after the rotation.
    answer: fn() -> Result<IpAddr, ProxyError>,
}

impl RotatingDuringCheck {
    async fn rotate(&self) {
        let current = stored_lease(&*self.store, &self.tenant, &self.chip).await;
        let others = self
            .candidates
            .iter()
            .filter(|c| c.endpoint != current.endpoint)
            .cloned()
            .collect();
        let mut rotate = request(&self.tenant, &self.chip, others);
        rotate.replace = Some(Replace {
            generation: current.generation,
            reason: "another replica".into(),
        });
        let rotated = self.store.allocate(rotate).await.expect("rotates");
        assert!(matches!(rotated, Allocation::Rotated(_)), "{rotated:?}");
    }
}

#[async_trait::async_trait]
impl HealthChecker for RotatingDuringCheck {
    async fn check(&self, _proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        self.rotate().await;
        (self.answer)().map(|_| HealthReport {
            latency: Duration::from_millis(1),
        })
    }
}

#[async_trait::async_trait]
impl EgressIpProbe for RotatingDuringCheck {
    async fn egress_ip(&self, _proxy: &ProxyAddress) -> Result<IpAddr, ProxyError> {
        self.rotate().await;
        (self.answer)()
    }
}

/// Answers every check with success and every probe with one IP.
struct Passes(IpAddr);

#[async_trait::async_trait]
impl HealthChecker for Passes {
    async fn check(&self, _proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        Ok(HealthReport {
            latency: Duration::from_millis(1),
        })
    }
}

#[async_trait::async_trait]
impl EgressIpProbe for Passes {
    async fn egress_ip(&self, _proxy: &ProxyAddress) -> Result<IpAddr, ProxyError> {
        Ok(self.0)
    }
}

/// Asserts that `check`, of `old`, was overtaken by a rotation: it is [`LeaseCheck::Superseded`],
/// names `old`'s generation as the checked one and carries a later lease. Returns that lease and
/// the check's result.
fn overtaken(
    check: LeaseCheck,
    old: &ProxyLease,
    what: &str,
) -> (ProxyLease, Result<HealthReport, ProxyError>) {
    let LeaseCheck::Superseded {
        checked,
        lease,
        result,
    } = check
    else {
        panic!("a {what} overtaken by a rotation is superseded, got {check:?}")
    };
    assert_eq!(checked, old.generation);
    assert!(lease.generation > old.generation, "{lease:?}");
    (lease, result)
}

/// [`ProxyAllocator::check_lease`] when another replica rotates the chip while the check runs
/// (during the connectivity check, or during the egress probe): the result is
/// [`LeaseCheck::Superseded`], and the new lease is neither marked with the old proxy's failure
/// nor given the old proxy's egress IP (so the next check does not see a false change).
pub async fn lease_checks_are_fenced_by_generation(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let tenant = s.tenant();
    let allocator = ProxyAllocator::new(
        s.static_source(2),
        store.clone(),
        AllocationPolicy::default(),
    )
    .expect("policy");
    // Every rotation goes to whichever of the two endpoints the chip is not on.
    let candidates = vec![s.candidate(0, 100), s.candidate(1, 100)];
    let old_ip: IpAddr = "203.0.113.1".parse().expect("ip");
    let new_ip: IpAddr = "198.51.100.2".parse().expect("ip");
    // Allocates `chip` and returns its lease, with a checker (or probe) that rotates the chip
    // while it runs and then answers `answer`.
    let allocate_rotating = async |chip: &ChipId, answer: fn() -> Result<IpAddr, ProxyError>| {
        let old = allocator
            .allocate(&ChipProxyRequest::new(tenant.clone(), chip.clone()))
            .await
            .expect("allocates");
        let rotating = RotatingDuringCheck {
            store: store.clone(),
            candidates: candidates.clone(),
            tenant: tenant.clone(),
            chip: chip.clone(),
            answer,
        };
        (old, rotating)
    };

    // 1. The connectivity check fails, but the chip was rotated while it ran.
    let chip = s.chip(1);
    let (old, checker) = allocate_rotating(&chip, || {
        Err(ProxyError::ProxyAuthRejected {
            proxy: "127.0.0.1:20000".into(),
        })
    })
    .await;
    let check = allocator
        .check_lease(&tenant, &chip, &checker, Some(&Passes(old_ip)))
        .await
        .expect("check ran");
    let (lease, result) = overtaken(check, &old, "check");
    assert_ne!(lease.endpoint, old.endpoint);
    assert!(matches!(result, Err(ProxyError::ProxyAuthRejected { .. })));
    let current = stored_lease(&*store, &tenant, &chip).await;
    assert!(
        current.health.is_healthy(),
        "the new lease is not marked with the old proxy's failure: {current:?}"
    );
    assert_eq!(current, lease);
    let history = store.history(&tenant, &chip).await.expect("history");
    assert!(
        history
            .iter()
            .all(|h| h.generation != lease.generation || matches!(h.event, HistoryEvent::Assigned)),
        "nothing but the assignment is recorded for the new generation: {history:?}"
    );

    // 2. The check passes, the chip is rotated while the egress IP is probed.
    let chip = s.chip(2);
    let (old, probe) = allocate_rotating(&chip, || Ok("203.0.113.1".parse().expect("ip"))).await;
    let check = allocator
        .check_lease(&tenant, &chip, &Passes(old_ip), Some(&probe))
        .await
        .expect("check ran");
    let (lease, _) = overtaken(check, &old, "probe");
    assert_eq!(
        lease.egress_ip, None,
        "the old proxy's egress IP is not the new lease's"
    );
    let history = store.history(&tenant, &chip).await.expect("history");
    assert!(
        !history
            .iter()
            .any(|h| matches!(h.event, HistoryEvent::EgressIpChanged { .. })),
        "no egress IP was recorded for either generation: {history:?}"
    );
    // The next check, through the new lease, sees its first IP: no false change.
    let check = allocator
        .check_lease(&tenant, &chip, &Passes(new_ip), Some(&Passes(new_ip)))
        .await
        .expect("check ran");
    let LeaseCheck::Recorded { lease, egress, .. } = check else {
        panic!("an undisturbed check is recorded, got {check:?}")
    };
    assert_eq!(
        egress.expect("probed").expect("ip"),
        EgressIpChange::First(new_ip)
    );
    assert_eq!(lease.egress_ip, Some(new_ip));
    assert_eq!(
        stored_lease(&*store, &tenant, &chip).await.egress_ip,
        Some(new_ip)
    );
}

/// Per-chip calls on a chip without a lease fail with `NotLeased`.
pub async fn chips_without_lease_are_not_leased(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let (tenant, chip) = (s.tenant(), s.chip(1));
    let ip: IpAddr = "203.0.113.1".parse().expect("ip");
    let results = [
        store.record_failure(&tenant, &chip, 1, t0()).await.err(),
        store.record_success(&tenant, &chip, 1).await.err(),
        store
            .set_lease_health(&tenant, &chip, 1, LeaseHealth::Healthy, t0())
            .await
            .err(),
        store
            .record_egress_ip(&tenant, &chip, 1, ip, t0())
            .await
            .err(),
    ];
    for err in results {
        assert!(matches!(err, Some(ProxyError::NotLeased { .. })), "{err:?}");
    }
    assert!(store.lease(&tenant, &chip).await.expect("read").is_none());
    assert!(
        store
            .history(&tenant, &chip)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(store.leases(Some(tenant)).await.expect("read").is_empty());
}

/// 1,000 chips allocated in parallel (each twice, concurrently) through a [`ProxyAllocator`]:
/// every chip gets one lease, both calls agree, and no endpoint exceeds the cap.
pub async fn parallel_allocation_respects_cap_and_stickiness(store: Arc<dyn LeaseStore>) {
    const CHIPS: usize = 1000;
    const CAP: u32 = 4;
    let s = Scope::new();
    let endpoints = CHIPS / CAP as usize + 10;
    let policy = AllocationPolicy {
        max_chips_per_endpoint: CAP,
        ..AllocationPolicy::default()
    };
    let allocator = Arc::new(
        ProxyAllocator::new(s.static_source(endpoints), store.clone(), policy).expect("policy"),
    );
    let tenants = [s.tenant(), s.tenant(), s.tenant()];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CHIPS * 2 {
        let allocator = allocator.clone();
        let request = ChipProxyRequest::new(tenants[(n / 2) % 3].clone(), s.chip(n / 2));
        tasks.spawn(async move { (n / 2, allocator.allocate(&request).await) });
    }
    let mut by_chip: HashMap<usize, EndpointId> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (chip, result) = joined.expect("task did not panic");
        let lease = result.unwrap_or_else(|err| panic!("chip {chip} got no lease: {err}"));
        if let Some(previous) = by_chip.insert(chip, lease.endpoint.clone()) {
            assert_eq!(
                previous, lease.endpoint,
                "chip {chip} got two different endpoints"
            );
        }
    }
    assert_eq!(by_chip.len(), CHIPS);
    let mut per_endpoint: HashMap<EndpointId, u32> = HashMap::new();
    let mut stored = 0;
    for tenant in &tenants {
        for lease in store.leases(Some(tenant.clone())).await.expect("list") {
            *per_endpoint.entry(lease.endpoint.clone()).or_default() += 1;
            stored += 1;
        }
    }
    assert_eq!(
        stored, CHIPS,
        "exactly one stored lease per chip, no double assignment"
    );
    for (endpoint, count) in &per_endpoint {
        assert!(
            *count <= CAP,
            "{endpoint} carries {count} chips, cap is {CAP}"
        );
    }
}

/// 100 chips race for 50 slots: exactly 50 win, the rest get `NoCapacity`.
pub async fn oversubscription_gives_exactly_the_capacity(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 5,
        ..AllocationPolicy::default()
    };
    let allocator =
        Arc::new(ProxyAllocator::new(s.static_source(10), store.clone(), policy).expect("policy"));
    let tenant = s.tenant();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let allocator = allocator.clone();
        let request = ChipProxyRequest::new(tenant.clone(), s.chip(n));
        tasks.spawn(async move { allocator.allocate(&request).await });
    }
    let (mut won, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task did not panic") {
            Ok(_) => won += 1,
            Err(ProxyError::NoCapacity { .. }) => refused += 1,
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
    assert_eq!((won, refused), (50, 50));
    assert_eq!(store.leases(Some(tenant)).await.expect("list").len(), 50);
}

/// Under tenant exclusivity, 8 tenants racing with 25 chips each for 6 endpoints never end up
/// sharing one: every endpoint carries leases of one tenant at most, and a refused chip is
/// refused with [`NoCapacityReason::AllBusy`].
pub async fn parallel_exclusivity_keeps_tenants_apart(store: Arc<dyn LeaseStore>) {
    const TENANTS: usize = 8;
    const CHIPS: usize = 25;
    const ENDPOINTS: usize = 6;
    let s = Scope::new();
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 1000,
        tenant_exclusive: true,
        ..AllocationPolicy::default()
    };
    let allocator = Arc::new(
        ProxyAllocator::new(s.static_source(ENDPOINTS), store.clone(), policy).expect("policy"),
    );
    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| s.tenant()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    // Interleave tenants so that they race from the first request on.
    for n in 0..TENANTS * CHIPS {
        let allocator = allocator.clone();
        let request = ChipProxyRequest::new(tenants[n % TENANTS].clone(), s.chip(n));
        tasks.spawn(async move { allocator.allocate(&request).await });
    }
    let mut won = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task did not panic") {
            Ok(_) => won += 1,
            Err(ProxyError::NoCapacity {
                reason: NoCapacityReason::AllBusy,
                ..
            }) => {}
            Err(err) => panic!("unexpected error: {err}"),
        }
    }
    let mut owners: HashMap<EndpointId, HashSet<TenantId>> = HashMap::new();
    let mut stored = 0;
    for tenant in &tenants {
        for lease in store.leases(Some(tenant.clone())).await.expect("list") {
            owners
                .entry(lease.endpoint.clone())
                .or_default()
                .insert(lease.tenant.clone());
            stored += 1;
        }
    }
    assert_eq!(stored, won, "one stored lease per successful allocation");
    assert!(won >= CHIPS, "at least one tenant got its chips placed");
    assert!(owners.len() <= ENDPOINTS);
    for (endpoint, tenants) in &owners {
        assert_eq!(
            tenants.len(),
            1,
            "{endpoint} is shared by tenants {tenants:?} under exclusivity"
        );
    }
}

/// On a gateway every chip gets its own session id, and keeps it.
pub async fn gateway_sessions_are_distinct_and_sticky(store: Arc<dyn LeaseStore>) {
    let s = Scope::new();
    let config = RotatingGatewayConfig::new(
        s.endpoint(0),
        ProxyAddress::parse("http://acme:s3cret@127.0.0.1:20999").expect("url"),
        UsernameTemplate::parse("user-{user}-session-{session}[-country-{country}]")
            .expect("template"),
    );
    let source = Arc::new(RotatingGatewaySource::new(config).expect("gateway"));
    let endpoint = source.endpoints().await.expect("endpoints")[0].clone();
    assert!(matches!(endpoint.kind, EndpointKind::Gateway(_)));
    let allocator =
        ProxyAllocator::new(source, store, AllocationPolicy::default()).expect("policy");
    let tenant = s.tenant();
    let mut sessions = HashSet::new();
    for n in 0..20 {
        let request = ChipProxyRequest::new(tenant.clone(), s.chip(n)).with_phone("5511999990000");
        let lease = allocator.allocate(&request).await.expect("allocates");
        let session = lease
            .session_id
            .clone()
            .expect("a gateway lease has a session");
        assert_eq!(lease.country, Some("BR".parse().expect("country")));
        assert!(
            sessions.insert(session),
            "two chips share a gateway session"
        );
        assert_eq!(allocator.allocate(&request).await.expect("again"), lease);
    }
}
