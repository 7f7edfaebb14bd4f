//! The allocation policy, through the public API, on the in-memory store.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use proxy_allocator::{
    Allocation, AllocationPolicy, AllocationRequest, ChainedSource, ChipProxyRequest, CountryMatch,
    EgressIpUpdate, EndpointId, EndpointLoad, FailureOutcome, HealthChecker, HealthReport,
    HistoryEvent, InMemoryLeaseStore, LeaseCheck, LeaseHealth, LeaseStore, LeaseUpdate,
    ManualClock, NoCapacityReason, ProxyAddress, ProxyAllocator, ProxyError, ProxyHistoryEntry,
    ProxyLease, ProxySource, RotatingGatewayConfig, RotatingGatewaySource, StaticListSource,
    UsernameTemplate,
};
use tenant_isolation::{ChipId, TenantId};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("tenant")
}

fn chip(name: &str) -> ChipId {
    ChipId::new(name).expect("chip")
}

fn fleet() -> Arc<dyn ProxySource> {
    Arc::new(
        StaticListSource::parse(
            "socks5://u:p%40ss@127.0.0.1:1081 country=BR id=br-1 labels=mobile\n\
             socks5://u:p%40ss@127.0.0.1:1082 country=BR id=br-2\n\
             http://u:secret@127.0.0.1:3128 country=PT id=pt-1\n\
             http://127.0.0.1:3129 id=any-1\n",
        )
        .expect("fleet"),
    )
}

fn allocator(source: Arc<dyn ProxySource>, policy: AllocationPolicy) -> ProxyAllocator {
    ProxyAllocator::new(source, Arc::new(InMemoryLeaseStore::new()), policy).expect("allocator")
}

/// The manual clocks' start.
fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Fixed HTTP endpoints with these ids, on loopback ports that are never contacted.
fn endpoints(ids: &[&str]) -> Arc<dyn ProxySource> {
    let lines: String = ids
        .iter()
        .enumerate()
        .map(|(n, id)| format!("http://127.0.0.1:{} id={id}\n", 4001 + n))
        .collect();
    Arc::new(StaticListSource::parse(&lines).expect("source"))
}

/// Rotation after `failures` consecutive failures, once a lease is `cooldown_secs` old.
fn rotating(failures: u32, cooldown_secs: u64) -> AllocationPolicy {
    AllocationPolicy {
        rotate_after_failures: failures,
        rotation_cooldown: Duration::from_secs(cooldown_secs),
        ..AllocationPolicy::default()
    }
}

#[tokio::test]
async fn country_is_preferred_from_the_phone_prefix() {
    let a = allocator(fleet(), AllocationPolicy::default());
    let t = tenant("acme");
    let pt = a
        .allocate(&ChipProxyRequest::new(t.clone(), chip("c1")).with_phone("+351 912 345 678"))
        .await
        .expect("allocates");
    assert_eq!(pt.endpoint.as_str(), "pt-1");
    let br: Vec<_> = allocate_in_order(
        ["c2", "c3"].map(|c| ChipProxyRequest::new(t.clone(), chip(c)).with_phone("5511999999999")),
        &a,
    )
    .await;
    assert_eq!(
        br,
        ["br-1", "br-2"],
        "Brazilian chips spread over Brazilian endpoints"
    );
    // An explicit country wins over the phone.
    let explicit = a
        .allocate(
            &ChipProxyRequest::new(t.clone(), chip("c4"))
                .with_phone("5511999999999")
                .with_country("PT".parse().expect("country")),
        )
        .await
        .expect("allocates");
    assert_eq!(explicit.endpoint.as_str(), "pt-1");
}

async fn allocate_in_order<const N: usize>(
    requests: [ChipProxyRequest; N],
    allocator: &ProxyAllocator,
) -> Vec<String> {
    let mut out = Vec::new();
    for request in requests {
        out.push(
            allocator
                .allocate(&request)
                .await
                .expect("allocates")
                .endpoint
                .to_string(),
        );
    }
    out
}

#[tokio::test]
async fn prefer_falls_back_and_require_refuses() {
    let policy = AllocationPolicy {
        max_chips_per_endpoint: 1,
        ..AllocationPolicy::default()
    };
    let prefer = allocator(fleet(), policy.clone());
    let t = tenant("acme");
    let us = |c: &str| ChipProxyRequest::new(t.clone(), chip(c)).with_phone("+1 415 555 0100");
    prefer
        .allocate(&us("c1"))
        .await
        .expect("falls back to another country");
    let require = allocator(
        fleet(),
        AllocationPolicy {
            country_match: CountryMatch::Require,
            ..policy
        },
    );
    let err = require
        .allocate(&us("c1"))
        .await
        .expect_err("no US endpoint");
    assert!(
        matches!(
            err,
            ProxyError::NoCapacity {
                reason: NoCapacityReason::NoMatchingEndpoint,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let br = |c: &str| ChipProxyRequest::new(t.clone(), chip(c)).with_phone("5511999999999");
    require.allocate(&br("c3")).await.expect("first BR slot");
    require.allocate(&br("c4")).await.expect("second BR slot");
    let err = require
        .allocate(&br("c5"))
        .await
        .expect_err("Brazil is full");
    assert!(
        matches!(
            err,
            ProxyError::NoCapacity {
                reason: NoCapacityReason::AllBusy,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let unknown = ChipProxyRequest::new(t.clone(), chip("c2"));
    let lease = require
        .allocate(&unknown)
        .await
        .expect("an unknown country may use any endpoint");
    assert!(["pt-1", "any-1"].contains(&lease.endpoint.as_str()));
}

#[tokio::test]
async fn labels_restrict_the_candidates() {
    let a = allocator(fleet(), AllocationPolicy::default());
    let lease = a
        .allocate(&ChipProxyRequest::new(tenant("acme"), chip("c1")).with_label("mobile"))
        .await
        .expect("allocates");
    assert_eq!(lease.endpoint.as_str(), "br-1");
    let err = a
        .allocate(&ChipProxyRequest::new(tenant("acme"), chip("c2")).with_label("satellite"))
        .await
        .expect_err("no such label");
    assert!(matches!(err, ProxyError::NoCapacity { .. }));
}

#[tokio::test]
async fn tenant_exclusivity_keeps_tenants_apart() {
    let source = endpoints(&["a", "b"]);
    let a = allocator(
        source,
        AllocationPolicy {
            tenant_exclusive: true,
            max_chips_per_endpoint: 10,
            ..AllocationPolicy::default()
        },
    );
    let first = a
        .allocate(&ChipProxyRequest::new(tenant("one"), chip("c1")))
        .await
        .expect("allocates");
    let second = a
        .allocate(&ChipProxyRequest::new(tenant("two"), chip("c1")))
        .await
        .expect("allocates");
    assert_ne!(first.endpoint, second.endpoint);
    let err = a
        .allocate(&ChipProxyRequest::new(tenant("three"), chip("c1")))
        .await
        .expect_err("both endpoints are taken by other tenants");
    assert!(matches!(err, ProxyError::NoCapacity { .. }));
    let same = a
        .allocate(&ChipProxyRequest::new(tenant("one"), chip("c2")))
        .await
        .expect("a tenant shares with itself");
    assert_eq!(same.endpoint, first.endpoint);
}

#[tokio::test]
async fn rotation_needs_repeated_failures_and_a_cooldown() {
    let clock = Arc::new(ManualClock::new(start()));
    let source = endpoints(&["a", "b"]);
    let policy = rotating(3, 600);
    let a = allocator(source, policy).with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let first = a.allocate(&request).await.expect("allocates");
    assert_eq!(first.endpoint.as_str(), "a");

    for expected in 1..=2 {
        match a
            .report_failure(&request, first.generation)
            .await
            .expect("counted")
        {
            FailureOutcome::Counted { lease } => assert_eq!(lease.consecutive_failures, expected),
            other => panic!("expected Counted, got {other:?}"),
        }
    }
    match a
        .report_failure(&request, first.generation)
        .await
        .expect("cooling down")
    {
        FailureOutcome::CoolingDown { until, .. } => {
            assert_eq!(until, start() + Duration::from_secs(600));
        }
        other => panic!("a young lease must not rotate, got {other:?}"),
    }
    // A success resets the count; failures must be consecutive.
    let reset = a
        .report_success(&request.tenant, &request.chip, first.generation)
        .await
        .expect("success");
    assert!(reset.is_applied());
    assert_eq!(reset.lease().consecutive_failures, 0);
    clock.advance(Duration::from_secs(601));
    for _ in 0..2 {
        assert!(matches!(
            a.report_failure(&request, first.generation)
                .await
                .expect("counted"),
            FailureOutcome::Counted { .. }
        ));
    }
    let FailureOutcome::Rotated { from, to } = a
        .report_failure(&request, first.generation)
        .await
        .expect("rotates")
    else {
        panic!("the third consecutive failure after the cooldown rotates");
    };
    assert_eq!((from.endpoint.as_str(), to.endpoint.as_str()), ("a", "b"));
    assert_eq!(to.generation, 2);
    assert_eq!(
        a.allocate(&request).await.expect("sticky"),
        to,
        "the new lease is sticky"
    );

    // b fails too, after its own cooldown: a was left less than a cooldown ago... no longer.
    clock.advance(Duration::from_secs(601));
    for _ in 0..2 {
        a.report_failure(&request, to.generation)
            .await
            .expect("counted");
    }
    let FailureOutcome::Rotated { to: back, .. } = a
        .report_failure(&request, to.generation)
        .await
        .expect("rotates")
    else {
        panic!("rotates back to a once a's avoidance window has passed");
    };
    assert_eq!(back.endpoint.as_str(), "a");

    let history = a
        .history(&request.tenant, &request.chip)
        .await
        .expect("history");
    let trail: Vec<_> = history
        .iter()
        .map(|h| {
            (
                h.endpoint.to_string(),
                h.generation,
                matches!(h.event, HistoryEvent::Assigned),
            )
        })
        .collect();
    assert_eq!(
        trail,
        vec![
            ("a".into(), 1, true),
            ("a".into(), 1, false),
            ("b".into(), 2, true),
            ("b".into(), 2, false),
            ("a".into(), 3, true),
        ],
        "the chip's proxy history is kept"
    );
}

/// `ProxyAllocator::prune_history` applies the store's age limit as of the allocator's clock:
/// what is older than 90 days goes, newer history stays, and a chip deleted and created again
/// after its history went keeps counting its generations (a late failure about its old lease
/// is `Superseded`).
#[tokio::test]
async fn pruning_history_keeps_generations_and_recent_entries() {
    let clock = Arc::new(ManualClock::new(start()));
    let a = allocator(endpoints(&["a", "b"]), rotating(1, 0)).with_clock(clock.clone());
    let old = ChipProxyRequest::new(tenant("acme"), chip("old"));
    let first = a.allocate(&old).await.expect("allocates");
    let FailureOutcome::Rotated { to: second, .. } = a
        .report_failure(&old, first.generation)
        .await
        .expect("rotates")
    else {
        panic!("one failure rotates under this policy");
    };
    a.release(&old.tenant, &old.chip)
        .await
        .expect("release")
        .expect("the chip held a lease");
    assert_eq!(
        a.prune_history().await.expect("prune"),
        0,
        "nothing is old yet"
    );

    clock.advance(Duration::from_secs(60 * 86_400));
    let young = ChipProxyRequest::new(tenant("acme"), chip("young"));
    a.allocate(&young).await.expect("allocates");
    clock.advance(Duration::from_secs(31 * 86_400));
    assert_eq!(
        a.prune_history().await.expect("prune"),
        4,
        "the old chip's 91-day-old entries: assigned, rotated away, assigned, released"
    );
    assert!(
        a.history(&old.tenant, &old.chip)
            .await
            .expect("history")
            .is_empty()
    );
    assert_eq!(
        a.history(&young.tenant, &young.chip)
            .await
            .expect("history")
            .len(),
        1,
        "31 days old: kept"
    );

    let again = a.allocate(&old).await.expect("allocates again");
    assert_eq!(again.generation, second.generation + 1);
    assert_eq!(
        a.report_failure(&old, second.generation)
            .await
            .expect("report"),
        FailureOutcome::Superseded {
            lease: again.clone()
        },
        "a late failure about the deleted chip's lease is not the new lease's"
    );
}

/// A failure reported on a generation the chip has already left (another replica rotated it)
/// is not counted against the new lease and rotates nothing.
#[tokio::test]
async fn a_failure_on_a_superseded_lease_is_not_counted_against_the_new_one() {
    let clock = Arc::new(ManualClock::new(start()));
    let source = endpoints(&["a", "b"]);
    let policy = rotating(1, 1);
    let store = Arc::new(InMemoryLeaseStore::new());
    let replica = || {
        ProxyAllocator::new(source.clone(), store.clone(), policy.clone())
            .expect("allocator")
            .with_clock(clock.clone())
    };
    let (a, b) = (replica(), replica());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let old = a.allocate(&request).await.expect("allocates");
    clock.advance(Duration::from_secs(5));
    // Replica b sees the chip's session fail and rotates it to endpoint b.
    let FailureOutcome::Rotated { to: new, .. } = b
        .report_failure(&request, old.generation)
        .await
        .expect("rotates")
    else {
        panic!("b rotates the chip");
    };
    // Replica a, still on the old lease, reports the same outage late.
    let outcome = a
        .report_failure(&request, old.generation)
        .await
        .expect("outcome");
    assert_eq!(outcome, FailureOutcome::Superseded { lease: new.clone() });
    let current = a
        .lease(&request.tenant, &request.chip)
        .await
        .expect("read")
        .expect("leased");
    assert_eq!(current, new, "not counted, not rotated again");
    assert_eq!(current.consecutive_failures, 0);
    // A late success on the old proxy does not reset the new one's count either.
    let counted = a
        .report_failure(&request, new.generation)
        .await
        .expect("outcome");
    assert!(
        matches!(counted, FailureOutcome::CoolingDown { ref lease, .. } if lease.consecutive_failures == 1),
        "the new lease is young: counted, kept: {counted:?}"
    );
    let late = a
        .report_success(&request.tenant, &request.chip, old.generation)
        .await
        .expect("outcome");
    assert!(!late.is_applied());
    assert_eq!(late.lease().consecutive_failures, 1);
}

/// A store that lets another replica rotate the chip between this allocator counting a failure
/// and its own rotation reaching the store: the window in which the allocator's view goes stale.
struct AnotherReplicaRotatesFirst {
    inner: InMemoryLeaseStore,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl LeaseStore for AnotherReplicaRotatesFirst {
    async fn lease(&self, t: &TenantId, c: &ChipId) -> Result<Option<ProxyLease>, ProxyError> {
        self.inner.lease(t, c).await
    }
    async fn allocate(&self, request: AllocationRequest) -> Result<Allocation, ProxyError> {
        if request.replace.is_some() && self.armed.swap(false, Ordering::SeqCst) {
            // The other replica's rotation of the same generation commits first.
            let theirs = self.inner.allocate(request.clone()).await?;
            assert!(matches!(theirs, Allocation::Rotated(_)), "{theirs:?}");
        }
        self.inner.allocate(request).await
    }
    async fn release(
        &self,
        t: &TenantId,
        c: &ChipId,
        now: SystemTime,
    ) -> Result<Option<ProxyLease>, ProxyError> {
        self.inner.release(t, c, now).await
    }
    async fn record_failure(
        &self,
        t: &TenantId,
        c: &ChipId,
        generation: u64,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.inner.record_failure(t, c, generation, now).await
    }
    async fn record_success(
        &self,
        t: &TenantId,
        c: &ChipId,
        generation: u64,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.inner.record_success(t, c, generation).await
    }
    async fn set_lease_health(
        &self,
        t: &TenantId,
        c: &ChipId,
        generation: u64,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<LeaseUpdate, ProxyError> {
        self.inner
            .set_lease_health(t, c, generation, health, now)
            .await
    }
    async fn set_endpoint_health(
        &self,
        e: &EndpointId,
        health: LeaseHealth,
        now: SystemTime,
    ) -> Result<u64, ProxyError> {
        self.inner.set_endpoint_health(e, health, now).await
    }
    async fn record_egress_ip(
        &self,
        t: &TenantId,
        c: &ChipId,
        generation: u64,
        ip: IpAddr,
        now: SystemTime,
    ) -> Result<EgressIpUpdate, ProxyError> {
        self.inner.record_egress_ip(t, c, generation, ip, now).await
    }
    async fn leases(&self, t: Option<TenantId>) -> Result<Vec<ProxyLease>, ProxyError> {
        self.inner.leases(t).await
    }
    async fn leases_on_endpoint(&self, e: &EndpointId) -> Result<Vec<ProxyLease>, ProxyError> {
        self.inner.leases_on_endpoint(e).await
    }
    async fn endpoint_loads(&self) -> Result<Vec<EndpointLoad>, ProxyError> {
        self.inner.endpoint_loads().await
    }
    async fn history(
        &self,
        t: &TenantId,
        c: &ChipId,
    ) -> Result<Vec<ProxyHistoryEntry>, ProxyError> {
        self.inner.history(t, c).await
    }
    async fn prune_history(&self, now: SystemTime) -> Result<u64, ProxyError> {
        self.inner.prune_history(now).await
    }
    async fn purge_tenant(&self, t: &TenantId) -> Result<u64, ProxyError> {
        self.inner.purge_tenant(t).await
    }
}

/// When another replica's rotation lands after this call counted the failure but before its own
/// rotation, this call reports `Superseded` with the other replica's lease, not `Rotated`: it did
/// not move the chip (and the rotation metric is not counted twice).
#[tokio::test]
async fn a_rotation_that_loses_the_race_reports_superseded_not_rotated() {
    let clock = Arc::new(ManualClock::new(start()));
    let source = endpoints(&["a", "b", "c"]);
    let policy = rotating(1, 1);
    let store = Arc::new(AnotherReplicaRotatesFirst {
        inner: InMemoryLeaseStore::new(),
        armed: false.into(),
    });
    let a = ProxyAllocator::new(source, store.clone(), policy)
        .expect("allocator")
        .with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let lease = a.allocate(&request).await.expect("allocates");
    clock.advance(Duration::from_secs(5));
    store.armed.store(true, Ordering::SeqCst);
    let outcome = a
        .report_failure(&request, lease.generation)
        .await
        .expect("outcome");
    let current = a
        .lease(&request.tenant, &request.chip)
        .await
        .expect("read")
        .expect("leased");
    assert_eq!(current.generation, lease.generation + 1);
    assert_eq!(
        outcome,
        FailureOutcome::Superseded { lease: current },
        "the other replica rotated; this call did not"
    );
    let rotations = a
        .history(&request.tenant, &request.chip)
        .await
        .expect("history")
        .iter()
        .filter(|h| matches!(h.event, HistoryEvent::RotatedAway { .. }))
        .count();
    assert_eq!(rotations, 1, "the chip was rotated once");
}

#[tokio::test]
async fn rotation_without_an_alternative_keeps_the_lease() {
    let clock = Arc::new(ManualClock::new(start()));
    let source = endpoints(&["only"]);
    let policy = rotating(1, 1);
    let a = allocator(source, policy).with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let lease = a.allocate(&request).await.expect("allocates");
    clock.advance(Duration::from_secs(5));
    match a
        .report_failure(&request, lease.generation)
        .await
        .expect("outcome")
    {
        FailureOutcome::NoAlternative { lease: kept, .. } => {
            assert_eq!(kept.endpoint, lease.endpoint)
        }
        other => panic!("expected NoAlternative, got {other:?}"),
    }
    assert_eq!(
        a.lease(&request.tenant, &request.chip)
            .await
            .expect("read")
            .map(|l| l.endpoint),
        Some(lease.endpoint)
    );
}

#[tokio::test]
async fn gateway_rotation_changes_the_session_and_the_user_name() {
    let clock = Arc::new(ManualClock::new(start()));
    let mut config = RotatingGatewayConfig::new(
        "residential".parse().expect("id"),
        "http://acme:p%40ss%3Aw%2Frd@127.0.0.1:823"
            .parse()
            .expect("url"),
        UsernameTemplate::parse("user-{user}-session-{session}[-country-{country}]")
            .expect("template"),
    );
    config.countries = Some(["BR".parse().expect("country")].into());
    let source = Arc::new(RotatingGatewaySource::new(config).expect("gateway"));
    let a = allocator(source, rotating(1, 1)).with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1")).with_phone("5511999999999");
    let lease = a.allocate(&request).await.expect("allocates");
    let waha = a.waha_proxy(&lease).await.expect("waha proxy");
    let session = lease.session_id.clone().expect("session");
    assert_eq!(waha.server, "127.0.0.1:823");
    assert_eq!(
        waha.username.as_deref(),
        Some(format!("user-acme-session-{session}-country-br").as_str())
    );
    assert_eq!(
        waha.password.as_ref().map(|p| p.expose_secret()),
        Some("p@ss:w/rd")
    );
    let json = serde_json::to_value(&waha).expect("json");
    assert_eq!(
        json["password"], "p@ss:w/rd",
        "WAHA receives the password intact"
    );
    assert!(!format!("{waha:?} {lease:?} {a:?}").contains("p@ss"));

    clock.advance(Duration::from_secs(2));
    let FailureOutcome::Rotated { to, .. } = a
        .report_failure(&request, lease.generation)
        .await
        .expect("rotates")
    else {
        panic!("a gateway lease rotates to a new session");
    };
    assert_eq!(to.endpoint, lease.endpoint, "same gateway");
    assert_ne!(
        to.session_id, lease.session_id,
        "new session, new egress IP"
    );

    // A chip from a country the gateway does not serve gets no country in its user name.
    let pt = ChipProxyRequest::new(tenant("acme"), chip("c2")).with_phone("351912345678");
    let lease = a.allocate(&pt).await.expect("allocates");
    assert_eq!(lease.country, None);
    let user = a
        .waha_proxy(&lease)
        .await
        .expect("waha")
        .username
        .expect("user");
    assert!(!user.contains("country"), "{user}");
}

#[tokio::test]
async fn release_on_chip_deletion_frees_the_slot() {
    let source = endpoints(&["only"]);
    let a = allocator(
        source,
        AllocationPolicy {
            max_chips_per_endpoint: 1,
            ..AllocationPolicy::default()
        },
    );
    let one = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let two = ChipProxyRequest::new(tenant("acme"), chip("c2"));
    a.allocate(&one).await.expect("allocates");
    assert!(a.allocate(&two).await.is_err());
    assert!(
        a.release(&one.tenant, &one.chip)
            .await
            .expect("release")
            .is_some()
    );
    assert!(
        a.release(&one.tenant, &one.chip)
            .await
            .expect("idempotent")
            .is_none()
    );
    a.allocate(&two).await.expect("the slot is free again");
}

#[tokio::test]
async fn a_removed_endpoint_moves_the_chip() {
    let store = Arc::new(InMemoryLeaseStore::new());
    let before: Arc<dyn ProxySource> =
        Arc::new(StaticListSource::parse("http://127.0.0.1:4001 id=old\n").expect("source"));
    let after: Arc<dyn ProxySource> =
        Arc::new(StaticListSource::parse("http://127.0.0.1:4002 id=new\n").expect("source"));
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let a = ProxyAllocator::new(before, store.clone(), AllocationPolicy::default()).expect("a");
    let old = a.allocate(&request).await.expect("allocates");
    let b = ProxyAllocator::new(after, store, AllocationPolicy::default()).expect("b");
    let err = b.waha_proxy(&old).await.expect_err("gone");
    assert!(matches!(err, ProxyError::EndpointGone { .. }));
    let moved = b.allocate(&request).await.expect("moves");
    assert_eq!(moved.endpoint.as_str(), "new");
    assert_eq!(moved.generation, old.generation + 1);
}

#[tokio::test]
async fn chained_sources_and_invalid_policies() {
    let gateway = RotatingGatewaySource::new(RotatingGatewayConfig::new(
        "any-1".parse().expect("id"),
        "http://a:b@127.0.0.1:823".parse().expect("url"),
        UsernameTemplate::parse("{user}-{session}").expect("template"),
    ))
    .expect("gateway");
    let chained = ChainedSource::new().with(fleet()).with(Arc::new(gateway));
    let err = chained.endpoints().await.expect_err("duplicate id any-1");
    assert!(matches!(err, ProxyError::InvalidConfig { .. }));
    let bad = AllocationPolicy {
        max_chips_per_endpoint: 0,
        ..AllocationPolicy::default()
    };
    assert!(ProxyAllocator::new(fleet(), Arc::new(InMemoryLeaseStore::new()), bad).is_err());
    let empty: Arc<dyn ProxySource> = Arc::new(StaticListSource::parse("").expect("empty"));
    let err = allocator(empty, AllocationPolicy::default())
        .allocate(&ChipProxyRequest::new(tenant("acme"), chip("c1")))
        .await
        .expect_err("nothing to allocate");
    assert!(matches!(
        err,
        ProxyError::NoCapacity {
            reason: NoCapacityReason::NoEndpoints,
            ..
        }
    ));
}

/// A custom checker whose answer depends on the proxy's port (see [`endpoints`]: 4001, 4002,
/// ...): the first endpoint's check hits the checker's own store, the second is misconfigured,
/// the third's proxy is down.
struct ByPort;

#[async_trait::async_trait]
impl HealthChecker for ByPort {
    async fn check(&self, proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        match proxy.port() {
            4001 => Err(ProxyError::Store {
                operation: "read the check schedule",
                source: Box::new(std::io::Error::other("database down")),
            }),
            4002 => Err(ProxyError::InvalidConfig {
                reason: "no check target configured".into(),
            }),
            4003 => Err(ProxyError::ProxyUnreachable {
                proxy: proxy.host_port(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            }),
            _ => Ok(HealthReport {
                latency: Duration::from_millis(1),
            }),
        }
    }
}

/// Only a proxy failure (`ProxyError::is_proxy_failure`) marks an endpoint or a lease
/// unhealthy. A custom checker's store or configuration error says nothing about the proxy: it
/// is handed back to the caller, and the endpoint stays in allocation.
#[tokio::test]
async fn only_proxy_failures_change_health() {
    let a = allocator(endpoints(&["a", "b", "c"]), AllocationPolicy::default());
    let t = tenant("acme");
    let mut on = std::collections::HashMap::new();
    for n in 0..3 {
        let lease = a
            .allocate(&ChipProxyRequest::new(t.clone(), chip(&format!("c{n}"))))
            .await
            .expect("allocates");
        on.insert(lease.endpoint.as_str().to_owned(), lease);
    }
    assert_eq!(on.len(), 3, "one chip per endpoint: {on:?}");

    let checks = a.check_endpoints(&ByPort).await.expect("checks ran");
    for check in &checks {
        match check.endpoint.as_str() {
            "a" => assert!(matches!(check.result, Err(ProxyError::Store { .. }))),
            "b" => assert!(matches!(
                check.result,
                Err(ProxyError::InvalidConfig { .. })
            )),
            "c" => assert!(matches!(
                check.result,
                Err(ProxyError::ProxyUnreachable { .. })
            )),
            other => panic!("unexpected endpoint {other}"),
        }
        let expected = u64::from(check.endpoint.as_str() == "c");
        assert_eq!(check.leases_changed, expected, "{check:?}");
    }
    for load in a.store().endpoint_loads().await.expect("loads") {
        assert_eq!(
            load.health.is_healthy(),
            load.endpoint.as_str() != "c",
            "{load:?}"
        );
    }
    for (endpoint, lease) in &on {
        let now = a
            .lease(&t, &lease.chip)
            .await
            .expect("read")
            .expect("leased");
        assert_eq!(now.health.is_healthy(), endpoint != "c", "{now:?}");
    }
    // The endpoints whose check could not run still take chips; the failing one does not.
    for n in 3..7 {
        let lease = a
            .allocate(&ChipProxyRequest::new(t.clone(), chip(&format!("c{n}"))))
            .await
            .expect("allocates");
        assert_ne!(lease.endpoint.as_str(), "c", "{lease:?}");
    }

    // One lease: the checker's own error is this call's error and changes nothing.
    let lease = on["a"].clone();
    let err = a
        .check_lease(&t, &lease.chip, &ByPort, None)
        .await
        .expect_err("the checker's store error is returned");
    assert!(matches!(err, ProxyError::Store { .. }), "{err:?}");
    let lease_b = on["b"].clone();
    let err = a
        .check_lease(&t, &lease_b.chip, &ByPort, None)
        .await
        .expect_err("the checker's configuration error is returned");
    assert!(matches!(err, ProxyError::InvalidConfig { .. }), "{err:?}");
    for lease in [&lease, &lease_b] {
        let now = a
            .lease(&t, &lease.chip)
            .await
            .expect("read")
            .expect("leased");
        assert_eq!(&now, lease, "the lease is unchanged");
        let history = a.history(&t, &lease.chip).await.expect("history");
        assert_eq!(
            history.iter().map(|h| &h.event).collect::<Vec<_>>(),
            vec![&HistoryEvent::Assigned],
            "no health event for a check that could not run"
        );
    }
    // A proxy failure through one lease still marks it.
    let check = a
        .check_lease(&t, &on["c"].chip, &ByPort, None)
        .await
        .expect("check ran");
    let LeaseCheck::Recorded { lease, result, .. } = check else {
        panic!("nothing rotated the chip: {check:?}")
    };
    assert!(matches!(result, Err(ProxyError::ProxyUnreachable { .. })));
    assert!(!lease.health.is_healthy());
}

#[cfg(feature = "mock")]
#[tokio::test]
async fn mocks_plug_into_the_allocator() {
    use proxy_allocator::{MockLeaseStore, MockProxySource};
    let mut source = MockProxySource::new();
    source.expect_endpoints().returning(|| {
        Err(ProxyError::SourceFile {
            path: "/etc/proxies.txt".into(),
            source: std::io::Error::other("gone"),
        })
    });
    let store = MockLeaseStore::new();
    let a = ProxyAllocator::new(
        Arc::new(source),
        Arc::new(store),
        AllocationPolicy::default(),
    )
    .expect("allocator");
    let err = a
        .allocate(&ChipProxyRequest::new(tenant("acme"), chip("c1")))
        .await
        .expect_err("source fails");
    assert!(matches!(err, ProxyError::SourceFile { .. }));
}

/// A checker whose target is down: every proxy answers, but none can tunnel to it.
struct TargetDown;

#[async_trait::async_trait]
impl HealthChecker for TargetDown {
    async fn check(&self, proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        Err(ProxyError::ProxyUnreachable {
            proxy: proxy.host_port(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        })
    }
}

/// The first endpoint's check hits the checker's own store; every other proxy cannot reach
/// the target.
struct StoreThenDown;

#[async_trait::async_trait]
impl HealthChecker for StoreThenDown {
    async fn check(&self, proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        if proxy.port() == 4001 {
            return Err(ProxyError::Store {
                operation: "read the check schedule",
                source: Box::new(std::io::Error::other("database down")),
            });
        }
        TargetDown.check(proxy).await
    }
}

/// Every endpoint failing in one pass says more about the checker or its target than about the
/// proxies: nothing is recorded, every endpoint keeps taking new chips, no lease changes. One
/// endpoint failing alone still counts.
#[tokio::test]
async fn every_endpoint_failing_at_once_records_nothing() {
    let a = allocator(endpoints(&["a", "b", "c"]), AllocationPolicy::default());
    let t = tenant("acme");
    let lease = a
        .allocate(&ChipProxyRequest::new(t.clone(), chip("c0")))
        .await
        .expect("allocates");
    let checks = a.check_endpoints(&TargetDown).await.expect("checks ran");
    assert_eq!(checks.len(), 3);
    for check in &checks {
        assert!(!check.recorded, "{check:?}");
        assert_eq!(check.leases_changed, 0, "{check:?}");
        assert!(check.result.is_err(), "{check:?}");
    }
    for load in a.store().endpoint_loads().await.expect("loads") {
        assert!(load.health.is_healthy(), "{load:?}");
    }
    let now = a
        .lease(&t, &lease.chip)
        .await
        .expect("read")
        .expect("leased");
    assert!(now.health.is_healthy(), "{now:?}");
    for n in 1..4 {
        a.allocate(&ChipProxyRequest::new(t.clone(), chip(&format!("c{n}"))))
            .await
            .expect("every endpoint still takes chips");
    }

    // One endpoint erring for another reason does not hide a dead target: no check passed,
    // two failed as proxy failures, nothing is recorded.
    let mixed = allocator(endpoints(&["a", "b", "c"]), AllocationPolicy::default());
    for n in 0..3 {
        mixed
            .allocate(&ChipProxyRequest::new(t.clone(), chip(&format!("m{n}"))))
            .await
            .expect("allocates");
    }
    let checks = mixed
        .check_endpoints(&StoreThenDown)
        .await
        .expect("checks ran");
    assert!(checks.iter().all(|c| !c.recorded), "{checks:?}");
    for load in mixed.store().endpoint_loads().await.expect("loads") {
        assert!(load.health.is_healthy(), "{load:?}");
    }

    // With one endpoint the pass cannot tell the checker from the proxy: it records.
    let single = allocator(endpoints(&["a"]), AllocationPolicy::default());
    let checks = single
        .check_endpoints(&TargetDown)
        .await
        .expect("checks ran");
    assert!(checks[0].recorded, "{:?}", checks[0]);
}
