//! The in-memory send pacer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::bucket::TokenBucket;
use crate::error::Error;
use crate::{ChipId, Clock, Pace, PaceLimit, SendPacer, TenantId, WarmupCurve};

const DAY: Duration = Duration::from_secs(86_400);

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

struct ChipPace {
    activated_at: SystemTime,
    burst: TokenBucket,
    /// The warm-up day the count is for, and the sends counted on it.
    day: u32,
    sent_today: u32,
    /// When the chip may send next: its last send (grant + jitter) plus `chip_min_gap`.
    next_send_at: Option<SystemTime>,
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

    fn jitter(&self) -> Duration {
        let (min, max) = (self.config.jitter_min, self.config.jitter_max);
        let span = u64::try_from((max - min).as_millis()).unwrap_or(u64::MAX);
        let extra = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .u64(0..=span);
        min + Duration::from_millis(extra)
    }

    fn warmup_day(activated_at: SystemTime, now: SystemTime) -> u32 {
        let age = now
            .duration_since(activated_at)
            .unwrap_or_default()
            .as_secs();
        u32::try_from(age / 86_400).unwrap_or(u32::MAX - 1) + 1
    }

    /// When warm-up day `day` (from 1) of a chip activated at `activated_at` ends.
    fn day_end(activated_at: SystemTime, day: u32) -> Option<SystemTime> {
        DAY.checked_mul(day)
            .and_then(|age| activated_at.checked_add(age))
    }

    fn new_chip(&self, activated_at: SystemTime, now: SystemTime) -> ChipPace {
        ChipPace {
            activated_at,
            burst: TokenBucket::full(f64::from(self.config.chip_burst), now),
            day: Self::warmup_day(activated_at, now),
            sent_today: 0,
            next_send_at: None,
        }
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
        match state.chips.get_mut(&key) {
            Some(pace) => {
                // Sends already counted today keep counting against the recomputed day.
                pace.activated_at = at;
                pace.day = Self::warmup_day(at, now);
            }
            None => {
                let pace = self.new_chip(at, now);
                state.chips.insert(key, pace);
            }
        }
        Ok(())
    }

    async fn acquire(&self, tenant: &TenantId, chip: &ChipId) -> Result<Pace, Error> {
        let now = self.clock.now();
        let config = &self.config;
        let chip_rate = 1.0 / config.chip_refill_every.as_secs_f64();
        let tenant_rate = 1.0 / config.tenant_refill_every.as_secs_f64();
        let tenant_cap = f64::from(config.tenant_burst);
        let chip_cap = f64::from(config.chip_burst);

        let mut guard = self.state();
        let state = &mut *guard;
        self.sweep_idle_tenants(state, now);
        let tenant_bucket = state
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| TokenBucket::full(tenant_cap, now));
        let pace = state
            .chips
            .entry((tenant.clone(), chip.clone()))
            .or_insert_with(|| self.new_chip(now, now));

        // A clock that went back never returns to an earlier day (nor resets its count).
        let warmup_day = Self::warmup_day(pace.activated_at, now).max(pace.day);
        if warmup_day != pace.day {
            pace.day = warmup_day;
            pace.sent_today = 0;
        }
        let per_day = config.warmup.per_day(warmup_day);
        tenant_bucket.refill(now, tenant_cap, tenant_rate);
        pace.burst.refill(now, chip_cap, chip_rate);

        let daily_wait = (pace.sent_today >= per_day).then(|| {
            Self::day_end(pace.activated_at, warmup_day)
                .map_or(DAY, |end| end.duration_since(now).unwrap_or_default())
                .max(Duration::from_millis(1))
        });
        let gap_wait = pace
            .next_send_at
            .and_then(|at| at.duration_since(now).ok())
            .filter(|wait| !wait.is_zero());
        let waits = [
            (pace.burst.wait(chip_rate), PaceLimit::ChipBurst),
            (
                daily_wait,
                PaceLimit::ChipDaily {
                    warmup_day,
                    per_day,
                },
            ),
            (gap_wait, PaceLimit::ChipGap),
            (tenant_bucket.wait(tenant_rate), PaceLimit::TenantBurst),
        ];
        let slowest = waits
            .iter()
            .filter_map(|(wait, limit)| wait.map(|w| (w, *limit)))
            .max_by_key(|(w, _)| *w);
        if let Some((after, limit)) = slowest {
            let limit_name = match limit {
                PaceLimit::ChipBurst => "chip_burst",
                PaceLimit::ChipDaily { .. } => "chip_daily",
                PaceLimit::ChipGap => "chip_gap",
                PaceLimit::TenantBurst => "tenant_burst",
            };
            metrics::counter!("tenant_isolation_sends_throttled_total", "limit" => limit_name)
                .increment(1);
            tracing::debug!(tenant = %tenant, chip = %chip, ?after, %limit, "send throttled");
            return Ok(Pace::RetryAfter { after, limit });
        }
        let jitter = self.jitter();
        tenant_bucket.take();
        pace.burst.take();
        pace.sent_today += 1;
        pace.next_send_at = now.checked_add(jitter.saturating_add(config.chip_min_gap));
        Ok(Pace::Go { jitter })
    }

    async fn forget_chip(&self, tenant: &TenantId, chip: &ChipId) -> Result<(), Error> {
        self.state().chips.remove(&(tenant.clone(), chip.clone()));
        Ok(())
    }
}
