//! What `run()` starts (`docs/session-supervisor.md`, 4.4, 6 and 9): the ownership loop
//! (claim, renew), the scheduler (fair between tenants, never two reconciles of one chip),
//! the reconcile loop (read, decide, execute, apply, write, publish) and the always-on tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tenant_isolation::TenantId;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::chip::{ChipKey, ChipRecord};
use crate::error::{ShutdownReport, SupervisorError};
use crate::events::ChipChange;
use crate::monitor;
use crate::owner::OwnerGuard;
use crate::policy::Reason;
use crate::reconcile::{Step, StepError, apply, decide};
use crate::store::{StoreError, Trigger};
use crate::supervisor::Supervisor;

/// The running supervisor's tasks; [`shutdown`](Self::shutdown) stops them.
#[derive(Debug)]
pub struct SupervisorHandle {
    supervisor: Supervisor,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    reconciles: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl SupervisorHandle {
    /// Whether the tasks still run.
    pub fn is_running(&self) -> bool {
        !*self.stop.borrow() && !self.tasks.is_empty()
    }

    /// The supervisor these tasks run for.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Stops taking work, lets in-flight reconciles finish within the configured
    /// `shutdown_grace` (then drops them: effects are idempotent and the record shows the last
    /// finished step), stops the always-on tasks and releases every ownership lease so other
    /// replicas take over at once.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let inner = &self.supervisor.inner;
        inner.stopping.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        let grace = inner.effects.config.shutdown_grace;
        let mut report = ShutdownReport::default();
        {
            let mut reconciles = self.reconciles.lock().await;
            let deadline = Instant::now() + grace;
            while !reconciles.is_empty() {
                match tokio::time::timeout_at(deadline, reconciles.join_next()).await {
                    Ok(Some(_)) => report.finished += 1,
                    Ok(None) => break,
                    Err(_) => {
                        report.abandoned = reconciles.len();
                        reconciles.abort_all();
                        while reconciles.join_next().await.is_some() {}
                        break;
                    }
                }
            }
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let fences = inner.owned.drain();
        report.released_tenants = fences.len();
        if !fences.is_empty()
            && let Err(error) = inner.effects.store.release(&inner.owner_id, &fences).await
        {
            warn!(%error, "releasing the ownership leases failed; they expire by themselves");
        }
        inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        metrics::gauge!("supervisor_owned_tenants").set(0.0);
        inner.running.store(false, Ordering::Release);
        info!(%report, "supervisor stopped");
        report
    }
}

pub(crate) async fn start(supervisor: Supervisor) -> Result<SupervisorHandle, SupervisorError> {
    let inner = &supervisor.inner;
    if inner.running.swap(true, Ordering::AcqRel) {
        return Err(SupervisorError::AlreadyRunning);
    }
    inner.stopping.store(false, Ordering::Release);
    let (stop, stopped) = watch::channel(false);
    let reconciles = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
    let mut tasks = JoinSet::new();
    tasks.spawn(ownership_loop(supervisor.clone(), stopped.clone()));
    tasks.spawn(scheduler_loop(
        supervisor.clone(),
        stopped.clone(),
        reconciles.clone(),
    ));
    monitor::spawn_all(&supervisor, &stopped, &mut tasks);
    info!(owner = %inner.owner_id, "supervisor running");
    Ok(SupervisorHandle {
        supervisor,
        stop,
        tasks,
        reconciles,
    })
}

/// Sleeps `period`, or returns `false` as soon as `stop` is set.
pub(crate) async fn pause(stop: &mut watch::Receiver<bool>, period: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(period) => !*stop.borrow(),
        changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
    }
}

/// Claims tenants without a live owner every `claim_interval` and renews the owned ones
/// every `renew_every`.
async fn ownership_loop(supervisor: Supervisor, mut stop: watch::Receiver<bool>) {
    let inner = &supervisor.inner;
    let config = &inner.effects.config;
    let store = &inner.effects.store;
    let step = config.claim_interval.min(config.renew_every);
    let mut next_claim = Instant::now();
    // When the last claim was sent: creates asking for a claim at once are served at most
    // four times per claim interval, however many arrive.
    let mut last_claim = Instant::now()
        .checked_sub(config.claim_interval)
        .unwrap_or_else(Instant::now);
    let mut next_renew = Instant::now() + config.renew_every;
    loop {
        let now = Instant::now();
        if now >= next_renew {
            next_renew = now + config.renew_every;
            let held = inner.owned.fences();
            if !held.is_empty() {
                let sent_at = Instant::now();
                // Bounded: a slow statement must not hold up the next renewal (the guards
                // would run out while it waits).
                match tokio::time::timeout(
                    config.renew_every,
                    store.renew(&inner.owner_id, &held, config.lease_ttl),
                )
                .await
                {
                    Err(_) => warn!(
                        after = ?config.renew_every,
                        "renewing the ownership leases timed out; the guards run out by themselves"
                    ),
                    Ok(Ok(kept)) => {
                        let lost = inner.owned.renewed(
                            &kept,
                            sent_at,
                            config.lease_ttl,
                            config.safety_margin,
                        );
                        for tenant in lost {
                            warn!(tenant = %tenant, "ownership lost: another replica took the tenant over");
                            metrics::counter!("supervisor_ownership_lost_total").increment(1);
                        }
                    }
                    // The guards run out by themselves a safety margin before the expiry.
                    Ok(Err(error)) => warn!(%error, "renewing the ownership leases failed"),
                }
            }
        }
        if now >= next_claim {
            next_claim = now + config.claim_interval;
            last_claim = now;
            let sent_at = Instant::now();
            // Bounded like the renewal (a claim that commits after the time-out leaves leases
            // nobody here acts on: they expire and are claimed again).
            match tokio::time::timeout(
                config.renew_every,
                store.acquire(&inner.owner_id, config.claim_batch, config.lease_ttl),
            )
            .await
            {
                Err(_) => warn!("claiming tenants timed out"),
                Ok(Ok(fences)) if !fences.is_empty() => {
                    let act_until = sent_at + config.lease_ttl.saturating_sub(config.safety_margin);
                    for fence in fences {
                        info!(tenant = %fence.tenant, token = fence.token, "tenant acquired");
                        inner.owned.insert(OwnerGuard::new(fence, act_until));
                    }
                    inner.wake.notify_one();
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => warn!(%error, "claiming tenants failed"),
            }
        }
        metrics::gauge!("supervisor_owned_tenants").set(inner.owned.len() as f64);
        // Until the next claim or renewal is due, at most `step`.
        let now = Instant::now();
        let wait = step
            .min(next_claim.saturating_duration_since(now))
            .min(next_renew.saturating_duration_since(now));
        tokio::select! {
            running = pause(&mut stop, wait) => {
                if !running {
                    return;
                }
            }
            // A chip of a tenant nobody here owns was just created: claim now, or as soon as
            // the last claim is a quarter of a claim interval old.
            () = inner.claim_now.notified() => {
                next_claim = next_claim.min(last_claim + config.claim_interval / 4);
            }
        }
    }
}

/// Takes due chips of owned tenants, round robin, within the concurrency limits.
async fn scheduler_loop(
    supervisor: Supervisor,
    mut stop: watch::Receiver<bool>,
    reconciles: Arc<tokio::sync::Mutex<JoinSet<()>>>,
) {
    let inner = &supervisor.inner;
    let config = &inner.effects.config;
    let global = Arc::new(Semaphore::new(config.reconcile_concurrency));
    let mut per_tenant: HashMap<TenantId, Arc<Semaphore>> = HashMap::new();
    let mut rotation = 0usize;
    loop {
        // Reap finished reconciles (their permits are back already).
        {
            let mut set = reconciles.lock().await;
            while let Some(done) = set.try_join_next() {
                if let Err(error) = done
                    && error.is_panic()
                {
                    warn!(%error, "a reconcile panicked; its chip is retried by the resync");
                }
            }
        }
        let mut guards = inner.owned.guards();
        guards.retain(|g| g.check().is_ok());
        per_tenant.retain(|tenant, _| guards.iter().any(|g| g.tenant() == tenant));
        if !guards.is_empty() {
            rotation = rotation.wrapping_add(1);
            let start = rotation % guards.len();
            guards.rotate_left(start);
        }
        for guard in guards {
            if *stop.borrow() {
                return;
            }
            let tenant_limit = per_tenant
                .entry(guard.tenant().clone())
                .or_insert_with(|| Arc::new(Semaphore::new(config.per_tenant_concurrency)))
                .clone();
            let room = tenant_limit
                .available_permits()
                .min(global.available_permits());
            if room == 0 {
                continue;
            }
            let now = inner.effects.clock.now();
            let keys = match inner
                .effects
                .store
                .take_due(std::slice::from_ref(guard.fence()), now, room as u32)
                .await
            {
                Ok(keys) => keys,
                Err(error) => {
                    warn!(tenant = %guard.tenant(), %error, "taking due chips failed");
                    continue;
                }
            };
            for key in keys {
                let busy = {
                    let mut in_flight = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    match in_flight.get_mut(&key) {
                        Some(dirty) => {
                            *dirty = true;
                            true
                        }
                        None => {
                            in_flight.insert(key.clone(), false);
                            false
                        }
                    }
                };
                if busy {
                    continue;
                }
                let (Ok(global_permit), Ok(tenant_permit)) = (
                    global.clone().try_acquire_owned(),
                    tenant_limit.clone().try_acquire_owned(),
                ) else {
                    // No room after all: give the chip back to the queue.
                    inner
                        .in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    requeue(&supervisor, &key, now, Trigger::Resync).await;
                    continue;
                };
                let supervisor = supervisor.clone();
                let guard = guard.clone();
                let span = info_span!("reconcile", tenant = %key.tenant, chip = %key.chip, session = %key.session_name());
                reconciles.lock().await.spawn(
                    async move {
                        let _permits = (global_permit, tenant_permit);
                        // Leaves the in-flight map also when the reconcile panics or is
                        // aborted, so the chip is never stranded in this process.
                        let flight = InFlight {
                            supervisor: &supervisor,
                            key: &key,
                        };
                        tokio::select! {
                            // Losing the tenant wins over a step that is ready at the same
                            // moment (a process resumed after SIGSTOP past its lease).
                            biased;
                            () = guard.lost() => {
                                debug!("reconcile dropped: the tenant is no longer owned here");
                                if !guard.is_lost() {
                                    // Expired, not taken over: a renewal may revive the guard;
                                    // the chip must be due again then.
                                    requeue(&supervisor, &key, supervisor.inner.effects.clock.now(), Trigger::Resync).await;
                                }
                            }
                            () = reconcile(&supervisor, &key, &guard) => {}
                        }
                        let dirty = flight.leave();
                        if dirty && guard.check().is_ok() {
                            requeue(
                                &supervisor,
                                &key,
                                supervisor.inner.effects.clock.now(),
                                Trigger::Api,
                            )
                            .await;
                        }
                        supervisor.inner.wake.notify_one();
                    }
                    .instrument(span),
                );
            }
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(config.tick_interval) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

/// A chip's entry in the in-flight map, removed when the reconcile ends however it ends.
struct InFlight<'a> {
    supervisor: &'a Supervisor,
    key: &'a ChipKey,
}

impl InFlight<'_> {
    /// Leaves the map; whether a trigger arrived meanwhile.
    fn leave(&self) -> bool {
        self.supervisor
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.key)
            .unwrap_or(false)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

async fn requeue(supervisor: &Supervisor, key: &ChipKey, due: SystemTime, trigger: Trigger) {
    if let Err(error) = supervisor
        .inner
        .effects
        .store
        .enqueue(key, due, trigger)
        .await
    {
        warn!(tenant = %key.tenant, chip = %key.chip, %error, "requeue failed; the resync queues the chip again");
    }
}

/// The next time a chip with nothing to do is looked at: the policy's resync interval,
/// spread by ±10 % per chip so a fleet's resyncs do not line up.
fn resync_at(supervisor: &Supervisor, key: &ChipKey, now: SystemTime) -> SystemTime {
    let policy = &supervisor.inner.effects.config.policy;
    let base = policy.resync_interval;
    let draw = crate::policy::jitter_draw(policy.jitter_seed, key, 0);
    // A fraction in [0, 1) from the draw: spread over [0.9, 1.1) × base.
    let fraction = (draw % 10_000) as f64 / 10_000.0;
    let spread = base.mul_f64(0.9 + 0.2 * fraction);
    now.checked_add(spread).unwrap_or(now + base)
}

/// When a chip whose store read or write failed is looked at again: the `infra` class's base
/// delay (the reconcile itself is not an attempt of the chip).
fn infra_retry_at(supervisor: &Supervisor, now: SystemTime) -> SystemTime {
    let policy = &supervisor.inner.effects.config.policy;
    now + policy.classes.get(crate::policy::BackoffClass::Infra).base
}

/// One reconcile of one chip: up to `max_steps_per_reconcile` rounds of read, decide, act,
/// write. Every step's outcome is written before the next step is decided.
async fn reconcile(supervisor: &Supervisor, key: &ChipKey, guard: &OwnerGuard) {
    let inner = &supervisor.inner;
    let effects = &inner.effects;
    let config = &effects.config;
    let started = Instant::now();
    let mut outcome = "requeued";
    for _ in 0..config.max_steps_per_reconcile {
        if guard.check().is_err() {
            outcome = "not_owner";
            break;
        }
        let record = match effects.store.get(key).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                outcome = "gone";
                break;
            }
            Err(error) => {
                warn!(%error, "reading the chip failed");
                let retry = infra_retry_at(supervisor, effects.clock.now());
                requeue(supervisor, key, retry, Trigger::Resync).await;
                outcome = "store_error";
                break;
            }
        };
        // Placing a chip reads the tenant's occupancy and writes a slot: one chip of a tenant
        // at a time, from the read to the write, or two chips could take one last place.
        let _placing = if record.observed.placement.is_none() {
            Some(placement_lock(supervisor, &key.tenant).lock_owned().await)
        } else {
            None
        };
        let world = effects.observe_world(&record).await;
        let decision = decide(&record, &world, &config.policy);
        let step = decision.step.clone();
        if let Some(failure) = &decision.handles {
            // A session failure (a disconnect signal, WAHA's FAILED) acted on by this step.
            metrics::counter!("supervisor_failures_total", "reason" => failure.reason.as_str())
                .increment(1);
        }
        if let Step::Wait { until } = step {
            let due = until.unwrap_or_else(|| resync_at(supervisor, key, world.now));
            debug!(
                in_ms = due.duration_since(world.now).unwrap_or_default().as_millis() as u64,
                tenant_seen = ?world.tenant,
                container_seen = ?world.container,
                "waiting"
            );
            requeue(supervisor, key, due, Trigger::Resync).await;
            outcome = "waiting";
            break;
        }
        if step.budgeted() {
            let grant = effects
                .budgets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(&key.tenant, world.now);
            if let crate::reconcile::BudgetSeen::NextAt(at) = grant {
                metrics::counter!("supervisor_restart_budget_denied_total").increment(1);
                debug!(step = %step.kind(), "restart budget spent; waiting");
                requeue(supervisor, key, at, Trigger::Resync).await;
                outcome = "budget";
                break;
            }
        }
        if step == Step::RemoveRecord {
            if guard.check().is_err() {
                outcome = "not_owner";
                break;
            }
            match effects
                .store
                .remove(key, record.observed_version, guard.fence())
                .await
            {
                Ok(()) => {
                    info!("chip removed");
                    supervisor
                        .publish(ChipChange::deleted(key, world.now, record.observed_version))
                        .await;
                    metrics::counter!("supervisor_steps_total", "step" => "remove_record", "outcome" => "ok").increment(1);
                    outcome = "removed";
                    break;
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(StoreError::StaleOwner { .. }) => {
                    stale(supervisor, guard);
                    outcome = "not_owner";
                    break;
                }
                Err(error) => {
                    warn!(%error, "removing the chip failed");
                    requeue(
                        supervisor,
                        key,
                        world.now + config.tick_interval,
                        Trigger::Resync,
                    )
                    .await;
                    outcome = "store_error";
                    break;
                }
            }
        }
        let step_started = Instant::now();
        let result = match tokio::time::timeout(
            config.step_timeout,
            effects.execute(&record, &world, &step, guard),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StepError::deadline(config.step_timeout)),
        };
        let took = step_started.elapsed();
        metrics::histogram!("supervisor_step_seconds", "step" => step.kind().as_str())
            .record(took.as_secs_f64());
        if let Err(error) = &result {
            if error.reason == Reason::StaleOwner {
                // This process may not act on the tenant now: nothing is written. A guard
                // that merely ran out (a renewal was late) may come back; only a lost one
                // drops the tenant.
                if guard.is_lost() {
                    stale(supervisor, guard);
                }
                outcome = "not_owner";
                break;
            }
            debug!(step = %step.kind(), reason = %error.reason, kind = error.kind, "step failed");
            metrics::counter!("supervisor_retries_total", "reason" => error.reason.as_str())
                .increment(1);
        }
        metrics::counter!(
            "supervisor_steps_total",
            "step" => step.kind().as_str(),
            "outcome" => if result.is_ok() { "ok" } else { "error" }
        )
        .increment(1);
        let mut patch = apply(&record, &world, &decision, &result, &config.policy);
        if let Some(entry) = patch.step.as_mut() {
            entry.took = took;
            entry.owner_token = guard.fence().token;
        }
        if guard.check().is_err() {
            outcome = "not_owner";
            break;
        }
        match effects
            .store
            .write_observed(key, record.observed_version, patch, guard.fence())
            .await
        {
            Ok(after) => {
                published(supervisor, &record, &after).await;
            }
            Err(StoreError::VersionConflict { .. }) => {
                // A desired change landed meanwhile: read again and decide again.
                continue;
            }
            Err(StoreError::StaleOwner { .. }) => {
                stale(supervisor, guard);
                outcome = "not_owner";
                break;
            }
            Err(StoreError::NotFound { .. }) => {
                outcome = "gone";
                break;
            }
            Err(error) => {
                warn!(%error, step = %step.kind(), "writing the step's outcome failed; the step is redone");
                let retry = infra_retry_at(supervisor, world.now);
                requeue(supervisor, key, retry, Trigger::Resync).await;
                outcome = "store_error";
                break;
            }
        }
    }
    if outcome == "requeued" || (outcome == "not_owner" && !guard.is_lost()) {
        // The step budget of one reconcile is spent (let other chips go first), or the guard
        // ran out without the tenant being taken over: the chip must be due again, or it
        // would wait for the resync once the guard is renewed.
        requeue(supervisor, key, effects.clock.now(), Trigger::Resync).await;
    }
    metrics::counter!("supervisor_reconciles_total", "outcome" => outcome).increment(1);
    metrics::histogram!("supervisor_reconcile_seconds").record(started.elapsed().as_secs_f64());
}

/// The tenant's placement lock.
fn placement_lock(supervisor: &Supervisor, tenant: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
    supervisor
        .inner
        .placement_locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(tenant.clone())
        .or_default()
        .clone()
}

/// Publishes what a write changed, and counts phases entered.
async fn published(supervisor: &Supervisor, before: &ChipRecord, after: &ChipRecord) {
    if before.observed.phase.name() != after.observed.phase.name() {
        if let crate::phase::Phase::Parked { reason, .. } = &after.observed.phase {
            metrics::counter!("supervisor_parked_total", "reason" => reason.as_str()).increment(1);
            warn!(reason = %reason.as_str(), "chip parked");
        }
        info!(from = %before.observed.phase.name(), to = %after.observed.phase.name(), "phase changed");
    }
    for change in ChipChange::between(before, after) {
        supervisor.publish(change).await;
    }
}

/// A store refused this process's fence: drop the tenant locally at once.
fn stale(supervisor: &Supervisor, guard: &OwnerGuard) {
    warn!(tenant = %guard.tenant(), token = guard.fence().token, "write refused: another replica owns the tenant");
    metrics::counter!("supervisor_stale_owner_refusals_total").increment(1);
    supervisor.inner.owned.drop_tenant(guard.tenant());
}
