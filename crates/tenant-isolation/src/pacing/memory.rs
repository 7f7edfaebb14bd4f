//! The in-memory send pacer.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::bucket::TokenBucket;
use crate::error::Error;
use crate::{ChipId, Clock, Pace, PaceLimit, SendPacer, TenantId, WarmupCurve};

const DAY_SECS: f64 = 86_400.0;

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
    /// A chip's daily allowance by age (default [`WarmupCurve::default`]).
    pub warmup: WarmupCurve,
    /// Shortest random pause before a send (default 1 s).
    pub jitter_min: Duration,
    /// Longest random pause before a send (default 4 s).
    pub jitter_max: Duration,
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
    daily: TokenBucket,
}

#[derive(Default)]
struct PacerState {
    tenants: HashMap<TenantId, TokenBucket>,
    chips: HashMap<(TenantId, ChipId), ChipPace>,
}

/// Token buckets in process memory, per tenant and per chip.
///
/// Per chip: a burst bucket (`chip_burst`, one token per `chip_refill_every`) and a daily
/// bucket whose capacity and rate follow the warm-up curve for the chip's age (a rolling day:
/// `per_day` tokens, refilled at `per_day / 24 h`). Per tenant: a burst bucket. A send takes a
/// token from all three or from none.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, UNIX_EPOCH};
/// use tenant_isolation::{ChipId, ManualClock, MemorySendPacer, Pace, PacerConfig, SendPacer, TenantId};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tenant_isolation::Error> {
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let pacer = MemorySendPacer::new(PacerConfig::default(), Arc::new(clock.clone()))?;
/// let (tenant, chip) = (TenantId::new("acme")?, ChipId::new("sales-1")?);
/// for _ in 0..3 {
///     assert!(matches!(pacer.acquire(&tenant, &chip).await?, Pace::Go { .. }));
/// }
/// let wait = pacer.acquire(&tenant, &chip).await?.retry_after().expect("burst used up");
/// clock.advance(wait);
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

    fn new_chip(&self, activated_at: SystemTime, now: SystemTime) -> ChipPace {
        let per_day = self
            .config
            .warmup
            .per_day(Self::warmup_day(activated_at, now));
        ChipPace {
            activated_at,
            burst: TokenBucket::full(f64::from(self.config.chip_burst), now),
            daily: TokenBucket::full(f64::from(per_day), now),
        }
    }
}

impl fmt::Debug for MemorySendPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySendPacer")
            .field("config", &self.config)
            .field("chips", &self.state().chips.len())
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
            Some(pace) => pace.activated_at = at,
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
        let tenant_bucket = state
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| TokenBucket::full(tenant_cap, now));
        let pace = state
            .chips
            .entry((tenant.clone(), chip.clone()))
            .or_insert_with(|| self.new_chip(now, now));

        let warmup_day = Self::warmup_day(pace.activated_at, now);
        let per_day = config.warmup.per_day(warmup_day);
        let daily_rate = f64::from(per_day) / DAY_SECS;
        tenant_bucket.refill(now, tenant_cap, tenant_rate);
        pace.burst.refill(now, chip_cap, chip_rate);
        pace.daily.refill(now, f64::from(per_day), daily_rate);

        let waits = [
            (pace.burst.wait(chip_rate), PaceLimit::ChipBurst),
            (
                pace.daily.wait(daily_rate),
                PaceLimit::ChipDaily {
                    warmup_day,
                    per_day,
                },
            ),
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
                PaceLimit::TenantBurst => "tenant_burst",
            };
            metrics::counter!("tenant_isolation_sends_throttled_total", "limit" => limit_name)
                .increment(1);
            tracing::debug!(tenant = %tenant, chip = %chip, ?after, %limit, "send throttled");
            return Ok(Pace::RetryAfter { after, limit });
        }
        tenant_bucket.take();
        pace.burst.take();
        pace.daily.take();
        drop(guard);
        Ok(Pace::Go {
            jitter: self.jitter(),
        })
    }

    async fn forget_chip(&self, tenant: &TenantId, chip: &ChipId) -> Result<(), Error> {
        self.state().chips.remove(&(tenant.clone(), chip.clone()));
        Ok(())
    }
}
