//! Quota checks.

use std::sync::Arc;

use super::{chip, create_tenant, expect_exceeded, expect_status_error, unique_tenant};
use crate::{Error, PlanLimits, QuotaLedger, QuotaLimit, SlotKind, TenantDirectory, TenantStatus};

/// Reserving a slot the chip holds succeeds without consuming another.
pub async fn quota_reserve_is_idempotent(
    directory: &dyn TenantDirectory,
    ledger: &dyn QuotaLedger,
) {
    let t = create_tenant(directory, PlanLimits::new(2, 1, 10)).await;
    let first = ledger
        .reserve(&t, SlotKind::Chip, &chip(1))
        .await
        .expect("reserve");
    assert!(first.newly_reserved);
    assert_eq!((first.in_use, first.max), (1, 2));
    let again = ledger
        .reserve(&t, SlotKind::Chip, &chip(1))
        .await
        .expect("reserve again");
    assert!(
        !again.newly_reserved,
        "a held slot must not be consumed twice"
    );
    assert_eq!(again.in_use, 1);
    ledger
        .reserve(&t, SlotKind::Chip, &chip(2))
        .await
        .expect("second chip");
    // At the limit, the holder is still granted (idempotent), a newcomer is refused.
    assert!(
        !ledger
            .reserve(&t, SlotKind::Chip, &chip(2))
            .await
            .expect("held")
            .newly_reserved
    );
    expect_exceeded(
        ledger.reserve(&t, SlotKind::Chip, &chip(3)).await,
        QuotaLimit::MaxChips,
        2,
    );
    let usage = ledger.usage(&t).await.expect("usage");
    assert_eq!((usage.chips, usage.running_sessions), (2, 0));
    assert_eq!(
        ledger.holders(&t, SlotKind::Chip).await.expect("holders"),
        vec![chip(1), chip(2)]
    );
}

/// Release frees the slot (once); releasing a chip also frees its running-session slot.
pub async fn quota_release_frees_slots(directory: &dyn TenantDirectory, ledger: &dyn QuotaLedger) {
    let t = create_tenant(directory, PlanLimits::new(2, 1, 10)).await;
    for (kind, n) in [
        (SlotKind::Chip, 1),
        (SlotKind::RunningSession, 1),
        (SlotKind::Chip, 2),
    ] {
        ledger
            .reserve(&t, kind, &chip(n))
            .await
            .unwrap_or_else(|e| panic!("{kind} for chip {n}: {e}"));
    }
    expect_exceeded(
        ledger.reserve(&t, SlotKind::Chip, &chip(3)).await,
        QuotaLimit::MaxChips,
        2,
    );
    expect_exceeded(
        ledger.reserve(&t, SlotKind::RunningSession, &chip(2)).await,
        QuotaLimit::MaxRunningSessions,
        1,
    );
    assert!(
        ledger
            .release(&t, SlotKind::Chip, &chip(1))
            .await
            .expect("release")
    );
    assert!(
        !ledger
            .release(&t, SlotKind::Chip, &chip(1))
            .await
            .expect("release twice"),
        "release is idempotent"
    );
    let usage = ledger.usage(&t).await.expect("usage");
    assert_eq!(
        (usage.chips, usage.running_sessions),
        (1, 0),
        "deleting a chip frees its session slot"
    );
    ledger
        .reserve(&t, SlotKind::Chip, &chip(3))
        .await
        .expect("slot is free again");
    ledger
        .reserve(&t, SlotKind::RunningSession, &chip(2))
        .await
        .expect("session slot is free again");
    // Releasing only the session keeps the chip.
    assert!(
        ledger
            .release(&t, SlotKind::RunningSession, &chip(2))
            .await
            .expect("stop")
    );
    let usage = ledger.usage(&t).await.expect("usage");
    assert_eq!((usage.chips, usage.running_sessions), (2, 0));
    // Releasing for an unknown tenant is a no-op, not an error.
    assert!(
        !ledger
            .release(&unique_tenant(), SlotKind::Chip, &chip(1))
            .await
            .expect("unknown")
    );
}

/// A running-session slot needs the chip's chip slot: refused with
/// [`Error::ChipSlotRequired`] (nothing reserved) before it, granted after, and gone with it.
pub async fn quota_running_session_requires_chip_slot(
    directory: &dyn TenantDirectory,
    ledger: &dyn QuotaLedger,
) {
    let t = create_tenant(directory, PlanLimits::new(2, 2, 10)).await;
    match ledger.reserve(&t, SlotKind::RunningSession, &chip(1)).await {
        Err(Error::ChipSlotRequired {
            tenant,
            chip: refused,
        }) => {
            assert_eq!(tenant, t);
            assert_eq!(refused, chip(1));
        }
        other => panic!("a session slot without a chip slot must be refused, got {other:?}"),
    }
    assert!(
        ledger
            .holders(&t, SlotKind::RunningSession)
            .await
            .expect("holders")
            .is_empty(),
        "a refused reservation reserves nothing"
    );
    // Another chip's slot does not count.
    ledger
        .reserve(&t, SlotKind::Chip, &chip(2))
        .await
        .expect("chip 2");
    assert!(matches!(
        ledger.reserve(&t, SlotKind::RunningSession, &chip(1)).await,
        Err(Error::ChipSlotRequired { .. })
    ));
    ledger
        .reserve(&t, SlotKind::Chip, &chip(1))
        .await
        .expect("chip 1");
    assert!(
        ledger
            .reserve(&t, SlotKind::RunningSession, &chip(1))
            .await
            .expect("session after its chip slot")
            .newly_reserved
    );
    ledger
        .release(&t, SlotKind::Chip, &chip(1))
        .await
        .expect("release chip");
    assert!(
        matches!(
            ledger.reserve(&t, SlotKind::RunningSession, &chip(1)).await,
            Err(Error::ChipSlotRequired { .. })
        ),
        "a released chip cannot start a session"
    );
    let usage = ledger.usage(&t).await.expect("usage");
    assert_eq!((usage.chips, usage.running_sessions), (1, 0));
}

/// Suspended and deleted tenants are refused; unknown tenants are not found; release works.
pub async fn quota_refuses_inactive_tenants(
    directory: &dyn TenantDirectory,
    ledger: &dyn QuotaLedger,
) {
    let t = create_tenant(directory, PlanLimits::new(5, 5, 5)).await;
    ledger
        .reserve(&t, SlotKind::Chip, &chip(1))
        .await
        .expect("reserve");
    for status in [TenantStatus::Suspended, TenantStatus::Deleted] {
        directory.set_status(&t, status).await.expect("status");
        expect_status_error(ledger.reserve(&t, SlotKind::Chip, &chip(2)).await, status);
        expect_status_error(ledger.admit_send(&t).await, status);
    }
    assert!(
        ledger
            .release(&t, SlotKind::Chip, &chip(1))
            .await
            .expect("release still works")
    );
    let missing = unique_tenant();
    assert!(matches!(
        ledger.reserve(&missing, SlotKind::Chip, &chip(1)).await,
        Err(Error::TenantNotFound { .. })
    ));
}

/// Two tenants with the same chip ids have separate slots.
pub async fn quota_tenants_do_not_share_slots(
    directory: &dyn TenantDirectory,
    ledger: &dyn QuotaLedger,
) {
    let a = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    let b = create_tenant(directory, PlanLimits::new(1, 1, 1)).await;
    assert!(
        ledger
            .reserve(&a, SlotKind::Chip, &chip(1))
            .await
            .expect("a")
            .newly_reserved
    );
    assert!(
        ledger
            .reserve(&b, SlotKind::Chip, &chip(1))
            .await
            .expect("b")
            .newly_reserved
    );
    assert!(
        ledger
            .release(&a, SlotKind::Chip, &chip(1))
            .await
            .expect("release a")
    );
    assert_eq!(
        ledger.holders(&b, SlotKind::Chip).await.expect("b holders"),
        vec![chip(1)]
    );
}

/// Sends are counted per day up to the limit; a zero limit refuses every send.
pub async fn quota_daily_sends(directory: &dyn TenantDirectory, ledger: &dyn QuotaLedger) {
    let t = create_tenant(directory, PlanLimits::new(1, 1, 3)).await;
    for n in 1..=3 {
        let admitted = ledger.admit_send(&t).await.expect("send");
        assert_eq!((admitted.sent, admitted.max), (n, 3));
    }
    expect_exceeded(ledger.admit_send(&t).await, QuotaLimit::MaxSendsPerDay, 3);
    assert_eq!(ledger.usage(&t).await.expect("usage").sends_today, 3);
    directory
        .set_limits(&t, PlanLimits::new(1, 1, 4))
        .await
        .expect("raise");
    ledger
        .admit_send(&t)
        .await
        .expect("raised limit admits one more");
    let zero = create_tenant(directory, PlanLimits::new(1, 1, 0)).await;
    expect_exceeded(
        ledger.admit_send(&zero).await,
        QuotaLimit::MaxSendsPerDay,
        0,
    );
}

/// `contenders` tasks race for `slots` slots of `kind`: exactly `slots` win, the rest get
/// `QuotaExceeded` naming the limit, and usage equals the limit.
pub async fn quota_race(
    directory: Arc<dyn TenantDirectory>,
    ledger: Arc<dyn QuotaLedger>,
    kind: SlotKind,
    contenders: usize,
    slots: u32,
) {
    let limits = match kind {
        SlotKind::Chip => PlanLimits::new(slots, 0, 0),
        SlotKind::RunningSession => {
            PlanLimits::new(u32::try_from(contenders).unwrap_or(u32::MAX), slots, 0)
        }
    };
    let t = create_tenant(directory.as_ref(), limits).await;
    if kind == SlotKind::RunningSession {
        // Every contender's chip exists: the race is for the session slots alone.
        for n in 0..contenders {
            ledger
                .reserve(&t, SlotKind::Chip, &chip(n))
                .await
                .expect("chip slot before the race");
        }
    }
    let start = Arc::new(tokio::sync::Barrier::new(contenders));
    let tasks: Vec<_> = (0..contenders)
        .map(|n| {
            let (ledger, t, start) = (ledger.clone(), t.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                ledger.reserve(&t, kind, &chip(n)).await
            })
        })
        .collect();
    let mut won = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => {
                assert!(r.newly_reserved);
                won += 1;
            }
            Err(Error::QuotaExceeded { limit, max, .. }) => {
                assert_eq!(limit, kind.limit());
                assert_eq!(max, slots);
                refused += 1;
            }
            Err(other) => panic!("unexpected error in the race: {other}"),
        }
    }
    assert_eq!(won, slots as usize, "exactly the limit must win");
    assert_eq!(
        refused,
        contenders - slots as usize,
        "everyone else must get QuotaExceeded"
    );
    let held = ledger.holders(&t, kind).await.expect("holders");
    assert_eq!(held.len(), slots as usize, "usage must equal the limit");
    let usage = ledger.usage(&t).await.expect("usage");
    let in_use = match kind {
        SlotKind::Chip => usage.chips,
        SlotKind::RunningSession => usage.running_sessions,
    };
    assert_eq!(in_use, slots);
}

/// `contenders` tasks race to send with a daily limit of `max`: exactly `max` are admitted.
pub async fn quota_send_race(
    directory: Arc<dyn TenantDirectory>,
    ledger: Arc<dyn QuotaLedger>,
    contenders: usize,
    max: u32,
) {
    let t = create_tenant(directory.as_ref(), PlanLimits::new(0, 0, max)).await;
    let tasks: Vec<_> = (0..contenders)
        .map(|_| {
            let (ledger, t) = (ledger.clone(), t.clone());
            tokio::spawn(async move { ledger.admit_send(&t).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => admitted += 1,
            Err(Error::QuotaExceeded {
                limit: QuotaLimit::MaxSendsPerDay,
                ..
            }) => {}
            Err(other) => panic!("unexpected error in the send race: {other}"),
        }
    }
    assert_eq!(
        admitted, max as usize,
        "exactly the daily limit must be admitted"
    );
    assert_eq!(ledger.usage(&t).await.expect("usage").sends_today, max);
}
