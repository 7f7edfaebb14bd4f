//! Directory checks.

use super::{create_tenant, unique_tenant};
use crate::{
    Error, Incarnation, NewTenant, PlanLimits, Tenant, TenantDirectory, TenantSecrets,
    TenantStatus, directory::require_active,
};

/// A created tenant is active, readable, and keeps its limits and secrets.
pub async fn directory_create_and_get(directory: &dyn TenantDirectory) {
    let id = unique_tenant();
    let secrets = TenantSecrets::generate().expect("random");
    let limits = PlanLimits::new(3, 2, 100);
    let created = directory
        .create(NewTenant::new(id.clone(), limits, secrets.clone()))
        .await
        .expect("create");
    assert_eq!(created.status, TenantStatus::Active);
    let got = directory.get(&id).await.expect("get");
    assert_eq!(got.id, id);
    assert_eq!(got.limits, limits);
    assert_eq!(got.secrets, secrets, "secrets must round-trip");
    assert_eq!(got, created);
    let missing = unique_tenant();
    assert!(
        matches!(directory.get(&missing).await, Err(Error::TenantNotFound { ref tenant }) if *tenant == missing),
        "an unknown tenant must be TenantNotFound"
    );
    let too_big = PlanLimits::new(u32::MAX, 1, 1);
    let refused = directory
        .create(NewTenant::new(
            unique_tenant(),
            too_big,
            TenantSecrets::generate().expect("random"),
        ))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidConfig { .. })),
        "{refused:?}"
    );
}

/// Ids are never reused, even after deletion; the stored tenant is untouched by the attempt.
pub async fn directory_refuses_duplicates(directory: &dyn TenantDirectory) {
    let id = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    let before = directory.get(&id).await.expect("get");
    let again = NewTenant::new(
        id.clone(),
        PlanLimits::new(9, 9, 9),
        TenantSecrets::generate().expect("random"),
    );
    assert!(matches!(
        directory.create(again.clone()).await,
        Err(Error::TenantAlreadyExists { .. })
    ));
    assert_eq!(
        directory.get(&id).await.expect("get"),
        before,
        "a refused create must change nothing"
    );
    directory
        .set_status(&id, TenantStatus::Deleted)
        .await
        .expect("delete");
    assert!(matches!(
        directory.create(again).await,
        Err(Error::TenantAlreadyExists { .. })
    ));
}

/// Active <-> suspended; anything -> deleted; nothing leaves deleted.
pub async fn directory_status_transitions(directory: &dyn TenantDirectory) {
    let id = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    require_active(directory, &id).await.expect("active");
    let t = directory
        .set_status(&id, TenantStatus::Suspended)
        .await
        .expect("suspend");
    assert_eq!(t.status, TenantStatus::Suspended);
    assert!(matches!(
        require_active(directory, &id).await,
        Err(Error::TenantSuspended { .. })
    ));
    directory
        .set_status(&id, TenantStatus::Active)
        .await
        .expect("reactivate");
    require_active(directory, &id).await.expect("active again");
    directory
        .set_status(&id, TenantStatus::Deleted)
        .await
        .expect("delete");
    assert!(matches!(
        require_active(directory, &id).await,
        Err(Error::TenantDeleted { .. })
    ));
    let back = directory.set_status(&id, TenantStatus::Active).await;
    assert!(
        matches!(
            back,
            Err(Error::InvalidStatusTransition {
                from: TenantStatus::Deleted,
                to: TenantStatus::Active,
                ..
            })
        ),
        "{back:?}"
    );
    assert_eq!(
        directory.get(&id).await.expect("get").status,
        TenantStatus::Deleted
    );
    let missing = unique_tenant();
    assert!(matches!(
        directory
            .set_status(&missing, TenantStatus::Suspended)
            .await,
        Err(Error::TenantNotFound { .. })
    ));
}

/// Limits and secrets can be replaced, except on a deleted tenant.
pub async fn directory_updates_limits_and_secrets(directory: &dyn TenantDirectory) {
    let id = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    let limits = PlanLimits::new(5, 4, 300);
    assert_eq!(
        directory
            .set_limits(&id, limits)
            .await
            .expect("limits")
            .limits,
        limits
    );
    let secrets = TenantSecrets::generate().expect("random");
    let rotated = directory
        .set_secrets(&id, secrets.clone())
        .await
        .expect("secrets");
    assert_eq!(rotated.secrets, secrets);
    assert_eq!(directory.get(&id).await.expect("get").secrets, secrets);
    // A webhook key rotation in progress keeps the previous key; finishing forgets it.
    let rotating = secrets
        .begin_webhook_rotation(crate::HmacKey::generate().expect("random"))
        .expect("no rotation in progress");
    directory
        .set_secrets(&id, rotating.clone())
        .await
        .expect("begin rotation");
    assert_eq!(directory.get(&id).await.expect("get").secrets, rotating);
    let finished = rotating.finish_webhook_rotation();
    directory
        .set_secrets(&id, finished.clone())
        .await
        .expect("finish rotation");
    let stored = directory.get(&id).await.expect("get").secrets;
    assert_eq!(stored, finished);
    assert!(!stored.webhook_key_rotating());
    // A compare-and-set replaces only what it read: a second writer that read the same
    // secrets loses, and nothing changes.
    let first = finished
        .begin_webhook_rotation(crate::HmacKey::generate().expect("random"))
        .expect("no rotation in progress");
    let second = finished
        .begin_webhook_rotation(crate::HmacKey::generate().expect("random"))
        .expect("no rotation in progress");
    directory
        .replace_secrets(&id, &finished, first.clone())
        .await
        .expect("the first writer wins");
    assert!(matches!(
        directory.replace_secrets(&id, &finished, second).await,
        Err(Error::SecretsChanged { .. })
    ));
    assert_eq!(directory.get(&id).await.expect("get").secrets, first);
    directory
        .replace_secrets(&id, &first, finished.clone())
        .await
        .expect("a compare-and-set on the current secrets");
    let invalid = directory
        .set_limits(&id, PlanLimits::new(1, u32::MAX, 1))
        .await;
    assert!(matches!(invalid, Err(Error::InvalidConfig { .. })));
    assert_eq!(
        directory.get(&id).await.expect("get").limits,
        limits,
        "a refused update must change nothing"
    );
    directory
        .set_status(&id, TenantStatus::Deleted)
        .await
        .expect("delete");
    assert!(matches!(
        directory.set_limits(&id, limits).await,
        Err(Error::TenantDeleted { .. })
    ));
    assert!(matches!(
        directory
            .set_secrets(&id, TenantSecrets::generate().expect("random"))
            .await,
        Err(Error::TenantDeleted { .. })
    ));
    assert!(matches!(
        directory
            .replace_secrets(&id, &secrets, TenantSecrets::generate().expect("random"))
            .await,
        Err(Error::TenantDeleted { .. })
    ));
    let missing = unique_tenant();
    assert!(matches!(
        directory.set_limits(&missing, limits).await,
        Err(Error::TenantNotFound { .. })
    ));
}

/// `list` contains every tenant in every status, ordered by id.
pub async fn directory_lists_tenants(directory: &dyn TenantDirectory) {
    let a = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    let b = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    directory
        .set_status(&b, TenantStatus::Suspended)
        .await
        .expect("suspend");
    let all = directory.list().await.expect("list");
    assert!(all.iter().any(|t| t.id == a));
    assert!(
        all.iter()
            .any(|t| t.id == b && t.status == TenantStatus::Suspended)
    );
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "list must be ordered by id"
    );
}

/// Each tenant gets its own incarnation when it is created (the one its [`NewTenant`] carries),
/// and keeps it through every update (limits, secrets, suspension, reactivation, deletion) and
/// every reread (`get`, `list`); a tenant created with a given incarnation (a restore) keeps
/// exactly that one.
pub async fn directory_keeps_incarnations(directory: &dyn TenantDirectory) {
    let limits = PlanLimits::new(1, 1, 1);
    let secrets = || TenantSecrets::generate().expect("random");
    let new = NewTenant::new(unique_tenant(), limits, secrets());
    let minted = new.incarnation.clone();
    let a = directory.create(new).await.expect("create");
    assert_eq!(
        a.incarnation, minted,
        "create must store the incarnation the new tenant carries"
    );
    let b = directory
        .create(NewTenant::new(unique_tenant(), limits, secrets()))
        .await
        .expect("create");
    assert_ne!(
        a.incarnation, b.incarnation,
        "two tenants must get different incarnations"
    );

    let id = a.id;
    let keeps = |tenant: Tenant, after: &str| {
        assert_eq!(
            tenant.incarnation, minted,
            "a tenant's incarnation must survive {after}"
        );
    };
    let set = directory.set_limits(&id, PlanLimits::new(2, 2, 2)).await;
    keeps(set.expect("set_limits"), "set_limits");
    let set = directory.set_secrets(&id, secrets()).await;
    keeps(set.expect("set_secrets"), "set_secrets");
    let set = directory.set_status(&id, TenantStatus::Suspended).await;
    keeps(set.expect("suspend"), "a suspension");
    let set = directory.set_status(&id, TenantStatus::Active).await;
    keeps(set.expect("reactivate"), "a reactivation");
    keeps(directory.get(&id).await.expect("get"), "a reread");
    let listed = directory
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.id == id)
        .expect("the tenant is listed");
    keeps(listed, "a listing");
    let set = directory.set_status(&id, TenantStatus::Deleted).await;
    keeps(set.expect("delete"), "a deletion");
    keeps(
        directory.get(&id).await.expect("get"),
        "a reread after deletion",
    );

    // A host restoring a tenant from a backup gives it its incarnation back.
    let restored = Incarnation::parse(&format!(
        "backup-{}",
        Incarnation::generate().as_str().to_ascii_lowercase()
    ))
    .expect("a valid incarnation");
    let new = NewTenant::new(unique_tenant(), limits, secrets()).with_incarnation(restored.clone());
    let c = directory.create(new).await.expect("create");
    assert_eq!(
        c.incarnation, restored,
        "create must keep a given incarnation"
    );
    assert_eq!(
        directory.get(&c.id).await.expect("get").incarnation,
        restored,
        "a given incarnation must survive a reread"
    );
}
