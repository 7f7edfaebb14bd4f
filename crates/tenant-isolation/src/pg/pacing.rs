//! The PostgreSQL send pacer: the pacing rule of the in-memory pacer, on state kept in
//! `pacer_tenants` and `pacer_chips` and decided under row locks in a tenant-scoped
//! transaction.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{TenantDb, TenantTx};
use crate::error::Error;
use crate::pacing::bucket::TokenBucket;
use crate::pacing::rule::{self, ChipPace, PaceState};
use crate::{ChipId, Clock, Pace, PacerConfig, SendPacer, TenantId};

const SELECT_TENANT: &str = "SELECT burst_tokens, burst_at_ns FROM pacer_tenants
                              WHERE tenant_id = $1 FOR UPDATE";
const INSERT_TENANT: &str = "INSERT INTO pacer_tenants (tenant_id, burst_tokens, burst_at_ns)
                             VALUES ($1, $2, $3)
                             ON CONFLICT (tenant_id) DO NOTHING";
const UPDATE_TENANT: &str = "UPDATE pacer_tenants
                                SET burst_tokens = $2, burst_at_ns = $3, updated_at = now()
                              WHERE tenant_id = $1";
const SELECT_CHIP: &str = "SELECT activated_at_ns, warmup_day, sent_on_day, burst_tokens,
                                  burst_at_ns, next_send_at_ns
                             FROM pacer_chips WHERE tenant_id = $1 AND chip_id = $2 FOR UPDATE";
const INSERT_CHIP: &str = "INSERT INTO pacer_chips (tenant_id, chip_id, activated_at_ns,
                                       warmup_day, sent_on_day, burst_tokens, burst_at_ns,
                                       next_send_at_ns)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                           ON CONFLICT (tenant_id, chip_id) DO NOTHING";
const UPDATE_CHIP: &str = "UPDATE pacer_chips
                              SET activated_at_ns = $3, warmup_day = $4, sent_on_day = $5,
                                  burst_tokens = $6, burst_at_ns = $7, next_send_at_ns = $8,
                                  updated_at = now()
                            WHERE tenant_id = $1 AND chip_id = $2";

/// The send pacer in PostgreSQL, through the tenant-scoped handle: the same rule and the same
/// answers as [`MemorySendPacer`](crate::MemorySendPacer), with its state (each chip's warm-up
/// age, the count of its current warm-up day, its burst bucket and minimum gap; each tenant's
/// burst bucket) in the tables `pacer_chips` and `pacer_tenants` (migration 0003). Warm-up
/// counts and daily sends so survive a restart, and a chip whose owner changes keeps its pace
/// on the new replica.
///
/// [`acquire`](SendPacer::acquire) is one tenant-scoped transaction: lock the tenant's row,
/// then the chip's (`SELECT ... FOR UPDATE`, creating either as the memory pacer would when
/// it holds none), decide with the shared rule, write both rows back, commit. Replicas pacing
/// one tenant take turns on its row, so two of them never grant more than the rule allows;
/// the lock order (tenant, then chip) is the same everywhere, so they never deadlock.
/// [`chip_activated`](SendPacer::chip_activated) locks or creates the chip's row and keeps the
/// earliest activation; [`forget_chip`](SendPacer::forget_chip) deletes it.
///
/// Time comes from the injected [`Clock`], read once the row locks are held. Replicas'
/// clocks should agree (NTP): one that runs behind only holds sends back (a clock gone back
/// refills nothing), one that runs ahead lets a chip send early by as much.
///
/// Unlike the memory pacer, it knows tenants: a tenant missing from the directory gets
/// [`Error::TenantNotFound`] from `acquire` and `chip_activated` (the rows reference it), and
/// purging a tenant removes its pacing state.
pub struct PgSendPacer {
    db: TenantDb,
    config: PacerConfig,
    clock: Arc<dyn Clock>,
    rng: Mutex<fastrand::Rng>,
}

impl fmt::Debug for PgSendPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSendPacer")
            .field("db", &self.db)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PgSendPacer {
    /// A pacer over `db` (the application role's tenant-scoped handle) with `config`, reading
    /// time from `clock`. Every replica must use the same `config`: the stored state is the
    /// same for all, the limits applied to it are each replica's own.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`PacerConfig::validate`].
    pub fn new(db: TenantDb, config: PacerConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        config.validate()?;
        Ok(PgSendPacer {
            db,
            config,
            clock,
            rng: Mutex::new(fastrand::Rng::new()),
        })
    }

    /// Seeds the jitter generator, for reproducible tests.
    pub fn with_jitter_seed(self, seed: u64) -> Self {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = fastrand::Rng::with_seed(seed);
        self
    }

    /// The settings it paces with.
    pub fn config(&self) -> &PacerConfig {
        &self.config
    }

    async fn acquire_in(&self, tx: &TenantTx, chip: &ChipId) -> Result<Pace, Error> {
        let created_at = self.clock.now();
        let tenant = lock_tenant(tx, rule::tenant_bucket(&self.config, created_at)).await?;
        let (chip_pace, _) = lock_chip(
            tx,
            chip,
            ChipPace::new(&self.config, created_at, created_at),
        )
        .await?;
        // Read after the lock waits: the decision is taken in the order the locks were granted.
        let now = self.clock.now();
        let before = PaceState {
            tenant,
            chip: chip_pace,
        };
        let config = &self.config;
        let (pace, after) =
            rule::decide(before, config, now, || rule::draw_jitter(&self.rng, config));
        tx.execute(
            UPDATE_TENANT,
            &[
                &tx.tenant().as_str(),
                &after.tenant.tokens,
                &nanos(after.tenant.last, "the tenant bucket's refill time")?,
            ],
        )
        .await?;
        update_chip(tx, chip, &after.chip).await?;
        Ok(pace)
    }

    async fn activated_in(
        &self,
        tx: &TenantTx,
        chip: &ChipId,
        at: SystemTime,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let (existing, created) =
            lock_chip(tx, chip, ChipPace::activated(None, &self.config, at, now)).await?;
        if created {
            return Ok(());
        }
        let now = self.clock.now();
        let pace = ChipPace::activated(Some(existing), &self.config, at, now);
        if pace != existing {
            update_chip(tx, chip, &pace).await?;
        }
        Ok(())
    }
}

/// Locks the tenant's bucket row, creating it as `fresh` when there is none; returns the
/// bucket.
async fn lock_tenant(tx: &TenantTx, fresh: TokenBucket) -> Result<TokenBucket, Error> {
    let tenant = tx.tenant().as_str();
    let row = match tx.query_opt(SELECT_TENANT, &[&tenant]).await? {
        Some(row) => row,
        None => {
            tx.execute(
                INSERT_TENANT,
                &[
                    &tenant,
                    &fresh.tokens,
                    &nanos(fresh.last, "the tenant bucket's refill time")?,
                ],
            )
            .await
            .map_err(|e| unknown_tenant(e, tx.tenant()))?;
            // Ours, or one a concurrent transaction committed while the insert waited for it.
            tx.query_one(SELECT_TENANT, &[&tenant]).await?
        }
    };
    Ok(TokenBucket {
        tokens: row.try_get(0)?,
        last: time(row.try_get(1)?, "pacer_tenants.burst_at_ns")?,
    })
}

/// Locks the chip's row, creating it as `fresh` when there is none; returns the chip's state
/// and whether this transaction created it.
async fn lock_chip(
    tx: &TenantTx,
    chip: &ChipId,
    fresh: ChipPace,
) -> Result<(ChipPace, bool), Error> {
    let (tenant, chip_id) = (tx.tenant().as_str(), chip.as_str());
    if let Some(row) = tx.query_opt(SELECT_CHIP, &[&tenant, &chip_id]).await? {
        return Ok((chip_from_row(&row)?, false));
    }
    let columns = ChipColumns::of(&fresh)?;
    let inserted = tx
        .execute(
            INSERT_CHIP,
            &[
                &tenant,
                &chip_id,
                &columns.activated_at_ns,
                &columns.warmup_day,
                &columns.sent_on_day,
                &columns.burst_tokens,
                &columns.burst_at_ns,
                &columns.next_send_at_ns,
            ],
        )
        .await
        .map_err(|e| unknown_tenant(e, tx.tenant()))?;
    if inserted == 1 {
        // The new row is this transaction's until it ends: locked.
        return Ok((fresh, true));
    }
    // A concurrent transaction created it (and has committed: the insert waited for it).
    let row = tx.query_one(SELECT_CHIP, &[&tenant, &chip_id]).await?;
    Ok((chip_from_row(&row)?, false))
}

async fn update_chip(tx: &TenantTx, chip: &ChipId, pace: &ChipPace) -> Result<(), Error> {
    let columns = ChipColumns::of(pace)?;
    tx.execute(
        UPDATE_CHIP,
        &[
            &tx.tenant().as_str(),
            &chip.as_str(),
            &columns.activated_at_ns,
            &columns.warmup_day,
            &columns.sent_on_day,
            &columns.burst_tokens,
            &columns.burst_at_ns,
            &columns.next_send_at_ns,
        ],
    )
    .await?;
    Ok(())
}

/// A chip's state as `pacer_chips` stores it.
struct ChipColumns {
    activated_at_ns: i64,
    warmup_day: i64,
    sent_on_day: i64,
    burst_tokens: f64,
    burst_at_ns: i64,
    next_send_at_ns: Option<i64>,
}

impl ChipColumns {
    fn of(pace: &ChipPace) -> Result<Self, Error> {
        Ok(ChipColumns {
            activated_at_ns: nanos(pace.activated_at, "the chip's activation time")?,
            warmup_day: i64::from(pace.day),
            sent_on_day: i64::from(pace.sent_today),
            burst_tokens: pace.burst.tokens,
            burst_at_ns: nanos(pace.burst.last, "the chip bucket's refill time")?,
            next_send_at_ns: pace
                .next_send_at
                .map(|at| nanos(at, "the chip's next send time"))
                .transpose()?,
        })
    }
}

fn chip_from_row(row: &Row) -> Result<ChipPace, Error> {
    let next_send_at: Option<i64> = row.try_get(5)?;
    Ok(ChipPace {
        activated_at: time(row.try_get(0)?, "pacer_chips.activated_at_ns")?,
        day: count(row.try_get(1)?, "pacer_chips.warmup_day")?,
        sent_today: count(row.try_get(2)?, "pacer_chips.sent_on_day")?,
        burst: TokenBucket {
            tokens: row.try_get(3)?,
            last: time(row.try_get(4)?, "pacer_chips.burst_at_ns")?,
        },
        next_send_at: next_send_at
            .map(|ns| time(ns, "pacer_chips.next_send_at_ns"))
            .transpose()?,
    })
}

/// `at` in nanoseconds since the Unix epoch, as stored.
fn nanos(at: SystemTime, what: &str) -> Result<i64, Error> {
    let ns = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .ok()
            .map(|ns| -ns),
    };
    ns.ok_or_else(|| Error::InvalidConfig {
        reason: format!("pacer: {what} is outside the years 1678 to 2261, which cannot be stored"),
    })
}

/// A stored time in nanoseconds since the Unix epoch.
fn time(ns: i64, what: &str) -> Result<SystemTime, Error> {
    let offset = Duration::from_nanos(ns.unsigned_abs());
    let at = if ns >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    at.ok_or_else(|| Error::CorruptData {
        detail: format!("{what} ({ns}) is not a time this system can represent"),
    })
}

/// A stored day number or count.
fn count(value: i64, what: &str) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::CorruptData {
        detail: format!("{what} ({value}) is out of range"),
    })
}

/// A row that references a tenant the directory does not hold: [`Error::TenantNotFound`].
fn unknown_tenant(err: Error, tenant: &TenantId) -> Error {
    match &err {
        Error::Database(db) if db.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Error::TenantNotFound {
                tenant: tenant.clone(),
            }
        }
        _ => err,
    }
}

#[async_trait]
impl SendPacer for PgSendPacer {
    async fn chip_activated(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        at: SystemTime,
    ) -> Result<(), Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = self.activated_in(&tx, chip, at).await;
        tx.finish_with(result).await
    }

    async fn acquire(&self, tenant: &TenantId, chip: &ChipId) -> Result<Pace, Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = self.acquire_in(&tx, chip).await;
        let pace = tx.finish_with(result).await?;
        rule::note_throttled(tenant, chip, &pace);
        Ok(pace)
    }

    async fn forget_chip(&self, tenant: &TenantId, chip: &ChipId) -> Result<(), Error> {
        let tx = self.db.scoped(tenant).await?;
        let result = tx
            .execute(
                "DELETE FROM pacer_chips WHERE tenant_id = $1 AND chip_id = $2",
                &[&tenant.as_str(), &chip.as_str()],
            )
            .await
            .map(drop);
        tx.finish_with(result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        for at in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::new(86_400, 1),
        ] {
            let ns = nanos(at, "t").expect("in range");
            assert_eq!(time(ns, "t").expect("representable"), at);
        }
        assert_eq!(
            nanos(UNIX_EPOCH - Duration::from_nanos(5), "t").ok(),
            Some(-5)
        );
        assert!(matches!(
            nanos(UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400), "t"),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn counts_are_checked() {
        assert_eq!(count(7, "c").ok(), Some(7));
        assert!(matches!(count(-1, "c"), Err(Error::CorruptData { .. })));
        assert!(matches!(
            count(i64::from(u32::MAX) + 1, "c"),
            Err(Error::CorruptData { .. })
        ));
    }
}
