//! The supervisor end to end, in memory (`docs/session-supervisor.md`, 10 and 11): real
//! supervisors on in-process WAHA simulators behind container-pool's in-memory runtime, a
//! proxy allocator, the quota ledger, one shared chip store, and webhooks verified and
//! observed through a local HTTP receiver (`support`).
//!
//! Every wait polls a condition under a deadline (a broken run fails, it never hangs); no
//! outcome is decided by a fixed sleep. Secrets are never printed.

mod shared;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use container_pool::{ContainerRuntime, ContainerState, Engine, LabelSelector, labels};
use session_supervisor::policy::Rate;
use session_supervisor::{
    ChangeFilter, ChangeItem, ChangeStream, ChipChangeKind, ChipKey, ChipRecord, ChipSpec,
    ChipStore, ForeignSessionPolicy, LoginKind, LoginOffer, ObserveOutcome, ParkReason, Phase,
    PhaseName, PhoneNumber, QrCode, QrFormat, Reason, RotationOptions, StepKind, StepOutcome,
    StopCause, Supervisor, SupervisorError, Toggle, UpgradeOptions, UpgradeStage,
};
use tenant_isolation::{ChipId, PlanLimits, QuotaLimit, SlotKind, TenantId, TenantStatus};
use waha_client::webhook::WebhookEvent;
use waha_client::{NewSession, SessionConfig, WahaApi};
use waha_sim::{
    BootingHealth, BootingStatus, DisconnectReason, Faults, SessionStatus as SimStatus,
};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers of this file.
// ---------------------------------------------------------------------------------------------

/// Whether `needle` appears in `hay` in order (not necessarily adjacent).
fn is_subsequence(needle: &[StepKind], hay: &[StepKind]) -> bool {
    let mut rest = hay.iter();
    needle.iter().all(|wanted| rest.any(|step| step == wanted))
}

/// Reads changes until one satisfies `stop` (included in the answer); fails on a gap, a closed
/// bus or the deadline.
async fn changes_until(
    stream: &mut ChangeStream,
    within: Duration,
    stop: impl Fn(&ChipChangeKind) -> bool,
) -> Vec<ChipChangeKind> {
    let deadline = tokio::time::Instant::now() + within;
    let mut kinds = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(ChangeItem::Change(change))) => {
                let done = stop(&change.kind);
                kinds.push(change.kind);
                if done {
                    return kinds;
                }
            }
            Ok(Some(ChangeItem::Gap { missed, .. })) => {
                panic!("the subscriber lagged and missed {missed} changes; seen so far: {kinds:?}")
            }
            Ok(None) => panic!("the event bus closed; seen so far: {kinds:?}"),
            Err(_) => panic!("timed out after {within:?} waiting for a change; seen: {kinds:?}"),
        }
    }
}

/// [`support::working_chip`], then checks the account that scanned.
async fn working_chip(
    fleet: &Fleet,
    supervisor: &Supervisor,
    tenant: &TenantId,
    chip: &ChipId,
    digits: &str,
) -> ChipRecord {
    let working = support::working_chip(fleet, supervisor, tenant, chip, digits).await;
    let me = working
        .observed
        .me
        .as_ref()
        .unwrap_or_else(|| panic!("a working chip knows its account: {}", describe(&working)));
    assert_eq!(me.id, format!("{digits}@c.us"), "the account that scanned");
    working
}

/// Waits until the simulator reports the session as not running any more (stopped, or failed
/// and left so).
async fn wait_session_down(control: &waha_sim::SimulatorControl, name: &str) {
    eventually(
        WAIT,
        format!("session {name} stopped by the supervisor"),
        move || {
            std::future::ready(
                matches!(
                    control.session_status(name),
                    Some(SimStatus::Stopped | SimStatus::Failed)
                )
                .then_some(()),
            )
        },
    )
    .await;
}

/// Waits until the tenant holds no running-session slot.
async fn wait_running_released(fleet: &Fleet, tenant: &TenantId) {
    eventually(
        WAIT,
        format!("tenant {tenant}'s running-session slots released"),
        move || async move { (fleet.usage(tenant).await.running_sessions == 0).then_some(()) },
    )
    .await;
}

/// Whether a state file under `dir` (searched `depth` levels down) records `session` logged
/// in (`me` set): the simulator writes its volume asynchronously, a crash loses what is
/// pending.
fn persisted_logged_in(dir: &Path, session: &str, depth: u32) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 && persisted_logged_in(&path, session, depth - 1) {
                return true;
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if value.get("name").and_then(|n| n.as_str()) == Some(session)
            && value.get("me").is_some_and(|me| !me.is_null())
        {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// 1. From created to AwaitingLogin to Working.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_goes_from_created_to_awaiting_login_then_working() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let mut changes = replica
        .subscribe(&acme, ChangeFilter::all())
        .await
        .expect("subscribed to acme's changes");

    let created = replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("chip created");
    assert_eq!(created.key, key(&acme, &sales));
    assert_eq!(
        created.observed.phase,
        Phase::Pending,
        "a new chip is recorded before it is reconciled"
    );

    let awaiting = wait_phase(&replica, &acme, &sales, PhaseName::AwaitingLogin, WAIT).await;
    assert!(
        matches!(
            awaiting.observed.phase,
            Phase::AwaitingLogin {
                method: LoginKind::Qr,
                ..
            }
        ),
        "a QR chip awaits a QR scan: {}",
        describe(&awaiting)
    );
    assert!(
        matches!(awaiting.observed.login, Some(LoginOffer::Qr { .. })),
        "a QR window is on offer: {}",
        describe(&awaiting)
    );

    match replica
        .qr(&acme, &sales, QrFormat::Png)
        .await
        .expect("the QR code as a PNG")
    {
        QrCode::Png(bytes) => assert!(
            bytes.starts_with(b"\x89PNG"),
            "a PNG starts with its magic; got {} bytes",
            bytes.len()
        ),
        QrCode::Raw(_) => panic!("asked for a PNG, got the raw value"),
    }
    match replica
        .qr(&acme, &sales, QrFormat::Raw)
        .await
        .expect("the QR code's raw value")
    {
        QrCode::Raw(raw) => assert!(!raw.value.is_empty(), "the raw QR value is not empty"),
        QrCode::Png(_) => panic!("asked for the raw value, got a PNG"),
    }

    fleet.scan(&acme, &sales, "5511999990001").await;
    let working = wait_phase(&replica, &acme, &sales, PhaseName::Working, WAIT).await;
    let me = working
        .observed
        .me
        .as_ref()
        .unwrap_or_else(|| panic!("a working chip knows its account: {}", describe(&working)));
    assert_eq!(me.id, "5511999990001@c.us", "the account that scanned");
    assert_eq!(working.observed.login, None, "the login window closed");
    assert!(
        matches!(
            replica.qr(&acme, &sales, QrFormat::Png).await,
            Err(SupervisorError::NotReady { .. })
        ),
        "no QR code outside a QR window"
    );

    // The step log: every step's outcome, in order, none failed on a healthy server.
    let failed: Vec<&StepKind> = working
        .steps
        .iter()
        .filter(|entry| entry.outcome != StepOutcome::Succeeded)
        .map(|entry| &entry.step)
        .collect();
    assert!(
        failed.is_empty(),
        "no step fails on a healthy server: {}",
        describe(&working)
    );
    let kinds: Vec<StepKind> = working.steps.iter().map(|entry| entry.step).collect();
    let expected = [
        StepKind::ReserveRunningSlot,
        StepKind::PlaceChip,
        StepKind::EnsureContainer,
        StepKind::LeaseProxy,
        StepKind::EnsureSession,
        StepKind::StartSession,
        StepKind::Record,
        StepKind::ConfirmWorking,
    ];
    assert!(
        is_subsequence(&expected, &kinds),
        "the provisioning steps appear in order ({expected:?}): {}",
        describe(&working)
    );
    assert_eq!(
        kinds.first(),
        Some(&StepKind::ReserveRunningSlot),
        "{}",
        describe(&working)
    );
    assert_eq!(
        kinds.last(),
        Some(&StepKind::ConfirmWorking),
        "{}",
        describe(&working)
    );
    let entries: Vec<_> = working.steps.iter().collect();
    for pair in entries.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "step numbers increase");
        assert!(pair[0].at <= pair[1].at, "step times do not go back");
    }

    // The changes: Created, then the QR window, then the login.
    let seen = changes_until(&mut changes, WAIT, |kind| {
        matches!(kind, ChipChangeKind::LoggedIn { .. })
    })
    .await;
    let position = |wanted: fn(&ChipChangeKind) -> bool| seen.iter().position(wanted);
    let created_at = position(|k| matches!(k, ChipChangeKind::Created))
        .unwrap_or_else(|| panic!("a Created change: {seen:?}"));
    let qr_at = position(|k| matches!(k, ChipChangeKind::QrAvailable { .. }))
        .unwrap_or_else(|| panic!("a QrAvailable change: {seen:?}"));
    let logged_in_at = position(|k| matches!(k, ChipChangeKind::LoggedIn { .. }))
        .unwrap_or_else(|| panic!("a LoggedIn change: {seen:?}"));
    assert!(
        created_at < qr_at && qr_at < logged_in_at,
        "Created, then QrAvailable, then LoggedIn: {seen:?}"
    );
    match &seen[logged_in_at] {
        ChipChangeKind::LoggedIn { me } => assert_eq!(me.id, "5511999990001@c.us"),
        other => panic!("not a login: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Pairing code.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_code_flow() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let phone = PhoneNumber::new("+5511988880001").expect("a valid phone number");
    replica
        .create_chip(&acme, &sales, ChipSpec::pairing_code(phone))
        .await
        .expect("chip created");

    let awaiting = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "AwaitingLogin { PairingCode }",
        |record| {
            matches!(
                record.observed.phase,
                Phase::AwaitingLogin {
                    method: LoginKind::PairingCode,
                    ..
                }
            )
        },
    )
    .await;
    let code = replica
        .pairing_code(&acme, &sales)
        .await
        .expect("the pairing code is read")
        .unwrap_or_else(|| panic!("a pairing code is on offer: {}", describe(&awaiting)));
    assert!(!code.expose_secret().is_empty(), "the code is not empty");
    assert!(
        matches!(
            replica.qr(&acme, &sales, QrFormat::Png).await,
            Err(SupervisorError::NotReady { .. })
        ),
        "a pairing-code chip offers no QR code"
    );

    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let requests = |control: &waha_sim::SimulatorControl| {
        control
            .calls_for(&name)
            .iter()
            .filter(|call| {
                call.method == "POST" && call.route == "/api/{session}/auth/request-code"
            })
            .count()
    };
    assert_eq!(
        requests(&control),
        1,
        "exactly one pairing-code request: {:?}",
        show_calls(&control.calls_for(&name))
    );

    // The phone enters the code.
    fleet.scan(&acme, &sales, "5511988880001").await;
    let working = wait_phase(&replica, &acme, &sales, PhaseName::Working, WAIT).await;
    assert_eq!(
        working.observed.me.as_ref().map(|me| me.id.as_str()),
        Some("5511988880001@c.us")
    );
    assert_eq!(
        requests(&control),
        1,
        "the code was never requested again: {:?}",
        show_calls(&control.calls_for(&name))
    );
    assert!(
        replica
            .pairing_code(&acme, &sales)
            .await
            .expect("the pairing code is read")
            .is_none(),
        "no code on offer once logged in"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Replaced: parked, never reconnected (one pool per engine).
// ---------------------------------------------------------------------------------------------

async fn replaced_on(engine: Engine) {
    let fleet = Fleet::builder().tenant("acme").engine(engine).build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    working_chip(&fleet, &replica, &acme, &sales, "5511999990002").await;

    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let mark = call_mark(&control);
    control
        .disconnect(&name, DisconnectReason::ConnectionReplaced)
        .expect("the disconnect is injected");

    let parked = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Parked { replaced }",
        |record| {
            matches!(
                record.observed.phase,
                Phase::Parked {
                    reason: ParkReason::Replaced,
                    ..
                }
            )
        },
    )
    .await;
    assert_eq!(
        parked.observed.last_error.as_ref().map(|e| e.reason),
        Some(Reason::Replaced),
        "{engine:?}: {}",
        describe(&parked)
    );
    // The session is stopped (NOWEB and WEBJS would reconnect by themselves) and the running
    // slot given back.
    wait_session_down(&control, &name).await;
    wait_running_released(&fleet, &acme).await;

    let after = calls_after(&control, &name, mark);
    assert!(
        !after.iter().any(is_start_or_restart),
        "{engine:?}: a replaced session is never started or restarted again; calls after the \
         disconnect: {:?}",
        show_calls(&after)
    );
    assert!(
        matches!(
            chip_phase(&replica, &acme, &sales).await,
            Some(PhaseName::Parked)
        ),
        "{engine:?}: the chip stays parked"
    );
    assert!(
        matches!(
            control.session_status(&name),
            Some(SimStatus::Stopped | SimStatus::Failed)
        ),
        "{engine:?}: the session stays down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_is_parked_not_reconnected() {
    replaced_on(Engine::Noweb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_is_parked_not_reconnected_on_gows() {
    replaced_on(Engine::Gows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_is_parked_not_reconnected_on_webjs() {
    replaced_on(Engine::Webjs).await;
}

// ---------------------------------------------------------------------------------------------
// 4. The other account signals, the QR window, a killed container.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_starts_a_new_login_window() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    working_chip(&fleet, &replica, &acme, &sales, "5511999990005").await;

    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let logged_out_at = SystemTime::now();
    control
        .disconnect(&name, DisconnectReason::LoggedOut)
        .expect("the disconnect is injected");

    let again = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "a new QR login window after the log-out",
        |record| {
            matches!(
                record.observed.phase,
                Phase::AwaitingLogin { method: LoginKind::Qr, since } if since >= logged_out_at
            )
        },
    )
    .await;
    assert!(
        matches!(again.observed.login, Some(LoginOffer::Qr { .. })),
        "a QR window is on offer again: {}",
        describe(&again)
    );
    assert!(
        control.session_me(&name).is_none(),
        "WAHA forgot the account: the phone must pair again"
    );
    match replica
        .qr(&acme, &sales, QrFormat::Raw)
        .await
        .expect("a QR code for the new window")
    {
        QrCode::Raw(raw) => assert!(!raw.value.is_empty()),
        QrCode::Png(_) => panic!("asked for the raw value, got a PNG"),
    }

    // Another phone pairs: the chip works under the new account.
    fleet.scan(&acme, &sales, "5511999990006").await;
    wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Working as the new account",
        |record| {
            matches!(record.observed.phase, Phase::Working { .. })
                && record.observed.me.as_ref().map(|me| me.id.as_str())
                    == Some("5511999990006@c.us")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_is_parked() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    working_chip(&fleet, &replica, &acme, &sales, "5511999990007").await;

    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let mark = call_mark(&control);
    control
        .disconnect(&name, DisconnectReason::Banned)
        .expect("the disconnect is injected");

    let parked = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Parked { banned }",
        |record| {
            matches!(
                record.observed.phase,
                Phase::Parked {
                    reason: ParkReason::Banned,
                    ..
                }
            )
        },
    )
    .await;
    assert_eq!(
        parked.observed.last_error.as_ref().map(|e| e.reason),
        Some(Reason::Banned),
        "{}",
        describe(&parked)
    );
    // NOWEB reconnects a 406 by itself: the supervisor stops it and gives the slot back.
    wait_session_down(&control, &name).await;
    wait_running_released(&fleet, &acme).await;
    let after = calls_after(&control, &name, mark);
    assert!(
        !after.iter().any(is_start_or_restart),
        "a banned chip is never restarted by itself: {:?}",
        show_calls(&after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_ban_backs_off() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    // NOWEB's 402 carries no expiry: the fallback applies (3 s here, no jitter).
    let config = fleet.config();
    let fallback = config.policy.temp_ban_fallback;
    assert_eq!(config.policy.temp_ban_jitter, Duration::ZERO);
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let working = working_chip(&fleet, &replica, &acme, &sales, "5511999990008").await;
    let me = working.observed.me.clone();

    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let mark = call_mark(&control);
    let banned_at = SystemTime::now();
    control
        .disconnect(&name, DisconnectReason::TemporaryBan)
        .expect("the disconnect is injected");

    let backing_off = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "BackingOff { temporarily_banned }",
        |record| {
            matches!(
                record.observed.phase,
                Phase::BackingOff {
                    reason: Reason::TemporarilyBanned,
                    ..
                }
            )
        },
    )
    .await;
    let next_try = backing_off
        .observed
        .phase
        .next_try()
        .expect("a backing-off chip has a next try");
    assert!(
        next_try >= banned_at + fallback,
        "the ban is waited out: next try {next_try:?} is at least {fallback:?} after the ban"
    );

    // The session does not run during the ban (NOWEB would reconnect at once).
    wait_session_down(&control, &name).await;
    if SystemTime::now() + Duration::from_millis(200) < next_try {
        assert!(
            matches!(
                chip_phase(&replica, &acme, &sales).await,
                Some(PhaseName::BackingOff)
            ),
            "the chip keeps backing off until the ban's end"
        );
    }

    // After the expiry it comes back, logged in as before (no new scan).
    let back = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Working after the ban",
        |record| matches!(record.observed.phase, Phase::Working { since } if since >= next_try),
    )
    .await;
    assert_eq!(back.observed.me, me, "the login survived the ban");
    let next_try_ms = unix_ms(next_try);
    let early: Vec<_> = calls_after(&control, &name, mark)
        .into_iter()
        .filter(|call| is_start_or_restart(call) && call.at_ms + 5 < next_try_ms)
        .collect();
    assert!(
        early.is_empty(),
        "nothing restarts the session before the ban ends: {:?}",
        show_calls(&early)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_window_expiry_waits_for_the_host() {
    // Time scale 0.01: WAHA's 160 s QR window (60 s, then 5 × 20 s) lasts 1.6 s.
    let fleet = Fleet::builder()
        .tenant("acme")
        .time_scale(0.01)
        .build()
        .await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("chip created");
    wait_phase(&replica, &acme, &sales, PhaseName::AwaitingLogin, WAIT).await;

    // Nobody scans.
    let expired = wait_phase(&replica, &acme, &sales, PhaseName::LoginExpired, WAIT).await;
    let Phase::LoginExpired {
        since: expired_since,
    } = expired.observed.phase
    else {
        unreachable!("waited for LoginExpired");
    };
    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    eventually(WAIT, format!("{name} stopped after its QR window"), || {
        std::future::ready(
            (control.session_status(&name) == Some(SimStatus::Stopped)).then_some(()),
        )
    })
    .await;
    wait_running_released(&fleet, &acme).await;
    assert!(
        matches!(
            replica.qr(&acme, &sales, QrFormat::Png).await,
            Err(SupervisorError::NotReady { .. })
        ),
        "no QR code once the window ran out"
    );
    assert!(
        matches!(
            chip_phase(&replica, &acme, &sales).await,
            Some(PhaseName::LoginExpired)
        ),
        "the chip waits for the host"
    );

    // The host starts it: a new window opens.
    replica
        .start_chip(&acme, &sales)
        .await
        .expect("start accepted");
    let reopened = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "a new login window",
        |record| {
            matches!(
                record.observed.phase,
                Phase::AwaitingLogin { method: LoginKind::Qr, since } if since > expired_since
            )
        },
    )
    .await;
    assert!(
        reopened.observed.running_slot,
        "the new window holds a running slot again: {}",
        describe(&reopened)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_comes_back_working_without_a_qr() {
    // Volumes are on (the fleet's default): the simulator keeps each volume's sessions in its
    // own state directory, so a container re-created on the volume finds the login.
    let fleet = Fleet::builder().tenant("acme").build().await;
    let replica = fleet.supervisor().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let working = working_chip(&fleet, &replica, &acme, &sales, "5511999990004").await;
    let me = working.observed.me.clone().expect("logged in");
    let name = session(&acme, &sales);

    // The simulator writes its state within ~10 ms; a crash loses what is pending. Wait until
    // the login is on the volume, as it would be on a real one long before a crash.
    let root = fleet.launcher.state_root().to_path_buf();
    eventually(
        WAIT,
        format!("{name}'s login written to its volume"),
        || std::future::ready(persisted_logged_in(&root, &name, 3).then_some(())),
    )
    .await;

    let old = fleet
        .running_container(&acme, 0)
        .await
        .expect("the tenant's container runs");
    let control = fleet.launcher.control(&old.name).expect("its simulator");
    // The process dies abruptly ...
    control.crash();
    // ... and the runtime sees the exit (the in-memory runtime cannot notice a dead
    // in-process server by itself: `kill` is how it learns, as Docker learns of an exit).
    fleet
        .runtime
        .kill(&old.id, 137)
        .await
        .expect("the runtime records the death");

    let back = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Working again on a re-created container",
        |record| {
            matches!(record.observed.phase, Phase::Working { .. })
                && record
                    .observed
                    .container
                    .as_ref()
                    .is_some_and(|container| container.id != old.id)
        },
    )
    .await;
    assert_eq!(
        back.observed.me.as_ref(),
        Some(&me),
        "the same account, without a new scan"
    );
    let new = fleet
        .running_container(&acme, 0)
        .await
        .expect("a new container runs");
    assert_ne!(new.id, old.id, "the container was re-created");
    assert_eq!(
        new.name, old.name,
        "under the same name (same slot, same volume)"
    );
    assert_eq!(
        fleet.containers_per_slot(&acme).await,
        BTreeMap::from([("0".to_owned(), 1)]),
        "one container for the slot"
    );
    let control = fleet.control_for(&acme).await;
    assert_eq!(control.session_status(&name), Some(SimStatus::Working));
    assert_eq!(
        control.session_me(&name).map(|m| m.id),
        Some(me.id.clone()),
        "WAHA restored the login from the volume"
    );
    let logouts: Vec<_> = control
        .calls_for(&name)
        .into_iter()
        .filter(|call| call.route == "/api/sessions/{session}/logout")
        .collect();
    assert!(
        logouts.is_empty(),
        "the login was kept: {:?}",
        show_calls(&logouts)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A supervisor dropped mid-provision, rebuilt on the same store.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_dropped_mid_provision_is_rebuilt_without_duplicates() {
    // Each container refuses connections for its first 20 s of simulated time (1 s here), so
    // the chips are certainly still provisioning when the first supervisor goes.
    let fleet = Fleet::builder()
        .tenant("acme")
        .faults(Faults::none().with_startup_delay(secs(20)))
        .build()
        .await;
    let acme = tenant("acme");
    let chips = [chip("sales-1"), chip("sales-2")];
    let mut config = fleet.config();
    // In-flight steps are dropped at shutdown, not finished.
    config.shutdown_grace = ms(10);
    let first = fleet.supervisor_with(config).await;
    for c in &chips {
        first
            .create_chip(&acme, c, ChipSpec::qr())
            .await
            .expect("chip created");
    }
    for c in &chips {
        wait_phase(&first, &acme, c, PhaseName::Provisioning, WAIT).await;
    }
    let mut leases_before = Vec::new();
    for c in &chips {
        leases_before.push(fleet.lease(&acme, c).await);
    }

    let report = first.shutdown().await;
    assert_eq!(
        report.released_tenants, 1,
        "the first supervisor owned acme: {report}"
    );
    for record in fleet.records(&acme).await {
        assert!(
            !matches!(
                record.observed.phase,
                Phase::AwaitingLogin { .. } | Phase::Working { .. }
            ),
            "precondition: dropped mid-provision, not after: {}",
            describe(&record)
        );
    }

    let second = fleet.supervisor().await;
    wait_all(
        &second,
        std::slice::from_ref(&acme),
        &chips,
        PhaseName::AwaitingLogin,
        WAIT,
    )
    .await;

    assert_eq!(
        fleet.containers_per_slot(&acme).await,
        BTreeMap::from([("0".to_owned(), 1)]),
        "one container per slot"
    );
    for (c, before) in chips.iter().zip(&leases_before) {
        let lease = fleet
            .lease(&acme, c)
            .await
            .unwrap_or_else(|| panic!("{c} holds a proxy lease"));
        assert_eq!(
            lease.generation, 1,
            "{c}: the first lease, never allocated twice"
        );
        if let Some(before) = before {
            assert_eq!(
                (&lease.endpoint, lease.generation),
                (&before.endpoint, before.generation),
                "{c}: the lease is unchanged by the drop"
            );
        }
    }
    let usage = fleet.usage(&acme).await;
    assert_eq!(usage.chips, 2, "two chip slots");
    assert_eq!(usage.running_sessions, 2, "two running slots");
    assert_eq!(fleet.records(&acme).await.len(), 2, "two records");
    let control = fleet.control_for(&acme).await;
    for c in &chips {
        let name = session(&acme, c);
        assert_eq!(
            creates_answered_201(&control, &name),
            1,
            "{name} was created once: {:?}",
            show_calls(&control.calls_for(&name))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Fifty concurrent creates of one id.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_of_one_id_make_one_chip() {
    let fleet = Fleet::builder()
        .tenant_with_limits("acme", PlanLimits::new(2, 2, 1_000))
        .build()
        .await;
    // The API alone: nothing needs to run for admission and records.
    let supervisor = fleet.build_supervisor(fleet.config(), None);
    let acme = tenant("acme");
    let sales = chip("sales-1");

    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let supervisor = supervisor.clone();
        let (t, c) = (acme.clone(), sales.clone());
        creates.spawn(async move { supervisor.create_chip(&t, &c, ChipSpec::qr()).await });
    }
    let mut keys = BTreeSet::new();
    let mut answered = 0;
    while let Some(joined) = creates.join_next().await {
        let record = joined
            .expect("the task ran")
            .unwrap_or_else(|error| panic!("a repeated create of the same spec succeeds: {error}"));
        keys.insert(record.key);
        answered += 1;
    }
    assert_eq!(answered, 50);
    assert_eq!(keys, BTreeSet::from([key(&acme, &sales)]), "one chip");
    assert_eq!(fleet.records(&acme).await.len(), 1, "one record");
    assert_eq!(fleet.usage(&acme).await.chips, 1, "one chip slot");
    assert_eq!(
        fleet
            .quota
            .holders(&acme, SlotKind::Chip)
            .await
            .expect("holders"),
        vec![sales.clone()]
    );

    // The same id with another spec.
    let mut other = ChipSpec::qr();
    other
        .host_labels
        .insert("team".to_owned(), "support".to_owned());
    match supervisor.create_chip(&acme, &sales, other).await {
        Err(SupervisorError::ChipConflict { existing, .. }) => {
            assert_eq!(
                *existing,
                ChipSpec::qr(),
                "the conflict names the existing spec"
            );
        }
        Ok(record) => panic!("another spec must conflict, got {}", describe(&record)),
        Err(error) => panic!("expected ChipConflict, got {error}"),
    }

    // A second chip fits the plan of two; a third does not.
    supervisor
        .create_chip(&acme, &chip("sales-2"), ChipSpec::qr())
        .await
        .expect("the second chip fits the plan");
    match supervisor
        .create_chip(&acme, &chip("sales-3"), ChipSpec::qr())
        .await
    {
        Err(SupervisorError::QuotaExceeded {
            limit: QuotaLimit::MaxChips,
            max,
            in_use,
            ..
        }) => {
            assert_eq!((max, in_use), (2, 2), "the refusal names the plan");
        }
        Ok(record) => panic!("a third chip must be refused, got {}", describe(&record)),
        Err(error) => panic!("expected QuotaExceeded(max_chips), got {error}"),
    }
    assert_eq!(
        fleet.records(&acme).await.len(),
        2,
        "no record for the refused chip"
    );
    assert_eq!(fleet.usage(&acme).await.chips, 2);

    // An id whose chip is being deleted (no supervisor runs here, so its finalizers wait) is
    // not handed out again: typed and retryable, not the record about to vanish.
    supervisor
        .delete_chip(&acme, &chip("sales-2"))
        .await
        .expect("delete requested");
    match supervisor
        .create_chip(&acme, &chip("sales-2"), ChipSpec::qr())
        .await
    {
        Err(error @ SupervisorError::BeingDeleted { .. }) => assert!(error.is_retryable()),
        Ok(record) => panic!("a chip being deleted was handed out: {}", describe(&record)),
        Err(error) => panic!("expected BeingDeleted, got {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Deleted mid-provision.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_deleted_mid_provision_leaves_nothing_behind() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let replica = fleet.supervisor().await;
    let (acme, beta) = (tenant("acme"), tenant("beta"));
    let doomed = chip("doomed");
    let keeper = chip("keeper");

    // The other tenant's chip, working.
    let kept = working_chip(&fleet, &replica, &beta, &keeper, "5511999990003").await;

    let mut changes = replica
        .subscribe(&acme, ChangeFilter::chips([doomed.clone()]))
        .await
        .expect("subscribed");
    replica
        .create_chip(&acme, &doomed, ChipSpec::qr())
        .await
        .expect("chip created");
    wait_record(
        &replica,
        &acme,
        &doomed,
        WAIT,
        "provisioning begun",
        |record| record.observed.phase != Phase::Pending,
    )
    .await;
    replica
        .delete_chip(&acme, &doomed)
        .await
        .expect("delete accepted");

    changes_until(&mut changes, WAIT, |kind| {
        matches!(kind, ChipChangeKind::Deleted)
    })
    .await;
    assert!(
        matches!(
            replica.get_chip(&acme, &doomed).await,
            Err(SupervisorError::ChipNotFound { .. })
        ),
        "the record is gone"
    );

    // Nothing left behind.
    let name = session(&acme, &doomed);
    if let Some(container) = fleet.running_container(&acme, 0).await
        && let Some(control) = fleet.launcher.control(&container.name)
    {
        assert_eq!(
            control.session_status(&name),
            None,
            "no session {name} in WAHA"
        );
    }
    assert!(
        fleet.lease(&acme, &doomed).await.is_none(),
        "no proxy lease"
    );
    let usage = fleet.usage(&acme).await;
    assert_eq!(
        (usage.chips, usage.running_sessions),
        (0, 0),
        "no quota slot"
    );
    assert!(
        fleet
            .quota
            .holders(&acme, SlotKind::Chip)
            .await
            .expect("holders")
            .is_empty(),
        "no chip-slot holder"
    );
    assert!(fleet.records(&acme).await.is_empty(), "no record");

    // The other tenant is untouched.
    let after = replica
        .get_chip(&beta, &keeper)
        .await
        .expect("the other tenant's chip exists");
    assert!(
        matches!(after.observed.phase, Phase::Working { .. }),
        "{}",
        describe(&after)
    );
    assert_eq!(after.observed.me, kept.observed.me);
    assert!(
        fleet.lease(&beta, &keeper).await.is_some(),
        "its lease stays"
    );
    assert_eq!(fleet.usage(&beta).await.chips, 1, "its slot stays");
    assert_eq!(
        fleet
            .control_for(&beta)
            .await
            .session_status(&session(&beta, &keeper)),
        Some(SimStatus::Working),
        "its session keeps working"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Offboarding.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_leaves_nothing_behind() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let replica = fleet.supervisor().await;
    let (acme, beta) = (tenant("acme"), tenant("beta"));
    let (a1, a2, b1) = (chip("sales-1"), chip("sales-2"), chip("support-1"));

    working_chip(&fleet, &replica, &acme, &a1, "5511999990011").await;
    replica
        .create_chip(&acme, &a2, ChipSpec::qr())
        .await
        .expect("chip created");
    wait_phase(&replica, &acme, &a2, PhaseName::AwaitingLogin, WAIT).await;
    let kept = working_chip(&fleet, &replica, &beta, &b1, "5511999990012").await;
    let acme_containers: Vec<String> = fleet
        .containers(&acme)
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(
        !acme_containers.is_empty(),
        "precondition: acme has a container"
    );

    let _report = replica
        .offboard_tenant(&acme, Duration::from_secs(30))
        .await
        .expect("offboarding succeeds");

    // The world, not the report: nothing of acme is left.
    assert!(fleet.containers(&acme).await.is_empty(), "no container");
    let volumes = fleet
        .runtime
        .list_volumes(&LabelSelector::new(labels::TENANT, acme.as_str()))
        .await
        .expect("volumes listed");
    assert!(
        volumes.is_empty(),
        "no volume: {:?}",
        volumes.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    let running = fleet.launcher.running();
    assert!(
        acme_containers.iter().all(|name| !running.contains(name)),
        "no simulator of acme runs"
    );
    for c in [&a1, &a2] {
        assert!(fleet.lease(&acme, c).await.is_none(), "{c}: no proxy lease");
        assert!(
            matches!(
                replica.get_chip(&acme, c).await,
                Err(SupervisorError::ChipNotFound { .. })
            ),
            "{c}: no record"
        );
    }
    let usage = fleet.usage(&acme).await;
    assert_eq!(
        (usage.chips, usage.running_sessions),
        (0, 0),
        "no quota slot"
    );
    assert!(
        fleet.records(&acme).await.is_empty(),
        "the store holds none"
    );
    assert!(
        replica
            .list_chips(&acme, None, 100)
            .await
            .expect("listed")
            .is_empty()
    );

    // Running it again is safe.
    replica
        .offboard_tenant(&acme, Duration::from_secs(30))
        .await
        .expect("offboarding again is safe");

    // The other tenant is untouched.
    let after = replica
        .get_chip(&beta, &b1)
        .await
        .expect("beta's chip exists");
    assert!(
        matches!(after.observed.phase, Phase::Working { .. }),
        "{}",
        describe(&after)
    );
    assert_eq!(after.observed.me, kept.observed.me);
    assert!(fleet.lease(&beta, &b1).await.is_some());
    assert!(fleet.running_container(&beta, 0).await.is_some());
    assert_eq!(
        fleet
            .control_for(&beta)
            .await
            .session_status(&session(&beta, &b1)),
        Some(SimStatus::Working)
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Seed report 000: booting longer than a step's deadline.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booting_longer_than_a_step_deadline_still_provisions() {
    // `/health` answers 200 while session calls answer 400, for 3 s of wall-clock time after
    // each container starts: longer than a step may take (startup deadline 1 s, step 2 s).
    let scale = 0.05;
    let booting = secs(3);
    let fleet = Fleet::builder()
        .tenant("acme")
        .tenant("beta")
        .time_scale(scale)
        .startup_deadline(secs(1))
        .faults(
            Faults::none()
                .with_booting(booting.div_f64(scale), BootingStatus::BadRequest)
                .with_booting_health(BootingHealth::Ok),
        )
        .build()
        .await;
    let config = fleet.config();
    assert!(
        config.step_timeout < booting,
        "precondition: the booting window outlasts a step's deadline"
    );
    let replica = fleet.supervisor_with(config).await;
    let tenants = [tenant("acme"), tenant("beta")];
    let chips = [chip("sales-1"), chip("sales-2")];
    for t in &tenants {
        for c in &chips {
            replica
                .create_chip(t, c, ChipSpec::qr())
                .await
                .expect("chip created");
        }
    }

    let seen = wait_all(&replica, &tenants, &chips, PhaseName::AwaitingLogin, WAIT).await;
    assert_eq!(seen.len(), 4, "4 of 4 chips reach their QR window");
    for record in seen.values() {
        // While WAHA boots, the session read fails and the chip re-reads after
        // `reread_after` (no step is taken on a world it could not read); the step that
        // creates the session succeeds once WAHA answers.
        assert!(
            record
                .steps
                .iter()
                .any(|e| e.step == StepKind::EnsureSession && e.outcome == StepOutcome::Succeeded),
            "the session was ensured: {}",
            describe(record)
        );
        assert!(
            !matches!(record.observed.phase, Phase::Parked { .. }),
            "booting never parks"
        );
    }
    // The supervisor waited the boot out: nothing reached WAHA's session routes as a
    // mutation before WAHA answered (the session reads are refused with 400 meanwhile and
    // re-read), so every create was accepted at once, and each chip opened its QR window
    // only after the booting window, which outlasts a step's deadline.
    for t in &tenants {
        let control = fleet.control_for(t).await;
        let calls = control.calls();
        assert!(
            calls
                .iter()
                .filter(|call| call.is_create())
                .all(|call| call.status == 201),
            "{t}: every create was accepted: {:?}",
            show_calls(&calls)
        );
    }
    for record in seen.values() {
        let Phase::AwaitingLogin { since, .. } = record.observed.phase else {
            unreachable!("waited for AwaitingLogin");
        };
        let waited = since.duration_since(record.created_at).unwrap_or_default();
        assert!(
            waited >= booting.mul_f64(0.8),
            "the QR window opened after the boot ({waited:?} after creation, boot {booting:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Stale sessions in a reused volume.
// ---------------------------------------------------------------------------------------------

/// Pre-fills the tenant's container with `default`, `chip_test_1` and a chipfleet name no chip
/// owns, then runs a supervisor with `policy` and one chip, and sweeps. Returns the sessions
/// left, the sweep's report and the chip's session name.
async fn sweep_with(
    policy: ForeignSessionPolicy,
) -> (
    Vec<String>,
    session_supervisor::SessionSweep,
    String,
    String,
) {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let own = session(&acme, &sales);
    let unowned = session(&acme, &chip("ghost-chip"));

    // The reused volume: sessions left by an earlier life of the container.
    let waha = fleet.waha_for(&acme).await;
    for name in ["default", "chip_test_1", unowned.as_str()] {
        waha.create_session(&NewSession::new(name, SessionConfig::default()))
            .await
            .unwrap_or_else(|error| panic!("pre-creating {name} failed: {error}"));
    }
    assert_eq!(fleet.session_names(&acme).await.len(), 3, "precondition");

    let mut config = fleet.config();
    config.foreign_sessions = policy;
    let replica = fleet.supervisor_with(config).await;
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("chip created");
    wait_phase(&replica, &acme, &sales, PhaseName::AwaitingLogin, WAIT).await;
    let sweep = replica
        .sweep_stale_sessions(&acme)
        .await
        .expect("the replica owns acme");
    assert!(
        sweep.kept.contains(&own),
        "the chip's own session is kept: {sweep:?}"
    );

    let expected: Vec<String> = match policy {
        ForeignSessionPolicy::Remove => vec![own.clone()],
        _ => {
            let mut names = vec![own.clone(), "chip_test_1".to_owned(), "default".to_owned()];
            names.sort();
            names
        }
    };
    let (f, t, e) = (&fleet, &acme, &expected);
    let left = eventually(
        WAIT,
        format!("the sessions left to be {expected:?}"),
        move || async move {
            let names = f.session_names(t).await;
            (names == *e).then_some(names)
        },
    )
    .await;
    (left, sweep, own, unowned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_sessions_in_a_reused_volume_are_removed() {
    let (left, sweep, own, unowned) = sweep_with(ForeignSessionPolicy::Remove).await;
    assert_eq!(left, vec![own], "only the chip's session remains");
    assert!(!left.contains(&unowned));
    assert!(
        sweep.kept_foreign.is_empty(),
        "nothing foreign is kept: {sweep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_sessions_keep_policy_leaves_foreign_names() {
    let (left, sweep, own, unowned) = sweep_with(ForeignSessionPolicy::Keep).await;
    assert!(left.contains(&own), "the chip's session remains: {left:?}");
    assert!(left.contains(&"default".to_owned()) && left.contains(&"chip_test_1".to_owned()));
    assert!(
        !left.contains(&unowned),
        "a chipfleet name no chip owns is always removed: {left:?}"
    );
    let mut kept = sweep.kept_foreign.clone();
    kept.sort();
    assert_eq!(
        kept,
        vec!["chip_test_1".to_owned(), "default".to_owned()],
        "the sweep reports what it kept: {sweep:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. A reconnect storm.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_is_bounded() {
    const PER_TENANT: usize = 10;
    let plan = PlanLimits::new(10, 10, 1_000);
    // Time scale 0.1: QR windows of 16 s leave time to scan 20 chips.
    let fleet = Fleet::builder()
        .tenant_with_limits("acme", plan)
        .tenant_with_limits("beta", plan)
        .time_scale(0.1)
        .build()
        .await;
    let budget = Rate::per_minute(60, 3);
    let mut config = fleet.config();
    config.tenant_restart_budget = budget;
    let replica = fleet.supervisor_with(config).await;
    let tenants = [tenant("acme"), tenant("beta")];
    let chips: Vec<ChipId> = (0..PER_TENANT)
        .map(|n| chip(&format!("chip-{n}")))
        .collect();
    for t in &tenants {
        for c in &chips {
            replica
                .create_chip(t, c, ChipSpec::qr())
                .await
                .expect("chip created");
        }
    }
    for (i, t) in tenants.iter().enumerate() {
        for (j, c) in chips.iter().enumerate() {
            fleet.scan(t, c, &format!("55119990{i}{j:04}")).await;
        }
    }
    wait_all(&replica, &tenants, &chips, PhaseName::Working, WAIT * 2).await;

    let controls = [
        fleet.control_for(&tenants[0]).await,
        fleet.control_for(&tenants[1]).await,
    ];
    let marks: Vec<u64> = controls.iter().map(call_mark).collect();
    let storm_ms = unix_ms(SystemTime::now());
    // Every session fails at once, with no word from the engine (it stays FAILED until
    // restarted: no self-heal hides the supervisor's restarts).
    for (t, control) in tenants.iter().zip(&controls) {
        for c in &chips {
            control
                .fail(&session(t, c))
                .expect("the failure is injected");
        }
    }

    // Everyone comes back.
    let (ts, cs, ctl) = (&tenants, &chips, &controls);
    eventually(secs(60), "every session WORKING again", move || {
        let all = ts.iter().zip(ctl).all(|(t, control)| {
            cs.iter()
                .all(|c| control.session_status(&session(t, c)) == Some(SimStatus::Working))
        });
        std::future::ready(all.then_some(()))
    })
    .await;
    wait_all(&replica, &tenants, &chips, PhaseName::Working, WAIT).await;

    // Restarts never outran the tenant's budget: by any time t, at most burst + (t − t0) /
    // every of them (+1 for rounding).
    for ((t, control), mark) in tenants.iter().zip(&controls).zip(&marks) {
        let restarts: Vec<waha_sim::CallRecord> = control
            .calls()
            .into_iter()
            .filter(|call| call.seq > *mark && is_start_or_restart(call))
            .collect();
        for c in &chips {
            let name = session(t, c);
            assert!(
                restarts
                    .iter()
                    .any(|call| call.session.as_deref() == Some(name.as_str())),
                "{name} was restarted by the supervisor: {:?}",
                show_calls(&restarts)
            );
        }
        let mut times: Vec<u64> = restarts.iter().map(|call| call.at_ms).collect();
        times.sort_unstable();
        assert_within_budget(&format!("tenant {t}"), &times, storm_ms, budget);
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Two supervisors on one store.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_share_one_store_and_one_owns_each_tenant() {
    // Time scale 0.1: QR windows of 16 s outlast the takeover.
    let fleet = Fleet::builder()
        .tenant("one")
        .tenant("two")
        .time_scale(0.1)
        .build()
        .await;
    let a = fleet.supervisor_owned(fleet.config(), "replica-a").await;
    let b = fleet.supervisor_owned(fleet.config(), "replica-b").await;
    let (one, two) = (tenant("one"), tenant("two"));
    let sales = chip("sales-1");
    a.create_chip(&one, &sales, ChipSpec::qr())
        .await
        .expect("created through a");
    b.create_chip(&two, &sales, ChipSpec::qr())
        .await
        .expect("created through b");
    // Any replica reads every chip.
    wait_phase(&b, &one, &sales, PhaseName::AwaitingLogin, WAIT).await;
    wait_phase(&a, &two, &sales, PhaseName::AwaitingLogin, WAIT).await;

    let owned_a: BTreeSet<TenantId> = a.owned_tenants().into_iter().collect();
    let owned_b: BTreeSet<TenantId> = b.owned_tenants().into_iter().collect();
    assert!(
        owned_a.is_disjoint(&owned_b),
        "a tenant has one owner: a {owned_a:?}, b {owned_b:?}"
    );
    let all: BTreeSet<TenantId> = owned_a.union(&owned_b).cloned().collect();
    assert!(
        all.contains(&one) && all.contains(&two),
        "every tenant with chips is owned: a {owned_a:?}, b {owned_b:?}"
    );

    let (owner, other) = if owned_a.contains(&one) {
        (a, b)
    } else {
        (b, a)
    };
    let before = replica_record(&other, &one, &sales).await;
    let token_before = before
        .steps
        .iter()
        .map(|entry| entry.owner_token)
        .max()
        .expect("steps were taken");

    let report = owner.shutdown().await;
    assert!(
        report.released_tenants >= 1,
        "the owner released its tenants: {report}"
    );
    let (o, t1, t2) = (&other, &one, &two);
    eventually(
        WAIT,
        "the other replica takes both tenants over",
        move || {
            let owned = o.owned_tenants();
            std::future::ready((owned.contains(t1) && owned.contains(t2)).then_some(()))
        },
    )
    .await;

    // The chip keeps progressing under its new owner.
    fleet.scan(&one, &sales, "5511999990010").await;
    let working = wait_phase(&other, &one, &sales, PhaseName::Working, WAIT).await;
    let confirm = working
        .steps
        .iter()
        .rev()
        .find(|entry| entry.step == StepKind::ConfirmWorking)
        .unwrap_or_else(|| panic!("the login was confirmed: {}", describe(&working)));
    assert!(
        confirm.owner_token > token_before,
        "the new owner acted under a newer fencing token ({} > {token_before})",
        confirm.owner_token
    );
    assert!(other.is_running());
}

async fn replica_record(supervisor: &Supervisor, tenant: &TenantId, chip: &ChipId) -> ChipRecord {
    supervisor
        .get_chip(tenant, chip)
        .await
        .unwrap_or_else(|error| panic!("{tenant}/{chip}: {error}"))
}

// ---------------------------------------------------------------------------------------------
// 13. run() starts every monitor.
// ---------------------------------------------------------------------------------------------

/// Makes `idle` a tenant with a running container and no chip, and `ghost` a deleted tenant
/// whose container is still there (an orphan).
async fn idle_and_orphan(fleet: &Fleet, idle: &TenantId, ghost: &TenantId) {
    fleet.endpoint(idle).await;
    fleet.endpoint(ghost).await;
    fleet
        .directory
        .set_status(ghost, TenantStatus::Deleted)
        .await
        .expect("the tenant is deleted");
    assert!(
        !fleet.containers(ghost).await.is_empty(),
        "precondition: an orphan"
    );
}

async fn wait_reaped(fleet: &Fleet, idle: &TenantId) {
    eventually(
        WAIT,
        format!("{idle}'s idle container reaped"),
        move || async move {
            let containers = fleet.containers(idle).await;
            containers
                .iter()
                .all(|c| c.state != ContainerState::Running)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_every_monitor() {
    let fleet = Fleet::builder()
        .tenant("acme")
        .tenant("idle")
        .tenant("ghost")
        .idle_ttl(secs(1))
        .build()
        .await;
    let (acme, idle, ghost) = (tenant("acme"), tenant("idle"), tenant("ghost"));
    idle_and_orphan(&fleet, &idle, &ghost).await;
    // A stale session in acme's container, and a chip slot reserved by a create that never
    // recorded its chip.
    fleet
        .waha_for(&acme)
        .await
        .create_session(&NewSession::new("chip_test_1", SessionConfig::default()))
        .await
        .expect("stale session pre-created");
    let phantom = chip("phantom");
    let _reservation = fleet
        .quota
        .reserve(&acme, SlotKind::Chip, &phantom)
        .await
        .expect("an orphaned reservation");

    let mut config = fleet.config();
    config.monitor_intervals.idle_reaping = ms(200);
    config.monitor_intervals.sweeps = ms(200);
    config.monitor_intervals.orphan_reservation_age = ms(500);
    let replica = fleet.supervisor_with(config).await;
    let sales = chip("sales-1");
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("chip created");
    wait_phase(&replica, &acme, &sales, PhaseName::AwaitingLogin, WAIT).await;

    // The orphan-container sweep.
    let (f, g, a, s) = (&fleet, &ghost, &acme, &sales);
    eventually(WAIT, "the orphaned container swept", move || async move {
        f.containers(g).await.is_empty().then_some(())
    })
    .await;
    // Idle reaping.
    wait_reaped(&fleet, &idle).await;
    assert!(
        !fleet.containers(&idle).await.is_empty(),
        "idle reaping stops the container (the default action), it does not remove it"
    );
    // The stale-session sweep.
    let own = session(&acme, &sales);
    let own = own.as_str();
    eventually(WAIT, "the stale session removed", move || async move {
        let names = f.session_names(a).await;
        (!names.iter().any(|n| n == "chip_test_1") && names.iter().any(|n| n == own)).then_some(())
    })
    .await;
    // Orphaned reservations.
    eventually(
        WAIT,
        "the orphaned chip slot released",
        move || async move {
            let holders = f.quota.holders(a, SlotKind::Chip).await.expect("holders");
            (holders == vec![s.clone()]).then_some(())
        },
    )
    .await;
    // A container a chip needs is never reaped.
    assert!(
        fleet.running_container(&acme, 0).await.is_some(),
        "acme's container keeps running: its chip needs it"
    );
    assert!(replica.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_turned_off_does_not_run() {
    let fleet = Fleet::builder()
        .tenant("idle")
        .tenant("ghost")
        .idle_ttl(ms(500))
        .build()
        .await;
    let (idle, ghost) = (tenant("idle"), tenant("ghost"));
    idle_and_orphan(&fleet, &idle, &ghost).await;

    let mut config = fleet.config();
    config.monitors.orphan_containers = Toggle::Off {
        reason: "test: the orphan sweep is off".to_owned(),
    };
    config.monitor_intervals.idle_reaping = ms(200);
    config.monitor_intervals.sweeps = ms(200);
    let replica = fleet.supervisor_with(config).await;

    // The monitors that are on have demonstrably run (idle reaping on the same period as the
    // sweeps, after several rounds) ...
    wait_reaped(&fleet, &idle).await;
    // ... and the one turned off has not.
    assert!(
        !fleet.containers(&ghost).await.is_empty(),
        "with the orphan sweep off, the orphan stays"
    );
    assert!(replica.is_running(), "run() runs without the task");
}

/// A clock on system time that a test can pin to one instant. A store's reads hide a pairing
/// code past its expiry by the store's clock; pinned before the expiry, they show the row as
/// it is stored.
#[derive(Debug, Default)]
struct PinnableClock(std::sync::Mutex<Option<SystemTime>>);

impl PinnableClock {
    fn pin(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }
}

impl session_supervisor::Clock for PinnableClock {
    fn now(&self) -> SystemTime {
        let pinned = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        pinned.unwrap_or_else(SystemTime::now)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pairing_code_is_cleared_from_the_store() {
    // WAHA's first QR code lasts 30 s here (600 s at time scale 0.05): the session keeps
    // waiting for a login and no reconcile writes the chip after its code was issued.
    let mut timings = waha_sim::Timings::default();
    timings.first_qr = secs(600);
    let mut fleet = Fleet::builder()
        .tenant("acme")
        .timings(timings)
        .build()
        .await;
    let store_clock = std::sync::Arc::new(PinnableClock::default());
    fleet.store = std::sync::Arc::new(session_supervisor::MemoryChipStore::with_clock(
        store_clock.clone(),
    ));
    let mut config = fleet.config();
    config.policy.pairing_code_ttl = secs(3);
    config.monitor_intervals.expired_offers = ms(100);
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let sales_key = key(&acme, &sales);
    let phone = PhoneNumber::new("+5511988880002").expect("a valid phone number");
    replica
        .create_chip(&acme, &sales, ChipSpec::pairing_code(phone))
        .await
        .expect("chip created");

    let offered = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "a pairing code on offer",
        |record| {
            matches!(
                record.observed.login,
                Some(LoginOffer::PairingCode { code: Some(_), .. })
            )
        },
    )
    .await;
    let Some(LoginOffer::PairingCode {
        requested_at,
        expires_at,
        ..
    }) = offered.observed.login.clone()
    else {
        unreachable!("waited for a pairing offer");
    };
    assert!(
        replica
            .pairing_code(&acme, &sales)
            .await
            .expect("the pairing code is read")
            .is_some()
            || SystemTime::now() >= expires_at,
        "the code is on offer until its expiry"
    );

    // Every reconcile write logs a step (`observed_version` is 1 + the steps logged): a write
    // without one is the expired-offers task's. The store's reads follow the system clock
    // here, as in production: they already hide the expired code, the task must not rely on
    // seeing it.
    let (store, chip_key) = (&fleet.store, &sales_key);
    let cleared = eventually(
        WAIT,
        "the expired pairing code cleared by a write without a step",
        move || async move {
            let record = store.get(chip_key).await.expect("the store reads")?;
            let logged = record.steps.last().map_or(0, |step| step.seq);
            (record.observed_version > 1 + logged).then_some(record)
        },
    )
    .await;
    let logged = cleared.steps.last().map_or(0, |step| step.seq);
    assert_eq!(
        cleared.observed_version,
        2 + logged,
        "cleared once: the task remembers what it cleared; {}",
        describe(&cleared)
    );
    assert!(
        cleared.updated_at >= expires_at,
        "the code is cleared at its expiry, not before"
    );
    assert!(
        matches!(
            cleared.observed.phase,
            Phase::AwaitingLogin {
                method: LoginKind::PairingCode,
                ..
            }
        ),
        "the chip still awaits its login: {}",
        describe(&cleared)
    );

    // The row as stored: the code is gone, the fact that one was requested stays.
    store_clock.pin(requested_at);
    let stored = fleet
        .store
        .get(&sales_key)
        .await
        .expect("the store reads")
        .expect("the chip is stored");
    match stored.observed.login {
        Some(LoginOffer::PairingCode {
            code,
            requested_at: stored_requested_at,
            expires_at: stored_expires_at,
        }) => {
            assert!(
                code.is_none(),
                "the stored row keeps no code past its expiry"
            );
            assert_eq!(
                (stored_requested_at, stored_expires_at),
                (requested_at, expires_at),
                "the offer's times are kept"
            );
        }
        other => panic!("the stored offer changed: {other:?}"),
    }
    assert!(
        replica
            .pairing_code(&acme, &sales)
            .await
            .expect("the pairing code is read")
            .is_none(),
        "no code on offer past its expiry"
    );
}

// ---------------------------------------------------------------------------------------------
// 14. Fleet upgrade: a new image rolled out, chips kept logged in.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_upgrade_keeps_chips_logged_in() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let acme = tenant("acme");
    let beta = tenant("beta");
    let sales = chip("sales-1");
    let replica = fleet.supervisor().await;
    let before_acme = working_chip(&fleet, &replica, &acme, &sales, "5511999990101").await;
    let before_beta = working_chip(&fleet, &replica, &beta, &sales, "5511999990102").await;
    for (t, record) in [(&acme, &before_acme), (&beta, &before_beta)] {
        let name = session(t, &sales);
        let root = fleet.launcher.state_root().to_path_buf();
        eventually(WAIT, format!("{name}'s login on its volume"), || {
            std::future::ready(persisted_logged_in(&root, &name, 3).then_some(()))
        })
        .await;
        assert!(record.observed.me.is_some());
    }
    let old_acme = fleet.running_container(&acme, 0).await.expect("acme runs");
    let old_beta = fleet.running_container(&beta, 0).await.expect("beta runs");
    replica.shutdown().await;

    // The host deploys the new image: a pool configured with it, and a supervisor on it.
    let image = "devlikeapro/waha:2026.12.1";
    let pool = fleet.pool_with_image(image);
    let upgraded = fleet
        .start(fleet.build_supervisor_on(pool.clone(), fleet.config()))
        .await;
    eventually(WAIT, "the new supervisor owns both tenants", || {
        let owned = upgraded.owned_tenants();
        std::future::ready((owned.len() == 2).then_some(()))
    })
    .await;
    let mut changes = upgraded
        .subscribe(&acme, ChangeFilter::all())
        .await
        .expect("subscribed");
    let report = upgraded
        .upgrade_fleet(UpgradeOptions {
            wait_back: WAIT,
            ..UpgradeOptions::default()
        })
        .await
        .expect("the upgrade runs");
    assert!(!report.canary_failed, "the canary succeeded: {report:?}");
    assert!(
        report.not_owned.is_empty() && report.pending.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.tenants.len(), 2, "both tenants upgraded: {report:?}");
    for upgrade in &report.tenants {
        assert!(upgrade.succeeded(), "{upgrade:?}");
        assert_eq!(upgrade.replaced.len(), 1, "one container each: {upgrade:?}");
        assert_eq!(upgrade.chips_back, vec![sales.clone()], "{upgrade:?}");
    }

    for (t, old, before) in [
        (&acme, &old_acme, &before_acme),
        (&beta, &old_beta, &before_beta),
    ] {
        let new = fleet
            .running_container(t, 0)
            .await
            .expect("a new container runs");
        assert_ne!(new.id, old.id, "{t}: the container was replaced");
        assert_eq!(new.image, image, "{t}: on the new image");
        assert_eq!(new.name, old.name, "{t}: same slot, same volume");
        let record = upgraded.get_chip(t, &sales).await.expect("the chip");
        assert!(
            matches!(record.observed.phase, Phase::Working { .. }),
            "{}",
            describe(&record)
        );
        assert_eq!(
            record.observed.me, before.observed.me,
            "{t}: logged in without a new QR"
        );
        let control = fleet.control_for(t).await;
        let name = session(t, &sales);
        assert_eq!(control.session_status(&name), Some(SimStatus::Working));
        assert!(
            control
                .calls_for(&name)
                .iter()
                .all(|call| !call.route.ends_with("/logout")),
            "{t}: nobody logged the session out"
        );
    }
    // Per-chip progress, in order.
    let mut stages = Vec::new();
    while stages.last() != Some(&UpgradeStage::Done) {
        match tokio::time::timeout(WAIT, changes.next()).await {
            Ok(Some(ChangeItem::Change(change))) => {
                if let ChipChangeKind::Upgrade { stage } = change.kind {
                    stages.push(stage);
                }
            }
            Ok(Some(ChangeItem::Gap { .. })) => {}
            other => panic!("the change stream ended or went quiet: {other:?}; stages {stages:?}"),
        }
    }
    assert_eq!(
        stages,
        vec![
            UpgradeStage::Started,
            UpgradeStage::ContainerReplaced,
            UpgradeStage::Done
        ]
    );
    // Nothing left to upgrade: running it again touches nothing.
    let again = upgraded
        .upgrade_fleet(UpgradeOptions::default())
        .await
        .expect("the upgrade runs again");
    assert!(again.tenants.is_empty(), "{again:?}");
    upgraded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenants_chips_stop_and_reactivation_brings_them_back_logged_in() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let acme = tenant("acme");
    let beta = tenant("beta");
    let sales = chip("sales-1");
    let replica = fleet.supervisor().await;
    let before = working_chip(&fleet, &replica, &acme, &sales, "5511999990600").await;
    working_chip(&fleet, &replica, &beta, &sales, "5511999990601").await;
    let root = fleet.launcher.state_root().to_path_buf();
    let name = session(&acme, &sales);
    eventually(WAIT, format!("{name}'s login on its volume"), || {
        std::future::ready(persisted_logged_in(&root, &name, 3).then_some(()))
    })
    .await;

    fleet
        .directory
        .set_status(&acme, TenantStatus::Suspended)
        .await
        .expect("suspended");
    // No API call: the resync notices the suspension.
    let stopped = wait_phase(&replica, &acme, &sales, PhaseName::Stopped, WAIT).await;
    assert!(
        matches!(
            stopped.observed.phase,
            Phase::Stopped {
                cause: StopCause::TenantInactive
            }
        ),
        "{}",
        describe(&stopped)
    );
    let control = fleet.control_for(&acme).await;
    eventually(
        WAIT,
        "the suspended tenant's session stopped in WAHA",
        || {
            std::future::ready(
                (control.session_status(&name) == Some(SimStatus::Stopped)).then_some(()),
            )
        },
    )
    .await;
    assert_eq!(
        fleet.usage(&acme).await.running_sessions,
        0,
        "the running slot is released"
    );
    let other = replica.get_chip(&beta, &sales).await.expect("beta's chip");
    assert!(
        matches!(other.observed.phase, Phase::Working { .. }),
        "the other tenant keeps working: {}",
        describe(&other)
    );

    fleet
        .directory
        .set_status(&acme, TenantStatus::Active)
        .await
        .expect("reactivated");
    let back = wait_phase(&replica, &acme, &sales, PhaseName::Working, WAIT).await;
    assert_eq!(
        back.observed.me, before.observed.me,
        "logged in without a new QR"
    );
    assert_eq!(control.session_status(&name), Some(SimStatus::Working));
    replica.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 14b. Secret rotation.
// ---------------------------------------------------------------------------------------------

/// The webhook key each of the session's webhooks is signed with, as WAHA stores it.
async fn session_webhook_keys(fleet: &Fleet, tenant: &TenantId, chip: &ChipId) -> Vec<String> {
    let info = fleet
        .waha_for(tenant)
        .await
        .get_session(&session(tenant, chip))
        .await
        .expect("the session reads");
    let config = info.config.expect("a chipfleet session has a config");
    config
        .webhooks
        .iter()
        .map(|webhook| {
            webhook
                .hmac
                .as_ref()
                .and_then(|hmac| hmac.key.as_ref())
                .map(|key| key.expose_secret().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_key_rotation_moves_every_session_then_forgets_the_old_key() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let acme = tenant("acme");
    let beta = tenant("beta");
    let replica = fleet.supervisor().await;
    let chips = [chip("sales-1"), chip("sales-2"), chip("sales-3")];
    let mut before = Vec::new();
    for (i, c) in chips.iter().enumerate() {
        let digits = format!("55119999902{i:02}");
        before.push(working_chip(&fleet, &replica, &acme, c, &digits).await);
    }
    working_chip(&fleet, &replica, &beta, &chips[0], "5511999990300").await;
    let old = fleet.directory.get(&acme).await.expect("acme").secrets;
    let beta_before = fleet.directory.get(&beta).await.expect("beta").secrets;
    let control = fleet.control_for(&acme).await;
    let puts_before: Vec<usize> = chips
        .iter()
        .map(|c| {
            control
                .calls_for(&session(&acme, c))
                .iter()
                .filter(|call| call.method == "PUT")
                .count()
        })
        .collect();

    let report = replica
        .rotate_webhook_key(
            &acme,
            RotationOptions {
                wait: WAIT,
                poll: Some(ms(50)),
            },
        )
        .await
        .expect("the rotation runs");
    assert!(report.started && report.finished, "{report:?}");
    assert!(report.pending.is_empty(), "{report:?}");
    assert_eq!(report.moved.len(), chips.len(), "{report:?}");

    let new = fleet.directory.get(&acme).await.expect("acme").secrets;
    assert_ne!(new.webhook_hmac_key, old.webhook_hmac_key, "a new key");
    assert!(
        !new.webhook_key_rotating(),
        "the previous key is forgotten once every session has the new one"
    );
    assert_eq!(
        new.container_api_key, old.container_api_key,
        "the API key stays"
    );
    for ((c, b), puts) in chips.iter().zip(&before).zip(puts_before) {
        assert_eq!(
            session_webhook_keys(&fleet, &acme, c).await,
            vec![new.webhook_hmac_key.expose_secret().to_owned()],
            "{c}: its session signs with the new key"
        );
        let record = wait_phase(&replica, &acme, c, PhaseName::Working, WAIT).await;
        assert_eq!(record.observed.me, b.observed.me, "{c}: still logged in");
        let puts_after = control
            .calls_for(&session(&acme, c))
            .iter()
            .filter(|call| call.method == "PUT")
            .count();
        assert_eq!(puts_after, puts + 1, "{c}: one config update, no storm");
    }
    assert_eq!(
        fleet.directory.get(&beta).await.expect("beta").secrets,
        beta_before,
        "the other tenant is untouched"
    );

    // No rotation in progress: the next one starts with a new key and moves the sessions again.
    let again = replica
        .rotate_webhook_key(
            &acme,
            RotationOptions {
                wait: WAIT,
                poll: Some(ms(50)),
            },
        )
        .await
        .expect("the rotation runs again");
    assert!(again.started && again.finished, "{again:?}");
    let newer = fleet.directory.get(&acme).await.expect("acme").secrets;
    assert_ne!(newer.webhook_hmac_key, new.webhook_hmac_key);
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_key_rotation_that_runs_out_of_time_keeps_the_previous_key() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let replica = fleet.supervisor().await;
    working_chip(&fleet, &replica, &acme, &sales, "5511999990400").await;
    let old = fleet.directory.get(&acme).await.expect("acme").secrets;
    // No supervisor reconciles the chip: its session keeps the old key.
    replica.shutdown().await;
    let idle = fleet.build_supervisor(fleet.config(), None);
    let report = idle
        .rotate_webhook_key(
            &acme,
            RotationOptions {
                wait: ms(300),
                poll: Some(ms(50)),
            },
        )
        .await
        .expect("the rotation starts");
    assert!(report.started && !report.finished, "{report:?}");
    assert_eq!(report.pending, vec![sales.clone()], "{report:?}");
    let rotating = fleet.directory.get(&acme).await.expect("acme").secrets;
    assert_eq!(
        rotating.previous_webhook_hmac_key.as_ref(),
        Some(&old.webhook_hmac_key),
        "the old key stays accepted while a session still signs with it"
    );
    assert_eq!(
        session_webhook_keys(&fleet, &acme, &sales).await,
        vec![old.webhook_hmac_key.expose_secret().to_owned()]
    );

    // A running supervisor continues it: no second key, and it finishes.
    let replica = fleet.supervisor().await;
    let report = replica
        .rotate_webhook_key(
            &acme,
            RotationOptions {
                wait: WAIT,
                poll: Some(ms(50)),
            },
        )
        .await
        .expect("the rotation continues");
    assert!(!report.started && report.finished, "{report:?}");
    let done = fleet.directory.get(&acme).await.expect("acme").secrets;
    assert_eq!(
        done.webhook_hmac_key, rotating.webhook_hmac_key,
        "the same new key"
    );
    assert!(!done.webhook_key_rotating());
    assert_eq!(
        session_webhook_keys(&fleet, &acme, &sales).await,
        vec![done.webhook_hmac_key.expose_secret().to_owned()]
    );
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_rotation_replaces_the_containers_and_keeps_chips_logged_in() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let acme = tenant("acme");
    let beta = tenant("beta");
    let sales = chip("sales-1");
    let replica = fleet.supervisor().await;
    let before = working_chip(&fleet, &replica, &acme, &sales, "5511999990500").await;
    working_chip(&fleet, &replica, &beta, &sales, "5511999990501").await;
    let root = fleet.launcher.state_root().to_path_buf();
    let name = session(&acme, &sales);
    eventually(WAIT, format!("{name}'s login on its volume"), || {
        std::future::ready(persisted_logged_in(&root, &name, 3).then_some(()))
    })
    .await;
    let old = fleet.directory.get(&acme).await.expect("acme").secrets;
    let old_container = fleet.running_container(&acme, 0).await.expect("acme runs");
    let beta_container = fleet.running_container(&beta, 0).await.expect("beta runs");

    // Only the owner touches the containers.
    let bystander = fleet.build_supervisor(fleet.config(), None);
    match bystander
        .rotate_api_key(&acme, &UpgradeOptions::default())
        .await
    {
        Err(SupervisorError::NotOwned { tenant }) => assert_eq!(tenant, acme),
        other => panic!("a process that does not own the tenant is refused: {other:?}"),
    }
    assert_eq!(
        fleet.directory.get(&acme).await.expect("acme").secrets,
        old,
        "a refused rotation changes nothing"
    );

    eventually(WAIT, "the replica owns acme", || {
        std::future::ready(replica.owned_tenants().contains(&acme).then_some(()))
    })
    .await;
    let upgrade = replica
        .rotate_api_key(
            &acme,
            &UpgradeOptions {
                wait_back: WAIT,
                ..UpgradeOptions::default()
            },
        )
        .await
        .expect("the rotation runs");
    assert!(upgrade.succeeded(), "{upgrade:?}");
    assert_eq!(upgrade.chips_back, vec![sales.clone()], "{upgrade:?}");
    let new = fleet.directory.get(&acme).await.expect("acme").secrets;
    assert_ne!(
        new.container_api_key, old.container_api_key,
        "a new API key"
    );
    assert_eq!(
        new.webhook_hmac_key, old.webhook_hmac_key,
        "the webhook key stays"
    );
    let container = fleet.running_container(&acme, 0).await.expect("acme runs");
    assert_ne!(container.id, old_container.id, "the container was replaced");
    assert_eq!(container.name, old_container.name, "on the same volume");
    let record = wait_phase(&replica, &acme, &sales, PhaseName::Working, WAIT).await;
    assert_eq!(
        record.observed.me, before.observed.me,
        "logged in without a QR"
    );
    // The new container takes the new key and refuses the old one.
    let endpoint = fleet.endpoint(&acme).await;
    let fresh = waha_client::WahaClient::new(endpoint.base_url.clone(), new.container_api_key)
        .expect("a client");
    fresh
        .get_session(&name)
        .await
        .expect("the new key is accepted");
    let stale = waha_client::WahaClient::new(endpoint.base_url.clone(), old.container_api_key)
        .expect("a client");
    assert!(
        matches!(
            stale.get_session(&name).await,
            Err(waha_client::WahaError::Unauthorized { .. })
        ),
        "the old key is refused"
    );
    assert_eq!(
        fleet
            .running_container(&beta, 0)
            .await
            .expect("beta runs")
            .id,
        beta_container.id,
        "the other tenant's container is untouched"
    );
    replica.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 15. observe: what an already verified webhook event does.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_records_signals_and_reconciles_only_on_session_changes() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    // Built, not running: observe works on any replica and only records.
    let supervisor = fleet.build_supervisor(fleet.config(), None);
    let acme = tenant("acme");
    let sales = chip("sales-1");
    supervisor
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("created");
    let name = session(&acme, &sales);
    let event = |body: String| WebhookEvent::from_slice(body.as_bytes()).expect("a valid event");

    let message = event(format!(
        r#"{{"event":"message","session":"{name}","payload":{{"id":"m1","from":"5522@c.us","fromMe":false,"hasMedia":false,"to":null,"participant":null,"body":"hi"}}}}"#
    ));
    let outcome = supervisor.observe(&acme, &message).await.expect("observed");
    assert!(
        matches!(&outcome, ObserveOutcome::Activity { key, .. } if key.chip == sales),
        "a message is activity, recorded without a reconcile: {outcome:?}"
    );

    let status = event(format!(
        r#"{{"event":"session.status","session":"{name}","payload":{{"name":"{name}","status":"WORKING"}}}}"#
    ));
    let outcome = supervisor.observe(&acme, &status).await.expect("observed");
    let ObserveOutcome::Recorded { seq, .. } = outcome else {
        panic!("a status change is a signal that queues a reconcile: {outcome:?}");
    };
    let key = ChipKey::new(acme.clone(), sales.clone());
    let kept = fleet.store.signals_after(&key, 0).await.expect("signals");
    assert_eq!(
        kept.len(),
        2,
        "the activity and the status are kept: {kept:?}"
    );
    assert_eq!(kept.last().map(|signal| signal.seq), Some(seq));

    // Another tenant's session, a name chipfleet did not make, a chip never created: nothing
    // is recorded.
    for (tenant, session_name) in [
        (&tenant("beta"), name.clone()),
        (&acme, "default".to_owned()),
        (&acme, session(&acme, &chip("ghost")).to_string()),
    ] {
        let foreign = event(format!(
            r#"{{"event":"session.status","session":"{session_name}","payload":{{"name":"{session_name}","status":"FAILED"}}}}"#
        ));
        let outcome = supervisor
            .observe(tenant, &foreign)
            .await
            .expect("observed");
        assert_eq!(
            outcome,
            ObserveOutcome::UnknownChip,
            "{tenant}/{session_name}"
        );
    }
    assert_eq!(
        fleet
            .store
            .signals_after(&key, 0)
            .await
            .expect("signals")
            .len(),
        2,
        "nothing was added for the foreign events"
    );
}

// ---------------------------------------------------------------------------------------------
// 16. Every disconnect reason, on every engine, in the shape that engine reports it.
// ---------------------------------------------------------------------------------------------

/// Where a working chip ends after a disconnect (`docs/session-supervisor.md`, 5.1).
#[derive(Clone, Copy, Debug)]
enum End {
    /// Parked for this reason; the session is stopped.
    Parked(ParkReason),
    /// A new login window (re-pair).
    Relogin,
    /// Backing off for this reason.
    BackingOff(Reason),
    /// Working again with the same account, the signal handled.
    Working,
}

/// The policy table's answer for `reason` as `engine` reports it (WEBJS reports 402, 403 and
/// 406 all as `TOS_BLOCK`, 500 as `UNPAIRED`, 503 as `TIMEOUT`).
fn expected_end(engine: Engine, reason: DisconnectReason) -> End {
    use DisconnectReason as D;
    match (engine, reason) {
        (_, D::LoggedOut | D::MultideviceMismatch) => End::Relogin,
        (Engine::Webjs, D::TemporaryBan | D::Forbidden | D::Banned) => {
            End::Parked(ParkReason::Banned)
        }
        (_, D::TemporaryBan) => End::BackingOff(Reason::TemporarilyBanned),
        (_, D::Forbidden) => End::Parked(ParkReason::Forbidden),
        (_, D::Banned) => End::Parked(ParkReason::Banned),
        (_, D::ClientOutdated) => End::Parked(ParkReason::ClientOutdated),
        (_, D::ConnectionReplaced) => End::Parked(ParkReason::Replaced),
        (Engine::Webjs, D::BadSession) => End::Relogin,
        _ => End::Working,
    }
}

async fn every_reason_on(engine: Engine) {
    // One tenant (so one container, its slot 0) per reason.
    let mut builder = Fleet::builder().engine(engine);
    for n in 0..DisconnectReason::ALL.len() {
        builder = builder.tenant(&format!("t{n}"));
    }
    let fleet = builder.build().await;
    let replica = fleet.supervisor().await;
    for (n, reason) in DisconnectReason::ALL.into_iter().enumerate() {
        let acme = tenant(&format!("t{n}"));
        let chip_id = chip("sales-1");
        let digits = format!("55119{:08}", 100 + n);
        let before = working_chip(&fleet, &replica, &acme, &chip_id, &digits).await;
        let name = session(&acme, &chip_id);
        let control = fleet.control_for(&acme).await;
        let disconnected_at = SystemTime::now();
        control
            .disconnect(&name, reason)
            .unwrap_or_else(|e| panic!("{engine:?} {}: injected: {e}", reason.name()));
        let want = expected_end(engine, reason);
        let what = format!("{engine:?} {} -> {want:?}", reason.name());
        let seen_signals = before.observed.signals_applied;
        let end = wait_record(
            &replica,
            &acme,
            &chip_id,
            WAIT,
            &what,
            |record| match want {
                End::Parked(why) => {
                    matches!(record.observed.phase, Phase::Parked { reason, .. } if reason == why)
                }
                End::Relogin => matches!(
                    record.observed.phase,
                    Phase::AwaitingLogin { since, .. } if since >= disconnected_at
                ),
                End::BackingOff(why) => matches!(
                    record.observed.phase,
                    Phase::BackingOff { reason, .. } if reason == why
                ),
                End::Working => {
                    matches!(record.observed.phase, Phase::Working { .. })
                        && record.observed.signals_applied > seen_signals
                        && record.observed.me == before.observed.me
                }
            },
        )
        .await;
        match want {
            End::Parked(_) => {
                // Parked chips never run: the session is stopped (or left failed).
                wait_session_down(&control, &name).await;
                assert!(!end.observed.running_slot, "{what}: running slot released");
            }
            End::Working => {
                eventually(WAIT, format!("{what}: WAHA reports it WORKING"), || {
                    std::future::ready(
                        (control.session_status(&name) == Some(SimStatus::Working)).then_some(()),
                    )
                })
                .await;
            }
            End::Relogin | End::BackingOff(_) => {}
        }
    }
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_disconnect_reason_ends_where_the_policy_says_on_noweb() {
    every_reason_on(Engine::Noweb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_disconnect_reason_ends_where_the_policy_says_on_gows() {
    every_reason_on(Engine::Gows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_disconnect_reason_ends_where_the_policy_says_on_webjs() {
    every_reason_on(Engine::Webjs).await;
}

// ---------------------------------------------------------------------------------------------
// 17. Silent death (the GOWS trap): WORKING, but nothing arrives any more.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gows_session_is_probed_then_restarted() {
    let fleet = Fleet::builder()
        .engine(Engine::Gows)
        .tenant("acme")
        .build()
        .await;
    let mut config = fleet.config();
    config.policy.silence_threshold = ms(600);
    config.policy.silent_probes_before_restart = 2;
    config.monitor_intervals.silent_scan = ms(100);
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let before = working_chip(&fleet, &replica, &acme, &sales, "5511999990201").await;
    let name = session(&acme, &sales);
    let control = fleet.control_for(&acme).await;
    let mark = call_mark(&control);
    control.silence(&name).expect("the session goes silent");

    // The session still says WORKING and `me` answers: only its silence gives it away. The
    // supervisor probes it, and on GOWS restarts it after the configured probes.
    eventually(WAIT, "a restart of the silent session", || {
        std::future::ready(
            calls_after(&control, &name, mark)
                .iter()
                .any(is_start_or_restart)
                .then_some(()),
        )
    })
    .await;
    let record = wait_record(&replica, &acme, &sales, WAIT, "Working again", |record| {
        matches!(record.observed.phase, Phase::Working { .. })
    })
    .await;
    assert_eq!(record.observed.me, before.observed.me, "the same account");
    assert!(
        record
            .steps
            .iter()
            .any(|entry| entry.step == StepKind::Probe),
        "the silent session was probed before the restart: {}",
        describe(&record)
    );
    assert_eq!(control.session_status(&name), Some(SimStatus::Working));
}

// ---------------------------------------------------------------------------------------------
// 18. A proxy failure rotates the chip's proxy, reported on its lease generation.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_failure_rotates_the_proxy_and_reconnects_through_the_new_one() {
    let fleet = Fleet::builder()
        .engine(Engine::Webjs)
        .tenant("acme")
        .build()
        .await;
    // An allocator that rotates at the first reported failure, so one PROXYBLOCK moves the
    // chip (the default needs 3 failures and a 10 min cooldown).
    let list = "http://203.0.113.10:3128 country=BR\nhttp://203.0.113.11:3128 country=BR\n";
    let proxies = std::sync::Arc::new(
        proxy_allocator::ProxyAllocator::new(
            std::sync::Arc::new(
                proxy_allocator::StaticListSource::parse(list).expect("a proxy list"),
            ),
            std::sync::Arc::new(proxy_allocator::InMemoryLeaseStore::new()),
            proxy_allocator::AllocationPolicy {
                max_chips_per_endpoint: 16,
                rotate_after_failures: 1,
                rotation_cooldown: Duration::ZERO,
                ..proxy_allocator::AllocationPolicy::default()
            },
        )
        .expect("a valid policy"),
    );
    let mut parts = fleet.parts();
    parts.proxies = proxies.clone();
    let replica = fleet
        .start(
            Supervisor::builder(parts)
                .config(fleet.config())
                .build()
                .expect("valid"),
        )
        .await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    let before = working_chip(&fleet, &replica, &acme, &sales, "5511999990301").await;
    let first = proxies
        .lease(&acme, &sales)
        .await
        .expect("read")
        .expect("leased");
    let name = session(&acme, &sales);
    let control = fleet.control_for(&acme).await;
    let mark = call_mark(&control);
    control
        .disconnect(&name, DisconnectReason::ProxyBlocked)
        .expect("injected");

    let moved = wait_record(
        &replica,
        &acme,
        &sales,
        WAIT,
        "Working through a new proxy",
        |record| {
            matches!(record.observed.phase, Phase::Working { .. })
                && record
                    .observed
                    .proxy
                    .as_ref()
                    .is_some_and(|proxy| proxy.generation > first.generation)
        },
    )
    .await;
    let now = proxies
        .lease(&acme, &sales)
        .await
        .expect("read")
        .expect("leased");
    assert_eq!(now.generation, first.generation + 1, "one rotation");
    assert_ne!(now.endpoint, first.endpoint, "another endpoint");
    assert_eq!(
        moved.observed.session.as_ref().map(|s| s.proxy_generation),
        Some(now.generation),
        "the session's config carries the new generation"
    );
    assert_eq!(moved.observed.me, before.observed.me, "still logged in");
    assert!(
        calls_after(&control, &name, mark)
            .iter()
            .any(|call| call.method == "PUT"),
        "the new proxy was sent to WAHA"
    );
}

// ---------------------------------------------------------------------------------------------
// 19. Loop detection: a chip that fails again and again is parked, with an alert.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_failing_again_and_again_is_parked_looping_with_an_alert() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let mut config = fleet.config();
    config.policy.loop_max_failures = 3;
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    working_chip(&fleet, &replica, &acme, &sales, "5511999990401").await;
    let mut changes = replica
        .subscribe(&acme, ChangeFilter::all())
        .await
        .expect("subscribed");
    let name = session(&acme, &sales);
    let control = fleet.control_for(&acme).await;

    // FAILED with no reason, again each time the supervisor brought it back.
    let mut failures = 0;
    let parked = loop {
        let record = replica.get_chip(&acme, &sales).await.expect("the chip");
        match record.observed.phase {
            Phase::Parked { .. } => break record,
            Phase::Working { .. } if control.session_status(&name) == Some(SimStatus::Working) => {
                assert!(failures < 10, "never parked: {}", describe(&record));
                control.fail(&name).expect("the session fails");
                failures += 1;
                // Wait until the supervisor saw it (left Working), so each failure counts once.
                wait_record(&replica, &acme, &sales, WAIT, "the failure seen", |r| {
                    !matches!(r.observed.phase, Phase::Working { .. })
                })
                .await;
            }
            _ => tokio::time::sleep(ms(20)).await,
        }
    };
    assert!(
        matches!(
            parked.observed.phase,
            Phase::Parked {
                reason: ParkReason::Looping { .. },
                ..
            }
        ),
        "parked for looping: {}",
        describe(&parked)
    );
    assert_eq!(failures, 3, "the third failure in the window parks it");
    let alert = tokio::time::timeout(WAIT, async {
        loop {
            match changes.next().await {
                Some(ChangeItem::Change(change)) => {
                    if let ChipChangeKind::Alert(alert) = change.kind {
                        return alert;
                    }
                }
                Some(ChangeItem::Gap { .. }) => {}
                None => panic!("the change stream ended"),
            }
        }
    })
    .await
    .expect("an alert was published");
    assert!(
        matches!(alert, session_supervisor::Alert::Loop { .. }),
        "{alert:?}"
    );
    // Parked: the supervisor stops the session and leaves it alone.
    wait_session_down(&control, &name).await;
}
