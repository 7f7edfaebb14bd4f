//! The fleet proof at full size (issue 15, "Scenarios on real Docker and PostgreSQL"): the
//! production backend on the real Docker daemon and PostgreSQL, simulators that boot slowly and
//! unevenly and answer 400 for a while after they come up, faulty webhook deliveries through
//! the real ingest, and real proxies (tinyproxy) with one dead. The world is `fleet/mod.rs`.
//!
//! - **3 tenants × 10 chips** (seed report 002, phase 5, which the old service never passed);
//! - **20 tenants × 5 chips**.
//!
//! Each: every session reaches its QR window and every QR code decodes (PNG to the raw value);
//! every step is in the store; one accepted create per session in the simulators' call logs;
//! after the simulated scans every chip is WORKING; no chip ends on the dead proxy, every
//! change of proxy is a recorded rotation, and each session in WAHA carries its lease's proxy;
//! one message per chip is sent and acked to read (acks by webhook, through the faults).
//! Each run prints its timings (create → QR p50/p95 from the stored phases, and the totals);
//! `docs/benchmarks.md` records them.
//!
//! The two scenarios run one after the other (a lock): together they would be 130 chips and 23
//! containers at once on a 2-core machine. Settings come from `scripts/test-env.sh`'s output
//! (`DATABASE_URL`, `APP_DATABASE_URL`, `DOCKER_HOST`); `tinyproxy` is started here, from the
//! package that script installs. Fails (never skips) when any of them is missing.

mod common;
mod fleet;

#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/docker.rs"]
mod shared_docker;
#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/pg.rs"]
mod shared_pg;

use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use session_supervisor::PhaseName;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout};

use fleet::{Base, Fleet, FleetOptions, percentile, qr_opened, s};

/// Used by the shared Docker helpers.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Used by the shared Docker helpers.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The bound of one scenario, from the first container to the last ack.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(480);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_phase_5_three_tenants_ten_chips_each() {
    scenario("p5t", 3, 10, 23_800..=23_849).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_five_chips_each() {
    scenario("ftt", 20, 5, 23_850..=23_899).await;
}

async fn scenario(prefix: &str, tenants: usize, chips: usize, ports: RangeInclusive<u16>) {
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let base = Base::new("cs-fleet").await;
    let slot: Mutex<Option<Fleet>> = Mutex::new(None);
    let outcome = AssertUnwindSafe(timeout(
        SCENARIO_DEADLINE,
        body(&base, &slot, prefix, tenants, chips, ports),
    ))
    .catch_unwind()
    .await;
    // Clean-up, whatever happened: the backend first (nothing re-creates containers), then
    // Docker and the database.
    if let Some(fleet) = slot.lock().await.take() {
        fleet.stop().await;
    }
    base.clean_up().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the scenario did not finish within {SCENARIO_DEADLINE:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    eprintln!(
        "[fleet {tenants}x{chips}] scenario duration {} (with set-up and clean-up)",
        s(started.elapsed())
    );
}

async fn body(
    base: &Base,
    slot: &Mutex<Option<Fleet>>,
    prefix: &str,
    tenant_count: usize,
    chip_count: usize,
    ports: RangeInclusive<u16>,
) {
    let total = tenant_count * chip_count;
    let options = FleetOptions::scenario(FleetOptions::proxies_for(total), ports);
    let mut guard = slot.lock().await;
    let fleet = guard.insert(Fleet::start(base, &options).await);
    let supervisor = fleet.supervisor().clone();
    let tenants = fleet::tenants(prefix, tenant_count);
    let chips = fleet::chips(chip_count);
    let label = format!("[fleet {tenant_count}x{chip_count}]");

    // Create → QR window, every chip at once.
    let t0 = Instant::now();
    let created = fleet::create_fleet(fleet, &tenants, &chips).await;
    assert_eq!(created.len(), total);
    let (_, at_qr) = fleet::wait_all(
        &supervisor,
        &tenants,
        total,
        PhaseName::AwaitingLogin,
        Duration::from_secs(240),
    )
    .await;
    let all_at_qr = t0.elapsed();
    assert_eq!(
        at_qr.len(),
        total,
        "{total} of {total} sessions reach the QR"
    );
    let to_qr: Vec<Duration> = at_qr
        .iter()
        .map(|record| {
            let opened = qr_opened(record).expect("awaiting a login");
            opened.duration_since(record.created_at).unwrap_or_default()
        })
        .collect();
    fleet::every_qr_decodes(&supervisor, &tenants, &chips).await;
    fleet::every_step_recorded(&at_qr);
    fleet::one_create_per_chip(base, fleet, &tenants, &chips).await;

    // The scans → WORKING.
    let t1 = Instant::now();
    fleet::scan_all(base, fleet, &tenants, &chips).await;
    let (_, working) = fleet::wait_all(
        &supervisor,
        &tenants,
        total,
        PhaseName::Working,
        Duration::from_secs(120),
    )
    .await;
    let all_working = t1.elapsed();
    assert_eq!(working.len(), total, "{total} of {total} WORKING");

    // The dead proxy: its chips rotate away, every change recorded.
    let t2 = Instant::now();
    let proxies =
        fleet::no_chip_on_the_dead_proxy(base, fleet, &tenants, &chips, Duration::from_secs(120))
            .await;
    let proxies_settled = t2.elapsed();
    assert!(
        proxies.rotations >= proxies.on_dead,
        "each chip given the dead proxy rotated away: {proxies:?}"
    );

    // A live proxy dies under working chips (the fault matrix's row, at full size): its chips
    // rotate, the others are untouched.
    let (moved, moved_in) =
        fleet::a_proxy_dies_under_working_chips(fleet, &tenants, &chips, Duration::from_secs(120))
            .await;
    // Every chip WORKING after the rotations (restarted through the new proxy).
    let (_, working) = fleet::wait_all(
        &supervisor,
        &tenants,
        total,
        PhaseName::Working,
        Duration::from_secs(120),
    )
    .await;
    fleet::every_step_recorded(&working);

    // One message per chip, acked to read by webhook.
    let to_read =
        fleet::one_message_per_chip_read(fleet, &tenants, &chips, Duration::from_secs(180)).await;

    eprintln!(
        "{label} create -> QR: p50 {} p95 {} max {}; all {total} at the QR {} after the creates",
        s(percentile(&to_qr, 50.0)),
        s(percentile(&to_qr, 95.0)),
        s(percentile(&to_qr, 100.0)),
        s(all_at_qr)
    );
    eprintln!(
        "{label} scans -> all WORKING {}; dead proxy: {} chips given it, {} rotations, settled in {}; \
         a live proxy killed under {moved} working chips: all moved in {}; \
         one message per chip sent and read in {}; total {}",
        s(all_working),
        proxies.on_dead,
        proxies.rotations,
        s(proxies_settled),
        s(moved_in),
        s(to_read),
        s(t0.elapsed())
    );
}
