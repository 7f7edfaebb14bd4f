//! The PostgreSQL quota ledger: check-and-reserve under a row lock, in a tenant-scoped
//! transaction.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{TenantDb, TenantTx, stored_u32, to_i32};
use crate::error::Error;
use crate::quota::exceeded;
use crate::tenant::status_gate;
use crate::{
    ChipId, Clock, PlanLimits, QuotaLedger, QuotaLimit, QuotaUsage, Reservation, SendAdmission,
    SlotKind, TenantId, TenantStatus, UtcDay,
};

/// Daily send counters older than this many days are removed as new days are counted.
const SEND_HISTORY_DAYS: i32 = 35;

/// The quota ledger in PostgreSQL, through the tenant-scoped handle.
///
/// `reserve` locks the tenant's `quota_usage` row for the slot kind (`SELECT ... FOR UPDATE`),
/// so concurrent reservations of one tenant and kind are serialized by the database, across
/// processes and replicas; the check, the reservation row and the counter change commit
/// together. `admit_send` is a single `INSERT ... ON CONFLICT DO UPDATE ... WHERE sent < max`;
/// both read the tenant's status and limits again once they hold the row lock.
#[derive(Clone)]
pub struct PgQuotaLedger {
    db: TenantDb,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PgQuotaLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgQuotaLedger")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

async fn tenant_limits(tx: &TenantTx) -> Result<(TenantStatus, PlanLimits), Error> {
    let row = tx
        .query_opt(
            "SELECT status, max_chips, max_running_sessions, max_sends_per_day
               FROM tenants WHERE tenant_id = $1",
            &[&tx.tenant().as_str()],
        )
        .await?
        .ok_or_else(|| Error::TenantNotFound {
            tenant: tx.tenant().clone(),
        })?;
    let status: TenantStatus = row.try_get::<_, String>(0)?.parse()?;
    let limits = PlanLimits::new(
        stored_u32(row.try_get(1)?, "max_chips")?,
        stored_u32(row.try_get(2)?, "max_running_sessions")?,
        stored_u32(row.try_get(3)?, "max_sends_per_day")?,
    );
    Ok((status, limits))
}

/// Locks (creating if needed) the usage row of `kind`; returns its count.
async fn lock_usage(tx: &TenantTx, kind: SlotKind) -> Result<u32, Error> {
    let tenant = tx.tenant().as_str();
    tx.execute(
        "INSERT INTO quota_usage (tenant_id, kind, in_use) VALUES ($1, $2, 0)
         ON CONFLICT (tenant_id, kind) DO NOTHING",
        &[&tenant, &kind.as_str()],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT in_use FROM quota_usage WHERE tenant_id = $1 AND kind = $2 FOR UPDATE",
            &[&tenant, &kind.as_str()],
        )
        .await?;
    stored_u32(row.try_get(0)?, "quota_usage.in_use")
}

/// Locks the usage row of `kind` if it exists; returns whether it does.
async fn lock_existing_usage(tx: &TenantTx, kind: SlotKind) -> Result<bool, Error> {
    Ok(tx
        .query_opt(
            "SELECT in_use FROM quota_usage WHERE tenant_id = $1 AND kind = $2 FOR UPDATE",
            &[&tx.tenant().as_str(), &kind.as_str()],
        )
        .await?
        .is_some())
}

/// Removes `chip`'s slot of `kind` (usage row already locked); returns whether one existed.
async fn remove_slot(tx: &TenantTx, kind: SlotKind, chip: &ChipId) -> Result<bool, Error> {
    let tenant = tx.tenant().as_str();
    let removed = tx
        .execute(
            "DELETE FROM quota_reservations WHERE tenant_id = $1 AND kind = $2 AND chip_id = $3",
            &[&tenant, &kind.as_str(), &chip.as_str()],
        )
        .await?;
    if removed > 0 {
        tx.execute(
            "UPDATE quota_usage SET in_use = in_use - 1 WHERE tenant_id = $1 AND kind = $2",
            &[&tenant, &kind.as_str()],
        )
        .await?;
    }
    Ok(removed > 0)
}

impl PgQuotaLedger {
    /// A ledger over `db`; `clock` decides the UTC day for send quotas.
    pub fn new(db: TenantDb, clock: Arc<dyn Clock>) -> Self {
        PgQuotaLedger { db, clock }
    }

    async fn reserve_in(
        tx: &TenantTx,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<Reservation, Error> {
        let tenant = tx.tenant().clone();
        // Checked before locking too, so an unknown or inactive tenant gets its typed error
        // without creating a usage row.
        let (status, _) = tenant_limits(tx).await?;
        status_gate(&tenant, status)?;
        let in_use = lock_usage(tx, kind).await?;
        // Read again after the lock wait: a suspension or a lowered limit committed while this
        // transaction waited for the row lock must count (read committed: a new statement sees
        // every commit that happened before it started).
        let (status, limits) = tenant_limits(tx).await?;
        status_gate(&tenant, status)?;
        let max = limits.get(kind.limit());
        let held = tx
            .query_opt(
                "SELECT 1 FROM quota_reservations
                  WHERE tenant_id = $1 AND kind = $2 AND chip_id = $3",
                &[&tenant.as_str(), &kind.as_str(), &chip.as_str()],
            )
            .await?
            .is_some();
        if held {
            return Ok(Reservation {
                tenant,
                kind,
                chip: chip.clone(),
                newly_reserved: false,
                in_use,
                max,
            });
        }
        if kind == SlotKind::RunningSession {
            // A concurrent release of the chip slot locks `chip` and then `running_session`;
            // whichever order the two transactions take, no session slot outlives its chip.
            let has_chip = tx
                .query_opt(
                    "SELECT 1 FROM quota_reservations
                      WHERE tenant_id = $1 AND kind = $2 AND chip_id = $3",
                    &[&tenant.as_str(), &SlotKind::Chip.as_str(), &chip.as_str()],
                )
                .await?
                .is_some();
            if !has_chip {
                return Err(Error::ChipSlotRequired {
                    tenant,
                    chip: chip.clone(),
                });
            }
        }
        if in_use >= max {
            return Err(exceeded(&tenant, kind.limit(), max, in_use));
        }
        tx.execute(
            "INSERT INTO quota_reservations (tenant_id, kind, chip_id) VALUES ($1, $2, $3)",
            &[&tenant.as_str(), &kind.as_str(), &chip.as_str()],
        )
        .await?;
        tx.execute(
            "UPDATE quota_usage SET in_use = in_use + 1 WHERE tenant_id = $1 AND kind = $2",
            &[&tenant.as_str(), &kind.as_str()],
        )
        .await?;
        Ok(Reservation {
            tenant,
            kind,
            chip: chip.clone(),
            newly_reserved: true,
            in_use: in_use + 1,
            max,
        })
    }

    async fn release_in(tx: &TenantTx, kind: SlotKind, chip: &ChipId) -> Result<bool, Error> {
        // Lock order is always chip, then running_session: no deadlock with `reserve`, which
        // locks a single row.
        // A missing usage row means no slot of that kind was ever reserved (and an unknown
        // tenant has none): nothing to free, and nothing is created.
        let freed = lock_existing_usage(tx, kind).await? && remove_slot(tx, kind, chip).await?;
        if kind == SlotKind::Chip && lock_existing_usage(tx, SlotKind::RunningSession).await? {
            remove_slot(tx, SlotKind::RunningSession, chip).await?;
        }
        Ok(freed)
    }

    async fn admit_in(tx: &TenantTx, day: UtcDay) -> Result<SendAdmission, Error> {
        let tenant = tx.tenant().clone();
        // Checked before counting too, so an unknown or inactive tenant gets its typed error
        // without creating a counter row.
        let (status, limits) = tenant_limits(tx).await?;
        status_gate(&tenant, status)?;
        let day_number = i32::try_from(day.0).unwrap_or(i32::MAX);
        let max = limits.max_sends_per_day;
        let counted = if max == 0 {
            None
        } else {
            tx.query_opt(
                "INSERT INTO daily_sends (tenant_id, day, sent) VALUES ($1, $2, 1)
                 ON CONFLICT (tenant_id, day) DO UPDATE SET sent = daily_sends.sent + 1
                  WHERE daily_sends.sent < $3
                 RETURNING sent",
                &[&tenant.as_str(), &day_number, &to_i32(max)],
            )
            .await?
        };
        let Some(row) = counted else {
            let row = tx
                .query_opt(
                    "SELECT sent FROM daily_sends WHERE tenant_id = $1 AND day = $2",
                    &[&tenant.as_str(), &day_number],
                )
                .await?;
            let sent = match row {
                Some(row) => stored_u32(row.try_get(0)?, "daily_sends.sent")?,
                None => 0,
            };
            return Err(exceeded(&tenant, QuotaLimit::MaxSendsPerDay, max, sent));
        };
        let sent = stored_u32(row.try_get(0)?, "daily_sends.sent")?;
        // Read again now that the counter's row lock is held, as `reserve` does: a suspension
        // or a lowered limit committed while the upsert waited for that lock must count. An
        // error here rolls the increment back with the transaction.
        let (status, limits) = tenant_limits(tx).await?;
        status_gate(&tenant, status)?;
        let max = limits.max_sends_per_day;
        if sent > max {
            return Err(exceeded(&tenant, QuotaLimit::MaxSendsPerDay, max, sent - 1));
        }
        if sent == 1 {
            // First send of the day: trim old counters.
            tx.execute(
                "DELETE FROM daily_sends WHERE tenant_id = $1 AND day < $2",
                &[&tenant.as_str(), &(day_number - SEND_HISTORY_DAYS)],
            )
            .await?;
        }
        Ok(SendAdmission { day, sent, max })
    }
}

#[async_trait]
impl QuotaLedger for PgQuotaLedger {
    async fn reserve(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<Reservation, Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = Self::reserve_in(&tx, kind, chip).await;
        tx.finish_with(result).await
    }

    async fn release(
        &self,
        tenant: &TenantId,
        kind: SlotKind,
        chip: &ChipId,
    ) -> Result<bool, Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = Self::release_in(&tx, kind, chip).await;
        tx.finish_with(result).await
    }

    async fn holders(&self, tenant: &TenantId, kind: SlotKind) -> Result<Vec<ChipId>, Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = async {
            let rows = tx
                .query(
                    "SELECT chip_id FROM quota_reservations
                      WHERE tenant_id = $1 AND kind = $2 ORDER BY chip_id COLLATE \"C\"",
                    &[&tenant.as_str(), &kind.as_str()],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let raw: String = row.try_get(0)?;
                    ChipId::new(raw).map_err(|e| Error::CorruptData {
                        detail: format!("quota_reservations.chip_id: {e}"),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        }
        .await;
        tx.finish_with(result).await
    }

    async fn usage(&self, tenant: &TenantId) -> Result<QuotaUsage, Error> {
        let day = UtcDay::of(self.clock.now());
        let tx = self.db.scoped(tenant).await?;
        let result = async {
            let (_, limits) = tenant_limits(&tx).await?;
            let mut usage = QuotaUsage {
                tenant: tenant.clone(),
                limits,
                chips: 0,
                running_sessions: 0,
                sends_today: 0,
                day,
            };
            for row in tx
                .query(
                    "SELECT kind, in_use FROM quota_usage WHERE tenant_id = $1",
                    &[&tenant.as_str()],
                )
                .await?
            {
                let kind: String = row.try_get(0)?;
                let n = stored_u32(row.try_get(1)?, "quota_usage.in_use")?;
                match kind.as_str() {
                    "chip" => usage.chips = n,
                    "running_session" => usage.running_sessions = n,
                    _ => {}
                }
            }
            if let Some(row) = tx
                .query_opt(
                    "SELECT sent FROM daily_sends WHERE tenant_id = $1 AND day = $2",
                    &[&tenant.as_str(), &i32::try_from(day.0).unwrap_or(i32::MAX)],
                )
                .await?
            {
                usage.sends_today = stored_u32(row.try_get(0)?, "daily_sends.sent")?;
            }
            Ok(usage)
        }
        .await;
        tx.finish_with(result).await
    }

    async fn admit_send(&self, tenant: &TenantId) -> Result<SendAdmission, Error> {
        let day = UtcDay::of(self.clock.now());
        let tx = self.db.scoped(tenant).await?;
        let result = Self::admit_in(&tx, day).await;
        tx.finish_with(result).await
    }
}
