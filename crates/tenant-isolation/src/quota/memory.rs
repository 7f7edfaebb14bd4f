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

    /// Whether the entry holds nothing that still counts on `today`: no slot, and no send
    /// count of today (or of a later day, for a clock that went back).
    fn is_idle(&self, today: UtcDay) -> bool {
        self.chips.is_empty()
            && self.running.is_empty()
            && self.sends.is_none_or(|(day, _)| day < today)
    }
}

/// The ledger's state: an entry per tenant that holds a slot or sent today.
#[derive(Default)]
struct Ledger {
    tenants: HashMap<TenantId, TenantSlots>,
    /// The UTC day the whole map was last tidied on.
    tidied_on: Option<UtcDay>,
}

impl Ledger {
    /// On the first call of a UTC day: forgets the send counts of earlier days and drops every
    /// entry left with nothing (tenants whose chips are gone and who sent nothing today).
    fn new_day(&mut self, today: UtcDay) {
        if self.tidied_on.is_some_and(|day| day >= today) {
            return;
        }
        self.tidied_on = Some(today);
        self.tenants.retain(|_, entry| {
            if entry.sends.is_some_and(|(day, _)| day < today) {
                entry.sends = None;
            }
            !entry.is_idle(today)
        });
    }

    /// Drops `tenant`'s entry if it holds nothing that counts today.
    fn tidy(&mut self, tenant: &TenantId, today: UtcDay) {
        if self
            .tenants
            .get(tenant)
            .is_some_and(|entry| entry.is_idle(today))
        {
            self.tenants.remove(tenant);
        }
    }
}

/// A quota ledger in process memory. Limits and status come from a [`TenantDirectory`];
/// the directory read, the check and the reservation happen under one (async) lock, so they
/// are atomic: a status or limit change that completed before a reservation took the lock is
/// always seen by it.
///
/// Memory: an entry per tenant that holds a slot or has sent today. A tenant's entry goes as
/// soon as a call leaves it with nothing that counts today, and on the first call of each UTC
/// day the send counts of earlier days go, with every entry left empty by that.
/// [`MemoryQuotaLedger::tracked_tenants`] says how many entries are held.
pub struct MemoryQuotaLedger {
    directory: Arc<dyn TenantDirectory>,
    clock: Arc<dyn Clock>,
    slots: Mutex<Ledger>,
}

impl MemoryQuotaLedger {
    /// A ledger reading limits from `directory`; `clock` decides the UTC day for send quotas.
    pub fn new(directory: Arc<dyn TenantDirectory>, clock: Arc<dyn Clock>) -> Self {
        MemoryQuotaLedger {
            directory,
            clock,
            slots: Mutex::new(Ledger::default()),
        }
    }

    async fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.slots.lock().await
    }

    /// Tenants with an entry: those holding a slot or with sends counted today (once a call
    /// of the day has tidied the others away).
    pub async fn tracked_tenants(&self) -> usize {
        self.lock().await.tenants.len()
    }

    fn today(&self) -> UtcDay {
        UtcDay::of(self.clock.now())
    }
}

impl fmt::Debug for MemoryQuotaLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("MemoryQuotaLedger");
        if let Ok(ledger) = self.slots.try_lock() {
            debug.field("tenants", &ledger.tenants.len());
        }
        debug.finish_non_exhaustive()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The check-and-reserve of one slot in a tenant's entry (see [`QuotaLedger::reserve`]).
fn reserve_in(
    entry: &mut TenantSlots,
    tenant: &TenantId,
    kind: SlotKind,
    chip: &ChipId,
    max: u32,
) -> Result<Reservation, Error> {
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
        let mut ledger = self.lock().await;
        let record = self.directory.get(tenant).await?;
        record.ensure_active()?;
        let max = record.limits.get(kind.limit());
        let today = self.today();
        ledger.new_day(today);
        let entry = ledger.tenants.entry(tenant.clone()).or_default();
        let reserved = reserve_in(entry, tenant, kind, chip, max);
        // A refusal leaves no empty entry behind.
        ledger.tidy(tenant, today);
        reserved
    }

    async fn release(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<bool, Error> {
        let mut ledger = self.lock().await;
        let today = self.today();
        ledger.new_day(today);
        let Some(entry) = ledger.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        let freed = entry.set(kind).remove(chip);
        if kind == SlotKind::Chip {
            entry.running.remove(chip);
        }
        ledger.tidy(tenant, today);
        Ok(freed)
    }

    async fn holders(&self, tenant: &TenantId, kind: SlotKind) -> Result<Vec<ChipId>, Error> {
        let mut ledger = self.lock().await;
        Ok(ledger
            .tenants
            .get_mut(tenant)
            .map(|e| e.set(kind).iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn usage(&self, tenant: &TenantId) -> Result<QuotaUsage, Error> {
        let mut ledger = self.lock().await;
        let record = self.directory.get(tenant).await?;
        let day = self.today();
        ledger.new_day(day);
        // A read creates no entry.
        let entry = ledger.tenants.get(tenant);
        Ok(QuotaUsage {
            tenant: tenant.clone(),
            limits: record.limits,
            chips: entry.map_or(0, |e| count(e.chips.len())),
            running_sessions: entry.map_or(0, |e| count(e.running.len())),
            sends_today: entry.map_or(0, |e| e.sends_on(day)),
            day,
        })
    }

    async fn admit_send(&self, tenant: &TenantId) -> Result<SendAdmission, Error> {
        let mut ledger = self.lock().await;
        let record = self.directory.get(tenant).await?;
        record.ensure_active()?;
        let max = record.limits.max_sends_per_day;
        let day = self.today();
        ledger.new_day(day);
        let entry = ledger.tenants.entry(tenant.clone()).or_default();
        let sent = entry.sends_on(day);
        if sent >= max {
            ledger.tidy(tenant, day);
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{ManualClock, MemoryTenantDirectory, NewTenant, PlanLimits, TenantSecrets};

    /// 10,000 chips of 1,000 tenants go through the ledger over about ten days, 86 s apart:
    /// each takes a chip slot and a running-session slot, sends once and is deleted (its chip
    /// slot released). The ledger holds entries only for the tenants that sent today (about a
    /// hundred a day here), not one per tenant that ever had a chip, and none once a day has
    /// passed without a send.
    #[tokio::test]
    async fn many_chips_leave_a_bounded_ledger() {
        const CHIPS: usize = 10_000;
        let directory = Arc::new(MemoryTenantDirectory::new());
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let ledger = MemoryQuotaLedger::new(directory.clone(), Arc::new(clock.clone()));
        let tenants: Vec<TenantId> = (0..CHIPS / 10)
            .map(|n| TenantId::new(format!("t{n}")).expect("tenant"))
            .collect();
        for tenant in &tenants {
            let secrets = TenantSecrets::generate().expect("secrets");
            directory
                .create(NewTenant::new(
                    tenant.clone(),
                    PlanLimits::new(10, 10, 1000),
                    secrets,
                ))
                .await
                .expect("tenant");
        }
        let mut peak = 0;
        for n in 0..CHIPS {
            let tenant = &tenants[n / 10];
            let chip = ChipId::new(format!("c{n}")).expect("chip");
            ledger
                .reserve(tenant, SlotKind::Chip, &chip)
                .await
                .expect("chip slot");
            ledger
                .reserve(tenant, SlotKind::RunningSession, &chip)
                .await
                .expect("session slot");
            ledger.admit_send(tenant).await.expect("send");
            assert!(
                ledger
                    .release(tenant, SlotKind::Chip, &chip)
                    .await
                    .expect("release")
            );
            peak = peak.max(ledger.tracked_tenants().await);
            clock.advance(Duration::from_secs(86));
        }
        // 86,400 / 86 / 10: about 100 tenants send per UTC day.
        assert!(
            peak <= 110,
            "only the tenants that sent today keep an entry: {peak} held at once"
        );

        // The next day, the first call forgets yesterday's counts and the entries they kept.
        clock.advance(Duration::from_secs(86_400));
        let usage = ledger.usage(&tenants[0]).await.expect("usage");
        assert_eq!((usage.chips, usage.sends_today), (0, 0));
        assert_eq!(ledger.tracked_tenants().await, 0);

        // A refused reservation leaves no entry behind, nor does a read.
        let chip = ChipId::new("orphan").expect("chip");
        let err = ledger
            .reserve(&tenants[1], SlotKind::RunningSession, &chip)
            .await
            .expect_err("no chip slot");
        assert!(matches!(err, Error::ChipSlotRequired { .. }), "{err:?}");
        assert_eq!(ledger.tracked_tenants().await, 0);
        // A tenant with a slot keeps its entry, and its count of today's sends.
        ledger
            .reserve(&tenants[2], SlotKind::Chip, &chip)
            .await
            .expect("chip slot");
        ledger.admit_send(&tenants[2]).await.expect("send");
        assert_eq!(ledger.tracked_tenants().await, 1);
        ledger
            .release(&tenants[2], SlotKind::Chip, &chip)
            .await
            .expect("release");
        assert_eq!(
            ledger.usage(&tenants[2]).await.expect("usage").sends_today,
            1,
            "today's count outlives the tenant's last slot"
        );
        assert_eq!(ledger.tracked_tenants().await, 1);
    }
}
