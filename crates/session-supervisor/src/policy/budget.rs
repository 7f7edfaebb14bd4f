//! The storm guard: restart budgets as token buckets on the caller's clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tenant_isolation::TenantId;

use super::table::{PolicyError, at_most_a_century};
use crate::reconcile::BudgetSeen;

/// A refill rate: one token every `every`, at most `burst` saved up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// One token per this interval (zero: unlimited).
    pub every: Duration,
    /// The most tokens a bucket holds (at least 1 is used).
    pub burst: u32,
}

impl Rate {
    /// Checks the rate before a budget runs on it: an `every` longer than a century is
    /// refused (adding it to a time would overflow). Zero (unlimited) and any burst are fine.
    pub fn validate(&self) -> Result<(), PolicyError> {
        at_most_a_century("every", self.every)
    }

    /// `per_minute` tokens a minute (at least 1), with a burst of `burst`.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        Rate {
            every: Duration::from_secs(60) / per_minute.max(1),
            burst,
        }
    }
}

/// `at + by`, or a century after `at` when that overflows: the next token of a rate too slow
/// for [`Rate::validate`] is still later than any `now`, never a panic.
fn later(at: SystemTime, by: Duration) -> SystemTime {
    at.checked_add(by)
        .or_else(|| at.checked_add(super::table::LONGEST_SETTING))
        .unwrap_or(at)
}

/// A token bucket, refilled lazily from the times it is given. A clock that goes backwards
/// refills nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    every: Duration,
    burst: u32,
    tokens: u32,
    refilled_at: SystemTime,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: Rate, now: SystemTime) -> Self {
        let burst = rate.burst.max(1);
        TokenBucket {
            every: rate.every,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: SystemTime) {
        if self.tokens >= self.burst || self.every.is_zero() {
            self.tokens = self.burst;
            self.refilled_at = now;
            return;
        }
        let elapsed = now.duration_since(self.refilled_at).unwrap_or_default();
        let earned = elapsed.as_nanos() / self.every.as_nanos();
        let missing = self.burst - self.tokens;
        match u32::try_from(earned) {
            Ok(earned) if earned < missing => {
                self.tokens += earned;
                // `every × earned` is at most the time elapsed since `refilled_at`.
                let refilled = self.every.checked_mul(earned).unwrap_or(elapsed);
                self.refilled_at = later(self.refilled_at, refilled);
            }
            _ => {
                self.tokens = self.burst;
                self.refilled_at = now;
            }
        }
    }

    /// The tokens available at `now`.
    pub fn available(&mut self, now: SystemTime) -> u32 {
        self.refill(now);
        self.tokens
    }

    /// When the next token arrives, if the bucket is empty at `now` (else `now`).
    pub fn next_at(&mut self, now: SystemTime) -> SystemTime {
        self.refill(now);
        if self.tokens > 0 {
            now
        } else {
            later(self.refilled_at, self.every)
        }
    }

    /// Takes one token, or tells when the next one arrives.
    pub fn take(&mut self, now: SystemTime) -> BudgetSeen {
        if self.available(now) > 0 {
            self.tokens -= 1;
            BudgetSeen::Granted
        } else {
            BudgetSeen::NextAt(self.next_at(now))
        }
    }
}

/// The restart budgets: one bucket per tenant and one for this process
/// (`docs/session-supervisor.md`, 5.3). Every budgeted step takes a token from both, or from
/// neither. In PostgreSQL mode the global bucket is per replica.
#[derive(Clone, Debug)]
pub struct RestartBudgets {
    tenant_rate: Rate,
    global: TokenBucket,
    tenants: HashMap<TenantId, TokenBucket>,
}

impl RestartBudgets {
    /// Per-tenant 10 a minute with a burst of 5; per process 120 a minute with a burst of 30.
    pub const DEFAULT_TENANT: Rate = Rate {
        every: Duration::from_secs(6),
        burst: 5,
    };
    /// See [`RestartBudgets::DEFAULT_TENANT`].
    pub const DEFAULT_GLOBAL: Rate = Rate {
        every: Duration::from_millis(500),
        burst: 30,
    };

    /// Full budgets at `now`. Check configured rates with [`Rate::validate`] first.
    pub fn new(tenant: Rate, global: Rate, now: SystemTime) -> Self {
        RestartBudgets {
            tenant_rate: tenant,
            global: TokenBucket::new(global, now),
            tenants: HashMap::new(),
        }
    }

    fn tenant_bucket(&mut self, tenant: &TenantId, now: SystemTime) -> &mut TokenBucket {
        let rate = self.tenant_rate;
        self.tenants
            .entry(tenant.clone())
            .or_insert_with(|| TokenBucket::new(rate, now))
    }

    /// Whether a restart of a `tenant` chip would be granted at `now`, without taking a token
    /// (what a reconcile puts in [`World::budget`](crate::World::budget)).
    pub fn peek(&mut self, tenant: &TenantId, now: SystemTime) -> BudgetSeen {
        let tenant_next = self.tenant_bucket(tenant, now).next_at(now);
        let global_next = self.global.next_at(now);
        let next = tenant_next.max(global_next);
        if next <= now {
            BudgetSeen::Granted
        } else {
            BudgetSeen::NextAt(next)
        }
    }

    /// Takes a token from the tenant's bucket and the global one, or from neither.
    pub fn take(&mut self, tenant: &TenantId, now: SystemTime) -> BudgetSeen {
        match self.peek(tenant, now) {
            BudgetSeen::Granted => {
                self.global.take(now);
                self.tenant_bucket(tenant, now).take(now);
                BudgetSeen::Granted
            }
            denied => denied,
        }
    }

    /// Forgets a tenant's bucket (offboarding, or ownership lost).
    pub fn forget(&mut self, tenant: &TenantId) {
        self.tenants.remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_bucket_bursts_then_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(Rate::per_minute(10, 5), t0());
        for _ in 0..5 {
            assert_eq!(bucket.take(t0()), BudgetSeen::Granted);
        }
        assert_eq!(
            bucket.take(t0()),
            BudgetSeen::NextAt(t0() + Duration::from_secs(6))
        );
        assert_eq!(bucket.available(t0() + Duration::from_secs(5)), 0);
        assert_eq!(bucket.available(t0() + Duration::from_secs(13)), 2);
        // Going back in time refills nothing and takes nothing away.
        assert_eq!(bucket.available(t0()), 2);
        // Saved-up tokens never exceed the burst.
        assert_eq!(bucket.available(t0() + Duration::from_secs(3_600)), 5);
    }

    #[test]
    fn a_rate_too_slow_for_a_time_is_refused_and_never_panics() {
        let slow = Rate {
            every: Duration::MAX,
            burst: 1,
        };
        let error = slow.validate().expect_err("refused");
        assert_eq!(error.kind(), "too_long");
        assert_eq!(error.setting(), "every");
        assert_eq!(RestartBudgets::DEFAULT_TENANT.validate(), Ok(()));
        assert_eq!(RestartBudgets::DEFAULT_GLOBAL.validate(), Ok(()));
        let unlimited = Rate {
            every: Duration::ZERO,
            burst: 0,
        };
        assert_eq!(unlimited.validate(), Ok(()));

        // Used anyway, it denies with a next token far ahead instead of overflowing.
        let mut bucket = TokenBucket::new(slow, t0());
        assert_eq!(bucket.take(t0()), BudgetSeen::Granted);
        match bucket.take(t0() + Duration::from_secs(3_600)) {
            BudgetSeen::NextAt(next) => assert!(next > t0() + Duration::from_secs(3_600)),
            BudgetSeen::Granted => panic!("the bucket is empty"),
        }
    }

    #[test]
    fn the_global_bucket_bounds_a_storm_across_tenants() {
        let mut budgets = RestartBudgets::new(
            RestartBudgets::DEFAULT_TENANT,
            RestartBudgets::DEFAULT_GLOBAL,
            t0(),
        );
        let tenants: Vec<TenantId> = (0..20)
            .map(|n| TenantId::new(format!("t{n}")).unwrap())
            .collect();
        // 20 tenants x 5 chips all want a restart at once: the global burst lets 30 through.
        let granted = tenants
            .iter()
            .flat_map(|t| std::iter::repeat_n(t, 5))
            .filter(|t| budgets.take(t, t0()) == BudgetSeen::Granted)
            .count();
        assert_eq!(granted, 30);
        // Then 2 a second.
        let later = t0() + Duration::from_secs(1);
        let granted = tenants
            .iter()
            .filter(|t| budgets.take(t, later) == BudgetSeen::Granted)
            .count();
        assert_eq!(granted, 2);
    }

    #[test]
    fn a_tenant_cannot_spend_the_global_budget_alone() {
        let mut budgets = RestartBudgets::new(
            RestartBudgets::DEFAULT_TENANT,
            RestartBudgets::DEFAULT_GLOBAL,
            t0(),
        );
        let noisy = TenantId::new("noisy").unwrap();
        let quiet = TenantId::new("quiet").unwrap();
        let granted = (0..50)
            .filter(|_| budgets.take(&noisy, t0()) == BudgetSeen::Granted)
            .count();
        assert_eq!(granted, 5, "the tenant's burst");
        assert_eq!(
            budgets.peek(&noisy, t0()),
            BudgetSeen::NextAt(t0() + Duration::from_secs(6))
        );
        assert_eq!(budgets.peek(&quiet, t0()), BudgetSeen::Granted);
        // A denial takes nothing from the global bucket.
        assert_eq!(budgets.global.available(t0()), 25);
        budgets.forget(&noisy);
        assert_eq!(budgets.take(&noisy, t0()), BudgetSeen::Granted);
    }
}
