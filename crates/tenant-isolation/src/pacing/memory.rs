//! The in-memory send pacer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::bucket::TokenBucket;
use super::rule::{self, ChipPace, PaceState};
use crate::error::Error;
use crate::{ChipId, Clock, Pace, SendPacer, TenantId, WarmupCurve};

/// Pacing settings. Plain data; [`PacerConfig::default`] documents the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacerConfig {
    /// Sends a chip may make back to back (default 3).
    pub chip_burst: u32,
    /// A chip earns one burst token per this interval (default 20 s).
    pub chip_refill_every: Duration,
    /// Sends a tenant may make back to back over all its chips (default 20).
    pub tenant_burst: u32,
    /// A tenant earns one burst token per this interval (default 1 s).
    pub tenant_refill_every: Duration,
    /// A chip's allowance per warm-up day by age (default [`WarmupCurve::default`]).
    pub warmup: WarmupCurve,
    /// Shortest random pause before a send (default 1 s).
    pub jitter_min: Duration,
    /// Longest random pause before a send (default 4 s).
    pub jitter_max: Duration,
    /// Least time between two sends of one chip, on top of the next send's jitter (default
    /// 3 s): a send granted at `t` with jitter `j` goes out at `t + j`, and the chip's next
    /// send is granted no earlier than `t + j + chip_min_gap`. Bursts are spaced, never
    /// back to back.
    pub chip_min_gap: Duration,
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            chip_burst: 3,
            chip_refill_every: Duration::from_secs(20),
            tenant_burst: 20,
            tenant_refill_every: Duration::from_secs(1),
            warmup: WarmupCurve::default(),
            jitter_min: Duration::from_secs(1),
            jitter_max: Duration::from_secs(4),
            chip_min_gap: Duration::from_secs(3),
        }
    }
}

impl PacerConfig {
    /// Checks the settings are usable.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: format!("pacer: {reason}"),
            })
        };
        if self.chip_burst == 0 || self.tenant_burst == 0 {
            return invalid("bursts must be at least 1");
        }
        if self.chip_refill_every.is_zero() || self.tenant_refill_every.is_zero() {
            return invalid("refill intervals must be positive");
        }
        if self.jitter_min > self.jitter_max {
            return invalid("jitter_min must not exceed jitter_max");
        }
        Ok(())
    }
}

#[derive(Default)]
struct PacerState {
    tenants: HashMap<TenantId, TokenBucket>,
    chips: HashMap<(TenantId, ChipId), ChipPace>,
    /// When idle tenant buckets were last dropped.
    last_sweep: Option<SystemTime>,
}

/// Token buckets in process memory, per tenant and per chip.
///
/// Per chip:
/// - a daily count: at most the warm-up curve's `per_day` sends in each warm-up day (day 1 is
///   the first 24 h after activation, day 2 the next 24 h, ...); once used up, the answer is
///   "retry at the start of the next warm-up day";
/// - a burst bucket (`chip_burst`, one token per `chip_refill_every`) that smooths sends
///   within the day;
/// - a minimum gap: the next send is granted no earlier than the last send (grant + its
///   jitter) plus `chip_min_gap`.
///
/// Per tenant: a burst bucket. A send is counted against all of them or none.
///
/// A chip's warm-up age starts at the earliest [`chip_activated`](SendPacer::chip_activated)
/// it was told, or at its first `acquire`: announcing it again later changes nothing.
///
/// The rule is shared with `pg::PgSendPacer` (feature `postgres`), which keeps the same state
/// in PostgreSQL: given the same calls at the same times (and the same jitter seed) the two
/// answer the same.
///
/// Memory: a chip's state (warm-up age, the day's count, burst, gap) is kept until
/// [`forget_chip`](SendPacer::forget_chip), which deleting a chip must call: dropping it earlier
/// would restart the chip's warm-up. A tenant's bucket is dropped once it has refilled
/// completely, when it is the same as a new one: `acquire` sweeps the idle ones at most once
/// per `tenant_burst × tenant_refill_every` (20 s by default). [`MemorySendPacer::tracked_chips`]
/// and [`MemorySendPacer::tracked_tenants`] say what is held.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, UNIX_EPOCH};
/// use tenant_isolation::{ChipId, ManualClock, MemorySendPacer, Pace, PaceLimit, PacerConfig, SendPacer, TenantId};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tenant_isolation::Error> {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let pacer = MemorySendPacer::new(PacerConfig::default(), Arc::new(clock.clone()))?;
/// let (tenant, chip) = (TenantId::new("acme")?, ChipId::new("sales-1")?);
/// let Pace::Go { jitter } = pacer.acquire(&tenant, &chip).await? else { panic!("first send") };
/// clock.advance(jitter); // wait the jitter, then send
/// // The chip's next send waits for the minimum gap (3 s by default).
/// let again = pacer.acquire(&tenant, &chip).await?;
/// assert_eq!(again, Pace::RetryAfter { after: Duration::from_secs(3), limit: PaceLimit::ChipGap });
/// clock.advance(Duration::from_secs(3));
/// assert!(matches!(pacer.acquire(&tenant, &chip).await?, Pace::Go { .. }));
/// # Ok(()) }
/// ```
pub struct MemorySendPacer {
    config: PacerConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<PacerState>,
    rng: Mutex<fastrand::Rng>,
}

impl MemorySendPacer {
    /// A pacer with `config`, reading time from `clock`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`PacerConfig::validate`].
    pub fn new(config: PacerConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        config.validate()?;
        Ok(MemorySendPacer {
            config,
            clock,
            state: Mutex::new(PacerState::default()),
            rng: Mutex::new(fastrand::Rng::new()),
        })
    }

    /// Seeds the jitter generator, for reproducible tests.
    pub fn with_jitter_seed(self, seed: u64) -> Self {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = fastrand::Rng::with_seed(seed);
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chips whose pacing state is held (until [`forget_chip`](SendPacer::forget_chip)).
    pub fn tracked_chips(&self) -> usize {
        self.state().chips.len()
    }

    /// Tenants whose burst bucket is held: those that sent recently enough for it not to have
    /// refilled (idle ones are dropped as `acquire` goes).
    pub fn tracked_tenants(&self) -> usize {
        self.state().tenants.len()
    }

    /// Drops the tenant buckets that have refilled completely (a new bucket is full, so
    /// nothing changes for their tenants), at most once per the time an empty bucket takes to
    /// refill, or when the clock went back by as much.
    fn sweep_idle_tenants(&self, state: &mut PacerState, now: SystemTime) {
        let every = self
            .config
            .tenant_refill_every
            .saturating_mul(self.config.tenant_burst);
        let due = state
            .last_sweep
            .is_none_or(|last| match now.duration_since(last) {
                Ok(ahead) => ahead >= every,
                Err(behind) => behind.duration() >= every,
            });
        if !due {
            return;
        }
        state.last_sweep = Some(now);
        let capacity = f64::from(self.config.tenant_burst);
        let rate = 1.0 / self.config.tenant_refill_every.as_secs_f64();
        state
            .tenants
            .retain(|_, bucket| !bucket.is_full(now, capacity, rate));
    }
}

impl fmt::Debug for MemorySendPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySendPacer")
            .field("config", &self.config)
            .field("chips", &self.tracked_chips())
            .field("tenants", &self.tracked_tenants())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SendPacer for MemorySendPacer {
    async fn chip_activated(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        at: SystemTime,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let mut state = self.state();
        let key = (tenant.clone(), chip.clone());
        let existing = state.chips.get(&key).copied();
        let pace = ChipPace::activated(existing, &self.config, at, now);
        state.chips.insert(key, pace);
        Ok(())
    }

    async fn acquire(&self, tenant: &TenantId, chip: &ChipId) -> Result<Pace, Error> {
        let now = self.clock.now();
        let config = &self.config;
        let pace = {
            let mut guard = self.state();
            let state = &mut *guard;
            self.sweep_idle_tenants(state, now);
            let key = (tenant.clone(), chip.clone());
            let before = PaceState {
                tenant: state
                    .tenants
                    .get(tenant)
                    .copied()
                    .unwrap_or_else(|| rule::tenant_bucket(config, now)),
                chip: state
                    .chips
                    .get(&key)
                    .copied()
                    .unwrap_or_else(|| ChipPace::new(config, now, now)),
            };
            let (pace, after) =
                rule::decide(before, config, now, || rule::draw_jitter(&self.rng, config));
            state.tenants.insert(tenant.clone(), after.tenant);
            state.chips.insert(key, after.chip);
            pace
        };
        rule::note_throttled(tenant, chip, &pace);
        Ok(pace)
    }

    async fn forget_chip(&self, tenant: &TenantId, chip: &ChipId) -> Result<(), Error> {
        self.state().chips.remove(&(tenant.clone(), chip.clone()));
        Ok(())
    }
}
