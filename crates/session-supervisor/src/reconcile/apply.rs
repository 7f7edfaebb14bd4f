//! `apply`: the pure twin of `decide`, folding a step's outcome into the next observed state.

use std::time::SystemTime;

use waha_client::SessionStatus;

use super::decide::{Unapplied, after, events_since_last_seen, failure_phase, next_attempt};
use super::{Decision, Outcome, ProxyReport, SessionSeen, Step, StepError, StepKind, World};
use crate::chip::{
    ChipRecord, LastError, LoginOffer, Observed, ObservedPatch, RunState, StepEntry, StepOutcome,
    WahaSeen,
};
use crate::phase::{Finalizers, LoginKind, Phase};
use crate::policy::{Action, BackoffClass, ParkReason, Policy, Reason, jitter_draw};

/// Folds the result of `decision`'s step (taken in `world`) into the next observed state of
/// `record`, with its step-log entry. Pure, like [`decide`](fn@crate::decide).
///
/// - A success records what the effect returned (container, lease, session, status, pairing
///   code, `me`), the host requests it fulfilled, the failure the step acted on (last error,
///   attempt, failure window, temporary bans) and folds the signals the decision consumed.
/// - An error goes through the policy table: a re-read is no attempt (it is tried again after
///   `reread_after`); otherwise the chip backs off with the class's delay, or parks when the
///   table, the loop detection or the class's retry budget says so. A deleted chip never
///   parks: its finalizers back off. A chip stopping its session or releasing its running
///   slot, stopped by the host or waiting for the host keeps its phase: only `next_try` is
///   set. A failed pairing-code request still counts as the window's request.
/// - A deleted chip's phase lists the finalizers still to run.
///
/// `Step::RemoveRecord` is executed as `ChipStore::remove`, not as a write, and `Step::Wait`
/// is not executed at all; applying them only logs the step.
pub fn apply(
    record: &ChipRecord,
    world: &World,
    decision: &Decision,
    result: &Result<Outcome, StepError>,
    policy: &Policy,
) -> ObservedPatch {
    let now = world.now;
    let mut observed = record.observed.clone();
    let mut retry = None;
    observed.acted_on = record.desired_version;
    if let SessionSeen::Present { status, .. } = &world.session {
        see_status(&mut observed, status, now);
    }
    let outcome = match result {
        Ok(outcome) => {
            if let Some(failure) = decision.handles {
                let kind = failure.reason.as_str();
                record_failure(&mut observed, record, failure.reason, kind, "", now, policy);
                observed.failures.record(now, failure.reason);
            }
            succeeded(&mut observed, record, world, decision, outcome, policy);
            if decision.folds_signals {
                fold_signals(&mut observed, world);
            }
            StepOutcome::Succeeded
        }
        Err(error) => {
            retry = failed(&mut observed, record, &decision.step, now, error, policy);
            StepOutcome::Failed {
                reason: error.reason,
                kind: error.kind.to_owned(),
            }
        }
    };
    if let Phase::BackingOff {
        reason: Reason::TemporarilyBanned,
        next_try,
        ..
    } = observed.phase
    {
        observed.ban_until = Some(
            observed
                .ban_until
                .map_or(next_try, |until| until.max(next_try)),
        );
    }
    if record.desired.run == RunState::Deleted {
        observed.phase = Phase::Deleting {
            remaining: Finalizers::of(&observed),
        };
        if retry.is_some() {
            observed.next_try = retry;
        } else if result.is_ok() {
            observed.next_try = None;
        }
    } else {
        observed.next_try = retry.or_else(|| observed.phase.next_try());
    }
    if !matches!(observed.phase, Phase::AwaitingLogin { .. }) {
        observed.login = None;
    }
    observed.login = observed.login.map(|offer| offer.scrubbed(now));
    ObservedPatch {
        observed,
        step: Some(StepEntry::new(decision.step.kind(), outcome, now)),
    }
}

/// Notes a status WAHA reported at `now`, keeping since when it has been reported.
fn see_status(observed: &mut Observed, status: &SessionStatus, now: SystemTime) {
    if let Some(seen) = observed.waha.as_mut().filter(|seen| &seen.status == status) {
        seen.read_at = now;
        return;
    }
    observed.waha = Some(WahaSeen {
        status: status.clone(),
        since: now,
        read_at: now,
    });
}

/// Records a failure as the last error, continuing the current run of attempts.
fn record_failure(
    observed: &mut Observed,
    record: &ChipRecord,
    reason: Reason,
    kind: &str,
    detail: &str,
    now: SystemTime,
    policy: &Policy,
) {
    let (attempt, first_at) = next_attempt(record, now, policy);
    observed.last_error = Some(LastError {
        reason,
        kind: kind.to_owned(),
        detail: detail.to_owned(),
        attempt,
        first_at,
        at: now,
    });
    if reason == Reason::TemporarilyBanned {
        observed
            .temp_bans
            .retain(|at| after(*at, policy.temp_ban_memory) > now);
        observed.temp_bans.push(now);
    }
}

/// Folds the signals the world showed: they are applied, and they prove the session alive.
fn fold_signals(observed: &mut Observed, world: &World) {
    if let Some(seq) = world.last_signal_seq() {
        observed.signals_applied = observed.signals_applied.max(seq);
    }
    if let Some(at) = world.last_signal_at() {
        observed.last_event_at = Some(observed.last_event_at.map_or(at, |seen| seen.max(at)));
    }
}

/// A host request was fulfilled: the chip starts afresh (attempts, loop window, probes).
fn start_afresh(observed: &mut Observed) {
    observed.last_error = None;
    observed.failures.clear();
    observed.silent_probes = 0;
}

/// Moves the chip (back) into provisioning, unless it is being deleted.
fn provisioning(observed: &mut Observed, next: StepKind) {
    if !matches!(observed.phase, Phase::Deleting { .. }) {
        observed.phase = Phase::Provisioning { next };
    }
}

fn succeeded(
    observed: &mut Observed,
    record: &ChipRecord,
    world: &World,
    decision: &Decision,
    outcome: &Outcome,
    policy: &Policy,
) {
    let now = world.now;
    let requests = Unapplied::of(record);
    let nonces = record.desired.nonces;
    match (&decision.step, outcome) {
        (Step::Record { phase }, _) => {
            let qr_window = matches!(
                phase,
                Phase::AwaitingLogin {
                    method: LoginKind::Qr,
                    ..
                }
            );
            if qr_window && !matches!(observed.login, Some(LoginOffer::Qr { .. })) {
                observed.login = Some(LoginOffer::Qr {
                    window_started_at: now,
                });
            }
            observed.phase = *phase;
        }
        (Step::ReserveChipSlot, _) => observed.chip_slot = true,
        (Step::ReserveRunningSlot, _) => {
            observed.running_slot = true;
            provisioning(observed, StepKind::PlaceChip);
        }
        (Step::PlaceChip { slot }, _) => {
            observed.placement = Some(*slot);
            provisioning(observed, StepKind::EnsureContainer);
        }
        (Step::EnsureContainer { .. }, Outcome::Container(container)) => {
            if observed
                .container
                .as_ref()
                .is_some_and(|known| known.id != container.id)
            {
                // A new container: what the old one reported says nothing about it.
                observed.waha = None;
            }
            observed.container = Some(container.clone());
            provisioning(observed, StepKind::LeaseProxy);
        }
        (Step::LeaseProxy, Outcome::Lease(proxy)) => {
            observed.proxy = Some(proxy.clone());
            provisioning(observed, StepKind::EnsureSession);
        }
        (Step::EnsureSession { .. }, Outcome::Session { session, status }) => {
            observed.session = Some(session.clone());
            see_status(observed, status, now);
            provisioning(observed, StepKind::StartSession);
        }
        (Step::StartSession { .. }, Outcome::Status(status)) => {
            see_status(observed, status, now);
            if requests.login {
                observed.applied.login = nonces.login;
                start_afresh(observed);
            }
            provisioning(observed, StepKind::ConfirmWorking);
        }
        (Step::RequestPairingCode, Outcome::PairingCode { code, expires_at }) => {
            observed.login = Some(LoginOffer::PairingCode {
                code: Some(code.clone()),
                requested_at: now,
                expires_at: *expires_at,
            });
            observed.phase = Phase::AwaitingLogin {
                method: LoginKind::PairingCode,
                since: now,
            };
        }
        (Step::ConfirmWorking, Outcome::LoggedIn(me)) => {
            observed.me = Some(me.clone());
            observed.pacer_activated = true;
            observed.silent_probes = 0;
            observed.login = None;
            if !matches!(observed.phase, Phase::Working { .. }) {
                observed.phase = Phase::Working { since: now };
            }
        }
        (Step::RestartSession { .. }, Outcome::Status(status)) => {
            see_status(observed, status, now);
            match decision.handles {
                None if requests.restart => {
                    observed.applied.restart = nonces.restart;
                    start_afresh(observed);
                }
                None if requests.login => {
                    observed.applied.login = nonces.login;
                    start_afresh(observed);
                }
                Some(failure) if matches!(policy.action(failure.reason), Action::RePair { .. }) => {
                    observed.me = None;
                }
                _ => {}
            }
            provisioning(observed, StepKind::ConfirmWorking);
        }
        (Step::LogoutSession { .. }, _) => {
            if let Outcome::Status(status) = outcome {
                see_status(observed, status, now);
            }
            if decision.handles.is_none() && requests.logout {
                observed.applied.logout = nonces.logout;
                start_afresh(observed);
            }
            observed.me = None;
            observed.login = None;
            provisioning(observed, StepKind::ConfirmWorking);
        }
        (Step::StopSession { .. }, _) => see_status(observed, &SessionStatus::Stopped, now),
        (Step::ReportProxyFailure { .. }, Outcome::ProxyReport(report)) => match report {
            ProxyReport::Rotated { to } | ProxyReport::Superseded { current: to } => {
                observed.proxy = Some(to.clone());
                provisioning(observed, StepKind::EnsureSession);
            }
            ProxyReport::Counted | ProxyReport::CoolingDown { .. } | ProxyReport::NoAlternative => {
                let reason = decision
                    .handles
                    .map_or(Reason::ProxyFailure, |failure| failure.reason);
                observed.phase =
                    failure_phase(record, reason, BackoffClass::Session, false, now, policy);
            }
        },
        (Step::Probe, Outcome::Probe { status, me }) => {
            see_status(observed, status, now);
            if *status == SessionStatus::Working && me.is_some() {
                observed.silent_probes = if events_since_last_seen(&record.observed, world) {
                    1
                } else {
                    observed.silent_probes.saturating_add(1)
                };
                observed.last_event_at = Some(now);
            } else {
                let reason = Reason::Silent;
                record_failure(observed, record, reason, reason.as_str(), "", now, policy);
                observed.failures.record(now, reason);
                observed.silent_probes = 0;
                observed.phase =
                    failure_phase(record, reason, BackoffClass::Session, false, now, policy);
            }
        }
        (Step::DeleteSession, _) => {
            observed.session = None;
            observed.waha = None;
            observed.me = None;
            observed.login = None;
        }
        (Step::ReleaseProxy, _) => observed.proxy = None,
        (Step::ReleaseRunningSlot, _) => observed.running_slot = false,
        (Step::ReleaseChipSlot, _) => observed.chip_slot = false,
        (Step::ForgetPacer, _) => observed.pacer_activated = false,
        (Step::Wait { .. } | Step::RemoveRecord, _) => {}
        (step, _) => tracing::warn!(
            step = %step.kind(),
            "the outcome does not belong to the step; nothing recorded from it"
        ),
    }
}

/// Folds a failed `step`. Returns when to try again where the phase does not say it: a
/// re-read, a failed finalizer, or a failed step of a chip that keeps its phase.
///
/// A chip keeps its phase when the step stops its session or releases its running slot, when
/// the host stopped it, or when it waits for the host: a failed stop never un-parks a chip.
fn failed(
    observed: &mut Observed,
    record: &ChipRecord,
    step: &Step,
    now: SystemTime,
    error: &StepError,
    policy: &Policy,
) -> Option<SystemTime> {
    if *step == Step::RequestPairingCode {
        // The request may have reached WAHA: never a second one in this window by itself.
        observed.login = Some(LoginOffer::PairingCode {
            code: None,
            requested_at: now,
            expires_at: now,
        });
        if !matches!(observed.phase, Phase::AwaitingLogin { .. }) {
            observed.phase = Phase::AwaitingLogin {
                method: LoginKind::PairingCode,
                since: now,
            };
        }
    }
    let action = policy.action(error.reason);
    // Not attempts: a re-read (after `reread_after`), a repair the next decision makes, or no
    // write at all.
    match action {
        Action::Resync => return Some(after(now, policy.reread_after)),
        Action::StopTenant | Action::DropTenant => return None,
        Action::RepairChipSlot => {
            observed.chip_slot = false;
            return None;
        }
        Action::LeaseAgain => {
            observed.proxy = None;
            return None;
        }
        _ => {}
    }
    let class = match action {
        Action::Retry { class }
        | Action::SelfHeal { class, .. }
        | Action::RotateProxy { class } => class,
        Action::EnsureContainer => BackoffClass::Provision,
        _ => BackoffClass::Session,
    };
    let repeated = record
        .observed
        .last_error
        .as_ref()
        .is_some_and(|last| last.reason == error.reason);
    if action == Action::EnsureContainer {
        // The next decision ensures the container again (the pool repairs a rotated key).
        observed.container = None;
    }
    let deleting = record.desired.run == RunState::Deleted;
    let keeps_phase = matches!(step, Step::StopSession { .. } | Step::ReleaseRunningSlot)
        || record.desired.run == RunState::Stopped
        || (record.observed.phase.waits_for_host() && !Unapplied::of(record).any());
    let phase = match action {
        _ if deleting || keeps_phase => None,
        Action::Park(reason) => Some(Phase::Parked { reason, since: now }),
        Action::EnsureContainer if error.reason == Reason::Unauthorized && repeated => {
            Some(Phase::Parked {
                reason: ParkReason::Unauthorized,
                since: now,
            })
        }
        _ => Some(failure_phase(
            record,
            error.reason,
            class,
            false,
            now,
            policy,
        )),
    };
    record_failure(
        observed,
        record,
        error.reason,
        error.kind,
        &error.detail,
        now,
        policy,
    );
    if class == BackoffClass::Session && !keeps_phase {
        observed.failures.record(now, error.reason);
    }
    match phase {
        Some(phase) => {
            observed.phase = phase;
            None
        }
        None => {
            // A finalizer, or a step of a chip that keeps its phase, failed: retry it after
            // the class's delay, never park or un-park.
            let (attempt, _) = next_attempt(record, now, policy);
            let draw = jitter_draw(policy.jitter_seed, &record.key, attempt);
            let delay = policy.classes.next_delay(class, attempt, draw);
            Some(after(now, delay))
        }
    }
}
