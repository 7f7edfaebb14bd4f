//! The `mock` feature's mocks stand in for the traits behind `Arc<dyn _>`.
#![cfg(feature = "mock")]

use std::sync::Arc;

use tenant_isolation::{
    ChipId, Error, MockQuotaLedger, MockSendPacer, Pace, QuotaLedger, QuotaLimit, SendPacer,
    SlotKind, TenantId,
};

#[tokio::test]
async fn mocks_are_usable_as_trait_objects() {
    let mut ledger = MockQuotaLedger::new();
    ledger.expect_reserve().returning(|tenant, _, _| {
        Err(Error::QuotaExceeded {
            tenant: tenant.clone(),
            limit: QuotaLimit::MaxChips,
            max: 2,
            in_use: 2,
        })
    });
    let ledger: Arc<dyn QuotaLedger> = Arc::new(ledger);
    let t = TenantId::new("acme").unwrap();
    let c = ChipId::new("c1").unwrap();
    let err = ledger.reserve(&t, SlotKind::Chip, &c).await.unwrap_err();
    assert!(matches!(
        err,
        Error::QuotaExceeded {
            limit: QuotaLimit::MaxChips,
            max: 2,
            ..
        }
    ));

    let mut pacer = MockSendPacer::new();
    pacer.expect_acquire().returning(|_, _| {
        Ok(Pace::Go {
            jitter: std::time::Duration::ZERO,
        })
    });
    let pacer: Arc<dyn SendPacer> = Arc::new(pacer);
    assert!(matches!(
        pacer.acquire(&t, &c).await.unwrap(),
        Pace::Go { .. }
    ));
}
