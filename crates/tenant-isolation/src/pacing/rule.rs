//! The pacing rule: the one definition of what a send may do, shared by every backend.
//!
//! A backend loads the tenant's burst bucket and the chip's state (or makes new ones, see
//! [`tenant_bucket`] and [`ChipPace::new`]), calls [`decide`], and keeps the state it returns,
//! whatever the answer: a refusal refills the buckets and may start a new warm-up day too.
//! Nothing here reads a clock, locks or does I/O; the caller passes the time and draws the
//! jitter, so the in-memory and PostgreSQL pacers take the same decision from the same state.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::bucket::TokenBucket;
use crate::{ChipId, Pace, PaceLimit, PacerConfig, TenantId};

/// One warm-up day.
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

/// What a pacer keeps per chip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ChipPace {
    /// When the chip's number was first paired (or first used, if never announced).
    pub(crate) activated_at: SystemTime,
    /// The chip's burst bucket.
    pub(crate) burst: TokenBucket,
    /// The warm-up day `sent_today` counts for (from 1).
    pub(crate) day: u32,
    /// The sends counted on warm-up day `day`.
    pub(crate) sent_today: u32,
    /// When the chip may send next: its last send (grant + jitter) plus `chip_min_gap`.
    pub(crate) next_send_at: Option<SystemTime>,
}

impl ChipPace {
    /// A chip activated at `activated_at`, first seen at `now`: a full burst bucket and
    /// nothing counted.
    pub(crate) fn new(config: &PacerConfig, activated_at: SystemTime, now: SystemTime) -> Self {
        ChipPace {
            activated_at,
            burst: TokenBucket::full(f64::from(config.chip_burst), now),
            day: warmup_day(activated_at, now),
            sent_today: 0,
            next_send_at: None,
        }
    }

    /// The chip's state after `chip_activated(at)` at `now`: a chip not held yet starts at
    /// `at`; a held one keeps the earliest activation it was told (or its first use), so
    /// announcing a chip again (after a restart, a new owner, a re-pairing) never restarts
    /// its warm-up. An earlier activation moves the chip to its later warm-up day (never to
    /// an earlier one); the sends already counted keep counting against it.
    pub(crate) fn activated(
        existing: Option<Self>,
        config: &PacerConfig,
        at: SystemTime,
        now: SystemTime,
    ) -> Self {
        match existing {
            None => ChipPace::new(config, at, now),
            Some(mut pace) => {
                if at < pace.activated_at {
                    pace.activated_at = at;
                    pace.day = warmup_day(at, now).max(pace.day);
                }
                pace
            }
        }
    }
}

/// A tenant's burst bucket as a pacer makes it when it holds none: full.
pub(crate) fn tenant_bucket(config: &PacerConfig, now: SystemTime) -> TokenBucket {
    TokenBucket::full(f64::from(config.tenant_burst), now)
}

/// What one decision reads and writes: the tenant's burst bucket and the chip's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PaceState {
    /// The tenant's burst bucket, over all its chips.
    pub(crate) tenant: TokenBucket,
    /// The chip's state.
    pub(crate) chip: ChipPace,
}

/// The chip's warm-up day at `now` (from 1): day 1 is the first 24 h after `activated_at`.
pub(crate) fn warmup_day(activated_at: SystemTime, now: SystemTime) -> u32 {
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

/// Decides one send of a chip at `now`: [`Pace::Go`] (counted against the tenant's bucket, the
/// chip's bucket, its day's allowance and its gap, with the jitter drawn from `jitter`, which
/// is called only then) or [`Pace::RetryAfter`] naming the slowest limit (nothing counted).
/// Returns the answer and the state to keep in either case.
///
/// The rule (see [`MemorySendPacer`](crate::MemorySendPacer) and `docs/tenant-isolation.md`):
/// - the chip's warm-up day follows its age, never goes back (a clock gone back keeps the
///   day and its count), and a new day starts a new count;
/// - at most `warmup.per_day(day)` sends a day; once used up, wait for the next warm-up day;
/// - the chip's burst bucket and the tenant's, refilled up to `now`;
/// - the chip's minimum gap after its last send (grant + jitter).
///
/// A tenant bucket that has refilled completely is the same as a new one and is taken as
/// one, so a backend may drop idle buckets (the memory pacer does) or keep them (the
/// PostgreSQL pacer does) without changing any decision.
pub(crate) fn decide(
    state: PaceState,
    config: &PacerConfig,
    now: SystemTime,
    jitter: impl FnOnce() -> Duration,
) -> (Pace, PaceState) {
    let chip_rate = 1.0 / config.chip_refill_every.as_secs_f64();
    let tenant_rate = 1.0 / config.tenant_refill_every.as_secs_f64();
    let tenant_cap = f64::from(config.tenant_burst);
    let chip_cap = f64::from(config.chip_burst);
    let PaceState {
        mut tenant,
        mut chip,
    } = state;

    if tenant.is_full(now, tenant_cap, tenant_rate) {
        tenant = TokenBucket::full(tenant_cap, now);
    }
    // A clock that went back never returns to an earlier day (nor resets its count).
    let day = warmup_day(chip.activated_at, now).max(chip.day);
    if day != chip.day {
        chip.day = day;
        chip.sent_today = 0;
    }
    let per_day = config.warmup.per_day(day);
    tenant.refill(now, tenant_cap, tenant_rate);
    chip.burst.refill(now, chip_cap, chip_rate);

    let daily_wait = (chip.sent_today >= per_day).then(|| {
        day_end(chip.activated_at, day)
            .map_or(DAY, |end| end.duration_since(now).unwrap_or_default())
            .max(Duration::from_millis(1))
    });
    let gap_wait = chip
        .next_send_at
        .and_then(|at| at.duration_since(now).ok())
        .filter(|wait| !wait.is_zero());
    let waits = [
        (chip.burst.wait(chip_rate), PaceLimit::ChipBurst),
        (
            daily_wait,
            PaceLimit::ChipDaily {
                warmup_day: day,
                per_day,
            },
        ),
        (gap_wait, PaceLimit::ChipGap),
        (tenant.wait(tenant_rate), PaceLimit::TenantBurst),
    ];
    let slowest = waits
        .iter()
        .filter_map(|(wait, limit)| wait.map(|w| (w, *limit)))
        .max_by_key(|(w, _)| *w);
    if let Some((after, limit)) = slowest {
        return (
            Pace::RetryAfter { after, limit },
            PaceState { tenant, chip },
        );
    }
    let jitter = jitter();
    tenant.take();
    chip.burst.take();
    chip.sent_today = chip.sent_today.saturating_add(1);
    chip.next_send_at = now.checked_add(jitter.saturating_add(config.chip_min_gap));
    (Pace::Go { jitter }, PaceState { tenant, chip })
}

/// Draws a jitter, uniform in `[jitter_min, jitter_max]` to the millisecond, from `rng`.
pub(crate) fn draw_jitter(rng: &Mutex<fastrand::Rng>, config: &PacerConfig) -> Duration {
    let (min, max) = (config.jitter_min, config.jitter_max);
    let span = u64::try_from(max.saturating_sub(min).as_millis()).unwrap_or(u64::MAX);
    let extra = rng.lock().unwrap_or_else(|p| p.into_inner()).u64(0..=span);
    min + Duration::from_millis(extra)
}

/// Counts and logs a refusal (nothing for a go); backends call it once per answer given.
pub(crate) fn note_throttled(tenant: &TenantId, chip: &ChipId, pace: &Pace) {
    let Pace::RetryAfter { after, limit } = pace else {
        return;
    };
    let limit_name = match limit {
        PaceLimit::ChipBurst => "chip_burst",
        PaceLimit::ChipDaily { .. } => "chip_daily",
        PaceLimit::ChipGap => "chip_gap",
        PaceLimit::TenantBurst => "tenant_burst",
    };
    metrics::counter!("tenant_isolation_sends_throttled_total", "limit" => limit_name).increment(1);
    tracing::debug!(tenant = %tenant, chip = %chip, ?after, %limit, "send throttled");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_refusal_counts_nothing_and_a_go_counts_everywhere() {
        let config = PacerConfig {
            jitter_min: Duration::from_secs(2),
            jitter_max: Duration::from_secs(2),
            ..PacerConfig::default()
        };
        let now = t0();
        let state = PaceState {
            tenant: tenant_bucket(&config, now),
            chip: ChipPace::new(&config, now, now),
        };
        let (pace, after) = decide(state, &config, now, || Duration::from_secs(2));
        assert_eq!(
            pace,
            Pace::Go {
                jitter: Duration::from_secs(2)
            }
        );
        assert_eq!(after.chip.sent_today, 1);
        assert_eq!(after.chip.burst.tokens, f64::from(config.chip_burst) - 1.0);
        assert_eq!(after.tenant.tokens, f64::from(config.tenant_burst) - 1.0);
        assert_eq!(after.chip.next_send_at, Some(now + Duration::from_secs(5)));

        let (pace, again) = decide(after, &config, now, || unreachable!("no jitter drawn"));
        assert_eq!(
            pace,
            Pace::RetryAfter {
                after: Duration::from_secs(5),
                limit: PaceLimit::ChipGap
            }
        );
        assert_eq!(
            again, after,
            "a refusal at the same instant changes nothing"
        );
    }

    #[test]
    fn the_earliest_activation_is_kept() {
        let config = PacerConfig::default();
        let now = t0();
        let first = ChipPace::activated(None, &config, now - DAY, now);
        assert_eq!(first.day, 2);
        let later = ChipPace::activated(Some(first), &config, now, now);
        assert_eq!(later, first, "a later announcement changes nothing");
        let earlier = ChipPace::activated(Some(first), &config, now - DAY * 5, now);
        assert_eq!(earlier.activated_at, now - DAY * 5);
        assert_eq!(earlier.day, 6);
    }

    #[test]
    fn a_full_tenant_bucket_is_a_new_one() {
        let config = PacerConfig::default();
        let now = t0();
        let mut old = tenant_bucket(&config, now - Duration::from_secs(3600));
        old.take();
        let chip = ChipPace::new(&config, now, now);
        let kept = decide(PaceState { tenant: old, chip }, &config, now, || {
            Duration::ZERO
        });
        let fresh = decide(
            PaceState {
                tenant: tenant_bucket(&config, now),
                chip,
            },
            &config,
            now,
            || Duration::ZERO,
        );
        assert_eq!(kept, fresh);
    }
}
