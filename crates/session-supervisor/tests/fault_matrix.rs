//! The fault matrix's in-process rows (issue 15): real supervisors on in-process WAHA
//! simulators behind container-pool's in-memory runtime, one shared in-memory chip store,
//! webhooks through a local receiver (`support`). The rows that need the real Docker daemon and
//! PostgreSQL live in chip-service's `tests/fleet_proof.rs` and `tests/daemon_faults.rs`.
//!
//! - **A banned or replaced chip** is parked with its reason (`Banned`, `Replaced`) and its last
//!   error, and stays parked: for an observation window of 3× the longest delay the policy
//!   could wait before acting again, the record stays `Parked` and WAHA receives no start,
//!   restart, create or log-out for its session after the disconnect.
//! - **Fifty chips failing at once** (5 tenants × 10) are restarted within the per-tenant and
//!   the supervisor-wide restart budgets, as the simulators' call logs show by the wall clock,
//!   and all work again within a deadline computed from those budgets.
//! - **A QR code never scanned** ends `LoginExpired` no earlier than WAHA's QR window (first
//!   code plus its refreshes, at the test's time scale), and stays so, with no start or restart
//!   of its session after the expiry, for 3× the resync interval.
//!
//! Every wait polls a condition under a deadline; the only fixed durations are the observation
//! windows ("nothing happens for N"), each derived from the policy and named where it is used.
//! Secrets are never printed.

mod shared;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use session_supervisor::policy::{Backoff, Jitter, Rate};
use session_supervisor::{
    ChipRecord, ChipSpec, ParkReason, Phase, PhaseName, Policy, Reason, Supervisor,
};
use tenant_isolation::{ChipId, TenantId};
use waha_sim::{CallRecord, DisconnectReason, SessionStatus as SimStatus, TimeScale, Timings};

use support::*;

/// Whether a logged call would bring a session back: a create, a start, a restart or a
/// log-out (which restarts it into a new login window).
fn revives(call: &CallRecord) -> bool {
    call.is_create()
        || is_start_or_restart(call)
        || (call.method == "POST" && call.route == "/api/sessions/{session}/logout")
}

/// The longest a backoff class can wait: its cap, plus the jitter's spread above the nominal
/// delay (`Equal` jitter never exceeds the cap; `Proportional` adds up to `percent`).
fn longest_backoff(backoff: &Backoff) -> Duration {
    match backoff.jitter {
        Jitter::Equal => backoff.cap,
        Jitter::Proportional { percent } => {
            backoff.cap + backoff.cap * u32::from(percent.min(100)) / 100
        }
    }
}

/// The longest the policy waits before it acts on a chip again: the largest of the four
/// classes' jittered caps, the graces (`reason_grace`, `self_heal_grace`,
/// `restart_required_grace`), `reread_after` and the resync interval with its +10 % jitter.
/// With `shared::fast_policy()` that is the capacity class's 1 s cap ±10 % and the 1 s resync
/// ±10 %: 1.1 s.
///
/// Left out, because none applies to a parked or expired chip: `starting_timeout` (a deadline
/// on a session that is STARTING; these are stopped), `temp_ban_fallback` and its jitter (the
/// length of a temporary ban; these chips are not temporarily banned), `pairing_code_ttl` (QR
/// chips here), `silence_threshold` (probes WORKING chips) and the memories (`loop_window`,
/// `stable_after`, `temp_ban_memory`), which never schedule anything.
fn longest_policy_delay(policy: &Policy) -> Duration {
    let classes = &policy.classes;
    let resync = policy.resync_interval + policy.resync_interval / 10;
    [
        longest_backoff(&classes.infra),
        longest_backoff(&classes.provision),
        longest_backoff(&classes.session),
        longest_backoff(&classes.capacity),
        policy.reason_grace,
        policy.self_heal_grace,
        policy.restart_required_grace,
        policy.reread_after,
        resync,
    ]
    .into_iter()
    .max()
    .expect("a non-empty list")
}

/// An observation window: looks at each of `chips` every [`POLL`] for `window` and panics at
/// the first look where `holds` is false for one of them. Returns how many looks were taken.
async fn holds_throughout(
    supervisor: &Supervisor,
    tenant: &TenantId,
    chips: &[ChipId],
    window: Duration,
    what: &str,
    holds: impl Fn(&ChipId, &ChipRecord) -> bool,
) -> usize {
    let start = Instant::now();
    let end = start + window;
    let mut looks = 0;
    loop {
        for c in chips {
            let record = supervisor
                .get_chip(tenant, c)
                .await
                .unwrap_or_else(|error| {
                    panic!("{tenant}/{c}: get_chip failed during the observation window: {error}")
                });
            assert!(
                holds(c, &record),
                "{tenant}/{c}: {what} stopped holding {:?} into the {window:?} observation \
                 window: {}",
                start.elapsed(),
                describe(&record)
            );
        }
        looks += 1;
        if Instant::now() >= end {
            return looks;
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Row 1: banned and replaced are parked, with their reasons, and never restarted.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_or_replaced_chip_is_parked_with_its_reason_and_never_restarted() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let config = fleet.config();
    // 3 × 1.1 s = 3.3 s with the fast policy (see `longest_policy_delay`).
    let window = 3 * longest_policy_delay(&config.policy);
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let banned = chip("banned-1");
    let replaced = chip("replaced-1");
    working_chip(&fleet, &replica, &acme, &banned, "5511999990901").await;
    working_chip(&fleet, &replica, &acme, &replaced, "5511999990902").await;

    // (chip, what the engine reports, the park reason, the last error's reason)
    let cases = [
        (
            banned.clone(),
            DisconnectReason::Banned,
            ParkReason::Banned,
            Reason::Banned,
        ),
        (
            replaced.clone(),
            DisconnectReason::ConnectionReplaced,
            ParkReason::Replaced,
            Reason::Replaced,
        ),
    ];
    let control = fleet.control_for(&acme).await;
    // Each chip's mark is taken right before its own disconnect.
    let mut marks = Vec::new();
    for (c, disconnect, _, _) in &cases {
        let name = session(&acme, c);
        marks.push(call_mark(&control));
        control
            .disconnect(&name, *disconnect)
            .unwrap_or_else(|e| panic!("{name}: the {} disconnect: {e}", disconnect.name()));
    }

    for (c, _, park, error) in &cases {
        let parked = wait_record(
            &replica,
            &acme,
            c,
            WAIT,
            &format!("Parked {{ {park:?} }}"),
            |record| {
                matches!(record.observed.phase, Phase::Parked { reason, .. } if reason == *park)
            },
        )
        .await;
        assert_eq!(
            parked.observed.last_error.as_ref().map(|e| e.reason),
            Some(*error),
            "{acme}/{c}: the last error names the reason: {}",
            describe(&parked)
        );
    }

    // Nothing brings them back: they stay parked for the whole window ...
    let chips = [banned, replaced];
    let park_of = |c: &ChipId| {
        cases
            .iter()
            .find(|(id, ..)| id == c)
            .map(|(_, _, park, _)| *park)
            .expect("a chip of the cases")
    };
    let looks = holds_throughout(&replica, &acme, &chips, window, "Parked", |c, record| {
        matches!(record.observed.phase, Phase::Parked { reason, .. } if reason == park_of(c))
    })
    .await;
    // ... and WAHA saw no start, restart, create or log-out of their sessions since the
    // disconnect (the log keeps every call: this covers the window too).
    for ((c, disconnect, _, _), mark) in cases.iter().zip(&marks) {
        let name = session(&acme, c);
        let after = calls_after(&control, &name, *mark);
        let revived: Vec<CallRecord> = after.iter().filter(|call| revives(call)).cloned().collect();
        assert!(
            revived.is_empty(),
            "{name} ({}): no start, restart, create or log-out after the disconnect and \
             through the {window:?} window ({looks} looks); calls after the disconnect: {:?}",
            disconnect.name(),
            show_calls(&after)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 2: fifty chips failing at once are restarted within the restart budgets.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_chips_failing_at_once_restart_within_the_tenant_and_supervisor_budgets() {
    const TENANTS: usize = 5;
    const PER_TENANT: usize = 10;
    const TOTAL: usize = TENANTS * PER_TENANT;
    // Time scale 0.2: QR windows of 32 s leave time to scan 50 chips; a restart takes 200 ms.
    const TIME_SCALE: f64 = 0.2;
    let tenant_budget = Rate {
        every: secs(1),
        burst: 2,
    };
    let global_budget = Rate {
        every: ms(250),
        burst: 4,
    };

    let names: Vec<String> = (0..TENANTS).map(|n| format!("t{n}")).collect();
    // Five fake proxy endpoints: 80 chip places for 50 chips.
    let mut builder = Fleet::builder().time_scale(TIME_SCALE).endpoints(5);
    for name in &names {
        builder = builder.tenant(name);
    }
    let fleet = builder.build().await;
    let mut config = fleet.config();
    config.tenant_restart_budget = tenant_budget;
    config.global_restart_budget = global_budget;
    let longest = longest_policy_delay(&config.policy);
    let replica = fleet.supervisor_with(config).await;

    let tenants: Vec<TenantId> = names.iter().map(|n| tenant(n)).collect();
    let chips: Vec<ChipId> = (0..PER_TENANT)
        .map(|n| chip(&format!("chip-{n}")))
        .collect();
    for t in &tenants {
        for c in &chips {
            replica
                .create_chip(t, c, ChipSpec::qr())
                .await
                .unwrap_or_else(|error| panic!("creating {t}/{c} failed: {error}"));
        }
    }
    for (i, t) in tenants.iter().enumerate() {
        for (j, c) in chips.iter().enumerate() {
            fleet.scan(t, c, &format!("55119990{i}{j:04}")).await;
        }
    }
    wait_all(&replica, &tenants, &chips, PhaseName::Working, WAIT * 2).await;

    // Ten chips per container: each tenant's sessions all live in its slot-0 container.
    let mut controls = Vec::new();
    for t in &tenants {
        let control = fleet.control_for(t).await;
        for c in &chips {
            let name = session(t, c);
            assert_eq!(
                control.session_status(&name),
                Some(SimStatus::Working),
                "{name} runs in tenant {t}'s slot-0 container"
            );
        }
        controls.push(control);
    }
    let marks: Vec<u64> = controls.iter().map(call_mark).collect();
    let mark_ms = unix_ms(SystemTime::now());
    let failed_at = Instant::now();
    // Every session fails at once, with no word from the engine: it stays FAILED until
    // restarted (no self-heal hides the supervisor's restarts), a failure the policy restarts.
    for (t, control) in tenants.iter().zip(&controls) {
        for c in &chips {
            control
                .fail(&session(t, c))
                .unwrap_or_else(|e| panic!("{}: the failure is injected: {e}", session(t, c)));
        }
    }

    // (c) Everyone works again within the budgets' time: the supervisor-wide budget grants 4
    // at once, then one each 250 ms (46 more: 11.5 s); each tenant's 2 at once, then one a
    // second (8 more: 8 s). Plus 3 × the policy's longest delay (graces and backoffs before
    // the first restart) and 15 s for the restarts' start-up and a loaded 2-core machine.
    let tenant_time = tenant_budget.every
        * u32::try_from(PER_TENANT)
            .expect("fits")
            .saturating_sub(tenant_budget.burst);
    let global_time = global_budget.every
        * u32::try_from(TOTAL)
            .expect("fits")
            .saturating_sub(global_budget.burst);
    let recovery = tenant_time.max(global_time) + 3 * longest + secs(15);
    let deadline = failed_at + recovery;
    let (ts, cs, ctl) = (&tenants, &chips, &controls);
    eventually(
        recovery,
        format!("every session WORKING again in WAHA within {recovery:?}"),
        move || {
            let all = ts.iter().zip(ctl).all(|(t, control)| {
                cs.iter()
                    .all(|c| control.session_status(&session(t, c)) == Some(SimStatus::Working))
            });
            std::future::ready(all.then_some(()))
        },
    )
    .await;
    wait_all(
        &replica,
        &tenants,
        &chips,
        PhaseName::Working,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await;
    println!(
        "{TOTAL} chips WORKING again {:?} after failing at once (deadline {recovery:?})",
        failed_at.elapsed()
    );

    // The restarts, from each tenant's call log, by the wall clock.
    let mut all_times = Vec::new();
    for ((t, control), mark) in tenants.iter().zip(&controls).zip(&marks) {
        let sessions: BTreeSet<String> = chips.iter().map(|c| session(t, c)).collect();
        let restarts: Vec<CallRecord> = control
            .calls()
            .into_iter()
            .filter(|call| {
                call.seq > *mark
                    && is_start_or_restart(call)
                    && call
                        .session
                        .as_deref()
                        .is_some_and(|s| sessions.contains(s))
            })
            .collect();
        // (c) "again": each session was brought back by a start or restart.
        for name in &sessions {
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
        // (a) Within the tenant's budget.
        assert_within_budget(&format!("tenant {t}"), &times, mark_ms, tenant_budget);
        all_times.extend(times);
    }
    all_times.sort_unstable();
    // (b) Within the supervisor-wide budget, across every tenant.
    assert_within_budget("the supervisor", &all_times, mark_ms, global_budget);

    let last = all_times.last().copied().unwrap_or(mark_ms);
    let span_ms = last.saturating_sub(mark_ms).max(1);
    let rate = all_times.len() as f64 * 1_000.0 / span_ms as f64;
    println!(
        "{} restarts in {span_ms} ms after the failure: {rate:.2} restarts/s (supervisor budget \
         {} at once then {:.2}/s; tenant budget {} at once then {:.2}/s each)",
        all_times.len(),
        global_budget.burst,
        1.0 / global_budget.every.as_secs_f64(),
        tenant_budget.burst,
        1.0 / tenant_budget.every.as_secs_f64(),
    );
}

// ---------------------------------------------------------------------------------------------
// Row 3: a QR code never scanned expires after WAHA's QR window, and the chip waits.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_never_scanned_reaches_login_expired_after_the_qr_window_and_stays() {
    // Time scale 0.02: WAHA's 160 s QR window (a 60 s first code, then 5 refreshes of 20 s)
    // lasts 3.2 s.
    const TIME_SCALE: f64 = 0.02;
    let timings = Timings::default();
    let qr_window = TimeScale::new(TIME_SCALE)
        .expect("a valid time scale")
        .scale(timings.first_qr + timings.qr_refresh * u32::from(timings.qr_refreshes));
    let fleet = Fleet::builder()
        .tenant("acme")
        .time_scale(TIME_SCALE)
        .timings(timings)
        .build()
        .await;
    let config = fleet.config();
    // 3 × (1 s + 10 % jitter) = 3.3 s with the fast policy.
    let resync = config.policy.resync_interval;
    let window = 3 * (resync + resync / 10);
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("chip created");

    // Nobody scans. Follow the chip until its login window expires, keeping the `since` of
    // the last AwaitingLogin seen.
    let within = WAIT + qr_window;
    let deadline = Instant::now() + within;
    let mut awaiting_since = None;
    let expired_since = loop {
        let record = replica
            .get_chip(&acme, &sales)
            .await
            .expect("the chip is readable");
        match record.observed.phase {
            Phase::AwaitingLogin { since, .. } => awaiting_since = Some(since),
            Phase::LoginExpired { since } => break since,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for LoginExpired; last seen: {}",
            describe(&record)
        );
        tokio::time::sleep(POLL).await;
    };
    let awaiting_since = awaiting_since.unwrap_or_else(|| {
        panic!(
            "AwaitingLogin was never seen before LoginExpired (a {qr_window:?} window, polled \
             every {POLL:?})"
        )
    });
    let lasted = expired_since
        .duration_since(awaiting_since)
        .expect("LoginExpired is recorded after AwaitingLogin");
    // Both ends are the supervisor's own records, each noticed a little after WAHA's change:
    // the window may look shorter by how much later the start was noticed than the end, at
    // most a resync interval (every chip is read again at least that often).
    let allowance = shared::fast_policy().resync_interval + 2 * POLL;
    let at_least = qr_window.saturating_sub(allowance);
    assert!(
        lasted >= at_least,
        "the login window lasted {lasted:?} (AwaitingLogin → LoginExpired); WAHA's QR window \
         is {qr_window:?} at time scale {TIME_SCALE}, so at least {at_least:?} (allowing \
         {allowance:?} for noticing)"
    );

    // It waits for the host: LoginExpired (the same expiry) for the whole window ...
    let looks = holds_throughout(
        &replica,
        &acme,
        std::slice::from_ref(&sales),
        window,
        "LoginExpired",
        |_, record| {
            matches!(record.observed.phase, Phase::LoginExpired { since } if since == expired_since)
        },
    )
    .await;
    // ... and WAHA saw no start or restart of its session since the expiry.
    let control = fleet.control_for(&acme).await;
    let name = session(&acme, &sales);
    let expired_ms = unix_ms(expired_since);
    let since_expiry: Vec<CallRecord> = control
        .calls_for(&name)
        .into_iter()
        .filter(|call| call.at_ms >= expired_ms)
        .collect();
    assert!(
        !since_expiry.iter().any(is_start_or_restart),
        "{name}: no start or restart after the expiry and through the {window:?} window \
         ({looks} looks); calls since the expiry: {:?}",
        show_calls(&since_expiry)
    );
}
