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
use std::time::Duration;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use container_pool::ContainerState;
use proxy_allocator::LeaseStore;
use session_supervisor::{ChipSpec, PhaseName, StepKind, StepOutcome, SupervisorError};
use tenant_isolation::{NewTenant, PlanLimits, TenantSecrets};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio::time::sleep;

use fleet::{Base, Fleet, FleetOptions, percentile, qr_opened, s};

/// Used by the shared Docker helpers.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Used by the shared Docker helpers.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

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
    let options = FleetOptions::scenario(FleetOptions::proxies_for(tenants * chips), ports);
    let name = format!("fleet {tenants}x{chips}");
    fleet::with_fleet(&name, SCENARIO_DEADLINE, options, async |base, fleet| {
        body(base, fleet, prefix, tenants, chips).await
    })
    .await;
}

async fn body(
    base: &Base,
    fleet: &mut Fleet,
    prefix: &str,
    tenant_count: usize,
    chip_count: usize,
) {
    let total = tenant_count * chip_count;
    let supervisor = fleet.supervisor().clone();
    let tenants = fleet::tenants(prefix, tenant_count);
    let chips = fleet::chips(chip_count);
    let label = format!("[fleet {tenant_count}x{chip_count}]");

    // Create → QR window, every chip at once.
    let t0 = Instant::now();
    let created = fleet::create_fleet(fleet, &tenants, &chips).await;
    assert_eq!(created.len(), total);
    let at_qr = fleet::wait_all(
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
    let working = fleet::wait_all(
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
    let (moved, moved_in) = fleet::a_proxy_dies_under_working_chips(
        base,
        fleet,
        &tenants,
        &chips,
        Duration::from_secs(120),
    )
    .await;
    // Every chip WORKING after the rotations (restarted through the new proxy).
    fleet::wait_all(
        &supervisor,
        &tenants,
        total,
        PhaseName::Working,
        Duration::from_secs(120),
    )
    .await;

    // One message per chip, acked to read by webhook.
    let to_read =
        fleet::one_message_per_chip_read(fleet, &tenants, &chips, Duration::from_secs(180)).await;

    // Hostile and faulty webhooks through the real ingest and the PostgreSQL inbox.
    fleet::hostile_webhooks(base, fleet, &tenants, &chips).await;

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

/// The fault matrix's "50 tasks racing for 10 quota slots": fifty `create_chip` calls of
/// distinct chips, released at once, for a tenant whose plan allows 10 chips. Exactly 10
/// chips exist afterwards (in the supervisor's store and in the PostgreSQL ledger, its usage
/// and its reservations naming exactly the winners), and the 40 others were refused as over
/// the quota, with nothing of theirs stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_creates_racing_for_ten_quota_slots_make_exactly_ten_chips() {
    let options = FleetOptions::scenario(FleetOptions::proxies_for(10), 23_960..=23_979);
    fleet::with_fleet(
        "quota race",
        SCENARIO_DEADLINE,
        options,
        async |base, fleet| {
            let tenant = fleet::tenants("qrc", 1).remove(0);
            fleet
                .production
                .directory()
                .create(NewTenant::new(
                    tenant.clone(),
                    PlanLimits::new(10, 10, 10_000),
                    TenantSecrets::generate().expect("secrets"),
                ))
                .await
                .expect("the tenant");
            let chips = fleet::chips(50);
            let barrier = Arc::new(Barrier::new(chips.len()));
            let mut tasks = JoinSet::new();
            for chip in chips.clone() {
                let supervisor = fleet.supervisor().clone();
                let tenant = tenant.clone();
                let barrier = barrier.clone();
                tasks.spawn(async move {
                    barrier.wait().await;
                    let result = supervisor.create_chip(&tenant, &chip, ChipSpec::qr()).await;
                    (chip, result)
                });
            }
            let mut won = BTreeSet::new();
            let mut refused = 0;
            while let Some(joined) = tasks.join_next().await {
                let (chip, result) = joined.expect("a create task");
                match result {
                    Ok(_) => {
                        won.insert(chip.as_str().to_owned());
                    }
                    Err(SupervisorError::QuotaExceeded { .. }) => refused += 1,
                    Err(other) => panic!("{chip}: neither created nor over the quota: {other}"),
                }
            }
            assert_eq!((won.len(), refused), (10, 40), "exactly 10 of 50 won");
            let stored: BTreeSet<String> =
                fleet::records(fleet.supervisor(), std::slice::from_ref(&tenant))
                    .await
                    .iter()
                    .map(|r| r.key.chip.as_str().to_owned())
                    .collect();
            assert_eq!(stored, won, "exactly the winners are stored");
            let owner = shared_pg::scratch::owner_client(&base.db.url).await;
            let in_use: i32 = owner
                .query_one(
                    "SELECT in_use FROM quota_usage WHERE tenant_id = $1 AND kind = 'chip'",
                    &[&tenant.as_str()],
                )
                .await
                .expect("the chip usage row")
                .get(0);
            assert_eq!(in_use, 10, "the ledger counts 10 chips");
            let reserved: BTreeSet<String> = owner
                .query(
                    "SELECT chip_id FROM quota_reservations WHERE tenant_id = $1 AND kind = 'chip'",
                    &[&tenant.as_str()],
                )
                .await
                .expect("the reservations")
                .iter()
                .map(|row| row.get(0))
                .collect();
            assert_eq!(
                reserved, won,
                "the ledger's reservations are exactly the winners"
            );
        },
    )
    .await;
}

/// The fault matrix's "a tenant container killed mid-provision": the tenant's container is
/// killed (`docker kill`) while its chips provision (it still answers 400 to session calls:
/// no create can have been accepted, which its call log shows just before the kill). Every
/// chip finishes on the container the supervisor ensures again (an `EnsureContainer` step
/// after the kill), one container per slot, and the simulators' call logs show exactly one
/// accepted create per chip across both containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_container_killed_mid_provision() {
    // Listening soon, then booting long enough to be killed inside the window.
    let options = FleetOptions::scenario(FleetOptions::proxies_for(5), 23_980..=23_999)
        .with_boot("300..800", "8000..9000");
    fleet::with_fleet(
        "container killed",
        SCENARIO_DEADLINE,
        options,
        async |base, fleet| {
            let supervisor = fleet.supervisor().clone();
            let tenants = fleet::tenants("kil", 1);
            let chips = fleet::chips(5);
            let tenant = &tenants[0];
            fleet::create_fleet(fleet, &tenants, &chips).await;

            // The container listens (booting): its call log, then the kill.
            let deadline = Instant::now() + Duration::from_secs(60);
            let (id, calls) = loop {
                if let (Some(id), Some((control, _))) = (
                    fleet::tenant_container(base, tenant).await,
                    fleet::tenant_sim(base, fleet, tenant).await,
                ) && let Ok(calls) = control.calls().await
                {
                    break (id, calls);
                }
                assert!(Instant::now() < deadline, "the container never listened");
                sleep(fleet::POLL).await;
            };
            let accepted_before = calls
                .iter()
                .filter(|c| c.is_create() && c.status == 201)
                .count();
            assert_eq!(
                accepted_before, 0,
                "mid-provision: no create accepted yet ({calls:?})"
            );
            let killed_at = SystemTime::now();
            let killed = std::process::Command::new("docker")
                .args(["kill", &id])
                .output()
                .expect("the docker CLI");
            assert!(
                killed.status.success(),
                "docker kill: {}",
                String::from_utf8_lossy(&killed.stderr)
            );

            let records = fleet::wait_all(
                &supervisor,
                &tenants,
                chips.len(),
                PhaseName::AwaitingLogin,
                Duration::from_secs(180),
            )
            .await;
            fleet::every_step_recorded(&records);
            assert!(
                records.iter().any(
                    |r| r.steps.iter().any(|s| s.step == StepKind::EnsureContainer
                        && s.outcome == StepOutcome::Succeeded
                        && s.at > killed_at)
                ),
                "the container was ensured again after the kill"
            );
            let by_slot = fleet::containers_by_slot(base).await;
            assert_eq!(
                by_slot.get(&(tenant.as_str().to_owned(), "0".to_owned())),
                Some(&vec![ContainerState::Running]),
                "one running container for the slot: {by_slot:?}"
            );
            fleet::one_create_per_chip(base, fleet, &tenants, &chips).await;
        },
    )
    .await;
}

/// A proxy dead before its chips ever work: the chips are leased while their container still
/// refuses session calls (a long boot), then every proxy holding a lease is killed. Each
/// session then starts through a dead proxy and goes `FAILED` (the simulator dials its proxy
/// first, as WAHA's engine must); the proxy-health pass finds the endpoint dead and, agreeing,
/// the chip's own lease; the chip rotates to a live proxy and reaches its QR there. Proves the
/// health pass's checks of chips that are not working yet, and the rotation path of a proxy
/// dead from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_dead_before_the_qr_moves_its_chips_to_a_live_one() {
    // Session calls refused long enough for the leases to be taken and killed.
    let options = FleetOptions::scenario(6, 24_000..=24_019).with_boot("300..800", "7000..8000");
    fleet::with_fleet(
        "proxy dead before the QR",
        SCENARIO_DEADLINE,
        options,
        async |_base, fleet| {
            let supervisor = fleet.supervisor().clone();
            let tenants = fleet::tenants("dbq", 1);
            let chips = fleet::chips(3);
            fleet::create_fleet(fleet, &tenants, &chips).await;

            // Every chip leased (while the container still boots): kill each proxy holding one.
            let leases =
                fleet::eventually(Duration::from_secs(60), "every chip leased", || async {
                    let mut all = Vec::new();
                    for chip in &chips {
                        match fleet.leases.lease(&tenants[0], chip).await {
                            Ok(Some(lease)) => all.push((chip.clone(), lease.endpoint)),
                            other => return Err(format!("{chip}: {other:?}")),
                        }
                    }
                    Ok(all)
                })
                .await;
            let records = fleet::records(&supervisor, &tenants).await;
            assert!(
                records
                    .iter()
                    .all(|r| r.observed.phase.name() != PhaseName::AwaitingLogin),
                "the kill must come before any QR: {:?}",
                records.iter().map(fleet::describe).collect::<Vec<_>>()
            );
            let ids = fleet.proxies.endpoint_ids().await;
            let killed: BTreeSet<_> = leases
                .iter()
                .map(|(_, endpoint)| endpoint.clone())
                .collect();
            for (address, id) in &ids {
                if killed.contains(id) {
                    fleet.proxies.kill(address);
                }
            }

            let at_qr = fleet::wait_all(
                &supervisor,
                &tenants,
                chips.len(),
                PhaseName::AwaitingLogin,
                Duration::from_secs(180),
            )
            .await;
            fleet::every_qr_decodes(&supervisor, &tenants, &chips).await;
            for (chip, endpoint) in &leases {
                let now = fleet
                    .leases
                    .lease(&tenants[0], chip)
                    .await
                    .expect("the lease")
                    .expect("leased");
                assert!(
                    !killed.contains(&now.endpoint),
                    "{chip}: still on a killed proxy"
                );
                let history = fleet
                    .leases
                    .history(&tenants[0], chip)
                    .await
                    .expect("the history");
                assert!(
                    history.iter().any(|h| h.endpoint == *endpoint
                        && matches!(h.event, proxy_allocator::HistoryEvent::RotatedAway { .. })),
                    "{chip}: a recorded rotation away from the killed proxy: {history:?}"
                );
            }
            // The sessions went through a failure before the QR (the dead proxy), and the
            // supervisor said why: a proxy failure reported for each chip.
            for record in &at_qr {
                assert!(
                    record
                        .steps
                        .iter()
                        .any(|s| s.step == StepKind::ReportProxyFailure),
                    "{}",
                    fleet::describe(record)
                );
            }
        },
    )
    .await;
}
