//! The always-on tasks `run()` starts (`docs/session-supervisor.md`, 9): idle reaping, the
//! orphan-container sweep, the stale-session sweep, orphan reservations, proxy lease health,
//! the silent-death scan, clearing expired pairing codes, proxy history pruning, the periodic
//! resync and the pool-event watcher. Each runs once at start and then on its interval; one
//! that is turned off is logged at `warn` and reported as `supervisor_task_enabled{task} 0`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use container_pool::{ContainerState, PoolEventKind};
use proxy_allocator::{HealthChecker, LeaseCheck};
use tenant_isolation::{ChipId, SessionName, SlotKind, TenantId};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use waha_client::WahaApi;

use crate::chip::{ChipKey, ChipRecord, LoginOffer, ObservedPatch, RunState};
use crate::config::{ForeignSessionPolicy, Toggle};
use crate::owner::OwnerGuard;
use crate::phase::{Phase, PhaseName};
use crate::policy::Reason;
use crate::runtime::pause;
use crate::signal::SignalBody;
use crate::store::{StoreError, Trigger};
use crate::supervisor::Supervisor;

/// What one stale-session sweep of one tenant did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionSweep {
    /// Sessions of the tenant's own chips, kept.
    pub kept: Vec<String>,
    /// Sessions in chipfleet's format that no chip of the tenant owns, removed.
    pub removed_unowned: Vec<String>,
    /// Sessions in another format (`default`, `chip_test_1`), removed under
    /// [`ForeignSessionPolicy::Remove`].
    pub removed_foreign: Vec<String>,
    /// Sessions in another format left under [`ForeignSessionPolicy::Keep`].
    pub kept_foreign: Vec<String>,
    /// Containers whose sessions could not be listed (not running, unreachable).
    pub unreadable_containers: Vec<String>,
}

pub(crate) fn spawn_all(
    supervisor: &Supervisor,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let config = &supervisor.inner.effects.config;
    let intervals = config.monitor_intervals.clone();
    for (task, toggle) in config.monitors.iter() {
        metrics::gauge!("supervisor_task_enabled", "task" => task).set(if toggle.is_on() {
            1.0
        } else {
            0.0
        });
        if let Toggle::Off { reason } = toggle {
            warn!(task, reason = %reason, "always-on task turned off by configuration");
        }
    }
    let monitors = config.monitors.clone();
    let every = |toggle: &Toggle,
                 tasks: &mut JoinSet<()>,
                 name: &'static str,
                 period: Duration,
                 job: fn(Supervisor) -> futures::future::BoxFuture<'static, ()>| {
        if !toggle.is_on() {
            return;
        }
        let supervisor = supervisor.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            loop {
                debug!(task = name, "always-on task runs");
                job(supervisor.clone()).await;
                metrics::counter!("supervisor_task_runs_total", "task" => name).increment(1);
                if !pause(&mut stop, period).await {
                    return;
                }
            }
        });
    };
    every(
        &monitors.idle_reaping,
        tasks,
        "idle_reaping",
        intervals.idle_reaping,
        |s| Box::pin(async move { reap_idle(&s).await }),
    );
    every(
        &monitors.orphan_containers,
        tasks,
        "orphan_containers",
        intervals.sweeps,
        |s| Box::pin(async move { sweep_orphan_containers(&s).await }),
    );
    every(
        &monitors.stale_sessions,
        tasks,
        "stale_sessions",
        intervals.sweeps,
        |s| {
            Box::pin(async move {
                for guard in s.inner.owned.guards() {
                    sweep_tenant_sessions(&s, &guard).await;
                }
            })
        },
    );
    every(
        &monitors.orphan_reservations,
        tasks,
        "orphan_reservations",
        intervals.sweeps,
        |s| Box::pin(async move { release_orphan_reservations(&s).await }),
    );
    every(
        &monitors.proxy_health,
        tasks,
        "proxy_health",
        intervals.sweeps,
        |s| Box::pin(async move { check_proxy_health(&s).await }),
    );
    every(
        &monitors.silent_death,
        tasks,
        "silent_death",
        intervals.silent_scan,
        |s| Box::pin(async move { scan_owned(&s).await }),
    );
    every(
        &monitors.proxy_history,
        tasks,
        "proxy_history",
        intervals.proxy_history,
        |s| {
            Box::pin(async move {
                match s.inner.effects.proxies.prune_history().await {
                    Ok(pruned) => debug!(pruned, "proxy history pruned"),
                    Err(error) => warn!(%error, "pruning the proxy history failed"),
                }
            })
        },
    );
    // Like `every`, with what it cleared kept from one round to the next.
    if monitors.expired_offers.is_on() {
        let supervisor = supervisor.clone();
        let mut stop = stop.clone();
        let period = intervals.expired_offers;
        tasks.spawn(async move {
            let mut cleared = ClearedOffers::new();
            loop {
                debug!(task = "expired_offers", "always-on task runs");
                clear_expired_offers(&supervisor, &mut cleared).await;
                metrics::counter!("supervisor_task_runs_total", "task" => "expired_offers")
                    .increment(1);
                if !pause(&mut stop, period).await {
                    return;
                }
            }
        });
    }
    // Not optional: the safety net for lost triggers, and the pool watcher.
    let resync = config.policy.resync_interval;
    {
        let supervisor = supervisor.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            while pause(&mut stop, resync).await {
                resync_owned(&supervisor).await;
            }
        });
    }
    {
        let supervisor = supervisor.clone();
        let stop = stop.clone();
        let events = supervisor.inner.effects.pool.subscribe();
        tasks.spawn(watch_pool(supervisor, events, stop));
    }
}

/// Every chip of one tenant; a failed read is logged and skips the tenant this round.
async fn tenant_chips(supervisor: &Supervisor, tenant: &TenantId) -> Option<Vec<ChipRecord>> {
    match supervisor.chips_of(tenant).await {
        Ok(chips) => Some(chips),
        Err(error) => {
            warn!(tenant = %tenant, %error, "listing the tenant's chips failed");
            None
        }
    }
}

async fn reap_idle(supervisor: &Supervisor) {
    match supervisor.inner.effects.pool.reap_idle(supervisor).await {
        Ok(report) => {
            if !report.stopped.is_empty() || !report.removed.is_empty() {
                info!(stopped = ?report.stopped, removed = ?report.removed, "idle containers reaped");
            }
        }
        Err(error) => warn!(%error, "idle reaping failed"),
    }
}

async fn sweep_orphan_containers(supervisor: &Supervisor) {
    let effects = &supervisor.inner.effects;
    let tenants = DirectoryExists(&*effects.directory);
    match effects.pool.sweep_orphans(&tenants, true).await {
        Ok(report) => {
            if !report.removed.is_empty() || !report.removed_volumes.is_empty() {
                info!(containers = ?report.removed, volumes = ?report.removed_volumes, "orphaned containers swept");
            }
        }
        Err(error) => warn!(%error, "the orphan-container sweep failed"),
    }
}

/// The directory as the pool's `TenantExists` (a `dyn TenantDirectory` cannot be unsized
/// into another trait object).
struct DirectoryExists<'a>(&'a dyn tenant_isolation::TenantDirectory);

#[async_trait::async_trait]
impl container_pool::TenantExists for DirectoryExists<'_> {
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, container_pool::Error> {
        container_pool::TenantExists::tenant_exists(self.0, tenant).await
    }
}

/// The stale-session sweep of one owned tenant: lists each running container's sessions
/// **before** the tenant's records, so a chip created meanwhile (record first, session later)
/// is never taken for stale.
pub(crate) async fn sweep_tenant_sessions(
    supervisor: &Supervisor,
    guard: &OwnerGuard,
) -> SessionSweep {
    let effects = &supervisor.inner.effects;
    let tenant = guard.tenant();
    let mut sweep = SessionSweep::default();
    let containers = match effects.pool.containers(tenant).await {
        Ok(containers) => containers,
        Err(error) => {
            warn!(tenant = %tenant, %error, "listing the tenant's containers failed");
            return sweep;
        }
    };
    let key = match effects.directory.get(tenant).await {
        Ok(found) => found.secrets.container_api_key,
        Err(error) => {
            debug!(tenant = %tenant, %error, "no key for the stale-session sweep");
            return sweep;
        }
    };
    let mut listed: Vec<(Arc<dyn WahaApi>, Vec<String>)> = Vec::new();
    for container in containers {
        let (ContainerState::Running, Some(url)) = (container.state, container.url.as_ref()) else {
            continue;
        };
        let client = match effects.waha.client(url, key.clone()) {
            Ok(client) => client,
            Err(error) => {
                warn!(container = %container.name, %error, "no client for the sweep");
                sweep.unreadable_containers.push(container.name);
                continue;
            }
        };
        match client.list_sessions(true).await {
            Ok(sessions) => listed.push((
                // Removals are fenced: each call checks ownership right before it is sent.
                Arc::new(crate::clients::FencedWaha::new(client, guard.clone()))
                    as Arc<dyn WahaApi>,
                sessions.into_iter().map(|s| s.name).collect(),
            )),
            Err(error) => {
                debug!(container = %container.name, %error, "sessions not listed");
                sweep.unreadable_containers.push(container.name);
            }
        }
    }
    if listed.is_empty() {
        return sweep;
    }
    let Some(records) = tenant_chips(supervisor, tenant).await else {
        return sweep;
    };
    let owned: BTreeSet<String> = records
        .iter()
        .map(|r| r.key.session_name().as_str().to_owned())
        .collect();
    let foreign_policy = effects.config.foreign_sessions;
    for (client, names) in listed {
        for name in names {
            let class = if owned.contains(&name) {
                sweep.kept.push(name);
                continue;
            } else if name.starts_with(SessionName::PREFIX) {
                "unowned"
            } else if foreign_policy == ForeignSessionPolicy::Keep {
                warn!(tenant = %tenant, session = %name, "foreign session kept by policy");
                sweep.kept_foreign.push(name);
                continue;
            } else {
                "foreign"
            };
            if guard.check().is_err() {
                return sweep;
            }
            // Log out first (a logged-in stale session would keep its phone linked), then
            // delete; both repeat harmlessly.
            let _ = client.logout_session(&name).await;
            match client.delete_session(&name).await {
                Ok(()) | Err(waha_client::WahaError::NotFound { .. }) => {
                    info!(tenant = %tenant, session = %name, class, "stale session removed");
                    metrics::counter!("supervisor_stale_sessions_removed_total", "class" => class)
                        .increment(1);
                    if class == "unowned" {
                        sweep.removed_unowned.push(name);
                    } else {
                        sweep.removed_foreign.push(name);
                    }
                }
                Err(error) => {
                    warn!(tenant = %tenant, session = %name, %error, "removing a stale session failed")
                }
            }
        }
    }
    sweep
}

/// Releases chip slots of owned tenants that no record holds, once they were seen orphaned
/// for at least `orphan_reservation_age` (a create in flight reserves before it records).
async fn release_orphan_reservations(supervisor: &Supervisor) {
    let effects = &supervisor.inner.effects;
    let now = effects.clock.now();
    let age = effects.config.monitor_intervals.orphan_reservation_age;
    let mut seen = supervisor
        .inner
        .orphans_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut next: HashMap<(TenantId, ChipId, SlotKind), SystemTime> = HashMap::new();
    for guard in supervisor.inner.owned.guards() {
        let tenant = guard.tenant();
        let Some(records) = tenant_chips(supervisor, tenant).await else {
            continue;
        };
        let recorded: BTreeSet<&ChipId> = records.iter().map(|r| &r.key.chip).collect();
        let running: BTreeSet<&ChipId> = records
            .iter()
            .filter(|r| r.observed.running_slot)
            .map(|r| &r.key.chip)
            .collect();
        for (kind, holding) in [
            (SlotKind::Chip, &recorded),
            (SlotKind::RunningSession, &running),
        ] {
            let holders = match effects.quota.holders(tenant, kind).await {
                Ok(holders) => holders,
                Err(error) => {
                    warn!(tenant = %tenant, %error, "reading quota holders failed");
                    continue;
                }
            };
            for chip in holders.into_iter().filter(|c| !holding.contains(c)) {
                let slot = (tenant.clone(), chip.clone(), kind);
                let first = seen.remove(&slot).unwrap_or(now);
                if now.duration_since(first).unwrap_or_default() >= age {
                    if guard.check().is_err() {
                        break;
                    }
                    // A create of this very id may have recorded the chip since the list
                    // was read (it reuses its reservation): look again right before.
                    let key = ChipKey::new(tenant.clone(), chip.clone());
                    match effects.store.get(&key).await {
                        Ok(None) => {}
                        Ok(Some(_)) => continue,
                        Err(error) => {
                            warn!(tenant = %tenant, %error, "re-reading a chip failed");
                            continue;
                        }
                    }
                    if kind == SlotKind::RunningSession
                        && supervisor
                            .inner
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains_key(&key)
                    {
                        continue;
                    }
                    match effects.quota.release(tenant, kind, &chip).await {
                        Ok(_) => {
                            info!(tenant = %tenant, chip = %chip, ?kind, "orphaned quota reservation released")
                        }
                        Err(error) => {
                            warn!(tenant = %tenant, chip = %chip, %error, "releasing an orphaned reservation failed")
                        }
                    }
                } else {
                    next.insert(slot, first);
                }
            }
        }
    }
    seen.clear();
    *supervisor
        .inner
        .orphans_seen
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = next;
}

/// Checks every proxy endpoint, then proxy leases of owned tenants' chips; a proxy failure
/// becomes a `proxy_failure` signal (the reconcile reports it to the allocator, fenced by
/// generation, and the allocator rotates the chip after its threshold).
///
/// - The endpoint pass marks a dead endpoint (and its leases) unhealthy, so no chip is given
///   it until a later pass sees it answer again. When no endpoint passes its check, no lease
///   is checked either: rotating cannot help when every proxy fails, and a dead check target
///   or a broken checker is the likelier culprit (with two or more endpoints the allocator
///   records nothing then).
/// - A working chip is signalled on its lease's first failed check, as before.
/// - A chip whose session is meant to connect but does not work yet (awaiting a login, or
///   backing off after a failure) is signalled only when its lease was already unhealthy
///   before this check (marked by the endpoint pass or by the previous lease check): two
///   checks must agree before a live QR window or a backoff is cut short. A session whose
///   proxy is dead from the start fails before it ever works, and only this says why. The
///   lease is read from the allocator, not from the chip's record, so a record that missed a
///   lease or a rotation is still checked.
async fn check_proxy_health(supervisor: &Supervisor) {
    let effects = &supervisor.inner.effects;
    let Some(checker) = supervisor.inner.health_checker.clone() else {
        return;
    };
    let guards = supervisor.inner.owned.guards();
    if guards.is_empty() {
        return;
    }
    match effects
        .proxies
        .check_endpoints(&*checker as &dyn HealthChecker)
        .await
    {
        Ok(checks) => {
            let failed = checks.iter().filter(|c| c.result.is_err()).count();
            debug!(endpoints = checks.len(), failed, "proxy endpoints checked");
            if !checks.is_empty() && failed == checks.len() {
                warn!(
                    endpoints = checks.len(),
                    "no proxy endpoint passed its check (the checker or its target is down?); leases not checked this pass"
                );
                return;
            }
        }
        Err(error) => warn!(%error, "checking the proxy endpoints failed"),
    }
    for guard in guards {
        let Some(records) = tenant_chips(supervisor, guard.tenant()).await else {
            continue;
        };
        for record in records.iter().filter(|r| {
            r.desired.run == RunState::Running
                && matches!(
                    r.observed.phase.name(),
                    PhaseName::AwaitingLogin | PhaseName::Working | PhaseName::BackingOff
                )
        }) {
            if guard.check().is_err() {
                break;
            }
            let key = &record.key;
            let working = record.observed.phase.name() == PhaseName::Working;
            // A chip not working yet needs a failure already on record to agree with.
            let unhealthy_before = if working {
                true
            } else {
                match effects.proxies.lease(&key.tenant, &key.chip).await {
                    Ok(Some(lease)) => !lease.health.is_healthy(),
                    Ok(None) => continue,
                    Err(error) => {
                        debug!(tenant = %key.tenant, chip = %key.chip, %error, "lease not read");
                        continue;
                    }
                }
            };
            match effects
                .proxies
                .check_lease(
                    &key.tenant,
                    &key.chip,
                    &*checker as &dyn HealthChecker,
                    None,
                )
                .await
            {
                Ok(LeaseCheck::Recorded {
                    result: Err(error), ..
                }) if error.is_proxy_failure() => {
                    if !unhealthy_before {
                        debug!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "proxy check failed once; waiting for a second before acting");
                        continue;
                    }
                    warn!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "proxy check failed");
                    signal(
                        supervisor,
                        key,
                        SignalBody::Disconnect {
                            reason: Reason::ProxyFailure,
                            ban_expires: None,
                        },
                    )
                    .await;
                }
                Ok(_) => {}
                Err(error) => {
                    debug!(tenant = %key.tenant, chip = %key.chip, %error, "lease not checked")
                }
            }
        }
    }
}

async fn signal(supervisor: &Supervisor, key: &ChipKey, body: SignalBody) {
    let now = supervisor.inner.effects.clock.now();
    match supervisor
        .inner
        .effects
        .store
        .append_signal(key, now, body)
        .await
    {
        Ok(_) => supervisor.trigger(key, Trigger::Monitor).await,
        Err(error) => {
            warn!(tenant = %key.tenant, chip = %key.chip, %error, "recording a monitor signal failed")
        }
    }
}

/// The silent-death scan: queues working chips that have been silent past the threshold (the
/// reconcile probes them), and refreshes the `supervisor_chips{phase}` gauge.
async fn scan_owned(supervisor: &Supervisor) {
    let effects = &supervisor.inner.effects;
    let now = effects.clock.now();
    let threshold = effects.config.policy.silence_threshold;
    let mut by_phase: HashMap<PhaseName, u64> = HashMap::new();
    for guard in supervisor.inner.owned.guards() {
        let Some(records) = tenant_chips(supervisor, guard.tenant()).await else {
            continue;
        };
        for record in &records {
            *by_phase.entry(record.observed.phase.name()).or_default() += 1;
            let Phase::Working { since } = record.observed.phase else {
                continue;
            };
            let last = record.observed.last_event_at.unwrap_or(since).max(since);
            if now.duration_since(last).unwrap_or_default() >= threshold {
                debug!(tenant = %record.key.tenant, chip = %record.key.chip, "silent chip queued for a probe");
                supervisor.trigger(&record.key, Trigger::Monitor).await;
            }
        }
    }
    for phase in PhaseName::ALL {
        metrics::gauge!("supervisor_chips", "phase" => phase.as_str())
            .set(by_phase.get(&phase).copied().unwrap_or(0) as f64);
    }
}

/// What the expired-offers task remembers from one round to the next: per chip it cleared, the
/// expiry of the offer and the `observed_version` its write produced.
type ClearedOffers = HashMap<ChipKey, (SystemTime, u64)>;

/// Clears pairing codes past their expiry from the stored records of owned tenants (issue 13:
/// never kept past their expiry). Every owner write drops an expired code, but a chip waiting
/// for its login may go unwritten for long; this task writes it like the reconcile does
/// (fenced, compare-and-set on `observed_version`) with the offer scrubbed and no step.
/// Nothing is published: the phase does not change and the code is not on offer any more.
///
/// Reads already hide an expired code (the store's contract), so a record may show none while
/// its stored row still holds one. The row may hold one unless an owner write happened since
/// the expiry: a reconcile write decided at or after it (its step's time; `apply` scrubs at
/// that time), or this task's own write, remembered in `cleared` (any later write is later
/// still). A chip this process does not remember (after a restart or a takeover) whose newest
/// step predates the expiry is written once more, harmlessly.
async fn clear_expired_offers(supervisor: &Supervisor, cleared: &mut ClearedOffers) {
    let effects = &supervisor.inner.effects;
    let mut kept = ClearedOffers::new();
    for guard in supervisor.inner.owned.guards() {
        let Some(records) = tenant_chips(supervisor, guard.tenant()).await else {
            continue;
        };
        for record in records {
            let Some(LoginOffer::PairingCode {
                code, expires_at, ..
            }) = &record.observed.login
            else {
                continue;
            };
            let expires_at = *expires_at;
            let now = effects.clock.now();
            if now < expires_at {
                continue;
            }
            let key = &record.key;
            if code.is_none() {
                if let Some(&(offer, version)) = cleared.get(key)
                    && offer == expires_at
                    && record.observed_version >= version
                {
                    kept.insert(key.clone(), (offer, version));
                    continue;
                }
                if record
                    .steps
                    .last()
                    .is_some_and(|step| step.at >= expires_at)
                {
                    continue;
                }
            }
            // A chip being reconciled here is written by its reconcile (scrubbed, if past the
            // expiry), or looked at again next round.
            let busy = supervisor
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(key);
            if busy {
                continue;
            }
            if guard.check().is_err() {
                break;
            }
            let mut observed = record.observed.clone();
            observed.login = observed.login.map(|offer| offer.scrubbed(now));
            let patch = ObservedPatch {
                observed,
                step: None,
            };
            match effects
                .store
                .write_observed(key, record.observed_version, patch, guard.fence())
                .await
            {
                Ok(after) => {
                    debug!(tenant = %key.tenant, chip = %key.chip, "expired pairing code cleared");
                    metrics::counter!("supervisor_offers_scrubbed_total").increment(1);
                    kept.insert(key.clone(), (expires_at, after.observed_version));
                }
                // Another write landed since the read: past the expiry it dropped the code
                // itself; otherwise the next round looks again.
                Err(StoreError::VersionConflict { .. } | StoreError::NotFound { .. }) => {}
                Err(StoreError::StaleOwner { .. }) => {
                    debug!(tenant = %key.tenant, "expired offers: the tenant is owned elsewhere");
                    break;
                }
                Err(error) => {
                    warn!(tenant = %key.tenant, chip = %key.chip, %error, "clearing an expired pairing code failed")
                }
            }
        }
    }
    *cleared = kept;
}

/// Queues every chip of every owned tenant (the safety net for a lost trigger).
async fn resync_owned(supervisor: &Supervisor) {
    for guard in supervisor.inner.owned.guards() {
        queue_tenant(supervisor, guard.tenant(), Trigger::Resync).await;
    }
}

async fn queue_tenant(supervisor: &Supervisor, tenant: &TenantId, trigger: Trigger) {
    let Some(records) = tenant_chips(supervisor, tenant).await else {
        return;
    };
    let now = supervisor.inner.effects.clock.now();
    // Spread over a tenth of the resync interval, per chip, so a fleet's resyncs do not land
    // at one instant (a pool event queues at once: its chips need a look now).
    let spread = match trigger {
        Trigger::Resync => supervisor.inner.effects.config.policy.resync_interval / 10,
        _ => Duration::ZERO,
    };
    let seed = supervisor.inner.effects.config.policy.jitter_seed;
    for record in records {
        let draw = crate::policy::jitter_draw(seed, &record.key, 1) % 1_000;
        let due = now + spread.mul_f64(draw as f64 / 1_000.0);
        if let Err(error) = supervisor
            .inner
            .effects
            .store
            .enqueue(&record.key, due, trigger)
            .await
        {
            warn!(tenant = %tenant, %error, "queuing a chip failed");
        }
    }
    supervisor.inner.wake.notify_one();
}

/// Pool events of owned tenants: a container that went away queues the tenant's chips; a
/// container that became ready gets its stale sessions swept.
async fn watch_pool(
    supervisor: Supervisor,
    mut events: broadcast::Receiver<container_pool::PoolEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { return }
                continue;
            }
        };
        match event {
            Ok(event) => {
                let Some(guard) = supervisor.inner.owned.guard(&event.tenant) else {
                    continue;
                };
                match event.kind {
                    PoolEventKind::Ready { .. }
                        if supervisor.config().monitors.stale_sessions.is_on() =>
                    {
                        let supervisor = supervisor.clone();
                        tokio::spawn(async move {
                            sweep_tenant_sessions(&supervisor, &guard).await;
                        });
                    }
                    PoolEventKind::Removed { .. }
                    | PoolEventKind::Stopped
                    | PoolEventKind::Failed { .. } => {
                        queue_tenant(&supervisor, &event.tenant, Trigger::Pool).await;
                    }
                    _ => {}
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "pool events lagged; resyncing every owned tenant");
                resync_owned(&supervisor).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Runs the stale-session sweep of one tenant now (for hosts and tests); the tenant must be
/// owned by this process.
impl Supervisor {
    /// Sweeps one owned tenant's containers for stale sessions now. `None` when this process
    /// does not own the tenant.
    pub async fn sweep_stale_sessions(&self, tenant: &TenantId) -> Option<SessionSweep> {
        let guard = self.inner.owned.guard(tenant)?;
        Some(sweep_tenant_sessions(self, &guard).await)
    }
}
