//! The fault matrix's daemon rows (issue 15): the shared services restarted under a fleet, on
//! the world of `fleet/mod.rs` (the production backend on the real Docker daemon and
//! PostgreSQL, slow-booting simulators, real proxies, webhooks through the ingest).
//!
//! - **dockerd restarted while chips provision**: the supervisor waits, then finishes every
//!   chip (each reaches its QR window, every step recorded), with one container per slot.
//! - **PostgreSQL restarted** (kept down a few seconds) under webhook traffic: no webhook the
//!   ingest answered 2xx is missing from the PostgreSQL inbox, no step recorded before the
//!   restart is lost, and reconciles resume (a chip restarted afterwards goes through its
//!   steps back to WORKING).
//!
//! These tests stop a daemon every other test of the machine needs, so they live in this one
//! binary, run one at a time (a lock), and go through `scripts/restart-service.sh`, which
//! starts the service again with `scripts/test-env.sh` and fails loudly when it cannot. Cargo
//! runs test binaries one after another, so no other test sees the daemon go.

mod common;
mod fleet;

#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/docker.rs"]
mod shared_docker;
#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/pg.rs"]
mod shared_pg;

use std::collections::BTreeSet;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use container_pool::ContainerState;
use session_supervisor::{PhaseName, StepKind};
use tenant_isolation::SessionName;
use tokio::time::{Instant, sleep};

use fleet::{FleetOptions, s};

/// Used by the shared Docker helpers.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Used by the shared Docker helpers.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The bound of one test, from the first container to the last check.
const TEST_DEADLINE: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_restarted_while_chips_provision() {
    let options = FleetOptions::scenario(FleetOptions::proxies_for(8), 23_900..=23_929);
    fleet::with_fleet(
        "dockerd restart",
        TEST_DEADLINE,
        options,
        async |base, fleet| {
            let supervisor = fleet.supervisor().clone();
            let tenants = fleet::tenants("dkr", 2);
            let chips = fleet::chips(4);
            fleet::create_fleet(fleet, &tenants, &chips).await;

            // Mid-provision: the first container exists, and no chip has reached its QR yet (the
            // simulators boot for seconds).
            let deadline = Instant::now() + Duration::from_secs(60);
            while fleet::containers_by_slot(base).await.is_empty() {
                assert!(Instant::now() < deadline, "no container within 60 s");
                sleep(fleet::POLL).await;
            }
            let before = fleet::records(&supervisor, &tenants).await;
            let at_qr = before
                .iter()
                .filter(|r| r.observed.phase.name() == PhaseName::AwaitingLogin)
                .count();
            assert!(
                at_qr < before.len(),
                "the restart must come while chips provision: {at_qr} of {} already at the QR",
                before.len()
            );

            let restarted = Instant::now();
            fleet::restart_service("docker", Duration::ZERO).await;
            eprintln!(
                "[dockerd restart] dockerd back after {}",
                s(restarted.elapsed())
            );

            let records = fleet::wait_all(
                &supervisor,
                &tenants,
                tenants.len() * chips.len(),
                PhaseName::AwaitingLogin,
                Duration::from_secs(240),
            )
            .await;
            eprintln!(
                "[dockerd restart] every chip at its QR {} after the restart began",
                s(restarted.elapsed())
            );
            fleet::every_step_recorded(&records);
            fleet::every_qr_decodes(&supervisor, &tenants, &chips).await;
            // One container per slot, running.
            let by_slot = fleet::containers_by_slot(base).await;
            assert_eq!(
                by_slot.len(),
                tenants.len(),
                "one slot per tenant: {by_slot:?}"
            );
            for (slot, states) in &by_slot {
                assert_eq!(
                    states,
                    &vec![ContainerState::Running],
                    "{slot:?}: one running container"
                );
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_webhook_traffic() {
    let options = FleetOptions::scenario(FleetOptions::proxies_for(6), 23_930..=23_959);
    fleet::with_fleet("postgresql restart", TEST_DEADLINE, options, async |base, fleet| {
        let supervisor = fleet.supervisor().clone();
        let tenants = fleet::tenants("pgr", 2);
        let chips = fleet::chips(3);
        let total = tenants.len() * chips.len();
        fleet::create_fleet(fleet, &tenants, &chips).await;
        fleet::wait_all(
            &supervisor,
            &tenants,
            total,
            PhaseName::AwaitingLogin,
            Duration::from_secs(240),
        )
        .await;
        fleet::scan_all(base, fleet, &tenants, &chips).await;
        fleet::wait_all(
            &supervisor,
            &tenants,
            total,
            PhaseName::Working,
            Duration::from_secs(120),
        )
        .await;

        // Webhook traffic: a message to every chip every 200 ms, through each simulator.
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut sims = Vec::new();
        for tenant in &tenants {
            let (control, _) = fleet::tenant_sim(base, fleet, tenant)
                .await
                .unwrap_or_else(|| panic!("{tenant}: no running container"));
            for chip in &chips {
                sims.push((control.clone(), SessionName::new(tenant, chip)));
            }
        }
        let traffic = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (control, session) in &sims {
                        if control
                            .receive_message(session.as_str(), "5511900000000@c.us", "ping")
                            .await
                            .is_ok()
                        {
                            sent += 1;
                        }
                    }
                    sleep(Duration::from_millis(200)).await;
                }
                sent
            }
        });
        sleep(Duration::from_secs(2)).await;
        // What is stored right before the restart (no step may be lost across it).
        let before = fleet::records(&supervisor, &tenants).await;
        let restarted_at = SystemTime::now();
        let restarted = Instant::now();
        fleet::restart_service("postgresql", Duration::from_secs(4)).await;
        eprintln!(
            "[postgresql restart] PostgreSQL back after {}",
            s(restarted.elapsed())
        );
        sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        let sent = traffic.await.expect("the traffic task");

        // Reconciles resume: a chip restarted now goes through its steps back to WORKING.
        let (tenant, chip) = (&tenants[0], &chips[0]);
        let what = format!("{tenant}/{chip}: restart_chip accepted");
        fleet::eventually(Duration::from_secs(60), what, || async {
            supervisor
                .restart_chip(tenant, chip)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        let what = format!("{tenant}/{chip}: restarted back to WORKING after PostgreSQL came back");
        fleet::eventually(Duration::from_secs(120), what, || async {
            let record = supervisor
                .get_chip(tenant, chip)
                .await
                .map_err(|e| e.to_string())?;
            let restarted_again = record.observed.phase.name() == PhaseName::Working
                && record
                    .steps
                    .iter()
                    .any(|step| step.step == StepKind::RestartSession && step.at > restarted_at);
            if restarted_again {
                Ok(())
            } else {
                Err(fleet::describe(&record))
            }
        })
        .await;
        let after = fleet::wait_all(
            &supervisor,
            &tenants,
            total,
            PhaseName::Working,
            Duration::from_secs(120),
        )
        .await;

        // No recorded step lost: every step stored before the restart that is not older than
        // the oldest step kept now (the log keeps the newest entries) is still there.
        for old in &before {
            let new = after
                .iter()
                .find(|r| r.key == old.key)
                .expect("the same chips");
            let oldest_kept = new.steps.iter().map(|s| s.at).min();
            for step in old.steps.iter() {
                if oldest_kept.is_some_and(|oldest| step.at < oldest) {
                    continue;
                }
                assert!(
                    new.steps.iter().any(|s| s.step == step.step
                        && s.at == step.at
                        && s.outcome == step.outcome),
                    "{}: a step recorded before the restart is gone: {step:?}; now {}",
                    old.key,
                    fleet::describe(new)
                );
            }
        }

        // No webhook answered 2xx lost: every event id the ingest answered 2xx is in the
        // PostgreSQL inbox; and the outage was seen (some answers were not 2xx).
        let answered = fleet
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let accepted: BTreeSet<String> = answered
            .iter()
            .filter(|(_, status)| (200..300).contains(status))
            .filter_map(|(id, _)| id.clone())
            .collect();
        let refused = answered
            .iter()
            .filter(|(_, status)| !(200..300).contains(status))
            .count();
        let owner = shared_pg::scratch::owner_client(&base.db.url).await;
        let rows = owner
            .query("SELECT body FROM supervisor_inbox", &[])
            .await
            .expect("the owner role reads the inbox");
        let stored: BTreeSet<String> = rows
            .iter()
            .filter_map(|row| {
                let body: Vec<u8> = row.get(0);
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
            })
            .collect();
        let lost: Vec<&String> = accepted.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} of {} events answered 2xx are not in the inbox: {lost:?}",
            lost.len(),
            accepted.len()
        );
        assert!(
            refused > 0,
            "the outage was never seen by the ingest ({} answers, all 2xx): nothing was proven",
            answered.len()
        );
        eprintln!(
            "[postgresql restart] {sent} messages injected; {} webhook requests answered, {} 2xx \
             (all {} distinct events in the inbox), {refused} refused during the outage",
            answered.len(),
            answered.len() - refused,
            accepted.len()
        );
    })
    .await;
}
