//! The retry schedule of a webhook, as an iterator of delays that `backon` consumes.

use std::time::Duration;

use crate::time_scale::TimeScale;
use crate::wire::{RetriesConfig, RetryPolicy};

/// Default policy when a webhook has no `retries` (or leaves fields out).
const DEFAULT_POLICY: RetryPolicy = RetryPolicy::Constant;
const DEFAULT_DELAY_SECONDS: f64 = 2.0;
const DEFAULT_ATTEMPTS: u32 = 15;
/// No single wait grows past this (simulated time).
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Delays before retry 1, 2, ... `attempts`.
#[derive(Clone, Debug)]
pub(crate) struct RetrySchedule {
    policy: RetryPolicy,
    delay: Duration,
    attempts: u32,
    done: u32,
    scale: TimeScale,
}

impl RetrySchedule {
    pub(crate) fn new(config: Option<&RetriesConfig>, scale: TimeScale) -> Self {
        let policy = config.and_then(|c| c.policy).unwrap_or(DEFAULT_POLICY);
        let seconds = config
            .and_then(|c| c.delay_seconds)
            .unwrap_or(DEFAULT_DELAY_SECONDS);
        let delay = Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        let attempts = config.and_then(|c| c.attempts).unwrap_or(DEFAULT_ATTEMPTS);
        Self {
            policy,
            delay,
            attempts,
            done: 0,
            scale,
        }
    }
}

impl RetrySchedule {
    /// Retries the webhook allows after the first attempt.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl Iterator for RetrySchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.done >= self.attempts {
            return None;
        }
        self.done += 1;
        let n = self.done;
        let delay = match self.policy {
            RetryPolicy::Constant => self.delay,
            RetryPolicy::Linear => self.delay.saturating_mul(n),
            RetryPolicy::Exponential => self.delay.saturating_mul(2u32.saturating_pow(n - 1)),
        };
        Some(self.scale.scale(delay.min(MAX_DELAY)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(policy: RetryPolicy) -> Vec<u64> {
        let config = RetriesConfig {
            policy: Some(policy),
            delay_seconds: Some(2.0),
            attempts: Some(4),
        };
        RetrySchedule::new(Some(&config), TimeScale::REAL)
            .map(|d| d.as_secs())
            .collect()
    }

    #[test]
    fn policies() {
        assert_eq!(delays(RetryPolicy::Constant), [2, 2, 2, 2]);
        assert_eq!(delays(RetryPolicy::Linear), [2, 4, 6, 8]);
        assert_eq!(delays(RetryPolicy::Exponential), [2, 4, 8, 16]);
        assert_eq!(RetrySchedule::new(None, TimeScale::REAL).count(), 15);
        let none = RetriesConfig {
            policy: None,
            delay_seconds: None,
            attempts: Some(0),
        };
        assert_eq!(RetrySchedule::new(Some(&none), TimeScale::REAL).count(), 0);
    }
}
