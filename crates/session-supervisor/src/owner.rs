//! Tenant ownership in this process (`docs/session-supervisor.md`, 6): the [`OwnerGuard`]
//! every effect checks right before it acts, and the set of tenants this process owns.
//!
//! A guard allows acting until `act_until`, a point on the **monotonic** clock taken before
//! the renewing statement was sent, plus the lease's time to live, minus a safety margin. The
//! monotonic clock keeps running while a process is stopped (SIGSTOP), so a process that could
//! not renew stops acting a safety margin before any other replica may take the tenant over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenant_isolation::TenantId;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::policy::Reason;
use crate::reconcile::StepError;
use crate::store::Fence;

#[derive(Debug)]
struct GuardState {
    act_until: Mutex<Instant>,
    lost: AtomicBool,
    lost_notify: Notify,
}

/// Proof that this process may act on one tenant now. Cheap to clone; all clones see a
/// renewal or a loss at once.
#[derive(Clone, Debug)]
pub struct OwnerGuard {
    fence: Fence,
    state: Arc<GuardState>,
}

/// This process does not own the tenant (any more): nothing may be written or sent for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this process no longer owns tenant {tenant} (token {token})")]
pub struct NotOwner {
    /// The tenant.
    pub tenant: TenantId,
    /// The token this process held.
    pub token: u64,
}

impl From<NotOwner> for StepError {
    fn from(error: NotOwner) -> Self {
        StepError::new(Reason::StaleOwner, "stale_owner", error.to_string())
    }
}

impl OwnerGuard {
    /// A guard for `fence`, allowing action until `act_until`.
    pub fn new(fence: Fence, act_until: Instant) -> Self {
        OwnerGuard {
            fence,
            state: Arc::new(GuardState {
                act_until: Mutex::new(act_until),
                lost: AtomicBool::new(false),
                lost_notify: Notify::new(),
            }),
        }
    }

    /// The fence store writes carry.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.fence.tenant
    }

    /// `Ok` while this process may act: the tenant was not lost and `act_until` has not
    /// passed. Call it immediately before every mutating effect.
    ///
    /// # Errors
    /// [`NotOwner`] once the tenant was lost or the guard expired.
    pub fn check(&self) -> Result<(), NotOwner> {
        if self.state.lost.load(Ordering::Acquire) || Instant::now() >= self.act_until() {
            return Err(NotOwner {
                tenant: self.fence.tenant.clone(),
                token: self.fence.token,
            });
        }
        Ok(())
    }

    /// Until when this process may act.
    pub fn act_until(&self) -> Instant {
        *self
            .state
            .act_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Extends the guard after a renewal whose statement was sent at `sent_at`.
    pub fn renewed(&self, sent_at: Instant, ttl: Duration, safety_margin: Duration) {
        let until = sent_at + ttl.saturating_sub(safety_margin);
        let mut act_until = self
            .state
            .act_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if until > *act_until {
            *act_until = until;
        }
    }

    /// Marks the tenant lost: every clone's `check` fails from now on and [`lost`](Self::lost)
    /// completes.
    pub fn lose(&self) {
        self.state.lost.store(true, Ordering::Release);
        self.state.lost_notify.notify_waiters();
    }

    /// Whether the tenant was lost (not merely expired).
    pub fn is_lost(&self) -> bool {
        self.state.lost.load(Ordering::Acquire)
    }

    /// Completes when the tenant is lost or the guard expires: in-flight work selects on it
    /// and is dropped at its next await point.
    pub async fn lost(&self) {
        loop {
            let notified = self.state.lost_notify.notified();
            if self.check().is_err() {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(self.act_until()) => {}
            }
        }
    }
}

/// The tenants this process owns, each with its guard.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    guards: Mutex<HashMap<TenantId, OwnerGuard>>,
}

impl Owned {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, OwnerGuard>> {
        self.guards
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The guard of `tenant`, if this process owns it and the guard still allows acting.
    pub(crate) fn guard(&self, tenant: &TenantId) -> Option<OwnerGuard> {
        self.map()
            .get(tenant)
            .filter(|guard| guard.check().is_ok())
            .cloned()
    }

    /// Every fence held (also of guards that expired but were not lost: an expired lease
    /// may still be renewed if no one took it over).
    pub(crate) fn fences(&self) -> Vec<Fence> {
        self.map().values().map(|g| g.fence().clone()).collect()
    }

    /// Every guard held.
    pub(crate) fn guards(&self) -> Vec<OwnerGuard> {
        self.map().values().cloned().collect()
    }

    /// Adds newly acquired tenants; a tenant acquired again under a newer token replaces the
    /// old guard (which is lost).
    pub(crate) fn insert(&self, guard: OwnerGuard) {
        if let Some(old) = self.map().insert(guard.tenant().clone(), guard) {
            old.lose();
        }
    }

    /// Applies a renewal: `kept` were renewed at `sent_at`; every other held tenant is lost.
    /// Returns the tenants lost.
    pub(crate) fn renewed(
        &self,
        kept: &[Fence],
        sent_at: Instant,
        ttl: Duration,
        margin: Duration,
    ) -> Vec<TenantId> {
        let mut map = self.map();
        let mut lost = Vec::new();
        map.retain(|tenant, guard| {
            if kept.contains(guard.fence()) {
                guard.renewed(sent_at, ttl, margin);
                true
            } else {
                guard.lose();
                lost.push(tenant.clone());
                false
            }
        });
        lost
    }

    /// Drops one tenant (a write was refused as stale, or it was purged).
    pub(crate) fn drop_tenant(&self, tenant: &TenantId) -> Option<OwnerGuard> {
        let guard = self.map().remove(tenant);
        if let Some(guard) = &guard {
            guard.lose();
        }
        guard
    }

    /// Drops every tenant (shutdown), returning their fences for the release.
    pub(crate) fn drain(&self) -> Vec<Fence> {
        let mut map = self.map();
        let fences = map.values().map(|g| g.fence().clone()).collect();
        for guard in map.values() {
            guard.lose();
        }
        map.clear();
        fences
    }

    /// How many tenants are owned.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(token: u64) -> Fence {
        Fence {
            tenant: TenantId::new("acme").unwrap(),
            token,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_stops_acting_at_its_deadline_and_renewal_extends_it() {
        let guard = OwnerGuard::new(fence(1), Instant::now() + Duration::from_secs(20));
        assert!(guard.check().is_ok());
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(guard.check().is_ok());
        guard.renewed(
            Instant::now(),
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(guard.check().is_ok(), "renewed for 20 s from the renewal");
        tokio::time::advance(Duration::from_secs(1)).await;
        let refused = guard.check().unwrap_err();
        assert_eq!(refused.token, 1);
        // `lost` completes at once for an expired guard.
        guard.lost().await;
    }

    #[tokio::test(start_paused = true)]
    async fn losing_a_tenant_wakes_its_work_and_refuses_every_clone() {
        let owned = Owned::default();
        let guard = OwnerGuard::new(fence(3), Instant::now() + Duration::from_secs(60));
        owned.insert(guard.clone());
        let clone = owned.guard(guard.tenant()).expect("owned");
        let waiter = tokio::spawn(async move { clone.lost().await });
        tokio::task::yield_now().await;
        let lost = owned.renewed(
            &[],
            Instant::now(),
            Duration::from_secs(30),
            Duration::from_secs(10),
        );
        assert_eq!(lost, vec![guard.tenant().clone()]);
        waiter.await.unwrap();
        assert!(guard.check().is_err());
        assert!(guard.is_lost());
        assert_eq!(owned.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_never_shortens_a_guard() {
        let guard = OwnerGuard::new(fence(1), Instant::now() + Duration::from_secs(20));
        let before = guard.act_until();
        guard.renewed(
            Instant::now() - Duration::from_secs(5),
            Duration::from_secs(20),
            Duration::from_secs(10),
        );
        assert_eq!(guard.act_until(), before);
    }
}
