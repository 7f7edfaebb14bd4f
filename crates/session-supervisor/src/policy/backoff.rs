//! Backoff classes: delays that grow and cap, a deterministic jitter, and a retry budget.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::chip::ChipKey;

/// The backoff class of a retried failure (`docs/session-supervisor.md`, 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffClass {
    /// The database or the container runtime: 1 s doubling to 60 s; never parks (a fleet-wide
    /// outage must not park every chip).
    Infra,
    /// Containers, session calls, deadlines: 2 s doubling to 5 min; parks after 15 attempts
    /// and 30 min since the first failure.
    Provision,
    /// WAHA disconnects: 5 s doubling to 10 min; parks after 8 attempts.
    Session,
    /// Quotas, proxies, ports: 30 s doubling to 15 min, ±10 %; never parks (releases wake it).
    Capacity,
}

impl BackoffClass {
    /// The snake-case name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BackoffClass::Infra => "infra",
            BackoffClass::Provision => "provision",
            BackoffClass::Session => "session",
            BackoffClass::Capacity => "capacity",
        }
    }
}

/// How a delay is spread around its nominal value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Between half the nominal delay and the nominal delay ("equal jitter"): never longer
    /// than the cap, and never close to zero, so a retried disconnect is never immediate.
    Equal,
    /// The nominal delay ± this many percent.
    Proportional {
        /// The spread in percent, 0 to 99: [`Policy::validate`](crate::Policy::validate)
        /// refuses 100 and more, which could make a delay zero (a retry loop). Values above
        /// 100 count as 100.
        percent: u8,
    },
}

/// When a class's retries are spent and the chip parks `retry_budget_spent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryBudget {
    /// More attempts than this spend the budget (`None`: unlimited, never parks).
    pub max_attempts: Option<u32>,
    /// ... and only once the first failure of the run is at least this old (`None`: at once).
    pub min_span: Option<Duration>,
}

impl RetryBudget {
    /// A budget that is never spent.
    pub const UNLIMITED: RetryBudget = RetryBudget {
        max_attempts: None,
        min_span: None,
    };

    /// Whether attempt `attempt` of a run of failures that began at `first_at` is one too many.
    pub fn is_spent(&self, attempt: u32, first_at: SystemTime, now: SystemTime) -> bool {
        let Some(max) = self.max_attempts else {
            return false;
        };
        let old_enough = self.min_span.is_none_or(|span| {
            now.duration_since(first_at)
                .is_ok_and(|elapsed| elapsed >= span)
        });
        attempt > max && old_enough
    }
}

/// One backoff class: `min(base × factor^(attempt − 1), cap)`, then jittered.
/// [`Policy::validate`](crate::Policy::validate) refuses a `base`, `factor` or `cap` of zero
/// (a retry without delay) and a `base` or `cap` longer than a century.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay of the first attempt.
    pub base: Duration,
    /// The growth per attempt (2 doubles).
    pub factor: u32,
    /// The longest nominal delay.
    pub cap: Duration,
    /// How the delay is spread.
    pub jitter: Jitter,
    /// When retries are spent.
    pub budget: RetryBudget,
}

impl Backoff {
    /// The nominal delay before attempt `attempt` (1-based; 0 counts as 1), before jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.max(1) - 1;
        self.factor
            .checked_pow(exponent)
            .and_then(|growth| self.base.checked_mul(growth))
            .map_or(self.cap, |delay| delay.min(self.cap))
    }

    /// The delay before attempt `attempt`, jittered by `draw` (any `u64`, e.g. from
    /// [`jitter_draw`]): the same inputs always give the same delay.
    pub fn delay(&self, attempt: u32, draw: u64) -> Duration {
        let nominal = self.nominal(attempt).as_nanos();
        let (low, span) = match self.jitter {
            Jitter::Equal => {
                let half = nominal / 2;
                (half, nominal - half)
            }
            Jitter::Proportional { percent } => {
                let width = nominal * u128::from(percent.min(100)) / 100;
                (nominal - width, 2 * width)
            }
        };
        // `span × draw / u64::MAX`; a span beyond 2^64 ns (a cap of centuries) is scaled down
        // first, so the product never overflows.
        let offset = match span.checked_mul(u128::from(draw)) {
            Some(product) => product / u128::from(u64::MAX),
            None => span / u128::from(u64::MAX) * u128::from(draw),
        };
        Duration::from_nanos(u64::try_from(low + offset).unwrap_or(u64::MAX))
    }
}

/// The four classes, configurable; the defaults are the table of
/// `docs/session-supervisor.md`, 5.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackoffClasses {
    /// [`BackoffClass::Infra`].
    pub infra: Backoff,
    /// [`BackoffClass::Provision`].
    pub provision: Backoff,
    /// [`BackoffClass::Session`].
    pub session: Backoff,
    /// [`BackoffClass::Capacity`].
    pub capacity: Backoff,
}

impl BackoffClasses {
    /// The settings of `class`.
    pub fn get(&self, class: BackoffClass) -> &Backoff {
        match class {
            BackoffClass::Infra => &self.infra,
            BackoffClass::Provision => &self.provision,
            BackoffClass::Session => &self.session,
            BackoffClass::Capacity => &self.capacity,
        }
    }

    /// The delay before attempt `attempt` of `class`, jittered by `draw`.
    pub fn next_delay(&self, class: BackoffClass, attempt: u32, draw: u64) -> Duration {
        self.get(class).delay(attempt, draw)
    }
}

impl Default for BackoffClasses {
    fn default() -> Self {
        BackoffClasses {
            infra: Backoff {
                base: Duration::from_secs(1),
                factor: 2,
                cap: Duration::from_secs(60),
                jitter: Jitter::Equal,
                budget: RetryBudget::UNLIMITED,
            },
            provision: Backoff {
                base: Duration::from_secs(2),
                factor: 2,
                cap: Duration::from_secs(5 * 60),
                jitter: Jitter::Equal,
                budget: RetryBudget {
                    max_attempts: Some(15),
                    min_span: Some(Duration::from_secs(30 * 60)),
                },
            },
            session: Backoff {
                base: Duration::from_secs(5),
                factor: 2,
                cap: Duration::from_secs(10 * 60),
                jitter: Jitter::Equal,
                budget: RetryBudget {
                    max_attempts: Some(8),
                    min_span: None,
                },
            },
            capacity: Backoff {
                base: Duration::from_secs(30),
                factor: 2,
                cap: Duration::from_secs(15 * 60),
                jitter: Jitter::Proportional { percent: 10 },
                budget: RetryBudget::UNLIMITED,
            },
        }
    }
}

/// The jitter draw for attempt `attempt` of `chip` under `seed`: a hash, not a random number,
/// so `decide` stays pure and a run can be replayed. Replicas share the seed
/// (`jitter_seed`), so they compute the same delays. FNV-1a over the inputs, finished with
/// splitmix64: stable across Rust releases and platforms (std's hasher is not).
pub fn jitter_draw(seed: u64, chip: &ChipKey, attempt: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(&seed.to_le_bytes());
    feed(chip.tenant.as_str().as_bytes());
    feed(b"/");
    feed(chip.chip.as_str().as_bytes());
    feed(&attempt.to_le_bytes());
    // splitmix64's finalizer spreads the low-entropy FNV state over all bits.
    let mut z = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use tenant_isolation::{ChipId, TenantId};

    use super::*;

    fn key(chip: &str) -> ChipKey {
        ChipKey::new(TenantId::new("acme").unwrap(), ChipId::new(chip).unwrap())
    }

    #[test]
    fn nominal_delays_double_and_cap() {
        let session = BackoffClasses::default().session;
        let nominal: Vec<u64> = (1..=10).map(|a| session.nominal(a).as_secs()).collect();
        assert_eq!(nominal, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(
            session.nominal(0),
            session.nominal(1),
            "attempt 0 counts as 1"
        );
        // Huge attempts saturate at the cap instead of overflowing.
        assert_eq!(session.nominal(u32::MAX), Duration::from_secs(600));
        let infra = BackoffClasses::default().infra;
        assert_eq!(infra.nominal(7), Duration::from_secs(60));
    }

    #[test]
    fn jittered_delays_grow_stay_under_the_cap_and_are_reproducible() {
        let classes = BackoffClasses::default();
        let chip = key("sales-1");
        let mut previous = Duration::ZERO;
        for attempt in 1..=12 {
            let draw = jitter_draw(7, &chip, attempt);
            let delay = classes.next_delay(BackoffClass::Session, attempt, draw);
            let nominal = classes.session.nominal(attempt);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} vs {nominal:?}"
            );
            // Equal jitter: while the nominal delay doubles, the lower bound of attempt n + 1
            // is the upper bound of attempt n, so the gaps never shrink.
            let doubled = classes.session.base * 2u32.pow(attempt - 1) <= classes.session.cap;
            if doubled {
                assert!(
                    delay >= previous,
                    "attempt {attempt}: {delay:?} < {previous:?}"
                );
            }
            assert!(delay <= Duration::from_secs(600));
            assert_eq!(
                delay,
                classes.next_delay(BackoffClass::Session, attempt, draw),
                "the same draw gives the same delay"
            );
            previous = delay;
        }
        // The extremes of the draw reach both ends.
        let provision = classes.provision;
        assert_eq!(provision.delay(1, 0), Duration::from_secs(1));
        assert_eq!(provision.delay(1, u64::MAX), Duration::from_secs(2));
        let capacity = classes.capacity;
        assert_eq!(capacity.delay(1, 0), Duration::from_secs(27));
        assert_eq!(capacity.delay(1, u64::MAX), Duration::from_secs(33));
    }

    #[test]
    fn huge_caps_never_overflow() {
        for jitter in [Jitter::Equal, Jitter::Proportional { percent: 100 }] {
            let huge = Backoff {
                base: Duration::MAX,
                factor: 2,
                cap: Duration::MAX,
                jitter,
                budget: RetryBudget::UNLIMITED,
            };
            for draw in [0, u64::MAX / 2, u64::MAX] {
                let delay = huge.delay(3, draw);
                assert!(
                    delay <= Duration::from_nanos(u64::MAX),
                    "{jitter:?}: {delay:?}"
                );
            }
            assert_eq!(huge.delay(1, u64::MAX), Duration::from_nanos(u64::MAX));
        }
    }

    #[test]
    fn draws_differ_by_chip_seed_and_attempt_but_not_by_run() {
        let a = key("a");
        let b = key("b");
        assert_eq!(jitter_draw(1, &a, 1), jitter_draw(1, &a, 1));
        assert_ne!(jitter_draw(1, &a, 1), jitter_draw(1, &b, 1));
        assert_ne!(jitter_draw(1, &a, 1), jitter_draw(2, &a, 1));
        assert_ne!(jitter_draw(1, &a, 1), jitter_draw(1, &a, 2));
    }

    #[test]
    fn budgets_spend_by_attempts_and_span() {
        let classes = BackoffClasses::default();
        let first = UNIX_EPOCH + Duration::from_secs(1_000);
        let provision = classes.provision.budget;
        assert!(!provision.is_spent(16, first, first + Duration::from_secs(60)));
        assert!(!provision.is_spent(15, first, first + Duration::from_secs(3_600)));
        assert!(provision.is_spent(16, first, first + Duration::from_secs(1_800)));
        let session = classes.session.budget;
        assert!(!session.is_spent(8, first, first));
        assert!(session.is_spent(9, first, first));
        assert!(!classes.infra.budget.is_spent(u32::MAX, first, first));
        assert!(!classes.capacity.budget.is_spent(u32::MAX, first, first));
    }
}
