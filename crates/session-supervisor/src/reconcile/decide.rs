//! `decide`: the pure choice of one next step (`docs/session-supervisor.md`, 4.2).

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use container_pool::Engine;
use proxy_allocator::ProxyLease;
use waha_client::SessionStatus;

use super::{
    BudgetSeen, ContainerSeen, Decision, Failure, SessionPlan, SessionSeen, Step, TenantSeen, World,
};
use crate::chip::{ChipRecord, LoginMethod, LoginOffer, Observed, RunState};
use crate::phase::{LoginKind, Phase, StopCause};
use crate::policy::{Action, BackoffClass, ParkReason, Policy, Reason, jitter_draw};
use crate::signal::SignalBody;

/// Chooses the one next step for `record` in `world`. No I/O, no randomness of its own (the
/// jitter is a hash of the seed, the chip and the attempt), so the same inputs always give the
/// same decision.
///
/// Rules, first match wins:
/// 1. Deleted: the first finalizer not done (the container is ensured again when a session
///    may still live in its volume), then `RemoveRecord`.
///    A step that failed without changing the phase (a stop or release of a chip that keeps
///    its phase, a re-read) waits for the record's `next_try` first.
/// 2. Tenant suspended or deleted: stop the session, release the running slot, record
///    `Stopped { TenantInactive }`; tenant missing: park `tenant_missing`.
/// 3. Stopped by the host: stop, release the running slot, record `Stopped { Host }`. In
///    rules 2 and 3 a parked, login-expired or temporarily banned chip keeps its phase.
/// 4. Parked or login expired without a new request from the host: keep the session stopped
///    and the running slot released, then wait. A disconnect that stops a session at once
///    (park, QR window, temporary ban) is acted on here, before any repair; a ban reported
///    again while it is served (or observed before it ended) is folded, not a second ban.
///    Backing off and not due: wait (a temporary ban keeps the session stopped), unless WAHA
///    healed it (a `WORKING` already reported with the failure, as in a silent death, is no
///    healing: the due backoff restarts).
/// 5. Admission: chip slot (repair), running slot, placement.
/// 6. The container: ensured when it does not run or is not the one recorded.
/// 7. The proxy lease; the session, ensured when missing, different, or on an old proxy
///    generation.
/// 8. The host's requests: log out, restart, a new login window.
/// 9. The pending disconnect, by the policy table; a due backoff restarts; else WAHA's
///    status (`STOPPED` starts, `STARTING` too long is `transient`, `SCAN_QR_CODE` awaits
///    login or requests a pairing code once, `WORKING` confirms or probes a silent session,
///    `FAILED` is the QR window while awaiting login, at once on GOWS, after the reason grace
///    (WEBJS: the self-heal grace) elsewhere, else `failed_no_signal` after the grace). A
///    self-heal grace runs from the first unfolded disconnect; a re-pair is budgeted and
///    checked for a loop first.
/// 10. Otherwise wait until the next resync.
///
/// A step that (re)starts a session after a failure needs the restart budget: without it the
/// decision is `Wait` until the budget allows, and the attempt count does not move.
pub fn decide(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let decision = choose(record, world, policy);
    match world.budget {
        BudgetSeen::NextAt(at) if decision.step.budgeted() => {
            Decision::step(Step::Wait { until: Some(at) })
        }
        _ => decision,
    }
}

fn choose(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let now = world.now;
    let observed = &record.observed;

    // 1. Deletion.
    if record.desired.run == RunState::Deleted {
        return finalize(record, world, policy);
    }

    // A failed stop or release (the phase was kept), or a failed re-read: tried again at its
    // own time, never in a hot loop.
    if let Some(until) = retry_at(observed, now) {
        return Decision::step(Step::Wait { until: Some(until) });
    }

    // 2. The tenant.
    match world.tenant {
        TenantSeen::Unread => return reread(world, policy),
        TenantSeen::Missing => {
            let parked = matches!(
                observed.phase,
                Phase::Parked {
                    reason: ParkReason::TenantMissing,
                    ..
                }
            );
            return Decision::step(if parked {
                Step::Wait { until: None }
            } else {
                Step::Record {
                    phase: Phase::Parked {
                        reason: ParkReason::TenantMissing,
                        since: now,
                    },
                }
            });
        }
        TenantSeen::Suspended | TenantSeen::Deleted => {
            return stand_down(record, world, policy, StopCause::TenantInactive);
        }
        TenantSeen::Active => {}
    }

    // 3. Stopped by the host.
    if record.desired.run == RunState::Stopped {
        return stand_down(record, world, policy, StopCause::Host);
    }

    // 4. Waiting for the host, failures that stop a session at once, backoff.
    let requests = Unapplied::of(record);
    if observed.phase.waits_for_host() && !requests.any() {
        return hold(record, world, policy);
    }
    let pending = pending_disconnect(record, world, policy);
    if let Some(failure) = pending.filter(|failure| policy.stops_at_once(failure.reason)) {
        return act_on(failure, record, world, policy);
    }
    if let Phase::BackingOff {
        reason, next_try, ..
    } = observed.phase
        && now < next_try
        && !requests.any()
    {
        let banned = reason == Reason::TemporarilyBanned;
        // A `WORKING` WAHA reported along with the failure (a silent death) is no healing.
        let healed = world.session_status() == Some(&SessionStatus::Working)
            && !working_is_stale(reason, observed);
        if banned && world.session_may_run() {
            return Decision::step(Step::StopSession {
                cause: StopCause::Held,
            });
        }
        if banned || !healed {
            return Decision::step(Step::Wait {
                until: Some(next_try),
            });
        }
    }

    // 5. Admission.
    if !observed.chip_slot {
        return Decision::step(Step::ReserveChipSlot);
    }
    if !observed.running_slot {
        return Decision::step(Step::ReserveRunningSlot);
    }
    let Some(slot) = observed.placement else {
        return Decision::step(Step::PlaceChip {
            slot: world.placement.place(&world.occupancy),
        });
    };

    // 6. The container.
    match &world.container {
        ContainerSeen::Unread => return reread(world, policy),
        ContainerSeen::Missing | ContainerSeen::NotRunning { .. } => {
            return Decision::step(Step::EnsureContainer { slot });
        }
        ContainerSeen::Running { id, .. } => {
            if observed
                .container
                .as_ref()
                .is_none_or(|known| &known.id != id)
            {
                return Decision::step(Step::EnsureContainer { slot });
            }
        }
    }

    // 7. The proxy lease and the session.
    let Some(lease) = &world.lease else {
        return Decision::step(Step::LeaseProxy);
    };
    let backing_off = matches!(observed.phase, Phase::BackingOff { .. });
    match &world.session {
        SessionSeen::Unread => return reread(world, policy),
        SessionSeen::Missing => {
            return Decision::step(ensure_session(record, lease.generation, backing_off));
        }
        SessionSeen::Present {
            config_equivalent, ..
        } => {
            let old_generation = observed
                .session
                .as_ref()
                .is_none_or(|session| session.proxy_generation != lease.generation);
            if !config_equivalent || old_generation {
                // A PUT restarts a running session: budgeted unless it changes nothing.
                let budgeted = backing_off || !config_equivalent;
                return Decision::step(ensure_session(record, lease.generation, budgeted));
            }
        }
    }

    // 8. The host's requests.
    if requests.logout {
        return Decision::step(Step::LogoutSession { budgeted: false });
    }
    if requests.restart {
        return Decision::step(Step::RestartSession { budgeted: false });
    }
    if requests.login {
        return Decision::step(if world.session_may_run() {
            Step::RestartSession { budgeted: false }
        } else {
            Step::StartSession { budgeted: false }
        });
    }

    // 9. The pending disconnect, else WAHA's status.
    if let Some(failure) = pending {
        return act_on(failure, record, world, policy);
    }
    status_step(record, world, policy)
}

/// The host's one-shot requests not acted on yet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unapplied {
    pub(super) restart: bool,
    pub(super) logout: bool,
    pub(super) login: bool,
}

impl Unapplied {
    pub(super) fn of(record: &ChipRecord) -> Self {
        let desired = record.desired.nonces;
        let applied = record.observed.applied;
        Unapplied {
            restart: desired.restart != applied.restart,
            logout: desired.logout != applied.logout,
            login: desired.login != applied.login,
        }
    }

    pub(super) fn any(self) -> bool {
        self.restart || self.logout || self.login
    }
}

/// `at + by`, saturating at a time a century later (a huge configured duration never panics).
pub(super) fn after(at: SystemTime, by: Duration) -> SystemTime {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
    at.checked_add(by.min(CENTURY)).unwrap_or(at)
}

/// `span × draw / u64::MAX`: a share of `span` picked by a jitter draw.
fn share(span: Duration, draw: u64) -> Duration {
    let nanos = span.as_nanos() * u128::from(draw) / u128::from(u64::MAX);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Whether the chip has been working for `stable_after`: its next failure starts a new run.
pub(super) fn is_stable(observed: &Observed, now: SystemTime, policy: &Policy) -> bool {
    matches!(observed.phase, Phase::Working { since } if now >= after(since, policy.stable_after))
}

/// The attempt a failure at `now` is, and when its run of failures began.
pub(super) fn next_attempt(
    record: &ChipRecord,
    now: SystemTime,
    policy: &Policy,
) -> (u32, SystemTime) {
    let observed = &record.observed;
    match &observed.last_error {
        Some(last) if !is_stable(observed, now, policy) => {
            (last.attempt.saturating_add(1), last.first_at)
        }
        _ => (1, now),
    }
}

/// The phase after a failure of `reason` in `class` at `now`: parked `looping` when session
/// failures repeat within the loop window, parked `retry_budget_spent` when the class's
/// budget is spent, else backing off by the class's delay (none before the first attempt
/// when `first_immediate`).
pub(super) fn failure_phase(
    record: &ChipRecord,
    reason: Reason,
    class: BackoffClass,
    first_immediate: bool,
    now: SystemTime,
    policy: &Policy,
) -> Phase {
    let (attempt, first_at) = next_attempt(record, now, policy);
    if class == BackoffClass::Session
        && let Some(parked) = looping(record, reason, now, policy)
    {
        return parked;
    }
    if policy
        .classes
        .get(class)
        .budget
        .is_spent(attempt, first_at, now)
    {
        return Phase::Parked {
            reason: ParkReason::RetryBudgetSpent {
                last_reason: reason,
            },
            since: now,
        };
    }
    let delay = if first_immediate && attempt == 1 {
        Duration::ZERO
    } else {
        let draw = jitter_draw(policy.jitter_seed, &record.key, attempt);
        policy.classes.next_delay(class, attempt, draw)
    };
    Phase::BackingOff {
        reason,
        attempt,
        next_try: after(now, delay),
    }
}

/// Whether events arrived since the last one the record knows (a probe count starts over).
pub(super) fn events_since_last_seen(observed: &Observed, world: &World) -> bool {
    world
        .last_signal_at()
        .is_some_and(|at| observed.last_event_at.is_none_or(|seen| at > seen))
}

/// When a step that kept the phase (a failed stop or release, a failed re-read) is tried
/// again, if not yet: the record's `next_try` when it is not its backoff's own.
fn retry_at(observed: &Observed, now: SystemTime) -> Option<SystemTime> {
    observed
        .next_try
        .filter(|at| now < *at && observed.phase.next_try() != Some(*at))
}

/// Whether WAHA's `WORKING` says nothing about a backoff of `reason`: the session died
/// silently while WAHA reported it working, or WAHA already reported `WORKING` when the
/// failure was recorded. Such a backoff is not healed by `WORKING`; it restarts when due.
fn working_is_stale(reason: Reason, observed: &Observed) -> bool {
    reason == Reason::Silent
        || matches!(
            (&observed.waha, &observed.last_error),
            (Some(seen), Some(last))
                if seen.status == SessionStatus::Working && seen.since <= last.at
        )
}

/// Parked `looping` when a session failure of `reason` at `now` would be the
/// `loop_max_failures`-th within the loop window.
fn looping(record: &ChipRecord, reason: Reason, now: SystemTime, policy: &Policy) -> Option<Phase> {
    let window_start = now.checked_sub(policy.loop_window).unwrap_or(UNIX_EPOCH);
    let failures = record.observed.failures.count_since(window_start) + 1;
    let max = usize::try_from(policy.loop_max_failures).unwrap_or(usize::MAX);
    (failures >= max).then_some(Phase::Parked {
        reason: ParkReason::Looping {
            last_reason: reason,
        },
        since: now,
    })
}

fn reread(world: &World, policy: &Policy) -> Decision {
    Decision::step(Step::Wait {
        until: Some(after(world.now, policy.reread_after)),
    })
}

/// Waits until the next resync: `resync_interval` ± 10 %, spread per chip.
fn resync(record: &ChipRecord, world: &World, policy: &Policy) -> SystemTime {
    let spread = policy.resync_interval / 10;
    let draw = jitter_draw(policy.jitter_seed, &record.key, u32::MAX);
    let interval = policy.resync_interval - spread + share(spread * 2, draw);
    after(world.now, interval)
}

fn ensure_session(record: &ChipRecord, proxy_generation: u64, budgeted: bool) -> Step {
    Step::EnsureSession {
        plan: SessionPlan {
            name: record.key.session_name(),
            proxy_generation,
        },
        budgeted,
    }
}

/// Stops a chip on purpose (rules 2 and 3). A chip that waits for the host or serves a
/// temporary ban keeps its phase: starting it again (or reactivating its tenant) must not
/// un-park it.
fn stand_down(record: &ChipRecord, world: &World, policy: &Policy, cause: StopCause) -> Decision {
    let observed = &record.observed;
    if observed.session.is_some() && world.container == ContainerSeen::Unread {
        return reread(world, policy);
    }
    Decision::step(if world.session_may_run() {
        Step::StopSession { cause }
    } else if observed.running_slot {
        Step::ReleaseRunningSlot
    } else if observed.phase == (Phase::Stopped { cause }) || keeps_phase_stopped(&observed.phase) {
        Step::Wait { until: None }
    } else {
        Step::Record {
            phase: Phase::Stopped { cause },
        }
    })
}

/// Whether a chip stopped on purpose keeps `phase`: it waits for the host (parked, login
/// expired; not parked for a missing tenant, which the tenant rule undoes) or serves a
/// temporary ban.
fn keeps_phase_stopped(phase: &Phase) -> bool {
    match phase {
        Phase::Parked {
            reason: ParkReason::TenantMissing,
            ..
        } => false,
        Phase::BackingOff {
            reason: Reason::TemporarilyBanned,
            ..
        } => true,
        phase => phase.waits_for_host(),
    }
}

/// Keeps a chip that waits for the host stopped, without its running slot (rule 4). Like
/// `stand_down`, it re-reads a container it could not read rather than give up on a session
/// that may run in it.
fn hold(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    if record.observed.session.is_some() && world.container == ContainerSeen::Unread {
        return reread(world, policy);
    }
    Decision::step(if world.session_may_run() {
        Step::StopSession {
            cause: StopCause::Held,
        }
    } else if record.observed.running_slot {
        Step::ReleaseRunningSlot
    } else {
        Step::Wait { until: None }
    })
}

/// The finalizers of a deleted chip, in order (rule 1).
fn finalize(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let observed = &record.observed;
    if let (Phase::Deleting { .. }, Some(until)) = (observed.phase, observed.next_try)
        && world.now < until
    {
        return Decision::step(Step::Wait { until: Some(until) });
    }
    let session_may_exist =
        observed.session.is_some() || matches!(world.session, SessionSeen::Present { .. });
    if session_may_exist {
        match (&world.container, observed.placement) {
            (ContainerSeen::Running { .. }, _) => return Decision::step(Step::DeleteSession),
            (ContainerSeen::Unread, _) => return reread(world, policy),
            // A session left in the volume would come back with the container: bring the
            // container up to delete it.
            (_, Some(slot)) => return Decision::step(Step::EnsureContainer { slot }),
            (_, None) => {}
        }
    }
    Decision::step(if observed.proxy.is_some() || world.lease.is_some() {
        Step::ReleaseProxy
    } else if observed.running_slot {
        Step::ReleaseRunningSlot
    } else if observed.chip_slot {
        Step::ReleaseChipSlot
    } else if observed.pacer_activated {
        Step::ForgetPacer
    } else {
        Step::RemoveRecord
    })
}

/// The disconnect to act on among the signals not folded yet: the newest one that stops a
/// session at once, else the newest one.
fn pending_disconnect(record: &ChipRecord, world: &World, policy: &Policy) -> Option<Failure> {
    let mut newest: Option<(u64, Failure)> = None;
    let mut newest_stop: Option<(u64, Failure)> = None;
    let unfolded = world
        .signals
        .iter()
        .filter(|signal| signal.seq > record.observed.signals_applied);
    for signal in unfolded {
        let SignalBody::Disconnect {
            reason,
            ban_expires,
        } = &signal.body
        else {
            continue;
        };
        let failure = Failure {
            reason: *reason,
            at: signal.at,
            ban_expires: *ban_expires,
        };
        let is_newer =
            |held: &Option<(u64, Failure)>| held.as_ref().is_none_or(|(seq, _)| signal.seq > *seq);
        if is_newer(&newest) {
            newest = Some((signal.seq, failure));
        }
        if policy.stops_at_once(*reason) && is_newer(&newest_stop) {
            newest_stop = Some((signal.seq, failure));
        }
    }
    newest_stop.or(newest).map(|(_, failure)| failure)
}

/// When the oldest disconnect not folded yet that does not stop the session at once was
/// observed: the start of the run WAHA gets its self-heal grace for (a newer disconnect of the
/// same run never moves the deadline).
fn first_disconnect_at(record: &ChipRecord, world: &World, policy: &Policy) -> Option<SystemTime> {
    world
        .signals
        .iter()
        .filter(|signal| signal.seq > record.observed.signals_applied)
        .filter_map(|signal| match &signal.body {
            SignalBody::Disconnect { reason, .. } if !policy.stops_at_once(*reason) => {
                Some(signal.at)
            }
            _ => None,
        })
        .min()
}

/// What to do about `failure`, by the policy table.
fn act_on(failure: Failure, record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let now = world.now;
    let observed = &record.observed;
    let record_phase = |phase: Phase| Decision::handling(Step::Record { phase }, failure);
    match policy.action(failure.reason) {
        Action::Park(reason) => record_phase(Phase::Parked { reason, since: now }),
        Action::LoginExpired => record_phase(Phase::LoginExpired { since: now }),
        Action::TemporaryBan => match same_ban(failure, record, now, policy) {
            // The ban being served, reported again: folded, never a second ban.
            Some(phase) => Decision::folding(Step::Record { phase }),
            None => record_phase(ban_phase(failure, record, now, policy)),
        },
        action @ (Action::RePair { .. } | Action::RestartThenRePair) => {
            // A re-pair restarts the session: loop detection first, then the budget.
            if let Some(parked) = looping(record, failure.reason, now, policy) {
                return record_phase(parked);
            }
            let logout = match action {
                Action::RePair { logout } => logout,
                // Restart once; the same reason back before the chip is stable re-pairs.
                _ => {
                    !is_stable(observed, now, policy)
                        && observed
                            .last_error
                            .as_ref()
                            .is_some_and(|last| last.reason == failure.reason)
                }
            };
            let step = if logout {
                Step::LogoutSession { budgeted: true }
            } else {
                Step::RestartSession { budgeted: true }
            };
            Decision::handling(step, failure)
        }
        Action::SelfHeal {
            grace,
            class,
            report_proxy,
            first_immediate,
        } => {
            let working = world.session_status() == Some(&SessionStatus::Working);
            if working && now >= after(failure.at, policy.reason_grace) {
                // WAHA healed it; the failure still counts for loop detection.
                return record_phase(observed.phase);
            }
            // The grace runs from the first disconnect of the run; only the healed check
            // above looks at the newest.
            let first_at = first_disconnect_at(record, world, policy)
                .map_or(failure.at, |at| at.min(failure.at));
            let give_up_at = after(first_at, grace);
            if now < give_up_at {
                return Decision::step(Step::Wait {
                    until: Some(give_up_at),
                });
            }
            match &world.lease {
                Some(lease) if report_proxy => Decision::handling(
                    Step::ReportProxyFailure {
                        generation: failed_generation(lease, &failure, policy),
                    },
                    failure,
                ),
                _ => record_phase(failure_phase(
                    record,
                    failure.reason,
                    class,
                    first_immediate,
                    now,
                    policy,
                )),
            }
        }
        Action::RotateProxy { class } => match &world.lease {
            Some(lease) => Decision::handling(
                Step::ReportProxyFailure {
                    generation: failed_generation(lease, &failure, policy),
                },
                failure,
            ),
            None => record_phase(failure_phase(
                record,
                failure.reason,
                class,
                false,
                now,
                policy,
            )),
        },
        Action::Retry { class } => record_phase(failure_phase(
            record,
            failure.reason,
            class,
            false,
            now,
            policy,
        )),
        Action::Probe => Decision::folding(Step::Probe),
        // Facts the other rules act on from the world itself (container, lease, slots,
        // tenant): the signal is only folded.
        Action::Resync
        | Action::StopTenant
        | Action::RepairChipSlot
        | Action::EnsureContainer
        | Action::LeaseAgain
        | Action::DropTenant => record_phase(observed.phase),
    }
}

/// When a ban ends: its expiry (or `temp_ban_fallback` from `now`) plus up to
/// `temp_ban_jitter`, spread by the jitter draw of `attempt`.
fn ban_end(
    failure: Failure,
    record: &ChipRecord,
    attempt: u32,
    now: SystemTime,
    policy: &Policy,
) -> SystemTime {
    let expires = failure
        .ban_expires
        .unwrap_or_else(|| after(now, policy.temp_ban_fallback));
    let draw = jitter_draw(policy.jitter_seed, &record.key, attempt);
    after(expires, share(policy.temp_ban_jitter, draw))
}

/// A report of the temporary ban the chip serves (or served): while backing off from it, the
/// backoff, its end moved later when the report says so; after it, a report observed before
/// the ban ended changes nothing. `None`: a new ban.
fn same_ban(
    failure: Failure,
    record: &ChipRecord,
    now: SystemTime,
    policy: &Policy,
) -> Option<Phase> {
    let observed = &record.observed;
    match observed.phase {
        Phase::BackingOff {
            reason: Reason::TemporarilyBanned,
            attempt,
            next_try,
        } if now < next_try => Some(Phase::BackingOff {
            reason: Reason::TemporarilyBanned,
            attempt,
            next_try: next_try.max(ban_end(failure, record, attempt, now, policy)),
        }),
        phase if observed.ban_until.is_some_and(|until| failure.at < until) => Some(phase),
        _ => None,
    }
}

/// A temporary ban: back off until it expires (plus up to `temp_ban_jitter`), or park
/// `banned` when another one is remembered.
fn ban_phase(failure: Failure, record: &ChipRecord, now: SystemTime, policy: &Policy) -> Phase {
    let remembered = record
        .observed
        .temp_bans
        .iter()
        .any(|at| after(*at, policy.temp_ban_memory) > now);
    if remembered {
        return Phase::Parked {
            reason: ParkReason::Banned,
            since: now,
        };
    }
    let (attempt, _) = next_attempt(record, now, policy);
    Phase::BackingOff {
        reason: Reason::TemporarilyBanned,
        attempt,
        next_try: ban_end(failure, record, attempt, now, policy),
    }
}

/// Rule 9 without a pending disconnect: WAHA's status.
fn status_step(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let now = world.now;
    let observed = &record.observed;
    let Some(status) = world.session_status() else {
        return reread(world, policy);
    };

    // A due backoff (or one WAHA healed): restart, budgeted. A `WORKING` that was reported
    // along with the failure (a silent death) is restarted too.
    if let Phase::BackingOff { reason, .. } = observed.phase {
        return Decision::folding(match status {
            SessionStatus::Working if !working_is_stale(reason, observed) => Step::ConfirmWorking,
            SessionStatus::Stopped => Step::StartSession { budgeted: true },
            _ => Step::RestartSession { budgeted: true },
        });
    }

    match status {
        SessionStatus::Stopped => Decision::folding(Step::StartSession {
            budgeted: observed.last_error.is_some(),
        }),
        SessionStatus::Starting => match noted_since(observed, status) {
            None => note(observed),
            Some(since) => {
                let deadline = after(since, policy.starting_timeout);
                if now >= deadline {
                    let failure = Failure {
                        reason: Reason::Transient,
                        at: now,
                        ban_expires: None,
                    };
                    act_on(failure, record, world, policy)
                } else {
                    Decision::step(Step::Wait {
                        until: Some(deadline),
                    })
                }
            }
        },
        SessionStatus::ScanQrCode => match &record.desired.spec.login {
            LoginMethod::Qr => await_login(record, LoginKind::Qr, world, policy),
            LoginMethod::PairingCode { .. } => {
                if matches!(observed.login, Some(LoginOffer::PairingCode { .. })) {
                    await_login(record, LoginKind::PairingCode, world, policy)
                } else {
                    Decision::folding(Step::RequestPairingCode)
                }
            }
        },
        SessionStatus::PasskeyRequired | SessionStatus::PasskeyConfirmationRequired => {
            await_login(record, LoginKind::Passkey, world, policy)
        }
        SessionStatus::Working => working_step(record, world, policy),
        SessionStatus::Failed => failed_step(record, world, policy),
        _ => match noted_since(observed, status) {
            None => note(observed),
            Some(_) => Decision::step(Step::Wait {
                until: Some(resync(record, world, policy)),
            }),
        },
    }
}

/// Since when WAHA has reported `status`, if the record noted it.
fn noted_since(observed: &Observed, status: &SessionStatus) -> Option<SystemTime> {
    observed
        .waha
        .as_ref()
        .filter(|seen| &seen.status == status)
        .map(|seen| seen.since)
}

/// Records WAHA's new status (and since when) without changing the phase.
fn note(observed: &Observed) -> Decision {
    Decision::folding(Step::Record {
        phase: observed.phase,
    })
}

fn await_login(record: &ChipRecord, method: LoginKind, world: &World, policy: &Policy) -> Decision {
    match record.observed.phase {
        Phase::AwaitingLogin {
            method: current, ..
        } if current == method => Decision::step(Step::Wait {
            until: Some(resync(record, world, policy)),
        }),
        _ => Decision::folding(Step::Record {
            phase: Phase::AwaitingLogin {
                method,
                since: world.now,
            },
        }),
    }
}

fn working_step(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let now = world.now;
    let observed = &record.observed;
    let Phase::Working { since } = observed.phase else {
        return Decision::folding(Step::ConfirmWorking);
    };
    if observed.me.is_none() {
        return Decision::folding(Step::ConfirmWorking);
    }
    let last_alive = [Some(since), observed.last_event_at, world.last_signal_at()]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(since);
    let silent_from = after(last_alive, policy.silence_threshold);
    if now < silent_from {
        return Decision::step(Step::Wait {
            until: Some(silent_from.min(resync(record, world, policy))),
        });
    }
    let probes = if events_since_last_seen(observed, world) {
        0
    } else {
        observed.silent_probes
    };
    if probes >= policy.silent_probes_before_restart
        && policy.silent_restart_engines.contains(&world.engine)
    {
        let failure = Failure {
            reason: Reason::Silent,
            at: now,
            ban_expires: None,
        };
        let phase = failure_phase(
            record,
            Reason::Silent,
            BackoffClass::Session,
            false,
            now,
            policy,
        );
        return Decision::handling(Step::Record { phase }, failure);
    }
    Decision::folding(Step::Probe)
}

fn failed_step(record: &ChipRecord, world: &World, policy: &Policy) -> Decision {
    let now = world.now;
    let observed = &record.observed;
    if let Phase::AwaitingLogin { .. } = observed.phase {
        // FAILED after SCAN_QR_CODE: the QR window ran out. GOWS sends no signal for it; the
        // others get the reason grace for a signal that explains it (WEBJS the self-heal
        // grace: it restarts a FAILED session by itself).
        if world.engine != Engine::Gows
            && let ControlFlow::Break(wait) = failed_grace_over(observed, world, policy)
        {
            return wait;
        }
        let failure = Failure {
            reason: Reason::QrWindowExpired,
            at: now,
            ban_expires: None,
        };
        return act_on(failure, record, world, policy);
    }
    let since = match failed_grace_over(observed, world, policy) {
        ControlFlow::Continue(since) => since,
        ControlFlow::Break(wait) => return wait,
    };
    let failure = Failure {
        reason: Reason::FailedNoSignal,
        at: since,
        ban_expires: None,
    };
    act_on(failure, record, world, policy)
}

/// When `FAILED` was first noted, once its grace has passed: WEBJS gets the self-heal grace
/// (it restarts a FAILED session by itself), the others the reason grace (for a signal that
/// explains it). Before that, breaks with the decision to note the status or to wait.
fn failed_grace_over(
    observed: &Observed,
    world: &World,
    policy: &Policy,
) -> ControlFlow<Decision, SystemTime> {
    let Some(since) = noted_since(observed, &SessionStatus::Failed) else {
        return ControlFlow::Break(note(observed));
    };
    let grace = if world.engine == Engine::Webjs {
        policy.self_heal_grace
    } else {
        policy.reason_grace
    };
    let due = after(since, grace);
    if world.now < due {
        return ControlFlow::Break(Decision::step(Step::Wait { until: Some(due) }));
    }
    ControlFlow::Continue(since)
}

/// The lease generation a failure happened on. A failure observed within `reason_grace` of the
/// current generation's assignment belongs to the proxy before it: one incident can arrive as
/// several signals (WEBJS reports a `PROXYBLOCK` both as a state change and as a disconnect),
/// and the later ones must not rotate the proxy the first one just rotated to. Reported on the
/// older generation, the allocator answers `Superseded` and the chip reconnects through the
/// current lease; a new proxy that really fails fails again later and is reported on its own
/// generation.
fn failed_generation(lease: &ProxyLease, failure: &Failure, policy: &Policy) -> u64 {
    if lease.generation > 1 && failure.at <= after(lease.assigned_at, policy.reason_grace) {
        lease.generation - 1
    } else {
        lease.generation
    }
}
