//! The `mock` feature's mocks drive the supervisor's real code through its seams: a chip store
//! whose compare-and-set always loses, an event bus that is down, a WAHA client factory that
//! cannot build a client.
#![cfg(feature = "mock")]

mod shared;
mod support;

use std::sync::Arc;

use session_supervisor::{
    BusError, ChipKey, ChipSpec, ChipStore, MockChipStore, MockEventBus, MockWahaClients, NewChip,
    Phase, QrFormat, StoreError, Supervisor, SupervisorError, VersionKind,
};
use support::*;
use waha_client::WahaError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_write_that_keeps_losing_its_compare_and_set_answers_busy() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let key = ChipKey::new(acme.clone(), sales.clone());
    let record = fleet
        .store
        .create(NewChip {
            key: key.clone(),
            spec: ChipSpec::qr(),
            chip_slot: true,
        })
        .await
        .expect("recorded")
        .record()
        .clone();

    let mut store = MockChipStore::new();
    store
        .expect_get()
        .returning(move |_| Ok(Some(record.clone())));
    // Another replica wins every round.
    store
        .expect_update_desired()
        .times(5)
        .returning(|key, expected, _| {
            Err(StoreError::VersionConflict {
                key: key.clone(),
                which: VersionKind::Desired,
                expected,
                actual: expected + 1,
            })
        });
    let mut parts = fleet.parts();
    parts.store = Arc::new(store);
    let supervisor = Supervisor::builder(parts)
        .config(fleet.config())
        .build()
        .expect("valid");
    let refused = supervisor
        .stop_chip(&acme, &sales)
        .await
        .expect_err("every compare-and-set lost");
    assert!(
        matches!(&refused, SupervisorError::Busy { key: busy } if *busy == key),
        "{refused:?}"
    );
    assert!(refused.is_retryable(), "a busy chip may be asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_is_down_never_fails_a_create_the_record_is_the_truth() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let mut bus = MockEventBus::new();
    bus.expect_publish().times(1).returning(|_| {
        Err(BusError::Unavailable {
            reason: "broker down".into(),
        })
    });
    let supervisor = Supervisor::builder(fleet.parts())
        .event_bus(Arc::new(bus))
        .config(fleet.config())
        .build()
        .expect("valid");
    let created = supervisor
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("created although the change could not be published");
    assert!(matches!(created.observed.phase, Phase::Pending));
    let stored = fleet
        .store
        .get(&created.key)
        .await
        .expect("read")
        .expect("the record is stored");
    assert_eq!(stored.desired.spec, ChipSpec::qr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_code_without_a_reachable_container_is_not_ready() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    // Bring the chip to its QR window with the real clients, then ask through a factory that
    // cannot build a client.
    let replica = fleet.supervisor().await;
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("created");
    wait_phase(
        &replica,
        &acme,
        &sales,
        session_supervisor::PhaseName::AwaitingLogin,
        WAIT,
    )
    .await;
    replica.shutdown().await;

    let mut clients = MockWahaClients::new();
    clients.expect_client().returning(|_, _| {
        Err(WahaError::Invalid {
            messages: vec!["no TLS backend".into()],
        })
    });
    let mut parts = fleet.parts();
    parts.waha = Arc::new(clients);
    let supervisor = Supervisor::builder(parts)
        .config(fleet.config())
        .build()
        .expect("valid");
    let refused = supervisor
        .qr(&acme, &sales, QrFormat::Png)
        .await
        .expect_err("no client, no QR code");
    assert!(
        matches!(refused, SupervisorError::NotReady { .. }),
        "{refused:?}"
    );
}
