//! Property tests: session names and namespaces round-trip, never collide, refuse the rest.

use proptest::prelude::*;
use tenant_isolation::{
    ChipId, Error, ScopedName, SessionName, SessionNameRejection, StoreKind, TenantId,
    TenantNamespace,
};

fn tenant_id() -> impl Strategy<Value = TenantId> {
    "[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?"
        .prop_map(|s| TenantId::new(s).expect("strategy makes valid ids"))
}

fn chip_id() -> impl Strategy<Value = ChipId> {
    "[a-z0-9]([a-z0-9-]{0,24}[a-z0-9])?"
        .prop_map(|s| ChipId::new(s).expect("strategy makes valid ids"))
}

fn refusal(input: &str) -> SessionNameRejection {
    match SessionName::parse(input) {
        Err(Error::InvalidSessionName { reason, .. }) => reason,
        other => panic!("{input:?} must be refused, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn session_names_round_trip(t in tenant_id(), c in chip_id()) {
        let name = SessionName::new(&t, &c);
        prop_assert!(name.as_str().chars().count() <= 54);
        prop_assert!(name.as_str().starts_with("cf_"));
        prop_assert!(name.as_str().chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'));
        let parsed = SessionName::parse(name.as_str()).expect("own names parse");
        prop_assert_eq!(parsed.tenant(), &t);
        prop_assert_eq!(parsed.chip(), &c);
        prop_assert_eq!(&parsed, &name);
        let json = serde_json::to_string(&name).expect("serialize");
        let back: SessionName = serde_json::from_str(&json).expect("deserialize");
        prop_assert_eq!(back, name);
    }

    #[test]
    fn session_names_never_collide(t1 in tenant_id(), c1 in chip_id(), t2 in tenant_id(), c2 in chip_id()) {
        let (a, b) = (SessionName::new(&t1, &c1), SessionName::new(&t2, &c2));
        prop_assert_eq!(a.as_str() == b.as_str(), t1 == t2 && c1 == c2);
    }

    #[test]
    fn shifting_the_split_point_never_collides(t in "[a-z0-9]{1,10}", mid in "[a-z0-9]{1,10}", c in "[a-z0-9]{1,10}") {
        // ("t-mid", "c") and ("t", "mid-c") are different pairs; '-' inside ids cannot fake the separator.
        let a = SessionName::new(&TenantId::new(format!("{t}-{mid}")).unwrap(), &ChipId::new(c.clone()).unwrap());
        let b = SessionName::new(&TenantId::new(t).unwrap(), &ChipId::new(format!("{mid}-{c}")).unwrap());
        prop_assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn prefix_tenants_sharing_chips_never_collide(
        base in "[a-z0-9]{1,8}",
        ext in "(-?[a-z0-9]{1,6}){1,2}",
        chips in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..6),
    ) {
        // Tenants that are prefixes of each other ("acme", "acme-2", "acme2") with the same chips.
        let short = TenantId::new(base.clone()).unwrap();
        let long = TenantId::new(format!("{base}{ext}")).unwrap();
        let mut names = std::collections::HashMap::new();
        for tenant in [&short, &long] {
            for chip in &chips {
                let chip = ChipId::new(chip.clone()).unwrap();
                let name = SessionName::new(tenant, &chip);
                let parsed = SessionName::parse(name.as_str()).unwrap();
                prop_assert_eq!(parsed.tenant(), tenant);
                prop_assert_eq!(parsed.chip(), &chip);
                if let Some(previous) = names.insert(name.as_str().to_owned(), (tenant.clone(), chip.clone())) {
                    prop_assert_eq!(previous, (tenant.clone(), chip), "two pairs share {}", name);
                }
            }
        }
    }

    #[test]
    fn anything_that_parses_is_exactly_its_own_name(s in "\\PC{0,60}|cf_[a-z0-9_-]{0,55}|cf_[a-z0-9]{1,24}_[ -~]{0,30}") {
        // Over arbitrary strings (and ones shaped like session names): parsing never accepts a
        // spelling that SessionName::new would not produce.
        if let Ok(parsed) = SessionName::parse(&s) {
            let rebuilt = SessionName::new(parsed.tenant(), parsed.chip());
            prop_assert_eq!(rebuilt.as_str(), s.as_str());
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }
    }

    #[test]
    fn long_names_are_refused(s in "[a-z0-9_-]{55,120}") {
        let len = s.chars().count();
        prop_assert_eq!(refusal(&s), SessionNameRejection::TooLong { len });
    }

    #[test]
    fn foreign_prefixes_are_refused(s in "[a-zA-Z0-9_ ./-]{0,54}") {
        prop_assume!(!s.starts_with("cf_"));
        prop_assert_eq!(refusal(&s), SessionNameRejection::ForeignPrefix);
    }

    #[test]
    fn characters_outside_the_alphabet_are_refused(
        t in tenant_id(),
        c in chip_id(),
        bad in prop::char::any().prop_filter("outside the alphabet", |ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-' || *ch == '_')),
        in_tenant in any::<bool>(),
        at in any::<prop::sample::Index>(),
    ) {
        // Injected anywhere into the tenant part or the chip part.
        let (t, c) = (t.as_str().to_owned(), c.as_str().to_owned());
        let inject = |part: &str| {
            let mut chars: Vec<char> = part.chars().collect();
            chars.insert(at.index(chars.len() + 1), bad);
            chars.into_iter().collect::<String>()
        };
        let name = if in_tenant {
            format!("cf_{}_{c}", inject(&t))
        } else {
            format!("cf_{t}_{}", inject(&c))
        };
        prop_assume!(name.chars().count() <= 54);
        match refusal(&name) {
            SessionNameRejection::Tenant(_) => prop_assert!(in_tenant, "{name:?}"),
            SessionNameRejection::Chip(_) => prop_assert!(!in_tenant, "{name:?}"),
            other => prop_assert!(false, "{name:?}: {other:?}"),
        }
    }

    #[test]
    fn namespaces_never_collide_across_tenants(t1 in tenant_id(), t2 in tenant_id(), n1 in "[a-z0-9][a-z0-9_-]{0,32}[a-z0-9]", n2 in "[a-z0-9][a-z0-9_-]{0,32}[a-z0-9]") {
        prop_assume!(t1 != t2);
        let (a, b) = (TenantNamespace::new(t1.clone()), TenantNamespace::new(t2.clone()));
        prop_assert_ne!(a.vector_collection(&n1).unwrap().to_string(), b.vector_collection(&n2).unwrap().to_string());
        prop_assert_ne!(a.queue(&n1).unwrap().to_string(), b.queue(&n2).unwrap().to_string());
        prop_assert_ne!(a.cache_key(&n1).unwrap().to_string(), b.cache_key(&n2).unwrap().to_string());
        prop_assert!(!b.cache_key(&n2).unwrap().as_str().starts_with(&a.cache_prefix()));
        for (kind, name) in [
            (StoreKind::VectorCollection, a.vector_collection(&n1).unwrap()),
            (StoreKind::Queue, a.queue(&n1).unwrap()),
            (StoreKind::CacheKey, a.cache_key(&n1).unwrap()),
        ] {
            let parsed = ScopedName::parse(kind, name.as_str()).unwrap();
            prop_assert_eq!(parsed.tenant(), &t1);
            prop_assert_eq!(parsed.local_name(), n1.as_str());
            prop_assert!(name.as_str().len() <= 63 || kind == StoreKind::CacheKey);
        }
    }
}

#[test]
fn known_foreign_and_hostile_names_are_refused() {
    assert_eq!(refusal("default"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("test_1"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("chip_test_1"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("../x"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("a b"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("CF_acme_x"), SessionNameRejection::ForeignPrefix);
    assert_eq!(refusal("cf_acme"), SessionNameRejection::MissingSeparator);
    assert!(matches!(
        refusal("cf_../x_y"),
        SessionNameRejection::Tenant(_)
    ));
    assert!(matches!(
        refusal("cf_acme_a b"),
        SessionNameRejection::Chip(_)
    ));
    assert!(matches!(
        refusal("cf_acme_x_y"),
        SessionNameRejection::Chip(_)
    ));
    assert!(matches!(
        refusal("cf__chip"),
        SessionNameRejection::Tenant(_)
    ));
    assert!(matches!(refusal("cf_acme_"), SessionNameRejection::Chip(_)));
    assert!(matches!(
        refusal("cf_Acme_x"),
        SessionNameRejection::Tenant(_)
    ));
    let at_limit = format!("cf_{}_{}", "a".repeat(24), "b".repeat(26));
    assert_eq!(at_limit.len(), 54);
    assert!(SessionName::parse(&at_limit).is_ok());
    let over = format!("{at_limit}c");
    assert_eq!(refusal(&over), SessionNameRejection::TooLong { len: 55 });
    assert!(serde_json::from_str::<SessionName>("\"test_1\"").is_err());
}

#[test]
fn error_messages_name_the_problem_and_clip_input() {
    let err = SessionName::parse(&"x".repeat(500)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("54"), "{text}");
    assert!(text.len() < 250, "untrusted input is clipped: {text}");
}

#[test]
fn namespace_refusals() {
    let ns = TenantNamespace::new(TenantId::new("acme").unwrap());
    for bad in ["", "../x", "a b", "UP", "-x", "x-", &"a".repeat(35)] {
        assert!(
            matches!(ns.vector_collection(bad), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
        assert!(ns.queue(bad).is_err(), "{bad:?}");
    }
    assert!(ns.cache_key("").is_err());
    assert!(ns.cache_key("a b").is_err());
    assert!(ns.cache_key("line\nbreak").is_err());
    assert!(ns.cache_key(&"k".repeat(201)).is_err());
    assert_eq!(ns.cache_prefix(), "cf:acme:");
    assert!(
        ScopedName::parse(StoreKind::Queue, "cfv_acme_x").is_err(),
        "kinds do not mix"
    );
    assert!(ScopedName::parse(StoreKind::VectorCollection, "cfv_acme").is_err());
    assert!(ScopedName::parse(StoreKind::VectorCollection, "cfv_ACME_x").is_err());
    assert!(ScopedName::parse(StoreKind::VectorCollection, "memories").is_err());
}
