//! The allocation policy, through the public API, on the in-memory store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proxy_allocator::{
    AllocationPolicy, ChainedSource, ChipProxyRequest, CountryMatch, FailureOutcome, HistoryEvent,
    InMemoryLeaseStore, ManualClock, NoCapacityReason, ProxyAllocator, ProxyError, ProxySource,
    RotatingGatewayConfig, RotatingGatewaySource, StaticListSource, UsernameTemplate,
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
    let source: Arc<dyn ProxySource> = Arc::new(
        StaticListSource::parse("http://127.0.0.1:4001 id=a\nhttp://127.0.0.1:4002 id=b\n")
            .expect("source"),
    );
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
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let source: Arc<dyn ProxySource> = Arc::new(
        StaticListSource::parse("http://127.0.0.1:4001 id=a\nhttp://127.0.0.1:4002 id=b\n")
            .expect("source"),
    );
    let policy = AllocationPolicy {
        rotate_after_failures: 3,
        rotation_cooldown: Duration::from_secs(600),
        ..AllocationPolicy::default()
    };
    let a = allocator(source, policy).with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let first = a.allocate(&request).await.expect("allocates");
    assert_eq!(first.endpoint.as_str(), "a");

    for expected in 1..=2 {
        match a.report_failure(&request).await.expect("counted") {
            FailureOutcome::Counted { lease } => assert_eq!(lease.consecutive_failures, expected),
            other => panic!("expected Counted, got {other:?}"),
        }
    }
    match a.report_failure(&request).await.expect("cooling down") {
        FailureOutcome::CoolingDown { until, .. } => {
            assert_eq!(until, start + Duration::from_secs(600));
        }
        other => panic!("a young lease must not rotate, got {other:?}"),
    }
    // A success resets the count; failures must be consecutive.
    a.report_success(&request.tenant, &request.chip)
        .await
        .expect("success");
    clock.advance(Duration::from_secs(601));
    for _ in 0..2 {
        assert!(matches!(
            a.report_failure(&request).await.expect("counted"),
            FailureOutcome::Counted { .. }
        ));
    }
    let FailureOutcome::Rotated { from, to } = a.report_failure(&request).await.expect("rotates")
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
        a.report_failure(&request).await.expect("counted");
    }
    let FailureOutcome::Rotated { to: back, .. } =
        a.report_failure(&request).await.expect("rotates")
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

#[tokio::test]
async fn rotation_without_an_alternative_keeps_the_lease() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = Arc::new(ManualClock::new(start));
    let source: Arc<dyn ProxySource> =
        Arc::new(StaticListSource::parse("http://127.0.0.1:4001 id=only\n").expect("source"));
    let policy = AllocationPolicy {
        rotate_after_failures: 1,
        rotation_cooldown: Duration::from_secs(1),
        ..AllocationPolicy::default()
    };
    let a = allocator(source, policy).with_clock(clock.clone());
    let request = ChipProxyRequest::new(tenant("acme"), chip("c1"));
    let lease = a.allocate(&request).await.expect("allocates");
    clock.advance(Duration::from_secs(5));
    match a.report_failure(&request).await.expect("outcome") {
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
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = Arc::new(ManualClock::new(start));
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
    let a = allocator(
        source,
        AllocationPolicy {
            rotate_after_failures: 1,
            rotation_cooldown: Duration::from_secs(1),
            ..AllocationPolicy::default()
        },
    )
    .with_clock(clock.clone());
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
        waha.password.as_ref().map(|p| p.expose()),
        Some("p@ss:w/rd")
    );
    let json = serde_json::to_value(&waha).expect("json");
    assert_eq!(
        json["password"], "p@ss:w/rd",
        "WAHA receives the password intact"
    );
    assert!(!format!("{waha:?} {lease:?} {a:?}").contains("p@ss"));

    clock.advance(Duration::from_secs(2));
    let FailureOutcome::Rotated { to, .. } = a.report_failure(&request).await.expect("rotates")
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
    let source: Arc<dyn ProxySource> =
        Arc::new(StaticListSource::parse("http://127.0.0.1:4001 id=only\n").expect("source"));
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
