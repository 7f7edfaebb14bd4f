//! The in-memory quota ledger.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::Error;
use crate::quota::exceeded;
use crate::{
    ChipId, Clock, QuotaLedger, QuotaLimit, QuotaUsage, Reservation, SendAdmission, SlotKind,
    TenantDirectory, TenantId, UtcDay,
};

#[derive(Default)]
struct TenantSlots {
    chips: BTreeSet<ChipId>,
    running: BTreeSet<ChipId>,
    sends: Option<(UtcDay, u32)>,
}

impl TenantSlots {
    fn set(&mut self, kind: SlotKind) -> &mut BTreeSet<ChipId> {
        match kind {
            SlotKind::Chip => &mut self.chips,
            SlotKind::RunningSession => &mut self.running,
        }
    }

    fn sends_on(&self, day: UtcDay) -> u32 {
        match self.sends {
            Some((d, n)) if d == day => n,
            _ => 0,
        }
    }
}

/// A quota ledger in process memory. Limits and status come from a [`TenantDirectory`];
/// the directory read, the check and the reservation happen under one (async) lock, so they
/// are atomic: a status or limit change that completed before a reservation took the lock is
/// always seen by it.
pub struct MemoryQuotaLedger {
    directory: Arc<dyn TenantDirectory>,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<TenantId, TenantSlots>>,
}

impl MemoryQuotaLedger {
    /// A ledger reading limits from `directory`; `clock` decides the UTC day for send quotas.
    pub fn new(directory: Arc<dyn TenantDirectory>, clock: Arc<dyn Clock>) -> Self {
        MemoryQuotaLedger {
            directory,
            clock,
            slots: Mutex::new(HashMap::new()),
        }
    }

    async fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, TenantSlots>> {
        self.slots.lock().await
    }
}

impl fmt::Debug for MemoryQuotaLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("MemoryQuotaLedger");
        if let Ok(slots) = self.slots.try_lock() {
            debug.field("tenants", &slots.len());
        }
        debug.finish_non_exhaustive()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[async_trait]
impl QuotaLedger for MemoryQuotaLedger {
    async fn reserve(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<Reservation, Error> {
        // The directory is read under the ledger's lock: nothing reserves between the read
        // and the insert.
        let mut slots = self.lock().await;
        let record = self.directory.get(tenant).await?;
        record.ensure_active()?;
        let max = record.limits.get(kind.limit());
        let entry = slots.entry(tenant.clone()).or_default();
        if kind == SlotKind::RunningSession
            && !entry.running.contains(chip)
            && !entry.chips.contains(chip)
        {
            return Err(Error::ChipSlotRequired {
                tenant: tenant.clone(),
                chip: chip.clone(),
            });
        }
        let set = entry.set(kind);
        let newly_reserved = if set.contains(chip) {
            false
        } else if count(set.len()) >= max {
            return Err(exceeded(tenant, kind.limit(), max, count(set.len())));
        } else {
            set.insert(chip.clone());
            true
        };
        Ok(Reservation {
            tenant: tenant.clone(),
            kind,
            chip: chip.clone(),
            newly_reserved,
            in_use: count(set.len()),
            max,
        })
    }

    async fn release(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<bool, Error> {
        let mut slots = self.lock().await;
        let Some(entry) = slots.get_mut(tenant) else {
            return Ok(false);
        };
        let freed = entry.set(kind).remove(chip);
        if kind == SlotKind::Chip {
            entry.running.remove(chip);
        }
        Ok(freed)
    }

    async fn holders(&self, tenant: &TenantId, kind: SlotKind) -> Result<Vec<ChipId>, Error> {
        let mut slots = self.lock().await;
        Ok(slots
            .get_mut(tenant)
            .map(|e| e.set(kind).iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn usage(&self, tenant: &TenantId) -> Result<QuotaUsage, Error> {
        let mut slots = self.lock().await;
        let record = self.directory.get(tenant).await?;
        let day = UtcDay::of(self.clock.now());
        let entry = slots.entry(tenant.clone()).or_default();
        Ok(QuotaUsage {
            tenant: tenant.clone(),
            limits: record.limits,
            chips: count(entry.chips.len()),
            running_sessions: count(entry.running.len()),
            sends_today: entry.sends_on(day),
            day,
        })
    }

    async fn admit_send(&self, tenant: &TenantId) -> Result<SendAdmission, Error> {
        let mut slots = self.lock().await;
        let record = self.directory.get(tenant).await?;
        record.ensure_active()?;
        let max = record.limits.max_sends_per_day;
        let day = UtcDay::of(self.clock.now());
        let entry = slots.entry(tenant.clone()).or_default();
        let sent = entry.sends_on(day);
        if sent >= max {
            return Err(exceeded(tenant, QuotaLimit::MaxSendsPerDay, max, sent));
        }
        entry.sends = Some((day, sent + 1));
        Ok(SendAdmission {
            day,
            sent: sent + 1,
            max,
        })
    }
}
